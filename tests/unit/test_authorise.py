"""The phone's own Digest challenge for requests from outside a call (T1, T2, T7, T23).

`DigestServer` on its own (limited-use nonces, nc tracking), then an out-of-dialog REFER from an
allow-listed controller through the three-phone wire harness of test_refer: 401, the
authorised REFER, and its replay (same nonce and nc, fresh Call-ID) refused with nothing dialled.
"""

from __future__ import annotations

import pytest

from firmware.call.authorise import (
    NONCE_TTL,
    NONCE_USES,
    Authoriser,
    DigestServer,
    NotAuthorised,
)
from firmware.sip.auth import DigestClient, DigestCredentials
from firmware.sip.ids import SeededIds
from firmware.sip.message import SipRequest, SipResponse, make_request, make_response
from firmware.sip.uri import parse_uri
from tests.unit.test_refer import (
    USERS,
    Net,
    Recorder,
    connect,
    make_phone,
    requests,
)


def _request(cseq: int = 1, call_id: str = "cid-1") -> SipRequest:
    return make_request(
        "REFER",
        "sip:b@192.0.2.2",
        headers=[
            ("Via", "SIP/2.0/UDP 192.0.2.66;branch=z9hG4bKx"),
            ("Max-Forwards", "70"),
            ("From", "<sip:x@192.0.2.66>;tag=t1"),
            ("To", "<sip:b@192.0.2.2>"),
            ("Call-ID", call_id),
            ("CSeq", f"{cseq} REFER"),
            ("Refer-To", "<sip:c@192.0.2.3>"),
        ],
    )


def _challenged(server: DigestServer, request: SipRequest, now: float) -> SipResponse:
    with pytest.raises(NotAuthorised) as e:
        server.verify(request, now)
    response = make_response(request, e.value.status, e.value.reason)
    for name, value in e.value.headers:
        response.headers.add(name, value)
    return response


def test_challenge_offers_sha256_then_md5_with_qop_and_a_fresh_nonce() -> None:
    server = DigestServer(SeededIds("s"), USERS)
    response = _challenged(server, _request(), 0.0)
    assert response.status == 401
    values = response.headers.get_raw("WWW-Authenticate")
    assert [v.rsplit("algorithm=", 1)[1] for v in values] == ["SHA-256", "MD5"]
    assert all('qop="auth"' in v and 'realm="deskphone"' in v for v in values)
    no_md5 = DigestServer(SeededIds("s"), USERS, allow_md5=False)
    assert len(_challenged(no_md5, _request(), 0.0).headers.get_raw("WWW-Authenticate")) == 1
    again = _challenged(server, _request(), 0.0).headers.get_raw("WWW-Authenticate")[0]
    assert again != values[0]  # every challenge has its own nonce
    # Configurable order (a peer that only answers the first challenge, with MD5: sipp 3.6).
    md5_only = DigestServer(SeededIds("s"), USERS, algorithms=("MD5",))
    [value] = _challenged(md5_only, _request(), 0.0).headers.get_raw("WWW-Authenticate")
    assert value.endswith("algorithm=MD5")
    # MD5 forbidden by [sip] allow_md5 = false wins over a configured MD5-only list.
    strict = DigestServer(SeededIds("s"), USERS, allow_md5=False, algorithms=("MD5",))
    [value] = _challenged(strict, _request(), 0.0).headers.get_raw("WWW-Authenticate")
    assert value.endswith("algorithm=SHA-256")


def test_an_answer_with_an_algorithm_not_offered_is_refused() -> None:
    server = DigestServer(SeededIds("s"), USERS, algorithms=("SHA-256",))
    client = DigestClient(DigestCredentials("x", USERS["x"]), SeededIds("c"))
    md5_server = DigestServer(SeededIds("s"), USERS, algorithms=("MD5",))
    challenge = _challenged(md5_server, _request(1), 0.0)
    # The client answers MD5 (all it was offered) to a server that only takes SHA-256.
    server._nonces.update(md5_server._nonces)  # same nonce known to both (test shortcut)
    request = _request(2)
    assert client.authorize(request, challenge)
    refused = _challenged(server, request, 0.0)
    assert refused.status == 401 and "algorithm MD5" in refused.reason


def test_answer_verifies_once_and_a_reused_nonce_count_is_refused_stale() -> None:
    server = DigestServer(SeededIds("s"), USERS)
    client = DigestClient(DigestCredentials("x", USERS["x"]), SeededIds("c"))
    challenge = _challenged(server, _request(1), 0.0)
    authorised = _request(2)
    assert client.authorize(authorised, challenge)
    assert 'algorithm=SHA-256' in (authorised.headers.get("Authorization") or "")
    assert server.verify(authorised, 1.0) == "x"
    # T2 / T23: the captured request again (same nonce, same nc) -> 401 stale=true.
    replay = _challenged(server, authorised, 2.0)
    assert replay.status == 401 and "nonce-count reused" in replay.reason
    assert "stale=true" in replay.headers.get_raw("WWW-Authenticate")[0]
    # The client's next request reuses the nonce with nc=2: fine.
    later = _request(3)
    assert client.pre_authorize(later)
    assert "nc=00000002" in (later.headers.get("Authorization") or "")
    assert server.verify(later, 3.0) == "x"


def test_nonce_is_limited_in_time_and_uses() -> None:
    server = DigestServer(SeededIds("s"), USERS)
    client = DigestClient(DigestCredentials("x", USERS["x"]), SeededIds("c"))
    challenge = _challenged(server, _request(1), 0.0)
    first = _request(2)
    assert client.authorize(first, challenge)
    late = _challenged(server, first, NONCE_TTL + 1)
    assert late.status == 401 and "expired" in late.reason
    server = DigestServer(SeededIds("s2"), USERS)
    client = DigestClient(DigestCredentials("x", USERS["x"]), SeededIds("c2"))
    challenge = _challenged(server, _request(1), 0.0)
    request = _request(2)
    assert client.authorize(request, challenge)
    assert server.verify(request, 0.0) == "x"
    for n in range(3, 2 + NONCE_USES):
        request = _request(n)
        client.pre_authorize(request)
        assert server.verify(request, 0.0) == "x"
    request = _request(99)
    client.pre_authorize(request)
    assert "expired" in _challenged(server, request, 0.0).reason


@pytest.mark.parametrize(
    ("user", "password", "reason"),
    [("x", "wrong", "Authentication failed"), ("nobody", "x-secret", "Authentication failed")],
)
def test_wrong_credentials_are_403(user: str, password: str, reason: str) -> None:
    server = DigestServer(SeededIds("s"), USERS)
    client = DigestClient(DigestCredentials(user, password), SeededIds("c"))
    challenge = _challenged(server, _request(1), 0.0)
    request = _request(2)
    assert client.authorize(request, challenge)
    response = _challenged(server, request, 0.0)
    assert (response.status, response.reason) == (403, reason)


def test_digest_uri_must_be_the_request_uri() -> None:
    server = DigestServer(SeededIds("s"), USERS)
    client = DigestClient(DigestCredentials("x", USERS["x"]), SeededIds("c"))
    challenge = _challenged(server, _request(1), 0.0)
    request = _request(2)
    assert client.authorize(request, challenge)
    other = make_request("REFER", "sip:someone-else@192.0.2.2", headers=list(request.headers))
    assert _challenged(server, other, 0.0).status == 403


# --------------------------------------------------------------------------------------------
# On the wire: a listed controller's REFER outside any call (RFC 5359 2.18 remote call control)
# --------------------------------------------------------------------------------------------
def _controller_refer(net: Net, cseq: int, call_id: str, auth: str | None) -> SipResponse:
    x = net.phones["x"]
    headers = [
        ("Max-Forwards", "70"),
        ("From", "<sip:x@192.0.2.66>;tag=ctl"),
        ("To", "<sip:b@192.0.2.2>"),
        ("Call-ID", call_id),
        ("CSeq", f"{cseq} REFER"),
        ("Contact", "<sip:x@192.0.2.66>"),
        ("Refer-To", "<sip:c@192.0.2.3>"),
        ("Refer-Sub", "false"),
    ]
    if auth is not None:
        headers.append(("Authorization", auth))
    rec = Recorder()
    x.ua.send_request(make_request("REFER", "sip:b@192.0.2.2", headers=headers), rec, net.now)
    net.pump()
    return rec.responses[0]


def test_t1_t2_listed_controller_is_challenged_then_dials_and_a_replay_does_nothing() -> None:
    net = Net(make_phone("b"), make_phone("c"), make_phone("x"))
    b, c = net.phones["b"], net.phones["c"]
    first = _controller_refer(net, 1, "ctl-1", None)
    assert first.status == 401 and requests(c, "INVITE") == []
    client = DigestClient(DigestCredentials("x", USERS["x"]), SeededIds("ctl"))
    probe = _request(2, "ctl-1")  # same Request-URI, CSeq and Call-ID as the real one
    assert client.authorize(probe, first)
    auth = probe.headers.get("Authorization")
    ok = _controller_refer(net, 2, "ctl-1", auth)
    assert ok.status == 200 and ok.headers.get("Refer-Sub") == "false"
    [invite] = requests(c, "INVITE")
    assert invite.from_.uri == parse_uri("sip:b@192.0.2.2")
    [call] = b.calls.active_calls()
    assert call.extras["referred_by_controller"] == "sip:x@192.0.2.66"
    # The captured authorised REFER replayed with a fresh Call-ID: same nonce and nc -> 401.
    replay = _controller_refer(net, 2, "ctl-2", auth)
    assert replay.status == 401
    assert "stale=true" in replay.headers.get_raw("WWW-Authenticate")[0]
    assert len(requests(c, "INVITE")) == 1


def test_t1_in_call_refer_is_unaffected_by_the_allow_list() -> None:
    net = Net(make_phone("a"), make_phone("b", allow_from=()), make_phone("c"))
    a = net.phones["a"]
    a_id, _ = connect(net)
    assert a.transfers.transfer(a_id, "sip:c@192.0.2.3", net.now)
    net.pump()
    assert len(requests(net.phones["c"], "INVITE")) == 1


def test_asserted_identity_counts_only_when_trusted_and_from_the_registrar_flow() -> None:
    """RFC 3325 / T25: PAI replaces the challenge only on the registrar flow, when configured."""
    pai = _request(1)
    pai.headers.add("P-Asserted-Identity", "<sip:x@192.0.2.66>")
    pai.headers.set("From", "<sip:someone@192.0.2.99>;tag=t1")

    def registrar(peer: object) -> bool:
        return peer == "registrar"

    trusting = Authoriser(
        SeededIds("a"), ("sip:x@192.0.2.66",), USERS, trust_asserted=True, trusted=registrar
    )
    assert trusting.authenticate(pai, 0.0, "REFER", "registrar") == "sip:x@192.0.2.66"
    assert trusting.listed_request(pai, "registrar")
    # The same request from anywhere else: the From identity is not listed -> 403.
    with pytest.raises(NotAuthorised) as e:
        trusting.authenticate(pai, 0.0, "REFER", "somewhere")
    assert e.value.status == 403
    # Not switched on: the header is ignored even on the registrar flow.
    strict = Authoriser(SeededIds("a"), ("sip:x@192.0.2.66",), USERS, trusted=registrar)
    with pytest.raises(NotAuthorised) as e:
        strict.authenticate(pai, 0.0, "REFER", "registrar")
    assert e.value.status == 403
    # An asserted identity that is not listed is refused too.
    other = _request(2)
    other.headers.add("P-Asserted-Identity", "<sip:mallory@192.0.2.66>")
    with pytest.raises(NotAuthorised) as e:
        trusting.authenticate(other, 0.0, "REFER", "registrar")
    assert e.value.status == 403
