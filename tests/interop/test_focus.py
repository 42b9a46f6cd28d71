"""Network conference through a focus (RFC 4579) scripted with sipp, through Kamailio.

Users 1131-1133. The phone (1132) talks to baresip P (1131); the conference action with
``{"focus": true}`` (``[calls] conference_focus`` = the sipp focus' conference factory URI)
holds P, INVITEs the focus, sees ``isfocus`` in its 200's Contact, and REFERs P there; P (a real
baresip) INVITEs the focus and the phone's call with P ends on the NOTIFY 200. Then the phone
asks the focus to call 1133 (REFER in the focus dialog, Refer-To 1133, Refer-Sub: false) and
to drop it again (Refer-To <1133;method=BYE>, RFC 4579 5.11).
Checked on the wire (the phone's SIP port and sipp's message log) and in the status.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.conftest import require_tool
from tests.interop.baresip import Baresip
from tests.interop.kamailio import Kamailio
from tests.interop.phone import PhoneProcess, free_port
from tests.interop.sipp import parse_message_log, start_sipp
from tests.interop.sniff import Sniffer
from tests.interop.test_call_waiting import header, sip_sent
from tests.interop.test_calls_baresip import alsa_files, connected

DATA = Path(__file__).resolve().parent / "data"


def test_conference_on_a_focus_invite_then_refer_the_party_and_ask_the_focus_to_invite(
    kamailio: Kamailio,
    phones: Callable[..., PhoneProcess],
    make_baresip: Any,
    sniffer: Callable[[int], Sniffer],
    tmp_path: Path,
) -> None:
    sipp = require_tool("sipp")
    focus_port = free_port(socket.SOCK_DGRAM)
    conference_uri = f"sip:conf@127.0.0.1:{focus_port}"
    log = tmp_path / "focus-messages.log"
    focus = start_sipp(
        sipp,
        DATA / "focus_uas.xml",
        port=focus_port,
        log_file=log,
        workdir=tmp_path,
        calls=2,
        timeout="40s",
    )
    try:
        party: Baresip = make_baresip(
            "1131", kamailio=kamailio, codecs=["PCMU"], auto_answer=True, tone_hz=440.0
        )
        files = alsa_files(tmp_path / "alsa-1132")
        account = {
            "id": "line1",
            "user": "1132",
            "password": kamailio.users["1132"],
            "domain": kamailio.domain,
            "registrar": kamailio.uri("udp"),
            "expires": 300,
        }
        phone = phones(
            [account],
            env=files.env,
            audio={"codecs": ["PCMU"]},
            sections={"calls": {"conference_focus": conference_uri}},
        )
        phone.wait_state("registered", 15)
        p_call = phone.dial("1131")["id"]
        phone.wait_call(connected(p_call), 10, "the call to P to connect")
        party.wait_event("CALL_ESTABLISHED", 10)
        sniff = sniffer(phone.sip_port)

        reply = phone.call_action(p_call, "conference", focus=True)
        conf_id = reply["conference_of"]
        conf = phone.wait_call(
            lambda c: c["id"] == conf_id and c.get("conference") == "active",
            10,
            "the focus to answer",
        )
        assert conf["isfocus"] is True and conf["conference_uri"] == conference_uri
        assert conf["conference_parties"] == [p_call]
        done = phone.wait_call(
            lambda c: c["id"] == p_call and c["state"] == "ended", 15, "P to move to the focus"
        )
        assert done["transfer"] == "done" and done["transfer_status"] == 200

        phone.call_action(conf_id, "conference", invite="1133")
        invited = phone.wait_call(
            lambda c: c["id"] == conf_id and c["conference_invited"].get("sip:1133@127.0.0.1"),
            10,
            "the focus to accept the REFER",
        )
        assert invited["conference_invited"] == {"sip:1133@127.0.0.1": 200}
        phone.call_action(conf_id, "conference", remove="1133")
        phone.wait_call(
            lambda c: (
                c["id"] == conf_id
                and c["conference_invited"].get("remove sip:1133@127.0.0.1") == 200
            ),
            10,
            "the focus to accept the removal",
        )

        phone.call_action(conf_id, "hangup")
        party.hangup()  # P leaves the conference too: the focus' second dialog ends
        out, _ = focus.communicate(timeout=30)
        assert focus.returncode == 0, out.decode(errors="replace")[-3000:]
        wire = sip_sent(sniff.close())
    finally:
        if focus.poll() is None:
            focus.kill()
            focus.wait(5)

    # the phone's side of the wire: INVITE to the conference URI, REFER P there, REFER the focus
    invites = [t for first, t in wire if first.startswith(f"INVITE {conference_uri} ")]
    assert invites, [first for first, _ in wire]
    refers = [t for first, t in wire if first.startswith("REFER ")]
    to_party = [t for t in refers if "1131" in header(t, "To")]
    to_focus = [t for t in refers if header(t, "Refer-To") == "<sip:1133@127.0.0.1>"]
    assert to_party and header(to_party[0], "Refer-To") == f"<{conference_uri}>"
    assert to_focus and header(to_focus[0], "Refer-Sub") == "false"
    # the focus' side: two participants INVITEd the conference URI, one REFER received
    received = [m for m in parse_message_log(log.read_text(errors="replace"))]
    froms = [
        re.sub(r";tag=.*", "", m.header("From") or "")
        for m in received
        if m.direction == "received" and m.first_line.startswith("INVITE ")
    ]
    assert any("1132" in f for f in froms) and any("1131" in f for f in froms), froms
    assert [m.header("Refer-To") for m in received if m.first_line.startswith("REFER ")] == [
        "<sip:1133@127.0.0.1>",
        "<sip:1133@127.0.0.1;method=BYE>",
    ]
