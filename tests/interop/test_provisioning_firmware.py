"""Issue 7 acceptance 5: signed firmware updates into A/B slots, health-checked, committed, or
rolled back by themselves - with the real slot launcher, config server and Kamailio.

The phone runs under ``python -m firmware.runtime.firmware_update --slots DIR -- run --bootstrap``.
Firmware bundles are built by the fleet tool from this source tree; the broken build is the same
tree whose ``firmware/__main__.py`` dies at start, so it can never pass its health check.
Kamailio users 1101-1120 (provisioning range; this file: 1110-1111).
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from firmware.provisioning.firmware_slots import Slots
from tests.interop.kamailio import Kamailio
from tests.interop.phone import ROOT
from tests.interop.provisioning_lab import BootstrapPhone, Lab, send_check_sync
from tools.provision.bundle import build_bundle


def broken_bundle(tmp: Path, version: str) -> bytes:
    """This source tree with a firmware/__main__.py that exits at once."""
    src = tmp / f"src-{version}"
    for pkg in ("firmware", "audio", "board"):
        if (ROOT / pkg).is_dir():
            shutil.copytree(ROOT / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    (src / "pyproject.toml").write_bytes((ROOT / "pyproject.toml").read_bytes())
    (src / "firmware" / "__main__.py").write_text(
        'raise SystemExit("deskphone: this build is broken on purpose (rollback test)")\n'
    )
    return build_bundle(version, src)


class Launcher(BootstrapPhone):
    """The slot launcher running the provisioned phone (status through the phone's API)."""

    def __init__(self, lab: Lab, slots: Path, health_timeout: float = 20.0) -> None:
        super().__init__(lab, {})
        self.slots = slots
        self.health_timeout = health_timeout

    def spawn(self) -> Launcher:
        env = dict(os.environ, PYTHONPATH=str(ROOT), **self.env)
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "firmware.runtime.firmware_update",
                "--slots",
                str(self.slots),
                "--health-timeout",
                str(self.health_timeout),
                "--",
                "run",
                "--bootstrap",
                str(self.lab.boot / "bootstrap.toml"),
                "--state-dir",
                str(self.lab.state),
            ],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        return self

    def wait_firmware(self, predicate: Any, timeout: float, what: str) -> dict[str, Any]:
        """Poll across restarts (the API goes away while the launcher boots another slot)."""
        return self.wait_for(lambda s: predicate(s["provisioning"]), timeout, what)[
            "provisioning"
        ]


@pytest.fixture
def lab(tmp_path: Path, kamailio: Kamailio) -> Iterator[Lab]:
    the_lab = Lab(tmp_path, kamailio, "1110")
    yield the_lab
    the_lab.server.stop()


def factory_slots(tmp: Path, version: str) -> Path:
    """The flashed image: slot a holds ``version`` of this tree, current -> a."""
    factory = tmp / "factory"
    with tarfile.open(fileobj=io.BytesIO(build_bundle(version)), mode="r:gz") as tar:
        tar.extractall(factory, filter="data")
    slots = Slots(tmp / "slots")
    slots.init_from_tree(factory / f"deskphone-{version}", version)
    return slots.root


def test_update_commits_then_a_broken_update_rolls_back(lab: Lab, tmp_path: Path) -> None:
    slots_dir = factory_slots(tmp_path, "1.0")
    lab.fleet.publish_firmware("1.1", build_bundle("1.1"))
    lab.set_device_layer(firmware={"version": "1.1"})
    lab.render()
    launcher = Launcher(lab, slots_dir).start(timeout=30)
    try:
        # 1.0 boots, fetches its config, installs 1.1 into slot b, reboots into it as a trial;
        # 1.1 registers and its API answers -> committed (the floor rises)
        prov = launcher.wait_firmware(
            lambda p: p["firmware"] == "1.1"
            and p["firmware_slots"]["floor"] == "1.1"
            and not p["firmware_slots"]["trial"],
            40,
            "1.1 committed",
        )
        assert prov["firmware_slots"]["slot"] == "b" and not prov["firmware_slots"]["trial"]
        launcher.wait_state("registered", 10)

        # 1.2 is broken: installed into slot a, fails its health check, rolled back to 1.1
        lab.fleet.publish_firmware("1.2", broken_bundle(tmp_path, "1.2"))
        lab.set_device_layer(firmware={"version": "1.2"})
        lab.render()
        status, reason = send_check_sync(lab.kamailio.udp_addr, lab.user, lab.kamailio.domain)
        assert status == 200, reason
        prov = launcher.wait_firmware(
            lambda p: (p["firmware_slots"]["last"] or {}).get("event") == "rolled_back",
            40,
            "1.2 rolled back",
        )
        last = prov["firmware_slots"]["last"]
        assert last["version"] == "1.2"
        assert "failed its health check: the phone exited with code 1" in last["reason"]
        assert prov["firmware"] == "1.1" and prov["firmware_slots"]["slot"] == "b"
        assert prov["firmware_slots"]["floor"] == "1.1"
        launcher.wait_state("registered", 10)
        assert "broken on purpose" in launcher.log()
    finally:
        assert launcher.proc is not None
        launcher.proc.send_signal(signal.SIGTERM)
        launcher.proc.wait(20)
