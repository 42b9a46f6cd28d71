"""`deskphone-flash`: give one board its identity, firmware and bootstrap, and record it.

    deskphone-flash FLEET (--mac MAC | --id ID) --url https://cfg.example:8443
                    (--boot DIR | --image FILE | --serial PORT [--user U --password P])

Generates the device's P-256 key and fleet-CA-signed client certificate (CN = device id) and its
X25519 secrets key, writes them with the bootstrap, the systemd unit, a first-boot installer and
the firmware bundle (with its signed manifest) under <boot>/deskphone/, verifies every file by
sha256, and records the device's public identity in the fleet inventory (the private keys exist
only on the board). Exit 0 ok, 2 a clear one-line error.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from firmware.provisioning import document as doc
from tools.flash.identity import FIRSTRUN_ARGS, make_identity
from tools.flash.targets import DirTarget, FatImageTarget, FlashError, Target
from tools.provision import bundle
from tools.provision.fleet import Fleet, FleetError, normalise_mac

log = logging.getLogger("deskphone-flash")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="deskphone-flash", description=__doc__)
    p.add_argument("fleet", type=Path, help="fleet directory (deskphone-provision init)")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--mac", help="the board's MAC address (device id = lowercase hex)")
    who.add_argument("--id", dest="device_id", help="device id ([a-z0-9-]{1,63})")
    p.add_argument("--name", help="display name (new devices)")
    p.add_argument("--model", help="model (new devices)")
    p.add_argument("--url", required=True, help="config server, https://host:port")
    p.add_argument("--resync-interval", type=int, default=3600)
    p.add_argument("--state-dir", help="phone state directory written into the bootstrap")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--boot", type=Path, help="a mounted boot partition (directory)")
    where.add_argument("--image", type=Path, help="a FAT image or a whole-disk (MBR) image")
    where.add_argument("--serial", help="serial port of a running board (e.g. /dev/ttyUSB0)")
    p.add_argument("--user", default="pi", help="serial console login")
    p.add_argument("--password", help="serial console password")
    p.add_argument("--baudrate", type=int, default=115200)
    p.add_argument("--sudo", action="store_true", help="prefix remote writes with sudo")
    p.add_argument(
        "--remote-root", default="/boot/firmware", help="boot partition path on the running board"
    )
    p.add_argument("--firmware-version", help="published version to install (default: newest)")
    p.add_argument("--no-firmware", action="store_true", help="bootstrap and keys only")
    p.add_argument(
        "--firstrun",
        action="store_true",
        help="add a one-shot systemd.run= entry to cmdline.txt that runs the installer",
    )
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def _firmware(fleet: Fleet, version: str | None) -> tuple[str, bytes, bytes]:
    """(version, bundle, signed manifest); builds and publishes this source if none exists."""
    fw_dir = fleet.root / "firmware"
    published = sorted(fw_dir.glob("*.tar.gz"), key=lambda p: p.stat().st_mtime)
    if version is None and not published:
        from importlib.metadata import version as pkg_version

        version = pkg_version("deskphone")
        fleet.publish_firmware(version, bundle.build_bundle(version))
    elif version is None:
        version = published[-1].name[: -len(".tar.gz")]
    path = fw_dir / f"{version}.tar.gz"
    if not path.is_file():
        raise FleetError(
            f"firmware {version} is not published (deskphone-provision publish-firmware)"
        )
    data = path.read_bytes()
    manifest = doc.sign_document(
        doc.firmware_manifest(version, data, int(time.time())), fleet.signing_key()
    )
    return version, data, (json.dumps(manifest, indent=1) + "\n").encode()


def flash(args: argparse.Namespace, target: Target) -> str:
    if not args.url.startswith("https://"):
        raise FleetError(f"--url {args.url!r} must be an https:// URL")
    fleet = Fleet(args.fleet)
    did = normalise_mac(args.mac) if args.mac else args.device_id
    try:
        rec = fleet.device(did)
    except FleetError:
        did = fleet.add_device(
            mac=args.mac, device_id=args.device_id, name=args.name, model=args.model
        )
        rec = fleet.device(did)
    firmware = None if args.no_firmware else _firmware(fleet, args.firmware_version)
    boot = make_identity(
        fleet,
        did,
        url=args.url,
        name=rec.get("name", did),
        firmware=firmware,
        resync_interval=args.resync_interval,
        state_dir=args.state_dir,
    )
    for rel, (data, mode) in sorted(boot.files.items()):
        target.write(rel, data, mode)
    if args.firstrun:
        cmdline = target.read("cmdline.txt")
        if cmdline is None:
            raise FlashError(f"{target.describe()}: no cmdline.txt for --firstrun")
        line = cmdline.decode().strip()
        if "deskphone/install.sh" not in line:
            target.write("cmdline.txt", (line + FIRSTRUN_ARGS + "\n").encode())
    # Only after every file is verified on the board does the inventory learn the new identity.
    fleet.record_identity(
        did,
        cert_pem=boot.cert_pem,
        x25519_public_pem=boot.x25519_public_pem,
        flashed_to=target.describe(),
    )
    return did


def run(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if args.boot:
        did = flash(args, DirTarget(args.boot))
    elif args.image:
        did = flash(args, FatImageTarget(args.image))
    else:
        from tools.flash.serialconsole import SerialConsole, SerialTarget

        console = SerialConsole(
            args.serial,
            baudrate=args.baudrate,
            user=args.user,
            password=args.password,
            sudo=args.sudo,
        )
        try:
            console.login()
            did = flash(args, SerialTarget(console, args.remote_root))
        finally:
            console.close()
    print(f"flashed {did}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["panel"]:  # `deskphone-flash panel ...`: the MicroPython front panel
        from tools.flash.panel import main as flash_panel_main

        return flash_panel_main(argv[1:])
    try:
        return run(argv)
    except (FlashError, FleetError, OSError) as e:
        print(f"deskphone-flash: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
