"""BLF against a real Kamailio presence server (issue 5, acceptance 1).

Kamailio with presence, presence_dialoginfo, pua, pua_dialoginfo and dialog (presence_kamailio.py)
publishes the dialog state of every call it proxies. Deskphone A (1061) has a BLF key on 1062 (a
real baresip). Deskphone B (1063) calls 1062; A's status must show 1062 go idle -> ringing ->
talking -> idle as baresip answers and B hangs up, with the LED modes of each state; then B
calls again and A presses the BLF key while it rings: A's INVITE with Replaces;early-only goes
to B, B answers A without ringing and CANCELs the call to baresip (directed pickup, RFC 5359
2.16). The same presence server also proves park (REFER to the orbit, the park key turns
``parked``) and the MWI subscription (RFC 3842) end to end. Users 1061-1080 are this area's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require_tool
from tests.interop.baresip import Baresip
from tests.interop.certs import TestPKI
from tests.interop.phone import PhoneProcess
from tests.interop.presence_kamailio import PresenceKamailio
from tests.interop.sipp import SippResult
from tests.interop.sniff import Sniffer
from tests.interop.test_calls_baresip import alsa_files


@pytest.fixture(scope="module")
def kamailio_presence(
    tmp_path_factory: pytest.TempPathFactory, pki: TestPKI
) -> Iterator[PresenceKamailio]:
    binary = require_tool("kamailio")
    instance = PresenceKamailio(
        tmp_path_factory.mktemp("kamailio-presence"), pki, binary=binary, max_subscription=12
    )
    instance.start()
    yield instance
    instance.stop()


def account(kam: PresenceKamailio, user: str, transport: str = "udp") -> dict[str, Any]:
    return {
        "id": "line1",
        "user": user,
        "password": kam.users[user],
        "domain": kam.domain,
        "registrar": kam.uri(transport),
        "expires": 300,
    }


def blf_of(status: dict[str, Any], key: str = "LINE_2") -> dict[str, Any]:
    return next(b for b in status["blf"] if b["key"] == key)


def test_blf_follows_a_monitored_line_and_picks_up_while_it_rings(
    kamailio_presence: PresenceKamailio,
    phones: Callable[..., PhoneProcess],
    make_baresip: Any,
) -> None:
    kam = kamailio_presence
    callee: Baresip = make_baresip("1062", kamailio=kam)
    # The pickup group's secret: B challenges A in realm "deskphone" and A answers with this
    # peer credential, never its PBX password (threat-model "Transitive credential leak").
    pickup_secret = "pickup-group-secret-1061"
    watcher = phones(
        [
            account(kam, "1061")
            | {"peer_credentials": [{"realm": "deskphone", "user": "1061", "password": pickup_secret}]}
        ],
        sections={
            "keys": [{"key": "LINE_2", "type": "blf", "target": "1062", "label": "Bob"}],
            "blf": {"expires": 120, "leds": {"talking": "steady"}},
            "mwi": {"subscribe": False},
        },
    )
    caller = phones(
        [account(kam, "1063")],
        sections={
            # 1061 may take over 1063's calls (a pickup group), proven by Digest (T7).
            "transfer": {"allow_from": [kam.aor("1061")], "auth_users": {"1061": pickup_secret}},
            "mwi": {"subscribe": False},
        },
    )
    watcher.wait_state("registered", 15)
    caller.wait_state("registered", 15)

    seen: list[str] = []

    def state_is(state: str) -> Callable[[dict[str, Any]], bool]:
        def check(status: dict[str, Any]) -> bool:
            entry = blf_of(status)
            if not seen or seen[-1] != entry["state"]:
                seen.append(entry["state"])
            return entry["state"] == state  # type: ignore[no-any-return]

        return check

    status = watcher.wait_for(state_is("idle"), 15, "BLF idle after the first NOTIFY")
    assert blf_of(status)["led"] == "off"
    assert blf_of(status)["target"] == kam.aor("1062")

    # idle -> ringing -> talking -> idle, driven by a real call through Kamailio.
    first = caller.dial("1062")
    callee.wait_event("CALL_INCOMING", 10)
    status = watcher.wait_for(state_is("ringing"), 10, "BLF ringing")
    assert blf_of(status)["led"] == "fast_flash"
    assert "1063" in (blf_of(status)["caller"] or ""), blf_of(status)  # who rings 1062
    callee.answer()
    status = watcher.wait_for(state_is("talking"), 10, "BLF talking")
    assert blf_of(status)["led"] == "on"
    caller.call_action(first["id"], "hangup")
    watcher.wait_for(state_is("idle"), 15, "BLF idle after the call")
    assert seen == ["idle", "ringing", "talking", "idle"], seen

    # Pickup: the line rings again, A presses the key and takes the call.
    second = caller.dial("1062")
    callee.wait_event("CALL_INCOMING", 10)
    watcher.wait_for(state_is("ringing"), 10, "BLF ringing again")
    code, pressed = watcher.post("/api/blf/LINE_2")
    assert code == 200, pressed
    assert pressed["action"] == "pickup"
    mine = watcher.wait_call(
        lambda c: c["id"] == pressed["call"] and c["state"] == "connected", 15, "picked up"
    )
    assert mine["remote"].startswith("sip:1063@")
    # B's call to 1062 was replaced: B CANCELled it, the new call from A is B's line now.
    caller.wait_call(
        lambda c: c["id"] == second["id"] and c["state"] == "ended", 10, "B's ringing call ended"
    )
    callee.wait_event("CALL_CLOSED", 10)
    b_calls = caller.status()["calls"]
    assert any(c["state"] == "connected" and c["direction"] == "incoming" for c in b_calls)
    watcher.call_action(mine["id"], "hangup")
    # Kamailio grants 12 s: the subscription was refreshed in its dialog and still reports.
    status = watcher.wait_for(
        lambda s: blf_of(s)["subscription"]["refreshes"] >= 1 and blf_of(s)["state"] == "idle",
        20,
        "a refreshed subscription showing the line idle again",
    )
    assert blf_of(status)["subscription"]["state"] == "active"


def test_park_by_refer_shows_the_orbit_parked_and_the_key_retrieves(
    kamailio_presence: PresenceKamailio,
    phones: Callable[..., PhoneProcess],
    make_baresip: Any,
    sniffer: Callable[[int], Sniffer],
    tmp_path: Path,
) -> None:
    """Park (RFC 5359 2.15 by blind transfer): the phone REFERs its peer to the park orbit
    (``[park] uri``, here a baresip standing in for the PBX's orbit); the park key monitoring
    the orbit turns ``parked``; pressing it retrieves (calls the orbit)."""
    kam = kamailio_presence
    make_baresip("1075", kamailio=kam, auto_answer=True)  # the orbit
    parked: Baresip = make_baresip("1077", kamailio=kam, auto_answer=True)
    files = alsa_files(tmp_path / "alsa-1076")
    phone = phones(
        [account(kam, "1076")],
        env=files.env,
        audio={"codecs": ["PCMU"]},
        sections={
            "keys": [{"key": "LINE_3", "type": "park", "target": "1075"}],
            "park": {"uri": kam.aor("1075")},
            "mwi": {"subscribe": False},
        },
    )
    phone.wait_state("registered", 15)
    phone.wait_for(lambda s: blf_of(s, "LINE_3")["state"] == "idle", 15, "orbit idle")
    capture = sniffer(phone.sip_port)
    call = phone.dial("1077")
    phone.wait_call(lambda c: c["id"] == call["id"] and c["state"] == "connected", 10, "talking")
    parked.wait_event("CALL_ESTABLISHED", 10)

    code, body = phone.post(f"/api/park/{call['id']}")
    assert code == 200 and body["target"] == kam.aor("1075"), body
    status = phone.wait_for(
        lambda s: blf_of(s, "LINE_3")["state"] == "parked", 15, "the orbit shows a parked call"
    )
    assert blf_of(status, "LINE_3")["led"] == "slow_flash"
    phone.wait_call(lambda c: c["id"] == call["id"] and c["state"] == "ended", 15, "handed over")
    refers = [p for p in dict.fromkeys(capture.close()) if p.startswith(b"REFER ")]
    assert refers and f"Refer-To: <{kam.aor('1075')}>".encode() in refers[0]

    code, pressed = phone.post("/api/blf/LINE_3")
    assert code == 200 and pressed["action"] == "retrieve", pressed
    assert phone.call(pressed["call"])["remote"] == kam.aor("1075")
    phone.call_action(pressed["call"], "hangup")


@pytest.mark.parametrize("transport", ["udp", "tls"])
def test_mwi_subscription_to_a_real_presence_server(
    kamailio_presence: PresenceKamailio,
    phones: Callable[..., PhoneProcess],
    sipp: Callable[..., SippResult],
    transport: str,
) -> None:
    """The phone SUBSCRIBEs to message-summary for its own AOR (RFC 3842); when the voicemail
    system PUBLISHes 2 new / 4 old messages, the NOTIFY on that subscription lights MWI. Over
    TLS the phone has no TLS listener: the NOTIFY must come back on its own connection (T11)."""
    kam = kamailio_presence
    user = "1078" if transport == "udp" else "1079"
    phone = phones(
        [account(kam, user, transport)],
        sip={"tls_ca": str(kam.ca_cert)},
        sections={"mwi": {"expires": 120}},
    )
    phone.wait_state("registered", 15)
    status = phone.wait_for(
        lambda s: (s["mwi"]["subscription"] or {}).get("state") == "active", 15, "MWI subscribed"
    )
    assert status["mwi"]["waiting"] is False
    published = sipp("mwi_publish.xml", kam.udp_addr, keys={"to": user, "new": "2", "old": "4"})
    assert published.ok, published.explain()
    status = phone.wait_for(lambda s: s["mwi"]["new"] == 2, 10, "MWI count from the NOTIFY")
    assert status["mwi"]["waiting"] is True and status["mwi"]["old"] == 4
