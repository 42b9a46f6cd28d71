"""Capture what a UDP port sends on the loopback interface, for tests that check the wire.

AF_PACKET needs root, which CI has; without it the capture is skipped locally and fails in CI.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable, Iterator

import pytest

from tests.conftest import skip_or_fail


class Sniffer:
    """Captures UDP datagrams on the loopback interface (AF_PACKET; needs root, as CI has)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.payloads: list[bytes] = []
        self._stop = threading.Event()
        self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(0x0003))
        self._sock.bind(("lo", 0))
        self._sock.settimeout(0.2)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                frame = self._sock.recv(65535)
            except TimeoutError:
                continue
            ip = frame[14:]
            if len(ip) < 28 or ip[0] >> 4 != 4 or ip[9] != 17:
                continue
            ihl = (ip[0] & 0x0F) * 4
            src_port = struct.unpack("!H", ip[ihl : ihl + 2])[0]
            if src_port == self.port:
                self.payloads.append(ip[ihl + 8 :])

    def close(self) -> list[bytes]:
        self._stop.set()
        self._thread.join(2)
        self._sock.close()
        return self.payloads


@pytest.fixture
def sniffer() -> Iterator[Callable[[int], Sniffer]]:
    made: list[Sniffer] = []

    def make(port: int) -> Sniffer:
        try:
            s = Sniffer(port)
        except PermissionError:
            skip_or_fail("capturing packets needs root (CI runs as root)")
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()
