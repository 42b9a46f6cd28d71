"""INVITE with Join (RFC 3911) as the joined party: a third party enters a live call; sans-IO.

`JoinService` plugs into a `CallManager` as ``calls.joins`` (the manager asks it to vet every new
INVITE carrying Join before anything rings) and as a feature (``call_added`` answers an authorised
Join at once, without alerting; ``call_synced`` keeps the pairing). The runtime then mixes the new
call with the joined one in its local conference (`ready_to_mix`), so the phone is the focus of
a three-party call (RFC 3911 section 7.1; RFC 5359 section 2.11).

Rules (FEATURES 1.5, docs/threat-model.md):

* T13: more than one Join, Join together with Replaces, a Join value without both tags -> 400
  with the reason; Join in a non-INVITE is refused by `join_of` too;
* matching (RFC 3911 section 4): to-tag is OUR local tag, from-tag the peer's; only a confirmed
  call of ours can be joined; no match or an early dialog -> 481, a terminated dialog -> 603;
* T12: Join must be authenticated (RFC 3911 section 4 MUST; we have no Referred-By AIB), so only
  an identity on ``[transfer] allow_from`` that answers our Digest challenge may join; anyone
  else gets 403 and the call is untouched. The Digest nonce-count makes a captured Join useless
  (T2: 401 stale=true), and a call can be joined once (a second Join -> 486).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from firmware.call.authorise import Authoriser, NotAuthorised
from firmware.call.replaces import (
    PendingInvite,
    ReplacesRefused,
    answer_refusal,
    parse_replaces,
    pending_key,
    single_dialog_header,
)
from firmware.sip.errors import SipParseError
from firmware.sip.invite import State
from firmware.sip.message import SipRequest
from firmware.sip.transaction import ServerTransaction

if TYPE_CHECKING:
    from firmware.call.manager import Call, CallManager

log = logging.getLogger(__name__)

PENDING_TTL = 32.0  # seconds an authorised Join INVITE may take to become a call


@dataclass(frozen=True)
class JoinTarget:
    """A Join header value (RFC 3911 section 7.1), tags as the *recipient* sees them."""

    call_id: str
    to_tag: str  # the recipient's local tag
    from_tag: str  # the recipient's remote tag


def join_of(request: SipRequest) -> JoinTarget | None:
    """The request's single Join (None without one); contradictions raise 400 (T13)."""
    value = single_dialog_header(request, "Join", "Replaces")
    if value is None:
        return None
    try:
        parsed = parse_replaces(value)  # same grammar: callid;to-tag=..;from-tag=..
    except ReplacesRefused as e:
        raise ReplacesRefused(400, e.reason.replace("Replaces", "Join")) from None
    if parsed.early_only:
        raise ReplacesRefused(400, "Join has no early-only parameter")
    return JoinTarget(parsed.call_id, parsed.to_tag, parsed.from_tag)


class JoinService:
    """RFC 3911 as the joined UA, on top of a `CallManager` (see the module docstring)."""

    def __init__(self, calls: CallManager, auth: Authoriser) -> None:
        self.calls = calls
        self.auth = auth
        self._pending: dict[tuple[str, str, int], PendingInvite] = {}
        self._to_mix: list[tuple[str, str]] = []  # (joined call, new call) for the runtime
        calls.joins = self
        calls.features.append(self)
        calls.option_tags += [t for t in ("join",) if t not in calls.option_tags]

    # ----- called by CallManager._on_invite -----------------------------------------------------
    def refuse(self, server_tx: ServerTransaction, request: SipRequest, now: float) -> bool:
        """Vet a new INVITE; True when it carried Join and we already answered it (refused)."""
        try:
            target = join_of(request)
            if target is None:
                return False
            peer = server_tx.peer
            if not self.auth.listed_request(request, peer):  # strangers learn nothing (T12)
                raise ReplacesRefused(403, "Join not authorised")
            old = self._match(target)
            self.auth.authenticate(request, now, "Join", peer)
        except (ReplacesRefused, NotAuthorised, SipParseError) as e:
            answer_refusal(self.calls.ua, server_tx, request, e, now, "Join")
            return True
        self._pending = {k: p for k, p in self._pending.items() if now - p.now < PENDING_TTL}
        self._pending[pending_key(request)] = PendingInvite(old, now)
        log.info("call %s will be joined by %s", old.id, request.from_.uri)
        return False

    def _match(self, target: JoinTarget) -> Call:
        for call in self.calls.calls.values():
            dialog = call.session.dialog
            if dialog is None or call.session.call_id != target.call_id:
                continue
            if (dialog.local_tag, dialog.remote_tag) != (target.to_tag, target.from_tag):
                continue
            if call.state == "ended" or call.session.state is State.TERMINATED:
                raise ReplacesRefused(603, "Joined dialog already terminated")
            if call.session.state is not State.CONFIRMED:
                raise ReplacesRefused(481, "Only an established call can be joined")
            if call.extras.get("joined_by"):
                raise ReplacesRefused(486, "Busy Here (call already joined)")
            return call
        raise ReplacesRefused(481, "Joined dialog does not exist")

    # ----- CallManager feature hooks ------------------------------------------------------------
    def call_added(self, call: Call) -> None:
        """An authorised Join: answered at once (no ringing), then mixed with the joined call."""
        if call.direction != "incoming":
            return
        pending = self._pending.pop(pending_key(call.session.initial_request), None)
        if pending is None:
            return
        old = pending.old
        # RFC 3911 7.1 / RFC 4579: we now mix for the joiner, so our Contact says we are a focus.
        call.session.contact = f"{call.session.contact};isfocus"
        if not call.session.accept(pending.now):
            return  # unusable offer: 488 sent by accept, the joined call is untouched
        call.state = "connected"
        old.extras["joined_by"] = call.id
        call.extras["joins_call"] = old.id
        lines = getattr(self.calls, "lines", None)
        if lines is not None:
            lines.join([old.id, call.id])  # they talk together: one line, no hold
        if old.held:  # joined while on hold here: the three talk now
            self.calls.resume(old.id, pending.now)
        self._to_mix.append((old.id, call.id))

    def call_synced(self, call: Call, now: float) -> None:
        if call.state != "ended":
            return
        for old_id, new_id in list(self._to_mix):
            if call.id in (old_id, new_id):
                self._to_mix.remove((old_id, new_id))
        joined = call.extras.get("joins_call")
        if joined is not None and joined in self.calls.calls:
            self.calls.calls[joined].extras.pop("joined_by", None)

    def ready_to_mix(self, has_media: Callable[[str], bool]) -> list[tuple[str, str]]:
        """Pairs (joined call, joining call) whose media both run now; each is returned once."""
        ready = [p for p in self._to_mix if has_media(p[0]) and has_media(p[1])]
        self._to_mix = [p for p in self._to_mix if p not in ready]
        return ready

