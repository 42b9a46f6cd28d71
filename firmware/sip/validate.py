"""Request-level checks a UAS makes before processing (RFC 3261 8.2.1-8.2.3, 16.3).

`parse_message` only frames the message; the structured headers are checked here, so a
defect in one header turns into the right response instead of an exception.
"""

from __future__ import annotations

from firmware.sip.errors import SipParseError
from firmware.sip.headers import is_token
from firmware.sip.message import SipRequest, SipResponse, make_response

MANDATORY = ("Via", "To", "From", "Call-ID", "CSeq", "Max-Forwards")
URI_SCHEMES = frozenset(("sip", "sips", "tel"))
# RFC 3261 8.2.2.3: Require is ignored on CANCEL and ACK.
_NO_REQUIRE_CHECK = frozenset(("ACK", "CANCEL"))


def _bad(req: SipRequest, reason: str, status: int = 400) -> SipResponse:
    return make_response(req, status, reason)


def _check_headers(req: SipRequest) -> None:
    """Raise SipParseError naming the first defect in the headers every request needs."""
    for name in MANDATORY:
        if name not in req.headers:
            raise SipParseError(f"Missing {name} header")
    for name in ("To", "From", "Call-ID", "CSeq", "Max-Forwards"):
        if len(req.headers.get_raw(name)) > 1:
            raise SipParseError(f"Multiple {name} headers")
    req.vias  # noqa: B018 - parse for validation
    req.call_id  # noqa: B018
    req.from_  # noqa: B018
    req.to  # noqa: B018
    cseq = req.cseq
    if cseq.method != req.method:
        raise SipParseError(f"CSeq method {cseq.method} does not match request method {req.method}")
    mf = req.headers.get("Max-Forwards") or ""
    if not (mf.isascii() and mf.isdigit()) or len(mf) > 3 or int(mf) > 255:
        raise SipParseError(f"Bad Max-Forwards {mf!r}")
    if req.headers.get("Content-Length") is None and "Content-Length" in req.headers:
        raise SipParseError("Bad Content-Length")
    for value in req.headers.get_all("Require"):
        if not is_token(value):
            raise SipParseError(f"Bad option tag {value!r} in Require")


def validate_request(req: SipRequest, supported: set[str]) -> SipResponse | None:
    """Return None if the request may be processed, else the response to send.

    The response carries no To tag: the caller adds one from its IdSource (8.2.6.2).
    """
    if req.version != "SIP/2.0":
        return _bad(req, "Version Not Supported", 505)
    try:
        uri = req.uri
    except SipParseError as exc:
        return _bad(req, f"Bad Request-URI: {exc.reason}")
    try:
        _check_headers(req)
    except SipParseError as exc:
        return _bad(req, exc.reason, exc.status)
    if uri.scheme not in URI_SCHEMES:
        return _bad(req, "Unsupported URI Scheme", 416)
    if req.method not in _NO_REQUIRE_CHECK:
        wanted = req.headers.get_all("Require")
        unsupported = [tag for tag in wanted if tag.lower() not in {s.lower() for s in supported}]
        if unsupported:
            resp = _bad(req, "Bad Extension", 420)
            resp.headers.add("Unsupported", ", ".join(unsupported))
            return resp
    return None
