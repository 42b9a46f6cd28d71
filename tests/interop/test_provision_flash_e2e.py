"""Acceptance 1 through the admin's own tools only: `deskphone-provision init`/`add-device`,
`deskphone-flash --image` onto a FAT disk image, the boot partition read back out of the image
(as the Pi mounts it), `render` (entry points called in-process), `deskphone-provision serve` as its own process, and the phone
started from the flashed bootstrap: it fetches its config over mTLS, registers with the real
Kamailio using the encrypted credentials, and its status report shows up in
`deskphone-provision status`; then a central change, `render` and `deskphone-provision resync`
(check-sync through Kamailio) reach the running phone (acceptance 3). The same with the tree
served by a real nginx using the generated mTLS config (acceptance 2).

Kamailio user 1120 (provisioning range 1101-1120; the phone-side tests use the lower ones).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
import tomli_w

from tests.conftest import require_tool
from tests.interop.kamailio import Kamailio
from tests.interop.nginx_server import run_nginx
from tests.interop.phone import ROOT, TOKEN, PhoneProcess, free_port
from tests.unit.provision_helpers import mkfs_image
from tools.flash.cli import main as flash_main
from tools.flash.targets import fat_offset
from tools.provision.cli import main as provision_main

USER = "1120"


def _tool(*args: str) -> str:
    """Run a `deskphone-provision` (or, with "flash" first, `deskphone-flash`) command line in
    this process (the same entry points as the console scripts); its stdout."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = flash_main(list(args[1:])) if args[0] == "flash" else provision_main(list(args))
    assert rc == 0, out.getvalue()
    return out.getvalue()


class FlashedPhone(PhoneProcess):
    """`deskphone run --bootstrap` from the boot partition the flashing tool wrote."""

    def __init__(self, workdir: Path, bootstrap: Path, api_port: int, sip_port: int) -> None:
        self.workdir = workdir
        self.bootstrap = bootstrap
        self.api_port = api_port
        self.sip_port = sip_port
        self.log_path = workdir / "phone.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.env: dict[str, str] = {}

    def start(self, timeout: float = 20.0) -> FlashedPhone:
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "firmware", "run", "--bootstrap", str(self.bootstrap),
             "--state-dir", str(self.workdir / "state"), "--log-level", "DEBUG"],
            cwd=ROOT,
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.wait_for(lambda s: True, timeout, what="action API up")
        return self


@pytest.fixture(params=["serve", "nginx"])
def served_fleet(
    request: pytest.FixtureRequest, tmp_path: Path, kamailio: Kamailio
) -> Iterator[tuple[Path, int, int, int]]:
    """A fleet with device desk-1120 flashed into a disk image, served by `deskphone-provision
    serve` or by nginx with the generated config (acceptance 2). Yields (fleet, server port,
    api port, sip port)."""
    fleet = tmp_path / "fleet"
    server_port, api_port, sip_port = free_port(), free_port(), free_port()
    _tool("init", str(fleet), "--host", "127.0.0.1")
    host, port = kamailio.udp_addr
    common = {
        "sip": {"listen": [f"udp:127.0.0.1:{sip_port}"], "retry_base": 1.0},
        "api": {"listen": f"127.0.0.1:{api_port}", "token": TOKEN},
    }
    (fleet / "config" / "common.toml").write_text(tomli_w.dumps(common))
    account = (
        f"user={USER},password={kamailio.users[USER]},domain={kamailio.domain},"
        f"registrar=sip:{host}:{port},expires=60"
    )
    _tool("add-device", str(fleet), "--id", f"desk-{USER}", "--name", "Lab desk",
          "--account", account)  # fmt: skip
    _tool("publish-firmware", str(fleet), "--version", "0.1.0")
    image = tmp_path / "raspios.img"
    mkfs_image(image, 40, mbr=True)
    _tool("flash", str(fleet), "--id", f"desk-{USER}", "--url",
          f"https://127.0.0.1:{server_port}", "--image", str(image))  # fmt: skip
    _tool("render", str(fleet))
    if request.param == "nginx":
        with run_nginx(fleet, server_port, tmp_path):
            yield fleet, server_port, api_port, sip_port
        return
    server = subprocess.Popen(
        [sys.executable, "-m", "tools.provision.cli", "serve", str(fleet),
         "--listen", f"127.0.0.1:{server_port}"],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        stdout=subprocess.PIPE,
        stderr=(tmp_path / "serve.log").open("wb"),
        text=True,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        first = server.stdout.readline()  # printed once the socket listens
        assert first.strip() == f"serving https://127.0.0.1:{server_port}", first
        yield fleet, server_port, api_port, sip_port
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(10) == 0


def _unpack_boot(image: Path, dest: Path) -> Path:
    """What the Pi sees at /boot/firmware: the image's FAT partition, copied out with mtools."""
    dest.mkdir()
    subprocess.run(
        [require_tool("mcopy"), "-s", "-n", "-i", f"{image}@@{fat_offset(image)}",
         "::/deskphone", str(dest)],
        check=True,
        capture_output=True,
        env=dict(os.environ, MTOOLS_SKIP_CHECK="1"),
    )  # fmt: skip
    return dest / "deskphone" / "bootstrap.toml"


def _check_status_report(fleet: Path) -> None:
    """The phone reported back (POST /status); the admin sees it in `status`."""
    deadline = time.monotonic() + 15
    while True:
        report = json.loads(_tool("status", str(fleet), "--json")).get(f"desk-{USER}")
        if report and report["serial"] == 1 and report["registration"] == "registered":
            break
        assert time.monotonic() < deadline, report
        time.sleep(0.2)  # external observer polling the fleet's status files
    table = _tool("status", str(fleet))
    assert f"desk-{USER}  Lab desk" in table and "1/1" in table


def test_flashed_image_boots_provisions_and_registers(
    served_fleet: tuple[Path, int, int, int], tmp_path: Path, kamailio: Kamailio
) -> None:
    fleet, _, api_port, sip_port = served_fleet
    host, port = kamailio.udp_addr
    bootstrap = _unpack_boot(tmp_path / "raspios.img", tmp_path / "boot-partition")
    phone = FlashedPhone(tmp_path, bootstrap, api_port, sip_port).start()
    try:
        reg = phone.wait_state("registered", 20)
        assert reg["aor"] == f"sip:{USER}@{kamailio.domain}"
        contacts = kamailio.contacts(f"sip:{USER}@{kamailio.domain}")
        assert any(str(sip_port) in c["Address"] for c in contacts), contacts
        if not (tmp_path / "nginx").exists():  # nginx does not store status reports (501)
            _check_status_report(fleet)

        # Acceptance 3, the admin's half: change a setting centrally, render, `resync` sends
        # check-sync through Kamailio, and the phone applies serial 2 within seconds.
        layer = fleet / "config" / "devices" / f"desk-{USER}.toml"
        data = tomllib.loads(layer.read_text())
        data.setdefault("device", {})["name"] = "Front desk"
        layer.write_text(tomli_w.dumps(data))
        assert "serial 2" in _tool("render", str(fleet))
        sent = _tool("resync", str(fleet), f"desk-{USER}")
        assert sent.strip().endswith(": 200 OK"), sent
        assert f"sip:{USER}@{kamailio.domain} via {host}:{port}" in sent
        status = phone.wait_for(
            lambda s: s["device"]["name"] == "Front desk", 10, "the new name applied"
        )
        assert status["provisioning"]["serial"] == 2
        access = tmp_path / "nginx" / "nginx-run" / "access.log"
        if access.exists():  # served by nginx: both documents came from it
            gets = [ln for ln in access.read_text().splitlines() if "GET /devices/" in ln]
            assert sum(" 200 " in ln for ln in gets) >= 2, gets
    finally:
        phone.terminate()
