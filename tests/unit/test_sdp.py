"""SDP (RFC 8866) parser and serialiser: real-phone bodies, exact round trips, named errors."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.sip.sdp import (
    Attribute,
    Bandwidth,
    Connection,
    Media,
    Origin,
    RtpMap,
    SdpError,
    SessionDescription,
    Timing,
    parse_sdp,
)


def crlf(*lines: str) -> str:
    return "\r\n".join(lines) + "\r\n"


# A baresip-style offer: b=AS, label, rtcp-rsize, ssrc and ptime after the direction.
BARESIP = crlf(
    "v=0",
    "o=- 1720432021 2466583413 IN IP4 192.168.1.20",
    "s=-",
    "c=IN IP4 192.168.1.20",
    "t=0 0",
    "m=audio 10000 RTP/AVP 0 8 9 101",
    "b=AS:88",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:8 PCMA/8000",
    "a=rtpmap:9 G722/8000",
    "a=rtpmap:101 telephone-event/8000",
    "a=fmtp:101 0-15",
    "a=sendrecv",
    "a=label:1",
    "a=ssrc:1263417391 cname:f6b3f3c2",
    "a=rtcp-rsize",
    "a=ptime:20",
)

# A linphone-style offer: session-level attributes, opus stereo rtpmap, a=rtcp with address.
LINPHONE = crlf(
    "v=0",
    "o=alice 3183 1734 IN IP4 10.0.0.7",
    "s=Talk",
    "c=IN IP4 10.0.0.7",
    "t=0 0",
    "a=ice-pwd:31ec21eb38b2ec6d36e8dc7b",
    "a=rtcp-xr:rcvr-rtt=all:10000 stat-summary=loss,dup,jitt,TTL voip-metrics",
    "m=audio 7078 RTP/AVP 96 97 98 0 8 18 101 99 100",
    "c=IN IP4 10.0.0.7",
    "a=rtpmap:96 opus/48000/2",
    "a=fmtp:96 useinbandfec=1",
    "a=rtpmap:97 speex/16000",
    "a=fmtp:97 vbr=on",
    "a=rtpmap:98 speex/8000",
    "a=fmtp:98 vbr=on",
    "a=fmtp:18 annexb=yes",
    "a=rtpmap:101 telephone-event/48000",
    "a=rtpmap:99 telephone-event/16000",
    "a=rtpmap:100 telephone-event/8000",
    "a=rtcp:7079 IN IP4 10.0.0.8",
    "a=rtcp-fb:* trr-int 1000",
    "a=rtcp-fb:* ccm tmmbr",
)

# An Asterisk-style SRTP answer: s=Asterisk, maxptime, one a=crypto, session c= only.
ASTERISK_SRTP = crlf(
    "v=0",
    "o=- 1699871023 1699871025 IN IP4 203.0.113.5",
    "s=Asterisk",
    "c=IN IP4 203.0.113.5",
    "t=0 0",
    "m=audio 17246 RTP/SAVP 0 101",
    "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:4",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:101 telephone-event/8000",
    "a=fmtp:101 0-16",
    "a=ptime:20",
    "a=maxptime:150",
    "a=recvonly",
)

# Everything RFC 8866 defines at session level, in its order, plus a second media section
# with a port count, a title, a key and a non-RTP transport.
FULL = crlf(
    "v=0",
    "o=jdoe 3724394400 3724394405 IN IP4 198.51.100.1",
    "s=Call to John Smith",
    "i=SDP Offer #1",
    "u=http://www.jdoe.example.com/home.html",
    "e=Jane Doe <jane@jdoe.example.com>",
    "p=+1 617 555-6011",
    "c=IN IP4 198.51.100.1",
    "b=CT:128",
    "t=2873397496 2873404696",
    "r=7d 1h 0 25h",
    "z=2882844526 -1h 2898848070 0",
    "k=prompt",
    "a=recvonly",
    "m=audio 49170 RTP/AVP 0",
    "m=video 51372/2 RTP/AVP 99",
    "i=main camera",
    "c=IN IP6 2001:db8::2",
    "b=AS:512",
    "k=prompt",
    "a=rtpmap:99 h263-1998/90000",
    "m=application 5000 UDP/BFCP *",
    "a=floorctrl:c-s",
)


@pytest.mark.parametrize("text", [BARESIP, LINPHONE, ASTERISK_SRTP, FULL])
def test_real_bodies_round_trip_byte_for_byte(text: str) -> None:
    assert parse_sdp(text).serialize() == text
    assert parse_sdp(text.encode()).to_bytes() == text.encode()


def test_baresip_offer_fields_and_accessors() -> None:
    sd = parse_sdp(BARESIP)
    assert sd.origin == Origin("-", "1720432021", 2466583413, "IN", "IP4", "192.168.1.20")
    assert sd.connection == Connection("192.168.1.20", "IP4", "IN")
    (m,) = sd.media
    assert (m.media, m.port, m.port_count, m.proto) == ("audio", 10000, None, "RTP/AVP")
    assert m.payload_types == [0, 8, 9, 101]
    assert m.bandwidths == [Bandwidth("AS", 88)]
    assert m.rtpmap(9) == RtpMap(9, "G722", 8000)
    assert m.rtpmap(101) == RtpMap(101, "telephone-event", 8000)
    assert m.fmtp(101) == "0-15"
    assert m.fmtp(0) is None
    assert m.ptime == 20
    assert m.maxptime is None
    assert m.direction == "sendrecv"
    assert m.rtcp is None
    assert m.crypto == []
    assert m.has_attr("rtcp-rsize") and m.get_attr("rtcp-rsize") is None
    assert m.get_attr("ssrc") == "1263417391 cname:f6b3f3c2"


def test_linphone_offer_session_attributes_and_rtcp_address() -> None:
    sd = parse_sdp(LINPHONE)
    assert sd.name == "Talk"
    assert sd.get_attr("ice-pwd") == "31ec21eb38b2ec6d36e8dc7b"
    m = sd.media[0]
    assert m.rtpmap(96) == RtpMap(96, "opus", 48000, 2)
    assert m.fmtp(96) == "useinbandfec=1"
    assert m.fmtp(18) == "annexb=yes"
    # PT 18 has no a=rtpmap: the RFC 3551 static table answers.
    assert m.rtpmap(18) == RtpMap(18, "G729", 8000)
    port, conn = m.rtcp  # type: ignore[misc]
    assert port == 7079 and conn is not None and conn.host == "10.0.0.8"
    assert m.get_attrs("rtcp-fb") == ["* trr-int 1000", "* ccm tmmbr"]
    assert sd.media_connection(m) == m.connections[0]
    assert sd.media_direction(m) == "sendrecv"  # nothing written anywhere: the default


def test_asterisk_srtp_crypto_and_direction() -> None:
    sd = parse_sdp(ASTERISK_SRTP)
    m = sd.media[0]
    assert m.proto == "RTP/SAVP"
    assert m.crypto == [
        "1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:4"
    ]
    assert (m.ptime, m.maxptime) == (20, 150)
    assert m.direction == "recvonly"
    assert sd.media_connection(m) == sd.connection


def test_full_session_level_lines() -> None:
    sd = parse_sdp(FULL)
    assert sd.info == "SDP Offer #1"
    assert sd.uri == "http://www.jdoe.example.com/home.html"
    assert sd.emails == ["Jane Doe <jane@jdoe.example.com>"]
    assert sd.phones == ["+1 617 555-6011"]
    assert sd.bandwidths == [Bandwidth("CT", 128)]
    assert sd.timings == [Timing(2873397496, 2873404696, ["7d 1h 0 25h"])]
    assert sd.zone == "2882844526 -1h 2898848070 0"
    assert sd.key == "prompt"
    audio, video, app = sd.media
    # Session-level direction applies to a media section without its own.
    assert sd.media_direction(audio) == "recvonly"
    assert (video.port, video.port_count, video.title, video.key) == (
        51372,
        2,
        "main camera",
        "prompt",
    )
    assert video.connections == [Connection("2001:db8::2", "IP6")]
    assert app.fmts == ["*"] and not app.is_rtp
    with pytest.raises(ValueError, match="UDP/BFCP"):
        _ = app.payload_types


def test_lf_line_ends_trailing_whitespace_and_blank_lines_are_tolerated() -> None:
    sloppy = BARESIP.replace("\r\n", "  \n").replace("t=0 0  \n", "t=0 0\t\n\n")
    assert parse_sdp(sloppy).serialize() == BARESIP


def test_session_lines_out_of_order_are_accepted_and_written_in_rfc_order() -> None:
    text = crlf("v=0", "s=-", "t=0 0", "c=IN IP4 192.0.2.1", "o=- 1 1 IN IP4 192.0.2.1")
    assert parse_sdp(text).serialize() == crlf(
        "v=0", "o=- 1 1 IN IP4 192.0.2.1", "s=-", "c=IN IP4 192.0.2.1", "t=0 0"
    )


def test_missing_t_line_defaults_to_permanent_session() -> None:
    sd = parse_sdp(crlf("v=0", "o=- 1 1 IN IP4 192.0.2.1", "s=-", "m=audio 4000 RTP/AVP 0"))
    assert "t=0 0\r\n" in sd.serialize()


def test_unknown_attributes_keep_their_order_after_edits() -> None:
    sd = parse_sdp(BARESIP)
    m = sd.media[0]
    m.set_direction("sendonly")
    out = sd.serialize()
    assert out.index("a=label:1") < out.index("a=ssrc:") < out.index("a=rtcp-rsize")
    assert out.index("a=ptime:20") < out.index("a=sendonly")
    assert "a=sendrecv" not in out
    m.set_direction(None)
    assert m.direction is None and "a=sendonly" not in sd.serialize()
    with pytest.raises(ValueError):
        m.set_direction("hold")


def test_malformed_rtpmap_and_ptime_are_skipped_not_fatal() -> None:
    sd = parse_sdp(
        crlf(
            "v=0",
            "o=- 1 1 IN IP4 192.0.2.1",
            "s=-",
            "c=IN IP4 192.0.2.1",
            "t=0 0",
            "m=audio 4000 RTP/AVP 96 0",
            "a=rtpmap:96 opus",
            "a=ptime:twenty",
            "a=rtcp:abc",
        )
    )
    m = sd.media[0]
    assert m.rtpmaps() == {}
    assert m.rtpmap(96) is None
    assert m.rtpmap(0) == RtpMap(0, "PCMU", 8000)
    assert m.ptime is None and m.rtcp is None


BASE = ["v=0", "o=- 1 1 IN IP4 192.0.2.1", "s=-", "c=IN IP4 192.0.2.1", "t=0 0"]


@pytest.mark.parametrize(
    ("lines", "line_no", "needle"),
    [
        (["o=- 1 1 IN IP4 192.0.2.1", "v=0"], 1, "must start with v="),
        (["v=1", "o=- 1 1 IN IP4 192.0.2.1"], 1, "version 0"),
        (["v=0", "o=- 1 IN IP4 192.0.2.1"], 2, "o= needs 6 fields"),
        (["v=0", "o=- x1 1 IN IP4 192.0.2.1"], 2, "session id"),
        (["v=0", "o=- 1 -1 IN IP4 192.0.2.1"], 2, "session version"),
        ([*BASE, "m=audio abc RTP/AVP 0"], 6, "port 'abc'"),
        ([*BASE, "m=audio 70000 RTP/AVP 0"], 6, "port 70000 out of range"),
        ([*BASE, "m=audio 4000/0 RTP/AVP 0"], 6, "port count 0"),
        ([*BASE, "m=audio 4000 RTP/AVP"], 6, "no payload type"),
        ([*BASE, "m=audio 4000 RTP/AVP 0 200"], 6, "payload type 200"),
        ([*BASE, "m=audio 4000"], 6, "m= needs"),
        ([*BASE, "m=audio 4000 RTP/AVP 0", "t=0 0"], 7, "not allowed inside a media section"),
        ([*BASE, "m=audio 4000 RTP/AVP 0", "c=IN IP4"], 7, "c= needs"),
        ([*BASE, "b=AS"], 6, "b= needs"),
        ([*BASE, "b=AS:lots"], 6, "bandwidth"),
        ([*BASE, "x=unknown"], 6, "unknown line type x="),
        ([*BASE, "this is not sdp"], 6, "not a '<type>=<value>' line"),
        ([*BASE, "a="], 6, "attribute name"),
        ([*BASE, "s=again"], 6, "s= appears twice"),
        ([*BASE, "c=IN IP4 192.0.2.9"], 6, "c= appears twice"),
        ([*BASE, "v=0"], 6, "v= appears twice"),
        (["v=0", "s=-", "r=1d 1h 0", "o=- 1 1 IN IP4 192.0.2.1"], 3, "r= before any t="),
        (["v=0", "o=- 1 1 IN IP4 192.0.2.1", "t=0"], 3, "t= needs"),
    ],
)
def test_errors_name_the_line(lines: list[str], line_no: int, needle: str) -> None:
    with pytest.raises(SdpError) as info:
        parse_sdp("\r\n".join(lines) + "\r\n")
    err = info.value
    assert isinstance(err, ValueError)
    assert err.line_no == line_no
    assert err.line == lines[line_no - 1]
    assert needle in str(err)
    assert str(err).startswith(f"SDP line {line_no} (")


def test_whole_body_errors() -> None:
    with pytest.raises(SdpError, match="empty session description"):
        parse_sdp("\r\n \r\n")
    with pytest.raises(SdpError, match="missing o= line"):
        parse_sdp("v=0\r\ns=-\r\nt=0 0\r\n")
    with pytest.raises(SdpError, match="not UTF-8"):
        parse_sdp(b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=\xff\r\n")


def test_built_description_serialises_with_crlf_in_rfc_order() -> None:
    m = Media("audio", 4000, "RTP/AVP", ["0", "101"])
    m.add_attr("rtpmap", "0 PCMU/8000")
    m.add_attr("rtpmap", "101 telephone-event/8000")
    m.add_attr("fmtp", "101 0-16")
    m.set_direction("inactive")
    sd = SessionDescription(
        origin=Origin("-", "42", 7, "IN", "IP6", "2001:db8::1"),
        connection=Connection("2001:db8::1", "IP6"),
        media=[m],
    )
    assert sd.to_bytes() == (
        b"v=0\r\no=- 42 7 IN IP6 2001:db8::1\r\ns=-\r\nc=IN IP6 2001:db8::1\r\nt=0 0\r\n"
        b"m=audio 4000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
        b"a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=inactive\r\n"
    )
    assert str(sd) == sd.serialize()
    assert SessionDescription.parse(sd.to_bytes()) == sd


def test_hold_connection_address() -> None:
    assert Connection("0.0.0.0").is_hold
    assert Connection("::", "IP6").is_hold
    assert not Connection("192.0.2.1").is_hold
    assert Connection("224.2.1.1/127/3").host == "224.2.1.1"


# ------------------------------------------------------------------ round-trip property

_token = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._+",
    min_size=1,
    max_size=12,
)
# Free text may hold spaces and colons but never a line break or trailing whitespace.
_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\r\n"),
    max_size=20,
).map(lambda s: s.rstrip(" "))
_conn = st.builds(
    Connection,
    st.one_of(st.ip_addresses(v=4).map(str), st.just("host.example.com")),
    st.just("IP4"),
    st.just("IN"),
)
_attr = st.builds(Attribute, _token, st.one_of(st.none(), _text))
_rtp_media = st.builds(
    Media,
    media=st.sampled_from(["audio", "video"]),
    port=st.integers(0, 65535),
    proto=st.sampled_from(["RTP/AVP", "RTP/SAVP", "RTP/AVPF"]),
    fmts=st.lists(st.integers(0, 127).map(str), min_size=1, max_size=6),
    port_count=st.one_of(st.none(), st.integers(1, 4)),
    title=st.one_of(st.none(), _text),
    connections=st.lists(_conn, max_size=2),
    bandwidths=st.lists(
        st.builds(Bandwidth, st.sampled_from(["AS", "TIAS", "CT"]), st.integers(0, 10**6)),
        max_size=2,
    ),
    key=st.one_of(st.none(), st.just("prompt")),
    attributes=st.lists(_attr, max_size=6),
)
_sd = st.builds(
    SessionDescription,
    origin=st.builds(
        Origin,
        _token,
        st.integers(0, 2**63).map(str),
        st.integers(0, 2**63),
        st.just("IN"),
        st.just("IP4"),
        st.ip_addresses(v=4).map(str),
    ),
    name=_text,
    info=st.one_of(st.none(), _text),
    uri=st.one_of(st.none(), st.just("http://example.com/x")),
    emails=st.lists(_text.filter(bool), max_size=2),
    phones=st.lists(_text.filter(bool), max_size=2),
    connection=st.one_of(st.none(), _conn),
    bandwidths=st.lists(st.builds(Bandwidth, st.just("AS"), st.integers(0, 9999)), max_size=1),
    timings=st.lists(
        st.builds(
            Timing,
            st.integers(0, 2**40),
            st.integers(0, 2**40),
            st.lists(st.just("7d 1h 0 25h"), max_size=1),
        ),
        min_size=1,
        max_size=2,
    ),
    zone=st.one_of(st.none(), st.just("2882844526 -1h")),
    key=st.one_of(st.none(), st.just("prompt")),
    attributes=st.lists(_attr, max_size=4),
    media=st.lists(_rtp_media, max_size=3),
)


@settings(max_examples=100, deadline=None)
@given(_sd)
def test_round_trip_property(sd: SessionDescription) -> None:
    text = sd.serialize()
    assert text.endswith("\r\n") and "\n" not in text.replace("\r\n", "")
    parsed = parse_sdp(text)
    assert parsed == sd
    assert parsed.serialize() == text


@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_sdp_error(data: bytes) -> None:
    try:
        parse_sdp(b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\n" + data)
    except SdpError:
        pass
