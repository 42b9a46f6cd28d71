"""Attended transfer (RFC 5589 section 7, RFC 3891 Replaces) between three deskphone processes.

baresip 1.0 does not implement Replaces, so every role is a real deskphone, through the shared
Kamailio (users 1045-1050): A (1045) calls B (1046), then C (1047); A transfers B to C through the
action API (``transfer`` with ``target_call``). B follows A's REFER with an INVITE carrying
Replaces of the A-C dialog to C's Contact; C answers it at once and BYEs A; B's NOTIFY 200 makes A
BYE B. At the end B and C talk and A has no call, and they hear each other: each phone plays its
own tone (A 1000 Hz, B 600 Hz, C 800 Hz) and after the transfer B plays C's tone and C B's
(acceptance 3, "the final audio path is right").

Replayed Replaces (THREATS T3) from sipp, straight to a phone process: data/replaces_replay.xml
calls the phone, moves the call to a second dialog with INVITE + Replaces, then replays the same
Replaces: the phone must answer 603 and nothing rings.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.interop.kamailio import Kamailio
from tests.interop.phone import PhoneProcess
from tests.interop.sipp import SippResult
from tests.interop.sniff import Sniffer
from tests.interop.test_calls_baresip import alsa_files, assert_tone, connected, deskphone, ended
from tests.interop.test_transfer import _played_since, _wait_audio

B_TONE, C_TONE = 600.0, 800.0


def _call(phone: PhoneProcess, callee: PhoneProcess, number: str) -> tuple[str, str]:
    """``phone`` dials ``number``; ``callee`` answers. Returns (caller's id, callee's id)."""
    call = phone.dial(number)
    ringing = callee.wait_call(lambda c: c["state"] == "ringing", 10, f"{number} to ring")
    callee.call_action(ringing["id"], "answer")
    phone.wait_call(connected(call["id"]), 10, f"call to {number} connected")
    return call["id"], ringing["id"]


def test_attended_transfer_between_three_deskphones(
    kamailio: Kamailio,
    phones: Callable[..., PhoneProcess],
    tmp_path: Path,
    sniffer: Callable[[int], Sniffer],
) -> None:
    a, _ = deskphone(phones, kamailio, "1045", tmp_path)
    b, _ = deskphone(phones, kamailio, "1046", tmp_path)
    c, _ = deskphone(phones, kamailio, "1047", tmp_path)
    # Same files (the env is fixed at start), new tones: read when a call opens the device.
    b_files = alsa_files(tmp_path / "alsa-1046", B_TONE)
    c_files = alsa_files(tmp_path / "alsa-1047", C_TONE)
    a_b, b_a = _call(a, b, "1046")
    a_c, c_a = _call(a, c, "1047")
    sent_by_c = sniffer(c.sip_port)

    reply = a.call_action(a_b, "transfer", target_call=a_c)
    assert reply["transfer_role"] == "transferor"

    # C: the replacement is answered without ringing and takes over; the A-C call is BYEd.
    new_c: dict[str, Any] = c.wait_call(
        lambda x: x.get("replaces_call") == c_a and x["state"] == "connected",
        15,
        "C's replacement call",
    )
    c_played = c_files.playback.stat().st_size
    assert "1046" in new_c["remote"]
    old_c = c.wait_call(ended(c_a), 10, "C's call with A to end")
    assert old_c["replaced_by"] == new_c["id"] and old_c["end_cause"] == "local_bye"
    # B: the call to C is up and the call with A ended on the transfer's success.
    new_b = b.wait_call(
        lambda x: x["direction"] == "outgoing" and x["state"] == "connected", 10, "B calls C"
    )
    b_played = b_files.playback.stat().st_size
    assert "1047" in new_b["remote"]
    b.wait_call(ended(b_a), 10, "B's call with A to end")
    # A: no call left; the transfer is reported done.
    a.wait_for(lambda s: all(x["state"] == "ended" for x in s["calls"]), 10, "A to have no call")
    assert a.call(a_b)["transfer"] == "done" and a.call(a_b)["transfer_status"] == 200
    assert a.call(a_c)["end_cause"] == "remote_bye"
    assert [x["id"] for x in c.status()["calls"] if x["state"] != "ended"] == [new_c["id"]]
    assert [x["id"] for x in b.status()["calls"] if x["state"] != "ended"] == [new_b["id"]]
    # RFC 3891 section 3: C answered the Replaces INVITE at once, never 180/183 (on the wire).
    answers = [p for p in dict.fromkeys(sent_by_c.close()) if p.startswith(b"SIP/2.0 ")]
    to_replaces = [p for p in answers if b"CSeq: " in p and b" INVITE\r\n" in p]
    assert any(p.startswith(b"SIP/2.0 200") for p in to_replaces), answers
    assert not [p for p in to_replaces if p.startswith((b"SIP/2.0 180", b"SIP/2.0 183"))]
    # The final audio path: B and C hear each other (not A, whose tone is 1000 Hz).
    _wait_audio()
    assert_tone(_played_since(b, b_files, b_played), C_TONE, "B")
    assert_tone(_played_since(c, c_files, c_played), B_TONE, "C")


def test_attended_transfer_while_the_consultation_call_still_rings(
    kamailio: Kamailio, phones: Callable[..., PhoneProcess], tmp_path: Path
) -> None:
    """The REFER waits for C to answer (a ringing target cannot be replaced, RFC 3891 3)."""
    a, _ = deskphone(phones, kamailio, "1048", tmp_path)
    b, _ = deskphone(phones, kamailio, "1049", tmp_path)
    c, _ = deskphone(phones, kamailio, "1050", tmp_path)
    a_b, b_a = _call(a, b, "1049")
    a_c = a.dial("1050")["id"]
    ringing = c.wait_call(lambda x: x["state"] == "ringing", 10, "C to ring")
    reply = a.call_action(a_b, "transfer", target_call=a_c)
    assert reply["transfer"] == "waiting"
    c.call_action(ringing["id"], "answer")
    new_c = c.wait_call(
        lambda x: x.get("replaces_call") == ringing["id"] and x["state"] == "connected",
        15,
        "C's replacement call",
    )
    c.wait_call(ended(ringing["id"]), 10, "C's call with A to end")
    b.wait_call(ended(b_a), 10, "B's call with A to end")
    a.wait_for(lambda s: all(x["state"] == "ended" for x in s["calls"]), 10, "A to have no call")
    assert a.call(a_b)["transfer"] == "done"
    assert [x["id"] for x in c.status()["calls"] if x["state"] != "ended"] == [new_c["id"]]


def test_attended_transfer_action_errors(
    kamailio: Kamailio, phones: Callable[..., PhoneProcess], tmp_path: Path
) -> None:
    a, _ = deskphone(phones, kamailio, "1048", tmp_path)
    b, _ = deskphone(phones, kamailio, "1049", tmp_path)
    a_b, _ = _call(a, b, "1049")
    assert a.post(f"/api/calls/{a_b}/transfer", {"target_call": a_b})[0] == 400
    assert a.post(f"/api/calls/{a_b}/transfer", {"target_call": "c999"})[0] == 404


@pytest.fixture
def lone_phone(tmp_path: Path) -> Iterator[PhoneProcess]:
    p = PhoneProcess(tmp_path, accounts=[])
    p.start()
    yield p
    p.kill()


def test_replayed_replaces_gets_603_and_nothing_rings(
    lone_phone: PhoneProcess, sipp: Callable[..., SippResult]
) -> None:
    phone = lone_phone
    with ThreadPoolExecutor(1) as pool:
        run = pool.submit(sipp, "replaces_replay.xml", ("127.0.0.1", phone.sip_port), timeout=30)
        ringing = phone.wait_call(lambda c: c["state"] == "ringing", 10, "sipp's call to ring")
        phone.call_action(ringing["id"], "answer")
        result = run.result(timeout=60)
    assert result.ok, result.explain()
    invites = [i for i, m in enumerate(result.messages) if m.first_line.startswith("INVITE ")]
    assert len(invites) == 3
    # Between the replayed INVITE and its final answer, nothing but (maybe) 100 Trying.
    replay = [m.status for m in result.messages[invites[2] + 1 :] if m.direction == "received"]
    assert replay[: replay.index(603) + 1] in ([603], [100, 603]), replay
    calls = phone.status()["calls"]
    # Two calls: the first (replaced, BYEd by the phone) and the replacement (ended by sipp's
    # BYE); the replay never became a call.
    assert len(calls) == 2, calls
    first, second = calls
    assert first["replaced_by"] == second["id"] and second["replaces_call"] == first["id"]
    assert first["end_cause"] == "local_bye" and second["end_cause"] == "remote_bye"
