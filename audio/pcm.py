"""PCM helpers: silence, streaming resampling, levels and tone analysis.

PCM everywhere in audio/ is a 1-D ``numpy.int16`` array, mono, at a stated rate
(docs/audio-api.md). Resampling is a stateful polyphase FIR so a stream cut into
20 ms frames resamples exactly like the whole signal would: no clicks at frame
boundaries, and no drift because output positions are counted in exact integers.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from audio.speedups import rms_int16

_INT16 = np.dtype(np.int16)
INT16_MAX = 32767
INT16_MIN = -32768


def silence(n: int) -> np.ndarray:
    """``n`` samples of digital silence."""
    if n < 0:
        raise ValueError(f"silence length must be >= 0, got {n}")
    return np.zeros(n, dtype=np.int16)


def to_int16(samples: np.ndarray) -> np.ndarray:
    """Round and saturate float samples to int16 (saturation, not wrap-around, on overload)."""
    # a copy: the in-place rounding leaves `samples` be
    return _to_int16_inplace(np.array(samples, dtype=np.float64))


def _to_int16_inplace(x: np.ndarray) -> np.ndarray:
    """to_int16 for a float64 array the caller owns (rounded and clipped in place)."""
    # plain ufuncs: np.clip's Python-level dispatch costs more than the work on a frame
    np.rint(x, out=x)
    np.minimum(x, INT16_MAX, out=x)
    np.maximum(x, INT16_MIN, out=x)
    return x.astype(np.int16)


def rms(pcm: np.ndarray) -> float:
    """Root mean square in sample units (0.0 for an empty frame)."""
    if pcm.dtype == _INT16:  # every decoded or captured frame: one C call, no float copy
        try:
            return rms_int16(pcm)
        except ValueError:  # a strided view (no contiguous buffer): the general path below
            pass
    n = len(pcm)
    if n == 0:
        return 0.0
    x = pcm.astype(np.float64)
    # a dot product, not np.mean(x * x): same value, a fraction of the per-call overhead,
    # and this runs on every 20 ms frame of every call
    return math.sqrt(float(np.dot(x, x)) / n)


def dbfs(pcm: np.ndarray) -> float:
    """RMS level relative to a full-scale sine (a full-scale sine is 0 dBFS); -inf for silence."""
    level = rms(pcm)
    if level == 0.0:
        return float("-inf")
    return 20.0 * math.log10(level * math.sqrt(2.0) / INT16_MAX)


def peak(pcm: np.ndarray) -> int:
    """Largest absolute sample value."""
    if len(pcm) == 0:
        return 0
    return int(np.max(np.abs(pcm.astype(np.int32))))


def snr_db(reference: np.ndarray, test: np.ndarray) -> float:
    """Signal-to-noise ratio of ``test`` against ``reference`` (same length, already aligned)."""
    if len(reference) != len(test):
        raise ValueError(f"snr_db needs equal lengths, got {len(reference)} and {len(test)}")
    ref = reference.astype(np.float64)
    noise = test.astype(np.float64) - ref
    signal_power = float(np.sum(ref * ref))
    noise_power = float(np.sum(noise * noise))
    if noise_power == 0.0:
        return float("inf")
    if signal_power == 0.0:
        return float("-inf")
    return 10.0 * math.log10(signal_power / noise_power)


def dominant_frequency(pcm: np.ndarray, rate: int) -> float:
    """Frequency (Hz) of the strongest spectral peak, to a fraction of a bin.

    Hann window, zero padding to at least 1 Hz bins, then parabolic interpolation on
    the log magnitude around the peak: a 1 s tone is located to well under 1 Hz, which
    is what the tone-through-a-call acceptance tests need.
    """
    if len(pcm) < 2:
        raise ValueError("dominant_frequency needs at least 2 samples")
    x = pcm.astype(np.float64)
    x = (x - x.mean()) * np.hanning(len(x))
    nfft = 1 << max(len(x) - 1, rate).bit_length()
    spectrum = np.abs(np.fft.rfft(x, nfft))
    spectrum[0] = 0.0
    k = int(np.argmax(spectrum))
    offset = 0.0
    if 0 < k < len(spectrum) - 1:
        a, b, c = np.log(spectrum[k - 1 : k + 2] + 1e-12)
        denom = a - 2.0 * b + c
        if denom != 0.0:
            offset = 0.5 * (a - c) / denom
    return (k + offset) * rate / nfft


def _centre(up: int, down: int, taps: int) -> int:
    """Filter centre in upsampled samples, a multiple of ``down`` so the delay is a whole
    number of output samples (a half-sample delay would misalign one-shot resampling)."""
    return round((up * taps - 1) / 2.0 / down) * down


@lru_cache(maxsize=32)
def _polyphase_bank(up: int, down: int, taps: int) -> np.ndarray:
    """Kaiser-windowed sinc low-pass split into ``up`` phases of ``taps`` coefficients.

    Row p holds the coefficients applied to x[n], x[n-1], ... for output phase p; the
    prototype runs at ``up`` times the input rate and cuts off just below the lower
    of the two Nyquist frequencies.
    """
    length = up * taps
    cutoff = 0.5 / max(up, down) * 0.92  # cycles per upsampled sample
    n = np.arange(length) - _centre(up, down, taps)
    half = length / 2.0
    window = np.i0(8.0 * np.sqrt(np.clip(1.0 - (n / half) ** 2, 0.0, 1.0))) / np.i0(8.0)
    proto = 2.0 * cutoff * np.sinc(2.0 * cutoff * n) * window
    proto *= up / proto.sum()  # unity DC gain after zero-stuffing by `up`
    return proto.reshape(taps, up).T.copy()


class Resampler:
    """Streaming rational resampler (e.g. 8k<->16k<->48k, 44.1k<->48k).

    ``process`` accepts frames of any length; the output of a stream is identical however
    it is framed. Output count per call is whatever the input so far allows, so a 20 ms
    frame always yields exactly 20 ms when both rates are multiples of 50 Hz.
    """

    fast = True  # use the convolution paths for integer ratios (tests compare both)

    def __init__(self, from_rate: int, to_rate: int, taps: int = 24) -> None:
        if from_rate <= 0 or to_rate <= 0:
            raise ValueError(f"sample rates must be positive, got {from_rate} -> {to_rate}")
        g = math.gcd(from_rate, to_rate)
        self.from_rate = from_rate
        self.to_rate = to_rate
        self.up = to_rate // g
        self.down = from_rate // g
        # decimation needs a proportionally longer filter for the same transition band
        self.taps = taps * -(-self.down // self.up)
        self._bank = _polyphase_bank(self.up, self.down, self.taps)
        # the interpolating path correlates every phase at once as one matrix product with
        # the reversed phase filters as columns (see _interpolate)
        self._phases = np.ascontiguousarray(self._bank[:, ::-1].T)
        self._history = np.zeros(self.taps - 1, dtype=np.float64)
        self._next_out = 0  # index of the next output sample, relative to _consumed's origin
        self._consumed = 0  # input samples seen, same origin

    @property
    def delay(self) -> int:
        """Group delay of the filter in output samples (for aligning test signals)."""
        return _centre(self.up, self.down, self.taps) // self.down

    def process(self, pcm: np.ndarray) -> np.ndarray:
        """Resample the next chunk of the stream."""
        if self.up == self.down:
            return np.asarray(pcm, dtype=np.int16).copy()
        if len(pcm) == 0:  # np.convolve would swap its operands on a too-short buffer
            return silence(0)
        keep = self.taps - 1
        buf = np.concatenate((self._history, pcm), dtype=np.float64)
        total = self._consumed + len(pcm)
        end = (total * self.up + self.down - 1) // self.down  # first k with k*down >= total*up
        if self.down == 1 and self.fast:
            out = self._interpolate(buf)
        elif self.up == 1 and self.fast:
            out = self._decimate(buf, end)
        else:
            out = self._rational(buf, end)
        self._history = buf[len(buf) - keep :]
        self._consumed = total
        self._next_out = end
        cycles = min(self._next_out // self.up, self._consumed // self.down)
        self._next_out -= cycles * self.up
        self._consumed -= cycles * self.down
        return _to_int16_inplace(out)

    # The three paths compute the same sum; the integer-ratio ones (8k/16k <-> 48k, the
    # common case) use np.convolve, which is several times faster than gathering windows.

    def _interpolate(self, buf: np.ndarray) -> np.ndarray:
        """Integer up-sampling: every input sample yields ``up`` outputs, one per phase.

        Both counters are always 0 here after the wrap-around in ``process``. Row i of the
        strided view is the window buf[i : i + taps] (no copy), so `windows @ phases` is one
        correlation per phase, already interleaved as output samples when raveled: one BLAS
        call instead of a correlate and a strided store per phase (this runs every frame)."""
        n = len(buf) - self.taps + 1
        windows = np.ndarray((n, self.taps), np.float64, buf, 0, (buf.itemsize, buf.itemsize))
        return (windows @ self._phases).ravel()

    def _decimate(self, buf: np.ndarray, end: int) -> np.ndarray:
        """Integer down-sampling: filter at the input rate, keep every ``down``-th sample."""
        filtered = np.convolve(buf, self._bank[0], "valid")  # [i] is output for x[consumed + i]
        start = self._next_out * self.down - self._consumed
        return filtered[start :: self.down][: end - self._next_out]

    def _rational(self, buf: np.ndarray, end: int) -> np.ndarray:
        ks = np.arange(self._next_out, end, dtype=np.int64)
        pos = ks * self.down
        n = pos // self.up
        phase = pos % self.up
        # buf index of x[n]; window x[n], x[n-1], ... x[n-taps+1]
        idx = n - (self._consumed - (self.taps - 1))
        windows = buf[idx[:, None] - np.arange(self.taps)[None, :]]
        return np.einsum("ij,ij->i", self._bank[phase], windows)


def resample(pcm: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """One-shot resampling of a whole signal, delay-compensated: output is time-aligned
    with the input and has ``len(pcm) * to_rate // from_rate`` samples."""
    if from_rate == to_rate:
        return np.asarray(pcm, dtype=np.int16).copy()
    r = Resampler(from_rate, to_rate)
    out = r.process(np.concatenate((np.asarray(pcm, dtype=np.int16), silence(r.taps))))
    start = r.delay
    want = len(pcm) * to_rate // from_rate
    return out[start : start + want]
