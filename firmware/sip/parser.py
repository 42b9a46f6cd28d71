"""Bytes -> SipRequest/SipResponse for datagrams (`parse_message`) and streams (`StreamParser`).

Only framing, the start line and header lines are parsed here; structured header values
are parsed lazily by `SipMessage`. Every loop is a single pass over the input and every
limit is checked before work proportional to it is done, so hostile input costs linear time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from firmware.sip.errors import SipParseError
from firmware.sip.message import Headers, SipRequest, SipResponse, header_key

MAX_MESSAGE = 64 * 1024
MAX_HEADERS = 256
MAX_LINE = 8 * 1024

_METHOD_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_NAME_RE = _METHOD_RE
_VERSION_RE = re.compile(r"SIP/(\d+)\.(\d+)", re.IGNORECASE)
_KNOWN_METHODS = frozenset(
    "INVITE ACK BYE CANCEL OPTIONS REGISTER PRACK SUBSCRIBE NOTIFY PUBLISH INFO REFER "
    "MESSAGE UPDATE".split()
)
_CTL_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")

Message = SipRequest | SipResponse


@dataclass(frozen=True)
class KeepAlive:
    """RFC 5626 3.5.1 keep-alive on a stream: "ping" (CRLFCRLF) or "pong" (CRLF)."""

    kind: str


def _check_version(version: str, is_request: bool) -> str:
    """Validate a SIP-Version token.

    A request with another version still parses (as written) so the UAS can answer it with
    505 (validate_request); a response with another version is dropped here.
    """
    if version == "SIP/2.0":
        return version
    m = _VERSION_RE.fullmatch(version)
    if m is None:
        raise SipParseError(f"Bad SIP version {version!r}")
    if (int(m.group(1)), int(m.group(2))) != (2, 0):
        if is_request:
            return version
        raise SipParseError(f"SIP version {version} not supported", 505)
    return version


def _parse_start(line: str) -> tuple[str, str, str, str]:
    """Return ("request", method, uri, version) or ("response", version, status, reason)."""
    if line[:4].upper() == "SIP/":
        version, sp, rest = line.partition(" ")
        status, _, reason = rest.partition(" ")
        if not sp or not status.isdigit() or not status.isascii():
            raise SipParseError(f"Bad status line {line[:80]!r}")
        if len(status) != 3 or not 100 <= int(status) <= 699:
            raise SipParseError(f"Status code {status[:20]} out of range")
        if _CTL_RE.search(reason):
            raise SipParseError("Control character in reason phrase")
        return "response", _check_version(version, False), status, reason
    parts = line.split(" ")
    if len(parts) != 3:
        # RFC 3261 25.1: Request-Line = Method SP Request-URI SP SIP-Version CRLF, exactly.
        if line.endswith((" ", "\t")):
            raise SipParseError("Trailing whitespace in request line")
        if "  " in line:
            raise SipParseError("Multiple spaces between request line elements")
        if len(parts) > 3 and parts[-1].upper().startswith("SIP/"):
            raise SipParseError("Whitespace inside Request-URI")
        raise SipParseError(f"Bad request line {line[:80]!r}")
    method, uri, version = parts
    if method not in _KNOWN_METHODS and _METHOD_RE.fullmatch(method) is None:
        raise SipParseError(f"Bad method {method[:40]!r} in request line")
    if not uri:
        raise SipParseError("Empty Request-URI")
    if uri[0] == "<":
        raise SipParseError("Request-URI enclosed in <>")
    if "\t" in uri or _CTL_RE.search(uri):
        raise SipParseError("Whitespace or control character in Request-URI")
    return "request", method, uri, _check_version(version, True)


# Header name as written -> (lookup key, name without trailing whitespace). Names repeat
# across messages, so validating each distinct spelling once takes the regex off the hot
# path; the cache is bounded so hostile input cannot grow it.
_NAME_CACHE: dict[str, tuple[str, str]] = {}
_NAME_CACHE_MAX = 4096
_FOLD_RE = re.compile(r"\r\n[ \t]+")


def _header_name(name: str) -> tuple[str, str]:
    clean = name.rstrip(" \t")
    if _NAME_RE.fullmatch(clean) is None:
        raise SipParseError(f"Bad header name {clean[:40]!r}")
    entry = (header_key(clean), clean)
    if len(_NAME_CACHE) < _NAME_CACHE_MAX:
        _NAME_CACHE[name] = entry
    return entry


def _parse_head(head: bytes) -> tuple[tuple[str, str, str, str], Headers]:
    """Parse the start line and header lines (everything before the blank line)."""
    text = head.decode("utf-8", "surrogateescape")
    if "\r\n " in text or "\r\n\t" in text:
        # Folding (RFC 3261 7.3.1): CRLF followed by whitespace is one SP. A header value's
        # surrounding whitespace is stripped below, so this is all unfolding needs.
        first_end = text.find("\r\n")
        if text[first_end + 2 : first_end + 3] in (" ", "\t"):
            raise SipParseError("Header continuation line before any header")
        text = _FOLD_RE.sub(" ", text)
    lines = text.split("\r\n")
    breaks = len(lines) - 1
    if text.count("\n") != breaks or text.count("\r") != breaks:
        # A lone CR or LF is not a line end in SIP; letting it through a header value would
        # let a peer smuggle a header past us into a less careful parser downstream.
        raise SipParseError("Bare CR or LF in the message head")
    if len(text) > MAX_LINE and max(map(len, lines)) > MAX_LINE:
        if len(lines[0]) > MAX_LINE:
            raise SipParseError("Start line too long", 400 if text.startswith("SIP/") else 414)
        raise SipParseError(f"Header line too long (limit {MAX_LINE} bytes)")
    if len(lines) - 1 > MAX_HEADERS:
        raise SipParseError(f"Too many headers (limit {MAX_HEADERS})")
    start = lines[0]
    if not start:
        raise SipParseError("Empty start line")
    start_parts = _parse_start(start)
    items: list[tuple[str, str, str]] = []
    append = items.append
    cache = _NAME_CACHE
    for i in range(1, len(lines)):
        name, colon, value = lines[i].partition(":")
        if not colon:
            raise SipParseError(f"Header line without colon: {name[:40]!r}")
        entry = cache.get(name) or _header_name(name)
        append((entry[0], entry[1], value.strip(" \t")))
    return start_parts, Headers._from_keyed(items)


def _content_length(headers: Headers) -> int | None:
    values = [v for k, _, v in headers._items if k == "content-length"]
    if not values:
        return None
    length: int | None = None
    for value in values:
        if not value.isdigit() or not value.isascii() or len(value) > 10:
            raise SipParseError(f"Bad Content-Length {value!r}")
        n = int(value)
        if length is not None and n != length:
            raise SipParseError("Conflicting Content-Length headers")
        length = n
    return length


_LENIENT_CL_RE = re.compile(rb"(?:^|\r\n)(?:content-length|l)[ \t]*:[ \t]*([0-9]{1,10})", re.I)


def _lenient_length(head: bytes) -> int:
    """Best-effort Content-Length of a message that failed to parse (for stream resync)."""
    m = _LENIENT_CL_RE.search(head)
    return int(m.group(1)) if m else 0


def _build(start: tuple[str, str, str, str], headers: Headers, body: bytes) -> Message:
    if start[0] == "request":
        return SipRequest(start[1], start[2], headers, body, start[3])
    return SipResponse(int(start[2]), start[3], headers, body, start[1])


def _split_head(data: bytes) -> tuple[bytes, bytes]:
    end = data.find(b"\r\n\r\n")
    if end < 0:
        if b"\n\n" in data:  # typically a message saved by an editor: say so
            raise SipParseError("No blank line after the headers (LF line endings; SIP uses CRLF)")
        raise SipParseError("No blank line after the headers")
    return data[:end], data[end + 4 :]


def parse_message(data: bytes) -> Message:
    """Parse one datagram.

    Content-Length larger than the bytes present is an error; a smaller one truncates the
    body; a missing one means the body is the rest of the datagram (RFC 3261 18.3).
    """
    if len(data) > MAX_MESSAGE:
        raise SipParseError(f"Message larger than {MAX_MESSAGE} bytes", 513)
    data = data.lstrip(b"\r\n")  # RFC 3261 7.5: ignore CRLFs before the start line
    if not data:
        raise SipParseError("Empty message")
    head, body = _split_head(data)
    start, headers = _parse_head(head)
    try:
        length = _content_length(headers)
    except SipParseError as exc:
        exc.message = _build(start, headers, b"")
        raise
    if length is not None:
        if length > len(body):
            raise SipParseError(
                f"Content-Length {length} larger than the {len(body)} body bytes received",
                message=_build(start, headers, b""),
            )
        if length < len(body):
            body = body[:length]
    return _build(start, headers, body)


class StreamParser:
    """Frames messages on a stream transport (TCP/TLS) by Content-Length.

    A message without Content-Length cannot be framed (RFC 3261 18.3 makes it mandatory on
    streams): it is reported as a SipParseError and taken to have no body. A header block
    that exceeds the size limit is unrecoverable: the error is reported and the buffer is
    dropped; the caller should close the connection.
    """

    def __init__(self, max_message: int = MAX_MESSAGE) -> None:
        self._buf = bytearray()
        self._max = max_message
        self._pending: tuple[tuple[str, str, str, str], Headers, int] | None = None
        self._skip = 0  # body bytes of a rejected message still to discard
        # Where the search for the blank line resumes, so a header block trickling in one
        # byte at a time is scanned once overall, not once per feed (linear, not quadratic).
        self._scan_from = 0
        self.bytes_scanned = 0  # total bytes searched for CRLFCRLF (a work counter for tests)

    def _drop_body(self, buf: bytearray) -> None:
        if self._skip:
            n = min(self._skip, len(buf))
            del buf[:n]
            self._skip -= n

    def feed(self, data: bytes) -> list[Message | SipParseError | KeepAlive]:
        self._buf += data
        out: list[Message | SipParseError | KeepAlive] = []
        buf = self._buf
        self._drop_body(buf)
        while buf:
            if self._skip:
                break
            if self._pending is None:
                if buf[:2] == b"\r\n":
                    if buf[:4] == b"\r\n\r\n":
                        out.append(KeepAlive("ping"))
                        del buf[:4]
                    elif len(buf) == 3 and buf[2:3] == b"\r":
                        break  # a ping split after CRLF CR: wait for its LF
                    else:
                        out.append(KeepAlive("pong"))
                        del buf[:2]
                    continue
                if len(buf) == 1 and buf[:1] == b"\r":
                    break  # a CRLF keep-alive split after its CR: wait for the LF
                end = buf.find(b"\r\n\r\n", self._scan_from)
                self.bytes_scanned += (len(buf) if end < 0 else end + 4) - self._scan_from
                if end < 0:
                    self._scan_from = max(0, len(buf) - 3)
                    if len(buf) > self._max:
                        out.append(
                            SipParseError("Header block too large", 513, breaks_framing=True)
                        )
                        buf.clear()
                        self._scan_from = 0
                    break
                self._scan_from = 0
                head = bytes(buf[:end])
                del buf[: end + 4]
                try:
                    start, headers = _parse_head(head)
                except SipParseError as exc:
                    out.append(exc)
                    # Skip the bad message's body too if its length is readable, to resync.
                    skip = _lenient_length(head)
                    if end + skip > self._max:
                        exc.breaks_framing = True
                        buf.clear()
                        break
                    self._skip = skip
                    self._drop_body(buf)
                    continue
                try:
                    length = _content_length(headers)
                except SipParseError as exc:
                    exc.breaks_framing = True
                    out.append(exc)
                    continue
                if length is None:
                    out.append(
                        SipParseError(
                            "Missing Content-Length on a stream transport", breaks_framing=True
                        )
                    )
                    continue
                if end + length > self._max:
                    out.append(SipParseError("Message too large", 513, breaks_framing=True))
                    buf.clear()
                    self._scan_from = 0
                    break
                self._pending = (start, headers, length)
            start, headers, length = self._pending
            if len(buf) < length:
                break
            body = bytes(buf[:length])
            del buf[:length]
            self._pending = None
            out.append(_build(start, headers, body))
        return out
