"""Serial character LCDs over pyserial: Matrix Orbital and SparkFun SerLCD (OpenLCD) command sets.

Both are HD44780-style panels with their own controller, so text uses the same A00 mapping as
board/charset and the icons go into the 8 custom characters. The two command sets differ:

- Matrix Orbital (LK/LCD series): prefix 0xFE; 'X' clear, 'G' col row (1-based) go to,
  'N' n b0..b7 define custom character n, 'D' line wrap off, 'R' auto scroll off,
  'B' minutes backlight on. Custom character n is printed as byte n.
- SparkFun SerLCD / OpenLCD: 0x7C ('|') starts a setting command, 0xFE passes one HD44780
  instruction through. 0x7C '-' clears, 0xFE 0x80|addr sets the cursor (HD44780 DDRAM address),
  0x7C 27+n b0..b7 defines custom character n and 0x7C 35+n prints it.

Text bytes that would be read as a command prefix (0x7C, 0xFE) are replaced by "?".
Each `show()` rewrites only changed rows: position, then the row's characters.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from board.charset import CGRAM_SLOT, GLYPHS, encode_a00, fit

log = logging.getLogger(__name__)
Protocol = Literal["matrix_orbital", "serlcd"]
PROTOCOLS: tuple[Protocol, ...] = ("matrix_orbital", "serlcd")
MO_PREFIX = 0xFE
SERLCD_SETTING = 0x7C
SERLCD_HD44780 = 0xFE
_QUESTION = ord("?")


def _row_address(row: int, cols: int) -> int:
    """HD44780 DDRAM address of a row's first cell (rows 2/3 continue rows 0/1)."""
    return (0x00, 0x40, cols, 0x40 + cols)[row]


class SerialLCD:
    """A Display on a serial port (`port` is a device path, or an open pyserial-like object)."""

    def __init__(
        self,
        protocol: Protocol,
        cols: int = 16,
        rows: int = 2,
        port: str | Any = "/dev/ttyUSB0",
        baud: int = 9600,
    ) -> None:
        if protocol not in PROTOCOLS:
            raise ValueError(f"unknown serial LCD protocol {protocol!r} (expected {PROTOCOLS})")
        if isinstance(port, str):
            import serial  # pyserial

            self._serial: Any = serial.Serial(port, baudrate=baud, timeout=1, write_timeout=2)
        else:
            self._serial = port
        self.protocol = protocol
        self._cols, self._rows = cols, rows
        self._shown: list[bytes | None] = [None] * rows
        self._write(self._setup())

    @property
    def size(self) -> tuple[int, int]:
        return self._cols, self._rows

    def _setup(self) -> bytes:
        out = bytearray()
        if self.protocol == "matrix_orbital":
            out += bytes([MO_PREFIX, ord("D"), MO_PREFIX, ord("R"), MO_PREFIX, ord("B"), 0])
            for name, bitmap in GLYPHS.items():
                out += bytes([MO_PREFIX, ord("N"), CGRAM_SLOT[name], *bitmap])
            out += bytes([MO_PREFIX, ord("X")])
        else:
            for name, bitmap in GLYPHS.items():
                out += bytes([SERLCD_SETTING, 27 + CGRAM_SLOT[name], *bitmap])
            out += bytes([SERLCD_SETTING, ord("-")])
        return bytes(out)

    def _row_bytes(self, row: int, codes: bytes) -> bytes:
        out = bytearray()
        if self.protocol == "matrix_orbital":
            out += bytes([MO_PREFIX, ord("G"), 1, row + 1])
            for code in codes:
                out.append(_QUESTION if code == MO_PREFIX else code)
        else:
            out += bytes([SERLCD_HD44780, 0x80 | _row_address(row, self._cols)])
            for code in codes:
                if code < len(GLYPHS):
                    out += bytes([SERLCD_SETTING, 35 + code])
                elif code in (SERLCD_SETTING, SERLCD_HD44780):
                    out.append(_QUESTION)
                else:
                    out.append(code)
        return bytes(out)

    def show(self, lines: list[str]) -> None:
        out = bytearray()
        for row, line in enumerate(fit(lines, self._cols, self._rows)):
            codes = encode_a00(line)
            if codes != self._shown[row]:
                out += self._row_bytes(row, codes)
                self._shown[row] = codes
        if out:
            self._write(bytes(out))

    def _write(self, data: bytes) -> None:
        self._serial.write(data)
        self._serial.flush()

    def close(self) -> None:
        self._serial.close()
