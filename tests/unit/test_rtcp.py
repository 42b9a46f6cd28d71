"""RTCP (RFC 3550 6): packet bytes, compound parsing, RTT, report interval, session exchange."""

from __future__ import annotations

import pytest

from audio.rtcp import (
    Bye,
    OtherRtcp,
    ReceiverReport,
    ReportBlock,
    RtcpError,
    RtcpPacket,
    RtcpSession,
    Sdes,
    SenderReport,
    build_compound,
    ntp_from_seconds,
    ntp_middle32,
    ntp_to_seconds,
    parse_compound,
    rtcp_interval,
    rtt_seconds,
    serialize,
)
from audio.rtp import RtpPacket, RtpReceiverStats, RtpSender
from firmware.sip.ids import SeededIds

# -- NTP and RTT -----------------------------------------------------------------------------


def test_rtt_example_from_rfc3550_figure_2() -> None:
    # A = 0xb710:8000 (46864.500 s), DLSR = 0x0005:4000 (5.250 s), LSR = 0xb705:2000
    # (46853.125 s): A - DLSR - LSR = 0x0006:2000 = 6.125 s.
    assert rtt_seconds(0xB7108000, 0xB7052000, 0x00054000) == 6.125


def test_rtt_unavailable_without_sr_or_when_negative() -> None:
    assert rtt_seconds(0xB7108000, 0, 0) is None
    assert rtt_seconds(0xB7108000, 0xB7108000, 0x00010000) is None


def test_rtt_across_the_32_bit_wrap_of_the_middle_bits() -> None:
    assert rtt_seconds(0x00002000, 0xFFFF0000, 0x00008000) == pytest.approx(0.625)


def test_ntp_fixed_point_conversion() -> None:
    ntp = ntp_from_seconds(3_913_056_000.75)
    assert ntp == (3_913_056_000 << 32) | 0xC0000000
    assert ntp_to_seconds(ntp) == 3_913_056_000.75
    assert ntp_middle32(ntp) == ((3_913_056_000 & 0xFFFF) << 16) | 0xC000


# -- wire format -----------------------------------------------------------------------------


def test_sender_report_with_one_block_bytes() -> None:
    sr = SenderReport(
        ssrc=0x11223344,
        ntp=0xE9E1C0F2_80000000,
        rtp_timestamp=0x0000A000,
        packet_count=50,
        octet_count=8000,
        reports=[ReportBlock(0x55667788, 12, 5, 0x0001000D, 40, 0xC0F28000, 0x00008000)],
    )
    data = serialize(sr)
    assert data == bytes.fromhex(
        "81c8000c 11223344 e9e1c0f2 80000000 0000a000 00000032 00001f40"
        "55667788 0c000005 0001000d 00000028 c0f28000 00008000"
    )
    assert parse_compound(data) == [sr]


def test_empty_receiver_report_bytes() -> None:
    assert serialize(ReceiverReport(0xCAFEBABE)) == bytes.fromhex("80c90001 cafebabe")


def test_negative_cumulative_loss_is_24_bit_twos_complement() -> None:
    rb = ReportBlock(1, 0, -3, 10, 0)
    assert rb.serialize()[4:8] == bytes.fromhex("00fffffd")
    assert ReportBlock.parse(rb.serialize(), 0).cumulative_lost == -3


def test_sdes_cname_bytes_are_null_terminated_and_aligned() -> None:
    data = serialize(Sdes([(0x01020304, [(1, b"alice")])]))
    # chunk: ssrc, CNAME(1) len 5 "alice", then one null octet ends the list at a word boundary
    assert data == bytes.fromhex("81ca0003 01020304 0105616c 69636500")
    data8 = serialize(Sdes([(0x01020304, [(1, b"bobby!")])]))
    assert data8 == bytes.fromhex("81ca0004 01020304 0106626f 62627921 00000000")
    assert parse_compound(data8)[0] == Sdes([(0x01020304, [(1, b"bobby!")])])


def test_bye_with_reason_bytes() -> None:
    data = serialize(Bye([0xAABBCCDD], "done"))
    assert data == bytes.fromhex("81cb0003 aabbccdd 04646f6e 65000000")
    assert parse_compound(data) == [Bye([0xAABBCCDD], "done")]


def test_compound_round_trip_keeps_unknown_packets() -> None:
    app = OtherRtcp(204, 1, b"\x00\x00\x00\x01NAME")
    packets: list[RtcpPacket] = [
        ReceiverReport(7, [ReportBlock(9, 0, 0, 100, 3)]),
        Sdes([(7, [(1, b"x@y")])]),
        app,
        Bye([7]),
    ]
    assert parse_compound(build_compound(packets)) == packets


def test_compound_must_start_with_a_report() -> None:
    with pytest.raises(RtcpError, match="SR or RR"):
        build_compound([Bye([1])])


@pytest.mark.parametrize(
    ("hexdata", "message"),
    [
        ("80c9", "too short"),
        ("40c90001 cafebabe", "version 1"),
        ("80c90002 cafebabe", "overruns"),
        ("81c90001 cafebabe", "report blocks"),
        ("a0c90001 cafebabe 80c90001 cafebabe", "only allowed on the last"),
        ("a0c90001 cafeba00", "bad RTCP padding"),
        ("80c90001 cafebabe 80", "trailing"),
        ("81ca0001 01020304", "not terminated"),
        ("81ca0002 01020304 0109aaaa", "overruns the packet"),
        ("81cb0000", "BYE announces 1"),
        ("80c80001 cafebabe", "SR shorter"),
    ],
)
def test_malformed_rtcp_raises(hexdata: str, message: str) -> None:
    with pytest.raises(RtcpError, match=message):
        parse_compound(bytes.fromhex(hexdata))


def test_padding_on_the_last_packet_is_stripped() -> None:
    data = bytes.fromhex("a1cb0002 aabbccdd 00000004")
    assert parse_compound(data) == [Bye([0xAABBCCDD])]


# -- interval --------------------------------------------------------------------------------

COMP = 2.718281828459045 - 1.5


def test_interval_uses_the_5_second_minimum_and_randomises_from_half_to_one_and_a_half() -> None:
    lo = rtcp_interval(lambda n: 0, avg_rtcp_size=100)
    hi = rtcp_interval(lambda n: n - 1, avg_rtcp_size=100)
    assert lo == pytest.approx(5.0 * 0.5 / COMP)
    assert hi == pytest.approx(5.0 * 1.5 / COMP, rel=1e-5)
    assert rtcp_interval(lambda n: 0, avg_rtcp_size=100, initial=True) == pytest.approx(
        2.5 * 0.5 / COMP
    )


def test_interval_grows_with_report_size_over_low_bandwidth() -> None:
    # 8 kbit/s session: RTCP gets 50 octets/s; two members of 1000 octets each -> 40 s.
    assert rtcp_interval(lambda n: n // 2, avg_rtcp_size=1000, session_bw=8000) == pytest.approx(
        40.0 / COMP
    )


def test_interval_splits_bandwidth_when_senders_are_few() -> None:
    # 10 members, 2 senders: senders share 25 % of the RTCP bandwidth between themselves.
    t = rtcp_interval(lambda n: n // 2, avg_rtcp_size=1000, session_bw=8000, members=10, senders=2)
    assert t == pytest.approx(1000 * 2 / (50 * 0.25) / COMP)
    t = rtcp_interval(
        lambda n: n // 2, avg_rtcp_size=1000, session_bw=8000, members=10, senders=2, we_sent=False
    )
    assert t == pytest.approx(1000 * 8 / (50 * 0.75) / COMP)


# -- session ---------------------------------------------------------------------------------


class Side:
    """One endpoint's RTP sender, receiver statistics and RTCP session."""

    def __init__(self, seed: str, cname: str, ntp_offset: float) -> None:
        ids = SeededIds(seed)
        self.tx = RtpSender(ids, 0, 8000)
        self.rx = RtpReceiverStats(8000, probation_packets=0)
        self.rtcp = RtcpSession(
            sender=self.tx, receiver=self.rx, cname=cname, ids=ids, now=0.0, ntp_offset=ntp_offset
        )


def stream(
    src: Side,
    dst: Side,
    start: float,
    frames: int,
    delay: float,
    skip: frozenset[int] = frozenset(),
) -> None:
    for i in range(frames):
        data = src.tx.send(b"\xff" * 160, 160)
        if i not in skip:
            dst.rx.update(RtpPacket.parse(data), start + i * 0.02 + delay)


def test_first_report_is_due_within_the_initial_interval() -> None:
    a = Side("a", "a@host", 1e9)
    due = a.rtcp.get_timer()
    assert 2.5 * 0.5 / COMP <= due <= 2.5 * 1.5 / COMP
    assert a.rtcp.handle_timer(due - 0.001) is None
    data = a.rtcp.handle_timer(due)
    assert data is not None
    first, sdes = parse_compound(data)
    assert isinstance(first, ReceiverReport) and first.reports == []  # nothing sent or received
    assert isinstance(sdes, Sdes) and sdes.cname(a.tx.ssrc) == "a@host"
    assert 5.0 * 0.5 / COMP <= a.rtcp.get_timer() - due <= 5.0 * 1.5 / COMP


def test_sr_rr_exchange_reports_loss_jitter_and_round_trip_time() -> None:
    # Different NTP offsets on the two sides: RTT must not depend on the clocks agreeing.
    a = Side("a", "a@host", 3.9e9)
    b = Side("b", "b@host", 3.9e9 + 1234.5)
    one_way = 0.030
    stream(a, b, 0.0, 100, one_way, skip=frozenset({10, 11, 50}))
    sr_at = 2.0
    sr_data = a.rtcp.build_report(sr_at)
    sr = parse_compound(sr_data)[0]
    assert isinstance(sr, SenderReport)
    assert (sr.packet_count, sr.octet_count) == (100, 16000)
    assert sr.rtp_timestamp == a.tx.timestamp
    assert sr.ntp == ntp_from_seconds(sr_at + 3.9e9)
    b.rtcp.receive(sr_data, sr_at + one_way)
    rr_at = sr_at + one_way + 0.25
    rr_data = b.rtcp.build_report(rr_at)
    rr = parse_compound(rr_data)[0]
    assert isinstance(rr, ReceiverReport)  # b sent no RTP
    (block,) = rr.reports
    assert block.ssrc == a.tx.ssrc
    assert block.cumulative_lost == 3 and block.fraction_lost == (3 << 8) // 100
    assert block.highest_seq == b.rx.extended_max
    assert block.lsr == ntp_middle32(sr.ntp)
    assert block.dlsr == int(0.25 * 65536)
    a.rtcp.receive(rr_data, rr_at + one_way)
    assert a.rtcp.rtt == pytest.approx(2 * one_way, abs=1 / 65536)
    assert a.rtcp.remote_fraction_lost == pytest.approx(7 / 256)
    assert a.rtcp.remote_cname == "b@host"
    stats = a.rtcp.stats()
    assert stats["packets_sent"] == 100 and stats["bytes_sent"] == 16000
    assert stats["rtt_ms"] == pytest.approx(60.0, abs=0.1)
    assert stats["remote_packets_lost"] == 3
    bstats = b.rtcp.stats()
    assert bstats["packets_received"] == 97 and bstats["packets_lost"] == 3
    assert bstats["bytes_received"] == 97 * 160
    assert bstats["fraction_lost"] == 0.03
    assert bstats["jitter_ms"] == 0.0  # constant transit
    assert bstats["rtt_ms"] is None  # b never got a report about its own stream


def test_report_switches_from_sr_to_rr_when_we_stop_sending() -> None:
    a = Side("a", "a@host", 0.0)
    b = Side("b", "b@host", 0.0)
    stream(a, b, 0.0, 10, 0.01)
    assert isinstance(parse_compound(a.rtcp.build_report(1.0))[0], SenderReport)
    assert isinstance(parse_compound(a.rtcp.build_report(6.0))[0], ReceiverReport)


def test_bye_is_reported_with_its_reason() -> None:
    a = Side("a", "a@host", 0.0)
    b = Side("b", "b@host", 0.0)
    stream(a, b, 0.0, 5, 0.01)
    data = a.rtcp.bye(1.0, "call ended")
    packets = parse_compound(data)
    assert isinstance(packets[0], SenderReport) and packets[-1] == Bye([a.tx.ssrc], "call ended")
    b.rtcp.receive(data, 1.01)
    assert b.rtcp.remote_bye == "call ended"


def test_bye_for_another_source_is_ignored() -> None:
    a = Side("a", "a@host", 0.0)
    b = Side("b", "b@host", 0.0)
    stream(a, b, 0.0, 5, 0.01)
    b.rtcp.receive(build_compound([ReceiverReport(1), Bye([0x0BADF00D])]), 1.0)
    assert b.rtcp.remote_bye is None


def test_malformed_rtcp_is_ignored_by_the_session() -> None:
    a = Side("a", "a@host", 0.0)
    assert a.rtcp.receive(b"\x80\xc9\x00\x05garbage", 1.0) == []
    assert a.rtcp.reports_received == 0
