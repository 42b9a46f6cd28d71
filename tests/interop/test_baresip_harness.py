"""Proves the baresip test peer: two real baresips registered to the session Kamailio call each
other and each records the other's tone (PCMU and G.722); DTMF sent by one is reported by the
other; the same call over TLS with mandatory SDES-SRTP (RTP/SAVP offer with a=crypto, both sides
report the AES_CM_128_HMAC_SHA1_80 suite). Checking the packets on the wire needs a capture and
is left to the deskphone acceptance tests.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.interop.audio_files import read_wav, tone_of, write_tone
from tests.interop.baresip import Baresip, BaresipError, parse_netstrings
from tests.interop.baresip import make_baresip as _make_baresip_fixture  # noqa: F401
from tests.interop.kamailio import Kamailio

CALL_SECONDS = 2.5  # audio collected per call; bounded, not a wait for an event
TOLERANCE_HZ = 5.0

MakeBaresip = Callable[..., Baresip]


def _call(caller: Baresip, callee: Baresip, kamailio: Kamailio) -> None:
    """caller dials callee (auto-answering), both see the call up and RTP flowing."""
    caller.dial(kamailio.aor(callee.user))
    caller.wait_event("CALL_ESTABLISHED", 5)
    callee.wait_event("CALL_ESTABLISHED", 5)
    caller.wait_event("CALL_RTPESTAB", 5)
    callee.wait_event("CALL_RTPESTAB", 5)


def _hang_up(caller: Baresip, callee: Baresip) -> None:
    caller.hangup()
    closed = caller.wait_event("CALL_CLOSED", 5)
    assert closed["direction"] == "outgoing"
    assert callee.wait_event("CALL_CLOSED", 5)["direction"] == "incoming"


def _assert_heard(listener: Baresip, frequency: float, rate: int) -> None:
    received = listener.received_wavs()
    assert len(received) == 1, listener.recorded_wavs()
    heard, level = tone_of(received[0])
    assert abs(heard - frequency) < TOLERANCE_HZ, f"{listener.user} heard {heard:.1f} Hz"
    assert level > 0.1, f"{listener.user} recording too quiet: RMS {level:.3f}"
    wav = read_wav(received[0])
    assert wav.rate == rate
    assert wav.duration > 1.0, f"only {wav.duration:.2f} s recorded"


@pytest.mark.parametrize(("codec", "rate"), [("PCMU", 8000), ("G722", 16000)])
def test_two_baresips_hear_each_other(
    make_baresip: MakeBaresip, kamailio: Kamailio, codec: str, rate: int
) -> None:
    callee = make_baresip("1008", kamailio=kamailio, codecs=[codec], auto_answer=True, tone_hz=440)
    caller = make_baresip("1007", kamailio=kamailio, codecs=[codec], tone_hz=1000)
    assert kamailio.contacts("1008"), "callee not in Kamailio's location table"

    _call(caller, callee, kamailio)
    time.sleep(CALL_SECONDS)
    _hang_up(caller, callee)

    _assert_heard(callee, 1000, rate)
    _assert_heard(caller, 440, rate)


def test_dtmf_digits_reported_by_far_end(make_baresip: MakeBaresip, kamailio: Kamailio) -> None:
    callee = make_baresip("1008", kamailio=kamailio, auto_answer=True, tone_hz=440)
    caller = make_baresip("1007", kamailio=kamailio, tone_hz=1000)
    _call(caller, callee, kamailio)

    digits = "0123456789*#"
    caller.send_dtmf(digits)
    starts = callee.wait_events("CALL_DTMF_START", len(digits), timeout=8)
    assert "".join(e["param"] for e in starts) == digits
    callee.wait_events("CALL_DTMF_END", len(digits), timeout=2)
    _hang_up(caller, callee)


def test_manual_answer_and_callee_hangs_up(make_baresip: MakeBaresip, kamailio: Kamailio) -> None:
    callee = make_baresip("1008", kamailio=kamailio, tone_hz=440)
    caller = make_baresip("1007", kamailio=kamailio, tone_hz=1000)
    caller.dial(kamailio.aor("1008"))
    incoming = callee.wait_event("CALL_INCOMING", 5)
    assert incoming["peeruri"] == kamailio.aor("1007")
    caller.wait_event("CALL_RINGING", 5)
    callee.answer()
    caller.wait_event("CALL_ESTABLISHED", 5)
    callee.hangup()
    assert callee.wait_event("CALL_CLOSED", 5)["direction"] == "incoming"
    caller.wait_event("CALL_CLOSED", 5)


def test_tls_with_srtp(make_baresip: MakeBaresip, kamailio: Kamailio) -> None:
    callee = make_baresip(
        "1008",
        kamailio=kamailio,
        transport="tls",
        mediaenc="srtp-mand",
        codecs=["G722"],
        auto_answer=True,
        tone_hz=440,
    )
    caller = make_baresip(
        "1007",
        kamailio=kamailio,
        transport="tls",
        mediaenc="srtp-mand",
        codecs=["G722"],
        sip_trace=True,
    )
    contacts = kamailio.contacts("1008")
    assert contacts and "tls" in str(contacts[0].get("Socket", "")).lower(), contacts

    _call(caller, callee, kamailio)
    for phone in (caller, callee):
        # param is "<event>,<media>,<crypto suite>"
        menc = phone.wait_event("CALL_MENC", 5)
        assert menc["param"].split(",")[1:] == ["audio", "AES_CM_128_HMAC_SHA1_80"], menc
    trace = caller.log_text()
    assert re.search(r"m=audio \d+ RTP/SAVP ", trace), "offer is not RTP/SAVP"
    assert "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" in trace
    time.sleep(CALL_SECONDS)
    _hang_up(caller, callee)

    _assert_heard(callee, 1000, 16000)
    _assert_heard(caller, 440, 16000)


def test_hold_and_resume_are_reinvites_with_directions(
    make_baresip: MakeBaresip, kamailio: Kamailio
) -> None:
    callee = make_baresip("1008", kamailio=kamailio, auto_answer=True, tone_hz=440)
    caller = make_baresip("1007", kamailio=kamailio, tone_hz=1000, sip_trace=True)
    _call(caller, callee, kamailio)

    caller.hold()
    assert callee.wait_event("CALL_REMOTE_SDP", 5)["param"] == "offer"  # the initial INVITE
    assert callee.wait_event("CALL_REMOTE_SDP", 5)["param"] == "offer"  # the hold re-INVITE
    caller.wait_event("CALL_REMOTE_SDP", 5)  # initial answer
    caller.wait_event("CALL_REMOTE_SDP", 5)  # answer to the hold
    caller.resume()
    callee.wait_event("CALL_REMOTE_SDP", 5)
    caller.wait_event("CALL_REMOTE_SDP", 5)
    _hang_up(caller, callee)

    directions = re.findall(r"a=(sendrecv|sendonly|recvonly|inactive)", caller.log_text())
    # caller's trace: offer/answer of the call, hold offer/answer, resume offer/answer
    assert directions[-4:] == ["sendonly", "recvonly", "sendrecv", "sendrecv"], directions


def test_stop_unregisters(make_baresip: MakeBaresip, kamailio: Kamailio) -> None:
    phone = make_baresip("1008", kamailio=kamailio)
    contacts = kamailio.contacts("1008")
    assert len(contacts) == 1 and f"127.0.0.1:{phone.sip_port}" in contacts[0]["Address"], contacts
    phone.stop()
    assert not phone.running
    assert kamailio.contacts("1008") == []


def test_wait_event_times_out_with_the_events_seen(
    make_baresip: MakeBaresip, kamailio: Kamailio
) -> None:
    phone = make_baresip("1008", kamailio=kamailio)
    with pytest.raises(BaresipError, match=r"no CALL_INCOMING event within 0.2 s \(events: \["):
        phone.wait_event("CALL_INCOMING", 0.2)
    with pytest.raises(BaresipError, match="command not found"):
        phone.command("no-such-command")


def test_netstring_parser_keeps_partial_frames() -> None:
    buffer = bytearray(b'5:hello,3:abc,11:{"a"')
    assert parse_netstrings(buffer) == [b"hello", b"abc"]
    assert buffer == bytearray(b'11:{"a"')
    buffer += b": true},"
    assert parse_netstrings(buffer) == [b'{"a": true}']
    assert buffer == bytearray()
    with pytest.raises(BaresipError):
        parse_netstrings(bytearray(b"3:abcX"))


def test_tone_helpers_measure_what_they_wrote(tmp_path: Path) -> None:
    path = write_tone(tmp_path / "t.wav", 1234.5, seconds=0.5, rate=16000, amplitude=0.25)
    wav = read_wav(path)
    assert (wav.rate, len(wav.samples)) == (16000, 8000)
    frequency, level = tone_of(path)
    assert abs(frequency - 1234.5) < 0.5
    assert abs(level - 0.25 / 2**0.5) < 0.001
    with pytest.raises(ValueError):
        write_tone(tmp_path / "bad.wav", 5000, rate=8000)


def test_tone_wav_must_match_the_codec_rate(tmp_path: Path) -> None:
    wav = write_tone(tmp_path / "t8k.wav", 440, seconds=0.1, rate=8000)
    with pytest.raises(ValueError, match="16000 Hz"):
        Baresip(
            tmp_path / "b",
            user="1001",
            password="pw1001",
            registrar="sip:127.0.0.1:5060",
            codecs=["G722"],
            tone_wav=wav,
        )
