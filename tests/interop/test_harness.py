"""Proves the interop fixtures work: Kamailio on every transport, digest REGISTER via sipp and by
hand (MD5 and SHA-256), the location table read-out, restart on the same ports, TLS with the
test CA, and the sipp scenarios the deskphone tests will reuse.

The SIP client here is deliberately tiny and independent of firmware/ so a harness failure can
never be caused by the code under test.
"""

from __future__ import annotations

import hashlib
import re
import socket
import ssl
from collections.abc import Callable
from pathlib import Path

import pytest

from tests import conftest as root_conftest
from tests.conftest import skip_or_fail
from tests.interop.kamailio import Kamailio, KamailioError
from tests.interop.sipp import DATA_DIR, SippResult, parse_message_log

# Users 1011..1020 are this module's; 1001..1010 belong to the deskphone interop tests that
# share the session Kamailio. Tests that stop or restart Kamailio use a private instance.


@pytest.fixture(scope="module")
def private_kamailio(make_kamailio: Callable[..., Kamailio]) -> Kamailio:
    return make_kamailio()


# -- a minimal independent SIP client -----------------------------------------------------------


def _request(
    method: str,
    ruri: str,
    *,
    local: tuple[str, int],
    transport: str,
    user: str,
    call_id: str,
    cseq: int,
    extra: list[str] | None = None,
) -> bytes:
    host, port = local
    lines = [
        f"{method} {ruri} SIP/2.0",
        f"Via: SIP/2.0/{transport.upper()} {host}:{port};branch=z9hG4bK{call_id}{cseq};rport",
        "Max-Forwards: 70",
        f"From: <sip:{user}@127.0.0.1>;tag=t{call_id}",
        f"To: <sip:{user}@127.0.0.1>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {method}",
        f"Contact: <sip:{user}@{host}:{port};transport={transport}>",
        *(extra or []),
        "Content-Length: 0",
        "",
        "",
    ]
    return "\r\n".join(lines).encode()


def _status(response: bytes) -> int:
    match = re.match(rb"SIP/2\.0 (\d{3}) ", response)
    assert match, f"not a SIP response: {response[:200]!r}"
    return int(match.group(1))


def _header(response: bytes, name: str) -> str | None:
    for line in response.decode().split("\r\n")[1:]:
        if not line:
            break
        key, _, value = line.partition(":")
        if key.strip().lower() == name.lower():
            return value.strip()
    return None


def _challenge_params(header: str) -> dict[str, str]:
    assert header.startswith("Digest "), header
    return {k: v.strip('"') for k, v in re.findall(r'(\w+)=("[^"]*"|[^,\s]+)', header[7:])}


def _digest_authorization(
    challenge: dict[str, str], *, user: str, password: str, method: str, uri: str
) -> str:
    algorithm = challenge.get("algorithm", "MD5")
    hash_name = {"MD5": "md5", "SHA-256": "sha256"}[algorithm]

    def h(text: str) -> str:
        return hashlib.new(hash_name, text.encode()).hexdigest()

    ha1 = h(f"{user}:{challenge['realm']}:{password}")
    ha2 = h(f"{method}:{uri}")
    cnonce, nc = "0a4f113b", "00000001"
    response = h(f"{ha1}:{challenge['nonce']}:{nc}:{cnonce}:auth:{ha2}")
    return (
        f'Authorization: Digest username="{user}", realm="{challenge["realm"]}", '
        f'nonce="{challenge["nonce"]}", uri="{uri}", response="{response}", '
        f'algorithm={algorithm}, qop=auth, nc={nc}, cnonce="{cnonce}"'
    )


class UdpClient:
    def __init__(self, server: tuple[str, int]) -> None:
        family = socket.AF_INET6 if ":" in server[0] else socket.AF_INET
        self.server = server
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.bind((server[0], 0))
        self.sock.settimeout(5)
        self.local = self.sock.getsockname()[:2]

    def exchange(self, data: bytes) -> bytes:
        self.sock.sendto(data, self.server)
        return self.sock.recv(65535)

    def close(self) -> None:
        self.sock.close()


def _read_stream_message(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        assert chunk, f"connection closed after {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(_header(head + b"\r\n\r\n", "Content-Length") or "0")
    while len(body) < length:
        body += sock.recv(4096)
    return head + b"\r\n\r\n" + body


def _register(
    client: UdpClient, kamailio: Kamailio, user: str, *, expires: int, cseq: int = 1
) -> tuple[bytes, bytes]:
    """REGISTER (CSeq `cseq`), answer the 401, return (challenge response, final response)."""
    call_id = f"reg{user}{client.local[1]}"
    uri = f"sip:{kamailio.domain}"

    def request(number: int, extra: list[str]) -> bytes:
        return _request(
            "REGISTER",
            uri,
            local=client.local,
            transport="udp",
            user=user,
            call_id=call_id,
            cseq=number,
            extra=extra,
        )

    first = client.exchange(request(cseq, [f"Expires: {expires}"]))
    assert _status(first) == 401, first.decode()
    challenge = _challenge_params(_header(first, "WWW-Authenticate") or "")
    auth = _digest_authorization(
        challenge,
        user=user,
        password=kamailio.users[user],
        method="REGISTER",
        uri=uri,
    )
    final = client.exchange(request(cseq + 1, [f"Expires: {expires}", auth]))
    return first, final


# -- Kamailio starts and answers on every transport ----------------------------------------------


def test_kamailio_answers_options_over_udp(kamailio: Kamailio) -> None:
    client = UdpClient(kamailio.udp_addr)
    try:
        ruri = f"sip:{kamailio.udp_addr[0]}:{kamailio.udp_addr[1]}"
        reply = client.exchange(
            _request(
                "OPTIONS",
                ruri,
                local=client.local,
                transport="udp",
                user="probe",
                call_id="optudp",
                cseq=7,
            )
        )
    finally:
        client.close()
    assert _status(reply) == 200
    assert _header(reply, "CSeq") == "7 OPTIONS"
    assert "REGISTER" in (_header(reply, "Allow") or "")


def test_kamailio_answers_options_over_udp_ipv6(kamailio: Kamailio) -> None:
    if kamailio.udp6_addr is None:
        skip_or_fail("IPv6 loopback is not available on this machine")
    client = UdpClient(kamailio.udp6_addr)
    try:
        reply = client.exchange(
            _request(
                "OPTIONS",
                f"sip:[::1]:{kamailio.udp6_addr[1]}",
                local=("[::1]", client.local[1]),
                transport="udp",
                user="probe",
                call_id="optudp6",
                cseq=1,
            )
        )
    finally:
        client.close()
    assert _status(reply) == 200


def test_kamailio_answers_options_over_tcp(kamailio: Kamailio) -> None:
    with socket.create_connection(kamailio.tcp_addr, timeout=5) as sock:
        local = sock.getsockname()[:2]
        sock.sendall(
            _request(
                "OPTIONS",
                f"sip:127.0.0.1:{kamailio.tcp_addr[1]}",
                local=local,
                transport="tcp",
                user="probe",
                call_id="opttcp",
                cseq=3,
            )
        )
        reply = _read_stream_message(sock)
    assert _status(reply) == 200
    assert _header(reply, "Call-ID") == "opttcp"


def test_tls_handshake_verifies_with_test_ca_and_answers_options(kamailio: Kamailio) -> None:
    ctx = kamailio.pki.client_ssl_context()
    with socket.create_connection(kamailio.tls_addr, timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
            cert = tls.getpeercert()
            assert ("IP Address", "127.0.0.1") in cert["subjectAltName"]
            local = tls.getsockname()[:2]
            tls.sendall(
                _request(
                    "OPTIONS",
                    f"sip:127.0.0.1:{kamailio.tls_addr[1]};transport=tls",
                    local=local,
                    transport="tls",
                    user="probe",
                    call_id="opttls",
                    cseq=1,
                )
            )
            reply = _read_stream_message(tls)
    assert _status(reply) == 200


def test_tls_handshake_fails_without_the_test_ca(kamailio: Kamailio) -> None:
    ctx = ssl.create_default_context()  # system trust store only: must reject our test CA
    with socket.create_connection(kamailio.tls_addr, timeout=5) as raw:
        with pytest.raises(ssl.SSLCertVerificationError):
            ctx.wrap_socket(raw, server_hostname="127.0.0.1")


# -- registration and the location table -----------------------------------------------------


def test_sipp_register_with_digest_over_udp_shows_in_location(
    kamailio: Kamailio, sipp: Callable[..., SippResult]
) -> None:
    result = sipp(
        "register_auth.xml",
        kamailio.udp_addr,
        keys={"user": "1011", "domain": kamailio.domain, "expires": "30"},
        auth_user="1011",
        auth_password=kamailio.users["1011"],
    )
    assert result.ok, result.explain()
    assert result.received_statuses == [401, 200]
    challenge = _challenge_params(result.received[0].header("WWW-Authenticate") or "")
    assert challenge["realm"] == "127.0.0.1"
    assert challenge["algorithm"] == "MD5"
    assert challenge["qop"] == "auth"
    contact = result.sent[-1].header("Contact")
    assert contact is not None
    contacts = kamailio.contacts(kamailio.aor("1011"))
    addresses = [c["Address"] for c in contacts]
    assert contact.strip("<>") in addresses
    mine = next(c for c in contacts if c["Address"] == contact.strip("<>"))
    assert 0 < mine["Expires"] <= 30
    assert mine["Socket"] == f"udp:127.0.0.1:{kamailio.udp_addr[1]}"
    assert mine["User-Agent"] == "sipp-register"


def test_sipp_register_over_tcp(kamailio: Kamailio, sipp: Callable[..., SippResult]) -> None:
    result = sipp(
        "register_auth.xml",
        kamailio.tcp_addr,
        transport="tcp",
        keys={"user": "1013", "domain": kamailio.domain, "expires": "20"},
        auth_user="1013",
        auth_password=kamailio.users["1013"],
    )
    assert result.ok, result.explain()
    sockets = [c["Socket"] for c in kamailio.contacts("sip:1013@127.0.0.1")]
    assert f"tcp:127.0.0.1:{kamailio.tcp_addr[1]}" in sockets


def test_sipp_register_over_udp_ipv6(kamailio: Kamailio, sipp: Callable[..., SippResult]) -> None:
    if kamailio.udp6_addr is None:
        skip_or_fail("IPv6 loopback is not available on this machine")
    result = sipp(
        "register_auth.xml",
        kamailio.udp6_addr,
        local_ip="::1",
        keys={"user": "1019", "domain": kamailio.domain, "expires": "20"},
        auth_user="1019",
        auth_password=kamailio.users["1019"],
    )
    assert result.ok, result.explain()
    sockets = [c["Socket"] for c in kamailio.contacts(kamailio.aor("1019"))]
    assert f"udp:[::1]:{kamailio.udp6_addr[1]}" in sockets


def test_register_with_wrong_password_is_refused(
    kamailio: Kamailio, sipp: Callable[..., SippResult]
) -> None:
    result = sipp(
        "register_auth.xml",
        kamailio.udp_addr,
        keys={"user": "1014", "domain": kamailio.domain, "expires": "30"},
        auth_user="1014",
        auth_password="not-the-password",
        timeout=3,
    )
    assert not result.ok
    assert result.received_statuses[:2] == [401, 401], result.explain()
    assert kamailio.contacts(kamailio.aor("1014")) == []


def test_registrar_enforces_min_expires(kamailio: Kamailio) -> None:
    client = UdpClient(kamailio.udp_addr)
    try:
        _, final = _register(client, kamailio, "1015", expires=kamailio.min_expires - 1)
    finally:
        client.close()
    assert _status(final) == 423, final.decode()
    assert _header(final, "Min-Expires") == str(kamailio.min_expires)
    assert kamailio.contacts(kamailio.aor("1015")) == []


def test_unregister_removes_contact(kamailio: Kamailio) -> None:
    client = UdpClient(kamailio.udp_addr)
    try:
        _, final = _register(client, kamailio, "1016", expires=60)
        assert _status(final) == 200, final.decode()
        assert len(kamailio.contacts(kamailio.aor("1016"))) == 1
        _, gone = _register(client, kamailio, "1016", expires=0, cseq=3)
    finally:
        client.close()
    assert _status(gone) == 200
    assert kamailio.contacts(kamailio.aor("1016")) == []


def test_sha256_instance_challenges_and_verifies_sha256(kamailio_sha256: Kamailio) -> None:
    client = UdpClient(kamailio_sha256.udp_addr)
    try:
        first, final = _register(client, kamailio_sha256, "1017", expires=30)
    finally:
        client.close()
    challenge = _challenge_params(_header(first, "WWW-Authenticate") or "")
    assert challenge["algorithm"] == "SHA-256"
    assert _status(final) == 200, final.decode()
    assert len(kamailio_sha256.contacts("1017")) == 1


def test_restart_keeps_ports_and_empties_location(private_kamailio: Kamailio) -> None:
    kamailio = private_kamailio
    client = UdpClient(kamailio.udp_addr)
    try:
        _, final = _register(client, kamailio, "1018", expires=60)
        assert _status(final) == 200
        ports = (kamailio.udp_addr, kamailio.tcp_addr, kamailio.tls_addr)
        old_pid = kamailio.pid
        kamailio.restart()
        assert kamailio.pid != old_pid
        assert (kamailio.udp_addr, kamailio.tcp_addr, kamailio.tls_addr) == ports
        assert kamailio.contacts(kamailio.aor("1018")) == []
        client.sock.settimeout(5)
        _, again = _register(client, kamailio, "1018", expires=60)
    finally:
        client.close()
    assert _status(again) == 200
    assert len(kamailio.contacts(kamailio.aor("1018"))) == 1


def test_stop_then_start_serves_again(private_kamailio: Kamailio) -> None:
    private_kamailio.stop()
    assert not private_kamailio.running
    with pytest.raises(KamailioError):
        private_kamailio.rpc("core.version", timeout=0.5)
    private_kamailio.start()
    assert private_kamailio.running
    assert private_kamailio.rpc("core.version")


def _invite(caller: UdpClient, callee: str, *, cseq: int, extra: list[str]) -> bytes:
    host, port = caller.local
    return "\r\n".join(
        [
            f"INVITE sip:{callee}@127.0.0.1 SIP/2.0",
            f"Via: SIP/2.0/UDP {host}:{port};branch=z9hG4bKinv{cseq};rport",
            "Max-Forwards: 70",
            "From: <sip:1012@127.0.0.1>;tag=caller1",
            f"To: <sip:{callee}@127.0.0.1>",
            "Call-ID: proxied-invite-1",
            f"CSeq: {cseq} INVITE",
            f"Contact: <sip:1012@{host}:{port}>",
            *extra,
            "Content-Length: 0",
            "",
            "",
        ]
    ).encode()


def test_invite_to_registered_user_is_authenticated_and_proxied(kamailio: Kamailio) -> None:
    callee, caller = UdpClient(kamailio.udp_addr), UdpClient(kamailio.udp_addr)
    try:
        _, registered = _register(callee, kamailio, "1020", expires=60)
        assert _status(registered) == 200

        challenge_reply = caller.exchange(_invite(caller, "1020", cseq=1, extra=[]))
        assert _status(challenge_reply) == 407, challenge_reply.decode()
        caller.sock.sendto(  # ACK the 407 (same branch, RFC 3261 17.1.1.3)
            _invite(caller, "1020", cseq=1, extra=[])
            .replace(b"INVITE sip:", b"ACK sip:", 1)
            .replace(b"1 INVITE", b"1 ACK")
            .replace(b"To: <sip:1020@127.0.0.1>", f"To: {_header(challenge_reply, 'To')}".encode()),
            caller.server,
        )
        challenge = _challenge_params(_header(challenge_reply, "Proxy-Authenticate") or "")
        auth = _digest_authorization(
            challenge,
            user="1012",
            password=kamailio.users["1012"],
            method="INVITE",
            uri="sip:1020@127.0.0.1",
        ).replace("Authorization:", "Proxy-Authorization:", 1)
        caller.sock.sendto(_invite(caller, "1020", cseq=2, extra=[auth]), caller.server)

        forwarded = callee.sock.recv(65535)
        assert forwarded.startswith(
            f"INVITE sip:1020@127.0.0.1:{callee.local[1]};transport=udp SIP/2.0".encode()
        ), forwarded.decode()
        assert _header(forwarded, "Proxy-Authorization") is None, "credentials are consumed"
        record_route = _header(forwarded, "Record-Route") or ""
        assert f"127.0.0.1:{kamailio.udp_addr[1]}" in record_route and ";lr" in record_route

        # The callee is busy: the 486 travels back through the proxy to the caller.
        head = forwarded.split(b"\r\n\r\n", 1)[0].decode().split("\r\n")
        copied = [
            line for line in head[1:] if line.split(":", 1)[0] in ("Via", "From", "Call-ID", "CSeq")
        ]
        to = next(line for line in head if line.startswith("To:"))
        busy = "\r\n".join(
            ["SIP/2.0 486 Busy Here", *copied, f"{to};tag=callee1", "Content-Length: 0", "", ""]
        )
        callee.sock.sendto(busy.encode(), kamailio.udp_addr)
        final = caller.sock.recv(65535)
        while _status(final) < 200:  # 100 Trying from the proxy
            final = caller.sock.recv(65535)
        hop_ack = callee.sock.recv(65535)  # the proxy ACKs the 486 hop by hop
        assert hop_ack.startswith(b"ACK sip:1020@"), hop_ack.decode()
        assert _header(hop_ack, "CSeq") == "2 ACK"
        _, unregistered = _register(callee, kamailio, "1020", expires=0, cseq=3)
        assert _status(unregistered) == 200
    finally:
        callee.close()
        caller.close()
    assert _status(final) == 486, final.decode()
    assert _header(final, "Call-ID") == "proxied-invite-1"


# -- the sipp scenarios the deskphone tests reuse ----------------------------------------------


def test_options_and_unknown_scenario(kamailio: Kamailio, sipp: Callable[..., SippResult]) -> None:
    result = sipp("options_and_unknown.xml", kamailio.udp_addr)
    assert result.ok, result.explain()
    assert [m.first_line.split()[0] for m in result.sent] == ["OPTIONS", "FOOBAR"]
    assert result.received_statuses == [200, 501]
    assert result.received[0].header("Allow")


def test_options_scenario_fails_when_allow_is_missing(
    kamailio: Kamailio, sipp: Callable[..., SippResult], tmp_path: Path
) -> None:
    """The scenario fails on anything but 200: OPTIONS to an unknown user gets 404."""
    scenario = tmp_path / "opt_user.xml"
    text = (DATA_DIR / "options_and_unknown.xml").read_text()
    scenario.write_text(text.replace("OPTIONS sip:[remote_ip]", "OPTIONS sip:1999@[remote_ip]"))
    result = sipp(scenario, kamailio.udp_addr, timeout=3)
    assert not result.ok
    assert result.received_statuses[:1] == [404], result.explain()


def test_invite_malformed_scenario_gets_400(
    kamailio: Kamailio, sipp: Callable[..., SippResult]
) -> None:
    result = sipp("invite_malformed.xml", kamailio.udp_addr, keys={"user": "1012"})
    assert result.ok, result.explain()
    assert result.received_statuses == [400]
    assert result.sent[0].header("CSeq") == "1 INVITX"
    assert result.sent[-1].first_line.startswith("ACK ")


# -- helpers' own behaviour ------------------------------------------------------------------


def test_require_tool_skips_locally_and_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception):
        root_conftest.require_tool("no-such-peer-binary-xyz")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="no-such-peer-binary-xyz"):
        root_conftest.require_tool("no-such-peer-binary-xyz")
    assert root_conftest.require_tool("sh").endswith("/sh")


def test_parse_message_log_splits_sent_and_received() -> None:
    log = (
        "----------------------------------------------- 2026-01-01 00:00:00.000000\n"
        "UDP message sent (20 bytes):\n\n"
        "OPTIONS sip:x SIP/2.0\nCSeq: 1 OPTIONS\n\n"
        "----------------------------------------------- 2026-01-01 00:00:00.100000\n"
        "TCP message received [30] bytes :\n\n"
        "SIP/2.0 200 OK\nAllow: INVITE\n\n\n"
    )
    messages = parse_message_log(log)
    assert [m.direction for m in messages] == ["sent", "received"]
    assert messages[0].header("cseq") == "1 OPTIONS"
    assert messages[1].status == 200
    assert messages[1].header("Allow") == "INVITE"
