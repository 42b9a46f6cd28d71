"""`deskphone sim`: the drawing and key map headless, and the real program in a pseudo-terminal.

The pty test runs `python -m firmware sim` as a user would over SSH and reads the screen through
pyte (a VT100 emulator), so it checks what a person sees, not curses' escape-sequence stream.
"""

from __future__ import annotations

import curses
import os
import pty
import select
import socket
import struct
import sys
import termios
import time
from collections.abc import Callable
from fcntl import ioctl
from pathlib import Path

import pyte

from tools.sim import phone_key, render

ROOT = Path(__file__).resolve().parents[2]


def test_render_draws_lcd_box_leds_and_state() -> None:
    status = {
        "lcd": ["Alice          10:42", "Ready", "", "Redl Hist Dir  Menu"],
        "leds": {"LINE_1": "fast_flash", "MWI": "on", "MUTE": "off"},
        "ui": {"hook": "offhook", "audio_path": "handset", "ringer": True, "volume": 5},
    }
    lines = render(status, 20, "Alice sip:127.0.0.1:5070")[1:]
    assert lines[0] == "+--------------------+"
    assert lines[1:5] == [
        "|Alice          10:42|",
        "|Ready               |",
        "|                    |",
        "|Redl Hist Dir  Menu |",
    ]
    assert "LINE_1[!]" in lines[7] and "MWI[#]" in lines[7] and "MUTE[ ]" in lines[7]
    assert lines[8].startswith("handset offhook  audio handset  ringer RING")


def test_key_map() -> None:
    assert phone_key("5") == "DIGIT_5"
    assert phone_key("#") == "POUND"
    assert phone_key("\n") == "OK"
    assert phone_key("o") == "HOLD"
    assert phone_key(curses.KEY_F2) == "SOFT_2"
    assert phone_key(curses.KEY_UP) == "UP"
    assert phone_key("z") is None


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Terminal:
    """A child process on a pty, its output fed into a pyte screen."""

    def __init__(self, argv: list[str], cols: int = 100, rows: int = 30) -> None:
        self.screen = pyte.Screen(cols, rows)
        self.stream = pyte.ByteStream(self.screen)
        pid, fd = pty.fork()
        if pid == 0:  # child
            os.environ.update(TERM="xterm", PYTHONPATH=str(ROOT))
            os.chdir(ROOT)
            os.execv(sys.executable, [sys.executable, *argv])
        ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self.pid, self.fd = pid, fd

    def text(self) -> str:
        return "\n".join(self.screen.display)

    def wait_for(self, predicate: Callable[[str], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate(self.text()):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {what}; screen:\n{self.text()}")
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                try:
                    self.stream.feed(os.read(self.fd, 65536))
                except OSError:  # the child exited
                    raise AssertionError(f"sim exited; screen:\n{self.text()}") from None

    def send(self, data: bytes) -> None:
        os.write(self.fd, data)

    def exit_code(self, timeout: float) -> int | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
            with_data, _, _ = select.select([self.fd], [], [], 0.1)
            if with_data:
                try:
                    self.stream.feed(os.read(self.fd, 65536))
                except OSError:
                    pass
        return None

    def kill(self) -> None:
        try:
            os.kill(self.pid, 9)
            os.waitpid(self.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(self.fd)


def test_sim_in_a_pty_lifts_the_handset_dials_and_quits() -> None:
    port = _free_udp_port()
    term = Terminal(["-m", "firmware", "sim", "--name", "Desk", "--port", str(port)])
    try:
        # one refresh may reach the pty in several reads: wait for the whole idle screen
        term.wait_for(
            lambda t: "Direct calls only" in t and "handset onhook" in t, 15, "the idle screen"
        )
        assert f"Desk sip:127.0.0.1:{port}" in term.text()
        term.send(b"h")  # lift the handset
        term.wait_for(lambda t: "|Dial:" in t and "handset offhook" in t, 5, "the dial screen")
        term.send(b"12")
        term.wait_for(lambda t: "|12_" in t, 5, "digits on the LCD")
        term.send(b"\x1b")  # CANCEL deletes the last digit
        term.wait_for(lambda t: "|1_ " in t, 5, "one digit left")
        term.send(b"h")  # hang up
        term.wait_for(lambda t: "|Desk " in t and "handset onhook" in t, 5, "idle again")
        term.send(b"q")
        assert term.exit_code(10) == 0
    finally:
        term.kill()
