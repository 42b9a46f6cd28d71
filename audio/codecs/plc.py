"""Generic packet-loss concealment by pitch repetition (after G.711 Appendix I, simplified).

A lost frame is replaced by the last pitch period of the good signal, repeated; after
the first 10 ms of a loss the output fades by 20 % per 10 ms and is silent after 60 ms,
because repeating a buzz for long sounds worse than silence. The first good frame after
a loss is cross-faded with the continued synthesis so the join does not click.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from audio.pcm import to_int16


class PitchPlc:
    """Concealment state for one decoded stream at ``rate`` Hz."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._min_period = rate // 200  # 200 Hz
        self._max_period = rate * 3 // 200  # 66.7 Hz
        self._corr_len = rate // 100  # 10 ms correlation window
        self._history_len = self._max_period + self._corr_len
        # good frames are only referenced (cheap per packet); history is built on a loss
        self._recent: list[np.ndarray] = []
        self._recent_len = 0
        self._ola = max(1, rate // 1000 * 4)  # 4 ms cross-fade on recovery
        self._period: np.ndarray | None = None
        self._pos = 0
        self._lost = 0  # samples concealed in the current loss

    @property
    def concealing(self) -> bool:
        return self._lost > 0

    def good(self, pcm: np.ndarray) -> np.ndarray:
        """Record a decoded frame; returns it, cross-faded if it ends a loss."""
        out = pcm
        if self._lost and self._period is not None and len(pcm):
            m = min(self._ola, len(pcm))
            synth = self._synth(m)
            ramp = (np.arange(m) + 1.0) / (m + 1.0)
            blended = pcm[:m] * ramp + synth * (1.0 - ramp)
            out = pcm.copy()
            out[:m] = to_int16(blended)
        self._lost = 0
        self._period = None
        self._recent.append(out)
        self._recent_len += len(out)
        while self._recent_len - len(self._recent[0]) >= self._history_len:
            self._recent_len -= len(self._recent.pop(0))
        return out

    def _history(self) -> np.ndarray:
        """The newest ``_history_len`` good samples (zero-padded at the start of a stream)."""
        parts = [np.zeros(self._history_len)] + [r.astype(np.float64) for r in self._recent]
        h = np.concatenate(parts)
        return h[len(h) - self._history_len :]

    def conceal(self, samples: int) -> np.ndarray:
        """Synthesize ``samples`` continuing the last good signal."""
        if self._period is None:
            history = self._history()
            period = self._estimate_period(history)
            self._period = history[len(history) - period :].copy()
            self._pos = 0
        synth = self._synth(samples, advance=True)
        gain = self._gain(np.arange(self._lost, self._lost + samples))
        self._lost += samples
        return to_int16(synth * gain)

    def _synth(self, n: int, advance: bool = False) -> np.ndarray:
        assert self._period is not None
        p = len(self._period)
        idx = (self._pos + np.arange(n)) % p
        if advance:
            self._pos = (self._pos + n) % p
        out = self._period[idx]
        if not advance:
            out = out * self._gain(np.arange(self._lost, self._lost + n))
        return out

    def _gain(self, t: np.ndarray) -> np.ndarray:
        ten_ms = self.rate / 100.0
        steps = np.maximum(0.0, (t - ten_ms) / ten_ms)
        return np.clip(1.0 - 0.2 * steps, 0.0, 1.0)

    def _estimate_period(self, h: np.ndarray) -> int:
        """Pitch period: the lag maximising the correlation of the newest 10 ms with the
        signal ``lag`` samples earlier, normalised by the energy of that earlier segment."""
        seg = h[len(h) - self._corr_len :]
        if not seg.any():
            return self._max_period
        lags = np.arange(self._min_period, self._max_period + 1)
        windows = sliding_window_view(h, self._corr_len)  # windows[i] = h[i : i + corr_len]
        earlier = windows[len(h) - self._corr_len - lags]
        energy = np.einsum("ij,ij->i", earlier, earlier)
        score = (earlier @ seg) / np.sqrt(np.maximum(energy, 1e-9))
        return int(lags[int(np.argmax(score))])
