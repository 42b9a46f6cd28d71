"""Local call-progress tones on the phone's real playback path (PyAudio -> PortAudio -> ALSA
`file` card), against a real baresip through Kamailio (users 1041-1050).

* baresip does not auto-answer: it rings with a 180 without SDP, so the phone must generate the
  US ringback itself (440 + 480 Hz, 2 s on / 4 s off) until we hang up (CANCEL: no tone after);
* baresip rejects with 486: the phone must play the US busy tone (480 + 620 Hz, 0.5 s on /
  0.5 s off) for 3 s and then stop on its own.

The ALSA file card is not paced by a clock, so every sample in the file is one the phone wrote:
cadence lengths are measured in samples, frequencies by FFT.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.interop.baresip import Baresip
from tests.interop.kamailio import Kamailio
from tests.interop.phone import PhoneProcess
from tests.interop.test_calls_baresip import AlsaFiles, deskphone, ended

RINGING_SECONDS = 3.0  # how long the phone rings before we hang up (bounded observation)
LOUD = 0.02  # frame RMS (full scale 1.0) that counts as tone; the plans play at -16 dBFS


def wait_log(phone: PhoneProcess, text: str, timeout: float) -> None:
    """Poll the phone's log for `text` (bounded); the player logs every tone start and stop."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in phone.log():
            return
        time.sleep(0.05)  # polling interval of an external observer
    raise AssertionError(f"no {text!r} in the phone log:\n{phone.log()[-3000:]}")


def played(phone: PhoneProcess, files: AlsaFiles) -> tuple[np.ndarray, int]:
    """(samples in [-1, 1], rate) of everything the phone wrote to its playback card."""
    rates = re.findall(r"playback to .* at (\d+) Hz", phone.log())
    assert rates, f"the phone never opened its playback device:\n{phone.log()[-3000:]}"
    pcm = np.frombuffer(files.playback.read_bytes(), dtype="<i2").astype(np.float64) / 32768
    return pcm, int(rates[-1])


def frame_on(pcm: np.ndarray, rate: int) -> np.ndarray:
    """Per 20 ms frame: is the tone on?"""
    block = rate // 50
    count = len(pcm) // block
    frames = pcm[: count * block].reshape(count, block)
    return np.sqrt(np.mean(frames**2, axis=1)) > LOUD


def runs(on: np.ndarray) -> list[tuple[bool, int]]:
    """Run-length encoding: [(on?, frames), ...]."""
    edges = np.flatnonzero(np.diff(on.astype(np.int8))) + 1
    bounds = [0, *edges.tolist(), len(on)]
    return [(bool(on[a]), b - a) for a, b in zip(bounds, bounds[1:], strict=False)]


def energy_near(pcm: np.ndarray, rate: int, frequencies: tuple[float, ...]) -> list[float]:
    """Share of the signal's energy within 10 Hz of each frequency (FFT, Hann window)."""
    power = np.abs(np.fft.rfft(pcm * np.hanning(len(pcm)))) ** 2
    hz = np.fft.rfftfreq(len(pcm), 1 / rate)
    total = power.sum()
    return [float(power[np.abs(hz - f) <= 10].sum() / total) for f in frequencies]


def test_ringback_is_generated_locally_while_the_callee_rings_without_sdp(
    kamailio: Kamailio, phones: Callable[..., PhoneProcess], make_baresip: Any, tmp_path: Path
) -> None:
    far: Baresip = make_baresip("1042", kamailio=kamailio, codecs=["PCMU"], tone_hz=440.0)
    phone, files = deskphone(phones, kamailio, "1041", tmp_path)
    call = phone.dial("1042")
    far.wait_event("CALL_INCOMING", 10)
    early = phone.wait_call(
        lambda c: c["id"] == call["id"] and c["state"] == "early", 5, "the 180 Ringing"
    )
    assert early["codec"] is None, "baresip's 180 carried SDP: this test needs no early media"
    wait_log(phone, "progress tone ringback started", 5)
    time.sleep(RINGING_SECONDS)  # let it ring for a bounded time
    phone.call_action(call["id"], "hangup")
    far.wait_event("CALL_CLOSED", 10)
    done = phone.wait_call(ended(call["id"]), 10, "the cancelled call to end")
    assert (done["end_cause"], done["end_status"]) == ("cancelled", 487)
    wait_log(phone, "progress tone ringback stopped", 5)

    pcm, rate = played(phone, files)
    pattern = runs(frame_on(pcm, rate))
    if pattern and not pattern[0][0]:
        pattern = pattern[1:]  # the card's prefill silence
    # 2 s on (100 frames; +-1 for the prefill's offset), then off until we hung up, nothing more
    assert len(pattern) == 2, f"expected one 2 s burst then silence, got runs {pattern}"
    (on, on_frames), (off, off_frames) = pattern
    assert on and 99 <= on_frames <= 101, pattern
    assert not off and off_frames >= 40, pattern  # at least 0.8 s of the 4 s pause was written
    assert off_frames <= 200, "the ringback went on after the pause: it should have stopped"

    start = np.flatnonzero(np.abs(pcm) > LOUD)[0]
    burst = pcm[start : start + 2 * rate - rate // 50]
    near_440, near_480 = energy_near(burst, rate, (440.0, 480.0))
    assert near_440 > 0.4 and near_480 > 0.4, (near_440, near_480)  # both tones, nothing else


@pytest.mark.parametrize("country", ["US"])
def test_busy_tone_for_three_seconds_when_the_callee_rejects_with_486(
    kamailio: Kamailio,
    phones: Callable[..., PhoneProcess],
    make_baresip: Any,
    tmp_path: Path,
    country: str,
) -> None:
    far: Baresip = make_baresip("1044", kamailio=kamailio, codecs=["PCMU"], tone_hz=440.0)
    phone, files = deskphone(phones, kamailio, "1043", tmp_path, audio={"tone_country": country})
    call = phone.dial("1044")
    far.wait_event("CALL_INCOMING", 10)
    phone.wait_call(lambda c: c["id"] == call["id"] and c["state"] == "early", 5, "ringing")
    far.hangup()  # rejecting a ringing call: baresip 1.0 answers "486 Rejected"
    done = phone.wait_call(ended(call["id"]), 10, "the rejected call to end")
    assert done["end_status"] == 486
    wait_log(phone, "progress tone busy started", 5)
    wait_log(phone, "progress tone busy stopped", 6)  # bounded: ~3 s after the 486

    pcm, rate = played(phone, files)
    block = rate // 50
    on = frame_on(pcm, rate)
    # the file ends with the busy tone: its last 150 frames (3 s) are 25 on / 25 off, x3
    # (ringback before it, from the 180 to the 486, may be on or off where busy begins)
    assert len(on) >= 150, f"only {len(on) / 50:.2f} s played"
    busy_on = on[-150:]
    expected = np.tile(np.repeat([True, False], 25), 3)
    mismatches = np.flatnonzero(busy_on != expected)
    # the prefill can shift the frame grid by part of a frame: tolerate one frame per edge
    assert all(i % 25 in (0, 24) for i in mismatches), f"busy cadence off at frames {mismatches}"

    busy = pcm[-150 * block :]
    bursts = np.concatenate(
        [busy[k * 50 * block + block : (k * 50 + 24) * block] for k in range(3)]
    )
    near_480, near_620 = energy_near(bursts, rate, (480.0, 620.0))
    assert near_480 > 0.4 and near_620 > 0.4, (near_480, near_620)
    # ringback (from the 180) turned into busy on the same open device: one playback stream
    assert phone.log().count("progress tone ringback started") == 1
    assert len(re.findall(r"playback to .* at \d+ Hz", phone.log())) == 1
