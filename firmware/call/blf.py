"""Busy lamp field: monitored extensions on line keys (RFC 4235 dialog package); sans-IO.

For each BLF (or park orbit) key, `BlfService` keeps a dialog-event subscription (through
`firmware.sip.subscription`), folds its NOTIFYs into the monitored entity's dialogs and maps them
to one state: ``idle``, ``ringing``, ``talking``, ``held``, ``parked`` or ``unknown`` (no live
subscription), and that state to an LED mode (``off``, ``on``, ``slow_flash``, ``fast_flash``),
configurable per state like the commercial phones' BLF LED tables.

Pressing the key (`press`) does what the state suggests:

* ringing -> pick the call up: INVITE to the caller with ``Replaces: ...;early-only`` built from
  the NOTIFY's call-id and tags (RFC 5359 2.16, RFC 3891; the caller answers us and CANCELs the
  ringing phone), or dial the PBX's pickup feature code + extension when configured;
* parked (a park-orbit key) -> retrieve: INVITE with Replaces of the orbit's dialog to the
  parked party when the NOTIFY carries its call-id/tags (RFC 5359 2.15), else the pickup
  feature code or a call to the orbit;
* in a call -> blind-transfer the current call to the monitored extension;
* otherwise -> call it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from firmware.sip.dialog_info import (
    DialogEntry,
    DialogInfoError,
    DialogInfoState,
    parse_dialog_info,
)
from firmware.sip.message import SipRequest
from firmware.sip.subscription import (
    NotifyRefused,
    Subscription,
    SubscriptionManager,
    SubscriptionSpec,
)

log = logging.getLogger(__name__)

BLF_STATES = ("idle", "ringing", "talking", "held", "parked", "unknown")
LED_MODES = ("off", "on", "slow_flash", "fast_flash")
DEFAULT_LEDS: dict[str, str] = {
    "idle": "off",
    "ringing": "fast_flash",
    "talking": "on",
    "held": "slow_flash",
    "parked": "slow_flash",
    "unknown": "off",
}
DIALOG_INFO = "application/dialog-info+xml"


@dataclass(frozen=True)
class BlfKey:
    """One monitored line key."""

    key: str  # "LINE_2"
    target: str  # "sip:1002@pbx" (full URI)
    kind: str = "blf"  # "blf" | "park" (a park orbit: a live dialog there means "parked")
    account: str = "line1"
    label: str | None = None


@dataclass(frozen=True)
class PickupConfig:
    """How a ringing monitored line is picked up."""

    mode: str = "replaces"  # "replaces" (directed pickup, RFC 5359 2.16) | "code"
    code: str = "**"  # PBX directed-pickup prefix, dialled as code + extension
    group_code: str | None = None  # group pickup feature code (dialled as is)


@dataclass
class BlfLine:
    """Runtime state of one key."""

    config: BlfKey
    dialogs: DialogInfoState = field(default_factory=DialogInfoState)
    subscription: Subscription | None = None
    state: str = "unknown"
    caller: str | None = None  # who is calling the monitored line (identity/display)
    history: list[str] = field(default_factory=list)  # state changes, for tests/diagnostics


def blf_state(dialogs: list[DialogEntry], kind: str = "blf") -> str:
    """Map the monitored entity's live dialogs to one BLF state (ringing wins, then talking)."""
    live = [d for d in dialogs if d.state != "terminated"]
    if not live:
        return "idle"
    if kind == "park":
        return "parked"
    if any(d.early and d.direction == "recipient" for d in live):
        return "ringing"
    if any(d.early or (d.state == "confirmed" and not d.held) for d in live):
        return "talking"
    return "held"


class BlfService:
    """All BLF keys: subscriptions, states, LEDs and key presses."""

    def __init__(
        self,
        subscriptions: SubscriptionManager,
        calls: Any,
        keys: list[BlfKey],
        *,
        spec_for: Callable[[BlfKey], SubscriptionSpec],
        leds: dict[str, str] | None = None,
        pickup: PickupConfig | None = None,
        transfers: Any = None,
        on_change: Callable[[BlfLine], None] | None = None,
    ) -> None:
        self.subscriptions = subscriptions
        self.calls = calls
        self.transfers = transfers
        self.spec_for = spec_for
        self.leds = {**DEFAULT_LEDS, **(leds or {})}
        self.pickup = pickup or PickupConfig()
        self.on_change = on_change
        self.lines: dict[str, BlfLine] = {k.key: BlfLine(k) for k in keys}

    def start(self, now: float) -> None:
        """Subscribe every key (call once its account has an endpoint)."""
        for line in self.lines.values():
            if line.subscription is None:
                line.subscription = self.subscriptions.subscribe(
                    self.spec_for(line.config),
                    self._notify_handler(line),
                    now,
                    key=line.config.key,
                )
                line.subscription.on_change = lambda _sub, line=line: self._update(line)
            self._update(line)

    # ----- NOTIFY -----------------------------------------------------------------------------
    def _notify_handler(self, line: BlfLine) -> Callable[[Subscription, SipRequest, float], None]:
        def handle(sub: Subscription, request: SipRequest, now: float) -> None:
            if sub.notifies == 0:
                line.dialogs.reset()  # a new subscription: versions start again
            if not request.body:
                # Kamailio sends one empty NOTIFY when the published state expires: no dialogs.
                line.dialogs.reset()
            else:
                ctype = (request.content_type or "").split(";")[0].strip().lower()
                if ctype != DIALOG_INFO:
                    raise NotifyRefused(415, "Unsupported Media Type")
                try:
                    info = parse_dialog_info(request.body)
                except DialogInfoError as e:
                    log.warning("BLF %s: bad dialog-info: %s", line.config.key, e)
                    raise NotifyRefused(400, str(e)[:100]) from None
                if not line.dialogs.apply(info):
                    log.debug("BLF %s: stale dialog-info version ignored", line.config.key)

        return handle

    def _update(self, line: BlfLine) -> None:
        sub = line.subscription
        if sub is None or sub.state != "active" or sub.notifies == 0:
            state = "unknown"  # no live subscription, or not authorised (pending) yet
        else:
            state = blf_state(list(line.dialogs.dialogs.values()), line.config.kind)
        ringing = self._ringing_dialog(line)
        line.caller = None
        if ringing is not None:
            remote = ringing.remote
            line.caller = remote.display or remote.identity
        if state != line.state:
            log.info(
                "BLF %s (%s): %s -> %s", line.config.key, line.config.target, line.state, state
            )
            line.state = state
            line.history.append(state)
            if self.on_change is not None:
                self.on_change(line)

    def refresh_states(self) -> None:
        """Re-derive states after subscription changes (failures make a key ``unknown``)."""
        for line in self.lines.values():
            self._update(line)

    @staticmethod
    def _ringing_dialog(line: BlfLine) -> DialogEntry | None:
        for d in line.dialogs.dialogs.values():
            if d.early and d.direction == "recipient":
                return d
        return None

    # ----- key press --------------------------------------------------------------------------
    def press(self, key: str, now: float) -> dict[str, Any]:
        """The user pressed a BLF key: pickup, retrieve, transfer or call (see module doc)."""
        line = self.lines.get(key)
        if line is None:
            raise KeyError(f"no BLF key {key!r}")
        cfg = line.config
        if line.state == "ringing":
            return self._pickup(line, now)
        if line.state == "parked":
            return self._retrieve(line, now)
        active = [c for c in self.calls.active_calls() if c.state in ("connected", "held")]
        if active and self.transfers is not None:
            call = active[0]
            if self.transfers.transfer(call.id, cfg.target, now):
                return {"action": "transfer", "call": call.id, "target": cfg.target}
        return self._dial(cfg, cfg.target, now, "call")

    def _retrieve(self, line: BlfLine, now: float) -> dict[str, Any]:
        """Take a parked call back (RFC 5359 2.15): INVITE with Replaces of the orbit's dialog
        to the parked party when the NOTIFY names it (call-id, tags, remote target - Asterisk
        style park servers do), else the pickup code / a call to the orbit."""
        cfg = line.config
        code_target = self._pickup_code_target(cfg)
        parked = next(
            (
                d
                for d in line.dialogs.dialogs.values()
                if d.state == "confirmed" and d.call_id and d.local_tag and d.remote_tag
            ),
            None,
        )
        party = parked.remote.target or parked.remote.identity if parked else None
        if code_target is not None or parked is None or not party:
            return self._dial(cfg, code_target or cfg.target, now, "retrieve")
        replaces = f"{parked.call_id};to-tag={parked.remote_tag};from-tag={parked.local_tag}"
        return self._dial(
            cfg,
            party,
            now,
            "retrieve",
            extra_headers=[("Replaces", replaces), ("Require", "replaces")],
        )

    def _pickup_code_target(self, cfg: BlfKey) -> str | None:
        if self.pickup.mode != "code":
            return None
        user = _user_of(cfg.target)
        return f"{self.pickup.code}{user}" if user else None

    def _pickup(self, line: BlfLine, now: float) -> dict[str, Any]:
        cfg = line.config
        code_target = self._pickup_code_target(cfg)
        if code_target is not None:
            return self._dial(cfg, code_target, now, "pickup")
        ringing = self._ringing_dialog(line)
        if ringing is None or not (ringing.call_id and ringing.local_tag and ringing.remote_tag):
            raise ValueError(
                f"{cfg.key}: the NOTIFY carries no call-id/tags to pick up with; "
                "configure a pickup feature code"
            )
        caller = ringing.remote.target or ringing.remote.identity
        if not caller:
            raise ValueError(f"{cfg.key}: the NOTIFY does not say who is calling")
        # RFC 3891 3: tags as the *recipient* (the caller) sees its dialog with the monitored
        # phone: its local tag is the dialog-info remote-tag, and vice versa.
        replaces = (
            f"{ringing.call_id};to-tag={ringing.remote_tag};from-tag={ringing.local_tag};early-only"
        )
        return self._dial(
            cfg,
            caller,
            now,
            "pickup",
            extra_headers=[("Replaces", replaces), ("Require", "replaces")],
        )

    def _dial(
        self,
        cfg: BlfKey,
        target: str,
        now: float,
        action: str,
        extra_headers: list[tuple[str, str]] | None = None,
    ) -> dict[str, Any]:
        call = self.calls.dial(target, cfg.account, now, extra_headers=extra_headers or [])
        return {"action": action, "call": call.id, "target": target}

    # ----- status -----------------------------------------------------------------------------
    def status(self) -> list[dict[str, Any]]:
        out = []
        for line in self.lines.values():
            sub = line.subscription
            out.append(
                {
                    "key": line.config.key,
                    "target": line.config.target,
                    "type": line.config.kind,
                    "label": line.config.label,
                    "state": line.state,
                    "led": self.leds[line.state],
                    "caller": line.caller,
                    "subscription": sub.status() if sub is not None else None,
                }
            )
        return out

    def led_modes(self) -> dict[str, str]:
        """{key: LED mode} for the board layer."""
        return {k: self.leds[line.state] for k, line in self.lines.items()}


def _user_of(uri: str) -> str | None:
    rest = uri.split(":", 1)[-1]
    return rest.split("@", 1)[0] if "@" in rest else None
