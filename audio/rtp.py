"""RTP (RFC 3550): packet codec, sender, receiver statistics and the symmetric-RTP latch.

Sans-IO: nothing here touches a socket or a clock. Arrival times are passed in as seconds on
the caller's monotonic clock; SSRC and the initial sequence number and timestamp come from an
injected `IdSource` (RFC 3550 5.1 wants them random so that known-plaintext attacks on SRTP
and collisions between sources are unlikely).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from firmware.sip.ids import IdSource

RTP_VERSION = 2
SEQ_MOD = 1 << 16
TS_MOD = 1 << 32
HEADER_LEN = 12

# RFC 3550 A.1 defaults.
MAX_DROPOUT = 3000
MAX_MISORDER = 100
MIN_SEQUENTIAL = 2

# Packets whose second byte is 200..204 are RTCP SR/RR/SDES/BYE/APP; with RTP/RTCP multiplexed
# on one port (RFC 5761 4) RTP must not use payload types 72..76, so we refuse to parse them.
_RTCP_PT_RANGE = range(72, 77)

_HEADER = struct.Struct("!BBHII")


class RtpError(ValueError):
    """A datagram that is not a well-formed RTP packet (the message says which rule failed)."""


def seq_delta(a: int, b: int) -> int:
    """Signed distance a - b between two 16-bit sequence numbers (shortest way round)."""
    d = (a - b) & 0xFFFF
    return d - SEQ_MOD if d >= SEQ_MOD // 2 else d


def ts_delta(a: int, b: int) -> int:
    """Signed distance a - b between two 32-bit RTP timestamps (shortest way round)."""
    d = (a - b) & 0xFFFFFFFF
    return d - TS_MOD if d >= TS_MOD // 2 else d


@dataclass(slots=True)
class RtpPacket:
    """One RTP packet (RFC 3550 5.1). `extension` is (profile-defined 16 bits, data)."""

    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes = b""
    marker: bool = False
    csrcs: tuple[int, ...] = ()
    extension: tuple[int, bytes] | None = None
    padding: int = 0  # number of padding octets (incl. the count octet); 0 = no P bit

    @classmethod
    def parse(cls, data: bytes) -> RtpPacket:
        """Parse one datagram; raise RtpError naming the defect."""
        n = len(data)
        if n < HEADER_LEN:
            raise RtpError(f"RTP packet too short: {n} bytes, header needs {HEADER_LEN}")
        b0, b1, seq, ts, ssrc = _HEADER.unpack_from(data)
        if b0 == 0x80 and (b1 & 0x7F) not in _RTCP_PT_RANGE:
            # the packet of every call (v2, no CSRC, extension or padding): skip the rest
            return cls(b1 & 0x7F, seq, ts, ssrc, bytes(data[HEADER_LEN:]), b1 > 0x7F)
        version = b0 >> 6
        if version != RTP_VERSION:
            raise RtpError(f"RTP version {version}, expected 2")
        pt = b1 & 0x7F
        if pt in _RTCP_PT_RANGE:
            raise RtpError(f"payload type {pt} collides with RTCP packet type {pt + 128}")
        cc = b0 & 0x0F
        pos = HEADER_LEN + 4 * cc
        if pos > n:
            raise RtpError(f"CSRC count {cc} needs {pos} bytes, packet has {n}")
        csrcs = struct.unpack_from(f"!{cc}I", data, HEADER_LEN) if cc else ()
        extension = None
        if b0 & 0x10:
            if pos + 4 > n:
                raise RtpError("extension bit set but no room for the extension header")
            profile, words = struct.unpack_from("!HH", data, pos)
            end = pos + 4 + 4 * words
            if end > n:
                raise RtpError(f"header extension of {words} words overruns the packet")
            extension = (profile, bytes(data[pos + 4 : end]))
            pos = end
        end = n
        padding = 0
        if b0 & 0x20:
            padding = data[-1]
            if padding == 0:
                raise RtpError("padding bit set but padding count is 0")
            if padding > n - pos:
                raise RtpError(
                    f"padding count {padding} exceeds the {n - pos} bytes after the header"
                )
            end = n - padding
        return cls(
            payload_type=pt,
            sequence=seq,
            timestamp=ts,
            ssrc=ssrc,
            payload=bytes(data[pos:end]),
            marker=bool(b1 & 0x80),
            csrcs=tuple(csrcs),
            extension=extension,
            padding=padding,
        )

    def serialize(self) -> bytes:
        """Wire bytes; raise RtpError for field values that cannot be encoded."""
        if not 0 <= self.payload_type <= 127:
            raise RtpError(f"payload type {self.payload_type} outside 0..127")
        if len(self.csrcs) > 15:
            raise RtpError(f"{len(self.csrcs)} CSRCs, at most 15 fit")
        if not 0 <= self.padding <= 255:
            raise RtpError(f"padding {self.padding} outside 0..255")
        b0 = (RTP_VERSION << 6) | len(self.csrcs)
        if self.padding:
            b0 |= 0x20
        if self.extension is not None:
            b0 |= 0x10
        b1 = self.payload_type | (0x80 if self.marker else 0)
        parts = [
            _HEADER.pack(
                b0, b1, self.sequence & 0xFFFF, self.timestamp & 0xFFFFFFFF, self.ssrc & 0xFFFFFFFF
            )
        ]
        if self.csrcs:
            parts.append(struct.pack(f"!{len(self.csrcs)}I", *self.csrcs))
        if self.extension is not None:
            profile, data = self.extension
            if len(data) % 4:
                raise RtpError(f"extension data is {len(data)} bytes, must be a multiple of 4")
            parts.append(struct.pack("!HH", profile, len(data) // 4) + data)
        parts.append(self.payload)
        if self.padding:
            parts.append(bytes(self.padding - 1) + bytes([self.padding]))
        return b"".join(parts)


class RtpSender:
    """Numbers outgoing packets of one stream.

    The timestamp is a media clock at the codec's RTP *clock rate* (G.722 uses 8000 though it
    samples at 16 kHz, RFC 3551 4.5.2), so callers pass `samples` in clock-rate units. The
    marker bit goes on the first packet and on the first packet after `skip()` (a talkspurt
    start after silence suppression, RFC 3551 4.1) unless the caller decides explicitly.
    """

    def __init__(self, ids: IdSource, payload_type: int, clock_rate: int) -> None:
        self.ssrc = ids.randbelow(TS_MOD)
        self.payload_type = payload_type
        self.clock_rate = clock_rate
        self.sequence = ids.randbelow(SEQ_MOD)  # of the next packet
        self.timestamp = ids.randbelow(TS_MOD)  # media time of the next sample to be sent
        self.packets_sent = 0
        self.octets_sent = 0  # payload octets, as the SR sender's octet count (RFC 3550 6.4.1)
        self._talkspurt = True

    def send(
        self,
        payload: bytes,
        samples: int,
        marker: bool | None = None,
        *,
        payload_type: int | None = None,
        timestamp: int | None = None,
    ) -> bytes:
        """Build the next packet and advance the media clock by `samples`.

        `timestamp` overrides the packet's timestamp without changing the clock's progress:
        RFC 4733 events keep the timestamp of the event start while time goes on.
        """
        if marker is None:
            marker = self._talkspurt
        self._talkspurt = False
        pt = self.payload_type if payload_type is None else payload_type
        if not 0 <= pt <= 127:
            raise RtpError(f"payload type {pt} outside 0..127")
        # The header packed directly (what RtpPacket.serialize makes for a packet without
        # CSRCs, extension or padding): this runs 50 times a second per call.
        header = _HEADER.pack(
            0x80,
            pt | 0x80 if marker else pt,
            self.sequence,
            self.timestamp if timestamp is None else timestamp & 0xFFFFFFFF,
            self.ssrc & 0xFFFFFFFF,
        )
        self.sequence = (self.sequence + 1) & 0xFFFF
        self.timestamp = (self.timestamp + samples) & 0xFFFFFFFF
        self.packets_sent += 1
        self.octets_sent += len(payload)
        return header + payload

    def skip(self, samples: int) -> None:
        """Let media time pass without sending (silence, hold); the next packet gets a marker."""
        self.timestamp = (self.timestamp + samples) & 0xFFFFFFFF
        self._talkspurt = True

    def talkspurt(self) -> None:
        """Mark the next packet as the start of a talkspurt."""
        self._talkspurt = True


@dataclass(slots=True)
class RtpReceiverStats:
    """Reception statistics of one source: RFC 3550 A.1 sequence validation and A.8 jitter.

    Deviation from A.1: we remember which of the last `HISTORY` extended sequence numbers
    arrived, so duplicates are counted as such instead of inflating `received` (which would
    let cumulative loss go negative, as RFC 3550 6.4.1 notes for simple receivers).
    """

    clock_rate: int
    probation_packets: int = MIN_SEQUENTIAL
    ssrc: int | None = None
    base_ext: int = 0  # extended sequence number of the first packet counted
    max_seq: int = 0
    cycles: int = 0
    bad_seq: int = SEQ_MOD + 1
    probation: int = 0
    received: int = 0
    octets_received: int = 0
    duplicates: int = 0
    reordered: int = 0
    late: int = 0  # too late for playout, reported by the jitter buffer via note_late()
    invalid: int = 0  # rejected by sequence validation (probation, unconfirmed big jumps)
    expected_prior: int = 0
    received_prior: int = 0
    jitter: float = 0.0  # RFC 3550 A.8, timestamp units
    _seen: int = 0  # bit i set: extended seq (extended_max - i) arrived
    _last_ts: int | None = None
    _last_arrival: float = 0.0
    _started: bool = field(default=False)

    HISTORY = 1024

    def update(self, packet: RtpPacket, arrival: float, *, for_jitter: bool = True) -> bool:
        """Account one packet; False while the source is on probation, for a duplicate, or
        for an unconfirmed big sequence jump (such packets should not be played).

        Pass `for_jitter=False` for packets whose timestamp does not follow the media clock
        (RFC 4733 event packets repeat the event's start timestamp).
        """
        seq = packet.sequence
        if not self._started or packet.ssrc != self.ssrc:
            self._new_source(packet.ssrc, seq)
            valid = self.probation == 0
            if not valid:
                self._update_seq(seq)
        else:
            valid = self._update_seq(seq)
        if not valid:
            self.invalid += 1
            return False
        self.octets_received += len(packet.payload)
        if for_jitter:
            self._update_jitter(packet.timestamp, arrival)
        return True

    def note_late(self) -> None:
        self.late += 1

    def _new_source(self, ssrc: int, seq: int) -> None:
        self.ssrc = ssrc
        self._started = True
        self._last_ts = None
        self.probation = self.probation_packets
        if self.probation == 0:
            self._init_seq(seq)
        else:
            self.max_seq = (seq - 1) & 0xFFFF
            self.bad_seq = SEQ_MOD + 1

    def _init_seq(self, seq: int) -> None:
        """Start counting at `seq` (A.1 init_seq), which is counted as received."""
        self.base_ext = seq
        self.max_seq = seq
        self.bad_seq = SEQ_MOD + 1
        self.cycles = 0
        self.received = 1
        self.received_prior = 0
        self.expected_prior = 0
        self._seen = 1

    def _update_seq(self, seq: int) -> bool:
        udelta = (seq - self.max_seq) & 0xFFFF
        if self.probation:
            if seq == (self.max_seq + 1) & 0xFFFF:
                self.probation -= 1
                self.max_seq = seq
                if self.probation == 0:
                    self._init_seq(seq)
                    return True
            else:
                self.probation = self.probation_packets - 1
                self.max_seq = seq
            return False
        if udelta == 0:
            self.duplicates += 1
            return False
        if udelta < MAX_DROPOUT:
            if seq < self.max_seq:
                self.cycles += SEQ_MOD
            self.max_seq = seq
            self._seen = ((self._seen << udelta) | 1) & ((1 << self.HISTORY) - 1)
            self.received += 1
            return True
        if udelta <= SEQ_MOD - MAX_MISORDER:
            # A big jump: restart only if the next packet confirms it (the source restarted).
            if seq == self.bad_seq:
                self._init_seq(seq)
                return True
            self.bad_seq = (seq + 1) & 0xFFFF
            return False
        # Older than max_seq but within MAX_MISORDER: a duplicate or a reordered packet.
        back = SEQ_MOD - udelta
        if back < self.HISTORY:
            if self._seen >> back & 1:
                self.duplicates += 1
                return False
            self._seen |= 1 << back
        # Older than the first packet counted (reordered start): widen the expected range so
        # the loss figure stays right.
        self.base_ext = min(self.base_ext, self.extended_max - back)
        self.reordered += 1
        self.received += 1
        return True

    def _update_jitter(self, ts: int, arrival: float) -> None:
        if self._last_ts is not None:
            d = (arrival - self._last_arrival) * self.clock_rate - ts_delta(ts, self._last_ts)
            self.jitter += (abs(d) - self.jitter) / 16.0
        self._last_ts = ts
        self._last_arrival = arrival

    @property
    def extended_max(self) -> int:
        """Highest extended sequence number received (RR "extended highest sequence")."""
        return self.cycles + self.max_seq

    @property
    def expected(self) -> int:
        if self.probation or not self._started:
            return 0
        return self.extended_max - self.base_ext + 1

    @property
    def lost(self) -> int:
        """Cumulative packets lost (RFC 3550 A.3), clamped to the 24-bit signed field."""
        return max(-0x800000, min(0x7FFFFF, self.expected - self.received))

    @property
    def jitter_ms(self) -> float:
        return self.jitter * 1000.0 / self.clock_rate

    def take_interval(self) -> int:
        """Fraction lost since the previous call, 8-bit fixed point (RFC 3550 A.3)."""
        expected = self.expected
        expected_interval = expected - self.expected_prior
        self.expected_prior = expected
        received_interval = self.received - self.received_prior
        self.received_prior = self.received
        lost_interval = expected_interval - received_interval
        if expected_interval == 0 or lost_interval <= 0:
            return 0
        return min(255, (lost_interval << 8) // expected_interval)


class SymmetricRtpLatch:
    """Where to send RTP: the SDP address, or the address the peer's RTP comes from (RFC 4961).

    Latching helps behind NAT but lets anyone who can guess the port steal the media, so it is
    off unless configured (`enabled`), and then it latches once, on the first packet that
    passes `accept()` (the caller has already matched SSRC/SRTP authentication), and moves
    again only when the SDP changes (`set_sdp_address`, e.g. after a re-INVITE).
    """

    def __init__(self, sdp_address: tuple[str, int], *, enabled: bool = False) -> None:
        self.sdp_address = sdp_address
        self.enabled = enabled
        self.latched: tuple[str, int] | None = None

    @property
    def remote(self) -> tuple[str, int]:
        return self.latched if self.latched is not None else self.sdp_address

    def accept(self, source: tuple[str, int]) -> bool:
        """Note a valid packet's source; True if the send address changed because of it."""
        if not self.enabled or self.latched is not None or source == self.sdp_address:
            return False
        self.latched = source
        return True

    def set_sdp_address(self, address: tuple[str, int]) -> None:
        self.sdp_address = address
        self.latched = None
