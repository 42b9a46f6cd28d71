"""RFC 4733 telephone-events (DTMF over RTP), sans-IO.

``DtmfSender`` turns a key press into the list of payloads the RTP sender emits, one
per packet interval: all share the event's start timestamp, the first asks for the
marker bit, the duration grows, and the end packet (E bit) goes out three times
(RFC 4733 section 2.5.1). ``DtmfReceiver`` turns received payloads back into one
report per key press, however many of those packets were lost or repeated.
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass
from typing import NamedTuple

log = logging.getLogger(__name__)

#: RFC 4733 section 3.2 event codes for the DTMF keys (16 is hook flash).
EVENT_CODES: dict[str, int] = {
    **{str(d): d for d in range(10)},
    "*": 10,
    "#": 11,
    "A": 12,
    "B": 13,
    "C": 14,
    "D": 15,
}
EVENT_NAMES: dict[int, str] = {code: key for key, code in EVENT_CODES.items()}
FLASH = 16
DEFAULT_EVENTS = frozenset(range(16))  # section 7.1.1 / FEATURES 1.2: no fmtp => 0-15
END_REPEATS = 3
MAX_DURATION = 0xFFFF


class DtmfError(ValueError):
    """A key press that cannot be sent (unknown key, not offered by the peer, too long)."""


def parse_events(fmtp: str | None) -> frozenset[int]:
    """Event codes from a telephone-event fmtp such as ``"0-15"`` or ``"0-16,32"``.

    No fmtp means 0-15 (the DTMF keys). Malformed items are skipped with a warning
    rather than failing the whole session description.
    """
    if fmtp is None or not fmtp.strip():
        return DEFAULT_EVENTS
    events: set[int] = set()
    for item in fmtp.split(","):
        item = item.strip()
        lo, sep, hi = item.partition("-")
        try:
            first, last = int(lo), int(hi) if sep else int(lo)
        except ValueError:
            log.warning("ignoring malformed telephone-event fmtp item %r in %r", item, fmtp)
            continue
        if not 0 <= first <= last <= 255:
            log.warning("ignoring out-of-range telephone-event fmtp item %r in %r", item, fmtp)
            continue
        events.update(range(first, last + 1))
    return frozenset(events)


def format_events(events: frozenset[int] | set[int]) -> str:
    """Inverse of `parse_events`, compressing runs: {0..15, 66} -> '0-15,66'."""
    parts: list[str] = []
    ordered = sorted(events)
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(parts)


def event_code(key: str | int) -> int:
    """Event code for a key (``"5"``, ``"*"``, ``"a"``) or an event code itself."""
    if isinstance(key, int):
        if not 0 <= key <= 255:
            raise DtmfError(f"telephone-event code must be 0-255, got {key}")
        return key
    code = EVENT_CODES.get(key.upper())
    if code is None:
        raise DtmfError(f"{key!r} is not a DTMF key (0-9, *, #, A-D)")
    return code


@dataclass(frozen=True)
class TelephoneEvent:
    """One RFC 4733 section 2.3 payload: event, E bit, volume (-dBm0) and duration."""

    event: int
    end: bool
    volume: int
    duration: int

    def pack(self) -> bytes:
        if not 0 <= self.volume <= 63:
            raise DtmfError(f"volume must be 0-63 (-dBm0), got {self.volume}")
        if not 0 <= self.duration <= MAX_DURATION:
            raise DtmfError(f"duration must fit 16 bits, got {self.duration}")
        flags = (0x80 if self.end else 0) | self.volume
        return struct.pack("!BBH", self.event, flags, self.duration)

    @classmethod
    def parse(cls, payload: bytes) -> TelephoneEvent:
        """Parse the first event block; trailing blocks (section 2.5.1.5 redundancy) are ignored."""
        if len(payload) < 4:
            raise DtmfError(f"telephone-event payload needs 4 bytes, got {len(payload)}")
        event, flags, duration = struct.unpack_from("!BBH", payload)
        return cls(event, bool(flags & 0x80), flags & 0x3F, duration)


class DtmfPacket(NamedTuple):
    """One packet for the RTP sender: payload, whether to set the marker, RTP timestamp."""

    payload: bytes
    marker: bool
    timestamp: int


class DtmfSender:
    """Builds the packets for key presses, restricted to the events the peer offered.

    ``packet_interval`` and durations are in RTP timestamp units of the
    telephone-event clock (160 = 20 ms at 8000 Hz).
    """

    def __init__(
        self,
        allowed: frozenset[int] = DEFAULT_EVENTS,
        clock_rate: int = 8000,
        packet_interval: int = 160,
        volume: int = 10,
    ) -> None:
        if packet_interval <= 0:
            raise ValueError(f"packet_interval must be positive, got {packet_interval}")
        self.allowed = allowed
        self.clock_rate = clock_rate
        self.packet_interval = packet_interval
        self.volume = volume

    @classmethod
    def from_fmtp(cls, fmtp: str | None, **kwargs: int) -> DtmfSender:
        return cls(parse_events(fmtp), **kwargs)

    def duration_units(self, milliseconds: float) -> int:
        return round(milliseconds * self.clock_rate / 1000)

    def packets(self, key: str | int, timestamp: int, duration: int) -> list[DtmfPacket]:
        """Packets for one event lasting ``duration`` timestamp units starting at ``timestamp``.

        Updates every ``packet_interval`` with the duration so far, then the final
        duration with the E bit, three times. The sender transmits one per interval.
        """
        code = event_code(key)
        if code not in self.allowed:
            offered = ",".join(str(e) for e in sorted(self.allowed)) or "none"
            raise DtmfError(f"peer did not offer telephone-event {code} (offered: {offered})")
        if not 0 < duration <= MAX_DURATION:
            raise DtmfError(
                f"event duration must be 1-{MAX_DURATION} timestamp units, got {duration}"
            )
        ts = timestamp & 0xFFFFFFFF
        updates = list(range(self.packet_interval, duration, self.packet_interval))
        events = [TelephoneEvent(code, False, self.volume, d) for d in updates]
        events += [TelephoneEvent(code, True, self.volume, duration)] * END_REPEATS
        return [DtmfPacket(ev.pack(), i == 0, ts) for i, ev in enumerate(events)]


@dataclass(frozen=True)
class DtmfEvent:
    """A received key press, reported once."""

    code: int
    digit: str | None  # None for non-DTMF events (e.g. 16 flash)
    duration: int  # timestamp units
    volume: int
    timestamp: int
    ended: bool  # False when the end packets were lost and a later event/flush closed it


class DtmfReceiver:
    """Reports each received event exactly once, with its duration.

    An event is identified by its RTP timestamp (RFC 4733 section 2.5.2.1): a new
    timestamp starts a new event even if the start packet was lost; end-packet
    retransmissions and late packets for an already reported event are ignored; an
    event whose end packets were all lost is reported when the next one begins or on
    ``flush()``.
    """

    def __init__(self, remember: int = 8) -> None:
        self._current: tuple[int, TelephoneEvent] | None = None
        self._reported: list[int] = []
        self._remember = remember

    def feed(self, payload: bytes, timestamp: int) -> list[DtmfEvent]:
        """Process one telephone-event payload; returns events completed by it."""
        try:
            ev = TelephoneEvent.parse(payload)
        except DtmfError as exc:
            log.warning("dropping telephone-event packet: %s", exc)
            return []
        if timestamp in self._reported:
            return []
        out: list[DtmfEvent] = []
        if self._current is not None and self._current[0] != timestamp:
            out.append(self._close(ended=False))
        if self._current is None or ev.duration >= self._current[1].duration:
            self._current = (timestamp, ev)
        if ev.end:
            out.append(self._close(ended=True))
        return out

    def flush(self) -> list[DtmfEvent]:
        """Report an event still in progress (e.g. the stream stopped without end packets)."""
        return [self._close(ended=False)] if self._current is not None else []

    @property
    def active(self) -> int | None:
        """Code of the event currently being received (key held down), if any."""
        return None if self._current is None else self._current[1].event

    def _close(self, ended: bool) -> DtmfEvent:
        assert self._current is not None
        timestamp, ev = self._current
        self._current = None
        self._reported = (self._reported + [timestamp])[-self._remember :]
        return DtmfEvent(
            ev.event, EVENT_NAMES.get(ev.event), ev.duration, ev.volume, timestamp, ended
        )
