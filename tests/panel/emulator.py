"""An emulated front panel behind a pty: the panel's own firmware logic with simulated keys.

It runs board/frontpanel's PanelCore and MatrixScanner - the code the real panel runs - in a
thread on the master side of a pty, so the Pi side opens a real tty device with pyserial. Only
the pins are simulated: press()/release() set a matrix position as the scan loop would read it.
"""

from __future__ import annotations

import os
import select
import termios
import threading
import time
import tty

from board.frontpanel import protocol
from board.frontpanel.core import PanelCore
from board.frontpanel.scanner import MatrixScanner

KEYMAP = {(0, 0): "DIGIT_1", (0, 1): "DIGIT_2", (1, 0): "HOLD", (1, 1): "HOOK"}
LEDS = ("MWI", "LINE_1")


class _Core(PanelCore):
    """The firmware's core, able to claim another protocol version (an outdated panel)."""

    version = protocol.PROTOCOL_VERSION

    def hello(self) -> bytes:
        kind, seq, fields = protocol.decode(super().hello())
        return protocol.encode(kind, seq, [str(self.version)] + fields[1:])


class EmulatedPanel:
    def __init__(self, *, protocol_version: int = protocol.PROTOCOL_VERSION) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        attrs = termios.tcgetattr(self.slave)
        attrs[3] &= ~termios.ECHO
        termios.tcsetattr(self.slave, termios.TCSANOW, attrs)
        self.path = os.ttyname(self.slave)
        self.protocol_version = protocol_version
        self.received: list[tuple[str, int, list[str]]] = []
        self._raw = {pos: False for pos in KEYMAP}
        self._log = protocol.LineReader()
        self._lock = threading.Lock()
        self._silent = threading.Event()
        self._stop = threading.Event()
        self._boot()
        self._thread = threading.Thread(target=self._run, name="emulated panel", daemon=True)
        self._thread.start()

    def _ms(self) -> int:
        return int(time.monotonic() * 1000)

    def _boot(self) -> None:
        self.core = _Core(list(KEYMAP.values()), LEDS, self._ms(), heartbeat_ms=200)
        self.core.version = self.protocol_version
        self.scanner = MatrixScanner(2, 2, KEYMAP, debounce_ms=5)
        os.write(self.master, self.core.hello())

    # -- what a test does to the panel ------------------------------------------------------

    def press(self, name: str, down: bool = True) -> None:
        pos = next(p for p, n in KEYMAP.items() if n == name)
        with self._lock:
            self._raw[pos] = down

    def release(self, name: str) -> None:
        self.press(name, False)

    def reset(self) -> None:
        """The panel reboots: LED state lost, sequence numbers restart, hello again."""
        with self._lock:
            self._boot()

    def garble(self) -> None:
        os.write(self.master, b"K|9|DIGIT_1|D|5*FFFF\n\x00\xfe garbage\n")

    def go_silent(self, silent: bool = True) -> None:
        if silent:
            self._silent.set()
        else:
            self._silent.clear()

    def led_mode(self, name: str) -> str:
        with self._lock:
            return self.core.leds.modes[name]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        os.close(self.master)
        os.close(self.slave)

    # -- the firmware's loop ----------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.master], [], [], 0.002)
            with self._lock:
                now = self._ms()
                out = b""
                if ready:
                    data = os.read(self.master, 4096)
                    if not self._silent.is_set():
                        self.received.extend(self._log.feed(data))
                        out += self.core.receive(data)
                if not self._silent.is_set():
                    for row in range(2):
                        cols = [self._raw[(row, c)] for c in range(2)]
                        for name, pressed, at in self.scanner.scan_row(row, cols, now):
                            out += self.core.key(name, pressed, at)
                    out += self.core.tick(now)
            if out:
                os.write(self.master, out)
