"""SUBSCRIBE/NOTIFY (RFC 6665), dialog-info (RFC 4235) and BLF states, asserted on the wire.

A real UserAgent + SubscriptionManager + BlfService; a tiny fake network hands the test every
message the phone sends (serialised and re-parsed) and takes crafted responses and NOTIFYs from
"proxy" (the account's registrar flow) or "stranger" (anyone else).
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import pytest

from firmware.call.blf import BlfKey, BlfService, PickupConfig, blf_state
from firmware.sip.dialog_info import DialogInfoError, DialogInfoState, parse_dialog_info
from firmware.sip.ids import SeededIds
from firmware.sip.message import SipRequest, SipResponse
from firmware.sip.parser import parse_message
from firmware.sip.subscription import SubscriptionManager, SubscriptionSpec
from firmware.sip.transaction import Timers
from firmware.sip.ua import LocalEndpoint, UserAgent
from firmware.sip.uri import SipURI, parse_uri

ME = "sip:1061@pbx.example"
TARGET = "sip:1062@pbx.example"


class Net:
    def route(self, uri: Any) -> Hashable:
        return "proxy"

    def endpoint_for(self, dest: Hashable) -> LocalEndpoint:
        contact = parse_uri("sip:1061@192.0.2.10:5060")
        assert isinstance(contact, SipURI)
        return LocalEndpoint("UDP", "192.0.2.10:5060", contact, False)


class FakeCalls:
    """Records what BLF presses dial (the call layer itself is tested elsewhere)."""

    def __init__(self) -> None:
        self.dialled: list[tuple[str, list[tuple[str, str]]]] = []

    def active_calls(self) -> list[Any]:
        return []

    def dial(self, target: str, account: str, now: float, *, extra_headers: Any = ()) -> Any:
        self.dialled.append((target, list(extra_headers)))
        return type("C", (), {"id": f"c{len(self.dialled)}"})()


class World:
    def __init__(self, keys: list[BlfKey] | None = None, pickup: PickupConfig | None = None):
        self.ua = UserAgent(ids=SeededIds("blf"), timers=Timers())
        self.ua.network = Net()
        self.subs = SubscriptionManager(self.ua)
        self.calls = FakeCalls()
        self.now = 100.0
        self.blf = BlfService(
            self.subs,
            self.calls,
            keys or [BlfKey("LINE_2", TARGET)],
            spec_for=lambda k: SubscriptionSpec(
                event="dialog",
                accept="application/dialog-info+xml",
                target=k.target,
                from_uri=ME,
                contact="<sip:1061@192.0.2.10:5060>",
                dest="proxy",
                expires=600,
                retry_base=10.0,
            ),
            pickup=pickup,
        )
        self.blf.start(self.now)

    def sent(self) -> list[SipRequest | SipResponse]:
        """What went out since the last look; UDP retransmissions counted once."""
        unique = list(dict.fromkeys(o.data for o in self.ua.drain()))
        return [parse_message(d) for d in unique]  # type: ignore[misc]

    def one(self, kind: str) -> Any:
        msgs = [m for m in self.sent() if _kind(m) == kind]
        assert len(msgs) == 1, msgs
        return msgs[0]

    def feed(self, raw: str, source: str = "proxy") -> None:
        msg = parse_message(raw.replace("\n", "\r\n").encode())
        self.ua.receive(msg, source, reliable=False, now=self.now)

    def tick(self, dt: float) -> None:
        self.now += dt
        deadline = self.ua.get_timer()
        while deadline is not None and deadline <= self.now:
            self.ua.handle_timer(deadline)
            deadline = self.ua.get_timer()

    @property
    def line(self) -> Any:
        return self.blf.lines["LINE_2"]


def _kind(m: SipRequest | SipResponse) -> str:
    return m.method if isinstance(m, SipRequest) else str(m.status)


def ok_for(req: SipRequest, expires: int = 600, to_tag: str = "srv1") -> str:
    vias = "\n".join(f"Via: {v}" for v in req.headers.get_all("Via"))
    return (
        f"SIP/2.0 200 OK\n{vias}\nFrom: {req.headers.get('From')}\n"
        f"To: {req.headers.get('To')};tag={to_tag}\nCall-ID: {req.call_id}\n"
        f"CSeq: {req.headers.get('CSeq')}\nContact: <sip:notifier@192.0.2.1>\n"
        f"Expires: {expires}\nContent-Length: 0\n\n"
    )


def notify(
    req: SipRequest,
    body: str = "",
    *,
    state: str = "active;expires=600",
    cseq: int = 1,
    to_tag: str = "srv1",
    event: str = "dialog",
    local_tag: str | None = None,
) -> str:
    tag = local_tag or req.from_.tag
    ctype = "Content-Type: application/dialog-info+xml\n" if body else ""
    return (
        f"NOTIFY sip:1061@192.0.2.10:5060 SIP/2.0\n"
        f"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKn{cseq}{to_tag}\n"
        f"From: <{TARGET}>;tag={to_tag}\nTo: <{ME}>;tag={tag}\nCall-ID: {req.call_id}\n"
        f"CSeq: {cseq} NOTIFY\nContact: <sip:notifier@192.0.2.1>\nEvent: {event}\n"
        f"Subscription-State: {state}\nMax-Forwards: 70\n{ctype}"
        f"Content-Length: {len(body.encode())}\n\n{body}"
    )


def info(version: int, state: str, dialogs: str) -> str:
    return (
        '<?xml version="1.0"?>'
        f'<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="{version}" '
        f'state="{state}" entity="{TARGET}">{dialogs}</dialog-info>'
    )


RINGING = (
    '<dialog id="d1" call-id="cid-77" local-tag="calleetag" remote-tag="callertag" '
    'direction="recipient"><state>Trying</state></dialog>'
).replace("Trying", "early")
RINGING_WITH_CALLER = (
    '<dialog id="d1" call-id="cid-77" local-tag="calleetag" remote-tag="callertag" '
    'direction="recipient"><state>early</state>'
    '<remote><identity display="Alice">sip:1063@pbx.example</identity>'
    '<target uri="sip:1063@192.0.2.30:5062"/></remote></dialog>'
)
TALKING = '<dialog id="d1" direction="recipient"><state>confirmed</state></dialog>'
HELD = (
    '<dialog id="d1" direction="recipient"><state>confirmed</state><local>'
    '<target uri="sip:1062@x"><param pname="+sip.rendering" pval="no"/></target></local>'
    "</dialog>"
)
ENDED = '<dialog id="d1" direction="recipient"><state>terminated</state></dialog>'


def test_subscribe_on_the_wire_and_states_follow_notifies() -> None:
    w = World()
    sub = w.one("SUBSCRIBE")
    assert str(sub.uri) == TARGET
    assert sub.headers.get("Event") == "dialog"
    assert sub.headers.get("Accept") == "application/dialog-info+xml"
    assert sub.headers.get("Expires") == "600"
    assert w.line.state == "unknown"
    w.feed(ok_for(sub))
    w.feed(notify(sub, info(0, "full", ""), cseq=1))
    assert _kind(w.one("200")) == "200"
    assert w.line.state == "idle"
    w.feed(notify(sub, info(1, "partial", RINGING_WITH_CALLER), cseq=2))
    assert w.line.state == "ringing"
    assert w.blf.status()[0]["led"] == "fast_flash"
    assert w.blf.status()[0]["caller"] == "Alice"
    w.feed(notify(sub, info(2, "partial", TALKING), cseq=3))
    w.feed(notify(sub, info(3, "partial", HELD), cseq=4))
    w.feed(notify(sub, info(4, "partial", ENDED), cseq=5))
    assert w.line.history == ["idle", "ringing", "talking", "held", "idle"]
    assert [s["led"] for s in w.blf.status()] == ["off"]


def test_notify_overtaking_the_2xx_creates_the_dialog() -> None:
    w = World()
    sub = w.one("SUBSCRIBE")
    w.feed(notify(sub, info(0, "full", RINGING), cseq=1))
    assert w.one("200")
    assert w.line.state == "ringing"
    w.feed(ok_for(sub))
    assert w.line.state == "ringing"


def test_stale_and_bad_documents() -> None:
    w = World()
    sub = w.one("SUBSCRIBE")
    w.feed(ok_for(sub))
    w.feed(notify(sub, info(5, "full", RINGING), cseq=1))
    w.feed(notify(sub, info(4, "partial", TALKING), cseq=2))  # older version: ignored
    assert w.line.state == "ringing"
    w.sent()
    bomb = (
        '<?xml version="1.0"?><!DOCTYPE d [<!ENTITY a "aaaaaaaaaa">'
        '<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]>'
        '<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="9" state="full" '
        'entity="x">&b;</dialog-info>'
    )
    w.feed(notify(sub, bomb, cseq=3))
    resp = w.one("400")
    assert "DTD" in resp.reason or "refused" in resp.reason
    assert w.line.state == "ringing"  # nothing applied


def test_entities_and_external_references_are_refused() -> None:
    xxe = (
        b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        b'<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="1" state="full" '
        b'entity="x">&x;</dialog-info>'
    )
    with pytest.raises(DialogInfoError):
        parse_dialog_info(xxe)
    with pytest.raises(DialogInfoError, match="version"):
        parse_dialog_info(b'<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info"/>')


def test_notify_from_another_flow_is_refused_and_unknown_ones_get_481() -> None:
    w = World()
    sub = w.one("SUBSCRIBE")
    w.feed(ok_for(sub))
    w.feed(notify(sub, info(0, "full", RINGING), cseq=1), source="stranger")
    assert w.one("403")
    assert w.line.state == "unknown"
    # A NOTIFY naming a subscription we never made (unknown tag / no tag at all).
    w.feed(notify(sub, info(0, "full", RINGING), cseq=2, local_tag="forged"))
    assert w.one("481")
    raw = notify(sub, info(0, "full", RINGING), cseq=3).replace(f";tag={sub.from_.tag}", "")
    w.feed(raw)
    assert w.one("481")
    # Wrong event package on the subscription's dialog -> 489.
    w.feed(notify(sub, "", cseq=4, event="presence"))
    assert w.one("489")


def test_refresh_in_dialog_then_new_subscription_after_481() -> None:
    w = World()
    sub = w.one("SUBSCRIBE")
    w.feed(ok_for(sub, expires=100))
    w.feed(notify(sub, info(0, "full", ""), cseq=1, state="active;expires=100"))
    w.sent()
    w.tick(79)
    assert not [m for m in w.sent() if _kind(m) == "SUBSCRIBE"]
    w.tick(2)  # 80 % of 100 s
    refresh = w.one("SUBSCRIBE")
    assert refresh.call_id == sub.call_id and refresh.to.tag == "srv1"
    assert refresh.cseq.number == sub.cseq.number + 1
    vias = "\n".join(f"Via: {v}" for v in refresh.headers.get_all("Via"))
    w.feed(
        f"SIP/2.0 481 Gone\n{vias}\nFrom: {refresh.headers.get('From')}\n"
        f"To: {refresh.headers.get('To')}\nCall-ID: {refresh.call_id}\n"
        f"CSeq: {refresh.headers.get('CSeq')}\nContent-Length: 0\n\n"
    )
    again = w.one("SUBSCRIBE")
    assert again.call_id != sub.call_id and again.to.tag is None


def test_terminated_timeout_resubscribes_at_once_failure_backs_off() -> None:
    w = World()
    sub = w.one("SUBSCRIBE")
    w.feed(ok_for(sub))
    w.feed(notify(sub, info(0, "full", ""), cseq=1))
    w.feed(notify(sub, "", cseq=2, state="terminated;reason=timeout"))
    w.sent()
    assert w.line.state == "unknown"
    w.tick(0)
    fresh = w.one("SUBSCRIBE")
    assert fresh.call_id != sub.call_id
    vias = "\n".join(f"Via: {v}" for v in fresh.headers.get_all("Via"))
    w.feed(
        f"SIP/2.0 503 Busy\n{vias}\nFrom: {fresh.headers.get('From')}\n"
        f"To: {fresh.headers.get('To')};tag=x\nCall-ID: {fresh.call_id}\n"
        f"CSeq: {fresh.headers.get('CSeq')}\nContent-Length: 0\n\n"
    )
    w.sent()
    w.tick(4.9)  # backoff 10 s * (0.5..1.0)
    assert not [m for m in w.sent() if _kind(m) == "SUBSCRIBE"]
    w.tick(5.2)
    assert w.one("SUBSCRIBE").call_id not in (sub.call_id, fresh.call_id)
    # rejected: never again
    w2 = World()
    s2 = w2.one("SUBSCRIBE")
    w2.feed(ok_for(s2))
    w2.feed(notify(s2, "", cseq=1, state="terminated;reason=rejected"))
    w2.sent()
    w2.tick(4000)
    assert not [m for m in w2.sent() if _kind(m) == "SUBSCRIBE"]


def test_press_while_ringing_picks_up_with_replaces_early_only() -> None:
    w = World()
    sub = w.one("SUBSCRIBE")
    w.feed(ok_for(sub))
    w.feed(notify(sub, info(0, "full", RINGING_WITH_CALLER), cseq=1))
    result = w.blf.press("LINE_2", w.now)
    assert result["action"] == "pickup"
    target, headers = w.calls.dialled[0]
    assert target == "sip:1063@192.0.2.30:5062"
    assert ("Replaces", "cid-77;to-tag=callertag;from-tag=calleetag;early-only") in headers
    assert ("Require", "replaces") in headers


def test_press_with_a_feature_code_and_when_idle() -> None:
    w = World(pickup=PickupConfig(mode="code", code="*8"))
    sub = w.one("SUBSCRIBE")
    w.feed(ok_for(sub))
    w.feed(notify(sub, info(0, "full", RINGING), cseq=1))
    assert w.blf.press("LINE_2", w.now)["target"] == "*81062"
    w.feed(notify(sub, info(1, "full", ""), cseq=2))
    assert w.blf.press("LINE_2", w.now) == {"action": "call", "call": "c2", "target": TARGET}


def test_state_mapping_table() -> None:
    st = DialogInfoState()
    st.apply(parse_dialog_info(info(1, "full", RINGING).encode()))
    assert blf_state(list(st.dialogs.values())) == "ringing"
    assert blf_state(list(st.dialogs.values()), "park") == "parked"
    outgoing = RINGING.replace("recipient", "initiator")
    st.apply(parse_dialog_info(info(2, "full", outgoing).encode()))
    assert blf_state(list(st.dialogs.values())) == "talking"
    assert blf_state([]) == "idle"


class _Active:
    id, state = "c9", "connected"


class _Transfers:
    def __init__(self) -> None:
        self.done: list[tuple[str, str]] = []

    def transfer(self, call_id: str, target: str, now: float) -> bool:
        self.done.append((call_id, target))
        return True


def test_press_in_a_call_transfers_it_and_a_parked_orbit_is_retrieved() -> None:
    w = World(keys=[BlfKey("LINE_2", TARGET), BlfKey("LINE_3", "sip:700@pbx.example", "park")])
    transfers = _Transfers()
    w.blf.transfers = transfers
    w.calls.active_calls = lambda: [_Active()]  # type: ignore[method-assign]
    subs = [m for m in w.sent() if _kind(m) == "SUBSCRIBE"]
    assert len(subs) == 2
    for n, sub in enumerate(subs):
        w.feed(ok_for(sub, to_tag=f"t{n}"))
        w.feed(notify(sub, info(0, "full", ""), cseq=1, to_tag=f"t{n}"))
    assert w.blf.press("LINE_2", w.now) == {"action": "transfer", "call": "c9", "target": TARGET}
    assert transfers.done == [("c9", TARGET)]
    # The orbit gets a (confirmed) dialog: the park key shows parked; pressing it retrieves.
    w.feed(notify(subs[1], info(1, "full", TALKING), cseq=2, to_tag="t1"))
    assert w.blf.lines["LINE_3"].state == "parked"
    assert w.blf.status()[1]["led"] == "slow_flash"
    assert w.blf.press("LINE_3", w.now)["action"] == "retrieve"
    assert w.calls.dialled[-1][0] == "sip:700@pbx.example"


def test_parked_call_with_dialog_ids_is_retrieved_by_replaces() -> None:
    w = World(keys=[BlfKey("LINE_3", "sip:701@pbx.example", "park")])
    sub = w.one("SUBSCRIBE")
    w.feed(ok_for(sub))
    parked = (
        '<dialog id="p1" call-id="park-cid" local-tag="orbit-tag" remote-tag="party-tag" '
        'direction="recipient"><state>confirmed</state><remote>'
        "<identity>sip:1063@pbx.example</identity>"
        '<target uri="sip:1063@192.0.2.30:5062"/></remote></dialog>'
    )
    w.feed(notify(sub, info(0, "full", parked), cseq=1))
    assert w.blf.lines["LINE_3"].state == "parked"
    assert w.blf.press("LINE_3", w.now)["action"] == "retrieve"
    target, headers = w.calls.dialled[-1]
    assert target == "sip:1063@192.0.2.30:5062"
    assert ("Replaces", "park-cid;to-tag=party-tag;from-tag=orbit-tag") in headers
