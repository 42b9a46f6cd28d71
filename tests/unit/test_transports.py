"""Transports over real loopback sockets: UDP/TCP/TLS, IPv4/IPv6, framing, keep-alives.

No sleeps: every wait is a bounded ``asyncio.wait_for`` on a queue, future or event that the
code under test (or a raw peer socket) completes. Raw peers check the bytes on the wire.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from firmware.runtime.addresses import Address, parse_listen, resolve_target
from firmware.runtime.transports import (
    PING,
    Flow,
    FlowClosedError,
    TlsConfig,
    TransportError,
    TransportManager,
)
from firmware.sip.errors import SipParseError
from firmware.sip.parser import StreamParser
from firmware.sip.uri import parse_uri
from tests.conftest import skip_or_fail

TIMEOUT = 5.0  # upper bound for any wait; tests finish far sooner


def options(branch: str = "z9hG4bK1", host: str = "127.0.0.1:5999", body: bytes = b"") -> bytes:
    return (
        f"OPTIONS sip:bob@example.org SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {host};branch={branch}\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:alice@example.org>;tag=a1\r\n"
        "To: <sip:bob@example.org>\r\n"
        f"Call-ID: {branch}-call\r\n"
        "CSeq: 1 OPTIONS\r\n"
        f"Content-Length: {len(body)}\r\n"
        "\r\n"
    ).encode() + body


def ok_response(branch: str = "z9hG4bK1") -> bytes:
    return (
        "SIP/2.0 200 OK\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5999;branch={branch}\r\n"
        "From: <sip:alice@example.org>;tag=a1\r\n"
        "To: <sip:bob@example.org>;tag=b1\r\n"
        f"Call-ID: {branch}-call\r\n"
        "CSeq: 1 OPTIONS\r\n"
        "Content-Length: 0\r\n"
        "\r\n"
    ).encode()


class Recorder:
    """Collects what a TransportManager reports, as queues the test can await."""

    def __init__(self) -> None:
        self.messages: asyncio.Queue[tuple[Any, Flow, float]] = asyncio.Queue()
        self.bad: asyncio.Queue[tuple[SipParseError, bytes, Flow]] = asyncio.Queue()
        self.failed: asyncio.Queue[Flow] = asyncio.Queue()

    def on_message(self, message: Any, flow: Flow, now: float) -> None:
        self.messages.put_nowait((message, flow, now))

    def on_bad_message(self, error: SipParseError, raw: bytes, flow: Flow) -> None:
        self.bad.put_nowait((error, raw, flow))

    def on_flow_failed(self, flow: Flow) -> None:
        self.failed.put_nowait(flow)

    async def message(self) -> tuple[Any, Flow, float]:
        return await asyncio.wait_for(self.messages.get(), TIMEOUT)

    async def bad_message(self) -> tuple[SipParseError, bytes, Flow]:
        return await asyncio.wait_for(self.bad.get(), TIMEOUT)

    async def flow_failed(self) -> Flow:
        return await asyncio.wait_for(self.failed.get(), TIMEOUT)


class FixedClock:
    def now(self) -> float:
        return 1234.5


Factory = Callable[..., Any]


@pytest.fixture
async def manager() -> AsyncIterator[Factory]:
    """Start TransportManagers with a Recorder; all are stopped at teardown."""
    started: list[TransportManager] = []

    async def make(
        listen: list[str], on_bad: Callable[..., None] | None = None, **kwargs: Any
    ) -> tuple[TransportManager, Recorder]:
        rec = Recorder()
        mgr = TransportManager(
            rec.on_message,
            on_bad or rec.on_bad_message,
            rec.on_flow_failed,
            clock=FixedClock(),
            **kwargs,
        )
        started.append(mgr)
        await mgr.start([parse_listen(spec) for spec in listen])
        return mgr, rec

    yield make
    for mgr in started:
        await mgr.stop()


def ipv6_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def raw_udp(host: str) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    sock.setblocking(False)
    return sock


async def recv_udp(sock: socket.socket) -> tuple[bytes, tuple[Any, ...]]:
    loop = asyncio.get_running_loop()
    return await asyncio.wait_for(loop.sock_recvfrom(sock, 70000), TIMEOUT)


# ---- addresses -------------------------------------------------------------------------------


def test_parse_listen_ipv4_ipv6_and_formatting() -> None:
    a = parse_listen("udp:0.0.0.0:5060")
    assert (a.transport, a.host, a.port) == ("udp", "0.0.0.0", 5060)
    assert a.via_transport == "UDP" and a.sent_by == "0.0.0.0:5060" and a.ip_version == 4
    b = parse_listen("TLS:[0:0::1]:5061")
    assert (b.transport, b.host, b.port) == ("tls", "::1", 5061)
    assert b.via_transport == "TLS" and b.sent_by == "[::1]:5061" and str(b) == "tls:[::1]:5061"
    assert b == Address("tls", "[::1]", 5061)  # brackets and spelling normalised
    assert parse_listen(str(b)) == b
    assert parse_listen("tcp:localhost:0") == Address("tcp", "127.0.0.1", 0)


@pytest.mark.parametrize(
    "spec, needle",
    [
        ("sctp:0.0.0.0:5060", "unknown transport"),
        ("udp:0.0.0.0", "expected transport:host:port"),
        ("udp:pbx.example:5060", "not an IP address"),
        ("udp:[localhost]:5060", "not an IP address"),
        ("udp:::1:5060", "expected transport:host:port"),
        ("udp:[127.0.0.1]:5060", "only for IPv6"),
        ("tcp:127.0.0.1:70000", "out of range"),
    ],
)
def test_parse_listen_rejects_with_reason(spec: str, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        parse_listen(spec)


@pytest.mark.parametrize(
    "uri, expected",
    [
        ("sip:pbx.example", Address("udp", "pbx.example", 5060)),
        ("sip:1001@PBX.example:5070;transport=TCP", Address("tcp", "pbx.example", 5070)),
        ("sips:pbx.example", Address("tls", "pbx.example", 5061)),
        ("sips:pbx.example;transport=tcp", Address("tls", "pbx.example", 5061)),
        ("sip:pbx.example;transport=tls", Address("tls", "pbx.example", 5061)),
        ("sip:[2001:db8::1]", Address("udp", "2001:db8::1", 5060)),
        ("sip:pbx.example;maddr=192.0.2.7", Address("udp", "192.0.2.7", 5060)),
    ],
)
def test_resolve_target(uri: str, expected: Address) -> None:
    assert resolve_target(parse_uri(uri)) == expected


def test_resolve_target_default_transport_and_errors() -> None:
    assert resolve_target(parse_uri("sip:pbx.example"), "tcp") == Address(
        "tcp", "pbx.example", 5060
    )
    with pytest.raises(ValueError, match="SIPS needs TLS"):
        resolve_target(parse_uri("sips:pbx.example;transport=udp"))
    with pytest.raises(ValueError, match="unsupported transport=sctp"):
        resolve_target(parse_uri("sip:pbx.example;transport=sctp"))
    with pytest.raises(ValueError, match="tel"):
        resolve_target(parse_uri("tel:+15551234"))


# ---- UDP -------------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
async def test_udp_round_trip(manager: Factory, host: str) -> None:
    if host == "::1" and not ipv6_available():
        skip_or_fail("::1 is not configured on this machine")
    spec = f"udp:[{host}]:0" if ":" in host else f"udp:{host}:0"
    mgr, rec = await manager([spec])
    local = mgr.local_address("udp", 6 if ":" in host else socket.AF_INET)
    assert local.port != 0 and local.host == host
    peer = raw_udp(host)
    loop = asyncio.get_running_loop()
    peer_addr = Address("udp", host, peer.getsockname()[1])

    # inbound request -> on_message with the flow naming both ends and the clock's now
    await loop.sock_sendto(peer, options(), local.sockaddr())
    msg, flow, now = await rec.message()
    assert msg.method == "OPTIONS" and msg.cseq.number == 1
    assert flow == Flow("udp", local, peer_addr) and now == 1234.5

    # the response goes back on that flow: exact bytes, from the listening port
    assert await mgr.send(ok_response(), flow) == flow
    data, src = await recv_udp(peer)
    assert data == ok_response() and src[1] == local.port

    # a request to an Address leaves from the listening socket of that family
    out_flow = await mgr.send(options("z9hG4bK2"), peer_addr)
    assert out_flow == Flow("udp", local, peer_addr)
    data, src = await recv_udp(peer)
    assert data == options("z9hG4bK2") and src[1] == local.port
    peer.close()


async def test_udp_garbage_reported_and_transport_keeps_working(manager: Factory) -> None:
    calls = 0

    def explode_then_record(error: SipParseError, raw: bytes, flow: Flow) -> None:
        nonlocal calls
        calls += 1
        rec.on_bad_message(error, raw, flow)
        # The UA may answer statelessly from the callback; a buggy callback must not kill us.
        mgr.send_on_flow(flow, b"SIP/2.0 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        raise RuntimeError("bug in upper layer")

    mgr, rec = await manager(["udp:127.0.0.1:0"], on_bad=explode_then_record)
    local = mgr.local_address("udp", 4)
    peer = raw_udp("127.0.0.1")
    loop = asyncio.get_running_loop()
    garbage = b"\x7fELF not SIP at all\r\n\r\n"
    await loop.sock_sendto(peer, garbage, local.sockaddr())
    error, raw, flow = await rec.bad_message()
    assert isinstance(error, SipParseError) and error.status == 400
    assert raw == garbage and flow.remote.port == peer.getsockname()[1]
    data, _ = await recv_udp(peer)
    assert data.startswith(b"SIP/2.0 400 Bad Request\r\n")

    # Keep-alive CRLFs, STUN-like and over-size datagrams are dropped silently.
    await loop.sock_sendto(peer, b"\r\n\r\n", local.sockaddr())
    await loop.sock_sendto(
        peer, b"\x00\x01\x00\x00" + b"\x21\x12\xa4\x42" + bytes(12), local.sockaddr()
    )
    mgr.max_datagram = 1000
    await loop.sock_sendto(peer, options("z9hG4bKbig", body=b"x" * 2000), local.sockaddr())
    await loop.sock_sendto(peer, options("z9hG4bKok"), local.sockaddr())
    msg, _, _ = await rec.message()
    assert msg.top_via.branch == "z9hG4bKok"  # the first thing delivered after the garbage
    assert rec.bad.empty() and rec.messages.empty() and calls == 1

    with pytest.raises(TransportError, match="too large for UDP"):
        await mgr.send(b"x" * 1001, Address("udp", "127.0.0.1", peer.getsockname()[1]))
    peer.close()


async def test_udp_send_to_host_name_picks_family_with_listener(manager: Factory) -> None:
    mgr, _ = await manager(["udp:127.0.0.1:0"])
    peer = raw_udp("127.0.0.1")
    # "localhost" may resolve to ::1 first; only the IPv4 listener can reach it.
    flow = await mgr.send(options(), Address("udp", "localhost", peer.getsockname()[1]))
    assert flow.remote == Address("udp", "127.0.0.1", peer.getsockname()[1])
    data, _ = await recv_udp(peer)
    assert data == options()
    assert mgr.outbound_ip("127.0.0.1") == "127.0.0.1"
    assert mgr.listeners == [flow.local]
    peer.close()


async def test_udp_send_without_listener_of_family_fails(manager: Factory) -> None:
    mgr, _ = await manager([])
    await mgr.start([Address("udp", "localhost", 0)])  # as the config file allows
    assert mgr.local_address("udp", 4).host == "127.0.0.1"
    with pytest.raises(TransportError, match="no UDP listener"):
        await mgr.send(options(), Address("udp", "::1", 5060))
    with pytest.raises(TransportError, match="no tcp listener for IPv6"):
        mgr.local_address("tcp", socket.AF_INET6)


# ---- TCP -------------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
async def test_tcp_connect_reuse_and_response_on_same_connection(
    manager: Factory, host: str
) -> None:
    if host == "::1" and not ipv6_available():
        skip_or_fail("::1 is not configured on this machine")
    version = 6 if ":" in host else 4
    listen = f"tcp:[{host}]:0" if version == 6 else f"tcp:{host}:0"
    client, crec = await manager([])
    server, srec = await manager([listen])
    dest = server.local_address("tcp", version)

    flow1 = await client.send(options("z9hG4bKa"), dest)
    msg, sflow, _ = await srec.message()
    assert msg.top_via.branch == "z9hG4bKa"
    assert flow1.transport == "tcp" and flow1.is_stream and flow1.remote == dest
    assert sflow.remote == flow1.local and sflow.local == flow1.remote

    flow2 = await client.send(options("z9hG4bKb"), Address("tcp", host, dest.port))
    msg, sflow2, _ = await srec.message()
    assert flow2 == flow1 and sflow2 == sflow  # reused, one connection
    assert msg.top_via.branch == "z9hG4bKb"

    await server.send(ok_response("z9hG4bKa"), sflow)  # RFC 3261 18.2.2: same connection
    msg, cflow, _ = await crec.message()
    assert msg.status == 200 and cflow == flow1

    # A send to another port opens a second connection.
    server2, srec2 = await manager([listen])
    flow3 = await client.send(options("z9hG4bKc"), server2.local_address("tcp", version))
    assert flow3 != flow1 and flow3.conn_id != flow1.conn_id
    assert (await srec2.message())[0].top_via.branch == "z9hG4bKc"


async def test_concurrent_sends_share_one_connection(manager: Factory) -> None:
    client, _ = await manager([])
    server, srec = await manager(["tcp:127.0.0.1:0"])
    dest = server.local_address("tcp", 4)
    flows = await asyncio.gather(*(client.send(options(f"z9hG4bK{i}"), dest) for i in range(5)))
    assert len(set(flows)) == 1
    received = [await srec.message() for _ in range(5)]
    assert {m.top_via.branch for m, _, _ in received} == {f"z9hG4bK{i}" for i in range(5)}
    assert len({f for _, f, _ in received}) == 1


async def test_tcp_connect_refused_is_a_clear_error(manager: Factory) -> None:
    client, _ = await manager([])
    with socket.socket() as s:  # a port that is certainly closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(TransportError, match=f"cannot connect to tcp:127.0.0.1:{port}"):
        await client.send(options(), Address("tcp", "127.0.0.1", port))


class SpyParser:
    """The real StreamParser, reporting each feed() so tests can sequence their writes."""

    def __init__(self, feeds: asyncio.Queue[tuple[bytes, list[Any]]]) -> None:
        self._inner = StreamParser()
        self._feeds = feeds

    def feed(self, data: bytes) -> list[Any]:
        items = self._inner.feed(data)
        self._feeds.put_nowait((data, items))
        return items


async def test_stream_framing_split_reads_and_many_per_read(manager: Factory) -> None:
    feeds: asyncio.Queue[tuple[bytes, list[Any]]] = asyncio.Queue()
    server, srec = await manager(
        ["tcp:127.0.0.1:0"], stream_parser_factory=lambda: SpyParser(feeds)
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", server.local_address("tcp", 4).port)

    first = options("z9hG4bKsplit", body=b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\n")
    cuts = [0, 20, len(first) - 10, len(first)]  # inside the start line, inside the body
    for a, b in zip(cuts, cuts[1:], strict=False):
        writer.write(first[a:b])
        await writer.drain()
        data, items = await asyncio.wait_for(feeds.get(), TIMEOUT)
        assert data == first[a:b]  # each piece really was a separate read
        assert len(items) == (1 if b == len(first) else 0)
    msg, _, _ = await srec.message()
    assert (
        msg.top_via.branch == "z9hG4bKsplit" and msg.body == b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\n"
    )

    writer.write(options("z9hG4bKone") + options("z9hG4bKtwo", body=b"hello"))
    await writer.drain()
    data, items = await asyncio.wait_for(feeds.get(), TIMEOUT)
    assert len(items) == 2
    m1, f1, _ = await srec.message()
    m2, f2, _ = await srec.message()
    assert [m1.top_via.branch, m2.top_via.branch] == ["z9hG4bKone", "z9hG4bKtwo"]
    assert m2.body == b"hello" and f1 == f2
    writer.close()


async def test_stream_framing_error_closes_connection(manager: Factory) -> None:
    def answer_400(error: SipParseError, raw: bytes, flow: Flow) -> None:
        srec.on_bad_message(error, raw, flow)
        server.send_on_flow(flow, f"SIP/2.0 400 {error.reason}\r\n\r\n".encode())

    server, srec = await manager(["tcp:127.0.0.1:0"], on_bad=answer_400)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.local_address("tcp", 4).port)
    bad = options().replace(b"Content-Length: 0", b"Content-Length: lots")
    writer.write(bad)
    error, raw, flow = await srec.bad_message()
    assert isinstance(error, SipParseError) and raw == bad
    assert await srec.flow_failed() == flow and not server.is_open(flow)
    # The 400 written from the callback is flushed before the close.
    reply = await asyncio.wait_for(reader.read(), TIMEOUT)
    assert reply.startswith(b"SIP/2.0 400 ") and reply.endswith(b"\r\n\r\n")
    with pytest.raises(FlowClosedError):
        server.send_on_flow(flow, ok_response())
    writer.close()


async def test_stream_bad_header_keeps_connection(manager: Factory) -> None:
    server, srec = await manager(["tcp:127.0.0.1:0"])
    reader, writer = await asyncio.open_connection("127.0.0.1", server.local_address("tcp", 4).port)
    # A header line without a colon: the message is rejected, but its Content-Length is
    # readable, so the parser skips its body and the next message is framed correctly.
    bad = options("z9hG4bKbad", body=b"abc").replace(b"Max-Forwards: 70", b"Max-Forwards 70")
    writer.write(bad + options("z9hG4bKgood"))
    error, _, flow = await srec.bad_message()
    assert "colon" in error.reason
    msg, good_flow, _ = await srec.message()
    assert msg.top_via.branch == "z9hG4bKgood" and good_flow == flow
    assert server.is_open(flow) and srec.failed.empty()
    writer.close()


async def test_stream_buffer_limit_closes_connection(manager: Factory) -> None:
    server, srec = await manager(["tcp:127.0.0.1:0"], max_stream_buffer=4096)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.local_address("tcp", 4).port)
    writer.write(b"OPTIONS sip:x SIP/2.0\r\nX-Long: " + b"a" * 10000)
    flow = await srec.flow_failed()
    assert flow.remote.port == writer.get_extra_info("sockname")[1]
    assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""
    assert srec.messages.empty()
    writer.close()


async def test_peer_not_reading_fails_flow_instead_of_buffering(manager: Factory) -> None:
    client, crec = await manager([], max_write_buffer=64 * 1024)
    stalled: list[asyncio.StreamWriter] = []

    async def never_read(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stalled.append(writer)

    peer = await asyncio.start_server(never_read, "127.0.0.1", 0)
    dest = Address("tcp", "127.0.0.1", peer.sockets[0].getsockname()[1])
    flow = await client.send(options(), dest)
    chunk = b"x" * 32 * 1024
    with pytest.raises(FlowClosedError, match="peer is not reading"):
        for _ in range(4000):  # the kernel buffers take a few MB before our buffer grows
            client.send_on_flow(flow, chunk)
    assert await crec.flow_failed() == flow and not client.is_open(flow)
    for w in stalled:
        w.close()
    peer.close()
    await peer.wait_closed()


async def test_inbound_connection_limit(manager: Factory) -> None:
    server, srec = await manager(["tcp:127.0.0.1:0"], max_inbound_connections=1)
    port = server.local_address("tcp", 4).port
    r1, w1 = await asyncio.open_connection("127.0.0.1", port)
    w1.write(options("z9hG4bKfirst"))
    assert (await srec.message())[0].top_via.branch == "z9hG4bKfirst"
    r2, w2 = await asyncio.open_connection("127.0.0.1", port)
    with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
        await asyncio.wait_for(r2.readexactly(1), TIMEOUT)  # refused: aborted at once
    w1.write(PING)
    assert await asyncio.wait_for(r1.readexactly(2), TIMEOUT) == b"\r\n"  # first still served
    w1.close()
    w2.close()


async def test_peer_ping_is_answered_with_crlf(manager: Factory) -> None:
    server, srec = await manager(["tcp:127.0.0.1:0"])
    reader, writer = await asyncio.open_connection("127.0.0.1", server.local_address("tcp", 4).port)
    writer.write(PING)
    assert await asyncio.wait_for(reader.readexactly(2), TIMEOUT) == b"\r\n"
    writer.write(PING)
    assert await asyncio.wait_for(reader.readexactly(2), TIMEOUT) == b"\r\n"
    assert srec.messages.empty() and srec.bad.empty()
    writer.close()


class RawServer:
    """A TCP peer that reads one request, then reads pings and answers them if told to."""

    def __init__(self, answer_pings: bool) -> None:
        self.answer_pings = answer_pings
        self.requests: asyncio.Queue[bytes] = asyncio.Queue()
        self.pings: asyncio.Queue[bytes] = asyncio.Queue()
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> Address:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return Address("tcp", "127.0.0.1", self.server.sockets[0].getsockname()[1])

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        try:
            self.requests.put_nowait(await reader.readuntil(b"\r\n\r\n"))
            while True:
                self.pings.put_nowait(await reader.readexactly(len(PING)))
                if self.answer_pings:
                    writer.write(b"\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            pass

    async def close(self) -> None:
        for w in self.writers:
            w.close()
        if self.server:
            self.server.close()
            await self.server.wait_closed()


async def test_keepalive_pong_keeps_flow_and_pings_continue(manager: Factory) -> None:
    client, crec = await manager([])
    peer = RawServer(answer_pings=True)
    flow = await client.send(options(), await peer.start())
    assert await asyncio.wait_for(peer.requests.get(), TIMEOUT) == options()
    client.start_keepalive(flow, interval=0.02, pong_timeout=2.0)
    for _ in range(3):  # a next ping is only scheduled once the previous pong arrived
        assert await asyncio.wait_for(peer.pings.get(), TIMEOUT) == PING
    assert client.is_open(flow) and crec.failed.empty()
    client.stop_keepalive(flow)
    await peer.close()


async def test_keepalive_without_pong_fails_flow(manager: Factory) -> None:
    client, crec = await manager([])
    peer = RawServer(answer_pings=False)
    flow = await client.send(options(), await peer.start())
    client.start_keepalive(flow, interval=0.02, pong_timeout=0.05)
    assert await asyncio.wait_for(peer.pings.get(), TIMEOUT) == PING
    assert await crec.flow_failed() == flow
    assert not client.is_open(flow)
    with pytest.raises(FlowClosedError):
        await client.send(options(), flow)
    # The next send to that address opens a new connection.
    new_flow = await client.send(options("z9hG4bKnew"), flow.remote)
    assert new_flow != flow and client.is_open(new_flow)
    assert crec.failed.empty()
    await peer.close()


async def test_keepalive_rejects_udp_flows(manager: Factory) -> None:
    mgr, _ = await manager(["udp:127.0.0.1:0"])
    flow = Flow("udp", mgr.local_address("udp", 4), Address("udp", "127.0.0.1", 9))
    with pytest.raises(ValueError, match="STUN"):
        mgr.start_keepalive(flow, 30)


async def test_connection_closed_by_peer_fails_flow(manager: Factory) -> None:
    client, crec = await manager([])
    server, srec = await manager(["tcp:127.0.0.1:0"])
    cflow = await client.send(options(), server.local_address("tcp", 4))
    _, sflow, _ = await srec.message()
    server.close_flow(sflow)  # closed on purpose: not a failure for the server...
    assert await crec.flow_failed() == cflow  # ...but a loss for the client
    assert srec.failed.empty() and not client.is_open(cflow)

    # Inbound side: the peer hanging up is reported too.
    reader, writer = await asyncio.open_connection("127.0.0.1", server.local_address("tcp", 4).port)
    writer.write(options("z9hG4bKin"))
    _, inflow, _ = await srec.message()
    writer.close()
    assert await srec.flow_failed() == inflow


# ---- TLS -------------------------------------------------------------------------------------


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca(directory: Path, cn: str) -> tuple[Path, ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    path = directory / f"{cn}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path, key, cert


def make_server_cert(
    directory: Path, ca_key: ec.EllipticCurvePrivateKey, ca: x509.Certificate, names: list[str]
) -> TlsConfig:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    sans: list[x509.GeneralName] = []
    for n in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            sans.append(x509.DNSName(n))
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(names[0]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{names[0]}.crt", directory / f"{names[0]}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return TlsConfig(cert_file=str(cert_path), key_file=str(key_path))


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Any]:
    ca_path, ca_key, ca = make_ca(tmp_path, "Test Root CA")
    other_ca_path, _, _ = make_ca(tmp_path, "Other CA")
    return {
        "ca": str(ca_path),
        "other_ca": str(other_ca_path),
        "server": make_server_cert(tmp_path, ca_key, ca, ["localhost", "127.0.0.1", "::1"]),
        "wrong_name": make_server_cert(tmp_path, ca_key, ca, ["sip.example"]),
    }


async def test_tls_verified_request_inbound_and_response(
    manager: Factory, pki: dict[str, Any]
) -> None:
    server, srec = await manager(["tls:127.0.0.1:0"], tls=pki["server"])
    client, crec = await manager([], tls=TlsConfig(ca_file=pki["ca"]))
    port = server.local_address("tls", 4).port

    # By name: the certificate's DNS SAN is checked against "localhost".
    flow = await client.send(options("z9hG4bKtls"), Address("tls", "localhost", port))
    msg, sflow, _ = await srec.message()  # inbound TLS connection on the server
    assert msg.top_via.branch == "z9hG4bKtls" and sflow.transport == "tls"
    assert flow.transport == "tls" and sflow.remote == flow.local

    await server.send(ok_response("z9hG4bKtls"), sflow)
    resp, cflow, _ = await crec.message()
    assert resp.status == 200 and cflow == flow
    assert await client.send(options("z9hG4bK2"), Address("tls", "localhost", port)) == flow
    await srec.message()

    # By IP: the IP SAN is checked; a different verified name means a different connection.
    ip_flow = await client.send(options("z9hG4bKip"), Address("tls", "127.0.0.1", port))
    assert ip_flow != flow and (await srec.message())[0].top_via.branch == "z9hG4bKip"


async def test_tls_wrong_ca_is_rejected_clearly(manager: Factory, pki: dict[str, Any]) -> None:
    server, srec = await manager(["tls:127.0.0.1:0"], tls=pki["server"])
    client, _ = await manager([], tls=TlsConfig(ca_file=pki["other_ca"]))
    port = server.local_address("tls", 4).port
    with pytest.raises(TransportError, match=r"TLS certificate of 127\.0\.0\.1 .* rejected: .*"):
        await client.send(options(), Address("tls", "127.0.0.1", port))
    assert srec.messages.empty()

    # Only an explicit verify=False accepts it.
    insecure, _ = await manager([], tls=TlsConfig(ca_file=pki["other_ca"], verify=False))
    await insecure.send(options("z9hG4bKinsecure"), Address("tls", "127.0.0.1", port))
    assert (await srec.message())[0].top_via.branch == "z9hG4bKinsecure"


async def test_tls_hostname_mismatch_is_rejected(manager: Factory, pki: dict[str, Any]) -> None:
    server, _ = await manager(["tls:127.0.0.1:0"], tls=pki["wrong_name"])
    client, _ = await manager([], tls=TlsConfig(ca_file=pki["ca"]))
    port = server.local_address("tls", 4).port
    with pytest.raises(TransportError, match="mismatch"):
        await client.send(options(), Address("tls", "127.0.0.1", port))


async def test_tls_config_errors_are_clear(manager: Factory, tmp_path: Path) -> None:
    with pytest.raises(TransportError, match="needs tls cert_file and key_file"):
        await manager(["tls:127.0.0.1:0"])
    with pytest.raises(TransportError, match="cannot load TLS CA file .*missing.pem"):
        await manager([], tls=TlsConfig(ca_file=str(tmp_path / "missing.pem")))


async def test_tls_client_certificate_is_presented(manager: Factory, pki: dict[str, Any]) -> None:
    """A PBX that demands client certificates (mutual TLS) sees ours and accepts it."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(pki["server"].cert_file, pki["server"].key_file)
    server_ctx.load_verify_locations(pki["ca"])
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    subjects: asyncio.Queue[Any] = asyncio.Queue()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        subjects.put_nowait(writer.get_extra_info("peercert")["subject"])
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    pbx = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_ctx)
    port = pbx.sockets[0].getsockname()[1]
    phone_cert = pki["wrong_name"]  # any certificate issued by the PBX's CA will do
    client, _ = await manager(
        [],
        tls=TlsConfig(
            ca_file=pki["ca"], cert_file=phone_cert.cert_file, key_file=phone_cert.key_file
        ),
    )
    await client.send(options(), Address("tls", "localhost", port))
    subject = await asyncio.wait_for(subjects.get(), TIMEOUT)
    assert subject == ((("commonName", "sip.example"),),)
    pbx.close()
    await pbx.wait_closed()
