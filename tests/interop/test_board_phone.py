"""Issue 6 acceptance 1 and 2 end to end: the phone's real board adapters on gpiozero MockFactory
pins and a serial LCD on a pty, the real UI and phone, Kamailio and a baresip peer.

The phone runs in this process (so the test can be the person at the desk: it closes the hook
switch and the keypad's matrix contacts on the mock pins) with its full stack - board profile,
GpioKeypad scanning the key matrix, KeyInterpreter, PhoneUI, the SIP core on real sockets. What
is asserted is what crosses the wire (sniffed SIP from the phone's port, the peer's events),
what the LCD's serial byte stream shows, and the LED pins. Kamailio users 1081-1090.
"""

from __future__ import annotations

import asyncio
import os
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from gpiozero import Device
from gpiozero.pins.mock import MockFactory

from board.profile import PROFILE_DIR
from firmware.provisioning.config import load_config
from firmware.runtime.app import Phone
from firmware.runtime.board_io import BoardIO
from tests.interop.audio_files import write_tone
from tests.interop.kamailio import Kamailio
from tests.interop.phone import free_port
from tests.interop.sniff import Sniffer
from tests.unit import test_board_gpio as pins
from tests.unit.board_fakes import MatrixOrbitalScreen

CALLER, CALLEE = "1081", "1082"


async def until(check: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
    """Poll `check` on the loop (the phone runs on it too) until truthy, bounded."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what or check}"
        await asyncio.sleep(0.01)


class Desk:
    """The person at the phone: hook switch and key contacts on the mock pins."""

    def __init__(self, factory: MockFactory, io: BoardIO) -> None:
        self.factory, self.io = factory, io
        matrix = io.board.profile.matrix
        assert matrix is not None
        self.model = pins.KeyMatrixModel(factory, list(matrix.rows), list(matrix.cols))  # type: ignore[arg-type]
        pins.MODEL = self.model
        self.where = {key: (r, c) for r, row in enumerate(matrix.layout)
                      for c, key in enumerate(row) if key}

    def _seen(self, key: str, kind: str) -> int:
        return sum(1 for e in self.io.events if e.key == key and e.kind == kind)

    async def tap(self, key: str) -> None:
        """Press and release a key; returns once the board reported both (debounced)."""
        pressed, released = self._seen(key, "press"), self._seen(key, "release")
        self.model.pressed.add(self.where[key])
        await until(lambda: self._seen(key, "press") > pressed, 3, key)
        self.model.pressed.discard(self.where[key])
        await until(lambda: self._seen(key, "release") > released, 3, f"{key} release")

    async def lift(self) -> None:
        await asyncio.to_thread(self.factory.pin(self.io.board.profile.hook.pin).drive_low)  # type: ignore[union-attr]
        await until(lambda: self._seen("HOOK", "press"), 3, "off hook")

    async def hang_up(self) -> None:
        await asyncio.to_thread(self.factory.pin(self.io.board.profile.hook.pin).drive_high)  # type: ignore[union-attr]
        await until(lambda: self._seen("HOOK", "release"), 3, "on hook")


@pytest.fixture
def mock_pins() -> Iterator[MockFactory]:
    factory = MockFactory(pin_class=pins.MatrixPin)
    previous = Device.pin_factory
    Device.pin_factory = factory  # what the profile's adapters use when no factory is given
    yield factory
    pins.MODEL = None
    Device.pin_factory = previous
    factory.close()


@pytest.fixture
def lcd_pty() -> Iterator[tuple[int, str]]:
    master, slave = os.openpty()
    yield master, os.ttyname(slave)
    os.close(master)
    os.close(slave)


def phone_config(tmp_path: Path, kam: Kamailio, lcd_port: str, sip_port: int) -> Path:
    """phone.toml for 1081 with the reference board, its LCD swapped for a serial one."""
    profile = tomllib.loads((PROFILE_DIR / "pi-reference.toml").read_text())
    profile["lcd"] = {"type": "serial", "protocol": "matrix_orbital", "port": lcd_port,
                      "baud": 19200, "cols": 20, "rows": 4}
    (tmp_path / "board.toml").write_bytes(tomli_w.dumps(profile).encode())
    doc = {
        "device": {"name": "Desk 1081", "state_dir": str(tmp_path / "state")},
        "accounts": [{"id": "line1", "user": CALLER, "password": kam.users[CALLER],
                      "domain": kam.domain, "registrar": kam.uri("udp"), "expires": 300}],
        "sip": {"listen": [f"udp:127.0.0.1:{sip_port}"], "retry_base": 1.0},
        "audio": {"codecs": ["PCMU"], "capture_file": str(write_tone(tmp_path / "in.wav", 1000)),
                  "playback_file": str(tmp_path / "out.wav")},
        "api": {"enabled": False},
        "board": {"profile": "board.toml"},
    }
    path = tmp_path / "phone.toml"
    path.write_bytes(tomli_w.dumps(doc).encode())
    return path


def sip_sent(sniff: Sniffer, start: str, contains: str = "") -> list[str]:
    msgs = [p.decode(errors="replace") for p in list(sniff.payloads)]
    return [m for m in msgs if m.startswith(start) and contains in m]


async def test_hook_keys_lcd_and_leds_drive_a_real_call(
    kamailio: Kamailio,
    make_baresip: Callable[..., Any],
    sniffer: Callable[[int], Sniffer],
    mock_pins: MockFactory,
    lcd_pty: tuple[int, str],
    tmp_path: Path,
) -> None:
    peer = make_baresip(CALLEE, kamailio=kamailio, codecs=["PCMU"], auto_answer=True,
                        tone_hz=440)
    sip_port = free_port()
    sniff = sniffer(sip_port)
    master, lcd_port = lcd_pty
    screen = MatrixOrbitalScreen(20, 4)
    phone = Phone(load_config(str(phone_config(tmp_path, kamailio, lcd_port, sip_port))))
    assert phone.ui is not None and isinstance(phone.ui.board, BoardIO)
    io = phone.ui.board
    desk = Desk(mock_pins, io)

    def lcd() -> list[str]:
        try:
            screen.feed(os.read(master, 65536))
        except BlockingIOError:
            pass
        return screen.screen()

    os.set_blocking(master, False)
    await phone.start()
    try:
        await until(lambda: phone.status()["registrations"][0]["state"] == "registered", 15,
                    "registered")
        await until(lambda: "Desk 1081" in lcd()[0], 5, "idle screen on the serial LCD")

        # lift the handset, key 1082 on the matrix, # sends
        await desk.lift()
        for key in ("DIGIT_1", "DIGIT_0", "DIGIT_8", "DIGIT_2"):
            await desk.tap(key)
        await until(lambda: any("1082" in line for line in lcd()), 5, "digits on the LCD")
        await desk.tap("POUND")
        invite = await until(lambda: sip_sent(sniff, f"INVITE sip:{CALLEE}@"), 10, "INVITE")
        assert f"sip:{CALLER}@" in invite[0].split("\r\n\r\n")[0]
        await asyncio.to_thread(peer.wait_event, "CALL_ESTABLISHED", 10)
        await until(lambda: [c for c in phone.status()["calls"] if c["state"] == "connected"],
                    10, "connected")
        await until(lambda: any("1082" in line for line in lcd()), 5, "call screen")

        # HOLD: the hold re-INVITE (sendonly) goes out, the line key's LED flashes slowly
        await desk.tap("HOLD")
        await until(lambda: sip_sent(sniff, "INVITE ", "a=sendonly"), 10, "hold re-INVITE")
        await until(lambda: [c for c in phone.status()["calls"] if c["state"] == "held"], 10,
                    "held")
        line1 = mock_pins.pin(23)
        line1.clear_states()
        await until(lambda: [s.state for s in line1.states].count(True) >= 2, 3,
                    "LINE_1 LED flashing while held")
        assert io.status()["leds"]["LINE_1"] == "slow_flash"

        # back on hook: BYE
        await desk.hang_up()
        await until(lambda: sip_sent(sniff, "BYE "), 10, "BYE")
        await asyncio.to_thread(peer.wait_event, "CALL_CLOSED", 10)
    finally:
        await phone.stop()
