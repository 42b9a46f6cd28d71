"""Test-side hardware: an HD44780 behind an I2C expander and the two serial LCD command sets.

These model the hardware from its data sheets (and a keypad's switches for gpiozero's mock pins), so the tests check the bytes the real
drivers (RPLCD, board/lcd_serial.py) put on the bus or the wire, not our own bookkeeping.
"""

from __future__ import annotations

from typing import Any

from gpiozero.pins.mock import MockFactory, MockPin

from board.charset import decode_a00

# PCF8574 backpack: D7..D4 on P7..P4, backlight P3, E P2, RW P1, RS P0.
# MCP23008 (Adafruit backpack): backlight GP7, D7..D4 on GP6..GP3, E GP2, RS GP1.
_MCP_GPIO_REGISTERS = {0x09, 0x12, 0x13}


class HD44780:
    """The controller: 8-bit mode after power-up until function set switches to 4 bits."""

    def __init__(self, cols: int, rows: int) -> None:
        self.cols, self.rows = cols, rows
        self.four_bit = False
        self._high: int | None = None
        self.ddram = bytearray(b" " * 0x80)
        self.cgram = bytearray(64)
        self.address = 0
        self.in_cgram = False
        self.increment = True
        self.display_on = False
        self.clears = 0

    def nibble(self, rs: bool, value: int) -> None:
        """One enable strobe with D7..D4 = value (falling edge latches)."""
        if not self.four_bit:
            self._byte(rs, value << 4)  # D3..D0 are not wired: read as 0
            return
        if self._high is None:
            self._high = value
            return
        byte, self._high = (self._high << 4) | value, None
        self._byte(rs, byte)

    def _byte(self, rs: bool, byte: int) -> None:
        if rs:
            if self.in_cgram:
                self.cgram[self.address & 0x3F] = byte & 0x1F
                self.address = (self.address + 1) & 0x3F
            else:
                self.ddram[self.address & 0x7F] = byte
                self.address = (self.address + (1 if self.increment else -1)) & 0x7F
            return
        if byte & 0x80:
            self.address, self.in_cgram = byte & 0x7F, False
        elif byte & 0x40:
            self.address, self.in_cgram = byte & 0x3F, True
        elif byte & 0x20:
            self.four_bit = not byte & 0x10
        elif byte & 0x08:
            self.display_on = bool(byte & 0x04)
        elif byte & 0x04:
            self.increment = bool(byte & 0x02)
        elif byte & 0x02:
            self.address, self.in_cgram = 0, False
        elif byte & 0x01:
            self.ddram[:] = b" " * 0x80
            self.address, self.in_cgram = 0, False
            self.clears += 1

    def codes(self) -> list[bytes]:
        offsets = (0x00, 0x40, self.cols, 0x40 + self.cols)
        return [bytes(self.ddram[offsets[r]:offsets[r] + self.cols]) for r in range(self.rows)]

    def screen(self) -> list[str]:
        """The visible text (custom characters as the charset's icon characters)."""
        return [decode_a00(row) for row in self.codes()]

    def glyph(self, slot: int) -> tuple[int, ...]:
        return tuple(self.cgram[slot * 8:slot * 8 + 8])


class FakeSMBus:
    """An smbus2.SMBus stand-in that feeds the expander's pin levels into an HD44780."""

    def __init__(self, lcd: HD44780, address: int = 0x27, expander: str = "PCF8574") -> None:
        self.lcd, self.address, self.expander = lcd, address, expander
        self._e = False
        self.backlight = False
        self.writes = 0
        self.closed = False

    def write_byte(self, addr: int, value: int) -> None:
        assert addr == self.address, f"write to I2C address {addr:#x}"
        assert self.expander == "PCF8574"
        self.backlight = bool(value & 0x08)
        self._pins(e=bool(value & 0x04), rs=bool(value & 0x01), data=value >> 4)

    def write_byte_data(self, addr: int, register: int, value: int) -> None:
        assert addr == self.address, f"write to I2C address {addr:#x}"
        self.writes += 1
        if register not in _MCP_GPIO_REGISTERS:
            return  # IODIR
        self.backlight = bool(value & 0x80)
        self._pins(e=bool(value & 0x04), rs=bool(value & 0x02), data=(value >> 3) & 0x0F)

    def _pins(self, e: bool, rs: bool, data: int) -> None:
        self.writes += 1
        if self._e and not e:
            self.lcd.nibble(rs, data)
        self._e = e

    def close(self) -> None:
        self.closed = True


class MatrixOrbitalScreen:
    """Decodes a Matrix Orbital byte stream into screen contents."""

    def __init__(self, cols: int, rows: int) -> None:
        self.cols, self.rows = cols, rows
        self.cells = [bytearray(b" " * cols) for _ in range(rows)]
        self.custom: dict[int, tuple[int, ...]] = {}
        self.row = self.col = 0
        self.clears = 0
        self._buf = bytearray()

    def feed(self, data: bytes) -> None:
        self._buf += data
        while self._buf:
            if self._buf[0] != 0xFE:
                if self.col < self.cols:
                    self.cells[self.row][self.col] = self._buf[0]
                self.col += 1
                del self._buf[0]
                continue
            if len(self._buf) < 2:
                return
            need = {ord("G"): 4, ord("N"): 11, ord("B"): 3}.get(self._buf[1], 2)
            if len(self._buf) < need:
                return
            cmd, args = self._buf[1], bytes(self._buf[2:need])
            del self._buf[:need]
            if cmd == ord("X"):
                self.cells = [bytearray(b" " * self.cols) for _ in range(self.rows)]
                self.row = self.col = 0
                self.clears += 1
            elif cmd == ord("G"):
                self.col, self.row = args[0] - 1, args[1] - 1
            elif cmd == ord("N"):
                self.custom[args[0]] = tuple(args[1:])
            elif cmd == ord("H"):
                self.row = self.col = 0

    def screen(self) -> list[str]:
        return [decode_a00(bytes(row)) for row in self.cells]


class SerLCDScreen:
    """Decodes a SparkFun SerLCD/OpenLCD byte stream into screen contents."""

    def __init__(self, cols: int, rows: int) -> None:
        self.cols, self.rows = cols, rows
        self.lcd = HD44780(cols, rows)
        self.lcd.four_bit = True  # only used for its DDRAM model
        self.custom: dict[int, tuple[int, ...]] = {}
        self.clears = 0
        self._buf = bytearray()

    def feed(self, data: bytes) -> None:
        self._buf += data
        while self._buf:
            first = self._buf[0]
            if first == 0xFE:
                if len(self._buf) < 2:
                    return
                self.lcd._byte(False, self._buf[1])
                del self._buf[:2]
            elif first == 0x7C:
                if len(self._buf) < 2:
                    return
                op = self._buf[1]
                if 27 <= op < 35:
                    if len(self._buf) < 10:
                        return
                    self.custom[op - 27] = tuple(self._buf[2:10])
                    del self._buf[:10]
                    continue
                if 35 <= op < 43:
                    self.lcd._byte(True, op - 35)
                elif op == ord("-"):
                    self.lcd._byte(False, 0x01)
                    self.clears += 1
                del self._buf[:2]
            else:
                self.lcd._byte(True, first)
                del self._buf[0]

    def screen(self) -> list[str]:
        return self.lcd.screen()


class KeyMatrixModel:
    """The switches of a row/column keypad on mock pins: a column reads low while a pressed
    key connects it to a row pin that is an output driven low (the scanner's active row)."""

    def __init__(self, factory: MockFactory, rows: list[Any], cols: list[Any]) -> None:
        self.factory, self.rows, self.cols = factory, rows, cols
        self.pressed: set[tuple[int, int]] = set()
        factory.keypad_model = self  # type: ignore[attr-defined]

    def update(self) -> None:
        for c, col in enumerate(self.cols):
            pin = self.factory.pin(col)
            if pin.function != "input":
                continue
            low = any(
                (r, c) in self.pressed and self.factory.pin(row).function == "output"
                and not self.factory.pin(row).state
                for r, row in enumerate(self.rows)
            )
            pin.drive_low() if low else pin.drive_high()


class SwitchPin(MockPin):
    """A mock pin wired to switches: re-evaluates the factory's keypad model when a row pin
    changes, and stays low whatever its pull while in the factory's `held_low` set (a closed
    switch to ground, e.g. the handset already lifted at power-up)."""

    def _model(self) -> KeyMatrixModel | None:
        return getattr(self._factory, "keypad_model", None)

    def _set_state(self, value: Any) -> None:
        super()._set_state(value)
        if (model := self._model()) is not None:
            model.update()

    def _set_pull(self, value: str) -> None:
        super()._set_pull(value)
        if self.info.name in getattr(self._factory, "held_low", ()):
            self.drive_low()

    def _set_function(self, value: str) -> None:
        super()._set_function(value)
        if (model := self._model()) is not None:
            model.update()


def switch_factory() -> MockFactory:
    """A MockFactory whose pins are `SwitchPin`s (set `.held_low` / build a KeyMatrixModel)."""
    factory = MockFactory(pin_class=SwitchPin)
    factory.held_low = set()  # type: ignore[attr-defined]
    return factory
