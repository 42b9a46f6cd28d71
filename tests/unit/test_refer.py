"""REFER and blind transfer between three sans-IO phones, asserted on the wire bytes.

A is the transferor, B the transferee, C the transfer target; each is a UserAgent + CallManager
+ TransferService, and a tiny in-memory network serialises and parses every message. Each
security rule of docs/threat-model.md (T1, T2, T4, T5, T6, T26, T29) has a test here.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field

import pytest

from firmware.call.authorise import Authoriser
from firmware.call.manager import AccountInfo, CallManager
from firmware.call.refer import ReferPolicy, TransferService
from firmware.sip.auth import DigestClient, DigestCredentials
from firmware.sip.ids import SeededIds
from firmware.sip.message import SipRequest, SipResponse, make_request
from firmware.sip.offer_answer import CodecSpec
from firmware.sip.parser import parse_message
from firmware.sip.transaction import ClientTransaction, Timers
from firmware.sip.ua import LocalEndpoint, UserAgent
from firmware.sip.uri import URI, SipURI, parse_uri

PCMU = CodecSpec("PCMU", 8000, 0)
HOSTS = {"a": "192.0.2.1", "b": "192.0.2.2", "c": "192.0.2.3", "x": "192.0.2.66"}
BY_HOST = {v: k for k, v in HOSTS.items()}


class Ports:
    def __init__(self, base: int) -> None:
        self.base, self.n = base, 0

    def allocate(self, call_id: str, towards: Hashable | None) -> tuple[str, int]:
        self.n += 2
        return ("127.0.0.1", self.base + self.n)

    def release(self, call_id: str) -> None:
        return None


@dataclass
class Phone:
    name: str
    ua: UserAgent
    calls: CallManager
    transfers: TransferService
    transport: str = "UDP"
    wire: list[SipRequest | SipResponse] = field(default_factory=list)
    gruu: bool = False  # our Contact is a GRUU (RFC 5627 gr parameter)

    def route(self, uri: URI) -> Hashable:
        return BY_HOST[getattr(uri, "host", "")]

    def endpoint_for(self, dest: Hashable) -> LocalEndpoint:
        host = HOSTS[self.name]
        gr = f";gr=urn:uuid:0000-{self.name}" if self.gruu else ""
        contact = parse_uri(f"sip:{self.name}@{host}{gr}")
        assert isinstance(contact, SipURI)
        return LocalEndpoint(self.transport, f"{host}:5060", contact, False)


# Identities allowed to REFER/replace/join from outside a call, and their Digest passwords.
ALLOW_FROM = ("sip:x@192.0.2.66",)
USERS = {"x": "x-secret"}


def make_phone(
    name: str,
    policy: ReferPolicy | None = None,
    *,
    allow_from: tuple[str, ...] = ALLOW_FROM,
    password: str | None = None,
) -> Phone:
    """A phone; ``allow_from`` (with `USERS`) is who may act from outside a call here, and
    ``password`` makes this phone answer Digest challenges as user ``name``."""
    ua = UserAgent(ids=SeededIds(name), timers=Timers())
    host = HOSTS[name]
    digest = (
        DigestClient(DigestCredentials(name, password), SeededIds(f"{name}-cnonce"))
        if password
        else None
    )

    def account(_id: str) -> AccountInfo:
        return AccountInfo(
            aor=f"sip:{name}@{host}",
            display_name=name.upper(),
            domain=host,
            contact=f"<sip:{name}@{host}:5060>",
            dest=None,
            digest=digest,
            secure=False,
        )

    calls = CallManager(ua, ports=Ports(10000 * (1 + len(name))), codecs=[PCMU], accounts=account)
    auth = Authoriser(ua.ids, allow_from, USERS)
    phone = Phone(name, ua, calls, TransferService(calls, policy or ReferPolicy(), auth))
    ua.network = phone
    return phone


class Net:
    """Delivers everything every phone sends until quiet; ``now`` is a literal time."""

    def __init__(self, *phones: Phone) -> None:
        self.phones = {p.name: p for p in phones}
        self.now = 0.0

    def pump(self) -> None:
        for _ in range(200):
            moved = False
            for src in self.phones.values():
                for out in src.ua.drain():
                    dst = self.phones[str(out.dest)]
                    msg = parse_message(out.data)
                    dst.wire.append(msg)
                    dst.ua.receive(msg, src.name, reliable=False, now=self.now)
                    dst.calls.process(self.now)
                    moved = True
                src.calls.process(self.now)
            if not moved:
                return
        raise AssertionError("network never went quiet")

    def advance(self, seconds: float) -> None:
        end = self.now + seconds
        while True:
            deadlines = [t for p in self.phones.values() if (t := p.ua.get_timer()) is not None]
            nxt = min(deadlines, default=None)
            if nxt is None or nxt > end:
                break
            self.now = max(self.now, nxt)
            for p in self.phones.values():
                p.ua.handle_timer(self.now)
                p.calls.process(self.now)
            self.pump()
        self.now = end


@dataclass
class Recorder:
    """Transaction owner that keeps the responses to a request we crafted."""

    responses: list[SipResponse] = field(default_factory=list)

    def on_response(self, tx: ClientTransaction, response: SipResponse, now: float) -> None:
        self.responses.append(response)

    def on_timeout(self, tx: ClientTransaction, now: float) -> None:
        raise AssertionError("crafted request timed out")


@pytest.fixture
def net() -> Net:
    return Net(make_phone("a"), make_phone("b"), make_phone("c"))


def requests(phone: Phone, method: str) -> list[SipRequest]:
    return [m for m in phone.wire if isinstance(m, SipRequest) and m.method == method]


def responses(phone: Phone, method: str) -> list[SipResponse]:
    return [m for m in phone.wire if isinstance(m, SipResponse) and m.cseq.method == method]


def connect(net: Net) -> tuple[str, str]:
    """A calls B; B answers. Returns (A's call id, B's call id)."""
    a, b = net.phones["a"], net.phones["b"]
    call = a.calls.dial("sip:b@192.0.2.2", "line1", net.now)
    net.pump()
    incoming = b.calls.active_calls()[0]
    assert b.calls.answer(incoming.id, net.now)
    net.pump()
    assert a.calls.get(call.id).state == "connected"
    return call.id, incoming.id


def answer_c(net: Net) -> str:
    c = net.phones["c"]
    ringing = [x for x in c.calls.active_calls() if x.state == "ringing"]
    assert len(ringing) == 1
    assert c.calls.answer(ringing[0].id, net.now)
    net.pump()
    return ringing[0].id


def refer_from_a(net: Net, a_id: str, headers: list[tuple[str, str]]) -> Recorder:
    """A sends a hand-made in-dialog REFER to B (as a hostile or unusual peer would)."""
    a = net.phones["a"]
    session = a.calls.get(a_id).session
    assert session.dialog is not None
    request = session.dialog.create_request(
        "REFER", ids=a.ua.ids, contact=session.contact, extra_headers=headers
    )
    recorder = Recorder()
    a.ua.send_request(request, recorder, net.now)
    net.pump()
    return recorder


def sipfrags(phone: Phone) -> list[bytes]:
    return [n.body for n in requests(phone, "NOTIFY")]


# --------------------------------------------------------------------------------------------
# The whole blind transfer, every role
# --------------------------------------------------------------------------------------------
def test_blind_transfer_every_role_on_the_wire(net: Net) -> None:
    a, b, c = net.phones["a"], net.phones["b"], net.phones["c"]
    a_id, b_id = connect(net)
    net.now = 10.0
    assert a.transfers.transfer(a_id, "sip:c@192.0.2.3", net.now)
    assert a.calls.get(a_id).status(net.now)["transfer"] == "trying"
    net.pump()

    # Transferor: the call is held (sendonly) and the REFER names C and A as the referrer.
    assert b"a=sendonly" in requests(b, "INVITE")[1].body
    refer = requests(b, "REFER")[0]
    assert refer.headers.get("Refer-To") == "<sip:c@192.0.2.3>"
    assert refer.headers.get("Referred-By") == "<sip:a@192.0.2.1>"
    assert refer.call_id == requests(b, "INVITE")[0].call_id  # in the call's dialog
    assert refer.headers.get("Refer-Sub") is None  # T17: never Refer-Sub: false to a non-GRUU
    # Transferee: 200 (RFC 7647), never 202; NOTIFY 100 Trying at once.
    assert [r.status for r in responses(a, "REFER")] == [200]
    first = requests(a, "NOTIFY")[0]
    assert first.headers.get("Event") == "refer"
    assert first.headers.get("Subscription-State") == "active;expires=60"
    assert first.headers.get("Content-Type") == "message/sipfrag;version=2.0"
    assert first.body == b"SIP/2.0 100 Trying\r\n"
    # The triggered INVITE: fresh Call-ID and tags, B's own From, A's Referred-By.
    invite = requests(c, "INVITE")[0]
    assert str(invite.uri) == "sip:c@192.0.2.3"
    assert invite.call_id != refer.call_id
    assert str(invite.from_.uri) == "sip:b@192.0.2.2" and invite.from_.tag != refer.to.tag
    assert invite.headers.get("Referred-By") == "<sip:a@192.0.2.1>"
    assert b"a=sendonly" not in invite.body  # B's normal SDP, not the held one
    # Target: the call shows who referred it, unverified (T15).
    c_call = [x for x in c.calls.active_calls()][0]
    assert c_call.status(net.now)["referred_by"] == "<sip:a@192.0.2.1>"
    assert c_call.status(net.now)["referred_by_verified"] is False
    assert b.calls.get(b_id).state in ("connected", "held")  # not torn down by the REFER

    net.now = 12.0
    answer_c(net)
    final = requests(a, "NOTIFY")[-1]
    assert final.body == b"SIP/2.0 200 OK\r\n"
    assert final.headers.get("Subscription-State") == "terminated;reason=noresource"
    assert [n.body for n in requests(a, "NOTIFY")] == [
        b"SIP/2.0 100 Trying\r\n",
        b"SIP/2.0 200 OK\r\n",
    ]
    assert all(r.status == 200 for r in responses(b, "NOTIFY"))
    # The original call is gone on both sides; B and C talk.
    assert a.calls.get(a_id).state == "ended" and b.calls.get(b_id).state == "ended"
    assert requests(a, "BYE") or requests(b, "BYE")
    new = [x for x in b.calls.active_calls()]
    assert len(new) == 1 and new[0].state == "connected" and new[0].remote == "sip:c@192.0.2.3"
    assert a.calls.get(a_id).status(net.now)["transfer"] == "done"
    assert a.calls.get(a_id).status(net.now)["transfer_status"] == 200
    assert b.calls.get(b_id).status(net.now)["transfer"] == "done"


def test_failed_transfer_reports_only_the_status_line_and_resumes(net: Net) -> None:
    """T4: C's 486 carries Warning/Server headers; the sipfrag is the status line only."""
    a, b, c = net.phones["a"], net.phones["b"], net.phones["c"]
    a_id, b_id = connect(net)
    assert a.transfers.transfer(a_id, "sip:c@192.0.2.3", net.now)
    net.pump()
    ringing = c.calls.active_calls()[0]
    c.calls.reject(ringing.id, net.now, 486, "Busy Here")
    net.pump()
    rejection = responses(b, "INVITE")[-1]
    assert rejection.status == 486 and rejection.headers.get("Server")
    assert sipfrags(a) == [b"SIP/2.0 100 Trying\r\n", b"SIP/2.0 486 Busy Here\r\n"]
    assert b"Server" not in b"".join(sipfrags(a)) and b"Via" not in b"".join(sipfrags(a))
    # Both sides keep the call, resumed (sendrecv re-INVITE from the transferor).
    a_call, b_call = a.calls.get(a_id), b.calls.get(b_id)
    assert a_call.state == "connected" and b_call.state == "connected"
    last_from_a = requests(b, "INVITE")[-1]
    assert b"a=sendonly" not in last_from_a.body and b"a=inactive" not in last_from_a.body
    assert a_call.status(net.now)["transfer"] == "failed"
    assert a_call.status(net.now)["transfer_status"] == 486
    assert b_call.status(net.now)["transfer"] == "failed"
    assert not requests(a, "BYE") and not requests(b, "BYE")


def test_second_refer_in_the_dialog_carries_event_id(net: Net) -> None:
    a, b, c = net.phones["a"], net.phones["b"], net.phones["c"]
    a_id, _ = connect(net)
    assert a.transfers.transfer(a_id, "sip:c@192.0.2.3", net.now)
    net.pump()
    c.calls.reject(c.calls.active_calls()[0].id, net.now, 480, "Temporarily Unavailable")
    net.pump()
    assert a.calls.get(a_id).status(net.now)["transfer"] == "failed"
    net.now = 5.0
    assert a.transfers.transfer(a_id, "sip:c@192.0.2.3", net.now)
    net.pump()
    second = requests(b, "REFER")[1]
    notifies = requests(a, "NOTIFY")
    assert [n.headers.get("Event") for n in notifies[:2]] == ["refer", "refer"]
    assert notifies[2].headers.get("Event") == f"refer;id={second.cseq.number}"
    answer_c(net)
    last = requests(a, "NOTIFY")[-1]
    assert last.headers.get("Event") == f"refer;id={second.cseq.number}"
    assert last.body == b"SIP/2.0 200 OK\r\n"
    assert a.calls.get(a_id).status(net.now)["transfer"] == "done"


def test_refer_sub_false_is_granted_without_notify(net: Net) -> None:
    a, _b, c = net.phones["a"], net.phones["b"], net.phones["c"]
    a_id, _ = connect(net)
    rec = refer_from_a(net, a_id, [("Refer-To", "<sip:c@192.0.2.3>"), ("Refer-Sub", "false")])
    assert [r.status for r in rec.responses] == [200]
    assert rec.responses[0].headers.get("Refer-Sub") == "false"
    assert len(requests(c, "INVITE")) == 1
    answer_c(net)
    assert requests(a, "NOTIFY") == []


def test_transferor_resumes_when_the_refer_is_refused(net: Net) -> None:
    a, _b = net.phones["a"], net.phones["b"]
    a_id, _ = connect(net)
    assert a.transfers.transfer(a_id, "sip:00441234@192.0.2.3", net.now)  # B's policy says no
    net.pump()
    assert [r.status for r in responses(a, "REFER")] == [403]
    call = a.calls.get(a_id)
    assert call.state == "connected" and not call.held
    assert call.status(net.now)["transfer"] == "failed"
    assert call.status(net.now)["transfer_status"] == 403


def test_notify_for_another_event_or_no_transfer_is_refused(net: Net) -> None:
    a, b = net.phones["a"], net.phones["b"]
    a_id, b_id = connect(net)
    session = b.calls.get(b_id).session
    assert session.dialog is not None
    recorders = []
    for event in ("dialog", "refer"):
        notify = session.dialog.create_request(
            "NOTIFY",
            ids=b.ua.ids,
            contact=session.contact,
            body=b"SIP/2.0 200 OK\r\n",
            extra_headers=[
                ("Event", event),
                ("Subscription-State", "terminated"),
                ("Content-Type", "message/sipfrag"),
            ],
        )
        recorders.append(Recorder())
        b.ua.send_request(notify, recorders[-1], net.now)
        net.pump()
    assert [r.responses[0].status for r in recorders] == [489, 481]
    assert a.calls.get(a_id).state == "connected"  # a forged "200" NOTIFY hangs nothing up


# --------------------------------------------------------------------------------------------
# Malformed and hostile REFERs (threat rows)
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "headers",
    [
        [],
        [("Refer-To", "<sip:c@192.0.2.3>"), ("Refer-To", "<sip:x@192.0.2.66>")],
        [("Refer-To", "<sip:c@192.0.2.3>, <sip:x@192.0.2.66>")],
    ],
    ids=["none", "two-headers", "two-in-one"],
)
def test_refer_needs_exactly_one_refer_to(net: Net, headers: list[tuple[str, str]]) -> None:
    a_id, b_id = connect(net)
    rec = refer_from_a(net, a_id, headers)
    assert rec.responses[0].status == 400
    assert requests(net.phones["c"], "INVITE") == [] and "x" not in net.phones
    assert net.phones["b"].calls.get(b_id).state == "connected"


@pytest.mark.parametrize(
    "refer_to",
    ["<http://10.0.0.1/admin>", "<telnet://10.0.0.1:23>", "<tel:+15551234>"],
)
def test_t5_non_sip_refer_to_is_refused_and_never_fetched(net: Net, refer_to: str) -> None:
    a, b = net.phones["a"], net.phones["b"]
    a_id, b_id = connect(net)
    rec = refer_from_a(net, a_id, [("Refer-To", refer_to)])
    assert rec.responses[0].status == 403
    assert b.ua.drain() == []  # nothing at all goes out (no INVITE, no NOTIFY)
    assert len(b.calls.calls) == 1 and b.calls.get(b_id).state == "connected"
    assert requests(a, "NOTIFY") == []


def test_t6_smuggled_headers_in_refer_to_are_not_copied(net: Net) -> None:
    _a, _b, c = net.phones["a"], net.phones["b"], net.phones["c"]
    a_id, _ = connect(net)
    refer_to = (
        "<sip:c@192.0.2.3?Route=%3Csip:evil%40192.0.2.66%3Bl%3E&From=%3Csip:boss%40evil%3E"
        "&Call-ID=stolen&CSeq=1%20INVITE&Via=SIP/2.0/UDP%20192.0.2.66&Contact=%3Csip:evil%3E"
        "&Record-Route=%3Csip:evil%3E&User-Agent=evil"
        "&Replaces=abc%3Bto-tag%3D1%3Bfrom-tag%3D2&Require=replaces>"
    )
    rec = refer_from_a(net, a_id, [("Refer-To", refer_to)])
    assert rec.responses[0].status == 200
    invite = requests(c, "INVITE")[0]
    raw = invite.serialize()
    assert b"evil" not in raw and b"stolen" not in raw and b"boss" not in raw
    assert invite.headers.get("Route") is None
    assert str(invite.from_.uri) == "sip:b@192.0.2.2"
    assert invite.cseq.method == "INVITE" and invite.cseq.number != 1
    assert str(invite.uri) == "sip:c@192.0.2.3"  # no ?headers left in the Request-URI
    assert invite.headers.get("Replaces") == "abc;to-tag=1;from-tag=2"
    assert invite.headers.get("Require") == "replaces"
    assert len(invite.vias) == 1 and invite.top_via.host == "192.0.2.2"


@pytest.mark.parametrize(
    "user", ["00441234567", "011441234567", "%2B441234567", "+44-123", "9005551234", "1900555"]
)
def test_t26_toll_fraud_targets_are_refused(net: Net, user: str) -> None:
    _a, b, c = net.phones["a"], net.phones["b"], net.phones["c"]
    a_id, b_id = connect(net)
    rec = refer_from_a(net, a_id, [("Refer-To", f"<sip:{user}@192.0.2.3>")])
    assert rec.responses[0].status == 403
    assert requests(c, "INVITE") == [] and b.ua.drain() == []
    assert b.calls.get(b_id).state == "connected"


def test_t26_allow_pattern_overrides_the_default_deny() -> None:
    net = Net(make_phone("a"), make_phone("b", ReferPolicy(allow=("0044*",))), make_phone("c"))
    a_id, _ = connect(net)
    rec = refer_from_a(net, a_id, [("Refer-To", "<sip:0044123@192.0.2.3>")])
    assert rec.responses[0].status == 200
    assert str(requests(net.phones["c"], "INVITE")[0].uri) == "sip:0044123@192.0.2.3"
    rec = refer_from_a(net, a_id, [("Refer-To", "<sip:0033123@192.0.2.3>")])
    assert rec.responses[0].status in (403, 491)


@pytest.mark.parametrize("method", ["BYE", "bye", "NOTIFY", "OPTIONS"])
def test_t29_refer_to_with_another_method_is_refused(net: Net, method: str) -> None:
    _a, b, c = net.phones["a"], net.phones["b"], net.phones["c"]
    a_id, b_id = connect(net)
    rec = refer_from_a(net, a_id, [("Refer-To", f"<sip:c@192.0.2.3;method={method}>")])
    assert rec.responses[0].status == 403
    assert c.wire == [] and b.ua.drain() == []
    assert b.calls.get(b_id).state == "connected"


def test_t29_method_invite_is_just_a_call(net: Net) -> None:
    a_id, _ = connect(net)
    rec = refer_from_a(net, a_id, [("Refer-To", "<sip:c@192.0.2.3;method=INVITE>")])
    assert rec.responses[0].status == 200
    assert str(requests(net.phones["c"], "INVITE")[0].uri) == "sip:c@192.0.2.3"


def test_t2_replayed_refer_after_the_transfer_gets_481_and_no_invite(net: Net) -> None:
    a, b, c = net.phones["a"], net.phones["b"], net.phones["c"]
    a_id, b_id = connect(net)
    a.transfers.transfer(a_id, "sip:c@192.0.2.3", net.now)
    net.pump()
    answer_c(net)
    assert b.calls.get(b_id).state == "ended"
    captured = requests(b, "REFER")[0]
    invites_before = len(requests(c, "INVITE"))
    net.now = 60.0  # long after Timer J: a new transaction, not a retransmission
    replay = parse_message(captured.serialize().replace(b"branch=", b"branch=z9hG4bKreplay"))
    b.ua.receive(replay, "a", reliable=False, now=net.now)
    out = [parse_message(o.data) for o in b.ua.drain()]
    assert [type(m).__name__ for m in out] == ["SipResponse"]
    assert out[0].status == 481  # type: ignore[union-attr]
    net.pump()
    assert len(requests(c, "INVITE")) == invites_before
    assert len(c.calls.active_calls()) == 1  # only the call from the real transfer


def test_t2_replayed_refer_in_a_live_dialog_gets_500_and_no_invite(net: Net) -> None:
    """After a failed transfer the dialog lives on; an old REFER (same or lower CSeq) is dead."""
    a, b, c = net.phones["a"], net.phones["b"], net.phones["c"]
    a_id, b_id = connect(net)
    a.transfers.transfer(a_id, "sip:c@192.0.2.3", net.now)
    net.pump()
    c.calls.reject(c.calls.active_calls()[0].id, net.now, 486, "Busy Here")
    net.pump()
    assert b.calls.get(b_id).state == "connected"
    captured = requests(b, "REFER")[0]
    invites_before = len(requests(c, "INVITE"))
    net.now = 60.0
    for n, replay_bytes in enumerate([captured.serialize()]):
        replay = parse_message(replay_bytes.replace(b"branch=", f"branch=z9hG4bKr{n}".encode()))
        b.ua.receive(replay, "a", reliable=False, now=net.now)
        out = [parse_message(o.data) for o in b.ua.drain()]
        assert len(out) == 1 and out[0].status == 500  # type: ignore[union-attr]
    assert len(requests(c, "INVITE")) == invites_before
    assert b.calls.get(b_id).state == "connected"


# --------------------------------------------------------------------------------------------
# Out-of-dialog REFER (T1)
# --------------------------------------------------------------------------------------------
def _ood_refer(
    net: Net, sender: Phone, b_call_dialog: tuple[str, str, str] | None, n: int = 1
) -> SipResponse:
    headers = [
        ("Max-Forwards", "70"),
        ("From", f"<sip:{sender.name}@{HOSTS[sender.name]}>;tag=ood1"),
        ("To", "<sip:b@192.0.2.2>"),
        ("Call-ID", f"ood-refer-{n}"),
        ("CSeq", "1 REFER"),
        ("Contact", f"<sip:{sender.name}@{HOSTS[sender.name]}>"),
        ("Refer-To", "<sip:c@192.0.2.3>"),
        ("Refer-Sub", "false"),
    ]
    if b_call_dialog is not None:
        call_id, sender_tag, b_tag = b_call_dialog
        headers.append(("Target-Dialog", f"{call_id};local-tag={sender_tag};remote-tag={b_tag}"))
    request = make_request("REFER", "sip:b@192.0.2.2", headers=headers)
    rec = Recorder()
    sender.ua.send_request(request, rec, net.now)
    net.pump()
    return rec.responses[0]


def test_t1_out_of_dialog_refer_from_a_stranger_is_refused() -> None:
    """Not on allow_from: 403 at once (no challenge to probe passwords with), no INVITE."""
    net = Net(make_phone("a"), make_phone("b", allow_from=()), make_phone("c"), make_phone("x"))
    connect(net)
    response = _ood_refer(net, net.phones["x"], None)
    assert response.status == 403
    assert response.headers.get("WWW-Authenticate") is None
    assert requests(net.phones["c"], "INVITE") == []


def _dialog_of_b(net: Net) -> tuple[str, str, str]:
    b_call = net.phones["b"].calls.active_calls()[0]
    dialog = b_call.session.dialog
    assert dialog is not None
    return dialog.call_id, dialog.remote_tag or "", dialog.local_tag


def test_t1_target_dialog_over_plain_udp_is_still_refused() -> None:
    net = Net(make_phone("a"), make_phone("b"), make_phone("c"), make_phone("x"))
    connect(net)
    response = _ood_refer(net, net.phones["a"], _dialog_of_b(net))
    assert response.status == 403 and "TLS" in response.reason
    assert requests(net.phones["c"], "INVITE") == []


def test_t1_target_dialog_of_a_live_call_over_tls_is_accepted() -> None:
    """RFC 4538: the call's peer (A) over TLS; a wrong tag or an ended call -> 481 (T2)."""
    net = Net(make_phone("a"), make_phone("b"), make_phone("c"), make_phone("x"))
    connect(net)
    net.phones["b"].transport = "TLS"
    target = _dialog_of_b(net)
    wrong = (target[0], target[1], "not-our-tag")
    assert _ood_refer(net, net.phones["a"], wrong).status == 481
    response = _ood_refer(net, net.phones["a"], target, 2)
    assert response.status == 200 and response.headers.get("Refer-Sub") == "false"
    assert len(requests(net.phones["c"], "INVITE")) == 1
    answer_c(net)
    assert net.phones["b"].calls.active_calls()[0].session.call_id != target[0]
    # Replayed after the transfer completed: the target dialog is gone, nothing happens.
    replay = _ood_refer(net, net.phones["a"], target, 3)
    assert replay.status == 481
    assert len(requests(net.phones["c"], "INVITE")) == 1


def test_t1_target_dialog_from_someone_else_is_refused_even_over_tls() -> None:
    """Knowing the tags is not enough: X is not the peer of that call (and not listed)."""
    net = Net(
        make_phone("a"), make_phone("b", allow_from=()), make_phone("c"), make_phone("x")
    )
    connect(net)
    net.phones["b"].transport = "TLS"
    response = _ood_refer(net, net.phones["x"], _dialog_of_b(net))
    assert response.status == 403
    assert requests(net.phones["c"], "INVITE") == []


def test_t1_in_dialog_refer_can_be_switched_off_by_policy() -> None:
    net = Net(make_phone("a"), make_phone("b", ReferPolicy(in_dialog=False)), make_phone("c"))
    a_id, _ = connect(net)
    rec = refer_from_a(net, a_id, [("Refer-To", "<sip:c@192.0.2.3>")])
    assert rec.responses[0].status == 403
    assert requests(net.phones["c"], "INVITE") == []


def test_refer_and_notify_are_allowed_in_every_call(net: Net) -> None:
    a_id, b_id = connect(net)
    assert "REFER" in net.phones["b"].ua.allow()
    assert "REFER" in net.phones["b"].calls.get(b_id).session.allow()
    assert "NOTIFY" in net.phones["a"].calls.get(a_id).session.allow()


def _subscribe_from_a(net: Net, a_id: str, event: str) -> int:
    a = net.phones["a"]
    session = a.calls.get(a_id).session
    assert session.dialog is not None
    request = session.dialog.create_request(
        "SUBSCRIBE",
        ids=a.ua.ids,
        contact=session.contact,
        extra_headers=[("Event", event), ("Expires", "0")],
    )
    rec = Recorder()
    a.ua.send_request(request, rec, net.now)
    net.pump()
    return rec.responses[0].status


def test_in_dialog_subscribe_for_the_refer_subscription(net: Net) -> None:
    """baresip 1.0 ends its refer subscription with SUBSCRIBE after the final NOTIFY."""
    a = net.phones["a"]
    a_id, _ = connect(net)
    assert _subscribe_from_a(net, a_id, "refer") == 403  # no REFER yet
    assert _subscribe_from_a(net, a_id, "dialog") == 489
    assert a.transfers.transfer(a_id, "sip:c@192.0.2.3", net.now)
    net.pump()
    assert _subscribe_from_a(net, a_id, "refer") == 200  # live: refreshed
    net.phones["c"].calls.reject(
        net.phones["c"].calls.active_calls()[0].id, net.now, 486, "Busy Here"
    )
    net.pump()
    assert _subscribe_from_a(net, a_id, "refer") == 481  # terminated by the final NOTIFY


def test_out_of_dialog_subscribe_is_refused() -> None:
    net = Net(make_phone("b"), make_phone("x"))
    x = net.phones["x"]
    statuses = []
    for n, event in enumerate(("refer", "presence")):
        request = make_request(
            "SUBSCRIBE",
            "sip:b@192.0.2.2",
            headers=[
                ("Max-Forwards", "70"),
                ("From", f"<sip:x@192.0.2.66>;tag=s{n}"),
                ("To", "<sip:b@192.0.2.2>"),
                ("Call-ID", f"sub-{n}"),
                ("CSeq", "1 SUBSCRIBE"),
                ("Contact", "<sip:x@192.0.2.66>"),
                ("Event", event),
            ],
        )
        rec = Recorder()
        x.ua.send_request(request, rec, net.now)
        net.pump()
        statuses.append(rec.responses[0].status)
    assert statuses == [403, 489]
