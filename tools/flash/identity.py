"""A board's identity and bootstrap: the files `deskphone-flash` puts under <boot>/deskphone/.

The device keys are generated here and leave this process only onto the board: the fleet keeps
the certificate and the public X25519 key (inventory), never a device private key.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass

import tomli_w
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from firmware.provisioning import document as doc
from tools.provision import pki
from tools.provision.fleet import Fleet

BOOT_SUBDIR = "deskphone"
BOOT_MOUNT = "/boot/firmware"  # where Raspberry Pi OS (bookworm) mounts the boot partition

SLOTS_DIR = "/var/lib/deskphone/slots"  # A/B firmware slots (firmware/provisioning/firmware_slots)
VENV = "/opt/deskphone/venv"  # the stable launcher and the dependencies, outside the slots

SERVICE_UNIT = """\
[Unit]
Description=deskphone SIP desk phone (A/B firmware slot launcher)
Wants=network-online.target
After=network-online.target time-sync.target

[Service]
Type=simple
User=deskphone
SupplementaryGroups=audio gpio i2c dialout
ExecStart={venv}/bin/deskphone-boot --slots {slots} -- run --bootstrap {mount}/{sub}/bootstrap.toml
Restart=always
RestartSec=5
NoNewPrivileges=true
ProtectSystem=full
ReadWritePaths=/var/lib/deskphone

[Install]
WantedBy=multi-user.target
"""

# First boot: install the launcher and dependencies (pip, from the bundle), make slot a from the
# bundle (deskphone-boot --init) and enable the unit. Run once by systemd.run= on the kernel
# command line (flash --firstrun) or by hand over SSH/serial. Idempotent.
INSTALL_SH = f"""\
#!/bin/sh
# deskphone first-boot installer (written by deskphone-flash). Idempotent.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
id deskphone >/dev/null 2>&1 || useradd --system --create-home --groups audio,gpio,i2c,dialout deskphone
bundle=$(ls "$here"/firmware/*.tar.gz | head -n 1)
version=$(basename "$bundle" .tar.gz)
[ -x {VENV}/bin/deskphone-boot ] || {{ python3 -m venv {VENV} && {VENV}/bin/pip install --quiet "$bundle"; }}
mkdir -p /var/lib/deskphone
[ -e {SLOTS_DIR}/current ] || {VENV}/bin/deskphone-boot --slots {SLOTS_DIR} --init "$bundle" "$version"
chown -R deskphone: /var/lib/deskphone
install -m 0644 "$here/deskphone.service" /etc/systemd/system/deskphone.service
systemctl daemon-reload
systemctl enable deskphone.service
# Undo the one-shot systemd.run= entry (if flash --firstrun added one).
sed -i 's| systemd.run=[^ ]*deskphone/install.sh[^ ]*||; s| systemd.run_success_action=[^ ]*||' \\
    "$here/../cmdline.txt" 2>/dev/null || true
echo "deskphone $version installed"
"""

FIRSTRUN_ARGS = (
    f" systemd.run={BOOT_MOUNT}/{BOOT_SUBDIR}/install.sh systemd.run_success_action=reboot"
)


@dataclass
class BootFiles:
    """Relative path (from the boot partition root) -> (bytes, mode)."""

    files: dict[str, tuple[bytes, int]]
    cert_pem: bytes
    x25519_public_pem: bytes


def make_identity(
    fleet: Fleet,
    device_id: str,
    *,
    url: str,
    name: str,
    firmware: tuple[str, bytes, bytes] | None,
    resync_interval: int = 3600,
    state_dir: str | None = None,
) -> BootFiles:
    """Generate the device keys and certificate and lay out every file of the bootstrap.

    ``firmware`` is (version, bundle bytes, signed manifest bytes) or None.
    """
    ca_key, ca_cert = fleet.ca()
    key = pki.new_key()
    cert = pki.device_cert(ca_key, ca_cert, device_id, key.public_key())
    x25519 = X25519PrivateKey.generate()
    prov: dict[str, object] = {
        "url": url.rstrip("/"),
        "ca": "fleet-ca.pem",
        "signing_key": "config-signing.pub",
        "client_cert": "device.crt",
        "client_key": "device.key",
        "secret_key": "device-x25519.key",
        "resync_interval": resync_interval,
    }
    if state_dir:
        prov["state_dir"] = state_dir
    bootstrap = {"device": {"id": device_id, "name": name}, "provisioning": prov}
    sub = BOOT_SUBDIR
    files: dict[str, tuple[bytes, int]] = {
        f"{sub}/bootstrap.toml": (
            b"# written by deskphone-flash; see docs/provisioning.md\n"
            + tomli_w.dumps(bootstrap).encode(),
            0o644,
        ),
        f"{sub}/fleet-ca.pem": (fleet.ca_cert_path.read_bytes(), 0o644),
        f"{sub}/config-signing.pub": (fleet.signing_pub_path.read_bytes(), 0o644),
        f"{sub}/device.crt": (pki.cert_pem(cert), 0o644),
        f"{sub}/device.key": (pki.key_pem(key), 0o600),
        f"{sub}/device-x25519.key": (doc.private_pem(x25519), 0o600),
        f"{sub}/deskphone.service": (
            SERVICE_UNIT.format(venv=VENV, slots=SLOTS_DIR, mount=BOOT_MOUNT, sub=sub).encode(),
            0o644,
        ),
        f"{sub}/install.sh": (INSTALL_SH.encode(), 0o755),
    }
    if firmware is not None:
        version, data, manifest = firmware
        files[f"{sub}/firmware/{version}.tar.gz"] = (data, 0o644)
        files[f"{sub}/firmware/{version}.json"] = (manifest, 0o644)
    summary = {
        "device": device_id,
        "flashed_at": int(time.time()),
        "files": {p: hashlib.sha256(d).hexdigest() for p, (d, _) in sorted(files.items())},
    }
    files[f"{sub}/flash-manifest.json"] = (json.dumps(summary, indent=1).encode(), 0o644)
    return BootFiles(files, pki.cert_pem(cert), doc.public_pem(x25519.public_key()))
