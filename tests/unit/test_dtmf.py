"""RFC 4733 telephone-events: exact payload bytes, marker/timestamp rules, offered-event
restriction (FEATURES.md 1.2) and a receiver that reports each key press once."""

from __future__ import annotations

import pytest

from audio.dtmf import (
    DtmfError,
    DtmfEvent,
    DtmfPacket,
    DtmfReceiver,
    DtmfSender,
    TelephoneEvent,
    event_code,
    parse_events,
)


def test_digit_5_for_100ms_exact_wire_payloads() -> None:
    sender = DtmfSender(volume=10)
    packets = sender.packets("5", timestamp=123456, duration=sender.duration_units(100))
    assert packets == [
        DtmfPacket(b"\x05\x0a\x00\xa0", True, 123456),  # 160: first packet, marker
        DtmfPacket(b"\x05\x0a\x01\x40", False, 123456),  # 320
        DtmfPacket(b"\x05\x0a\x01\xe0", False, 123456),  # 480
        DtmfPacket(b"\x05\x0a\x02\x80", False, 123456),  # 640
        DtmfPacket(b"\x05\x8a\x03\x20", False, 123456),  # 800 with E bit
        DtmfPacket(b"\x05\x8a\x03\x20", False, 123456),  # ... sent three times
        DtmfPacket(b"\x05\x8a\x03\x20", False, 123456),
    ]


def test_items_unpack_as_payload_marker_timestamp() -> None:
    payload, marker, ts = DtmfSender().packets("#", 0, 400)[0]
    assert (payload[0], marker, ts) == (11, True, 0)


@pytest.mark.parametrize(
    "key,code", [("0", 0), ("9", 9), ("*", 10), ("#", 11), ("A", 12), ("d", 15), (16, 16)]
)
def test_event_codes(key: str | int, code: int) -> None:
    assert event_code(key) == code


def test_unknown_key_rejected() -> None:
    with pytest.raises(DtmfError, match="not a DTMF key"):
        event_code("E")


def test_short_event_is_only_end_packets_and_first_has_marker() -> None:
    packets = DtmfSender(packet_interval=160).packets("1", 1000, 160)
    assert [p.marker for p in packets] == [True, False, False]
    assert {p.payload for p in packets} == {b"\x01\x8a\x00\xa0"}


def test_long_event_at_wideband_clock_and_volume() -> None:
    sender = DtmfSender(clock_rate=48000, packet_interval=960, volume=63)
    packets = sender.packets("D", 7, sender.duration_units(50))
    durations = [TelephoneEvent.parse(p.payload).duration for p in packets]
    assert durations == [960, 1920, 2400, 2400, 2400]
    assert all(TelephoneEvent.parse(p.payload).volume == 63 for p in packets)


def test_timestamp_wraps_to_32_bits() -> None:
    packets = DtmfSender().packets("1", 2**32 + 5, 320)
    assert {p.timestamp for p in packets} == {5}


def test_duration_limits() -> None:
    with pytest.raises(DtmfError, match="duration"):
        DtmfSender().packets("1", 0, 70000)
    with pytest.raises(DtmfError, match="duration"):
        DtmfSender().packets("1", 0, 0)


@pytest.mark.parametrize(
    "fmtp,expected",
    [
        (None, set(range(16))),
        ("", set(range(16))),
        ("0-15", set(range(16))),
        ("0-16,32", set(range(17)) | {32}),
        (" 0-11 , 16 ", set(range(12)) | {16}),
        ("0-9,x,12-a,300", set(range(10))),
    ],
)
def test_parse_events(fmtp: str | None, expected: set[int]) -> None:
    assert parse_events(fmtp) == expected


def test_only_events_the_peer_offered() -> None:
    sender = DtmfSender.from_fmtp("0-9,11")
    assert sender.packets("#", 0, 160)
    with pytest.raises(DtmfError, match="peer did not offer telephone-event 10"):
        sender.packets("*", 0, 160)
    # no fmtp: 0-15 only, so flash (16) is refused
    with pytest.raises(DtmfError, match="did not offer telephone-event 16"):
        DtmfSender.from_fmtp(None).packets(16, 0, 160)


def test_payload_parse_and_errors() -> None:
    assert TelephoneEvent.parse(b"\x0b\xbf\x01\x00") == TelephoneEvent(11, True, 63, 256)
    with pytest.raises(DtmfError):
        TelephoneEvent.parse(b"\x01\x02")
    with pytest.raises(DtmfError, match="volume"):
        TelephoneEvent(1, False, 64, 0).pack()


def _feed(rx: DtmfReceiver, packets: list[DtmfPacket]) -> list[DtmfEvent]:
    out: list[DtmfEvent] = []
    for p in packets:
        out += rx.feed(p.payload, p.timestamp)
    return out


def test_receiver_reports_each_key_once_with_duration() -> None:
    sender, rx = DtmfSender(), DtmfReceiver()
    events: list[DtmfEvent] = []
    ts = 1000
    for key in "0123456789*#ABCD":
        events += _feed(rx, sender.packets(key, ts, 800))
        ts += 1600
    assert "".join(e.digit or "?" for e in events) == "0123456789*#ABCD"
    assert {e.duration for e in events} == {800}
    assert all(e.ended and e.volume == 10 for e in events)
    assert rx.flush() == []


def test_receiver_lost_start_packets() -> None:
    rx = DtmfReceiver()
    packets = DtmfSender().packets("7", 5000, 800)
    events = _feed(rx, packets[3:])  # only the last update and the end packets arrived
    assert events == [DtmfEvent(7, "7", 800, 10, 5000, True)]


def test_receiver_lost_end_reported_when_next_event_starts() -> None:
    rx, sender = DtmfReceiver(), DtmfSender()
    first = sender.packets("1", 100, 800)[:3]  # end packets all lost
    assert _feed(rx, first) == []
    assert rx.active == 1
    second = sender.packets("2", 2000, 800)
    events = _feed(rx, second)
    assert events == [
        DtmfEvent(1, "1", 480, 10, 100, False),
        DtmfEvent(2, "2", 800, 10, 2000, True),
    ]


def test_receiver_flush_reports_unfinished_event() -> None:
    rx = DtmfReceiver()
    _feed(rx, DtmfSender().packets("9", 0, 800)[:2])
    assert rx.flush() == [DtmfEvent(9, "9", 320, 10, 0, False)]
    assert rx.flush() == []


def test_receiver_ignores_late_and_reordered_packets_of_reported_event() -> None:
    rx = DtmfReceiver()
    packets = DtmfSender().packets("4", 42, 800)
    # reordered: an update arrives after the first end packet, then more end copies
    order = [packets[0], packets[4], packets[2], packets[5], packets[6], packets[1]]
    assert _feed(rx, order) == [DtmfEvent(4, "4", 800, 10, 42, True)]


def test_receiver_same_key_twice_is_two_events() -> None:
    rx, sender = DtmfReceiver(), DtmfSender()
    events = _feed(rx, sender.packets("5", 0, 800) + sender.packets("5", 1600, 800))
    assert [(e.digit, e.timestamp) for e in events] == [("5", 0), ("5", 1600)]


def test_receiver_non_dtmf_event_and_garbage() -> None:
    rx = DtmfReceiver()
    assert rx.feed(b"\x01", 0) == []
    assert rx.feed(b"\x10\x80\x00\xa0", 10) == [DtmfEvent(16, None, 160, 0, 10, True)]
