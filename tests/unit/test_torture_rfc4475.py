"""RFC 4475 section 3: every torture-test message handled the way the RFC says.

One test per message, named after the RFC's file name. Valid messages must parse and yield the
values the RFC discusses; invalid ones must be rejected by `parse_message` or answered by
`validate_request` with the response the RFC describes. See tests/data/rfc4475/README.md for
where the bytes come from.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from firmware.sip.errors import SipParseError
from firmware.sip.headers import parse_name_addr
from firmware.sip.message import SipRequest, SipResponse
from firmware.sip.parser import StreamParser, parse_message
from firmware.sip.uri import AbsoluteURI, SipURI
from firmware.sip.validate import validate_request, validate_response

DATA = Path(__file__).resolve().parents[1] / "data" / "rfc4475"
SUPPORTED: set[str] = {"path", "outbound", "gruu"}


def raw(name: str) -> bytes:
    return (DATA / f"{name}.dat").read_bytes()


def request(name: str) -> SipRequest:
    msg = parse_message(raw(name))
    assert isinstance(msg, SipRequest)
    return msg


def response(name: str) -> SipResponse:
    msg = parse_message(raw(name))
    assert isinstance(msg, SipResponse)
    return msg


def accepted(name: str) -> SipRequest:
    """Parse and validate; the RFC says a UAS processes this request."""
    req = request(name)
    assert validate_request(req, SUPPORTED) is None
    return req


def rejected(name: str, status: int = 400) -> SipResponse:
    """Parse, then validate_request must answer with `status`; returns that response."""
    resp = validate_request(request(name), SUPPORTED)
    assert resp is not None, f"{name} was accepted"
    assert resp.status == status, resp.reason
    # the response is addressable: it copies the request's transaction identifiers
    assert resp.headers.get("Via") is not None and resp.headers.get("CSeq") is not None
    return resp


def unparseable(name: str) -> SipParseError:
    with pytest.raises(SipParseError) as err:
        parse_message(raw(name))
    return err.value


def test_all_49_section_3_messages_are_present() -> None:
    assert len(list(DATA.glob("*.dat"))) == 49


# --- 3.1.1 Valid messages ------------------------------------------------------------------


def test_wsinv() -> None:
    req = accepted("wsinv")
    assert req.uri_text == "sip:vivekg@chair-dnrc.example.com;unknownparam"
    assert req.to.tag == "1918181833n"
    assert req.from_.tag == "98asjd8"
    assert req.from_.display == 'J Rosenberg \\"'
    assert req.headers.get("Max-Forwards") == "0068"
    assert (req.cseq.number, req.cseq.method) == (9, "INVITE")
    assert [(v.transport, v.host, v.branch) for v in req.vias] == [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    assert req.headers.get("Subject") == ""
    assert req.headers.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert req.headers.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    contact = req.contacts[0]
    assert contact.display == 'Quoted string ""'
    assert contact.params == {"newparam": "newvalue", "secondparam": None, "q": "0.33"}
    route = parse_name_addr(req.headers.get("Route") or "")
    assert isinstance(route.uri, SipURI)
    assert route.uri.params == {"lr": None, "unknownwith": "value", "unknown-no-value": None}
    assert len(req.body) == 150


def test_intmeth() -> None:
    req = accepted("intmeth")
    method = "!interesting-Method0123456789_*+`.%indeed'~"
    assert req.method == method and req.cseq.method == method
    uri = req.uri
    assert isinstance(uri, SipURI)
    assert uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert uri.host == "example.com"
    assert req.to.display == "BEL:\x07 NUL:\x00 DEL:\x7f"
    assert req.from_.display == "token1~` token2'+_ token3*%!.-"
    assert req.from_.tag == "_token~1'+`*%!-."
    assert req.from_.params["fromparam''~+*_!.-%"] == '"работающий"'
    assert req.call_id == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    assert req.headers.get("extensionHeader-!.%*+_`'~") == "\ufeff大停電"


def test_esc01() -> None:
    req = accepted("esc01")
    uri = req.uri
    assert isinstance(uri, SipURI) and uri.host == "example.net"
    assert uri.user == "sips%3Auser%40example.com"  # kept escaped, so it re-serialises as is
    assert uri.unescaped_user == "sips:user@example.com"  # the RFC's point: a user, not a URI
    assert uri == SipURI("example.net", "sips%3auser%40example.com")  # hex case is irrelevant
    assert req.to.uri == SipURI("example.com", "user")
    assert req.from_.uri == SipURI("example.net", "I have spaces")
    contact = req.contacts[0].uri
    assert isinstance(contact, SipURI)
    assert contact == SipURI("host5.example.net", "caller", params={"lr": None, "name": "value%41"})
    assert req.serialize().startswith(
        b"INVITE sip:sips%3Auser%40example.com@example.net SIP/2.0\r\n"
    )


def test_escnull() -> None:
    req = accepted("escnull")
    assert req.to.uri == SipURI("example.com", "null-\x00-null")
    assert [c.uri for c in req.contacts] == [
        SipURI("host5.example.com", "\x00"),
        SipURI("host5.example.com", "\x00\x00"),
    ]
    wire = req.serialize()
    assert b"\x00" not in wire and b"sip:%00%00@host5.example.com" in wire


def test_esc02() -> None:
    req = accepted("esc02")
    assert req.method == "RE%47IST%45R" and req.method != "REGISTER"
    assert req.to.display == "%Z%45" and req.from_.display == "%Z%45"
    assert req.top_via.branch == "z9hG4bK209%fzsnel234"
    # C%6Fntact is an unknown header, not Contact: two contacts, not three
    assert [str(c.uri) for c in req.contacts] == [
        "sip:alias1@host1.example.com",
        "sip:alias3@host3.example.com",
    ]
    assert req.headers.get("C%6Fntact") == "<sip:alias2@host2.example.com>"


def test_lwsdisp() -> None:
    req = accepted("lwsdisp")
    assert req.from_.display == "caller"
    assert req.from_.tag == "323"


def test_longreq() -> None:
    req = accepted("longreq")
    assert len(req.vias) == 34
    assert req.vias[-1].branch == "very" + "long" * 50 + "branchvalue"
    assert req.vias[-1].received == "192.0.2.5"
    assert req.to.display == "I have a user name of " + "extreme" * 10 + " proportion"
    to_uri = req.to.uri
    assert isinstance(to_uri, SipURI) and to_uri.port == 6000
    assert to_uri.params["very" + "long" * 25 + "parameternamewithnovalue"] is None
    assert req.from_.tag == "12" + "982" * 50 + "424"
    assert req.call_id == "longreq.one" + "really" * 20 + "longcallid"
    name = "Unknown-" + "Long" * 20 + "-Name"
    assert (req.headers.get(name) or "").startswith("unknown-" + "long" * 20 + "-value;")
    assert len(req.body) == 150


def test_dblreq() -> None:
    req = accepted("dblreq")
    assert req.method == "REGISTER"
    assert req.body == b""  # the INVITE glued behind is not part of this datagram's message
    assert b"INVITE" not in req.serialize()


def test_semiuri() -> None:
    req = accepted("semiuri")
    uri = req.uri
    assert isinstance(uri, SipURI)
    assert uri.user == "user;par=u%40example.net"
    assert uri.host == "example.com" and uri.params == {}
    assert req.headers.get_all("Accept") == [
        "application/sdp",
        "application/pkcs7-mime",
        "multipart/mixed",
        "multipart/signed",
        "message/sip",
        "message/sipfrag",
    ]


def test_transports() -> None:
    req = accepted("transports")
    assert [v.transport for v in req.vias] == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]
    assert req.call_id == "transports.kijh4akdnaqjkwendsasfdj"


def test_mpart01() -> None:
    data = raw("mpart01")
    req = accepted("mpart01")
    assert len(req.body) == 553 and data.endswith(req.body)
    assert b"\x00" in req.body  # binary octets survive
    assert (req.headers.get("Identity") or "").endswith("teeivUhkMWYUA=")
    assert req.content_type == "multipart/mixed"
    der = req.body[187 : 187 + 342]  # the PKCS#7 blob, octets intact
    assert der.startswith(bytes.fromhex("3082015206092a864886f70d010702")) and b"\x00" in der
    assert req.serialize() == data  # canonical input: byte-exact round trip


def test_unreason() -> None:
    resp = response("unreason")
    assert resp.status == 200
    assert resp.reason == "= 2**3 * 5**2 но сто девяносто девять - простое"
    assert validate_response(resp) is None
    assert len(resp.body) == 154


def test_noreason() -> None:
    resp = response("noreason")
    assert (resp.status, resp.reason) == (100, "")
    assert validate_response(resp) is None
    assert resp.serialize().startswith(b"SIP/2.0 100 \r\n")


# --- 3.1.2 Invalid messages ----------------------------------------------------------------


def test_badinv01() -> None:
    resp = rejected("badinv01")
    assert "Via" in resp.reason


def test_clerr() -> None:
    err = unparseable("clerr")
    assert err.status == 400 and "Content-Length" in err.reason
    # the head parsed, so a UAS can still answer the sender with that 400
    assert isinstance(err.message, SipRequest) and err.message.call_id.startswith("clerr.")


def test_ncl() -> None:
    err = unparseable("ncl")
    assert err.status == 400 and "Content-Length" in err.reason and "-999" in err.reason


def test_scalar02() -> None:
    resp = rejected("scalar02")
    assert "CSeq" in resp.reason


def test_scalar02_every_overlarge_field_is_caught() -> None:
    req = request("scalar02")
    req.headers.set("CSeq", "1 REGISTER")
    resp = validate_request(req, SUPPORTED)
    assert resp is not None and "Max-Forwards" in resp.reason
    req.headers.set("Max-Forwards", "70")
    resp = validate_request(req, SUPPORTED)
    assert resp is not None and "Expires" in resp.reason


def test_scalarlg() -> None:
    resp = response("scalarlg")  # the framing is fine ...
    reason = validate_response(resp)  # ... but a UAC must discard it
    assert reason is not None and "CSeq" in reason


def test_quotbal() -> None:
    resp = rejected("quotbal")
    assert "quoted" in resp.reason.lower()


def test_ltgtruri() -> None:
    assert unparseable("ltgtruri").reason == "Request-URI enclosed in <>"


def test_lwsruri() -> None:
    assert unparseable("lwsruri").reason == "Whitespace inside Request-URI"


def test_lwsstart() -> None:
    assert unparseable("lwsstart").reason == "Multiple spaces between request line elements"


def test_trws() -> None:
    assert unparseable("trws").reason == "Trailing whitespace in request line"


def test_escruri() -> None:
    # Tolerated (RFC 4475 3.1.2.11 allows being liberal); the header is never acted upon.
    req = accepted("escruri")
    uri = req.uri
    assert isinstance(uri, SipURI) and uri.headers == {"Route": "%3Csip:example.com%3E"}


def test_baddate() -> None:
    req = accepted("baddate")  # we do not use Date, so a non-GMT zone is harmless
    assert req.headers.get("Date") == "Fri, 01 Jan 2010 16:00:00 EST"
    assert req.headers.get_all("Date") == ["Fri, 01 Jan 2010 16:00:00 EST"]


def test_regbadct() -> None:
    # addr-spec with '?': read as a URI with an escaped header, as the RFC suggests
    req = accepted("regbadct")
    uri = req.contacts[0].uri
    assert isinstance(uri, SipURI)
    assert uri.headers == {"Route": "%3Csip:sip.example.com%3E"}
    assert req.contacts[0].params == {}


def test_badaspec() -> None:
    resp = rejected("badaspec")
    assert "Whitespace" in resp.reason


def test_baddn() -> None:
    # The RFC's file ends after the last header line, so framing rejects it first ...
    assert unparseable("baddn").reason == "No blank line after the headers"
    # ... and once terminated, the unquoted non-token display names are what is refused.
    req = parse_message(raw("baddn") + b"\r\n")
    assert isinstance(req, SipRequest)
    resp = validate_request(req, SUPPORTED)
    assert resp is not None and resp.status == 400
    assert resp.reason == "Bad display name 'Bell, Alexander'"


def test_badvers() -> None:
    req = request("badvers")
    assert req.version == "SIP/7.0"
    resp = rejected("badvers", 505)
    assert resp.serialize().startswith(b"SIP/2.0 505 Version Not Supported\r\n")


def test_mismatch01() -> None:
    resp = rejected("mismatch01")
    assert resp.reason == "CSeq method INVITE does not match request method OPTIONS"


def test_mismatch02() -> None:
    # 400 is acceptable; 501 is preferred when the UAS knows its methods
    rejected("mismatch02")
    resp = validate_request(request("mismatch02"), SUPPORTED, methods={"INVITE", "OPTIONS"})
    assert resp is not None and resp.status == 501
    assert resp.headers.get("Allow") == "INVITE, OPTIONS"


def test_bigcode() -> None:
    err = unparseable("bigcode")
    assert "out of range" in err.reason


# --- 3.2 Transaction layer semantics -------------------------------------------------------


def test_badbranch() -> None:
    req = accepted("badbranch")
    assert req.top_via.branch == "z9hG4bK"  # parses; transaction matching must cope


# --- 3.3 Application layer semantics -------------------------------------------------------


def test_insuf() -> None:
    resp = rejected("insuf")
    assert resp.reason == "Missing To, From, Call-ID headers"


def test_unkscm() -> None:
    req = request("unkscm")
    assert isinstance(req.uri, AbsoluteURI) and req.uri.scheme == "nobodyknowsthisscheme"
    rejected("unkscm", 416)


def test_novelsc() -> None:
    req = request("novelsc")
    assert req.uri.scheme == "soap.beep"
    rejected("novelsc", 416)


def test_unksm2() -> None:
    req = request("unksm2")
    assert isinstance(req.to.uri, AbsoluteURI) and str(req.to.uri) == "isbn:2983792873"
    assert isinstance(req.from_.uri, AbsoluteURI) and req.from_.tag == "3234233"
    assert str(req.contacts[0].uri) == "name:John_Smith"
    resp = rejected("unksm2")  # a REGISTER's To must be an address-of-record
    assert "To" in resp.reason


def test_bext01() -> None:
    resp = rejected("bext01", 420)
    assert resp.headers.get("Unsupported") == "nothingSupportsThis, nothingSupportsThisEither"
    # Proxy-Require is for proxies: a UAS ignores it
    assert "noProxiesSupportThis" not in (resp.headers.get("Unsupported") or "")


def test_invut() -> None:
    req = accepted("invut")  # parses and is well-formed ...
    resp = validate_request(req, SUPPORTED, accept={"application/sdp"})  # ... but unusable
    assert resp is not None and resp.status == 415
    assert resp.headers.get("Accept") == "application/sdp"


def test_regaut01() -> None:
    req = accepted("regaut01")
    assert req.headers.get_all("Authorization") == ["NoOneKnowsThisScheme opaque-data=here"]


def test_multi01() -> None:
    resp = rejected("multi01")
    assert resp.reason == (
        "Multiple values in single-value header(s) To, From, Call-ID, CSeq, Max-Forwards"
    )


def test_mcl01() -> None:
    err = unparseable("mcl01")
    assert err.reason == "Conflicting Content-Length headers"
    # on a stream the framing is lost: the connection must go
    item = StreamParser().feed(raw("mcl01"))[0]
    assert isinstance(item, SipParseError) and item.breaks_framing


def test_bcast() -> None:
    resp = response("bcast")
    assert validate_response(resp) is None
    assert [v.host for v in resp.vias] == ["192.0.2.198", "255.255.255.255"]


def test_zeromf() -> None:
    req = accepted("zeromf")  # a UAS processes Max-Forwards: 0 (only proxies answer 483)
    assert req.headers.get("Max-Forwards") == "0"


def test_cparam01() -> None:
    req = accepted("cparam01")
    contact = req.contacts[0]
    assert contact.params == {"unknownparam": None}  # a header parameter ...
    assert isinstance(contact.uri, SipURI) and contact.uri.params == {}  # ... not a URI one


def test_cparam02() -> None:
    req = accepted("cparam02")
    contact = req.contacts[0]
    assert contact.params == {}
    assert isinstance(contact.uri, SipURI) and contact.uri.params == {"unknownparam": None}


def test_regescrt() -> None:
    req = accepted("regescrt")
    uri = req.contacts[0].uri
    assert isinstance(uri, SipURI)
    assert uri.headers == {"Route": "%3Csip:sip.example.com%3E"}


def test_sdp01() -> None:
    # Well-formed; the UA answers 406 because it cannot produce text/nobodyKnowsThis.
    req = accepted("sdp01")
    assert req.headers.get_all("Accept") == ["text/nobodyKnowsThis"]
    assert req.content_type == "application/sdp" and len(req.body) == 150


# --- 3.4 Backward compatibility ------------------------------------------------------------


def test_inv2543() -> None:
    req = accepted("inv2543")  # no branch, no From tag, no Content-Length, no Max-Forwards
    assert req.top_via.branch is None
    assert req.from_.tag is None
    assert "Max-Forwards" not in req.headers
    assert req.body.endswith(b"m=audio 49217 RTP/AVP 0\r\n")  # body = rest of the datagram
    # addr-spec form: ;user=phone belongs to the header, not to the URI (RFC 3261 20.10)
    assert req.to.uri == SipURI("ss1.example.net", "+16505552222")
    assert req.to.params == {"user": "phone"}
    assert isinstance(req.from_.uri, SipURI) and req.from_.uri.params == {"user": "phone"}
