"""HD44780 character LCD behind an I2C port expander (PCF8574 / MCP23008 / MCP23017), via RPLCD.

RPLCD does the controller protocol (4-bit init, nibbles, enable pulses, CGRAM); we add what a
phone needs: icon glyphs in CGRAM at start, whole-screen `show()` fitted to the panel with the
A00 mapping from board/charset (so the simulator and the LCD agree), and an injectable bus
(an `smbus2.SMBus` on a Pi, a fake that decodes the nibbles in tests).

RPLCD's waits are real sleeps (~0.5 ms per changed character); the runtime therefore calls
`show()` off the event loop (firmware/runtime/board_io.py).
"""

from __future__ import annotations

import logging
from typing import Any

from RPLCD import i2c as rplcd_i2c

from board.charset import CGRAM_SLOT, GLYPHS, encode_a00, fit

log = logging.getLogger(__name__)
EXPANDERS = ("PCF8574", "MCP23008", "MCP23017")


class _CharLCD(rplcd_i2c.CharLCD):  # type: ignore[misc]
    """RPLCD's I2C driver on a bus we provide instead of one it opens itself."""

    def __init__(self, bus: Any, **kwargs: Any) -> None:
        self._given_bus = bus
        super().__init__(**kwargs)

    def _init_connection(self) -> None:
        # RPLCD's own version opens SMBus(port); the rest mirrors it for the MCP expanders.
        self.bus = self._given_bus
        if self._i2c_expander == "PCF8574":
            return
        self._mcp_data = 0
        if self._i2c_expander == "MCP23008":
            iodir, self._mcp_gpio = rplcd_i2c.MCP23008_IODIR, rplcd_i2c.MCP23008_GPIO
        elif self._expander_params["gpio_bank"] == "A":
            iodir, self._mcp_gpio = rplcd_i2c.MCP23017_IODIRA, rplcd_i2c.MCP23017_GPIOA
        else:
            iodir, self._mcp_gpio = rplcd_i2c.MCP23017_IODIRB, rplcd_i2c.MCP23017_GPIOB
        self.bus.write_byte_data(self._address, iodir, 0x00)


class HD44780Display:
    """A Display: 16x2, 20x4 (any cols x rows) HD44780 on I2C."""

    def __init__(
        self,
        cols: int = 20,
        rows: int = 4,
        address: int = 0x27,
        expander: str = "PCF8574",
        port: int = 1,
        gpio_bank: str = "A",
        bus: Any = None,
    ) -> None:
        if expander not in EXPANDERS:
            raise ValueError(f"unknown I2C expander {expander!r} (expected one of {EXPANDERS})")
        if bus is None:
            from smbus2 import SMBus  # only on real hardware; tests pass a fake bus

            bus = SMBus(port)
        self._bus = bus
        self._cols, self._rows = cols, rows
        params = {"gpio_bank": gpio_bank} if expander == "MCP23017" else None
        self._lcd = _CharLCD(
            bus, i2c_expander=expander, address=address, expander_params=params, port=port,
            cols=cols, rows=rows, charmap="A00", auto_linebreaks=False,
        )
        for name, bitmap in GLYPHS.items():
            self._lcd.create_char(CGRAM_SLOT[name], bitmap)
        self._shown: list[bytes] = [b" " * cols] * rows

    @property
    def size(self) -> tuple[int, int]:
        return self._cols, self._rows

    def show(self, lines: list[str]) -> None:
        """Rewrite only the changed span of each row: the I2C bus is slow (~0.5 ms a cell)."""
        for row, line in enumerate(fit(lines, self._cols, self._rows)):
            codes = encode_a00(line)
            if codes == self._shown[row]:
                continue
            old = self._shown[row]
            first = next(i for i in range(self._cols) if codes[i] != old[i])
            last = max(i for i in range(self._cols) if codes[i] != old[i])
            self._lcd.cursor_pos = (row, first)
            for code in codes[first:last + 1]:
                self._lcd.write(code)
            self._shown[row] = codes

    def close(self) -> None:
        try:
            self._lcd.close(clear=True)
        finally:
            close = getattr(self._bus, "close", None)
            if close is not None:
                close()
