"""RTCP (RFC 3550 6): SR, RR, SDES, BYE, compound packets, RTT and the report interval.

Sans-IO: `RtcpSession` is fed datagrams and `now` (seconds, monotonic) and returns datagrams to
send plus its next deadline (`get_timer()` / `handle_timer(now)`), like the SIP core. NTP
timestamps are `now + ntp_offset`: the driver sets the offset (wallclock - monotonic + the NTP
era) once, so RTT, which only compares our own clock with itself, stays exact.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from firmware.sip.ids import IdSource

from .rtp import RtpReceiverStats, RtpSender

log = logging.getLogger(__name__)

RTCP_SR = 200
RTCP_RR = 201
RTCP_SDES = 202
RTCP_BYE = 203
RTCP_APP = 204

SDES_CNAME = 1

NTP_UNIX_EPOCH = 2_208_988_800  # seconds from 1900-01-01 to 1970-01-01
RTCP_MIN_INTERVAL = 5.0  # RFC 3550 6.2 Tmin
RTCP_BW_FRACTION = 0.05  # RFC 3550 6.2: 5 % of the session bandwidth
IP_UDP_OVERHEAD = 28  # IPv4 + UDP, counted in avg_rtcp_size (6.3.3)
_COMPENSATION = 2.718281828459045 - 1.5  # RFC 3550 6.3.1 "e - 3/2"

_RB = struct.Struct("!IIIIII")


class RtcpError(ValueError):
    """A datagram that is not a valid (compound) RTCP packet."""


def ntp_from_seconds(t: float) -> int:
    """64-bit NTP timestamp (32.32 fixed point) for `t` seconds since the NTP era."""
    return int(round(t * (1 << 32))) & 0xFFFFFFFFFFFFFFFF


def ntp_to_seconds(ntp: int) -> float:
    return ntp / (1 << 32)


def ntp_middle32(ntp: int) -> int:
    """The middle 32 bits used for LSR and for the arrival time A (RFC 3550 6.4.1)."""
    return (ntp >> 16) & 0xFFFFFFFF


def rtt_seconds(arrival_ntp32: int, lsr: int, dlsr: int) -> float | None:
    """Round-trip time A - LSR - DLSR in seconds (RFC 3550 6.4.1); None if not measurable.

    None when the peer has not seen an SR from us yet (LSR 0) or when the result is negative
    (clock jumps, a bogus report), which the RFC leaves to the receiver to discard.
    """
    if lsr == 0:
        return None
    d = (arrival_ntp32 - lsr - dlsr) & 0xFFFFFFFF
    if d >= 1 << 31:
        return None
    return d / 65536.0


@dataclass(slots=True)
class ReportBlock:
    """One reception report block (RFC 3550 6.4.1)."""

    ssrc: int
    fraction_lost: int  # 8-bit fixed point
    cumulative_lost: int  # signed 24 bits
    highest_seq: int  # extended highest sequence number received
    jitter: int  # timestamp units
    lsr: int = 0
    dlsr: int = 0  # 1/65536 s

    def serialize(self) -> bytes:
        lost = self.cumulative_lost & 0xFFFFFF
        return _RB.pack(
            self.ssrc,
            (self.fraction_lost & 0xFF) << 24 | lost,
            self.highest_seq & 0xFFFFFFFF,
            self.jitter & 0xFFFFFFFF,
            self.lsr & 0xFFFFFFFF,
            self.dlsr & 0xFFFFFFFF,
        )

    @classmethod
    def parse(cls, data: bytes, offset: int) -> ReportBlock:
        ssrc, w, hs, jit, lsr, dlsr = _RB.unpack_from(data, offset)
        lost = w & 0xFFFFFF
        if lost & 0x800000:
            lost -= 1 << 24
        return cls(ssrc, w >> 24, lost, hs, jit, lsr, dlsr)


@dataclass(slots=True)
class SenderReport:
    ssrc: int
    ntp: int
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: list[ReportBlock] = field(default_factory=list)


@dataclass(slots=True)
class ReceiverReport:
    ssrc: int
    reports: list[ReportBlock] = field(default_factory=list)


@dataclass(slots=True)
class Sdes:
    """SDES chunks: (ssrc, [(item type, value bytes)])."""

    chunks: list[tuple[int, list[tuple[int, bytes]]]]

    def cname(self, ssrc: int) -> str | None:
        for s, items in self.chunks:
            if s == ssrc:
                for t, v in items:
                    if t == SDES_CNAME:
                        return v.decode("utf-8", "replace")
        return None


@dataclass(slots=True)
class Bye:
    ssrcs: list[int]
    reason: str | None = None


@dataclass(slots=True)
class OtherRtcp:
    """A packet type we do not interpret (APP, XR, feedback): kept so nothing is silently lost."""

    packet_type: int
    count: int
    body: bytes


RtcpPacket = SenderReport | ReceiverReport | Sdes | Bye | OtherRtcp


def _header(pt: int, count: int, body_len: int) -> bytes:
    if body_len % 4:
        raise RtcpError(f"RTCP body of {body_len} bytes is not 32-bit aligned")
    if count > 31:
        raise RtcpError(f"RTCP count {count} exceeds 31")
    return struct.pack("!BBH", 0x80 | count, pt, body_len // 4)


def serialize(packet: RtcpPacket) -> bytes:
    """Wire bytes of one RTCP packet."""
    if isinstance(packet, SenderReport):
        body = struct.pack(
            "!IQIII",
            packet.ssrc,
            packet.ntp,
            packet.rtp_timestamp & 0xFFFFFFFF,
            packet.packet_count & 0xFFFFFFFF,
            packet.octet_count & 0xFFFFFFFF,
        ) + b"".join(rb.serialize() for rb in packet.reports)
        return _header(RTCP_SR, len(packet.reports), len(body)) + body
    if isinstance(packet, ReceiverReport):
        body = struct.pack("!I", packet.ssrc) + b"".join(rb.serialize() for rb in packet.reports)
        return _header(RTCP_RR, len(packet.reports), len(body)) + body
    if isinstance(packet, Sdes):
        parts = []
        for ssrc, items in packet.chunks:
            chunk = struct.pack("!I", ssrc)
            for t, v in items:
                if len(v) > 255:
                    raise RtcpError(f"SDES item {t} is {len(v)} bytes, at most 255 fit")
                chunk += bytes([t, len(v)]) + v
            chunk += b"\0" * (4 - len(chunk) % 4)  # at least one null terminates the list
            parts.append(chunk)
        body = b"".join(parts)
        return _header(RTCP_SDES, len(packet.chunks), len(body)) + body
    if isinstance(packet, Bye):
        body = b"".join(struct.pack("!I", s) for s in packet.ssrcs)
        if packet.reason:
            r = packet.reason.encode()[:255]
            reason = bytes([len(r)]) + r
            body += reason + b"\0" * (-len(reason) % 4)
        return _header(RTCP_BYE, len(packet.ssrcs), len(body)) + body
    return _header(packet.packet_type, packet.count, len(packet.body)) + packet.body


def build_compound(packets: list[RtcpPacket]) -> bytes:
    """Concatenate packets into one compound datagram (RFC 3550 6.1: SR/RR first)."""
    if not packets or not isinstance(packets[0], SenderReport | ReceiverReport):
        raise RtcpError("a compound RTCP packet must start with an SR or RR")
    return b"".join(serialize(p) for p in packets)


def parse_compound(data: bytes) -> list[RtcpPacket]:
    """Parse a compound RTCP datagram (RFC 3550 A.2 checks, raising RtcpError).

    The SR/RR-first rule of A.2 is not enforced so reduced-size RTCP (RFC 5506) parses.
    """
    out: list[RtcpPacket] = []
    pos = 0
    n = len(data)
    if n < 4:
        raise RtcpError(f"RTCP datagram too short: {n} bytes")
    while pos < n:
        if pos + 4 > n:
            raise RtcpError(f"trailing {n - pos} bytes after the last RTCP packet")
        b0, pt, words = struct.unpack_from("!BBH", data, pos)
        if b0 >> 6 != 2:
            raise RtcpError(f"RTCP version {b0 >> 6}, expected 2")
        end = pos + 4 + 4 * words
        if end > n:
            raise RtcpError(f"RTCP packet type {pt} length {words} overruns the datagram")
        body_end = end
        if b0 & 0x20:
            if end != n:
                raise RtcpError("padding is only allowed on the last packet of a compound")
            pad = data[end - 1]
            if pad == 0 or pad > 4 * words:
                raise RtcpError(f"bad RTCP padding count {pad}")
            body_end = end - pad
        out.append(_parse_one(pt, b0 & 0x1F, data[pos + 4 : body_end]))
        pos = end
    return out


def _parse_one(pt: int, count: int, body: bytes) -> RtcpPacket:
    def blocks(offset: int) -> list[ReportBlock]:
        if len(body) < offset + 24 * count:
            raise RtcpError(f"packet type {pt} announces {count} report blocks, too short")
        return [ReportBlock.parse(body, offset + 24 * i) for i in range(count)]

    if pt == RTCP_SR:
        if len(body) < 24:
            raise RtcpError("SR shorter than its sender info")
        ssrc, ntp, ts, pc, oc = struct.unpack_from("!IQIII", body)
        return SenderReport(ssrc, ntp, ts, pc, oc, blocks(24))
    if pt == RTCP_RR:
        if len(body) < 4:
            raise RtcpError("RR without SSRC")
        return ReceiverReport(struct.unpack_from("!I", body)[0], blocks(4))
    if pt == RTCP_SDES:
        chunks = []
        pos = 0
        for _ in range(count):
            if pos + 4 > len(body):
                raise RtcpError("SDES chunk truncated")
            ssrc = struct.unpack_from("!I", body, pos)[0]
            pos += 4
            items = []
            while True:
                if pos >= len(body):
                    raise RtcpError("SDES item list not terminated")
                t = body[pos]
                if t == 0:
                    pos = (pos + 4) & ~3  # skip the null octets to the next 32-bit boundary
                    break
                if pos + 2 > len(body) or pos + 2 + body[pos + 1] > len(body):
                    raise RtcpError(f"SDES item {t} overruns the packet")
                ln = body[pos + 1]
                items.append((t, bytes(body[pos + 2 : pos + 2 + ln])))
                pos += 2 + ln
            chunks.append((ssrc, items))
        return Sdes(chunks)
    if pt == RTCP_BYE:
        if len(body) < 4 * count:
            raise RtcpError(f"BYE announces {count} SSRCs, too short")
        ssrcs = list(struct.unpack_from(f"!{count}I", body))
        reason = None
        rest = body[4 * count :]
        if rest:
            ln = rest[0]
            if 1 + ln > len(rest):
                raise RtcpError("BYE reason overruns the packet")
            reason = rest[1 : 1 + ln].decode("utf-8", "replace")
        return Bye(ssrcs, reason)
    return OtherRtcp(pt, count, bytes(body))


def rtcp_interval(
    randbelow: Callable[[int], int],
    *,
    avg_rtcp_size: float,
    session_bw: float = 64000.0,
    members: int = 2,
    senders: int = 2,
    we_sent: bool = True,
    initial: bool = False,
) -> float:
    """Seconds until the next report (RFC 3550 6.3.1 / A.7), randomised to [0.5, 1.5] x T.

    `session_bw` is in bits/s and `avg_rtcp_size` in octets including IP/UDP headers. For the
    two-party calls a phone makes, senders are rarely <= 25 % of members, so the split of
    the RTCP bandwidth between senders and receivers seldom applies; it is kept anyway.
    """
    rtcp_bw = session_bw * RTCP_BW_FRACTION / 8.0  # octets per second
    t_min = RTCP_MIN_INTERVAL / 2 if initial else RTCP_MIN_INTERVAL
    n = members
    if 0 < senders <= members * 0.25:
        if we_sent:
            rtcp_bw *= 0.25
            n = senders
        else:
            rtcp_bw *= 0.75
            n = members - senders
    t = max(avg_rtcp_size * n / rtcp_bw, t_min)
    factor = 0.5 + randbelow(1_000_000) / 1_000_000  # uniform in [0.5, 1.5)
    return t * factor / _COMPENSATION


class RtcpSession:
    """RTCP for one RTP session of a call: our reports, the peer's reports, RTT, BYE.

    Reports an SR when we have sent RTP since the previous report, else an RR, always followed
    by SDES CNAME (RFC 3550 6.1). `stats()` is the per-call dict shown in the status API.
    """

    def __init__(
        self,
        *,
        sender: RtpSender,
        receiver: RtpReceiverStats,
        cname: str,
        ids: IdSource,
        now: float,
        ntp_offset: float = 0.0,
        session_bw: float = 64000.0,
    ) -> None:
        self.sender = sender
        self.receiver = receiver
        self.cname = cname
        self._ids = ids
        self.ntp_offset = ntp_offset
        self.session_bw = session_bw
        self.avg_rtcp_size = 100.0  # octets incl. IP/UDP, updated as packets go by (6.3.3)
        self._last_sr_ntp32 = 0  # middle 32 bits of the peer's last SR, echoed as LSR
        self._last_sr_arrival: float | None = None
        self._packets_at_last_report = 0
        self.rtt: float | None = None
        self.remote_fraction_lost: float | None = None
        self.remote_cumulative_lost: int | None = None
        self.remote_jitter: int | None = None
        self.remote_cname: str | None = None
        self.remote_bye: str | None = None  # reason ("" if none) once the peer said BYE
        self.reports_sent = 0
        self.reports_received = 0
        self._deadline = now + self._interval(initial=True)

    def _ntp(self, now: float) -> int:
        return ntp_from_seconds(now + self.ntp_offset)

    def _interval(self, *, initial: bool = False) -> float:
        return rtcp_interval(
            self._ids.randbelow,
            avg_rtcp_size=self.avg_rtcp_size,
            session_bw=self.session_bw,
            we_sent=self.sender.packets_sent > self._packets_at_last_report,
            initial=initial,
        )

    def _note_size(self, octets: int) -> None:
        self.avg_rtcp_size += (octets + IP_UDP_OVERHEAD - self.avg_rtcp_size) / 16.0

    def get_timer(self) -> float:
        return self._deadline

    def handle_timer(self, now: float) -> bytes | None:
        """The next compound report if it is due, rescheduling the one after."""
        if now < self._deadline:
            return None
        data = self.build_report(now)
        self._deadline = now + self._interval()
        return data

    def _report_packets(self, now: float) -> list[RtcpPacket]:
        blocks = []
        rx = self.receiver
        if rx.ssrc is not None and rx.expected:
            dlsr = 0
            if self._last_sr_arrival is not None:
                dlsr = int((now - self._last_sr_arrival) * 65536) & 0xFFFFFFFF
            blocks.append(
                ReportBlock(
                    ssrc=rx.ssrc,
                    fraction_lost=rx.take_interval(),
                    cumulative_lost=rx.lost,
                    highest_seq=rx.extended_max,
                    jitter=int(rx.jitter),
                    lsr=self._last_sr_ntp32,
                    dlsr=dlsr,
                )
            )
        s = self.sender
        first: RtcpPacket
        if s.packets_sent > self._packets_at_last_report:
            # The RTP timestamp of "now" is the media time of the next sample to send.
            first = SenderReport(
                s.ssrc, self._ntp(now), s.timestamp, s.packets_sent, s.octets_sent, blocks
            )
        else:
            first = ReceiverReport(s.ssrc, blocks)
        self._packets_at_last_report = s.packets_sent
        return [first, Sdes([(s.ssrc, [(SDES_CNAME, self.cname.encode())])])]

    def build_report(self, now: float) -> bytes:
        data = build_compound(self._report_packets(now))
        self.reports_sent += 1
        self._note_size(len(data))
        return data

    def bye(self, now: float, reason: str | None = None) -> bytes:
        """The compound packet to send when leaving the session (RFC 3550 6.6)."""
        packets = self._report_packets(now) + [Bye([self.sender.ssrc], reason)]
        data = build_compound(packets)
        self.reports_sent += 1
        return data

    def receive(self, data: bytes, now: float) -> list[RtcpPacket]:
        """Take a datagram from the peer; malformed ones are logged and ignored."""
        try:
            packets = parse_compound(data)
        except RtcpError as e:
            log.debug("ignoring malformed RTCP: %s", e)
            return []
        self.reports_received += 1
        self._note_size(len(data))
        a = ntp_middle32(self._ntp(now))
        for p in packets:
            if isinstance(p, SenderReport | ReceiverReport):
                if isinstance(p, SenderReport):
                    self._last_sr_ntp32 = ntp_middle32(p.ntp)
                    self._last_sr_arrival = now
                for rb in p.reports:
                    if rb.ssrc == self.sender.ssrc:
                        self.remote_fraction_lost = rb.fraction_lost / 256.0
                        self.remote_cumulative_lost = rb.cumulative_lost
                        self.remote_jitter = rb.jitter
                        rtt = rtt_seconds(a, rb.lsr, rb.dlsr)
                        if rtt is not None:
                            self.rtt = rtt
            elif isinstance(p, Sdes):
                for ssrc, _items in p.chunks:
                    cname = p.cname(ssrc)
                    if cname is not None:
                        self.remote_cname = cname
            elif isinstance(p, Bye):
                if self.receiver.ssrc is None or self.receiver.ssrc in p.ssrcs:
                    self.remote_bye = p.reason or ""
        return packets

    def stats(self) -> dict[str, object]:
        """Per-call media statistics for the status API."""
        rx = self.receiver
        rate = self.sender.clock_rate
        return {
            "packets_sent": self.sender.packets_sent,
            "bytes_sent": self.sender.octets_sent,
            "packets_received": rx.received,
            "bytes_received": rx.octets_received,
            "packets_lost": rx.lost,
            "fraction_lost": (
                round((rx.expected - rx.received) / rx.expected, 4) if rx.expected else 0.0
            ),
            "duplicates": rx.duplicates,
            "reordered": rx.reordered,
            "late": rx.late,
            "jitter_ms": round(rx.jitter_ms, 2),
            "rtt_ms": None if self.rtt is None else round(self.rtt * 1000.0, 2),
            "remote_fraction_lost": self.remote_fraction_lost,
            "remote_packets_lost": self.remote_cumulative_lost,
            "remote_jitter_ms": (
                None if self.remote_jitter is None else round(self.remote_jitter * 1000 / rate, 2)
            ),
        }
