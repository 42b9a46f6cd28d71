"""RFC 3261 section 17 transactions (with RFC 6026 Accepted), driven with literal times."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.sip.message import SipRequest, SipResponse, make_response
from firmware.sip.parser import parse_message
from firmware.sip.transaction import (
    AckFor2xx,
    InviteClientTransaction,
    InviteServerTransaction,
    NewRequest,
    NonInviteClientTransaction,
    NonInviteServerTransaction,
    ResponseReceived,
    StrayResponse,
    Timeout,
    Timers,
    TransactionLayer,
    TransportError,
    TxState,
    build_cancel,
)

PEER = ("udp", "192.0.2.2", 5060)
OTHER = ("udp", "192.0.2.3", 5060)


def request(
    method: str = "INVITE",
    *,
    branch: str | None = "z9hG4bKbr1",
    cseq: int = 1,
    cseq_method: str | None = None,
    to_tag: str | None = None,
    sent_by: str = "192.0.2.1:5060",
    uri: str = "sip:bob@example.com",
    extra: str = "",
) -> SipRequest:
    via = f"SIP/2.0/UDP {sent_by}" + (f";branch={branch}" if branch else "")
    to = "<sip:bob@example.com>" + (f";tag={to_tag}" if to_tag else "")
    raw = (
        f"{method} {uri} SIP/2.0\r\n"
        f"Via: {via}\r\n"
        "Max-Forwards: 70\r\n"
        "From: Alice <sip:alice@example.com>;tag=ftag\r\n"
        f"To: {to}\r\n"
        "Call-ID: call-1@192.0.2.1\r\n"
        f"CSeq: {cseq} {cseq_method or method}\r\n"
        f"{extra}"
        "Content-Length: 0\r\n\r\n"
    )
    msg = parse_message(raw.encode())
    assert isinstance(msg, SipRequest)
    return msg


def response(req: SipRequest, status: int, to_tag: str | None = "ttag") -> SipResponse:
    """A response as the peer would put it on the wire (round-tripped through the parser)."""
    msg = parse_message(make_response(req, status, to_tag=to_tag).serialize())
    assert isinstance(msg, SipResponse)
    return msg


def sent(layer: TransactionLayer) -> list[bytes]:
    out = layer.drain()
    assert all(o.dest is not None for o in out)
    return [o.data for o in out]


def fire_all(layer: TransactionLayer, until: float) -> list[float]:
    """Run the layer's timer until ``until``; return the times at which something was sent."""
    times = []
    while (deadline := layer.get_timer()) is not None and deadline <= until:
        layer.handle_timer(deadline)
        if layer.drain():
            times.append(deadline)
    return times


# ---------------------------------------------------------------------------------------------
# Timers
# ---------------------------------------------------------------------------------------------
def test_timer_values_derive_from_t1_t2_t4() -> None:
    t = Timers()
    assert (t.a, t.b, t.e, t.f, t.g, t.h) == (0.5, 32.0, 0.5, 32.0, 0.5, 32.0)
    assert (t.d(False), t.d(True)) == (32.0, 0.0)
    assert (t.i(False), t.i(True)) == (5.0, 0.0)
    assert (t.j(False), t.j(True)) == (32.0, 0.0)
    assert (t.k(False), t.k(True)) == (5.0, 0.0)
    assert (t.l, t.m) == (32.0, 32.0)
    slow = Timers(t1=1.0, t2=8.0, t4=10.0)
    assert (slow.b, slow.f, slow.h, slow.j(False), slow.k(False), slow.i(False)) == (
        64.0,
        64.0,
        64.0,
        64.0,
        10.0,
        10.0,
    )
    assert slow.d(False) == 32.0  # D is a fixed "more than 32 s", not derived from T1


# ---------------------------------------------------------------------------------------------
# INVITE client transaction
# ---------------------------------------------------------------------------------------------
def test_invite_client_timer_a_doubles_without_cap_then_timer_b_times_out() -> None:
    layer = TransactionLayer()
    invite = request()
    tx = layer.send_request(invite, PEER, reliable=False, now=0.0)
    assert isinstance(tx, InviteClientTransaction) and tx.state is TxState.CALLING
    out = layer.drain()
    assert [(o.dest, o.data) for o in out] == [(PEER, invite.serialize())]
    assert layer.get_timer() == 0.5
    assert tx.timer_deadline("B") == 32.0
    # Intervals 0.5, 1, 2, 4, 8, 16: no T2 cap for INVITE requests.
    times = []
    while (deadline := layer.get_timer()) is not None and deadline < 32.0:
        assert layer.handle_timer(deadline) == []
        assert sent(layer) == [invite.serialize()]
        times.append(deadline)
    assert times == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    events = layer.handle_timer(32.0)
    assert len(events) == 1 and isinstance(events[0], Timeout) and events[0].tx is tx
    assert tx.state is TxState.TERMINATED
    assert layer.client_transactions == [] and layer.get_timer() is None
    assert sent(layer) == []


def test_invite_client_reliable_never_retransmits() -> None:
    layer = TransactionLayer()
    tx = layer.send_request(request(), PEER, reliable=True, now=10.0)
    assert len(sent(layer)) == 1
    assert layer.get_timer() == 42.0
    events = layer.handle_timer(42.0)
    assert [type(e) for e in events] == [Timeout] and sent(layer) == []
    assert tx.state is TxState.TERMINATED


def test_invite_client_provisional_stops_retransmissions_and_timer_b() -> None:
    layer = TransactionLayer()
    invite = request()
    tx = layer.send_request(invite, PEER, reliable=False, now=0.0)
    layer.drain()
    ringing = response(invite, 180)
    events = layer.receive(ringing, PEER, reliable=False, now=0.3)
    assert len(events) == 1 and isinstance(events[0], ResponseReceived)
    assert events[0].client_tx is tx and events[0].response.status == 180
    assert tx.state is TxState.PROCEEDING
    assert layer.get_timer() is None  # A and B are dead in Proceeding
    # Further provisionals also pass up.
    events = layer.receive(response(invite, 183), PEER, reliable=False, now=1.0)
    assert [e.response.status for e in events if isinstance(e, ResponseReceived)] == [183]
    assert sent(layer) == []


ACK_486 = (
    b"ACK sip:bob@example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKbr1\r\n"
    b"Route: <sip:p1.example.com;lr>\r\n"
    b"Route: <sip:p2.example.com;lr>\r\n"
    b"Max-Forwards: 70\r\n"
    b"From: Alice <sip:alice@example.com>;tag=ftag\r\n"
    b"To: <sip:bob@example.com>;tag=ttag\r\n"
    b"Call-ID: call-1@192.0.2.1\r\n"
    b"CSeq: 1 ACK\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def test_invite_client_non2xx_is_acked_per_17_1_1_3_and_timer_d_runs_32s() -> None:
    layer = TransactionLayer()
    invite = request(extra="Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\n")
    tx = layer.send_request(invite, PEER, reliable=False, now=0.0)
    layer.drain()
    layer.receive(response(invite, 100, to_tag=None), PEER, reliable=False, now=0.1)
    busy = response(invite, 486)
    events = layer.receive(busy, PEER, reliable=False, now=2.0)
    assert len(events) == 1 and isinstance(events[0], ResponseReceived)
    assert events[0].response.status == 486
    assert tx.state is TxState.COMPLETED
    out = layer.drain()
    assert [(o.dest, o.data) for o in out] == [(PEER, ACK_486)]
    # A retransmitted 486 means the ACK was lost: ACK again, tell nobody.
    assert layer.receive(busy, PEER, reliable=False, now=3.0) == []
    assert sent(layer) == [ACK_486]
    assert layer.get_timer() == 34.0  # Timer D: 32 s after the 486
    assert layer.handle_timer(33.9) == [] and tx.state is TxState.COMPLETED
    assert layer.handle_timer(34.0) == []
    assert tx.state is TxState.TERMINATED and layer.client_transactions == []
    # After D the 486 is a stray.
    events = layer.receive(busy, PEER, reliable=False, now=35.0)
    assert [type(e) for e in events] == [StrayResponse]


def test_invite_client_non2xx_on_reliable_transport_terminates_at_once() -> None:
    layer = TransactionLayer()
    invite = request()
    tx = layer.send_request(invite, PEER, reliable=True, now=0.0)
    layer.drain()
    layer.receive(response(invite, 603), PEER, reliable=True, now=1.0)
    assert len(sent(layer)) == 1  # the ACK
    assert tx.state is TxState.TERMINATED and layer.get_timer() is None


def test_invite_client_2xx_enters_accepted_and_passes_retransmissions_up() -> None:
    layer = TransactionLayer()
    invite = request()
    tx = layer.send_request(invite, PEER, reliable=False, now=0.0)
    layer.drain()
    ok = response(invite, 200)
    events = layer.receive(ok, PEER, reliable=False, now=0.2)
    assert [type(e) for e in events] == [ResponseReceived]
    assert tx.state is TxState.ACCEPTED
    assert sent(layer) == []  # the TU ACKs a 2xx, never the transaction
    assert layer.get_timer() == pytest.approx(32.2)  # Timer M
    # 2xx retransmissions (maybe from other forks) still go up so the UA can re-ACK.
    for t in (0.7, 1.7):
        events = layer.receive(ok, PEER, reliable=False, now=t)
        assert len(events) == 1 and isinstance(events[0], ResponseReceived)
        assert events[0].client_tx is tx
    # Non-2xx in Accepted is dropped.
    assert layer.receive(response(invite, 500), PEER, reliable=False, now=2.0) == []
    assert sent(layer) == []
    layer.handle_timer(32.2)
    assert tx.state is TxState.TERMINATED
    events = layer.receive(ok, PEER, reliable=False, now=40.0)
    assert len(events) == 1 and isinstance(events[0], StrayResponse)
    assert events[0].source == PEER


def test_late_timer_tick_fires_every_due_timer_in_order() -> None:
    layer = TransactionLayer()
    tx = layer.send_request(request(), PEER, reliable=False, now=0.0)
    layer.drain()
    events = layer.handle_timer(100.0)  # A then B: one retransmission, then the timeout
    assert [type(e) for e in events] == [Timeout]
    assert len(sent(layer)) == 1
    assert tx.state is TxState.TERMINATED


# ---------------------------------------------------------------------------------------------
# non-INVITE client transaction
# ---------------------------------------------------------------------------------------------
def test_non_invite_client_timer_e_doubles_to_t2_then_timer_f() -> None:
    layer = TransactionLayer()
    options = request("OPTIONS")
    tx = layer.send_request(options, PEER, reliable=False, now=0.0)
    assert isinstance(tx, NonInviteClientTransaction) and tx.state is TxState.TRYING
    assert sent(layer) == [options.serialize()]
    times = []
    while (deadline := layer.get_timer()) is not None and deadline < 32.0:
        assert layer.handle_timer(deadline) == []
        assert sent(layer) == [options.serialize()]
        times.append(deadline)
    # 0.5, 1, 2, 4, then capped at T2 = 4.
    assert times == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    events = layer.handle_timer(32.0)
    assert [type(e) for e in events] == [Timeout] and events[0].tx is tx
    assert layer.get_timer() is None


def test_non_invite_client_proceeding_retransmits_every_t2() -> None:
    layer = TransactionLayer()
    bye = request("BYE", cseq=2, to_tag="ttag")
    tx = layer.send_request(bye, PEER, reliable=False, now=0.0)
    layer.drain()
    layer.handle_timer(0.5)  # first retransmission, E now 1.0
    layer.drain()
    events = layer.receive(response(bye, 100, to_tag="ttag"), PEER, reliable=False, now=0.6)
    assert [e.response.status for e in events if isinstance(e, ResponseReceived)] == [100]
    assert tx.state is TxState.PROCEEDING
    assert fire_all(layer, 14.0) == [1.5, 5.5, 9.5, 13.5]
    events = layer.receive(response(bye, 200, to_tag="ttag"), PEER, reliable=False, now=14.0)
    assert [e.response.status for e in events if isinstance(e, ResponseReceived)] == [200]
    assert tx.state is TxState.COMPLETED
    assert tx.timer_deadline("E") is None and tx.timer_deadline("F") is None
    assert layer.get_timer() == 19.0  # Timer K = T4
    # Retransmitted final responses are absorbed.
    assert layer.receive(response(bye, 200, to_tag="ttag"), PEER, reliable=False, now=15.0) == []
    layer.handle_timer(19.0)
    assert tx.state is TxState.TERMINATED and sent(layer) == []


def test_non_invite_client_reliable_no_retransmissions_and_k_is_zero() -> None:
    layer = TransactionLayer()
    msg = request("MESSAGE")
    tx = layer.send_request(msg, PEER, reliable=True, now=0.0)
    layer.drain()
    assert layer.get_timer() == 32.0  # only F
    layer.receive(response(msg, 202), PEER, reliable=True, now=1.0)
    assert tx.state is TxState.TERMINATED and layer.get_timer() is None
    assert sent(layer) == []


def test_responses_match_by_branch_and_cseq_method() -> None:
    """A CANCEL shares the INVITE's branch; its 200 must not complete the INVITE (17.1.3)."""
    layer = TransactionLayer()
    invite = request()
    inv_tx = layer.send_request(invite, PEER, reliable=False, now=0.0)
    cancel = request("CANCEL")
    can_tx = layer.send_request(cancel, PEER, reliable=False, now=1.0)
    layer.drain()
    events = layer.receive(response(cancel, 200, to_tag=None), PEER, reliable=False, now=1.1)
    assert len(events) == 1 and events[0].client_tx is can_tx
    assert inv_tx.state is TxState.CALLING
    events = layer.receive(response(invite, 487), PEER, reliable=False, now=1.2)
    assert events[0].client_tx is inv_tx and inv_tx.state is TxState.COMPLETED
    # Unknown branch -> stray.
    other = request(branch="z9hG4bKother")
    events = layer.receive(response(other, 200), PEER, reliable=False, now=1.3)
    assert [type(e) for e in events] == [StrayResponse]


def test_send_request_rejects_misuse() -> None:
    layer = TransactionLayer()
    with pytest.raises(ValueError, match="ACK"):
        layer.send_request(request("ACK", cseq_method="ACK"), PEER, reliable=False, now=0.0)
    with pytest.raises(ValueError, match="z9hG4bK"):
        layer.send_request(request(branch="oldstyle"), PEER, reliable=False, now=0.0)
    layer.send_request(request(), PEER, reliable=False, now=0.0)
    with pytest.raises(ValueError, match="already exists"):
        layer.send_request(request(), PEER, reliable=False, now=0.0)


# ---------------------------------------------------------------------------------------------
# INVITE server transaction
# ---------------------------------------------------------------------------------------------
TRYING = (
    b"SIP/2.0 100 Trying\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKbr1\r\n"
    b"From: Alice <sip:alice@example.com>;tag=ftag\r\n"
    b"To: <sip:bob@example.com>\r\n"
    b"Call-ID: call-1@192.0.2.1\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def test_invite_server_sends_100_trying_after_200ms() -> None:
    layer = TransactionLayer()
    invite = request()
    events = layer.receive(invite, PEER, reliable=False, now=5.0)
    assert len(events) == 1 and isinstance(events[0], NewRequest)
    tx = events[0].server_tx
    assert isinstance(tx, InviteServerTransaction) and tx.state is TxState.PROCEEDING
    assert events[0].request is invite and tx.source == PEER
    assert sent(layer) == []
    assert layer.get_timer() == pytest.approx(5.2)
    assert layer.handle_timer(5.19) == [] and sent(layer) == []
    layer.handle_timer(5.2)
    out = layer.drain()
    assert [(o.dest, o.data) for o in out] == [(PEER, TRYING)]
    assert layer.get_timer() is None  # nothing else runs in Proceeding


def test_invite_server_no_100_when_tu_answers_within_200ms() -> None:
    layer = TransactionLayer()
    invite = request()
    (event,) = layer.receive(invite, PEER, reliable=False, now=0.0)
    ringing = make_response(invite, 180, to_tag="ttag")
    layer.respond(event.server_tx, ringing, now=0.1)
    assert sent(layer) == [ringing.serialize()]
    assert layer.get_timer() is None
    # A retransmitted INVITE gets the last provisional again and is not passed up.
    assert layer.receive(invite, PEER, reliable=False, now=0.5) == []
    assert sent(layer) == [ringing.serialize()]


def test_invite_server_retransmission_before_100_gets_100_at_once() -> None:
    layer = TransactionLayer()
    invite = request()
    layer.receive(invite, PEER, reliable=False, now=0.0)
    assert layer.receive(invite, PEER, reliable=False, now=0.1) == []
    assert sent(layer) == [TRYING]
    assert layer.handle_timer(0.2) == [] and sent(layer) == []


def test_invite_server_non2xx_timer_g_and_h_then_timeout() -> None:
    layer = TransactionLayer()
    invite = request()
    (event,) = layer.receive(invite, PEER, reliable=False, now=0.0)
    tx = event.server_tx
    busy = make_response(invite, 486, to_tag="ttag")
    layer.respond(tx, busy, now=1.0)
    assert tx.state is TxState.COMPLETED
    assert sent(layer) == [busy.serialize()]
    # G: 0.5, 1, 2, 4, 4 (T2 cap) ... ; H at 64*T1 after the response.
    times = []
    while (deadline := layer.get_timer()) is not None and deadline < 33.0:
        assert layer.handle_timer(deadline) == []
        assert sent(layer) == [busy.serialize()]
        times.append(deadline)
    assert times == [1.5, 2.5, 4.5, 8.5, 12.5, 16.5, 20.5, 24.5, 28.5, 32.5]
    # A retransmitted INVITE gets the final response again.
    assert layer.receive(invite, PEER, reliable=False, now=32.7) == []
    assert sent(layer) == [busy.serialize()]
    events = layer.handle_timer(33.0)
    assert len(events) == 1 and isinstance(events[0], Timeout) and events[0].tx is tx
    assert tx.state is TxState.TERMINATED and layer.server_transactions == []


def test_invite_server_ack_confirms_and_timer_i_absorbs_acks() -> None:
    layer = TransactionLayer()
    invite = request()
    (event,) = layer.receive(invite, PEER, reliable=False, now=0.0)
    tx = event.server_tx
    layer.respond(tx, make_response(invite, 404, to_tag="ttag"), now=0.05)
    layer.drain()
    ack = request("ACK", cseq_method="ACK", to_tag="ttag")
    assert layer.receive(ack, PEER, reliable=False, now=0.3) == []
    assert tx.state is TxState.CONFIRMED
    assert layer.get_timer() == pytest.approx(5.3)  # Timer I = T4; G and H stopped
    assert layer.receive(ack, PEER, reliable=False, now=1.0) == []  # absorbed
    assert layer.receive(invite, PEER, reliable=False, now=1.1) == []  # absorbed
    assert sent(layer) == []
    layer.handle_timer(5.3)
    assert tx.state is TxState.TERMINATED


def test_invite_server_reliable_no_g_and_i_is_zero() -> None:
    layer = TransactionLayer()
    invite = request()
    (event,) = layer.receive(invite, PEER, reliable=True, now=0.0)
    tx = event.server_tx
    layer.respond(tx, make_response(invite, 480, to_tag="ttag"), now=0.05)
    assert tx.timer_deadline("G") is None and tx.timer_deadline("H") == pytest.approx(32.05)
    layer.receive(request("ACK", cseq_method="ACK", to_tag="ttag"), PEER, reliable=True, now=0.1)
    assert tx.state is TxState.TERMINATED and layer.get_timer() is None


def test_invite_server_2xx_accepted_absorbs_invites_and_forwards_2xx() -> None:
    layer = TransactionLayer()
    invite = request()
    (event,) = layer.receive(invite, PEER, reliable=False, now=0.0)
    tx = event.server_tx
    ok = make_response(invite, 200, to_tag="ttag")
    layer.respond(tx, ok, now=0.1)
    assert tx.state is TxState.ACCEPTED
    assert sent(layer) == [ok.serialize()]
    assert layer.get_timer() == pytest.approx(32.1)  # Timer L; the 2xx is the TU's to resend
    # INVITE retransmissions are absorbed: no event, nothing sent.
    assert layer.receive(invite, PEER, reliable=False, now=0.5) == []
    assert sent(layer) == []
    # The TU's own 2xx retransmission goes through.
    layer.respond(tx, ok, now=0.6)
    assert sent(layer) == [ok.serialize()]
    # A late CANCEL-triggered 487 is discarded.
    layer.respond(tx, make_response(invite, 487, to_tag="ttag"), now=0.7)
    assert sent(layer) == []
    # The 2xx ACK has its own branch: it goes to the TU.
    ack = request("ACK", branch="z9hG4bKack", cseq_method="ACK", to_tag="ttag")
    events = layer.receive(ack, PEER, reliable=False, now=0.8)
    assert len(events) == 1 and isinstance(events[0], AckFor2xx)
    assert events[0].request is ack and events[0].source == PEER
    layer.handle_timer(32.1)
    assert tx.state is TxState.TERMINATED and layer.server_transactions == []


# ---------------------------------------------------------------------------------------------
# non-INVITE server transaction
# ---------------------------------------------------------------------------------------------
def test_non_invite_server_states_and_timer_j() -> None:
    layer = TransactionLayer()
    bye = request("BYE", cseq=5, to_tag="ttag")
    events = layer.receive(bye, PEER, reliable=False, now=0.0)
    assert len(events) == 1 and isinstance(events[0], NewRequest)
    tx = events[0].server_tx
    assert isinstance(tx, NonInviteServerTransaction) and tx.state is TxState.TRYING
    assert layer.get_timer() is None  # no 100 Trying timer for non-INVITE
    assert layer.receive(bye, PEER, reliable=False, now=0.5) == []  # absorbed in Trying
    assert sent(layer) == []
    trying = make_response(bye, 100)
    layer.respond(tx, trying, now=0.6)
    assert tx.state is TxState.PROCEEDING
    assert sent(layer) == [trying.serialize()]
    assert layer.receive(bye, PEER, reliable=False, now=1.0) == []
    assert sent(layer) == [trying.serialize()]
    ok = make_response(bye, 200)
    layer.respond(tx, ok, now=1.5)
    assert tx.state is TxState.COMPLETED and sent(layer) == [ok.serialize()]
    assert layer.receive(bye, PEER, reliable=False, now=2.0) == []
    assert sent(layer) == [ok.serialize()]
    layer.respond(tx, make_response(bye, 500), now=2.5)  # a second final is discarded
    assert sent(layer) == []
    assert layer.get_timer() == 33.5  # Timer J = 64*T1
    layer.handle_timer(33.5)
    assert tx.state is TxState.TERMINATED
    # Now the same request is new again.
    assert [type(e) for e in layer.receive(bye, PEER, reliable=False, now=34.0)] == [NewRequest]


def test_non_invite_server_reliable_terminates_on_final() -> None:
    layer = TransactionLayer()
    opt = request("OPTIONS")
    (event,) = layer.receive(opt, PEER, reliable=True, now=0.0)
    layer.respond(event.server_tx, make_response(opt, 200, to_tag="x"), now=0.1)
    assert event.server_tx.state is TxState.TERMINATED and layer.get_timer() is None


def test_server_matching_needs_same_sent_by_and_method() -> None:
    layer = TransactionLayer()
    layer.receive(request("OPTIONS"), PEER, reliable=False, now=0.0)
    # Same branch from another sent-by: a different transaction (17.2.3).
    events = layer.receive(
        request("OPTIONS", sent_by="192.0.2.9:5060"), OTHER, reliable=False, now=0.1
    )
    assert [type(e) for e in events] == [NewRequest]
    assert len(layer.server_transactions) == 2


# ---------------------------------------------------------------------------------------------
# CANCEL and RFC 2543 fallback
# ---------------------------------------------------------------------------------------------
def test_cancel_is_its_own_transaction_and_finds_the_invite() -> None:
    layer = TransactionLayer()
    invite = request()
    (inv_event,) = layer.receive(invite, PEER, reliable=False, now=0.0)
    cancel = request("CANCEL")
    events = layer.receive(cancel, PEER, reliable=False, now=1.0)
    assert len(events) == 1 and isinstance(events[0], NewRequest)
    assert isinstance(events[0].server_tx, NonInviteServerTransaction)
    assert layer.find_invite_for_cancel(cancel) is inv_event.server_tx
    assert layer.find_invite_for_cancel(request("CANCEL", branch="z9hG4bKzzz")) is None


def test_rfc2543_request_matching_without_magic_cookie() -> None:
    layer = TransactionLayer()
    invite = request(branch=None)
    (event,) = layer.receive(invite, PEER, reliable=False, now=0.0)
    tx = event.server_tx
    # A retransmission (same Request-URI, tags, Call-ID, CSeq, top Via) is absorbed.
    assert layer.receive(request(branch=None), PEER, reliable=False, now=0.1) == []
    assert sent(layer) == [TRYING.replace(b";branch=z9hG4bKbr1", b"")]
    # CANCEL of that INVITE is found by the same fields.
    assert layer.find_invite_for_cancel(request("CANCEL", branch=None)) is tx
    busy = make_response(invite, 486, to_tag="resp-tag")
    layer.respond(tx, busy, now=0.2)
    layer.drain()
    # An ACK with the To tag of our response matches the transaction ...
    ack = request("ACK", branch=None, cseq_method="ACK", to_tag="resp-tag")
    assert layer.receive(ack, PEER, reliable=False, now=0.3) == []
    assert tx.state is TxState.CONFIRMED
    # ... one with another tag does not.
    stray = request("ACK", branch=None, cseq_method="ACK", to_tag="other")
    assert [type(e) for e in layer.receive(stray, PEER, reliable=False, now=0.4)] == [AckFor2xx]
    # A different CSeq is a new transaction.
    events = layer.receive(request(branch=None, cseq=2), PEER, reliable=False, now=0.5)
    assert [type(e) for e in events] == [NewRequest]
    # As is a different top Via (another hop).
    events = layer.receive(request(branch=None, sent_by="192.0.2.7"), PEER, reliable=False, now=0.6)
    assert [type(e) for e in events] == [NewRequest]


# ---------------------------------------------------------------------------------------------
# transport errors and misc
# ---------------------------------------------------------------------------------------------
def test_transport_failure_terminates_transactions_towards_that_peer_only() -> None:
    layer = TransactionLayer()
    a = layer.send_request(request(branch="z9hG4bKa"), PEER, reliable=True, now=0.0)
    b = layer.send_request(request("OPTIONS", branch="z9hG4bKb"), OTHER, reliable=True, now=0.0)
    (event,) = layer.receive(request("MESSAGE", branch="z9hG4bKc"), PEER, reliable=True, now=0.0)
    events = layer.transport_failed(PEER, now=1.0)
    assert {id(e.tx) for e in events if isinstance(e, TransportError)} == {
        id(a),
        id(event.server_tx),
    }
    assert a.state is TxState.TERMINATED and b.state is TxState.TRYING
    assert layer.client_transactions == [b] and layer.server_transactions == []


def test_ack_matching_nothing_goes_to_the_tu() -> None:
    layer = TransactionLayer()
    ack = request("ACK", branch="z9hG4bKnew", to_tag="t")
    events = layer.receive(ack, PEER, reliable=False, now=0.0)
    assert len(events) == 1 and isinstance(events[0], AckFor2xx)
    assert layer.server_transactions == []


def _raw(via: str, cseq: str) -> bytes:
    return (
        "OPTIONS sip:bob@example.com SIP/2.0\r\n"
        f"Via: {via}\r\n"
        "From: <sip:a@example.com>;tag=1\r\nTo: <sip:bob@example.com>\r\n"
        f"Call-ID: c\r\nCSeq: {cseq}\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def test_message_without_usable_via_is_dropped_not_raised() -> None:
    layer = TransactionLayer()
    msg = parse_message(_raw("SIP/2.0/UDP", "1 OPTIONS"))  # accessors parse lazily
    assert layer.receive(msg, PEER, reliable=False, now=0.0) == []
    assert layer.server_transactions == [] and sent(layer) == []


def test_bad_cseq_with_good_via_still_reaches_the_tu_for_a_400() -> None:
    """Matching needs only branch + sent-by + method; the UA core validates and answers."""
    layer = TransactionLayer()
    msg = parse_message(_raw("SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKx", "notanumber OPTIONS"))
    events = layer.receive(msg, PEER, reliable=False, now=0.0)
    assert len(events) == 1 and isinstance(events[0], NewRequest)
    bad_request = make_response(msg, 400, "Bad CSeq")
    layer.respond(events[0].server_tx, bad_request, now=0.1)
    assert sent(layer) == [bad_request.serialize()]
    assert b"CSeq: notanumber OPTIONS\r\n" in bad_request.serialize()


def test_send_stateless_queues_without_a_transaction() -> None:
    layer = TransactionLayer()
    ack = request("ACK", branch="z9hG4bKack2", to_tag="t")
    layer.send_stateless(ack, PEER)
    out = layer.drain()
    assert [(o.dest, o.data) for o in out] == [(PEER, ack.serialize())]
    assert layer.client_transactions == [] and layer.get_timer() is None


def test_retransmissions_are_the_bytes_first_sent() -> None:
    """Editing a request object after sending (e.g. to retry with credentials) must not
    change what the running transaction retransmits."""
    layer = TransactionLayer()
    reg = request("REGISTER")
    first = reg.serialize()
    layer.send_request(reg, PEER, reliable=False, now=0.0)
    assert sent(layer) == [first]
    reg.headers.add("Authorization", "Digest x")
    layer.handle_timer(0.5)
    assert sent(layer) == [first]


def test_rfc2543_ack_for_2xx_matching_accepted_invite_goes_to_the_tu() -> None:
    layer = TransactionLayer()
    invite = request(branch=None)
    (event,) = layer.receive(invite, PEER, reliable=False, now=0.0)
    layer.respond(event.server_tx, make_response(invite, 200, to_tag="t2"), now=0.1)
    layer.drain()
    # Without a branch the 2xx ACK looks like part of the INVITE transaction; it still must
    # reach the dialog, and the transaction stays Accepted.
    ack = request("ACK", branch=None, cseq_method="ACK", to_tag="t2")
    events = layer.receive(ack, PEER, reliable=False, now=0.2)
    assert len(events) == 1 and isinstance(events[0], AckFor2xx) and events[0].request is ack
    assert event.server_tx.state is TxState.ACCEPTED and sent(layer) == []


def test_build_cancel_per_9_1_and_it_finds_the_invite_at_the_uas() -> None:
    layer = TransactionLayer()
    invite = request(extra="Route: <sip:p1.example.com;lr>\r\nContact: <sip:alice@192.0.2.1>\r\n")
    cancel = build_cancel(invite)
    assert cancel.serialize() == (
        b"CANCEL sip:bob@example.com SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKbr1\r\n"
        b"Route: <sip:p1.example.com;lr>\r\n"
        b"Max-Forwards: 70\r\n"
        b"From: Alice <sip:alice@example.com>;tag=ftag\r\n"
        b"To: <sip:bob@example.com>\r\n"
        b"Call-ID: call-1@192.0.2.1\r\n"
        b"CSeq: 1 CANCEL\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    uas = TransactionLayer()
    (inv_event,) = uas.receive(invite, PEER, reliable=False, now=0.0)
    assert uas.find_invite_for_cancel(parse_message(cancel.serialize())) is inv_event.server_tx
    # Sent as its own client transaction next to the INVITE's.
    layer.send_request(invite, PEER, reliable=False, now=0.0)
    tx = layer.send_request(cancel, PEER, reliable=False, now=1.0)
    assert isinstance(tx, NonInviteClientTransaction)
    with pytest.raises(ValueError, match="ACK"):
        build_cancel(request("ACK", cseq_method="ACK"))


def test_respond_rejects_a_response_for_another_request() -> None:
    layer = TransactionLayer()
    invite = request()
    (event,) = layer.receive(invite, PEER, reliable=False, now=0.0)
    with pytest.raises(ValueError, match="CSeq"):
        layer.respond(event.server_tx, make_response(request("CANCEL"), 200), now=0.1)
    with pytest.raises(ValueError, match="700"):
        layer.respond(event.server_tx, make_response(invite, 700), now=0.1)
    assert sent(layer) == [] and event.server_tx.state is TxState.PROCEEDING


def test_rfc2543_ack_for_reinvite_matches_with_the_dialog_tag() -> None:
    layer = TransactionLayer()
    reinvite = request(branch=None, cseq=2, to_tag="dlg")
    (event,) = layer.receive(reinvite, PEER, reliable=False, now=0.0)
    layer.respond(event.server_tx, make_response(reinvite, 488), now=0.1)
    ack = request("ACK", branch=None, cseq=2, cseq_method="ACK", to_tag="dlg")
    assert layer.receive(ack, PEER, reliable=False, now=0.2) == []
    assert event.server_tx.state is TxState.CONFIRMED


@settings(max_examples=60, deadline=None)
@given(
    t1=st.sampled_from([0.1, 0.25, 0.5, 1.0, 2.0]),
    factor=st.sampled_from([1, 2, 3, 8, 16]),
)
def test_non_invite_retransmit_gaps_double_to_t2_and_f_is_64_t1(t1: float, factor: int) -> None:
    timers = Timers(t1=t1, t2=t1 * factor)
    layer = TransactionLayer(timers)
    layer.send_request(request("OPTIONS"), PEER, reliable=False, now=0.0)
    layer.drain()
    times = [0.0]
    events: list[object] = []
    while not events:
        deadline = layer.get_timer()
        assert deadline is not None
        events = layer.handle_timer(deadline)
        if layer.drain():
            times.append(deadline)
    assert [type(e) for e in events] == [Timeout]
    assert deadline == pytest.approx(64 * t1)
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    expected = [min(t1 * 2**k, timers.t2) for k in range(len(gaps))]
    assert gaps == pytest.approx(expected)
    # The last retransmission is the last one before F (none at F's own instant).
    assert times[-1] < 64 * t1 <= times[-1] + min(t1 * 2 ** len(gaps), timers.t2) + 1e-9
