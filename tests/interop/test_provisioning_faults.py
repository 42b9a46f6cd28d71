"""Issue 7 acceptance 4: kill -9 at every step of applying a config and of installing firmware.

The phone runs with ``DESKPHONE_FAULT=@file``: the file names the step at which the process
SIGKILLs itself (files.fault). Each round restarts the phone with no fault armed and checks it
came up on a complete, valid config (registered at Kamailio, status consistent with a serial it
accepted) and a working firmware slot; then arms the next step, publishes something newer and
sends check-sync through Kamailio, and waits for the kill. Kamailio users 1112-1113.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from firmware.provisioning.firmware_slots import Slots
from tests.interop.kamailio import Kamailio
from tests.interop.provisioning_lab import BootstrapPhone, Lab, send_check_sync
from tests.interop.test_provisioning_firmware import Launcher, factory_slots
from tools.provision.bundle import build_bundle

CONFIG_STEPS = [
    "config:verified",
    "config:candidate:tmp",
    "config:candidate:renamed",
    "config:floor:tmp",
    "config:floor:renamed",
    "config:trial:tmp",
    "config:trial:renamed",
    "config:started",
    "config:promote:tmp",
    "config:promote:renamed",
    "config:promoted",
]
FIRMWARE_STEPS = [
    "firmware:downloaded",
    "firmware:verified",
    "firmware:unpacking",
    "firmware:unpacked",
    "firmware:installed",
    "firmware:trial-marker:tmp",
    "firmware:trial-marker:renamed",
    "firmware:switch:tmp",
    "firmware:switch:renamed",
    "firmware:booted:tmp",
    "firmware:booted:renamed",
    "firmware:commit:tmp",
    "firmware:commit:renamed",
]
# One step per distinct on-disk state by default (the steps left out differ from a neighbour only
# by a temp file that boot/startup removes); DESKPHONE_FAULT_MATRIX=full runs every step.
QUICK = {
    "config:verified",
    "config:candidate:tmp",
    "config:candidate:renamed",
    "config:floor:renamed",
    "config:trial:renamed",
    "config:started",
    "config:promote:tmp",
    "config:promote:renamed",
    "firmware:downloaded",
    "firmware:unpacking",
    "firmware:installed",
    "firmware:trial-marker:renamed",
    "firmware:switch:renamed",
    "firmware:booted:renamed",
    "firmware:commit:tmp",
    "firmware:commit:renamed",
}


def steps(all_steps: list[str]) -> list[str]:
    if os.environ.get("DESKPHONE_FAULT_MATRIX") == "full":
        return all_steps
    return [s for s in all_steps if s in QUICK]


@pytest.fixture
def lab(tmp_path: Path, kamailio: Kamailio, request: pytest.FixtureRequest) -> Iterator[Lab]:
    the_lab = Lab(tmp_path, kamailio, request.param)
    yield the_lab
    the_lab.server.stop()


def wait_killed(proc: subprocess.Popen[bytes] | None, what: str, log: str = "") -> None:
    assert proc is not None
    try:
        rc = proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(
            f"{what}: the process did not die at the fault\n{log[-3000:]}"
        ) from None
    assert rc in (-signal.SIGKILL, 256 - signal.SIGKILL, -signal.SIGTERM, 1), (what, rc)


def check_sync(lab: Lab) -> None:
    status, reason = send_check_sync(lab.kamailio.udp_addr, lab.user, lab.kamailio.domain)
    assert status == 200, reason


def settled(status: dict[str, Any], latest: int) -> bool:
    """Registered, first sync done, and the newest serial applied or refused (no trial)."""
    prov = status["provisioning"]
    rejected = (prov["rejected"] or {}).get("serial")
    return bool(
        status["registrations"]
        and all(r["state"] == "registered" for r in status["registrations"])
        and prov["last_sync"] is not None
        and prov["source"] in ("server", "last known good")
        and (prov["serial"] == latest or rejected == latest)
    )


def came_up(phone: BootstrapPhone, names: dict[int, str], what: str) -> dict[str, Any]:
    """Registered, on a serial it accepted, with that serial's complete config."""
    latest = max(names)
    status = phone.wait_for(
        lambda s: settled(s, latest), 20, f"registered and settled after the kill at {what}"
    )
    serial = status["provisioning"]["serial"]
    assert status["device"]["name"] == names[serial], (what, serial, status["device"])
    return status  # type: ignore[no-any-return]


def fw_settled(status: dict[str, Any], desired: str) -> bool:
    """Registered on a committed slot that runs ``desired`` or has rolled ``desired`` back."""
    prov = status["provisioning"]
    slots = prov["firmware_slots"]
    if slots is None or slots["trial"] or prov["last_sync"] is None:
        return False
    last = slots["last"] or {}
    done = prov["firmware"] == desired or (
        last.get("event") == "rolled_back" and last.get("version") == desired
    )
    registered = all(r["state"] == "registered" for r in status["registrations"])
    return bool(done and registered and status["registrations"])


@pytest.mark.slow
@pytest.mark.parametrize("lab", ["1112"], indirect=True)
def test_kill_at_every_config_step(lab: Lab) -> None:
    armed = lab.root / "fault"
    armed.write_text("")
    names = {1: "Desk 1112"}
    env = {"DESKPHONE_FAULT": f"@{armed}"}
    for step in [*steps(CONFIG_STEPS), None]:
        phone = lab.phone(env).start()
        try:
            status = came_up(phone, names, str(step))
            if step is None:
                # the anti-rollback floor never went down: it is at least what runs
                assert status["provisioning"]["floor"] >= status["provisioning"]["serial"]
                break
            armed.write_text(step)
            serial = int(lab.fleet.device(lab.device_id)["serial"]) + 1
            lab.set_device_layer(device={"name": f"Name {serial}"})
            assert lab.render() == serial
            names[serial] = f"Name {serial}"
            check_sync(lab)
            wait_killed(phone.proc, step, phone.log())
            assert f"fault injection: SIGKILL at step {step}" in phone.log()
        finally:
            armed.write_text("")
            phone.kill()


@pytest.mark.slow
@pytest.mark.parametrize("lab", ["1113"], indirect=True)
def test_kill_at_every_firmware_step(lab: Lab, tmp_path: Path) -> None:
    slots_dir = factory_slots(tmp_path, "1.0")
    armed = lab.root / "fault"
    armed.write_text("")
    minor = 0
    bundle = build_bundle("1.x")
    for step in [*steps(FIRMWARE_STEPS), None]:
        launcher = Launcher(lab, slots_dir, health_timeout=20)
        launcher.env = {"DESKPHONE_FAULT": f"@{armed}"}
        launcher.spawn()
        try:
            status = launcher.wait_for(
                lambda s, want=f"1.{minor}" if minor else "1.0": fw_settled(s, want),
                40,
                f"up on a committed slot after the kill at {step}",
            )
            slots = Slots(slots_dir)
            running = status["provisioning"]["firmware"]
            assert running == slots.current_version()
            assert (slots_dir / slots.active() / "firmware" / "__main__.py").is_file()
            if step is None:
                break
            armed.write_text(step)
            minor += 1
            version = f"1.{minor}"
            lab.fleet.publish_firmware(version, bundle)  # the manifest names the version
            lab.set_device_layer(firmware={"version": version})
            lab.render()
            check_sync(lab)
            wait_killed(launcher.proc, step, launcher.log())
        finally:
            armed.write_text("")
            if launcher.proc is not None and launcher.proc.poll() is None:
                launcher.proc.send_signal(signal.SIGTERM)
                launcher.proc.wait(20)
