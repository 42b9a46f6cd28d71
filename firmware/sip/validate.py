"""Request- and response-level checks before processing (RFC 3261 8.2.1-8.2.3, 8.1.3.3).

`parse_message` only frames a message and reads its start line; the structured headers are
checked here, so a defect in one header becomes the right response instead of an exception.
The order of the checks follows RFC 3261 8.2: method, then headers, URI scheme, extensions,
content.

Deliberate leniencies (RFC 4475): a missing Max-Forwards is accepted, since RFC 2543 peers
never sent one (4475 section 3.4.1); a present one must be a valid 0-255 integer. Escaped
headers in the Request-URI are tolerated (4475 3.1.2.11) but never acted upon.
"""

from __future__ import annotations

from firmware.sip.errors import SipParseError
from firmware.sip.headers import is_token
from firmware.sip.message import SipRequest, SipResponse, make_response
from firmware.sip.uri import SipURI

# RFC 3261 8.1.1: To, From, CSeq, Call-ID, Max-Forwards and Via; Max-Forwards see above.
MANDATORY = ("Via", "To", "From", "Call-ID", "CSeq")
SINGLE_VALUED = ("To", "From", "Call-ID", "CSeq", "Max-Forwards", "Content-Type")
URI_SCHEMES = frozenset(("sip", "sips", "tel"))
# RFC 3261 8.2.2.3: Require is ignored on CANCEL and on ACK.
_NO_REQUIRE_CHECK = frozenset(("ACK", "CANCEL"))


def _bad(req: SipRequest, reason: str, status: int = 400) -> SipResponse:
    return make_response(req, status, reason)


def _check_headers(req: SipRequest) -> None:
    """Raise SipParseError naming the first defect in the headers every request needs."""
    headers = req.headers
    missing = [name for name in MANDATORY if name not in headers]
    if missing:
        raise SipParseError(f"Missing {', '.join(missing)} header{'s' if len(missing) > 1 else ''}")
    repeated = [name for name in SINGLE_VALUED if len(headers.get_raw(name)) > 1]
    if repeated:
        raise SipParseError(f"Multiple values in single-value header(s) {', '.join(repeated)}")
    req.vias  # noqa: B018 - parsed for validation
    req.call_id  # noqa: B018
    req.from_  # noqa: B018
    req.to  # noqa: B018
    cseq = req.cseq
    if cseq.method != req.method:
        raise SipParseError(f"CSeq method {cseq.method} does not match request method {req.method}")
    mf = headers.get("Max-Forwards")
    if mf is not None and (not (mf.isascii() and mf.isdigit()) or len(mf) > 10 or int(mf) > 255):
        raise SipParseError(f"Bad Max-Forwards value {mf[:20]!r}")
    expires = headers.get("Expires")
    if expires is not None and not (expires.isascii() and expires.isdigit() and len(expires) <= 10):
        raise SipParseError(f"Bad Expires value {expires[:20]!r}")
    for value in headers.get_all("Require"):
        if not is_token(value):
            raise SipParseError(f"Bad option tag {value[:40]!r} in Require")


def validate_request(
    req: SipRequest,
    supported: set[str],
    *,
    methods: set[str] | None = None,
    accept: set[str] | None = None,
) -> SipResponse | None:
    """Return None if the request may be processed, else the response to send.

    `supported`: option tags we implement (Require check, 420 + Unsupported).
    `methods`: if given, other methods get 501 (RFC 3261 8.2.1; before the header checks,
    as RFC 4475 3.1.2.18 prefers). `accept`: if given, a body of another Content-Type gets
    415 with an Accept header (8.2.3). The response carries no To tag: the caller adds one
    from its IdSource (8.2.6.2).
    """
    if req.version.upper() != "SIP/2.0":
        return _bad(req, "Version Not Supported", 505)
    if methods is not None and req.method not in methods:
        resp = _bad(req, "Not Implemented", 501)
        resp.headers.add("Allow", ", ".join(sorted(methods)))
        return resp
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
    if req.method == "REGISTER" and not isinstance(req.to.uri, SipURI):
        # RFC 3261 10.2: the To of a REGISTER is an address-of-record, a SIP or SIPS URI.
        return _bad(req, "To of a REGISTER must be a SIP or SIPS URI")
    if req.method not in _NO_REQUIRE_CHECK:
        ours = {tag.lower() for tag in supported}
        unsupported = [tag for tag in req.headers.get_all("Require") if tag.lower() not in ours]
        if unsupported:
            resp = _bad(req, "Bad Extension", 420)
            resp.headers.add("Unsupported", ", ".join(unsupported))
            return resp
    if accept is not None and req.body:
        ctype = req.content_type
        if ctype is None:
            return _bad(req, "Missing Content-Type for a message body")
        if ctype not in {a.lower() for a in accept}:
            resp = _bad(req, "Unsupported Media Type", 415)
            resp.headers.add("Accept", ", ".join(sorted(accept)))
            return resp
    return None


def validate_response(resp: SipResponse) -> str | None:
    """Return None if a response is usable, else the defect (RFC 3261 8.1.3.3: discard it).

    A UAC cannot answer a broken response, so the caller logs the reason and drops it.
    """
    try:
        for name in ("Via", "From", "To", "Call-ID", "CSeq"):
            if name not in resp.headers:
                raise SipParseError(f"Missing {name} header")
        resp.vias  # noqa: B018
        resp.cseq  # noqa: B018
        resp.call_id  # noqa: B018
        resp.from_  # noqa: B018
        resp.to  # noqa: B018
    except SipParseError as exc:
        return exc.reason
    return None
