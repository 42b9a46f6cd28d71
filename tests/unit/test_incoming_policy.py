"""Incoming-call policy between two sans-IO phones on exact clock times (firmware/call/incoming).

Phone a calls phone b through the in-memory network of test_calls.py; b has an `IncomingPolicy`
whose "registrar flow" is a's address when ``trusted`` (as if a were the proxy) and nobody's
otherwise. What a receives is the wire.
"""

from __future__ import annotations

import pytest

from firmware.call.incoming import IncomingConfig, IncomingPolicy
from firmware.sip.message import SipResponse
from tests.unit.test_calls import G722, PCMU, Net, make_phone


def world(trusted: bool = True, **config: object) -> tuple[Net, IncomingPolicy]:
    net = Net(make_phone("a", "192.0.2.1", [G722, PCMU]), make_phone("b", "192.0.2.2", [PCMU]))
    policy = IncomingPolicy(
        net.b.ua,
        net.b.calls,
        IncomingConfig(**config),  # type: ignore[arg-type]
        trusted=lambda peer: trusted and peer == "a",
        target_uri=lambda t, _acc: t if t.startswith("sip:") else f"sip:{t}@192.0.2.2",
    )
    return net, policy


def finals(net: Net) -> list[SipResponse]:
    return [m for m in net.a.wire if isinstance(m, SipResponse) and m.status >= 200]


def test_no_answer_forwarding_redirects_exactly_after_the_delay() -> None:
    net, _ = world(forward_no_answer="1070", forward_no_answer_after=5.0)
    call = net.a.calls.dial("b", "line1", net.now)
    net.pump()
    ringing = net.b.calls.active_calls()[0]
    net.advance(4.9)
    assert ringing.state == "ringing" and not finals(net)
    net.advance(0.2)
    (redirect,) = finals(net)
    assert redirect.status == 302 and redirect.headers.get("Contact") == "<sip:1070@192.0.2.2>"
    assert ringing.state == "ended" and call.state == "ended" and call.end_status == 302


def test_dnd_refuses_with_the_configured_status_before_ringing() -> None:
    net, policy = world(dnd=True, dnd_status=603)
    net.a.calls.dial("b", "line1", net.now)
    net.pump()
    assert [r.status for r in finals(net)] == [603]
    assert not any(isinstance(m, SipResponse) and m.status == 180 for m in net.a.wire)
    assert not net.b.calls.calls and policy.refused[-1]["by"] == "dnd"


@pytest.mark.parametrize(
    ("header", "delay"),
    [(("Answer-Mode", "Auto"), 0.0), (("Call-Info", "<sip:x>;answer-after=3"), 3.0)],
)
def test_intercom_answers_after_its_delay_only_when_trusted(
    header: tuple[str, str], delay: float
) -> None:
    net, _ = world(intercom_max_delay=10.0)
    net.a.calls.dial("b", "line1", net.now, extra_headers=[header])
    net.pump()
    ringing = net.b.calls.active_calls()[0]
    assert ringing.extras["auto_answer"] == {"after": delay}
    if delay:
        net.advance(delay - 0.1)
        assert ringing.state == "ringing"
    net.advance(0.2)
    assert ringing.state == "connected" and ringing.extras["auto_answered"] is True

    untrusted, _ = world(trusted=False)
    untrusted.a.calls.dial("b", "line1", untrusted.now, extra_headers=[header])
    untrusted.pump()
    untrusted.advance(30)
    stranger = untrusted.b.calls.active_calls()[0]
    assert stranger.state == "ringing" and stranger.extras["auto_answer_refused"] is True


def test_intercom_allow_list_and_delay_cap() -> None:
    net, _ = world(intercom_allow=("sip:boss@192.0.2.1",), intercom_max_delay=2.0)
    net.a.calls.dial("b", "line1", net.now, extra_headers=[("Call-Info", "<x>;answer-after=9")])
    net.pump()
    call = net.b.calls.active_calls()[0]
    net.advance(3)
    assert call.state == "ringing" and call.extras["auto_answer_refused"]  # a is not listed

    listed, _ = world(intercom_allow=("sip:a@192.0.2.1",), intercom_max_delay=2.0)
    listed.a.calls.dial(
        "b", "line1", listed.now, extra_headers=[("Call-Info", "<x>;answer-after=9")]
    )
    listed.pump()
    call = listed.b.calls.active_calls()[0]
    listed.advance(2.1)
    assert call.state == "connected"


def test_pai_counts_only_from_the_trusted_flow() -> None:
    pai = ("P-Asserted-Identity", '"Boss" <sip:boss@192.0.2.1>')
    for trusted, source in ((True, "pai"), (False, "from")):
        net, _ = world(trusted=trusted)
        net.a.calls.dial("b", "line1", net.now, extra_headers=[pai])
        net.pump()
        caller = net.b.calls.active_calls()[0].extras["caller"]
        assert caller["source"] == source and caller["verified"] is trusted
        assert caller["uri"] == ("sip:boss@192.0.2.1" if trusted else "sip:a@192.0.2.1")
