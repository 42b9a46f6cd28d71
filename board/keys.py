"""Key interpretation on the phone's clock: debounce, long press, auto-repeat, matrix scanning.

Sans-IO (DESIGN.md): drivers only report raw edges (`KeyEdge`, stamped with the phone's
monotonic clock); this module decides what a person did. It never reads a clock or sleeps: the
caller feeds edges and `now`, asks `get_timer()` for the next deadline and calls
`handle_timer(now)` when it passes, the same shape as the SIP core.

Debounce is *integrating*: a key's state changes only after its raw level has been stable for
`debounce` seconds, so contact bounce and single glitches never reach the UI. The event carries
the time the change was confirmed (last raw edge + debounce), which makes exact-clock tests
possible. Repeat keys (volume, navigation) auto-repeat while held; other keys (not HOOK) emit one
`long_press` after `long_press` seconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from board.ports import ALL_KEYS, HOOK, KeyEdge, KeyEvent, KeyEventKind

DEFAULT_REPEAT_KEYS = frozenset({"VOL_UP", "VOL_DOWN", "UP", "DOWN"})


@dataclass(frozen=True, slots=True)
class KeyTiming:
    """Timing of the interpreter, in seconds (profiles give milliseconds)."""

    debounce: float = 0.02
    hook_debounce: float = 0.05  # a hook switch bounces longer than a tact switch
    long_press: float = 0.8
    repeat_delay: float = 0.5
    repeat_interval: float = 0.15
    repeat_keys: frozenset[str] = DEFAULT_REPEAT_KEYS

    def __post_init__(self) -> None:
        for name in ("debounce", "hook_debounce", "long_press", "repeat_delay", "repeat_interval"):
            value = getattr(self, name)
            if value < 0 or (value == 0 and name in ("long_press", "repeat_interval")):
                raise ValueError(f"KeyTiming.{name} must be positive, got {value!r}")
        unknown = sorted(self.repeat_keys - ALL_KEYS)
        if unknown:
            raise ValueError(f"KeyTiming.repeat_keys: unknown keys {unknown}")


@dataclass(slots=True)
class _KeyState:
    raw: bool = False
    stable: bool = False
    settle_at: float | None = None  # debounce deadline while raw != stable
    long_at: float | None = None
    repeat_at: float | None = None

    def next_deadline(self) -> float | None:
        # While a release is settling the key is physically up: no long press or repeat then.
        held = (self.long_at, self.repeat_at) if self.raw else ()
        times = [t for t in (self.settle_at, *held) if t is not None]
        return min(times) if times else None


@dataclass
class KeyInterpreter:
    """Raw edges in, `KeyEvent`s out; one instance per phone, all keys."""

    timing: KeyTiming = field(default_factory=KeyTiming)
    _keys: dict[str, _KeyState] = field(default_factory=dict, init=False, repr=False)

    def feed(self, edge: KeyEdge) -> list[KeyEvent]:
        """Take one raw edge; returns events that became due up to `edge.at` (in time order)."""
        if edge.key not in ALL_KEYS:
            raise ValueError(f"unknown key {edge.key!r}")
        events = self.handle_timer(edge.at)
        st = self._keys.setdefault(edge.key, _KeyState())
        if edge.pressed == st.raw:
            return events  # a repeated level (e.g. a driver re-reporting): nothing changed
        st.raw = edge.pressed
        if st.raw == st.stable:
            st.settle_at = None  # bounced back before it settled: never happened
        else:
            st.settle_at = edge.at + self._debounce(edge.key)
        return events

    def get_timer(self) -> float | None:
        """The earliest deadline (debounce, long press or repeat), or None."""
        times = [t for st in self._keys.values() if (t := st.next_deadline()) is not None]
        return min(times) if times else None

    def handle_timer(self, now: float) -> list[KeyEvent]:
        """Fire every deadline <= now, in time order."""
        events: list[KeyEvent] = []
        while True:
            due = [
                (t, key) for key, st in self._keys.items()
                if (t := st.next_deadline()) is not None and t <= now
            ]
            if not due:
                return events
            at, key = min(due)
            events.append(self._fire(key, self._keys[key], at))

    def is_down(self, key: str) -> bool:
        """The debounced state of `key`."""
        st = self._keys.get(key)
        return bool(st and st.stable)

    def _debounce(self, key: str) -> float:
        return self.timing.hook_debounce if key == HOOK else self.timing.debounce

    def _fire(self, key: str, st: _KeyState, at: float) -> KeyEvent:
        kind: KeyEventKind
        if st.settle_at == at:
            st.settle_at = None
            st.stable = st.raw
            st.long_at = st.repeat_at = None
            if st.stable:
                kind = "press"
                if key in self.timing.repeat_keys:
                    st.repeat_at = at + self.timing.repeat_delay
                elif key != HOOK:
                    st.long_at = at + self.timing.long_press
            else:
                kind = "release"
        elif st.long_at == at:
            st.long_at = None
            kind = "long_press"
        else:
            st.repeat_at = at + self.timing.repeat_interval
            kind = "repeat"
        return KeyEvent(key, kind, at)


class MatrixScanner:
    """A row/column keypad scanned by us: drive one row, read the columns, get edges.

    `layout[r][c]` names the key at row r, column c (None for an empty position). The pin side
    (board/gpio.py) drives row r active, reads which columns see it and calls `feed_row`; the
    scanner compares with the previous scan and returns the edges. Without per-key diodes,
    three keys forming a rectangle also show the fourth ("ghosting"); a desk phone's keys are
    pressed one at a time, so this is accepted, not corrected.
    """

    def __init__(self, layout: Sequence[Sequence[str | None]]) -> None:
        if not layout or not layout[0]:
            raise ValueError("matrix layout must have at least one row and one column")
        width = len(layout[0])
        for r, row in enumerate(layout):
            if len(row) != width:
                raise ValueError(f"matrix layout row {r} has {len(row)} columns, expected {width}")
            for key in row:
                if key is not None and key not in ALL_KEYS:
                    raise ValueError(f"matrix layout row {r}: unknown key {key!r}")
        self.layout = [list(row) for row in layout]
        self._down = [[False] * width for _ in layout]

    @property
    def rows(self) -> int:
        return len(self.layout)

    @property
    def cols(self) -> int:
        return len(self.layout[0])

    def feed_row(self, row: int, columns_active: Sequence[bool], now: float) -> list[KeyEdge]:
        """The column levels read while `row` was driven -> edges for keys that changed."""
        if len(columns_active) != self.cols:
            raise ValueError(f"expected {self.cols} column levels, got {len(columns_active)}")
        edges: list[KeyEdge] = []
        for c, active in enumerate(columns_active):
            key = self.layout[row][c]
            if key is None or self._down[row][c] == bool(active):
                continue
            self._down[row][c] = bool(active)
            edges.append(KeyEdge(key, bool(active), now))
        return edges
