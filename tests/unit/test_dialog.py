"""RFC 3261 section 12 dialogs: creation on both sides, in-dialog requests, CSeq and targets."""

from __future__ import annotations

import pytest

from firmware.sip.dialog import Dialog, DialogError, DialogId, DialogSet, DialogState
from firmware.sip.ids import SeededIds
from firmware.sip.message import SipRequest, SipResponse, make_response
from firmware.sip.parser import parse_message
from firmware.sip.transaction import AckFor2xx, NewRequest, ResponseReceived, TransactionLayer
from firmware.sip.uri import parse_uri

INVITE = (
    "INVITE sip:bob@example.com SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKinv1\r\n"
    "Max-Forwards: 70\r\n"
    'From: "Alice, A." <sip:alice@example.com>;tag=atag\r\n'
    "To: Bob <sip:bob@example.com>\r\n"
    "Call-ID: call-7\r\n"
    "CSeq: 10 INVITE\r\n"
    "Contact: <sip:alice@192.0.2.1:5060>\r\n"
    "{extra}"
    "Content-Length: 0\r\n\r\n"
)


def _req(text: str) -> SipRequest:
    msg = parse_message(text.encode())
    assert isinstance(msg, SipRequest)
    return msg


def _resp(text: str) -> SipResponse:
    msg = parse_message(text.encode())
    assert isinstance(msg, SipResponse)
    return msg


def invite(extra: str = "", uri: str = "sip:bob@example.com") -> SipRequest:
    return _req(INVITE.format(extra=extra).replace("sip:bob@example.com SIP", f"{uri} SIP", 1))


def answer(
    status: int = 200,
    *,
    to_tag: str | None = "btag",
    contact: str | None = "<sip:bob@192.0.2.5:5070;transport=udp>",
    record_route: str = "",
    cseq: str = "10 INVITE",
) -> SipResponse:
    reason = {180: "Ringing", 183: "Session Progress", 200: "OK"}.get(status, "Whatever")
    return _resp(
        f"SIP/2.0 {status} {reason}\r\n"
        "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKinv1\r\n"
        + record_route
        + 'From: "Alice, A." <sip:alice@example.com>;tag=atag\r\n'
        + "To: Bob <sip:bob@example.com>"
        + (f";tag={to_tag}" if to_tag else "")
        + "\r\n"
        + "Call-ID: call-7\r\n"
        + f"CSeq: {cseq}\r\n"
        + (f"Contact: {contact}\r\n" if contact else "")
        + "Content-Length: 0\r\n\r\n"
    )


RR = "Record-Route: <sip:p1.example.com;lr>\r\nRecord-Route: <sip:p2.example.com;lr>\r\n"


def header_lines(req: SipRequest) -> list[tuple[str, str]]:
    return list(req.headers)


# ---------------------------------------------------------------------------------------------
# UAC side
# ---------------------------------------------------------------------------------------------
def test_uac_dialog_from_2xx() -> None:
    d = Dialog.from_uac(invite(), answer(200, record_route=RR))
    assert d.id == DialogId("call-7", "atag", "btag")
    assert d.state is DialogState.CONFIRMED
    assert str(d.local_uri) == "sip:alice@example.com"
    assert str(d.remote_uri) == "sip:bob@example.com"
    assert str(d.remote_target) == "sip:bob@192.0.2.5:5070;transport=udp"
    assert (d.local_seq, d.remote_seq) == (10, None)
    # UAC reverses Record-Route.
    assert [str(r.uri) for r in d.route_set] == ["sip:p2.example.com;lr", "sip:p1.example.com;lr"]
    assert d.secure is False and d.is_uac


def test_uac_bye_headers_loose_routing() -> None:
    d = Dialog.from_uac(invite(), answer(200, record_route=RR))
    bye = d.create_request("BYE", ids=SeededIds())
    assert bye.method == "BYE"
    assert str(bye.uri) == "sip:bob@192.0.2.5:5070;transport=udp"
    assert header_lines(bye) == [
        ("Route", "<sip:p2.example.com;lr>"),
        ("Route", "<sip:p1.example.com;lr>"),
        ("Max-Forwards", "70"),
        ("From", '"Alice, A." <sip:alice@example.com>;tag=atag'),
        ("To", "Bob <sip:bob@example.com>;tag=btag"),
        ("Call-ID", "call-7"),
        ("CSeq", "11 BYE"),
    ]
    assert "Via" not in bye.headers and "Contact" not in bye.headers
    assert d.local_seq == 11
    wire = bye.serialize()
    assert wire.startswith(b"BYE sip:bob@192.0.2.5:5070;transport=udp SIP/2.0\r\n")
    assert b"Content-Length: 0\r\n\r\n" in wire


def test_reinvite_carries_contact_body_and_extra_headers() -> None:
    d = Dialog.from_uac(invite(), answer(200))
    body = b"v=0\r\n"
    reinvite = d.create_request(
        "INVITE",
        ids=SeededIds(),
        body=body,
        extra_headers=[("Content-Type", "application/sdp")],
    )
    assert reinvite.headers.get("Contact") == "<sip:alice@192.0.2.1:5060>"
    assert reinvite.headers.get("CSeq") == "11 INVITE"
    assert reinvite.headers.get("Content-Type") == "application/sdp"
    assert "Route" not in reinvite.headers
    assert reinvite.body == body
    assert reinvite.serialize().endswith(b"Content-Length: 5\r\n\r\nv=0\r\n")
    update = d.create_request("UPDATE", ids=SeededIds(), contact="sip:alice@198.51.100.1")
    assert update.headers.get("Contact") == "<sip:alice@198.51.100.1>"
    assert update.cseq.number == 12


def test_strict_router_goes_into_request_uri() -> None:
    rr = "Record-Route: <sip:strict.example.com;method=INVITE?X-H=1>, <sip:p1.example.com;lr>\r\n"
    # UAC reverses: first hop is the last Record-Route entry -> make the strict one last.
    d = Dialog.from_uac(invite(), answer(200, record_route=rr))
    assert [str(r.uri) for r in d.route_set][0].startswith("sip:p1")
    d.route_set.reverse()  # strict router first
    bye = d.create_request("BYE", ids=SeededIds())
    assert str(bye.uri) == "sip:strict.example.com"  # method param and headers stripped
    assert bye.headers.get_all("Route") == [
        "<sip:p1.example.com;lr>",
        "<sip:bob@192.0.2.5:5070;transport=udp>",
    ]


def test_early_dialog_then_2xx_confirms_and_recomputes_route_set() -> None:
    inv = invite()
    d = Dialog.from_uac(
        inv,
        answer(
            180,
            record_route="Record-Route: <sip:old.example.com;lr>\r\n",
            contact="<sip:bob@10.0.0.9>",
        ),
    )
    assert d.state is DialogState.EARLY
    assert str(d.remote_target) == "sip:bob@10.0.0.9"
    d.update_from_response(answer(183, contact="<sip:bob@10.0.0.10>"))
    assert str(d.remote_target) == "sip:bob@10.0.0.10"
    d.update_from_response(answer(200, record_route=RR))
    assert d.state is DialogState.CONFIRMED
    assert [str(r.uri) for r in d.route_set] == ["sip:p2.example.com;lr", "sip:p1.example.com;lr"]
    assert str(d.remote_target) == "sip:bob@192.0.2.5:5070;transport=udp"


def test_early_dialog_needs_to_tag_and_2543_2xx_may_lack_it() -> None:
    with pytest.raises(DialogError, match="To tag"):
        Dialog.from_uac(invite(), answer(180, to_tag=None))
    with pytest.raises(DialogError, match="486"):
        Dialog.from_uac(invite(), answer(486))
    d = Dialog.from_uac(invite(), answer(200, to_tag=None))
    assert d.remote_tag is None
    bye = d.create_request("BYE", ids=SeededIds())
    assert bye.headers.get("To") == "Bob <sip:bob@example.com>"


def test_provisional_without_contact_targets_the_to_uri() -> None:
    d = Dialog.from_uac(invite(), answer(180, contact=None))
    assert str(d.remote_target) == "sip:bob@example.com"


def test_sips_request_uri_makes_dialog_secure() -> None:
    d = Dialog.from_uac(invite(uri="sips:bob@example.com"), answer(200))
    assert d.secure is True
    assert Dialog.from_uac(invite(), answer(200), secure=True).secure is True


def test_responses_update_the_dialog() -> None:
    d = Dialog.from_uac(invite(), answer(200))
    d.update_from_response(answer(200, contact="<sip:bob@203.0.113.4>", cseq="11 INVITE"))
    assert str(d.remote_target) == "sip:bob@203.0.113.4"
    d.update_from_response(answer(200, contact="<sip:bob@203.0.113.5>", cseq="12 INFO"))
    assert str(d.remote_target) == "sip:bob@203.0.113.4"  # INFO is no target refresh
    d.update_from_response(answer(491, cseq="13 INVITE"))
    assert d.state is DialogState.CONFIRMED  # a failed re-INVITE keeps the dialog
    d.update_from_response(answer(481, cseq="14 BYE"))
    assert d.state is DialogState.TERMINATED
    with pytest.raises(DialogError, match="terminated"):
        d.create_request("BYE", ids=SeededIds())


def test_408_and_early_failure_terminate() -> None:
    d = Dialog.from_uac(invite(), answer(200))
    d.update_from_response(answer(408, cseq="11 OPTIONS"))
    assert d.state is DialogState.TERMINATED
    early = Dialog.from_uac(invite(), answer(180))
    early.update_from_response(answer(486, cseq="10 INVITE"))
    assert early.state is DialogState.TERMINATED


def test_ack_for_2xx_uses_invite_cseq_and_credentials() -> None:
    creds = 'Digest username="alice", realm="x", nonce="n", uri="sip:bob@example.com", response="r"'
    inv = invite(extra=f"Proxy-Authorization: {creds}\r\n")
    d = Dialog.from_uac(inv, answer(200, record_route=RR))
    ack = d.create_ack(inv, body=b"v=0\r\n", extra_headers=[("Content-Type", "application/sdp")])
    assert ack.method == "ACK" and str(ack.uri) == "sip:bob@192.0.2.5:5070;transport=udp"
    assert header_lines(ack) == [
        ("Route", "<sip:p2.example.com;lr>"),
        ("Route", "<sip:p1.example.com;lr>"),
        ("Max-Forwards", "70"),
        ("From", '"Alice, A." <sip:alice@example.com>;tag=atag'),
        ("To", "Bob <sip:bob@example.com>;tag=btag"),
        ("Call-ID", "call-7"),
        ("CSeq", "10 ACK"),
        ("Proxy-Authorization", creds),
        ("Content-Type", "application/sdp"),
    ]
    assert d.local_seq == 10  # ACK does not consume a CSeq
    # An UPDATE in the early dialog moved the local CSeq on; the ACK still carries the INVITE's.
    early = Dialog.from_uac(inv, answer(180))
    assert early.create_request("UPDATE", ids=SeededIds()).cseq.number == 11
    early.update_from_response(answer(200))
    assert early.create_ack(inv).headers.get("CSeq") == "10 ACK"
    assert early.local_seq == 11
    with pytest.raises(DialogError):
        d.create_ack(d.create_request("BYE", ids=SeededIds()))


def test_ack_and_cancel_are_not_create_request() -> None:
    d = Dialog.from_uac(invite(), answer(200))
    for method in ("ACK", "CANCEL", "ack"):
        with pytest.raises(DialogError):
            d.create_request(method, ids=SeededIds())


# ---------------------------------------------------------------------------------------------
# UAS side
# ---------------------------------------------------------------------------------------------
def uas_dialog(extra: str = RR) -> Dialog:
    return Dialog.from_uas(invite(extra=extra), "btag", "<sip:bob@192.0.2.5:5070>")


def test_uas_dialog_state() -> None:
    d = uas_dialog()
    assert d.id == DialogId("call-7", "btag", "atag")
    assert d.state is DialogState.EARLY and not d.is_uac
    assert str(d.local_uri) == "sip:bob@example.com"
    assert str(d.remote_uri) == "sip:alice@example.com"
    assert str(d.remote_target) == "sip:alice@192.0.2.1:5060"
    assert (d.local_seq, d.remote_seq) == (None, 10)
    # UAS keeps Record-Route order.
    assert [str(r.uri) for r in d.route_set] == ["sip:p1.example.com;lr", "sip:p2.example.com;lr"]
    d.confirm()
    assert d.state is DialogState.CONFIRMED


def test_uas_bye_starts_random_cseq_below_2_31() -> None:
    d = uas_dialog()
    d.confirm()
    ids = SeededIds("dialog")
    expected_first = SeededIds("dialog").randbelow(2**31 - 1) + 1
    bye = d.create_request("BYE", ids=ids)
    assert bye.cseq.number == expected_first and 1 <= expected_first < 2**31
    assert str(bye.uri) == "sip:alice@192.0.2.1:5060"
    assert header_lines(bye) == [
        ("Route", "<sip:p1.example.com;lr>"),
        ("Route", "<sip:p2.example.com;lr>"),
        ("Max-Forwards", "70"),
        ("From", "Bob <sip:bob@example.com>;tag=btag"),
        ("To", '"Alice, A." <sip:alice@example.com>;tag=atag'),
        ("Call-ID", "call-7"),
        ("CSeq", f"{expected_first} BYE"),
    ]
    assert d.create_request("INFO", ids=ids).cseq.number == expected_first + 1
    reinvite = d.create_request("INVITE", ids=ids)
    assert reinvite.headers.get("Contact") == "<sip:bob@192.0.2.5:5070>"


def test_uas_without_contact_is_refused() -> None:
    req = _req(INVITE.format(extra="").replace("Contact: <sip:alice@192.0.2.1:5060>\r\n", ""))
    with pytest.raises(DialogError, match="Contact"):
        Dialog.from_uas(req, "btag", "<sip:bob@192.0.2.5>")


def in_dialog(method: str, cseq: int, contact: str | None = None) -> SipRequest:
    return _req(
        f"{method} sip:bob@192.0.2.5:5070 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKx" + str(cseq) + "\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:alice@example.com>;tag=atag\r\n"
        "To: <sip:bob@example.com>;tag=btag\r\n"
        "Call-ID: call-7\r\n"
        f"CSeq: {cseq} {method}\r\n"
        + (f"Contact: {contact}\r\n" if contact else "")
        + "Content-Length: 0\r\n\r\n"
    )


def test_check_request_cseq_order_and_target_refresh() -> None:
    d = uas_dialog()
    d.confirm()
    assert d.check_request(in_dialog("INFO", 11)) is None and d.remote_seq == 11
    assert d.check_request(in_dialog("INFO", 9)) == 500
    assert d.remote_seq == 11  # a rejected request does not move the counter
    assert d.check_request(in_dialog("INFO", 11)) is None  # equal: not lower (a retransmit)
    assert d.check_request(in_dialog("ACK", 10)) is None  # ACK carries the INVITE's number
    assert d.check_request(in_dialog("BYE", 12, contact="<sip:alice@10.1.1.1>")) is None
    assert str(d.remote_target) == "sip:alice@192.0.2.1:5060"  # BYE refreshes nothing
    assert d.check_request(in_dialog("INVITE", 13, contact="<sip:alice@10.1.1.1>")) is None
    assert str(d.remote_target) == "sip:alice@10.1.1.1"
    assert d.check_request(in_dialog("UPDATE", 14, contact="<sip:alice@10.1.1.2>")) is None
    assert str(d.remote_target) == "sip:alice@10.1.1.2"
    d.terminate()
    assert d.check_request(in_dialog("BYE", 15)) == 481


def test_uas_dialog_with_2543_peer_has_no_remote_tag() -> None:
    req = _req(INVITE.format(extra="").replace(";tag=atag", ""))
    d = Dialog.from_uas(req, "btag", "<sip:bob@192.0.2.5>")
    assert d.id == DialogId("call-7", "btag", None)
    bye = d.create_request("BYE", ids=SeededIds())
    assert bye.headers.get("To") == '"Alice, A." <sip:alice@example.com>'


# ---------------------------------------------------------------------------------------------
# DialogSet
# ---------------------------------------------------------------------------------------------
def test_dialog_set_lookup_by_request_and_response() -> None:
    dialogs = DialogSet()
    uas = dialogs.add(uas_dialog())
    uac = dialogs.add(Dialog.from_uac(invite(), answer(200, to_tag="other")))
    assert len(dialogs) == 2 and uas in dialogs
    assert dialogs.find_for_request(in_dialog("BYE", 20)) is uas
    assert dialogs.find_for_response(answer(200, to_tag="other", cseq="11 BYE")) is uac
    assert dialogs.find_for_response(answer(200, to_tag="nobody")) is None
    no_tag = _req(INVITE.format(extra=""))
    assert dialogs.find_for_request(no_tag) is None
    with pytest.raises(DialogError, match="already exists"):
        dialogs.add(uas_dialog())
    dialogs.remove(uas)
    assert dialogs.find_for_request(in_dialog("BYE", 21)) is None
    assert dialogs.get(uac.id) is uac


def test_dialog_set_forked_early_dialogs_and_purge() -> None:
    dialogs = DialogSet()
    inv = invite()
    first = dialogs.add(Dialog.from_uac(inv, answer(180, to_tag="fork1")))
    second = dialogs.add(Dialog.from_uac(inv, answer(180, to_tag="fork2")))
    assert set(map(id, dialogs.early_dialogs("call-7", "atag"))) == {id(first), id(second)}
    first.update_from_response(answer(200, to_tag="fork1"))
    assert dialogs.early_dialogs("call-7", "atag") == [second]
    second.update_from_response(answer(487, to_tag="fork2"))
    assert dialogs.purge_terminated() == [second]
    assert list(dialogs) == [first]


def test_remote_target_can_be_compared_to_a_parsed_uri() -> None:
    d = Dialog.from_uac(invite(), answer(200))
    assert d.remote_target == parse_uri("sip:bob@192.0.2.5:5070;transport=UDP")


# ---------------------------------------------------------------------------------------------
# End to end: two transaction layers and two dialogs talking through wire bytes
# ---------------------------------------------------------------------------------------------
def _wire(layer: TransactionLayer) -> list[bytes]:
    return [out.data for out in layer.drain()]


def _with_via(req: SipRequest, branch: str, sent_by: str) -> SipRequest:
    """What the UA core does before sending: put its own Via on top."""
    req.headers.insert(0, "Via", f"SIP/2.0/UDP {sent_by};branch={branch}")
    return req


def test_call_setup_and_teardown_across_two_layers() -> None:
    alice_addr, bob_addr = ("udp", "192.0.2.1", 5060), ("udp", "192.0.2.5", 5070)
    alice, bob = TransactionLayer(), TransactionLayer()
    alice_dialogs, bob_dialogs = DialogSet(), DialogSet()

    inv = invite()
    client_tx = alice.send_request(inv, bob_addr, reliable=False, now=0.0)
    (wire,) = _wire(alice)
    (new,) = bob.receive(parse_message(wire), alice_addr, reliable=False, now=0.01)
    assert isinstance(new, NewRequest)
    bob_dialog = bob_dialogs.add(
        Dialog.from_uas(new.request, "btag", "<sip:bob@192.0.2.5:5070;transport=udp>")
    )
    ok = make_response(new.request, 200, to_tag="btag")
    ok.headers.add("Contact", "<sip:bob@192.0.2.5:5070;transport=udp>")
    bob.respond(new.server_tx, ok, now=0.05)
    bob_dialog.confirm()
    (wire,) = _wire(bob)
    (got,) = alice.receive(parse_message(wire), bob_addr, reliable=False, now=0.06)
    assert isinstance(got, ResponseReceived) and got.client_tx is client_tx
    alice_dialog = alice_dialogs.add(Dialog.from_uac(inv, got.response))

    # Alice ACKs the 2xx herself, outside the transaction.
    ack = _with_via(alice_dialog.create_ack(inv), "z9hG4bKack1", "192.0.2.1:5060")
    alice.send_stateless(ack, bob_addr)
    (wire,) = _wire(alice)
    assert wire.startswith(b"ACK sip:bob@192.0.2.5:5070;transport=udp SIP/2.0\r\n")
    (ack_event,) = bob.receive(parse_message(wire), alice_addr, reliable=False, now=0.07)
    assert isinstance(ack_event, AckFor2xx)
    assert bob_dialogs.find_for_request(ack_event.request) is bob_dialog
    assert bob_dialog.check_request(ack_event.request) is None

    # Bob hangs up: the BYE goes to Alice's Contact and is found in her dialog set.
    bye = _with_via(
        bob_dialog.create_request("BYE", ids=SeededIds("bob")), "z9hG4bKbye1", "192.0.2.5:5070"
    )
    bye_tx = bob.send_request(bye, alice_addr, reliable=False, now=10.0)
    (wire,) = _wire(bob)
    assert wire.startswith(b"BYE sip:alice@192.0.2.1:5060 SIP/2.0\r\n")
    (bye_event,) = alice.receive(parse_message(wire), bob_addr, reliable=False, now=10.01)
    assert isinstance(bye_event, NewRequest)
    found = alice_dialogs.find_for_request(bye_event.request)
    assert found is alice_dialog and found.check_request(bye_event.request) is None
    assert found.remote_seq == bye.cseq.number
    alice.respond(bye_event.server_tx, make_response(bye_event.request, 200), now=10.02)
    found.terminate()
    (wire,) = _wire(alice)
    (bye_ok,) = bob.receive(parse_message(wire), alice_addr, reliable=False, now=10.03)
    assert isinstance(bye_ok, ResponseReceived) and bye_ok.client_tx is bye_tx
    bob_dialog.update_from_response(bye_ok.response)
    bob_dialog.terminate()
    assert alice_dialogs.purge_terminated() == [alice_dialog]
    assert bob_dialogs.purge_terminated() == [bob_dialog]
