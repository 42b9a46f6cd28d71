"""The Pi's side of the front-panel link, sans-IO: frames in, key edges and LED frames out.

The serial adapter (board/panel_serial.py) owns the port and feeds bytes here with the time;
this object decides what the panel's silence, reset or wrong protocol version mean, so those
rules are tested on exact clock times. It keeps the LEDs' wanted modes and re-sends all of them
when the panel says hello again (a panel reset loses its LED state), and re-sends an LED frame
until the panel acknowledges it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

from board.frontpanel import protocol
from board.ports import ALL_KEYS, LED_MODES, KeyEdge

log = logging.getLogger(__name__)

LinkState = Literal["waiting", "connected", "silent", "wrong_version"]

HEARTBEAT_TIMEOUT = 1.5  # the panel beats every 0.5 s: three missed beats = silent
QUERY_INTERVAL = 1.0  # ask an unknown/silent panel to say hello this often
ACK_TIMEOUT = 0.2
MAX_RETRIES = 5


@dataclass
class _Pending:
    name: str
    mode: str
    sent_at: float
    tries: int = 1


@dataclass
class PanelLink:
    """State of one panel connection; feed(), handle_timer() and led() return bytes to send."""

    heartbeat_timeout: float = HEARTBEAT_TIMEOUT
    state: LinkState = "waiting"
    error: str = "front panel has not said hello yet"
    firmware: str | None = None
    resets: int = 0
    bad_frames: int = 0
    _reader: protocol.LineReader = field(default_factory=protocol.LineReader)
    _seq: protocol.Sequencer = field(default_factory=protocol.Sequencer)
    _leds: dict[str, str] = field(default_factory=dict)
    _pending: dict[int, _Pending] = field(default_factory=dict)
    _last_rx: float | None = None
    _last_query: float | None = None
    _query_outstanding: bool = False
    _hellos: int = 0
    _uptime_ms: int = -1

    # -- input -----------------------------------------------------------------------------

    def feed(self, data: bytes, now: float) -> tuple[list[KeyEdge], bytes]:
        """Bytes from the panel -> (key edges, bytes to send back)."""
        edges: list[KeyEdge] = []
        out = b""
        before = self._reader.errors
        for kind, _seq, fields in self._reader.feed(data):
            self._last_rx = now
            if kind == protocol.HELLO:
                out += self._on_hello(fields, now)
            elif self.state == "wrong_version":
                continue  # don't act on frames we may misread
            elif kind == protocol.KEY:
                edge = self._on_key(fields, now)
                if edge is not None:
                    edges.append(edge)
            elif kind == protocol.HEARTBEAT and fields and fields[0].isdigit():
                out += self._on_heartbeat(int(fields[0]), now)
            elif kind == protocol.ACK and fields and fields[0].isdigit():
                self._pending.pop(int(fields[0]), None)
            elif kind == protocol.ERROR:
                log.warning("front panel reports: %s", "|".join(fields))
            if kind != protocol.HELLO and self.state == "silent":
                # Back after silence or a reconnect: whatever it kept, make its LEDs right.
                self._set("connected", "")
                out += self._resend_all(now)
        if self._reader.errors != before:
            self.bad_frames += self._reader.errors - before
            log.warning("front panel: garbled frame skipped (%s)", self._reader.last_error)
        return edges, out

    def _on_hello(self, fields: list[str], now: float) -> bytes:
        version = fields[0] if fields else "?"
        if version != str(protocol.PROTOCOL_VERSION):
            self._set(
                "wrong_version",
                f"front panel speaks protocol version {version}, "
                f"this phone speaks {protocol.PROTOCOL_VERSION}: update the panel firmware",
            )
            return b""
        self.firmware = fields[1] if len(fields) > 1 else None
        self._hellos += 1
        if self._hellos > 1 and not self._query_outstanding:
            # An unasked hello is the panel booting again.
            self._count_reset()
        self._query_outstanding = False
        self._uptime_ms = -1
        self._set("connected", "")
        return self._resend_all(now)

    def _on_heartbeat(self, uptime_ms: int, now: float) -> bytes:
        rebooted = uptime_ms < self._uptime_ms
        self._uptime_ms = uptime_ms
        if not rebooted:
            return b""
        self._count_reset()  # its clock went back: it rebooted and we missed the hello
        return self._resend_all(now)

    def _resend_all(self, now: float) -> bytes:
        # A fresh panel has every LED off: send all wanted modes again.
        self._pending.clear()
        return b"".join(self._send_led(name, mode, now) for name, mode in self._leds.items())

    def _count_reset(self) -> None:
        self.resets += 1
        log.warning("front panel reset (#%d): restoring its LEDs", self.resets)

    def _on_key(self, fields: list[str], now: float) -> KeyEdge | None:
        if len(fields) < 2 or fields[0] not in ALL_KEYS or fields[1] not in ("D", "U"):
            self.bad_frames += 1
            log.warning("front panel: key frame with unknown key or state %r", fields)
            return None
        return KeyEdge(fields[0], fields[1] == "D", now)

    # -- output ----------------------------------------------------------------------------

    def led(self, name: str, mode: str, now: float) -> bytes:
        """Want LED `name` in `mode`; returns the frame to send (empty if it changes nothing)."""
        if mode not in LED_MODES:
            raise ValueError(f"unknown LED mode {mode!r}")
        if self._leds.get(name) == mode:
            return b""
        self._leds[name] = mode
        if self.state != "connected":
            return b""  # sent with the rest when the panel says hello
        return self._send_led(name, mode, now)

    def _send_led(self, name: str, mode: str, now: float) -> bytes:
        seq = self._seq.take()
        for old_seq, pending in list(self._pending.items()):
            if pending.name == name:
                del self._pending[old_seq]
        self._pending[seq] = _Pending(name, mode, now)
        return protocol.encode(protocol.LED, seq, (name, mode))

    # -- time ------------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        deadlines = [p.sent_at + ACK_TIMEOUT for p in self._pending.values()]
        if self.state == "connected" and self._last_rx is not None:
            deadlines.append(self._last_rx + self.heartbeat_timeout)
        else:
            deadlines.append((self._last_query or 0.0) + QUERY_INTERVAL)
        return min(deadlines)

    def handle_timer(self, now: float) -> bytes:
        out = b""
        if (
            self.state == "connected"
            and self._last_rx is not None
            and now >= self._last_rx + self.heartbeat_timeout
        ):
            self._set("silent", f"front panel silent for {now - self._last_rx:.1f} s")
        if self.state != "connected":
            if self._last_query is None or now >= self._last_query + QUERY_INTERVAL:
                self._last_query = now
                self._query_outstanding = True
                out += protocol.encode(protocol.QUERY, self._seq.take(), ())
            return out
        for seq, pending in list(self._pending.items()):
            if now < pending.sent_at + ACK_TIMEOUT:  # same sum as get_timer(): no float drift
                continue
            del self._pending[seq]
            if pending.tries >= MAX_RETRIES:
                log.warning("front panel never acknowledged LED %s", pending.name)
                continue
            out += self._send_led(pending.name, pending.mode, now)
            self._pending[self._seq.next - 1 & 0xFFFF].tries = pending.tries + 1
        return out

    def connection_lost(self, why: str) -> None:
        """The serial port went away (USB panel unplugged or reset)."""
        self._uptime_ms = -1  # the next device is a new panel: its clock starts anew
        self._set("silent", f"front panel disconnected: {why}")

    def _set(self, state: LinkState, error: str) -> None:
        if state != self.state:
            log.info("front panel %s%s", state, f": {error}" if error else "")
        self.state = state
        self.error = error

    def status(self) -> dict[str, object]:
        return {
            "state": self.state,
            "error": self.error or None,
            "firmware": self.firmware,
            "resets": self.resets,
            "bad_frames": self.bad_frames,
            "leds": dict(self._leds),
        }
