"""Header names and the structured header values the core relies on (RFC 3261 section 20, 25).

Values are parsed on demand by `SipMessage` accessors, so a proxy-style pass-through of a
message never pays for headers nobody reads.
"""

from __future__ import annotations

import re

from firmware.sip.errors import SipParseError
from firmware.sip.uri import URI, parse_host_port, parse_uri

# Compact forms: RFC 3261 7.3.3 plus the extensions that defined one.
COMPACT: dict[str, str] = {
    "i": "Call-ID",
    "m": "Contact",
    "e": "Content-Encoding",
    "l": "Content-Length",
    "c": "Content-Type",
    "f": "From",
    "s": "Subject",
    "k": "Supported",
    "t": "To",
    "v": "Via",
    "o": "Event",  # RFC 6665
    "u": "Allow-Events",  # RFC 6665
    "r": "Refer-To",  # RFC 3515
    "b": "Referred-By",  # RFC 3892
    "x": "Session-Expires",  # RFC 4028
    "y": "Identity",  # RFC 8224
    "a": "Accept-Contact",  # RFC 3841
    "j": "Reject-Contact",  # RFC 3841
    "d": "Request-Disposition",  # RFC 3841
}

_KNOWN = [
    "Accept",
    "Accept-Contact",
    "Accept-Encoding",
    "Accept-Language",
    "Alert-Info",
    "Allow",
    "Allow-Events",
    "Authentication-Info",
    "Authorization",
    "Call-ID",
    "Call-Info",
    "Contact",
    "Content-Disposition",
    "Content-Encoding",
    "Content-Language",
    "Content-Length",
    "Content-Type",
    "CSeq",
    "Date",
    "Error-Info",
    "Event",
    "Expires",
    "From",
    "History-Info",
    "Identity",
    "In-Reply-To",
    "Max-Forwards",
    "MIME-Version",
    "Min-Expires",
    "Min-SE",
    "Organization",
    "P-Asserted-Identity",
    "P-Preferred-Identity",
    "Path",
    "Priority",
    "Privacy",
    "Proxy-Authenticate",
    "Proxy-Authorization",
    "Proxy-Require",
    "RAck",
    "Reason",
    "Record-Route",
    "Refer-Sub",
    "Refer-To",
    "Referred-By",
    "Reject-Contact",
    "Replaces",
    "Reply-To",
    "Request-Disposition",
    "Require",
    "Retry-After",
    "Route",
    "RSeq",
    "Server",
    "Service-Route",
    "Session-Expires",
    "SIP-ETag",
    "SIP-If-Match",
    "Subject",
    "Subscription-State",
    "Supported",
    "Target-Dialog",
    "Timestamp",
    "To",
    "Unsupported",
    "User-Agent",
    "Via",
    "Warning",
    "WWW-Authenticate",
    "Join",
]
_CANONICAL: dict[str, str] = {name.lower(): name for name in _KNOWN}
_CANONICAL.update(COMPACT)

# Headers whose grammar is a comma-separated list (RFC 3261 7.3.1); anything else, notably
# the authentication headers and Date, contains commas that do not separate values.
LIST_HEADERS = frozenset(
    name.lower()
    for name in (
        "Accept",
        "Accept-Contact",
        "Accept-Encoding",
        "Accept-Language",
        "Alert-Info",
        "Allow",
        "Allow-Events",
        "Call-Info",
        "Contact",
        "Content-Encoding",
        "Content-Language",
        "Error-Info",
        "History-Info",
        "In-Reply-To",
        "P-Asserted-Identity",
        "P-Preferred-Identity",
        "Path",
        "Proxy-Require",
        "Reason",
        "Record-Route",
        "Reject-Contact",
        "Request-Disposition",
        "Require",
        "Route",
        "Service-Route",
        "Supported",
        "Unsupported",
        "Via",
        "Warning",
    )
)

_TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_DISPLAY_TOKENS_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+(?:[ \t]+[A-Za-z0-9\-.!%*_+`'~]+)*")


def canonical_name(name: str) -> str:
    """Map a header name (any case, compact or long) to its canonical long form."""
    return _CANONICAL.get(name.lower(), name)


def is_token(text: str) -> bool:
    return _TOKEN_RE.fullmatch(text) is not None


def split_list(value: str) -> list[str]:
    """Split a list-valued header on commas outside quotes and angle brackets (linear time)."""
    if '"' not in value and "<" not in value:
        return [part.strip() for part in value.split(",") if part.strip()]
    return [p for p in (part.strip() for part in _split_outside(value, ",", True)) if p]


def _split_semis(text: str) -> list[str]:
    """Split on ';' outside quoted strings."""
    if '"' not in text:
        return text.split(";")
    return _split_outside(text, ";", False)


def _split_outside(text: str, sep: str, angles: bool) -> list[str]:
    """Split `text` on `sep` where it is not inside a quoted string (with backslash escapes)
    nor, if `angles`, inside <...>; the parts are returned as they are (not stripped)."""
    parts: list[str] = []
    start = 0
    in_quote = in_angle = escaped = False
    for i, ch in enumerate(text):
        if in_quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_quote = False
        elif ch == '"':
            in_quote = True
        elif angles and ch == "<":
            in_angle = True
        elif angles and ch == ">":
            in_angle = False
        elif ch == sep and not in_angle:
            parts.append(text[start:i])
            start = i + 1
    if in_quote:
        raise SipParseError(f"Unterminated quoted string in {text!r}")
    parts.append(text[start:])
    return parts


def parse_params(text: str, what: str) -> dict[str, str | None]:
    """Parse header parameters ``;name[=value]...`` (text after the first ';').

    Values are kept as written (quoted strings keep their quotes) so they re-serialise exactly.
    """
    params: dict[str, str | None] = {}
    for part in _split_semis(text):
        name, eq, value = part.partition("=")
        name = name.strip()
        if not is_token(name):
            raise SipParseError(f"Bad {what} parameter {part.strip()!r}")
        if eq:
            value = value.strip()
            if not value or (value[0] != '"' and _PARAM_VALUE_RE.fullmatch(value) is None):
                raise SipParseError(f"Bad {what} parameter value {part.strip()!r}")
            if value[0] == '"' and (len(value) < 2 or value[-1] != '"'):
                raise SipParseError(f"Bad quoted {what} parameter value {part.strip()!r}")
            params[name.lower()] = value
        else:
            params[name.lower()] = None
    return params


# token / host (incl. IPv6 reference); quoted strings are checked separately.
_PARAM_VALUE_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~:\[\]]+")


def format_params(params: dict[str, str | None]) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


def unquote_string(text: str) -> str:
    """Strip the quotes of a quoted-string and resolve its backslash escapes."""
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        inner = text[1:-1]
        if "\\" not in inner:
            return inner
        out: list[str] = []
        escaped = False
        for ch in inner:
            if escaped:
                out.append(ch)
                escaped = False
            elif ch == "\\":
                escaped = True
            else:
                out.append(ch)
        return "".join(out)
    return text


def quote_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _scan_quoted(value: str, start: int) -> int:
    """Return the index just past the quoted-string starting at ``value[start] == '"'``."""
    i = start + 1
    n = len(value)
    while i < n:
        ch = value[i]
        if ch == "\\":
            i += 2
            continue
        if ch == '"':
            return i + 1
        i += 1
    raise SipParseError(f"Unterminated quoted string in {value!r}")


class NameAddr:
    """A name-addr or addr-spec with header parameters (From, To, Contact, Route, ...)."""

    __slots__ = ("display", "uri", "params")

    def __init__(
        self,
        uri: URI,
        display: str | None = None,
        params: dict[str, str | None] | None = None,
    ) -> None:
        self.uri = uri
        self.display = display
        self.params: dict[str, str | None] = dict(params) if params else {}

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    def __str__(self) -> str:
        if self.display is None:
            head = ""
        elif _DISPLAY_TOKENS_RE.fullmatch(self.display):
            head = self.display + " "
        else:
            head = quote_string(self.display) + " "
        return f"{head}<{self.uri}>{format_params(self.params)}"

    def __repr__(self) -> str:
        return f"NameAddr({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, NameAddr):
            return NotImplemented
        return (self.display, self.uri, self.params) == (other.display, other.uri, other.params)


def parse_name_addr(value: str) -> NameAddr:
    """Parse ``[display] <uri>;params`` or the addr-spec form ``uri;params``."""
    value = value.strip()
    if not value:
        raise SipParseError("Empty name-addr")
    display: str | None = None
    if value[0] == '"':
        end = _scan_quoted(value, 0)
        display = unquote_string(value[:end])
        rest = value[end:].lstrip()
        if not rest.startswith("<"):
            raise SipParseError(f"Missing <URI> after display name in {value!r}")
    else:
        lt = value.find("<")
        if lt >= 0:
            text = value[:lt].strip()
            if text:
                if _DISPLAY_TOKENS_RE.fullmatch(text) is None:
                    raise SipParseError(f"Bad display name {text!r}")
                display = text
            rest = value[lt:]
        else:
            rest = ""
    if rest:
        gt = rest.find(">")
        if gt < 0:
            raise SipParseError(f"Unterminated <URI> in {value!r}")
        uri_text = rest[1:gt]
        tail = rest[gt + 1 :].strip()
    else:
        # addr-spec: the URI cannot contain ';', so parameters after it belong to the header.
        uri_text, semi, params_text = value.partition(";")
        uri_text = uri_text.strip()
        if " " in uri_text or "\t" in uri_text:
            raise SipParseError(f"Whitespace inside URI {uri_text!r} without <>")
        tail = ";" + params_text if semi else ""
    if uri_text != uri_text.strip():
        raise SipParseError(f"Whitespace inside <URI> in {value!r}")
    uri = parse_uri(uri_text)
    if tail:
        if tail[0] != ";":
            raise SipParseError(f"Unexpected text {tail!r} after URI")
        params = parse_params(tail[1:], "header")
    else:
        params = {}
    return NameAddr(uri, display, params)


class Via:
    """One Via entry (RFC 3261 20.42)."""

    __slots__ = ("protocol", "transport", "host", "port", "params")

    def __init__(
        self,
        transport: str,
        host: str,
        port: int | None = None,
        params: dict[str, str | None] | None = None,
        protocol: str = "SIP/2.0",
    ) -> None:
        self.protocol = protocol
        self.transport = transport.upper()
        self.host = host
        self.port = port
        self.params: dict[str, str | None] = dict(params) if params else {}

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def received(self) -> str | None:
        return self.params.get("received")

    @property
    def maddr(self) -> str | None:
        return self.params.get("maddr")

    @property
    def ttl(self) -> int | None:
        value = self.params.get("ttl")
        return int(value) if value else None

    @property
    def rport(self) -> int | None:
        """The rport value; None when absent *or* present without a value (check params)."""
        value = self.params.get("rport")
        return int(value) if value and value.isdigit() else None

    @property
    def sent_by(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.protocol}/{self.transport} {self.sent_by}{format_params(self.params)}"

    def __repr__(self) -> str:
        return f"Via({str(self)!r})"


def _parse_one_via(text: str) -> Via:
    head, semi, params_text = text.partition(";")
    parts = head.split("/", 2)
    if len(parts) != 3:
        raise SipParseError(f"Bad Via sent-protocol in {text!r}")
    name, version = parts[0].strip(), parts[1].strip()
    transport_and_host = parts[2].strip().split(None, 1)
    if len(transport_and_host) != 2:
        raise SipParseError(f"Via has no sent-by in {text!r}")
    transport, sent_by = transport_and_host
    if not is_token(name) or not is_token(version) or not is_token(transport):
        raise SipParseError(f"Bad Via sent-protocol in {text!r}")
    sent_by = sent_by.strip()
    host, port = parse_host_port(sent_by, "Via sent-by")
    params = parse_params(params_text, "Via") if semi else {}
    for key in ("ttl", "rport"):
        value = params.get(key)
        if value is not None and not (value.isascii() and value.isdigit()):
            raise SipParseError(f"Bad Via {key} value {value!r}")
    return Via(transport, host, port, params, f"{name.upper()}/{version}")


def parse_via(value: str) -> list[Via]:
    """Parse a Via header value, which may hold several comma-separated entries."""
    entries = split_list(value)
    if not entries:
        raise SipParseError("Empty Via header")
    return [_parse_one_via(entry) for entry in entries]


class CSeq:
    """CSeq: sequence number and method (RFC 3261 20.16)."""

    __slots__ = ("number", "method")

    def __init__(self, number: int, method: str) -> None:
        self.number = number
        self.method = method

    def __str__(self) -> str:
        return f"{self.number} {self.method}"

    def __repr__(self) -> str:
        return f"CSeq({self.number}, {self.method!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CSeq):
            return NotImplemented
        return (self.number, self.method) == (other.number, other.method)


def parse_cseq(value: str) -> CSeq:
    parts = value.split()
    if len(parts) != 2:
        raise SipParseError(f"Bad CSeq {value!r}")
    number_text, method = parts
    if not (number_text.isascii() and number_text.isdigit()) or len(number_text) > 10:
        raise SipParseError(f"Bad CSeq sequence number {number_text!r}")
    number = int(number_text)
    if number >= 2**32:  # RFC 3261 8.1.1.5: a 32-bit unsigned integer
        raise SipParseError(f"CSeq sequence number {number_text} out of range")
    if not is_token(method):
        raise SipParseError(f"Bad CSeq method {method!r}")
    return CSeq(number, method)
