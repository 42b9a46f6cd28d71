"""A board profile that selects the front panel: the phone's BoardIO runs on the serial panel.

The panel is the emulated one on a pty (the panel firmware's own core); the profile, the factory,
the pyserial adapter and BoardIO are the real ones.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from board.ports import KeyEvent
from board.profile import ProfileError, load_profile, parse_profile
from firmware.runtime.board_io import open_board
from tests.panel.emulator import EmulatedPanel

PROFILE = """
[board]
name = "panel test"
driver = "frontpanel"
[frontpanel]
port = "{port}"
rows = [2, 3]
cols = [4, 5]
layout = [["DIGIT_1", "DIGIT_2"], ["HOLD", ""]]
hook = 6
[frontpanel.leds]
MWI = 15
LINE_1 = 16
[lcd]
type = "sim"
cols = 20
rows = 2
"""


async def until(predicate, what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def lcd(board) -> list[str]:
    return [line.rstrip() for line in board.status()["lcd"]]


def test_shipped_front_panel_profile_is_valid() -> None:
    profile = load_profile("pi-frontpanel")
    assert profile.driver == "frontpanel" and profile.frontpanel is not None
    assert "HOOK" in profile.keys and "DIGIT_5" in profile.keys
    assert profile.frontpanel.pins.keymap[(1, 3)] == "TRANSFER"
    assert set(profile.leds) == {"LINE_1", "LINE_2", "LINE_3", "MWI", "MUTE", "SPEAKER"}


@pytest.mark.parametrize(
    ("change", "key", "message"),
    [
        ({"layout": [["DIGIT_1", "NOPE"], ["HOLD", ""]]}, "frontpanel.layout[0][1]", "not a key"),
        ({"hook": 4}, "frontpanel", "GPIO 4 is used twice"),
        ({"baud": 1234}, "frontpanel.baud", "not a standard UART rate"),
        ({"port": None}, "frontpanel.port", "is required"),
    ],
)
def test_front_panel_profile_errors_name_the_key(change, key, message) -> None:
    import tomllib

    data = tomllib.loads(PROFILE.format(port="/dev/ttyACM0"))
    for name, value in change.items():
        if value is None:
            del data["frontpanel"][name]
        else:
            data["frontpanel"][name] = value
    with pytest.raises(ProfileError, match=message) as info:
        parse_profile(data, "p.toml")
    assert info.value.key == key


async def test_board_io_on_a_front_panel(tmp_path: Path) -> None:
    emulator = EmulatedPanel()
    try:
        path = tmp_path / "panel.toml"
        path.write_text(PROFILE.format(port=emulator.path))
        events: list[KeyEvent] = []
        board = open_board(path, events.append)
        await board.start()
        try:
            board.show(["Reception", "idle"])
            await until(lambda: board.hardware_error is None, "the panel's hello")
            assert lcd(board) == ["Reception", "idle"]
            emulator.press("HOOK")
            emulator.press("DIGIT_2")
            await until(lambda: len(events) >= 2, "two key presses")
            assert {(e.key, e.kind) for e in events} == {("HOOK", "press"), ("DIGIT_2", "press")}
            board.led("MWI", "fast_flash")
            await until(lambda: emulator.led_mode("MWI") == "fast_flash", "the MWI mode at the panel")
            emulator.go_silent()
            await until(lambda: lcd(board)[-1] == "Front panel silent", "the error on the LCD")
            assert lcd(board)[0] == "Reception"
            emulator.go_silent(False)
            await until(lambda: lcd(board) == ["Reception", "idle"], "the LCD back")
        finally:
            await board.close()
    finally:
        emulator.close()


async def test_missing_front_panel_shows_on_the_lcd(tmp_path: Path) -> None:
    path = tmp_path / "panel.toml"
    path.write_text(PROFILE.format(port=tmp_path / "ttyACM7"))
    board = open_board(path, lambda event: None)
    await board.start()
    try:
        board.show(["Reception", "idle"])
        keypad = board.board.keypad
        await until(lambda: "cannot open" in str(keypad.status()["error"]), "the open error")
        await until(lambda: lcd(board) == ["Reception", "Front panel missing"], "the LCD says so")
    finally:
        await board.close()
