"""firmware.runtime.udp: the C batch read of a UDP socket and its Python twin agree.

Both run every case (the C one only where it was built, which CI requires), on real sockets
on loopback: what was queued comes back in order, bounded per call, with kernel arrival
times and the senders' addresses, and an empty or broken socket just gives nothing.
"""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from firmware.runtime import udp
from tests.conftest import skip_or_fail

Recv = Callable[[socket.socket, int, int], list[udp.Datagram]]


@pytest.fixture(params=["python", "c"])
def impl(request: pytest.FixtureRequest) -> Recv:
    if request.param == "python":
        return udp.recv_datagrams_py
    if udp._c is None:
        skip_or_fail("firmware.runtime._udp is not built (needs gcc and python3-dev)")
    return udp._c.recv_datagrams


def test_the_c_module_is_what_runs_when_built() -> None:
    if udp._c is None:
        skip_or_fail("firmware.runtime._udp is not built (needs gcc and python3-dev)")
    assert udp.ACCELERATED and udp.recv_datagrams is udp._c.recv_datagrams


@pytest.fixture
def udp_pair(request: pytest.FixtureRequest) -> Iterator[Callable[..., tuple[Any, Any]]]:
    made: list[socket.socket] = []

    def make(family: int = socket.AF_INET, stamps: bool = True) -> tuple[Any, Any]:
        host = "127.0.0.1" if family == socket.AF_INET else "::1"
        try:
            rx = socket.socket(family, socket.SOCK_DGRAM)
            rx.bind((host, 0))
        except OSError as e:
            skip_or_fail(f"no {host} on this machine: {e}")
        tx = socket.socket(family, socket.SOCK_DGRAM)
        tx.bind((host, 0))
        made.extend((rx, tx))
        rx.setblocking(False)
        if stamps:
            rx.setsockopt(socket.SOL_SOCKET, udp.SO_TIMESTAMPNS, 1)
        return rx, tx

    yield make
    for s in made:
        s.close()


def _wait_readable(rx: socket.socket) -> None:
    """Wait (at most 5 s) until `rx` has a datagram queued. Loopback delivers within the
    sender's sendto() on Linux, so what was sent before is then all there."""
    ready, _, _ = select.select([rx], [], [], 5.0)
    assert ready, "nothing arrived on loopback within 5 s"


def test_recv_datagrams_reads_what_is_queued_with_times_and_senders(
    impl: Recv, udp_pair: Callable[..., tuple[Any, Any]]
) -> None:
    rx, tx = udp_pair()
    assert impl(rx, 64, 4096) == []  # nothing queued: no error, no wait
    before = time.time()
    for i in range(5):
        tx.sendto(bytes([i]) * (100 + i), rx.getsockname())
    after = time.time()
    _wait_readable(rx)
    first = impl(rx, 3, 4096)  # bounded by max_count
    rest = impl(rx, 64, 4096)
    got = first + rest
    assert len(first) == 3 and len(rest) == 2
    assert [d for d, _, _ in got] == [bytes([i]) * (100 + i) for i in range(5)]
    assert all(addr == tx.getsockname() for _, _, addr in got)
    for _, stamp, _ in got:
        assert stamp is not None and before - 0.001 <= stamp <= after + 0.001
    assert impl(rx, 64, 4096) == []


def test_recv_datagrams_truncates_to_bufsize_and_reports_no_stamp_without_the_option(
    impl: Recv, udp_pair: Callable[..., tuple[Any, Any]]
) -> None:
    rx, tx = udp_pair(stamps=False)
    tx.sendto(b"x" * 300, rx.getsockname())
    _wait_readable(rx)
    [(data, stamp, addr)] = impl(rx, 64, 200)
    assert data == b"x" * 200 and stamp is None and addr == tx.getsockname()


def test_recv_datagrams_gives_ipv6_senders_as_the_socket_module_does(
    impl: Recv, udp_pair: Callable[..., tuple[Any, Any]]
) -> None:
    rx, tx = udp_pair(socket.AF_INET6)
    tx.sendto(b"six", rx.getsockname())
    _wait_readable(rx)
    [(data, stamp, addr)] = impl(rx, 64, 4096)
    assert data == b"six" and stamp is not None
    assert addr == tx.getsockname()  # (host, port, flowinfo, scope_id)


def test_recv_datagrams_stops_quietly_on_a_closed_socket(impl: Recv) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.setblocking(False)
    if impl is udp.recv_datagrams_py:
        s.close()
        assert impl(s, 64, 4096) == []
    else:
        fd = s.detach()
        socket.close(fd)
        assert udp._c is not None
        assert udp._c.recv_datagrams(fd, 64, 4096) == []  # EBADF: nothing, no crash
