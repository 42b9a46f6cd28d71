"""What a character LCD can show: HD44780 ROM A00 mapping, icon glyphs in CGRAM, scrolling.

Sans-IO and shared by every display adapter and the simulated board, so the simulator shows
exactly what the hardware would.

- Icons: the UI puts one of the `ICONS` characters (Unicode private-use code points) into its
  text. On an HD44780 (and the serial LCDs, which are HD44780-like) each becomes a custom glyph
  loaded into CGRAM slot 0..7 (`GLYPHS`); in plain text (status JSON, terminal) it becomes a
  one-column look-alike (`ICON_PLAIN`), so line widths stay the same everywhere.
- Text: each character maps to one A00 ROM code via RPLCD's A00 table (a well-kept table of
  the Hitachi ROM, including the few accented letters it has); a character the ROM lacks falls
  back to its unaccented base letter (NFKD), then to "?". One character in = one cell out.
- Scrolling: `scroll()` gives the visible window of a long text at a time offset and when it
  next changes, so the UI (or the board runtime) can re-arm one timer, no thread.
"""

from __future__ import annotations

import unicodedata
from functools import cache

from RPLCD.codecs import hd44780_a00

# Icon characters the UI may use in LCD text (private-use code points, one LCD cell each).
ICONS: dict[str, str] = {
    "lock": "\ue000",  # SRTP call
    "hold": "\ue001",
    "mute": "\ue002",
    "mail": "\ue003",  # message waiting
    "handset": "\ue004",
    "speaker": "\ue005",
    "headset": "\ue006",
    "dnd": "\ue007",
}
ICON_PLAIN: dict[str, str] = {
    "lock": "▣", "hold": "‖", "mute": "∅", "mail": "✉",
    "handset": "☎", "speaker": "◄", "headset": "Ω", "dnd": "⊘",
}
# 5x8 bitmaps, one int per pixel row (bit 4 = leftmost column); CGRAM slot = position here.
GLYPHS: dict[str, tuple[int, ...]] = {
    "lock": (0b01110, 0b10001, 0b10001, 0b11111, 0b11011, 0b11011, 0b11111, 0b00000),
    "hold": (0b00000, 0b11011, 0b11011, 0b11011, 0b11011, 0b11011, 0b11011, 0b00000),
    "mute": (0b00001, 0b00011, 0b11111, 0b11111, 0b11111, 0b00011, 0b00001, 0b11111),
    "mail": (0b00000, 0b11111, 0b11011, 0b10101, 0b10001, 0b10001, 0b11111, 0b00000),
    "handset": (0b11000, 0b11000, 0b10000, 0b10000, 0b10000, 0b10011, 0b01111, 0b00000),
    "speaker": (0b00001, 0b00011, 0b01111, 0b01111, 0b01111, 0b00011, 0b00001, 0b00000),
    "headset": (0b01110, 0b10001, 0b10001, 0b10001, 0b11011, 0b11011, 0b00000, 0b00000),
    "dnd": (0b00000, 0b01110, 0b10001, 0b11111, 0b10001, 0b01110, 0b00000, 0b00000),
}
CGRAM_SLOT: dict[str, int] = {name: slot for slot, name in enumerate(GLYPHS)}
_ICON_BY_CHAR = {char: name for name, char in ICONS.items()}
FALLBACK = "?"


@cache
def _rom_to_char() -> dict[int, str]:
    """The inverse ROM table (the first, i.e. canonical, character of each code)."""
    inverse: dict[int, str] = {}
    for char, code in hd44780_a00.encoding_table.items():
        if code >= 0x10:  # 0x00-0x07 are CGRAM, not text
            inverse.setdefault(code, char)
    return inverse


def _char_code(char: str) -> int:
    table = hd44780_a00.encoding_table
    if char in _ICON_BY_CHAR:
        return CGRAM_SLOT[_ICON_BY_CHAR[char]]
    code = table.get(char)
    if code is not None and code >= 0x10:
        return code
    base = unicodedata.normalize("NFKD", char)[:1]
    code = table.get(base)
    if code is not None and code >= 0x10:
        return code
    return table[FALLBACK]


def encode_a00(text: str) -> bytes:
    """One HD44780 A00 ROM code per character (icons -> their CGRAM slot 0..7)."""
    return bytes(_char_code(c) for c in text)


def decode_a00(data: bytes) -> str:
    """What the codes look like as text (CGRAM slots -> the icon characters)."""
    names = list(GLYPHS)
    rom = _rom_to_char()
    return "".join(
        ICONS[names[b]] if b < len(names) else rom.get(b, FALLBACK) for b in data
    )


def displayable(text: str) -> str:
    """The text as an A00 LCD shows it (unknown characters replaced, icons kept)."""
    return decode_a00(encode_a00(text))


def plain(text: str) -> str:
    """Icons replaced by one-column look-alikes, for status JSON and terminals."""
    return "".join(ICON_PLAIN[_ICON_BY_CHAR[c]] if c in _ICON_BY_CHAR else c for c in text)


def untrusted(text: str) -> str:
    """Text from the network (caller names, URIs) made safe for the LCD.

    Icon characters and other private-use or control characters become "?", so a caller
    cannot put a fake lock (SRTP) or hold glyph on the screen, and nothing in it can act as a
    display command. The UI passes every remote-supplied string through this.
    """
    out = []
    for c in text:
        category = unicodedata.category(c)
        out.append("?" if c in _ICON_BY_CHAR or category in ("Co", "Cc", "Cf", "Cs") else c)
    return "".join(out)


def fit(lines: list[str], cols: int, rows: int) -> list[str]:
    """Exactly `rows` lines of exactly `cols` displayable characters (cut or space-padded)."""
    out = [displayable(line.replace("\n", " ").replace("\r", " "))[:cols].ljust(cols)
           for line in lines[:rows]]
    return out + [" " * cols] * (rows - len(out))


def scroll(
    text: str, width: int, elapsed: float, step: float = 0.4, pause: float = 1.2
) -> tuple[str, float | None]:
    """The `width`-column window of `text` `elapsed` seconds after it was first shown.

    A text that fits is returned padded, with None (never changes). A longer one holds at the
    start for `pause`, moves one column every `step` until its end is visible, holds for
    `pause`, and starts over. Returns (window, seconds until the window next changes).
    """
    if len(text) <= width:
        return text.ljust(width), None
    shifts = len(text) - width
    cycle = 2 * pause + (shifts - 1) * step
    t = elapsed % cycle
    if t < pause:
        offset, wait = 0, pause - t
    elif t < pause + (shifts - 1) * step:
        k = int((t - pause) / step + 1e-9)
        offset, wait = 1 + k, pause + (k + 1) * step - t
    else:
        offset, wait = shifts, cycle - t
    return text[offset:offset + width], max(wait, 1e-9)
