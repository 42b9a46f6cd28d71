"""INVITE with Replaces (RFC 3891) and attended transfer (RFC 5589 section 7), on the wire bytes.

Reuses the three-phone harness of test_refer (A transferor, B transferee, C target; X a
stranger); every phone also runs a `ReplacesService`. One test per threat row: T3, T7, T8, T13,
T14 (docs/threat-model.md).
"""

from __future__ import annotations

from urllib.parse import unquote

import pytest

from firmware.call.manager import Call
from firmware.call.refer import ReferPolicy, attended_refer_to
from firmware.call.replaces import (
    ReplacesPolicy,
    ReplacesRefused,
    ReplacesService,
    parse_replaces,
)
from firmware.sip.message import make_request
from firmware.sip.uri import parse_uri
from tests.unit.test_refer import (
    ALLOW_FROM,
    HOSTS,
    USERS,
    Net,
    Phone,
    Recorder,
    answer_c,
    connect,
    make_phone,
    requests,
    responses,
)

SERVICES: dict[int, ReplacesService] = {}


def phone(
    name: str,
    policy: ReplacesPolicy | None = None,
    *,
    allow_from: tuple[str, ...] = ALLOW_FROM,
    password: str | None = None,
) -> Phone:
    """A phone whose allow-listed X (Digest user x, `USERS`) may replace; X itself answers
    challenges with that password (or ``password``)."""
    p = make_phone(
        name, ReferPolicy(), allow_from=allow_from, password=password or USERS.get(name)
    )
    SERVICES[id(p)] = ReplacesService(p.calls, policy or ReplacesPolicy(), p.transfers.auth)
    return p


@pytest.fixture
def net() -> Net:
    return Net(phone("a"), phone("b"), phone("c"), phone("x"))


def consult(net: Net, *, answer: bool = True) -> str:
    """A places the consultation call to C (answered unless told otherwise); A's call id."""
    call = net.phones["a"].calls.dial("sip:c@192.0.2.3", "line1", net.now)
    net.pump()
    if answer:
        answer_c(net)
    return call.id


def replaces_for_c(net: Net, a_c: str) -> str:
    """The Replaces value naming the A-C dialog as C sees it (to-tag = C's own tag)."""
    dialog = net.phones["a"].calls.get(a_c).session.dialog
    assert dialog is not None and dialog.remote_tag is not None
    return f"{dialog.call_id};to-tag={dialog.remote_tag};from-tag={dialog.local_tag}"


def live(p: Phone) -> list[Call]:
    return p.calls.active_calls()


def new_invite_status(p: Phone) -> list[int]:
    """Final statuses p received for the INVITEs it sent (its own calls)."""
    return [r.status for r in responses(p, "INVITE") if r.status >= 200]


# --------------------------------------------------------------------------------------------
# Attended transfer, every role
# --------------------------------------------------------------------------------------------
def test_attended_transfer_every_role_on_the_wire(net: Net) -> None:
    a, b, c = net.phones["a"], net.phones["b"], net.phones["c"]
    a_b, _ = connect(net)
    a_c = consult(net)
    replaces = replaces_for_c(net, a_c)
    c_old = live(c)[0]
    net.now = 10.0
    assert a.transfers.transfer_attended(a_b, a_c, net.now)
    net.pump()

    # Transferor: REFER to B names C's Contact with the A-C dialog escaped (RFC 5589 7.3).
    refer = requests(b, "REFER")[0]
    call_id, rest = replaces.split(";", 1)
    escaped = call_id.replace("@", "%40") + "%3B" + rest.replace(";", "%3B").replace("=", "%3D")
    assert refer.headers.get("Refer-To") == f"<sip:c@192.0.2.3?Replaces={escaped}>"
    assert refer.headers.get("Referred-By") == "<sip:a@192.0.2.1>"
    # Transferee: the triggered INVITE to C carries the unescaped Replaces and Referred-By.
    invite = [r for r in requests(c, "INVITE") if r.headers.get("Replaces")][0]
    assert invite.headers.get("Replaces") == replaces
    assert invite.headers.get("Referred-By") == "<sip:a@192.0.2.1>"
    assert invite.from_.uri == parse_uri("sip:b@192.0.2.2")
    # Target: 200 at once (no answer action), BYE on the replaced dialog with A.
    ok = [r for r in responses(b, "INVITE") if r.call_id == invite.call_id and r.status == 200]
    assert len(ok) == 1
    bye_from_c = [r for r in requests(a, "BYE") if r.call_id == c_old.session.call_id]
    assert len(bye_from_c) == 1
    # B reports 200 to A, A ends its call with B.
    assert requests(a, "NOTIFY")[-1].body == b"SIP/2.0 200 OK\r\n"
    assert any(r.call_id == refer.call_id for r in requests(b, "BYE"))
    # Outcome: B and C talk, A has no calls.
    assert live(a) == []
    [b_new], [c_new] = live(b), live(c)
    assert (b_new.state, c_new.state) == ("connected", "connected")
    assert c_new.session.call_id == invite.call_id
    assert c_new.extras["replaces_call"] == c_old.id
    assert c_old.state == "ended" and c_old.extras["replaced_by"] == c_new.id
    assert a.calls.get(a_b).extras["transfer"] == "done"


def test_attended_transfer_waits_while_consultation_rings(net: Net) -> None:
    a, b, c = net.phones["a"], net.phones["b"], net.phones["c"]
    a_b, _ = connect(net)
    a_c = consult(net, answer=False)
    assert a.calls.get(a_c).state == "early"
    assert a.transfers.transfer_attended(a_b, a_c, net.now)
    net.pump()
    # A ringing target cannot be replaced (RFC 3891 3): no REFER before C answers.
    assert requests(b, "REFER") == []
    assert a.calls.get(a_b).extras["transfer"] == "waiting"
    answer_c(net)
    assert len(requests(b, "REFER")) == 1
    assert live(a) == []
    assert [x.state for x in live(b)] == ["connected"]
    assert [x.state for x in live(c)] == ["connected"]


def test_attended_transfer_consultation_fails_resumes_the_call(net: Net) -> None:
    a, b, c = net.phones["a"], net.phones["b"], net.phones["c"]
    a_b, _ = connect(net)
    a_c = consult(net, answer=False)
    assert a.transfers.transfer_attended(a_b, a_c, net.now)
    net.pump()
    c.calls.reject(live(c)[0].id, net.now)
    net.pump()
    assert requests(b, "REFER") == []
    assert b"a=sendrecv" in requests(b, "INVITE")[-1].body  # A resumed B
    assert a.calls.get(a_b).state == "connected"
    assert a.calls.get(a_b).extras["transfer"] == "failed"


def test_attended_transfer_refused_by_target_resumes_the_call() -> None:
    net = Net(phone("a"), phone("b"), phone("c", ReplacesPolicy(referred_by_peer=False)))
    a, b, c = net.phones["a"], net.phones["b"], net.phones["c"]
    a_b, _ = connect(net)
    a_c = consult(net)
    assert a.transfers.transfer_attended(a_b, a_c, net.now)
    net.pump()
    assert 403 in new_invite_status(b)
    assert requests(a, "NOTIFY")[-1].body == b"SIP/2.0 403 Not authorised to replace this call\r\n"
    assert a.calls.get(a_b).state == "connected"  # resumed
    assert a.calls.get(a_c).state == "held"  # the consultation call is untouched
    assert [x.state for x in live(c)] == ["connected"]
    assert requests(a, "BYE") == []


def test_refer_to_escaping_roundtrip() -> None:
    target = parse_uri("sip:c@192.0.2.3:5060;transport=udp")
    value = attended_refer_to(target, "abc@h;x", "t1", "f2", require=True)
    assert value == (
        "sip:c@192.0.2.3:5060;transport=udp"
        "?Replaces=abc%40h%3Bx%3Bto-tag%3Dt1%3Bfrom-tag%3Df2&Require=replaces"
    )
    uri = parse_uri(value)
    assert unquote(uri.headers["Replaces"]) == "abc@h;x;to-tag=t1;from-tag=f2"  # type: ignore[union-attr]


def test_transferee_copies_embedded_replaces_and_require(net: Net) -> None:
    a, c = net.phones["a"], net.phones["c"]
    a_b, _ = connect(net)
    session = a.calls.get(a_b).session
    assert session.dialog is not None
    refer = session.dialog.create_request(
        "REFER",
        ids=a.ua.ids,
        contact=session.contact,
        extra_headers=[
            (
                "Refer-To",
                "<sip:c@192.0.2.3?Replaces=cid%3Bto-tag%3D1%3Bfrom-tag%3D2&Require=replaces>",
            )
        ],
    )
    a.ua.send_request(refer, Recorder(), net.now)
    net.pump()
    invite = requests(c, "INVITE")[0]
    assert invite.headers.get("Replaces") == "cid;to-tag=1;from-tag=2"
    assert invite.headers.get("Require") == "replaces"


# --------------------------------------------------------------------------------------------
# Target-side matching rules (RFC 3891 section 3)
# --------------------------------------------------------------------------------------------
def test_parse_replaces() -> None:
    r = parse_replaces("x@y ; from-tag=F ;to-tag=T;early-only")
    assert (r.call_id, r.to_tag, r.from_tag, r.early_only) == ("x@y", "T", "F", True)
    with pytest.raises(ReplacesRefused) as e:
        parse_replaces("x@y;to-tag=T")
    assert e.value.status == 400


def test_unknown_dialog_is_481(net: Net) -> None:
    x = net.phones["x"]
    x.calls.dial(
        "sip:c@192.0.2.3",
        "line1",
        net.now,
        extra_headers=[("Replaces", "nope;to-tag=1;from-tag=2")],
    )
    net.pump()
    assert new_invite_status(x) == [481]
    assert live(net.phones["c"]) == []


def test_swapped_tags_do_not_match(net: Net) -> None:
    """RFC 3911's example swaps the tags; RFC 3891's rule (to-tag = recipient's tag) wins."""
    x, c = net.phones["x"], net.phones["c"]
    a_c = consult(net)
    call_id, to, frm = replaces_for_c(net, a_c).split(";")
    swapped = f"{call_id};to-tag={frm.split('=')[1]};from-tag={to.split('=')[1]}"
    x.calls.dial(
        "sip:c@192.0.2.3",
        "line1",
        net.now,
        extra_headers=[("Replaces", swapped), ("Referred-By", "<sip:a@192.0.2.1>")],
    )
    net.pump()
    assert new_invite_status(x) == [481]
    assert [k.state for k in live(c)] == ["connected"]


def test_ringing_here_cannot_be_replaced_481(net: Net) -> None:
    """An early dialog this phone did not initiate (it is ringing here) -> 481."""
    a, c, x = net.phones["a"], net.phones["c"], net.phones["x"]
    a_c = consult(net, answer=False)
    ringing = live(c)[0]
    dialog = ringing.session.dialog
    assert dialog is not None
    value = f"{dialog.call_id};to-tag={dialog.local_tag};from-tag={dialog.remote_tag}"
    x.calls.dial(
        "sip:c@192.0.2.3",
        "line1",
        net.now,
        extra_headers=[("Replaces", value), ("Referred-By", "<sip:a@192.0.2.1>")],
    )
    net.pump()
    assert new_invite_status(x) == [481]
    assert ringing.state == "ringing" and a.calls.get(a_c).state == "early"


def test_own_early_dialog_is_replaced_and_cancelled() -> None:
    """Pickup: X (allow-listed) answers A's Digest challenge and takes over the call A is
    placing to C; A CANCELs C (487)."""
    net = Net(phone("a"), phone("c"), phone("x"))
    a, c, x = net.phones["a"], net.phones["c"], net.phones["x"]
    a_c = consult(net, answer=False)
    session = a.calls.get(a_c).session
    [c_tag] = [r.to.tag for r in responses(a, "INVITE") if r.status == 180]
    value = (
        f"{session.call_id};to-tag={session.initial_request.from_.tag};from-tag={c_tag};early-only"
    )
    x.calls.dial("sip:a@192.0.2.1", "line1", net.now, extra_headers=[("Replaces", value)])
    net.pump()
    assert new_invite_status(x) == [401, 200]
    challenge = [r for r in responses(x, "INVITE") if r.status == 401][0]
    assert challenge.headers.get_raw("WWW-Authenticate")[0].startswith(
        'Digest realm="deskphone"'
    )
    assert len(requests(c, "CANCEL")) == 1
    assert a.calls.get(a_c).state == "ended"
    assert [k.state for k in live(a)] == ["connected"]
    assert live(c) == []


# --------------------------------------------------------------------------------------------
# Threats
# --------------------------------------------------------------------------------------------
def test_t3_replayed_replaces_after_success_gets_603_and_no_ringing(net: Net) -> None:
    a, b, c = net.phones["a"], net.phones["b"], net.phones["c"]
    a_b, _ = connect(net)
    a_c = consult(net)
    replaces = replaces_for_c(net, a_c)
    assert a.transfers.transfer_attended(a_b, a_c, net.now)
    net.pump()
    before = len(c.calls.calls)
    net.now = 20.0
    # The same Replaces in a fresh INVITE (new Call-ID and From tag), from the legitimate peer.
    b.calls.dial(
        "sip:c@192.0.2.3",
        "line1",
        net.now,
        extra_headers=[("Replaces", replaces), ("Referred-By", "<sip:a@192.0.2.1>")],
    )
    net.pump()
    assert new_invite_status(b)[-1] == 603
    replay = requests(c, "INVITE")[-1]
    statuses = [r.status for r in responses(b, "INVITE") if r.call_id == replay.call_id]
    assert statuses == [603]  # no 180: nothing rang
    assert len(c.calls.calls) == before
    assert [k.state for k in live(c)] == ["connected"]


def test_t7_replaces_from_a_stranger_is_403_and_the_call_continues() -> None:
    net = Net(phone("a"), phone("c", allow_from=()), phone("x"))
    a, c, x = net.phones["a"], net.phones["c"], net.phones["x"]
    a_c = consult(net)
    x.calls.dial(
        "sip:c@192.0.2.3", "line1", net.now, extra_headers=[("Replaces", replaces_for_c(net, a_c))]
    )
    net.pump()
    assert new_invite_status(x) == [403]
    assert requests(a, "BYE") == [] and requests(c, "BYE") == []
    assert a.calls.get(a_c).state == "connected"
    assert [k.state for k in live(c)] == ["connected"]


def test_t7_listed_identity_with_a_wrong_password_is_403_and_the_call_continues() -> None:
    net = Net(phone("a"), phone("c"), phone("x", password="guessed"))
    a, c, x = net.phones["a"], net.phones["c"], net.phones["x"]
    a_c = consult(net)
    x.calls.dial(
        "sip:c@192.0.2.3", "line1", net.now, extra_headers=[("Replaces", replaces_for_c(net, a_c))]
    )
    net.pump()
    assert new_invite_status(x) == [401, 403]
    assert requests(a, "BYE") == [] and requests(c, "BYE") == []
    assert a.calls.get(a_c).state == "connected"
    assert [k.state for k in live(c)] == ["connected"]


def test_t7_replaces_from_the_dialog_peer_is_allowed(net: Net) -> None:
    """Same identity as the replaced dialog's peer (A moving its call, e.g. to another device)."""
    a, c = net.phones["a"], net.phones["c"]
    a_c = consult(net)
    a.calls.dial(
        "sip:c@192.0.2.3", "line1", net.now, extra_headers=[("Replaces", replaces_for_c(net, a_c))]
    )
    net.pump()
    assert a.calls.get(a_c).state == "ended"
    assert [k.state for k in live(c)] == ["connected"]
    assert [k.state for k in live(a)] == ["connected"]


def test_t8_early_only_on_an_answered_call_is_486(net: Net) -> None:
    a, c, x = net.phones["a"], net.phones["c"], net.phones["x"]
    a_c = consult(net)
    value = replaces_for_c(net, a_c) + ";early-only"
    x.calls.dial(
        "sip:c@192.0.2.3",
        "line1",
        net.now,
        extra_headers=[("Replaces", value), ("Referred-By", "<sip:a@192.0.2.1>")],
    )
    net.pump()
    assert new_invite_status(x) == [486]
    assert a.calls.get(a_c).state == "connected"
    assert [k.state for k in live(c)] == ["connected"]
    assert requests(a, "BYE") == []


@pytest.mark.parametrize(
    "extra",
    [
        [("Replaces", "{r}"), ("Replaces", "{r}")],
        [("Replaces", "{r}, {r}")],
        [("Replaces", "{r}"), ("Join", "{r}")],
        [("Replaces", "{cid};to-tag=only")],
    ],
    ids=["two-headers", "two-values", "with-join", "missing-from-tag"],
)
def test_t13_contradictory_replaces_is_400(net: Net, extra: list[tuple[str, str]]) -> None:
    a, c, x = net.phones["a"], net.phones["c"], net.phones["x"]
    a_c = consult(net)
    r = replaces_for_c(net, a_c)
    headers = [(n, v.format(r=r, cid=r.split(";")[0])) for n, v in extra]
    x.calls.dial(
        "sip:a@192.0.2.1",
        "line1",
        net.now,
        extra_headers=[*headers, ("Referred-By", "<sip:c@192.0.2.3>")],
    )
    x.calls.dial(
        "sip:c@192.0.2.3",
        "line1",
        net.now,
        extra_headers=[*headers, ("Referred-By", "<sip:a@192.0.2.1>")],
    )
    net.pump()
    assert new_invite_status(x) == [400, 400]
    assert a.calls.get(a_c).state == "connected"
    assert [k.state for k in live(c)] == ["connected"]
    assert requests(a, "BYE") == [] and requests(c, "BYE") == []


def test_t14_replacement_adding_video_gets_video_port_0(net: Net) -> None:
    x = net.phones["x"]
    a_c = consult(net)
    sdp = (
        b"v=0\r\no=x 1 1 IN IP4 192.0.2.66\r\ns=-\r\nc=IN IP4 192.0.2.66\r\nt=0 0\r\n"
        b"m=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
        b"m=video 4002 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"
    )
    invite = make_request(
        "INVITE",
        "sip:c@192.0.2.3",
        headers=[
            ("Max-Forwards", "70"),
            ("From", "<sip:a@192.0.2.1>;tag=move1"),
            ("To", "<sip:c@192.0.2.3>"),
            ("Call-ID", "t14-replace"),
            ("CSeq", "1 INVITE"),
            ("Contact", f"<sip:x@{HOSTS['x']}>"),
            ("Replaces", replaces_for_c(net, a_c)),
            ("Content-Type", "application/sdp"),
        ],
        body=sdp,
    )
    rec = Recorder()
    x.ua.send_request(invite, rec, net.now)
    net.pump()
    ok = [r for r in rec.responses if r.status == 200]
    assert ok, [r.status for r in rec.responses]
    body = ok[0].body.decode()
    assert "m=audio " in body and "m=audio 0 " not in body
    assert "m=video 0 " in body


def _crafted_invite(net: Net, replaces: str, sdp_codec: str, tag: str) -> list[int]:
    """An INVITE+Replaces from A's identity with a one-codec offer; the statuses it got."""
    pt, name = sdp_codec.split(" ")
    sdp = (
        "v=0\r\no=x 1 1 IN IP4 192.0.2.66\r\ns=-\r\nc=IN IP4 192.0.2.66\r\nt=0 0\r\n"
        f"m=audio 4000 RTP/AVP {pt}\r\na=rtpmap:{pt} {name}\r\n"
    ).encode()
    invite = make_request(
        "INVITE",
        "sip:c@192.0.2.3",
        headers=[
            ("Max-Forwards", "70"),
            ("From", f"<sip:a@192.0.2.1>;tag={tag}"),
            ("To", "<sip:c@192.0.2.3>"),
            ("Call-ID", f"move-{tag}"),
            ("CSeq", "1 INVITE"),
            ("Contact", f"<sip:x@{HOSTS['x']}>"),
            ("Replaces", replaces),
            ("Content-Type", "application/sdp"),
        ],
        body=sdp,
    )
    rec = Recorder()
    net.phones["x"].ua.send_request(invite, rec, net.now)
    net.pump()
    return [r.status for r in rec.responses]


def test_unusable_offer_is_488_and_the_old_call_stays_replaceable(net: Net) -> None:
    a, c = net.phones["a"], net.phones["c"]
    a_c = consult(net)
    replaces = replaces_for_c(net, a_c)
    assert _crafted_invite(net, replaces, "18 G729/8000", "bad1") == [488]
    assert a.calls.get(a_c).state == "connected" and requests(a, "BYE") == []
    assert [k.state for k in live(c)] == ["connected"]
    assert "replaced_by" not in live(c)[0].extras
    assert _crafted_invite(net, replaces, "0 PCMU/8000", "good1")[-1] == 200


def test_transfer_attended_guards(net: Net) -> None:
    a = net.phones["a"]
    a_b, _ = connect(net)
    assert not a.transfers.transfer_attended(a_b, a_b, net.now)
    # A consultation call that rings HERE (incoming, unanswered) cannot be a transfer target.
    net.phones["c"].calls.dial("sip:a@192.0.2.1", "line1", net.now)
    net.pump()
    incoming = [k for k in live(a) if k.direction == "incoming"][0]
    assert incoming.state == "ringing"
    assert not a.transfers.transfer_attended(a_b, incoming.id, net.now)
    assert requests(net.phones["b"], "REFER") == []


def test_original_call_hung_up_while_waiting_sends_no_refer(net: Net) -> None:
    a, b = net.phones["a"], net.phones["b"]
    a_b, _ = connect(net)
    a_c = consult(net, answer=False)
    assert a.transfers.transfer_attended(a_b, a_c, net.now)
    net.pump()
    a.calls.hangup(a_b, net.now)
    net.pump()
    answer_c(net)
    assert requests(b, "REFER") == []
    assert a.calls.get(a_c).state in ("connected", "held")
