"""Datagram and stream parsing, framing, limits and serialisation."""

from __future__ import annotations

import pytest

from firmware.sip.errors import SipParseError
from firmware.sip.message import Headers, SipRequest, SipResponse, make_request, make_response
from firmware.sip.parser import KeepAlive, StreamParser, parse_message
from firmware.sip.uri import SipURI

SDP = (
    b"v=0\r\no=alice 2890844526 2890844526 IN IP4 192.0.2.101\r\ns=-\r\n"
    b"c=IN IP4 192.0.2.101\r\nt=0 0\r\nm=audio 49172 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)
INVITE = (
    b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP client.atlanta.example.com:5060;branch=z9hG4bK74bf9;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b'From: "Alice" <sip:alice@atlanta.example.com>;tag=9fxced76sl\r\n'
    b"To: Bob <sip:bob@biloxi.example.com>\r\n"
    b"Call-ID: 3848276298220188511@atlanta.example.com\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Contact: <sip:alice@client.atlanta.example.com;transport=udp>\r\n"
    b"X-Custom-Thing: keep   me, verbatim\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: " + str(len(SDP)).encode() + b"\r\n\r\n" + SDP
)
OK = (
    b"SIP/2.0 200 OK\r\n"
    b"Via: SIP/2.0/UDP client.atlanta.example.com:5060;branch=z9hG4bK74bf9;received=192.0.2.101\r\n"
    b'From: "Alice" <sip:alice@atlanta.example.com>;tag=9fxced76sl\r\n'
    b"To: Bob <sip:bob@biloxi.example.com>;tag=8321234356\r\n"
    b"Call-ID: 3848276298220188511@atlanta.example.com\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def test_invite_fields() -> None:
    msg = parse_message(INVITE)
    assert isinstance(msg, SipRequest)
    assert msg.method == "INVITE"
    assert msg.uri_text == "sip:bob@biloxi.example.com"
    assert isinstance(msg.uri, SipURI) and msg.uri.user == "bob"
    assert msg.call_id == "3848276298220188511@atlanta.example.com"
    assert (msg.cseq.number, msg.cseq.method) == (1, "INVITE")
    assert msg.top_via.branch == "z9hG4bK74bf9"
    assert msg.top_via.sent_by == "client.atlanta.example.com:5060"
    assert msg.top_via.params["rport"] is None
    assert msg.from_.display == "Alice" and msg.from_.tag == "9fxced76sl"
    assert msg.to.tag is None
    assert str(msg.contacts[0].uri) == "sip:alice@client.atlanta.example.com;transport=udp"
    assert msg.headers.get("x-custom-thing") == "keep   me, verbatim"
    assert msg.body == SDP


def test_round_trip_is_byte_exact() -> None:
    assert parse_message(INVITE).serialize() == INVITE
    assert parse_message(OK).serialize() == OK


def test_response_fields() -> None:
    msg = parse_message(OK)
    assert isinstance(msg, SipResponse)
    assert (msg.status, msg.reason) == (200, "OK")
    assert msg.to.tag == "8321234356"
    assert msg.top_via.received == "192.0.2.101"


def test_compact_forms_and_case() -> None:
    raw = (
        b"OPTIONS sip:x@example.com SIP/2.0\r\nv: SIP/2.0/TCP a.example.com;branch=z9hG4bKa\r\n"
        b"f: <sip:a@example.com>;tag=1\r\nt: sip:x@example.com\r\ni: abc\r\n"
        b"cSEQ: 7 OPTIONS\r\nm: <sip:a@10.0.0.1>\r\nk: path, outbound\r\nl: 0\r\n\r\n"
    )
    msg = parse_message(raw)
    assert msg.call_id == "abc"
    assert msg.cseq.number == 7
    assert msg.headers.get("Supported") == "path, outbound"
    assert msg.headers.get_all("supported") == ["path", "outbound"]
    assert msg.top_via.transport == "TCP"
    assert msg.to.uri == SipURI("example.com", "x")
    assert msg.serialize() == raw


def test_folding_unfolds_to_single_space() -> None:
    raw = (
        b"SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP a.example.com\r\n"
        b" ;branch=z9hG4bKx\r\nSubject: line one\r\n\tline two\r\nContent-Length: 0\r\n\r\n"
    )
    msg = parse_message(raw)
    assert msg.headers.get("Subject") == "line one line two"
    assert msg.top_via.branch == "z9hG4bKx"


def test_authorization_is_not_split_on_commas() -> None:
    value = 'Digest username="a", realm="r", nonce="n", uri="sip:x", response="0"'
    h = Headers([("Authorization", value), ("Date", "Sat, 13 Nov 2010 23:29:00 GMT")])
    assert h.get_all("authorization") == [value]
    assert h.get_all("date") == ["Sat, 13 Nov 2010 23:29:00 GMT"]


def test_repeated_and_comma_separated_vias() -> None:
    raw = OK.replace(
        b"Via: SIP/2.0/UDP client",
        b"Via: SIP/2.0/UDP p1.example.com;branch=z9hG4bK1, SIP/2.0/TCP p2.example.com\r\n"
        b"Via: SIP/2.0/UDP client",
    )
    vias = parse_message(raw).vias
    assert [v.host for v in vias] == [
        "p1.example.com",
        "p2.example.com",
        "client.atlanta.example.com",
    ]


def test_datagram_content_length_rules() -> None:
    # larger than the datagram -> error
    with pytest.raises(SipParseError) as err:
        parse_message(INVITE[:-5])
    assert err.value.status == 400 and "Content-Length" in err.value.reason
    # smaller -> body truncated
    msg = parse_message(INVITE + b"trailing junk")
    assert msg.body == SDP
    # missing -> rest of datagram
    no_cl = INVITE.replace(b"Content-Length: " + str(len(SDP)).encode() + b"\r\n", b"")
    assert parse_message(no_cl).body == SDP


def test_limits() -> None:
    with pytest.raises(SipParseError) as err:
        parse_message(OK[:-4] + b"\r\nX: " + b"a" * 70000 + b"\r\n\r\n")
    assert err.value.status == 513
    many = OK[:-2] + b"".join(b"X-%d: y\r\n" % i for i in range(300)) + b"\r\n"
    with pytest.raises(SipParseError, match="Too many headers"):
        parse_message(many)
    with pytest.raises(SipParseError, match="too long"):
        parse_message(OK[:-2] + b"X: " + b"a" * 9000 + b"\r\n\r\n")


@pytest.mark.parametrize(
    "raw, reason",
    [
        (b"", "Empty"),
        (b"INVITE sip:a@b SIP/2.0\r\nVia: x\r\n", "blank line"),
        (b"INVITE  sip:a@b SIP/2.0\r\n\r\n", "request line"),
        (b"INVITE sip:a@b SIP/2.0\r\nNoColon\r\n\r\n", "without colon"),
        (b"SIP/2.0 099 Low\r\n\r\n", "out of range"),
        (b"INVITE sip:a@b SIP/2.0\r\n folded first\r\n\r\n", "continuation"),
        (b"INVITE sip:a@b SIP/2.0\r\nContent-Length: x\r\n\r\n", "Content-Length"),
        (b"INVITE sip:a@b SIP/2.0\r\nSubject: a\nInjected: b\r\n\r\n", "Bare CR or LF"),
        (b"INVITE sip:a@b SIP/2.0\r\nSubject: a\rb\r\n\r\n", "Bare CR or LF"),
        (b"INVITE sip:a@b SIP/2.0\nVia: x\n\n", "LF line endings; SIP uses CRLF"),
        (b"INVITE sip:a@b SIP/2.0\r\nBad Name: x\r\n\r\n", "Bad header name"),
    ],
)
def test_malformed_messages(raw: bytes, reason: str) -> None:
    with pytest.raises(SipParseError, match=reason):
        parse_message(raw)


def test_other_versions() -> None:
    # a request parses so the UAS can answer 505 (validate_request); a response is dropped
    req = parse_message(b"OPTIONS sip:a@b SIP/7.0\r\n\r\n")
    assert isinstance(req, SipRequest) and req.version == "SIP/7.0"
    with pytest.raises(SipParseError) as err:
        parse_message(b"SIP/3.0 200 OK\r\n\r\n")
    assert err.value.status == 505


def test_content_length_error_keeps_the_parsed_head() -> None:
    with pytest.raises(SipParseError) as err:
        parse_message(INVITE[:-5])
    assert isinstance(err.value.message, SipRequest)
    assert err.value.message.call_id == "3848276298220188511@atlanta.example.com"


def test_stream_errors_flag_broken_framing() -> None:
    sp = StreamParser()
    bad_start, no_cl = sp.feed(
        b"GARBAGE\r\nl: 0\r\n\r\n" + OK.replace(b"Content-Length: 0\r\n", b"")
    )
    assert isinstance(bad_start, SipParseError) and not bad_start.breaks_framing
    assert isinstance(no_cl, SipParseError) and no_cl.breaks_framing


def test_stream_parser_frames_split_and_joined_messages() -> None:
    sp = StreamParser()
    stream = b"\r\n\r\n" + INVITE + OK + b"\r\n"
    out: list[object] = []
    for i in range(0, len(stream), 7):
        out += sp.feed(stream[i : i + 7])
    assert out[0] == KeepAlive("ping")
    assert isinstance(out[1], SipRequest) and out[1].body == SDP
    assert isinstance(out[2], SipResponse) and out[2].status == 200
    assert out[3] == KeepAlive("pong")
    assert len(out) == 4


def test_stream_parser_reports_missing_content_length_and_continues() -> None:
    sp = StreamParser()
    no_cl = OK.replace(b"Content-Length: 0\r\n", b"")
    out = sp.feed(no_cl + OK)
    assert isinstance(out[0], SipParseError) and "Content-Length" in out[0].reason
    assert isinstance(out[1], SipResponse)


def test_stream_parser_bad_message_then_good() -> None:
    sp = StreamParser()
    out = sp.feed(b"GARBAGE\r\nContent-Length: 3\r\n\r\nabc" + OK)
    assert isinstance(out[0], SipParseError)
    assert isinstance(out[-1], SipResponse)


def test_stream_parser_oversized_header_block() -> None:
    sp = StreamParser(max_message=1000)
    out = sp.feed(b"INVITE sip:a@b SIP/2.0\r\nX: " + b"a" * 2000)
    assert isinstance(out[0], SipParseError) and out[0].status == 513


def test_make_response_copies_headers_and_adds_tag() -> None:
    req = parse_message(INVITE)
    assert isinstance(req, SipRequest)
    resp = make_response(req, 180, to_tag="t1")
    assert resp.serialize() == (
        b"SIP/2.0 180 Ringing\r\n"
        b"Via: SIP/2.0/UDP client.atlanta.example.com:5060;branch=z9hG4bK74bf9;rport\r\n"
        b'From: "Alice" <sip:alice@atlanta.example.com>;tag=9fxced76sl\r\n'
        b"To: Bob <sip:bob@biloxi.example.com>;tag=t1\r\n"
        b"Call-ID: 3848276298220188511@atlanta.example.com\r\n"
        b"CSeq: 1 INVITE\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    # an existing tag is kept
    tagged = parse_message(
        INVITE.replace(b"Bob <sip:bob@biloxi.example.com>", b"<sip:b@x>;tag=old")
    )
    assert isinstance(tagged, SipRequest)
    resp2 = make_response(tagged, 200, to_tag="new")
    assert resp2.to.tag == "old"


def test_make_request_serialises_with_content_length() -> None:
    req = make_request(
        "MESSAGE",
        "sip:bob@example.com",
        headers=[
            ("Via", "SIP/2.0/UDP h;branch=z9hG4bK1"),
            ("Call-ID", "c1"),
            ("CSeq", "2 MESSAGE"),
        ],
        body=b"hi",
    )
    assert req.serialize() == (
        b"MESSAGE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"
        b"Call-ID: c1\r\nCSeq: 2 MESSAGE\r\nContent-Length: 2\r\n\r\nhi"
    )
    assert parse_message(req.serialize()).body == b"hi"


def test_headers_mutation_invalidates_cached_views() -> None:
    msg = parse_message(OK)
    assert msg.top_via.branch == "z9hG4bK74bf9"
    msg.headers.insert(0, "Via", "SIP/2.0/UDP me.example.com;branch=z9hG4bKnew")
    assert msg.top_via.branch == "z9hG4bKnew"
    msg.headers.set("CSeq", "2 BYE")
    assert msg.cseq.method == "BYE"
    msg.headers.remove("v")
    assert "Via" not in msg.headers
    with pytest.raises(SipParseError, match="Missing Via"):
        _ = msg.vias


# --- describe (deskphone sip-check) --------------------------------------------------------


def test_describe_request() -> None:
    from firmware.sip.describe import describe

    assert describe("invite.sip", INVITE) == {
        "file": "invite.sip",
        "kind": "request",
        "method": "INVITE",
        "status": None,
        "request_uri": "sip:bob@biloxi.example.com",
        "call_id": "3848276298220188511@atlanta.example.com",
        "cseq": {"number": 1, "method": "INVITE"},
        "vias": [
            {
                "transport": "UDP",
                "sent_by": "client.atlanta.example.com:5060",
                "branch": "z9hG4bK74bf9",
            }
        ],
        "from": {"uri": "sip:alice@atlanta.example.com", "tag": "9fxced76sl"},
        "to": {"uri": "sip:bob@biloxi.example.com", "tag": None},
        "header_count": 10,
        "body_length": len(SDP),
    }


def test_describe_response() -> None:
    from firmware.sip.describe import describe

    out = describe("ok.sip", OK)
    assert (out["kind"], out["method"], out["status"], out["request_uri"]) == (
        "response",
        None,
        200,
        None,
    )
    assert out["to"] == {"uri": "sip:bob@biloxi.example.com", "tag": "8321234356"}


@pytest.mark.parametrize(
    "raw, error",
    [
        (INVITE[:-5], "Content-Length 136 larger than the 131 body bytes received"),
        (
            INVITE.replace(b"CSeq: 1 INVITE", b"CSeq: 1 BYE"),
            "CSeq method BYE does not match request method INVITE",
        ),
        (INVITE.replace(b"SIP/2.0\r\n", b"SIP/3.0\r\n", 1), "Version Not Supported"),
        (INVITE.replace(b"INVITE sip:", b"INVITE urn:", 1), "Unsupported URI Scheme"),
        (OK.replace(b"CSeq: 1 INVITE", b"CSeq: x INVITE"), "Bad CSeq sequence number 'x'"),
    ],
)
def test_describe_errors(raw: bytes, error: str) -> None:
    from firmware.sip.describe import describe

    assert describe("m.sip", raw) == {"file": "m.sip", "error": error}


def test_describe_does_not_reject_unknown_require() -> None:
    from firmware.sip.describe import describe

    raw = INVITE.replace(b"Max-Forwards: 70\r\n", b"Max-Forwards: 70\r\nRequire: foo\r\n")
    assert describe("m.sip", raw)["kind"] == "request"


def test_validate_accepts_tel_request_uri_and_rejects_unknown_scheme() -> None:
    from firmware.sip.validate import validate_request

    tel = INVITE.replace(b"INVITE sip:bob@biloxi.example.com", b"INVITE tel:+15551234", 1)
    req = parse_message(tel)
    assert isinstance(req, SipRequest) and req.uri.scheme == "tel"
    assert validate_request(req, set()) is None
    mailto = parse_message(tel.replace(b"tel:+15551234", b"mailto:bob@example.com", 1))
    assert isinstance(mailto, SipRequest)
    resp = validate_request(mailto, set())
    assert resp is not None and resp.status == 416


def test_sample_files_describe_as_documented() -> None:
    from pathlib import Path

    from firmware.sip.describe import describe

    samples = Path(__file__).resolve().parents[1] / "data" / "sip"
    invite = describe("invite.sip", (samples / "invite.sip").read_bytes())
    assert (invite["kind"], invite["method"], invite["body_length"]) == ("request", "INVITE", 264)
    ok = describe("200-ok.sip", (samples / "200-ok.sip").read_bytes())
    assert (ok["status"], ok["to"]["tag"]) == (200, "a6c85cf")
    bad = describe("bad.sip", (samples / "bad-cseq-method.sip").read_bytes())
    assert bad == {
        "file": "bad.sip",
        "error": "CSeq method BYE does not match request method INVITE",
    }


def test_stream_parser_does_not_stall_on_a_stray_cr() -> None:
    sp = StreamParser()
    assert sp.feed(b"\r") == []  # could be the start of a CRLF pong
    out = sp.feed(b"X\r\nl: 0\r\n\r\n" + OK)
    assert isinstance(out[0], SipParseError) and not out[0].breaks_framing
    assert isinstance(out[1], SipResponse)


def test_stream_parser_gives_up_on_a_huge_body_behind_a_bad_head() -> None:
    sp = StreamParser()
    (err,) = sp.feed(b"GARBAGE\r\nContent-Length: 999999999\r\n\r\nxyz")
    assert isinstance(err, SipParseError) and err.breaks_framing
    assert sp.feed(OK)[0].status == 200  # type: ignore[union-attr]


def test_make_response_copies_record_route_for_dialog_creating_responses() -> None:
    rr = b"Record-Route: <sip:p2.example.com;lr>\r\nRecord-Route: <sip:p1.example.com;lr>\r\n"
    req = parse_message(INVITE.replace(b"Max-Forwards: 70\r\n", b"Max-Forwards: 70\r\n" + rr))
    assert isinstance(req, SipRequest)
    ok = make_response(req, 200, to_tag="t")
    assert ok.headers.get_all("Record-Route") == [
        "<sip:p2.example.com;lr>",
        "<sip:p1.example.com;lr>",
    ]
    assert make_response(req, 180, to_tag="t").headers.get_all("Record-Route") != []
    assert make_response(req, 100).headers.get_all("Record-Route") == []
    assert make_response(req, 486, to_tag="t").headers.get_all("Record-Route") == []
    req.method = "OPTIONS"
    assert make_response(req, 200, to_tag="t").headers.get_all("Record-Route") == []


def test_error_reasons_quoting_peer_input_stay_short() -> None:
    from firmware.sip.headers import parse_name_addr

    with pytest.raises(SipParseError) as err:
        parse_name_addr('"' + "x" * 5000)
    assert len(err.value.reason) <= 160 and err.value.reason.endswith("...")
