"""Network conference through a focus (RFC 4579), between sans-IO phones over wire bytes.

A talks to B; X plays the focus (a phone whose 200 OK Contact carries ``isfocus``). A creates
the conference with an INVITE to X's conference URI, then REFERs B there (Refer-To the
conference URI): B INVITEs X and A's call with B ends. A also asks the focus to bring C in
(REFER in the focus dialog, Refer-To C, Refer-Sub: false), and X calls C.
"""

from __future__ import annotations

from typing import Any

import pytest

from firmware.call.focus import ConferenceError, NetworkConferences
from firmware.call.lines import LineAppearances
from firmware.call.replaces import ReplacesService
from firmware.sip.errors import SipParseError
from firmware.sip.message import SipRequest
from tests.unit.test_lines import WireNet, call_a_from, talking_with
from tests.unit.test_refer import HOSTS, make_phone, requests, responses

FOCUS = f"sip:x@{HOSTS['x']}"


def answer_as_focus(net: WireNet, isfocus: bool = True) -> str:
    """X answers the ringing INVITE with Contact: <sip:x@...>;isfocus (RFC 4579 5.4)."""
    x = net.phones["x"]
    ringing = [c for c in x.calls.active_calls() if c.state == "ringing"][-1]
    if isfocus:
        ringing.session.contact = f"{ringing.session.contact};isfocus"
    assert x.calls.answer(ringing.id, net.now)
    net.pump()
    return ringing.id


@pytest.fixture
def setup() -> tuple[WireNet, NetworkConferences, str]:
    phones = [make_phone(n) for n in ("a", "b", "c", "x")]
    net = WireNet(*phones)
    a = phones[0]
    LineAppearances(a.calls)
    conferences = NetworkConferences(a.calls, a.transfers)
    b_call = call_a_from(net, "b")
    talking_with(net, b_call)
    return net, conferences, b_call


def test_create_by_invite_to_the_conference_uri_then_refer_the_party_there(
    setup: tuple[WireNet, NetworkConferences, str],
) -> None:
    net, conferences, b_call = setup
    a, b, x = net.phones["a"], net.phones["b"], net.phones["x"]
    conf = conferences.create(FOCUS, "line1", net.now, parties=[b_call])
    assert conf.extras["conference"] == "creating"
    net.pump()
    invite = requests(x, "INVITE")[0]
    assert str(invite.uri) == FOCUS
    assert a.calls.get(b_call).state == "held"  # the talking call is held before the INVITE
    assert not requests(b, "REFER")  # nobody is sent before the focus answered

    answer_as_focus(net)
    status = a.calls.get(conf.id).status(net.now)
    assert status["isfocus"] is True and status["conference"] == "active"
    assert status["focus_secure"] is False  # plain UDP: T28 integrity is not there
    assert status["conference_uri"] == FOCUS and status["conference_parties"] == [b_call]
    refer = requests(b, "REFER")[0]
    assert refer.headers.get("Refer-To") == f"<{FOCUS}>"
    assert refer.headers.get("Referred-By") == "<sip:a@192.0.2.1>"
    # B joins the conference: its own INVITE to the conference URI, answered by the focus
    joined = [r for r in requests(x, "INVITE") if str(r.from_.uri) == "sip:b@192.0.2.2"]
    assert len(joined) == 1 and str(joined[0].uri) == FOCUS
    answer_as_focus(net)  # the focus lets B in
    assert a.calls.get(b_call).state == "ended"  # NOTIFY 200 -> A's call with B ends
    assert a.calls.get(b_call).status(net.now)["transfer"] == "done"
    assert len([c for c in x.calls.active_calls() if c.state == "connected"]) == 2
    assert a.calls.get(conf.id).state == "connected"  # A stays in the conference


def test_ask_the_focus_to_invite_a_party(setup: tuple[WireNet, NetworkConferences, str]) -> None:
    net, conferences, _ = setup
    a, c, x = net.phones["a"], net.phones["c"], net.phones["x"]
    conf = conferences.create(FOCUS, "line1", net.now)
    net.pump()
    answer_as_focus(net)
    conferences.invite(conf.id, f"sip:c@{HOSTS['c']}", net.now)
    net.pump()
    refer = requests(x, "REFER")[0]
    assert refer.call_id == requests(x, "INVITE")[0].call_id  # in the focus dialog
    assert refer.headers.get("Refer-To") == "<sip:c@192.0.2.3>"
    assert refer.headers.get("Refer-Sub") == "false"
    assert [r.status for r in responses(a, "REFER")] == [200]
    assert a.calls.get(conf.id).status(net.now)["conference_invited"] == {"sip:c@192.0.2.3": 200}
    assert str(requests(c, "INVITE")[0].from_.uri) == FOCUS  # the focus calls C
    assert not requests(a, "NOTIFY")  # Refer-Sub: false granted: no subscription


def test_a_far_end_without_isfocus_gets_nobody(
    setup: tuple[WireNet, NetworkConferences, str],
) -> None:
    net, conferences, b_call = setup
    a, b = net.phones["a"], net.phones["b"]
    conf = conferences.create(FOCUS, "line1", net.now, parties=[b_call])
    net.pump()
    answer_as_focus(net, isfocus=False)
    status = a.calls.get(conf.id).status(net.now)
    assert (status["conference"], status["isfocus"]) == ("not_a_focus", False)
    assert not requests(b, "REFER")
    with pytest.raises(ConferenceError, match="not with a conference focus"):
        conferences.invite(conf.id, "sip:c@192.0.2.3", net.now)


def test_bad_input_is_refused_before_anything_is_sent(
    setup: tuple[WireNet, NetworkConferences, str],
) -> None:
    net, conferences, b_call = setup
    with pytest.raises(SipParseError):
        conferences.create("sip:", "line1", net.now)
    with pytest.raises(KeyError):
        conferences.create(FOCUS, "line1", net.now, parties=["c99"])
    with pytest.raises(ConferenceError, match="not a network conference"):
        conferences.invite(b_call, "1003", net.now)
    net.pump()
    assert not requests(net.phones["x"], "INVITE")


def test_move_a_call_into_the_conference_by_replaces_through_the_focus(
    setup: tuple[WireNet, NetworkConferences, str],
) -> None:
    """RFC 4579 5.10: REFER the focus with Refer-To B?Replaces=<A-B dialog>; the focus'
    INVITE with Replaces takes over B's call with A (B needs no REFER support)."""
    net, conferences, b_call = setup
    a, b, x = net.phones["a"], net.phones["b"], net.phones["x"]
    ReplacesService(b.calls, auth=b.transfers.auth)
    conf = conferences.create(FOCUS, "line1", net.now)
    net.pump()
    answer_as_focus(net)
    ab = a.calls.get(b_call).session.dialog
    assert ab is not None
    conferences.move(conf.id, b_call, net.now)
    net.pump()
    refer = requests(x, "REFER")[0]
    refer_to = refer.headers.get("Refer-To") or ""
    assert refer_to.startswith("<sip:b@192.0.2.2") and "?Replaces=" in refer_to
    assert refer.headers.get("Refer-Sub") == "false"
    assert not requests(b, "REFER")  # B is never asked anything
    takeover = [r for r in requests(b, "INVITE") if r.headers.get("Replaces")]
    assert len(takeover) == 1 and str(takeover[0].from_.uri) == FOCUS
    assert (takeover[0].headers.get("Replaces") or "").startswith(ab.call_id)
    assert a.calls.get(b_call).state == "ended"  # B BYEs its replaced call with A
    assert a.calls.get(conf.id).status(net.now)["conference_invited"] == {b_call: 200}
    assert a.calls.get(b_call).status(net.now)["conference_of"] == conf.id
    # (X is a plain phone acting as focus: as a transferee it then ends its call with A, which
    # a real focus would not; nothing more to check on A's side)


def test_a_factory_redirect_to_the_conference_uri_is_followed(
    setup: tuple[WireNet, NetworkConferences, str],
) -> None:
    """The factory URI may answer 302 with Contact: <conference URI>;isfocus (RFC 4579 5.4)."""
    net, conferences, b_call = setup
    a, b, x = net.phones["a"], net.phones["b"], net.phones["x"]
    conference_uri = f"sip:x@{HOSTS['x']};conf=42"
    normal = x.ua.handlers["INVITE"]

    def redirect(server_tx: Any, request: SipRequest, now: float) -> None:
        x.ua.handlers["INVITE"] = normal  # only the first INVITE is redirected
        x.ua.respond(
            server_tx,
            request,
            302,
            "Moved Temporarily",
            now,
            headers=[("Contact", f"<{conference_uri}>;isfocus")],
        )

    x.ua.handlers["INVITE"] = redirect
    first = conferences.create(FOCUS, "line1", net.now, parties=[b_call])
    net.pump()
    assert first.status(net.now)["conference"] == "redirected"
    second = a.calls.get(first.status(net.now)["redirected_to"])
    assert [str(r.uri) for r in requests(x, "INVITE")] == [FOCUS, conference_uri]
    answer_as_focus(net)
    status = second.status(net.now)
    assert (status["conference"], status["isfocus"]) == ("active", True)
    assert requests(b, "REFER")[0].headers.get("Refer-To") == f"<{FOCUS}>"


def test_ask_the_focus_to_remove_a_party(setup: tuple[WireNet, NetworkConferences, str]) -> None:
    """RFC 4579 5.11: REFER the focus with Refer-To <party;method=BYE>; X, a plain phone,
    refuses a method=BYE REFER (403, T29), which the status reports."""
    net, conferences, _ = setup
    a, x = net.phones["a"], net.phones["x"]
    conf = conferences.create(FOCUS, "line1", net.now)
    net.pump()
    answer_as_focus(net)
    conferences.remove(conf.id, "c", net.now)
    net.pump()
    refer = requests(x, "REFER")[0]
    assert refer.headers.get("Refer-To") == "<sip:c@192.0.2.1;method=BYE>"
    assert a.calls.get(conf.id).status(net.now)["conference_invited"] == {
        "remove sip:c@192.0.2.1": 403
    }
