"""The panel's behaviour without its pins: what it says to the Pi and how it obeys the Pi.

main.py (MicroPython) feeds it key edges, received bytes and the time; it returns bytes to write
to the UART. Tests run exactly this object under CPython (behind a pty, as an emulated panel) and
under MicroPython, so the emulator is the firmware, not a re-implementation of it.
"""

try:
    from frontpanel import protocol
    from frontpanel.scanner import LedPatterns
except ImportError:  # on CPython the package lives under board/
    from board.frontpanel import protocol
    from board.frontpanel.scanner import LedPatterns

FIRMWARE_VERSION = "1.0.0"
HEARTBEAT_MS = 500


class PanelCore:
    """Owns the sequence counter, the LED modes and the heartbeat schedule."""

    def __init__(self, key_names, led_names, now_ms=0, heartbeat_ms=HEARTBEAT_MS):
        self.key_names = list(key_names)
        self.leds = LedPatterns(led_names)
        self.heartbeat_ms = heartbeat_ms
        self.reader = protocol.LineReader()
        self.seq = protocol.Sequencer()
        self.started_ms = now_ms
        self.next_heartbeat = now_ms + heartbeat_ms
        self.reset_requested = False

    def hello(self):
        return protocol.encode(
            protocol.HELLO,
            self.seq.take(),
            (protocol.PROTOCOL_VERSION, FIRMWARE_VERSION, len(self.key_names), len(self.leds.modes)),
        )

    def key(self, name, pressed, at_ms):
        return protocol.encode(
            protocol.KEY, self.seq.take(), (name, "D" if pressed else "U", at_ms - self.started_ms)
        )

    def tick(self, now_ms):
        """Bytes due at `now_ms` (the heartbeat); call at least every few ms."""
        if now_ms < self.next_heartbeat:
            return b""
        self.next_heartbeat = now_ms + self.heartbeat_ms
        return protocol.encode(protocol.HEARTBEAT, self.seq.take(), (now_ms - self.started_ms,))

    def receive(self, data):
        """Obey the Pi's frames in `data`; returns the bytes to answer with."""
        out = b""
        for kind, seq, fields in self.reader.feed(data):
            if kind == protocol.LED and len(fields) == 2:
                try:
                    self.leds.set(fields[0], fields[1])
                except ValueError as e:
                    out += protocol.encode(protocol.ERROR, self.seq.take(), (str(e),))
                    continue
                out += protocol.encode(protocol.ACK, self.seq.take(), (seq,))
            elif kind == protocol.QUERY:
                out += self.hello()
            elif kind == protocol.RESET:
                self.reset_requested = True
            else:
                out += protocol.encode(protocol.ERROR, self.seq.take(), ("unexpected " + kind,))
        return out
