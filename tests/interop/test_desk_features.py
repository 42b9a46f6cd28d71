"""Desk features on the wire (issue 5, acceptance 2 and 3) through the shared Kamailio.

* MWI: an unsolicited message-summary NOTIFY relayed by the registrar sets the count; the same
  NOTIFY sent straight to the phone by a stranger gets 403 and changes nothing (T11 for MWI).
* DND (486, nothing rings) and forwarding always / busy / no answer (302 with the target's
  Contact), each seen in sipp's message log.
* Intercom: ``Answer-Mode: Auto`` auto-answers only over the registrar flow; the same request
  sent directly just rings (T27). PAI is believed only from the proxy (T25).
* Anonymous call: every header of the INVITE as the phone sent it (packet capture) is free of
  the user, device name and product (T24, RFC 3323).

Users 1064-1080 (this area's range).
"""

from __future__ import annotations

import concurrent.futures
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.interop.audio_files import dominant_frequency
from tests.interop.baresip import Baresip
from tests.interop.kamailio import Kamailio
from tests.interop.phone import PhoneProcess
from tests.interop.sipp import SippResult
from tests.interop.sniff import Sniffer
from tests.interop.test_calls_baresip import alsa_files

QUIET = {"mwi": {"subscribe": False}}  # the shared Kamailio is no MWI server


def desk_phone(
    phones: Callable[..., PhoneProcess],
    kam: Kamailio,
    user: str,
    tmp_path: Path,
    sections: dict[str, Any] | None = None,
    transport: str = "udp",
) -> PhoneProcess:
    files = alsa_files(tmp_path / f"alsa-{user}")
    account = {
        "id": "line1",
        "user": user,
        "password": kam.users[user],
        "domain": kam.domain,
        "registrar": kam.uri(transport),
        "expires": 300,
    }
    phone = phones(
        [account], env=files.env, audio={"codecs": ["PCMU"]}, sections={**QUIET, **(sections or {})}
    )
    phone.wait_state("registered", 15)
    phone.alsa = files  # type: ignore[attr-defined]  # the raw files behind its sound card
    return phone


def invite(
    sipp: Callable[..., SippResult],
    target: tuple[str, int],
    to: str,
    *,
    extra: str = "X-Desk: 1",
    extra2: str = "X-Desk: 2",
    timeout: float = 15,
) -> SippResult:
    keys = {"to": to, "from": "5550100", "extra": extra, "extra2": extra2}
    return sipp("desk_invite.xml", target, keys=keys, timeout=timeout)


def final(result: SippResult) -> int:
    finals = [s for s in result.received_statuses if s >= 200]
    assert finals, result.explain()
    return finals[0]


def redirect_contact(result: SippResult) -> str:
    msg = next(m for m in result.received if m.status == 302)
    return msg.header("Contact") or ""


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_mwi_from_the_registrar_counts_a_strangers_is_refused(
    kamailio: Kamailio,
    phones: Callable[..., PhoneProcess],
    sipp: Callable[..., SippResult],
    tmp_path: Path,
    transport: str,
) -> None:
    phone = desk_phone(phones, kamailio, "1064", tmp_path, transport=transport)
    assert phone.status()["mwi"]["waiting"] is False
    relayed = sipp("mwi_notify.xml", kamailio.udp_addr, keys={"to": "1064", "new": "3", "old": "5"})
    assert relayed.received_statuses[-1] == 200, relayed.explain()
    status = phone.wait_for(lambda s: s["mwi"]["new"] == 3, 5, "MWI count from the registrar")
    assert status["mwi"]["waiting"] is True and status["mwi"]["old"] == 5
    assert status["leds"]["MWI"] == "on"
    stranger = sipp(
        "mwi_notify.xml", ("127.0.0.1", phone.sip_port), keys={"to": "1064", "new": "9", "old": "9"}
    )
    assert stranger.received_statuses[-1] == 403, stranger.explain()
    assert phone.status()["mwi"]["new"] == 3
    # T11: dialog-info NOTIFYs for subscriptions the phone never made -> 481, from anyone.
    for target in (kamailio.udp_addr, ("127.0.0.1", phone.sip_port)):
        forged = sipp("notify_unknown.xml", target, keys={"to": "1064"})
        assert forged.ok and forged.received_statuses == [481, 481], forged.explain()


def test_dnd_and_every_forwarding_mode_on_the_wire(
    kamailio: Kamailio,
    phones: Callable[..., PhoneProcess],
    sipp: Callable[..., SippResult],
    make_baresip: Any,
    tmp_path: Path,
) -> None:
    phone = desk_phone(phones, kamailio, "1065", tmp_path)
    proxy = kamailio.udp_addr

    assert phone.post("/api/dnd", {"enabled": True}) == (200, {"dnd": True})
    assert phone.status()["dnd"] is True
    dnd = invite(sipp, proxy, "1065")
    assert final(dnd) == 486 and 180 not in dnd.received_statuses, dnd.explain()
    assert not phone.status()["calls"]  # nothing rang
    phone.post("/api/dnd", {"enabled": False})

    code, body = phone.post("/api/forward", {"always": "1070"})
    assert code == 200 and body["forward"]["always"] == "1070"
    always = invite(sipp, proxy, "1065")
    assert final(always) == 302, always.explain()
    assert redirect_contact(always) == f"<{kamailio.aor('1070')}>"

    # Busy: the phone already has a call (ringing at baresip) when the next INVITE comes.
    far: Baresip = make_baresip("1066", kamailio=kamailio)
    phone.post("/api/forward", {"always": None, "busy": "1071"})
    outgoing = phone.dial("1066")
    far.wait_event("CALL_INCOMING", 10)
    busy = invite(sipp, proxy, "1065")
    assert final(busy) == 302, busy.explain()
    assert redirect_contact(busy) == f"<{kamailio.aor('1071')}>"
    phone.call_action(outgoing["id"], "hangup")
    phone.wait_call(lambda c: c["id"] == outgoing["id"] and c["state"] == "ended", 10, "ended")

    phone.post("/api/forward", {"busy": None, "no_answer": "1072", "no_answer_after": 1})
    started = time.monotonic()
    no_answer = invite(sipp, proxy, "1065")
    assert no_answer.received_statuses[-1] == 302 and 180 in no_answer.received_statuses, (
        no_answer.explain()
    )
    assert time.monotonic() - started >= 1.0
    assert redirect_contact(no_answer) == f"<{kamailio.aor('1072')}>"
    diverted = phone.status()["incoming_diverted"]
    assert [d["by"] for d in diverted] == [
        "dnd",
        "forward_always",
        "forward_busy",
        "forward_no_answer",
    ]


def test_intercom_auto_answers_only_from_the_proxy_and_pai_only_counts_from_it(
    kamailio: Kamailio,
    phones: Callable[..., PhoneProcess],
    sipp: Callable[..., SippResult],
    tmp_path: Path,
) -> None:
    phone = desk_phone(phones, kamailio, "1067", tmp_path)
    pai = 'P-Asserted-Identity: "Front Desk" <sip:1080@127.0.0.1>'

    # Straight to the phone: a stranger asking for auto-answer just rings.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        direct = pool.submit(
            invite,
            sipp,
            ("127.0.0.1", phone.sip_port),
            "1067",
            extra="Answer-Mode: Auto",
            extra2=pai,
        )
        call = phone.wait_call(lambda c: c["state"] == "ringing", 10, "ringing")
        assert call["auto_answer_refused"] is True
        assert call["caller"]["source"] == "from" and call["caller"]["verified"] is False
        assert call["remote_display"] == "Outside"
        # Bounded observation: auto-answer would happen at once; it must not.
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            assert phone.call(call["id"])["state"] == "ringing"
            time.sleep(0.1)
        phone.call_action(call["id"], "reject")
        refused = direct.result(20)
    assert 200 not in refused.received_statuses and final(refused) == 486, refused.explain()

    # Through the registrar/proxy flow: answered by itself, PAI shown as verified.
    relayed = invite(sipp, kamailio.udp_addr, "1067", extra="Answer-Mode: Auto", extra2=pai)
    assert final(relayed) == 200, relayed.explain()
    status = phone.wait_for(
        lambda s: any(c.get("auto_answered") for c in s["calls"]), 5, "auto-answered call"
    )
    answered = next(c for c in status["calls"] if c.get("auto_answered"))
    assert answered["caller"] == {
        "uri": "sip:1080@127.0.0.1",
        "display": "Front Desk",
        "source": "pai",
        "verified": True,
    }
    assert answered["remote_display"] == "Front Desk"
    # The warning beep (1400 Hz) is what the earpiece played: sipp itself sends no audio.
    phone.wait_for(
        lambda s: any(c.get("warning_tone") for c in s["calls"]), 5, "intercom warning beep"
    )
    opened = re.search(r"playback to .* at (\d+) Hz", phone.log())
    assert opened, "the phone never opened its playback device"
    rate = int(opened.group(1))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # the device writes the beep out in real time
        pcm = np.frombuffer(phone.alsa.playback.read_bytes(), dtype="<i2") / 32768
        loud = np.flatnonzero(np.abs(pcm) > 0.05)
        if loud.size > rate // 10:
            break
        time.sleep(0.1)
    assert loud.size > rate // 10, f"no beep played ({loud.size} loud samples)"
    freq = dominant_frequency(pcm[loud[0] : loud[-1] + 1], rate)
    assert abs(freq - 1400) < 20, freq


def test_anonymous_call_carries_no_identifying_header(
    kamailio: Kamailio,
    phones: Callable[..., PhoneProcess],
    make_baresip: Any,
    sniffer: Callable[[int], Sniffer],
    tmp_path: Path,
) -> None:
    callee: Baresip = make_baresip("1069", kamailio=kamailio)
    phone = desk_phone(phones, kamailio, "1068", tmp_path, {"privacy": {"header": ["id"]}})
    capture = sniffer(phone.sip_port)
    code, body = phone.post("/api/dial/anonymous", {"number": "1069"})
    assert code == 201, body
    callee.wait_event("CALL_INCOMING", 10)
    phone.call_action(body["call"], "hangup")
    invites = [p for p in capture.close() if p.startswith(b"INVITE ")]
    assert invites, "no INVITE captured"
    head = invites[0].split(b"\r\n\r\n", 1)[0].decode()
    headers = [line.split(":", 1) for line in head.split("\r\n")[1:]]
    names = {name.strip().lower() for name, _ in headers}
    for name, value in headers:
        for secret in ("1068", "Interop", "deskphone"):
            assert secret.lower() not in value.lower(), f"{name} reveals {secret}: {value}"
    values = {name.strip().lower(): value.strip() for name, value in headers}
    assert values["from"].startswith('"Anonymous" <sip:anonymous@anonymous.invalid>;tag=')
    assert "@" not in values["call-id"] and "127.0.0.1" not in values["call-id"]
    assert values["contact"].startswith("<sip:127.0.0.1:")  # no user part (no GRUU here)
    assert values["privacy"] == "id"
    assert not names & {
        "user-agent",
        "organization",
        "call-info",
        "subject",
        "p-preferred-identity",
    }


def test_group_and_directed_pickup_dial_the_feature_codes(
    kamailio: Kamailio, phones: Callable[..., PhoneProcess], tmp_path: Path
) -> None:
    """Pickup by PBX feature code: the INVITE goes to the code (the lab Kamailio has no pickup
    service, so it answers 404 - the point is what the phone dialled)."""
    phone = desk_phone(
        phones,
        kamailio,
        "1073",
        tmp_path,
        {
            "blf": {"group_pickup_code": "*8", "pickup_code": "**"},
            "keys": [{"key": "LINE_4", "type": "speeddial", "target": "*97"}],
        },
    )
    code, group = phone.post("/api/pickup", {})
    assert code == 201 and group["target"] == "*8", group
    done = phone.wait_call(
        lambda c: c["id"] == group["call"] and c["state"] == "ended", 10, "group pickup"
    )
    assert done["remote"] == "sip:*8@127.0.0.1" and done["end_status"] == 404
    code, directed = phone.post("/api/pickup", {"extension": "1062"})
    assert code == 201 and directed["target"] == "**1062", directed
    code, err = phone.post("/api/pickup", {"extension": "10 62"})
    assert code == 400 and "extension" in err["error"]
    # A speed-dial key dials its target; an unknown key is 404.
    code, speed = phone.post("/api/blf/LINE_4")
    assert code == 200 and phone.call(speed["call"])["remote"] == "sip:*97@127.0.0.1", speed
    code, err = phone.post("/api/blf/LINE_9")
    assert code == 404 and "LINE_9" in err["error"]


def test_server_side_dnd_and_forwarding_dial_feature_codes(
    kamailio: Kamailio, phones: Callable[..., PhoneProcess], tmp_path: Path
) -> None:
    """With feature codes configured, DND and forwarding are the PBX's: the phone dials the
    code (with the target appended) instead of refusing/redirecting calls itself."""
    phone = desk_phone(
        phones,
        kamailio,
        "1074",
        tmp_path,
        {
            "dnd": {"on_code": "*78", "off_code": "*79"},
            "forward": {"codes": {"always": "*72", "always_off": "*73"}},
        },
    )

    def dialled() -> list[str]:
        return [c["remote"] for c in phone.status()["calls"]]

    assert phone.post("/api/dnd", {"enabled": True})[0] == 200
    code, body = phone.post("/api/forward", {"always": "1070"})
    assert code == 200 and body["forward"]["always"] == "1070"
    code, body = phone.post("/api/forward", {"always": None})
    assert code == 200 and body["forward"]["always"] is None
    status = phone.wait_for(lambda s: len(s["calls"]) == 3, 5, "three feature-code calls")
    assert dialled() == ["sip:*78@127.0.0.1", "sip:*721070@127.0.0.1", "sip:*73@127.0.0.1"]
    assert status["dnd"] is True  # as asked of the PBX; the phone itself refuses nothing
    code, err = phone.post("/api/forward", {"always": "sip:1070@elsewhere"})
    assert code == 400 and "feature code" in err["error"]
