"""Comfort noise for long gaps (after the decoder's own concealment has faded out).

Dead silence after a loss burst or while the peer suppresses silence sounds like a dropped
call, so the jitter buffer plays low-level noise at the level of the background noise it last
heard. The noise is deterministic for a given seed (numpy's generator, not `random`), which
keeps the jitter buffer sans-IO and its tests repeatable; it is not used for anything secret.
"""

from __future__ import annotations

import numpy as np

from .pcm import rms

INT16_MAX = 32767


class ComfortNoise:
    """White noise whose level tracks the quietest recent audio (a background-noise estimate).

    The estimate follows quieter frames at once and louder ones slowly (about +0.5 dB per
    frame), so speech does not raise it but a noisier room does, within [floor, ceiling].
    """

    def __init__(self, seed: int = 0, *, floor: float = 8.0, ceiling: float = 300.0) -> None:
        self._rng = np.random.default_rng(seed)
        self.floor = floor
        self.ceiling = ceiling
        self.level = floor

    def observe(self, pcm: np.ndarray) -> None:
        self.observe_level(rms(pcm))

    def observe_level(self, level: float) -> None:
        """`observe` for a frame whose RMS the caller has already measured."""
        if level < self.level:
            self.level = max(self.floor, level)
        else:
            self.level = min(self.ceiling, self.level * 1.06)

    def generate(self, samples: int) -> np.ndarray:
        noise = self._rng.normal(0.0, self.level, samples)
        return np.clip(np.rint(noise), -INT16_MAX, INT16_MAX).astype(np.int16)
