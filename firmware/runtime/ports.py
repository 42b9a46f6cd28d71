"""RTP/RTCP port allocation: one bound UDP socket pair (even port, port + 1) per call.

The call layer only needs an address to put in SDP (`MediaPorts.allocate`), but binding the
sockets at that moment is what makes the address true: the port cannot be taken by anyone
else between the offer and the first packet. The media session later borrows the sockets
(`claim`), and because the call layer releases a call's ports in the same step in which it
asks for the media to stop, a claimed pair is closed only when its session lets go, after
the RTCP BYE went out.
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
import socket
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


class PortError(RuntimeError):
    """No free RTP port pair in the configured range."""


@dataclass
class RtpSockets:
    """The bound sockets of one call: RTP on an even port, RTCP on the next (RFC 3550 11)."""

    address: str
    port: int
    rtp: socket.socket
    rtcp: socket.socket
    claimed: bool = False
    released: bool = False
    closed: bool = field(default=False)

    def claim(self) -> None:
        self.claimed = True

    def unclaim(self) -> None:
        """The session is done with the sockets; close them if the call already let go."""
        self.claimed = False
        if self.released:
            self.close()

    def close(self) -> None:
        if not self.closed:
            self.rtp.close()
            self.rtcp.close()
            self.closed = True


def _host_of(towards: Hashable | None) -> str | None:
    """The peer's IP from what the call layer passes (a Flow, an Address, a tuple)."""
    if towards is None:
        return None
    remote = getattr(towards, "remote", None)
    if remote is not None and hasattr(remote, "host"):
        return str(remote.host)
    if hasattr(towards, "host"):
        return str(towards.host)
    if isinstance(towards, tuple) and towards and isinstance(towards[0], str):
        return towards[0]
    return None


def local_ip_towards(host: str | None) -> str:
    """The local address the kernel would use to reach `host` (no packet is sent)."""
    try:
        ip = ipaddress.ip_address((host or "").strip("[]"))
    except ValueError:
        ip = ipaddress.ip_address("192.0.2.1")  # names: the default route's address
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect((str(ip), 9))
            return str(probe.getsockname()[0])
        except OSError:
            return "::1" if ip.version == 6 else "127.0.0.1"


class PortAllocator:
    """Binds RTP/RTCP socket pairs in [port_min, port_max] for calls (MediaPorts protocol).

    `bind_address` pins the media address (e.g. a fixed LAN IP); by default each call binds
    on the local address the kernel routes towards the peer, which is also what goes in SDP.
    Ports are tried from a random start so consecutive calls do not reuse the same pair
    (stale packets of the previous call would land in the new one).
    """

    def __init__(
        self,
        port_min: int = 16384,
        port_max: int = 32767,
        *,
        bind_address: str | None = None,
        randbelow: Callable[[int], int] | None = None,
    ) -> None:
        if not 1024 <= port_min < port_max <= 65535:
            raise ValueError(f"bad RTP port range {port_min}-{port_max}")
        self.port_min = port_min + (port_min % 2)  # RTP on even ports (RFC 3550 11)
        self.port_max = port_max
        self.bind_address = bind_address
        self._randbelow = randbelow or secrets.randbelow
        self._calls: dict[str, RtpSockets] = {}

    def allocate(self, call_id: str, towards: Hashable | None) -> tuple[str, int]:
        """Bind a pair for `call_id` (again: the pair it already has) and return (addr, port)."""
        existing = self._calls.get(call_id)
        if existing is not None:
            return existing.address, existing.port
        address = self.bind_address or local_ip_towards(_host_of(towards))
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        pairs = (self.port_max - self.port_min + 1) // 2
        if pairs <= 0:
            raise PortError(f"RTP port range {self.port_min}-{self.port_max} holds no pair")
        first = self._randbelow(pairs)
        for i in range(pairs):
            port = self.port_min + 2 * ((first + i) % pairs)
            pair = self._bind_pair(family, address, port)
            if pair is not None:
                sockets = RtpSockets(address, port, *pair)
                self._calls[call_id] = sockets
                log.debug("call %s: RTP on %s:%d", call_id, address, port)
                return address, port
        raise PortError(f"no free RTP port pair on {address} in {self.port_min}-{self.port_max}")

    @staticmethod
    def _bind_pair(
        family: int, address: str, port: int
    ) -> tuple[socket.socket, socket.socket] | None:
        rtp = socket.socket(family, socket.SOCK_DGRAM)
        rtcp = socket.socket(family, socket.SOCK_DGRAM)
        try:
            rtp.bind((address, port))
            rtcp.bind((address, port + 1))
        except OSError:
            rtp.close()
            rtcp.close()
            return None
        rtp.setblocking(False)
        rtcp.setblocking(False)
        return rtp, rtcp

    def sockets(self, call_id: str) -> RtpSockets:
        """The pair bound for `call_id`; KeyError naming the call if there is none."""
        try:
            return self._calls[call_id]
        except KeyError:
            raise KeyError(f"no RTP ports allocated for call {call_id!r}") from None

    def release(self, call_id: str) -> None:
        """The call is over: close its pair now, or when its media session lets go."""
        sockets = self._calls.pop(call_id, None)
        if sockets is None:
            return
        sockets.released = True
        if not sockets.claimed:
            sockets.close()

    def close(self) -> None:
        for call_id in list(self._calls):
            self.release(call_id)
            # the engine closes claimed pairs when it stops its sessions

    @property
    def in_use(self) -> dict[str, tuple[str, int]]:
        return {c: (s.address, s.port) for c, s in self._calls.items()}
