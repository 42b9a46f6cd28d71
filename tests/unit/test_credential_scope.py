"""The account password answers only the account realm (threat-model "Transitive credential leak").

A callee, forking target or man in the middle that challenges our INVITE in its own realm must
get no digest of the PBX password (material for an offline dictionary attack). The realm is the
configured ``[[accounts]] realm`` or the registrar's first challenge (trust on first use); peer
phones' realms get their own secret (``peer_credentials``). Checked on the wire bytes: one phone
(UserAgent + CallManager) whose peer and registrar are played by hand.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable

import pytest

from firmware.call.manager import AccountInfo, CallManager
from firmware.provisioning.config import ConfigError, parse_config
from firmware.sip.auth import DigestClient, DigestCredentials, parse_challenges
from firmware.sip.ids import SeededIds
from firmware.sip.message import SipRequest, SipResponse, make_response
from firmware.sip.offer_answer import CodecSpec
from firmware.sip.parser import parse_message
from firmware.sip.registration import Registration
from firmware.sip.transaction import Timers
from firmware.sip.ua import LocalEndpoint, UserAgent
from firmware.sip.uri import URI, SipURI, parse_uri

PASSWORD = "pbx password 1161"
PEER_SECRET = "pickup-group secret"
PCMU = CodecSpec("PCMU", 8000, 0)
INSTANCE = "urn:uuid:00000000-0000-4000-8000-000000001161"


def _uri(text: str) -> SipURI:
    parsed = parse_uri(text)
    assert isinstance(parsed, SipURI)
    return parsed


def challenge_header(realm: str, nonce: str = "n1") -> str:
    return f'Digest realm="{realm}", nonce="{nonce}-{realm}", qop="auth", algorithm=SHA-256'


def challenge(request: SipRequest, status: int, realm: str, nonce: str = "n1") -> SipResponse:
    """``status`` (401/407) to ``request`` in ``realm``, through serialise + parse as on a wire."""
    response = make_response(request, status, to_tag="peer")
    name = "Proxy-Authenticate" if status == 407 else "WWW-Authenticate"
    response.headers.add(name, challenge_header(realm, nonce))
    parsed = parse_message(response.serialize())
    assert isinstance(parsed, SipResponse)
    return parsed


def realms_sent(request: SipRequest) -> list[str]:
    """The realms of every Authorization/Proxy-Authorization on the wire bytes of ``request``."""
    found = []
    for line in request.serialize().decode().split("\r\n"):
        name, _, value = line.partition(":")
        if name.lower() in ("authorization", "proxy-authorization"):
            (parsed,) = parse_challenges(value.strip())
            found.append(parsed.params["realm"])
    return found


def username_sent(request: SipRequest) -> str:
    for line in request.serialize().decode().split("\r\n"):
        name, _, value = line.partition(":")
        if name.lower() in ("authorization", "proxy-authorization"):
            return parse_challenges(value.strip())[0].params["username"]
    raise AssertionError("no credentials sent")


def account_client(ids: SeededIds, *, realm: str | None = None) -> DigestClient:
    """What firmware/runtime/app.py builds for an account with one peer secret."""
    creds = [
        DigestCredentials("1161", PASSWORD),
        DigestCredentials("1161", PEER_SECRET, "deskphone"),
    ]
    return DigestClient(creds, ids, scoped=True, account_realm=realm)


class Phone:
    """One sans-IO phone; ``sent`` holds the parsed bytes it put on the wire."""

    def __init__(self, *, realm: str | None = None) -> None:
        self.ids = SeededIds("scope")
        self.ua = UserAgent(ids=self.ids, timers=Timers())
        self.ua.network = self
        self.digest = account_client(self.ids, realm=realm)
        self.reg = Registration(
            account="line1",
            aor=_uri("sip:1161@127.0.0.1"),
            registrar=_uri("sip:127.0.0.1"),
            ids=self.ids,
            instance_id=INSTANCE,
            digest=self.digest,
        )
        self.reg.set_contact(_uri("sip:1161@192.0.2.10:5060"))
        self.calls = CallManager(self.ua, ports=self, codecs=[PCMU], accounts=self.account)
        self.now = 0.0

    # -- the runtime's side, minimal --------------------------------------------------------
    def route(self, uri: URI) -> Hashable:
        return "net"

    def endpoint_for(self, dest: Hashable) -> LocalEndpoint:
        return LocalEndpoint("UDP", "192.0.2.10:5060", _uri("sip:1161@192.0.2.10:5060"), False)

    def allocate(self, call_id: str, towards: Hashable | None) -> tuple[str, int]:
        return ("192.0.2.10", 40000)

    def release(self, call_id: str) -> None:
        pass

    def account(self, _id: str) -> AccountInfo:
        return AccountInfo(
            aor="sip:1161@127.0.0.1",
            display_name=None,
            domain="127.0.0.1",
            contact="<sip:1161@192.0.2.10:5060>",
            dest="net",
            digest=self.digest,
            secure=False,
        )

    # -- driving ----------------------------------------------------------------------------
    def drain(self) -> list[SipRequest]:
        self.calls.process(self.now)
        out = []
        for item in self.ua.drain():
            parsed = parse_message(item.data)
            if isinstance(parsed, SipRequest):
                out.append(parsed)
        return out

    def deliver(self, response: SipResponse) -> list[SipRequest]:
        self.ua.receive(response, "net", reliable=False, now=self.now)
        return self.drain()

    def register(self, realm: str = "127.0.0.1") -> SipRequest:
        """REGISTER, answer its challenge in ``realm`` and 200 the authorised retry."""
        self.reg.start(self.now)
        (register,) = self.reg.take_requests()
        register.headers.insert(0, "Via", "SIP/2.0/UDP 192.0.2.10;branch=z9hG4bKr1")
        self.reg.handle_response(challenge(register, 401, realm, "reg"), self.now)
        (retry,) = self.reg.take_requests()
        retry.headers.insert(0, "Via", "SIP/2.0/UDP 192.0.2.10;branch=z9hG4bKr2")
        ok = make_response(retry, 200, to_tag="reg")
        ok.headers.add("Contact", "<sip:1161@192.0.2.10:5060>;expires=300")
        self.reg.handle_response(ok, self.now)
        return retry

    def dial(self) -> tuple[str, SipRequest]:
        call = self.calls.dial("sip:1162@127.0.0.1", "line1", self.now)
        (invite,) = self.drain()
        assert invite.method == "INVITE"
        return call.id, invite


def test_registrar_realm_is_learned_from_the_first_register_challenge() -> None:
    phone = Phone()
    assert phone.digest.account_realm is None
    retry = phone.register("127.0.0.1")
    assert realms_sent(retry) == ["127.0.0.1"]
    assert phone.digest.account_realm == "127.0.0.1"
    assert phone.reg.status()["realm"] == "127.0.0.1"  # shown in /api/status registrations
    # Trust on first use: a later challenge in another realm does not move it.
    assert phone.reg.state == "registered"
    assert phone.digest.learn_realm(challenge(retry, 401, "other")) == "127.0.0.1"


def test_an_invite_challenged_in_another_realm_carries_no_credentials() -> None:
    phone = Phone()
    phone.register("127.0.0.1")
    call_id, invite = phone.dial()
    sent = phone.deliver(challenge(invite, 401, "evil"))
    # Only the ACK of the 401 goes out: no second INVITE, no digest of the password anywhere.
    assert [r.method for r in sent] == ["ACK"], sent
    assert realms_sent(sent[0]) == []
    ended = phone.calls.get(call_id)
    assert ended is not None and ended.state == "ended"
    assert ended.end_status == 401
    assert "401 from realm 'evil': no credentials for that realm" in (ended.end_reason or "")
    assert "the account's realm is '127.0.0.1'" in (ended.end_reason or "")


def test_the_registrar_realm_still_authorises_calls() -> None:
    """Kamailio's 407 in the registrar realm (127.0.0.1) is answered as before."""
    phone = Phone()
    phone.register("127.0.0.1")
    _, invite = phone.dial()
    sent = phone.deliver(challenge(invite, 407, "127.0.0.1"))
    retry = next(r for r in sent if r.method == "INVITE")
    assert realms_sent(retry) == ["127.0.0.1"]
    assert username_sent(retry) == "1161"


def test_nothing_is_answered_before_the_realm_is_known() -> None:
    phone = Phone()  # never registered, no realm configured
    call_id, invite = phone.dial()
    sent = phone.deliver(challenge(invite, 407, "127.0.0.1"))
    assert [r.method for r in sent] == ["ACK"]
    ended = phone.calls.get(call_id)
    assert ended is not None and "not known yet" in (ended.end_reason or "")


def test_a_configured_realm_answers_without_registering_and_nothing_else() -> None:
    phone = Phone(realm="pbx.example")
    _, invite = phone.dial()
    sent = phone.deliver(challenge(invite, 407, "pbx.example"))
    assert realms_sent(next(r for r in sent if r.method == "INVITE")) == ["pbx.example"]
    # Nor is the registrar's differing realm learned over it.
    register_phone = Phone(realm="pbx.example")
    register_phone.reg.start(0.0)
    (register,) = register_phone.reg.take_requests()
    register.headers.insert(0, "Via", "SIP/2.0/UDP 192.0.2.10;branch=z9hG4bKr1")
    register_phone.reg.handle_response(challenge(register, 401, "127.0.0.1"), 0.0)
    assert register_phone.reg.take_requests() == []
    assert register_phone.digest.account_realm == "pbx.example"
    assert "no credentials for that realm" in (register_phone.reg.last_reason or "")


def test_peer_credentials_answer_only_their_realm_with_their_own_secret() -> None:
    phone = Phone()
    phone.register("127.0.0.1")
    _, invite = phone.dial()
    # The ringing colleague's phone challenges a pickup in realm "deskphone".
    sent = phone.deliver(challenge(invite, 401, "deskphone"))
    retry = next(r for r in sent if r.method == "INVITE")
    assert realms_sent(retry) == ["deskphone"]
    # The digest is the peer secret's, not the PBX password's.
    (value,) = retry.headers.get_raw("Authorization")
    p = parse_challenges(value)[0].params
    from firmware.sip.auth import HASHES, compute_response

    expected = compute_response(
        HASHES["SHA-256"], username="1161", password=PEER_SECRET, realm="deskphone",
        method="INVITE", uri=retry.uri_text, nonce=p["nonce"], nc=p["nc"], cnonce=p["cnonce"],
        qop="auth",
    )  # fmt: skip
    assert p["response"] == expected


def test_register_after_a_pickup_carries_only_the_registrar_realm() -> None:
    phone = Phone()
    phone.register("127.0.0.1")
    _, invite = phone.dial()
    phone.deliver(challenge(invite, 401, "deskphone"))  # a pickup authorised at a peer phone
    phone.now = 400.0  # past the refresh point
    phone.reg.handle_timer(phone.now)
    (refresh,) = phone.reg.take_requests()
    assert realms_sent(refresh) == ["127.0.0.1"]
    # And a retry of that REGISTER (stale nonce) still carries only the registrar's realm.
    refresh.headers.insert(0, "Via", "SIP/2.0/UDP 192.0.2.10;branch=z9hG4bKr3")
    phone.reg.handle_response(challenge(refresh, 401, "127.0.0.1", "fresh"), phone.now)
    (retry,) = phone.reg.take_requests()
    assert realms_sent(retry) == ["127.0.0.1"]


def test_a_peer_realm_is_never_learned_as_the_account_realm() -> None:
    phone = Phone()
    phone.reg.start(0.0)
    (register,) = phone.reg.take_requests()
    register.headers.insert(0, "Via", "SIP/2.0/UDP 192.0.2.10;branch=z9hG4bKr1")
    assert phone.digest.learn_realm(challenge(register, 401, "deskphone")) is None


def test_a_subscribe_challenged_in_another_realm_fails_with_the_reason() -> None:
    from firmware.sip.subscription import SubscriptionManager, SubscriptionSpec

    phone = Phone()
    phone.register("127.0.0.1")
    subs = SubscriptionManager(phone.ua)
    spec = SubscriptionSpec(
        event="dialog",
        accept="application/dialog-info+xml",
        target="sip:1162@127.0.0.1",
        from_uri="sip:1161@127.0.0.1",
        contact="<sip:1161@192.0.2.10:5060>",
        dest="net",
        digest=phone.digest,
    )
    sub = subs.subscribe(spec, lambda *_: None, phone.now)
    (subscribe,) = phone.drain()
    sent = phone.deliver(challenge(subscribe, 407, "evil"))
    assert sent == []  # no SUBSCRIBE retry carrying a digest of the password
    assert sub.state == "waiting"
    assert "407 from realm 'evil': no credentials for that realm" in (sub.last_reason or "")
    # The registrar realm is still answered on the next attempt.
    phone.now = 3600.0
    subs.handle_timer(phone.now)
    (again,) = [r for r in phone.drain() if r.method == "SUBSCRIBE"]
    retry = [
        r for r in phone.deliver(challenge(again, 407, "127.0.0.1")) if r.method == "SUBSCRIBE"
    ]
    assert len(retry) == 1 and realms_sent(retry[0]) == ["127.0.0.1"]


def test_secrets_never_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    phone = Phone()
    phone.register("127.0.0.1")
    _, invite = phone.dial()
    phone.deliver(challenge(invite, 401, "evil"))
    _, invite = phone.dial()
    phone.deliver(challenge(invite, 401, "deskphone"))
    assert PASSWORD not in caplog.text and PEER_SECRET not in caplog.text
    assert "no credentials for that realm" in caplog.text


def _doc(**account: object) -> dict[str, object]:
    base = {"user": "1161", "password": "pw", "domain": "127.0.0.1"}
    return {"api": {"enabled": False}, "accounts": [{**base, **account}]}


def test_config_realm_and_peer_credentials() -> None:
    peers = [{"realm": "deskphone", "user": "1161", "password": PEER_SECRET}]
    acc = parse_config(_doc(realm="pbx.example", peer_credentials=peers)).accounts[0]
    assert acc.realm == "pbx.example"
    assert [(p.realm, p.user, p.password) for p in acc.peer_credentials] == [
        ("deskphone", "1161", PEER_SECRET)
    ]
    assert PEER_SECRET not in repr(acc) and "pw" not in repr(acc).replace("password", "")
    default = parse_config(_doc()).accounts[0]
    assert default.realm is None and default.peer_credentials == ()


@pytest.mark.parametrize(
    ("account", "key"),
    [
        ({"realm": ""}, "accounts[0].realm"),
        ({"realm": 'a"b'}, "accounts[0].realm"),
        ({"peer_credentials": "x"}, "accounts[0].peer_credentials"),
        (
            {"peer_credentials": [{"user": "1", "password": "p"}]},
            "accounts[0].peer_credentials[0].realm",
        ),
        (
            {"realm": "r", "peer_credentials": [{"realm": "r", "user": "1", "password": "p"}]},
            "accounts[0].peer_credentials[0].realm",
        ),
        (
            {"peer_credentials": [{"realm": "d", "user": "a b", "password": "p"}]},
            "accounts[0].peer_credentials[0].user",
        ),
        (
            {"peer_credentials": [{"realm": "d", "user": "1", "password": ""}]},
            "accounts[0].peer_credentials[0].password",
        ),
        (
            {"peer_credentials": [{"realm": "d", "user": "1", "password": "p", "pasword": "q"}]},
            "accounts[0].peer_credentials[0].pasword",
        ),
        (
            {
                "peer_credentials": [
                    {"realm": "d", "user": "1", "password": "p"},
                    {"realm": "d", "user": "2", "password": "q"},
                ]
            },
            "accounts[0].peer_credentials[1].realm",
        ),
    ],
)
def test_config_errors_name_the_key(account: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(_doc(**account))
    assert err.value.key == key
    assert "secret" not in str(err.value)


def test_learning_skips_challenges_we_would_not_answer_and_needs_scope() -> None:
    phone = Phone()
    phone.reg.start(0.0)
    (register,) = phone.reg.take_requests()
    register.headers.insert(0, "Via", "SIP/2.0/UDP 192.0.2.10;branch=z9hG4bKr1")
    response = make_response(register, 401, to_tag="reg")
    response.headers.add("WWW-Authenticate", 'Basic realm="basic-realm"')
    response.headers.add("WWW-Authenticate", 'Digest realm="odd", nonce="x", algorithm=SHA3-512')
    response.headers.add("WWW-Authenticate", challenge_header("127.0.0.1"))
    parsed = parse_message(response.serialize())
    assert isinstance(parsed, SipResponse)
    assert phone.digest.learn_realm(parsed) == "127.0.0.1"
    # Unscoped clients (the library default) never bind: their realm-less password answers any.
    unscoped = DigestClient(DigestCredentials("1161", PASSWORD), SeededIds("u"))
    assert unscoped.learn_realm(parsed) is None and unscoped.account_realm is None
