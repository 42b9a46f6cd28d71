"""The front panel's line protocol, shared verbatim by the panel (MicroPython) and the Pi (CPython).

Why a text line protocol: it survives a UART that drops or corrupts bytes (a newline
resynchronises the reader), it can be read on a serial console while debugging, and it needs no
struct packing that differs between the two Pythons. Each frame is one ASCII line

    TYPE|SEQ|FIELD|FIELD...*CRC\n

where CRC is CRC-16/CCITT-FALSE of everything before the '*', as four upper-case hex digits.
Fields never contain '|', '*', CR or LF (encode() refuses them). SEQ counts 0..65535 per sender
and restarts at 0 when the panel resets, which the Pi detects together with the HELLO frame.

Frame types (the first field after SEQ is listed):
  panel -> Pi: H hello (protocol version, firmware version, key count, led count),
               K key (name, "D" down / "U" up, panel milliseconds), B heartbeat (uptime ms),
               A ack (sequence number acknowledged), E error (text)
  Pi -> panel: L led (name, mode), Q query (panel answers with H), R reset request

Must run under MicroPython: no `re`, no dataclasses, no typing, no f-string debugging features.
"""

PROTOCOL_VERSION = 1
MAX_LINE = 160  # longer lines are garbage (no valid frame is that long)

HELLO = "H"
KEY = "K"
HEARTBEAT = "B"
ACK = "A"
ERROR = "E"
LED = "L"
QUERY = "Q"
RESET = "R"
TYPES = (HELLO, KEY, HEARTBEAT, ACK, ERROR, LED, QUERY, RESET)

LED_MODES = ("off", "on", "slow_flash", "fast_flash")

_FORBIDDEN = ("|", "*", "\r", "\n")


class FrameError(ValueError):
    """A line that is not a valid frame; the message says what is wrong with it."""


def crc16(data):
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF) of a bytes-like object."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            if crc & 0x8000:
                crc = ((crc << 1) ^ 0x1021) & 0xFFFF
            else:
                crc = (crc << 1) & 0xFFFF
    return crc


def encode(kind, seq, fields=()):
    """One frame as bytes, newline included."""
    if kind not in TYPES:
        raise FrameError("unknown frame type " + repr(kind))
    parts = [kind, str(seq & 0xFFFF)]
    for field in fields:
        text = str(field)
        for bad in _FORBIDDEN:
            if bad in text:
                raise FrameError("field " + repr(text) + " contains " + repr(bad))
        parts.append(text)
    body = "|".join(parts).encode()
    return body + b"*" + f"{crc16(body):04X}".encode() + b"\n"


def decode(line):
    """Parse one line (bytes, without or with its newline) into (kind, seq, [fields])."""
    line = line.rstrip(b"\r\n")
    if len(line) > MAX_LINE:
        raise FrameError("line too long")
    star = line.rfind(b"*")
    if star < 0:
        raise FrameError("no checksum")
    body = line[:star]
    try:
        text = body.decode()
        want = int(line[star + 1 :].decode(), 16)
    except (UnicodeError, ValueError):
        raise FrameError("bad checksum or text") from None
    if len(line) - star - 1 != 4:
        raise FrameError("bad checksum length")
    if crc16(body) != want:
        raise FrameError("checksum mismatch")
    parts = text.split("|")
    if len(parts) < 2 or parts[0] not in TYPES:
        raise FrameError("unknown frame type")
    try:
        seq = int(parts[1])
    except ValueError:
        raise FrameError("bad sequence number") from None
    if not 0 <= seq <= 0xFFFF:
        raise FrameError("bad sequence number")
    return parts[0], seq, parts[2:]


class LineReader:
    """Splits a byte stream into frames; garbage lines are counted and skipped, never fatal.

    feed() returns the frames complete so far as (kind, seq, fields) tuples.
    """

    def __init__(self):
        self._buf = b""
        self.errors = 0
        self.last_error = ""

    def feed(self, data):
        self._buf += data
        frames = []  # type: list
        while True:
            nl = self._buf.find(b"\n")
            if nl < 0:
                if len(self._buf) > MAX_LINE:
                    # A line this long can never be valid: drop it and resynchronise.
                    self._buf = b""
                    self._fail("line too long")
                return frames
            line = self._buf[:nl]
            self._buf = self._buf[nl + 1 :]
            if not line.strip():
                continue
            try:
                frames.append(decode(line))
            except FrameError as e:
                self._fail(str(e))

    def _fail(self, why):
        self.errors += 1
        self.last_error = why


class Sequencer:
    """Outgoing sequence numbers for one sender, wrapping at 16 bits."""

    def __init__(self):
        self.next = 0

    def take(self):
        seq = self.next
        self.next = (self.next + 1) & 0xFFFF
        return seq
