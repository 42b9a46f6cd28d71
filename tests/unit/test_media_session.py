"""Two MediaSessions talking RTP to each other over 127.0.0.1 (firmware/runtime/media.py).

Real sockets, real codecs, real SRTP; the assertions are on what crosses the wire (sniffed by
a relay socket in the middle) and on the audio that comes out of the far side's WAV sink.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from audio import sdes
from audio.codecs import available_codecs, get_codec
from audio.graph import BufferSink, WavFileSink, WavFileSource, read_wav, write_wav
from audio.pcm import dominant_frequency
from audio.rtcp import Bye, parse_compound
from audio.rtp import RtpPacket
from audio.srtp import SrtpSession
from firmware.call.manager import MediaChange
from firmware.runtime.media import AudioEndpoints, MediaEngine, MediaSession
from firmware.runtime.ports import PortAllocator
from firmware.sip.ids import SeededIds
from firmware.sip.offer_answer import CodecSpec, NegotiatedCrypto, NegotiatedMedia
from tests.conftest import skip_or_fail

TE_PT = 101
SUITE = "AES_CM_128_HMAC_SHA1_80"


def negotiated(
    remote_port: int,
    codec: str = "PCMU",
    pt: int = 0,
    *,
    crypto: NegotiatedCrypto | None = None,
    direction: str = "sendrecv",
    te: bool = True,
) -> NegotiatedMedia:
    c = get_codec(codec)
    spec = CodecSpec(c.name, c.clock_rate, pt)
    return NegotiatedMedia(
        media_index=0,
        remote_address="127.0.0.1",
        remote_port=remote_port,
        remote_rtcp_address="127.0.0.1",
        remote_rtcp_port=remote_port + 1,
        send_pt=pt,
        send_codec=spec,
        recv_codecs={pt: spec},
        telephone_event_pt=TE_PT if te else None,
        telephone_events=frozenset(range(16)),
        ptime=20,
        direction=direction,
        crypto=crypto,
    )


async def until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait for a condition the sessions reach by themselves (bounded; fails loudly)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        assert loop.time() < end, "condition not reached in time"
        await asyncio.sleep(0.01)


async def arrival_times() -> tuple[asyncio.DatagramTransport, int, list[float]]:
    """A UDP socket that records when each datagram arrives: (transport, port, times)."""
    loop = asyncio.get_running_loop()
    arrivals: list[float] = []

    class Stamp(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            arrivals.append(loop.time())

    transport, _ = await loop.create_datagram_endpoint(Stamp, local_addr=("127.0.0.1", 0))
    return transport, transport.get_extra_info("sockname")[1], arrivals


def tone_session(
    name: str, media: NegotiatedMedia, ports: PortAllocator, tmp_path: Path
) -> MediaSession:
    """A session on freshly allocated ports that sends a tone and keeps what it receives."""
    ports.allocate(name, None)
    return MediaSession(
        name,
        media,
        ports.sockets(name),
        source=WavFileSource(tone_wav(tmp_path / f"{name}.wav")),
        sink=BufferSink(8000),
        ids=SeededIds(name),
    )


class Relay(asyncio.DatagramProtocol):
    """A UDP hop in the middle: records every datagram and forwards it to `target`."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.seen: list[bytes] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.seen.append(data)
        assert self.transport is not None
        self.transport.sendto(data, self.target)


async def relay_to(port: int) -> tuple[Relay, int]:
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(
        lambda: Relay(("127.0.0.1", port)), local_addr=("127.0.0.1", 0)
    )
    return proto, transport.get_extra_info("sockname")[1]


def tone_wav(path: Path, freq: float = 1000.0, rate: int = 8000, seconds: float = 1.0) -> Path:
    t = np.arange(int(rate * seconds)) / rate
    write_wav(path, (np.sin(2 * np.pi * freq * t) * 8000).astype(np.int16), rate)
    return path


@pytest.fixture
def ports() -> Iterator[PortAllocator]:
    p = PortAllocator(40000, 49999, bind_address="127.0.0.1")
    yield p
    p.close()


def pair(
    ports: PortAllocator,
    tmp_path: Path,
    codec: str,
    pt: int,
    *,
    crypto: tuple[NegotiatedCrypto, NegotiatedCrypto] | None = None,
    a_remote_port: int | None = None,
) -> tuple[MediaSession, MediaSession, Path]:
    """A sends a 1 kHz tone WAV, B writes what it hears to a WAV."""
    _, pa = ports.allocate("a", ("127.0.0.1", 5060))
    _, pb = ports.allocate("b", ("127.0.0.1", 5060))
    out = tmp_path / "b.wav"
    a = MediaSession(
        "a",
        negotiated(a_remote_port or pb, codec, pt, crypto=crypto[0] if crypto else None),
        ports.sockets("a"),
        source=WavFileSource(tone_wav(tmp_path / "tone.wav")),
        sink=BufferSink(8000),
        ids=SeededIds("a"),
    )
    b = MediaSession(
        "b",
        negotiated(pa, codec, pt, crypto=crypto[1] if crypto else None),
        ports.sockets("b"),
        source=WavFileSource(tone_wav(tmp_path / "quiet.wav", 440.0)),
        sink=WavFileSink(out, 16000),
        ids=SeededIds("b"),
    )
    return a, b, out


def heard(path: Path) -> tuple[np.ndarray, int]:
    pcm, rate = read_wav(path)
    loud = np.flatnonzero(np.abs(pcm) > 1000)
    assert len(loud) > rate // 2, "far end heard (almost) nothing"
    return pcm[loud[0] : loud[-1]], rate


async def talk(a: MediaSession, b: MediaSession, packets: int = 40) -> None:
    a.start()
    b.start()
    try:
        await until(lambda: b.stats()["packets_received"] >= packets)
    finally:
        a.stop()
        b.stop()
        await a.wait_stopped()
        await b.wait_stopped()
        b._raw_sink.close()


@pytest.mark.parametrize("codec,pt", [("PCMU", 0), ("PCMA", 8), ("G722", 9)])
async def test_tone_crosses_the_call(
    ports: PortAllocator, tmp_path: Path, codec: str, pt: int
) -> None:
    if codec not in available_codecs():
        skip_or_fail(f"{codec} not available")
    relay, relay_port = await relay_to(0)
    a, b, out = pair(ports, tmp_path, codec, pt, a_remote_port=relay_port)
    relay.target = ("127.0.0.1", b.sockets.port)
    await talk(a, b)
    pcm, rate = heard(out)
    assert abs(dominant_frequency(pcm[-rate // 2 :], rate) - 1000.0) < 5.0
    # what crossed the wire: RTP with the negotiated PT, 20 ms of the codec per packet
    rtp = [RtpPacket.parse(d) for d in relay.seen]
    assert {p.payload_type for p in rtp} == {pt}
    assert {len(p.payload) for p in rtp} == {160}  # 20 ms of G.711 or G.722 (64 kbit/s)
    seqs = [p.sequence for p in rtp]
    assert all((y - x) & 0xFFFF == 1 for x, y in zip(seqs, seqs[1:], strict=False))
    ts = [p.timestamp for p in rtp]
    assert all((y - x) & 0xFFFFFFFF == 160 for x, y in zip(ts, ts[1:], strict=False))
    assert rtp[0].marker and not any(p.marker for p in rtp[1:])
    # decoding the sniffed payloads gives the tone: the codec on the wire is the real one
    dec = get_codec(codec).decoder()
    wire = np.concatenate([dec.decode(p.payload) for p in rtp])
    assert abs(dominant_frequency(wire, get_codec(codec).sample_rate) - 1000.0) < 5.0
    st = b.stats()
    assert st["codec"] == codec and st["lost"] == 0 and st["srtp"] is False
    assert a.stats()["packets_sent"] >= len(rtp)


def crypto_pair() -> tuple[NegotiatedCrypto, NegotiatedCrypto, str, str]:
    keys = sdes.SdesKeys()
    ka = sdes.CryptoAttribute(1, SUITE, (keys.fresh(SUITE),)).format()
    kb = sdes.CryptoAttribute(1, SUITE, (keys.fresh(SUITE),)).format()
    return (
        NegotiatedCrypto(1, SUITE, remote=kb, local=ka),
        NegotiatedCrypto(1, SUITE, remote=ka, local=kb),
        ka,
        kb,
    )


async def test_srtp_tone_is_encrypted_on_the_wire(ports: PortAllocator, tmp_path: Path) -> None:
    ca, cb, ka, _kb = crypto_pair()
    relay, relay_port = await relay_to(0)
    a, b, out = pair(ports, tmp_path, "PCMU", 0, crypto=(ca, cb), a_remote_port=relay_port)
    relay.target = ("127.0.0.1", b.sockets.port)
    await talk(a, b)
    pcm, rate = heard(out)
    assert abs(dominant_frequency(pcm[-rate // 2 :], rate) - 1000.0) < 5.0
    # On the wire: 12-byte header, 160 encrypted bytes, 10-byte tag; not the plaintext.
    key = sdes.parse_crypto(ka).key
    oracle = SrtpSession(SUITE, key.key, key.salt)  # the python implementation, independently
    enc = get_codec("PCMU").encoder()
    plain_tone = enc.encode(WavFileSource(tmp_path / "tone.wav").read(160))
    for wire in relay.seen[:20]:
        assert len(wire) == 12 + 160 + 10
        plain = oracle.unprotect(wire)
        assert wire[12:172] != plain[12:]
        assert plain_tone[:40] not in wire and plain[12:] not in wire
    assert b.stats()["srtp"] is True and b.stats()["srtp_dropped"] == {}


async def test_srtp_drops_tampered_and_replayed(ports: PortAllocator, tmp_path: Path) -> None:
    ca, cb, _ka, _kb = crypto_pair()
    relay, relay_port = await relay_to(0)
    a, b, _out = pair(ports, tmp_path, "PCMU", 0, crypto=(ca, cb), a_remote_port=relay_port)
    relay.target = ("127.0.0.1", b.sockets.port)
    await talk(a, b, packets=10)
    good = relay.seen[3]

    def fresh(seq_step: int) -> bytearray:
        """`good` moved to a sequence number b has not seen (so not a replay)."""
        pkt = bytearray(good)
        pkt[2:4] = ((int.from_bytes(good[2:4], "big") + seq_step) & 0xFFFF).to_bytes(2, "big")
        return pkt

    payload_flip = fresh(100)
    payload_flip[20] ^= 1
    tag_flip = fresh(200)
    tag_flip[-1] ^= 0xFF
    now = 0.0
    before = b.stats()["packets_received"]
    b.receive_rtp(bytes(payload_flip), now)
    b.receive_rtp(good, now)  # already received once: a replay
    b.receive_rtp(bytes(tag_flip), now)
    assert b.srtp_dropped == {"auth": 2, "replay": 1}
    assert b.stats()["packets_received"] == before


async def test_dtmf_digits_reach_the_other_side(ports: PortAllocator, tmp_path: Path) -> None:
    got: list[str] = []
    relay, relay_port = await relay_to(0)
    a, b, _out = pair(ports, tmp_path, "PCMU", 0, a_remote_port=relay_port)
    relay.target = ("127.0.0.1", b.sockets.port)
    b.on_dtmf = lambda call, digit: got.append(digit)
    a.start()
    b.start()
    digits = "0123456789*#"
    try:
        a.send_dtmf(digits)
        await until(lambda: len(got) == len(digits) and not a.dtmf_pending, timeout=8.0)
        await until(lambda: len(relay.seen) >= a.stats()["packets_sent"])
    finally:
        a.stop()
        b.stop()
        b._raw_sink.close()
    assert "".join(got) == digits
    assert b.stats()["dtmf_received"] == digits
    # RFC 4733 on the wire: same SSRC and sequence space as the audio, marker on each start,
    # three end packets per digit
    rtp = [RtpPacket.parse(d) for d in relay.seen]
    assert len({p.ssrc for p in rtp}) == 1
    seqs = [p.sequence for p in rtp]
    assert all((y - x) & 0xFFFF == 1 for x, y in zip(seqs, seqs[1:], strict=False))
    events = [p for p in rtp if p.payload_type == TE_PT]
    assert sum(p.marker for p in events) == len(digits)
    ends = [p for p in events if p.payload[1] & 0x80]
    assert len(ends) == 3 * len(digits)
    assert [p.payload[0] for p in ends[::3]] == list(range(12))


async def test_hold_stops_sending_and_resume_restarts(ports: PortAllocator, tmp_path: Path) -> None:
    a, b, _out = pair(ports, tmp_path, "PCMU", 0)
    a.start()
    b.start()
    try:
        await until(lambda: b.stats()["packets_received"] >= 5)
        # a puts b on hold: a sends nothing (recvonly from b's point of view: inactive here)
        a.update(negotiated(b.sockets.port, direction="inactive"))
        sent = a.stats()["packets_sent"]
        b_sent = b.stats()["packets_sent"]
        await until(lambda: b.stats()["packets_sent"] >= b_sent + 10)
        assert a.stats()["packets_sent"] == sent
        assert a.stats()["ignored_not_receiving"] > 0  # b's audio arrives, a ignores it
        a.update(negotiated(b.sockets.port, direction="sendrecv"))
        await until(lambda: a.stats()["packets_sent"] >= sent + 5)
    finally:
        a.stop()
        b.stop()
        b._raw_sink.close()


async def test_rtcp_reports_and_bye(ports: PortAllocator, tmp_path: Path) -> None:
    relay, relay_port = await relay_to(0)
    a, b, _out = pair(ports, tmp_path, "PCMU", 0)
    # a's RTCP goes through the relay so the BYE can be seen on the wire
    a.update(dataclasses.replace(a.negotiated, remote_rtcp_port=relay_port))
    relay.target = ("127.0.0.1", b.sockets.port + 1)
    a.start()
    b.start()
    try:
        await until(lambda: b.stats()["packets_received"] >= 5)
    finally:
        a.stop("bye now")
        await until(lambda: b.remote_bye is not None, timeout=2.0)
        b.stop()
        b._raw_sink.close()
    last = parse_compound(relay.seen[-1])
    assert any(isinstance(p, Bye) and p.reason == "bye now" for p in last)
    assert b.remote_bye == "bye now"


async def test_engine_follows_media_changes(tmp_path: Path) -> None:
    """MediaEngine: ports for the call layer, sessions per MediaChange, final stats kept."""
    wav = tone_wav(tmp_path / "tone.wav", rate=16000)
    out = tmp_path / "heard.wav"
    engines = [
        MediaEngine(
            PortAllocator(40000, 49999, bind_address="127.0.0.1"),
            SeededIds(name),
            AudioEndpoints(capture_file=wav, playback_file=out if name == "b" else None),
        )
        for name in ("a", "b")
    ]
    ea, eb = engines
    eb.audio.playback_file = out
    ea.audio.playback_file = tmp_path / "a.wav"
    la = ea.ports.allocate("c1", ("127.0.0.1", 5060))
    lb = eb.ports.allocate("c1", ("127.0.0.1", 5060))
    assert la[1] % 2 == 0 and lb[1] % 2 == 0
    crypto = ea.fresh_crypto()
    assert len(crypto) == 2 and all("inline:" in c for c in crypto)
    assert ea.fresh_crypto() != crypto  # new keys every time
    ea.apply(MediaChange("c1", "start", negotiated(lb[1], "G722", 9), la))
    eb.apply(MediaChange("c1", "start", negotiated(la[1], "G722", 9), lb))
    await until(lambda: (eb.stats("c1") or {}).get("packets_received", 0) >= 40)
    ea.send_dtmf("c1", "5")
    await until(lambda: (eb.stats("c1") or {}).get("dtmf_received") == "5")
    ea.apply(MediaChange("c1", "stop", None, la))
    ea.ports.release("c1")
    eb.apply(MediaChange("c1", "stop", None, lb))
    eb.ports.release("c1")
    assert eb.stats("c1")["codec"] == "G722"  # type: ignore[index]
    for e in engines:
        await e.close()
    pcm, rate = heard(out)
    assert abs(dominant_frequency(pcm[-rate // 2 :], rate) - 1000.0) < 5.0


def test_ports_are_bound_pairs_and_released() -> None:
    ports = PortAllocator(40000, 49999, bind_address="127.0.0.1")
    addr, port = ports.allocate("x", None)
    assert (addr, port % 2) == ("127.0.0.1", 0)
    assert ports.allocate("x", None) == (addr, port)
    s = ports.sockets("x")
    assert s.rtp.getsockname() == (addr, port) and s.rtcp.getsockname() == (addr, port + 1)
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with pytest.raises(OSError):
        probe.bind((addr, port))
    s.claim()
    ports.release("x")
    assert not s.closed  # the session still sends its BYE
    s.unclaim()
    assert s.closed
    probe.bind((addr, port))
    probe.close()
    with pytest.raises(KeyError, match="x"):
        ports.sockets("x")


def test_ports_exhausted_names_the_range() -> None:
    ports = PortAllocator(40100, 40103, bind_address="127.0.0.1")
    ports.allocate("a", None)
    ports.allocate("b", None)
    with pytest.raises(Exception, match="40100-40103"):
        ports.allocate("c", None)
    ports.close()


async def test_send_clock_does_not_drift(ports: PortAllocator, tmp_path: Path) -> None:
    """Packets leave on absolute deadlines: wake-up lateness does not add up over time."""
    transport, port, arrivals = await arrival_times()
    a = tone_session("a", negotiated(port), ports, tmp_path)
    a.start()
    try:
        await until(lambda: len(arrivals) >= 101)
    finally:
        a.stop()
        transport.close()
    t = np.array(arrivals[:101])
    offset = (t - t[0] - np.arange(101) * 0.020) * 1000.0  # ms off the ideal schedule
    # 0.1 ms of lateness per packet, accumulated, would be 10 ms by the end
    assert abs(np.median(offset[-20:]) - np.median(offset[:20])) < 2.0
    assert a.stats()["tick_late_ms"]["p50"] < 1.0


async def test_a_call_started_while_the_media_thread_sleeps_longer_starts_at_its_wakeup(
    ports: PortAllocator, tmp_path: Path
) -> None:
    """Nothing wakes the media thread early: a 20 ms call added while it sleeps towards a
    60 ms call's next tick begins its own clock at that wake-up, then keeps 20 ms."""
    transport, sink_port, arrivals = await arrival_times()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as nowhere:
        nowhere.bind(("127.0.0.1", 0))
        slow_port = nowhere.getsockname()[1]
        slow_media = dataclasses.replace(negotiated(slow_port), ptime=60)
        slow = tone_session("slow", slow_media, ports, tmp_path)
        fast = tone_session("fast", negotiated(sink_port), ports, tmp_path)
        slow.start()
        try:
            clock = slow.clock
            await until(lambda: clock._sleep_until == slow.due)  # the thread sleeps towards it
            fast.start()
            with clock.lock:  # its first tick moved to the thread's wake-up: the slow tick
                assert fast.due == slow.due == clock._sleep_until
            await until(lambda: len(arrivals) >= 11)
        finally:
            fast.stop()
            slow.stop()
            transport.close()
    gaps = np.diff(np.array(arrivals[:11])) * 1000.0
    assert 15.0 < float(np.median(gaps)) < 25.0, gaps  # then every 20 ms, not every 60
    assert fast.counters["skipped_frames"] == 0


async def test_sdp_negotiated_srtp_g722_call_between_engines(tmp_path: Path) -> None:
    """The NegotiatedMedia that offer/answer really produces (SDES keys both ways, G.722,
    telephone-event) drives two engines: tone one way, DTMF the other."""
    from firmware.sip.offer_answer import LocalMediaCaps, build_answer, build_offer, process_answer

    wav = tone_wav(tmp_path / "tone.wav", rate=16000)
    out = tmp_path / "heard.wav"
    ea = MediaEngine(
        PortAllocator(40000, 49999, bind_address="127.0.0.1"),
        SeededIds("a"),
        AudioEndpoints(capture_file=wav, playback_file=tmp_path / "a.wav"),
    )
    eb = MediaEngine(
        PortAllocator(40000, 49999, bind_address="127.0.0.1"),
        SeededIds("b"),
        AudioEndpoints(capture_file=tmp_path / "missing.wav", playback_file=out),
    )
    digits: list[str] = []
    ea.on_dtmf = lambda call, d: digits.append(d)
    codecs = [CodecSpec("G722", 8000, 9), CodecSpec("PCMU", 8000, 0)]

    def caps(engine: MediaEngine, call: str) -> LocalMediaCaps:
        addr, port = engine.ports.allocate(call, ("127.0.0.1", 5061))
        return LocalMediaCaps(addr, port, codecs, srtp="mandatory", crypto=engine.fresh_crypto())

    offer = build_offer(caps(ea, "x"), 1, session_id=1)
    answer, nb = build_answer(offer, caps(eb, "y"), session_version=1, session_id=2)
    na = process_answer(offer, answer)
    assert na is not None and nb is not None
    assert na.crypto is not None and na.send_codec.name == "G722"
    ea.apply(MediaChange("x", "start", na, None))
    eb.apply(MediaChange("y", "start", nb, None))
    assert eb.audio.errors and "missing.wav" in eb.audio.errors[0]  # silence instead
    await until(lambda: (eb.stats("y") or {}).get("packets_received", 0) >= 40)
    eb.send_dtmf("y", "#7")
    await until(lambda: digits == ["#", "7"])
    sa, sb = ea.stats("x"), eb.stats("y")
    assert sa is not None and sb is not None
    assert sa["srtp"] and sb["srtp"] and sa["srtp_dropped"] == sb["srtp_dropped"] == {}
    assert sa["dtmf_received"] == "#7"
    for e, call in ((ea, "x"), (eb, "y")):
        e.apply(MediaChange(call, "stop", None, None))
        e.ports.release(call)
        await e.close()
    pcm, rate = heard(out)
    assert abs(dominant_frequency(pcm[-rate // 2 :], rate) - 1000.0) < 5.0


async def test_inband_dtmf_without_telephone_event(ports: PortAllocator, tmp_path: Path) -> None:
    """A peer that did not offer telephone-event gets Q.23 tones in the audio instead."""
    from audio.graph import BufferSource

    relay, relay_port = await relay_to(0)
    _, pb = ports.allocate("b", None)
    ports.allocate("a", None)
    a = MediaSession(
        "a",
        negotiated(relay_port, te=False),
        ports.sockets("a"),
        source=BufferSource(np.zeros(8000, dtype=np.int16), 8000),
        sink=BufferSink(8000),
        ids=SeededIds("a"),
    )
    relay.target = ("127.0.0.1", pb)
    a.start()
    try:
        a.send_dtmf("1")
        await until(lambda: not a.dtmf_pending)
    finally:
        a.stop()
    rtp = [RtpPacket.parse(d) for d in relay.seen]
    assert {p.payload_type for p in rtp} == {0}
    dec = get_codec("PCMU").decoder()
    pcm = np.concatenate([dec.decode(p.payload) for p in rtp])
    loud = np.flatnonzero(np.abs(pcm) > 500)
    assert 0.09 * 8000 < loud[-1] - loud[0] < 0.11 * 8000  # 100 ms of tone
    spectrum = np.abs(np.fft.rfft(pcm[loud[0] : loud[-1]], 8000))
    low = 600 + int(np.argmax(spectrum[600:1000]))  # the row group of the keypad
    high = 1100 + int(np.argmax(spectrum[1100:1700]))  # the column group
    assert abs(low - 697) <= 5 and abs(high - 1209) <= 5  # key "1"
    assert min(spectrum[low], spectrum[high]) > 0.5 * spectrum.max()


async def test_symmetric_rtp_latch(ports: PortAllocator, tmp_path: Path) -> None:
    """With latching on, A answers to where B's RTP comes from, not B's (wrong) SDP port."""
    _, pa = ports.allocate("a", None)
    _, pb = ports.allocate("b", None)
    dead = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dead.bind(("127.0.0.1", 0))  # where B's SDP claims to be; nobody reads it
    a = MediaSession(
        "a",
        negotiated(dead.getsockname()[1]),
        ports.sockets("a"),
        source=WavFileSource(tone_wav(tmp_path / "t.wav")),
        sink=BufferSink(8000),
        ids=SeededIds("a"),
        latch=True,
    )
    b = MediaSession(
        "b",
        negotiated(pa),
        ports.sockets("b"),
        source=WavFileSource(tone_wav(tmp_path / "u.wav", 440.0)),
        sink=BufferSink(8000),
        ids=SeededIds("b"),
    )
    a.start()
    b.start()
    try:
        await until(lambda: b.stats()["packets_received"] >= 10)
    finally:
        a.stop()
        b.stop()
        dead.close()
    assert a.remote == ("127.0.0.1", pb)
    assert a.stats()["remote"] == f"127.0.0.1:{pb}"


async def test_reinvite_moves_stream_to_new_address_codec_and_keys(
    ports: PortAllocator, tmp_path: Path
) -> None:
    """update(): B's re-INVITE answer moves A's stream to another port, G.722, new SRTP keys."""
    if "G722" not in available_codecs():
        skip_or_fail("G722 not available")
    a, b, _out = pair(ports, tmp_path, "PCMU", 0)
    _, pc = ports.allocate("c", None)
    c = MediaSession(
        "c",
        negotiated(a.sockets.port, "G722", 9),
        ports.sockets("c"),
        source=WavFileSource(tone_wav(tmp_path / "c.wav", 440.0)),
        sink=BufferSink(16000),
        ids=SeededIds("c"),
    )
    a.start()
    b.start()
    try:
        await until(lambda: b.stats()["packets_received"] >= 5)
        ca, cc, _ka, _kc = crypto_pair()
        c.update(dataclasses.replace(c.negotiated, crypto=cc))
        c.start()
        a.update(dataclasses.replace(negotiated(pc, "G722", 9), crypto=ca))
        got_b = b.stats()["packets_received"]
        await until(lambda: c.stats().get("jitter_buffer", {}).get("audio", 0) >= 25)
        assert b.stats()["packets_received"] <= got_b + 2  # B is no longer sent to
        stats = a.stats()
        assert stats["codec"] == "G722" and stats["srtp"] is True
        assert c.stats()["srtp_dropped"] == {}
    finally:
        for s in (a, b, c):
            s.stop()
        b._raw_sink.close()
    heard_c = c._raw_sink.pcm  # type: ignore[attr-defined]
    assert abs(dominant_frequency(heard_c[-8000:], 16000) - 1000.0) < 5.0


def test_playback_file_rate_follows_the_configured_codecs() -> None:
    # narrowband phones record at 8 kHz (no upsampler per frame); a wideband codec needs 16 kHz
    from firmware.runtime.media import playback_file_rate

    assert playback_file_rate(("PCMU", "PCMA")) == 8000
    assert playback_file_rate(("PCMU", "G722")) == 16000
    assert playback_file_rate(("opus",)) == 16000
