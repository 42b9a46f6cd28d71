"""Session timers (RFC 4028) against sipp, a third-party SIP implementation.

The phone refreshes a call whose UAS asked for Session-Expires 90 (refresher=uac) at about
45 s, and it refuses an INVITE asking for 30 s with 422 Min-SE 90 (THREATS T19).
"""

from __future__ import annotations

import shutil
import socket
import time
from collections.abc import Callable
from pathlib import Path

from tests.conftest import require_tool
from tests.interop.phone import PhoneProcess, free_port
from tests.interop.sipp import SippResult, parse_message_log, start_sipp

DATA = Path(__file__).resolve().parent / "data"


def test_phone_refreshes_a_short_session_with_reinvite(
    phones: Callable[..., PhoneProcess], tmp_path: Path
) -> None:
    sipp = require_tool("sipp")
    port = free_port(socket.SOCK_DGRAM)  # SOCK_DGRAM
    log = tmp_path / "sipp-messages.log"
    uas = start_sipp(
        sipp,
        DATA / "uas_session_timer.xml",
        port=port,
        log_file=log,
        workdir=tmp_path,
        timeout="90s",
        extra_args=["-mp", str(free_port(socket.SOCK_DGRAM))],
    )
    try:
        phone = phones([])
        call = phone.dial(f"sip:service@127.0.0.1:{port}")
        phone.wait_call(
            lambda c: c["id"] == call["id"] and c["state"] == "connected",
            10,
            "the call to sipp to connect",
        )
        started = time.monotonic()
        refreshed = phone.wait_call(
            lambda c: c["id"] == call["id"] and c["refreshes"] >= 1,
            55,
            "a session refresh (RFC 4028: at half of Session-Expires 90)",
        )
        elapsed = time.monotonic() - started
        assert 40 <= elapsed <= 50, f"refreshed after {elapsed:.1f} s, expected ~45 s"
        assert refreshed["state"] == "connected"
        phone.call_action(call["id"], "hangup")
        out, _ = uas.communicate(timeout=30)
        messages = parse_message_log(log.read_text(errors="replace"))
        assert uas.returncode == 0, out.decode(errors="replace")[-3000:]
    finally:
        if uas.poll() is None:
            uas.kill()
            uas.wait(5)
    invites = [
        m for m in messages if m.direction == "received" and m.first_line.startswith("INVITE")
    ]
    assert len(invites) == 2
    assert "timer" in (invites[0].header("Supported") or "")
    assert invites[1].header("Session-Expires") == "90;refresher=uac"
    assert shutil.which(sipp)


def test_session_interval_below_90_is_refused_with_422(
    phones: Callable[..., PhoneProcess], sipp: Callable[..., SippResult]
) -> None:
    phone = phones([])
    result = sipp(
        "invite_short_session_expires.xml",
        ("127.0.0.1", phone.sip_port),
        keys={"user": "deskphone"},
    )
    assert result.ok, result.explain()
    refusal = [m for m in result.received if m.status == 422][0]
    assert refusal.header("Min-SE") == "90"
    assert phone.status()["calls"] == [], "a refused INVITE must not ring"
