"""LCDs: text asserted by decoding the HD44780 nibbles RPLCD writes to a fake SMBus, and the
serial LCD byte streams (Matrix Orbital, SparkFun SerLCD) read back over a real pty."""

from __future__ import annotations

import os
import select
import time
from collections.abc import Iterator

import pytest

from board.charset import GLYPHS, ICONS, decode_a00, displayable, encode_a00, fit, plain, scroll
from board.lcd_hd44780 import HD44780Display
from board.lcd_serial import SerialLCD
from tests.unit.board_fakes import HD44780, FakeSMBus, MatrixOrbitalScreen, SerLCDScreen

LOCK, HOLD, MUTE = ICONS["lock"], ICONS["hold"], ICONS["mute"]


# --- charset -------------------------------------------------------------------------------

def test_a00_mapping_keeps_one_cell_per_character() -> None:
    text = f"José Müller {LOCK}ñ€"
    codes = encode_a00(text)
    assert len(codes) == len(text)
    assert codes[:4] == b"Jose"  # no é in ROM A00: base letter
    assert codes[6] == 0xF5  # ü is in the ROM
    assert codes[12] == 0  # lock icon -> CGRAM slot 0
    assert codes[-1] == ord("?")  # no euro sign, no base letter
    assert decode_a00(codes) == f"Jose Müller {LOCK}ñ?"
    assert displayable("Café") == "Cafe"


def test_fit_and_plain() -> None:
    assert fit(["Reception 10:42 extra", f"{HOLD} 1002"], 16, 3) == [
        "Reception 10:42 ", f"{HOLD} 1002".ljust(16), " " * 16]
    assert plain(f"{LOCK} Bob {MUTE}") == "▣ Bob ∅"
    assert len(plain("".join(ICONS.values()))) == len(ICONS)


def test_scroll_holds_moves_and_restarts_at_exact_times() -> None:
    text = "Alexandra Konstantinopoulos"  # 27 chars on 16 columns: 11 shifts
    assert scroll("Bob", 16, 99.0) == ("Bob".ljust(16), None)
    assert scroll(text, 16, 0.0) == (text[:16], pytest.approx(1.2))
    assert scroll(text, 16, 1.2) == (text[1:17], pytest.approx(0.4))
    assert scroll(text, 16, 1.7) == (text[2:18], pytest.approx(0.3))
    end = 1.2 + 10 * 0.4  # 11th shift reached at 5.2
    assert scroll(text, 16, end) == (text[11:], pytest.approx(1.2))
    assert scroll(text, 16, end + 1.2) == (text[:16], pytest.approx(1.2))  # starts over


# --- HD44780 over I2C through RPLCD --------------------------------------------------------

def test_pcf8574_20x4_shows_text_and_icons() -> None:
    lcd = HD44780(20, 4)
    bus = FakeSMBus(lcd, address=0x27)
    display = HD44780Display(cols=20, rows=4, address=0x27, bus=bus)
    assert display.size == (20, 4)
    assert lcd.four_bit and lcd.display_on and bus.backlight
    for slot, bitmap in enumerate(GLYPHS.values()):
        assert lcd.glyph(slot) == bitmap
    display.show(["Reception      10:42", f"{LOCK} Müller 00:12", "a much too long line for 20"])
    assert lcd.screen() == ["Reception      10:42", f"{LOCK} Müller 00:12".ljust(20),
                            "a much too long line", " " * 20]
    assert lcd.codes()[1][0] == 0  # the icon is CGRAM slot 0 on the glass


def test_show_rewrites_only_what_changed() -> None:
    lcd = HD44780(16, 2)
    bus = FakeSMBus(lcd, address=0x3F)
    display = HD44780Display(cols=16, rows=2, address=0x3F, bus=bus)
    display.show(["Line one", "Line two"])
    before = bus.writes
    display.show(["Line one", "Line twp"])
    assert lcd.screen() == ["Line one".ljust(16), "Line twp".ljust(16)]
    # one DDRAM address + one character; PCF8574: 2 nibbles a byte, 4 bus writes a nibble
    assert bus.writes - before == 2 * 2 * 4
    before = bus.writes
    display.show(["Line one", "Line twp"])
    assert bus.writes == before
    display.close()
    assert lcd.screen() == [" " * 16] * 2 and bus.closed


def test_mcp23008_backpack() -> None:
    lcd = HD44780(16, 2)
    bus = FakeSMBus(lcd, address=0x20, expander="MCP23008")
    display = HD44780Display(cols=16, rows=2, address=0x20, expander="MCP23008", bus=bus)
    display.show([f"{HOLD} On hold", "Bob"])
    assert lcd.screen() == [f"{HOLD} On hold".ljust(16), "Bob".ljust(16)]
    assert bus.backlight


def test_unknown_expander_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown I2C expander 'PCF9999'"):
        HD44780Display(expander="PCF9999", bus=FakeSMBus(HD44780(16, 2)))


# --- serial LCDs over a pty ----------------------------------------------------------------

@pytest.fixture
def pty() -> Iterator[tuple[int, str]]:
    master, slave = os.openpty()
    name = os.ttyname(slave)
    yield master, name
    os.close(master)
    os.close(slave)


def _read_until(master: int, screen: MatrixOrbitalScreen | SerLCDScreen,
                expected: list[str]) -> None:
    """Feed what arrives on the pty to the decoder until it shows `expected` (bounded)."""
    deadline = time.monotonic() + 5.0
    while screen.screen() != expected:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"LCD shows {screen.screen()!r}, expected {expected!r}"
        ready, _, _ = select.select([master], [], [], remaining)
        if ready:
            screen.feed(os.read(master, 4096))


@pytest.mark.parametrize("protocol,decoder", [("matrix_orbital", MatrixOrbitalScreen),
                                              ("serlcd", SerLCDScreen)])
def test_serial_lcd_byte_stream_over_a_pty(
    pty: tuple[int, str], protocol: str, decoder: type[MatrixOrbitalScreen | SerLCDScreen]
) -> None:
    master, name = pty
    screen = decoder(20, 4)
    lcd = SerialLCD(protocol, cols=20, rows=4, port=name, baud=19200)  # type: ignore[arg-type]
    try:
        assert lcd.size == (20, 4)
        lcd.show(["Reception      10:42", f"{LOCK} Anna {MUTE}", "", "Hold  Xfer  Conf"])
        _read_until(master, screen, ["Reception      10:42", f"{LOCK} Anna {MUTE}".ljust(20),
                                     " " * 20, "Hold  Xfer  Conf".ljust(20)])
        assert screen.clears == 1
        assert screen.custom == {slot: bm for slot, bm in enumerate(GLYPHS.values())}
        lcd.show(["Reception      10:43", "a|b", "", "Hold  Xfer  Conf"])
        _read_until(master, screen, ["Reception      10:43",
                                     ("a|b" if protocol == "matrix_orbital" else "a?b").ljust(20),
                                     " " * 20, "Hold  Xfer  Conf".ljust(20)])
    finally:
        lcd.close()


def test_unknown_serial_protocol_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown serial LCD protocol 'hitachi'"):
        SerialLCD("hitachi", port=object())  # type: ignore[arg-type]


def test_untrusted_text_cannot_forge_icons_or_commands() -> None:
    from board.charset import untrusted

    forged = f"{LOCK} Bank\x00\x1b[2J\u202e\ue123 Ltd"
    safe = untrusted(forged)
    assert safe == "? Bank??[2J?? Ltd"
    assert LOCK not in safe and all(b >= 0x20 for b in encode_a00(safe))
    assert untrusted("Müller, Anna") == "Müller, Anna"
