"""Calls between two sans-IO phones wired back to back through real wire bytes.

Each phone is a UserAgent + CallManager; a tiny in-memory "network" serialises what one drains
and parses it into the other, with literal times. This exercises the INVITE session (RFC 3261
13-15), SDP offer/answer through the call layer, hold (RFC 3264 8.4), CANCEL and BYE.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field

import pytest

from firmware.call.manager import AccountInfo, CallManager
from firmware.sip.ids import SeededIds
from firmware.sip.message import SipRequest, SipResponse
from firmware.sip.offer_answer import CodecSpec
from firmware.sip.parser import parse_message
from firmware.sip.sdp import SessionDescription
from firmware.sip.transaction import Timers
from firmware.sip.ua import LocalEndpoint, UserAgent
from firmware.sip.uri import URI, parse_uri

PCMU = CodecSpec("PCMU", 8000, 0)
G722 = CodecSpec("G722", 8000, 9)


class Ports:
    def __init__(self, base: int) -> None:
        self.base = base
        self.n = 0
        self.released: list[str] = []

    def allocate(self, call_id: str, towards: Hashable | None) -> tuple[str, int]:
        self.n += 2
        return ("127.0.0.1", self.base + self.n)

    def release(self, call_id: str) -> None:
        self.released.append(call_id)


@dataclass
class Phone:
    name: str
    host: str
    ua: UserAgent
    calls: CallManager
    ports: Ports
    wire: list[SipRequest | SipResponse] = field(default_factory=list)  # what it received

    def route(self, uri: URI) -> Hashable:
        return "b" if self.name == "a" else "a"

    def endpoint_for(self, dest: Hashable) -> LocalEndpoint:
        return LocalEndpoint(
            "UDP", f"{self.host}:5060", parse_uri(f"sip:{self.name}@{self.host}"), False
        )


def make_phone(name: str, host: str, codecs: list[CodecSpec]) -> Phone:
    ua = UserAgent(ids=SeededIds(name), timers=Timers())
    ports = Ports(10000 if name == "a" else 20000)

    def account(_id: str) -> AccountInfo:
        return AccountInfo(
            aor=f"sip:{name}@{host}",
            display_name=name.upper(),
            domain=host,
            contact=f"<sip:{name}@{host}:5060>",
            dest="b" if name == "a" else "a",
            digest=None,
            secure=False,
        )

    calls = CallManager(ua, ports=ports, codecs=codecs, accounts=account)
    phone = Phone(name, host, ua, calls, ports)
    ua.network = phone
    return phone


class Net:
    """Delivers everything each phone sends, in order, until quiet (optionally dropping)."""

    def __init__(self, a: Phone, b: Phone) -> None:
        self.a, self.b = a, b
        self.now = 0.0
        self.drop: list[str] = []  # first lines to drop, each once ("ACK", "SIP/2.0 200 OK"...)

    def pump(self) -> None:
        for _ in range(100):
            moved = False
            for src, dst in ((self.a, self.b), (self.b, self.a)):
                for out in src.ua.drain():
                    first = out.data.split(b"\r\n", 1)[0].decode()
                    key = next((d for d in self.drop if first.startswith(d)), None)
                    if key is not None:
                        self.drop.remove(key)
                        continue
                    msg = parse_message(out.data)
                    dst.wire.append(msg)
                    dst.ua.receive(msg, src.name, reliable=False, now=self.now)
                    moved = True
                src.calls.process(self.now)
            if not moved:
                return
        raise AssertionError("network never went quiet")

    def advance(self, seconds: float) -> None:
        end = self.now + seconds
        while True:
            deadlines = [t for p in (self.a, self.b) if (t := p.ua.get_timer()) is not None]
            nxt = min(deadlines, default=None)
            if nxt is None or nxt > end:
                break
            self.now = max(self.now, nxt)
            for p in (self.a, self.b):
                p.ua.handle_timer(self.now)
                p.calls.process(self.now)
            self.pump()
        self.now = end


@pytest.fixture
def net() -> Net:
    return Net(make_phone("a", "192.0.2.1", [G722, PCMU]), make_phone("b", "192.0.2.2", [PCMU]))


def requests(phone: Phone, method: str) -> list[SipRequest]:
    return [m for m in phone.wire if isinstance(m, SipRequest) and m.method == method]


def responses(phone: Phone, method: str) -> list[SipResponse]:
    return [m for m in phone.wire if isinstance(m, SipResponse) and m.cseq.method == method]


def connect(net: Net) -> tuple[str, str]:
    call = net.a.calls.dial("b", "line1", net.now)
    net.pump()
    incoming = net.b.calls.active_calls()[0]
    assert net.b.calls.answer(incoming.id, net.now)
    net.pump()
    return call.id, incoming.id


def test_basic_call_negotiates_the_common_codec_and_hangs_up(net: Net) -> None:
    call = net.a.calls.dial("b", "line1", net.now)
    assert call.state == "calling"
    net.pump()
    invite = requests(net.b, "INVITE")[0]
    assert str(invite.uri) == "sip:b@192.0.2.1"
    offer = SessionDescription.parse(invite.body)
    assert offer.media[0].fmts[:2] == ["9", "0"]  # our preference order
    assert [r.status for r in responses(net.a, "INVITE")] == [180]  # 100 waits 200 ms
    incoming = net.b.calls.active_calls()[0]
    assert incoming.state == "ringing" and incoming.remote == "sip:a@192.0.2.1"
    assert incoming.remote_display == "A"
    assert net.a.calls.get(call.id).state == "early"

    net.advance(1.0)
    assert net.b.calls.answer(incoming.id, net.now)
    net.pump()
    ok = responses(net.a, "INVITE")[-1]
    assert ok.status == 200 and ok.headers.get("Content-Type") == "application/sdp"
    answer = SessionDescription.parse(ok.body)
    assert answer.media[0].fmts[0] == "0"  # only PCMU in common
    assert len(requests(net.b, "ACK")) == 1
    a_call, b_call = net.a.calls.get(call.id), net.b.calls.get(incoming.id)
    assert a_call.state == b_call.state == "connected"
    assert a_call.status(net.now)["codec"] == "PCMU" == b_call.status(net.now)["codec"]
    starts = net.a.calls.media_changes()
    assert [c.action for c in starts] == ["start"]
    assert starts[0].negotiated is not None and starts[0].negotiated.remote_port == 20002

    net.advance(5.0)
    net.a.calls.hangup(call.id, net.now)
    net.pump()
    assert [r.status for r in responses(net.a, "BYE")] == [200]
    assert a_call.state == b_call.state == "ended"
    assert a_call.end_cause == "local_bye" and b_call.end_cause == "remote_bye"
    assert a_call.status(net.now)["duration"] == pytest.approx(5.0)
    assert [c.action for c in net.a.calls.media_changes()] == ["stop"]


def test_lost_ack_makes_the_callee_retransmit_its_200(net: Net) -> None:
    net.a.calls.dial("b", "line1", net.now)
    net.pump()
    incoming = net.b.calls.active_calls()[0]
    net.drop.append("ACK")
    net.b.calls.answer(incoming.id, net.now)
    net.pump()
    assert len(responses(net.a, "INVITE")) == 2  # 180, 200
    net.advance(0.6)  # T1 = 0.5: the 200 is sent again, the caller re-ACKs
    assert [r.status for r in responses(net.a, "INVITE")] == [180, 200, 200]
    assert len(requests(net.b, "ACK")) == 1
    assert net.b.calls.get(incoming.id).state == "connected"


def test_callee_ends_the_call_without_ack_after_64_t1(net: Net) -> None:
    net.a.calls.dial("b", "line1", net.now)
    net.pump()
    incoming = net.b.calls.active_calls()[0]
    net.b.calls.answer(incoming.id, net.now)
    # Drop every 200 so no ACK ever comes back.
    for _ in range(20):
        net.drop.append("SIP/2.0 200 OK")
    net.pump()
    net.advance(33.0)
    call = net.b.calls.get(incoming.id)
    assert call.state == "ended" and call.end_cause == "no_ack"


def test_cancel_before_answer(net: Net) -> None:
    call = net.a.calls.dial("b", "line1", net.now)
    net.pump()
    net.a.calls.hangup(call.id, net.now)
    net.pump()
    assert len(requests(net.b, "CANCEL")) == 1
    assert [r.status for r in responses(net.a, "CANCEL")] == [200]
    assert responses(net.a, "INVITE")[-1].status == 487
    assert net.a.calls.get(call.id).end_cause == "cancelled"
    incoming = net.b.calls.calls["c1"]
    assert incoming.state == "ended" and incoming.end_cause == "cancelled"


def test_busy_rejection_is_reported_with_its_reason(net: Net) -> None:
    call = net.a.calls.dial("b", "line1", net.now)
    net.pump()
    net.b.calls.reject("c1", net.now, 486, "Busy Here")
    net.pump()
    a_call = net.a.calls.get(call.id)
    assert a_call.state == "ended"
    assert (a_call.end_status, a_call.end_reason, a_call.end_cause) == (486, "Busy Here", "failed")
    assert len(requests(net.b, "ACK")) == 1  # the transaction ACKs the 486


def test_hold_and_resume_follow_rfc3264_8_4(net: Net) -> None:
    a_id, b_id = connect(net)
    net.a.calls.media_changes()
    assert net.a.calls.hold(a_id, net.now)
    net.pump()
    reinvite = requests(net.b, "INVITE")[-1]
    first = SessionDescription.parse(requests(net.b, "INVITE")[0].body)
    held = SessionDescription.parse(reinvite.body)
    assert held.origin.version == first.origin.version + 1
    assert held.origin.session_id == first.origin.session_id
    assert b"a=sendonly" in reinvite.body
    assert b"a=recvonly" in responses(net.a, "INVITE")[-1].body
    assert net.a.calls.get(a_id).state == "held"
    assert net.b.calls.get(b_id).status(net.now)["remote_held"] is True
    # SDP direction sendonly, but the holding phone mutes locally: media gets "inactive".
    assert net.a.calls.get(a_id).media.negotiated.direction == "sendonly"  # type: ignore[union-attr]
    assert net.a.calls.media_changes()[0].negotiated.direction == "inactive"  # type: ignore[union-attr]

    assert net.a.calls.resume(a_id, net.now)
    net.pump()
    resumed = SessionDescription.parse(requests(net.b, "INVITE")[-1].body)
    assert resumed.origin.version == held.origin.version + 1
    body = requests(net.b, "INVITE")[-1].body
    assert b"a=sendonly" not in body and b"a=inactive" not in body
    assert net.a.calls.get(a_id).state == "connected"
    assert net.b.calls.get(b_id).status(net.now)["remote_held"] is False


def test_reinvite_glare_gets_491_and_retries(net: Net) -> None:
    a_id, b_id = connect(net)
    assert net.a.calls.hold(a_id, net.now)
    assert net.b.calls.hold(b_id, net.now)
    net.pump()
    statuses = sorted(r.status for p in (net.a, net.b) for r in responses(p, "INVITE")[-1:])
    assert 491 in [r.status for p in (net.a, net.b) for r in responses(p, "INVITE")]
    net.advance(5.0)  # both retry within 0-4 s
    assert net.a.calls.get(a_id).state == "held"
    assert net.b.calls.get(b_id).state == "held"
    assert statuses


def test_replayed_old_invite_gets_500_and_unknown_dialog_481(net: Net) -> None:
    """THREATS T18: a captured request replayed after a newer one is refused; media unchanged."""
    a_id, _ = connect(net)
    assert net.a.calls.hold(a_id, net.now)
    assert net.a.calls.resume(a_id, net.now) is False  # one offer at a time (RFC 3264 4)
    net.pump()
    invite = requests(net.b, "INVITE")[0]
    # Replay the original INVITE as if in-dialog (To tag added): lower/equal CSeq -> 500.
    to_tag = responses(net.a, "INVITE")[-1].to.tag
    raw = invite.serialize().replace(
        b"To: <sip:b@192.0.2.1>", f"To: <sip:b@192.0.2.1>;tag={to_tag}".encode()
    )
    raw = raw.replace(invite.top_via.branch.encode(), b"z9hG4bKreplay1")
    net.b.ua.receive(parse_message(raw), "a", reliable=False, now=net.now)
    out = [parse_message(o.data) for o in net.b.ua.drain()]
    assert [m.status for m in out] == [500]  # type: ignore[union-attr]
    raw481 = raw.replace(to_tag.encode(), b"nosuchtag").replace(
        b"z9hG4bKreplay1", b"z9hG4bKreplay2"
    )
    net.b.ua.receive(parse_message(raw481), "a", reliable=False, now=net.now)
    out = [parse_message(o.data) for o in net.b.ua.drain()]
    assert [m.status for m in out] == [481]  # type: ignore[union-attr]
    assert net.a.calls.get(a_id).state == "held"  # the replayed offer changed nothing


def test_no_common_codec_gets_488_without_ringing() -> None:
    a = make_phone("a", "192.0.2.1", [G722])
    b = make_phone("b", "192.0.2.2", [PCMU])
    net = Net(a, b)
    call = a.calls.dial("b", "line1", net.now)
    net.pump()
    assert [r.status for r in responses(a, "INVITE")] == [488]
    assert a.calls.get(call.id).end_status == 488
    assert b.calls.active_calls() == []


def timer_phones(a_se: int = 90) -> Net:
    from firmware.sip.session_timer import SessionTimerConfig

    a = make_phone("a", "192.0.2.1", [PCMU])
    b = make_phone("b", "192.0.2.2", [PCMU])
    a.calls.session_timer = SessionTimerConfig(session_expires=a_se)
    b.calls.session_timer = SessionTimerConfig(session_expires=1800)
    return Net(a, b)


def test_session_timer_refresh_and_expiry() -> None:
    """RFC 4028: the refresher re-INVITEs at N/2; without refreshes the other side BYEs."""
    net = timer_phones()
    a_id, b_id = connect(net)
    invite = requests(net.b, "INVITE")[0]
    assert invite.headers.get("Session-Expires") == "90"
    assert "timer" in (invite.headers.get("Supported") or "")
    ok = responses(net.a, "INVITE")[-1]
    assert ok.headers.get("Session-Expires") == "90;refresher=uac"
    assert ok.headers.get("Require") == "timer"

    net.advance(44.0)
    assert len(requests(net.b, "INVITE")) == 1
    net.advance(2.0)  # N/2 = 45 s: the caller refreshes with an unchanged session
    refresh = requests(net.b, "INVITE")[-1]
    assert len(requests(net.b, "INVITE")) == 2
    assert refresh.headers.get("Session-Expires") == "90;refresher=uac"
    first = SessionDescription.parse(invite.body)
    assert SessionDescription.parse(refresh.body).origin.version == first.origin.version
    assert net.a.calls.get(a_id).session.refreshes == 1
    assert net.b.calls.get(b_id).session.refreshes == 1

    # Now the refresher goes silent: the callee ends the call min(32, N/3) = 30 s before
    # the interval runs out (90 - 30 = 60 s after the last refresh).
    for _ in range(10):
        net.drop.append("INVITE sip:")
    net.advance(58.0)  # refresh was at 45 s: the callee gives up at 45 + 60 = 105 s
    assert net.b.calls.get(b_id).state == "connected"
    net.advance(2.0)
    bye = requests(net.a, "BYE")
    assert len(bye) == 1 and "Session timer expired" in (bye[0].headers.get("Reason") or "")
    assert net.b.calls.get(b_id).end_cause == "session_expired"


def test_session_interval_below_min_se_gets_422() -> None:
    """THREATS T19: Session-Expires 30 is refused with 422 Min-SE 90; the phone never rings."""
    from firmware.sip.session_timer import SessionTimerConfig

    a = make_phone("a", "192.0.2.1", [PCMU])
    b = make_phone("b", "192.0.2.2", [PCMU])
    b.calls.session_timer = SessionTimerConfig()
    net = Net(a, b)
    call = a.calls.dial("b", "line1", net.now)
    # Rewrite a's INVITE on the wire to ask for 30 s, as a hostile or broken UAC would.
    out = a.ua.drain()
    raw = out[0].data.replace(
        b"\r\nContent-Type:", b"\r\nSupported: timer\r\nSession-Expires: 30\r\nContent-Type:"
    )
    b.ua.receive(parse_message(raw), "a", reliable=False, now=net.now)
    b.calls.process(net.now)
    (resp,) = [parse_message(o.data) for o in b.ua.drain()]
    assert isinstance(resp, SipResponse) and resp.status == 422
    assert resp.headers.get("Min-SE") == "90"
    assert b.calls.active_calls() == [] and b.calls.calls == {}
    assert call.state == "calling"


def test_late_offer_answer_travels_in_the_ack(net: Net) -> None:
    """RFC 3261 13.2.1: INVITE without SDP -> the callee offers in its 200, we answer in the ACK."""
    call = net.a.calls.dial("b", "line1", net.now, late_offer=True)
    net.pump()
    invite = requests(net.b, "INVITE")[0]
    assert invite.body == b"" and "Content-Type" not in invite.headers
    incoming = net.b.calls.active_calls()[0]
    net.b.calls.answer(incoming.id, net.now)
    net.pump()
    ok = responses(net.a, "INVITE")[-1]
    assert ok.status == 200 and b"m=audio" in ok.body
    ack = requests(net.b, "ACK")[0]
    assert ack.headers.get("Content-Type") == "application/sdp" and b"m=audio" in ack.body
    a_call, b_call = net.a.calls.get(call.id), net.b.calls.get(incoming.id)
    assert a_call.state == b_call.state == "connected"
    assert a_call.media.negotiated is not None and b_call.media.negotiated is not None
    assert a_call.media.negotiated.remote_port == b_call.local_rtp[1]  # type: ignore[index]
    assert b_call.media.negotiated.remote_port == a_call.local_rtp[1]  # type: ignore[index]


def test_forked_second_2xx_is_acked_and_hung_up(net: Net) -> None:
    """RFC 3261 13.2.2.4: keep the first answered fork; ACK and BYE any other 2xx."""
    call = net.a.calls.dial("b", "line1", net.now)
    for out in net.a.ua.drain():  # deliver the INVITE by hand: we play the forking proxy
        net.b.ua.receive(parse_message(out.data), "a", reliable=False, now=net.now)
    net.b.calls.process(net.now)
    net.b.calls.answer(net.b.calls.active_calls()[0].id, net.now)
    from_b = [o.data for o in net.b.ua.drain()]
    ringing = next(d for d in from_b if d.startswith(b"SIP/2.0 180"))
    ok = next(d for d in from_b if d.startswith(b"SIP/2.0 200"))
    tag = parse_message(ok).to.tag  # type: ignore[union-attr]
    assert tag is not None
    fork_ringing = ringing.replace(tag.encode(), b"forktag2")
    fork_ok = ok.replace(tag.encode(), b"forktag2")
    for data in (ringing, fork_ringing, ok):
        net.a.ua.receive(parse_message(data), "b", reliable=False, now=net.now)
    net.a.calls.process(net.now)
    assert net.a.calls.get(call.id).state == "connected"
    first = [parse_message(o.data) for o in net.a.ua.drain()]
    assert [m.method for m in first] == ["ACK"]  # type: ignore[union-attr]
    net.a.ua.receive(parse_message(fork_ok), "b", reliable=False, now=net.now)
    net.a.calls.process(net.now)
    second = [parse_message(o.data) for o in net.a.ua.drain()]
    assert [m.method for m in second] == ["ACK", "BYE"]  # type: ignore[union-attr]
    assert all(m.to.tag == "forktag2" for m in second)
    assert net.a.calls.get(call.id).state == "connected", "the first answer keeps the call"
