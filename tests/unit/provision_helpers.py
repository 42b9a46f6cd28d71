"""Shared setup for the provisioning tests: a fleet with one flashed device, TLS client contexts."""

from __future__ import annotations

import os
import ssl
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import require_tool
from tools.flash.cli import main as flash_main
from tools.provision.cli import main as provision_main

ACCOUNT = "user=1001,password=pw-1001-secret,domain=127.0.0.1"
COMMON = '[api]\ntoken = "fleet-api-token-0123456789"\n[logging]\nlevel = "debug"\n'


@dataclass
class FlashedFleet:
    fleet: Path
    boots: dict[str, Path]  # device id -> its flashed boot directory

    def device_dir(self, device_id: str) -> Path:
        return self.boots[device_id] / "deskphone"

    def client_context(self, device_id: str | None) -> ssl.SSLContext:
        """Trusts the fleet CA; presents ``device_id``'s certificate (None: no certificate)."""
        ctx = ssl.create_default_context(cafile=str(self.fleet / "ca.crt"))
        if device_id is not None:
            d = self.device_dir(device_id)
            ctx.load_cert_chain(str(d / "device.crt"), str(d / "device.key"))
        return ctx


def make_fleet(tmp: Path, devices: tuple[str, ...] = ("desk-1", "desk-2")) -> FlashedFleet:
    """init + add-device + flash into a directory + render, through the real CLIs."""
    fleet = tmp / "fleet"
    assert provision_main(["init", str(fleet), "--host", "127.0.0.1", "--host", "localhost"]) == 0
    (fleet / "config" / "common.toml").write_text(COMMON)
    # A tiny published firmware keeps the flashed files small.
    assert provision_main(["publish-firmware", str(fleet), "--version", "0.1.0",
                           "--file", str(_tiny_bundle(tmp))]) == 0  # fmt: skip
    boots = {}
    for did in devices:
        assert provision_main(["add-device", str(fleet), "--id", did, "--account", ACCOUNT]) == 0
        boot = tmp / f"boot-{did}"
        boot.mkdir()
        rc = flash_main(
            [str(fleet), "--id", did, "--url", "https://127.0.0.1:1", "--boot", str(boot)]
        )
        assert rc == 0
        boots[did] = boot
    assert provision_main(["render", str(fleet)]) == 0
    return FlashedFleet(fleet, boots)


def _tiny_bundle(tmp: Path) -> Path:
    import gzip

    path = tmp / "tiny.tar.gz"
    path.write_bytes(gzip.compress(b"not really a tarball, just bytes to sign", mtime=0))
    return path


def mkfs_image(image: Path, size_mb: int, *, mbr: bool) -> None:
    """A FAT16 filesystem image, or (mbr) a Raspberry Pi OS style disk with a FAT32 partition."""
    mkfs = require_tool("mkfs.fat")
    image.write_bytes(b"")
    os.truncate(image, size_mb * 1024 * 1024)
    if not mbr:
        subprocess.run([mkfs, "-F", "16", str(image)], check=True, capture_output=True)
        return
    # A Raspberry Pi OS style disk: MBR, partition 1 = FAT32 (type 0x0c) at sector 2048.
    sectors = size_mb * 2048 - 2048
    mbr_sector = bytearray(512)
    mbr_sector[446:462] = bytes([0, 0, 0, 0, 0x0C, 0, 0, 0]) + struct.pack("<II", 2048, sectors)
    mbr_sector[510:512] = b"\x55\xaa"
    with image.open("r+b") as f:
        f.write(mbr_sector)
    subprocess.run(
        [mkfs, "-F", "32", "--offset", "2048", str(image), str(sectors // 2)],
        check=True,
        capture_output=True,
    )
