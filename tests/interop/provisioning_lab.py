"""A provisioning lab on loopback for the phone-side tests (issue 7).

A real fleet (tools/provision: CA, signing key, layers, signed render), a device identity as the
flashing tool makes it (P-256 key + client certificate from the fleet CA, X25519 secret key),
a bootstrap directory, the real mTLS config server, and phone processes started with
``deskphone run --bootstrap``. check-sync NOTIFYs are sent from a raw UDP socket, through
Kamailio or straight at the phone.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import tomli_w
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from firmware.provisioning import document as doc
from tests.interop.kamailio import Kamailio
from tests.interop.phone import ROOT, TOKEN, PhoneProcess, free_port
from tools.provision import pki
from tools.provision.fleet import Fleet


class ConfigServerThread:
    """The fleet's HTTPS (mTLS) config server on its own event loop in a thread."""

    def __init__(self, fleet: Fleet) -> None:
        from tools.provision.server import start

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        fut = asyncio.run_coroutine_threadsafe(start(fleet, "127.0.0.1", 0), self.loop)
        self.runner, self.port = fut.result(15)

    def stop(self) -> None:
        if not self.thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(15)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


class NginxServer:
    """The same tree served by a real nginx with the fleet tool's mTLS config (acceptance 2)."""

    def __init__(self, fleet: Fleet, root: Path) -> None:
        from tests.conftest import require_tool
        from tools.provision.cli import main as provision_main

        nginx = require_tool("nginx")
        self.port = free_port()
        conf = root / "nginx" / "nginx.conf"
        args = ["nginx-config", str(fleet.root), "--out", str(conf)]
        args += ["--listen", f"127.0.0.1:{self.port}"]
        if os.geteuid() == 0:
            args += ["--user", "root"]  # workers must read the tree under pytest's 0700 dirs
        assert provision_main(args) == 0
        self.prefix = conf.parent / "nginx-run"
        self.proc = subprocess.Popen(
            [nginx, "-p", str(self.prefix), "-c", str(conf), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:  # bounded wait for the listener (nginx has no readiness signal)
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError("nginx did not start") from None
                time.sleep(0.05)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGQUIT)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Lab:
    """One fleet with one device (Kamailio user ``user``) and its bootstrap directory."""

    def __init__(
        self,
        root: Path,
        kamailio: Kamailio,
        user: str,
        *,
        trial_timeout: float = 10.0,  # generous: a loaded CI box restarts a phone slowly
        resync_interval: float = 3600.0,
        server: str = "serve",
    ) -> None:
        self.root = root
        self.kamailio = kamailio
        self.user = user
        self.fleet = Fleet(root / "fleet")
        self.fleet.init(["127.0.0.1"])
        self.sip_port = free_port()
        self.api_port = free_port()
        common = {
            "sip": {"listen": [f"udp:127.0.0.1:{self.sip_port}"], "retry_base": 1.0},
            "api": {"listen": f"127.0.0.1:{self.api_port}", "token": TOKEN},
            "logging": {"level": "debug"},
        }
        self.fleet.layer_path("common").write_bytes(tomli_w.dumps(common).encode())
        self.device_id = self.fleet.add_device(
            device_id=f"desk-{user}", name=f"Desk {user}", accounts=[self.account()]
        )
        self.boot = root / "boot" / "deskphone"
        self.boot.mkdir(parents=True)
        key = pki.new_key()
        cert = pki.device_cert(*self.fleet.ca(), self.device_id, key.public_key())
        secret = X25519PrivateKey.generate()
        (self.boot / "device.key").write_bytes(pki.key_pem(key))
        (self.boot / "device.crt").write_bytes(pki.cert_pem(cert))
        (self.boot / "device-x25519.key").write_bytes(doc.private_pem(secret))
        (self.boot / "fleet-ca.pem").write_bytes(self.fleet.ca_cert_path.read_bytes())
        (self.boot / "config-signing.pub").write_bytes(self.fleet.signing_pub_path.read_bytes())
        self.fleet.record_identity(
            self.device_id,
            cert_pem=pki.cert_pem(cert),
            x25519_public_pem=doc.public_pem(secret.public_key()),
            flashed_to=str(self.boot),
        )
        self.server: ConfigServerThread | NginxServer = (
            NginxServer(self.fleet, root) if server == "nginx" else ConfigServerThread(self.fleet)
        )
        self.trial_timeout = trial_timeout
        self.resync_interval = resync_interval
        self.write_bootstrap()
        self.render()
        self.state = root / "state"

    def account(self, password: str | None = None) -> dict[str, Any]:
        host, port = self.kamailio.udp_addr
        return {
            "id": "line1",
            "user": self.user,
            "password": password or self.kamailio.users[self.user],
            "domain": self.kamailio.domain,
            "registrar": f"sip:{host}:{port}",
            "expires": 60,
        }

    def write_bootstrap(self, **override: Any) -> Path:
        prov = {
            "url": f"https://127.0.0.1:{self.server.port}",
            "ca": "fleet-ca.pem",
            "signing_key": "config-signing.pub",
            "client_cert": "device.crt",
            "client_key": "device.key",
            "secret_key": "device-x25519.key",
            "resync_interval": self.resync_interval,
            "trial_timeout": self.trial_timeout,
            "fetch_timeout": 5,
            **override,
        }
        path = self.boot / "bootstrap.toml"
        path.write_bytes(
            tomli_w.dumps({"device": {"id": self.device_id, "name": "Desk"}, "provisioning": prov})
            .encode()
        )
        return path

    # ----- the admin's side -----------------------------------------------------------------
    def set_device_layer(self, **tables: Any) -> None:
        path = self.fleet.layer_path("devices", self.device_id)
        layer = {"device": {"name": f"Desk {self.user}"}, "accounts": [self.account()]}
        layer.update(tables)
        path.write_bytes(tomli_w.dumps(layer).encode())

    def render(self, **kw: Any) -> int:
        result = self.fleet.render(**kw)
        assert not result.errors, result.errors
        return int(self.fleet.device(self.device_id)["serial"])

    def other_device_document(self) -> str:
        """A validly signed document of another device in the same fleet."""
        other = X25519PrivateKey.generate().public_key()
        did = self.fleet.add_device(
            device_id="desk-other",
            name="Other",
            accounts=[self.account()],
            x25519_public=doc.public_pem(other),
        )
        self.render()
        return (self.fleet.www / "devices" / f"{did}.json").read_text()

    @property
    def document_path(self) -> Path:
        return self.fleet.www / "devices" / f"{self.device_id}.json"

    # ----- the phone ------------------------------------------------------------------------
    def phone(self, env: dict[str, str] | None = None) -> BootstrapPhone:
        return BootstrapPhone(self, env or {})


class BootstrapPhone(PhoneProcess):
    """`python -m firmware run --bootstrap`; status through the provisioned API port/token."""

    def __init__(self, lab: Lab, env: dict[str, str]) -> None:
        self.lab = lab
        self.workdir = lab.root
        self.sip_port = lab.sip_port
        self.api_port = lab.api_port
        self.log_path = lab.root / "phone.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.env = env

    def spawn(self) -> BootstrapPhone:
        env = dict(os.environ, PYTHONPATH=str(ROOT), **self.env)
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "firmware",
                "run",
                "--bootstrap",
                str(self.lab.boot / "bootstrap.toml"),
                "--state-dir",
                str(self.lab.state),
                "--log-level",
                "DEBUG",
            ],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        return self

    def start(self, timeout: float = 20.0) -> BootstrapPhone:
        self.spawn()
        self.wait_for(lambda s: True, timeout, what="action API up")
        return self

    def provisioning(self) -> dict[str, Any]:
        return self.status()["provisioning"]  # type: ignore[no-any-return]


def send_check_sync(
    to: tuple[str, int], user: str, domain: str, timeout: float = 5.0
) -> tuple[int, str]:
    """Send an unsolicited NOTIFY Event: check-sync from a raw UDP socket; (status, reason)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        tag, call_id = secrets.token_hex(4), secrets.token_hex(8)
        msg = (
            f"NOTIFY sip:{user}@{domain} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{secrets.token_hex(6)};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:provisioning@example.org>;tag={tag}\r\n"
            f"To: <sip:{user}@{domain}>\r\n"
            f"Call-ID: {call_id}@127.0.0.1\r\n"
            "CSeq: 1 NOTIFY\r\n"
            f"Contact: <sip:provisioning@127.0.0.1:{port}>\r\n"
            "Event: check-sync\r\n"
            "Subscription-State: terminated\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        s.sendto(msg.encode(), to)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            s.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                data, _addr = s.recvfrom(65535)
            except TimeoutError:
                break
            line = data.split(b"\r\n", 1)[0].decode()
            parts = line.split(" ", 2)
            status = int(parts[1])
            if status >= 200:
                return status, parts[2] if len(parts) > 2 else ""
        raise AssertionError(f"no final response to the check-sync NOTIFY sent to {to}")


def tamper(path: Path, mutate: Any) -> None:
    """Change a signed document's payload in place without re-signing it."""
    data = json.loads(path.read_text())
    mutate(data["payload"])
    path.write_text(json.dumps(data))
