"""Board profiles: which pins, keypad, LEDs, LCD, ringer and audio devices a phone's hardware has.

An integrator describes their hardware in a TOML file instead of editing code; `load_profile`
validates it completely before any pin is touched, and every mistake is one `ProfileError`
naming the file and the key (unknown keys are errors too, so a typo never silently does
nothing). Shipped profiles live in board/profiles/ and are found by name ("pi-reference", "sim").
See the README's "Board profiles" section for the format.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from board.frontpanel_config import PanelConfigError, PanelPins
from board.keys import DEFAULT_REPEAT_KEYS, KeyTiming, MatrixScanner
from board.lcd_hd44780 import EXPANDERS
from board.lcd_serial import PROTOCOLS
from board.leds import RING_CADENCES, Pattern
from board.ports import ALL_KEYS, HOOK, LED_NAMES

PROFILE_DIR = Path(__file__).resolve().parent / "profiles"
DRIVERS = ("gpio", "sim", "frontpanel")  # frontpanel: keys/hook/LEDs on a serial MCU panel
LCD_TYPES = ("hd44780", "serial", "sim", "none")
RINGER_TYPES = ("buzzer", "sound", "sim", "none")
AUDIO_PATHS = ("handset", "speaker", "headset")
Pin = int | str  # BCM number, or any pin name gpiozero understands ("GPIO17", "BOARD11")


class ProfileError(ValueError):
    """A board profile mistake, with the file and key it is about."""

    def __init__(self, file: str, key: str, message: str) -> None:
        self.file, self.key, self.message = file, key, message
        super().__init__(f"{file}: {key}: {message}")


@dataclass(frozen=True)
class HookSpec:
    pin: Pin
    active_low: bool = True  # off hook pulls the pin to ground (internal pull-up)


@dataclass(frozen=True)
class MatrixSpec:
    rows: tuple[Pin, ...]  # driven one at a time
    cols: tuple[Pin, ...]  # read, with pull-ups
    layout: tuple[tuple[str | None, ...], ...]
    scan_interval: float = 0.01
    active_low: bool = True  # the driven row is pulled low; a pressed key pulls its column low


@dataclass(frozen=True)
class LcdSpec:
    type: Literal["hd44780", "serial", "sim", "none"] = "none"
    cols: int = 20
    rows: int = 4
    address: int = 0x27
    expander: str = "PCF8574"
    gpio_bank: str = "A"
    i2c_port: int = 1
    protocol: str = "matrix_orbital"
    port: str = "/dev/ttyUSB0"
    baud: int = 9600


@dataclass(frozen=True)
class RingerSpec:
    type: Literal["buzzer", "sound", "sim", "none"] = "none"
    pin: Pin | None = None
    active_high: bool = True
    cadence: Pattern = RING_CADENCES["US"]
    device: str = "default"  # playback device for type = "sound"


@dataclass(frozen=True)
class AudioDevices:
    capture: str = "default"
    playback: str = "default"


@dataclass(frozen=True)
class FrontPanelSpec:
    """A MicroPython front panel on a serial port (board/frontpanel): where it is on the Pi and,
    for `deskphone-flash`, the microcontroller's own pin map."""

    port: str
    baud: int
    pins: PanelPins

    @property
    def leds(self) -> frozenset[str]:
        return frozenset(self.pins.leds)

    @property
    def keys(self) -> frozenset[str]:
        keys = set(self.pins.keymap.values())
        if self.pins.hook is not None:
            keys.add(HOOK)
        return frozenset(keys)


@dataclass(frozen=True)
class BoardProfile:
    name: str
    file: str
    driver: Literal["gpio", "sim", "frontpanel"]
    timing: KeyTiming = field(default_factory=KeyTiming)
    hook: HookSpec | None = None
    buttons: dict[str, Pin] = field(default_factory=dict)
    buttons_pull_up: bool = True
    matrix: MatrixSpec | None = None
    leds: dict[str, Pin | None] = field(default_factory=dict)  # None: simulated LED
    leds_active_high: bool = True
    lcd: LcdSpec = field(default_factory=LcdSpec)
    ringer: RingerSpec = field(default_factory=RingerSpec)
    audio: dict[str, AudioDevices] = field(default_factory=dict)
    frontpanel: FrontPanelSpec | None = None

    @property
    def keys(self) -> frozenset[str]:
        """Every key this board can report."""
        if self.driver == "sim":
            return ALL_KEYS
        if self.frontpanel is not None:
            return self.frontpanel.keys
        keys = set(self.buttons)
        if self.hook is not None:
            keys.add(HOOK)
        if self.matrix is not None:
            keys.update(k for row in self.matrix.layout for k in row if k is not None)
        return frozenset(keys)


class _Table:
    """One TOML table; remembers which keys were read so leftovers are reported."""

    def __init__(self, file: str, path: str, data: Any) -> None:
        if not isinstance(data, dict):
            raise ProfileError(file, path, f"must be a table, not {type(data).__name__}")
        self.file, self.path, self.data = file, path, data
        self.used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def error(self, name: str, message: str) -> ProfileError:
        return ProfileError(self.file, self.key(name), message)

    def get(self, name: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
        self.used.add(name)
        if name not in self.data:
            if default is ...:
                raise self.error(name, "is required")
            return default
        value = self.data[name]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds:
            raise self.error(name, f"must be {_names(kinds)}, not a boolean")
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kinds):
            raise self.error(name, f"must be {_names(kinds)}, not {type(value).__name__}")
        return value

    def choice(self, name: str, choices: tuple[str, ...], default: Any = ...) -> Any:
        value = self.get(name, str, default)
        if value not in choices:
            raise self.error(name, f"{value!r} is not one of {', '.join(choices)}")
        return value

    def table(self, name: str) -> _Table:
        return _Table(self.file, self.key(name), self.get(name, dict, {}))

    def finish(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise self.error(unknown[0], "unknown key (see the README's board profile format)")


def _names(kinds: tuple[type, ...]) -> str:
    words = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
             list: "a list", dict: "a table"}
    return " or ".join(words.get(k, k.__name__) for k in kinds)


def _pin(t: _Table, name: str, value: Any) -> Pin:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise t.error(name, f"a pin must be a BCM number or a pin name, not {value!r}")
    if isinstance(value, int) and not 0 <= value <= 53:
        raise t.error(name, f"BCM pin {value} does not exist (0..53)")
    if isinstance(value, str) and not value.strip():
        raise t.error(name, "a pin name must not be empty")
    return value


def _ms(t: _Table, name: str, default_s: float, minimum: float = 0.0) -> float:
    value = t.get(name, (int, float), default_s * 1000.0)
    if value < minimum or value > 60_000:
        raise t.error(name, f"must be between {minimum:g} and 60000 ms, not {value:g}")
    return float(value) / 1000.0


def _timing(top: _Table) -> KeyTiming:
    t = top.table("timing")
    d = KeyTiming()
    repeat = t.get("repeat_keys", list, sorted(DEFAULT_REPEAT_KEYS))
    for i, key in enumerate(repeat):
        if key not in ALL_KEYS:
            raise t.error(f"repeat_keys[{i}]", f"{key!r} is not a key name")
    timing = KeyTiming(
        debounce=_ms(t, "debounce_ms", d.debounce),
        hook_debounce=_ms(t, "hook_debounce_ms", d.hook_debounce),
        long_press=_ms(t, "long_press_ms", d.long_press, 50),
        repeat_delay=_ms(t, "repeat_delay_ms", d.repeat_delay, 50),
        repeat_interval=_ms(t, "repeat_interval_ms", d.repeat_interval, 20),
        repeat_keys=frozenset(repeat),
    )
    t.finish()
    return timing


class _Pins:
    """Catches one pin used twice (the second use is the error)."""

    def __init__(self) -> None:
        self.owner: dict[Pin, str] = {}

    def claim(self, t: _Table, name: str, pin: Pin) -> None:
        if pin in self.owner:
            raise t.error(name, f"pin {pin!r} is already used by {self.owner[pin]}")
        self.owner[pin] = t.key(name)


def _matrix(top: _Table, pins: _Pins) -> MatrixSpec | None:
    if "matrix" not in top.data:
        top.used.add("matrix")
        return None
    t = top.table("matrix")
    rows = tuple(_pin(t, f"rows[{i}]", p) for i, p in enumerate(t.get("rows", list)))
    cols = tuple(_pin(t, f"cols[{i}]", p) for i, p in enumerate(t.get("cols", list)))
    for i, p in enumerate(rows):
        pins.claim(t, f"rows[{i}]", p)
    for i, p in enumerate(cols):
        pins.claim(t, f"cols[{i}]", p)
    raw = t.get("layout", list)
    layout: list[tuple[str | None, ...]] = []
    for r, row in enumerate(raw):
        if not isinstance(row, list) or len(row) != len(cols):
            raise t.error(f"layout[{r}]", f"must list {len(cols)} keys, one per column "
                                          "(\"\" for no key)")
        for c, key in enumerate(row):
            if not isinstance(key, str) or (key and key not in ALL_KEYS):
                raise t.error(f"layout[{r}][{c}]", f"{key!r} is not a key name")
            if key == HOOK:
                raise t.error(f"layout[{r}][{c}]", "the hook switch has its own [hook] table")
        layout.append(tuple(k or None for k in row))
    if len(layout) != len(rows) or not rows or not cols:
        raise t.error("layout", f"must have one list per row pin ({len(rows)}), "
                                "and rows and cols need at least one pin each")
    spec = MatrixSpec(rows, cols, tuple(layout), _ms(t, "scan_interval_ms", 0.01, 1),
                      t.get("active_low", bool, True))
    MatrixScanner(spec.layout)  # same checks as at run time
    t.finish()
    return spec


def _lcd(top: _Table, driver: str) -> LcdSpec:
    t = top.table("lcd")
    kind = t.choice("type", LCD_TYPES, "sim" if driver == "sim" else "none")
    cols, rows = t.get("cols", int, 20), t.get("rows", int, 4)
    if not 8 <= cols <= 40:
        raise t.error("cols", f"must be 8..40, not {cols}")
    if rows not in (1, 2, 4):
        raise t.error("rows", f"must be 1, 2 or 4, not {rows}")
    spec = LcdSpec(type=kind, cols=cols, rows=rows)
    if kind == "hd44780":
        address = t.get("address", int, 0x27)
        if not 0x03 <= address <= 0x77:
            raise t.error("address", f"{address:#x} is not a 7-bit I2C address (0x03..0x77)")
        spec = LcdSpec(
            type=kind, cols=cols, rows=rows, address=address,
            expander=t.choice("expander", EXPANDERS, "PCF8574"),
            gpio_bank=t.choice("gpio_bank", ("A", "B"), "A"),
            i2c_port=t.get("i2c_port", int, 1),
        )
    elif kind == "serial":
        baud = t.get("baud", int, 9600)
        if baud not in (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200):
            raise t.error("baud", f"{baud} is not a standard serial LCD rate")
        spec = LcdSpec(type=kind, cols=cols, rows=rows, protocol=t.choice("protocol", PROTOCOLS),
                       port=t.get("port", str), baud=baud)
    t.finish()
    return spec


def _ringer(top: _Table, pins: _Pins, driver: str) -> RingerSpec:
    t = top.table("ringer")
    kind = t.choice("type", RINGER_TYPES, "sim" if driver == "sim" else "none")
    cadence_raw = t.get("cadence", (str, list), "US")
    if isinstance(cadence_raw, str):
        if cadence_raw not in RING_CADENCES:
            raise t.error("cadence", f"{cadence_raw!r} is not one of {', '.join(RING_CADENCES)}"
                                     " (or give [on, off, ...] seconds)")
        cadence = RING_CADENCES[cadence_raw]
    else:
        if (not cadence_raw or len(cadence_raw) % 2
                or not all(isinstance(x, int | float) and not isinstance(x, bool) and x > 0
                           for x in cadence_raw)):
            raise t.error("cadence", "must be an even number of positive seconds [on, off, ...]")
        cadence = tuple(float(x) for x in cadence_raw)
    pin = None
    if kind == "buzzer":
        pin = _pin(t, "pin", t.get("pin", (int, str)))
        pins.claim(t, "pin", pin)
    spec = RingerSpec(type=kind, pin=pin, active_high=t.get("active_high", bool, True),
                      cadence=cadence, device=t.get("device", str, "default"))
    t.finish()
    return spec


def _mcu_pin(t: _Table, name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 47:
        raise t.error(name, f"a panel GPIO must be a number 0..47, not {value!r}")
    return value


def _frontpanel(top: _Table) -> FrontPanelSpec:
    t = top.table("frontpanel")
    baud = t.get("baud", int, 115200)
    if baud not in (9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600):
        raise t.error("baud", f"{baud} is not a standard UART rate")
    rows = tuple(_mcu_pin(t, f"rows[{i}]", p) for i, p in enumerate(t.get("rows", list)))
    cols = tuple(_mcu_pin(t, f"cols[{i}]", p) for i, p in enumerate(t.get("cols", list)))
    layout = t.get("layout", list)
    if len(layout) != len(rows) or not rows or not cols:
        raise t.error("layout", f"must have one list per row pin ({len(rows)}), "
                                "and rows and cols need at least one pin each")
    keymap: dict[tuple[int, int], str] = {}
    for r, row in enumerate(layout):
        if not isinstance(row, list) or len(row) != len(cols):
            raise t.error(f"layout[{r}]", f"must list {len(cols)} keys, one per column "
                                          "(\"\" for no key)")
        for c, key in enumerate(row):
            if not isinstance(key, str) or (key and key not in ALL_KEYS) or key == HOOK:
                raise t.error(f"layout[{r}][{c}]", f"{key!r} is not a key name "
                                                   "(the hook switch is `hook`)")
            if key:
                keymap[(r, c)] = key
    hook = t.get("hook", int, None)
    lp = _Table(t.file, t.key("leds"), t.get("leds", dict, {}))
    leds = {}
    for led, value in lp.data.items():
        lp.used.add(led)
        if led not in LED_NAMES:
            raise lp.error(led, "is not an LED name (a function/line/soft key or MWI)")
        leds[led] = _mcu_pin(lp, led, value)
    ut = t.table("uart")
    pins = PanelPins(
        rows=rows, cols=cols, keymap=keymap, leds=leds,
        hook=None if hook is None else _mcu_pin(t, "hook", hook),
        uart_id=ut.get("id", int, 0), tx=_mcu_pin(ut, "tx", ut.get("tx", int, 0)),
        rx=_mcu_pin(ut, "rx", ut.get("rx", int, 1)), baud=baud,
        debounce_ms=t.get("debounce_ms", int, 20),
    )
    try:
        pins.validate()
    except PanelConfigError as e:
        raise ProfileError(t.file, "frontpanel", str(e)) from None
    spec = FrontPanelSpec(port=t.get("port", str), baud=baud, pins=pins)
    ut.finish()
    t.finish()
    return spec


def parse_profile(data: dict[str, Any], file: str) -> BoardProfile:
    """Validate a parsed profile document."""
    top = _Table(file, "", data)
    board = top.table("board")
    name = board.get("name", str)
    driver = board.choice("driver", DRIVERS, "gpio")
    board.finish()
    timing = _timing(top)
    pins = _Pins()

    hook = None
    if "hook" in top.data:
        h = top.table("hook")
        hook = HookSpec(_pin(h, "pin", h.get("pin", (int, str))), h.get("active_low", bool, True))
        pins.claim(h, "pin", hook.pin)
        h.finish()
    else:
        top.used.add("hook")

    b = top.table("buttons")
    pull_up = b.get("pull_up", bool, True)
    bp = _Table(file, b.key("pins"), b.get("pins", dict, {}))
    buttons: dict[str, Pin] = {}
    for key, value in bp.data.items():
        bp.used.add(key)
        if key not in ALL_KEYS:
            raise bp.error(key, "is not a key name (see board/ports.py)")
        if key == HOOK:
            raise bp.error(key, "the hook switch has its own [hook] table")
        buttons[key] = _pin(bp, key, value)
        pins.claim(bp, key, buttons[key])
    b.finish()

    matrix = _matrix(top, pins)
    if matrix is not None:
        for row in matrix.layout:
            for key in row:
                if key in buttons:
                    raise ProfileError(file, f"buttons.pins.{key}", "is also in the [matrix]")

    lt = top.table("leds")
    active_high = lt.get("active_high", bool, True)
    leds: dict[str, Pin | None] = {}
    if driver == "sim":
        names = lt.get("names", list, sorted(LED_NAMES))
        for i, led in enumerate(names):
            if led not in LED_NAMES:
                raise lt.error(f"names[{i}]", f"{led!r} is not an LED name")
            leds[led] = None
    lp = _Table(file, lt.key("pins"), lt.get("pins", dict, {}))
    for led, value in lp.data.items():
        lp.used.add(led)
        if led not in LED_NAMES:
            raise lp.error(led, "is not an LED name (a function/line/soft key or MWI)")
        leds[led] = _pin(lp, led, value)
        pins.claim(lp, led, value)
    lt.finish()

    frontpanel = None
    if driver == "frontpanel":
        frontpanel = _frontpanel(top)
        if hook is not None or buttons or matrix is not None or lp.data:
            raise ProfileError(file, "board.driver", "a front-panel board has its keys, hook "
                                                     "and LEDs in [frontpanel], not on Pi pins")
        leds = {name: None for name in sorted(frontpanel.leds)}
    else:
        top.used.add("frontpanel")
        if "frontpanel" in top.data:
            raise ProfileError(file, "frontpanel", 'needs [board] driver = "frontpanel"')

    lcd = _lcd(top, driver)
    ringer = _ringer(top, pins, driver)

    at = top.table("audio")
    audio: dict[str, AudioDevices] = {}
    for path in AUDIO_PATHS:
        if path in at.data:
            dt = at.table(path)
            audio[path] = AudioDevices(dt.get("capture", str, "default"),
                                       dt.get("playback", str, "default"))
            dt.finish()
    at.finish()
    top.finish()
    if driver == "gpio" and (buttons or matrix) and hook is None:
        raise ProfileError(file, "hook", "a board with keys needs a hook switch ([hook] pin)")
    return BoardProfile(
        name=name, file=file, driver=driver, timing=timing, hook=hook, buttons=buttons,
        buttons_pull_up=pull_up, matrix=matrix, leds=leds, leds_active_high=active_high,
        lcd=lcd, ringer=ringer, audio=audio, frontpanel=frontpanel,
    )


def profile_path(name_or_path: str | Path, base: Path | None = None) -> Path:
    """A shipped profile's name ("sim", "pi-reference") or a file path (relative to `base`)."""
    text = str(name_or_path)
    shipped = PROFILE_DIR / f"{text}.toml"
    if "/" not in text and not text.endswith(".toml") and shipped.is_file():
        return shipped
    path = Path(text)
    return path if path.is_absolute() or base is None else base / path


def shipped_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.toml"))


def load_profile(name_or_path: str | Path, base: Path | None = None) -> BoardProfile:
    """Read and validate a board profile; raises ProfileError naming file and key."""
    path = profile_path(name_or_path, base)
    file = str(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ProfileError(file, "-", "no such board profile (shipped: "
                                      f"{', '.join(shipped_profiles())})") from None
    except OSError as e:
        raise ProfileError(file, "-", f"cannot read: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ProfileError(file, "-", f"not valid TOML: {e}") from None
    return parse_profile(data, file)
