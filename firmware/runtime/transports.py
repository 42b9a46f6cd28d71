"""SIP transports on asyncio: UDP, TCP and TLS over IPv4 and IPv6.

This is the only socket code of the SIP stack. It moves bytes and nothing else: the sans-IO core
builds and interprets messages; this module frames and parses what arrives (the parser is used
only at this boundary, see `_parse_datagram` / `_stream_parser_factory`) and delivers it upward
through three callbacks:

- ``on_message(message, flow, now)``: a parsed SipRequest/SipResponse and the `Flow` it came on.
- ``on_bad_message(error, raw, flow)``: the parser rejected the bytes (``raw`` is the datagram,
  or for a stream the chunk read in which the defect surfaced). The UA may answer 400
  statelessly with `send_on_flow` *from inside the callback*, or ignore it. On a stream, an
  error that breaks framing (see `_breaks_framing`) closes the connection right after the
  callback returns (flushing what was written) and reports the flow failed; other errors
  (bad start line or header in a message the parser could skip) keep the connection.
- ``on_flow_failed(flow)``: a stream connection was lost, failed its keep-alive, broke framing or
  overflowed its buffer. Registration uses this to re-register (RFC 5626 4.4). Flows we close on
  purpose (`close_flow`, `stop`) are not reported.

A `Flow` names where a message came from and where a reply must go: for UDP the local listener
and the remote address; for TCP/TLS also the connection (by id), so responses go back on the
connection the request arrived on (RFC 3261 18.2.2). It is a plain hashable value the
transaction layer can store as its opaque ``source``/``dest``.

Sending: `send(data, Address)` resolves host names with ``loop.getaddrinfo`` (no DNS SRV/NAPTR,
see addresses.py), sends UDP from the listening socket of the destination's family (so replies
come back to the port in our Via), and for TCP/TLS reuses an open connection to the same address
(for TLS: to the same address *and* verified name) or opens one. `send(data, Flow)` and
`send_on_flow` write on an existing flow. Choosing TCP for large requests (RFC 3261 18.1.1) is the
UA's decision because it rewrites the Via; here an over-size datagram just raises.

TLS clients verify the server certificate against ``TlsConfig.ca_file`` (or the system store) and
check the host name we connected to (the target URI's host); only ``verify=False`` turns this off.
TLS listeners need a certificate and key and do not ask peers for client certificates; our own
client certificate (``cert_file``/``key_file``) is presented to servers that ask. TLS 1.2 is
the minimum (RFC 7525).

Limits, so a hostile peer costs bounded memory: datagrams over ``max_datagram`` are dropped on
receive (and refused on send); a stream holding more than ``max_stream_buffer`` bytes without a
complete message, or whose unsent data exceeds ``max_write_buffer`` (peer not reading), is
closed and reported failed; at most ``max_inbound_connections`` accepted connections.

Keep-alives (RFC 5626 3.5.1 / 4.4.1): `start_keepalive(flow, interval)` sends CRLFCRLF every
80-100% of ``interval`` and expects a CRLF pong within ``pong_timeout`` (10 s), else the flow is
aborted and reported failed. Pings from peers are answered with CRLF. UDP keep-alives in
RFC 5626 are STUN, which is not implemented: STUN datagrams and bare CRLF datagrams are dropped
silently.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import socket
import ssl
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from firmware.runtime.addresses import LOCALHOST, Address, family_of
from firmware.sip.errors import SipParseError
from firmware.sip.parser import KeepAlive, StreamParser, parse_message

if TYPE_CHECKING:
    from firmware.sip.message import SipRequest, SipResponse

    Message = SipRequest | SipResponse
else:
    Message = Any

log = logging.getLogger(__name__)

CRLF = b"\r\n"
PING = b"\r\n\r\n"
MAX_UDP_PAYLOAD = 65535
DEFAULT_PONG_TIMEOUT = 10.0  # RFC 5626 4.4.1
DEFAULT_MAX_STREAM_BUFFER = 128 * 1024
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_MAX_WRITE_BUFFER = 1024 * 1024
DEFAULT_MAX_INBOUND = 64  # a desk phone talks to a proxy or two, not to a crowd

OnMessage = Callable[[Any, "Flow", float], None]
OnBadMessage = Callable[[SipParseError, bytes, "Flow"], None]
OnFlowFailed = Callable[["Flow"], None]


class TransportError(Exception):
    """Sending or listening failed: no listener, resolution, connect or TLS failure, size."""


class FlowClosedError(TransportError):
    """The stream flow a message was to go out on is closed."""


class _Clock(Protocol):
    def now(self) -> float: ...


class _MonotonicClock:
    def now(self) -> float:
        return time.monotonic()


class _StreamParserLike(Protocol):
    def feed(self, data: bytes) -> list[Any]: ...


@dataclass(frozen=True)
class Flow:
    """Where a message came from / must go: transport, local and remote address, connection.

    ``conn_id`` is 0 for UDP and a unique number per TCP/TLS connection, so two flows compare
    equal exactly when they are the same UDP address pair or the same connection.
    """

    transport: str
    local: Address
    remote: Address
    conn_id: int = 0

    @property
    def is_stream(self) -> bool:
        return self.conn_id != 0

    def __str__(self) -> str:
        conn = f"#{self.conn_id}" if self.conn_id else ""
        return f"{self.transport}{conn} {self.local.sent_by}<->{self.remote.sent_by}"


@dataclass(frozen=True)
class TlsConfig:
    """TLS settings. ``verify=False`` disables server verification and must be asked for."""

    ca_file: str | None = None  # CA bundle for verifying servers; None -> system store
    verify: bool = True
    cert_file: str | None = None  # our certificate: needed to listen, optional client cert
    key_file: str | None = None

    def client_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.verify:
            ctx.check_hostname = True
            ctx.verify_mode = ssl.CERT_REQUIRED
            if self.ca_file:
                try:
                    ctx.load_verify_locations(cafile=self.ca_file)
                except (OSError, ssl.SSLError) as e:
                    raise TransportError(f"cannot load TLS CA file {self.ca_file}: {e}") from e
            else:
                ctx.load_default_certs()
        else:
            log.warning("TLS server certificate verification is DISABLED by configuration")
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if self.cert_file:
            self._load_chain(ctx)
        return ctx

    def server_context(self) -> ssl.SSLContext:
        if not self.cert_file:
            raise TransportError("a TLS listener needs tls cert_file and key_file")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        self._load_chain(ctx)
        return ctx

    def _load_chain(self, ctx: ssl.SSLContext) -> None:
        try:
            ctx.load_cert_chain(self.cert_file or "", self.key_file)
        except (OSError, ssl.SSLError) as e:
            raise TransportError(
                f"cannot load TLS certificate {self.cert_file} / key {self.key_file}: {e}"
            ) from e


class _Conn:
    """One TCP/TLS connection: its parser, keep-alive timers and the Flow that names it."""

    _ids = itertools.count(1)

    def __init__(self, transport_name: str, outbound: bool, tls_name: str | None, parser: Any):
        self.id = next(self._ids)
        self.transport_name = transport_name
        self.outbound = outbound
        self.tls_name = tls_name  # the verified server name (outbound TLS) or None
        self.parser: _StreamParserLike = parser
        self.transport: asyncio.Transport | None = None
        self.flow: Flow | None = None
        self.pending = 0  # bytes fed since the parser last produced something
        self.closed = False
        self.ka_interval: float | None = None
        self.pong_timeout = DEFAULT_PONG_TIMEOUT
        self.ping_timer: asyncio.TimerHandle | None = None
        self.pong_timer: asyncio.TimerHandle | None = None

    @property
    def pool_key(self) -> tuple[str, str, int, str | None]:
        assert self.flow is not None
        return (self.transport_name, self.flow.remote.host, self.flow.remote.port, self.tls_name)

    def cancel_timers(self) -> None:
        for timer in (self.ping_timer, self.pong_timer):
            if timer is not None:
                timer.cancel()
        self.ping_timer = self.pong_timer = None


class _StreamProtocol(asyncio.Protocol):
    def __init__(self, manager: TransportManager, conn: _Conn):
        self._manager = manager
        self._conn = conn

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._manager._conn_made(self._conn, transport)  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        self._manager._stream_data(self._conn, data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._manager._conn_lost(self._conn, exc)


class _UdpListener(asyncio.DatagramProtocol):
    def __init__(self, manager: TransportManager):
        self._manager = manager
        self.address: Address | None = None
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self._manager._datagram(self, data, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors (port unreachable...) from an earlier sendto; the transaction layer's
        # timers deal with the lost message.
        log.info("UDP %s: %s", self.address, exc)


def _addr(transport: str, sockaddr: tuple[Any, ...]) -> Address:
    return Address(transport, str(sockaddr[0]), int(sockaddr[1]))


class TransportManager:
    """Owns every SIP socket of the phone; see the module docstring for the contract."""

    def __init__(
        self,
        on_message: OnMessage,
        on_bad_message: OnBadMessage | None = None,
        on_flow_failed: OnFlowFailed | None = None,
        *,
        tls: TlsConfig | None = None,
        clock: _Clock | None = None,
        rng: random.Random | None = None,
        max_datagram: int = MAX_UDP_PAYLOAD,
        max_stream_buffer: int = DEFAULT_MAX_STREAM_BUFFER,
        max_write_buffer: int = DEFAULT_MAX_WRITE_BUFFER,
        max_inbound_connections: int = DEFAULT_MAX_INBOUND,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        parse_datagram: Callable[[bytes], Any] = parse_message,
        stream_parser_factory: Callable[[], _StreamParserLike] = StreamParser,
    ) -> None:
        self._on_message = on_message
        self._on_bad_message = on_bad_message
        self._on_flow_failed = on_flow_failed
        self._tls = tls or TlsConfig()
        # Built now when TLS is configured, so a bad CA file is reported at start-up rather
        # than at the first TLS send; without TLS config, loading the system store waits.
        self._client_ctx = tls.client_context() if tls is not None else None
        self._clock = clock or _MonotonicClock()
        # Keep-alive jitter only; not security relevant, so a plain PRNG is fine.
        self._rng = rng or random.Random()
        self.max_datagram = max_datagram
        self.max_stream_buffer = max_stream_buffer
        self.max_write_buffer = max_write_buffer
        self.max_inbound_connections = max_inbound_connections
        self.connect_timeout = connect_timeout
        self._parse_datagram = parse_datagram
        self._stream_parser_factory = stream_parser_factory
        self._udp: list[_UdpListener] = []
        self._servers: list[tuple[Address, asyncio.Server]] = []
        self._conns: dict[int, _Conn] = {}
        self._pool: dict[tuple[str, str, int, str | None], _Conn] = {}
        self._connect_locks: dict[tuple[str, str, int, str | None], asyncio.Lock] = {}

    # ---- lifecycle -------------------------------------------------------------------------

    async def start(self, listen: Iterable[Address]) -> None:
        """Bind every listener; port 0 picks a free port (see `local_address`)."""
        try:
            for address in listen:
                if address.host == "localhost":
                    address = address.with_host(LOCALHOST)
                if address.ip_version is None:
                    raise TransportError(f"cannot listen on {address}: host must be an IP address")
                if address.transport == "udp":
                    await self._listen_udp(address)
                else:
                    await self._listen_stream(address)
        except BaseException:
            await self.stop()
            raise

    async def _listen_udp(self, address: Address) -> None:
        family = socket.AF_INET6 if address.ip_version == 6 else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            if family == socket.AF_INET6:
                # Keep v4 and v6 listeners on the same port independent.
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address.sockaddr())
            sock.setblocking(False)
        except OSError as e:
            sock.close()
            raise TransportError(f"cannot listen on {address}: {e}") from e
        listener = _UdpListener(self)
        listener.address = _addr("udp", sock.getsockname())
        await asyncio.get_running_loop().create_datagram_endpoint(lambda: listener, sock=sock)
        self._udp.append(listener)
        log.info("listening on %s", listener.address)

    async def _listen_stream(self, address: Address) -> None:
        ctx = self._tls.server_context() if address.transport == "tls" else None
        loop = asyncio.get_running_loop()

        def factory() -> _StreamProtocol:
            conn = _Conn(address.transport, False, None, self._stream_parser_factory())
            return _StreamProtocol(self, conn)

        try:
            server = await loop.create_server(
                factory,
                address.host,
                address.port,
                ssl=ctx,
                reuse_address=True,
                ssl_handshake_timeout=self.connect_timeout if ctx else None,
            )
        except OSError as e:
            raise TransportError(f"cannot listen on {address}: {e}") from e
        bound = _addr(address.transport, server.sockets[0].getsockname())
        self._servers.append((bound, server))
        log.info("listening on %s", bound)

    async def stop(self) -> None:
        """Close every listener and connection without reporting them as failed."""
        for _, server in self._servers:
            server.close()
        for conn in list(self._conns.values()):
            self._drop(conn, "transport manager stopped", report=False, abort=True)
        for listener in self._udp:
            if listener.transport is not None:
                listener.transport.close()
        for _, server in self._servers:
            await server.wait_closed()
        self._servers.clear()
        self._udp.clear()

    async def __aenter__(self) -> TransportManager:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ---- addresses -------------------------------------------------------------------------

    @property
    def listeners(self) -> list[Address]:
        """The actually bound listening addresses, in start order per kind."""
        return [u.address for u in self._udp if u.address] + [a for a, _ in self._servers]

    def local_address(self, transport: str, family: int) -> Address:
        """The bound listener for ``transport`` and family (4/6 or AF_INET/AF_INET6).

        This is what goes into Via sent-by and Contact; for a wildcard bind (0.0.0.0 / ::) the
        UA must substitute a routable address itself (see `outbound_ip`).
        """
        version = family_of(family)
        for address in self.listeners:
            if address.transport == transport.lower() and address.ip_version == version:
                return address
        raise TransportError(f"no {transport} listener for IPv{version}")

    @staticmethod
    def outbound_ip(dest_ip: str) -> str:
        """The source IP the kernel would use towards ``dest_ip`` (no packet is sent)."""
        version = Address("udp", dest_ip, 9).ip_version
        if version is None:
            raise ValueError(f"{dest_ip!r} is not an IP address")
        family = socket.AF_INET6 if version == 6 else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.connect((dest_ip, 9))
            return str(s.getsockname()[0])

    def is_open(self, flow: Flow) -> bool:
        """True for UDP flows with a live listener and stream flows whose connection is open."""
        if not flow.is_stream:
            return self._udp_for_local(flow.local) is not None
        conn = self._conns.get(flow.conn_id)
        return conn is not None and not conn.closed

    # ---- sending ---------------------------------------------------------------------------

    async def send(self, data: bytes, dest: Address | Flow) -> Flow:
        """Send one message; returns the Flow used (a new or reused connection for TCP/TLS).

        Raises TransportError (resolution, connect, TLS verification, size, no listener).
        """
        if isinstance(dest, Flow):
            self.send_on_flow(dest, data)
            return dest
        if dest.transport == "udp":
            self._check_datagram_size(data, dest)
            for remote in await self._resolve(dest, socket.SOCK_DGRAM):
                listener = self._udp_for_version(remote.ip_version)
                if listener is not None and listener.address is not None:
                    flow = Flow("udp", listener.address, remote)
                    self.send_on_flow(flow, data)
                    return flow
            raise TransportError(f"no UDP listener of the right address family to reach {dest}")
        conn = await self._stream_conn_to(dest)
        assert conn.flow is not None
        self.send_on_flow(conn.flow, data)
        return conn.flow

    async def connect(self, dest: Address) -> Flow:
        """Open (or reuse) a TCP/TLS connection to ``dest`` without sending anything.

        The UA needs the connection's local address before it writes Via and Contact when the
        phone has no listener of that transport (e.g. TLS to the PBX, RFC 5626 style flows).
        """
        if not dest.is_stream:
            raise TransportError(f"connect() is for TCP/TLS, not {dest.transport}")
        conn = await self._stream_conn_to(dest)
        assert conn.flow is not None
        return conn.flow

    def has_listener(self, transport: str) -> bool:
        return any(a.transport == transport.lower() for a in self.listeners)

    def send_on_flow(self, flow: Flow, data: bytes) -> None:
        """Write on an existing flow right now (usable from inside callbacks)."""
        if not flow.is_stream:
            self._check_datagram_size(data, flow.remote)
            listener = self._udp_for_local(flow.local)
            if listener is None or listener.transport is None:
                raise FlowClosedError(f"no UDP listener {flow.local} for flow {flow}")
            listener.transport.sendto(data, flow.remote.sockaddr())
            return
        conn = self._conns.get(flow.conn_id)
        if conn is None or conn.closed or conn.transport is None or conn.transport.is_closing():
            raise FlowClosedError(f"connection {flow} is closed")
        if conn.transport.get_write_buffer_size() + len(data) > self.max_write_buffer:
            # The peer stopped reading; queueing more would only grow our memory.
            self._drop(conn, "peer is not reading", report=True, abort=True)
            raise FlowClosedError(f"connection {flow} closed: peer is not reading")
        conn.transport.write(data)

    def close_flow(self, flow: Flow) -> None:
        """Close a stream flow on purpose (flushes pending writes; not reported as failed)."""
        conn = self._conns.get(flow.conn_id)
        if conn is not None:
            self._drop(conn, "closed locally", report=False, abort=False)

    def _check_datagram_size(self, data: bytes, dest: Address) -> None:
        if len(data) > self.max_datagram:
            raise TransportError(
                f"message of {len(data)} bytes is too large for UDP to {dest} "
                f"(limit {self.max_datagram}); send it over TCP"
            )

    def _udp_for_version(self, version: int | None) -> _UdpListener | None:
        return next((u for u in self._udp if u.address and u.address.ip_version == version), None)

    def _udp_for_local(self, local: Address) -> _UdpListener | None:
        return next((u for u in self._udp if u.address == local), None)

    async def _resolve(self, dest: Address, socktype: int) -> list[Address]:
        """Numeric addresses for ``dest``: itself if numeric, else getaddrinfo's order."""
        if dest.ip_version is not None:
            return [dest]
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(dest.host, dest.port, type=socktype)
        except OSError as e:
            raise TransportError(f"cannot resolve {dest.host}: {e}") from e
        out: list[Address] = []
        for family, _, _, _, sockaddr in infos:
            if family in (socket.AF_INET, socket.AF_INET6):
                addr = Address(dest.transport, str(sockaddr[0]), dest.port)
                if addr not in out:
                    out.append(addr)
        if not out:
            raise TransportError(f"{dest.host} has no IPv4 or IPv6 address")
        return out

    async def _stream_conn_to(self, dest: Address) -> _Conn:
        # A TLS connection is only reused for the same verified name: a connection verified
        # as one host must not carry requests meant for another that shares its address.
        tls_name = dest.host if dest.transport == "tls" else None
        candidates = await self._resolve(dest, socket.SOCK_STREAM)
        key = (dest.transport, dest.host, dest.port, tls_name)
        lock = self._connect_locks.setdefault(key, asyncio.Lock())
        async with lock:  # one connect per destination even with concurrent senders
            for remote in candidates:
                conn = self._pool.get((dest.transport, remote.host, remote.port, tls_name))
                if conn is not None and not conn.closed:
                    return conn
            errors: list[str] = []
            for remote in candidates:
                try:
                    return await self._connect(remote, tls_name)
                except TransportError as e:
                    if isinstance(e.__cause__, ssl.SSLError):
                        raise  # a certificate problem is not fixed by another address
                    errors.append(str(e))
            raise TransportError("; ".join(errors))

    async def _connect(self, remote: Address, tls_name: str | None) -> _Conn:
        loop = asyncio.get_running_loop()
        conn = _Conn(remote.transport, True, tls_name, self._stream_parser_factory())
        kwargs: dict[str, Any] = {}
        if remote.transport == "tls":
            if self._client_ctx is None:
                self._client_ctx = self._tls.client_context()
            kwargs = {
                "ssl": self._client_ctx,
                "server_hostname": tls_name,
                "ssl_handshake_timeout": self.connect_timeout,
            }
        try:
            await asyncio.wait_for(
                loop.create_connection(
                    lambda: _StreamProtocol(self, conn), remote.host, remote.port, **kwargs
                ),
                self.connect_timeout,
            )
        except ssl.SSLCertVerificationError as e:
            raise TransportError(
                f"TLS certificate of {tls_name} at {remote.sent_by} rejected: {e.verify_message}"
            ) from e
        except ssl.SSLError as e:
            raise TransportError(f"TLS handshake with {remote} failed: {e.reason or e}") from e
        except TimeoutError as e:
            raise TransportError(f"connecting to {remote} timed out") from e
        except OSError as e:
            raise TransportError(f"cannot connect to {remote}: {e.strerror or e}") from e
        if conn.closed or conn.flow is None:
            raise FlowClosedError(f"connection to {remote} closed during set-up")
        log.info("connected %s", conn.flow)
        return conn

    # ---- receiving -------------------------------------------------------------------------

    def _call(self, callback: Callable[..., None] | None, *args: Any) -> None:
        """Run an upper-layer callback; its bugs are logged, never allowed to kill a socket."""
        if callback is None:
            return
        try:
            callback(*args)
        except Exception:
            log.exception("transport callback %s failed", getattr(callback, "__name__", callback))

    def _datagram(self, listener: _UdpListener, data: bytes, sockaddr: tuple[Any, ...]) -> None:
        assert listener.address is not None
        remote = _addr("udp", sockaddr)
        if len(data) > self.max_datagram:
            log.warning("dropped %d-byte datagram from %s: over the limit", len(data), remote)
            return
        if not data.strip(b"\r\n\t "):
            return  # CRLF keep-alive some UAs send over UDP
        if data[0] < 2:
            log.debug("dropped STUN-like datagram from %s", remote)  # RFC 5626 STUN: unsupported
            return
        flow = Flow("udp", listener.address, remote)
        now = self._clock.now()
        try:
            message = self._parse_datagram(data)
        except SipParseError as e:
            log.info("bad datagram from %s: %s", remote, e)
            self._call(self._on_bad_message, e, data, flow)
            return
        except Exception:
            log.exception("parser failed on a datagram from %s; dropped", remote)
            return
        self._call(self._on_message, message, flow, now)

    def _conn_made(self, conn: _Conn, transport: asyncio.Transport) -> None:
        conn.transport = transport
        if not conn.outbound:
            inbound = sum(1 for c in self._conns.values() if not c.outbound)
            if inbound >= self.max_inbound_connections:
                log.warning(
                    "refused connection from %s: %d inbound connections open",
                    transport.get_extra_info("peername"),
                    inbound,
                )
                conn.closed = True
                transport.abort()
                return
        name = conn.transport_name
        conn.flow = Flow(
            name,
            _addr(name, transport.get_extra_info("sockname")),
            _addr(name, transport.get_extra_info("peername")),
            conn.id,
        )
        self._conns[conn.id] = conn
        self._pool.setdefault(conn.pool_key, conn)
        if not conn.outbound:
            log.info("accepted %s", conn.flow)

    def _stream_data(self, conn: _Conn, data: bytes) -> None:
        if conn.closed or conn.flow is None:
            return
        flow = conn.flow
        try:
            items = conn.parser.feed(data)
        except Exception:
            log.exception("stream parser failed on %s", flow)
            self._drop(conn, "parser failure", report=True, abort=True)
            return
        # Bytes fed without producing anything are what the parser is holding for a message
        # still incomplete; bound them so a peer cannot make us buffer without limit.
        conn.pending = 0 if items else conn.pending + len(data)
        if conn.pending > self.max_stream_buffer:
            log.warning(
                "%s: over %d bytes without a complete message", flow, self.max_stream_buffer
            )
            self._drop(conn, "stream buffer limit", report=True, abort=True)
            return
        now = self._clock.now()
        for item in items:
            if conn.closed:
                return
            if isinstance(item, KeepAlive):
                self._keepalive_item(conn, item)
            elif isinstance(item, SipParseError):
                log.info("bad message on %s: %s", flow, item)
                self._call(self._on_bad_message, item, data, flow)
                if _breaks_framing(item):
                    # Close after the UA had its chance to answer (close() flushes that).
                    self._drop(conn, f"framing error: {item}", report=True, abort=False)
                    return
            else:
                self._call(self._on_message, item, flow, now)

    def _conn_lost(self, conn: _Conn, exc: Exception | None) -> None:
        self._drop(conn, f"connection lost: {exc or 'closed by peer'}", report=True, abort=False)

    def _drop(self, conn: _Conn, reason: str, *, report: bool, abort: bool) -> None:
        if conn.closed:
            return
        conn.closed = True
        conn.cancel_timers()
        self._conns.pop(conn.id, None)
        if conn.flow is not None and self._pool.get(conn.pool_key) is conn:
            del self._pool[conn.pool_key]
        if conn.transport is not None:
            conn.transport.abort() if abort else conn.transport.close()
        if conn.flow is None:
            return
        log.info("%s closed: %s", conn.flow, reason)
        if report:
            self._call(self._on_flow_failed, conn.flow)

    # ---- keep-alives (RFC 5626) ------------------------------------------------------------

    def start_keepalive(
        self, flow: Flow, interval: float, pong_timeout: float = DEFAULT_PONG_TIMEOUT
    ) -> None:
        """Ping ``flow`` every 80-100% of ``interval`` s; no pong within ``pong_timeout`` -> failed."""
        if not flow.is_stream:
            raise ValueError("CRLF keep-alives are for TCP/TLS flows (UDP would need STUN)")
        if interval <= 0 or pong_timeout <= 0:
            raise ValueError("keep-alive interval and pong timeout must be positive")
        conn = self._conns.get(flow.conn_id)
        if conn is None or conn.closed:
            raise FlowClosedError(f"connection {flow} is closed")
        conn.cancel_timers()
        conn.ka_interval = interval
        conn.pong_timeout = pong_timeout
        self._schedule_ping(conn)

    def stop_keepalive(self, flow: Flow) -> None:
        conn = self._conns.get(flow.conn_id)
        if conn is not None:
            conn.ka_interval = None
            conn.cancel_timers()

    def _schedule_ping(self, conn: _Conn) -> None:
        assert conn.ka_interval is not None
        delay = conn.ka_interval * (0.8 + 0.2 * self._rng.random())
        conn.ping_timer = asyncio.get_running_loop().call_later(delay, self._send_ping, conn)

    def _send_ping(self, conn: _Conn) -> None:
        conn.ping_timer = None
        if conn.closed or conn.transport is None:
            return
        conn.transport.write(PING)
        conn.pong_timer = asyncio.get_running_loop().call_later(
            conn.pong_timeout, self._pong_missing, conn
        )

    def _pong_missing(self, conn: _Conn) -> None:
        conn.pong_timer = None
        log.warning("%s: no keep-alive pong within %.1f s", conn.flow, conn.pong_timeout)
        self._drop(conn, "keep-alive timeout", report=True, abort=True)

    def _keepalive_item(self, conn: _Conn, item: Any) -> None:
        if item.kind == "ping":
            if conn.transport is not None:
                conn.transport.write(CRLF)
            return
        if conn.pong_timer is None:
            return  # unsolicited pong (or a stray CRLF between messages): ignore
        conn.pong_timer.cancel()
        conn.pong_timer = None
        if conn.ka_interval is not None:
            self._schedule_ping(conn)


def _breaks_framing(error: SipParseError) -> bool:
    """True when the stream parser can no longer know where the next message starts.

    The parser resynchronises after a bad start line or header (it skips the body using the
    Content-Length it could read), so such errors keep the connection. It cannot when the
    Content-Length itself is missing, unreadable or conflicting, or when it dropped its buffer
    over the size limit (status 513). The parser has no explicit flag for this yet, so this
    reads the error's status and reason.
    """
    return error.status == 513 or "content-length" in error.reason.lower()
