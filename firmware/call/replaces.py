"""INVITE with Replaces (RFC 3891) as the transfer target / take-over side; sans-IO.

`ReplacesService` plugs into a `CallManager` twice: ``calls.replaces`` (the manager asks it to vet
every new INVITE carrying Replaces before anything rings) and ``calls.features`` (``call_added``
/ ``call_synced``, to answer the new call at once and end the replaced one).

Rules (FEATURES 1.5, docs/threat-model.md):

* T13: more than one Replaces, Replaces with Join, or a Replaces without both tags -> 400;
* matching (RFC 3891 section 3): to-tag is OUR local tag, from-tag the peer's; no match, or an
  early dialog we did not initiate (we are ringing) -> 481; a terminated dialog -> 603 (T3: a
  replayed Replaces finds its dialog consumed); early-only on a confirmed dialog -> 486 (T8);
* T7: only the replaced dialog's peer identity, a Referred-By naming that peer (the transferor
  in an attended transfer), or an allow-listed identity may replace; everyone else gets 403 and
  the original call is not touched;
* an authorised replacement is answered 200 without alerting the user and takes over the line;
  once the new dialog is confirmed (ACK) the old one gets BYE (or CANCEL if it was our own early
  dialog). Media the user never approved is refused by the normal answer (T14: audio only).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from firmware.call.authorise import Authoriser, NotAuthorised, same_identity
from firmware.sip.errors import SipParseError
from firmware.sip.headers import parse_name_addr, split_list
from firmware.sip.invite import State
from firmware.sip.message import SipRequest
from firmware.sip.transaction import ServerTransaction

if TYPE_CHECKING:
    from firmware.call.manager import Call, CallManager

log = logging.getLogger(__name__)

PENDING_TTL = 32.0  # seconds an authorised Replaces INVITE may take to become a call


def pending_key(request: SipRequest) -> tuple[str, str, int]:
    """Which INVITE an accepted Replaces/Join belongs to, until it becomes a call."""
    return (request.call_id, request.from_.tag or "", request.cseq.number)


def answer_refusal(
    ua: Any, server_tx: Any, request: SipRequest, error: Exception, now: float, header: str
) -> None:
    """Answer an INVITE whose ``header`` (Replaces or Join) we refuse: a header we cannot
    parse is 400 with the parser's reason, a refusal its status (a challenge's headers too)."""
    if isinstance(error, SipParseError):
        ua.respond(server_tx, request, 400, error.reason, now)
        return
    status, reason = error.status, error.reason  # type: ignore[attr-defined]
    log.info("INVITE with %s refused: %d %s", header, status, reason)
    ua.respond(server_tx, request, status, reason, now, getattr(error, "headers", None))


class ReplacesRefused(Exception):
    """An INVITE with Replaces we will not honour: the status and reason to answer it with."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class ReplacesTarget:
    """A Replaces header value (RFC 3891 section 6.1), tags as the *recipient* sees them."""

    call_id: str
    to_tag: str  # the recipient's local tag
    from_tag: str  # the recipient's remote tag
    early_only: bool = False

    def __str__(self) -> str:
        flag = ";early-only" if self.early_only else ""
        return f"{self.call_id};to-tag={self.to_tag};from-tag={self.from_tag}{flag}"


def parse_replaces(value: str) -> ReplacesTarget:
    """Parse ``callid;to-tag=..;from-tag=..[;early-only]``; raises `ReplacesRefused` (400)."""
    call_id, *params = [p.strip() for p in value.split(";")]
    if not call_id:
        raise ReplacesRefused(400, "Replaces without a Call-ID")
    tags: dict[str, str] = {}
    early_only = False
    for param in params:
        name, sep, tag = param.partition("=")
        name = name.strip().lower()
        if name == "early-only" and not sep:
            early_only = True
        elif name in ("to-tag", "from-tag"):
            tags[name] = tag.strip()
    if not tags.get("to-tag") or not tags.get("from-tag"):
        raise ReplacesRefused(400, "Replaces needs to-tag and from-tag")
    return ReplacesTarget(call_id, tags["to-tag"], tags["from-tag"], early_only)


def single_dialog_header(request: SipRequest, name: str, other: str) -> str | None:
    """The one value of ``name`` (Replaces or Join) in an INVITE, None without one; more than
    one, another method, or ``other`` alongside it is a 400 (RFC 3891 3, RFC 3911 4, T13)."""
    values = [v for raw in request.headers.get_raw(name) for v in split_list(raw)]
    if not values:
        return None
    if request.method != "INVITE":
        raise ReplacesRefused(400, f"{name} not allowed in {request.method}")
    if len(values) > 1:
        raise ReplacesRefused(400, f"More than one {name}")
    if request.headers.get_raw(other):
        raise ReplacesRefused(400, "Replaces and Join together")
    return values[0]


def replaces_of(request: SipRequest) -> ReplacesTarget | None:
    """The request's single Replaces (None without one); T13 contradictions raise 400."""
    value = single_dialog_header(request, "Replaces", "Join")
    return None if value is None else parse_replaces(value)


@dataclass
class ReplacesPolicy:
    """Who may replace a call besides its own peer (RFC 3891 sections 3 and 8; T7).

    ``referred_by_peer`` honours a Referred-By naming the replaced dialog's peer: that is how an
    attended transfer arrives (RFC 5589 section 7), and it is only a claim (no RFC 3892 token),
    so it can be switched off. ``allow`` lists identities (sip URIs) that may replace any call,
    e.g. a park or music-on-hold server, once they prove it by answering the phone's Digest
    challenge (`Authoriser`; config ``[transfer] allow_from`` / ``auth_users``).
    """

    referred_by_peer: bool = True
    allow: tuple[str, ...] = ()


@dataclass
class PendingInvite:
    """An authorised Replaces/Join INVITE waiting to become a call."""

    old: Call
    now: float


@dataclass
class ReplacesService:
    """Transfer target / take-over side of RFC 3891 on top of a `CallManager`."""

    calls: CallManager
    policy: ReplacesPolicy = field(default_factory=ReplacesPolicy)
    auth: Authoriser | None = None  # shared with refer/join; built from policy.allow if None

    def __post_init__(self) -> None:
        if self.auth is None:
            self.auth = Authoriser(self.calls.ua.ids, self.policy.allow)
        self._pending: dict[tuple[str, str, int], PendingInvite] = {}  # INVITE -> call it replaces
        self.calls.replaces = self
        self.calls.features.append(self)
        self.calls.option_tags += [t for t in ("replaces",) if t not in self.calls.option_tags]

    # ----- called by CallManager._on_invite -----------------------------------------------------
    def refuse(self, server_tx: ServerTransaction, request: SipRequest, now: float) -> bool:
        """Vet a new INVITE; True when it carried Replaces and we already answered it (refused).

        False means either "no Replaces" or "authorised": the manager then builds the call as
        usual and `call_added` answers it at once.
        """
        try:
            target = replaces_of(request)
            if target is None:
                return False
            old = self._match(target)
            self._authorise(old, request, now, server_tx.peer)
        except (ReplacesRefused, NotAuthorised, SipParseError) as e:
            answer_refusal(self.calls.ua, server_tx, request, e, now, "Replaces")
            return True
        # INVITEs the manager refused after us (busy, 488) leave stale entries: drop old ones.
        self._pending = {k: p for k, p in self._pending.items() if now - p.now < PENDING_TTL}
        self._pending[pending_key(request)] = PendingInvite(old, now)
        log.info("call %s will be replaced (Replaces %s)", old.id, target)
        return False

    def _match(self, target: ReplacesTarget) -> Call:
        for call in self.calls.calls.values():
            session = call.session
            if session.call_id != target.call_id:
                continue
            if call.direction == "incoming":
                dialog = session.dialog
                if dialog is None or (dialog.local_tag, dialog.remote_tag) != (
                    target.to_tag,
                    target.from_tag,
                ):
                    continue
                if call.state == "ended" or session.state is State.TERMINATED:
                    raise ReplacesRefused(603, "Replaced dialog already terminated")
                if session.state is not State.CONFIRMED:
                    # RFC 3891 3: an early dialog this UA did not initiate (it rings here).
                    raise ReplacesRefused(481, "Early dialog not initiated here")
            else:
                if session.initial_request.from_.tag != target.to_tag:
                    continue
                dialog = session.dialog
                confirmed = dialog is not None and dialog.remote_tag == target.from_tag
                early = target.from_tag in session._early  # noqa: SLF001 - no public accessor
                if not (confirmed or early):
                    continue
                if call.state == "ended" or session.state is State.TERMINATED:
                    raise ReplacesRefused(603, "Replaced dialog already terminated")
            if call.extras.get("replaced_by"):
                raise ReplacesRefused(603, "Dialog already being replaced")
            if target.early_only and session.state is State.CONFIRMED:
                raise ReplacesRefused(486, "Busy Here (early-only, dialog confirmed)")
            return call
        raise ReplacesRefused(481, "Replaced dialog does not exist")

    def _authorise(self, old: Call, request: SipRequest, now: float, source: Any = None) -> None:
        """The replaced dialog's peer, a Referred-By naming it, or a listed identity proven by
        our Digest challenge (401 first, `NotAuthorised`); everyone else 403 (T7)."""
        dialog = old.session.dialog
        peer = dialog.remote_uri if dialog is not None else old.session.initial_request.to.uri
        requester = request.from_.uri
        if same_identity(requester, peer):
            return
        referred_by = request.headers.get("Referred-By")
        if self.policy.referred_by_peer and referred_by:
            try:
                if same_identity(parse_name_addr(referred_by).uri, peer):
                    return
            except SipParseError:
                pass
        assert self.auth is not None
        if self.auth.listed_request(request, source):
            self.auth.authenticate(request, now, "Replaces", source)
            return
        raise ReplacesRefused(403, "Not authorised to replace this call")

    # ----- CallManager feature hooks ------------------------------------------------------------
    def call_added(self, call: Call) -> None:
        """An authorised replacement: answer without ringing, the old call's line is taken over."""
        if call.direction != "incoming":
            return
        pending = self._pending.pop(pending_key(call.session.initial_request), None)
        if pending is None:
            return
        old = pending.old
        old.extras["replaced_by"] = call.id
        call.extras["replaces_call"] = old.id
        lines = getattr(self.calls, "lines", None)
        if lines is not None:  # the replacement takes the old call's line: never held for it
            lines.join([old.id, call.id])
        if call.session.accept(pending.now):
            call.state = "connected"  # no alerting: the user already talks on this line
        else:
            old.extras.pop("replaced_by", None)  # the offer was unusable: old call untouched

    def call_synced(self, call: Call, now: float) -> None:
        """The replacement is confirmed (ACK): end the old dialog (BYE, or CANCEL if early)."""
        old_id = call.extras.get("replaces_call")
        if old_id is None:
            return
        old = self.calls.calls.get(old_id)
        if old is None or old.state == "ended":
            return
        if call.state == "ended":
            old.extras.pop("replaced_by", None)  # the new dialog failed: keep the old call
            call.extras.pop("replaces_call", None)
        elif call.connected_at is not None:
            log.info("call %s replaced by %s", old.id, call.id)
            self.calls.hangup(old.id, now)
