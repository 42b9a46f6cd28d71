"""WavFileSink: what a phone plays, written to a WAV file that the stdlib `wave` reader (the
independent oracle here) reads back exactly - also while the file is still being written, as a
phone killed mid-call leaves it."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from audio.graph import WavFileSink, _wav_header


def read_back(path: Path) -> tuple[int, int, int, np.ndarray]:
    with wave.open(str(path), "rb") as w:
        frames = w.readframes(w.getnframes())
        return w.getframerate(), w.getnchannels(), w.getsampwidth(), np.frombuffer(frames, "<i2")


def test_frames_come_back_exactly_with_a_correct_header(tmp_path: Path) -> None:
    path = tmp_path / "heard.wav"
    sink = WavFileSink(path, 8000)
    rng = np.random.default_rng(3)
    frames = [rng.integers(-32768, 32768, 160).astype(np.int16) for _ in range(10)]
    for frame in frames:
        sink.write(frame)
    sink.close()
    sink.close()  # idempotent
    sink.write(frames[0])  # after close: ignored, no error
    rate, channels, width, pcm = read_back(path)
    assert (rate, channels, width) == (8000, 1, 2)
    assert np.array_equal(pcm, np.concatenate(frames))
    assert sink.samples == 1600
    assert path.stat().st_size == 44 + 2 * 1600


def test_other_sample_types_and_strided_views_are_written_as_int16(tmp_path: Path) -> None:
    path = tmp_path / "mixed.wav"
    sink = WavFileSink(path, 16000)
    sink.write(np.array([1.0, -2.0, 300.0]))  # float frames: converted like astype
    wide = np.arange(20, dtype=np.int16)
    sink.write(wide[::2])  # no contiguous buffer: written through a copy
    sink.close()
    _, _, _, pcm = read_back(path)
    assert pcm.tolist() == [1, -2, 300, *range(0, 20, 2)]


def test_the_file_is_readable_while_still_open(tmp_path: Path) -> None:
    """About once a second of audio the header is patched and the buffer flushed: what a kill
    -9 leaves behind is a valid WAV up to that point (and anything, after an explicit flush)."""
    path = tmp_path / "open.wav"
    sink = WavFileSink(path, 8000)
    second = np.full(8000, 1234, dtype=np.int16)
    sink.write(second[:4000])
    sink.write(second[4000:])  # reaches one second: flushed
    _, _, _, pcm = read_back(path)
    assert len(pcm) == 8000 and int(pcm[0]) == 1234
    sink.write(np.full(160, 7, dtype=np.int16))
    sink.flush()
    _, _, _, pcm = read_back(path)
    assert len(pcm) == 8160 and int(pcm[-1]) == 7
    sink.close()


@pytest.mark.parametrize("data_bytes", [0, 2, 0xFFFFFFFF - 36, 0xFFFFFFFF, 5 * 2**30])
def test_the_header_size_fields_saturate_past_4_gib(data_bytes: int) -> None:
    header = _wav_header(16000, data_bytes)
    assert len(header) == 44 and header[:4] == b"RIFF" and header[8:16] == b"WAVEfmt "
    riff = int.from_bytes(header[4:8], "little")
    data = int.from_bytes(header[40:44], "little")
    assert data == min(data_bytes, 0xFFFFFFFF - 36) and riff == data + 36
