"""Being held (RFC 3264 8.4) by a third-party UA: sipp holds the phone, the phone answers recvonly."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

from tests.conftest import require_tool
from tests.interop.phone import PhoneProcess, free_port
from tests.interop.sipp import parse_message_log, start_sipp

DATA = Path(__file__).resolve().parent / "data"


def test_held_phone_answers_recvonly_and_shows_it(
    phones: Callable[..., PhoneProcess], tmp_path: Path
) -> None:
    sipp = require_tool("sipp")
    phone = phones([])
    log = tmp_path / "messages.log"
    uac = start_sipp(
        sipp,
        DATA / "uac_holds_phone.xml",
        target=f"127.0.0.1:{phone.sip_port}",
        port=free_port(socket.SOCK_DGRAM),
        log_file=log,
        workdir=tmp_path,
        extra_args=["-key", "user", "deskphone"],
    )
    try:
        ringing = phone.wait_call(lambda c: c["state"] == "ringing", 10, "sipp's call to ring")
        phone.call_action(ringing["id"], "answer")
        held = phone.wait_call(
            lambda c: c["id"] == ringing["id"] and c["remote_held"] is True,
            10,
            "the phone to show it is held",
        )
        assert held["held"] is False  # we did not hold anyone: the far end holds us
        out, _ = uac.communicate(timeout=30)
        assert uac.returncode == 0, out.decode(errors="replace")[-3000:]
        done = phone.wait_call(
            lambda c: c["id"] == ringing["id"] and c["state"] == "ended", 10, "sipp's BYE"
        )
        assert done["end_cause"] == "remote_bye"
    finally:
        if uac.poll() is None:
            uac.kill()
            uac.wait(5)
    answers = [
        m
        for m in parse_message_log(log.read_text(errors="replace"))
        if m.direction == "received" and m.status == 200 and "INVITE" in (m.header("CSeq") or "")
    ]
    assert "a=recvonly" in answers[-1].text
