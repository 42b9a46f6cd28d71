"""Header names, list splitting, name-addr, Via and CSeq values."""

from __future__ import annotations

import pytest

from firmware.sip.errors import SipParseError
from firmware.sip.headers import (
    NameAddr,
    canonical_name,
    parse_cseq,
    parse_name_addr,
    parse_via,
    split_list,
)
from firmware.sip.message import Headers
from firmware.sip.uri import SipURI, parse_uri


@pytest.mark.parametrize(
    "name, canonical",
    [
        ("v", "Via"),
        ("I", "Call-ID"),
        ("call-id", "Call-ID"),
        ("CSEQ", "CSeq"),
        ("www-authenticate", "WWW-Authenticate"),
        ("o", "Event"),
        ("x", "Session-Expires"),
        ("y", "Identity"),
        ("r", "Refer-To"),
        ("b", "Referred-By"),
        ("u", "Allow-Events"),
        ("a", "Accept-Contact"),
        ("j", "Reject-Contact"),
        ("d", "Request-Disposition"),
        ("X-Weird-Thing", "X-Weird-Thing"),
    ],
)
def test_canonical_name(name: str, canonical: str) -> None:
    assert canonical_name(name) == canonical


def test_split_list_respects_quotes_and_brackets() -> None:
    value = '"Smith, John" <sip:j@x;a=b,c>;q=0.5, <sip:k@y>, sip:l@z'
    assert split_list(value) == ['"Smith, John" <sip:j@x;a=b,c>;q=0.5', "<sip:k@y>", "sip:l@z"]
    assert split_list('a="x\\",y", b') == ['a="x\\",y"', "b"]
    with pytest.raises(SipParseError, match="Unterminated"):
        split_list('"open, b')


def test_headers_lookup_is_case_and_compact_aware() -> None:
    h = Headers(
        [("v", "SIP/2.0/UDP a"), ("VIA", "SIP/2.0/UDP b, SIP/2.0/UDP c"), ("To", "<sip:x@y>")]
    )
    assert h.get("via") == "SIP/2.0/UDP a"
    assert h.get_all("Via") == ["SIP/2.0/UDP a", "SIP/2.0/UDP b", "SIP/2.0/UDP c"]
    assert "t" in h and "From" not in h
    h.set("Via", "SIP/2.0/TCP new")
    assert list(h) == [("v", "SIP/2.0/TCP new"), ("To", "<sip:x@y>")]  # first's name kept
    h.add("Route", "<sip:p;lr>")
    h.remove("V")
    assert list(h) == [("To", "<sip:x@y>"), ("Route", "<sip:p;lr>")]
    assert len(h) == 2


def test_name_addr_forms() -> None:
    quoted = parse_name_addr('"Alice \\"Al\\" Smith" <sip:alice@example.com;transport=tcp>;tag=88')
    assert quoted.display == 'Alice "Al" Smith'
    assert quoted.uri == parse_uri("sip:alice@example.com;transport=tcp")
    assert quoted.tag == "88"
    assert str(quoted) == '"Alice \\"Al\\" Smith" <sip:alice@example.com;transport=tcp>;tag=88'

    tokens = parse_name_addr("Bob  Jones<sip:bob@example.com>")
    assert tokens.display == "Bob  Jones"
    assert str(tokens) == "Bob  Jones <sip:bob@example.com>"

    bare = parse_name_addr("<sip:carol@example.com>")
    assert bare.display is None and bare.params == {}


def test_addr_spec_params_belong_to_the_header() -> None:
    na = parse_name_addr("sip:alice@example.com;tag=abc;expires=60")
    assert na.uri == SipURI("example.com", "alice")
    assert isinstance(na.uri, SipURI) and na.uri.params == {}
    assert na.params == {"tag": "abc", "expires": "60"}
    assert str(na) == "<sip:alice@example.com>;tag=abc;expires=60"  # always <uri> on output


def test_name_addr_param_values_keep_quotes() -> None:
    na = parse_name_addr('<sip:a@b>;+sip.instance="<urn:uuid:1234>";reg-id=1')
    assert na.params == {"+sip.instance": '"<urn:uuid:1234>"', "reg-id": "1"}
    assert str(NameAddr(parse_uri("sip:a@b"), params=na.params)) == (
        '<sip:a@b>;+sip.instance="<urn:uuid:1234>";reg-id=1'
    )


@pytest.mark.parametrize(
    "value, reason",
    [
        ("", "Empty"),
        ('"unterminated <sip:a@b>', "Unterminated quoted"),
        ('"Alice" sip:a@b', "Missing <URI>"),
        ("Alice, Bob <sip:a@b>", "display name"),
        ("<sip:a@b", "Unterminated <URI>"),
        ("< sip:a@b >", "Whitespace inside <URI>"),
        ("<sip:a@b> junk", "Unexpected text"),
        ("<sip:a@b>;;", "parameter"),
        ("<sip:a@b>;tag=", "parameter value"),
        ("sip:a @b", "Whitespace inside URI"),
    ],
)
def test_malformed_name_addr(value: str, reason: str) -> None:
    with pytest.raises(SipParseError, match=reason):
        parse_name_addr(value)


def test_via_parsing() -> None:
    (via,) = parse_via("SIP/2.0/udp [2001:db8::9]:5062;branch=z9hG4bKx;rport;received=192.0.2.7")
    assert via.transport == "UDP"
    assert (via.host, via.port, via.sent_by) == ("[2001:db8::9]", 5062, "[2001:db8::9]:5062")
    assert via.params["rport"] is None and via.rport is None
    assert via.received == "192.0.2.7"
    assert str(via) == "SIP/2.0/UDP [2001:db8::9]:5062;branch=z9hG4bKx;rport;received=192.0.2.7"
    (mcast,) = parse_via("SIP/2.0/UDP h;maddr=224.0.1.75;ttl=16;branch=z9hG4bKm")
    assert (mcast.maddr, mcast.ttl, mcast.branch) == ("224.0.1.75", 16, "z9hG4bKm")
    first, second = parse_via(
        "SIP/2.0/TLS a.example.com;rport=5061 , SIP / 2.0 / WSS b.example.com"
    )
    assert first.rport == 5061 and second.transport == "WSS" and second.branch is None


@pytest.mark.parametrize(
    "value, reason",
    [
        ("", "Empty Via"),
        ("SIP/2.0 host", "sent-protocol"),
        ("SIP/2.0/UDP", "no sent-by"),
        ("SIP/2.0/UDP host:port", "Bad port"),
        ("SIP/2.0/UDP host;rport=abc", "rport"),
        ("SIP/2.0/UDP host;ttl=1x", "ttl"),
        ("SIP/2.0/UDP 192.0.2.15;;,;,,", "parameter"),
    ],
)
def test_malformed_via(value: str, reason: str) -> None:
    with pytest.raises(SipParseError, match=reason):
        parse_via(value)


def test_cseq() -> None:
    cseq = parse_cseq(" 4294967295   REGISTER ")
    assert (cseq.number, cseq.method) == (4294967295, "REGISTER")
    assert str(parse_cseq("1 INVITE")) == "1 INVITE"
    for bad in ("INVITE", "1", "-1 INVITE", "4294967296 INVITE", "1 INV ITE", "٣ INVITE"):
        with pytest.raises(SipParseError):
            parse_cseq(bad)


@pytest.mark.parametrize(
    "name, value", [("X", "a\r\nInjected: yes"), ("X", "a\nb"), ("X\r\nY", "v"), ("X:Y", "v")]
)
def test_headers_refuse_values_that_break_framing(name: str, value: str) -> None:
    h = Headers([("To", "<sip:a@b>")])
    for call in (h.add, h.set, lambda n, v: h.insert(0, n, v), lambda n, v: Headers([(n, v)])):
        with pytest.raises(ValueError, match="framing"):
            call(name, value)
    assert list(h) == [("To", "<sip:a@b>")]
