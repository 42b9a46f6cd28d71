"""The phone side of provisioning: fetch, verify, apply, trial, roll back, report (issue 7).

`deskphone run --bootstrap bootstrap.toml` runs `run_provisioned`: the phone fetches its signed
document over HTTPS with its client certificate (the fleet CA is the only trust anchor), checks
it (firmware/provisioning/store.py: signature, device, expiry, anti-rollback serial, secrets,
validation), stores it crash-safely, and runs the phone on it. A new config is a *trial*: if it
cannot register within ``trial_timeout`` the phone goes back to the last known good config and
says why. Without the server (offline, refused, wrong cert) the phone keeps running on what it
has. Resync: periodically (with jitter, so a fleet does not stampede the server) and at once on
a SIP NOTIFY ``Event: check-sync`` that came from the account's registrar/proxy flow.

Status: ``GET /api/status`` gains ``"provisioning"``: serial, source, last_sync, last_error,
firmware; the same is POSTed to ``<url>/status/<device id>`` after every sync.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import secrets
import signal
import ssl
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from firmware.provisioning.bootstrap import Bootstrap
from firmware.provisioning.config import PhoneConfig
from firmware.provisioning.files import fault
from firmware.provisioning.firmware_slots import FirmwareError, Slots
from firmware.provisioning.store import (
    ConfigStore,
    Keys,
    Loaded,
    ProvisioningError,
    desired_firmware,
)
from firmware.runtime.addresses import Address
from firmware.runtime.app import Phone
from firmware.runtime.firmware_update import RESTART_REQUESTED, SLOTS_ENV, install_update
from firmware.runtime.transports import TransportError
from firmware.sip.message import SipRequest

log = logging.getLogger(__name__)

FIRST_FETCH_BACKOFF = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
RESTART_BIND_WAIT = 5.0  # seconds a restarted phone waits for its old ports to be released
JITTER = 0.2  # resync every interval * (1 +- 20 %)



def _slots_status() -> dict[str, Any] | None:
    """Slot, version, floor and the last install/commit/rollback (under the slot launcher)."""
    root = os.environ.get(SLOTS_ENV)
    if not root:
        return None
    try:
        return Slots(Path(root)).status()
    except FirmwareError as e:
        return {"error": str(e)}


def registered(phone: Phone) -> bool:
    """Every enabled account of ``phone`` holds a registration."""
    return all(r.get("state") == "registered" for r in phone.ua.registration_status())


def client_ssl_context(boot: Bootstrap) -> ssl.SSLContext:
    """Trust only the fleet CA (not the system store) and present the device certificate."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(boot.ca))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(boot.client_cert), str(boot.client_key))
    return ctx


class ProvisionedPhone(Phone):
    """The phone plus the provisioning hooks: status section and the check-sync NOTIFY."""

    def __init__(
        self,
        config: PhoneConfig,
        provisioning_status: Callable[[], dict[str, Any]],
        check_sync: Callable[[], None],
    ) -> None:
        super().__init__(config)
        self._provisioning_status = provisioning_status
        self._check_sync = check_sync
        self._next_notify = self.ua.handlers.get("NOTIFY")
        self.ua.handlers["NOTIFY"] = self._on_notify

    def status(self) -> dict[str, Any]:
        status = super().status()
        status["provisioning"] = self._provisioning_status()
        return status

    def registered(self) -> bool:
        """Every enabled account holds a registration (the trial and health criterion)."""
        return registered(self)

    def registration_summary(self) -> str:
        states = [str(r.get("state")) for r in self.ua.registration_status()]
        if not states:
            return "none"
        bad = [s for s in states if s != "registered"]
        return bad[0] if bad else "registered"

    def _from_registrar(self, source: Any) -> bool:
        """A request on the flow of an account's registrar/outbound proxy (same transport, IP,
        port); over TCP/TLS that is the very connection we registered on."""
        remote = getattr(source, "remote", None)
        if not isinstance(remote, Address):
            return False
        return any(
            dest.transport == remote.transport
            and dest.host == remote.host
            and dest.port == remote.port
            for dest in self._account_dest.values()
        )

    def _on_notify(self, server_tx: Any, request: SipRequest, now: float) -> None:
        event = (request.headers.get("Event") or "").split(";")[0].strip().lower()
        if event != "check-sync":
            if self._next_notify is not None:
                self._next_notify(server_tx, request, now)
            return
        if not self._from_registrar(server_tx.source):
            log.warning("check-sync from %s refused: not the registrar/proxy", server_tx.source)
            self.ua.respond(
                server_tx, request, 403, "Forbidden (check-sync only via the registrar)", now
            )
            return
        log.info("check-sync from the registrar %s: resyncing now", server_tx.source)
        self.ua.respond(server_tx, request, 200, "OK", now)
        self._check_sync()


class ProvisioningService:
    """Owns the running phone and swaps it when a new config arrives."""

    def __init__(self, boot: Bootstrap, *, firmware: Callable[[], str | None] | None = None):
        self.boot = boot
        self.keys = Keys.from_files(boot.signing_key, boot.secret_key)
        self.store = ConfigStore(boot.state_dir, boot.device_id, self.keys, device_name=boot.name)
        self.phone: ProvisionedPhone | None = None
        self.current: Loaded | None = None
        self.etag: str | None = None
        self.source = "none"
        self.last_error: str | None = None
        self.last_sync: float | None = None
        self.firmware = firmware or (lambda: None)
        self._sync_now = asyncio.Event()
        self._pending_etag: str | None = None
        self._fetch_failed = False
        self._disk: dict[str, Any] | None = None  # cached on-disk part of status()
        self._stop = asyncio.Event()
        self.exit_code = 0
        self._session: aiohttp.ClientSession | None = None
        self._lock = asyncio.Lock()

    # ----- status -----------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        # The on-disk part is read once per state change, not at every UI refresh.
        if self._disk is None:
            self._disk = {
                "floor": self.store.floor,
                "rejected": self.store.rejected(),
                "factory_reset": self.store.last_reset(),
            }
        return {
            "device": self.boot.device_id,
            "serial": self.current.serial if self.current else None,
            "source": self.source,
            "last_sync": self.last_sync,
            "last_error": self.last_error,
            **self._disk,
            # live: the launcher (another process) commits or rolls back slots
            "firmware": self.firmware(),
            "firmware_slots": _slots_status(),
            "server": self.boot.url,
        }

    def _error(self, reason: str) -> None:
        self.last_error = reason
        self._disk = None
        log.error("provisioning: %s", reason)

    def check_sync(self) -> None:
        self._sync_now.set()

    # ----- HTTP -------------------------------------------------------------------------------
    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=client_ssl_context(self.boot)),
                timeout=aiohttp.ClientTimeout(total=self.boot.fetch_timeout),
            )
        return self._session

    async def fetch(self) -> dict[str, Any] | None:
        """GET our document (If-None-Match); None when unchanged. ProvisioningError on failure."""
        headers = {"If-None-Match": self.etag} if self.etag else {}
        url = self.boot.document_url()
        try:
            async with self._http().get(url, headers=headers) as resp:
                if resp.status == 304:
                    return None
                if resp.status != 200:
                    text = (await resp.text())[:200].strip()
                    raise ProvisioningError(
                        f"server answered {resp.status} {resp.reason} for {url}: {text}"
                    )
                doc = await resp.json(content_type=None)
                etag = resp.headers.get("ETag")
        except aiohttp.ClientSSLError as e:
            raise ProvisioningError(f"TLS with {self.boot.url} failed: {e}") from None
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            raise ProvisioningError(f"cannot fetch {url}: {e or type(e).__name__}") from None
        if not isinstance(doc, dict):
            raise ProvisioningError("bad format: the document is not a JSON object")
        self._pending_etag = etag
        return doc

    async def report(self) -> None:
        """POST /status/<id>: firmware, serial, registration, last error (best effort)."""
        body = {
            "firmware": self.firmware(),
            "serial": self.current.serial if self.current else None,
            "registration": self.phone.registration_summary() if self.phone else "none",
            "last_error": self.last_error,
            "config_source": self.source,
            "local_changes": self.store.local_layer() or None,
        }
        try:
            async with self._http().post(self.boot.status_url(), json=body) as resp:
                if resp.status >= 300:
                    log.warning("status report answered %d", resp.status)
        except (aiohttp.ClientError, TimeoutError) as e:
            log.warning("cannot report status to %s: %s", self.boot.url, e)

    # ----- phone lifecycle ------------------------------------------------------------------
    async def _start_phone(self, loaded: Loaded) -> None:
        if self.phone is not None:
            log.info("stopping the phone to restart it on config serial %d", loaded.serial)
            await self.phone.stop()
            self.phone = None
            log.info("phone stopped")
        deadline = time.monotonic() + RESTART_BIND_WAIT
        while True:
            phone = ProvisionedPhone(loaded.config, self.status, self.check_sync)
            try:
                await phone.start()
                break
            except (TransportError, OSError) as e:
                with contextlib.suppress(Exception):  # release what the half start opened
                    await phone.stop()
                cause = e.__cause__ if isinstance(e, TransportError) else e
                in_use = isinstance(cause, OSError) and cause.errno == errno.EADDRINUSE
                if not in_use or time.monotonic() > deadline:
                    raise
                # the old phone's sockets close on later loop turns: bounded wait for the port
                await asyncio.sleep(0.1)
        self.phone, self.current = phone, loaded
        self._disk = None
        self._lcd_notice(phone, loaded)
        if phone.api is not None and phone.api.bound is not None:
            log.info("action API on http://%s:%d/api/status", *phone.api.bound)

    def _lcd_notice(self, phone: ProvisionedPhone, loaded: Loaded) -> None:
        """Tell the user on the LCD where the config came from (a few seconds' notice)."""
        driver = getattr(phone, "ui", None)
        if driver is None:
            return
        reset = self.store.last_reset()
        if reset is not None and not self.store.has_good():
            text = f"Reset: config #{loaded.serial}"
        elif loaded.trial:
            text = f"New config #{loaded.serial}"
        else:
            text = f"Saved config #{loaded.serial}"
        with contextlib.suppress(Exception):  # the UI is optional and must not stop provisioning
            driver.ui.show_error(text, time.monotonic())
            driver.refresh()

    async def _await_registered(self) -> bool:
        deadline = time.monotonic() + self.boot.trial_timeout
        while time.monotonic() < deadline:
            if self.phone is not None and self.phone.registered():
                return True
            await asyncio.sleep(0.1)  # registration state is polled on the phone's own loop
        return False

    async def _trial(self, loaded: Loaded) -> None:
        """Run ``loaded`` on probation: registered within the bound -> last known good."""
        self.store.begin_trial(loaded.serial)
        self.source = "server (trial)"
        try:
            await self._start_phone(loaded)
            started: str | None = None
        except (TransportError, OSError) as e:
            started = f"cannot start: {e}"
        fault("config:started")
        if started is None and await self._await_registered():
            self.store.promote()
            self.source = "server"
            self._disk = None
            log.info("config serial %d registered: now the last known good", loaded.serial)
            return
        summary = started or (self.phone.registration_summary() if self.phone else "none")
        if not self.store.has_good():
            self.source = "server (unconfirmed)"
            self._error(
                f"config serial {loaded.serial} did not register within "
                f"{self.boot.trial_timeout:g} s ({summary}); no earlier config to go back to"
            )
            return
        reason = (
            f"config serial {loaded.serial} could not register within "
            f"{self.boot.trial_timeout:g} s ({summary}); rolled back to the last known good"
        )
        self.store.reject(loaded.serial, reason)
        good = self.store.startup()
        if good is not None:
            await self._start_phone(good)
            self.source = "last known good"
        self._error(reason)

    # ----- sync -----------------------------------------------------------------------------
    async def sync(self) -> None:
        """Fetch, verify, and apply if newer; every refusal lands in last_error and the logs."""
        try:
            await self._sync()
        finally:
            self._disk = None

    async def _sync(self) -> None:
        async with self._lock:
            if self.source == "server (unconfirmed)" and self.phone and self.phone.registered():
                self.store.promote()  # the first config registered late: now it is known good
                self.source = "server"
            try:
                doc = await self.fetch()
            except ProvisioningError as e:
                self._error(f"{e}; keeping config serial {self._serial_text()}")
                self._fetch_failed = True
                return
            self.last_sync = time.time()
            if doc is None:
                # the verdict on this document stands; only a fetch error is cleared
                log.info("provisioning: document unchanged (304)")
                if self._fetch_failed:
                    self.last_error = None
                self._fetch_failed = False
                return
            self._fetch_failed = False
            try:
                payload, config = self.store.check(doc, time.time())
            except ProvisioningError as e:
                self._error(f"{e}; keeping config serial {self._serial_text()}")
                return
            self.etag = self._pending_etag
            serial = int(payload["serial"])
            rejected = self.store.rejected()
            if self.current is not None and serial == self.current.serial:
                self.last_error = None
                return
            if rejected is not None and rejected.get("serial") == serial:
                self._error(f"serial {serial} failed before: {rejected.get('reason')}")
                return
            if self.current is not None and serial < self.current.serial:
                self._error(f"serial {serial} is older than the running serial")
                return
            log.info("provisioning: applying config serial %d", serial)
            self.store.stage(doc, serial)
            self.last_error = None
            await self._trial(Loaded(serial, config, doc, trial=True))

    async def update_firmware(self) -> None:
        """Install ``[firmware] version`` of the running config into the inactive slot (only
        under the slot launcher), then ask the launcher to boot it as a trial (exit 75)."""
        root = os.environ.get(SLOTS_ENV)
        if not root or self.current is None:
            return
        version = desired_firmware(self.current.document.get("payload", {}))
        slots = Slots(Path(root))
        if version is None or version == slots.current_version():
            return
        last = slots.status().get("last") or {}
        if last.get("event") == "rolled_back" and last.get("version") == version:
            return  # it failed its health check here; wait for a newer version
        try:
            await install_update(self._http(), self.boot.url, version, self.boot.signing_key, slots)
        except FirmwareError as e:
            self._error(f"firmware update refused: {e}")
            return
        log.info("firmware %s installed; restarting into it (trial)", version)
        self.exit_code = RESTART_REQUESTED
        self._stop.set()

    def _serial_text(self) -> str:
        return str(self.current.serial) if self.current else "none (no config yet)"

    async def _first_config(self, stop: asyncio.Event) -> Loaded | None:
        """No config on the device yet: fetch until one arrives (bounded backoff)."""
        attempt = 0
        while not stop.is_set():
            try:
                doc = await self.fetch()
                if doc is not None:
                    payload, config = self.store.check(doc, time.time())
                    serial = int(payload["serial"])
                    self.store.stage(doc, serial)
                    self.etag = self._pending_etag
                    self.last_sync = time.time()
                    return Loaded(serial, config, doc, trial=True)
            except ProvisioningError as e:
                self._error(f"{e}; no config yet")
            wait = FIRST_FETCH_BACKOFF[min(attempt, len(FIRST_FETCH_BACKOFF) - 1)]
            attempt += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait)
        return None

    def _next_interval(self) -> float:
        spread = self.boot.resync_interval * JITTER
        # secrets, not random: no seeding concerns, and the jitter only needs to be spread out
        return self.boot.resync_interval - spread + secrets.randbelow(1000) / 1000 * 2 * spread

    async def run(self, stop: asyncio.Event) -> int:
        self._stop = stop
        loaded = self.store.startup()
        if loaded is None:
            log.info("no config on this phone yet: fetching from %s", self.boot.url)
            loaded = await self._first_config(stop)
            if loaded is None:
                return 0
        if loaded.trial:
            await self._trial(loaded)
        else:
            self.source = "last known good"
            await self._start_phone(loaded)
        await self.sync()
        await self.report()
        await self.update_firmware()
        try:
            while not stop.is_set():
                waiters = [
                    asyncio.create_task(stop.wait()),
                    asyncio.create_task(self._sync_now.wait()),
                ]
                _done, pending = await asyncio.wait(
                    waiters, timeout=self._next_interval(), return_when=asyncio.FIRST_COMPLETED
                )
                for task in pending:
                    task.cancel()
                if stop.is_set():
                    break
                self._sync_now.clear()
                await self.sync()
                await self.report()
                await self.update_firmware()
        finally:
            if self.phone is not None:
                await self.phone.stop()
            if self._session is not None:
                await self._session.close()
        return self.exit_code


async def run_provisioned(boot: Bootstrap) -> int:
    """`deskphone run --bootstrap`: until SIGTERM/SIGINT; exit 0 after un-registering."""
    from firmware.runtime.firmware_update import firmware_version, watch_health

    service = ProvisioningService(boot, firmware=firmware_version)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    health = asyncio.create_task(watch_health(lambda: service.phone, stop))
    try:
        return await service.run(stop)
    finally:
        health.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await health


def cmd_run_bootstrap(path: str, state_dir: str | None, log_level: str | None) -> int:
    """The body of `deskphone run --bootstrap` (exit 2 on a bootstrap mistake)."""
    from firmware.provisioning.bootstrap import load_bootstrap
    from firmware.provisioning.config import ConfigError

    logging.basicConfig(
        level=log_level or "INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        boot = load_bootstrap(path, state_dir=state_dir)
    except ConfigError as e:
        print(f"deskphone: bootstrap error: {e}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(run_provisioned(boot))
    except KeyboardInterrupt:
        return 0
    except OSError as e:
        print(f"deskphone: {e}", file=sys.stderr)
        return 1


def cmd_factory_reset(path: str, state_dir: str | None, reason: str) -> int:
    """`deskphone factory-reset --bootstrap B --reason TEXT`: wipe the provisioned config and
    local changes (identity and anti-rollback floor stay); the next start fetches afresh."""
    from firmware.provisioning.bootstrap import load_bootstrap
    from firmware.provisioning.config import ConfigError

    logging.basicConfig(level="INFO", format="%(levelname)s %(name)s: %(message)s")
    try:
        boot = load_bootstrap(path, state_dir=state_dir)
        store = ConfigStore(
            boot.state_dir, boot.device_id, Keys.from_files(boot.signing_key, boot.secret_key)
        )
    except ConfigError as e:
        print(f"deskphone: bootstrap error: {e}", file=sys.stderr)
        return 2
    removed = store.factory_reset(reason, time.time())
    print(f"factory reset: removed {', '.join(removed) or 'nothing'}; reason: {reason}")
    return 0
