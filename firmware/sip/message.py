"""SIP message model: ordered headers as written, lazily parsed structured accessors.

Headers keep the name and value exactly as received so unknown headers, header order and
compact forms survive a parse/serialise round trip; the structured views (Via, CSeq, From...)
are parsed only when asked for and cached until the headers change.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from firmware.sip.errors import SipParseError
from firmware.sip.headers import (
    COMPACT,
    LIST_HEADERS,
    CSeq,
    NameAddr,
    Via,
    canonical_name,
    parse_cseq,
    parse_name_addr,
    parse_via,
    split_list,
)
from firmware.sip.uri import URI, parse_uri

_COMPACT_KEYS = {short: long.lower() for short, long in COMPACT.items()}


_KEY_CACHE: dict[str, str] = {}


def header_key(name: str) -> str:
    """Lookup key for a header name: lower-case long form (compact forms expanded)."""
    key = _KEY_CACHE.get(name)
    if key is None:
        key = name.lower()
        key = _COMPACT_KEYS.get(key, key)
        if len(_KEY_CACHE) < 4096:  # bounded: names come from the network
            _KEY_CACHE[name] = key
    return key


class Headers:
    """Ordered (name, value) pairs as written, with case-insensitive, compact-aware lookup."""

    __slots__ = ("_items", "version")

    def __init__(self, items: list[tuple[str, str]] | None = None) -> None:
        # Each entry is (lookup key, name as written, value as written).
        for n, v in items or ():
            self._check(n, v)
        self._items: list[tuple[str, str, str]] = (
            [(header_key(n), n, v) for n, v in items] if items else []
        )
        self.version = 0

    @classmethod
    def _from_keyed(cls, items: list[tuple[str, str, str]]) -> Headers:
        obj = cls.__new__(cls)
        obj._items = items
        obj.version = 0
        return obj

    def get(self, name: str) -> str | None:
        key = header_key(name)
        for k, _, v in self._items:
            if k == key:
                return v
        return None

    def get_raw(self, name: str) -> list[str]:
        """Every header line's value for ``name``, without splitting lists."""
        key = header_key(name)
        return [v for k, _, v in self._items if k == key]

    def get_all(self, name: str) -> list[str]:
        """Every value: repeated headers, and comma lists split for list-valued headers."""
        key = header_key(name)
        values = [v for k, _, v in self._items if k == key]
        if key not in LIST_HEADERS:
            return values
        out: list[str] = []
        for value in values:
            out += split_list(value)
        return out

    @staticmethod
    def _check(name: str, value: str) -> None:
        # Our own misuse raises: a CR/LF would inject headers into the serialised message.
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name or ":" in name:
            raise ValueError(f"header {name!r} would break the message framing")

    def add(self, name: str, value: str) -> None:
        self._check(name, value)
        self._items.append((header_key(name), name, value))
        self.version += 1

    def insert(self, index: int, name: str, value: str) -> None:
        """Insert at a position (e.g. a new top Via at 0)."""
        self._check(name, value)
        self._items.insert(index, (header_key(name), name, value))
        self.version += 1

    def set(self, name: str, value: str) -> None:
        """Replace every value of ``name`` with one, at the position of the first."""
        self._check(name, value)
        key = header_key(name)
        out: list[tuple[str, str, str]] = []
        placed = False
        for item in self._items:
            if item[0] == key:
                if not placed:
                    out.append((key, item[1], value))
                    placed = True
            else:
                out.append(item)
        if not placed:
            out.append((key, name, value))
        self._items = out
        self.version += 1

    def remove(self, name: str) -> None:
        key = header_key(name)
        self._items = [item for item in self._items if item[0] != key]
        self.version += 1

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = header_key(name)
        return any(k == key for k, _, _ in self._items)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return ((n, v) for _, n, v in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Headers({list(self)!r})"

    def copy(self) -> Headers:
        return Headers._from_keyed(list(self._items))


class SipMessage:
    """Common part of requests and responses."""

    __slots__ = ("headers", "body", "_cache")

    def __init__(self, headers: Headers, body: bytes = b"") -> None:
        self.headers = headers
        self.body = body
        self._cache: dict[str, tuple[int, Any]] | None = None

    def _cached(self, key: str, build: Any) -> Any:
        cache = self._cache
        if cache is None:
            cache = self._cache = {}
        hit = cache.get(key)
        version = self.headers.version
        if hit is not None and hit[0] == version:
            return hit[1]
        value = build()
        cache[key] = (version, value)
        return value

    def _required(self, name: str) -> str:
        value = self.headers.get(name)
        if value is None:
            raise SipParseError(f"Missing {name} header")
        return value

    @property
    def call_id(self) -> str:
        value = self._required("Call-ID").strip()
        if not value or " " in value or "\t" in value:
            raise SipParseError(f"Bad Call-ID {value!r}")
        return value

    @property
    def cseq(self) -> CSeq:
        return self._cached("cseq", lambda: parse_cseq(self._required("CSeq")))  # type: ignore[no-any-return]

    @property
    def vias(self) -> list[Via]:
        def build() -> list[Via]:
            values = self.headers.get_raw("Via")
            if not values:
                raise SipParseError("Missing Via header")
            out: list[Via] = []
            for value in values:
                out += parse_via(value)
            return out

        return self._cached("vias", build)  # type: ignore[no-any-return]

    @property
    def top_via(self) -> Via:
        return self.vias[0]

    @property
    def from_(self) -> NameAddr:
        return self._cached("from", lambda: parse_name_addr(self._required("From")))  # type: ignore[no-any-return]

    @property
    def to(self) -> NameAddr:
        return self._cached("to", lambda: parse_name_addr(self._required("To")))  # type: ignore[no-any-return]

    @property
    def contacts(self) -> list[NameAddr]:
        """Contact entries; a ``Contact: *`` yields an empty list (see `contact_star`)."""

        def build() -> list[NameAddr]:
            values = self.headers.get_all("Contact")
            if values == ["*"]:
                return []
            if "*" in values:
                raise SipParseError("Contact '*' mixed with other contacts")
            return [parse_name_addr(v) for v in values]

        return self._cached("contacts", build)  # type: ignore[no-any-return]

    @property
    def contact_star(self) -> bool:
        return self.headers.get_all("Contact") == ["*"]

    @property
    def content_type(self) -> str | None:
        value = self.headers.get("Content-Type")
        return value.split(";", 1)[0].strip().lower() if value else None

    def start_line(self) -> str:
        raise NotImplementedError

    def serialize(self) -> bytes:
        """Wire bytes; Content-Length is (re)written to match the body."""
        body_len = str(len(self.body))
        lines = [self.start_line()]
        have_length = False
        for key, name, value in self.headers._items:
            if key == "content-length":
                if have_length:
                    continue
                have_length = True
                value = body_len
            lines.append(f"{name}: {value}")
        if not have_length:
            lines.append(f"Content-Length: {body_len}")
        lines.append("\r\n")
        return "\r\n".join(lines).encode("utf-8", "surrogateescape") + self.body

    def __bytes__(self) -> bytes:
        return self.serialize()


class SipRequest(SipMessage):
    __slots__ = ("method", "uri_text", "_uri", "version")

    def __init__(
        self,
        method: str,
        uri: URI | str,
        headers: Headers,
        body: bytes = b"",
        version: str = "SIP/2.0",
    ) -> None:
        super().__init__(headers, body)
        self.method = method
        self.version = version
        if isinstance(uri, str):
            self.uri_text = uri
            self._uri: URI | None = None
        else:
            self.uri_text = str(uri)
            self._uri = uri

    @property
    def uri(self) -> URI:
        if self._uri is None:
            self._uri = parse_uri(self.uri_text)
        return self._uri

    @uri.setter
    def uri(self, value: URI) -> None:
        self._uri = value
        self.uri_text = str(value)

    def start_line(self) -> str:
        return f"{self.method} {self.uri_text} {self.version}"

    def __repr__(self) -> str:
        return f"<SipRequest {self.method} {self.uri_text}>"


class SipResponse(SipMessage):
    __slots__ = ("status", "reason", "version")

    def __init__(
        self,
        status: int,
        reason: str,
        headers: Headers,
        body: bytes = b"",
        version: str = "SIP/2.0",
    ) -> None:
        super().__init__(headers, body)
        self.status = status
        self.reason = reason
        self.version = version

    def start_line(self) -> str:
        return f"{self.version} {self.status} {self.reason}"

    def __repr__(self) -> str:
        return f"<SipResponse {self.status} {self.reason}>"


REASON_PHRASES: dict[int, str] = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    199: "Early Dialog Terminated",
    200: "OK",
    202: "Accepted",
    204: "No Notification",
    300: "Multiple Choices",
    301: "Moved Permanently",
    302: "Moved Temporarily",
    305: "Use Proxy",
    380: "Alternative Service",
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    410: "Gone",
    412: "Conditional Request Failed",
    413: "Request Entity Too Large",
    414: "Request-URI Too Long",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    421: "Extension Required",
    422: "Session Interval Too Small",
    423: "Interval Too Brief",
    439: "First Hop Lacks Outbound Support",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    484: "Address Incomplete",
    485: "Ambiguous",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    489: "Bad Event",
    491: "Request Pending",
    493: "Undecipherable",
    500: "Server Internal Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
    600: "Busy Everywhere",
    603: "Decline",
    604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
}


def make_response(
    request: SipRequest,
    status: int,
    reason: str | None = None,
    to_tag: str | None = None,
) -> SipResponse:
    """Build a response copying Via, From, To, Call-ID and CSeq (RFC 3261 8.2.6.2).

    Values are copied as written, so this works even for requests whose other headers are
    malformed (which is exactly when a 400 has to be sent). A To tag is added only when the
    request's To has none. A 101-299 response to a dialog-creating request (INVITE,
    SUBSCRIBE, REFER) also copies Record-Route, in order, as RFC 3261 12.1.1 requires.
    """
    items: list[tuple[str, str, str]] = []
    copy_rr = 100 < status < 300 and request.method in _DIALOG_METHODS
    for key, _name, value in request.headers._items:
        if key == "record-route" and copy_rr:
            items.append((key, "Record-Route", value))
        elif key in _COPY_KEYS:
            name = canonical_name(key)
            if key == "to" and to_tag is not None and not _has_tag(value):
                value = f"{value};tag={to_tag}"
            items.append((key, name, value))
        elif key == "timestamp" and status == 100:
            items.append((key, "Timestamp", value))  # RFC 3261 8.2.6.1
    return SipResponse(status, reason or REASON_PHRASES.get(status, ""), Headers._from_keyed(items))


_COPY_KEYS = frozenset(("via", "from", "to", "call-id", "cseq"))
_DIALOG_METHODS = frozenset(("INVITE", "SUBSCRIBE", "REFER"))


def _has_tag(to_value: str) -> bool:
    try:
        return parse_name_addr(to_value).tag is not None
    except SipParseError:
        return ";tag=" in to_value.lower()


def make_request(
    method: str,
    uri: URI | str,
    *,
    headers: list[tuple[str, str]],
    body: bytes = b"",
) -> SipRequest:
    """Build a request; Content-Length is written by `serialize`."""
    if isinstance(uri, str):
        uri = parse_uri(uri)
    return SipRequest(method, uri, Headers(headers), body)
