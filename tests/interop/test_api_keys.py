"""The action API's key and hook endpoints over real HTTP, driving real phone processes.

Two phones on loopback call each other directly (no PBX): Alice lifts the handset and keys
Bob's number through `POST /api/hook` and `POST /api/keys/...`; the INVITE is checked on the
wire, Bob's LCD, LEDs and ringer in his status, and so on through answer, hold and hang-up.
Auth failures, unknown keys and bad JSON get a clear 4xx (acceptance 4).
"""

from __future__ import annotations

import json
import tomllib
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from tests.interop.phone import TOKEN, PhoneProcess
from tests.interop.sniff import Sniffer


def _phone(workdir: Path, name: str, ui: dict[str, Any]) -> PhoneProcess:
    workdir.mkdir()
    phone = PhoneProcess(workdir, [], audio={"codecs": ["PCMU"]})
    doc = tomllib.loads(phone.config_path.read_text())
    doc["device"]["name"] = name
    doc["ui"] = ui
    doc["logging"] = {"level": "info"}
    phone.config_path.write_text(tomli_w.dumps(doc))
    return phone


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PhoneProcess, PhoneProcess]]:
    """Two phones for the module (starting a phone process costs seconds); each test leaves
    them idle."""
    tmp_path = tmp_path_factory.mktemp("api_keys")
    alice = _phone(tmp_path / "alice", "Alice", {})
    bob = _phone(tmp_path / "bob", "Bob", {})
    alice_uri = f"sip:alice@127.0.0.1:{alice.sip_port}"
    bob_uri = f"sip:bob@127.0.0.1:{bob.sip_port}"
    for phone, entry in (
        (alice, {"name": "Bob", "number": "2002", "uri": bob_uri}),
        (bob, {"name": "Alice", "number": "2001", "uri": alice_uri}),
    ):
        doc = tomllib.loads(phone.config_path.read_text())
        doc["ui"] = {"directory": [entry], "inter_digit_timeout": 2.0}
        phone.config_path.write_text(tomli_w.dumps(doc))
    started = []
    try:
        for phone in (alice, bob):
            started.append(phone.start())
        yield alice, bob
    finally:
        for phone in started:
            phone.kill()


def press(phone: PhoneProcess, key: str, **body: Any) -> dict[str, Any]:
    code, reply = phone.post(f"/api/keys/{key}", body)
    assert code == 200, reply
    return reply  # type: ignore[no-any-return]


def hook(phone: PhoneProcess, state: str) -> dict[str, Any]:
    code, reply = phone.post("/api/hook", {"state": state})
    assert code == 200, reply
    return reply  # type: ignore[no-any-return]


def lcd_is(line: int, text: str) -> Callable[[dict[str, Any]], bool]:
    return lambda s: s["lcd"][line] == text


def test_hook_and_keys_place_answer_hold_and_end_a_call(
    pair: tuple[PhoneProcess, PhoneProcess], sniffer: Callable[[int], Sniffer]
) -> None:
    alice, bob = pair
    wire = sniffer(alice.sip_port)
    assert alice.status()["lcd"][1] == "Direct calls only"
    reply = hook(alice, "offhook")
    assert reply["lcd"][:2] == ["Dial:", "_"]
    assert reply["ui"]["audio_path"] == "handset"
    for digit in "2002":  # [2-9]xxx in the default digit map: sent on the 4th digit
        press(alice, f"DIGIT_{digit}")
    bob.wait_for(lcd_is(0, "Incoming call"), 10, "Bob's LCD shows the call")
    invites = [p for p in wire.payloads if p.startswith(b"INVITE sip:bob@127.0.0.1")]
    assert invites, "no INVITE to Bob on the wire"
    status = bob.status()
    assert status["lcd"][1] == "Alice"  # named from Bob's directory
    assert status["leds"]["LINE_1"] == "fast_flash" and status["ui"]["ringer"] is True
    alice.wait_for(lcd_is(1, "Bob"), 5, "Alice sees Bob ringing")

    reply = press(bob, "SPEAKER")  # answer hands-free
    assert reply["ui"]["audio_path"] == "speaker" and reply["leds"]["SPEAKER"] == "on"
    alice.wait_for(lcd_is(0, "Bob"), 10, "Alice connected to Bob")
    assert alice.status()["leds"]["LINE_1"] == "on"

    press(alice, "HOLD")
    alice.wait_for(lcd_is(0, "On hold"), 10, "Alice's call on hold")
    bob.wait_for(lcd_is(2, "Held by Alice"), 10, "Bob sees he is held")
    assert [p for p in wire.payloads if p.startswith(b"INVITE") and b"a=sendonly" in p]
    press(alice, "HOLD")
    alice.wait_for(lcd_is(0, "Bob"), 10, "resumed")

    hook(alice, "onhook")
    bob.wait_for(lambda s: s["lcd"][0].startswith("Bob "), 10, "Bob back to idle")
    assert bob.status()["ui"]["audio_path"] == "none"
    assert bob.status()["ui"]["history"][0] == {
        "kind": "received",
        "number": "deskphone",
        "name": "Alice",
    }
    assert alice.status()["ui"]["history"][0]["kind"] == "placed"
    assert any(p.startswith(b"BYE ") for p in wire.payloads)


def test_auth_bad_keys_and_bad_json(pair: tuple[PhoneProcess, PhoneProcess]) -> None:
    alice, _ = pair
    assert alice.post("/api/keys/HOLD", {}, token=None)[0] == 401
    assert alice.post("/api/hook", {"state": "offhook"}, token="wrong-token-0123456789")[0] == 401
    code, reply = alice.post("/api/keys/BOGUS", {})
    assert code == 400 and "BOGUS" in reply["error"]
    code, reply = alice.post("/api/keys/HOOK", {})
    assert code == 400 and "/api/hook" in reply["error"]
    code, reply = alice.post("/api/keys/HOLD", {"long": "yes"})
    assert code == 400 and '"long"' in reply["error"]
    code, reply = alice.post("/api/keys/HOLD", {"lenght": True})
    assert code == 400 and "lenght" in reply["error"]
    code, reply = alice.post("/api/hook", {"state": "up"})
    assert code == 400 and "offhook" in reply["error"]
    req = urllib.request.Request(
        f"http://127.0.0.1:{alice.api_port}/api/hook",
        data=b"{not json",
        method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"},
    )
    try:
        urllib.request.urlopen(req, timeout=5)
        raise AssertionError("bad JSON was accepted")
    except urllib.error.HTTPError as e:
        assert e.code == 400 and "not valid JSON" in json.loads(e.read())["error"]
    # DND from its key: the phone's DND (issue 5's feature) follows, with its LED and indicator
    reply = press(alice, "DND")
    assert reply["leds"]["DND"] == "on" and "DND" in reply["lcd"][2]
    assert alice.status()["dnd"] is True
    press(alice, "DND")
    assert alice.status()["dnd"] is False
    # a long press reaches the UI: long 0 while dialling is '+'
    hook(alice, "offhook")
    assert press(alice, "DIGIT_0", long=True)["lcd"][1] == "+_"
    assert alice.status()["lcd"][0] == "Dial:"
    assert hook(alice, "onhook")["ui"]["screen"] == "idle"
