"""`deskphone-provision`: fleet tool and config server (workflow in docs/provisioning.md).

Exit codes: 0 ok, 1 some devices could not be rendered, 2 a usage or fleet error (one line
naming what is wrong).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from tools.provision import bundle, pki
from tools.provision.fleet import DEFAULT_VALIDITY, Fleet, FleetError
from tools.provision.nginx import render_nginx

log = logging.getLogger("deskphone-provision")

ACCOUNT_KEYS = {
    "id", "user", "password", "auth_user", "domain", "display_name", "registrar",
    "outbound_proxy", "expires", "enabled",
}  # fmt: skip


def parse_account(text: str) -> dict[str, Any]:
    """``user=1001,password=pw,domain=pbx.example[,id=line1,...]`` -> an accounts table."""
    account: dict[str, Any] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in ACCOUNT_KEYS:
            raise FleetError(
                f"--account {text!r}: {key!r} is not one of {', '.join(sorted(ACCOUNT_KEYS))}"
            )
        if key == "expires":
            account[key] = int(value)
        elif key == "enabled":
            account[key] = value.lower() in ("1", "true", "yes")
        else:
            account[key] = value
    return account


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="deskphone-provision", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("init", help="create a fleet: CA, server certificate, signing key")
    s.add_argument("fleet", type=Path)
    s.add_argument(
        "--host",
        action="append",
        default=[],
        help="server host name or IP for its certificate (repeat; default 127.0.0.1, localhost)",
    )

    s = sub.add_parser("add-device", help="register a device in the inventory")
    s.add_argument("fleet", type=Path)
    s.add_argument("--mac", help="MAC address (the device id is its lowercase hex)")
    s.add_argument("--id", dest="device_id", help="device id instead of the MAC ([a-z0-9-]{1,63})")
    s.add_argument("--name", help="display name (device.name)")
    s.add_argument("--model", help="model name; selects config/models/<model>.toml")
    s.add_argument(
        "--account",
        action="append",
        default=[],
        help="user=1001,password=...,domain=pbx.example[,id=line1,registrar=...] (repeat)",
    )
    s.add_argument("--x25519-public", type=Path, help="the device's X25519 public key (PEM)")
    s.add_argument("--update", action="store_true", help="change an existing device")

    s = sub.add_parser("remove-device", help="take a device out of the fleet (access ends)")
    s.add_argument("fleet", type=Path)
    s.add_argument("device_id")

    s = sub.add_parser("render", help="write signed per-device documents and firmware manifests")
    s.add_argument("fleet", type=Path)
    s.add_argument("--out", type=Path, help="static tree (default FLEET/www)")
    s.add_argument(
        "--validity-days", type=float, default=DEFAULT_VALIDITY / 86400, help="document lifetime"
    )
    s.add_argument(
        "--force", action="store_true", help="central values win over conflicting local changes"
    )

    s = sub.add_parser("publish-firmware", help="add a firmware bundle (default: this source)")
    s.add_argument("fleet", type=Path)
    s.add_argument("--version", required=True)
    s.add_argument("--file", type=Path, help="a .tar.gz bundle (default: build from source)")

    s = sub.add_parser("serve", help="HTTPS config server with mTLS")
    s.add_argument("fleet", type=Path)
    s.add_argument("--tree", type=Path, help="rendered tree (default FLEET/www)")
    s.add_argument("--listen", default="127.0.0.1:8443", help="host:port (port 0: any free)")

    s = sub.add_parser("resync", help="SIP NOTIFY check-sync through the registrar: fetch now")
    s.add_argument("fleet", type=Path)
    s.add_argument("devices", nargs="*", help="device ids (default: every device)")
    s.add_argument("--proxy", help="UDP host:port to send through (default: the registrar)")
    s.add_argument("--timeout", type=float, default=8.0)
    s.add_argument("--from", dest="from_uri", default="sip:provisioning@deskphone.invalid")

    s = sub.add_parser("status", help="show the phones' last status reports")
    s.add_argument("fleet", type=Path)
    s.add_argument("--json", action="store_true")

    s = sub.add_parser("nginx-config", help="write an nginx.conf serving the tree with mTLS")
    s.add_argument("fleet", type=Path)
    s.add_argument("--out", type=Path, required=True, help="nginx.conf to write")
    s.add_argument("--tree", type=Path, help="rendered tree (default FLEET/www)")
    s.add_argument("--listen", default="127.0.0.1:8443")
    s.add_argument("--prefix", type=Path, help="pid/log/temp directory (default: next to --out)")
    s.add_argument("--server-name", default="_")
    s.add_argument("--user", help="nginx worker user (only when nginx starts as root)")
    return p


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise FleetError(f"--listen {text!r} must be host:port")
    return host.strip("[]"), int(port)


async def _serve(fleet: Fleet, tree: Path | None, listen: str) -> None:
    from tools.provision import server

    host, port = _host_port(listen)
    fleet.inventory()  # fail early on a non-fleet directory
    runner, bound = await server.start(fleet, host, port, tree)
    print(f"serving https://{host}:{bound}", flush=True)  # tests and admins wait for this line
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def _status_table(statuses: dict[str, dict[str, Any]], inventory: dict[str, Any]) -> str:
    rows = [("device", "name", "firmware", "serial", "registration", "last_error")]
    for did, rec in sorted(inventory["devices"].items()):
        st = statuses.get(did, {})
        reg = st.get("registration")
        rows.append(
            (
                did,
                str(rec.get("name", "")),
                str(st.get("firmware") or "-"),
                f"{st.get('serial', '-')}/{rec.get('serial', 0)}",
                reg if isinstance(reg, str) else json.dumps(reg) if reg else "-",
                str(st.get("last_error") or "-") if st else "no report",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


def run(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    fleet = Fleet(args.fleet)
    if args.cmd == "init":
        fleet.init(args.host or ["127.0.0.1", "localhost"])
        print(f"fleet created in {args.fleet}")
    elif args.cmd == "add-device":
        accounts = [parse_account(a) for a in args.account]
        pub = args.x25519_public.read_bytes() if args.x25519_public else None
        did = fleet.add_device(
            mac=args.mac,
            device_id=args.device_id,
            name=args.name,
            model=args.model,
            accounts=accounts,
            x25519_public=pub,
            update=args.update,
        )
        print(did)
    elif args.cmd == "remove-device":
        fleet.remove_device(args.device_id)
        print(f"{args.device_id} removed; run render to delete its document")
    elif args.cmd == "render":
        result = fleet.render(args.out, validity=int(args.validity_days * 86400), force=args.force)
        for did in result.written:
            print(f"{did}: new document, serial {fleet.device(did)['serial']}")
        for did, clash in result.conflicts.items():
            for path, (central, local) in sorted(clash.items()):
                print(
                    f"{did}: local change {path} = {local!r} kept over central {central!r} "
                    "(render --force to use the central value)"
                )
        for did, reason in result.errors.items():
            print(f"{did}: NOT rendered: {reason}", file=sys.stderr)
        for version in result.firmware:
            print(f"firmware {version}: signed manifest")
        return 1 if result.errors else 0
    elif args.cmd == "publish-firmware":
        data = args.file.read_bytes() if args.file else bundle.build_bundle(args.version)
        published = fleet.publish_firmware(args.version, data)
        print(f"{published} ({len(data)} bytes); run render to sign and publish it")
    elif args.cmd == "serve":
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_serve(fleet, args.tree, args.listen))
    elif args.cmd == "resync":
        from tools.provision.resync import ResyncError, send_check_sync, target_for

        failed = 0
        for did in args.devices or sorted(fleet.inventory()["devices"]):
            try:
                config, _ = fleet.effective_config(did, fleet.device(did))
                target = target_for(config, args.proxy)
                code, reason = send_check_sync(target, args.timeout, args.from_uri)
            except (ResyncError, OSError, ValueError) as e:
                print(f"{did}: not sent: {e}", file=sys.stderr)
                failed += 1
                continue
            print(f"{did}: {target.aor} via {target.proxy[0]}:{target.proxy[1]}: {code} {reason}")
            failed += code >= 300
        return 1 if failed else 0
    elif args.cmd == "status":
        statuses = fleet.statuses()
        if args.json:
            print(json.dumps(statuses, indent=2, sort_keys=True))
        else:
            print(_status_table(statuses, fleet.inventory()))
    elif args.cmd == "nginx-config":
        _host_port(args.listen)
        prefix = (args.prefix or args.out.parent / "nginx-run").resolve()
        prefix.mkdir(parents=True, exist_ok=True)
        text = render_nginx(
            fleet,
            tree=args.tree or fleet.www,
            listen=args.listen,
            prefix=prefix,
            server_name=args.server_name,
            user=args.user,
        )
        pki.atomic_write(args.out, text.encode())
        print(f"wrote {args.out}: nginx -p {prefix} -c {args.out.resolve()}")
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        return run(sys.argv[1:] if argv is None else argv)
    except (FleetError, OSError) as e:
        print(f"deskphone-provision: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
