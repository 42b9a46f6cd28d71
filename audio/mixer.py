"""N-party conference mixing, sans-IO: every leg hears the sum of the others, never itself.

Why this shape:
- Mix-minus ("N-1") mixing: a leg that heard itself would hear its own voice echoed back one
  round trip late, which is what conference bridges exist to avoid.
- One internal rate (16 kHz by default): legs arrive at their codec's rate (PCMU 8 kHz, G.722
  16 kHz, Opus 48 kHz, a sound card at 48 kHz); each talker is resampled once on the way in and
  each listener once on the way out with the streaming `Resampler`, so the mix itself is a plain
  integer sum and a leg at the internal rate costs no resampling at all.
- Clipping protection is a memoryless soft limiter (`soft_limit`): below the knee (-2.5 dBFS)
  samples pass unchanged, so sums of ordinary speech levels are exact; above it the excess is
  bent with tanh towards full scale, so a loud sum never wraps or hard-clips. A scaled sum
  (dividing by N) would instead make every party quieter whenever a third one joins.
- Legs are pushed and pulled independently: each call's media session runs its own ticker, so
  talkers and listeners are not in lock-step. Every listener keeps its own FIFO per talker;
  a FIFO starts being read once it holds one frame more than asked for (`prime`), absorbs the
  phase difference between tickers, and is capped (`max_delay`) so latency cannot grow.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from audio.pcm import INT16_MAX, INT16_MIN, Resampler, silence

log = logging.getLogger(__name__)

KNEE = int(INT16_MAX * 0.75)  # about -2.5 dBFS: samples up to here pass through exactly
_HEADROOM = float(INT16_MAX - KNEE)


def soft_limit(acc: np.ndarray) -> np.ndarray:
    """int16 from a wide integer sum: identity up to KNEE, tanh-compressed above, never past
    full scale (monotonic, continuous, slope 1 at the knee so there is no audible corner)."""
    if len(acc) == 0:
        return silence(0)
    # fast path: the common case (talk at normal levels) is a sum well under the knee
    if int(acc.max()) <= KNEE and int(acc.min()) >= -KNEE:
        return acc.astype(np.int16)
    x = acc.astype(np.float64)
    mag = np.abs(x)
    over = mag > KNEE
    bent = KNEE + _HEADROOM * np.tanh((mag[over] - KNEE) / _HEADROOM)
    x[over] = np.sign(x[over]) * bent
    np.rint(x, out=x)
    np.clip(x, INT16_MIN, INT16_MAX, out=x)
    return x.astype(np.int16)


def mix_minus(frames: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One synchronous step: for equal-length int16 frames (one per leg, same rate) return what
    each leg hears: the limited sum of all the other frames."""
    lengths = {len(f) for f in frames.values()}
    if len(lengths) > 1:
        raise ValueError(f"mix_minus needs equal frame lengths, got {sorted(lengths)}")
    if not frames:
        return {}
    total = np.zeros(lengths.pop(), dtype=np.int32)
    for f in frames.values():
        total += f
    return {name: soft_limit(total - f) for name, f in frames.items()}


@dataclass
class _Fifo:
    """Audio from one talker waiting for one listener (internal rate)."""

    chunks: list[np.ndarray] = field(default_factory=list)
    size: int = 0
    primed: bool = False

    def append(self, pcm: np.ndarray, cap: int) -> None:
        self.chunks.append(pcm)
        self.size += len(pcm)
        while self.size > cap and self.chunks:  # a listener that stopped pulling: drop oldest
            drop = min(len(self.chunks[0]), self.size - cap)
            if drop == len(self.chunks[0]):
                self.chunks.pop(0)
            else:
                self.chunks[0] = self.chunks[0][drop:]
            self.size -= drop

    def take(self, n: int) -> np.ndarray | None:
        """Up to n samples (silence-padded), or None when there is nothing to add."""
        if self.size == 0:
            self.primed = False
            return None
        if self.size < n:  # underrun: use what there is, then wait to re-prime
            self.primed = False
        out = np.concatenate(self.chunks) if len(self.chunks) > 1 else self.chunks[0]
        head, rest = out[:n], out[n:]
        self.chunks = [rest] if len(rest) else []
        self.size = len(rest)
        if len(head) < n:
            head = np.concatenate((head, silence(n - len(head))))
        return head


@dataclass
class _Leg:
    name: str
    rate: int
    hears: bool
    heard: bool
    upsample: Resampler | None  # leg rate -> internal rate (talking)
    downsample: Resampler | None  # internal rate -> leg rate (listening)
    pending: np.ndarray = field(default_factory=lambda: silence(0))  # resampled, not yet read
    fifos: dict[str, _Fifo] = field(default_factory=dict)  # talker name -> audio for this leg


class Mixer:
    """Mix-minus bridge for N legs at any rates (see the module docstring).

    `push(name, pcm)` hands the mixer what a leg said (at the leg's rate); `pull(name, n)`
    returns exactly n samples (leg rate) of what that leg hears. No clock: the callers' own
    tickers drive it, so it is tested with plain arrays.
    """

    def __init__(self, rate: int = 16000, *, prime: float = 0.02, max_delay: float = 0.12) -> None:
        if rate <= 0:
            raise ValueError(f"mixer rate must be positive, got {rate}")
        self.rate = rate
        self.prime = int(rate * prime)
        self.cap = max(int(rate * max_delay), self.prime + 1)
        self._legs: dict[str, _Leg] = {}

    @property
    def legs(self) -> list[str]:
        return list(self._legs)

    def add_leg(self, name: str, rate: int, *, hears: bool = True, heard: bool = True) -> None:
        """A new party. `heard=False` keeps it out of everyone's mix (the local mic muted);
        `hears=False` means nobody pulls for it, so no FIFO is filled for it."""
        if name in self._legs:
            raise ValueError(f"leg {name!r} is already in the mix")
        if rate <= 0:
            raise ValueError(f"leg {name!r}: rate must be positive, got {rate}")
        leg = _Leg(
            name,
            rate,
            hears,
            heard,
            Resampler(rate, self.rate) if rate != self.rate else None,
            Resampler(self.rate, rate) if rate != self.rate else None,
        )
        for other in self._legs.values():
            other.fifos[name] = _Fifo()
            leg.fifos[other.name] = _Fifo()
        self._legs[name] = leg
        log.info("mixer: %s joins at %d Hz (%d legs)", name, rate, len(self._legs))

    def remove_leg(self, name: str) -> None:
        leg = self._legs.pop(name, None)
        if leg is None:
            return
        for other in self._legs.values():
            other.fifos.pop(name, None)
        log.info("mixer: %s leaves (%d legs)", name, len(self._legs))

    def set_heard(self, name: str, heard: bool) -> None:
        """Mute/unmute a leg towards the others (its queued audio is discarded on mute)."""
        leg = self._leg(name)
        leg.heard = heard
        if not heard:
            for other in self._legs.values():
                if name in other.fifos:
                    other.fifos[name] = _Fifo()

    def _leg(self, name: str) -> _Leg:
        try:
            return self._legs[name]
        except KeyError:
            raise KeyError(f"no leg {name!r} in the mix (legs: {self.legs})") from None

    def push(self, name: str, pcm: np.ndarray) -> None:
        """What leg `name` said, at its own rate."""
        leg = self._leg(name)
        if not leg.heard or len(pcm) == 0:
            return
        pcm = np.asarray(pcm, dtype=np.int16)
        if leg.upsample is not None:
            pcm = leg.upsample.process(pcm)
        for other in self._legs.values():
            if other is not leg and other.hears:
                other.fifos[name].append(pcm, self.cap)

    def pull(self, name: str, n: int) -> np.ndarray:
        """Exactly n samples (at the leg's rate) of the others' limited sum."""
        leg = self._leg(name)
        if leg.downsample is None:
            return self._mix(leg, n)
        while len(leg.pending) < n:
            need = -(-(n - len(leg.pending)) * self.rate // leg.rate)
            out = leg.downsample.process(self._mix(leg, need))
            leg.pending = np.concatenate((leg.pending, out))
        pcm, leg.pending = leg.pending[:n], leg.pending[n:]
        return pcm

    def _mix(self, leg: _Leg, n: int) -> np.ndarray:
        acc: np.ndarray | None = None
        for fifo in leg.fifos.values():
            if not fifo.primed:
                if fifo.size < n + self.prime:
                    continue
                fifo.primed = True
            chunk = fifo.take(n)
            if chunk is None:
                continue
            if acc is None:
                acc = chunk.astype(np.int32)
            else:
                acc += chunk
        return silence(n) if acc is None else soft_limit(acc)

    def queued(self, listener: str, talker: str) -> int:
        """Samples (internal rate) of `talker` waiting for `listener` (tests, stats)."""
        return self._leg(listener).fifos[talker].size


__all__ = ["KNEE", "Mixer", "mix_minus", "soft_limit"]
