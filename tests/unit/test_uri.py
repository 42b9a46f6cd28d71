"""SIP/SIPS/tel URIs: parsing, serialising, RFC 3261 19.1.4 comparison."""

from __future__ import annotations

import pytest

from firmware.sip.errors import SipParseError
from firmware.sip.uri import AbsoluteURI, SipURI, TelURI, parse_uri


def sip(text: str) -> SipURI:
    uri = parse_uri(text)
    assert isinstance(uri, SipURI)
    return uri


def test_full_sip_uri() -> None:
    uri = sip(
        "sips:alice:secret@Atlanta.example.com:5061;transport=TLS;lr;maddr=10.0.0.1?subject=hi%20there&priority=urgent"
    )
    assert uri.scheme == "sips"
    assert (uri.user, uri.password) == ("alice", "secret")
    assert (uri.host, uri.port) == ("Atlanta.example.com", 5061)
    assert uri.params == {"transport": "TLS", "lr": None, "maddr": "10.0.0.1"}
    assert uri.transport == "tls"
    assert uri.headers == {"subject": "hi%20there", "priority": "urgent"}
    assert str(uri) == (
        "sips:alice:secret@Atlanta.example.com:5061;transport=TLS;lr;maddr=10.0.0.1"
        "?subject=hi%20there&priority=urgent"
    )


@pytest.mark.parametrize(
    "text, host, port",
    [
        ("sip:[2001:db8::10]", "[2001:db8::10]", None),
        ("sip:user@[2001:db8::10]:5070", "[2001:db8::10]", 5070),
        ("sip:192.0.2.1:5060", "192.0.2.1", 5060),
        ("sip:example.com.", "example.com.", None),
    ],
)
def test_hosts(text: str, host: str, port: int | None) -> None:
    uri = sip(text)
    assert (uri.host, uri.port) == (host, port)
    assert str(uri) == text


def test_copy_changes_only_what_is_asked() -> None:
    uri = sip("sip:bob@example.com;transport=tcp")
    moved = uri.copy(host="192.0.2.9", port=5080)
    assert str(moved) == "sip:bob@192.0.2.9:5080;transport=tcp"
    assert str(uri) == "sip:bob@example.com;transport=tcp"
    moved.params["lr"] = None
    assert "lr" not in uri.params


@pytest.mark.parametrize(
    "a, b",
    [
        ("sip:%61lice@atlanta.com;transport=TCP", "sip:alice@AtLanTa.CoM;Transport=tcp"),
        ("sip:carol@chicago.com", "sip:carol@chicago.com;newparam=5"),
        ("sip:carol@chicago.com", "sip:carol@chicago.com;security=on"),
        (
            "sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com",
            "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com",
        ),
        (
            "sip:alice@atlanta.com?subject=project%20x&priority=urgent",
            "sip:alice@atlanta.com?priority=urgent&subject=project%20x",
        ),
    ],
)
def test_rfc3261_equivalent_uris(a: str, b: str) -> None:
    assert parse_uri(a) == parse_uri(b)
    assert parse_uri(b) == parse_uri(a)


@pytest.mark.parametrize(
    "a, b",
    [
        ("SIP:ALICE@AtLanTa.CoM;Transport=udp", "sip:alice@AtLanTa.CoM;Transport=UDP"),
        ("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060"),
        ("sip:bob@biloxi.com", "sip:bob@biloxi.com;transport=udp"),
        ("sip:bob@biloxi.com", "sip:bob@biloxi.com:6000;transport=tcp"),
        ("sip:carol@chicago.com", "sip:carol@chicago.com?Subject=next%20meeting"),
        ("sip:bob@phone21.boxesbybob.com", "sip:bob@192.0.2.4"),
        ("sip:carol@chicago.com;security=on", "sip:carol@chicago.com;security=off"),
        ("sip:alice@atlanta.com", "sips:alice@atlanta.com"),
        ("sip:atlanta.com", "sip:alice@atlanta.com"),
    ],
)
def test_rfc3261_different_uris(a: str, b: str) -> None:
    assert parse_uri(a) != parse_uri(b)
    assert parse_uri(b) != parse_uri(a)


def test_tel_uri() -> None:
    uri = parse_uri("tel:+1-201-555-0123;phone-context=example.com")
    assert isinstance(uri, TelURI)
    assert uri.number == "+1-201-555-0123" and uri.digits == "+12015550123"
    assert str(uri) == "tel:+1-201-555-0123;phone-context=example.com"
    assert uri == parse_uri("TEL:+1.201.555.0123;Phone-Context=Example.com")
    assert uri != parse_uri("tel:+1-201-555-0123")
    assert parse_uri("tel:+12015550123") != parse_uri("tel:+12015550124")


def test_other_schemes_are_opaque() -> None:
    uri = parse_uri("urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6")
    assert isinstance(uri, AbsoluteURI) and uri.scheme == "urn"
    assert str(uri) == "urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6"
    same = parse_uri("URN:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6")
    assert same == uri and hash(same) == hash(uri)
    assert len({parse_uri("sip:%61lice@ATLANTA.com"), parse_uri("sip:alice@atlanta.com")}) == 1


@pytest.mark.parametrize(
    "text, reason",
    [
        ("alice@example.com", "no scheme"),
        ("sip:", "Bad host"),
        ("sip:user@", "Bad host"),
        ("sip:user@host:99999", "out of range"),
        ("sip:user@host:50x", "Bad port"),
        ("sip:user@[2001:db8::1", "Unterminated IPv6"),
        ("sip:user@[2001:db8::1]x", "after IPv6"),
        ("sip:a b@example.com", "user part"),
        ("sip:a@exa mple.com", "Bad host"),
        ("sip:a@example.com;=x", "parameter"),
        ("sip:a@example.com;a=b c", "parameter value"),
        ("sip:a@example.com?novalue", "header"),
        ("sip:a@example.com;lr?x=<y>", "header value"),
        ("tel:call-me", "telephone number"),
        ("http:", "Bad URI"),
    ],
)
def test_malformed_uris(text: str, reason: str) -> None:
    with pytest.raises(SipParseError, match=reason) as err:
        parse_uri(text)
    assert err.value.status == 400


def test_escaped_reserved_characters_are_not_equivalent() -> None:
    # RFC 3261 19.1.4: only characters outside the reserved set equal their escapes
    assert parse_uri("sip:%61lice@example.com") == parse_uri("sip:alice@example.com")
    assert parse_uri("sip:a%3bb@example.com") == parse_uri("sip:a%3Bb@example.com")
    assert parse_uri("sip:a%3Bb@example.com") != parse_uri("sip:a;b@example.com")
