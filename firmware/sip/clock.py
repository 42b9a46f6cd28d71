"""Time as the sans-IO core sees it: a monotonic float in seconds, always passed in.

The core never reads the clock itself; the runtime passes ``now`` (from
``time.monotonic()``) and tests pass literal numbers. ``ManualClock`` is the test helper.
"""

from __future__ import annotations

from typing import Protocol


class Clock(Protocol):
    def now(self) -> float: ...


class ManualClock:
    """A clock that only moves when the test says so."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> float:
        self._now += seconds
        return self._now

    def set(self, t: float) -> None:
        self._now = t
