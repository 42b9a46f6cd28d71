"""SIP-specific event notification, subscriber side (RFC 6665); sans-IO.

A `Subscription` is one SUBSCRIBE dialog for one event package (``dialog`` for BLF, RFC 4235;
``message-summary`` for MWI, RFC 3842). `SubscriptionManager` owns all of them and plugs into the
UA core:

* ``ua.handlers["NOTIFY"]``: out-of-dialog NOTIFYs go to a per-package handler registered in
  ``unsolicited`` (MWI from the registrar), everything else gets 481 (RFC 6665 4.1.3, T11);
* ``ua.unmatched["NOTIFY"]``: a NOTIFY with our tag that overtook the SUBSCRIBE's 2xx creates
  the subscription's dialog (RFC 6665 4.1.2.4); a NOTIFY for no subscription of ours -> 481;
* ``ua.services``: the manager's single deadline (refreshes, retries) is polled like a dialog's.

Rules: a NOTIFY is accepted only from the peer (flow) the subscription was sent to
(``same_flow``; T11: tampered dialog info must not steer pickups), with the subscribed Event
(else 489) and a Subscription-State (else 400). Refreshes go out at 80 % of the granted
duration; a refresh answered 481/408 or a subscription terminated by the notifier starts a new
SUBSCRIBE (new Call-ID), immediately for ``deactivated``/``timeout``, after ``retry-after`` or an
exponential backoff otherwise; ``rejected``/``invariant`` stop it for good.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from firmware.sip.auth import credential_realms
from firmware.sip.dialog import Dialog, DialogError, DialogState
from firmware.sip.errors import SipParseError
from firmware.sip.headers import parse_params
from firmware.sip.ids import new_call_id, new_tag
from firmware.sip.message import SipRequest, SipResponse, make_request
from firmware.sip.transaction import ClientTransaction

log = logging.getLogger(__name__)

REFRESH_FRACTION = 0.8  # refresh at 80 % of the granted duration
MIN_REFRESH = 5.0  # never refresh more often than this (a notifier granting 1 s)
NO_RETRY_REASONS = frozenset({"rejected", "invariant"})
IMMEDIATE_RETRY_REASONS = frozenset({"deactivated", "timeout"})

NotifyHandler = Callable[["Subscription", SipRequest, float], None]
SameFlow = Callable[[Hashable, Hashable], bool]


class NotifyRefused(Exception):
    """A NOTIFY body a package handler cannot accept: the status and reason to answer."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class SubscriptionState:
    """The Subscription-State header (RFC 6665 8.2.3)."""

    value: str  # active | pending | terminated (lower case)
    expires: int | None = None
    reason: str | None = None
    retry_after: int | None = None


def parse_subscription_state(text: str) -> SubscriptionState:
    """Parse ``active;expires=600`` / ``terminated;reason=timeout;retry-after=30``."""
    value, _, rest = text.partition(";")
    value = value.strip().lower()
    if not value:
        raise SipParseError("Empty Subscription-State")
    params = parse_params(rest, "Subscription-State") if rest else {}

    def number(name: str) -> int | None:
        raw = params.get(name)
        if raw is None:
            return None
        if not raw.strip().isdigit():
            raise SipParseError(f"Subscription-State {name} is not a number")
        return int(raw)

    reason = params.get("reason")
    return SubscriptionState(
        value, number("expires"), reason.lower() if reason else None, number("retry-after")
    )


def parse_event(text: str) -> tuple[str, str | None]:
    """The Event header's package (lower case) and ``id`` parameter."""
    package, _, rest = text.partition(";")
    params = parse_params(rest, "Event") if rest else {}
    return package.strip().lower(), params.get("id")


@dataclass
class SubscriptionSpec:
    """What to subscribe to and how to reach it."""

    event: str  # "dialog", "message-summary"
    accept: str  # "application/dialog-info+xml"
    target: str  # Request-URI and To (the monitored resource)
    from_uri: str  # our AOR
    contact: str  # "<sip:...>"
    dest: Hashable  # where requests go (the account's proxy/registrar)
    expires: int = 3600
    display_name: str | None = None
    digest: Any = None  # firmware.sip.auth.DigestClient or None
    user_agent: str = "deskphone/0.1"
    retry_base: float = 30.0  # first backoff after a failure, doubled up to retry_max
    retry_max: float = 1800.0
    extra_headers: tuple[tuple[str, str], ...] = ()


def _next_cseq(request: SipRequest) -> SipRequest:
    headers = [
        (n, v)
        for n, v in request.headers
        if n.lower() not in ("via", "v", "authorization", "proxy-authorization", "cseq")
    ]
    cseq = request.cseq
    headers.insert(0, ("CSeq", f"{cseq.number + 1} {cseq.method}"))
    return make_request(request.method, request.uri_text, headers=headers, body=request.body)


@dataclass(eq=False)
class Subscription:
    """One subscription (re-created with a new Call-ID after it dies, keeping its identity)."""

    manager: SubscriptionManager
    spec: SubscriptionSpec
    on_notify: NotifyHandler
    key: str = ""
    state: str = "init"  # init|subscribing|pending|active|waiting|terminated
    dialog: Dialog | None = None
    call_id: str = ""
    local_tag: str = ""
    last_status: int | None = None
    last_reason: str | None = None
    terminated_reason: str | None = None
    failures: int = 0
    expires_at: float | None = None
    notifies: int = 0
    refreshes: int = 0  # in-dialog refreshes the notifier accepted
    _request: SipRequest | None = None  # the last SUBSCRIBE sent (for digest retries)
    _refresh_at: float | None = None
    _retry_at: float | None = None
    _stopping: bool = False
    _tx: ClientTransaction | None = field(default=None, repr=False)
    # Told after every NOTIFY and state change (the BLF key re-derives its LED from it).
    on_change: Callable[[Subscription], None] | None = field(default=None, repr=False)

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change(self)

    # ----- lifecycle ------------------------------------------------------------------------
    def start(self, now: float) -> None:
        """Send a fresh SUBSCRIBE (new Call-ID and tag: a new dialog)."""
        self._leave_dialog()
        self._retry_at = self._refresh_at = None
        self.call_id, self.local_tag = (
            new_call_id(self.manager.ua.ids),
            new_tag(self.manager.ua.ids),
        )
        self.manager._index(self)
        spec = self.spec
        from_value = f"<{spec.from_uri}>;tag={self.local_tag}"
        if spec.display_name:
            from_value = f'"{spec.display_name}" {from_value}'
        headers = [
            ("Max-Forwards", "70"),
            ("From", from_value),
            ("To", f"<{spec.target}>"),
            ("Call-ID", self.call_id),
            ("CSeq", f"{1 + self.manager.ua.ids.randbelow(2**16)} SUBSCRIBE"),
            ("Contact", spec.contact),
            ("Event", spec.event),
            ("Expires", str(spec.expires)),
            ("Accept", spec.accept),
            ("User-Agent", spec.user_agent),
            *spec.extra_headers,
        ]
        request = make_request("SUBSCRIBE", spec.target, headers=headers)
        self._reuse_credentials(request)
        self.state = "subscribing"
        self._send(request, now)

    def refresh(self, now: float, expires: int | None = None) -> None:
        """In-dialog SUBSCRIBE (RFC 6665 4.1.2.2); a fresh one when there is no dialog."""
        if self.dialog is None or self.dialog.state is DialogState.TERMINATED:
            self.start(now)
            return
        value = self.spec.expires if expires is None else expires
        request = self.dialog.create_request(
            "SUBSCRIBE",
            ids=self.manager.ua.ids,
            extra_headers=[
                ("Event", self.spec.event),
                ("Expires", str(value)),
                ("Accept", self.spec.accept),
                ("User-Agent", self.spec.user_agent),
            ],
        )
        self._reuse_credentials(request)
        self._refresh_at = None
        self._send(request, now)

    def _reuse_credentials(self, request: SipRequest) -> None:
        """Answer the realms our last SUBSCRIBE was challenged for (saves a round trip), and
        no others: credentials for other servers have no business going to this one."""
        if self.spec.digest is not None and self._request is not None:
            realms = credential_realms(self._request)
            if realms:
                self.spec.digest.pre_authorize(request, realms=realms)

    def stop(self, now: float) -> None:
        """Unsubscribe (Expires: 0) and never retry."""
        self._stopping = True
        self._retry_at = self._refresh_at = None
        if self.dialog is not None and self.state in ("active", "pending"):
            self.refresh(now, expires=0)
        self.state = "terminated"
        self.terminated_reason = "unsubscribed"
        self._changed()

    def _send(self, request: SipRequest, now: float) -> None:
        self._request = request
        self._tx = self.manager.ua.send_request(request, self, now, dest=self.spec.dest)

    # ----- responses ------------------------------------------------------------------------
    def on_response(self, tx: ClientTransaction, response: SipResponse, now: float) -> None:
        if response.status < 200 or tx is not self._tx:
            return
        self.last_status, self.last_reason = response.status, response.reason
        request = tx.request
        if response.status in (401, 407) and self.spec.digest is not None:
            retry = _next_cseq(request)
            if self.dialog is not None:
                self.dialog.local_seq = retry.cseq.number
            if self.spec.digest.authorize(retry, response):
                self._send(retry, now)
                return
            if self.spec.digest.last_error:  # e.g. a realm the account password must not answer
                self.last_reason = f"{response.reason} ({self.spec.digest.last_error})"
        if self._stopping:
            return
        if 200 <= response.status < 300:
            self._on_2xx(request, response, now)
            return
        in_dialog = request.to.tag is not None
        if in_dialog and response.status in (481, 408):
            # The notifier forgot the subscription (RFC 6665 4.1.2.2): a new one at once.
            self.start(now)
            return
        if in_dialog and response.status not in (481, 408) and self.expires_at is not None:
            # A refused refresh leaves the subscription until it expires (RFC 6665 4.1.2.2).
            self._retry_at = max(now + 1.0, self.expires_at - 1.0)
            return
        retry_after = response.headers.get("Retry-After")
        self._failed(
            now,
            int(retry_after.split(";")[0])
            if retry_after and retry_after.split(";")[0].strip().isdigit()
            else None,
        )

    def on_timeout(self, tx: ClientTransaction, now: float) -> None:
        if tx is not self._tx or self._stopping:
            return
        self.last_status, self.last_reason = 408, "Request Timeout"
        self._failed(now, None)

    def _on_2xx(self, request: SipRequest, response: SipResponse, now: float) -> None:
        self.failures = 0
        if request.to.tag is not None:
            self.refreshes += 1
        granted = response.headers.get("Expires")
        expires = self.spec.expires
        if granted is not None and granted.strip().isdigit():
            expires = int(granted.strip())
        if self.dialog is None and request.to.tag is None:
            try:
                self.dialog = Dialog.from_uac(request, response)
            except (DialogError, SipParseError) as e:
                log.info("SUBSCRIBE 2xx creates no dialog: %s", e)
            else:
                self.dialog.confirm()
                self.manager.ua.bind_dialog(self.dialog.id, self)
        if self.state == "subscribing":
            self.state = "pending"  # until the first NOTIFY says active
        self._schedule_refresh(now, expires)
        self._changed()

    def _schedule_refresh(self, now: float, expires: int) -> None:
        if expires <= 0:
            return
        self.expires_at = now + expires
        self._refresh_at = now + max(MIN_REFRESH, expires * REFRESH_FRACTION)

    def _failed(self, now: float, retry_after: int | None) -> None:
        """Start over later with a new SUBSCRIBE: ``retry_after`` or exponential backoff."""
        self._leave_dialog()
        self.failures += 1
        self.state = "waiting"
        if retry_after is None:
            wait = min(self.spec.retry_max, self.spec.retry_base * 2 ** (self.failures - 1))
            # 50-100 % jitter so a fleet of phones does not re-subscribe in lock-step.
            wait *= 0.5 + self.manager.ua.ids.randbelow(1000) / 2000
        else:
            wait = float(retry_after)
        self._retry_at = now + wait
        self._changed()
        log.info(
            "subscription %s to %s failed (%s %s); retrying in %.1f s",
            self.spec.event,
            self.spec.target,
            self.last_status,
            self.last_reason,
            wait,
        )

    def _leave_dialog(self) -> None:
        if self.dialog is not None:
            self.manager.ua.unbind_dialog(self.dialog.id)
            self.dialog = None
        self.expires_at = None

    # ----- NOTIFY ---------------------------------------------------------------------------
    def on_request(self, server_tx: Any, request: SipRequest, now: float) -> None:
        """In-dialog request (the UA core found our dialog)."""
        if request.method == "NOTIFY":
            self.on_notify_request(server_tx, request, now)
        elif request.method == "SUBSCRIBE":
            self.manager.ua.respond(server_tx, request, 489, "Bad Event", now)
        else:
            self.manager.ua.respond(
                server_tx, request, 405, "Method Not Allowed", now, [("Allow", "NOTIFY")]
            )

    def on_notify_request(self, server_tx: Any, request: SipRequest, now: float) -> None:
        ua = self.manager.ua
        if not self.manager.same_flow(server_tx.peer, self.spec.dest):
            log.warning(
                "NOTIFY for %s from %r refused: not the subscription's flow",
                self.spec.target,
                server_tx.peer,
            )
            ua.respond(server_tx, request, 403, "Forbidden (not the subscription's flow)", now)
            return
        try:
            package, _id = parse_event(request.headers.get("Event") or "")
            if package != self.spec.event:
                ua.respond(server_tx, request, 489, "Bad Event", now)
                return
            raw_state = request.headers.get("Subscription-State")
            if raw_state is None:
                ua.respond(server_tx, request, 400, "Missing Subscription-State", now)
                return
            sub_state = parse_subscription_state(raw_state)
        except SipParseError as e:
            ua.respond(server_tx, request, 400, e.reason, now)
            return
        if self.dialog is None:
            try:
                dialog = Dialog.from_uas(request, self.local_tag, self.spec.contact)
            except (DialogError, SipParseError) as e:
                ua.respond(server_tx, request, 400, str(e), now)
                return
            dialog.local_seq = self._request.cseq.number if self._request else None
            dialog.confirm()
            self.dialog = dialog
            ua.bind_dialog(dialog.id, self)
        elif self.dialog.remote_tag != request.from_.tag:
            # A second notifier after a fork: we keep one dialog per subscription.
            ua.respond(server_tx, request, 481, "Subscription Does Not Exist", now)
            return
        else:
            code = self.dialog.check_request(request)
            if code is not None:
                ua.respond(server_tx, request, code, "Bad CSeq" if code == 500 else "", now)
                return
        try:
            if request.body or sub_state.value != "terminated":
                self.on_notify(self, request, now)
        except NotifyRefused as e:
            ua.respond(server_tx, request, e.status, e.reason, now)
            return
        ua.respond(server_tx, request, 200, "OK", now)
        self.notifies += 1
        self._apply_state(sub_state, now)
        self._changed()

    def _apply_state(self, sub_state: SubscriptionState, now: float) -> None:
        if self._stopping:
            return
        if sub_state.value in ("active", "pending"):
            self.state = sub_state.value
            self.terminated_reason = None
            if sub_state.expires is not None:
                self._schedule_refresh(now, sub_state.expires)
            return
        if sub_state.value != "terminated":
            return
        self.terminated_reason = sub_state.reason
        self._leave_dialog()
        self._refresh_at = None
        if sub_state.reason in NO_RETRY_REASONS:
            self.state = "terminated"
            self._retry_at = None
            log.info("subscription to %s ended for good: %s", self.spec.target, sub_state.reason)
            return
        if sub_state.reason in IMMEDIATE_RETRY_REASONS and sub_state.retry_after is None:
            self.state = "waiting"
            self._retry_at = now
            return
        self.last_status, self.last_reason = None, f"terminated;reason={sub_state.reason}"
        self._failed(now, sub_state.retry_after)

    # ----- timer ----------------------------------------------------------------------------
    def deadline(self) -> float | None:
        times = [t for t in (self._refresh_at, self._retry_at) if t is not None]
        return min(times) if times else None

    def on_timer(self, now: float) -> None:
        if self._retry_at is not None and self._retry_at <= now:
            self._retry_at = None
            if self.dialog is not None and self.state in ("active", "pending"):
                self.refresh(now)
            else:
                self.start(now)
        elif self._refresh_at is not None and self._refresh_at <= now:
            self.refresh(now)

    def status(self) -> dict[str, Any]:
        return {
            "event": self.spec.event,
            "target": self.spec.target,
            "state": self.state,
            "last_status": self.last_status,
            "last_reason": self.last_reason,
            "refreshes": self.refreshes,
        }


class SubscriptionManager:
    """Every subscription of the phone, wired into the UA core (see the module docstring)."""

    def __init__(self, ua: Any, *, same_flow: SameFlow | None = None) -> None:
        self.ua = ua
        self.same_flow: SameFlow = same_flow or (lambda peer, dest: peer == dest)
        self.subscriptions: list[Subscription] = []
        self._by_tag: dict[tuple[str, str], Subscription] = {}
        # Out-of-dialog NOTIFY handlers by event package (MWI from the registrar).
        self.unsolicited: dict[str, Callable[[Any, SipRequest, float], None]] = {}
        ua.handlers["NOTIFY"] = self._on_out_of_dialog_notify
        ua.unmatched["NOTIFY"] = self._on_unmatched_notify
        ua.services.append(self)

    def subscribe(
        self, spec: SubscriptionSpec, on_notify: NotifyHandler, now: float, key: str = ""
    ) -> Subscription:
        sub = Subscription(self, spec, on_notify, key=key)
        self.subscriptions.append(sub)
        sub.start(now)
        return sub

    def _index(self, sub: Subscription) -> None:
        self._by_tag = {k: s for k, s in self._by_tag.items() if s is not sub}
        self._by_tag[(sub.call_id, sub.local_tag)] = sub

    def stop(self, now: float) -> None:
        for sub in self.subscriptions:
            sub.stop(now)

    def _on_unmatched_notify(self, server_tx: Any, request: SipRequest, now: float) -> None:
        sub = self._by_tag.get((request.call_id, request.to.tag or ""))
        if sub is None or sub.state in ("terminated", "waiting", "init"):
            self.ua.respond(server_tx, request, 481, "Subscription Does Not Exist", now)
            return
        sub.on_notify_request(server_tx, request, now)

    def _on_out_of_dialog_notify(self, server_tx: Any, request: SipRequest, now: float) -> None:
        try:
            package, _id = parse_event(request.headers.get("Event") or "")
        except SipParseError as e:
            self.ua.respond(server_tx, request, 400, e.reason, now)
            return
        handler = self.unsolicited.get(package)
        if handler is None:
            self.ua.respond(server_tx, request, 481, "Subscription Does Not Exist", now)
            return
        handler(server_tx, request, now)

    # ----- timer (polled by the UA core through ua.services) ---------------------------------
    def get_timer(self) -> float | None:
        times = [t for s in self.subscriptions if (t := s.deadline()) is not None]
        return min(times) if times else None

    def handle_timer(self, now: float) -> None:
        for sub in list(self.subscriptions):
            deadline = sub.deadline()
            if deadline is not None and deadline <= now:
                sub.on_timer(now)
