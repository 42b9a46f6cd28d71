"""firmware/runtime/board_io: the board on a real event loop - edges from gpiozero's thread,
one timer for debounce/LED flashing/ring cadence, matrix scanning, LCD writes off the loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import pytest
from gpiozero.pins.mock import MockFactory

from board.charset import ICONS
from board.ports import KeyEvent
from board.sim import SimDisplay, SimIndicator, SimKeypad, SimRinger
from firmware.runtime.board_io import BoardIO, open_board
from firmware.sip.clock import ManualClock
from tests.unit.board_fakes import HD44780, FakeSMBus, KeyMatrixModel, switch_factory


async def until(check: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    f = switch_factory()
    yield f
    f.close()


async def test_sim_board_keys_screen_leds_ringer() -> None:
    events: list[KeyEvent] = []
    io = open_board("sim", events.append)
    await io.start()
    try:
        assert io.size == (20, 4)
        pad = io.board.keypad
        assert isinstance(pad, SimKeypad)
        t0 = time.monotonic()
        pad.hook(True)
        pad.press("DIGIT_7")
        pad.release("DIGIT_7")  # a 0 ms tap is a glitch, not a key press
        pad.press("DIGIT_8")
        await until(lambda: len(events) == 2)
        assert [(e.key, e.kind) for e in events] == [("DIGIT_8", "press"), ("HOOK", "press")]
        assert events[1].at - t0 >= 0.05  # the hook's debounce
        pad.release("DIGIT_8")
        await until(lambda: len(events) == 3)
        assert events[2].kind == "release"

        io.show(["Reception      10:42", f"{ICONS['lock']} Anna"])
        display = io.board.display
        assert isinstance(display, SimDisplay)
        assert display.text()[1] == "▣ Anna".ljust(20)
        io.led("MWI", "on")
        io.led("LINE_1", "fast_flash")
        io.led("LINE_16", "on")  # not on this board: remembered, not driven
        io.ring(True)
        st = io.status()
        assert st["lcd"][:2] == ["Reception      10:42", "▣ Anna".ljust(20)]
        assert st["leds"]["MWI"] == "on" and st["leds"]["LINE_1"] == "fast_flash"
        assert "LINE_16" not in st["leds"] and st["ringing"] is True
        leds = io.board.indicator
        assert isinstance(leds, SimIndicator)
        await until(lambda: leds.history.count(("LINE_1", True)) >= 2)  # flashing on its own
        ringer = io.board.ringer
        assert isinstance(ringer, SimRinger) and ringer.history == [True]
        io.ring(False)
        assert ringer.history == [True, False] and io.status()["ringing"] is False
    finally:
        await io.close()


async def test_pi_board_hook_matrix_leds_lcd_on_mock_pins(factory: MockFactory) -> None:
    lcd = HD44780(20, 4)
    events: list[KeyEvent] = []
    io = open_board("pi-reference", events.append, pin_factory=factory,
                    i2c_bus=FakeSMBus(lcd, 0x27))
    prof = io.board.profile
    assert prof.matrix is not None
    model = KeyMatrixModel(factory, list(prof.matrix.rows), list(prof.matrix.cols))
    await io.start()
    try:
        # lift the handset from another thread, as gpiozero's callback thread would
        await asyncio.to_thread(factory.pin(17).drive_low)
        await until(lambda: [(e.key, e.kind) for e in events] == [("HOOK", "press")])
        # press 5 on the matrix: found by the periodic scan, then debounced
        model.pressed.add((1, 1))
        await until(lambda: ("DIGIT_5", "press") in [(e.key, e.kind) for e in events])
        model.pressed.clear()
        await until(lambda: ("DIGIT_5", "release") in [(e.key, e.kind) for e in events])

        io.show(["Dialing", "5"])
        await until(lambda: lcd.screen()[:2] == ["Dialing".ljust(20), "5".ljust(20)])
        for n in range(6):  # faster than the glass: the last screen wins
            io.show(["Dialing", "5" + "0" * n])
        await until(lambda: lcd.screen()[1] == "500000".ljust(20))

        io.led("LINE_1", "fast_flash")
        line1 = factory.pin(23)
        line1.clear_states()
        await until(lambda: [s.state for s in line1.states].count(True) >= 2)
        io.led("LINE_1", "off")
        assert line1.state == 0
        io.led("MWI", "on")
        assert factory.pin(22).state == 1
        io.ring(True)
        assert factory.pin(18).state == 1  # the cadence starts with the on-phase
        io.ring(False)
        assert factory.pin(18).state == 0
    finally:
        await io.close()
    assert lcd.screen() == [" " * 20] * 4  # cleared on close


async def test_a_failing_key_handler_does_not_stop_the_board() -> None:
    seen: list[KeyEvent] = []

    def handler(e: KeyEvent) -> None:
        seen.append(e)
        raise RuntimeError("UI bug")

    io = open_board("sim", handler)
    await io.start()
    try:
        pad = io.board.keypad
        assert isinstance(pad, SimKeypad)
        pad.press("OK")
        await until(lambda: len(seen) == 1)
        pad.release("OK")
        await until(lambda: len(seen) == 2)
    finally:
        await io.close()


def test_boardio_is_usable_before_start() -> None:
    io: BoardIO = open_board("sim", lambda e: None)
    io.show(["early"])
    io.led("MWI", "on")
    assert io.status()["lcd"][0] == "early".ljust(20)
    assert io.status()["leds"]["MWI"] == "on"


def test_long_lines_scroll_on_the_board_clock() -> None:
    clock = ManualClock(100.0)
    io = open_board("sim", lambda e: None, clock=clock)
    name = "Alexandra Konstantinopoulos-Smith"  # 33 characters on a 20-column LCD
    io.show([name, "Connected"])
    assert io.status()["lcd"][:2] == [name[:20], "Connected".ljust(20)]
    assert io._next_deadline() == pytest.approx(101.2)  # held at the start for 1.2 s
    clock.set(101.2)
    io.show([name, "Connected 00:01"])  # same name: keeps scrolling where it is
    assert io.status()["lcd"][:2] == [name[1:21], "Connected 00:01".ljust(20)]
    clock.set(101.6)
    io.show([name, "Connected 00:01"])
    assert io.status()["lcd"][0] == name[2:22]
    io.show(["Bob", "Connected 00:02"])  # fits: no scrolling, no timer
    assert io.status()["lcd"][0] == "Bob".ljust(20) and io._next_deadline() is None


def test_audio_devices_per_path_come_from_the_profile(factory: MockFactory) -> None:
    io = open_board("pi-reference", lambda e: None, pin_factory=factory,
                    i2c_bus=FakeSMBus(HD44780(20, 4)))
    try:
        speaker = io.audio_devices("speaker")
        assert speaker is not None and speaker.playback == "bcm2835 Headphones"
        assert open_board("sim", lambda e: None).audio_devices("handset") is None
    finally:
        io.board.close()


async def test_tap_on_the_simulated_keypad_is_a_clean_press() -> None:
    events: list[KeyEvent] = []
    io = open_board("sim", events.append)
    await io.start()
    try:
        io.tap("DIGIT_4")
        io.tap("REDIAL", hold=0.9)
        await until(lambda: len(events) == 5)
        assert sorted((e.key, e.kind) for e in events) == [
            ("DIGIT_4", "press"), ("DIGIT_4", "release"),
            ("REDIAL", "long_press"), ("REDIAL", "press"), ("REDIAL", "release")]
    finally:
        await io.close()
    with pytest.raises(RuntimeError, match="simulated keypad of a started board"):
        open_board("sim", events.append).tap("OK")


async def test_a_long_line_scrolls_by_itself_on_the_running_board() -> None:
    io = open_board("sim", lambda e: None)
    await io.start()
    try:
        name = "Alexandra Konstantinopoulos-Smith"
        io.show([name])
        display = io.board.display
        assert isinstance(display, SimDisplay)
        assert display.lines[0] == name[:20]
        await until(lambda: display.lines[0] == name[1:21], 3.0)  # after the 1.2 s hold
        await until(lambda: display.lines[0] == name[2:22], 1.0)  # then a column per 0.4 s
    finally:
        await io.close()
