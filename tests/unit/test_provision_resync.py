"""`deskphone-provision resync`: which AOR and proxy a device's check-sync goes to, the NOTIFY
on the wire (read back with the SIP parser), retransmission, and clear failures."""

from __future__ import annotations

import socket
import threading

import pytest

from firmware.sip.message import SipRequest
from firmware.sip.parser import parse_message
from tools.provision.resync import ResyncError, Target, send_check_sync, target_for


def test_target_is_the_first_enabled_account_via_its_registrar() -> None:
    config = {
        "accounts": [
            {"user": "1000", "domain": "pbx", "enabled": False},
            {"user": "1001", "domain": "pbx.example", "registrar": "sip:10.0.0.5:5070"},
        ]
    }
    assert target_for(config) == Target("sip:1001@pbx.example", ("10.0.0.5", 5070))
    assert target_for(config, "127.0.0.1:5999").proxy == ("127.0.0.1", 5999)
    no_registrar = {"accounts": [{"user": "7", "domain": "pbx.example"}]}
    assert target_for(no_registrar).proxy == ("pbx.example", 5060)
    with pytest.raises(ResyncError, match="is not UDP: give --proxy"):
        target_for({"accounts": [{"user": "7", "domain": "d", "registrar": "sips:d"}]})
    with pytest.raises(ResyncError, match="no enabled account"):
        target_for({"accounts": []})


def test_notify_on_the_wire_is_retransmitted_until_answered() -> None:
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    server.settimeout(5)
    received: list[bytes] = []

    def answer() -> None:
        # Ignore the first copy: the sender must retransmit (Timer A) and then get the 200.
        for _ in range(2):
            data, addr = server.recvfrom(65535)
            received.append(data)
        req = parse_message(received[-1])
        assert isinstance(req, SipRequest)
        lines = [
            "SIP/2.0 200 OK",
            f"Via: {req.headers.get('Via')}",
            f"From: {req.headers.get('From')}",
            f"To: {req.headers.get('To')};tag=x1",
            f"Call-ID: {req.headers.get('Call-ID')}",
            "CSeq: 1 NOTIFY",
            "Content-Length: 0",
        ]
        server.sendto(("\r\n".join(lines) + "\r\n\r\n").encode(), addr)

    t = threading.Thread(target=answer)
    t.start()
    try:
        target = Target("sip:1001@pbx.example", server.getsockname())
        assert send_check_sync(target, timeout=5) == (200, "OK")
    finally:
        t.join(5)
        server.close()
    assert received[0] == received[1]  # a retransmission is the same request
    req = parse_message(received[0])
    assert isinstance(req, SipRequest)
    assert (req.method, str(req.uri)) == ("NOTIFY", "sip:1001@pbx.example")
    assert req.headers.get("Event") == "check-sync"
    assert req.headers.get("Subscription-State") == "terminated;reason=noresource"
    assert str(req.headers.get("From")).startswith("<sip:provisioning@deskphone.invalid>;tag=")


def test_no_answer_is_a_clear_error() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        with pytest.raises(ResyncError, match="no final response from .* within 0.3 s"):
            send_check_sync(Target("sip:1@d", silent.getsockname()), timeout=0.3)
