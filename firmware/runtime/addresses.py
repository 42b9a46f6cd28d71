"""Transport addresses: what a SIP transport listens on or sends to.

An `Address` is a value (frozen, hashable) naming a transport, a host and a port. Hosts are kept
without IPv6 brackets; IP literals are normalised (``0:0::1`` -> ``::1``) so that an address
built from config compares equal to the one the kernel reports for a socket.

`resolve_target` is the part of RFC 3263 this phone implements: it turns a SIP URI into the
transport, host and port to contact. It does NOT do NAPTR or SRV lookups (no DNS library here,
and the PBXs we target are reached by a configured host name or address); a host name is left as
it is and resolved later, asynchronously, with ``loop.getaddrinfo`` by the transport manager.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass
from typing import Any, Protocol

TRANSPORTS = ("udp", "tcp", "tls")
STREAM_TRANSPORTS = frozenset({"tcp", "tls"})
DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061}
LOCALHOST = "127.0.0.1"

# "transport:host:port" where host is an IPv4 literal, [IPv6 literal] or a name.
_LISTEN_RE = re.compile(
    r"^(?P<transport>[A-Za-z]+):(?:\[(?P<v6>[^\]]+)\]|(?P<host>[^:\[\]]+)):(?P<port>\d+)$"
)


def ip_version(host: str) -> int | None:
    """4 or 6 for an IP literal (brackets allowed), None for a host name."""
    try:
        return ipaddress.ip_address(host.strip("[]")).version
    except ValueError:
        return None


def normalise_host(host: str) -> str:
    """Strip IPv6 brackets and canonicalise IP literals; lower-case host names (RFC 3261 19.1.4)."""
    bare = host.strip()
    if bare.startswith("[") and bare.endswith("]"):
        bare = bare[1:-1]
    try:
        return str(ipaddress.ip_address(bare))
    except ValueError:
        return bare.lower()


def family_of(family: int) -> int:
    """Accept 4/6 or socket.AF_INET/AF_INET6 and return 4 or 6."""
    if family in (4, socket.AF_INET):
        return 4
    if family in (6, socket.AF_INET6):
        return 6
    raise ValueError(f"unknown address family {family!r}: use 4, 6, socket.AF_INET or AF_INET6")


@dataclass(frozen=True)
class Address:
    """A transport endpoint: transport ("udp"|"tcp"|"tls"), host (no brackets) and port."""

    transport: str
    host: str
    port: int

    def __post_init__(self) -> None:
        transport = self.transport.lower()
        if transport not in TRANSPORTS:
            raise ValueError(
                f"unknown transport {self.transport!r}: expected one of {', '.join(TRANSPORTS)}"
            )
        if not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise ValueError(f"port {self.port!r} out of range 0-65535")
        host = normalise_host(self.host)
        if not host:
            raise ValueError("empty host")
        object.__setattr__(self, "transport", transport)
        object.__setattr__(self, "host", host)

    @property
    def ip_version(self) -> int | None:
        """4 or 6 when the host is an IP literal, None for a host name."""
        return ip_version(self.host)

    @property
    def is_stream(self) -> bool:
        return self.transport in STREAM_TRANSPORTS

    @property
    def via_transport(self) -> str:
        """The Via sent-protocol transport token: "UDP", "TCP" or "TLS"."""
        return self.transport.upper()

    @property
    def host_for_uri(self) -> str:
        """The host as it is written in a URI or Via: IPv6 literals in brackets."""
        return f"[{self.host}]" if self.ip_version == 6 else self.host

    @property
    def sent_by(self) -> str:
        """Via sent-by / hostport: ``host:port`` with IPv6 brackets."""
        return f"{self.host_for_uri}:{self.port}"

    def sockaddr(self) -> tuple[str, int]:
        """The (host, port) pair asyncio/socket calls take."""
        return (self.host, self.port)

    def with_transport(self, transport: str) -> Address:
        return Address(transport, self.host, self.port)

    def with_host(self, host: str) -> Address:
        return Address(self.transport, host, self.port)

    def __str__(self) -> str:
        return f"{self.transport}:{self.sent_by}"


def parse_listen(text: str) -> Address:
    """Parse a listen spec like ``udp:0.0.0.0:5060`` or ``tls:[::1]:5061``.

    The host must be an IP literal (a listener binds to an interface address, and resolving a
    name at start-up would make the bound family depend on DNS); ``localhost`` is accepted as
    127.0.0.1. Port 0 asks for a free port.
    """
    m = _LISTEN_RE.match(text.strip())
    if not m:
        raise ValueError(
            f"bad listen address {text!r}: expected transport:host:port, "
            "e.g. udp:0.0.0.0:5060 or tls:[::1]:5061"
        )
    host = m.group("v6") or m.group("host")
    if not m.group("v6") and host.lower() == "localhost":
        host = LOCALHOST  # same meaning as in the config file; bound as IPv4 loopback
    version = ip_version(host)
    if version is None:
        raise ValueError(f"bad listen address {text!r}: host {host!r} is not an IP address")
    if m.group("v6") and version != 6:
        raise ValueError(f"bad listen address {text!r}: brackets are only for IPv6 addresses")
    if not m.group("v6") and version == 6:
        raise ValueError(f"bad listen address {text!r}: write IPv6 addresses in brackets")
    try:
        return Address(m.group("transport"), host, int(m.group("port")))
    except ValueError as e:
        raise ValueError(f"bad listen address {text!r}: {e}") from None


class SipUriLike(Protocol):
    """The parts of `firmware.sip.uri.SipURI` that routing needs."""

    scheme: str
    host: str
    port: int | None
    params: dict[str, str | None]


def resolve_target(uri: SipUriLike | Any, default_transport: str = "udp") -> Address:
    """Pick transport, host and port for a SIP/SIPS URI (RFC 3263 4.1/4.2 without DNS).

    - a ``maddr`` parameter overrides the host (RFC 3261 19.1.1);
    - ``transport=`` picks the transport; a ``sips`` URI means TLS (``transport=tcp`` and
      ``transport=tls`` are accepted with sips, anything else is an error: RFC 3261 26.2.2);
    - no transport param: ``default_transport`` (RFC 3263 says UDP when there is no NAPTR);
    - no port: 5060, or 5061 for TLS.
    The host may be a name; resolving it is left to the transport manager (getaddrinfo).
    """
    scheme = str(getattr(uri, "scheme", "")).lower()
    if scheme not in ("sip", "sips"):
        raise ValueError(f"cannot route to {uri}: only sip: and sips: URIs can be routed")
    params = {str(k).lower(): v for k, v in (getattr(uri, "params", None) or {}).items()}
    param = params.get("transport")
    param = param.lower() if isinstance(param, str) else None
    if scheme == "sips":
        if param not in (None, "tcp", "tls"):
            raise ValueError(f"sips URI with transport={param}: SIPS needs TLS over TCP")
        transport = "tls"
    elif param is not None:
        if param not in TRANSPORTS:
            raise ValueError(f"unsupported transport={param} in URI: expected udp, tcp or tls")
        transport = param
    else:
        transport = default_transport
    host = params.get("maddr") or getattr(uri, "host", None)
    if not host:
        raise ValueError("URI has no host to route to")
    port = getattr(uri, "port", None)
    return Address(transport, str(host), int(port) if port else DEFAULT_PORTS[transport])
