"""The simulated board: every port in memory, for `deskphone sim`, `deskphone demo` and tests.

It behaves like hardware seen through the ports: key presses become raw edges on the phone's
clock (so they go through the same debounce as real keys), the display keeps what an A00 LCD of
the profile's size would show, and LEDs and the ringer record their levels (and a short history,
for tests that assert on flashing).
"""

from __future__ import annotations

from board.charset import fit, plain
from board.ports import ALL_KEYS, HOOK, Clock, EdgeSink, KeyEdge


class SimKeypad:
    """Every key; `press`/`release`/`hook` are what a person (or the action API) does."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._sink: EdgeSink | None = None
        self.down: set[str] = set()

    poll_interval = None

    def start(self, sink: EdgeSink) -> None:
        self._sink = sink

    def press(self, key: str) -> None:
        self._edge(key, True)

    def release(self, key: str) -> None:
        self._edge(key, False)

    def hook(self, off_hook: bool) -> None:
        """Lift (True) or replace (False) the handset."""
        self._edge(HOOK, off_hook)

    def _edge(self, key: str, pressed: bool) -> None:
        if key not in ALL_KEYS:
            raise ValueError(f"unknown key {key!r}")
        if pressed:
            self.down.add(key)
        else:
            self.down.discard(key)
        if self._sink is not None:
            self._sink(KeyEdge(key, pressed, self._clock.now()))

    def poll(self, now: float) -> None:
        """Nothing to scan."""

    def close(self) -> None:
        self._sink = None


class SimDisplay:
    """A character LCD in memory; `lines` is what is on the glass, `text` the plain version."""

    blocking_io = False  # memory only: the runtime may write it on the event loop

    def __init__(self, cols: int = 20, rows: int = 4) -> None:
        self._cols, self._rows = cols, rows
        self.lines = [" " * cols] * rows
        self.updates = 0

    @property
    def size(self) -> tuple[int, int]:
        return self._cols, self._rows

    def show(self, lines: list[str]) -> None:
        self.lines = fit(lines, self._cols, self._rows)
        self.updates += 1

    def text(self) -> list[str]:
        """The screen with icons as one-column look-alikes, trailing spaces kept."""
        return [plain(line) for line in self.lines]

    def close(self) -> None:
        self.lines = [" " * self._cols] * self._rows


class SimIndicator:
    """LEDs in memory: current level and every change (name, lit)."""

    def __init__(self, names: frozenset[str]) -> None:
        self._names = names
        self.lit: dict[str, bool] = {name: False for name in names}
        self.history: list[tuple[str, bool]] = []

    @property
    def names(self) -> frozenset[str]:
        return self._names

    def set(self, name: str, lit: bool) -> None:
        if name not in self._names:
            raise ValueError(f"unknown LED {name!r}")
        self.lit[name] = lit
        self.history.append((name, lit))

    def close(self) -> None:
        for name in self._names:
            self.lit[name] = False


class SimRinger:
    """A ringer in memory: its level and every change."""

    def __init__(self) -> None:
        self.on = False
        self.history: list[bool] = []

    def ring(self, on: bool) -> None:
        self.on = on
        self.history.append(on)

    def close(self) -> None:
        self.on = False


class NoDisplay:
    """A board without an LCD (e.g. a headless intercom): shows nothing, remembers nothing."""

    size = (20, 4)
    blocking_io = False

    def show(self, lines: list[str]) -> None:
        pass

    def close(self) -> None:
        pass


class NoRinger:
    """A board without a ringer of its own."""

    def ring(self, on: bool) -> None:
        pass

    def close(self) -> None:
        pass
