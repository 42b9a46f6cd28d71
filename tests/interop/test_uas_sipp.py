"""Acceptance 3 of the foundation issue: sipp (a real third-party UA) probes the phone's UAS core.

OPTIONS -> 200 with Allow; an unknown method -> 501; INVITEs with malformed headers -> 400 naming
the defect, and the phone keeps running. Over UDP and TCP.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.interop.phone import PhoneProcess
from tests.interop.sipp import SippResult


@pytest.fixture
def phone(tmp_path: Path) -> Iterator[PhoneProcess]:
    p = PhoneProcess(tmp_path, accounts=[])
    p.start()
    yield p
    p.kill()


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_options_and_unknown_method(
    phone: PhoneProcess, sipp: Callable[..., SippResult], transport: str
) -> None:
    result = sipp("options_and_unknown.xml", ("127.0.0.1", phone.sip_port), transport=transport)
    assert result.ok, result.explain()
    ok, not_impl = result.received[0], result.received[-1]
    assert ok.status == 200
    allow = ok.header("Allow") or ""
    for method in ("INVITE", "ACK", "CANCEL", "BYE", "OPTIONS"):
        assert method in allow, allow
    assert "REGISTER" not in allow, "a phone is not a registrar"
    assert ok.header("Supported") is not None and ok.header("Accept") == "application/sdp"
    assert not_impl.status == 501
    assert not_impl.header("Allow") == allow, "501 must list what we do support (RFC 3261 8.2.1)"


@pytest.mark.parametrize(
    ("scenario", "words"),
    [
        ("invite_malformed.xml", "CSeq"),
        ("invite_overlarge_cseq.xml", "CSeq"),
    ],
)
def test_malformed_invite_gets_400(
    phone: PhoneProcess, sipp: Callable[..., SippResult], scenario: str, words: str
) -> None:
    result = sipp(scenario, ("127.0.0.1", phone.sip_port), keys={"user": "1001"})
    assert result.ok, result.explain()
    response = result.received[0]
    assert response.status == 400
    assert words.lower() in response.first_line.lower(), response.first_line
    assert phone.status()["registrations"] == []  # still alive and answering


def test_garbage_never_crashes_the_phone(
    phone: PhoneProcess, sipp: Callable[..., SippResult]
) -> None:
    """Unparseable bytes are dropped (or answered 400) and the phone keeps serving."""
    import random
    import socket

    rng = random.Random(4475)
    junk = [
        b"\x00" * 10,
        b"INVITE\r\n\r\n",
        b"SIP/2.0 200\r\n\r\n",
        b"\xff\xfe" * 500,
        b"OPTIONS sip:x SIP/2.0\r\nVia: \r\n\r\n",
        b"OPTIONS sip:x SIP/2.0\r\nContent-Length: 999\r\n\r\nshort",
    ]
    junk += [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 1400))) for _ in range(50)]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for data in junk:
            s.sendto(data, ("127.0.0.1", phone.sip_port))
    for data in junk[:10]:
        with socket.create_connection(("127.0.0.1", phone.sip_port), timeout=5) as c:
            c.sendall(data + b"\r\n\r\n")
    result = sipp("options_and_unknown.xml", ("127.0.0.1", phone.sip_port))
    assert result.ok, result.explain()
    assert result.received[0].status == 200
    assert phone.proc is not None and phone.proc.poll() is None
