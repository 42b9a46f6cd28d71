"""Wires the desk-phone features (issue 5) into the running phone.

The sans-IO parts live in firmware/sip/subscription.py, firmware/call/blf.py, mwi.py,
incoming.py and privacy.py; this module only builds them from the config, tells them which
network peer is the registrar/proxy flow (the trust anchor for MWI, PAI and intercom, and the
only flow dialog-info NOTIFYs are taken from), starts the subscriptions once an account knows
its Contact, and offers the actions the action API and the UI call (`blf_press`, `set_dnd`,
`set_forward`, `park`, `pickup`, `dial_anonymous`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Hashable
from typing import Any

from audio.graph import BufferSink, SilenceSource
from audio.tones import ToneSpec
from firmware.call.blf import BlfKey, BlfService, PickupConfig
from firmware.call.incoming import IncomingConfig, IncomingPolicy
from firmware.call.mwi import SUMMARY, MwiService
from firmware.call.privacy import PrivacyService
from firmware.provisioning.features_config import FeaturesConfig, features_of
from firmware.runtime.addresses import Address
from firmware.runtime.api import ActionError
from firmware.runtime.progress_tones import ToneOverlaySink
from firmware.runtime.transports import Flow
from firmware.sip.subscription import SubscriptionManager, SubscriptionSpec

log = logging.getLogger(__name__)

ACCOUNT_WAIT = 0.2  # seconds between checks for an account's first Contact (TCP/TLS connect)
# Two short high beeps when a call was answered by itself (intercom), so nobody at the desk is
# overheard unawares (RFC 5850 A.21); the long last pause means "once".
INTERCOM_BEEP = ToneSpec((1400.0,), (0.15, 0.1, 0.15, 86400.0), level_dbfs=-12.0)


def peer_is(peer: Hashable, dest: Hashable) -> bool:
    """Is the network peer ``peer`` (a Flow a request came on) the address ``dest``?

    UDP: the datagram came from that address and port. TCP/TLS: a connection with that host
    (ours to it, or one it opened to our listener from an ephemeral port: proxies such as
    Kamailio send in-dialog NOTIFYs to our Contact on a new connection); a TCP peer cannot
    fake its address without completing the handshake.
    """
    if not isinstance(dest, Address):
        return peer == dest
    remote = peer.remote if isinstance(peer, Flow) else peer
    if not isinstance(remote, Address) or remote.transport != dest.transport:
        return False
    if remote.transport in ("tcp", "tls"):
        return remote.host == dest.host
    return (remote.host, remote.port) == (dest.host, dest.port)


class DeskFeatures:
    """BLF, MWI, DND, forwarding, intercom, privacy and park for one `Phone`."""

    def __init__(self, phone: Any) -> None:
        self.phone = phone
        cfg: FeaturesConfig = features_of(phone.config)
        self.cfg = cfg
        ua = phone.ua
        self.subscriptions = SubscriptionManager(ua, same_flow=peer_is)
        self.default_account = phone.config.accounts[0].id if phone.config.accounts else ""
        blf_keys = [
            BlfKey(
                key=k.key,
                target=self._full_uri(k.target, k.account or self.default_account),
                kind=k.type,
                account=k.account or self.default_account,
                label=k.label,
            )
            for k in cfg.keys
            if k.type in ("blf", "park")
        ]
        self.speeddial = {k.key: k for k in cfg.keys if k.type == "speeddial"}
        self.blf = BlfService(
            self.subscriptions,
            phone.calls,
            blf_keys,
            spec_for=self._spec_for,
            leds=cfg.blf_leds,
            pickup=PickupConfig(cfg.pickup, cfg.pickup_code, cfg.group_pickup_code),
            transfers=getattr(phone, "transfers", None),
        )
        self.mwi = MwiService(self.subscriptions, trusted=self.from_registrar)
        self.incoming = IncomingPolicy(
            ua,
            phone.calls,
            IncomingConfig(
                dnd=cfg.dnd,
                dnd_status=cfg.dnd_status,
                forward_always=cfg.forward_always,
                forward_busy=cfg.forward_busy,
                forward_no_answer=cfg.forward_no_answer,
                forward_no_answer_after=cfg.forward_no_answer_after,
                intercom_enabled=cfg.intercom_enabled,
                intercom_allow=cfg.intercom_allow,
                intercom_max_delay=cfg.intercom_max_delay,
            ),
            trusted=self.from_registrar,
            target_uri=self._full_uri,
        )
        self.privacy = PrivacyService(phone.calls, privacy=cfg.privacy)
        self._task: asyncio.Task[None] | None = None
        self.beeped: list[str] = []  # auto-answered calls the warning beep was played into
        # Server-side DND / forwarding (feature codes dialled to the PBX): what we asked for.
        self.dnd_server = False
        self.forward_server: dict[str, str | None] = {}

    # ----- trust and addressing ----------------------------------------------------------------
    def from_registrar(self, peer: Hashable) -> bool:
        """True when ``peer`` is the registrar/outbound-proxy flow of one of our accounts."""
        return any(peer_is(peer, dest) for dest in self.phone._account_dest.values())

    def _domain(self, account: str) -> str:
        acc = self.phone._accounts.get(account) or next(
            (a for a in self.phone.config.accounts if a.id == account), None
        )
        if acc is None:
            raise ActionError(404, f"no enabled account {account!r}")
        return str(acc.domain)

    def _full_uri(self, target: str, account: str) -> str:
        if target.startswith(("sip:", "sips:")):
            return target
        return f"sip:{target}@{self._domain(account)}"

    def _spec_for(self, key: BlfKey) -> SubscriptionSpec:
        return self._spec(
            key.account,
            self._full_uri(key.target, key.account),
            "dialog",
            "application/dialog-info+xml",
            self.cfg.blf_expires,
        )

    def _spec(
        self, account: str, target: str, event: str, accept: str, expires: int
    ) -> SubscriptionSpec:
        binding = self.phone.ua.accounts[account]
        acc = self.phone._accounts[account]
        return SubscriptionSpec(
            event=event,
            accept=accept,
            target=target,
            from_uri=str(acc.aor),
            display_name=acc.display_name,
            contact=f"<{binding.endpoint.contact}>",
            dest=self.phone._account_dest[account],
            expires=expires,
            digest=binding.registration.digest,
            user_agent=self.phone.config.sip.user_agent,
            retry_base=self.phone.config.sip.retry_base,
        )

    # ----- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Subscribe once the accounts know how they appear (their Contact)."""
        self._task = asyncio.create_task(self._start_when_ready(), name="desk-features")

    async def _start_when_ready(self) -> None:
        accounts = {k.config.account for k in self.blf.lines.values()}
        if self.cfg.mwi_subscribe and self.default_account:
            accounts.add(self.default_account)
        while True:
            bindings = self.phone.ua.accounts
            # Also wait for the first REGISTER's outcome: the account password answers only
            # the realm the registrar's challenge names (T44), so a SUBSCRIBE challenged
            # before that would fail and back off.
            if all(
                a in bindings
                and bindings[a].endpoint is not None
                and bindings[a].registration.state not in ("unregistered", "registering")
                for a in accounts
            ):
                break
            await asyncio.sleep(ACCOUNT_WAIT)  # TCP/TLS accounts connect in the background
        now = time.monotonic()
        if self.cfg.mwi_subscribe and self.default_account:
            acc = self.phone._accounts[self.default_account]
            self.mwi.spec = self._spec(
                self.default_account,
                self.cfg.mwi_uri or str(acc.aor),
                "message-summary",
                SUMMARY,
                self.cfg.mwi_expires,
            )
            self.mwi.start(now)
        self.blf.start(now)
        self.phone._pump()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self.subscriptions.stop(time.monotonic())
        self.phone._pump()

    # ----- actions -----------------------------------------------------------------------------
    def blf_press(self, key: str) -> dict[str, Any]:
        """A BLF/park/speed-dial key: pickup, retrieve, transfer or call (firmware.call.blf)."""
        now = time.monotonic()
        if key in self.speeddial:
            k = self.speeddial[key]
            return self._dial(k.target, k.account or self.default_account, "call")
        try:
            result = self.blf.press(key, now)
        except KeyError:
            raise ActionError(404, f"no BLF, park or speed-dial key {key!r}") from None
        except (ValueError, RuntimeError) as e:
            raise ActionError(409, str(e)) from None
        self.phone._after_calls()
        return result

    def _dial(self, target: str, account: str, action: str, **kw: Any) -> dict[str, Any]:
        try:
            call = self.phone.calls.dial(target, account, time.monotonic(), **kw)
        except RuntimeError as e:
            raise ActionError(409, str(e)) from None
        self.phone._after_calls()
        return {"action": action, "call": call.id, "target": target}

    def set_dnd(self, enabled: bool) -> dict[str, Any]:
        """Local DND (486/603 here), or the PBX's when ``[dnd] on_code/off_code`` are set."""
        if self.cfg.dnd_on_code and self.cfg.dnd_off_code:
            code = self.cfg.dnd_on_code if enabled else self.cfg.dnd_off_code
            placed = self._dial(code, self.default_account, "feature_code")
            self.dnd_server = enabled
            log.info("DND %s at the PBX (%s)", "on" if enabled else "off", code)
            return {"dnd": enabled, "feature_call": placed["call"]}
        self.incoming.config.dnd = enabled
        log.info("DND %s", "on" if enabled else "off")
        return {"dnd": enabled}

    def set_forward(self, changes: dict[str, Any]) -> dict[str, Any]:
        """Local forwarding (302 here), or per mode the PBX's with ``[forward.codes]``."""
        cfg = self.incoming.config
        for mode in ("always", "busy", "no_answer"):
            if mode in changes:
                value = changes[mode]
                if value is not None and (not isinstance(value, str) or not value.strip()):
                    raise ActionError(400, f'"{mode}" must be a number, a sip: URI or null')
                value = value.strip() if value else None
                if (
                    value is not None
                    and value.startswith(("sip:", "sips:"))
                    and (mode in self.cfg.forward_codes)
                ):
                    raise ActionError(400, f'"{mode}" is forwarded by feature code: give a number')
                if mode in self.cfg.forward_codes:
                    on, off = self.cfg.forward_codes[mode]
                    self._dial(f"{on}{value}" if value else off, self.default_account, "code")
                    self.forward_server[mode] = value
                    continue
                setattr(cfg, f"forward_{mode}", value)
        if "no_answer_after" in changes:
            after = changes["no_answer_after"]
            if (
                not isinstance(after, int | float)
                or isinstance(after, bool)
                or not 1 <= after <= 300
            ):
                raise ActionError(400, '"no_answer_after" must be 1..300 seconds')
            cfg.forward_no_answer_after = float(after)
        return {"forward": {**self.incoming.forward_status(), **self.forward_server}}

    def park(self, call_id: str) -> dict[str, Any]:
        """Park a call: blind transfer (REFER) to the park URI or the park feature code."""
        target = self.cfg.park_uri or self.cfg.park_code
        if target is None:
            raise ActionError(409, "no [park] uri or code configured")
        transfers = getattr(self.phone, "transfers", None)
        if call_id not in self.phone.calls.calls:
            raise ActionError(404, f"no call {call_id!r}")
        if transfers is None or not transfers.transfer(call_id, target, time.monotonic()):
            raise ActionError(409, f"call {call_id} cannot be parked now")
        self.phone._after_calls()
        return {"action": "park", "call": call_id, "target": target}

    def pickup(self, extension: str | None) -> dict[str, Any]:
        """Group pickup (the group code) or directed pickup of ``extension`` by feature code."""
        if extension:
            return self._dial(f"{self.cfg.pickup_code}{extension}", self.default_account, "pickup")
        if self.cfg.group_pickup_code is None:
            raise ActionError(409, "no [blf] group_pickup_code configured")
        return self._dial(self.cfg.group_pickup_code, self.default_account, "pickup")

    def dial_anonymous(self, number: str, account: str | None) -> dict[str, Any]:
        return self._dial(number, account or self.default_account, "call", anonymous=True)

    def follow_media(self, sessions: Any) -> None:
        """After media changes: the intercom warning beep on a call that answered by itself."""
        for call in self.phone.calls.calls.values():
            if not call.extras.get("auto_answered") or call.id in self.beeped:
                continue
            session = sessions.get(call.id)
            if session is None or call.state != "connected":
                continue
            source, sink = session.set_audio(SilenceSource(8000), BufferSink(8000))
            session.set_audio(source, ToneOverlaySink(sink, INTERCOM_BEEP))
            self.beeped.append(call.id)
            call.extras["warning_tone"] = True
            log.info("call %s: intercom warning beep", call.id)

    # ----- status ------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        return {
            "blf": self.blf.status(),
            "mwi": self.mwi.status(),
            "dnd": self.incoming.config.dnd or self.dnd_server,
            "forward": {**self.incoming.forward_status(), **self.forward_server},
            "incoming_diverted": self.incoming.refused,
        }
