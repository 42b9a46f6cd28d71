"""SDES (RFC 4568): a=crypto parse/format, offer/answer selection, policy (T20), fresh keys (T21)."""

from __future__ import annotations

import base64
import hashlib
import struct

import pytest

from audio.sdes import (
    CryptoAttribute,
    KeyParams,
    SdesError,
    SdesKeys,
    accept_answer,
    make_offer,
    parse_crypto,
    sdes_allowed,
    select_answer,
    srtp_sessions,
)
from audio.srtp import SUITE_32, SUITE_80, SrtpError

# RFC 4568 section 4's example line.
RFC_EXAMPLE = "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:32"


class CountingRandom:
    """Deterministic stand-in for secrets.token_bytes: a SHA-256 counter stream."""

    def __init__(self, seed: bytes = b"sdes") -> None:
        self.seed, self.n = seed, 0

    def __call__(self, size: int) -> bytes:
        out = b""
        while len(out) < size:
            self.n += 1
            out += hashlib.sha256(self.seed + self.n.to_bytes(8, "big")).digest()
        return out[:size]


def keys() -> SdesKeys:
    return SdesKeys(CountingRandom())


def line(tag: int, suite: str, material: bytes, *params: str) -> str:
    return " ".join([str(tag), suite, "inline:" + base64.b64encode(material).decode(), *params])


PEER_MATERIAL = bytes(range(30))
PEER_INLINE = base64.b64encode(PEER_MATERIAL).decode()


# ---------------------------------------------------------------- parse / format


def test_parses_the_rfc_example_line() -> None:
    attr = parse_crypto("a=crypto:" + RFC_EXAMPLE)
    assert (attr.tag, attr.suite) == (1, SUITE_80)
    key = attr.key
    assert key.key + key.salt == base64.b64decode("PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR")
    assert (key.lifetime, key.mki, key.mki_length) == (1 << 20, 1, 32)
    assert key.mki_bytes == (1).to_bytes(32, "big")
    assert attr.format() == RFC_EXAMPLE
    assert attr.line() == "a=crypto:" + RFC_EXAMPLE


def test_round_trips_session_params_and_decimal_lifetime() -> None:
    value = f"7 aes_cm_128_hmac_sha1_32 inline:{PEER_INLINE}|1000 WSH=128 -X_EXT"
    attr = parse_crypto(value)
    assert attr.suite == SUITE_32 and attr.key.lifetime == 1000
    assert attr.params == ("WSH=128", "-X_EXT")
    assert attr.format() == f"7 AES_CM_128_HMAC_SHA1_32 inline:{PEER_INLINE}|1000 WSH=128 -X_EXT"


def test_unknown_suite_parses_but_has_no_key() -> None:
    attr = parse_crypto("3 AEAD_AES_256_GCM inline:whatever KDR=0")
    assert not attr.supported_suite and attr.keys == ()
    assert attr.format() == "3 AEAD_AES_256_GCM inline:whatever KDR=0"
    with pytest.raises(SdesError):
        _ = attr.key


@pytest.mark.parametrize(
    "value",
    [
        "",
        "1 AES_CM_128_HMAC_SHA1_80",  # no key
        "x AES_CM_128_HMAC_SHA1_80 inline:" + PEER_INLINE,  # tag not digits
        "1234567890 AES_CM_128_HMAC_SHA1_80 inline:" + PEER_INLINE,  # tag > 9 digits
        "1 AES_CM_128_HMAC_SHA1_80 uri:http://example.com/key",  # not inline
        "1 AES_CM_128_HMAC_SHA1_80 inline:" + PEER_INLINE[:-4],  # 27 bytes
        "1 AES_CM_128_HMAC_SHA1_80 inline:" + PEER_INLINE[:-1] + "!",  # not base64
        "1 AES_CM_128_HMAC_SHA1_80 inline:" + PEER_INLINE + "|2^20|2^20",
        "1 AES_CM_128_HMAC_SHA1_80 inline:" + PEER_INLINE + "|1:0",  # MKI length 0
        "1 AES_CM_128_HMAC_SHA1_80 inline:" + PEER_INLINE + "|256:1",  # MKI value too big
        "1 AES_CM_128_HMAC_SHA1_80 inline:" + PEER_INLINE + "|1:4|2^20",  # MKI before lifetime
        "1 AES_CM_128_HMAC_SHA1_80 inline:" + PEER_INLINE + "|junk",
        # two keys without MKIs cannot be told apart on the wire
        f"1 AES_CM_128_HMAC_SHA1_80 inline:{PEER_INLINE};inline:{PEER_INLINE}",
    ],
)
def test_malformed_lines_raise_sdes_error(value: str) -> None:
    with pytest.raises(SdesError):
        parse_crypto(value)


def test_key_repr_does_not_leak_the_key() -> None:
    key = parse_crypto(RFC_EXAMPLE).key
    assert key.key.hex() not in repr(key) and "PS1u" not in repr(key)


# ---------------------------------------------------------------- answerer


def test_answer_echoes_first_acceptable_tag_and_suite_with_our_own_key() -> None:
    offer = [
        "1 AEAD_AES_128_GCM inline:aaaa",  # not supported
        line(2, SUITE_32, PEER_MATERIAL),
        line(3, SUITE_80, PEER_MATERIAL),
    ]
    result = select_answer(offer, keys())
    assert result is not None
    ours, theirs = result
    assert (ours.tag, ours.suite) == (2, SUITE_32) and theirs.tag == 2
    assert ours.key.key + ours.key.salt != PEER_MATERIAL
    expected = CountingRandom()(30)
    assert (
        ours.format() == f"2 AES_CM_128_HMAC_SHA1_32 inline:{base64.b64encode(expected).decode()}"
    )


def test_no_acceptable_line_means_no_answer() -> None:
    assert select_answer(["1 F8_128_HMAC_SHA1_80 inline:abc"], keys()) is None
    assert select_answer(["garbage"], keys()) is None
    assert select_answer([line(1, SUITE_80, PEER_MATERIAL, "KDR=20")], keys()) is None
    assert select_answer([line(1, SUITE_80, PEER_MATERIAL, "FEC_KEY=x")], keys()) is None
    assert select_answer([line(1, SUITE_80, PEER_MATERIAL, "NEW_MANDATORY")], keys()) is None
    only_32 = select_answer([line(1, SUITE_80, PEER_MATERIAL)], keys(), suites=[SUITE_32])
    assert only_32 is None


def test_ignorable_params_do_not_block_the_answer() -> None:
    offer = [line(5, SUITE_80, PEER_MATERIAL, "WSH=256", "FEC_ORDER=FEC_SRTP", "-FUTURE=1")]
    result = select_answer(offer, keys())
    assert result is not None and result[0].tag == 5 and result[0].params == ()


@pytest.mark.parametrize("param", ["UNENCRYPTED_SRTP", "UNENCRYPTED_SRTCP", "UNAUTHENTICATED_SRTP"])
def test_weakening_params_refused_unless_policy_allows(param: str) -> None:
    offer = [line(1, SUITE_80, PEER_MATERIAL, param), line(2, SUITE_80, PEER_MATERIAL)]
    result = select_answer(offer, keys())
    assert result is not None and result[0].tag == 2 and result[0].params == ()
    assert select_answer(offer[:1], keys()) is None
    allowed = select_answer(offer[:1], keys(), allow_weak_params=True)
    assert allowed is not None and allowed[0].params == (param,)  # echoed in the answer


# ---------------------------------------------------------------- offerer


def test_offer_lists_our_suites_with_distinct_fresh_keys() -> None:
    offer = make_offer(keys())
    assert [(a.tag, a.suite) for a in offer] == [(1, SUITE_80), (2, SUITE_32)]
    assert offer[0].key != offer[1].key
    assert all(a.line().startswith(f"a=crypto:{a.tag} {a.suite} inline:") for a in offer)


def test_offerer_accepts_a_proper_answer() -> None:
    offer = make_offer(keys())
    ours, theirs = accept_answer(offer, [line(2, SUITE_32, PEER_MATERIAL)])
    assert ours is offer[1] and theirs.key.key + theirs.key.salt == PEER_MATERIAL


def test_offerer_refuses_broken_answers() -> None:
    offer = make_offer(keys())
    own = offer[0].key.key + offer[0].key.salt
    bad = [
        [],
        [line(1, SUITE_80, PEER_MATERIAL), line(2, SUITE_32, PEER_MATERIAL)],  # two lines
        [line(9, SUITE_80, PEER_MATERIAL)],  # tag never offered
        [line(1, SUITE_32, PEER_MATERIAL)],  # tag 1 was SHA1_80
        [line(1, SUITE_80, PEER_MATERIAL, "UNENCRYPTED_SRTP")],  # weakened in the answer
        [line(1, SUITE_80, own)],  # our own key reflected back
    ]
    for answer in bad:
        with pytest.raises(SdesError):
            accept_answer(offer, answer)
    with pytest.raises(SdesError):  # added even though policy would allow it: not offered
        accept_answer(
            offer, [line(1, SUITE_80, PEER_MATERIAL, "UNENCRYPTED_SRTP")], allow_weak_params=True
        )


# ---------------------------------------------------------------- keys (T21)


def test_every_fresh_key_differs_from_all_earlier_ones() -> None:
    source = SdesKeys(CountingRandom())
    seen = {source.fresh(SUITE_80) for _ in range(200)}
    assert len(seen) == 200


def test_new_media_destination_gets_a_new_key() -> None:
    source = keys()
    first = source.for_destination(("192.0.2.10", 4000))
    assert source.for_destination(("192.0.2.10", 4000)) == first  # re-offer, same place: kept
    moved = source.for_destination(("192.0.2.20", 4000))  # transfer / Replaces
    back = source.for_destination(("192.0.2.10", 4000))  # back again: still a new key
    other_port = source.for_destination(("192.0.2.10", 4002))
    assert len({first, moved, back, other_port}) == 4
    offer = make_offer(source, destination=("198.51.100.7", 5004))
    assert offer[0].key not in {first, moved, back, other_port}
    assert make_offer(source, destination=("198.51.100.7", 5004)) == offer


def test_stuck_random_source_is_refused_rather_than_reusing_a_key() -> None:
    source = SdesKeys(lambda n: b"\x42" * n)
    source.fresh()
    with pytest.raises(SdesError):
        source.fresh()


def test_our_answer_key_never_equals_the_peer_key() -> None:
    # A random source that returns exactly the key the peer offered, then something else.
    draws = iter([PEER_MATERIAL, bytes(30)])
    source = SdesKeys(lambda n: next(draws))
    result = select_answer([line(1, SUITE_80, PEER_MATERIAL)], source)
    assert result is not None and result[0].key.key + result[0].key.salt == bytes(30)


# ---------------------------------------------------------------- policy (T20)


def test_sdes_only_over_secure_signalling_unless_configured() -> None:
    assert sdes_allowed(signalling_secure=True, allow_insecure=False)
    assert not sdes_allowed(signalling_secure=False, allow_insecure=False)
    assert sdes_allowed(signalling_secure=False, allow_insecure=True)


# ---------------------------------------------------------------- end to end


def rtp(seq: int, ssrc: int, payload: bytes) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, seq, seq * 160, ssrc) + payload


@pytest.mark.parametrize("prefer", ["python", "auto"])
def test_negotiated_keys_carry_media_both_ways(prefer: str) -> None:
    offerer_keys, answerer_keys = SdesKeys(CountingRandom(b"a")), SdesKeys(CountingRandom(b"b"))
    offer = make_offer(offerer_keys)
    offer_sdp = [a.format() for a in offer]  # what crosses the wire
    answered = select_answer(offer_sdp, answerer_keys)
    assert answered is not None
    ans_local, ans_remote = answered
    off_local, off_remote = accept_answer(offer, [ans_local.format()])
    a_send, a_recv = srtp_sessions(off_local, off_remote, prefer=prefer)
    b_send, b_recv = srtp_sessions(ans_local, ans_remote, prefer=prefer)
    voice = b"\x7f" * 160
    wire = a_send.protect(rtp(1, 0x1111, voice))
    assert voice not in wire and b_recv.unprotect(wire) == rtp(1, 0x1111, voice)
    back = b_send.protect(rtp(9, 0x2222, voice))
    assert a_recv.unprotect(back) == rtp(9, 0x2222, voice)
    probe = b_send.protect(rtp(10, 0x2222, voice))
    with pytest.raises(SrtpError):  # each direction has its own key
        b_recv.unprotect(probe)
    assert a_recv.unprotect(probe) == rtp(10, 0x2222, voice)


def test_mki_and_weak_params_reach_the_sessions() -> None:
    mki_line = CryptoAttribute(
        1, SUITE_80, (KeyParams(PEER_MATERIAL[:16], PEER_MATERIAL[16:], mki=3, mki_length=2),)
    )
    answered = select_answer(
        [mki_line.format() + " UNENCRYPTED_SRTP"], keys(), allow_weak_params=True
    )
    assert answered is not None
    ours, theirs = answered
    send, recv = srtp_sessions(ours, theirs)
    clear = send.protect(rtp(1, 5, b"hello"))
    assert clear[12:17] == b"hello"  # UNENCRYPTED_SRTP applied to what we send
    peer_send = srtp_sessions(theirs, ours)[0]
    peer_packet = peer_send.protect(rtp(1, 6, b"hi there"))
    assert peer_packet[-12:-10] == b"\x00\x03"  # the peer's MKI
    assert recv.unprotect(peer_packet) == rtp(1, 6, b"hi there")
