"""WAV helpers for audio interop tests: write a test tone, read a recording, measure it.

Real peers (baresip's `aufile` source, the ALSA `file` device) exchange audio as WAV/PCM files;
these helpers produce a known tone and check what arrived: its dominant frequency (FFT with
parabolic peak interpolation, so a 1 s window resolves well below 1 Hz) and its RMS level.
Only mono 16-bit little-endian PCM is handled, which is what the peers write.
"""

from __future__ import annotations

import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FULL_SCALE = 32767.0


@dataclass(frozen=True)
class Wav:
    """Samples of a mono 16-bit WAV as floats in [-1, 1]."""

    samples: np.ndarray
    rate: int

    @property
    def duration(self) -> float:
        return len(self.samples) / self.rate


def write_tone(
    path: Path,
    frequency: float,
    *,
    seconds: float = 30.0,
    rate: int = 8000,
    amplitude: float = 0.5,
) -> Path:
    """Write a mono 16-bit sine WAV; amplitude is relative to full scale."""
    if not 0 < frequency < rate / 2:
        raise ValueError(f"frequency {frequency} Hz is not below Nyquist for {rate} Hz")
    t = np.arange(int(seconds * rate)) / rate
    pcm = np.round(amplitude * FULL_SCALE * np.sin(2 * np.pi * frequency * t)).astype("<i2")
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm.tobytes())
    return path


def read_wav(path: Path) -> Wav:
    """Read a mono 16-bit PCM WAV (stereo files are reduced to their first channel)."""
    with wave.open(str(path), "rb") as wav:
        if wav.getsampwidth() != 2:
            raise ValueError(f"{path}: {8 * wav.getsampwidth()}-bit samples, expected 16-bit")
        channels = wav.getnchannels()
        rate = wav.getframerate()
        data = wav.readframes(wav.getnframes())
    pcm = np.frombuffer(data, dtype="<i2")
    if channels > 1:
        pcm = pcm[::channels]
    return Wav(pcm.astype(np.float64) / FULL_SCALE, rate)


def rms(samples: np.ndarray) -> float:
    """Root-mean-square level relative to full scale (0.0 for no samples)."""
    if len(samples) == 0:
        return 0.0
    return float(np.sqrt(np.mean(np.square(samples))))


def active_part(samples: np.ndarray, rate: int, *, threshold: float = 0.01) -> np.ndarray:
    """The samples from the first to the last 20 ms block louder than `threshold` RMS.

    Recordings start and end with silence (call set-up, jitter buffer fill); measuring only
    the part that carries sound keeps the FFT peak sharp.
    """
    block = max(1, rate // 50)
    count = len(samples) // block
    if count == 0:
        return samples[:0]
    levels = np.sqrt(np.mean(np.square(samples[: count * block].reshape(count, block)), axis=1))
    loud = np.flatnonzero(levels > threshold)
    if len(loud) == 0:
        return samples[:0]
    return samples[loud[0] * block : (loud[-1] + 1) * block]


def dominant_frequency(samples: np.ndarray, rate: int) -> float:
    """Frequency (Hz) of the strongest spectral peak, ignoring DC.

    A Hann window limits leakage; the peak bin is refined by fitting a parabola through the
    log magnitudes of it and its neighbours.
    """
    if len(samples) < 16:
        raise ValueError(f"need at least 16 samples for an FFT, got {len(samples)}")
    windowed = (samples - np.mean(samples)) * np.hanning(len(samples))
    spectrum = np.abs(np.fft.rfft(windowed))
    spectrum[0] = 0.0
    peak = int(np.argmax(spectrum))
    offset = 0.0
    if 0 < peak < len(spectrum) - 1:
        a, b, c = np.log(spectrum[peak - 1 : peak + 2] + 1e-12)
        denominator = a - 2 * b + c
        if denominator != 0:
            offset = 0.5 * (a - c) / denominator
    return float((peak + offset) * rate / len(samples))


def tone_of(path: Path) -> tuple[float, float]:
    """(dominant frequency, RMS) of the non-silent part of a WAV file; (0.0, 0.0) if silent."""
    wav = read_wav(path)
    part = active_part(wav.samples, wav.rate)
    if len(part) < 16:
        return 0.0, 0.0
    return dominant_frequency(part, wav.rate), rms(part)
