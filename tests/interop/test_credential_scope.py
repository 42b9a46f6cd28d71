"""The account password answers only the registrar's realm, on the wire (threat-model T44).

A deskphone registered at Kamailio (which challenges REGISTER and INVITE in realm 127.0.0.1)
calls a sipp UAS through Kamailio; sipp challenges the INVITE with 401 in realm "evil". The
phone must answer Kamailio's 407 (the learned registrar realm) so the INVITE reaches sipp, then
ACK the 401 and send nothing carrying credentials for "evil": checked in sipp's message log and
in every datagram the phone sent (loopback capture). Users 1161-1170 are this file's.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.conftest import require_tool
from tests.interop.kamailio import Kamailio
from tests.interop.phone import PhoneProcess, free_port
from tests.interop.sipp import parse_message_log, start_sipp
from tests.interop.sniff import Sniffer

DATA = Path(__file__).resolve().parent / "data"


def account(kam: Kamailio, user: str) -> dict[str, Any]:
    return {
        "id": "line1",
        "user": user,
        "password": kam.users[user],
        "domain": kam.domain,
        "registrar": kam.uri("udp"),
        "expires": 300,
    }


def test_foreign_realm_challenge_gets_an_ack_and_no_credentials(
    kamailio: Kamailio,
    phones: Callable[..., PhoneProcess],
    sniffer: Callable[[int], Sniffer],
    tmp_path: Path,
) -> None:
    sipp = require_tool("sipp")
    phone = phones([account(kamailio, "1161")])
    registration = phone.wait_state("registered", 15)
    assert registration["realm"] == "127.0.0.1"  # learned from Kamailio's REGISTER challenge
    capture = sniffer(phone.sip_port)
    port = free_port(socket.SOCK_DGRAM)
    log = tmp_path / "sipp-messages.log"
    uas = start_sipp(
        sipp, DATA / "uas_foreign_realm.xml", port=port, log_file=log, workdir=tmp_path
    )
    try:
        call = phone.dial(f"sip:callee@127.0.0.1:{port}")
        ended = phone.wait_call(
            lambda c: c["id"] == call["id"] and c["state"] == "ended", 15, "the call to fail"
        )
        out, _ = uas.communicate(timeout=30)
        assert uas.returncode == 0, out.decode(errors="replace")[-3000:]
    finally:
        if uas.poll() is None:
            uas.kill()
            uas.wait(5)
    assert ended["end_status"] == 401, ended
    reason = ended["end_reason"] or ""
    assert "401 from realm 'evil': no credentials for that realm" in reason, reason
    assert "the account's realm is '127.0.0.1'" in reason, reason

    received = [
        m for m in parse_message_log(log.read_text(errors="replace")) if m.direction == "received"
    ]
    invites = [m for m in received if m.first_line.startswith("INVITE")]
    assert len(invites) == 1, [m.first_line for m in received]  # no retry with credentials
    assert any(m.first_line.startswith("ACK") for m in received)

    sent = capture.close()
    assert sent, "the capture saw nothing the phone sent"
    invites_sent = [p for p in sent if p.startswith(b"INVITE ")]
    # Kamailio's 407 in the registrar realm was answered; nothing ever named realm "evil".
    assert any(b'realm="127.0.0.1"' in p for p in invites_sent), invites_sent
    assert not any(b'realm="evil"' in p for p in sent)
    assert any(p.startswith(b"ACK ") for p in sent)
