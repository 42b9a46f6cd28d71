"""The sound-card ringer through the real PyAudio -> PortAudio -> ALSA path (a file sound card,
tests/data/alsa/asoundrc, in a child interpreter as in test_devices.py): it plays the ring tone
only while the cadence is on."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from audio.pcm import dominant_frequency
from tests.unit.test_devices import run_child


def test_sound_ringer_plays_its_tone_only_while_ringing(tmp_path: Path) -> None:
    result = run_child(
        """
        import time
        from board.ringer_sound import SoundRinger
        ringer = SoundRinger("default")
        ringer.ring(True)
        deadline = time.monotonic() + 10
        while ringer.samples_rung < ringer.rate and time.monotonic() < deadline:
            time.sleep(0.005)
        ringer.ring(False)
        rung = ringer.samples_rung
        ringer.close()
        result.update(rate=ringer.rate, rung=rung)
        """,
        tmp_path,
    )
    rate = result["rate"]
    assert result["rung"] >= rate  # at least a second of ringing went to the card
    pcm = np.frombuffer((tmp_path / "out.raw").read_bytes(), dtype="<i2")
    loud = np.flatnonzero(np.abs(pcm) > 300)
    assert loud[-1] - loud[0] >= 0.95 * rate  # a second of tone (sums dip near zero crossings)
    tone = pcm[loud[0]:loud[-1] + 1]
    assert min(abs(dominant_frequency(tone, rate) - f) for f in (1000.0, 1250.0)) < 2.0
    assert not pcm[loud[-1] + 1:].any()  # silence once ringing stopped
