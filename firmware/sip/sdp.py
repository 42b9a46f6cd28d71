"""SDP (RFC 8866, formerly RFC 4566): parse and serialise session descriptions.

The parser is strict about what changes meaning (line syntax, numbers, m= shape) and
tolerant about what real phones get wrong harmlessly (LF instead of CRLF, trailing
whitespace, blank lines, session-level lines out of order). Every attribute, known or not,
is kept in its original order so a description survives a parse/serialise round trip;
the typed accessors (rtpmap, fmtp, ptime, direction, rtcp, crypto) read from that list.
Serialisation always uses CRLF and the RFC's line order.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")

# RFC 3551 table 4: static audio payload types a peer may use without an a=rtpmap.
STATIC_AUDIO_PT: dict[int, tuple[str, int, int]] = {
    0: ("PCMU", 8000, 1),
    3: ("GSM", 8000, 1),
    4: ("G723", 8000, 1),
    5: ("DVI4", 8000, 1),
    6: ("DVI4", 16000, 1),
    7: ("LPC", 8000, 1),
    8: ("PCMA", 8000, 1),
    9: ("G722", 8000, 1),
    10: ("L16", 44100, 2),
    11: ("L16", 44100, 1),
    12: ("QCELP", 8000, 1),
    13: ("CN", 8000, 1),
    14: ("MPA", 90000, 1),
    15: ("G728", 8000, 1),
    16: ("DVI4", 11025, 1),
    17: ("DVI4", 22050, 1),
    18: ("G729", 8000, 1),
}


class SdpError(ValueError):
    """A session description is malformed; the message names the offending line."""

    def __init__(self, reason: str, line_no: int | None = None, line: str | None = None) -> None:
        where = f"SDP line {line_no} ({line!r}): " if line_no is not None else "SDP: "
        super().__init__(where + reason)
        self.reason = reason
        self.line_no = line_no
        self.line = line


@dataclass
class Origin:
    """o= line; RFC 3264 section 8 keys re-offers on `session_id` and `version`."""

    username: str = "-"
    session_id: str = "0"
    version: int = 0
    nettype: str = "IN"
    addrtype: str = "IP4"
    address: str = "0.0.0.0"

    def __str__(self) -> str:
        return (
            f"{self.username} {self.session_id} {self.version} "
            f"{self.nettype} {self.addrtype} {self.address}"
        )


@dataclass
class Connection:
    """c= line. `address` keeps any multicast /ttl/count suffix as written."""

    address: str
    addrtype: str = "IP4"
    nettype: str = "IN"

    @property
    def host(self) -> str:
        """The address without a multicast /ttl or /count suffix."""
        return self.address.split("/", 1)[0]

    @property
    def is_hold(self) -> bool:
        """RFC 2543-style hold: c=0.0.0.0 (RFC 3264 section 8.4) means 'do not send to me'."""
        return self.host in ("0.0.0.0", "::")

    def __str__(self) -> str:
        return f"{self.nettype} {self.addrtype} {self.address}"


@dataclass
class Bandwidth:
    bwtype: str
    value: int

    def __str__(self) -> str:
        return f"{self.bwtype}:{self.value}"


@dataclass
class Timing:
    """t= line with its r= repeat lines (kept as written; phones use t=0 0)."""

    start: int = 0
    stop: int = 0
    repeats: list[str] = field(default_factory=list)


@dataclass
class Attribute:
    name: str
    value: str | None = None

    def __str__(self) -> str:
        return self.name if self.value is None else f"{self.name}:{self.value}"


@dataclass(frozen=True)
class RtpMap:
    payload_type: int
    encoding: str
    clock_rate: int
    channels: int | None = None

    def __str__(self) -> str:
        tail = f"/{self.channels}" if self.channels is not None else ""
        return f"{self.payload_type} {self.encoding}/{self.clock_rate}{tail}"


class _Attributes:
    """Shared ordered-attribute accessors for session and media level."""

    attributes: list[Attribute]

    def get_attrs(self, name: str) -> list[str | None]:
        """Values of every attribute called `name` (case-sensitive, as RFC 8866 says)."""
        return [a.value for a in self.attributes if a.name == name]

    def get_attr(self, name: str) -> str | None:
        """Value of the first `name` attribute; None if absent or a flag without value."""
        for a in self.attributes:
            if a.name == name:
                return a.value
        return None

    def has_attr(self, name: str) -> bool:
        return any(a.name == name for a in self.attributes)

    def add_attr(self, name: str, value: str | None = None) -> None:
        self.attributes.append(Attribute(name, value))

    def remove_attr(self, name: str) -> None:
        self.attributes = [a for a in self.attributes if a.name != name]

    @property
    def direction(self) -> str | None:
        """The direction attribute written at this level, or None (caller applies defaults)."""
        for a in self.attributes:
            if a.name in DIRECTIONS:
                return a.name
        return None

    def set_direction(self, direction: str | None) -> None:
        """Replace any direction attribute; None removes it."""
        if direction is not None and direction not in DIRECTIONS:
            raise ValueError(f"unknown SDP direction {direction!r}")
        self.attributes = [a for a in self.attributes if a.name not in DIRECTIONS]
        if direction is not None:
            self.attributes.append(Attribute(direction))


@dataclass
class Media(_Attributes):
    """One m= section with its own i/c/b/k/a lines."""

    media: str
    port: int
    proto: str
    fmts: list[str]
    port_count: int | None = None
    title: str | None = None
    connections: list[Connection] = field(default_factory=list)
    bandwidths: list[Bandwidth] = field(default_factory=list)
    key: str | None = None
    attributes: list[Attribute] = field(default_factory=list)

    @property
    def is_rtp(self) -> bool:
        return self.proto.upper().startswith("RTP/")

    @property
    def payload_types(self) -> list[int]:
        """The fmt list as RTP payload type numbers (RTP profiles only)."""
        if not self.is_rtp:
            raise ValueError(f"m={self.media} uses {self.proto}, which has no payload types")
        return [int(f) for f in self.fmts]

    def rtpmaps(self) -> dict[int, RtpMap]:
        """a=rtpmap entries by payload type (malformed ones are skipped with a log line)."""
        out: dict[int, RtpMap] = {}
        for value in self.get_attrs("rtpmap"):
            parsed = parse_rtpmap(value or "")
            if parsed is None:
                log.info("ignoring malformed a=rtpmap:%s", value)
                continue
            out.setdefault(parsed.payload_type, parsed)
        return out

    def rtpmap(self, pt: int) -> RtpMap | None:
        """The codec a payload type means: its a=rtpmap, else the RFC 3551 static table."""
        found = self.rtpmaps().get(pt)
        if found is not None:
            return found
        if pt in STATIC_AUDIO_PT and self.media == "audio":
            name, rate, channels = STATIC_AUDIO_PT[pt]
            return RtpMap(pt, name, rate, channels if channels != 1 else None)
        return None

    def fmtp(self, fmt: int | str) -> str | None:
        """Format parameters of one payload type (the text after 'a=fmtp:<pt> ')."""
        key = str(fmt)
        for value in self.get_attrs("fmtp"):
            if value is None:
                continue
            head, _, params = value.partition(" ")
            if head == key:
                return params.strip()
        return None

    def _int_attr(self, name: str) -> int | None:
        value = self.get_attr(name)
        if value is None:
            return None
        try:
            number = int(float(value.strip()))  # some phones write ptime:20.0
        except ValueError:
            log.info("ignoring malformed a=%s:%s", name, value)
            return None
        return number if number > 0 else None

    @property
    def ptime(self) -> int | None:
        return self._int_attr("ptime")

    @property
    def maxptime(self) -> int | None:
        return self._int_attr("maxptime")

    @property
    def rtcp(self) -> tuple[int, Connection | None] | None:
        """RFC 3605 a=rtcp: (port, optional connection address), or None if absent/bad."""
        value = self.get_attr("rtcp")
        if value is None:
            return None
        parts = value.split()
        try:
            port = int(parts[0])
        except (ValueError, IndexError):
            log.info("ignoring malformed a=rtcp:%s", value)
            return None
        conn = Connection(parts[3], parts[2], parts[1]) if len(parts) >= 4 else None
        return port, conn

    @property
    def crypto(self) -> list[str]:
        """RFC 4568 a=crypto values in offer order ('tag suite key-params [session-params]')."""
        return [v for v in self.get_attrs("crypto") if v]


@dataclass
class SessionDescription(_Attributes):
    """A whole SDP body. `parse()` reads one; `serialize()` writes CRLF text."""

    origin: Origin = field(default_factory=Origin)
    name: str = "-"
    version: int = 0
    info: str | None = None
    uri: str | None = None
    emails: list[str] = field(default_factory=list)
    phones: list[str] = field(default_factory=list)
    connection: Connection | None = None
    bandwidths: list[Bandwidth] = field(default_factory=list)
    timings: list[Timing] = field(default_factory=lambda: [Timing()])
    zone: str | None = None
    key: str | None = None
    attributes: list[Attribute] = field(default_factory=list)
    media: list[Media] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str | bytes) -> SessionDescription:
        return parse_sdp(text)

    def serialize(self) -> str:
        return format_sdp(self)

    def to_bytes(self) -> bytes:
        return self.serialize().encode("utf-8")

    def __str__(self) -> str:
        return self.serialize()

    def media_connection(self, m: Media) -> Connection | None:
        """The c= that applies to a media section (its own first, else the session's)."""
        return m.connections[0] if m.connections else self.connection

    def media_direction(self, m: Media) -> str:
        """Effective direction: media-level attribute, else session-level, else sendrecv."""
        return m.direction or self.direction or "sendrecv"


# ---------------------------------------------------------------- parsing

_MEDIA_TYPES_ALLOWED = "icbka"


def parse_rtpmap(value: str) -> RtpMap | None:
    """'96 opus/48000/2' -> RtpMap; None if malformed."""
    head, _, rest = value.strip().partition(" ")
    parts = rest.strip().split("/")
    try:
        pt = int(head)
        rate = int(parts[1])
        channels = int(parts[2]) if len(parts) > 2 and parts[2] else None
    except (ValueError, IndexError):
        return None
    if not parts[0] or not 0 <= pt <= 127:
        return None
    return RtpMap(pt, parts[0], rate, channels)


def _int(text: str, what: str, line_no: int, line: str, lo: int = 0, hi: int | None = None) -> int:
    if not text.isdigit():
        raise SdpError(f"{what} {text!r} is not a number", line_no, line)
    value = int(text)
    if value < lo or (hi is not None and value > hi):
        raise SdpError(f"{what} {value} out of range", line_no, line)
    return value


def _parse_connection(value: str, line_no: int, line: str) -> Connection:
    parts = value.split()
    if len(parts) != 3:
        raise SdpError("c= needs '<nettype> <addrtype> <address>'", line_no, line)
    return Connection(parts[2], parts[1], parts[0])


def _parse_bandwidth(value: str, line_no: int, line: str) -> Bandwidth:
    bwtype, sep, number = value.partition(":")
    if not sep or not bwtype:
        raise SdpError("b= needs '<bwtype>:<bandwidth>'", line_no, line)
    return Bandwidth(bwtype, _int(number.strip(), "bandwidth", line_no, line))


def _parse_attribute(value: str, line_no: int, line: str) -> Attribute:
    name, sep, rest = value.partition(":")
    if not name or " " in name:
        raise SdpError("a= attribute name is empty or has spaces", line_no, line)
    return Attribute(name, rest if sep else None)


def _parse_origin(value: str, line_no: int, line: str) -> Origin:
    parts = value.split()
    if len(parts) != 6:
        raise SdpError(
            "o= needs 6 fields '<username> <sess-id> <sess-version> <nettype> <addrtype> <address>'",
            line_no,
            line,
        )
    _int(parts[1], "session id", line_no, line)
    version = _int(parts[2], "session version", line_no, line)
    return Origin(parts[0], parts[1], version, parts[3], parts[4], parts[5])


def _parse_media(value: str, line_no: int, line: str) -> Media:
    parts = value.split()
    if len(parts) < 3:
        raise SdpError("m= needs '<media> <port>[/<count>] <proto> <fmt> ...'", line_no, line)
    port_text, slash, count_text = parts[1].partition("/")
    port = _int(port_text, "port", line_no, line, 0, 65535)
    count = _int(count_text, "port count", line_no, line, 1) if slash else None
    fmts = parts[3:]
    media = Media(parts[0], port, parts[2], fmts, port_count=count)
    if media.is_rtp:
        if not fmts:
            raise SdpError("m= with an RTP profile lists no payload type", line_no, line)
        for f in fmts:
            _int(f, "payload type", line_no, line, 0, 127)
    return media


def _lines(text: str | bytes) -> list[tuple[int, str]]:
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SdpError(f"body is not UTF-8 ({exc.reason} at byte {exc.start})") from exc
    out = []
    for no, raw in enumerate(text.replace("\r\n", "\n").split("\n"), start=1):
        line = raw.rstrip(" \t\r")
        if line:
            out.append((no, line))
    return out


def parse_sdp(text: str | bytes) -> SessionDescription:
    """Parse an SDP body; raises SdpError naming the first bad line."""
    lines = _lines(text)
    if not lines:
        raise SdpError("empty session description")
    sd = SessionDescription(timings=[])
    seen: set[str] = set()
    current: Media | None = None
    for index, (no, line) in enumerate(lines):
        if len(line) < 2 or line[1] != "=" or not line[0].isalpha():
            raise SdpError("not a '<type>=<value>' line", no, line)
        kind, value = line[0], line[2:]
        if index == 0:
            if kind != "v":
                raise SdpError("a session description must start with v=", no, line)
            if value.strip() != "0":
                raise SdpError("only SDP version 0 is defined", no, line)
            continue
        if kind == "m":
            current = _parse_media(value, no, line)
            sd.media.append(current)
            continue
        if current is not None:
            _media_line(current, kind, value, no, line)
            continue
        if kind in "osiuzk" and kind in seen:
            raise SdpError(f"{kind}= appears twice at session level", no, line)
        seen.add(kind)
        _session_line(sd, kind, value, no, line)
    if "o" not in seen:
        raise SdpError("missing o= line")
    if "s" not in seen:
        log.info("SDP without s= line; assuming '-'")
    if not sd.timings:
        sd.timings.append(Timing())
    return sd


def _session_line(sd: SessionDescription, kind: str, value: str, no: int, line: str) -> None:
    if kind == "v":
        raise SdpError("v= appears twice", no, line)
    if kind == "o":
        sd.origin = _parse_origin(value, no, line)
    elif kind == "s":
        sd.name = value
    elif kind == "i":
        sd.info = value
    elif kind == "u":
        sd.uri = value
    elif kind == "e":
        sd.emails.append(value)
    elif kind == "p":
        sd.phones.append(value)
    elif kind == "c":
        if sd.connection is not None:
            raise SdpError("c= appears twice at session level", no, line)
        sd.connection = _parse_connection(value, no, line)
    elif kind == "b":
        sd.bandwidths.append(_parse_bandwidth(value, no, line))
    elif kind == "t":
        parts = value.split()
        if len(parts) != 2:
            raise SdpError("t= needs '<start> <stop>'", no, line)
        sd.timings.append(
            Timing(_int(parts[0], "start time", no, line), _int(parts[1], "stop time", no, line))
        )
    elif kind == "r":
        if not sd.timings:
            raise SdpError("r= before any t=", no, line)
        sd.timings[-1].repeats.append(value)
    elif kind == "z":
        sd.zone = value
    elif kind == "k":
        sd.key = value
    elif kind == "a":
        sd.attributes.append(_parse_attribute(value, no, line))
    else:
        raise SdpError(f"unknown line type {kind}=", no, line)


def _media_line(m: Media, kind: str, value: str, no: int, line: str) -> None:
    if kind not in _MEDIA_TYPES_ALLOWED:
        raise SdpError(f"{kind}= is not allowed inside a media section", no, line)
    if kind == "i":
        if m.title is not None:
            raise SdpError("i= appears twice in a media section", no, line)
        m.title = value
    elif kind == "c":
        m.connections.append(_parse_connection(value, no, line))
    elif kind == "b":
        m.bandwidths.append(_parse_bandwidth(value, no, line))
    elif kind == "k":
        m.key = value
    else:
        m.attributes.append(_parse_attribute(value, no, line))


# ---------------------------------------------------------------- formatting


def format_media(m: Media) -> list[str]:
    port = f"{m.port}/{m.port_count}" if m.port_count is not None else str(m.port)
    out = [f"m={' '.join([m.media, port, m.proto, *m.fmts])}"]
    if m.title is not None:
        out.append(f"i={m.title}")
    out += [f"c={c}" for c in m.connections]
    out += [f"b={b}" for b in m.bandwidths]
    if m.key is not None:
        out.append(f"k={m.key}")
    out += [f"a={a}" for a in m.attributes]
    return out


def format_sdp(sd: SessionDescription) -> str:
    """Serialise in RFC 8866 order with CRLF line ends."""
    out = [f"v={sd.version}", f"o={sd.origin}", f"s={sd.name}"]
    if sd.info is not None:
        out.append(f"i={sd.info}")
    if sd.uri is not None:
        out.append(f"u={sd.uri}")
    out += [f"e={e}" for e in sd.emails]
    out += [f"p={p}" for p in sd.phones]
    if sd.connection is not None:
        out.append(f"c={sd.connection}")
    out += [f"b={b}" for b in sd.bandwidths]
    for t in sd.timings or [Timing()]:
        out.append(f"t={t.start} {t.stop}")
        out += [f"r={r}" for r in t.repeats]
    if sd.zone is not None:
        out.append(f"z={sd.zone}")
    if sd.key is not None:
        out.append(f"k={sd.key}")
    out += [f"a={a}" for a in sd.attributes]
    for m in sd.media:
        out += format_media(m)
    return "\r\n".join(out) + "\r\n"
