"""The contract between the phone's logic and its hardware (DESIGN.md "board layer").

Everything above this line (firmware/ui, firmware/runtime) talks to a board only through these
small types, so a Raspberry Pi with gpiozero pins, a serial front panel, and the simulated board
in a terminal are interchangeable implementations. Key names are plain strings (below) so they can
travel through the action API, board profiles and the UI's tables unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

DIGIT_KEYS = tuple(f"DIGIT_{d}" for d in "0123456789") + ("STAR", "POUND")
FUNCTION_KEYS = (
    "HOLD", "TRANSFER", "CONF", "REDIAL", "MUTE", "SPEAKER", "HEADSET", "VOL_UP", "VOL_DOWN",
    "DND", "VOICEMAIL", "OK", "CANCEL", "UP", "DOWN",
)
SOFT_KEYS = tuple(f"SOFT_{n}" for n in range(1, 5))
MAX_LINE_KEYS = 16
LINE_KEYS = tuple(f"LINE_{n}" for n in range(1, MAX_LINE_KEYS + 1))
# HOOK is the hook switch: "pressed" means the handset is lifted (off hook).
HOOK = "HOOK"
ALL_KEYS = frozenset(DIGIT_KEYS + FUNCTION_KEYS + SOFT_KEYS + LINE_KEYS + (HOOK,))

# LEDs a board may have: one on any function or line key, plus the message-waiting lamp.
LED_NAMES = frozenset(FUNCTION_KEYS + LINE_KEYS + SOFT_KEYS + ("MWI",))

LedMode = Literal["off", "on", "slow_flash", "fast_flash"]
LED_MODES: tuple[LedMode, ...] = ("off", "on", "slow_flash", "fast_flash")
KeyEventKind = Literal["press", "release", "long_press", "repeat"]
AudioPath = Literal["none", "handset", "speaker", "headset"]


@dataclass(frozen=True, slots=True)
class KeyEdge:
    """A raw, undebounced edge as a driver saw it (gpiozero callback, panel frame, terminal key)."""

    key: str
    pressed: bool
    at: float  # monotonic seconds on the phone's clock


@dataclass(frozen=True, slots=True)
class KeyEvent:
    """A debounced, interpreted key event from board/keys, what the phone UI consumes.

    For HOOK, "press" means off hook and "release" means on hook.
    """

    key: str
    kind: KeyEventKind
    at: float


EdgeSink = Callable[[KeyEdge], None]


class Clock(Protocol):
    """The phone's monotonic clock (seconds); adapters stamp edges with it."""

    def now(self) -> float: ...


class Keypad(Protocol):
    """Reports raw edges for every key it has (including HOOK when the hook switch is on it)."""

    def start(self, sink: EdgeSink) -> None: ...

    def close(self) -> None: ...


class PolledKeypad(Keypad, Protocol):
    """A keypad that must be scanned (a key matrix): the runtime calls `poll` every interval."""

    @property
    def poll_interval(self) -> float | None:
        """Seconds between scans (None: nothing to scan on this board)."""
        ...

    def poll(self, now: float) -> None:
        """Scan once; edges go to the sink given to `start`, stamped `now`."""
        ...


class Display(Protocol):
    """A character display: `show` replaces the whole screen (already fitted to its size)."""

    @property
    def size(self) -> tuple[int, int]:
        """(columns, rows)."""
        ...

    def show(self, lines: list[str]) -> None: ...

    def close(self) -> None: ...


class Indicator(Protocol):
    """LEDs: `set` drives one LED on or off; flashing is timed by the caller's clock."""

    @property
    def names(self) -> frozenset[str]: ...

    def set(self, name: str, lit: bool) -> None: ...

    def close(self) -> None: ...


class Ringer(Protocol):
    """The ringer: a buzzer pin or the sound card; `ring(True)` starts the cadence's on-phase."""

    def ring(self, on: bool) -> None: ...

    def close(self) -> None: ...
