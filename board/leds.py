"""LED modes and the ringer cadence on the phone's clock (sans-IO).

The UI says *what* an LED means (`off`, `on`, `slow_flash`, `fast_flash`); this module turns
that into on/off switching times. Nothing here touches a pin: `set_mode` / `handle_timer`
return the (name, lit) changes for the caller to apply with `Indicator.set`, and `get_timer()`
gives the next switching time.

Periods (documented in the README's board section, the usual desk-phone convention):
- `slow_flash`: 500 ms on, 500 ms off (1 Hz) - held call, message waiting, BLF "held".
- `fast_flash`: 125 ms on, 125 ms off (4 Hz) - incoming call, BLF "ringing".

All LEDs with the same flash mode are in phase (phases count from clock time 0), as on real
phones, so two ringing line keys blink together. The ringer's cadence instead starts with its
on-phase at the moment ringing starts (`Cadence`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from board.ports import LED_MODES, LedMode

# A pattern is alternating durations in seconds, starting with "on"; it repeats.
Pattern = tuple[float, ...]
FLASH_PATTERNS: dict[str, Pattern] = {"slow_flash": (0.5, 0.5), "fast_flash": (0.125, 0.125)}
# Ring cadences (ITU-T E.180 / national practice): US 2 s on 4 s off; UK double ring; DE 1 s/4 s.
RING_CADENCES: dict[str, Pattern] = {
    "US": (2.0, 4.0),
    "UK": (0.4, 0.2, 0.4, 2.0),
    "DE": (1.0, 4.0),
}
_EPS = 1e-9


def _phase(pattern: Pattern, elapsed: float) -> tuple[bool, float]:
    """(lit, seconds until the next switch) at `elapsed` seconds into a repeating pattern."""
    period = sum(pattern)
    offset = elapsed % period
    if period - offset < _EPS:  # float rounding at a period boundary
        offset = 0.0
    start = 0.0
    for i, duration in enumerate(pattern):
        end = start + duration
        if offset < end - _EPS:
            return i % 2 == 0, end - offset
        start = end
    return True, pattern[0]  # unreachable with positive durations


@dataclass(slots=True)
class _Output:
    pattern: Pattern | None  # None = steady
    steady: bool
    anchor: float
    lit: bool
    next_switch: float | None


class Blinker:
    """Steady or patterned outputs; returns the changes to apply."""

    def __init__(self) -> None:
        self._outputs: dict[str, _Output] = {}

    def set(
        self, name: str, state: bool | Pattern, now: float, anchor: float | None = None
    ) -> list[tuple[str, bool]]:
        """Make `name` steady (bool) or follow a pattern anchored at `anchor` (default: now)."""
        if isinstance(state, bool):
            out = _Output(None, state, now, state, None)
        else:
            _validate(state)
            base = now if anchor is None else anchor
            lit, wait = _phase(state, now - base)
            out = _Output(tuple(state), False, base, lit, now + wait)
        previous = self._outputs.get(name)
        self._outputs[name] = out
        if previous is not None and previous.lit == out.lit:
            return []
        return [(name, out.lit)]

    def lit(self, name: str) -> bool:
        out = self._outputs.get(name)
        return bool(out and out.lit)

    def get_timer(self) -> float | None:
        times = [o.next_switch for o in self._outputs.values() if o.next_switch is not None]
        return min(times) if times else None

    def handle_timer(self, now: float) -> list[tuple[str, bool]]:
        """Switch every output whose time has come; one change per output (its state at now)."""
        changes: list[tuple[str, bool]] = []
        for name, out in self._outputs.items():
            if out.pattern is None or out.next_switch is None or out.next_switch > now + _EPS:
                continue
            lit, wait = _phase(out.pattern, now - out.anchor)
            out.next_switch = now + wait
            if lit != out.lit:
                out.lit = lit
                changes.append((name, lit))
        return changes


def _validate(pattern: Sequence[float]) -> None:
    if not pattern or len(pattern) % 2 or any(d <= 0 for d in pattern):
        raise ValueError(f"pattern needs an even number of positive durations, got {pattern!r}")


class LedDriver:
    """LED modes for a set of named LEDs (the Indicator's names)."""

    def __init__(self, names: frozenset[str]) -> None:
        self.names = names
        self._modes: dict[str, LedMode] = {}
        self._blinker = Blinker()

    def set_mode(self, name: str, mode: LedMode, now: float) -> list[tuple[str, bool]]:
        """Change an LED's mode; returns the pin changes to apply now."""
        if name not in self.names:
            raise ValueError(f"unknown LED {name!r} (this board has {sorted(self.names)})")
        if mode not in LED_MODES:
            raise ValueError(f"unknown LED mode {mode!r} (expected one of {list(LED_MODES)})")
        if self._modes.get(name, "off") == mode and name in self._modes:
            return []
        self._modes[name] = mode
        if mode in FLASH_PATTERNS:
            return self._blinker.set(name, FLASH_PATTERNS[mode], now, anchor=0.0)
        return self._blinker.set(name, mode == "on", now)

    def mode(self, name: str) -> LedMode:
        return self._modes.get(name, "off")

    def modes(self) -> dict[str, LedMode]:
        """Every LED's mode (off when never set), for status."""
        return {name: self.mode(name) for name in sorted(self.names)}

    def lit(self, name: str) -> bool:
        return self._blinker.lit(name)

    def get_timer(self) -> float | None:
        return self._blinker.get_timer()

    def handle_timer(self, now: float) -> list[tuple[str, bool]]:
        return self._blinker.handle_timer(now)


class Cadence:
    """The ringer's on/off cadence: starts with the on-phase when ringing starts."""

    NAME = "ringer"

    def __init__(self, pattern: Pattern = RING_CADENCES["US"]) -> None:
        _validate(pattern)
        self.pattern = pattern
        self._blinker = Blinker()
        self.ringing = False

    def ring(self, on: bool, now: float) -> list[bool]:
        """Start/stop ringing; returns the ringer levels to apply now (at most one)."""
        if on and self.ringing:
            return []  # already ringing: keep the cadence's phase
        self.ringing = on
        state: bool | Pattern = self.pattern if on else False
        return [lit for _, lit in self._blinker.set(self.NAME, state, now)]

    def get_timer(self) -> float | None:
        return self._blinker.get_timer()

    def handle_timer(self, now: float) -> list[bool]:
        return [lit for _, lit in self._blinker.handle_timer(now)]
