"""Proves the baresip test peer: two real baresips registered to the session Kamailio call each
other and each records the other's tone; DTMF sent by one is reported by the other; the same
over TLS with SDES-SRTP, where the RTP on the wire must not carry the plaintext payload.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import pytest

from tests.interop.audio_files import tone_of
from tests.interop.baresip import Baresip
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
    from tests.interop.audio_files import read_wav

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
