"""The loopback capture the wire checks rely on: only the watched port, nothing lost at close."""

from __future__ import annotations

import socket
from collections.abc import Callable

from tests.interop.sniff import Sniffer


def _udp_socket() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    return s


def test_captures_only_the_watched_port_and_everything_sent_before_close(
    sniffer: Callable[[int], Sniffer],
) -> None:
    watched, other, sink = _udp_socket(), _udp_socket(), _udp_socket()
    try:
        capture = sniffer(watched.getsockname()[1])
        target = sink.getsockname()
        # a burst larger than an unfiltered capture's default buffer of RTP-sized frames,
        # interleaved with traffic from another port that the kernel filter must drop
        for i in range(600):
            other.sendto(b"noise %d" % i + bytes(160), target)
            watched.sendto(b"wanted %d" % i, target)
        payloads = capture.close()  # at once: what the thread had not read is drained
        # each datagram once (lo shows it leaving and arriving), in order, none lost
        assert payloads == [b"wanted %d" % i for i in range(600)]
        assert capture.close() == payloads  # idempotent (the fixture closes it again)
    finally:
        for s in (watched, other, sink):
            s.close()
