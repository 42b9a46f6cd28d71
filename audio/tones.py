"""Call-progress tones (dial, ringback, busy, congestion, call waiting) per country.

Plans follow ITU-T E.180 / Supplement 2 style descriptions: one or two frequencies
summed, and a cadence of alternating on/off times repeated forever (an empty cadence
means continuous). ``ToneGenerator`` produces frames of any size at any rate, with
the oscillator phase and the cadence position carried across frames, so a tone cut
into 20 ms frames is identical to the same tone generated in one piece.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from audio.pcm import INT16_MAX, to_int16

TONE_NAMES = ("dial", "ringback", "busy", "congestion", "call_waiting")


@dataclass(frozen=True)
class ToneSpec:
    """Frequencies (Hz), cadence (seconds on, off, on, off ...), level per component (dBFS)."""

    frequencies: tuple[float, ...]
    cadence: tuple[float, ...] = ()
    level_dbfs: float = -16.0

    def __post_init__(self) -> None:
        if not self.frequencies:
            raise ValueError("a tone needs at least one frequency")
        if len(self.cadence) % 2:
            raise ValueError(f"cadence must be on/off pairs, got {self.cadence}")


TONE_PLANS: dict[str, dict[str, ToneSpec]] = {
    # North America (ANSI T1.401 / E.180 entries for the USA)
    "US": {
        "dial": ToneSpec((350.0, 440.0)),
        "ringback": ToneSpec((440.0, 480.0), (2.0, 4.0)),
        "busy": ToneSpec((480.0, 620.0), (0.5, 0.5)),
        "congestion": ToneSpec((480.0, 620.0), (0.25, 0.25)),
        "call_waiting": ToneSpec((440.0,), (0.3, 9.7)),
    },
    # United Kingdom (BT SIN 350)
    "UK": {
        "dial": ToneSpec((350.0, 440.0)),
        "ringback": ToneSpec((400.0, 450.0), (0.4, 0.2, 0.4, 2.0)),
        "busy": ToneSpec((400.0,), (0.375, 0.375)),
        "congestion": ToneSpec((400.0,), (0.4, 0.35, 0.225, 0.525)),
        "call_waiting": ToneSpec((400.0,), (0.1, 3.0)),
    },
    # Germany, the CEPT/ETSI recommended plan (ETSI TR 101 041)
    "DE": {
        "dial": ToneSpec((425.0,)),
        "ringback": ToneSpec((425.0,), (1.0, 4.0)),
        "busy": ToneSpec((425.0,), (0.48, 0.48)),
        "congestion": ToneSpec((425.0,), (0.24, 0.24)),
        "call_waiting": ToneSpec((425.0,), (0.2, 0.2, 0.2, 5.0)),
    },
}
ALIASES = {"GB": "UK", "EU": "DE", "CEPT": "DE", "CA": "US"}

#: ITU-T Q.23 key frequencies (low group, high group), for in-band DTMF when the peer
#: did not negotiate telephone-event.
DTMF_FREQUENCIES: dict[str, tuple[float, float]] = {
    key: (low, high)
    for low, row in zip((697.0, 770.0, 852.0, 941.0), ("123A", "456B", "789C", "*0#D"), strict=True)
    for high, key in zip((1209.0, 1336.0, 1477.0, 1633.0), row, strict=True)
}


def dtmf_tone(key: str, on: float = 0.1, off: float = 0.1, level_dbfs: float = -10.0) -> ToneSpec:
    """In-band DTMF for one key: both Q.23 frequencies, ``on`` seconds then ``off`` silence."""
    try:
        pair = DTMF_FREQUENCIES[key.upper()]
    except KeyError:
        raise KeyError(f"{key!r} is not a DTMF key (0-9, *, #, A-D)") from None
    return ToneSpec(pair, (on, off), level_dbfs)


def tone_plan(country: str) -> dict[str, ToneSpec]:
    """The tone plan for a country code (``"us"``, ``"UK"``/``"GB"``, ``"DE"``/``"EU"``)."""
    code = country.upper()
    code = ALIASES.get(code, code)
    try:
        return TONE_PLANS[code]
    except KeyError:
        known = ", ".join(sorted([*TONE_PLANS, *ALIASES]))
        raise KeyError(f"no tone plan for country {country!r} (have: {known})") from None


def get_tone(country: str, name: str) -> ToneSpec:
    plan = tone_plan(country)
    try:
        return plan[name]
    except KeyError:
        raise KeyError(f"no tone {name!r} (have: {', '.join(TONE_NAMES)})") from None


class ToneGenerator:
    """Streams a ``ToneSpec`` as int16 PCM at ``rate``; ``read(n)`` returns the next n samples."""

    def __init__(self, spec: ToneSpec, rate: int) -> None:
        self.spec = spec
        self.rate = rate
        self._amplitude = INT16_MAX * 10.0 ** (spec.level_dbfs / 20.0)
        self._steps = np.array([2.0 * np.pi * f / rate for f in spec.frequencies])
        self._phase = np.zeros(len(spec.frequencies))
        # cadence segment lengths in samples; cumulative rounding keeps the cycle exact
        edges = np.rint(np.cumsum((0.0, *spec.cadence)) * rate).astype(np.int64)
        self._segments = np.diff(edges)
        self._cycle = int(edges[-1])
        self._position = 0  # sample position within the cadence cycle

    def reset(self) -> None:
        self._phase[:] = 0.0
        self._position = 0

    def read(self, n: int) -> np.ndarray:
        t = np.arange(n)
        angles = self._phase[:, None] + self._steps[:, None] * t[None, :]
        wave = np.sin(angles).sum(axis=0) * self._amplitude
        self._phase = np.mod(self._phase + self._steps * n, 2.0 * np.pi)
        if self._cycle:
            wave *= self._gate(n)
            self._position = (self._position + n) % self._cycle
        return to_int16(wave)

    def _gate(self, n: int) -> np.ndarray:
        """1.0 where the cadence is on, 0.0 where off, for the next n samples."""
        pos = (self._position + np.arange(n)) % self._cycle
        starts = np.concatenate(([0], np.cumsum(self._segments)[:-1]))
        segment = np.searchsorted(starts, pos, side="right") - 1
        return (segment % 2 == 0).astype(np.float64)
