"""INVITE with Join (RFC 3911) as the joined phone, and no ringing for Replaces/Join (RFC 3891 3).

A calls B; X (a supervisor on B's allow_from, Digest user x) joins B's call. Wire checks: 401
then 200 without any 180, the joined call untouched, the runtime told to mix the two; every
refusal (T12 stranger, T13 malformed, 481/603/486, T2 replayed Authorization) changes nothing.
"""

from __future__ import annotations

import pytest

from firmware.call.join import JoinService, join_of
from firmware.call.replaces import ReplacesRefused
from firmware.sip.message import SipRequest, make_request
from tests.unit.test_refer import Net, Phone, Recorder, answer_c, connect, requests, responses
from tests.unit.test_replaces import consult, live, phone

JOINS: dict[int, JoinService] = {}


def joinable(name: str, **kw: object) -> Phone:
    p = phone(name, **kw)  # type: ignore[arg-type]
    assert p.transfers.auth is not None
    JOINS[id(p)] = JoinService(p.calls, p.transfers.auth)
    return p


@pytest.fixture
def net() -> Net:
    return Net(joinable("a"), joinable("b"), joinable("x"))


def join_value(net: Net, b_id: str) -> str:
    """B's call as B sees it: to-tag = B's own tag, from-tag = A's."""
    dialog = net.phones["b"].calls.get(b_id).session.dialog
    assert dialog is not None
    return f"{dialog.call_id};to-tag={dialog.local_tag};from-tag={dialog.remote_tag}"


def x_joins(net: Net, value: str, extra: list[tuple[str, str]] | None = None) -> list[int]:
    """X dials B with Join; the final statuses X received for that INVITE."""
    x = net.phones["x"]
    call = x.calls.dial(
        "sip:b@192.0.2.2", "line1", net.now, extra_headers=[("Join", value), *(extra or [])]
    )
    net.pump()
    call_id = call.session.call_id
    return [r.status for r in responses(x, "INVITE") if r.call_id == call_id and r.status >= 200]


def no_180(p: Phone, call_id: str) -> bool:
    return not any(r.status == 180 for r in responses(p, "INVITE") if r.call_id == call_id)


def test_join_from_a_listed_supervisor_answers_at_once_and_mixes(net: Net) -> None:
    a, b, x = net.phones["a"], net.phones["b"], net.phones["x"]
    a_id, b_id = connect(net)
    assert x_joins(net, join_value(net, b_id)) == [401, 200]
    [joined] = [c for c in live(b) if c.id != b_id]
    assert joined.state == "connected" and joined.extras["joins_call"] == b_id
    assert b.calls.get(b_id).extras["joined_by"] == joined.id
    assert no_180(x, joined.session.call_id)  # answered, never rung
    [ok] = [r for r in responses(x, "INVITE") if r.status == 200]
    assert (ok.headers.get("Contact") or "").endswith(";isfocus")  # RFC 3911 7.1: a focus now
    # A's call with B is untouched: no re-INVITE, no BYE; the runtime mixes the two once.
    assert requests(a, "INVITE") == [] and requests(a, "BYE") == []
    assert b.calls.get(b_id).state == "connected" and a.calls.get(a_id).state == "connected"
    service = JOINS[id(b)]
    assert service.ready_to_mix(lambda cid: cid != joined.id) == []
    assert service.ready_to_mix(lambda cid: True) == [(b_id, joined.id)]
    assert service.ready_to_mix(lambda cid: True) == []
    assert [k.state for k in live(x)] == ["connected"]


def test_t12_join_from_an_unlisted_identity_is_403_without_a_challenge() -> None:
    net = Net(joinable("a"), joinable("b", allow_from=()), joinable("x"))
    _, b_id = connect(net)
    assert x_joins(net, join_value(net, b_id)) == [403]
    assert [c.id for c in live(net.phones["b"])] == [b_id]


def test_t12_join_with_a_wrong_password_is_403() -> None:
    net = Net(joinable("a"), joinable("b"), joinable("x", password="guess"))
    _, b_id = connect(net)
    assert x_joins(net, join_value(net, b_id)) == [401, 403]
    assert [c.id for c in live(net.phones["b"])] == [b_id]


def test_t2_replayed_join_authorization_gets_401_stale_and_nothing_happens(net: Net) -> None:
    b, x = net.phones["b"], net.phones["x"]
    _, b_id = connect(net)
    assert x_joins(net, join_value(net, b_id)) == [401, 200]
    captured = [r for r in requests(b, "INVITE") if r.headers.get("Authorization")][-1]
    # The joiner hangs up; the captured INVITE is replayed as a new call.
    [x_call] = live(x)
    x.calls.hangup(x_call.id, net.now)
    net.pump()
    assert [c.id for c in live(b)] == [b_id]
    headers = [(n, v) for n, v in captured.headers if n.lower() not in ("via", "call-id", "from")]
    headers += [("Call-ID", "replayed-join"), ("From", "<sip:x@192.0.2.66>;tag=replay")]
    replay = make_request("INVITE", str(captured.uri), headers=headers, body=captured.body)
    rec = Recorder()
    x.ua.send_request(replay, rec, net.now)
    net.pump()
    assert [r.status for r in rec.responses] == [401]
    assert "stale=true" in rec.responses[0].headers.get_raw("WWW-Authenticate")[0]
    assert [c.id for c in live(b)] == [b_id]


def test_join_of_unknown_ended_and_already_joined_calls(net: Net) -> None:
    a, b = net.phones["a"], net.phones["b"]
    a_id, b_id = connect(net)
    value = join_value(net, b_id)
    assert x_joins(net, value.replace("from-tag=", "from-tag=zz")) == [481]
    assert x_joins(net, value) == [401, 200]
    assert x_joins(net, value) == [486]  # joined once is enough
    a.calls.hangup(a_id, net.now)
    net.pump()
    assert b.calls.get(b_id).state == "ended"
    assert x_joins(net, value) == [603]


def test_an_early_call_cannot_be_joined() -> None:
    net = Net(joinable("a"), joinable("c"), joinable("x"))
    a_c = consult(net, answer=False)
    c = net.phones["c"]
    [ringing] = live(c)
    dialog = ringing.session.dialog
    assert dialog is not None
    value = f"{dialog.call_id};to-tag={dialog.local_tag};from-tag={dialog.remote_tag}"
    x = net.phones["x"]
    x.calls.dial("sip:c@192.0.2.3", "line1", net.now, extra_headers=[("Join", value)])
    net.pump()
    assert [r.status for r in responses(x, "INVITE") if r.status >= 200] == [481]
    answer_c(net)
    assert net.phones["a"].calls.get(a_c).state == "connected"


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ([("Join", "other;to-tag=1;from-tag=2")], "More than one Join"),
        ([("Replaces", "other;to-tag=1;from-tag=2")], "Replaces and Join together"),
    ],
)
def test_t13_contradictory_join_is_400(
    net: Net, extra: list[tuple[str, str]], reason: str
) -> None:
    b, x = net.phones["b"], net.phones["x"]
    _, b_id = connect(net)
    assert x_joins(net, join_value(net, b_id), extra) == [400]
    [final] = [r for r in responses(x, "INVITE") if r.status == 400]
    assert final.reason == reason
    assert [c.id for c in live(b)] == [b_id]


def test_t13_join_for_an_unknown_dialog_with_replaces_is_400_not_481(net: Net) -> None:
    connect(net)
    extra = [("Replaces", "nope;to-tag=1;from-tag=2")]
    assert x_joins(net, "nope;to-tag=3;from-tag=4", extra) == [400]


def test_t13_join_syntax() -> None:
    def req(*values: str, method: str = "INVITE") -> SipRequest:
        return make_request(method, "sip:b@h", headers=[("Join", v) for v in values])

    assert join_of(req()) is None
    parsed = join_of(req("abc@h;to-tag=1;from-tag=2"))
    assert parsed is not None and (parsed.call_id, parsed.to_tag, parsed.from_tag) == (
        "abc@h",
        "1",
        "2",
    )
    for bad, words in [
        (req("abc;to-tag=1"), "needs to-tag and from-tag"),
        (req(";to-tag=1;from-tag=2"), "without a Call-ID"),
        (req("a;to-tag=1;from-tag=2;early-only"), "early-only"),
        (req("a;to-tag=1;from-tag=2", method="OPTIONS"), "not allowed in OPTIONS"),
        (req("a;to-tag=1;from-tag=2, b;to-tag=1;from-tag=2"), "More than one"),
    ]:
        with pytest.raises(ReplacesRefused) as e:
            join_of(bad)
        assert e.value.status == 400 and words in e.value.reason


def test_accepted_replaces_is_answered_without_180() -> None:
    """RFC 3891 section 3: the replacing INVITE is answered, not alerted (wire check)."""
    net = Net(joinable("a"), joinable("b"), joinable("c"))
    a, b, c = net.phones["a"], net.phones["b"], net.phones["c"]
    a_b, _ = connect(net)
    a_c = consult(net)
    assert a.transfers.transfer_attended(a_b, a_c, net.now)
    net.pump()
    [invite] = [r for r in requests(c, "INVITE") if r.headers.get("Replaces")]
    statuses = [r.status for r in responses(b, "INVITE") if r.call_id == invite.call_id]
    assert 200 in statuses and 180 not in statuses and 183 not in statuses
    assert [k.state for k in live(c)] == ["connected"]


def test_line_appearances_never_hold_a_replacement_or_a_joiner() -> None:
    """With the one-talking-call rule on (firmware/call/lines.py), the replacing call and the
    joining call take the existing call's line: no hold re-INVITE is sent to either of them."""
    from firmware.call.lines import LineAppearances

    net = Net(joinable("a"), joinable("b"), joinable("c"), joinable("x"))
    a, b, c, x = (net.phones[n] for n in "abcx")
    for p in (b, c):
        LineAppearances(p.calls)
    a_b, b_id = connect(net)
    a_c = consult(net, answer=False)  # C answers after the transfer was asked for: not held
    assert a.transfers.transfer_attended(a_b, a_c, net.now)
    answer_c(net)
    [c_new] = live(c)
    assert (c_new.state, c_new.held) == ("connected", False)
    assert not [r for r in requests(b, "INVITE") if r.call_id == c_new.session.call_id]
    [b_new] = live(b)
    value = join_value(net, b_new.id)
    assert x_joins(net, value) == [401, 200]
    joined = [k for k in live(b) if k.id != b_new.id][0]
    assert (joined.state, joined.held, b_new.held) == ("connected", False, False)
    assert not [r for r in requests(x, "INVITE") if r.call_id == joined.session.call_id]
