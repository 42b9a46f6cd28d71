"""Key matrix scanning and debounce for the front panel, as pure logic on integer milliseconds.

The panel firmware (main.py) does the pin I/O: for each row it drives the row low, reads the
column pins and hands the readings here with the time. Everything that decides what a key press
*is* lives here, so it is tested under CPython and a real MicroPython alike. Time is an ever-
growing millisecond count supplied by the caller (main.py unwraps time.ticks_ms()).

Debounce rule: a key's reported state changes only after its raw reading has been stable in the
new state for `debounce_ms`; the reported time is when the reading first changed, so the Pi sees
the moment the finger actually pressed. Ghosting: a matrix without diodes shows a phantom fourth
key when three keys at the corners of a rectangle are held; scans showing such a rectangle are
ignored for the keys involved (they keep their previous state).

Must run under MicroPython: plain classes, no typing, no dataclasses.
"""


class Debouncer:
    """Debounces one boolean input; update() returns (changed, state, since_ms)."""

    def __init__(self, debounce_ms=20):
        self.debounce_ms = debounce_ms
        self.state = False  # the reported, debounced state
        self._raw = False
        self._raw_since = 0

    def update(self, raw, now_ms):
        if raw != self._raw:
            self._raw = raw
            self._raw_since = now_ms
        if self._raw != self.state and now_ms - self._raw_since >= self.debounce_ms:
            self.state = self._raw
            return True, self.state, self._raw_since
        return False, self.state, self._raw_since


class Key:
    """One named input: a matrix position or a direct pin such as the hook switch."""

    def __init__(self, name, debounce_ms):
        self.name = name
        self.debouncer = Debouncer(debounce_ms)


class MatrixScanner:
    """Turns per-row column readings into debounced key edges.

    keymap maps (row, col) to a key name; positions not in it are ignored. scan_row(row, cols,
    now_ms) takes the column readings (True = pressed) for one driven row and returns a list of
    (name, pressed, at_ms) edges.
    """

    def __init__(self, rows, cols, keymap, debounce_ms=20):
        self.rows = rows
        self.cols = cols
        self.keys = {}
        for pos, name in keymap.items():
            row, col = pos
            if not (0 <= row < rows and 0 <= col < cols):
                raise ValueError("key " + name + " is outside the matrix")
            self.keys[pos] = Key(name, debounce_ms)
        self._raw = [[False] * cols for _ in range(rows)]

    def scan_row(self, row, cols, now_ms):
        if len(cols) != self.cols:
            raise ValueError(f"expected {self.cols} column readings")
        self._raw[row] = list(cols)
        ghosts = self._ghosted(row)
        edges = []
        for col in range(self.cols):
            key = self.keys.get((row, col))
            if key is None:
                continue
            if col in ghosts:
                continue  # ambiguous reading: keep the previous state for this scan
            changed, state, since = key.debouncer.update(cols[col], now_ms)
            if changed:
                edges.append((key.name, state, since))
        return edges

    def _ghosted(self, row):
        """Columns of `row` that form a rectangle of pressed keys with another row."""
        pressed = [c for c in range(self.cols) if self._raw[row][c]]
        if len(pressed) < 2:
            return ()
        ghosts = set()
        for other in range(self.rows):
            if other == row:
                continue
            common = [c for c in pressed if self._raw[other][c]]
            if len(common) >= 2:
                for c in common:
                    ghosts.add(c)
        return ghosts

    def pressed(self):
        """Names of the keys currently reported down."""
        return sorted(k.name for k in self.keys.values() if k.debouncer.state)


class DirectInputs:
    """Debounced direct inputs (the hook switch, single buttons): update(name, raw, now_ms)."""

    def __init__(self, names, debounce_ms=20):
        self.keys = {}
        for name in names:
            self.keys[name] = Key(name, debounce_ms)

    def update(self, name, raw, now_ms):
        changed, state, since = self.keys[name].debouncer.update(raw, now_ms)
        if changed:
            return [(name, state, since)]
        return []


class LedPatterns:
    """Local LED flash patterns: the Pi sends a mode once, the panel keeps the rhythm.

    Periods match the Pi side's LED modes: slow flash 1 s (500 ms on), fast flash 250 ms
    (125 ms on); the phase is shared by all LEDs so BLF keys flash together.
    """

    PERIODS = {"slow_flash": (1000, 500), "fast_flash": (250, 125)}

    def __init__(self, names):
        self.modes = {}
        for name in names:
            self.modes[name] = "off"

    def set(self, name, mode):
        if name not in self.modes:
            raise ValueError("unknown LED " + name)
        if mode not in ("off", "on", "slow_flash", "fast_flash"):
            raise ValueError("unknown LED mode " + mode)
        self.modes[name] = mode

    def lit(self, name, now_ms):
        mode = self.modes[name]
        if mode == "on":
            return True
        if mode == "off":
            return False
        period, on_ms = self.PERIODS[mode]
        return now_ms % period < on_ms
