"""Transfer towards a GRUU (RFC 7647 section 4, RFC 4538 Target-Dialog, RFC 4488 norefersub).

sipp plays the transferee whose Contact is a GRUU and which lists tdialog and norefersub
(data/uas_gruu_transferee.xml). The phone calls it and transfers it through the action API: the
REFER must leave the dialog (own Call-ID, no To tag) for the GRUU, name the call in
Target-Dialog, ask for no subscription (Refer-Sub: false, Supported: norefersub), and, granted,
the phone ends the transfer by its own logic: transfer done, BYE. No Kamailio is needed: the
phone dials sipp's URI directly.

As transferee (data/ood_refer_target_dialog.xml, Kamailio users 1151-1153): sipp calls the phone
and REFERs it outside the dialog with Target-Dialog; over UDP the dialog identifiers prove
nothing, so the allow-listed sipp identity must answer the phone's Digest challenge first; the
phone calls the target (a baresip) and BYEs sipp; the REFER replayed afterwards gets 481.

Without any NOTIFY (data/uas_refer_no_notify.xml) the transferor gives up after
``[transfer] notify_timeout`` and resumes the call (RFC 5589 section 6 recovery). As the
recipient of an in-dialog REFER with Refer-Sub: false (data/refer_sub_false_in_dialog.xml) the
phone grants it and sends no NOTIFY at all.
"""

from __future__ import annotations

import re
import socket
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tests.conftest import require_tool
from tests.interop.baresip import Baresip
from tests.interop.kamailio import Kamailio
from tests.interop.phone import PhoneProcess, free_port
from tests.interop.sipp import SippResult, parse_message_log
from tests.interop.test_calls_baresip import connected, ended
from tests.interop.test_transfer_auth import listed_phone

DATA = Path(__file__).resolve().parent / "data"


def test_transfer_of_a_gruu_peer_uses_target_dialog_and_norefersub(
    phones: Callable[..., PhoneProcess], tmp_path: Path
) -> None:
    sipp = require_tool("sipp")
    port = free_port(socket.SOCK_DGRAM)
    log = tmp_path / "sipp-messages.log"
    uas = subprocess.Popen(
        [sipp, "-sf", str(DATA / "uas_gruu_transferee.xml"), "-i", "127.0.0.1", "-p", str(port),
         "-m", "2", "-timeout", "30s", "-timeout_error", "-nostdin", "-trace_msg",
         "-message_file", str(log), "-mp", str(free_port(socket.SOCK_DGRAM))],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        phone = phones([])
        call = phone.dial(f"sip:sipp@127.0.0.1:{port}")
        phone.wait_call(connected(call["id"]), 10, "the call to sipp")
        started = phone.call_action(call["id"], "transfer", target="sip:1150@127.0.0.1")
        assert started["transfer_role"] == "transferor"
        done = phone.wait_call(ended(call["id"]), 15, "the transferor to end the call")
        out, _ = uas.communicate(timeout=30)
        assert uas.returncode == 0, out.decode(errors="replace")[-3000:]
    finally:
        if uas.poll() is None:
            uas.kill()
            uas.wait(5)
    assert done["transfer"] == "done" and done["transfer_status"] == 200
    assert done["transfer_reason"] == "REFER accepted (norefersub)"
    assert done["end_cause"] == "local_bye"
    received = [m for m in parse_message_log(log.read_text(errors="replace"))]
    received = [m for m in received if m.direction == "received"]
    invite = next(m for m in received if m.first_line.startswith("INVITE"))
    [refer] = [m for m in received if m.first_line.startswith("REFER")]
    # RFC 7647 4: not in the dialog: a Call-ID of its own, no To tag, sent to the GRUU.
    assert refer.header("Call-ID") != invite.header("Call-ID")
    assert ";tag=" not in (refer.header("To") or "")
    assert "gr=urn:uuid:f81d4fae" in refer.first_line
    # RFC 4538: the call it is about, tags as the phone sees that dialog.
    our_tag = re.search(r"tag=([^;>\s]+)", invite.header("From") or "")
    ok_to_invite = next(
        m for m in parse_message_log(log.read_text(errors="replace"))
        if m.direction == "sent" and m.first_line.startswith("SIP/2.0 200")
    )  # fmt: skip
    sipp_tag = re.search(r"tag=([^;>\s]+)", ok_to_invite.header("To") or "")
    assert our_tag and sipp_tag
    assert refer.header("Target-Dialog") == (
        f"{invite.header('Call-ID')};local-tag={our_tag.group(1)};remote-tag={sipp_tag.group(1)}"
    )
    assert refer.header("Require") == "tdialog"
    # RFC 4488 / T17: no subscription asked of a GRUU peer that supports norefersub.
    assert refer.header("Refer-Sub") == "false"
    assert "norefersub" in (refer.header("Supported") or "")
    assert refer.header("Refer-To") == "<sip:1150@127.0.0.1>"
    # Hold, REFER, BYE; no NOTIFY was expected or sent (ACKs left out: the REFER may overtake
    # the ACK of the hold re-INVITE).
    methods = [m.first_line.split()[0] for m in received if not m.first_line.startswith("SIP")]
    assert [m for m in methods if m != "ACK"] == ["INVITE", "INVITE", "REFER", "BYE"]


def test_deskphone_as_transferee_of_an_out_of_dialog_refer_with_target_dialog(
    kamailio: Kamailio,
    phones: Callable[..., PhoneProcess],
    make_baresip: Any,
    sipp: Callable[..., SippResult],
    tmp_path: Path,
) -> None:
    """sipp (allow-listed 1153) calls the phone and REFERs it outside the dialog to baresip
    1152; over UDP the phone challenges first. Afterwards the replay gets 481 (T1, T2)."""
    target: Baresip = make_baresip("1152", kamailio=kamailio, codecs=["PCMU"], auto_answer=True)
    phone = listed_phone(phones, kamailio, "1151", tmp_path, "1153")
    with ThreadPoolExecutor(1) as pool:
        run = pool.submit(
            sipp,
            "ood_refer_target_dialog.xml",
            ("127.0.0.1", phone.sip_port),
            keys={"user": "1153", "domain": kamailio.domain, "target": kamailio.aor("1152")},
            auth_user="1153",
            auth_password=kamailio.users["1153"],
            timeout=30,
        )
        ringing = phone.wait_call(lambda c: c["state"] == "ringing", 10, "sipp's call to ring")
        phone.call_action(ringing["id"], "answer")
        result = run.result(timeout=60)
    assert result.ok, result.explain()
    finals = [s for s in result.received_statuses if s >= 200]
    assert finals == [200, 401, 200, 481], finals  # INVITE; REFER 401, 200; the replay 481
    target.wait_event("CALL_ESTABLISHED", 5)
    original = phone.call(ringing["id"])
    assert original["transfer"] == "done" and original["transfer_role"] == "transferee"
    assert original["end_cause"] == "local_bye"
    calls = phone.status()["calls"]
    assert len(calls) == 2, calls  # the replay placed no call
    new = next(c for c in calls if c["direction"] == "outgoing")
    assert "1152" in new["remote"] and new["state"] == "connected"
    phone.call_action(new["id"], "hangup")
    target.wait_event("CALL_CLOSED", 10)


def test_transferor_gives_up_when_no_final_notify_comes_and_resumes(
    phones: Callable[..., PhoneProcess], tmp_path: Path
) -> None:
    """sipp accepts the REFER and never NOTIFYs: after [transfer] notify_timeout (2 s here) the
    phone gives up, resumes the call (sendrecv re-INVITE) and says why in status."""
    sipp = require_tool("sipp")
    port = free_port(socket.SOCK_DGRAM)
    log = tmp_path / "sipp-no-notify.log"
    uas = subprocess.Popen(
        [sipp, "-sf", str(DATA / "uas_refer_no_notify.xml"), "-i", "127.0.0.1", "-p", str(port),
         "-m", "1", "-timeout", "30s", "-timeout_error", "-nostdin", "-trace_msg",
         "-message_file", str(log), "-mp", str(free_port(socket.SOCK_DGRAM))],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        phone = phones([], sections={"transfer": {"notify_timeout": 2}})
        call = phone.dial(f"sip:sipp@127.0.0.1:{port}")
        phone.wait_call(connected(call["id"]), 10, "the call to sipp")
        started = time.monotonic()
        phone.call_action(call["id"], "transfer", target="sip:1155@127.0.0.1")
        failed = phone.wait_call(
            lambda c: c["id"] == call["id"] and c.get("transfer") == "failed", 10, "the give-up"
        )
        elapsed = time.monotonic() - started
        assert 1.5 <= elapsed <= 6, f"gave up after {elapsed:.1f} s, configured 2 s"
        assert failed["transfer_status"] == 408
        assert failed["transfer_reason"] == "no final NOTIFY within 2 s"
        resumed = phone.wait_call(
            lambda c: c["id"] == call["id"] and c["state"] == "connected" and not c["held"],
            10,
            "the call resumed",
        )
        assert resumed["transfer"] == "failed"
        phone.call_action(call["id"], "hangup")
        out, _ = uas.communicate(timeout=30)
        assert uas.returncode == 0, out.decode(errors="replace")[-3000:]
    finally:
        if uas.poll() is None:
            uas.kill()
            uas.wait(5)
    received = [m for m in parse_message_log(log.read_text(errors="replace"))]
    invites = [
        m for m in received if m.direction == "received" and m.first_line.startswith("INVITE")
    ]
    assert len(invites) == 3  # call, hold, resume
    assert "a=sendonly" in invites[1].text
    assert "a=sendonly" not in invites[2].text and "a=inactive" not in invites[2].text


def test_refer_sub_false_is_honoured_without_any_notify(
    kamailio: Kamailio,
    phones: Callable[..., PhoneProcess],
    make_baresip: Any,
    sipp: Callable[..., SippResult],
    tmp_path: Path,
) -> None:
    """RFC 4488 as recipient: sipp's in-dialog REFER with Refer-Sub: false is granted (200 with
    Refer-Sub: false); the phone transfers itself to baresip 1157 and sends no NOTIFY."""
    target: Baresip = make_baresip("1157", kamailio=kamailio, codecs=["PCMU"], auto_answer=True)
    phone = listed_phone(phones, kamailio, "1156", tmp_path)
    with ThreadPoolExecutor(1) as pool:
        run = pool.submit(
            sipp,
            "refer_sub_false_in_dialog.xml",
            ("127.0.0.1", phone.sip_port),
            keys={"user": "1158", "domain": kamailio.domain, "target": kamailio.aor("1157")},
            timeout=30,
        )
        ringing = phone.wait_call(lambda c: c["state"] == "ringing", 10, "sipp's call to ring")
        phone.call_action(ringing["id"], "answer")
        result = run.result(timeout=60)
    assert result.ok, result.explain()  # a NOTIFY would have been an unexpected message
    assert not [m for m in result.messages if m.first_line.startswith("NOTIFY")]
    target.wait_event("CALL_ESTABLISHED", 5)
    original = phone.call(ringing["id"])
    assert original["transfer"] == "done" and original["end_cause"] == "local_bye"
    new = next(c for c in phone.status()["calls"] if c["direction"] == "outgoing")
    phone.call_action(new["id"], "hangup")
    target.wait_event("CALL_CLOSED", 10)
