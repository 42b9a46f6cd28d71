"""The UA core (RFC 3261 sections 8.2 and 12 for the UAS side, plus registration plumbing).

Everything goes in as wire bytes through `parse_message`, time is a literal `now`, identifiers
come from `SeededIds`, and every assertion is on what `drain()` hands to the runtime: the bytes
(`Outgoing.data`, parsed back) and where they go (`Outgoing.dest`).
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import pytest

from firmware.sip.auth import DigestClient, DigestCredentials, parse_challenges
from firmware.sip.ids import SeededIds
from firmware.sip.message import SipRequest, SipResponse, make_response
from firmware.sip.parser import parse_message
from firmware.sip.registration import Registration
from firmware.sip.ua import LocalEndpoint, UserAgent
from firmware.sip.uri import SipURI, parse_uri

PEER = ("udp", "192.0.2.1", 5060)
REGISTRAR = ("udp", "203.0.113.5", 5060)
INSTANCE = "urn:uuid:00000000-0000-4000-8000-0000000000b2"
PASSWORD = "correct horse"
FROM = "<sip:alice@192.0.2.1>;tag=fromtag1"
TO = "<sip:phone@192.0.2.10>"
CALL_ID = "callid-1@192.0.2.1"
ALLOW = "OPTIONS, INVITE, BYE, CANCEL, ACK, NOTIFY"


def uri(text: str) -> SipURI:
    parsed = parse_uri(text)
    assert isinstance(parsed, SipURI)
    return parsed


UDP_EP = LocalEndpoint("UDP", "192.0.2.10:5062", uri("sip:1001@192.0.2.10:5062"), False)
TLS_EP = LocalEndpoint(
    "TLS", "[2001:db8::10]:5061", uri("sip:1001@[2001:db8::10]:5061;transport=tls"), True
)


# --------------------------------------------------------------------------------------------
# Building inbound bytes and reading outbound ones
# --------------------------------------------------------------------------------------------
def request_bytes(
    method: str,
    *,
    branch: str = "z9hG4bKbranch1",
    to: str = TO,
    cseq: str | None = None,
    call_id: str | None = CALL_ID,
    extra: list[tuple[str, str]] | None = None,
    version: str = "SIP/2.0",
    max_forwards: str = "70",
) -> bytes:
    lines = [
        f"{method} sip:phone@192.0.2.10:5062 {version}",
        f"Via: SIP/2.0/UDP 192.0.2.1:5060;branch={branch}",
        f"Max-Forwards: {max_forwards}",
        f"To: {to}",
        f"From: {FROM}",
    ]
    if call_id is not None:
        lines.append(f"Call-ID: {call_id}")
    lines.append(f"CSeq: {cseq or '1 ' + method}")
    lines += [f"{name}: {value}" for name, value in extra or []]
    return ("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode()


def feed(
    ua: UserAgent,
    data: bytes,
    now: float,
    *,
    source: object = PEER,
    reliable: bool = False,
) -> list[SipResponse]:
    """Receive ``data`` and return the responses drained, checking they go back to ``source``."""
    message = parse_message(data)
    ua.receive(message, source, reliable=reliable, now=now)  # type: ignore[arg-type]
    return responses(ua, source)


def responses(ua: UserAgent, dest: object = PEER) -> list[SipResponse]:
    out = []
    for item in ua.drain():
        assert item.dest == dest
        parsed = parse_message(item.data)
        assert isinstance(parsed, SipResponse), parsed
        out.append(parsed)
    return out


def header_line(message: SipRequest | SipResponse, name: str) -> list[str]:
    """Values of ``name`` exactly as they appear on the wire."""
    lines = message.serialize().decode().split("\r\n")
    prefix = name.lower() + ":"
    return [ln.split(":", 1)[1].strip() for ln in lines if ln.lower().startswith(prefix)]


def wire_header(data: bytes, name: str) -> list[str]:
    prefix = name.lower() + ":"
    lines = data.decode().split("\r\n")
    return [ln.split(":", 1)[1].strip() for ln in lines if ln.lower().startswith(prefix)]


def to_tag(response: SipResponse) -> str:
    tag = response.to.tag
    assert tag is not None and re.fullmatch(r"[0-9a-f]{16}", tag), response.headers.get("To")
    return tag


@pytest.fixture
def ua() -> UserAgent:
    return UserAgent(SeededIds("ua-test"))


# --------------------------------------------------------------------------------------------
# OPTIONS and the method table (8.2.1, 11.2)
# --------------------------------------------------------------------------------------------
def test_options_answered_200_with_capabilities(ua: UserAgent) -> None:
    data = request_bytes("OPTIONS", extra=[("Timestamp", "54")])
    (resp,) = feed(ua, data, 0.0)
    assert resp.status == 200 and resp.reason == "OK"
    assert header_line(resp, "Allow") == [ALLOW]
    allowed = {m.strip() for m in ALLOW.split(",")}
    assert allowed == set(ua.handlers) - {"REGISTER"}
    assert header_line(resp, "Accept") == ["application/sdp"]
    assert header_line(resp, "Supported") == [
        "path, outbound, gruu, timer, replaces, join, tdialog, norefersub"
    ]
    assert header_line(resp, "Server") == ["deskphone/0.1"]
    # 8.2.6.2: Via, From, Call-ID and CSeq copied as written; To gets our tag.
    assert header_line(resp, "Via") == ["SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKbranch1"]
    assert header_line(resp, "From") == [FROM]
    assert header_line(resp, "Call-ID") == [CALL_ID]
    assert header_line(resp, "CSeq") == ["1 OPTIONS"]
    tag = to_tag(resp)
    assert header_line(resp, "To") == [f"{TO};tag={tag}"]
    assert "Timestamp" not in resp.headers  # only a 100 echoes it (8.2.6.1)


def test_allow_follows_the_handler_table(ua: UserAgent) -> None:
    seen: list[str] = []

    def on_message(server_tx: Any, request: SipRequest, now: float) -> None:
        seen.append(request.method)
        ua.respond(server_tx, request, 200, "OK", now)

    ua.handlers["MESSAGE"] = on_message
    (opt,) = feed(ua, request_bytes("OPTIONS"), 0.0)
    assert header_line(opt, "Allow") == [ALLOW + ", MESSAGE"]
    (msg,) = feed(ua, request_bytes("MESSAGE", branch="z9hG4bKmsg"), 0.0)
    assert (msg.status, seen) == (200, ["MESSAGE"])


def test_unknown_method_gets_501_with_allow(ua: UserAgent) -> None:
    (resp,) = feed(ua, request_bytes("PUBLISH"), 0.0)
    assert (resp.status, resp.reason) == (501, "Not Implemented")
    assert header_line(resp, "Allow") == [ALLOW]
    assert header_line(resp, "CSeq") == ["1 PUBLISH"]
    to_tag(resp)


def test_register_gets_405_and_is_not_advertised(ua: UserAgent) -> None:
    (resp,) = feed(ua, request_bytes("REGISTER"), 0.0)
    assert (resp.status, resp.reason) == (405, "Method Not Allowed")
    assert header_line(resp, "Allow") == [ALLOW]
    assert "REGISTER" not in ua.allow()


def test_default_invite_handler_refuses_with_480(ua: UserAgent) -> None:
    (resp,) = feed(ua, request_bytes("INVITE"), 0.0)
    assert (resp.status, header_line(resp, "CSeq")) == (480, ["1 INVITE"])
    to_tag(resp)


@pytest.mark.parametrize("method", ["OPTIONS", "BYE", "INVITE", "NOTIFY"])
def test_request_with_to_tag_for_no_dialog_gets_481(ua: UserAgent, method: str) -> None:
    to = f"{TO};tag=theirdialog"
    (resp,) = feed(ua, request_bytes(method, to=to, cseq=f"7 {method}"), 0.0)
    assert (resp.status, resp.reason) == (481, "Call/Transaction Does Not Exist")
    assert header_line(resp, "To") == [to]  # the existing tag is kept, no second one added
    assert header_line(resp, "CSeq") == [f"7 {method}"]


def test_bye_outside_any_dialog_gets_481(ua: UserAgent) -> None:
    (resp,) = feed(ua, request_bytes("BYE"), 0.0)
    assert resp.status == 481
    to_tag(resp)


def test_cancel_for_no_transaction_gets_481(ua: UserAgent) -> None:
    (resp,) = feed(ua, request_bytes("CANCEL", branch="z9hG4bKnothing"), 0.0)
    assert (resp.status, header_line(resp, "CSeq")) == (481, ["1 CANCEL"])


def test_cancel_ignores_require(ua: UserAgent) -> None:
    # 8.2.2.3: Require is not checked on CANCEL, so this is a 481 and not a 420.
    data = request_bytes("CANCEL", branch="z9hG4bKnothing", extra=[("Require", "foo")])
    (resp,) = feed(ua, data, 0.0)
    assert resp.status == 481
    assert "Unsupported" not in resp.headers


# --------------------------------------------------------------------------------------------
# CANCEL and ACK (9.2, 17.2.1)
# --------------------------------------------------------------------------------------------
def silent_invite_handler(ua: UserAgent) -> list[tuple[Any, SipRequest]]:
    """Replace the INVITE handler with one that only remembers the transaction."""
    pending: list[tuple[Any, SipRequest]] = []

    def on_invite(server_tx: Any, request: SipRequest, now: float) -> None:
        pending.append((server_tx, request))

    ua.handlers["INVITE"] = on_invite
    return pending


@pytest.mark.parametrize("branch", ["z9hG4bKinv", "rfc2543-branch"])
def test_cancel_of_pending_invite_gets_200_and_invite_gets_487(ua: UserAgent, branch: str) -> None:
    pending = silent_invite_handler(ua)
    assert feed(ua, request_bytes("INVITE", branch=branch), 0.0) == []
    assert len(pending) == 1
    cancel = request_bytes("CANCEL", branch=branch, extra=[("Reason", "SIP;cause=200")])
    ok, terminated = feed(ua, cancel, 0.1)
    assert (ok.status, header_line(ok, "CSeq")) == (200, ["1 CANCEL"])
    assert (terminated.status, terminated.reason) == (487, "Request Terminated")
    assert header_line(terminated, "CSeq") == ["1 INVITE"]
    assert header_line(terminated, "Via") == [f"SIP/2.0/UDP 192.0.2.1:5060;branch={branch}"]
    to_tag(ok)
    to_tag(terminated)


def test_487_is_retransmitted_until_acked_then_ack_is_absorbed(ua: UserAgent) -> None:
    silent_invite_handler(ua)
    feed(ua, request_bytes("INVITE", branch="z9hG4bKinv"), 0.0)
    ua.receive(
        parse_message(request_bytes("CANCEL", branch="z9hG4bKinv")),  # type: ignore[arg-type]
        PEER,
        reliable=False,
        now=0.1,
    )
    sent = ua.drain()
    assert [parse_message(o.data).status for o in sent] == [200, 487]  # type: ignore[union-attr]
    final = sent[1].data
    # Timer G (T1 = 0.5 s): the 487 goes again, byte for byte, while no ACK came.
    ua.handle_timer(0.6)
    assert [o.data for o in ua.drain()] == [final]
    tag = to_tag(parse_message(final))  # type: ignore[arg-type]
    ack = request_bytes("ACK", branch="z9hG4bKinv", to=f"{TO};tag={tag}", cseq="1 ACK")
    assert feed(ua, ack, 0.7) == []
    ua.handle_timer(10.0)  # G would have fired several times by now
    assert ua.drain() == []


def test_cancel_after_provisional_keeps_the_to_tag(ua: UserAgent) -> None:
    """8.2.6.2: every response to one request (but 100) carries the same To tag."""

    def ringing(server_tx: Any, request: SipRequest, now: float) -> None:
        ua.respond(server_tx, request, 180, "Ringing", now)

    ua.handlers["INVITE"] = ringing
    (ring,) = feed(ua, request_bytes("INVITE", branch="z9hG4bKinv"), 0.0)
    assert ring.status == 180
    ok, terminated = feed(ua, request_bytes("CANCEL", branch="z9hG4bKinv"), 1.0)
    assert (ok.status, terminated.status) == (200, 487)
    assert to_tag(terminated) == to_tag(ring)


def test_handler_responses_share_one_to_tag(ua: UserAgent) -> None:
    def answer(server_tx: Any, request: SipRequest, now: float) -> None:
        ua.respond(server_tx, request, 180, "Ringing", now)
        ua.respond(server_tx, request, 200, "OK", now)

    ua.handlers["INVITE"] = answer
    ring, ok = feed(ua, request_bytes("INVITE", branch="z9hG4bKinv"), 0.0)
    assert (ring.status, ok.status) == (180, 200)
    assert to_tag(ok) == to_tag(ring)


def test_100_from_a_handler_has_no_tag_and_the_180_gets_one(ua: UserAgent) -> None:
    def trying_then_ringing(server_tx: Any, request: SipRequest, now: float) -> None:
        ua.respond(server_tx, request, 100, "Trying", now)
        ua.respond(server_tx, request, 180, "Ringing", now)

    ua.handlers["INVITE"] = trying_then_ringing
    trying, ring = feed(ua, request_bytes("INVITE", branch="z9hG4bKinv"), 0.0)
    assert (trying.status, header_line(trying, "To")) == (100, [TO])
    assert ring.status == 180
    to_tag(ring)


def test_cancel_after_final_response_sends_no_487(ua: UserAgent) -> None:
    (refused,) = feed(ua, request_bytes("INVITE", branch="z9hG4bKinv"), 0.0)
    assert refused.status == 480
    (ok,) = feed(ua, request_bytes("CANCEL", branch="z9hG4bKinv"), 0.1)
    assert (ok.status, header_line(ok, "CSeq")) == (200, ["1 CANCEL"])


def test_ack_without_transaction_is_absorbed(ua: UserAgent) -> None:
    ack = request_bytes("ACK", branch="z9hG4bKack", to=f"{TO};tag=x", cseq="1 ACK")
    assert feed(ua, ack, 0.0) == []
    assert ua.get_timer() is None


# --------------------------------------------------------------------------------------------
# Merged requests and retransmissions (8.2.2.2, 17.2.2)
# --------------------------------------------------------------------------------------------
def test_merged_request_gets_482(ua: UserAgent) -> None:
    (first,) = feed(ua, request_bytes("OPTIONS", branch="z9hG4bKfork1"), 0.0)
    assert first.status == 200
    (merged,) = feed(ua, request_bytes("OPTIONS", branch="z9hG4bKfork2"), 1.0)
    assert (merged.status, merged.reason) == (482, "Loop Detected")
    assert header_line(merged, "Via") == ["SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKfork2"]
    to_tag(merged)


@pytest.mark.parametrize(
    "change",
    [
        {"cseq": "2 OPTIONS"},
        {"call_id": "another-call"},
        {"to": f"{TO};tag=mine"},  # in-dialog requests are not merge candidates (-> 481)
    ],
)
def test_not_merged_when_identity_differs(ua: UserAgent, change: dict[str, str]) -> None:
    feed(ua, request_bytes("OPTIONS", branch="z9hG4bKfork1"), 0.0)
    (resp,) = feed(ua, request_bytes("OPTIONS", branch="z9hG4bKfork2", **change), 1.0)  # type: ignore[arg-type]
    assert resp.status != 482


def test_retransmission_is_absorbed_and_answer_repeated(ua: UserAgent) -> None:
    calls: list[float] = []

    def on_options(server_tx: Any, request: SipRequest, now: float) -> None:
        calls.append(now)
        ua.respond(server_tx, request, 200, "OK", now)

    ua.handlers["OPTIONS"] = on_options
    data = request_bytes("OPTIONS")
    ua.receive(parse_message(data), PEER, reliable=False, now=0.0)  # type: ignore[arg-type]
    (original,) = ua.drain()
    ua.receive(parse_message(data), PEER, reliable=False, now=0.5)  # type: ignore[arg-type]
    (again,) = ua.drain()
    assert again.data == original.data  # same To tag: the handler was not run again
    assert again.dest == PEER
    assert calls == [0.0]


def test_merge_memory_expires_after_32_seconds(ua: UserAgent) -> None:
    # Over a reliable transport Timer J is zero, so the only deadline left is the merge memory.
    feed(ua, request_bytes("OPTIONS", branch="z9hG4bKfork1"), 0.0, reliable=True)
    assert ua.get_timer() == 32.0
    (merged,) = feed(ua, request_bytes("OPTIONS", branch="z9hG4bKfork2"), 31.9, reliable=True)
    assert merged.status == 482
    ua.handle_timer(32.0)
    assert ua.get_timer() is None  # forgotten, not just outdated
    (late,) = feed(ua, request_bytes("OPTIONS", branch="z9hG4bKfork3"), 32.1, reliable=True)
    assert late.status == 200


# --------------------------------------------------------------------------------------------
# Validation (8.2.1-8.2.3)
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"call_id": None}, "Call-ID"),
        ({"cseq": "1 INVITE"}, "CSeq"),
        ({"max_forwards": "seventy"}, "Max-Forwards"),
        ({"max_forwards": "256"}, "Max-Forwards"),
    ],
)
def test_invalid_request_gets_400_naming_the_header(
    ua: UserAgent, kwargs: dict[str, Any], named: str
) -> None:
    called: list[str] = []
    ua.handlers["OPTIONS"] = lambda tx, req, now: called.append(req.method)
    (resp,) = feed(ua, request_bytes("OPTIONS", **kwargs), 0.0)
    assert resp.status == 400
    assert named in resp.reason
    assert header_line(resp, "Via") == ["SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKbranch1"]
    to_tag(resp)
    assert called == []


def test_400_keeps_an_existing_to_tag(ua: UserAgent) -> None:
    to = f"{TO};tag=theirs"
    (resp,) = feed(ua, request_bytes("BYE", to=to, call_id=None), 0.0)
    assert resp.status == 400
    assert header_line(resp, "To") == [to]


def test_400_for_malformed_to_carries_a_tag(ua: UserAgent) -> None:
    responses_ = feed(ua, request_bytes("OPTIONS", to="<sip:phone@192.0.2.10"), 0.0)
    assert len(responses_) == 1
    (resp,) = responses_
    assert resp.status == 400
    assert re.search(r";tag=[0-9a-f]{16}$", resp.headers.get("To") or "")


def test_unsupported_require_gets_420(ua: UserAgent) -> None:
    (resp,) = feed(ua, request_bytes("OPTIONS", extra=[("Require", "foo, path")]), 0.0)
    assert (resp.status, resp.reason) == (420, "Bad Extension")
    assert header_line(resp, "Unsupported") == ["foo"]
    to_tag(resp)


def test_supported_require_is_accepted(ua: UserAgent) -> None:
    (resp,) = feed(ua, request_bytes("OPTIONS", extra=[("Require", "outbound")]), 0.0)
    assert resp.status == 200


def test_other_sip_version_gets_505(ua: UserAgent) -> None:
    data = request_bytes("OPTIONS", version="SIP/3.0")
    assert parse_message(data).version == "SIP/3.0"  # type: ignore[union-attr]
    (resp,) = feed(ua, data, 0.0)
    assert (resp.status, resp.version) == (505, "SIP/2.0")
    to_tag(resp)


def test_invalid_ack_is_not_answered(ua: UserAgent) -> None:
    silent_invite_handler(ua)
    feed(ua, request_bytes("INVITE", branch="z9hG4bKinv"), 0.0)
    # An ACK on its own branch with no Call-ID: no transaction, never a response (17). The
    # transaction layer hands such ACKs up as AckFor2xx, which the UA only logs.
    bad_ack = request_bytes("ACK", branch="z9hG4bKother", call_id=None, cseq="1 ACK")
    assert feed(ua, bad_ack, 0.05) == []


# --------------------------------------------------------------------------------------------
# Registration plumbing
# --------------------------------------------------------------------------------------------
def make_registration(ids: SeededIds, *, digest: bool = True) -> Registration:
    client = DigestClient(DigestCredentials("1001", PASSWORD), ids) if digest else None
    return Registration(
        account="line1",
        aor=uri("sip:1001@pbx.example"),
        registrar=uri("sip:pbx.example"),
        ids=ids,
        instance_id=INSTANCE,
        digest=client,
    )


def registered_ua(
    endpoint: LocalEndpoint | None = UDP_EP, *, digest: bool = True
) -> tuple[UserAgent, Registration]:
    ids = SeededIds("ua-reg")
    ua = UserAgent(ids)
    reg = make_registration(ids, digest=digest)
    ua.add_account("line1", reg, REGISTRAR, endpoint, 0.0)
    return ua, reg


def sent_requests(ua: UserAgent, dest: object = REGISTRAR) -> list[SipRequest]:
    out = []
    for item in ua.drain():
        assert item.dest == dest
        parsed = parse_message(item.data)
        assert isinstance(parsed, SipRequest), parsed
        out.append(parsed)
    return out


def answer(
    ua: UserAgent,
    request: SipRequest,
    status: int,
    now: float,
    headers: list[tuple[str, str]] | None = None,
    source: object = REGISTRAR,
) -> None:
    response = make_response(request, status, to_tag="registrar")
    for name, value in headers or []:
        response.headers.add(name, value)
    ua.receive(parse_message(response.serialize()), source, reliable=False, now=now)  # type: ignore[arg-type]


def granted(request: SipRequest, expires: int = 3600) -> list[tuple[str, str]]:
    """The registrar's Contact echo of our binding."""
    (contact,) = header_line(request, "Contact")
    return [("Contact", re.sub(r"expires=\d+", f"expires={expires}", contact))]


def status(ua: UserAgent) -> dict[str, Any]:
    (only,) = ua.registration_status()
    return only


@pytest.mark.parametrize("endpoint", [UDP_EP, TLS_EP], ids=["udp", "tls"])
def test_add_account_sends_register_with_our_via(endpoint: LocalEndpoint) -> None:
    ua, reg = registered_ua(endpoint)
    (register,) = sent_requests(ua)
    assert register.method == "REGISTER" and register.uri_text == "sip:pbx.example"
    (via_line,) = header_line(register, "Via")
    assert re.fullmatch(
        rf"SIP/2\.0/{endpoint.via_transport} {re.escape(endpoint.sent_by)}"
        r";branch=z9hG4bK[0-9a-f]{20};rport",
        via_line,
    ), via_line
    via = register.top_via
    assert (via.transport, via.sent_by) == (endpoint.via_transport, endpoint.sent_by)
    assert "rport" in via.params and via.params["rport"] is None
    (contact,) = register.contacts
    assert contact.uri == endpoint.contact
    assert status(ua)["state"] == "registering"
    assert ua.busy()


def test_register_challenge_then_ok() -> None:
    ua, reg = registered_ua()
    (first,) = sent_requests(ua)
    nonce = "c2f1e0"
    challenge = f'Digest realm="pbx.example", nonce="{nonce}", qop="auth", algorithm=MD5'
    answer(ua, first, 401, 0.1, [("WWW-Authenticate", challenge)])
    (second,) = sent_requests(ua)
    assert second.top_via.branch != first.top_via.branch  # a new transaction
    assert second.call_id == first.call_id
    assert (first.cseq.number, second.cseq.number) == (1, 2)
    (auth_value,) = header_line(second, "Authorization")
    (auth,) = parse_challenges(auth_value)
    params = auth.params
    assert (params["username"], params["realm"], params["nonce"]) == ("1001", "pbx.example", nonce)
    assert (params["uri"], params["qop"], params["nc"]) == ("sip:pbx.example", "auth", "00000001")

    def md5(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()

    ha1 = md5(f"1001:pbx.example:{PASSWORD}")
    ha2 = md5("REGISTER:sip:pbx.example")
    expected = md5(f"{ha1}:{nonce}:00000001:{params['cnonce']}:auth:{ha2}")
    assert params["response"] == expected
    assert status(ua)["state"] == "registering" and ua.busy()

    answer(ua, second, 200, 0.2, granted(second, 600))
    assert sent_requests(ua) == []
    st = status(ua)
    assert (st["state"], st["last_status"], st["expires_at"]) == ("registered", 200, 600.2)
    assert not ua.busy()
    ua.handle_timer(5.2)  # Timer K (T4 over UDP) ends the transaction
    assert ua.get_timer() == pytest.approx(0.2 + 600 - 64)  # then only the refresh is left
    ua.handle_timer(536.2)
    (refresh,) = sent_requests(ua)
    assert refresh.cseq.number == 3 and header_line(refresh, "Expires") == ["3600"]


def test_provisional_response_changes_nothing() -> None:
    ua, reg = registered_ua(digest=False)
    (first,) = sent_requests(ua)
    answer(ua, first, 100, 0.1)
    assert status(ua)["state"] == "registering" and ua.busy()
    answer(ua, first, 200, 0.2, granted(first))
    assert status(ua)["state"] == "registered" and not ua.busy()


def test_register_timeout_goes_retrying_and_tries_again() -> None:
    ua, reg = registered_ua(digest=False)
    (first,) = sent_requests(ua)
    ua.handle_timer(0.5)  # Timer E: retransmitted byte for byte
    (again,) = sent_requests(ua)
    assert again.serialize() == first.serialize()
    ua.handle_timer(31.9)
    sent_requests(ua)
    assert status(ua)["state"] == "registering"
    ua.handle_timer(32.0)  # Timer F = 64 * T1
    st = status(ua)
    assert (st["state"], st["last_status"]) == ("retrying", 408)
    assert not ua.busy()
    assert sent_requests(ua) == []
    # RFC 5626 4.5 backoff after one failure: 50-100 % of 30 s * 2.
    assert 32.0 + 30.0 <= st["next_attempt"] <= 32.0 + 60.0
    assert ua.get_timer() == st["next_attempt"]
    ua.handle_timer(st["next_attempt"])
    (retry,) = sent_requests(ua)
    assert retry.cseq.number == 2 and retry.top_via.branch != first.top_via.branch
    assert status(ua)["state"] == "registering"


def test_transport_failure_tells_registration_at_once() -> None:
    ua, reg = registered_ua(digest=False)
    sent_requests(ua)
    ua.transport_failed(("udp", "198.51.100.99", 5060), 0.1)  # someone else's peer
    assert status(ua)["state"] == "registering" and ua.busy()
    ua.transport_failed(REGISTRAR, 0.2)
    st = status(ua)
    assert (st["state"], st["last_status"]) == ("retrying", 503)
    assert st["last_reason"] == "Service Unavailable (transport failure)"
    assert not ua.busy()
    ua.handle_timer(5.0)  # the dead transaction retransmits nothing
    assert sent_requests(ua) == []
    assert 0.2 + 30.0 <= st["next_attempt"] <= 0.2 + 60.0


def test_stop_unregisters_and_stays_busy_until_answered() -> None:
    ua, reg = registered_ua(digest=False)
    (first,) = sent_requests(ua)
    answer(ua, first, 200, 0.1, granted(first))
    assert status(ua)["state"] == "registered" and not ua.busy()
    ua.stop(100.0)
    (unregister,) = sent_requests(ua)
    assert header_line(unregister, "Expires") == ["0"]
    (contact,) = unregister.contacts
    assert contact.params["expires"] == "0"
    assert unregister.call_id == first.call_id and unregister.cseq.number == 2
    assert ua.busy()
    answer(ua, unregister, 200, 100.1)
    assert not ua.busy()
    assert status(ua)["state"] == "unregistered"
    assert ua.get_timer() is not None  # Timer K (UDP) only
    ua.handle_timer(200.0)
    assert sent_requests(ua) == [] and ua.get_timer() is None


def test_transport_failure_of_unregister_ends_busy() -> None:
    ua, reg = registered_ua(digest=False)
    (first,) = sent_requests(ua)
    answer(ua, first, 200, 0.1, granted(first))
    ua.stop(10.0)
    (unregister,) = sent_requests(ua)
    assert ua.busy()
    ua.transport_failed(REGISTRAR, 10.1)
    assert not ua.busy()
    assert status(ua)["state"] == "unregistered"
    ua.handle_timer(100.0)
    assert sent_requests(ua) == []


def test_stop_during_register_unregisters_after_it_completes() -> None:
    ua, reg = registered_ua(digest=False)
    (first,) = sent_requests(ua)
    ua.stop(0.05)
    assert sent_requests(ua) == []  # the un-REGISTER waits for the in-flight REGISTER
    assert ua.busy()
    answer(ua, first, 200, 0.1, granted(first))
    (unregister,) = sent_requests(ua)
    assert header_line(unregister, "Expires") == ["0"]
    assert ua.busy()
    answer(ua, unregister, 200, 0.2)
    assert not ua.busy()


def test_account_without_endpoint_waits_for_set_endpoint() -> None:
    ua, reg = registered_ua(None, digest=False)
    assert ua.drain() == []
    assert not ua.busy()
    assert status(ua)["contact"] is None
    ua.set_endpoint("line1", TLS_EP, 5.0)
    (register,) = sent_requests(ua)
    assert register.top_via.transport == "TLS"
    assert register.top_via.sent_by == TLS_EP.sent_by
    assert status(ua)["contact"] == str(TLS_EP.contact)
    assert ua.busy()


def test_stop_before_the_endpoint_is_known_sends_nothing_later() -> None:
    ua, reg = registered_ua(None, digest=False)
    ua.stop(1.0)
    assert not ua.busy() and ua.drain() == []
    ua.set_endpoint("line1", UDP_EP, 2.0)  # e.g. the TLS connection came up during shutdown
    assert ua.drain() == []
    assert status(ua)["state"] == "unregistered"


def test_account_without_endpoint_does_not_block_others() -> None:
    ids = SeededIds("two")
    ua = UserAgent(ids)
    waiting = make_registration(ids, digest=False)
    ua.add_account("later", waiting, ("tls", "pbx.example", 5061), None, 0.0)
    other = Registration(
        account="line2",
        aor=uri("sip:1002@pbx.example"),
        registrar=uri("sip:pbx.example"),
        ids=ids,
        instance_id=INSTANCE,
        reg_id=2,
    )
    ua.add_account("line2", other, REGISTRAR, UDP_EP, 0.0)
    (register,) = sent_requests(ua)
    assert header_line(register, "To") == ["<sip:1002@pbx.example>"]


def test_rebind_reregisters_on_the_new_flow() -> None:
    ua, reg = registered_ua(digest=False)
    (first,) = sent_requests(ua)
    answer(ua, first, 200, 0.1, granted(first))
    new_dest = ("tls", "203.0.113.5", 5061)
    ua.rebind_account("line1", new_dest, TLS_EP, 50.0)
    (register,) = sent_requests(ua, new_dest)
    assert register.top_via.transport == "TLS"
    (contact,) = register.contacts
    assert contact.uri == TLS_EP.contact
    assert status(ua)["state"] == "registering"
    answer(ua, register, 200, 50.1, granted(register), source=new_dest)
    assert status(ua)["state"] == "registered"


def test_malformed_final_response_is_discarded() -> None:
    """8.1.3.3: a response the UA cannot use is dropped; the transaction carries on."""
    ua, reg = registered_ua(digest=False)
    (first,) = sent_requests(ua)
    broken = make_response(first, 200, to_tag="registrar")
    broken.headers.remove("Call-ID")
    ua.receive(parse_message(broken.serialize()), REGISTRAR, reliable=False, now=0.1)  # type: ignore[arg-type]
    assert status(ua)["state"] == "registering" and ua.busy()
    ua.handle_timer(0.5)
    (again,) = sent_requests(ua)  # still retransmitting: the broken 200 did not count
    assert again.serialize() == first.serialize()
    answer(ua, first, 200, 0.6, granted(first))
    assert status(ua)["state"] == "registered" and not ua.busy()


def test_response_from_another_transaction_is_ignored() -> None:
    ua, reg = registered_ua(digest=False)
    (first,) = sent_requests(ua)
    stray = make_response(first, 200, to_tag="registrar")
    stray.headers.set("Via", "SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bKnotours;rport")
    ua.receive(parse_message(stray.serialize()), REGISTRAR, reliable=False, now=0.1)  # type: ignore[arg-type]
    assert status(ua)["state"] == "registering" and ua.busy()
    assert ua.drain() == []
