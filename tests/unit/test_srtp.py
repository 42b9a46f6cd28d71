"""SRTP/SRTCP (RFC 3711): RFC vectors, libsrtp known answers and live interop, replay, ROC, tamper.

The vectors are RFC 3711 Appendix B.2 (AES-CM keystream) and B.3 (key derivation); the packet
known answers are libsrtp's own reference packets (srtp_driver), so they pin the whole wire
format - IV, encryption offset, tag input, SRTCP E||index trailer - without libsrtp installed.
When pylibsrtp is installed the same packets also cross between the two implementations.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audio.srtp import (
    REPLAY_WINDOW,
    SUITE_32,
    SUITE_80,
    LibSrtpSession,
    ReplayWindow,
    SrtpError,
    SrtpSession,
    aes_cm_keystream,
    derive_key,
    estimate_index,
    libsrtp_available,
    new_srtp_session,
)
from tests.conftest import in_ci

MASTER_KEY = bytes.fromhex("E1F97A0D3E018BE0D64FA32C06DE4139")
MASTER_SALT = bytes.fromhex("0EC675AD498AFEEBB6960B3AABE6")
OTHER_KEY = bytes(range(16))
OTHER_SALT = bytes(range(100, 114))

needs_libsrtp = pytest.mark.skipif(
    not libsrtp_available() and not in_ci(),
    reason="pylibsrtp not installed (pip install pylibsrtp)",
)


def rtp(seq: int, payload: bytes = b"\xab" * 160, *, ssrc: int = 0xCAFEBABE, pt: int = 0) -> bytes:
    return struct.pack("!BBHII", 0x80, pt, seq & 0xFFFF, (seq * 160) & 0xFFFFFFFF, ssrc) + payload


def rtcp_rr(ssrc: int = 0xCAFEBABE, filler: int = 0xAB) -> bytes:
    """An RTCP SR-shaped packet as in libsrtp's reference: 8-byte header then 16 body bytes."""
    return bytes.fromhex("81c8000b") + ssrc.to_bytes(4, "big") + bytes([filler]) * 16


def pair(suite: str = SUITE_80, **kw: object) -> tuple[SrtpSession, SrtpSession]:
    return (
        SrtpSession(suite, MASTER_KEY, MASTER_SALT, **kw),  # type: ignore[arg-type]
        SrtpSession(suite, MASTER_KEY, MASTER_SALT, **kw),  # type: ignore[arg-type]
    )


# ---------------------------------------------------------------- RFC 3711 Appendix B


def test_key_derivation_matches_rfc3711_b3() -> None:
    assert derive_key(MASTER_KEY, MASTER_SALT, 0, 16).hex().upper() == (
        "C61E7A93744F39EE10734AFE3FF7A087"
    )
    assert derive_key(MASTER_KEY, MASTER_SALT, 2, 14).hex().upper() == (
        "30CBBC08863D8C85D49DB34A9AE1"
    )
    # B.3 derives a 94-octet auth key to show the counter running over six blocks.
    assert derive_key(MASTER_KEY, MASTER_SALT, 1, 94).hex().upper() == (
        "CEBE321F6FF7716B6FD4AB49AF256A15"
        "6D38BAA48F0A0ACF3C34E2359E6CDBCE"
        "E049646C43D9327AD175578EF7227098"
        "6371C10C9A369AC2F94A8C5FBCDDDC25"
        "6D6E919A48B610EF17C2041E47403576"
        "6B68642C59BBFC2F34DB60DBDFB2"
    )


def test_aes_cm_keystream_matches_rfc3711_b2() -> None:
    key = bytes.fromhex("2B7E151628AED2A6ABF7158809CF4F3C")
    start = bytes.fromhex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD0000")
    assert aes_cm_keystream(key, start, 48).hex().upper() == (
        "E03EAD0935C95E80E166B16DD92B4EB4"
        "D23513162B02D0F72A43A2FE4A5F97AB"
        "41E95B3BB0A2E8DD477901E4FCA894C0"
    )
    # The tail of the 65282-block segment: counters ...FEFF, ...FF00, ...FF01.
    tail = aes_cm_keystream(key, start, 65282 * 16)[-48:]
    assert tail.hex().upper() == (
        "EC8CDF7398607CB0F2D21675EA9EA1E4"
        "362B7C3C6773516318A077D7FC5073AE"
        "6A2CC3787889374FBEB4C81B17BA6C44"
    )


# ---------------------------------------------------------------- libsrtp reference packets

SRTP_PLAIN = bytes.fromhex("800f1234decafbadcafebabe" + "ab" * 16)
SRTP_CIPHER = bytes.fromhex(
    "800f1234decafbadcafebabe4e55dc4ce79978d88ca4d215949d2402b78d6acc99ea179b8dbb"
)
SRTCP_PLAIN = rtcp_rr()
SRTCP_CIPHER = bytes.fromhex(
    "81c8000bcafebabe7128035be487b9bdbef89041f977a5a880000001993e08cd54d6c1230798"
)


def test_srtp_protect_matches_libsrtp_reference_packet() -> None:
    tx, rx = pair()
    assert tx.protect(SRTP_PLAIN) == SRTP_CIPHER
    assert rx.unprotect(SRTP_CIPHER) == SRTP_PLAIN


def test_srtcp_protect_matches_libsrtp_reference_packet() -> None:
    tx, rx = pair()
    out = tx.protect_rtcp(SRTCP_PLAIN)
    assert out == SRTCP_CIPHER
    assert out[-14:-10] == b"\x80\x00\x00\x01"  # E flag set, SRTCP index 1
    assert rx.unprotect_rtcp(SRTCP_CIPHER) == SRTCP_PLAIN


def test_sha1_32_truncates_only_the_srtp_tag() -> None:
    tx80, _ = pair(SUITE_80)
    tx32, rx32 = pair(SUITE_32)
    p80, p32 = tx80.protect(SRTP_PLAIN), tx32.protect(SRTP_PLAIN)
    assert len(p32) == len(SRTP_PLAIN) + 4
    assert p32[:-4] == p80[:-10] and p32[-4:] == p80[-10:-6]  # same HMAC, 32 bits of it
    assert rx32.unprotect(p32) == SRTP_PLAIN
    # SRTCP keeps the 80-bit tag in the _32 suite (RFC 4568 6.2.2).
    assert tx32.protect_rtcp(SRTCP_PLAIN) == SRTCP_CIPHER
    assert rx32.unprotect_rtcp(SRTCP_CIPHER) == SRTCP_PLAIN


@pytest.mark.parametrize("packet", [SRTP_CIPHER, SRTCP_CIPHER], ids=["srtp", "srtcp"])
def test_every_truncation_is_refused_with_srtp_error(packet: bytes) -> None:
    for n in range(len(packet)):
        _, rx = pair()
        with pytest.raises(SrtpError):
            if packet is SRTP_CIPHER:
                rx.unprotect(packet[:n])
            else:
                rx.unprotect_rtcp(packet[:n])


# ---------------------------------------------------------------- wire format


def test_payload_is_not_plaintext_and_header_stays_clear() -> None:
    tx, rx = pair()
    csrc_ext = (
        struct.pack("!BBHII", 0x92, 0, 7, 1120, 0x11223344)  # CC=2, X=1
        + b"\x01\x02\x03\x04\x05\x06\x07\x08"
        + b"\xbe\xde\x00\x01"
        + b"\x10\xff\x00\x00"
    )
    plain = csrc_ext + b"\x55" * 160
    out = tx.protect(plain)
    assert out[: len(csrc_ext)] == csrc_ext  # header, CSRCs and extension are not encrypted
    assert b"\x55" * 8 not in out[len(csrc_ext) :]
    assert len(out) == len(plain) + 10
    assert rx.unprotect(out) == plain


def test_distinct_ssrcs_get_distinct_keystreams_and_windows() -> None:
    tx, rx = pair()
    a, b = tx.protect(rtp(1, ssrc=1)), tx.protect(rtp(1, ssrc=2))
    assert a[12:-10] != b[12:-10]
    assert rx.unprotect(b) == rtp(1, ssrc=2)
    assert rx.unprotect(a) == rtp(1, ssrc=1)  # same seq, other SSRC: not a replay


def test_wrong_key_fails_authentication() -> None:
    tx = SrtpSession(SUITE_80, MASTER_KEY, MASTER_SALT)
    rx = SrtpSession(SUITE_80, OTHER_KEY, OTHER_SALT)
    with pytest.raises(SrtpError) as err:
        rx.unprotect(tx.protect(rtp(1)))
    assert err.value.reason == "auth"


# ---------------------------------------------------------------- tamper (THREATS T22)


def test_bit_flipped_telephone_event_fails_authentication() -> None:
    tx, rx = pair()
    # RFC 4733 event "5", end bit clear, volume 10, duration 800, payload type 101.
    event = rtp(40, bytes([5, 10]) + (800).to_bytes(2, "big"), pt=101)
    wire = tx.protect(event)
    for bit in range(32):  # every bit of the 4-byte event payload
        forged = bytearray(wire)
        forged[12 + bit // 8] ^= 0x80 >> (bit % 8)
        with pytest.raises(SrtpError) as err:
            rx.unprotect(bytes(forged))
        assert err.value.reason == "auth"
    assert rx.unprotect(wire) == event  # the genuine packet still passes afterwards


def test_any_flipped_bit_is_refused() -> None:
    tx, _ = pair(SUITE_32)
    wire = tx.protect(rtp(9, b"\x01\x02\x03\x04\x05\x06\x07\x08"))
    for i in range(len(wire)):
        _, rx = pair(SUITE_32)
        forged = bytearray(wire)
        forged[i] ^= 0x01
        with pytest.raises(SrtpError) as err:
            rx.unprotect(bytes(forged))
        assert err.value.reason in ("auth", "malformed")


def test_tampered_srtcp_fails_authentication() -> None:
    tx, rx = pair()
    wire = bytearray(tx.protect_rtcp(rtcp_rr()))
    wire[10] ^= 0x04
    with pytest.raises(SrtpError) as err:
        rx.unprotect_rtcp(bytes(wire))
    assert err.value.reason == "auth"


def test_srtcp_e_flag_cannot_be_cleared_to_downgrade() -> None:
    clear_tx = SrtpSession(SUITE_80, MASTER_KEY, MASTER_SALT, encrypt_rtcp=False)
    _, rx = pair()
    wire = clear_tx.protect_rtcp(rtcp_rr())
    assert wire[-14] & 0x80 == 0
    with pytest.raises(SrtpError):
        rx.unprotect_rtcp(wire)


# ---------------------------------------------------------------- replay (THREATS T21)


def test_duplicate_packet_is_a_replay() -> None:
    tx, rx = pair()
    wire = tx.protect(rtp(100))
    assert rx.unprotect(wire) == rtp(100)
    with pytest.raises(SrtpError) as err:
        rx.unprotect(wire)
    assert err.value.reason == "replay"
    assert rx.unprotect(tx.protect(rtp(101))) == rtp(101)  # the stream goes on


def test_replay_window_is_at_least_64_and_refuses_older() -> None:
    assert REPLAY_WINDOW >= 64
    tx, rx = pair()
    wires = {seq: tx.protect(rtp(seq)) for seq in range(1000, 1000 + REPLAY_WINDOW + 2)}
    newest = 1000 + REPLAY_WINDOW + 1
    rx.unprotect(wires[newest])
    assert rx.unprotect(wires[newest - 64]) == rtp(newest - 64)  # late but inside: accepted
    assert rx.unprotect(wires[newest - REPLAY_WINDOW + 1]) == rtp(newest - REPLAY_WINDOW + 1)
    with pytest.raises(SrtpError) as err:
        rx.unprotect(wires[newest - REPLAY_WINDOW])
    assert err.value.reason == "replay"
    with pytest.raises(SrtpError):
        rx.unprotect(wires[newest - 64])  # accepted once already


def test_forged_packet_does_not_move_the_window() -> None:
    tx, rx = pair()
    rx.unprotect(tx.protect(rtp(10)))
    forger, _ = pair()  # same key, so the seq and payload are right but the tag is broken
    forged = bytearray(forger.protect(rtp(5000)))
    forged[-1] ^= 1
    with pytest.raises(SrtpError):
        rx.unprotect(bytes(forged))
    assert rx.unprotect(tx.protect(rtp(11))) == rtp(11)


def test_srtcp_replay_is_dropped() -> None:
    tx, rx = pair()
    first, second = tx.protect_rtcp(rtcp_rr()), tx.protect_rtcp(rtcp_rr(filler=1))
    assert rx.unprotect_rtcp(second) == rtcp_rr(filler=1)
    assert rx.unprotect_rtcp(first) == rtcp_rr()  # reordered, inside the window
    for wire in (first, second):
        with pytest.raises(SrtpError) as err:
            rx.unprotect_rtcp(wire)
        assert err.value.reason == "replay"


def test_replay_window_survives_huge_jumps_cheaply() -> None:
    window = ReplayWindow()
    window.update(5)
    window.update(1 << 47)
    assert window.mask == 1 and window.check(5) == "too old"
    assert window.check((1 << 47) - 1) is None


# ---------------------------------------------------------------- ROC (RFC 3711 3.3.1)


@pytest.mark.parametrize(
    ("highest", "seq", "expected"),
    [
        (-1, 65000, 65000),  # first packet: ROC 0
        (100, 101, 101),
        (100, 40000, -1),  # would need ROC -1
        (65535, 0, 65536),  # wrap: ROC + 1
        (65530, 3, 65539),
        ((1 << 16) + 2, 65534, 65534),  # late packet from before the wrap: ROC - 1
        ((5 << 16) + 40000, 7000, (6 << 16) + 7000),
        ((5 << 16) + 40000, 8000, (5 << 16) + 8000),
    ],
)
def test_index_estimation_follows_rfc3711_appendix_a(highest: int, seq: int, expected: int) -> None:
    assert estimate_index(highest, seq) == expected


@pytest.mark.parametrize("suite", [SUITE_80, SUITE_32])
def test_rollover_counter_across_the_sequence_wrap_with_reordering(suite: str) -> None:
    tx, rx = pair(suite)
    seqs = [(65500 + i) & 0xFFFF for i in range(100)]
    wires = [tx.protect(rtp(s)) for s in seqs]
    order = list(range(100))
    order[35], order[37] = order[37], order[35]  # 65535 arrives after 0 and 1
    order[36], order[35] = order[35], order[36]
    for i in order:
        assert rx.unprotect(wires[i]) == rtp(seqs[i])
    # After the wrap the sender used ROC 1: a fresh receiver (ROC 0) cannot authenticate it.
    _, fresh = pair(suite)
    with pytest.raises(SrtpError):
        fresh.unprotect(wires[-1])


def test_protecting_an_index_twice_is_refused() -> None:
    tx, _ = pair()
    tx.protect(rtp(7))
    with pytest.raises(SrtpError) as err:
        tx.protect(rtp(7, b"other payload"))  # same index, new plaintext: keystream reuse
    assert err.value.reason == "keystream_reuse"


# ---------------------------------------------------------------- MKI and SDES parameters


def test_mki_is_carried_before_the_tag_and_checked() -> None:
    tx, rx = pair(mki=b"\x00\x07")
    wire = tx.protect(rtp(1))
    assert wire[-12:-10] == b"\x00\x07"
    assert rx.unprotect(wire) == rtp(1)
    stranger = SrtpSession(SUITE_80, MASTER_KEY, MASTER_SALT, mki=b"\x00\x08")
    with pytest.raises(SrtpError) as err:
        stranger.unprotect(wire)
    assert err.value.reason == "mki"
    rtcp_wire = tx.protect_rtcp(rtcp_rr())
    assert rtcp_wire[-12:-10] == b"\x00\x07"
    assert rx.unprotect_rtcp(rtcp_wire) == rtcp_rr()


def test_unencrypted_srtp_is_clear_but_authenticated() -> None:
    tx, rx = pair(encrypt_rtp=False)
    wire = tx.protect(rtp(1))
    assert wire[:-10] == rtp(1)
    forged = bytearray(wire)
    forged[20] ^= 1
    with pytest.raises(SrtpError):
        rx.unprotect(bytes(forged))
    assert rx.unprotect(wire) == rtp(1)


def test_unauthenticated_srtp_has_no_tag_and_srtcp_still_has_one() -> None:
    tx, rx = pair(authenticate_rtp=False)
    wire = tx.protect(rtp(1))
    assert len(wire) == len(rtp(1)) and wire[12:] != rtp(1)[12:]
    assert rx.unprotect(wire) == rtp(1)
    assert len(tx.protect_rtcp(rtcp_rr())) == len(rtcp_rr()) + 4 + 10


def test_unencrypted_srtcp_clears_the_e_flag() -> None:
    tx, rx = pair(encrypt_rtcp=False)
    wire = tx.protect_rtcp(rtcp_rr())
    assert wire[: len(rtcp_rr())] == rtcp_rr() and wire[-14:-10] == b"\x00\x00\x00\x01"
    assert rx.unprotect_rtcp(wire) == rtcp_rr()


# ---------------------------------------------------------------- errors and factory


def test_bad_keys_and_packets_raise_srtp_error() -> None:
    with pytest.raises(SrtpError):
        SrtpSession(SUITE_80, MASTER_KEY[:15], MASTER_SALT)
    with pytest.raises(SrtpError):
        SrtpSession("AES_256_CM_HMAC_SHA1_80", MASTER_KEY, MASTER_SALT)
    tx, rx = pair()
    for junk in (b"", b"\x00" * 40, b"\x90" + b"\x00" * 13):  # empty, version 0, X past end
        with pytest.raises(SrtpError):
            tx.protect(junk)
        with pytest.raises(SrtpError):
            rx.unprotect(junk)
        with pytest.raises(SrtpError):
            rx.unprotect_rtcp(junk)


def test_factory_uses_ours_when_asked_or_when_libsrtp_cannot_do_it() -> None:
    assert isinstance(
        new_srtp_session(SUITE_80, MASTER_KEY, MASTER_SALT, prefer="python"), SrtpSession
    )
    assert isinstance(new_srtp_session(SUITE_80, MASTER_KEY, MASTER_SALT, mki=b"\x01"), SrtpSession)
    with pytest.raises(ValueError):
        new_srtp_session(SUITE_80, MASTER_KEY, MASTER_SALT, prefer="fastest")
    auto = new_srtp_session(SUITE_80, MASTER_KEY, MASTER_SALT)
    expected = LibSrtpSession if libsrtp_available() else SrtpSession
    assert isinstance(auto, expected)
    assert auto.protect(SRTP_PLAIN) == SRTP_CIPHER


def test_factory_falls_back_to_ours_without_libsrtp(monkeypatch: pytest.MonkeyPatch) -> None:
    import audio.srtp

    monkeypatch.setattr(audio.srtp, "libsrtp_available", lambda: False)
    session = new_srtp_session(SUITE_32, MASTER_KEY, MASTER_SALT)
    assert isinstance(session, SrtpSession)
    with pytest.raises(SrtpError):
        new_srtp_session(SUITE_80, MASTER_KEY, MASTER_SALT, prefer="libsrtp")


@needs_libsrtp
def test_factory_refuses_libsrtp_for_parameters_it_cannot_express() -> None:
    assert isinstance(
        new_srtp_session(SUITE_80, MASTER_KEY, MASTER_SALT, prefer="libsrtp"), LibSrtpSession
    )
    with pytest.raises(SrtpError):
        new_srtp_session(SUITE_80, MASTER_KEY, MASTER_SALT, mki=b"\x01", prefer="libsrtp")
    assert isinstance(
        new_srtp_session(SUITE_80, MASTER_KEY, MASTER_SALT, encrypt_rtp=False), SrtpSession
    )


# ---------------------------------------------------------------- live interop with libsrtp


@needs_libsrtp
@pytest.mark.parametrize("suite", [SUITE_80, SUITE_32])
def test_ours_and_libsrtp_interoperate_across_the_roc_wrap(suite: str) -> None:
    ours_tx, ours_rx = pair(suite)
    lib_tx = LibSrtpSession(suite, MASTER_KEY, MASTER_SALT)
    lib_rx = LibSrtpSession(suite, MASTER_KEY, MASTER_SALT)
    for i in range(200):
        seq = (65436 + i) & 0xFFFF
        plain = rtp(seq, bytes([i]) * 160)
        mine, theirs = ours_tx.protect(plain), lib_tx.protect(plain)
        assert mine == theirs  # byte for byte, ROC 1 after seq 65535
        assert lib_rx.unprotect(mine) == plain
        assert ours_rx.unprotect(theirs) == plain
        if i % 50 == 0:
            report = rtcp_rr(filler=i)
            mine_c, theirs_c = ours_tx.protect_rtcp(report), lib_tx.protect_rtcp(report)
            assert mine_c == theirs_c
            assert lib_rx.unprotect_rtcp(mine_c) == report
            assert ours_rx.unprotect_rtcp(theirs_c) == report


@needs_libsrtp
def test_libsrtp_adapter_reports_replay_and_tamper_as_srtp_error() -> None:
    tx, _ = pair()
    rx = LibSrtpSession(SUITE_80, MASTER_KEY, MASTER_SALT)
    wire = tx.protect(rtp(1))
    rx.unprotect(wire)
    with pytest.raises(SrtpError) as err:
        rx.unprotect(wire)
    assert err.value.reason == "replay"
    forged = bytearray(tx.protect(rtp(2)))
    forged[14] ^= 1
    with pytest.raises(SrtpError) as err:
        rx.unprotect(bytes(forged))
    assert err.value.reason == "auth"
    lib_tx = LibSrtpSession(SUITE_80, MASTER_KEY, MASTER_SALT)
    lib_tx.protect(rtp(3))
    with pytest.raises(SrtpError) as err:
        lib_tx.protect(rtp(3))
    assert err.value.reason == "keystream_reuse"


# ---------------------------------------------------------------- properties


@settings(max_examples=200, deadline=None)
@given(
    payload=st.binary(max_size=1400),
    seq=st.integers(0, 0xFFFF),
    ssrc=st.integers(0, 0xFFFFFFFF),
    suite=st.sampled_from([SUITE_80, SUITE_32]),
)
def test_round_trip_any_payload(payload: bytes, seq: int, ssrc: int, suite: str) -> None:
    tx, rx = pair(suite)
    plain = rtp(seq, payload, ssrc=ssrc)
    wire = tx.protect(plain)
    assert len(wire) == len(plain) + (10 if suite == SUITE_80 else 4)
    assert rx.unprotect(wire) == plain
    report = rtcp_rr(ssrc) + payload[: len(payload) // 4 * 4]
    assert rx.unprotect_rtcp(tx.protect_rtcp(report)) == report


@settings(max_examples=300, deadline=None)
@given(junk=st.binary(max_size=200))
def test_garbage_only_ever_raises_srtp_error(junk: bytes) -> None:
    _, rx = pair()
    for fn in (rx.unprotect, rx.unprotect_rtcp):
        with pytest.raises(SrtpError):
            fn(junk)


def test_oversized_payload_is_refused() -> None:
    tx, _ = pair()
    with pytest.raises(SrtpError):
        tx.protect(rtp(1, bytes(70000)))
