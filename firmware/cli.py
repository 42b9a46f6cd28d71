"""The `deskphone` command: run the phone, or check SIP messages the way the phone reads them."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from pathlib import Path

EXIT_CONFIG = 2


def _cmd_run(args: argparse.Namespace) -> int:
    from firmware.provisioning.config import ConfigError, load_config
    from firmware.runtime.app import run_phone
    from firmware.runtime.firmware_update import HEALTH_ENV, run_config_with_health

    if args.bootstrap:  # provisioned phone (issue 7): firmware/runtime/provisioning_client.py
        from firmware.runtime.provisioning_client import cmd_run_bootstrap

        return cmd_run_bootstrap(args.bootstrap, args.state_dir, args.log_level)
    try:
        config = load_config(args.config)
    except ConfigError as e:
        print(f"deskphone: configuration error: {e}", file=sys.stderr)
        return EXIT_CONFIG
    logging.basicConfig(
        level=args.log_level or config.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        if os.environ.get(HEALTH_ENV):  # started by the A/B slot launcher: report health
            return asyncio.run(run_config_with_health(config))
        return asyncio.run(run_phone(config))
    except KeyboardInterrupt:
        return 0
    except OSError as e:
        print(f"deskphone: {e}", file=sys.stderr)
        return 1


def _cmd_factory_reset(args: argparse.Namespace) -> int:
    from firmware.runtime.provisioning_client import cmd_factory_reset

    return cmd_factory_reset(args.bootstrap, args.state_dir, args.reason)


def _cmd_sip_check(args: argparse.Namespace) -> int:
    from firmware.sip.describe import describe

    worst = 0
    for name in args.files:
        try:
            data = Path(name).read_bytes()
        except OSError as e:
            print(json.dumps({"file": name, "error": f"cannot read: {e.strerror}"}))
            worst = 1
            continue
        result = describe(name, data)
        if "error" in result:
            worst = 1
        print(json.dumps(result))
    return worst


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deskphone", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the phone with a TOML config")
    source = run.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", "-c", help="path to phone.toml")
    source.add_argument("--bootstrap", help="bootstrap.toml: fetch the config from the server")
    run.add_argument("--state-dir", help="with --bootstrap: where provisioning state is kept")
    run.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    run.set_defaults(func=_cmd_run)
    reset = sub.add_parser("factory-reset", help="wipe the provisioned config (keeps identity)")
    reset.add_argument("--bootstrap", required=True, help="bootstrap.toml of this phone")
    reset.add_argument("--state-dir", help="provisioning state directory (if not the default)")
    reset.add_argument("--reason", required=True, help="why (kept and shown in status)")
    reset.set_defaults(func=_cmd_factory_reset)
    check = sub.add_parser("sip-check", help="show how the phone reads raw SIP message files")
    check.add_argument("files", nargs="+", metavar="FILE")
    check.set_defaults(func=_cmd_sip_check)
    from tools import demo as demo_tool  # config only until it runs: cheap to import
    from tools import sim as sim_tool  # curses + config only: cheap to import

    demo = sub.add_parser(
        "demo", help="scripted demo: three simulated phones call each other on loopback"
    )
    demo_tool.add_arguments(demo)
    demo.set_defaults(func=demo_tool.run)

    sim = sub.add_parser("sim", help="the phone on the simulated board in this terminal (curses)")
    sim_tool.add_arguments(sim)
    sim.set_defaults(func=sim_tool.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
