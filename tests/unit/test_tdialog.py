"""The transferor towards a GRUU peer (RFC 7647 section 4, RFC 4538, RFC 4488) and its timeout.

B's Contact is a GRUU, so A must not reuse the dialog for REFER: it sends the REFER outside it
with Target-Dialog, and with Refer-Sub: false when B supports norefersub; B (our transferee)
accepts it only because it names a live call with A over TLS. Then A ends the transfer by its
own logic. Without a final NOTIFY A gives up after ``notify_timeout`` and resumes the call.
"""

from __future__ import annotations

from firmware.call.refer import ReferPolicy
from firmware.sip.message import SipRequest, make_request
from tests.unit.test_refer import (
    Net,
    Phone,
    Recorder,
    answer_c,
    connect,
    requests,
    responses,
)
from tests.unit.test_replaces import consult, live, phone


def gruu_net(policy: ReferPolicy | None = None) -> Net:
    a = phone("a")
    if policy is not None:
        a.transfers.policy = policy
    b = phone("b")
    b.gruu, b.transport = True, "TLS"
    return Net(a, b, phone("c"))


def the_refer(b: Phone) -> SipRequest:
    [refer] = requests(b, "REFER")
    return refer


def test_blind_transfer_to_a_gruu_peer_goes_out_of_dialog_with_norefersub() -> None:
    net = gruu_net()
    a, b, c = net.phones["a"], net.phones["b"], net.phones["c"]
    a_id, b_id = connect(net)
    dialog = a.calls.get(a_id).session.dialog
    assert dialog is not None and "gr" in getattr(dialog.remote_target, "params", {})
    net.now = 10.0
    assert a.transfers.transfer(a_id, "sip:c@192.0.2.3", net.now)
    net.pump()
    refer = the_refer(b)
    # RFC 7647 4: a new dialog (own Call-ID, no To tag) aimed at the GRUU, tied by Target-Dialog.
    assert refer.call_id != dialog.call_id and refer.to.tag is None
    assert str(refer.uri) == str(dialog.remote_target)
    assert refer.headers.get("Target-Dialog") == (
        f"{dialog.call_id};local-tag={dialog.local_tag};remote-tag={dialog.remote_tag}"
    )
    assert refer.headers.get("Require") == "tdialog"  # B listed tdialog in its 200
    # RFC 4488: B supports norefersub, so no subscription is asked for and none is made.
    assert refer.headers.get("Refer-Sub") == "false"
    assert "norefersub" in (refer.headers.get("Supported") or "")
    assert requests(a, "NOTIFY") == []
    # A ended the transfer by its own logic: done, the call with B ended by A's BYE.
    status = a.calls.get(a_id).status(net.now)
    assert (status["transfer"], status["transfer_status"]) == ("done", 200)
    assert status["transfer_reason"] == "REFER accepted (norefersub)"
    assert status["state"] == "ended"
    assert len(requests(b, "BYE")) == 1
    # B carries on: C rings and, answered, talks to B.
    answer_c(net)
    [b_new] = live(b)
    assert b_new.state == "connected" and b_new.id != b_id
    assert [k.state for k in live(c)] == ["connected"]


def test_t17_without_norefersub_the_notifies_come_in_the_refers_own_dialog() -> None:
    """norefersub off: no Refer-Sub: false. Our transferee accepts the out-of-dialog REFER and
    reports by NOTIFY in the dialog its 200 created (RFC 3515 2.4.4), not in the call."""
    net = gruu_net(ReferPolicy(norefersub=False))
    a, b, c = net.phones["a"], net.phones["b"], net.phones["c"]
    a_id, _ = connect(net)
    assert a.transfers.transfer(a_id, "sip:c@192.0.2.3", net.now)
    net.pump()
    refer = the_refer(b)
    assert refer.headers.get("Refer-Sub") is None and refer.to.tag is None
    [ok] = [r for r in responses(a, "REFER") if r.call_id == refer.call_id]
    assert ok.status == 200 and ok.headers.get("Refer-Sub") is None
    answer_c(net)
    notifies = requests(a, "NOTIFY")
    assert [n.body for n in notifies] == [b"SIP/2.0 100 Trying\r\n", b"SIP/2.0 200 OK\r\n"]
    # Every NOTIFY is in the REFER's dialog: its Call-ID, B's tag from the 200, A's REFER tag.
    for n in notifies:
        assert n.call_id == refer.call_id
        assert (n.from_.tag, n.to.tag) == (ok.to.tag, refer.from_.tag)
        assert n.headers.get("Event") == "refer"
    assert [r.status for r in responses(b, "NOTIFY")] == [200, 200]
    status = a.calls.get(a_id).status(net.now)
    assert (status["transfer"], status["transfer_status"]) == ("done", 200)
    assert status["state"] == "ended"
    assert [k.state for k in live(c)] == ["connected"]


def test_a_refused_out_of_dialog_refer_falls_back_into_the_dialog() -> None:
    """B does not take REFER outside a dialog (policy): 403, and A REFERs inside the dialog
    instead (RFC 5589 section 5), still without Refer-Sub."""
    net = gruu_net()
    a, b, c = net.phones["a"], net.phones["b"], net.phones["c"]
    b.transfers.policy = ReferPolicy(out_of_dialog=False)
    a_id, _ = connect(net)
    assert a.transfers.transfer(a_id, "sip:c@192.0.2.3", net.now)
    net.pump()
    first, second = requests(b, "REFER")
    assert first.to.tag is None
    refused = [r for r in responses(a, "REFER") if r.call_id == first.call_id]
    assert [r.status for r in refused] == [403]
    # The fallback: in the call's own dialog, and no Refer-Sub: false (T17: GRUU-only, and
    # the in-dialog Request-URI is the same GRUU but the subscription is now wanted).
    dialog = a.calls.get(a_id).session.dialog
    assert dialog is not None
    assert second.call_id == dialog.call_id and second.to.tag == dialog.remote_tag
    assert second.headers.get("Refer-Sub") is None
    status = a.calls.get(a_id).status(net.now)
    assert status["transfer_fallback"].startswith("403")
    assert len(requests(c, "INVITE")) == 1
    answer_c(net)
    status = a.calls.get(a_id).status(net.now)
    assert (status["transfer"], status["transfer_status"]) == ("done", 200)
    assert status["state"] == "ended"


def test_t1_replayed_out_of_dialog_refer_after_completion_gets_481() -> None:
    net = gruu_net()
    a, b, c = net.phones["a"], net.phones["b"], net.phones["c"]
    a_id, _ = connect(net)
    assert a.transfers.transfer(a_id, "sip:c@192.0.2.3", net.now)
    net.pump()
    answer_c(net)
    refer = the_refer(b)
    # A former participant replays it (fresh branch, same everything else): the dialog is gone.
    headers = [(n, v) for n, v in refer.headers if n.lower() != "via"]
    replay = make_request("REFER", str(refer.uri), headers=headers)
    net.advance(40.0)  # past the merge window (Timer J): a new request, not a retransmission
    rec = Recorder()
    a.ua.send_request(replay, rec, net.now)
    net.pump()
    assert [r.status for r in rec.responses] == [481]
    assert len(requests(c, "INVITE")) == 1


def test_attended_transfer_to_a_gruu_peer_with_norefersub_ends_when_c_replaces() -> None:
    net = gruu_net()
    a, b, c = net.phones["a"], net.phones["b"], net.phones["c"]
    a_b, _ = connect(net)
    a_c = consult(net)
    c_old = live(c)[0]
    assert a.transfers.transfer_attended(a_b, a_c, net.now)
    net.pump()
    refer = the_refer(b)
    assert refer.to.tag is None and refer.headers.get("Refer-Sub") == "false"
    assert "Replaces=" in (refer.headers.get("Refer-To") or "")
    # C replaced its dialog with A by B's INVITE (and BYEd A): that is A's sign of success.
    assert c_old.state == "ended" and a.calls.get(a_c).end_cause == "remote_bye"
    status = a.calls.get(a_b).status(net.now)
    assert (status["transfer"], status["transfer_status"]) == ("done", 200)
    assert status["transfer_reason"] == "target replaced the consultation call"
    assert live(a) == []
    [b_new], [c_new] = live(b), live(c)
    assert (b_new.state, c_new.state) == ("connected", "connected")


def test_transferor_gives_up_without_a_final_notify_and_resumes() -> None:
    net = Net(phone("a"), phone("b"), phone("c"))
    a, b, c = net.phones["a"], net.phones["b"], net.phones["c"]
    a.transfers.policy = ReferPolicy(notify_timeout=5.0)
    a_id, _ = connect(net)
    net.now = 10.0
    assert a.transfers.transfer(a_id, "sip:c@192.0.2.3", net.now)
    net.pump()
    assert [n.body for n in requests(a, "NOTIFY")] == [b"SIP/2.0 100 Trying\r\n"]
    assert [k.state for k in live(c)] == ["ringing"]  # C never answers
    net.advance(4.0)
    assert a.calls.get(a_id).status(net.now)["transfer"] == "trying"
    net.advance(2.0)
    status = a.calls.get(a_id).status(net.now)
    assert (status["transfer"], status["transfer_status"]) == ("failed", 408)
    assert status["transfer_reason"] == "no final NOTIFY within 5 s"
    assert status["state"] == "connected" and status["held"] is False
    assert b"a=sendrecv" in requests(b, "INVITE")[-1].body


def test_out_of_dialog_refer_without_norefersub_follows_notifies_in_its_own_dialog() -> None:
    """Refer-Sub not asked (policy off): the REFER's 2xx creates a subscription dialog of its
    own (RFC 3515 2.4.4), and the NOTIFYs in it - not in the call's dialog - end the transfer."""
    net = gruu_net(ReferPolicy(norefersub=False))
    a, b = net.phones["a"], net.phones["b"]
    a_id, b_id = connect(net)
    sent: list[SipRequest] = []

    def peer_refer(server_tx: object, request: SipRequest, now: float) -> None:
        """B as a transferee that keeps a subscription: 200, then NOTIFY in the new dialog."""
        ok = b.ua.respond(server_tx, request, 200, "OK", now)
        b_call = b.calls.get(b_id)
        for n, (state, frag) in enumerate(
            [
                ("active;expires=60", "SIP/2.0 100 Trying"),
                ("terminated;reason=noresource", "SIP/2.0 200 OK"),
            ],
            start=1,
        ):
            notify = make_request(
                "NOTIFY",
                "sip:a@192.0.2.1",
                headers=[
                    ("Max-Forwards", "70"),
                    ("From", f"<sip:b@192.0.2.2>;tag={ok.to.tag}"),
                    ("To", f"<{request.from_.uri}>;tag={request.from_.tag}"),
                    ("Call-ID", request.call_id),
                    ("CSeq", f"{n} NOTIFY"),
                    ("Contact", "<sip:b@192.0.2.2>"),
                    ("Event", "refer"),
                    ("Subscription-State", state),
                    ("Content-Type", "message/sipfrag;version=2.0"),
                ],
                body=f"{frag}\r\n".encode(),
            )
            sent.append(notify)
            b.ua.send_request(notify, Recorder(), now)
        assert b_call.state == "connected"

    b.ua.handlers["REFER"] = peer_refer
    assert a.transfers.transfer(a_id, "sip:c@192.0.2.3", net.now)
    net.pump()
    answers = [r for r in responses(b, "NOTIFY")]
    assert [r.status for r in answers] == [200, 200]
    status = a.calls.get(a_id).status(net.now)
    assert (status["transfer"], status["transfer_status"]) == ("done", 200)
    assert status["transfer_reason"] == "final NOTIFY: 200" and status["state"] == "ended"
    # The subscription dialog is gone: a late NOTIFY in it is 481.
    late = make_request("NOTIFY", "sip:a@192.0.2.1", headers=list(sent[-1].headers))
    late.headers.set("CSeq", "3 NOTIFY")
    late.headers.remove("Via")
    rec = Recorder()
    b.ua.send_request(late, rec, net.now)
    net.pump()
    assert [r.status for r in rec.responses] == [481]
