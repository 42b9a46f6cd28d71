"""Blind transfer (RFC 3515/7647, RFC 5589 section 6) between a deskphone and real baresips.

Through the shared Kamailio, users 1051-1060. baresip 1.0 can start a transfer (menu command
``transfer <uri>``: an in-dialog REFER) and follows a REFER it receives (it calls the target and
reports progress by NOTIFY), but does not hang up the original call itself: the transferor's
BYE ends it.

* deskphone as transferee: baresip X calls the phone, then transfers it to baresip Y; the phone
  answers the REFER, calls Y, and ends the call with X itself once Y answers.
* deskphone as transferor: the phone calls baresip A, transfers A to baresip B through the
  action API; A calls B, its NOTIFY 200 makes the phone end its call with A.
* deskphone as transferor when B rejects A's call: A's failure NOTIFY makes the phone resume A.
* deskphone as target: baresip X transfers baresip Y to the phone; it rings, is answered, and
  the phone and Y hear each other (users 1171-1173).
* a toll-fraud target in X's REFER (T26) is refused by the phone (403, no INVITE); baresip then
  ends the call itself.

The final audio path is checked by tone (acceptance 2): every party plays its own frequency, and
after the transfer the transferee and the target each hear the other's, not the transferor's.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tests.interop.audio_files import dominant_frequency, tone_of
from tests.interop.baresip import Baresip
from tests.interop.kamailio import Kamailio
from tests.interop.phone import PhoneProcess
from tests.interop.sniff import Sniffer
from tests.interop.test_calls_baresip import (
    BARESIP_TONE,
    PHONE_TONE,
    AlsaFiles,
    assert_tone,
    connected,
    deskphone,
    ended,
)

OTHER_TONE = 700.0  # the transferor (or the second baresip): distinct from the other two
AUDIO_SECONDS = 1.5  # bounded window of audio after the transfer before it is measured


def _played_since(phone: PhoneProcess, files: AlsaFiles, offset: int) -> tuple[float, float]:
    """(dominant Hz, RMS) of what the phone played after byte ``offset`` of its playback file.

    The ALSA file device truncates the file when a stream opens it again; then all of it is new.
    """
    m = re.search(r"playback to .* at (\d+) Hz", phone.log())
    assert m, "the phone never opened its playback device"
    rate = int(m.group(1))
    raw = files.playback.read_bytes()
    raw = raw[offset - offset % 2 :] if len(raw) > offset else raw
    pcm = np.frombuffer(raw, dtype="<i2").astype(np.float64) / 32768
    loud = np.flatnonzero(np.abs(pcm) > 0.02)
    assert loud.size > rate // 4, f"the phone played {loud.size / rate:.2f} s after the transfer"
    active = pcm[loud[0] : loud[-1] + 1]
    return dominant_frequency(active, rate), float(np.sqrt(np.mean(active**2)))


def _wait_audio() -> None:
    time.sleep(AUDIO_SECONDS)  # audio must flow for a while; nothing to await but time


def _sip(payloads: list[bytes], first_line_prefix: bytes) -> list[bytes]:
    """Captured SIP messages whose first line starts with ``first_line_prefix``.

    Retransmissions are byte-identical: deduped.
    """
    return [p for p in dict.fromkeys(payloads) if p.startswith(first_line_prefix)]


def _cseq_method(message: bytes) -> bytes:
    line = next(x for x in message.split(b"\r\n") if x.lower().startswith(b"cseq:"))
    return line.split()[-1]


def _body(message: bytes) -> bytes:
    return message.split(b"\r\n\r\n", 1)[1]


def _one_call(phone: PhoneProcess, what: str, **match: Any) -> dict[str, Any]:
    return phone.wait_call(lambda c: all(c.get(k) == v for k, v in match.items()), 15, what)


def test_deskphone_as_transferee_follows_baresips_refer(
    kamailio: Kamailio,
    phones: Callable[..., PhoneProcess],
    make_baresip: Any,
    tmp_path: Path,
    sniffer: Callable[[int], Sniffer],
) -> None:
    target: Baresip = make_baresip(
        "1053", kamailio=kamailio, codecs=["PCMU"], auto_answer=True, tone_hz=BARESIP_TONE
    )
    transferor: Baresip = make_baresip(
        "1051", kamailio=kamailio, codecs=["PCMU"], tone_hz=OTHER_TONE
    )
    phone, files = deskphone(phones, kamailio, "1052", tmp_path)
    sent_by_phone = sniffer(phone.sip_port)

    transferor.dial(kamailio.aor("1052"))
    ringing = phone.wait_call(lambda c: c["state"] == "ringing", 10, "the phone to ring")
    phone.call_action(ringing["id"], "answer")
    transferor.wait_event("CALL_ESTABLISHED", 10)
    phone.wait_call(connected(ringing["id"]), 5, "connected")

    transferor.command("transfer", kamailio.aor("1053"))
    target.wait_event("CALL_ESTABLISHED", 15)
    new = _one_call(phone, "the call to the target", state="connected", direction="outgoing")
    played_before = files.playback.stat().st_size
    assert "1053" in new["remote"]
    original = phone.wait_call(ended(ringing["id"]), 10, "the original call to end")
    assert original["transfer"] == "done" and original["transfer_status"] == 200
    assert original["transfer_role"] == "transferee"
    assert original["end_cause"] in ("local_bye", "remote_bye")
    transferor.wait_event("CALL_CLOSED", 10)
    time.sleep(0.3)  # let the last datagrams reach the capture
    sent = sent_by_phone.close()
    # RFC 7647: the REFER is answered 200, never 202.
    # baresip ends its refer subscription with an in-dialog SUBSCRIBE: understood, not 501.
    assert not _sip(sent, b"SIP/2.0 501"), _sip(sent, b"SIP/2.0 501")
    refer_answers = [p for p in _sip(sent, b"SIP/2.0 ") if _cseq_method(p) == b"REFER"]
    assert [p.split(b"\r\n", 1)[0] for p in refer_answers] == [b"SIP/2.0 200 OK"]
    # T4: every NOTIFY body is one status line: 100 Trying, then the target's 200 OK.
    notifies = _sip(sent, b"NOTIFY ")
    assert [_body(n) for n in notifies] == [b"SIP/2.0 100 Trying\r\n", b"SIP/2.0 200 OK\r\n"]
    assert b"Subscription-State: terminated;reason=noresource" in notifies[-1]
    assert all(b"Event: refer\r\n" in n for n in notifies)
    # The INVITE to the target carries the transferor as Referred-By (baresip sends one).
    invites = [p for p in _sip(sent, b"INVITE sip:1053@") if b"Referred-By" in p]
    assert invites or b"Referred-By" not in b"".join(_sip(sent, b"INVITE "))
    # The final audio path: the phone hears the target's tone, the target the phone's.
    _wait_audio()
    assert_tone(_played_since(phone, files, played_before), BARESIP_TONE, "deskphone")
    phone.call_action(new["id"], "hangup")
    target.wait_event("CALL_CLOSED", 10)
    assert_tone(tone_of(target.received_wavs()[0]), PHONE_TONE, "the target")


def test_deskphone_as_transferor_moves_baresip_a_to_baresip_b(
    kamailio: Kamailio,
    phones: Callable[..., PhoneProcess],
    make_baresip: Any,
    tmp_path: Path,
    sniffer: Callable[[int], Sniffer],
) -> None:
    transferee: Baresip = make_baresip(
        "1055", kamailio=kamailio, codecs=["PCMU"], auto_answer=True, tone_hz=BARESIP_TONE
    )
    target: Baresip = make_baresip(
        "1056", kamailio=kamailio, codecs=["PCMU"], auto_answer=True, tone_hz=OTHER_TONE
    )
    phone, _ = deskphone(phones, kamailio, "1054", tmp_path)
    sent_by_phone = sniffer(phone.sip_port)

    call = phone.dial("1055")
    phone.wait_call(connected(call["id"]), 10, "connected to A")
    transferee.wait_event("CALL_ESTABLISHED", 10)
    # A's call to B must record to a file of its own (sndfile names files by second).
    transferee.wait_for_a_fresh_recording_name(recordings=1)

    code, body = phone.post(f"/api/calls/{call['id']}/transfer", {})
    assert code == 400 and "target" in str(body), body
    code, body = phone.post(f"/api/calls/{call['id']}/transfer", {"target": "sip:bad uri@x"})
    assert code == 400, body
    started = phone.call_action(call["id"], "transfer", target="1056")
    assert started["transfer"] == "trying" and started["transfer_role"] == "transferor"
    assert started["transfer_to"] == f"sip:1056@{kamailio.domain}"
    # A (the transferee) calls B: B answers, A's NOTIFY 200 makes the phone hang up A.
    target.wait_event("CALL_ESTABLISHED", 15)
    done = phone.wait_call(ended(call["id"]), 15, "the call with A to end")
    assert done["transfer"] == "done" and done["transfer_status"] == 200
    assert done["end_cause"] == "local_bye"
    code, _ = phone.post(f"/api/calls/{call['id']}/transfer", {"target": "1056"})
    assert code == 409
    # A and B still talk after the phone left (a wrong BYE would close B's call by now).
    _wait_audio()
    assert "CALL_CLOSED" not in target.event_types()
    sent = sent_by_phone.close()
    # Hold (sendonly re-INVITE) came before the REFER; the REFER names B and us.
    reinvites = [p for p in _sip(sent, b"INVITE ") if b"a=sendonly" in p]
    assert reinvites, "the phone did not hold A before transferring"
    (refer,) = _sip(sent, b"REFER ")
    assert f"Refer-To: <sip:1056@{kamailio.domain}>".encode() in refer
    assert b"Referred-By: <sip:1054@" in refer
    assert _sip(sent, b"BYE ")  # the phone ended its call with A after the NOTIFY 200
    transferee.hangup()
    target.wait_event("CALL_CLOSED", 10)
    transferee.wait_events("CALL_CLOSED", 2, 10)  # both of A's calls: their WAVs are complete
    # The final audio path: B heard A's tone and A (in its newest call) B's; not the phone's.
    assert_tone(tone_of(target.received_wavs()[0]), BARESIP_TONE, "the target B")
    assert_tone(tone_of(transferee.received_wavs()[-1]), OTHER_TONE, "the transferee A")


def test_toll_fraud_target_in_a_real_refer_is_refused_without_dialling(
    kamailio: Kamailio, phones: Callable[..., PhoneProcess], make_baresip: Any, tmp_path: Path
) -> None:
    transferor: Baresip = make_baresip("1057", kamailio=kamailio, codecs=["PCMU"])
    phone, _ = deskphone(phones, kamailio, "1058", tmp_path)
    transferor.dial(kamailio.aor("1058"))
    ringing = phone.wait_call(lambda c: c["state"] == "ringing", 10, "the phone to ring")
    phone.call_action(ringing["id"], "answer")
    transferor.wait_event("CALL_ESTABLISHED", 10)

    transferor.command("transfer", f"sip:00900123456@{kamailio.domain}")
    deadline = time.monotonic() + 10
    while "REFER refused: 403" not in phone.log() and time.monotonic() < deadline:
        time.sleep(0.05)  # polling the phone's log as an external observer
    assert "REFER refused: 403" in phone.log()
    time.sleep(0.5)  # bounded window in which a wrongly accepted REFER would dial out
    calls = phone.status()["calls"]
    # No call to the premium target was placed; only the call from X exists.
    assert [c["direction"] for c in calls] == ["incoming"], calls
    assert "transfer" not in calls[0]  # nothing was started on the phone's side
    # baresip 1.0 learns the reason (TRANSFER_FAILED with our 403) and then sends BYE by
    # itself (without a CALL_CLOSED event): the phone's call ends as remote_bye.
    failed = transferor.wait_event("TRANSFER_FAILED", 5)
    assert "403" in str(failed), failed
    done = phone.wait_call(ended(ringing["id"]), 10, "baresip's BYE after its failed transfer")
    assert done["end_cause"] == "remote_bye"
    assert len(phone.status()["calls"]) == 1


def test_deskphone_as_transferor_resumes_when_the_target_rejects(
    kamailio: Kamailio,
    phones: Callable[..., PhoneProcess],
    make_baresip: Any,
    tmp_path: Path,
    sniffer: Callable[[int], Sniffer],
) -> None:
    transferee: Baresip = make_baresip("1059", kamailio=kamailio, codecs=["PCMU"], auto_answer=True)
    target: Baresip = make_baresip("1060", kamailio=kamailio, codecs=["PCMU"])
    phone, _ = deskphone(phones, kamailio, "1054", tmp_path)  # reused: tests run in turn
    sent_by_phone = sniffer(phone.sip_port)

    call = phone.dial("1059")
    phone.wait_call(connected(call["id"]), 10, "connected to A")
    transferee.wait_event("CALL_ESTABLISHED", 10)
    phone.call_action(call["id"], "transfer", target="1060")
    target.wait_event("CALL_INCOMING", 15)
    target.hangup()  # B refuses the call from A
    back = phone.wait_call(
        lambda c: c["id"] == call["id"] and c.get("transfer") == "failed", 15, "the failed NOTIFY"
    )
    assert back["transfer_status"] >= 400
    resumed = phone.wait_call(connected(call["id"]), 10, "the call with A resumed")
    assert resumed["held"] is False
    sent = sent_by_phone.close()
    assert not _sip(sent, b"BYE ")
    last_reinvite = [p for p in _sip(sent, b"INVITE ") if b"a=sendonly" not in p][-1]
    assert b"a=sendrecv" in last_reinvite or b"a=send" not in last_reinvite
    phone.call_action(call["id"], "hangup")
    transferee.wait_event("CALL_CLOSED", 10)


def test_deskphone_as_transfer_target_talks_to_the_transferee(
    kamailio: Kamailio,
    phones: Callable[..., PhoneProcess],
    make_baresip: Any,
    tmp_path: Path,
    sniffer: Callable[[int], Sniffer],
) -> None:
    """baresip X transfers baresip Y to the phone: Y's INVITE rings the phone; after answering,
    the phone and Y hear each other.

    Users 1171-1173 (a range of their own: no stale bindings from the tests above).
    """
    transferee: Baresip = make_baresip(
        "1172", kamailio=kamailio, codecs=["PCMU"], auto_answer=True, tone_hz=BARESIP_TONE
    )
    transferor: Baresip = make_baresip(
        "1171", kamailio=kamailio, codecs=["PCMU"], tone_hz=OTHER_TONE
    )
    phone, files = deskphone(phones, kamailio, "1173", tmp_path)
    from_proxy = sniffer(kamailio.udp_addr[1])  # what Kamailio relays, to the phone among others

    transferor.dial(kamailio.aor("1172"))
    transferee.wait_event("CALL_ESTABLISHED", 10)
    # The call to the phone must record to a file of its own (sndfile names files by second).
    transferee.wait_for_a_fresh_recording_name(recordings=1)
    transferor.command("transfer", kamailio.aor("1173"))
    ringing = phone.wait_call(lambda c: c["state"] == "ringing", 15, "the transferee's call")
    assert "1172" in ringing["remote"]
    phone.call_action(ringing["id"], "answer")
    phone.wait_call(connected(ringing["id"]), 10, "connected to the transferee")
    played_before = files.playback.stat().st_size
    _wait_audio()
    call = next(c for c in phone.status()["calls"] if c["id"] == ringing["id"])
    assert call["direction"] == "incoming" and call["state"] == "connected"
    time.sleep(0.2)  # the last datagrams reach the capture
    # The call the REFER caused: from the transferee, to us (baresip 1.0 adds no Referred-By;
    # when a transferee does, status shows it as referred_by with referred_by_verified false).
    (invite,) = _sip(from_proxy.close(), b"INVITE sip:1173@")
    assert b"From: <sip:1172@" in invite
    # The final audio path: the phone hears the transferee, the transferee the phone.
    assert_tone(_played_since(phone, files, played_before), BARESIP_TONE, "deskphone")
    phone.call_action(ringing["id"], "hangup")
    phone.wait_call(ended(ringing["id"]), 10, "the call to end")
    transferor.hangup()
    transferee.wait_events("CALL_CLOSED", 2, 10)  # both calls: their WAVs are complete
    assert_tone(tone_of(transferee.received_wavs()[-1]), PHONE_TONE, "the transferee")
