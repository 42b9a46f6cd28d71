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


def test_progress_tones_follow_the_handset_volume(tmp_path: Path) -> None:
    """Ringback and busy tones go through the same volume as the far end's voice: the tone
    player must open its sink through the UI's wrapped opener, not the one it saw at start."""
    from firmware.provisioning.config import parse_config
    from firmware.runtime.app import Phone

    config = parse_config(
        {
            "device": {"name": "Desk", "state_dir": str(tmp_path / "state")},
            "sip": {"listen": ["udp:127.0.0.1:0"]},
            "api": {"enabled": False},
            "board": {"profile": "sim"},
            "audio": {"codecs": ["PCMU"], "playback_file": str(tmp_path / "out.wav")},
        },
        file="phone.toml",
    )
    phone = Phone(config)
    assert phone.ui is not None
    phone.ui.ui.volume = 9  # +12 dB, as after four VOL_UP presses
    sink, _ = phone.tones.open_sink()
    sink.write(np.full(160, 1000, dtype=np.int16))
    phone.media.audio.close()
    with wave.open(str(tmp_path / "out.wav")) as w:
        played = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    assert abs(int(played[0]) - round(1000 * volume_gain(9))) <= 1
