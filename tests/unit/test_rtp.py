"""RTP (RFC 3550 5.1, A.1, A.8): wire format, sender numbering and wrap, receiver statistics."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from audio.rtp import (
    RtpError,
    RtpPacket,
    RtpReceiverStats,
    RtpSender,
    SymmetricRtpLatch,
    seq_delta,
    ts_delta,
)
from firmware.sip.ids import SeededIds

# -- wire format -----------------------------------------------------------------------------


def test_parse_minimal_pcmu_packet() -> None:
    data = bytes.fromhex("80 00 1234 0000a0a0 deadbeef") + b"\xff" * 160
    p = RtpPacket.parse(data)
    assert (p.payload_type, p.sequence, p.timestamp, p.ssrc) == (0, 0x1234, 0xA0A0, 0xDEADBEEF)
    assert p.marker is False and p.csrcs == () and p.extension is None and p.padding == 0
    assert p.payload == b"\xff" * 160
    assert p.serialize() == data


def test_marker_and_dynamic_payload_type() -> None:
    data = bytes.fromhex("80 e5 ffff ffffffff 00000001") + b"\x01\x02"
    p = RtpPacket.parse(data)
    assert p.marker is True and p.payload_type == 101
    assert p.serialize() == data


def test_csrc_extension_and_padding_all_at_once() -> None:
    data = bytes.fromhex(
        "b2 08 0001 00000010 11111111"  # V=2 P=1 X=1 CC=2, PT 8
        "22222222 33333333"  # two CSRCs
        "bede 0001 10aa0000"  # RFC 8285 one-byte extension header, one word
        "d5d5d5"  # payload
        "000003"  # three octets of padding, the last one counting them
    )
    p = RtpPacket.parse(data)
    assert p.csrcs == (0x22222222, 0x33333333)
    assert p.extension == (0xBEDE, bytes.fromhex("10aa0000"))
    assert p.payload == b"\xd5\xd5\xd5"
    assert p.padding == 3
    assert p.serialize() == data


@pytest.mark.parametrize(
    ("hexdata", "message"),
    [
        ("80 00 0001 00000000", "too short"),
        ("40 00 0001 00000000 00000000", "version 1"),
        ("c0 00 0001 00000000 00000000", "version 3"),
        ("83 00 0001 00000000 00000000 11111111", "CSRC count 3"),
        ("90 00 0001 00000000 00000000 bede", "no room for the extension"),
        ("90 00 0001 00000000 00000000 bede 0002 00000000", "overruns"),
        ("a0 00 0001 00000000 00000000 aa 00", "padding count is 0"),
        ("a0 00 0001 00000000 00000000 aa 09", "exceeds"),
        ("80 c8 0001 00000000 00000000", "RTCP packet type 200"),
        ("80 4c 0001 00000000 00000000", "RTCP packet type 204"),
    ],
)
def test_malformed_packets_raise_rtp_error_naming_the_defect(hexdata: str, message: str) -> None:
    with pytest.raises(RtpError, match=message):
        RtpPacket.parse(bytes.fromhex(hexdata))


def test_serialize_rejects_unencodable_fields() -> None:
    with pytest.raises(RtpError, match="payload type 128"):
        RtpPacket(128, 0, 0, 0).serialize()
    with pytest.raises(RtpError, match="16 CSRCs"):
        RtpPacket(0, 0, 0, 0, csrcs=tuple(range(16))).serialize()
    with pytest.raises(RtpError, match="multiple of 4"):
        RtpPacket(0, 0, 0, 0, extension=(1, b"abc")).serialize()


@given(
    pt=st.integers(0, 127).filter(lambda x: not 72 <= x <= 76),
    seq=st.integers(0, 0xFFFF),
    ts=st.integers(0, 0xFFFFFFFF),
    ssrc=st.integers(0, 0xFFFFFFFF),
    marker=st.booleans(),
    csrcs=st.lists(st.integers(0, 0xFFFFFFFF), max_size=15),
    ext=st.none()
    | st.tuples(
        st.integers(0, 0xFFFF), st.binary(max_size=12).map(lambda b: b + bytes(-len(b) % 4))
    ),
    payload=st.binary(max_size=64),
    padding=st.integers(0, 255),
)
def test_round_trip(pt, seq, ts, ssrc, marker, csrcs, ext, payload, padding) -> None:
    p = RtpPacket(pt, seq, ts, ssrc, payload, marker, tuple(csrcs), ext, padding)
    assert RtpPacket.parse(p.serialize()) == p


def test_signed_deltas_take_the_short_way_round() -> None:
    assert seq_delta(0, 0xFFFF) == 1 and seq_delta(0xFFFF, 0) == -1
    assert ts_delta(80, 0xFFFFFFB0) == 160 and ts_delta(0xFFFFFFB0, 80) == -160


# -- sender ----------------------------------------------------------------------------------


class MaxIds:
    """randbelow(n) returns n - 1: SSRC, sequence and timestamp all start one step from wrap."""

    def token(self, nbytes: int = 8) -> str:
        return "00" * nbytes

    def randbelow(self, n: int) -> int:
        return n - 1


def test_sender_takes_ssrc_seq_and_timestamp_from_the_id_source_and_wraps() -> None:
    s = RtpSender(MaxIds(), payload_type=0, clock_rate=8000)
    first = RtpPacket.parse(s.send(b"\x7f" * 160, 160))
    second = RtpPacket.parse(s.send(b"\x7f" * 160, 160))
    assert first.ssrc == second.ssrc == 0xFFFFFFFF
    assert (first.sequence, first.timestamp) == (0xFFFF, 0xFFFFFFFF)
    assert (second.sequence, second.timestamp) == (0, 159)  # both wrapped
    assert first.marker and not second.marker
    assert s.packets_sent == 2 and s.octets_sent == 320


def test_seeded_ids_give_repeatable_and_distinct_streams() -> None:
    a1 = RtpSender(SeededIds("a"), 0, 8000).send(b"", 160)
    a2 = RtpSender(SeededIds("a"), 0, 8000).send(b"", 160)
    b = RtpSender(SeededIds("b"), 0, 8000).send(b"", 160)
    assert a1 == a2
    assert a1[4:12] != b[4:12]  # timestamp and SSRC differ


def test_g722_timestamp_advances_at_the_8000_hz_clock_rate() -> None:
    # 20 ms of G.722 is 320 samples of 16 kHz PCM but only 160 RTP clock ticks (RFC 3551 4.5.2).
    s = RtpSender(SeededIds(), payload_type=9, clock_rate=8000)
    ts = [
        RtpPacket.parse(s.send(b"\0" * 160, 20 * s.clock_rate // 1000)).timestamp for _ in range(3)
    ]
    assert [ts_delta(b, a) for a, b in zip(ts, ts[1:], strict=False)] == [160, 160]


def test_marker_on_talkspurt_start_after_skip_and_explicit_override() -> None:
    s = RtpSender(SeededIds(), 0, 8000)
    p0 = RtpPacket.parse(s.send(b"", 160))
    p1 = RtpPacket.parse(s.send(b"", 160))
    s.skip(800)  # 100 ms of suppressed silence: time passes, no packet, no sequence number
    p2 = RtpPacket.parse(s.send(b"", 160))
    p3 = RtpPacket.parse(s.send(b"", 160, marker=True))
    assert [p.marker for p in (p0, p1, p2, p3)] == [True, False, True, True]
    assert seq_delta(p2.sequence, p1.sequence) == 1
    assert ts_delta(p2.timestamp, p1.timestamp) == 160 + 800
    s.talkspurt()
    assert RtpPacket.parse(s.send(b"", 160, marker=False)).marker is False


def test_timestamp_override_for_events_keeps_the_media_clock_running() -> None:
    s = RtpSender(SeededIds(), 0, 8000)
    start = s.timestamp
    events = [
        RtpPacket.parse(s.send(b"\x05\x0a\x00\xa0", 160, payload_type=101, timestamp=start))
        for _ in range(3)
    ]
    audio = RtpPacket.parse(s.send(b"\xff" * 160, 160))
    assert {e.timestamp for e in events} == {start} and {e.payload_type for e in events} == {101}
    assert ts_delta(audio.timestamp, start) == 480 and audio.payload_type == 0


# -- receiver statistics ---------------------------------------------------------------------


def pkt(seq: int, ts: int = 0, ssrc: int = 0x1234, payload: bytes = b"x" * 160) -> RtpPacket:
    return RtpPacket(0, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc, payload)


def feed(stats: RtpReceiverStats, seqs: list[int], ssrc: int = 0x1234) -> list[bool]:
    return [stats.update(pkt(s, s * 160, ssrc), s * 0.02) for s in seqs]


def test_probation_needs_two_sequential_packets() -> None:
    rx = RtpReceiverStats(8000)
    assert feed(rx, [100, 101, 102]) == [False, True, True]
    assert rx.received == 2 and rx.expected == 2 and rx.lost == 0 and rx.invalid == 1


def test_probation_restarts_on_a_gap() -> None:
    rx = RtpReceiverStats(8000)
    assert feed(rx, [100, 105, 106, 107]) == [False, False, True, True]
    assert rx.base_ext == 106


def test_loss_and_fraction_lost_per_interval() -> None:
    rx = RtpReceiverStats(8000, probation_packets=0)
    seqs = [s for s in range(100) if s not in (10, 20, 30, 40, 50)]
    assert all(feed(rx, seqs))
    assert (rx.expected, rx.received, rx.lost) == (100, 95, 5)
    assert rx.take_interval() == (5 << 8) // 100  # 12/256
    feed(rx, list(range(100, 150)))
    assert rx.take_interval() == 0  # nothing lost since the last report
    assert rx.lost == 5


def test_sequence_wrap_extends_the_sequence_number() -> None:
    rx = RtpReceiverStats(8000, probation_packets=0)
    feed(rx, list(range(65530, 65536 + 14)))
    assert rx.cycles == 1 << 16 and rx.max_seq == 13
    assert rx.extended_max == 65536 + 13
    assert rx.expected == 20 and rx.lost == 0


def test_reordered_and_duplicate_packets_are_told_apart() -> None:
    rx = RtpReceiverStats(8000, probation_packets=0)
    assert feed(rx, [1, 2, 4, 3, 4, 2, 5]) == [True, True, True, True, False, False, True]
    assert (rx.reordered, rx.duplicates, rx.received, rx.lost) == (1, 2, 5, 0)


def test_reordered_across_the_wrap() -> None:
    rx = RtpReceiverStats(8000, probation_packets=0)
    feed(rx, [65534, 0, 65535, 1])
    assert (rx.reordered, rx.lost, rx.extended_max) == (1, 0, 65537)


def test_packet_older_than_the_first_widens_the_expected_range() -> None:
    rx = RtpReceiverStats(8000, probation_packets=0)
    feed(rx, [11, 12, 10])
    assert (rx.expected, rx.received, rx.lost) == (3, 3, 0)


def test_big_jump_needs_confirmation_then_restarts_counting() -> None:
    rx = RtpReceiverStats(8000, probation_packets=0)
    feed(rx, list(range(10)))
    assert feed(rx, [5000]) == [False]  # a stray packet is not believed
    assert feed(rx, [10]) == [True]
    assert feed(rx, [20000, 20001]) == [False, True]  # the source restarted: follow it
    assert rx.base_ext == 20001 and rx.received == 1 and rx.lost == 0


def test_new_ssrc_restarts_the_statistics() -> None:
    rx = RtpReceiverStats(8000)
    feed(rx, [1, 2, 3])
    assert feed(rx, [500, 501], ssrc=0x9999) == [False, True]
    assert rx.ssrc == 0x9999 and rx.received == 1


def test_interarrival_jitter_follows_rfc3550_a8() -> None:
    rx = RtpReceiverStats(8000, probation_packets=0)
    # Transit alternates by 10 ms (80 timestamp units): |D| = 80 for every packet after the first.
    n = 40
    for i in range(n):
        rx.update(pkt(i, i * 160), i * 0.02 + (0.01 if i % 2 else 0.0))
    expected = 80 * (1 - (15 / 16) ** (n - 1))
    assert rx.jitter == pytest.approx(expected, rel=1e-9)
    assert rx.jitter_ms == pytest.approx(expected / 8, rel=1e-9)


def test_jitter_is_zero_for_constant_transit_across_timestamp_wrap() -> None:
    rx = RtpReceiverStats(8000, probation_packets=0)
    base = 0xFFFFFFFF - 800
    for i in range(20):
        rx.update(pkt(i, base + i * 160), 100.0 + i * 0.02)
    assert rx.jitter == pytest.approx(0.0, abs=1e-6)


def test_event_packets_can_be_kept_out_of_the_jitter_estimate() -> None:
    rx = RtpReceiverStats(8000, probation_packets=0)
    rx.update(pkt(0, 0), 0.0)
    for i in range(1, 5):  # RFC 4733 packets repeat the start timestamp
        rx.update(pkt(i, 0), i * 0.02, for_jitter=False)
    rx.update(pkt(5, 800), 0.1)
    assert rx.jitter == 0.0 and rx.received == 6


def test_bytes_received_count_payload_octets() -> None:
    rx = RtpReceiverStats(8000, probation_packets=0)
    feed(rx, [1, 2, 2, 3])
    assert rx.octets_received == 3 * 160


# -- symmetric RTP -----------------------------------------------------------------------------


def test_latch_disabled_keeps_the_sdp_address() -> None:
    latch = SymmetricRtpLatch(("192.0.2.1", 4000))
    assert latch.accept(("198.51.100.7", 33000)) is False
    assert latch.remote == ("192.0.2.1", 4000)


def test_latch_enabled_follows_the_first_source_once_until_the_sdp_changes() -> None:
    latch = SymmetricRtpLatch(("10.0.0.5", 4000), enabled=True)
    assert latch.accept(("10.0.0.5", 4000)) is False  # peer is where it said: nothing to do
    assert latch.accept(("203.0.113.9", 61000)) is True
    assert latch.remote == ("203.0.113.9", 61000)
    assert latch.accept(("203.0.113.66", 1234)) is False  # no hijack by a later source
    assert latch.remote == ("203.0.113.9", 61000)
    latch.set_sdp_address(("10.0.0.6", 4002))
    assert latch.remote == ("10.0.0.6", 4002)


@given(st.data())
def test_any_arrival_order_with_duplicates_counts_every_packet_once(data: st.DataObject) -> None:
    n = data.draw(st.integers(2, 100), label="packets")
    first = data.draw(st.integers(0, 0xFFFF), label="first seq")  # any start: wraps often
    order = data.draw(st.permutations(range(n)), label="order")
    dups = data.draw(st.lists(st.integers(0, n - 1), max_size=10), label="duplicated")
    arrivals = list(order)
    for d in dups:
        after = arrivals.index(d)
        arrivals.insert(data.draw(st.integers(after + 1, len(arrivals))), d)
    rx = RtpReceiverStats(8000, probation_packets=0)
    highest = -1
    reordered = 0
    seen: set[int] = set()
    for i in arrivals:
        if i not in seen and i < highest:
            reordered += 1
        seen.add(i)
        highest = max(highest, i)
        rx.update(pkt(first + i, i * 160), i * 0.02)
    assert (rx.received, rx.lost, rx.duplicates) == (n, 0, len(dups))
    assert rx.reordered == reordered
    assert rx.extended_max - rx.base_ext == n - 1
