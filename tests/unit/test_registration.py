"""The registration state machine, driven with literal times and checked on the wire bytes.

Responses are built the way they arrive: the UA adds Via to our REGISTER, the "registrar"
answers it, and the answer goes through serialize() and parse_message().
"""

from __future__ import annotations

import hashlib
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware.sip.auth import DigestClient, DigestCredentials, parse_challenges
from firmware.sip.ids import SeededIds
from firmware.sip.message import SipRequest, SipResponse, make_response
from firmware.sip.parser import parse_message
from firmware.sip.registration import REFRESH_MARGIN, Registration, refresh_delay
from firmware.sip.uri import SipURI, parse_uri

INSTANCE = "urn:uuid:00000000-0000-4000-8000-0000000000a1"
CONTACT = "sip:1001@192.0.2.10:5062;transport=tcp"
PASSWORD = "correct horse"
SHA_CH = 'Digest realm="pbx.example", nonce="{nonce}", qop="auth", algorithm=SHA-256{extra}'


def uri(text: str) -> SipURI:
    parsed = parse_uri(text)
    assert isinstance(parsed, SipURI)
    return parsed


def make_reg(
    *, allow_md5: bool = True, digest: bool = True, seed: str = "reg", **kw: object
) -> Registration:
    ids = SeededIds(seed)
    client = (
        DigestClient(DigestCredentials("1001", PASSWORD, "pbx.example"), ids, allow_md5=allow_md5)
        if digest
        else None
    )
    reg = Registration(
        account="line1",
        aor=uri("sip:1001@pbx.example"),
        registrar=uri("sip:pbx.example"),
        ids=ids,
        instance_id=INSTANCE,
        digest=client,
        **kw,  # type: ignore[arg-type]
    )
    reg.set_contact(uri(CONTACT))
    return reg


def take_one(reg: Registration) -> SipRequest:
    requests = reg.take_requests()
    assert len(requests) == 1, requests
    request = requests[0]
    # What the UA core does before handing it to a client transaction.
    request.headers.insert(0, "Via", "SIP/2.0/TCP 192.0.2.10:5062;branch=z9hG4bKt1;rport")
    return request


def reply(
    request: SipRequest,
    status: int,
    headers: list[tuple[str, str]] | None = None,
) -> SipResponse:
    response = make_response(request, status, to_tag="regtag")
    for name, value in headers or []:
        response.headers.add(name, value)
    parsed = parse_message(response.serialize())
    assert isinstance(parsed, SipResponse)
    return parsed


def ok(
    request: SipRequest,
    contact_expires: int | None = 3600,
    extra: list[tuple[str, str]] | None = None,
) -> SipResponse:
    param = f";expires={contact_expires}" if contact_expires is not None else ""
    headers = [
        (
            "Contact",
            '<sip:other@198.51.100.7>;expires=99;+sip.instance="<urn:uuid:other>";reg-id=1',
        ),
        ("Contact", f'<{CONTACT}>;+sip.instance="<{INSTANCE}>";reg-id=1{param}'),
    ]
    return reply(request, 200, headers + (extra or []))


def wire(request: SipRequest) -> str:
    return request.serialize().decode()


def header(request: SipRequest, name: str) -> list[str]:
    lines = wire(request).split("\r\n")
    return [
        line.split(":", 1)[1].strip()
        for line in lines
        if line.lower().startswith(name.lower() + ":")
    ]


def auth_params(request: SipRequest) -> dict[str, str]:
    (value,) = header(request, "Authorization")
    (parsed,) = parse_challenges(value)
    return parsed.params


def register_ok(reg: Registration, now: float = 0.0, granted: int = 3600) -> SipRequest:
    reg.start(now)
    first = take_one(reg)
    reg.handle_response(ok(first, granted), now + 0.1)
    assert reg.state == "registered"
    return first


# --------------------------------------------------------------------------------------------


def test_register_request_on_the_wire() -> None:
    reg = make_reg()
    reg.start(100.0)
    request = take_one(reg)
    text = wire(request)
    assert text.startswith("REGISTER sip:pbx.example SIP/2.0\r\n")
    assert header(request, "Via") == [
        "SIP/2.0/TCP 192.0.2.10:5062;branch=z9hG4bKt1;rport"
    ]  # only the UA's
    assert header(request, "To") == ["<sip:1001@pbx.example>"]
    (from_,) = header(request, "From")
    assert re.fullmatch(r"<sip:1001@pbx\.example>;tag=[0-9a-f]{16}", from_)
    assert header(request, "Call-ID") == [reg.call_id]
    assert header(request, "CSeq") == ["1 REGISTER"]
    assert header(request, "Max-Forwards") == ["70"]
    assert header(request, "Contact") == [
        f'<{CONTACT}>;+sip.instance="<{INSTANCE}>";reg-id=1;expires=3600'
    ]
    assert header(request, "Expires") == ["3600"]
    assert header(request, "Supported") == ["path, outbound, gruu"]
    assert header(request, "Allow") == ["INVITE, ACK, CANCEL, BYE, OPTIONS, NOTIFY"]
    assert header(request, "User-Agent") == ["deskphone/0.1"]
    assert header(request, "Authorization") == []
    assert reg.take_requests() == []
    assert reg.status()["state"] == "registering"


def test_full_flow_with_sha256_challenge_and_refresh_at_granted_expiry() -> None:
    reg = make_reg()
    reg.start(0.0)
    first = take_one(reg)
    (from_tag,) = re.findall(r"tag=(\w+)", header(first, "From")[0])

    challenge = reply(first, 401, [("WWW-Authenticate", SHA_CH.format(nonce="N1", extra=""))])
    reg.handle_response(challenge, 0.2)
    second = take_one(reg)
    assert header(second, "CSeq") == ["2 REGISTER"]
    assert header(second, "Call-ID") == [reg.call_id]
    assert re.findall(r"tag=(\w+)", header(second, "From")[0]) == [from_tag]
    p = auth_params(second)
    assert (p["username"], p["realm"], p["nonce"]) == ("1001", "pbx.example", "N1")
    assert (p["algorithm"], p["qop"], p["nc"]) == ("SHA-256", "auth", "00000001")
    assert 'uri="sip:pbx.example"' in header(second, "Authorization")[0]
    assert re.fullmatch(r"[0-9a-f]{64}", p["response"])
    h = lambda s: hashlib.sha256(s.encode()).hexdigest()  # noqa: E731
    expected = h(f"{h(f'1001:pbx.example:{PASSWORD}')}:N1:00000001:{p['cnonce']}:auth:"
                 f"{h('REGISTER:sip:pbx.example')}")  # fmt: skip
    assert p["response"] == expected

    # Registrar grants 600 s (not the 3600 we asked for) on our contact; Expires says otherwise.
    reg.handle_response(ok(second, 600, extra=[("Expires", "3600")]), 1.0)
    status = reg.status()
    assert status["state"] == "registered"
    assert status["last_status"] == 200
    assert status["expires_at"] == 601.0
    assert reg.get_timer() == 1.0 + 600 - REFRESH_MARGIN
    assert reg.get_timer() < status["expires_at"]

    reg.handle_timer(500.0)  # UA tick for some other deadline: nothing happens
    assert reg.take_requests() == []
    reg.handle_timer(537.0)
    refresh = take_one(reg)
    assert header(refresh, "CSeq") == ["3 REGISTER"]
    assert header(refresh, "Call-ID") == [reg.call_id]
    pre = auth_params(refresh)  # pre-authorised with the cached nonce
    assert (pre["nonce"], pre["nc"]) == ("N1", "00000002")
    assert reg.status()["state"] == "registered"  # still bound while refreshing
    reg.handle_response(ok(refresh, 600), 537.5)
    assert reg.status()["expires_at"] == 1137.5


@pytest.mark.parametrize(
    ("contact_expires", "expires_header", "granted"),
    [(120, "300", 120), (None, "300", 300), (None, None, 3600)],
)
def test_granted_expiry_source(
    contact_expires: int | None, expires_header: str | None, granted: int
) -> None:
    reg = make_reg(digest=False)
    reg.start(0.0)
    request = take_one(reg)
    extra = [("Expires", expires_header)] if expires_header else []
    reg.handle_response(ok(request, contact_expires, extra), 10.0)
    assert reg.granted == granted
    assert reg.status()["expires_at"] == 10.0 + granted


@pytest.mark.parametrize(("granted", "delay"), [(10, 5.0), (60, 30.0), (100, 50.0), (3600, 3536.0)])
def test_short_expiries_refresh_strictly_before_expiry(granted: int, delay: float) -> None:
    reg = make_reg(digest=False)
    reg.start(0.0)
    request = take_one(reg)
    reg.handle_response(ok(request, granted), 2.0)
    assert reg.get_timer() == 2.0 + delay
    reg.handle_timer(2.0 + delay - 0.001)
    assert reg.take_requests() == []
    reg.handle_timer(2.0 + delay)
    assert header(take_one(reg), "CSeq") == ["2 REGISTER"]


@given(st.floats(min_value=1.0, max_value=10_000_000.0))
def test_refresh_delay_always_before_expiry(granted: float) -> None:
    assert 0 < refresh_delay(granted) < granted


def test_wrong_password_fails_after_one_retry_with_same_nonce() -> None:
    reg = make_reg()
    reg.start(0.0)
    first = take_one(reg)
    reg.handle_response(
        reply(first, 401, [("WWW-Authenticate", SHA_CH.format(nonce="N", extra=""))]), 1.0
    )
    second = take_one(reg)
    assert auth_params(second)["nonce"] == "N"
    reg.handle_response(
        reply(second, 401, [("WWW-Authenticate", SHA_CH.format(nonce="N", extra=""))]), 2.0
    )
    assert reg.take_requests() == []  # no third attempt now
    status = reg.status()
    assert status["state"] == "failed"
    assert status["last_status"] == 401
    assert "rejected" in status["last_reason"]
    # Backoff after the first failure: uniform in [50 %, 100 %] of 30 * 2 = 60 s.
    assert 2.0 + 30.0 <= status["next_attempt"] <= 2.0 + 60.0
    assert reg.get_timer() == status["next_attempt"]
    reg.handle_timer(status["next_attempt"] - 1.0)
    assert reg.take_requests() == []
    reg.handle_timer(status["next_attempt"])
    again = take_one(reg)
    assert header(again, "Authorization") == []  # the refused nonce was dropped
    assert reg.status()["state"] == "registering"


def test_backoff_sequence_is_bounded_and_jittered() -> None:
    waits: dict[str, list[float]] = {}
    for seed in ("a", "b"):
        reg = make_reg(seed=seed, digest=False)
        now = 0.0
        reg.start(now)
        series = []
        for failures in range(1, 10):
            take_one(reg)
            reg.handle_timeout(now)
            status = reg.status()
            assert status["state"] == "retrying"
            assert status["last_status"] == 408
            wait = status["next_attempt"] - now
            ceiling = min(1800.0, 30.0 * 2**failures)
            assert ceiling / 2 <= wait <= ceiling
            series.append(wait)
            reg.handle_timer(now + wait / 2)  # too early: no tight loop
            assert reg.take_requests() == []
            now += wait
            reg.handle_timer(now)
        assert max(series) <= 1800.0
        waits[seed] = series
    assert waits["a"] != waits["b"]  # jitter comes from the IdSource
    # A success resets the failure count.
    reg = make_reg(digest=False)
    reg.start(0.0)
    reg.handle_timeout(0.0)
    reg.take_requests()
    reg.handle_timer(reg.get_timer() or 0.0)
    reg.handle_response(ok(take_one(reg), 3600), 100.0)
    reg.flow_failed(200.0)
    reg.handle_timeout(200.0)
    assert reg.status()["next_attempt"] - 200.0 <= 60.0


def test_backoff_base_is_configurable_and_90s_when_other_flows_work() -> None:
    reg = make_reg(digest=False, base_all_failed=1.0)
    assert 1.0 <= reg.backoff(1) <= 2.0
    reg.other_flows_ok = True
    assert 90.0 <= reg.backoff(1) <= 180.0
    assert 900.0 <= reg.backoff(10) <= 1800.0


def test_423_retries_with_min_expires() -> None:
    reg = make_reg(digest=False, expires=60)
    reg.start(0.0)
    first = take_one(reg)
    assert header(first, "Expires") == ["60"]
    reg.handle_response(reply(first, 423, [("Min-Expires", "300")]), 1.0)
    second = take_one(reg)
    assert header(second, "CSeq") == ["2 REGISTER"]
    assert header(second, "Expires") == ["300"]
    assert header(second, "Contact")[0].endswith(";expires=300")
    reg.handle_response(ok(second, 300), 2.0)
    assert reg.state == "registered"
    # The raised interval sticks for refreshes.
    reg.handle_timer(reg.get_timer() or 0.0)
    assert header(take_one(reg), "Expires") == ["300"]


def test_423_without_usable_min_expires_fails_instead_of_looping() -> None:
    reg = make_reg(digest=False, expires=600)
    reg.start(0.0)
    reg.handle_response(reply(take_one(reg), 423, [("Min-Expires", "300")]), 1.0)
    assert reg.take_requests() == []
    assert reg.status()["state"] == "failed"
    assert reg.status()["last_status"] == 423


def test_unregister() -> None:
    reg = make_reg()
    reg.start(0.0)
    first = take_one(reg)
    reg.handle_response(
        reply(first, 401, [("WWW-Authenticate", SHA_CH.format(nonce="N", extra=""))]), 0.5
    )
    reg.handle_response(ok(take_one(reg), 3600), 1.0)
    reg.stop(50.0)
    status = reg.status()
    assert status["state"] == "unregistered"
    assert status["expires_at"] is None
    assert reg.get_timer() is None
    bye = take_one(reg)
    assert header(bye, "CSeq") == ["3 REGISTER"]
    assert header(bye, "Call-ID") == [reg.call_id]
    assert header(bye, "Expires") == ["0"]
    assert header(bye, "Contact") == [
        f'<{CONTACT}>;+sip.instance="<{INSTANCE}>";reg-id=1;expires=0'
    ]
    assert auth_params(bye)["nc"] == "00000002"
    # Registrar wants a fresh nonce: the un-REGISTER is answered once more, still expires=0.
    stale = SHA_CH.format(nonce="N2", extra=", stale=true")
    reg.handle_response(reply(bye, 401, [("WWW-Authenticate", stale)]), 50.2)
    bye2 = take_one(reg)
    assert header(bye2, "Expires") == ["0"]
    assert auth_params(bye2)["nonce"] == "N2"
    reg.handle_response(reply(bye2, 200), 50.4)
    assert reg.take_requests() == []
    assert reg.status()["state"] == "unregistered"
    assert reg.get_timer() is None


def test_stop_while_registering_defers_the_unregister() -> None:
    reg = make_reg(digest=False)
    reg.start(0.0)
    first = take_one(reg)
    reg.stop(0.5)
    assert reg.take_requests() == []  # one REGISTER at a time (RFC 3261 10.2)
    reg.handle_response(ok(first, 3600), 0.6)
    bye = take_one(reg)
    assert header(bye, "Expires") == ["0"]
    assert reg.status()["state"] == "unregistered"


def test_stale_nonce_on_refresh_is_not_a_failure() -> None:
    reg = make_reg()
    reg.start(0.0)
    first = take_one(reg)
    reg.handle_response(
        reply(first, 401, [("WWW-Authenticate", SHA_CH.format(nonce="N1", extra=""))]), 0.1
    )
    reg.handle_response(ok(take_one(reg), 120), 0.2)
    reg.handle_timer(reg.get_timer() or 0.0)
    refresh = take_one(reg)
    assert auth_params(refresh)["nonce"] == "N1"
    stale = SHA_CH.format(nonce="N2", extra=", stale=true")
    reg.handle_response(reply(refresh, 401, [("WWW-Authenticate", stale)]), 60.3)
    retry = take_one(reg)
    assert (auth_params(retry)["nonce"], auth_params(retry)["nc"]) == ("N2", "00000001")
    reg.handle_response(ok(retry, 120), 60.4)
    assert reg.status()["state"] == "registered"
    assert reg.status()["expires_at"] == 180.4


def test_md5_refused_by_policy() -> None:
    reg = make_reg(allow_md5=False)
    reg.start(0.0)
    md5 = 'Digest realm="pbx.example", nonce="m", qop="auth", algorithm=MD5'
    reg.handle_response(reply(take_one(reg), 401, [("WWW-Authenticate", md5)]), 1.0)
    assert reg.take_requests() == []
    status = reg.status()
    assert status["state"] == "failed"
    assert status["last_status"] == 401
    assert "no acceptable challenge" in status["last_reason"]


def test_md5_policy_picks_sha256_when_both_offered() -> None:
    reg = make_reg(allow_md5=False)
    reg.start(0.0)
    md5 = 'Digest realm="pbx.example", nonce="m", qop="auth", algorithm=MD5'
    sha = SHA_CH.format(nonce="s", extra="")
    reg.handle_response(
        reply(take_one(reg), 401, [("WWW-Authenticate", md5), ("WWW-Authenticate", sha)]), 1.0
    )
    assert auth_params(take_one(reg))["algorithm"] == "SHA-256"


def test_realm_mismatch_fails() -> None:
    reg = make_reg()
    reg.start(0.0)
    foreign = 'Digest realm="other.example", nonce="x", qop="auth", algorithm=SHA-256'
    reg.handle_response(reply(take_one(reg), 401, [("WWW-Authenticate", foreign)]), 1.0)
    assert reg.take_requests() == []
    assert reg.status()["state"] == "failed"


def test_proxy_challenge_gets_proxy_authorization() -> None:
    reg = make_reg()
    reg.start(0.0)
    reg.handle_response(
        reply(take_one(reg), 407, [("Proxy-Authenticate", SHA_CH.format(nonce="P", extra=""))]), 1.0
    )
    retry = take_one(reg)
    assert header(retry, "Authorization") == []
    assert 'nonce="P"' in header(retry, "Proxy-Authorization")[0]


def test_503_with_retry_after_waits_at_least_that_long() -> None:
    reg = make_reg(digest=False)
    reg.start(0.0)
    reg.handle_response(reply(take_one(reg), 503, [("Retry-After", "300")]), 1.0)
    status = reg.status()
    assert status["state"] == "retrying"
    assert status["last_status"] == 503
    assert status["last_reason"] == "Service Unavailable"
    assert status["next_attempt"] >= 301.0


def test_flow_failure_reregisters_promptly_on_the_new_contact() -> None:
    reg = make_reg(digest=False)
    register_ok(reg)
    new_contact = "sip:1001@192.0.2.10:40001;transport=tcp"
    reg.set_contact(uri(new_contact))
    assert reg.take_requests() == []  # set_contact alone sends nothing
    reg.flow_failed(30.0)
    request = take_one(reg)
    assert header(request, "Contact")[0].startswith(f"<{new_contact}>;+sip.instance=")
    assert header(request, "Call-ID") == [reg.call_id]
    assert reg.status()["state"] == "registering"
    # The new flow dies too before an answer: that is a failure with backoff, not a loop.
    reg.flow_failed(31.0)
    assert reg.take_requests() == []
    assert reg.status()["state"] == "retrying"
    assert reg.status()["next_attempt"] >= 31.0 + 30.0
    reg.flow_failed(32.0)
    assert reg.take_requests() == []


def test_timeout_of_an_abandoned_register_is_ignored() -> None:
    reg = make_reg(digest=False)
    register_ok(reg)
    reg.flow_failed(10.0)
    old = take_one(reg)
    reg.flow_failed(11.0)  # that flow died too: backoff
    reg.handle_timer(reg.get_timer() or 0.0)
    new = take_one(reg)
    reg.handle_timeout(43.0, old)  # Timer F of the abandoned transaction
    assert reg.status()["state"] == "registering"
    reg.handle_response(ok(new, 3600), 44.0)
    assert reg.status()["state"] == "registered"
    reg.handle_timer(reg.get_timer() or 0.0)
    refresh = take_one(reg)
    reg.handle_timeout(4000.0, refresh)
    assert reg.status()["state"] == "retrying"


def test_stale_responses_are_ignored() -> None:
    reg = make_reg(digest=False)
    reg.start(0.0)
    first = take_one(reg)
    reg.handle_timeout(1.0)
    reg.handle_timer(reg.get_timer() or 0.0)
    second = take_one(reg)
    reg.handle_response(ok(first, 3600), 70.0)  # late answer to the timed-out CSeq 1
    assert reg.state == "registering"
    reg.handle_response(reply(second, 100), 70.1)  # provisional
    assert reg.state == "registering"
    reg.handle_response(ok(second, 3600), 70.2)
    assert reg.state == "registered"


def test_gruu_and_outbound_learned_from_2xx() -> None:
    reg = make_reg(digest=False)
    reg.start(0.0)
    request = take_one(reg)
    contact = (
        f'<{CONTACT}>;+sip.instance="<{INSTANCE}>";reg-id=1;expires=3600;'
        f'pub-gruu="sip:1001@pbx.example;gr={INSTANCE}";temp-gruu="sip:tgruu.7hs@pbx.example;gr"'
    )
    reg.handle_response(
        reply(request, 200, [("Contact", contact), ("Require", "outbound"), ("Flow-Timer", "25")]),
        1.0,
    )
    status = reg.status()
    assert status["pub_gruu"] == f"sip:1001@pbx.example;gr={INSTANCE}"
    assert status["temp_gruu"] == "sip:tgruu.7hs@pbx.example;gr"
    assert reg.outbound is True
    assert reg.flow_timer == 25


def test_status_shape() -> None:
    reg = make_reg(digest=False)
    status = reg.status()
    assert {
        "account",
        "aor",
        "state",
        "expires_at",
        "last_status",
        "last_reason",
        "next_attempt",
    } <= status.keys()
    assert (status["account"], status["aor"], status["state"]) == (
        "line1",
        "sip:1001@pbx.example",
        "unregistered",
    )


def test_allow_follows_the_ua_table() -> None:
    methods = ["INVITE", "ACK"]
    reg = make_reg(digest=False, allow=lambda: ", ".join(methods))
    register_ok(reg)
    methods.append("REFER")
    reg.handle_timer(reg.get_timer() or 0.0)
    assert header(take_one(reg), "Allow") == ["INVITE, ACK, REFER"]


def test_restart_during_unregister_registers_again_afterwards() -> None:
    reg = make_reg(digest=False)
    register_ok(reg)
    reg.stop(10.0)
    bye = take_one(reg)
    reg.start(10.5)
    assert reg.take_requests() == []  # waits for the un-REGISTER to finish
    reg.handle_response(reply(bye, 200), 11.0)
    again = take_one(reg)
    assert header(again, "Expires") == ["3600"]
    assert reg.status()["state"] == "registering"
    reg.handle_response(ok(again, 3600), 11.5)
    assert reg.state == "registered"
    assert reg.take_requests() == []


def test_waits_for_a_contact() -> None:
    ids = SeededIds("c")
    reg = Registration(account="l", aor=uri("sip:1@pbx.example"), registrar=uri("sip:pbx.example"),
                       ids=ids, instance_id=INSTANCE)  # fmt: skip
    reg.start(0.0)
    assert reg.take_requests() == []
    reg.set_contact(uri(CONTACT))
    assert header(take_one(reg), "CSeq") == ["1 REGISTER"]


def test_rejects_bad_configuration() -> None:
    with pytest.raises(ValueError, match="instance_id"):
        Registration(account="l", aor=uri("sip:1@p"), registrar=uri("sip:p"), ids=SeededIds(),
                     instance_id="00000000-0000")  # fmt: skip
    with pytest.raises(ValueError, match="expires"):
        make_reg(expires=0)
