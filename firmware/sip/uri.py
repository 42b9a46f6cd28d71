"""SIP, SIPS and tel URIs (RFC 3261 19.1, RFC 3966) with the RFC 3261 19.1.4 comparison rules.

Components are kept as written (escapes included) so a URI re-serialises byte-exactly;
comparison unescapes first, as 19.1.4 requires.
"""

from __future__ import annotations

import re
from typing import Any

from firmware.sip.errors import SipParseError

# Character classes from the RFC 3261 ABNF. Each pattern is a single-character class or a
# fixed-length escape, so matching is linear in the input length.
_UNRESERVED = r"A-Za-z0-9\-_.!~*'()"
_ESC = r"%[0-9A-Fa-f]{2}"
_USER_RE = re.compile(rf"(?:[{_UNRESERVED}&=+$,;?/]|{_ESC})+")
_PASSWORD_RE = re.compile(rf"(?:[{_UNRESERVED}&=+$,]|{_ESC})*")
_HOSTNAME_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9\-.]*[A-Za-z0-9.])?")
_IPV6_RE = re.compile(r"\[[0-9A-Fa-f:.]+\]")
_PARAM_RE = re.compile(rf"(?:[{_UNRESERVED}\[\]/:&+$]|{_ESC})+")
_HDR_RE = re.compile(rf"(?:[{_UNRESERVED}\[\]/?:+$]|{_ESC})*")
_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*")
_TEL_RE = re.compile(r"\+?[0-9A-Fa-f*#\-.()]+")
_ABS_RE = re.compile(r"[^\x00-\x20\x7f<>\"]+")

# Parameters that must match when present in either URI (RFC 3261 19.1.4).
_STRICT_PARAMS = ("user", "ttl", "method", "maddr", "transport")


_ESCAPE_RE = re.compile(r"%([0-9A-Fa-f]{2})")
_RESERVED_CHARS = frozenset(";/?:@&=+$,")


def _decode_escape(m: re.Match[str]) -> str:
    char = chr(int(m.group(1), 16))
    # RFC 3261 19.1.4: only characters outside the reserved set are equivalent to their
    # escapes, so an escaped reserved character stays escaped (hex case normalised).
    return m.group(0).upper() if char in _RESERVED_CHARS else char


def _unescape(text: str) -> str:
    """Canonical form for comparison: escapes of non-reserved characters decoded."""
    return _ESCAPE_RE.sub(_decode_escape, text) if "%" in text else text


def _split_params(text: str, what: str) -> dict[str, str | None]:
    """Parse ``;a=b;c`` segments (leading ';' already stripped) into an ordered dict."""
    params: dict[str, str | None] = {}
    for part in text.split(";"):
        name, eq, value = part.partition("=")
        if not name or _PARAM_RE.fullmatch(name) is None:
            raise SipParseError(f"Bad {what} parameter {part!r}")
        if eq and _PARAM_RE.fullmatch(value) is None:
            raise SipParseError(f"Bad {what} parameter value {part!r}")
        params[name.lower()] = value if eq else None
    return params


def _format_params(params: dict[str, str | None]) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


def parse_host_port(text: str, what: str = "URI") -> tuple[str, int | None]:
    """Split ``host[:port]`` (IPv6 references in brackets) and validate both parts."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise SipParseError(f"Unterminated IPv6 reference in {what} host")
        host, rest = text[: end + 1], text[end + 1 :]
        if _IPV6_RE.fullmatch(host) is None:
            raise SipParseError(f"Bad IPv6 reference {host!r} in {what}")
        if rest and not rest.startswith(":"):
            raise SipParseError(f"Bad text after IPv6 reference in {what}: {rest!r}")
        port_text = rest[1:] if rest else None
    else:
        host, colon, port_text_raw = text.partition(":")
        port_text = port_text_raw if colon else None
        if _HOSTNAME_RE.fullmatch(host) is None:
            raise SipParseError(f"Bad host {host!r} in {what}")
    port: int | None = None
    if port_text is not None:
        if not port_text.isdigit() or not port_text.isascii() or len(port_text) > 5:
            raise SipParseError(f"Bad port {port_text!r} in {what}")
        port = int(port_text)
        if port > 65535:
            raise SipParseError(f"Port {port} out of range in {what}")
    return host, port


class SipURI:
    """A sip: or sips: URI; `user`, `password`, param values and headers are kept escaped."""

    __slots__ = ("scheme", "user", "password", "host", "port", "params", "headers")

    def __init__(
        self,
        host: str,
        user: str | None = None,
        port: int | None = None,
        params: dict[str, str | None] | None = None,
        headers: dict[str, str] | None = None,
        scheme: str = "sip",
        password: str | None = None,
    ) -> None:
        self.scheme = scheme
        self.user = user
        self.password = password
        self.host = host
        self.port = port
        self.params: dict[str, str | None] = dict(params) if params else {}
        self.headers: dict[str, str] = dict(headers) if headers else {}

    @property
    def transport(self) -> str | None:
        value = self.params.get("transport")
        return value.lower() if value else None

    @property
    def unescaped_user(self) -> str | None:
        """The user part with every %HH escape decoded (for display and lookups)."""
        if self.user is None or "%" not in self.user:
            return self.user
        return _ESCAPE_RE.sub(lambda m: chr(int(m.group(1), 16)), self.user)

    @property
    def host_port(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"

    def copy(self, **changes: Any) -> SipURI:
        fields = {name: getattr(self, name) for name in self.__slots__}
        fields.update(changes)
        return SipURI(**fields)

    def __str__(self) -> str:
        out = [self.scheme, ":"]
        if self.user is not None:
            out.append(self.user)
            if self.password is not None:
                out += [":", self.password]
            out.append("@")
        out.append(self.host_port)
        out.append(_format_params(self.params))
        if self.headers:
            out.append("?" + "&".join(f"{k}={v}" for k, v in self.headers.items()))
        return "".join(out)

    def __repr__(self) -> str:
        return f"SipURI({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        """RFC 3261 19.1.4: component-wise, after unescaping, with the parameter rules."""
        if not isinstance(other, SipURI):
            return NotImplemented
        if self.scheme != other.scheme or self.port != other.port:
            return False
        if _unescape(self.user or "") != _unescape(other.user or "") or (self.user is None) != (
            other.user is None
        ):
            return False
        if _unescape(self.password or "") != _unescape(other.password or ""):
            return False
        if _unescape(self.host).lower() != _unescape(other.host).lower():
            return False
        for name in self.params.keys() | other.params.keys():
            mine, theirs = name in self.params, name in other.params
            if mine and theirs:
                a, b = self.params[name], other.params[name]
                if (a is None) != (b is None) or _unescape(a or "").lower() != _unescape(
                    b or ""
                ).lower():
                    return False
            elif name in _STRICT_PARAMS:
                return False
        return _norm_headers(self.headers) == _norm_headers(other.headers)

    def __hash__(self) -> int:
        return hash((self.scheme, _unescape(self.user or ""), _unescape(self.host).lower()))


def _norm_headers(headers: dict[str, str]) -> dict[str, str]:
    return {_unescape(k).lower(): _unescape(v) for k, v in headers.items()}


class TelURI:
    """A tel: URI (RFC 3966); `number` as written, visual separators kept."""

    __slots__ = ("number", "params")
    scheme = "tel"

    def __init__(self, number: str, params: dict[str, str | None] | None = None) -> None:
        self.number = number
        self.params: dict[str, str | None] = dict(params) if params else {}

    @property
    def digits(self) -> str:
        """The number without visual separators, as RFC 3966 compares it."""
        return "".join(c for c in self.number if c not in "-.()").lower()

    def __str__(self) -> str:
        return f"tel:{self.number}{_format_params(self.params)}"

    def __repr__(self) -> str:
        return f"TelURI({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TelURI):
            return NotImplemented
        if self.digits != other.digits or self.params.keys() != other.params.keys():
            return False
        return all(
            _unescape(v or "").lower() == _unescape(other.params[k] or "").lower()
            for k, v in self.params.items()
        )

    def __hash__(self) -> int:
        return hash(self.digits)


class AbsoluteURI:
    """Any other scheme (http:, urn:, mailto:...): kept opaque."""

    __slots__ = ("scheme", "raw")

    def __init__(self, scheme: str, raw: str) -> None:
        self.scheme = scheme
        self.raw = raw

    def __str__(self) -> str:
        return self.raw

    def __repr__(self) -> str:
        return f"AbsoluteURI({self.raw!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AbsoluteURI):
            return NotImplemented
        return (
            self.scheme == other.scheme
            and self.raw.partition(":")[2] == other.raw.partition(":")[2]
        )

    def __hash__(self) -> int:
        return hash((self.scheme, self.raw.partition(":")[2]))


URI = SipURI | TelURI | AbsoluteURI


def _parse_sip(scheme: str, rest: str, text: str) -> SipURI:
    headers: dict[str, str] = {}
    # '@' may not appear unescaped in params or headers, so the first one ends the userinfo.
    at = rest.find("@")
    user = password = None
    if at >= 0:
        userinfo, rest = rest[:at], rest[at + 1 :]
        user, colon, pw = userinfo.partition(":")
        if _USER_RE.fullmatch(user) is None:
            raise SipParseError(f"Bad user part in URI {text!r}")
        if colon:
            if _PASSWORD_RE.fullmatch(pw) is None:
                raise SipParseError(f"Bad password in URI {text!r}")
            password = pw
    rest, qmark, hdr_text = rest.partition("?")
    if qmark:
        for item in hdr_text.split("&"):
            name, eq, value = item.partition("=")
            if not name or not eq or _HDR_RE.fullmatch(name) is None:
                raise SipParseError(f"Bad header {item!r} in URI {text!r}")
            if _HDR_RE.fullmatch(value) is None:
                raise SipParseError(f"Bad header value {item!r} in URI {text!r}")
            headers[name] = value
    host_port, semi, param_text = rest.partition(";")
    host, port = parse_host_port(host_port, f"URI {text!r}")
    params = _split_params(param_text, "URI") if semi else {}
    uri = SipURI(host, user, port, params, headers, scheme, password)
    return uri


def parse_uri(text: str) -> URI:
    """Parse a URI; sip/sips and tel are structured, other schemes are kept opaque."""
    scheme_text, colon, rest = text.partition(":")
    if not colon or _SCHEME_RE.fullmatch(scheme_text) is None:
        raise SipParseError(f"Bad URI {text!r}: no scheme")
    scheme = scheme_text.lower()
    if scheme in ("sip", "sips"):
        return _parse_sip(scheme, rest, text)
    if scheme == "tel":
        number, semi, param_text = rest.partition(";")
        if _TEL_RE.fullmatch(number) is None:
            raise SipParseError(f"Bad telephone number in URI {text!r}")
        return TelURI(number, _split_params(param_text, "tel URI") if semi else {})
    if not rest or _ABS_RE.fullmatch(rest) is None:
        raise SipParseError(f"Bad URI {text!r}")
    return AbsoluteURI(scheme, text)
