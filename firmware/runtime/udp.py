"""Read every datagram queued on a UDP socket in one call: C (firmware/runtime/_udp.c) or Python.

Why: the media thread drains a call's RTP socket once per 20 ms tick, with the CPU caches cold
by then; the Python loop (a recvmsg per datagram, ancillary data parsed per datagram, one more
recvmsg that ends by raising BlockingIOError) costs about 80 us a tick there, the C call a
fraction (bench/README.md). The Python twin below is used when the C module is not built and
gives the same results (tests/unit/test_udp.py).
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable
from typing import Any

from audio.speedups import optional_c_module

_c = optional_c_module("firmware.runtime._udp")

ACCELERATED = _c is not None

Datagram = tuple[bytes, float | None, Any]  # (data, kernel arrival CLOCK_REALTIME s, address)

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux; the option is named in 3.12+
_TIMESPEC = {16: struct.Struct("=qq"), 8: struct.Struct("=ii")}  # 64- / 32-bit time_t
_ANC_SPACE = socket.CMSG_SPACE(16)


def recv_datagrams_py(sock: socket.socket, max_count: int, bufsize: int) -> list[Datagram]:
    """What is queued on non-blocking `sock`, at most `max_count` datagrams, each with its
    SO_TIMESTAMPNS arrival time (None without one); stops at EAGAIN or any error."""
    out: list[Datagram] = []
    for _ in range(max_count):
        try:
            data, anc, _flags, addr = sock.recvmsg(bufsize, _ANC_SPACE)
        except OSError:  # BlockingIOError: drained; ICMP errors and the like: next tick
            break
        stamp = None
        for level, kind, cdata in anc:
            layout = _TIMESPEC.get(len(cdata))
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and layout is not None:
                sec, nsec = layout.unpack(cdata)
                stamp = sec + nsec * 1e-9
                break
        out.append((data, stamp, addr))
    return out


# the C function itself when built: no Python frame between the media tick and the read
recv_datagrams: Callable[[socket.socket, int, int], list[Datagram]] = (
    _c.recv_datagrams if _c is not None else recv_datagrams_py
)
