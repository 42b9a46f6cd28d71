"""The front panel's pin map: validated on the Pi, rendered into the panel's panel_config.py.

A board profile that selects a front panel describes its matrix (row and column GPIOs of the
microcontroller, which key sits where), the hook switch and the LEDs. Validation happens here,
before flashing, so a wrong key name is an error naming the key instead of a panel that silently
never reports it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from board.ports import ALL_KEYS, LED_NAMES


class PanelConfigError(ValueError):
    """A front-panel pin map that cannot work; the message names the bad entry."""


@dataclass(frozen=True)
class PanelPins:
    rows: tuple[int, ...]
    cols: tuple[int, ...]
    keymap: dict[tuple[int, int], str]  # (row, col) -> key name
    leds: dict[str, int] = field(default_factory=dict)  # LED name -> GPIO
    hook: int | None = None  # GPIO of the hook switch (closed = off hook)
    uart_id: int = 0
    tx: int = 0
    rx: int = 1
    baud: int = 115200
    debounce_ms: int = 20

    def validate(self) -> None:
        for (row, col), name in self.keymap.items():
            if name not in ALL_KEYS or name == "HOOK":
                raise PanelConfigError(f"keymap: {name!r} at row {row} col {col} is not a phone key")
            if not (0 <= row < len(self.rows) and 0 <= col < len(self.cols)):
                raise PanelConfigError(f"keymap: {name} at row {row} col {col} is outside the matrix")
        names = list(self.keymap.values())
        for name in names:
            if names.count(name) > 1:
                raise PanelConfigError(f"keymap: {name} is on more than one position")
        for name in self.leds:
            if name not in LED_NAMES:
                raise PanelConfigError(f"leds: {name!r} is not a phone LED")
        pins = list(self.rows) + list(self.cols) + list(self.leds.values()) + [self.tx, self.rx]
        pins += [self.hook] if self.hook is not None else []
        for pin in pins:
            if pins.count(pin) > 1:
                raise PanelConfigError(f"GPIO {pin} is used twice")
        if not 1 <= self.debounce_ms <= 200:
            raise PanelConfigError("debounce_ms must be between 1 and 200")


def render_panel_config(pins: PanelPins) -> str:
    """panel_config.py for the panel: plain literals only, read by main.py at boot."""
    pins.validate()
    keymap = ", ".join(f"({r}, {c}): {name!r}" for (r, c), name in sorted(pins.keymap.items()))
    leds = ", ".join(f"{name!r}: {gpio}" for name, gpio in sorted(pins.leds.items()))
    return (
        "# Written by deskphone-flash from the board profile; do not edit on the panel.\n"
        f"UART_ID = {pins.uart_id}\nTX = {pins.tx}\nRX = {pins.rx}\nBAUD = {pins.baud}\n"
        f"ROWS = {list(pins.rows)!r}\nCOLS = {list(pins.cols)!r}\n"
        f"HOOK = {pins.hook!r}\nDEBOUNCE_MS = {pins.debounce_ms}\n"
        f"KEYMAP = {{{keymap}}}\nLEDS = {{{leds}}}\n"
    )
