"""RFC 3264 offer/answer: each rule asserted on the SDP text we would put on the wire."""

from __future__ import annotations

from typing import Any

import pytest

from firmware.sip.offer_answer import (
    CodecSpec,
    LocalMediaCaps,
    NegotiatedCrypto,
    OfferAnswerError,
    SdpVersion,
    build_answer,
    build_offer,
    format_events,
    parse_events,
    process_answer,
    remote_sdp_changed,
)
from firmware.sip.sdp import SessionDescription, parse_sdp

PCMU = CodecSpec("PCMU", 8000, 0)
PCMA = CodecSpec("PCMA", 8000, 8)
G722 = CodecSpec("G722", 8000, 9)
OPUS = CodecSpec("opus", 48000, 107, channels=2, fmtp="useinbandfec=1")
TE = CodecSpec("telephone-event", 8000, 101, fmtp="0-16")

KEY_80 = "inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR"
KEY_32 = "inline:MTIzNDU2Nzg5QUJDREUwMTIzNDU2Nzg5QUJjZGVm"
PEER_KEY = "inline:d0RmdmcmVCspeEc3QGZiNWpVLFJhQX1cfHAwJSoj"


def crlf(*lines: str) -> str:
    return "\r\n".join(lines) + "\r\n"


def caps(**changes: object) -> LocalMediaCaps:
    base: dict[str, object] = {
        "address": "192.0.2.10",
        "port": 40000,
        "codecs": [G722, PCMU, PCMA],
    }
    base.update(changes)
    return LocalMediaCaps(**base)  # type: ignore[arg-type]


def answer_text(offer: str, local: LocalMediaCaps | None = None) -> tuple[str, Any]:
    sd, neg = build_answer(parse_sdp(offer), local or caps(), session_version=1, session_id=99)
    return sd.serialize(), neg


def media_block(text: str, index: int = 0) -> str:
    """The lines of the index-th m= section, joined with CRLF."""
    blocks = text.split("m=")[1:]
    return "m=" + blocks[index]


def offer_from(
    media: list[str], *, conn: str = "198.51.100.7", session: tuple[str, ...] = ()
) -> str:
    return crlf(
        "v=0",
        "o=peer 2890844526 2890844526 IN IP4 198.51.100.7",
        "s=-",
        f"c=IN IP4 {conn}",
        "t=0 0",
        *session,
        *media,
    )


# ------------------------------------------------------------------ building offers


def test_initial_offer_lists_codecs_in_preference_order_with_dtmf_ptime_and_direction() -> None:
    sd = build_offer(caps(), 5, session_id=3141592653)
    assert sd.serialize() == crlf(
        "v=0",
        "o=- 3141592653 5 IN IP4 192.0.2.10",
        "s=-",
        "c=IN IP4 192.0.2.10",
        "t=0 0",
        "m=audio 40000 RTP/AVP 9 0 8 101",
        "a=rtpmap:9 G722/8000",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-16",
        "a=ptime:20",
        "a=sendrecv",
    )


def test_offer_ipv6_opus_fmtp_and_nonstandard_rtcp_port() -> None:
    sd = build_offer(
        caps(address="2001:db8::5", codecs=[OPUS, PCMU], rtcp_port=40010, ptime=None),
        1,
        session_id=1,
    )
    text = sd.serialize()
    assert "o=- 1 1 IN IP6 2001:db8::5\r\n" in text
    assert "c=IN IP6 2001:db8::5\r\n" in text
    assert "m=audio 40000 RTP/AVP 107 0 101\r\n" in text
    assert "a=rtpmap:107 opus/48000/2\r\na=fmtp:107 useinbandfec=1\r\n" in text
    assert "a=rtcp:40010\r\n" in text
    assert "a=ptime" not in text
    # The default port+1 needs no a=rtcp.
    assert "a=rtcp" not in build_offer(caps(rtcp_port=40001), 1, session_id=1).serialize()


def test_offer_srtp_policies() -> None:
    lines = [f"1 AES_CM_128_HMAC_SHA1_80 {KEY_80}", f"2 AES_CM_128_HMAC_SHA1_32 {KEY_32}"]
    off = build_offer(caps(srtp="off", crypto=lines), 1, session_id=1).serialize()
    assert "RTP/AVP" in off and "a=crypto" not in off  # THREATS T20: no keys over plain signalling
    opt = build_offer(caps(srtp="optional", crypto=lines), 1, session_id=1).serialize()
    assert "m=audio 40000 RTP/AVP " in opt
    assert (
        f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 {KEY_80}\r\na=crypto:2 AES_CM_128_HMAC_SHA1_32 {KEY_32}\r\n"
        in opt
    )
    mand = build_offer(caps(srtp="mandatory", crypto=lines), 1, session_id=1).serialize()
    assert "m=audio 40000 RTP/SAVP 9 0 8 101\r\n" in mand and "a=crypto:1 " in mand
    with pytest.raises(ValueError, match="a=crypto"):
        build_offer(caps(srtp="mandatory"), 1, session_id=1)


def test_offer_rejects_colliding_payload_types_and_empty_codec_list() -> None:
    with pytest.raises(ValueError, match="collide"):
        build_offer(caps(codecs=[PCMU, CodecSpec("iLBC", 8000, 101)]), 1, session_id=1)
    with pytest.raises(ValueError, match="without a codec"):
        build_offer(caps(codecs=[]), 1, session_id=1)


def test_hold_offer_is_sendonly_with_a_real_address() -> None:
    text = build_offer(caps(direction="sendonly"), 2, session_id=1).serialize()
    assert "a=sendonly\r\n" in text and "c=IN IP4 192.0.2.10\r\n" in text


# ------------------------------------------------------------------ RFC 3264 section 10.1

RFC3264_10_1_OFFER = crlf(
    "v=0",
    "o=alice 2890844526 2890844526 IN IP4 host.anywhere.com",
    "s=",
    "c=IN IP4 host.anywhere.com",
    "t=0 0",
    "m=audio 49170 RTP/AVP 0",
    "a=rtpmap:0 PCMU/8000",
    "m=video 51372 RTP/AVP 31",
    "a=rtpmap:31 H261/90000",
    "m=video 53000 RTP/AVP 32",
    "a=rtpmap:32 MPV/90000",
)


def test_rfc3264_10_1_audio_accepted_every_video_refused_with_port_zero() -> None:
    bob = caps(address="host.example.com", port=49920, codecs=[PCMU])
    text, neg = answer_text(RFC3264_10_1_OFFER, bob)
    assert text == crlf(
        "v=0",
        "o=- 99 1 IN IP4 host.example.com",
        "s=-",
        "c=IN IP4 host.example.com",
        "t=0 0",
        "m=audio 49920 RTP/AVP 0",
        "a=rtpmap:0 PCMU/8000",
        "a=ptime:20",
        "a=sendrecv",
        "m=video 0 RTP/AVP 31",
        "m=video 0 RTP/AVP 32",
    )
    assert neg is not None
    assert (neg.remote_address, neg.remote_port, neg.send_pt) == ("host.anywhere.com", 49170, 0)
    assert neg.telephone_event_pt is None


def test_rfc3264_10_1_reoffer_moves_port_and_adds_a_second_audio_stream() -> None:
    """Bob's re-offer changes his audio port and adds a recvonly event stream.

    The RFC's Alice accepts the second stream; this phone has one audio path, so it keeps
    the first audio stream, follows the port change and refuses the extra one with port 0.
    """
    reoffer = crlf(
        "v=0",
        "o=bob 2890844730 2890844731 IN IP4 host.example.com",
        "s=",
        "c=IN IP4 host.example.com",
        "t=0 0",
        "m=audio 65422 RTP/AVP 0",
        "a=rtpmap:0 PCMU/8000",
        "m=video 0 RTP/AVP 31",
        "m=video 53000 RTP/AVP 32",
        "a=rtpmap:32 MPV/90000",
        "m=audio 51434 RTP/AVP 110",
        "a=rtpmap:110 telephone-events/8000",
        "a=recvonly",
    )
    alice = caps(address="host.anywhere.com", port=49170, codecs=[PCMU])
    text, neg = answer_text(reoffer, alice)
    assert [line for line in text.split("\r\n") if line.startswith("m=")] == [
        "m=audio 49170 RTP/AVP 0",
        "m=video 0 RTP/AVP 31",
        "m=video 0 RTP/AVP 32",
        "m=audio 0 RTP/AVP 110",
    ]
    assert neg.remote_port == 65422 and neg.media_index == 0


# ------------------------------------------------------------------ codec selection

PEER_OFFER = offer_from(
    [
        "m=audio 20000 RTP/AVP 0 8 9 101",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:9 G722/8000",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-15",
        "a=ptime:20",
    ]
)


def test_answer_uses_our_preference_order_not_the_offers() -> None:
    text, neg = answer_text(PEER_OFFER, caps(codecs=[PCMA, G722]))
    assert "m=audio 40000 RTP/AVP 8 9 101\r\n" in text
    assert (
        "a=rtpmap:8 PCMA/8000\r\na=rtpmap:9 G722/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
        in text
    )
    assert neg.send_pt == 8 and neg.send_codec.name == "PCMA"
    assert sorted(neg.recv_codecs) == [8, 9]
    assert "PCMU" not in text


def test_answer_uses_the_offerers_dynamic_payload_type_numbers() -> None:
    offer = offer_from(
        [
            "m=audio 20000 RTP/AVP 111 0 96",
            "a=rtpmap:111 opus/48000/2",
            "a=fmtp:111 minptime=10;useinbandfec=1",
            "a=rtpmap:96 telephone-event/8000",
            "a=fmtp:96 0-16",
        ]
    )
    text, neg = answer_text(offer, caps(codecs=[OPUS, PCMU]))
    block = media_block(text)
    assert block.startswith("m=audio 40000 RTP/AVP 111 0 96\r\n")
    assert "a=rtpmap:111 opus/48000/2\r\na=fmtp:111 useinbandfec=1\r\n" in block
    assert "a=rtpmap:96 telephone-event/8000\r\na=fmtp:96 0-16\r\n" in block
    assert ":107" not in block and ":101" not in block  # our own numbers never leak
    assert neg.send_pt == 111 and neg.telephone_event_pt == 96
    assert neg.recv_codecs[111].name == "opus"


def test_static_payload_types_without_rtpmap_are_understood() -> None:
    offer = offer_from(["m=audio 20000 RTP/AVP 18 8 0"])
    text, neg = answer_text(offer, caps(codecs=[PCMU, PCMA]))
    assert "m=audio 40000 RTP/AVP 0 8\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n" in text
    assert neg.send_pt == 0


def test_same_name_different_clock_rate_is_a_different_codec() -> None:
    offer = offer_from(["m=audio 20000 RTP/AVP 97", "a=rtpmap:97 G722/16000"])
    text, neg = answer_text(offer)
    assert neg is None
    assert "m=audio 0 RTP/AVP 97\r\n" in text


def test_no_common_codec_refuses_the_stream_with_port_zero() -> None:
    offer = offer_from(["m=audio 20000 RTP/AVP 18 4", "a=rtpmap:18 G729/8000"])
    text, neg = answer_text(offer)
    assert neg is None
    assert media_block(text) == "m=audio 0 RTP/AVP 18 4\r\n"


# ------------------------------------------------------------------ telephone-event


def test_telephone_event_only_if_offered() -> None:
    offer = offer_from(["m=audio 20000 RTP/AVP 0", "a=rtpmap:0 PCMU/8000"])
    text, neg = answer_text(offer)
    assert "telephone-event" not in text and "m=audio 40000 RTP/AVP 0\r\n" in text
    assert neg.telephone_event_pt is None and neg.telephone_events == frozenset()


def test_telephone_event_events_are_the_intersection() -> None:
    offer = offer_from(
        [
            "m=audio 20000 RTP/AVP 0 100",
            "a=rtpmap:100 telephone-event/8000",
            "a=fmtp:100 0-11,16,32-40",
        ]
    )
    text, neg = answer_text(
        offer, caps(telephone_event=CodecSpec("telephone-event", 8000, 101, fmtp="0-15"))
    )
    assert "a=fmtp:100 0-11\r\n" in text
    assert neg.telephone_events == frozenset(range(12))


def test_telephone_event_without_fmtp_means_0_to_15() -> None:
    offer = offer_from(["m=audio 20000 RTP/AVP 0 101", "a=rtpmap:101 telephone-event/8000"])
    text, neg = answer_text(offer)
    assert "a=fmtp:101 0-15\r\n" in text
    assert neg.telephone_events == frozenset(range(16))


def test_telephone_event_at_the_audio_codecs_clock_rate_is_preferred() -> None:
    offer = offer_from(
        [
            "m=audio 20000 RTP/AVP 96 100 101",
            "a=rtpmap:96 opus/48000/2",
            "a=rtpmap:100 telephone-event/8000",
            "a=rtpmap:101 telephone-event/48000",
        ]
    )
    text, neg = answer_text(offer, caps(codecs=[OPUS]))
    assert "m=audio 40000 RTP/AVP 96 101\r\n" in text
    assert "a=rtpmap:101 telephone-event/48000\r\n" in text
    assert neg.telephone_event_pt == 101


def test_we_do_not_answer_telephone_event_when_we_have_none() -> None:
    text, neg = answer_text(PEER_OFFER, caps(telephone_event=None))
    assert "telephone-event" not in text and neg.telephone_event_pt is None


def test_event_list_helpers() -> None:
    assert parse_events("0-15,66, 70-72") == frozenset([*range(16), 66, 70, 71, 72])
    assert parse_events(None) == frozenset(range(16))
    assert parse_events("x,3,9-2") == frozenset([3])
    assert format_events(frozenset([*range(16), 66, 70, 71, 72])) == "0-15,66,70-72"
    assert format_events(set()) == ""


# ------------------------------------------------------------------ ptime, rtcp


def test_negotiated_ptime_follows_the_peer_limited_by_its_maxptime() -> None:
    offer = offer_from(["m=audio 20000 RTP/AVP 0", "a=ptime:40", "a=maxptime:30"])
    text, neg = answer_text(offer)
    assert "a=ptime:20\r\n" in text  # what we want to receive
    assert neg.ptime == 30
    _, neg = answer_text(offer_from(["m=audio 20000 RTP/AVP 0"]))
    assert neg.ptime == 20


def test_rtcp_port_defaults_to_rtp_plus_one_or_follows_a_rtcp() -> None:
    _, neg = answer_text(PEER_OFFER)
    assert (neg.remote_rtcp_address, neg.remote_rtcp_port) == ("198.51.100.7", 20001)
    offer = offer_from(["m=audio 20000 RTP/AVP 0", "a=rtcp:20011 IN IP4 198.51.100.9"])
    _, neg = answer_text(offer)
    assert (neg.remote_rtcp_address, neg.remote_rtcp_port) == ("198.51.100.9", 20011)


def test_media_level_connection_overrides_session_level() -> None:
    offer = offer_from(["m=audio 20000 RTP/AVP 0", "c=IN IP4 203.0.113.44"])
    _, neg = answer_text(offer)
    assert neg.remote_address == "203.0.113.44"


def test_offer_without_any_connection_line_is_an_error() -> None:
    offer = crlf("v=0", "o=- 1 1 IN IP4 198.51.100.7", "s=-", "t=0 0", "m=audio 20000 RTP/AVP 0")
    with pytest.raises(OfferAnswerError, match="no c= line"):
        answer_text(offer)


# ------------------------------------------------------------------ direction rules


@pytest.mark.parametrize(
    ("offered", "ours", "answered", "sending", "receiving"),
    [
        ("sendrecv", "sendrecv", "sendrecv", True, True),
        ("sendonly", "sendrecv", "recvonly", False, True),  # being held: not inactive
        ("recvonly", "sendrecv", "sendonly", True, False),
        ("inactive", "sendrecv", "inactive", False, False),
        ("sendrecv", "sendonly", "sendonly", True, False),  # we hold
        ("sendrecv", "inactive", "inactive", False, False),
        ("sendonly", "sendonly", "inactive", False, False),  # both hold
        ("recvonly", "recvonly", "inactive", False, False),
        ("sendonly", "recvonly", "recvonly", False, True),
        (None, "sendrecv", "sendrecv", True, True),  # no attribute means sendrecv
    ],
)
def test_answer_direction(
    offered: str | None, ours: str, answered: str, sending: bool, receiving: bool
) -> None:
    lines = ["m=audio 20000 RTP/AVP 0"] + ([f"a={offered}"] if offered else [])
    text, neg = answer_text(offer_from(lines), caps(direction=ours))
    assert f"a={answered}\r\n" in media_block(text)
    assert neg.direction == answered
    assert (neg.sending, neg.receiving) == (sending, receiving)


def test_session_level_direction_applies_to_media_without_its_own() -> None:
    text, neg = answer_text(offer_from(["m=audio 20000 RTP/AVP 0"], session=("a=sendonly",)))
    assert "a=recvonly\r\n" in text and neg.direction == "recvonly"


def test_connection_0_0_0_0_is_hold_we_send_neither_rtp_nor_rtcp() -> None:
    text, neg = answer_text(offer_from(["m=audio 20000 RTP/AVP 0"], conn="0.0.0.0"))
    assert "a=recvonly\r\n" in text
    assert "c=IN IP4 192.0.2.10\r\n" in text  # our own address stays real
    assert not neg.sending and neg.receiving and not neg.send_rtcp
    assert neg.remote_hold_address
    text, neg = answer_text(offer_from(["m=audio 20000 RTP/AVP 0", "a=recvonly"], conn="0.0.0.0"))
    assert "a=inactive\r\n" in text and neg.direction == "inactive"


# ------------------------------------------------------------------ m-line handling


def test_multiple_m_lines_accept_first_audio_reject_video_and_non_rtp() -> None:
    offer = offer_from(
        [
            "m=video 30000 RTP/AVP 96",
            "a=rtpmap:96 H264/90000",
            "m=audio 20000 RTP/AVP 0",
            "m=application 9 UDP/BFCP *",
            "m=audio 20002 RTP/AVP 0",
            "m=audio 20004 TCP/MSRP *",
        ]
    )
    text, neg = answer_text(offer)
    assert [line for line in text.split("\r\n") if line.startswith("m=")] == [
        "m=video 0 RTP/AVP 96",
        "m=audio 40000 RTP/AVP 0",
        "m=application 0 UDP/BFCP *",
        "m=audio 0 RTP/AVP 0",
        "m=audio 0 TCP/MSRP *",
    ]
    assert neg.media_index == 1


def test_stream_the_offerer_disabled_stays_disabled() -> None:
    offer = offer_from(["m=audio 0 RTP/AVP 0", "m=audio 20000 RTP/AVP 8"])
    text, neg = answer_text(offer)
    assert "m=audio 0 RTP/AVP 0\r\n" in text and "m=audio 40000 RTP/AVP 8\r\n" in text
    assert neg.media_index == 1


def test_offer_with_no_media_gets_an_answer_with_none() -> None:
    text, neg = answer_text(offer_from([]))
    assert neg is None and "m=" not in text


# ------------------------------------------------------------------ SRTP (RFC 4568)

SAVP_OFFER = offer_from(
    [
        "m=audio 20000 RTP/SAVP 0 101",
        "a=rtpmap:101 telephone-event/8000",
        f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 {PEER_KEY}",
        f"a=crypto:2 AES_CM_128_HMAC_SHA1_32 {PEER_KEY}",
    ]
)


def test_savp_refused_when_srtp_is_not_allowed() -> None:
    text, neg = answer_text(
        SAVP_OFFER, caps(srtp="off", crypto=[f"1 AES_CM_128_HMAC_SHA1_80 {KEY_80}"])
    )
    assert neg is None and media_block(text) == "m=audio 0 RTP/SAVP 0 101\r\n"


def test_savp_answer_echoes_one_offered_tag_with_our_key() -> None:
    local = caps(srtp="optional", crypto=[f"7 AES_CM_128_HMAC_SHA1_32 {KEY_32}"])
    text, neg = answer_text(SAVP_OFFER, local)
    block = media_block(text)
    assert block.startswith("m=audio 40000 RTP/SAVP 0 101\r\n")
    assert block.count("a=crypto:") == 1
    assert f"a=crypto:2 AES_CM_128_HMAC_SHA1_32 {KEY_32}\r\n" in block
    assert neg.crypto == NegotiatedCrypto(
        2,
        "AES_CM_128_HMAC_SHA1_32",
        f"2 AES_CM_128_HMAC_SHA1_32 {PEER_KEY}",
        f"2 AES_CM_128_HMAC_SHA1_32 {KEY_32}",
    )


def test_savp_first_acceptable_offered_suite_wins() -> None:
    local = caps(
        srtp="mandatory",
        crypto=[f"1 AES_CM_128_HMAC_SHA1_32 {KEY_32}", f"2 AES_CM_128_HMAC_SHA1_80 {KEY_80}"],
    )
    text, neg = answer_text(SAVP_OFFER, local)
    assert f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 {KEY_80}\r\n" in text
    assert neg.crypto.suite == "AES_CM_128_HMAC_SHA1_80"


def test_savp_without_matching_suite_is_refused() -> None:
    local = caps(srtp="optional", crypto=[f"1 AEAD_AES_256_GCM {KEY_80}"])
    text, neg = answer_text(SAVP_OFFER, local)
    assert neg is None and "m=audio 0 RTP/SAVP" in text and "a=crypto" not in text


def test_crypto_that_switches_protection_off_is_refused() -> None:
    offer = offer_from(
        [
            "m=audio 20000 RTP/SAVP 0",
            f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 {PEER_KEY} UNENCRYPTED_SRTP",
            f"a=crypto:2 AES_CM_128_HMAC_SHA1_80 {PEER_KEY} UNAUTHENTICATED_SRTP",
        ]
    )
    text, neg = answer_text(
        offer, caps(srtp="optional", crypto=[f"1 AES_CM_128_HMAC_SHA1_80 {KEY_80}"])
    )
    assert neg is None and "m=audio 0 RTP/SAVP 0\r\n" in text


def test_crypto_session_params_of_ours_are_kept() -> None:
    local = caps(srtp="optional", crypto=[f"1 AES_CM_128_HMAC_SHA1_80 {KEY_80}|2^31 KDR=0"])
    text, _ = answer_text(SAVP_OFFER, local)
    assert f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 {KEY_80}|2^31 KDR=0\r\n" in text


def test_best_effort_crypto_on_rtp_avp() -> None:
    offer = offer_from(
        ["m=audio 20000 RTP/AVP 0", f"a=crypto:3 AES_CM_128_HMAC_SHA1_80 {PEER_KEY}"]
    )
    mine = [f"1 AES_CM_128_HMAC_SHA1_80 {KEY_80}"]
    text, neg = answer_text(offer, caps(srtp="optional", crypto=mine))
    assert (
        "m=audio 40000 RTP/AVP 0\r\n" in text
        and f"a=crypto:3 AES_CM_128_HMAC_SHA1_80 {KEY_80}" in text
    )
    assert neg.crypto.tag == 3
    # With SRTP off the keys are ignored and the call is plain RTP.
    text, neg = answer_text(offer, caps(srtp="off", crypto=mine))
    assert "a=crypto" not in text and neg.crypto is None


def test_mandatory_srtp_refuses_plain_rtp() -> None:
    text, neg = answer_text(
        PEER_OFFER, caps(srtp="mandatory", crypto=[f"1 AES_CM_128_HMAC_SHA1_80 {KEY_80}"])
    )
    assert neg is None and "m=audio 0 RTP/AVP 0 8 9 101\r\n" in text


# ------------------------------------------------------------------ offerer side


def our_offer(**changes: object) -> SessionDescription:
    return parse_sdp(build_offer(caps(**changes), 1, session_id=1).serialize())


def peer_answer(media: list[str], conn: str = "198.51.100.7") -> SessionDescription:
    return parse_sdp(offer_from(media, conn=conn))


def test_process_answer_uses_the_answers_order() -> None:
    neg = process_answer(
        our_offer(),
        peer_answer(
            [
                "m=audio 30000 RTP/AVP 8 0 101",
                "a=rtpmap:8 PCMA/8000",
                "a=rtpmap:0 PCMU/8000",
                "a=rtpmap:101 telephone-event/8000",
                "a=fmtp:101 0-15",
                "a=ptime:30",
            ]
        ),
    )
    assert neg is not None
    assert (neg.remote_address, neg.remote_port, neg.remote_rtcp_port) == (
        "198.51.100.7",
        30000,
        30001,
    )
    assert neg.send_pt == 8 and neg.send_codec.name == "PCMA"
    assert sorted(neg.recv_codecs) == [0, 8]
    assert neg.telephone_event_pt == 101 and neg.telephone_events == frozenset(range(16))
    assert neg.ptime == 30 and neg.direction == "sendrecv" and neg.crypto is None


def test_process_answer_ignores_payload_types_we_never_offered() -> None:
    neg = process_answer(
        our_offer(), peer_answer(["m=audio 30000 RTP/AVP 18 0", "a=rtpmap:18 G729/8000"])
    )
    assert neg is not None and neg.send_pt == 0 and list(neg.recv_codecs) == [0]
    with pytest.raises(OfferAnswerError, match="none of the codecs"):
        process_answer(our_offer(), peer_answer(["m=audio 30000 RTP/AVP 18"]))


def test_process_answer_dtmf_dropped_when_answer_omits_it() -> None:
    neg = process_answer(our_offer(), peer_answer(["m=audio 30000 RTP/AVP 0"]))
    assert neg is not None and neg.telephone_event_pt is None


def test_process_answer_port_zero_means_refused() -> None:
    assert process_answer(our_offer(), peer_answer(["m=audio 0 RTP/AVP 0"])) is None


def test_process_answer_rejects_broken_answers() -> None:
    with pytest.raises(OfferAnswerError, match="2 m-lines"):
        process_answer(our_offer(), peer_answer(["m=audio 3000 RTP/AVP 0", "m=video 0 RTP/AVP 31"]))
    with pytest.raises(OfferAnswerError, match="is video"):
        process_answer(our_offer(), peer_answer(["m=video 3000 RTP/AVP 0"]))
    with pytest.raises(OfferAnswerError, match="transport"):
        process_answer(our_offer(), peer_answer(["m=audio 3000 RTP/SAVP 0"]))


@pytest.mark.parametrize(
    ("answered", "ours", "expected"),
    [
        ("recvonly", "sendrecv", "sendonly"),
        ("sendonly", "sendrecv", "recvonly"),
        ("inactive", "sendrecv", "inactive"),
        ("recvonly", "sendonly", "sendonly"),  # our hold acknowledged
        ("sendrecv", "sendonly", "sendonly"),  # a sloppy answer cannot undo our hold
    ],
)
def test_process_answer_direction(answered: str, ours: str, expected: str) -> None:
    neg = process_answer(
        our_offer(direction=ours), peer_answer(["m=audio 3000 RTP/AVP 0", f"a={answered}"])
    )
    assert neg is not None and neg.direction == expected


def test_process_answer_hold_address() -> None:
    neg = process_answer(our_offer(), peer_answer(["m=audio 3000 RTP/AVP 0"], conn="0.0.0.0"))
    assert neg is not None and neg.direction == "recvonly" and not neg.send_rtcp


def test_process_answer_srtp() -> None:
    mine = [f"1 AES_CM_128_HMAC_SHA1_80 {KEY_80}", f"2 AES_CM_128_HMAC_SHA1_32 {KEY_32}"]
    offer = our_offer(srtp="mandatory", crypto=mine)
    neg = process_answer(
        offer,
        peer_answer(["m=audio 3000 RTP/SAVP 0", f"a=crypto:2 AES_CM_128_HMAC_SHA1_32 {PEER_KEY}"]),
    )
    assert neg is not None and neg.crypto == NegotiatedCrypto(
        2, "AES_CM_128_HMAC_SHA1_32", f"2 AES_CM_128_HMAC_SHA1_32 {PEER_KEY}", mine[1]
    )
    for bad, why in [
        ([], "without a=crypto"),
        ([f"a=crypto:2 AES_CM_128_HMAC_SHA1_80 {PEER_KEY}"], "matches nothing"),
        ([f"a=crypto:9 AES_CM_128_HMAC_SHA1_80 {PEER_KEY}"], "matches nothing"),
        ([f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 {PEER_KEY}"] * 2, "more than one"),
        (["a=crypto:one two"], "malformed"),
    ]:
        with pytest.raises(OfferAnswerError, match=why):
            process_answer(offer, peer_answer(["m=audio 3000 RTP/SAVP 0", *bad]))


def test_best_effort_srtp_answer_without_crypto_is_plain_rtp() -> None:
    offer = our_offer(srtp="optional", crypto=[f"1 AES_CM_128_HMAC_SHA1_80 {KEY_80}"])
    neg = process_answer(offer, peer_answer(["m=audio 3000 RTP/AVP 0"]))
    assert neg is not None and neg.crypto is None


def test_both_ends_of_one_exchange_agree() -> None:
    alice = caps(codecs=[OPUS, G722, PCMU])
    bob = caps(
        address="192.0.2.20",
        port=50000,
        codecs=[PCMU, OPUS],
        telephone_event=CodecSpec("telephone-event", 8000, 96),
    )
    offer = build_offer(alice, 1, session_id=11)
    answer, at_bob = build_answer(
        parse_sdp(offer.to_bytes()), bob, session_version=1, session_id=22
    )
    at_alice = process_answer(offer, parse_sdp(answer.to_bytes()))
    assert at_bob is not None and at_alice is not None
    # What one side sends the other can decode, under the same PT number.
    assert at_alice.send_pt in at_bob.recv_codecs and at_bob.send_pt in at_alice.recv_codecs
    assert at_alice.send_codec.name == at_bob.send_codec.name == "PCMU"
    assert at_alice.telephone_event_pt == at_bob.telephone_event_pt == 101
    assert (at_alice.remote_address, at_alice.remote_port) == ("192.0.2.20", 50000)
    assert (at_bob.remote_address, at_bob.remote_port) == ("192.0.2.10", 40000)


# ------------------------------------------------------------------ o= versions and re-offers


def test_sdp_version_bumps_only_when_the_description_changes() -> None:
    v = SdpVersion(3141592653)
    first = v.stamp(build_offer(caps(), 0, session_id=0)).serialize()
    assert "o=- 3141592653 3141592653 IN IP4 192.0.2.10\r\n" in first
    same = v.stamp(build_offer(caps(), 0, session_id=0)).serialize()
    assert same == first  # session refresh re-INVITE: identical SDP, identical version
    held = v.stamp(build_offer(caps(direction="sendonly"), 0, session_id=0)).serialize()
    assert "o=- 3141592653 3141592654 IN IP4 192.0.2.10\r\n" in held
    resumed = v.stamp(build_offer(caps(), 0, session_id=0)).serialize()
    assert "o=- 3141592653 3141592655 " in resumed
    moved = v.stamp(build_offer(caps(port=40100), 0, session_id=0)).serialize()
    assert "o=- 3141592653 3141592656 " in moved and "m=audio 40100 " in moved
    # Answers share the same counter as offers: one o= line per dialog.
    answer, _ = build_answer(
        parse_sdp(PEER_OFFER), caps(port=40100), session_version=0, session_id=0
    )
    assert "o=- 3141592653 3141592657 " in v.stamp(answer).serialize()


def test_sdp_version_explicit_start() -> None:
    v = SdpVersion("42", version=0)
    assert v.stamp(build_offer(caps(), 9, session_id=9)).origin.version == 0


def test_remote_sdp_changed_rules() -> None:
    first = parse_sdp(PEER_OFFER)
    assert remote_sdp_changed(None, first)
    assert not remote_sdp_changed(first, parse_sdp(PEER_OFFER))
    bumped = parse_sdp(
        PEER_OFFER.replace("2890844526 2890844526", "2890844526 2890844527").replace(
            "20000", "20100"
        )
    )
    assert remote_sdp_changed(first, bumped)
    sneaky = parse_sdp(PEER_OFFER.replace("20000", "20100"))  # changed, version not bumped
    assert remote_sdp_changed(first, sneaky)
    new_session = parse_sdp(PEER_OFFER.replace("2890844526 2890844526", "77 1"))
    assert remote_sdp_changed(first, new_session)


def test_reoffer_keeps_the_m_line_layout_of_the_last_exchange() -> None:
    # The peer offered video + audio; we refused video. Our later hold re-offer must keep
    # both m-lines in the same order with the video still at port 0 (RFC 3264 section 8).
    answer, _ = build_answer(
        parse_sdp(offer_from(["m=video 30000 RTP/AVP 96", "m=audio 20000 RTP/AVP 0"])),
        caps(),
        session_version=1,
        session_id=5,
    )
    reoffer = build_offer(caps(direction="sendonly"), 2, session_id=5, previous=answer).serialize()
    assert [line for line in reoffer.split("\r\n") if line.startswith("m=")] == [
        "m=video 0 RTP/AVP 96",
        "m=audio 40000 RTP/AVP 9 0 8 101",
    ]
    assert "a=sendonly\r\n" in media_block(reoffer, 1)


def test_reoffer_after_everything_was_refused_reuses_the_audio_slot() -> None:
    previous = parse_sdp(offer_from(["m=audio 0 RTP/AVP 18", "m=video 0 RTP/AVP 31"]))
    text = build_offer(caps(), 2, session_id=5, previous=previous).serialize()
    assert [line for line in text.split("\r\n") if line.startswith("m=")] == [
        "m=audio 40000 RTP/AVP 9 0 8 101",
        "m=video 0 RTP/AVP 31",
    ]
    only_video = parse_sdp(offer_from(["m=video 0 RTP/AVP 31"]))
    text = build_offer(caps(), 2, session_id=5, previous=only_video).serialize()
    assert [line for line in text.split("\r\n") if line.startswith("m=")] == [
        "m=video 0 RTP/AVP 31",
        "m=audio 40000 RTP/AVP 9 0 8 101",
    ]


def test_peer_reoffer_changing_address_port_and_codec() -> None:
    v = SdpVersion(1000)
    first, neg1 = build_answer(parse_sdp(PEER_OFFER), caps(), session_version=0, session_id=0)
    v.stamp(first)
    assert neg1 is not None and neg1.send_codec.name == "G722"
    reoffer = crlf(
        "v=0",
        "o=peer 2890844526 2890844527 IN IP4 198.51.100.7",
        "s=-",
        "c=IN IP4 203.0.113.80",
        "t=0 0",
        "m=audio 26000 RTP/AVP 8",
        "a=rtpmap:8 PCMA/8000",
    )
    assert remote_sdp_changed(parse_sdp(PEER_OFFER), parse_sdp(reoffer))
    second, neg2 = build_answer(parse_sdp(reoffer), caps(), session_version=0, session_id=0)
    text = v.stamp(second).serialize()
    assert "o=- 1000 1001 IN IP4 192.0.2.10\r\n" in text
    assert "m=audio 40000 RTP/AVP 8\r\n" in text and "telephone-event" not in text
    assert neg2 is not None
    assert (neg2.remote_address, neg2.remote_port, neg2.send_pt) == ("203.0.113.80", 26000, 8)
    assert neg2.telephone_event_pt is None


def test_process_answer_tolerates_a_peer_that_renumbers_dynamic_payload_types() -> None:
    offer = our_offer(codecs=[OPUS, PCMU])  # opus offered as 107, telephone-event as 101
    neg = process_answer(
        offer,
        peer_answer(
            [
                "m=audio 30000 RTP/AVP 96 97",
                "a=rtpmap:96 opus/48000/2",
                "a=rtpmap:97 telephone-event/8000",
                "a=fmtp:97 0-11",
            ]
        ),
    )
    assert neg is not None
    # We send with the answer's numbers; the peer sends with the ones we offered.
    assert neg.send_pt == 96 and neg.send_codec.name == "opus"
    assert list(neg.recv_codecs) == [107]
    assert (neg.telephone_event_pt, neg.telephone_event_recv_pt) == (97, 101)
    assert neg.telephone_events == frozenset(range(12))


def test_process_answer_trusts_the_answers_rtpmap_over_the_number() -> None:
    # PT 0 answered as PCMA/8000 is not our PCMU; it matches our PCMA offered as 8.
    neg = process_answer(
        our_offer(), peer_answer(["m=audio 30000 RTP/AVP 0", "a=rtpmap:0 PCMA/8000"])
    )
    assert neg is not None and neg.send_codec.name == "PCMA" and list(neg.recv_codecs) == [8]
