"""Capture what a UDP port sends on the loopback interface, for tests that check the wire.

AF_PACKET needs root, which CI has; without it the capture is skipped locally and fails in CI.
A classic BPF filter (what ``tcpdump -dd "udp src port N"`` compiles to, IPv4 part) makes the
kernel queue only the watched port's datagrams: every test's RTP also crosses `lo`, and parsing
all of it in Python made the capture lag, or overflow its buffer and lose a SIP message, on a
loaded machine. `close()` reads what is still queued, so nothing sent before it is missed.
`lo` shows every datagram twice (leaving and arriving): only the outgoing copy is kept.
"""

from __future__ import annotations

import ctypes
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.conftest import skip_or_fail

SO_ATTACH_FILTER = 26  # linux/asm-generic/socket.h
PACKET_OUTGOING = 4  # sll_pkttype of a frame this host sent (linux/if_packet.h)
RCVBUF = 4 * 1024 * 1024


def udp_src_port_filter(port: int) -> list[tuple[int, int, int, int]]:
    """Classic BPF (code, jt, jf, k) accepting IPv4/UDP frames from `port` on an Ethernet-
    framed link (Linux `lo` is one), unfragmented or first fragments only."""
    return [
        (0x28, 0, 0, 12),  # ldh [12]             ethertype
        (0x15, 0, 8, 0x0800),  # jeq IPv4, else drop
        (0x30, 0, 0, 23),  # ldb [23]             IP protocol
        (0x15, 0, 6, 17),  # jeq UDP, else drop
        (0x28, 0, 0, 20),  # ldh [20]             flags + fragment offset
        (0x45, 4, 0, 0x1FFF),  # jset offset: a later fragment has no UDP header, drop
        (0xB1, 0, 0, 14),  # ldxb 4*([14]&0xf)    X = IP header length
        (0x48, 0, 0, 14),  # ldh [x+14]           UDP source port
        (0x15, 0, 1, port),  # jeq port, else drop
        (0x06, 0, 0, 0x40000),  # ret 256 KiB: accept the whole frame
        (0x06, 0, 0, 0),  # ret 0: drop
    ]


def attach_filter(sock: socket.socket, program: list[tuple[int, int, int, int]]) -> None:
    """SO_ATTACH_FILTER with a `struct sock_fprog` pointing at the program (the kernel copies
    it during the call, so the buffer only has to outlive setsockopt)."""
    code = b"".join(struct.pack("=HBBI", *insn) for insn in program)
    buf = ctypes.create_string_buffer(code, len(code))
    fprog = struct.pack("@HP", len(program), ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


class Sniffer:
    """Captures UDP datagrams on the loopback interface (AF_PACKET; needs root, as CI has)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.payloads: list[bytes] = []
        self._stop = threading.Event()
        self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(0x0003))
        attach_filter(self._sock, udp_src_port_filter(port))
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        self._sock.bind(("lo", 0))
        self._sock.settimeout(0.2)
        self._closed = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                frame, address = self._sock.recvfrom(65535)
            except TimeoutError:
                continue
            self._take(frame, address)

    def _take(self, frame: bytes, address: tuple[Any, ...]) -> None:
        if address[2] != PACKET_OUTGOING:
            return
        # frames queued before the filter was attached are not filtered: check here too
        ip = frame[14:]
        if len(ip) < 28 or ip[0] >> 4 != 4 or ip[9] != 17:
            return
        ihl = (ip[0] & 0x0F) * 4
        src_port = struct.unpack("!H", ip[ihl : ihl + 2])[0]
        if src_port == self.port:
            self.payloads.append(ip[ihl + 8 :])

    def close(self) -> list[bytes]:
        """Stop capturing and return every datagram sent from the port so far."""
        if self._closed:
            return self.payloads
        self._closed = True
        self._stop.set()
        self._thread.join(5)
        self._sock.setblocking(False)
        while True:  # what the kernel queued that the thread had not read yet
            try:
                self._take(*self._sock.recvfrom(65535))
            except (BlockingIOError, InterruptedError):
                break
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
