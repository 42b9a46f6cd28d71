"""Message waiting indication (RFC 3842 message-summary); sans-IO.

`MwiService` subscribes to ``message-summary`` for the account's voicemail resource and also
takes unsolicited (out-of-dialog) NOTIFYs, which many PBXs send instead - but only from the
registrar/proxy flow (`trusted(peer)`); anyone else gets 403 and the count does not move (a
stranger must not light the LED or fake a count). Status: ``{"waiting", "new", "old"}`` (plus
urgent counts and the Message-Account to dial).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from firmware.sip.message import SipRequest
from firmware.sip.subscription import (
    NotifyRefused,
    Subscription,
    SubscriptionManager,
    SubscriptionSpec,
    parse_subscription_state,
)

log = logging.getLogger(__name__)

SUMMARY = "application/simple-message-summary"
MAX_COUNT = 2**32 - 1  # RFC 3842 5.2: counters clamp
_COUNTS = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*(?:\(\s*(\d+)\s*/\s*(\d+)\s*\))?\s*$")


@dataclass(frozen=True)
class MessageSummary:
    """A parsed simple-message-summary body (voice messages only are counted)."""

    waiting: bool
    new: int = 0
    old: int = 0
    urgent_new: int = 0
    urgent_old: int = 0
    account: str | None = None


def parse_message_summary(body: bytes) -> MessageSummary:
    """Parse RFC 3842 section 5; ValueError names the defect."""
    if len(body) > 8192:
        raise ValueError("message-summary body too large")
    text = body.decode("utf-8", errors="replace")
    waiting: bool | None = None
    account = None
    counts = (0, 0, 0, 0)
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = name.strip().lower(), value.strip()
        if key == "messages-waiting":
            if value.lower() not in ("yes", "no"):
                raise ValueError(f"Messages-Waiting must be yes or no, not {value!r}")
            waiting = value.lower() == "yes"
        elif key == "message-account":
            account = value
        elif key == "voice-message":
            m = _COUNTS.match(value)
            if m is None:
                raise ValueError(f"bad Voice-Message counts {value!r}")
            counts = tuple(min(MAX_COUNT, int(g or 0)) for g in m.groups())  # type: ignore[assignment]
    if waiting is None:
        raise ValueError("message-summary without Messages-Waiting")
    return MessageSummary(waiting, counts[0], counts[1], counts[2], counts[3], account)


class MwiService:
    """The phone's message-waiting state."""

    def __init__(
        self,
        subscriptions: SubscriptionManager,
        *,
        trusted: Callable[[Hashable], bool],
        spec: SubscriptionSpec | None = None,
        on_change: Callable[[MessageSummary], None] | None = None,
    ) -> None:
        self.subscriptions = subscriptions
        self.trusted = trusted
        self.spec = spec
        self.on_change = on_change
        self.summary = MessageSummary(False)
        self.subscription: Subscription | None = None
        self.refused = 0  # unsolicited NOTIFYs refused (not from the registrar flow)
        subscriptions.unsolicited["message-summary"] = self._on_unsolicited

    def start(self, now: float) -> None:
        if self.spec is not None and self.subscription is None:
            self.subscription = self.subscriptions.subscribe(
                self.spec, self._on_notify, now, key="mwi"
            )

    def _apply(self, request: SipRequest) -> None:
        if not request.body:
            return
        ctype = (request.content_type or "").split(";")[0].strip().lower()
        if ctype != SUMMARY:
            raise NotifyRefused(415, "Unsupported Media Type")
        try:
            summary = parse_message_summary(request.body)
        except ValueError as e:
            raise NotifyRefused(400, str(e)[:100]) from None
        if summary != self.summary:
            log.info("MWI: waiting=%s new=%d old=%d", summary.waiting, summary.new, summary.old)
        self.summary = summary
        if self.on_change is not None:
            self.on_change(summary)

    def _on_notify(self, sub: Subscription, request: SipRequest, now: float) -> None:
        self._apply(request)

    def _on_unsolicited(self, server_tx: Any, request: SipRequest, now: float) -> None:
        ua = self.subscriptions.ua
        if not self.trusted(server_tx.peer):
            self.refused += 1
            log.warning("MWI NOTIFY from %r refused: not the registrar flow", server_tx.peer)
            ua.respond(server_tx, request, 403, "Forbidden (MWI only from the registrar)", now)
            return
        state = request.headers.get("Subscription-State")
        if state is not None:
            try:
                parse_subscription_state(state)
            except ValueError as e:
                ua.respond(server_tx, request, 400, str(e), now)
                return
        try:
            self._apply(request)
        except NotifyRefused as e:
            ua.respond(server_tx, request, e.status, e.reason, now)
            return
        ua.respond(server_tx, request, 200, "OK", now)

    def status(self) -> dict[str, Any]:
        s = self.summary
        return {
            "waiting": s.waiting,
            "new": s.new,
            "old": s.old,
            "urgent_new": s.urgent_new,
            "urgent_old": s.urgent_old,
            "account": s.account,
            "subscription": self.subscription.status() if self.subscription else None,
        }
