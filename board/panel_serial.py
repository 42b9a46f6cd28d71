"""A front panel on a serial port (UART or USB CDC) as the phone's Keypad and Indicator.

The protocol decisions live in board/panel.py (sans-IO); this adapter owns the port: one reader
thread (like gpiozero's callback threads) that feeds received bytes and the clock into the link,
writes what it answers, keeps its timers, and reopens the port when it vanishes - a USB panel
re-enumerates after a reset, and a UART panel just goes quiet. pyserial is used because it is
the field standard for this and its `serial_for_url` also opens `loop://` and ptys in tests.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import serial

from board.panel import PanelLink
from board.ports import EdgeSink, KeyEdge

log = logging.getLogger(__name__)

READ_TIMEOUT = 0.02  # the reader wakes at least this often to run the link's timers


class SerialPanel:
    """Keypad + Indicator over a serial link; LEDs take modes, which the panel flashes itself."""

    def __init__(
        self,
        port: str,
        led_names: frozenset[str] | set[str],
        *,
        baudrate: int = 115200,
        clock: Callable[[], float] = time.monotonic,
        reconnect_interval: float = 1.0,
        opener: Callable[..., Any] = serial.serial_for_url,
    ) -> None:
        self.port = port
        self.baudrate = baudrate
        self._names = frozenset(led_names)
        self._clock = clock
        self._reconnect_interval = reconnect_interval
        self._opener = opener
        self.link = PanelLink()
        self._lock = threading.Lock()
        self._serial: Any = None
        self._sink: EdgeSink | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- Keypad ------------------------------------------------------------------------------

    def start(self, sink: EdgeSink) -> None:
        self._sink = sink
        self._thread = threading.Thread(target=self._run, name=f"panel {self.port}", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        self._close_port()

    # -- Indicator ---------------------------------------------------------------------------

    @property
    def names(self) -> frozenset[str]:
        return self._names

    def set(self, name: str, lit: bool) -> None:
        self.set_mode(name, "on" if lit else "off")

    def set_mode(self, name: str, mode: str) -> None:
        """Hand the mode to the panel, which keeps the flash rhythm itself (no 8 Hz traffic)."""
        if name not in self._names:
            raise ValueError(f"the front panel has no LED {name!r}")
        with self._lock:
            self._write(self.link.led(name, mode, self._clock()))

    def health(self) -> str | None:
        """None while the panel talks to us; else what is wrong, short enough for a 16x2 LCD
        (status() has the details)."""
        with self._lock:
            state = self.link.state
        if state == "connected":
            return None
        if self._serial is None:
            return "Front panel missing"
        if state == "wrong_version":
            return "Update panel firmware"
        if state == "silent":
            return "Front panel silent"
        return "Front panel waiting"

    def status(self) -> dict[str, object]:
        with self._lock:
            return {"port": self.port, **self.link.status()}

    # -- the reader thread -------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._serial is None and not self._open():
                self._stop.wait(self._reconnect_interval)
                continue
            try:
                data = self._serial.read(self._serial.in_waiting or 1)
            except (serial.SerialException, OSError, TypeError, AttributeError) as e:
                self._lost(str(e) or type(e).__name__)
                continue
            edges: list[KeyEdge] = []
            with self._lock:
                now = self._clock()
                if data:
                    edges, reply = self.link.feed(data, now)
                    self._write(reply)
                deadline = self.link.get_timer()
                if deadline is not None and now >= deadline:
                    self._write(self.link.handle_timer(now))
            for edge in edges:
                if self._sink is not None:
                    self._sink(edge)

    def _open(self) -> bool:
        try:
            port = self._opener(self.port, baudrate=self.baudrate, timeout=READ_TIMEOUT)
        except (serial.SerialException, OSError) as e:
            with self._lock:
                self.link.connection_lost(f"cannot open {self.port}: {e}")
            return False
        with self._lock:
            self._serial = port
            # Ask at once rather than waiting for the next query interval.
            self._write(self.link.handle_timer(self._clock()))
        log.info("front panel port %s open", self.port)
        return True

    def _lost(self, why: str) -> None:
        log.warning("front panel port %s lost: %s", self.port, why)
        with self._lock:
            self.link.connection_lost(why)
        self._close_port()
        self._stop.wait(self._reconnect_interval)

    def _write(self, data: bytes) -> None:
        if not data or self._serial is None:
            return
        try:
            self._serial.write(data)
        except (serial.SerialException, OSError) as e:
            log.warning("front panel write failed: %s", e)

    def _close_port(self) -> None:
        port, self._serial = self._serial, None
        if port is not None:
            try:
                port.close()
            except (serial.SerialException, OSError):
                pass
