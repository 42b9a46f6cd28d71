"""Calls with real audio between a deskphone process and a real baresip, through Kamailio.

Acceptance 1-4 of the calls-with-audio issue. The deskphone's audio goes through its real path:
PyAudio -> PortAudio -> ALSA, where ALSA is a `file` plugin sound card selected with
ALSA_CONFIG_PATH (tests/data/alsa/asoundrc): it captures a raw tone file we write and plays to
a raw file we analyse by FFT. baresip plays a tone WAV (aufile) and records what it receives
(sndfile). Each side must hear the other's tone; the call state and end reason must show in
the phone's status; SRTP must make the RTP on the wire unreadable.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from audio.speedups import PURE_PYTHON
from tests.interop.audio_files import dominant_frequency, tone_of
from tests.interop.baresip import Baresip
from tests.interop.kamailio import Kamailio
from tests.interop.phone import PhoneProcess
from tests.interop.sniff import Sniffer

ROOT = Path(__file__).resolve().parents[2]
ASOUNDRC = ROOT / "tests" / "data" / "alsa" / "asoundrc"
PHONE_TONE = 1000.0
BARESIP_TONE = 440.0
TALK_SECONDS = 2.5  # how long audio flows before hanging up (bounded observation window)


@dataclass
class AlsaFiles:
    """The raw files behind the phone's ALSA `file` sound card."""

    capture: Path
    playback: Path
    env: dict[str, str]


def alsa_files(workdir: Path, tone_hz: float = PHONE_TONE, rate: int = 48000) -> AlsaFiles:
    """A capture file with a tone (raw S16_LE mono at the rate the phone opens: 48 kHz)."""
    workdir.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(rate * 60)) / rate
    tone = (0.3 * 32767 * np.sin(2 * np.pi * tone_hz * t)).astype("<i2")
    capture = workdir / "alsa-in.raw"
    capture.write_bytes(tone.tobytes())
    playback = workdir / "alsa-out.raw"
    env = {
        "ALSA_CONFIG_PATH": str(ASOUNDRC),
        "DESKPHONE_ALSA_IN": str(capture),
        "DESKPHONE_ALSA_OUT": str(playback),
    }
    return AlsaFiles(capture, playback, env)


def playback_tone(phone: PhoneProcess, files: AlsaFiles) -> tuple[float, float]:
    """(dominant Hz, RMS 0..1) of what the phone played, at the rate its log says it opened."""
    m = re.search(r"playback to .* at (\d+) Hz", phone.log())
    assert m, f"the phone never opened its playback device:\n{phone.log()[-3000:]}"
    rate = int(m.group(1))
    pcm = np.frombuffer(files.playback.read_bytes(), dtype="<i2").astype(np.float64) / 32768
    loud = np.flatnonzero(np.abs(pcm) > 0.02)
    assert loud.size > rate // 2, f"the phone played {loud.size / rate:.2f} s of audio"
    active = pcm[loud[0] : loud[-1] + 1]
    return dominant_frequency(active, rate), float(np.sqrt(np.mean(active**2)))


def deskphone(
    phones: Callable[..., PhoneProcess],
    kam: Kamailio,
    user: str,
    tmp_path: Path,
    *,
    transport: str = "udp",
    codecs: list[str] | None = None,
    pki: Any = None,
    audio: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
) -> tuple[PhoneProcess, AlsaFiles]:
    files = alsa_files(tmp_path / f"alsa-{user}")
    files.env.update(env or {})
    account = {
        "id": "line1",
        "user": user,
        "password": kam.users[user],
        "domain": kam.domain,
        "registrar": kam.uri(transport),
        "expires": 300,
    }
    sip: dict[str, Any] = {}
    if pki is not None:
        sip["tls_ca"] = str(pki.ca_cert)
    phone = phones(
        [account], sip=sip, env=files.env, audio={"codecs": codecs or ["PCMU"], **(audio or {})}
    )
    phone.wait_state("registered", 15)
    return phone, files


def connected(call_id: str) -> Callable[[dict[str, Any]], bool]:
    return lambda c: c["id"] == call_id and c["state"] == "connected"


def ended(call_id: str) -> Callable[[dict[str, Any]], bool]:
    return lambda c: c["id"] == call_id and c["state"] == "ended"


def assert_tone(measured: tuple[float, float], expected: float, who: str) -> None:
    freq, level = measured
    assert abs(freq - expected) < 5, f"{who} heard {freq:.1f} Hz, expected {expected} Hz"
    assert level > 0.02, f"{who} heard almost nothing (RMS {level:.4f})"


@pytest.mark.parametrize(
    "codec, c_modules",
    [("PCMU", True), ("G722", True), ("PCMU", False)],
    ids=["PCMU", "G722", "PCMU-python-twins"],
)
def test_deskphone_calls_baresip_and_both_hear_each_other(
    kamailio: Kamailio,
    phones: Callable[..., PhoneProcess],
    make_baresip: Any,
    tmp_path: Path,
    codec: str,
    c_modules: bool,
) -> None:
    """Also once on the Python twins of the C modules (DESKPHONE_PURE_PYTHON), the path a
    phone installed without a compiler takes."""
    far: Baresip = make_baresip(
        "1022", kamailio=kamailio, codecs=[codec], auto_answer=True, tone_hz=BARESIP_TONE
    )
    env = {} if c_modules else {PURE_PYTHON: "1"}
    phone, files = deskphone(phones, kamailio, "1021", tmp_path, codecs=[codec], env=env)
    assert ("Python twins" in phone.log()) is not c_modules
    call = phone.dial("1022")
    assert call["state"] == "calling" and call["direction"] == "outgoing"
    up = phone.wait_call(connected(call["id"]), 10, "the call to connect")
    assert up["codec"] == codec and up["srtp"] is False
    far.wait_event("CALL_ESTABLISHED", 10)
    time.sleep(TALK_SECONDS)  # let audio flow both ways for a bounded time
    stats = phone.call(call["id"])["media"]
    assert stats["packets_sent"] > 50 and stats["packets_received"] > 50, stats
    phone.call_action(call["id"], "hangup")
    far.wait_event("CALL_CLOSED", 10)
    done = phone.wait_call(ended(call["id"]), 5, "the call to end")
    assert done["end_cause"] == "local_bye"

    assert_tone(playback_tone(phone, files), BARESIP_TONE, "deskphone")
    assert_tone(tone_of(far.received_wavs()[0]), PHONE_TONE, "baresip")


@pytest.mark.parametrize("codec", ["PCMU", "G722"])
def test_baresip_calls_deskphone_which_answers_and_gets_hung_up_on(
    kamailio: Kamailio,
    phones: Callable[..., PhoneProcess],
    make_baresip: Any,
    tmp_path: Path,
    codec: str,
) -> None:
    phone, files = deskphone(phones, kamailio, "1023", tmp_path, codecs=[codec])
    far: Baresip = make_baresip("1024", kamailio=kamailio, codecs=[codec], tone_hz=BARESIP_TONE)
    far.dial(kamailio.aor("1023"))
    ringing = phone.wait_call(lambda c: c["state"] == "ringing", 10, "the phone to ring")
    assert ringing["direction"] == "incoming" and "1024" in ringing["remote"]
    phone.call_action(ringing["id"], "answer")
    far.wait_event("CALL_ESTABLISHED", 10)
    phone.wait_call(connected(ringing["id"]), 5, "connected")
    time.sleep(TALK_SECONDS)
    far.hangup()
    done = phone.wait_call(ended(ringing["id"]), 10, "the far end's BYE")
    assert done["end_cause"] == "remote_bye"
    assert done["codec"] == codec

    assert_tone(playback_tone(phone, files), BARESIP_TONE, "deskphone")
    assert_tone(tone_of(far.received_wavs()[0]), PHONE_TONE, "baresip")


def test_srtp_over_tls_both_ways_and_the_wire_is_not_plaintext(
    kamailio: Kamailio,
    phones: Callable[..., PhoneProcess],
    make_baresip: Any,
    pki: Any,
    tmp_path: Path,
    sniffer: Callable[[int], Sniffer],
) -> None:
    far: Baresip = make_baresip(
        "1026",
        kamailio=kamailio,
        transport="tls",
        codecs=["PCMU"],
        auto_answer=True,
        tone_hz=BARESIP_TONE,
        mediaenc="srtp-mand",
    )
    phone, files = deskphone(
        phones, kamailio, "1025", tmp_path, transport="tls", pki=pki, audio={"srtp": "mandatory"}
    )
    call = phone.dial("1026")
    up = phone.wait_call(connected(call["id"]), 10, "the SRTP call to connect")
    assert up["srtp"] is True
    port = int(up["local_rtp"].rsplit(":", 1)[1])
    sniff = sniffer(port)
    time.sleep(TALK_SECONDS)
    packets = sniff.close()
    phone.call_action(call["id"], "hangup")
    far.wait_event("CALL_CLOSED", 10)

    rtp = [p for p in packets if len(p) > 12 and p[0] >> 6 == 2 and (p[1] & 0x7F) == 0]
    assert len(rtp) > 50, f"captured {len(packets)} packets from the phone's RTP port"
    # 12-byte header + 160 bytes of 20 ms PCMU + the 10-byte HMAC-SHA1-80 tag.
    assert {len(p) for p in rtp} == {182}
    # Read as plain PCMU, the payload must not carry the phone's tone: it is ciphertext.
    mu = np.frombuffer(b"".join(p[12:172] for p in rtp), dtype=np.uint8)
    pcm = _ulaw_decode(mu)
    spectrum = np.abs(np.fft.rfft(pcm - pcm.mean()))
    peak_share = spectrum.max() / spectrum.sum()
    assert peak_share < 0.01, "the RTP payload looks like a plain tone: not encrypted"

    assert_tone(playback_tone(phone, files), BARESIP_TONE, "deskphone")
    assert_tone(tone_of(far.received_wavs()[0]), PHONE_TONE, "baresip")
    stats = phone.call(call["id"])["media"]
    assert (
        stats.get("srtp_dropped", {}) in ({}, {"auth": 0})
        or sum(stats["srtp_dropped"].values()) < 3
    ), stats


def _ulaw_decode(mu: np.ndarray) -> np.ndarray:
    mu = ~mu.astype(np.int32) & 0xFF
    sign = mu & 0x80
    exponent = (mu >> 4) & 0x07
    mantissa = mu & 0x0F
    magnitude = ((mantissa << 3) + 0x84) << exponent
    return np.where(sign != 0, 0x84 - magnitude, magnitude - 0x84).astype(np.float64)


def test_cancel_before_answer(
    kamailio: Kamailio, phones: Callable[..., PhoneProcess], make_baresip: Any, tmp_path: Path
) -> None:
    far: Baresip = make_baresip("1028", kamailio=kamailio, codecs=["PCMU"], tone_hz=BARESIP_TONE)
    phone, _ = deskphone(phones, kamailio, "1027", tmp_path)
    call = phone.dial("1028")
    far.wait_event("CALL_INCOMING", 10)
    phone.wait_call(lambda c: c["id"] == call["id"] and c["state"] == "early", 5, "ringing")
    phone.call_action(call["id"], "hangup")
    far.wait_event("CALL_CLOSED", 10)
    done = phone.wait_call(ended(call["id"]), 10, "the cancelled call to end")
    assert (done["end_cause"], done["end_status"]) == ("cancelled", 487)


def test_busy_callee_is_reported_with_code_and_reason(
    kamailio: Kamailio, phones: Callable[..., PhoneProcess], make_baresip: Any, tmp_path: Path
) -> None:
    far: Baresip = make_baresip("1030", kamailio=kamailio, codecs=["PCMU"], tone_hz=BARESIP_TONE)
    phone, _ = deskphone(phones, kamailio, "1029", tmp_path)
    call = phone.dial("1030")
    far.wait_event("CALL_INCOMING", 10)
    far.hangup()  # rejecting a ringing call: baresip 1.0 answers "486 Rejected"
    done = phone.wait_call(ended(call["id"]), 10, "the rejected call to end")
    assert done["end_cause"] == "failed"
    assert done["end_status"] == 486 and done["end_reason"] == "Rejected", done


def test_dtmf_both_ways(
    kamailio: Kamailio, phones: Callable[..., PhoneProcess], make_baresip: Any, tmp_path: Path
) -> None:
    far: Baresip = make_baresip(
        "1022", kamailio=kamailio, codecs=["PCMU"], auto_answer=True, tone_hz=BARESIP_TONE
    )
    phone, _ = deskphone(phones, kamailio, "1021", tmp_path)
    call = phone.dial("1022")
    phone.wait_call(connected(call["id"]), 10, "connected")
    far.wait_event("CALL_ESTABLISHED", 10)
    digits = "0123456789*#"
    phone.call_action(call["id"], "dtmf", digits=digits)
    got = [far.wait_event("CALL_DTMF_START", 10)["param"] for _ in digits]
    assert "".join(got) == digits

    far.send_dtmf("147#")
    phone.wait_call(
        lambda c: c["id"] == call["id"] and c["dtmf_received"] == "147#", 10, "the far end's digits"
    )
    bad = phone.post(f"/api/calls/{call['id']}/dtmf", {"digits": "12x"})
    assert bad[0] == 400 and "digits" in bad[1]["error"]
    phone.call_action(call["id"], "hangup")


def test_hold_and_resume_stop_and_restart_rtp_both_ways(
    kamailio: Kamailio, phones: Callable[..., PhoneProcess], make_baresip: Any, tmp_path: Path
) -> None:
    """RFC 3264 8.4 against baresip: our sendonly hold, its recvonly answer, RTP counted."""
    far: Baresip = make_baresip(
        "1032", kamailio=kamailio, codecs=["PCMU"], auto_answer=True, tone_hz=BARESIP_TONE
    )
    phone, _ = deskphone(phones, kamailio, "1031", tmp_path)
    call = phone.dial("1032")
    phone.wait_call(connected(call["id"]), 10, "connected")
    far.wait_event("CALL_ESTABLISHED", 10)

    def counts() -> tuple[int, int]:
        media = phone.call(call["id"])["media"]
        return media["packets_sent"], media["packets_received"]

    def flowing(seconds: float = 1.0) -> tuple[int, int]:
        before = counts()
        time.sleep(seconds)  # bounded observation window
        after = counts()
        return after[0] - before[0], after[1] - before[1]

    sent, received = flowing()
    assert sent >= 40 and received >= 40, (sent, received)

    held = phone.call_action(call["id"], "hold")
    assert held["held"] is True
    phone.wait_call(lambda c: c["id"] == call["id"] and c["state"] == "held", 5, "held")
    # SDP-wise we are sendonly; the phone also mutes locally, so its media is inactive.
    assert phone.call(call["id"])["media"]["direction"] == "inactive"
    time.sleep(0.3)  # let in-flight packets drain
    sent, received = flowing()
    assert sent == 0, f"the phone still sends RTP while holding: {sent} packets/s"
    assert received <= 2, f"baresip kept sending to a holder: {received} packets/s"

    phone.call_action(call["id"], "resume")
    phone.wait_call(connected(call["id"]), 5, "resumed")
    time.sleep(0.3)
    sent, received = flowing()
    assert sent >= 40 and received >= 40, (sent, received)
    phone.call_action(call["id"], "hangup")
    far.wait_event("CALL_CLOSED", 10)


def test_srtp_over_tls_when_baresip_calls_the_phone(
    kamailio: Kamailio,
    phones: Callable[..., PhoneProcess],
    make_baresip: Any,
    pki: Any,
    tmp_path: Path,
    sniffer: Callable[[int], Sniffer],
) -> None:
    """The other call direction: baresip offers RTP/SAVP over TLS, the phone answers with SDES.

    Kamailio reaches the phone over the phone's own TLS connection (it has no TLS listener).
    """
    phone, files = deskphone(
        phones, kamailio, "1033", tmp_path, transport="tls", pki=pki, audio={"srtp": "mandatory"}
    )
    far: Baresip = make_baresip(
        "1034",
        kamailio=kamailio,
        transport="tls",
        codecs=["PCMU"],
        tone_hz=BARESIP_TONE,
        mediaenc="srtp-mand",
    )
    far.dial(kamailio.aor("1033"))
    ringing = phone.wait_call(lambda c: c["state"] == "ringing", 10, "the phone to ring over TLS")
    phone.call_action(ringing["id"], "answer")
    up = phone.wait_call(connected(ringing["id"]), 10, "connected")
    assert up["srtp"] is True
    far.wait_event("CALL_ESTABLISHED", 10)
    sniff = sniffer(int(up["local_rtp"].rsplit(":", 1)[1]))
    time.sleep(TALK_SECONDS)
    packets = sniff.close()
    far.hangup()
    phone.wait_call(ended(ringing["id"]), 10, "the far end's BYE")

    rtp = [p for p in packets if len(p) > 12 and p[0] >> 6 == 2 and (p[1] & 0x7F) == 0]
    assert len(rtp) > 50 and {len(p) for p in rtp} == {182}
    assert_tone(playback_tone(phone, files), BARESIP_TONE, "deskphone")
    assert_tone(tone_of(far.received_wavs()[0]), PHONE_TONE, "baresip")
