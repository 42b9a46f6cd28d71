"""The media graph: a call's audio is pulled from a Source and pushed into a Sink, frame by frame.

Why a pull model: whoever owns the clock (the media session's absolute-deadline ticker, or a
sound card) asks for exactly one frame when it is due, so nothing here keeps time or buffers
for "later". Every source returns exactly `n` samples per `read(n)` (padding with silence when
it runs dry), so the pacing code never has to special-case short reads.

PCM is 1-D `numpy.int16`, mono, at the node's `rate` (docs/audio-api.md). The sound card
nodes live in `audio/devices.py` (the only module here that talks to hardware); the WAV nodes
below do plain file I/O through `wave`, which is cheap enough per 20 ms frame and is what the
tests and the loopback demo use instead of a sound card.
"""

from __future__ import annotations

import logging
import struct
import wave
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

import numpy as np

from audio.pcm import INT16_MAX, Resampler, silence, to_int16

log = logging.getLogger(__name__)

_WAV_SAMPLE = np.dtype("<i2")  # parsed once: a dtype string costs a lookup per call
# (on a little-endian machine it equals int16, so frames are written without conversion)


class GraphError(ValueError):
    """A node that cannot be built as asked (unreadable WAV, wrong format); says which file."""


@runtime_checkable
class Source(Protocol):
    """Produces audio on demand."""

    rate: int

    def read(self, n: int) -> np.ndarray:
        """Exactly `n` samples at `rate` (silence-padded when there is nothing more)."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class Sink(Protocol):
    """Consumes audio as it is produced."""

    rate: int

    def write(self, pcm: np.ndarray) -> None: ...

    def close(self) -> None: ...


class SilenceSource:
    """Digital silence: the source of a call with no microphone (or a failed device)."""

    def __init__(self, rate: int = 8000) -> None:
        self.rate = rate

    def read(self, n: int) -> np.ndarray:
        return silence(n)

    def close(self) -> None:
        pass


class ToneSource:
    """A continuous sine, phase-continuous across reads (test signals, the latency click)."""

    def __init__(self, frequency: float, rate: int = 8000, level_dbfs: float = -10.0) -> None:
        self.rate = rate
        self.frequency = frequency
        self._amplitude = INT16_MAX * 10.0 ** (level_dbfs / 20.0)
        self._step = 2.0 * np.pi * frequency / rate
        self._phase = 0.0

    def read(self, n: int) -> np.ndarray:
        angles = self._phase + self._step * np.arange(n)
        self._phase = float(np.mod(self._phase + self._step * n, 2.0 * np.pi))
        return to_int16(np.sin(angles) * self._amplitude)

    def close(self) -> None:
        pass


class BufferSource:
    """Plays a PCM array once (or looped), then silence."""

    def __init__(self, pcm: np.ndarray, rate: int, *, loop: bool = False) -> None:
        self.rate = rate
        self.pcm = np.asarray(pcm, dtype=np.int16)
        self.loop = loop and len(self.pcm) > 0
        self.position = 0

    @property
    def exhausted(self) -> bool:
        return not self.loop and self.position >= len(self.pcm)

    def read(self, n: int) -> np.ndarray:
        if self.loop:
            start, total = self.position, len(self.pcm)
            if start + n <= total:  # the common case: one slice, no index array
                self.position = (start + n) % total
                return self.pcm[start : start + n].copy()
            idx = (start + np.arange(n)) % total
            self.position = (start + n) % total
            return self.pcm[idx]
        chunk = self.pcm[self.position : self.position + n]
        self.position += len(chunk)
        if len(chunk) < n:
            chunk = np.concatenate((chunk, silence(n - len(chunk))))
        return chunk

    def close(self) -> None:
        pass


class BufferSink:
    """Collects everything written (tests, analysis)."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._chunks: list[np.ndarray] = []
        self.samples = 0

    def write(self, pcm: np.ndarray) -> None:
        self._chunks.append(np.asarray(pcm, dtype=np.int16).copy())
        self.samples += len(pcm)

    @property
    def pcm(self) -> np.ndarray:
        return np.concatenate(self._chunks) if self._chunks else silence(0)

    def close(self) -> None:
        pass


class NullSink:
    """Discards audio (a call whose playback device failed still runs)."""

    def __init__(self, rate: int = 8000) -> None:
        self.rate = rate

    def write(self, pcm: np.ndarray) -> None:
        pass

    def close(self) -> None:
        pass


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """A 16-bit mono WAV as (pcm, rate); GraphError naming the file and the problem."""
    try:
        with wave.open(str(path), "rb") as w:
            if w.getsampwidth() != 2 or w.getnchannels() != 1:
                raise GraphError(
                    f"{path}: need 16-bit mono WAV, got {8 * w.getsampwidth()}-bit "
                    f"{w.getnchannels()}-channel"
                )
            rate = w.getframerate()
            data = w.readframes(w.getnframes())
    except (OSError, EOFError, wave.Error) as e:
        raise GraphError(f"{path}: cannot read WAV: {e}") from None
    return np.frombuffer(data, dtype="<i2").astype(np.int16), rate


def write_wav(path: str | Path, pcm: np.ndarray, rate: int) -> None:
    """Write a whole 16-bit mono WAV (test fixtures, tools)."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.asarray(pcm, dtype="<i2").tobytes())


class WavFileSource(BufferSource):
    """A WAV file played into a call instead of the microphone (looped by default)."""

    def __init__(self, path: str | Path, *, loop: bool = True) -> None:
        pcm, rate = read_wav(path)
        super().__init__(pcm, rate, loop=loop)
        self.path = Path(path)


class WavFileSink:
    """Received audio written to a WAV file instead of a loudspeaker.

    Frames go straight into the file's buffer (no `wave` module call per 20 ms frame: its
    Python-level bookkeeping was a tenth of a call's CPU, bench/README.md); the 44-byte
    RIFF header is written here and its length fields patched on every `flush()`/`close()`,
    so a phone killed mid-call still leaves a readable file up to the last flush. We flush
    about once a second.
    """

    FLUSH_SAMPLES_S = 1.0

    def __init__(self, path: str | Path, rate: int = 16000) -> None:
        self.rate = rate
        self.path = Path(path)
        try:
            self._file: BinaryIO | None = open(path, "wb")  # noqa: SIM115 - closed by close()
        except OSError as e:
            raise GraphError(f"{path}: cannot write WAV: {e}") from None
        self._data_bytes = 0
        self._unflushed = 0
        self.samples = 0
        self._file.write(_wav_header(rate, 0))

    def write(self, pcm: np.ndarray) -> None:
        if self._file is None:
            return
        if pcm.dtype != _WAV_SAMPLE:  # an int16 frame on a little-endian machine passes as is
            pcm = pcm.astype(_WAV_SAMPLE)
        try:
            self._file.write(pcm)  # type: ignore[call-overload]  # the array's buffer, no copy
        except ValueError:  # a strided view is no contiguous buffer
            self._file.write(pcm.tobytes())
        n = len(pcm)
        self._data_bytes += 2 * n
        self.samples += n
        self._unflushed += n
        if self._unflushed >= self.rate * self.FLUSH_SAMPLES_S:
            self.flush()

    def flush(self) -> None:
        """Make the file readable as it is now (patch the header lengths)."""
        f = self._file
        if f is None:
            return
        f.seek(0)
        f.write(_wav_header(self.rate, self._data_bytes))
        f.seek(0, 2)
        f.flush()
        self._unflushed = 0

    def close(self) -> None:
        if self._file is not None:
            self.flush()
            self._file.close()
            self._file = None


def _wav_header(rate: int, data_bytes: int) -> bytes:
    """The canonical 44-byte header of a 16-bit mono PCM WAV file with `data_bytes` of audio.

    Past the 32-bit size fields (4 GiB, 37 h at 16 kHz) they stay at their maximum, as other
    writers do, and readers take the length from the file; the recording goes on."""
    data_bytes = min(data_bytes, _WAV_MAX_DATA)
    return _WAV_HEADER.pack(
        b"RIFF",
        36 + data_bytes,
        b"WAVE",
        b"fmt ",
        16,
        1,
        1,
        rate,
        2 * rate,
        2,
        16,
        b"data",
        data_bytes,
    )


_WAV_HEADER = struct.Struct("<4sI4s4sIHHIIHH4sI")
_WAV_MAX_DATA = 0xFFFFFFFF - 36  # the RIFF size field holds 36 + the data size


class ResamplingSource:
    """Adapts a source to another rate with a streaming resampler (no clicks between frames).

    Reads `ceil` of what it needs from the inner source and keeps the remainder, so `read(n)`
    always returns exactly `n` even when the ratio does not divide the frame size.
    """

    def __init__(self, inner: Source, rate: int) -> None:
        self.inner = inner
        self.rate = rate
        self._resampler = Resampler(inner.rate, rate) if inner.rate != rate else None
        self._pending = silence(0)

    def read(self, n: int) -> np.ndarray:
        if self._resampler is None:
            return self.inner.read(n)
        while len(self._pending) < n:
            need = n - len(self._pending)
            take = -(-need * self.inner.rate // self.rate)
            out = self._resampler.process(self.inner.read(take))
            self._pending = np.concatenate((self._pending, out))
        pcm, self._pending = self._pending[:n], self._pending[n:]
        return pcm

    def close(self) -> None:
        self.inner.close()


class ResamplingSink:
    """Adapts a sink to audio at another rate (`rate` is what callers write)."""

    def __init__(self, inner: Sink, rate: int) -> None:
        self.inner = inner
        self.rate = rate
        self._resampler = Resampler(rate, inner.rate) if inner.rate != rate else None

    def write(self, pcm: np.ndarray) -> None:
        if self._resampler is not None:
            pcm = self._resampler.process(pcm)
        if len(pcm):
            self.inner.write(pcm)

    def close(self) -> None:
        self.inner.close()
