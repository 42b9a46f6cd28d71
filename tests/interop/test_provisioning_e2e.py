"""Issue 7, phone side, end to end on loopback: a phone started from its bootstrap fetches its
signed config over mTLS from the real config server, registers with the real Kamailio using the
provisioned (encrypted) credentials, resyncs on check-sync sent through Kamailio, and refuses
bad documents with a clear reason while it keeps working (acceptance 1 and 3).

Kamailio users 1101-1120 (provisioning range).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from tests.interop.kamailio import Kamailio
from tests.interop.phone import ROOT, TOKEN, PhoneProcess, free_port
from tests.interop.provisioning_lab import BootstrapPhone, Lab, send_check_sync, tamper


@pytest.fixture
def lab(tmp_path: Path, kamailio: Kamailio, request: pytest.FixtureRequest) -> Iterator[Lab]:
    user, trial = request.param if isinstance(request.param, tuple) else (request.param, 10.0)
    the_lab = Lab(tmp_path, kamailio, user, trial_timeout=trial)
    yield the_lab
    the_lab.server.stop()


@pytest.fixture
def phone(lab: Lab) -> Iterator[BootstrapPhone]:
    p = lab.phone()
    yield p
    if p.proc is not None and p.proc.poll() is None:
        try:
            p.terminate(timeout=8)
        except Exception:  # noqa: BLE001 - killed below
            pass
    p.kill()


def check_sync_via_kamailio(lab: Lab) -> None:
    status, reason = send_check_sync(lab.kamailio.udp_addr, lab.user, lab.kamailio.domain)
    assert status == 200, reason


def wait_provisioning(
    phone: BootstrapPhone, predicate: Any, what: str, timeout: float = 8.0
) -> dict[str, Any]:
    status = phone.wait_for(lambda s: predicate(s["provisioning"]), timeout, what)
    return status["provisioning"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("lab", ["1101"], indirect=True)
def test_bootstrap_fetch_register_check_sync(lab: Lab, phone: BootstrapPhone) -> None:
    phone.start()
    reg = phone.wait_state("registered", 15)
    assert reg["aor"] == f"sip:1101@{lab.kamailio.domain}"
    contacts = lab.kamailio.contacts(f"sip:1101@{lab.kamailio.domain}")
    assert any(str(lab.sip_port) in c["Address"] for c in contacts), contacts
    prov = wait_provisioning(phone, lambda p: p["source"] == "server", "trial passed")
    assert (prov["serial"], prov["last_error"]) == (1, None)
    assert phone.status()["device"]["name"] == "Desk 1101"
    # no plaintext password on the phone's disk: the stored document keeps it encrypted
    stored = (lab.state / "provisioning" / "good.json").read_text()
    assert lab.kamailio.users["1101"] not in stored

    # the status report reached the server (sent after the first sync)
    report_path = lab.fleet.status_dir / f"{lab.device_id}.json"
    phone.wait_for(lambda s: report_path.exists(), 10, "status report stored by the server")
    report = json.loads(report_path.read_text())
    assert (report["serial"], report["registration"]) == (1, "registered")

    # change a setting centrally, render, check-sync through Kamailio -> applied within seconds
    lab.set_device_layer(device={"name": "Front desk"})
    assert lab.render() == 2
    check_sync_via_kamailio(lab)
    phone.wait_for(lambda s: s["device"]["name"] == "Front desk", 8, "new name applied")
    prov = wait_provisioning(phone, lambda p: p["serial"] == 2, "serial 2")
    phone.wait_state("registered", 10)

    # check-sync from anyone but the registrar's flow: 403 and no resync
    lab.set_device_layer(device={"name": "Sneaky"})
    lab.render()
    status, reason = send_check_sync(("127.0.0.1", lab.sip_port), "1101", "127.0.0.1")
    assert status == 403 and "registrar" in reason
    assert phone.provisioning()["serial"] == 2
    assert "check-sync from" in phone.log() and "refused" in phone.log()

    # factory reset: the config goes, identity and floor stay; the phone fetches afresh and says so
    assert phone.terminate() == 0
    boot = str(lab.boot / "bootstrap.toml")
    reset = subprocess.run(
        [sys.executable, "-m", "firmware", "factory-reset", "--bootstrap", boot,
         "--state-dir", str(lab.state), "--reason", "moved to another desk"],
        cwd=ROOT, capture_output=True, text=True, timeout=30,
    )
    assert reset.returncode == 0 and "good.json" in reset.stdout, reset.stderr
    again = lab.phone().start()
    try:
        again.wait_for(lambda s: "Reset: config #3" in " ".join(s["lcd"]), 5, "LCD says reset")
        prov = wait_provisioning(again, lambda p: p["source"] == "server", "fetched after reset")
        assert prov["serial"] == 3 and prov["floor"] == 3
        assert prov["factory_reset"]["reason"] == "moved to another desk"
        assert again.status()["device"]["name"] == "Sneaky"
    finally:
        again.terminate()


@pytest.mark.parametrize("lab", ["1102"], indirect=True)
def test_bad_documents_are_refused_and_the_phone_keeps_working(
    lab: Lab, phone: BootstrapPhone
) -> None:
    phone.start()
    phone.wait_state("registered", 15)
    good = lab.document_path.read_text()

    def refused(expected: str) -> None:
        check_sync_via_kamailio(lab)
        prov = wait_provisioning(
            phone, lambda p: expected in (p["last_error"] or ""), f"refusal {expected!r}"
        )
        assert prov["serial"] == 1, prov
        assert phone.registration()["state"] == "registered"

    # tampered: a value changed after signing
    tamper(lab.document_path, lambda p: p["config"]["device"].update(name="Evil"))
    refused("signature does not verify")
    # another device's document (validly signed by the fleet, for desk-other)
    lab.document_path.write_text(lab.other_device_document())
    refused("issued for device desk-other, this is desk-1102")
    # expired: a newer serial, but already past its expiry
    lab.set_device_layer(device={"name": "Expired"})
    lab.render(validity=10, now=1_000_000)
    refused("expired at 1970-01-12")
    # older serial: serial 3 applied, then serial 1 served again
    lab.set_device_layer(device={"name": "Three"})
    assert lab.render() == 3
    check_sync_via_kamailio(lab)
    wait_provisioning(phone, lambda p: p["serial"] == 3, "serial 3")
    phone.wait_state("registered", 10)
    lab.document_path.write_text(good)
    check_sync_via_kamailio(lab)
    prov = wait_provisioning(
        phone, lambda p: "serial 1 is older than the applied serial 3" in (p["last_error"] or ""),
        "older serial refused",
    )
    assert prov["serial"] == 3
    assert phone.status()["device"]["name"] == "Three"


@pytest.mark.parametrize("lab", [("1103", 4.0)], indirect=True)
def test_config_that_cannot_register_rolls_back(lab: Lab, phone: BootstrapPhone) -> None:
    phone.start()
    phone.wait_state("registered", 15)
    lab.set_device_layer(accounts=[lab.account(password="wrong-password")])
    assert lab.render() == 2
    check_sync_via_kamailio(lab)
    prov = wait_provisioning(
        phone,
        lambda p: "rolled back" in (p["last_error"] or ""),
        "rollback",
        timeout=lab.trial_timeout + 10,
    )
    assert prov["serial"] == 1 and prov["source"] == "last known good"
    assert "config serial 2 could not register within 4 s" in prov["last_error"]
    assert prov["rejected"]["serial"] == 2
    phone.wait_state("registered", 10)


@pytest.mark.parametrize("lab", ["1104"], indirect=True)
def test_wrong_client_certificate_and_offline_keep_last_known_good(
    lab: Lab, phone: BootstrapPhone
) -> None:
    phone.start()
    phone.wait_state("registered", 15)
    assert phone.terminate() == 0
    # a client certificate from another CA: the server refuses the TLS handshake
    from tools.provision import pki

    other_ca = pki.make_ca("rogue CA")
    key = pki.new_key()
    cert = pki.device_cert(*other_ca, lab.device_id, key.public_key())
    (lab.boot / "rogue.crt").write_bytes(pki.cert_pem(cert))
    (lab.boot / "rogue.key").write_bytes(pki.key_pem(key))
    lab.write_bootstrap(client_cert="rogue.crt", client_key="rogue.key")
    again = lab.phone().start()
    try:
        again.wait_state("registered", 15)
        prov = wait_provisioning(again, lambda p: p["last_error"], "TLS refusal")
        assert prov["serial"] == 1 and prov["source"] == "last known good"
        assert "cannot fetch" in prov["last_error"] or "TLS" in prov["last_error"]
    finally:
        again.terminate()
    # offline: the config server is gone; the phone still comes up on its last known good
    lab.server.stop()
    offline = lab.phone().start()
    try:
        offline.wait_state("registered", 15)
        prov = wait_provisioning(offline, lambda p: p["last_error"], "fetch error")
        assert prov["serial"] == 1 and "cannot fetch" in prov["last_error"]
    finally:
        offline.terminate()


def _cli(*args: str) -> str:
    """Run a fleet tool the way an admin does (python -m keeps it independent of entry points)."""
    proc = subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, f"{args}: {proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_fleet_tools_flash_serve_and_a_phone_from_its_boot_partition(
    tmp_path: Path, kamailio: Kamailio
) -> None:
    """Acceptance 1 with the admin's commands: init, add-device, flash into a boot directory,
    render, serve; the phone started from that bootstrap registers with the provisioned
    credentials (user 1105)."""
    fleet, boot, state = tmp_path / "fleet", tmp_path / "bootfs", tmp_path / "state"
    boot.mkdir()
    sip_port, api_port, https_port = free_port(), free_port(), free_port()
    _cli("tools.provision.cli", "init", str(fleet), "--host", "127.0.0.1")
    common = {
        "sip": {"listen": [f"udp:127.0.0.1:{sip_port}"], "retry_base": 1.0},
        "api": {"listen": f"127.0.0.1:{api_port}", "token": TOKEN},
    }
    (fleet / "config" / "common.toml").write_bytes(tomli_w.dumps(common).encode())
    host, port = kamailio.udp_addr
    account = (
        f"id=line1,user=1105,password={kamailio.users['1105']},domain={kamailio.domain},"
        f"registrar=sip:{host}:{port}"
    )
    _cli("tools.provision.cli", "add-device", str(fleet), "--id", "desk-1105", "--account", account)
    url = f"https://127.0.0.1:{https_port}"
    _cli("tools.flash.cli", str(fleet), "--id", "desk-1105", "--url", url, "--no-firmware",
         "--state-dir", str(state), "--boot", str(boot))
    _cli("tools.provision.cli", "render", str(fleet))
    server = subprocess.Popen(
        [sys.executable, "-m", "tools.provision.cli", "serve", str(fleet), "--listen",
         f"127.0.0.1:{https_port}"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=(tmp_path / "serve.log").open("w"), text=True,
    )
    phone: PhoneProcess | None = None
    try:
        assert server.stdout is not None
        assert server.stdout.readline().startswith("serving https://127.0.0.1:")
        phone = PhoneProcess.__new__(PhoneProcess)
        phone.api_port, phone.log_path, phone.env = api_port, tmp_path / "phone.log", {}
        phone._log = phone.log_path.open("ab")
        phone.proc = subprocess.Popen(
            [sys.executable, "-m", "firmware", "run", "--bootstrap",
             str(boot / "deskphone" / "bootstrap.toml")],
            cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
            stdout=phone._log, stderr=subprocess.STDOUT,
        )
        reg = phone.wait_state("registered", 20)
        assert reg["aor"] == f"sip:1105@{kamailio.domain}"
        assert kamailio.contacts(f"sip:1105@{kamailio.domain}")
        prov = phone.wait_for(lambda s: s["provisioning"]["source"] == "server", 10)
        assert prov["provisioning"]["serial"] == 1
        table = json.loads(_cli("tools.provision.cli", "status", str(fleet), "--json"))
        assert "desk-1105" in json.dumps(table) and "registered" in json.dumps(table)
    finally:
        if phone is not None and phone.proc is not None:
            phone.terminate()
        server.send_signal(signal.SIGTERM)
        server.wait(10)


def test_the_same_tree_from_nginx_provisions_the_phone(tmp_path: Path, kamailio: Kamailio) -> None:
    """Acceptance 2 from the phone's side: nginx (mTLS config from the fleet tool) instead of
    `deskphone-provision serve`; fetch, register, central change + check-sync (user 1106)."""
    lab = Lab(tmp_path, kamailio, "1106", server="nginx")
    phone = lab.phone()
    try:
        phone.start()
        phone.wait_state("registered", 15)
        prov = wait_provisioning(phone, lambda p: p["source"] == "server", "first config")
        assert prov["serial"] == 1 and prov["server"].endswith(str(lab.server.port))
        lab.set_device_layer(device={"name": "Via nginx"})
        assert lab.render() == 2
        check_sync_via_kamailio(lab)
        phone.wait_for(lambda s: s["device"]["name"] == "Via nginx", 8, "applied from nginx")
        # unchanged: nginx answers 304 to the ETag, nothing is re-applied
        seen = phone.log().count("document unchanged (304)")
        check_sync_via_kamailio(lab)
        phone.wait_for(
            lambda s: phone.log().count("document unchanged (304)") > seen, 8, "304 from nginx"
        )
        assert phone.provisioning()["serial"] == 2
    finally:
        if phone.proc is not None:
            phone.terminate()
        lab.server.stop()
