"""Build a board from its profile: the one place that knows which adapter implements which part.

Each part type is a registered builder (KEYPADS, DISPLAYS, RINGERS), so a new LCD or a serial
front panel is one more entry, not another branch in the runtime.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from board.ports import Clock, Display, Indicator, Keypad, Ringer
from board.profile import BoardProfile
from board.sim import NoDisplay, NoRinger, SimDisplay, SimIndicator, SimKeypad, SimRinger

log = logging.getLogger(__name__)


class BoardError(OSError):
    """A part of the board could not be opened (missing /dev/i2c-1, serial port, GPIO access).

    An OSError so that `deskphone run` reports it in one line like other device errors.
    """


@dataclass
class Board:
    """One phone's hardware, behind the ports."""

    profile: BoardProfile
    keypad: Keypad
    display: Display
    indicator: Indicator
    ringer: Ringer

    def close(self) -> None:
        """Close every part; one failing part does not keep the others open."""
        for part in (self.keypad, self.display, self.indicator, self.ringer):
            try:
                part.close()
            except Exception:  # noqa: BLE001 - closing hardware must not stop the shutdown
                log.exception("closing %s failed", type(part).__name__)


@dataclass(frozen=True)
class Wiring:
    """What the builders may need besides the profile (injected in tests)."""

    clock: Clock
    pin_factory: Any = None  # gpiozero pin factory (MockFactory in tests); None = gpiozero's
    i2c_bus: Any = None  # an smbus2.SMBus-like object; None = open /dev/i2c-<port>
    serial_port: Any = None  # an open pyserial-like port; None = open the profile's port


def _gpio_keypad(p: BoardProfile, w: Wiring) -> Keypad:
    from board.gpio import GpioKeypad

    return GpioKeypad(p, w.clock, w.pin_factory)


def _front_panel(p: BoardProfile, w: Wiring) -> Keypad:
    from board.panel_serial import SerialPanel

    assert p.frontpanel is not None  # the profile requires [frontpanel] for this driver
    return SerialPanel(p.frontpanel.port, p.frontpanel.leds, baudrate=p.frontpanel.baud,
                       clock=w.clock.now)


def _hd44780(p: BoardProfile, w: Wiring) -> Display:
    from board.lcd_hd44780 import HD44780Display

    lcd = p.lcd
    return HD44780Display(lcd.cols, lcd.rows, lcd.address, lcd.expander, lcd.i2c_port,
                          lcd.gpio_bank, bus=w.i2c_bus)


def _serial_lcd(p: BoardProfile, w: Wiring) -> Display:
    from board.lcd_serial import SerialLCD

    lcd = p.lcd
    port = w.serial_port if w.serial_port is not None else lcd.port
    return SerialLCD(lcd.protocol, lcd.cols, lcd.rows, port, lcd.baud)  # type: ignore[arg-type]


def _buzzer(p: BoardProfile, w: Wiring) -> Ringer:
    from board.gpio import BuzzerRinger

    assert p.ringer.pin is not None  # the profile requires it
    return BuzzerRinger(p.ringer.pin, p.ringer.active_high, w.pin_factory)


def _sound(p: BoardProfile, w: Wiring) -> Ringer:
    from board.ringer_sound import SoundRinger

    return SoundRinger(p.ringer.device)


KEYPADS: dict[str, Callable[[BoardProfile, Wiring], Keypad]] = {
    "gpio": _gpio_keypad,
    "sim": lambda p, w: SimKeypad(w.clock),
    "frontpanel": _front_panel,
}
DISPLAYS: dict[str, Callable[[BoardProfile, Wiring], Display]] = {
    "hd44780": _hd44780,
    "serial": _serial_lcd,
    "sim": lambda p, w: SimDisplay(p.lcd.cols, p.lcd.rows),
    "none": lambda p, w: NoDisplay(),
}
RINGERS: dict[str, Callable[[BoardProfile, Wiring], Ringer]] = {
    "buzzer": _buzzer,
    "sound": _sound,
    "sim": lambda p, w: SimRinger(),
    "none": lambda p, w: NoRinger(),
}


def _indicator(p: BoardProfile, w: Wiring) -> Indicator:
    simulated = frozenset(name for name, pin in p.leds.items() if pin is None)
    if simulated or p.driver == "sim":
        return SimIndicator(frozenset(p.leds))
    from board.gpio import GpioIndicator

    pins = {name: pin for name, pin in p.leds.items() if pin is not None}
    return GpioIndicator(pins, p.leds_active_high, w.pin_factory)


def build_board(
    profile: BoardProfile,
    clock: Clock,
    pin_factory: Any = None,
    *,
    i2c_bus: Any = None,
    serial_port: Any = None,
) -> Board:
    """Create every part of the board the profile describes (nothing is started yet)."""
    wiring = Wiring(clock, pin_factory, i2c_bus, serial_port)
    parts: list[Any] = []
    what = "keypad"
    try:
        keypad = KEYPADS[profile.driver](profile, wiring)
        parts.append(keypad)
        what = f"LCD ({profile.lcd.type})"
        display = DISPLAYS[profile.lcd.type](profile, wiring)
        parts.append(display)
        what = "LEDs"
        # A front panel is one serial device for both keys and LEDs.
        indicator = (cast(Indicator, keypad) if profile.driver == "frontpanel"
                     else _indicator(profile, wiring))
        parts.append(indicator)
        what = f"ringer ({profile.ringer.type})"
        ringer = RINGERS[profile.ringer.type](profile, wiring)
    except Exception as e:
        for part in reversed(parts):
            try:
                part.close()
            except Exception:  # noqa: BLE001
                log.exception("closing %s after a failed start failed", type(part).__name__)
        raise BoardError(f"board profile {profile.file}: cannot open the {what}: {e}") from e
    return Board(profile, keypad, display, indicator, ringer)
