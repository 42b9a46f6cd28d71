"""Issue 6 acceptance 1 and 2 end to end: the phone's real board adapters on gpiozero MockFactory
pins and a serial LCD on a pty, the real UI and phone, Kamailio and a baresip peer.

The phone runs in this process (so the test can be the person at the desk: it closes the hook
switch and the keypad's matrix contacts on the mock pins) with its full stack - board profile,
GpioKeypad scanning the key matrix, KeyInterpreter, PhoneUI, the SIP core on real sockets. What
is asserted is what crosses the wire (sniffed SIP from the phone's port, the peer's events),
what the LCD's serial byte stream shows, and the LED pins. Kamailio users 1081-1090 (desk
phones 1081 and 1087, baresip peers 1082-1086 and 1088-1089).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import tomllib
from collections.abc import AsyncIterator, Callable, Iterator
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
from tests.conftest import require_tool
from tests.interop.audio_files import write_tone
from tests.interop.certs import TestPKI
from tests.interop.kamailio import Kamailio
from tests.interop.phone import free_port
from tests.interop.presence_kamailio import PresenceKamailio
from tests.interop.sniff import Sniffer
from tests.unit.board_fakes import KeyMatrixModel, MatrixOrbitalScreen, switch_factory

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
        self.model = KeyMatrixModel(factory, list(matrix.rows), list(matrix.cols))
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
    factory = switch_factory()
    previous = Device.pin_factory
    Device.pin_factory = factory  # what the profile's adapters use when no factory is given
    yield factory
    Device.pin_factory = previous
    factory.close()


@pytest.fixture
def lcd_pty() -> Iterator[tuple[int, str]]:
    master, slave = os.openpty()
    yield master, os.ttyname(slave)
    os.close(master)
    os.close(slave)


def phone_config(tmp_path: Path, kam: Kamailio, lcd_port: str, sip_port: int,
                 sections: dict[str, Any] | None = None, user: str = CALLER) -> Path:
    """phone.toml for `user` with the reference board, its LCD swapped for a serial one."""
    profile = tomllib.loads((PROFILE_DIR / "pi-reference.toml").read_text())
    profile["lcd"] = {"type": "serial", "protocol": "matrix_orbital", "port": lcd_port,
                      "baud": 19200, "cols": 20, "rows": 4}
    (tmp_path / "board.toml").write_bytes(tomli_w.dumps(profile).encode())
    doc = {
        "device": {"name": f"Desk {user}", "state_dir": str(tmp_path / "state")},
        "accounts": [{"id": "line1", "user": user, "password": kam.users[user],
                      "domain": kam.domain, "registrar": kam.uri("udp"), "expires": 300}],
        "sip": {"listen": [f"udp:127.0.0.1:{sip_port}"], "retry_base": 1.0},
        "audio": {"codecs": ["PCMU"], "capture_file": str(write_tone(tmp_path / "in.wav", 1000)),
                  "playback_file": str(tmp_path / "out.wav")},
        "api": {"enabled": False},
        "board": {"profile": "board.toml"},
        **(sections or {}),
    }
    path = tmp_path / "phone.toml"
    path.write_bytes(tomli_w.dumps(doc).encode())
    return path


def sip_sent(sniff: Sniffer, start: str, contains: str = "") -> list[str]:
    msgs = [p.decode(errors="replace") for p in list(sniff.payloads)]
    return [m for m in msgs if m.startswith(start) and contains in m]


class DeskPhone:
    """A running in-process phone on the reference board: pins, serial LCD, sniffed SIP."""

    def __init__(self, phone: Phone, desk: Desk, sniff: Sniffer, master: int) -> None:
        self.phone, self.desk, self.sniff, self.master = phone, desk, sniff, master
        self.io = desk.io
        self.screen = MatrixOrbitalScreen(20, 4)
        os.set_blocking(master, False)

    def lcd(self) -> list[str]:
        """What the serial LCD shows now (reads what arrived on the pty)."""
        try:
            self.screen.feed(os.read(self.master, 65536))
        except BlockingIOError:
            pass
        return self.screen.screen()

    def calls(self, state: str) -> list[dict[str, Any]]:
        return [c for c in self.phone.status()["calls"] if c["state"] == state]

    async def dial(self, number: str) -> None:
        """Key the number on the matrix and press # (the handset is already up)."""
        for digit in number:
            await self.desk.tap(f"DIGIT_{digit}")
        await self.desk.tap("POUND")


@contextlib.asynccontextmanager
async def desk_phone(
    kam: Kamailio, factory: MockFactory, lcd_pty: tuple[int, str], sniffer: Callable[..., Sniffer],
    tmp_path: Path, sections: dict[str, Any] | None = None, user: str = CALLER,
) -> AsyncIterator[DeskPhone]:
    sip_port = free_port()
    sniff = sniffer(sip_port)
    master, lcd_port = lcd_pty
    phone = Phone(load_config(str(phone_config(tmp_path, kam, lcd_port, sip_port, sections,
                                               user))))
    assert phone.ui is not None and isinstance(phone.ui.board, BoardIO)
    dp = DeskPhone(phone, Desk(factory, phone.ui.board), sniff, master)
    await phone.start()
    try:
        await until(lambda: phone.status()["registrations"][0]["state"] == "registered", 15,
                    "registered")
        await until(lambda: f"Desk {user}" in dp.lcd()[0], 5, "idle screen on the serial LCD")
        yield dp
    finally:
        await phone.stop()


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
    async with desk_phone(kamailio, mock_pins, lcd_pty, sniffer, tmp_path) as dp:
        # lift the handset, key 1082 on the matrix, # sends
        await dp.desk.lift()
        for key in ("DIGIT_1", "DIGIT_0", "DIGIT_8", "DIGIT_2"):
            await dp.desk.tap(key)
        await until(lambda: any("1082" in line for line in dp.lcd()), 5, "digits on the LCD")
        await dp.desk.tap("POUND")
        invite = await until(lambda: sip_sent(dp.sniff, f"INVITE sip:{CALLEE}@"), 10, "INVITE")
        assert f"sip:{CALLER}@" in invite[0].split("\r\n\r\n")[0]
        await asyncio.to_thread(peer.wait_event, "CALL_ESTABLISHED", 10)
        await until(lambda: dp.calls("connected"), 10, "connected")
        await until(lambda: any("1082" in line for line in dp.lcd()), 5, "call screen")

        # HOLD: the hold re-INVITE (sendonly) goes out, the line key's LED flashes slowly
        await dp.desk.tap("HOLD")
        await until(lambda: sip_sent(dp.sniff, "INVITE ", "a=sendonly"), 10, "hold re-INVITE")
        await until(lambda: dp.calls("held"), 10, "held")
        line1 = mock_pins.pin(23)
        line1.clear_states()
        await until(lambda: [s.state for s in line1.states].count(True) >= 2, 3,
                    "LINE_1 LED flashing while held")
        assert dp.io.status()["leds"]["LINE_1"] == "slow_flash"

        # back on hook: BYE
        await dp.desk.hang_up()
        await until(lambda: sip_sent(dp.sniff, "BYE "), 10, "BYE")
        await asyncio.to_thread(peer.wait_event, "CALL_CLOSED", 10)


async def test_transfer_key_twice_sends_a_blind_refer(
    kamailio: Kamailio,
    make_baresip: Callable[..., Any],
    sniffer: Callable[[int], Sniffer],
    mock_pins: MockFactory,
    lcd_pty: tuple[int, str],
    tmp_path: Path,
) -> None:
    peer = make_baresip("1083", kamailio=kamailio, codecs=["PCMU"], auto_answer=True)
    target = make_baresip("1084", kamailio=kamailio, codecs=["PCMU"], auto_answer=True)
    async with desk_phone(kamailio, mock_pins, lcd_pty, sniffer, tmp_path) as dp:
        await dp.desk.lift()
        await dp.dial("1083")
        await asyncio.to_thread(peer.wait_event, "CALL_ESTABLISHED", 10)
        await until(lambda: dp.calls("connected"), 10, "connected to 1083")
        # TRANSFER holds the call and opens the dial screen; the number, then TRANSFER again
        await dp.desk.tap("TRANSFER")
        await until(lambda: sip_sent(dp.sniff, "INVITE ", "a=sendonly"), 10, "hold first")
        for digit in "1084":
            await dp.desk.tap(f"DIGIT_{digit}")
        await dp.desk.tap("TRANSFER")
        refer = await until(lambda: sip_sent(dp.sniff, "REFER "), 10, "REFER")
        assert "Refer-To: <sip:1084@" in refer[0] or "Refer-To: sip:1084@" in refer[0], refer[0]
        assert "Referred-By:" in refer[0]
        # baresip follows the REFER: 1084 gets the call from 1083, our call ends
        await asyncio.to_thread(target.wait_event, "CALL_ESTABLISHED", 10)
        await until(lambda: not dp.calls("held") and not dp.calls("connected"), 15,
                    "our call ended after the transfer")
        await dp.desk.hang_up()


async def test_conf_key_flow_makes_a_three_way_conference(
    kamailio: Kamailio,
    make_baresip: Callable[..., Any],
    sniffer: Callable[[int], Sniffer],
    mock_pins: MockFactory,
    lcd_pty: tuple[int, str],
    tmp_path: Path,
) -> None:
    first = make_baresip("1085", kamailio=kamailio, codecs=["PCMU"], auto_answer=True)
    second = make_baresip("1086", kamailio=kamailio, codecs=["PCMU"], auto_answer=True)
    async with desk_phone(kamailio, mock_pins, lcd_pty, sniffer, tmp_path) as dp:
        await dp.desk.lift()
        await dp.dial("1085")
        await asyncio.to_thread(first.wait_event, "CALL_ESTABLISHED", 10)
        await until(lambda: dp.calls("connected"), 10, "connected to 1085")
        # CONF holds 1085 and dials the third party; CONF again joins all three
        await dp.desk.tap("CONF")
        await until(lambda: dp.calls("held"), 10, "1085 held for the consultation")
        await dp.dial("1086")
        await asyncio.to_thread(second.wait_event, "CALL_ESTABLISHED", 10)
        await until(lambda: len(dp.calls("connected")) == 1 and dp.calls("held"), 10,
                    "talking to 1086, 1085 held")
        resumes_before = len(sip_sent(dp.sniff, "INVITE ", "a=sendrecv"))
        await dp.desk.tap("CONF")
        status = await until(
            lambda: (s := dp.phone.status()) and len(s.get("conference") or []) == 2 and s, 10,
            "conference of two calls")
        assert len([c for c in status["calls"] if c["state"] == "connected"]) == 2
        # the held leg was resumed on the wire to be mixed
        await until(lambda: len(sip_sent(dp.sniff, "INVITE ", "a=sendrecv")) > resumes_before,
                    10, "re-INVITE resuming 1085")
        await dp.desk.hang_up()
        await until(lambda: len(sip_sent(dp.sniff, "BYE ")) >= 2, 10, "both legs hung up")


def _mwi_notify(kam: Kamailio, waiting: bool, new: int) -> bytes:
    """An unsolicited message-summary NOTIFY from a voicemail server, sent via the proxy."""
    host, port = kam.addr("udp")
    body = (f"Messages-Waiting: {'yes' if waiting else 'no'}\r\n"
            f"Message-Account: sip:*97@{kam.domain}\r\n"
            f"Voice-Message: {new}/0\r\n")
    tag = f"{new}{int(waiting)}"
    return (
        f"NOTIFY sip:{CALLER}@{kam.domain} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{{port}};branch=z9hG4bKmwi{tag}{time.monotonic_ns()}\r\n"
        f"Max-Forwards: 70\r\n"
        f"From: <sip:voicemail@vm.invalid>;tag=vm{tag}\r\n"
        f"To: <sip:{CALLER}@{kam.domain}>\r\n"
        f"Call-ID: mwi-{tag}-{time.monotonic_ns()}@vm.invalid\r\n"
        f"CSeq: 1 NOTIFY\r\n"
        f"Event: message-summary\r\n"
        f"Subscription-State: active\r\n"
        f"Content-Type: application/simple-message-summary\r\n"
        f"Content-Length: {len(body)}\r\n\r\n{body}"
    ).encode()


async def test_mwi_led_pin_follows_message_waiting(
    kamailio: Kamailio,
    sniffer: Callable[[int], Sniffer],
    mock_pins: MockFactory,
    lcd_pty: tuple[int, str],
    tmp_path: Path,
) -> None:
    sections = {"mwi": {"subscribe": False}}
    async with desk_phone(kamailio, mock_pins, lcd_pty, sniffer, tmp_path, sections) as dp:
        mwi_pin = mock_pins.pin(22)
        assert mwi_pin.state == 0
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as vm:
            vm.bind(("127.0.0.1", 0))
            vm_port = vm.getsockname()[1]
            for waiting, new, level in ((True, 2, 1), (False, 0, 0)):
                vm.sendto(_mwi_notify(kamailio, waiting, new).replace(
                    b"{port}", str(vm_port).encode()), kamailio.addr("udp"))
                await until(lambda lv=level: mwi_pin.state == lv, 10,  # type: ignore[misc]
                            f"MWI LED pin {'on' if level else 'off'}")
                assert dp.io.status()["leds"]["MWI"] == ("on" if level else "off")


@pytest.fixture(scope="module")
def kamailio_presence(
    tmp_path_factory: pytest.TempPathFactory, pki: TestPKI
) -> Iterator[PresenceKamailio]:
    instance = PresenceKamailio(tmp_path_factory.mktemp("kamailio-presence"), pki,
                                binary=require_tool("kamailio"))
    instance.start()
    yield instance
    instance.stop()


async def test_blf_line_key_led_pin_follows_the_watched_line(
    kamailio_presence: PresenceKamailio,
    make_baresip: Callable[..., Any],
    sniffer: Callable[[int], Sniffer],
    mock_pins: MockFactory,
    lcd_pty: tuple[int, str],
    tmp_path: Path,
) -> None:
    kam = kamailio_presence
    watched = make_baresip("1088", kamailio=kam, codecs=["PCMU"])
    caller = make_baresip("1089", kamailio=kam, codecs=["PCMU"])
    sections = {
        "keys": [{"key": "LINE_2", "type": "blf", "target": "1088", "label": "Bob"}],
        "blf": {"expires": 120, "leds": {"talking": "steady"}},
        "mwi": {"subscribe": False},
    }
    async with desk_phone(kam, mock_pins, lcd_pty, sniffer, tmp_path, sections, "1087") as dp:
        line2 = mock_pins.pin(24)  # LINE_2's LED on the reference board
        await until(lambda: any(b.get("state") == "idle" for b in dp.phone.status()["blf"]), 15,
                    "BLF idle")
        assert line2.state == 0
        await asyncio.to_thread(caller.dial, kam.aor("1088"))
        await asyncio.to_thread(watched.wait_event, "CALL_INCOMING", 10)
        line2.clear_states()
        await until(lambda: [s.state for s in line2.states].count(True) >= 2, 10,
                    "LINE_2 LED fast-flashing while 1088 rings")
        assert dp.io.status()["leds"]["LINE_2"] == "fast_flash"
        await asyncio.to_thread(watched.answer)
        await until(lambda: dp.io.status()["leds"]["LINE_2"] == "on", 10, "BLF talking")
        line2.clear_states()
        await asyncio.sleep(0.3)  # steady: no switching for longer than a fast-flash period
        assert line2.state == 1 and len(line2.states) == 1
        await asyncio.to_thread(caller.hangup)
        await until(lambda: line2.state == 0 and dp.io.status()["leds"]["LINE_2"] == "off", 15,
                    "LINE_2 LED off when the line is idle again")
