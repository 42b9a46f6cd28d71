"""Firmware updates: the A/B slot launcher with its health check, and the updater.

The launcher is the stable part outside the slots (what systemd runs)::

    python -m firmware.runtime.firmware_update --slots /var/lib/deskphone/slots \\
        [--health-timeout 60] -- run --bootstrap /boot/firmware/deskphone/bootstrap.toml

Before every start it asks `Slots.boot()` which slot to run (a trial that already booted once
and never committed is rolled back right there). It runs ``python -m firmware <args>`` from the
chosen slot. In a trial it waits for the health check - the phone registered all its accounts
and its action API answers HTTP - within the bound; passed -> `commit()`, failed (timeout, or the
phone exited) -> the phone is stopped, `rollback()` records why, and the previous slot starts.
The phone asks for a new boot (after installing an update) by exiting with code 75.

First install (the flashing tool's installer): ``deskphone-boot --slots DIR --init BUNDLE VERSION``
makes slot a from a bundle. The phone side of the health check is `watch_health`: with DESKPHONE_HEALTH_FILE set it writes
``{"registered": true, "api": url}`` there once every account is registered.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from firmware.provisioning.document import DocumentError, load_ed25519_public, verify_manifest
from firmware.provisioning.files import atomic_write, fault
from firmware.provisioning.firmware_slots import FirmwareError, Slots

log = logging.getLogger(__name__)

SLOTS_ENV = "DESKPHONE_SLOTS"
HEALTH_ENV = "DESKPHONE_HEALTH_FILE"
RESTART_REQUESTED = 75


def firmware_version() -> str | None:
    """The running slot's version (None when not started by the slot launcher)."""
    root = os.environ.get(SLOTS_ENV)
    if not root:
        return None
    try:
        return Slots(Path(root)).current_version()
    except FirmwareError:
        return None


# ----- phone side of the health check ------------------------------------------------------------
async def watch_health(get_phone: Callable[[], Any], stop: asyncio.Event) -> None:
    """Write the health file once the phone is registered and its API is bound."""
    path = os.environ.get(HEALTH_ENV)
    if not path:
        return
    while not stop.is_set():
        phone = get_phone()
        if phone is not None:
            regs = phone.ua.registration_status()
            bound = phone.api.bound if phone.api is not None else None
            if all(r.get("state") == "registered" for r in regs) and bound is not None:
                url = f"http://{bound[0]}:{bound[1]}/api/status"
                atomic_write(Path(path), json.dumps({"registered": True, "api": url}).encode())
                log.info("health: registered and API up at %s", url)
                return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.2)


async def run_config_with_health(config: Any) -> int:
    """`deskphone run --config` under the slot launcher: the plain phone plus `watch_health`."""
    from firmware.runtime.app import Phone

    phone = Phone(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await phone.start()
    health = asyncio.create_task(watch_health(lambda: phone, stop))
    await stop.wait()
    health.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await health
    await phone.stop()
    return 0


# ----- updater (called by the provisioning service) ----------------------------------------------
async def install_update(
    session: aiohttp.ClientSession, base_url: str, version: str, signing_pem: Path, slots: Slots
) -> str:
    """Download <version>.json + .tar.gz, verify the signed manifest, unpack, start the trial.

    Returns the slot; FirmwareError with the reason on any refusal (nothing changes then).
    """
    slots.check_update(version)
    try:
        async with session.get(f"{base_url}/firmware/{version}.json") as resp:
            if resp.status != 200:
                raise FirmwareError(f"manifest for {version}: server answered {resp.status}")
            manifest_doc = await resp.json(content_type=None)
        manifest = verify_manifest(manifest_doc, load_ed25519_public(signing_pem.read_bytes()))
    except DocumentError as e:
        raise FirmwareError(f"manifest for {version} refused: {e.reason}") from None
    except (aiohttp.ClientError, TimeoutError, ValueError) as e:
        raise FirmwareError(f"cannot fetch the manifest for {version}: {e}") from None
    if manifest.get("version") != version:
        raise FirmwareError(f"manifest is for {manifest.get('version')}, not {version}")
    download = slots.root / f".download-{version}.tmp"
    try:
        async with session.get(f"{base_url}/firmware/{version}.tar.gz") as resp:
            if resp.status != 200:
                raise FirmwareError(f"bundle {version}: server answered {resp.status}")
            size = 0
            with download.open("wb") as f:
                async for chunk in resp.content.iter_chunked(1 << 16):
                    size += len(chunk)
                    if size > int(manifest["size"]):
                        raise FirmwareError(f"bundle {version} is larger than its manifest says")
                    f.write(chunk)
        fault("firmware:downloaded")
        slot = slots.install(download, manifest)
    except (aiohttp.ClientError, TimeoutError) as e:
        raise FirmwareError(f"cannot download firmware {version}: {e}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            download.unlink()
    slots.start_trial(slot)
    return slot


# ----- the launcher ------------------------------------------------------------------------------
def _api_answers(url: str) -> bool:
    """The action API answers HTTP at all (401 without a token counts: it is up)."""
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True
    except (OSError, urllib.error.URLError):
        return False


def _wait_health(child: subprocess.Popen[bytes], health: Path, timeout: float) -> str | None:
    """None when healthy within ``timeout``; else why not."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rc = child.poll()
        if rc is not None:
            return f"the phone exited with code {rc} during its trial"
        try:
            data = json.loads(health.read_bytes())
        except (FileNotFoundError, ValueError):
            data = None
        if isinstance(data, dict) and data.get("registered"):
            if _api_answers(str(data.get("api"))):
                return None
            return "the action API does not answer"
        time.sleep(0.1)  # the launcher is a plain supervisor process; it polls the file
    return f"not registered with the action API up within {timeout:g} s"


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM it if the launcher dies (Linux PR_SET_PDEATHSIG), so a
    killed launcher never leaves a phone holding the ports of the next boot."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


def _stop(child: subprocess.Popen[bytes]) -> None:
    if child.poll() is None:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def launch(root: Path, args: list[str], health_timeout: float) -> int:
    slots = Slots(root)
    health = root / "health.json"
    child: subprocess.Popen[bytes] | None = None
    stopping = False

    def forward(signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    while True:
        decision = slots.boot()
        if decision.rolled_back:
            log.error("%s", decision.rolled_back)
        slot_dir = (root / decision.slot).resolve()
        with contextlib.suppress(FileNotFoundError):
            health.unlink()
        env = dict(os.environ, PYTHONPATH=str(slot_dir), **{SLOTS_ENV: str(root)})
        env[HEALTH_ENV] = str(health)
        log.info(
            "starting firmware %s from slot %s%s",
            decision.version,
            decision.slot,
            " (trial)" if decision.trial else "",
        )
        child = subprocess.Popen(
            [sys.executable, "-m", "firmware", *args],
            cwd=slot_dir,
            env=env,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - a prctl only, no locks taken
        )
        if decision.trial:
            why = _wait_health(child, health, health_timeout)
            if why is None:
                slots.commit()
            elif not stopping:
                _stop(child)
                slots.rollback(f"firmware {decision.version} failed its health check: {why}")
                continue
        rc = child.wait()
        if rc == RESTART_REQUESTED and not stopping:
            continue
        return rc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="deskphone-boot", description="run deskphone from A/B firmware slots"
    )
    parser.add_argument("--slots", required=True, help="slots directory (a/, b/, current)")
    parser.add_argument("--health-timeout", type=float, default=60.0)
    parser.add_argument(
        "--init",
        nargs=2,
        metavar=("BUNDLE", "VERSION"),
        help="first install: make slot a from this bundle, then exit",
    )
    parser.add_argument("args", nargs=argparse.REMAINDER, help="-- then deskphone arguments")
    ns = parser.parse_args(argv)
    args = ns.args[1:] if ns.args[:1] == ["--"] else ns.args
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if ns.init:
            Slots(Path(ns.slots)).init_from_bundle(Path(ns.init[0]), ns.init[1])
            log.info("slots %s: firmware %s in slot a", ns.slots, ns.init[1])
            return 0
        return launch(Path(ns.slots), args, ns.health_timeout)
    except FirmwareError as e:
        log.error("%s", e)
        return 1


if __name__ == "__main__":
    sys.exit(main())
