"""MUTE and volume on the media engine's real audio endpoints (WAV files stand in for devices)."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

from audio.graph import ToneSource, write_wav
from firmware.runtime.media import AudioEndpoints
from firmware.runtime.ui_audio import install, volume_gain


def test_mute_gates_the_microphone_and_volume_scales_the_speaker(tmp_path: Path) -> None:
    mic = tmp_path / "mic.wav"
    write_wav(mic, ToneSource(440.0, 8000, -10.0).read(8000), 8000)
    audio = AudioEndpoints(capture_file=mic, playback_file=tmp_path / "out.wav", file_rate=8000)
    state = {"muted": False, "volume": 5}
    install(audio, lambda: bool(state["muted"]), lambda: volume_gain(int(state["volume"])))

    source, owned = audio.open_source()
    assert owned and source.rate == 8000
    loud = source.read(160)
    assert np.abs(loud).max() > 5000
    state["muted"] = True  # takes effect on the next frame of an open source
    assert not source.read(160).any()
    state["muted"] = False
    assert source.read(160).any()

    sink, _ = audio.open_sink()
    frame = np.full(160, 1000, dtype=np.int16)
    sink.write(frame)  # step 5: unity
    state["volume"] = 9  # +12 dB
    sink.write(frame)
    state["volume"] = 0  # -15 dB
    sink.write(frame)
    audio.close()
    with wave.open(str(tmp_path / "out.wav")) as w:
        played = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    assert played[:160].tolist() == [1000] * 160
    assert abs(int(played[200]) - round(1000 * volume_gain(9))) <= 1
    assert abs(int(played[400]) - round(1000 * volume_gain(0))) <= 1
    assert volume_gain(5) == 1.0
