"""gpiozero adapters on MockFactory pins: hook and buttons give edges on our clock, the key
matrix is scanned row by row through the real pin API, LEDs and the buzzer drive their pins."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from gpiozero.pins.mock import MockFactory

from board.factory import build_board
from board.gpio import GpioIndicator, GpioKeypad
from board.keys import KeyInterpreter
from board.ports import KeyEdge, KeyEvent
from board.profile import load_profile
from firmware.sip.clock import ManualClock
from tests.unit.board_fakes import HD44780, FakeSMBus, KeyMatrixModel, switch_factory


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    f = switch_factory()
    yield f
    f.close()


def test_hook_and_button_edges_are_stamped_with_the_phone_clock(factory: MockFactory) -> None:
    profile = load_profile("pi-reference")
    clock = ManualClock(100.0)
    pad = GpioKeypad(profile, clock, factory)
    edges: list[KeyEdge] = []
    pad.start(edges.append)
    hook = factory.pin(17)
    clock.set(101.0)
    hook.drive_low()  # handset lifted: the switch pulls the pin to ground
    clock.set(101.003)
    hook.drive_high()  # bounce
    clock.set(101.004)
    hook.drive_low()
    assert edges == [KeyEdge("HOOK", True, 101.0), KeyEdge("HOOK", False, 101.003),
                     KeyEdge("HOOK", True, 101.004)]
    interp = KeyInterpreter(profile.timing)
    events: list[KeyEvent] = []
    for e in edges:
        events += interp.feed(e)
    events += interp.handle_timer(101.054)
    assert [(e.key, e.kind) for e in events] == [("HOOK", "press")]
    assert events[0].at == pytest.approx(101.054)
    pad.close()


def test_handset_already_lifted_at_start_is_reported(factory: MockFactory) -> None:
    factory.held_low.add("GPIO17")  # type: ignore[attr-defined]
    edges: list[KeyEdge] = []
    GpioKeypad(load_profile("pi-reference"), ManualClock(5.0), factory).start(edges.append)
    assert edges == [KeyEdge("HOOK", True, 5.0)]


def test_matrix_scan_finds_the_pressed_key(factory: MockFactory) -> None:
    profile = load_profile("pi-reference")
    assert profile.matrix is not None
    model = KeyMatrixModel(factory, list(profile.matrix.rows), list(profile.matrix.cols))
    pad = GpioKeypad(profile, ManualClock(), factory)
    assert pad.poll_interval == pytest.approx(0.01)
    edges: list[KeyEdge] = []
    pad.start(edges.append)
    pad.poll(1.00)
    assert edges == []
    model.pressed.add((1, 1))  # DIGIT_5
    pad.poll(1.01)
    pad.poll(1.02)
    model.pressed.add((2, 3))  # CONF too
    pad.poll(1.03)
    model.pressed.clear()
    pad.poll(1.04)
    assert edges == [KeyEdge("DIGIT_5", True, 1.01), KeyEdge("CONF", True, 1.03),
                     KeyEdge("DIGIT_5", False, 1.04), KeyEdge("CONF", False, 1.04)]
    # between scans every row is high-impedance: no row is left driving
    assert all(factory.pin(p).function == "input" for p in profile.matrix.rows)
    pad.close()


def test_leds_and_buzzer_drive_their_pins(factory: MockFactory) -> None:
    profile = load_profile("pi-reference")
    lcd = HD44780(20, 4)
    board = build_board(profile, ManualClock(), factory, i2c_bus=FakeSMBus(lcd))
    assert board.indicator.names == {"MWI", "LINE_1", "LINE_2", "MUTE", "SPEAKER", "HEADSET"}
    assert isinstance(board.indicator, GpioIndicator)
    assert factory.pin(22).state == 0
    board.indicator.set("MWI", True)
    assert factory.pin(22).state == 1
    board.ringer.ring(True)
    assert factory.pin(18).state == 1
    board.ringer.ring(False)
    assert factory.pin(18).state == 0
    board.display.show(["Hello"])
    assert lcd.screen()[0] == "Hello".ljust(20)
    board.close()


def test_a_part_that_cannot_open_is_one_clear_board_error(factory: MockFactory) -> None:
    import dataclasses

    from board.factory import BoardError
    from board.profile import LcdSpec

    profile = load_profile("pi-reference")
    broken = dataclasses.replace(profile, lcd=LcdSpec(type="serial", port="/nonexistent/ttyLCD"))
    with pytest.raises(BoardError, match=r"pi-reference.toml: cannot open the LCD \(serial\)"):
        build_board(broken, ManualClock(), factory)
    # the keypad's pins were given back: the board can be built again on the same pins
    lcd = HD44780(20, 4)
    build_board(profile, ManualClock(), factory, i2c_bus=FakeSMBus(lcd)).close()
