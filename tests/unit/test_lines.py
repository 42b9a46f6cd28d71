"""Line appearances on the wire: call waiting, answer-and-hold, swap, reject, 486 beyond the limit.

Phone A (with `LineAppearances`) is called by B and then by C (and X) over an in-memory network
that serialises and parses every message (the sans-IO phones of test_refer.py). Every step
checks the invariant: at most one of A's calls is sendrecv.
"""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from firmware.call.lines import LineAppearances, LineBusy
from firmware.call.replaces import ReplacesService
from firmware.sip.message import SipRequest, SipResponse
from firmware.sip.parser import parse_message
from firmware.sip.sdp import SessionDescription
from tests.unit.test_refer import HOSTS, Net, Phone, make_phone, requests, responses


class WireNet(Net):
    """Net that also keeps one ordered log of (sender, receiver, message)."""

    def __init__(self, *phones: Phone) -> None:
        super().__init__(*phones)
        self.log: list[tuple[str, str, SipRequest | SipResponse]] = []

    def pump(self) -> None:
        for _ in range(200):
            moved = False
            for src in self.phones.values():
                for out in src.ua.drain():
                    dst = self.phones[str(out.dest)]
                    msg = parse_message(out.data)
                    self.log.append((src.name, dst.name, msg))
                    dst.wire.append(msg)
                    dst.ua.receive(msg, src.name, reliable=False, now=self.now)
                    dst.calls.process(self.now)
                    moved = True
                src.calls.process(self.now)
            if not moved:
                return
        raise AssertionError("network never went quiet")

    def sent(self, src: str, dst: str) -> list[str]:
        """First lines of what ``src`` sent to ``dst``, e.g. 'INVITE', '200 INVITE'."""
        return [
            m.method if isinstance(m, SipRequest) else f"{m.status} {m.cseq.method}"
            for s, d, m in self.log
            if (s, d) == (src, dst)
        ]


@pytest.fixture
def wnet() -> WireNet:
    phones = [make_phone(n) for n in ("a", "b", "c", "x")]
    net = WireNet(*phones)
    LineAppearances(phones[0].calls)
    return net


def lines(net: WireNet) -> LineAppearances:
    lines = net.phones["a"].calls.lines
    assert isinstance(lines, LineAppearances)
    return lines


def check_invariant(net: WireNet) -> None:
    """At most one of A's calls sends and receives: by state and by the last SDP A sent."""
    a = net.phones["a"]
    talking = [c for c in a.calls.calls.values() if c.state == "connected" and not c.held]
    assert len(talking) <= 1, [c.id for c in talking]
    assert lines(net).violations() == []


def call_a_from(net: WireNet, name: str) -> str:
    """``name`` calls A; returns A's id for that call (ringing)."""
    net.phones[name].calls.dial(f"sip:a@{HOSTS['a']}", "line1", net.now)
    net.pump()
    a = net.phones["a"]
    ringing = [c for c in a.calls.calls.values() if c.state == "ringing"]
    assert len(ringing) == 1
    check_invariant(net)
    return ringing[0].id


def direction(body: bytes) -> str:
    """The audio stream's direction attribute (RFC 3264: none means sendrecv)."""
    names = {a.name for a in SessionDescription.parse(body).media[0].attributes}
    return next((d for d in ("sendonly", "recvonly", "inactive") if d in names), "sendrecv")


def talking_with(net: WireNet, a_id: str) -> None:
    a = net.phones["a"]
    a.calls.answer(a_id, net.now)
    net.pump()
    assert a.calls.get(a_id).state == "connected"


def test_call_waiting_then_answer_and_hold_puts_the_hold_reinvite_first(wnet: WireNet) -> None:
    a, b, c = wnet.phones["a"], wnet.phones["b"], wnet.phones["c"]
    first = call_a_from(wnet, "b")
    assert a.calls.get(first).status(wnet.now)["waiting"] is False  # nothing else up: rings
    talking_with(wnet, first)

    wnet.now = 5.0
    second = call_a_from(wnet, "c")
    waiting = a.calls.get(second).status(wnet.now)
    assert (waiting["state"], waiting["waiting"], waiting["active"]) == ("ringing", True, False)
    assert a.calls.get(first).status(wnet.now)["active"] is True
    assert lines(wnet).status() == {"max_calls": 4, "active_call": first, "waiting": [second]}
    assert [r.status for r in responses(c, "INVITE")] == [180]

    mark = len(wnet.log)
    assert a.calls.answer(second, wnet.now)
    wnet.pump()
    check_invariant(wnet)
    order = [
        (s, d, m.method if isinstance(m, SipRequest) else f"{m.status} {m.cseq.method}")
        for s, d, m in wnet.log[mark:]
        if s == "a"
    ]
    # answer-and-hold: the hold re-INVITE to B leaves before the 200 OK to C
    assert order.index(("a", "b", "INVITE")) < order.index(("a", "c", "200 INVITE"))
    hold = requests(b, "INVITE")[-1]
    assert direction(hold.body) == "sendonly"
    assert direction(responses(a, "INVITE")[-1].body) == "recvonly"  # B's answer
    assert a.calls.get(first).state == "held" and a.calls.get(second).state == "connected"
    assert lines(wnet).status()["active_call"] == second
    assert lines(wnet).status()["waiting"] == []
    assert a.calls.get(second).status(wnet.now)["waiting"] is False


def test_swap_resumes_one_after_holding_the_other(wnet: WireNet) -> None:
    a, b, c = wnet.phones["a"], wnet.phones["b"], wnet.phones["c"]
    first = call_a_from(wnet, "b")
    talking_with(wnet, first)
    second = call_a_from(wnet, "c")
    talking_with(wnet, second)
    check_invariant(wnet)

    mark = len(wnet.log)
    assert lines(wnet).swap(second, wnet.now) == first  # from the talking call: to the held one
    wnet.pump()
    check_invariant(wnet)
    sent = [(d, m) for s, d, m in wnet.log[mark:] if s == "a" and isinstance(m, SipRequest)]
    invites = [(d, direction(m.body)) for d, m in sent if m.method == "INVITE"]
    assert invites == [("c", "sendonly"), ("b", "sendrecv")]  # hold C, then resume B
    assert a.calls.get(first).state == "connected" and a.calls.get(second).state == "held"

    # resume on the held call is the same swap
    assert a.calls.resume(second, wnet.now)
    wnet.pump()
    check_invariant(wnet)
    assert a.calls.get(first).state == "held" and a.calls.get(second).state == "connected"
    assert direction(requests(b, "INVITE")[-1].body) == "sendonly"
    assert direction(requests(c, "INVITE")[-1].body) == "sendrecv"
    assert lines(wnet).swap(first, wnet.now) == first  # swap on a held call resumes it
    wnet.pump()
    check_invariant(wnet)
    assert lines(wnet).status()["active_call"] == first


@pytest.mark.parametrize(("status", "reason"), [(486, "Busy Here"), (603, "Decline")])
def test_rejecting_the_waiting_call_leaves_the_talking_call_alone(
    wnet: WireNet, status: int, reason: str
) -> None:
    a, b, c = wnet.phones["a"], wnet.phones["b"], wnet.phones["c"]
    first = call_a_from(wnet, "b")
    talking_with(wnet, first)
    before = len(requests(b, "INVITE"))
    second = call_a_from(wnet, "c")
    a.calls.reject(second, wnet.now, status, reason)
    wnet.pump()
    assert responses(c, "INVITE")[-1].status == status
    assert c.calls.active_calls() == []
    assert len(requests(b, "INVITE")) == before  # no re-INVITE towards B
    assert a.calls.get(first).state == "connected"
    assert lines(wnet).status() == {"max_calls": 4, "active_call": first, "waiting": []}


def test_beyond_the_line_limit_the_phone_answers_486(wnet: WireNet) -> None:
    a, x = wnet.phones["a"], wnet.phones["x"]
    a.calls.max_calls = 2
    talking_with(wnet, call_a_from(wnet, "b"))
    call_a_from(wnet, "c")  # waiting: the second line
    x.calls.dial(f"sip:a@{HOSTS['a']}", "line1", wnet.now)
    wnet.pump()
    assert [r.status for r in responses(x, "INVITE")] == [486]
    assert responses(x, "INVITE")[0].reason == "Busy Here"
    assert len(a.calls.active_calls()) == 2
    with pytest.raises(RuntimeError, match="line appearances are busy"):
        a.calls.dial("sip:x@192.0.2.66", "line1", wnet.now)


def test_dialling_while_talking_holds_the_talking_call_first(wnet: WireNet) -> None:
    a, c = wnet.phones["a"], wnet.phones["c"]
    first = call_a_from(wnet, "b")
    talking_with(wnet, first)
    mark = len(wnet.log)
    a.calls.dial(f"sip:c@{HOSTS['c']}", "line1", wnet.now)
    wnet.pump()
    sent = [(d, m) for s, d, m in wnet.log[mark:] if s == "a" and isinstance(m, SipRequest)]
    assert [(d, m.method) for d, m in sent][:2] == [("b", "INVITE"), ("c", "INVITE")]
    assert direction(sent[0][1].body) == "sendonly"
    ringing = [x for x in c.calls.active_calls() if x.state == "ringing"][0]
    c.calls.answer(ringing.id, wnet.now)
    wnet.pump()
    check_invariant(wnet)
    assert a.calls.get(first).state == "held"


def test_answer_is_refused_while_the_talking_call_cannot_be_held(wnet: WireNet) -> None:
    """A re-INVITE of the talking call still pending: no 200 for the waiting call (LineBusy)."""
    a, c = wnet.phones["a"], wnet.phones["c"]
    first = call_a_from(wnet, "b")
    talking_with(wnet, first)
    second = call_a_from(wnet, "c")
    call = a.calls.get(first)
    assert call.session.modify(wnet.now)  # a refresh in flight: no second offer may start
    with pytest.raises(LineBusy, match=f"call {first} cannot be put on hold"):
        a.calls.answer(second, wnet.now)
    assert a.calls.get(second).state == "ringing"
    wnet.pump()
    assert [r.status for r in responses(c, "INVITE")] == [180]
    check_invariant(wnet)


def test_conference_legs_talk_together_and_count_as_one_line(wnet: WireNet) -> None:
    a = wnet.phones["a"]
    first = call_a_from(wnet, "b")
    talking_with(wnet, first)
    second = call_a_from(wnet, "c")
    talking_with(wnet, second)
    assert a.calls.conference([first, second], wnet.now) == [first]  # the held leg resumed
    wnet.pump()
    assert {c.state for c in a.calls.active_calls()} == {"connected"}
    assert lines(wnet).violations() == []
    a.calls.hangup(second, wnet.now)
    wnet.pump()
    assert lines(wnet).conference == set()  # one leg left: a plain call again


def test_leaving_a_three_way_conference_transfers_the_two_others_to_each_other() -> None:
    """RFC 5850 7 / RFC 5589 7: A REFERs B to C with Replaces of A's dialog with C; B's INVITE
    with Replaces takes over C's call with A; A's calls both end; B and C talk."""
    a, b, c = make_phone("a"), make_phone("b"), make_phone("c")
    net = WireNet(a, b, c)
    lines = LineAppearances(a.calls)
    ReplacesService(c.calls, auth=c.transfers.auth)
    first = call_a_from(net, "b")
    talking_with(net, first)
    second = call_a_from(net, "c")
    talking_with(net, second)
    a.calls.conference([first, second], net.now)
    net.pump()
    assert lines.conference == {first, second}

    assert lines.hand_over(first, second, a.transfers, net.now)
    assert lines.conference == set()
    net.pump()
    refer = requests(b, "REFER")[-1]
    c_dialog = a.calls.get(second).session.dialog
    assert c_dialog is not None
    refer_to = refer.headers.get("Refer-To") or ""
    assert refer_to.startswith("<sip:c@192.0.2.3") and "?Replaces=" in refer_to
    assert c_dialog.call_id.replace("@", "%40") in refer_to or c_dialog.call_id in refer_to
    replacing = [r for r in requests(c, "INVITE") if r.headers.get("Replaces")]
    assert replacing and str(replacing[0].from_.uri) == "sip:b@192.0.2.2"
    assert (replacing[0].headers.get("Replaces") or "").startswith(c_dialog.call_id)
    assert [n.body for n in requests(a, "NOTIFY")][-1] == b"SIP/2.0 200 OK\r\n"
    assert all(x.state == "ended" for x in a.calls.calls.values())
    b_live = [x for x in b.calls.active_calls()]
    c_live = [x for x in c.calls.active_calls()]
    assert len(b_live) == len(c_live) == 1
    assert b_live[0].state == c_live[0].state == "connected"
    assert b_live[0].remote.startswith("sip:c@") and c_live[0].remote == "sip:b@192.0.2.2"


ACTIONS = ("call_in", "answer", "resume", "swap", "hold", "dial", "hangup", "far_hangup")


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(ACTIONS), st.integers(0, 3)), max_size=20))
# found by this test: dial C (B held), resume B, then C answers -> C is held at once
@example([("call_in", 0), ("answer", 0), ("dial", 1), ("resume", 0), ("far_hangup", 1)])
def test_no_sequence_of_intents_makes_two_calls_talk(steps: list[tuple[str, int]]) -> None:
    """Whatever the user and the far ends do, at most one of A's calls is ever sendrecv.

    B and C call in or are dialled, answer, hang up; A answers, resumes, swaps, holds, dials
    and hangs up in any order (intents that do not fit the state are refused or no-ops)."""
    phones = [make_phone(n) for n in ("a", "b", "c", "x")]
    net = WireNet(*phones)
    a = phones[0]
    LineAppearances(a.calls)
    for action, pick in steps:
        live = [c for c in a.calls.calls.values() if c.state != "ended"]
        call = live[pick % len(live)] if live else None
        far = phones[1 + pick % 3]
        try:
            if action == "call_in":
                far.calls.dial(f"sip:a@{HOSTS['a']}", "line1", net.now)
            elif action == "dial":
                a.calls.dial(f"sip:{far.name}@{HOSTS[far.name]}", "line1", net.now)
            elif call is None:
                continue
            elif action == "answer" and call.state == "ringing":
                a.calls.answer(call.id, net.now)
            elif action == "resume":
                a.calls.resume(call.id, net.now)
            elif action == "swap":
                lines(net).swap(call.id, net.now)
            elif action == "hold":
                a.calls.hold(call.id, net.now)
            elif action == "hangup":
                a.calls.hangup(call.id, net.now)
            elif action == "far_hangup":
                for fc in far.calls.active_calls():
                    if fc.state == "ringing":
                        far.calls.answer(fc.id, net.now)
                    else:
                        far.calls.hangup(fc.id, net.now)
        except (LineBusy, RuntimeError):
            pass  # refused: nothing may have changed in a way that breaks the rule
        net.pump()
        check_invariant(net)
        net.advance(0.5)
        check_invariant(net)


def test_transferee_whose_call_cannot_be_held_yet_sends_the_invite_once_it_can(
    wnet: WireNet,
) -> None:
    """The REFER races A's own re-INVITE (still unanswered): A may not hold B at that moment,
    so the triggered INVITE waits (instead of failing the transfer with 503) and goes out right
    after A's re-INVITE completes, behind the hold re-INVITE (one call talking throughout)."""
    a, b, c = wnet.phones["a"], wnet.phones["b"], wnet.phones["c"]
    first = call_a_from(wnet, "b")
    talking_with(wnet, first)
    assert a.calls.get(first).session.modify(wnet.now)  # A's refresh, first copy lost:
    a.ua.drain()
    b_call = next(x for x in b.calls.active_calls())
    assert b.transfers.transfer(b_call.id, f"sip:c@{HOSTS['c']}", wnet.now)
    wnet.pump()
    assert [r.status for r in responses(b, "REFER")] == [200]
    assert requests(c, "INVITE") == []  # waiting: A's re-INVITE is still pending
    assert a.calls.get(first).status(wnet.now)["transfer"] == "trying"
    wnet.advance(1.0)  # A retransmits its re-INVITE, B answers, A holds B, then calls C
    (invite,) = requests(c, "INVITE")
    mark = next(i for i, (s, d, m) in enumerate(wnet.log) if d == "c")
    holds = [m for s, d, m in wnet.log[:mark] if (s, d) == ("a", "b")
             and isinstance(m, SipRequest) and m.method == "INVITE" and b"a=sendonly" in m.body]
    assert holds, "A did not hold B before calling C"
    check_invariant(wnet)
