"""`deskphone-flash` onto a mounted boot directory and onto FAT disk images (mtools), read back
independently; the inventory records the public identity, never the private keys."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tomllib
from pathlib import Path

import pytest
from cryptography import x509

from firmware.provisioning.bootstrap import load_bootstrap
from tests.conftest import require_tool
from tests.unit.provision_helpers import make_fleet, mkfs_image
from tools.flash.cli import main as flash_main
from tools.flash.identity import FIRSTRUN_ARGS
from tools.flash.targets import FlashError, fat_offset
from tools.provision import pki
from tools.provision.fleet import Fleet

URL = "https://127.0.0.1:8443"


def _mread(image: Path, rel: str) -> bytes:
    spec = f"{image}@@{fat_offset(image)}"
    out = subprocess.run(
        [require_tool("mcopy"), "-n", "-i", spec, f"::/{rel}", "-"],
        check=True,
        capture_output=True,
        env=dict(os.environ, MTOOLS_SKIP_CHECK="1"),
    )
    return out.stdout


def test_flash_into_a_boot_directory(tmp_path: Path) -> None:
    ff = make_fleet(tmp_path, devices=())
    boot = tmp_path / "boot"
    boot.mkdir()
    rc = flash_main(
        [str(ff.fleet), "--mac", "B8:27:EB:00:00:01", "--name", "Lobby", "--url", URL,
         "--boot", str(boot)]
    )  # fmt: skip
    assert rc == 0
    files = boot / "deskphone"
    # The phone side reads this bootstrap as is (paths relative to the file).
    bs = load_bootstrap(files / "bootstrap.toml", state_dir=tmp_path / "state")
    assert (bs.device_id, bs.name, bs.url) == ("b827eb000001", "Lobby", URL)
    assert bs.client_cert == files / "device.crt"
    assert (files / "device.key").stat().st_mode & 0o777 == 0o600
    assert (files / "device-x25519.key").stat().st_mode & 0o777 == 0o600
    unit = (files / "deskphone.service").read_text()
    assert (
        "ExecStart=/opt/deskphone/venv/bin/deskphone-boot --slots /var/lib/deskphone/slots"
        " -- run --bootstrap /boot/firmware/deskphone/bootstrap.toml\n" in unit
    )
    assert (
        "deskphone-boot --slots /var/lib/deskphone/slots --init"
        in (files / "install.sh").read_text()
    )
    subprocess.run(["sh", "-n", str(files / "install.sh")], check=True)
    manifest = json.loads((files / "flash-manifest.json").read_text())
    for rel, digest in manifest["files"].items():
        assert hashlib.sha256((boot / rel).read_bytes()).hexdigest() == digest
    inv = Fleet(ff.fleet).device("b827eb000001")
    assert inv["name"] == "Lobby" and inv["mac"] == "b827eb000001"
    assert inv["x25519_public"] == _x25519_public(files / "device-x25519.key")


def _x25519_public(path: Path) -> str:
    from firmware.provisioning import document as d

    return d.public_pem(d.load_x25519_private(path.read_bytes()).public_key()).decode()


@pytest.mark.parametrize("mbr", [False, True], ids=["bare-fat16", "mbr-fat32"])
def test_flash_into_a_disk_image(tmp_path: Path, mbr: bool) -> None:
    require_tool("mcopy")
    ff = make_fleet(tmp_path, devices=())
    image = tmp_path / "raspios.img"
    mkfs_image(image, 40, mbr=mbr)
    cmdline = b"console=serial0,115200 console=tty1 root=PARTUUID=1234-02 rootwait\n"
    if mbr:
        # An image that already has a kernel command line: --firstrun appends the installer once.
        subprocess.run(
            [require_tool("mcopy"), "-i", f"{image}@@{1024 * 1024}", "-", "::/cmdline.txt"],
            input=cmdline,
            check=True,
            env=dict(os.environ, MTOOLS_SKIP_CHECK="1"),
        )
    args = [str(ff.fleet), "--id", "desk-7", "--url", URL, "--image", str(image)]
    assert flash_main(args + (["--firstrun"] if mbr else [])) == 0
    boot_toml = tomllib.loads(_mread(image, "deskphone/bootstrap.toml").decode())
    assert boot_toml["device"]["id"] == "desk-7"
    cert = x509.load_pem_x509_certificate(_mread(image, "deskphone/device.crt"))
    cert.verify_directly_issued_by(pki.load_cert((ff.fleet / "ca.crt").read_bytes()))
    assert Fleet(ff.fleet).device("desk-7")["cert_sha256"] == pki.fingerprint(cert)
    assert (
        _mread(image, "deskphone/firmware/0.1.0.tar.gz")
        == (ff.fleet / "firmware" / "0.1.0.tar.gz").read_bytes()
    )
    if mbr:
        assert _mread(image, "cmdline.txt") == cmdline.strip() + FIRSTRUN_ARGS.encode() + b"\n"
        # Re-flashing (new keys) does not add the installer twice.
        assert flash_main(args + ["--firstrun"]) == 0
        assert _mread(image, "cmdline.txt").count(b"install.sh") == 1
        assert Fleet(ff.fleet).device("desk-7")["cert_sha256"] != pki.fingerprint(cert)


def test_not_a_disk_image_is_a_clear_error(tmp_path: Path, capsys) -> None:
    ff = make_fleet(tmp_path, devices=())
    junk = tmp_path / "junk.img"
    junk.write_bytes(b"\0" * 4096)
    with pytest.raises(FlashError, match="neither a FAT filesystem nor an MBR disk image"):
        fat_offset(junk)
    rc = flash_main([str(ff.fleet), "--id", "desk-7", "--url", URL, "--image", str(junk)])
    assert rc == 2
    assert "neither a FAT filesystem nor an MBR disk image" in capsys.readouterr().err
    rc = flash_main([str(ff.fleet), "--id", "desk-7", "--url", "http://x", "--boot", str(tmp_path)])
    assert rc == 2
    assert "must be an https:// URL" in capsys.readouterr().err
