"""The Pi side of the front-panel protocol on exact clock times (board/panel.py, sans-IO)."""

from __future__ import annotations

from board.frontpanel import protocol
from board.panel import ACK_TIMEOUT, HEARTBEAT_TIMEOUT, QUERY_INTERVAL, PanelLink


def frame(kind: str, seq: int, *fields: object) -> bytes:
    return protocol.encode(kind, seq, fields)


def hello(seq: int = 0, version: int = protocol.PROTOCOL_VERSION) -> bytes:
    return frame(protocol.HELLO, seq, version, "1.0.0", 12, 3)


def sent(data: bytes) -> list[tuple[str, int, list[str]]]:
    return protocol.LineReader().feed(data)


def test_waiting_link_queries_the_panel_every_interval() -> None:
    link = PanelLink()
    assert link.state == "waiting"
    assert link.get_timer() == QUERY_INTERVAL
    assert [k for k, _, _ in sent(link.handle_timer(0.0))] == ["Q"]
    assert link.handle_timer(0.5) == b""
    assert [k for k, _, _ in sent(link.handle_timer(1.0))] == ["Q"]


def test_keys_after_hello_become_edges_on_the_phone_clock() -> None:
    link = PanelLink()
    edges, out = link.feed(hello() + frame(protocol.KEY, 1, "DIGIT_7", "D", 40), now=10.0)
    assert link.state == "connected" and out == b""
    assert [(e.key, e.pressed, e.at) for e in edges] == [("DIGIT_7", True, 10.0)]
    edges, _ = link.feed(frame(protocol.KEY, 2, "BOGUS", "D", 41), now=10.1)
    assert edges == [] and link.bad_frames == 1


def test_leds_wait_for_hello_then_retry_until_acked() -> None:
    link = PanelLink()
    assert link.led("MWI", "on", 0.0) == b""  # nobody to tell yet
    _, out = link.feed(hello(), now=1.0)
    assert sent(out) == [("L", 0, ["MWI", "on"])]
    assert link.get_timer() == 1.0 + ACK_TIMEOUT
    retry = sent(link.handle_timer(1.0 + ACK_TIMEOUT))
    assert retry == [("L", 1, ["MWI", "on"])]
    link.feed(frame(protocol.ACK, 1, 1), now=1.3)
    assert link.handle_timer(1.6) == b""
    assert link.led("MWI", "on", 2.0) == b""  # unchanged: nothing to send


def test_silence_then_recovery() -> None:
    link = PanelLink()
    link.feed(hello(), now=0.0)
    link.feed(frame(protocol.HEARTBEAT, 1, 500), now=0.5)
    assert link.get_timer() == 0.5 + HEARTBEAT_TIMEOUT
    link.handle_timer(1.99)
    assert link.state == "connected"
    out = link.handle_timer(2.0)
    assert link.state == "silent" and link.error == "front panel silent for 1.5 s"
    assert [k for k, _, _ in sent(out)] == ["Q"]
    link.led("MWI", "on", 2.1)  # wanted while it was silent: sent when it is back
    _, out = link.feed(frame(protocol.HEARTBEAT, 2, 1000), now=2.2)
    assert link.state == "connected" and link.resets == 0
    assert [f[2] for f in sent(out)] == [["MWI", "on"]]


def test_reset_detected_by_unasked_hello_or_uptime_going_back() -> None:
    link = PanelLink()
    link.feed(hello(), now=0.0)
    link.led("LINE_1", "fast_flash", 0.1)
    link.feed(frame(protocol.HEARTBEAT, 5, 9000), now=1.0)
    _, out = link.feed(frame(protocol.HEARTBEAT, 0, 300), now=1.5)
    assert link.resets == 1
    assert sent(out)[0][2] == ["LINE_1", "fast_flash"]
    _, out = link.feed(hello(), now=2.0)
    assert link.resets == 2 and sent(out)[0][2] == ["LINE_1", "fast_flash"]


def test_wrong_version_is_reported_and_its_frames_ignored() -> None:
    link = PanelLink()
    edges, _ = link.feed(hello(version=9) + frame(protocol.KEY, 1, "DIGIT_1", "D", 1), now=0.0)
    assert link.state == "wrong_version" and edges == []
    assert "protocol version 9" in link.error


def test_garbage_is_counted_not_fatal() -> None:
    link = PanelLink()
    edges, _ = link.feed(b"\xff\x00junk\n" + hello() + b"K|1|DIGIT_1|D|1*0000\n", now=0.0)
    assert edges == [] and link.bad_frames == 2 and link.state == "connected"
