"""REFER machinery and transfer (RFC 3515, RFC 7647, RFC 4488, RFC 4538, RFC 5589); sans-IO.

`TransferService` plugs into a `CallManager` (as a feature: ``call_added`` / ``call_synced``),
the UA core (``ua.handlers["REFER"]``, and ``ua.services`` for its NOTIFY timeout) and plays
every transfer role:

* transferee: a REFER from the current peer of a call is vetted (`ReferPolicy`, `parse_refer_to`),
  answered 200 (RFC 7647: never 202; Refer-Sub: false granted when asked, RFC 4488), the original
  call is held, the Refer-To target is called through `CallManager.dial` (fresh Call-ID/tags,
  Referred-By copied), and progress is reported by NOTIFY with a status-line-only sipfrag; the
  original call is ended (BYE) when the new one is answered and resumed when it fails. Outside a
  dialog (RFC 4538) a REFER must name a live call in Target-Dialog (else 481) and come from that
  call's peer over TLS, or from an identity on ``[transfer] allow_from`` that answers the phone's
  own Digest challenge (`firmware.call.authorise.Authoriser`); without Target-Dialog only such an
  identity may REFER, and the phone just places the call (remote call control);
* transferor: `transfer()` holds the call, sends REFER with Refer-To and Referred-By, follows the
  NOTIFYs and ends the call on a 2xx sipfrag (or resumes it on failure, or when no final NOTIFY
  came within ``notify_timeout``); `transfer_attended()` does the same with Refer-To: <consultation
  peer's Contact?Replaces=...> (RFC 5589 section 7), waiting for a still-ringing consultation call
  to be answered first. Towards a GRUU Contact the REFER leaves the dialog (RFC 7647 section 4)
  with Target-Dialog, and with Refer-Sub: false when the peer supports norefersub; then the
  transferor ends the transfer by its own logic. A peer refusing that REFER gets it in the dialog
  (RFC 5589 section 5);
* target: an incoming INVITE's Referred-By is shown as ``referred_by`` (unverified, RFC 3892 has
  no token here).

Security rows (docs/threat-model.md): T1 authorisation, T2 replay, T4 minimal sipfrag, T5 SIP
schemes only, T6 embedded headers, T17 Refer-Sub only to GRUUs, T26 toll-fraud patterns, T29
method= refused.
"""
from __future__ import annotations

import fnmatch
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

from firmware.call.authorise import Authoriser, NotAuthorised, same_identity
from firmware.call.lines import LineBusy
from firmware.sip.dialog import Dialog, DialogId, DialogState
from firmware.sip.errors import SipParseError
from firmware.sip.headers import parse_name_addr, split_list
from firmware.sip.ids import new_call_id, new_tag
from firmware.sip.invite import InviteSession, State
from firmware.sip.message import SipRequest, SipResponse, make_request
from firmware.sip.transaction import ClientTransaction, ServerTransaction
from firmware.sip.uri import SipURI, parse_uri

if TYPE_CHECKING:
    from firmware.call.manager import Call, CallManager

log = logging.getLogger(__name__)

SIPFRAG = "message/sipfrag;version=2.0"
# Prefixes of targets that cost money (international, premium) unless explicitly allowed (T26).
DEFAULT_DENY: tuple[str, ...] = ("00*", "011*", "+*", "900*", "1900*")
# RFC 3261 19.1.5 / THREATS T6: the only URI headers a triggered INVITE may carry.
HONOURED_URI_HEADERS = {"replaces": "Replaces", "require": "Require"}
_VISUAL_SEPARATORS = re.compile(r"[\-.() ]")
_STATUS_LINE = re.compile(r"SIP/2\.0 ([1-6][0-9][0-9]) ?([^\r\n]*)")
SUBSCRIPTION_EXPIRES = 60
OOD_REMEMBERED = 64  # accepted out-of-dialog REFERs remembered for replay detection
# Answers to an out-of-dialog REFER after which the transferor retries inside the dialog.
FALLBACK_STATUSES = frozenset({401, 403, 404, 405, 407, 420, 481, 501})


class ReferRefused(Exception):
    """A REFER we will not act on: the status and reason phrase to answer it with."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


@dataclass
class ReferPolicy:
    """Who may make this phone call somebody else, and whom (RFC 5850 section 4; T1, T26).

    Patterns are shell-style globs (``00*``) on the Refer-To user part, after unescaping and
    removing visual separators; an ``allow`` match overrides ``deny``.
    """

    in_dialog: bool = True  # REFER from the current peer of a connected call
    out_of_dialog: bool = True  # out-of-dialog REFER: only Target-Dialog of a live call over TLS
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = DEFAULT_DENY
    norefersub: bool = True  # send Refer-Sub: false to a GRUU peer supporting it (RFC 4488)
    notify_timeout: float = 32.0  # transferor: no final NOTIFY by then -> give up (RFC 5589)

    def target_allowed(self, uri: SipURI) -> bool:
        user = _VISUAL_SEPARATORS.sub("", unquote(uri.user or ""))
        if any(fnmatch.fnmatchcase(user, p) for p in self.allow):
            return True
        return not any(fnmatch.fnmatchcase(user, p) for p in self.deny)


@dataclass
class ReferTarget:
    """What a Refer-To asks for, reduced to what we are willing to send."""

    uri: SipURI  # no embedded headers, no method parameter
    headers: list[tuple[str, str]]  # only Replaces / Require, unescaped
    dropped: list[str]  # names of embedded headers we refused to copy (logged)


def parse_refer_to(request: SipRequest, policy: ReferPolicy) -> ReferTarget:
    """Vet a REFER's Refer-To (RFC 3515 2.4.1-2.4.3); raises `ReferRefused`.

    Exactly one Refer-To (else 400); only sip:/sips: (T5, never dereferenced); only INVITE
    (T29: a method= parameter other than INVITE is remote control, refused); only Replaces and
    Require survive from the URI's headers (T6); the target must pass the toll-fraud policy (T26).
    """
    values = [v for raw in request.headers.get_raw("Refer-To") for v in split_list(raw)]
    if len(values) != 1:
        raise ReferRefused(400, f"Exactly one Refer-To required ({len(values)} present)")
    try:
        uri = parse_name_addr(values[0]).uri
    except SipParseError as e:
        raise ReferRefused(400, f"Bad Refer-To: {e.reason}") from None
    if not isinstance(uri, SipURI):
        raise ReferRefused(403, "Refer-To scheme not allowed (sip/sips only)")
    method = uri.params.get("method")
    if method is not None and method.upper() != "INVITE":
        raise ReferRefused(403, f"Refer-To method {method} not allowed")
    headers: list[tuple[str, str]] = []
    dropped: list[str] = []
    for name, value in uri.headers.items():
        canonical = HONOURED_URI_HEADERS.get(unquote(name).lower())
        if canonical is None:
            dropped.append(unquote(name))
        else:
            headers.append((canonical, unquote(value)))
    params = {k: v for k, v in uri.params.items() if k != "method"}
    clean = uri.copy(headers={}, params=params)
    if not policy.target_allowed(clean):
        raise ReferRefused(403, "Transfer target not allowed by policy")
    return ReferTarget(clean, headers, dropped)


class _AfterNotify:
    """Owner of a final NOTIFY: runs a continuation when its transaction ends."""

    def __init__(self, then: Callable[[float], None]) -> None:
        self._then: Callable[[float], None] | None = then

    def _run(self, now: float) -> None:
        then, self._then = self._then, None
        if then is not None:
            then(now)

    def on_response(self, tx: Any, response: SipResponse, now: float) -> None:
        if response.status >= 200:
            self._run(now)

    def on_timeout(self, tx: Any, now: float) -> None:
        self._run(now)


TRIGGER_RETRY = 0.1  # s between attempts to send a transferee's INVITE that had to wait
TRIGGER_WAIT = 4.0  # s a transferee's INVITE may wait for the original call to be holdable


@dataclass
class _Notifier:
    """Our side of an implicit refer subscription (we are the transferee)."""

    original: Call
    event: str  # "refer" or "refer;id=<CSeq>"
    notify: bool  # False when Refer-Sub: false was granted (RFC 4488)
    held_by_us: bool
    new_call: Call | None = None
    done: bool = False
    dialog: Dialog | None = None  # out-of-dialog REFER: the subscription dialog its 200 made
    # The triggered INVITE waits while the original call cannot be held yet (its own re-INVITE,
    # e.g. the transferor's hold, still in flight): what to dial, and until when to keep trying.
    pending: tuple[str, list[tuple[str, str]]] | None = None
    retry_at: float | None = None
    give_up_at: float | None = None


@dataclass
class _Transfer:
    """A transfer we started (we are the transferor)."""

    call: Call
    target: str
    refer_cseq: int
    held_by_us: bool
    state: str = "trying"  # waiting (attended, consultation still ringing) | trying | done | failed
    status: int | None = None
    tx: ClientTransaction | None = None
    consult: Call | None = (
        None  # attended transfer: the consultation call whose dialog we hand over
    )
    deadline: float | None = None  # no final NOTIFY by then -> give up (policy.notify_timeout)
    no_sub: bool = False  # Refer-Sub: false granted (RFC 4488): no NOTIFYs will come
    subscription: DialogId | None = None  # out-of-dialog REFER: the refer subscription's dialog


@dataclass
class _Ignore:
    """Owner for NOTIFYs we send: their answers change nothing."""

    def on_response(self, tx: ClientTransaction, response: SipResponse, now: float) -> None:
        if response.status >= 300:
            log.info("refer NOTIFY answered %d %s", response.status, response.reason)

    def on_timeout(self, tx: ClientTransaction, now: float) -> None:
        log.info("refer NOTIFY timed out")


@dataclass
class _ReferOwner:
    """Hears the answer to a REFER we sent."""

    service: TransferService
    transfer: _Transfer

    def on_response(self, tx: ClientTransaction, response: SipResponse, now: float) -> None:
        self.service._on_refer_response(
            self.transfer, response.status, response.reason, now, response
        )

    def on_timeout(self, tx: ClientTransaction, now: float) -> None:
        self.service._on_refer_response(self.transfer, 408, "Request Timeout", now)


@dataclass
class _SubscriptionUsage:
    """The dialog an out-of-dialog REFER created (RFC 3515 2.4.4): only its NOTIFYs are ours."""

    service: TransferService
    transfer: _Transfer

    def on_request(self, server_tx: ServerTransaction, request: SipRequest, now: float) -> None:
        ua = self.service.calls.ua

        def reply(status: int, reason: str) -> None:
            ua.respond(server_tx, request, status, reason, now)

        if request.method != "NOTIFY":  # RFC 3261 21.4.6: a 405 lists what is allowed
            ua.respond(server_tx, request, 405, "Method Not Allowed", now, [("Allow", "NOTIFY")])
            return
        self.service._notify_received(self.transfer, request, reply, now)
        self.service.calls.process(now)


@dataclass
class TransferService:
    """Blind transfer in every role, on top of a `CallManager` (see the module docstring)."""

    calls: CallManager
    policy: ReferPolicy = field(default_factory=ReferPolicy)
    auth: Authoriser | None = None  # listed identities + Digest; none listed if not given

    def __post_init__(self) -> None:
        if self.auth is None:
            self.auth = Authoriser(self.calls.ua.ids)
        self._ood_seen: list[tuple[str, str, int]] = []  # accepted out-of-dialog REFERs (T2)
        self._notifiers: dict[str, list[_Notifier]] = {}  # original call id -> subscriptions
        self._by_new_call: dict[str, _Notifier] = {}
        self._waiting: list[_Notifier] = []  # triggered INVITEs waiting for a holdable call
        self._refer_count: dict[str, int] = {}  # call id -> REFERs accepted in its dialog
        self._last_refer_cseq: dict[str, int] = {}
        self._transfers: dict[str, _Transfer] = {}  # call id -> our transfer of that call
        self.calls.features.append(self)
        self.calls.dialog_methods += [
            m for m in ("REFER", "NOTIFY", "SUBSCRIBE") if m not in self.calls.dialog_methods
        ]
        # RFC 4538 Target-Dialog and RFC 4488 Refer-Sub: false are understood here.
        self.calls.option_tags += [
            t for t in ("tdialog", "norefersub") if t not in self.calls.option_tags
        ]
        ua = self.calls.ua
        ua.handlers["REFER"] = self._on_out_of_dialog_refer
        services = getattr(ua, "services", None)
        if services is not None:  # the transferor's NOTIFY timeout (get_timer/handle_timer)
            services.append(self)
        # In-dialog SUBSCRIBE (a transferor refreshing or ending its refer subscription) must get
        # past the UA core; a subscriptions module may own SUBSCRIBE later, so do not replace it.
        ua.handlers.setdefault("SUBSCRIBE", self._on_out_of_dialog_subscribe)

    # ----- CallManager feature hooks -----------------------------------------------------------
    def call_added(self, call: Call) -> None:
        """Every call's dialog understands REFER and refer NOTIFYs; show Referred-By (T15)."""
        call.session.extensions["REFER"] = lambda s, tx, req, now: self._on_refer(
            call, tx, req, now
        )
        call.session.extensions["NOTIFY"] = lambda s, tx, req, now: self._on_notify(
            call, tx, req, now
        )
        call.session.extensions["SUBSCRIBE"] = lambda s, tx, req, now: self._on_subscribe(
            call, tx, req, now
        )
        invite = call.session.initial_request if call.direction == "incoming" else None
        referred_by = invite.headers.get("Referred-By") if invite is not None else None
        if referred_by:
            call.extras["referred_by"] = referred_by
            call.extras["referred_by_verified"] = False

    def call_synced(self, call: Call, now: float) -> None:
        """A triggered call moved on: report it to the transferor and settle the original."""
        self._consultation_synced(call, now)
        notifier = self._by_new_call.get(call.id)
        if notifier is None or notifier.done:
            return
        if call.state in ("connected", "held"):
            self._finish(notifier, 200, "OK", now)
        elif call.state == "ended":
            status = call.end_status or 487
            reason = call.end_reason or "Request Terminated"
            self._finish(notifier, status, reason, now)

    # ----- transferee ----------------------------------------------------------------------------
    def _on_refer(
        self, call: Call, server_tx: ServerTransaction, request: SipRequest, now: float
    ) -> None:
        session = call.session
        try:
            self._authorise_in_dialog(call, request)
            target = parse_refer_to(request, self.policy)
        except ReferRefused as e:
            log.info("call %s: REFER refused: %d %s", call.id, e.status, e.reason)
            session.reply(server_tx, request, e.status, e.reason, now)
            return
        self._accept(call, session, server_tx, request, target, now)

    def _authorise_in_dialog(self, call: Call, request: SipRequest | None) -> None:
        """Policy, call state and (in the dialog: ``request``) CSeq replay checks."""
        if not self.policy.in_dialog:
            raise ReferRefused(403, "Transfer not allowed by policy")
        if call.session.state is not State.CONFIRMED or call.state not in ("connected", "held"):
            raise ReferRefused(403, "Call is not established")
        # T2: a REFER whose CSeq is not above the last one we acted on is a replay. (The dialog
        # layer already answered 500 to lower CSeqs; equal ones reach us after Timer J.)
        last = self._last_refer_cseq.get(call.id)
        if request is not None and last is not None and request.cseq.number <= last:
            raise ReferRefused(500, "REFER CSeq not above the last one")
        if any(not n.done for n in self._notifiers.get(call.id, [])):
            raise ReferRefused(491, "Transfer already in progress")

    def _accept(
        self,
        call: Call,
        session: InviteSession,
        server_tx: ServerTransaction,
        request: SipRequest,
        target: ReferTarget,
        now: float,
        *,
        in_dialog: bool = True,
    ) -> None:
        if target.dropped:
            log.warning(
                "call %s: REFER embedded headers not copied: %s", call.id, ", ".join(target.dropped)
            )
        count = self._refer_count.get(call.id, 0) + 1
        self._refer_count[call.id] = count
        if in_dialog:  # an out-of-dialog REFER's CSeq belongs to another Call-ID
            self._last_refer_cseq[call.id] = request.cseq.number
        no_sub = (request.headers.get("Refer-Sub") or "").strip().lower() == "false"
        first = count == 1 or not in_dialog  # a REFER outside the dialog starts its own
        event = "refer" if first else f"refer;id={request.cseq.number}"
        # RFC 7647 section 5: 200, never 202. RFC 4488: granting Refer-Sub: false says so.
        headers = [("Contact", session.contact), *([("Refer-Sub", "false")] if no_sub else [])]
        sub_dialog = None
        if in_dialog:
            session.reply(server_tx, request, 200, "OK", now, headers)
        else:
            # RFC 3515 2.4.4 / RFC 4538: the 200 creates the subscription's own dialog; the
            # NOTIFYs go there, not into the call named by Target-Dialog.
            response = self.calls.ua.respond(server_tx, request, 200, "OK", now, headers)
            if not no_sub:
                sub_dialog = Dialog.from_uas(
                    request, response.to.tag or "", session.contact, state=DialogState.CONFIRMED
                )
        held_by_us = call.state == "connected" and self.calls.hold(call.id, now)
        notifier = _Notifier(call, event, not no_sub, held_by_us, dialog=sub_dialog)
        self._notifiers.setdefault(call.id, []).append(notifier)
        self._notify(notifier, "SIP/2.0 100 Trying", now, final=False)
        extra: list[tuple[str, str]] = list(target.headers)
        referred_by = request.headers.get("Referred-By")
        if referred_by:
            extra.append(("Referred-By", referred_by))
        call.extras.update(transfer="trying", transfer_role="transferee", transfer_status=100)
        notifier.pending = (str(target.uri), extra)
        notifier.give_up_at = now + TRIGGER_WAIT
        self._trigger(notifier, now)

    def _trigger(self, notifier: _Notifier, now: float) -> None:
        """Send the INVITE the REFER asked for; if the original call cannot be put on hold
        right now (a re-INVITE of its own still pending, typically the transferor's hold racing
        its REFER), try again shortly instead of failing the transfer."""
        call = notifier.original
        assert notifier.pending is not None
        uri, extra = notifier.pending
        if not notifier.held_by_us and call.state == "connected":
            notifier.held_by_us = self.calls.hold(call.id, now)
        try:
            new_call = self.calls.dial(uri, call.account, now, extra_headers=extra)
        except LineBusy as e:
            if call.state != "ended" and notifier.give_up_at is not None and now < notifier.give_up_at:
                log.debug("call %s: transfer INVITE waits: %s", call.id, e)
                notifier.retry_at = now + TRIGGER_RETRY
                if notifier not in self._waiting:
                    self._waiting.append(notifier)
                return
            self._stop_waiting(notifier)
            log.info("call %s: transfer INVITE not sent: %s", call.id, e)
            self._finish(notifier, 503, "Service Unavailable", now)
            return
        except RuntimeError as e:
            self._stop_waiting(notifier)
            log.info("call %s: transfer INVITE not sent: %s", call.id, e)
            self._finish(notifier, 503, "Service Unavailable", now)
            return
        self._stop_waiting(notifier)
        notifier.new_call = new_call
        self._by_new_call[new_call.id] = notifier
        new_call.extras["transferred_from"] = call.id

    def _stop_waiting(self, notifier: _Notifier) -> None:
        notifier.pending = notifier.retry_at = None
        if notifier in self._waiting:
            self._waiting.remove(notifier)

    def _finish(self, notifier: _Notifier, status: int, reason: str, now: float) -> None:
        """The triggered INVITE ended: final NOTIFY, then BYE or resume the original call."""
        if notifier.done:
            return
        notifier.done = True
        original = notifier.original
        original.extras.update(
            transfer="done" if status < 300 else "failed", transfer_status=status
        )

        def then(when: float) -> None:
            if original.state == "ended":
                return
            if 200 <= status < 300:
                self.calls.hangup(original.id, when)
            elif notifier.held_by_us:
                self.calls.resume(original.id, when)

        # The original call ends only after the transferor has our final NOTIFY (its answer or
        # its timeout): a BYE racing ahead of it would leave the transferor unsure how the
        # transfer ended (its NOTIFY would find no dialog). Usually the transferor BYEs first.
        if not self._notify(notifier, f"SIP/2.0 {status} {reason}", now, final=True, then=then):
            then(now)

    def _notify(
        self,
        notifier: _Notifier,
        status_line: str,
        now: float,
        *,
        final: bool,
        then: Callable[[float], None] | None = None,
    ) -> bool:
        """NOTIFY the transferor; the body is the status line only (T4, RFC 3515 5.3.3).

        ``then(now)`` runs once the NOTIFY transaction ends (answered or timed out). Returns
        False when no NOTIFY was sent (Refer-Sub: false, or the dialog is gone).
        """
        session = notifier.original.session
        dialog = notifier.dialog or session.dialog
        call_gone = notifier.dialog is None and session.state is State.TERMINATED
        if not notifier.notify or dialog is None or call_gone:
            return False
        state = (
            "terminated;reason=noresource" if final else f"active;expires={SUBSCRIPTION_EXPIRES}"
        )
        request = dialog.create_request(
            "NOTIFY",
            ids=session.host.ids,
            contact=session.contact,
            body=f"{status_line}\r\n".encode(),
            extra_headers=[
                ("Event", notifier.event),
                ("Subscription-State", state),
                ("Content-Type", SIPFRAG),
                ("User-Agent", session.user_agent),
            ],
        )
        session.host.send_request(request, _AfterNotify(then) if then else _Ignore(), now)
        return True

    def _on_subscribe(
        self, call: Call, server_tx: ServerTransaction, request: SipRequest, now: float
    ) -> None:
        """RFC 3515 2.4.4 / RFC 6665: refresh or end of our refer subscription, nothing else."""
        session = call.session
        event = (request.headers.get("Event") or "").split(";")[0].strip().lower()
        if event != "refer":
            session.reply(server_tx, request, 489, "Bad Event", now)
            return
        notifiers = self._notifiers.get(call.id, [])
        if not notifiers:
            # FEATURES 1.3: SUBSCRIBE for refer with no REFER before it is refused.
            session.reply(server_tx, request, 403, "No REFER to subscribe to", now)
            return
        if all(n.done or not n.notify for n in notifiers):
            session.reply(server_tx, request, 481, "Subscription Does Not Exist", now)
            return
        session.reply(server_tx, request, 200, "OK", now, [("Expires", str(SUBSCRIPTION_EXPIRES))])

    def _on_out_of_dialog_subscribe(
        self, server_tx: ServerTransaction, request: SipRequest, now: float
    ) -> None:
        event = (request.headers.get("Event") or "").split(";")[0].strip().lower()
        if event == "refer":
            self.calls.ua.respond(server_tx, request, 403, "No REFER to subscribe to", now)
        else:
            self.calls.ua.respond(server_tx, request, 489, "Bad Event", now)

    def _on_out_of_dialog_refer(
        self, server_tx: ServerTransaction, request: SipRequest, now: float
    ) -> None:
        """A REFER outside any dialog (RFC 4538, RFC 7647 section 4; T1, T2, T29).

        * With Target-Dialog it must name a live confirmed call (else 481: a REFER replayed after
          the call ended does nothing). The call's own peer is trusted over TLS (the dialog tags
          are its secret); any other requester, or the peer over plain transport, must be a
          listed identity that answers our Digest challenge (`Authoriser`). The NOTIFYs go in
          the dialog our 200 creates (none with Refer-Sub: false).
        * Without Target-Dialog only a listed, Digest-proven identity may REFER, and the phone
          just calls the target (remote call control, RFC 5359 section 2.18); there is no call
          to report on, so it must come with Refer-Sub: false (RFC 4488).

        An accepted REFER's identity is remembered, so a replay gets 500.
        """
        ua = self.calls.ua
        headers: list[tuple[str, str]] = []
        try:
            if not self.policy.out_of_dialog:
                raise ReferRefused(403, "REFER outside a dialog not allowed by policy")
            call = None
            if request.headers.get("Target-Dialog"):
                call = self._target_dialog_call(request)
                if call is None:
                    raise ReferRefused(481, "Target dialog does not exist")
            no_sub = (request.headers.get("Refer-Sub") or "").strip().lower() == "false"
            if call is None and not no_sub:  # remote control: no call to report progress on
                raise ReferRefused(403, "REFER without Target-Dialog needs Refer-Sub: false")
            tls = ua.endpoint_for(server_tx.peer).via_transport == "TLS"
            dialog = call.session.dialog if call is not None else None
            peer_over_tls = (
                tls and dialog is not None and same_identity(request.from_.uri, dialog.remote_uri)
            )
            auth = self.auth
            assert auth is not None
            if not peer_over_tls:
                peer = server_tx.peer
                if not auth.listed_request(request, peer) and call is not None and not tls:
                    raise ReferRefused(403, "Out-of-dialog REFER needs TLS or a listed identity")
                auth.authenticate(request, now, "REFER outside a dialog", peer)
            key = (request.call_id, request.from_.tag or "", request.cseq.number)
            if key in self._ood_seen:
                raise ReferRefused(500, "REFER already acted on")
            if call is not None:
                self._authorise_in_dialog(call, None)
            target = parse_refer_to(request, self.policy)
        except NotAuthorised as e:
            log.info("out-of-dialog REFER refused: %d %s", e.status, e.reason)
            ua.respond(server_tx, request, e.status, e.reason, now, e.headers)
            return
        except ReferRefused as e:
            log.info("out-of-dialog REFER refused: %d %s", e.status, e.reason)
            ua.respond(server_tx, request, e.status, e.reason, now, headers)
            return
        except SipParseError as e:
            ua.respond(server_tx, request, 400, e.reason, now)
            return
        self._ood_seen.append(key)
        del self._ood_seen[:-OOD_REMEMBERED]
        if call is not None:
            self._accept(call, call.session, server_tx, request, target, now, in_dialog=False)
            return
        self._remote_dial(server_tx, request, target, now)

    def _remote_dial(
        self, server_tx: ServerTransaction, request: SipRequest, target: ReferTarget, now: float
    ) -> None:
        """An authorised controller's REFER without a call: place the call it asks for."""
        ua = self.calls.ua
        account = ua.account_for_request(request) or "line1"
        extra: list[tuple[str, str]] = list(target.headers)
        referred_by = request.headers.get("Referred-By")
        if referred_by:
            extra.append(("Referred-By", referred_by))
        try:
            new_call = self.calls.dial(str(target.uri), account, now, extra_headers=extra)
        except RuntimeError as e:
            ua.respond(server_tx, request, 486, f"Busy Here ({e})", now)
            return
        ua.respond(server_tx, request, 200, "OK", now, [("Refer-Sub", "false")])
        new_call.extras.update(referred_by_controller=str(request.from_.uri))

    def _target_dialog_call(self, request: SipRequest) -> Call | None:
        value = request.headers.get("Target-Dialog")
        if not value:
            return None
        call_id, *params = [p.strip() for p in value.split(";")]
        tags = {}
        for param in params:
            name, _, tag = param.partition("=")
            tags[name.strip().lower()] = tag.strip()
        local, remote = tags.get("local-tag"), tags.get("remote-tag")
        if not local or not remote:
            return None
        for call in self.calls.active_calls():
            dialog = call.session.dialog
            # RFC 4538 section 7: the tags are as the sender (our peer) sees the dialog.
            if (
                dialog is not None
                and call.session.state is State.CONFIRMED
                and dialog.call_id == call_id
                and dialog.local_tag == remote
                and dialog.remote_tag == local
            ):
                return call
        return None

    # ----- transferor ---------------------------------------------------------------------------
    def transfer(self, call_id: str, target: str, now: float) -> bool:
        """Blind-transfer a connected (or held) call to ``target`` (user or sip:/sips: URI)."""
        call = self.calls.get(call_id)
        dialog = call.session.dialog
        if call.state not in ("connected", "held") or dialog is None:
            return False
        existing = self._transfers.get(call_id)
        if existing is not None and existing.state == "trying":
            return False
        info = self.calls.accounts(call.account)
        uri = target if target.startswith(("sip:", "sips:")) else f"sip:{target}@{info.domain}"
        parse_uri(uri)  # our own misuse raises here, before anything is sent
        held_by_us = call.state == "connected" and self.calls.hold(call_id, now)
        transfer = _Transfer(call, uri, 0, held_by_us)
        self._transfers[call_id] = transfer
        call.extras.update(
            transfer="trying", transfer_role="transferor", transfer_status=None, transfer_to=uri
        )
        call.extras.pop("transfer_reason", None)
        self._send_refer(transfer, now)
        return True

    def _send_refer(self, transfer: _Transfer, now: float, *, in_dialog: bool = False) -> None:
        """REFER the call's peer to ``transfer.target``: in the dialog, or (RFC 7647 section 4:
        never reuse the dialog towards a GRUU) outside it with Target-Dialog (RFC 4538), then
        with Refer-Sub: false when the peer supports norefersub (RFC 4488; T17: GRUU only).
        ``in_dialog`` forces the dialog (the RFC 5589 section 5 fallback)."""
        call = transfer.call
        session, dialog = call.session, call.session.dialog
        assert dialog is not None
        info = self.calls.accounts(call.account)
        common = [
            ("Refer-To", f"<{transfer.target}>"),
            ("Referred-By", f"<{info.aor}>"),
            ("User-Agent", session.user_agent),
        ]
        transfer.deadline = now + self.policy.notify_timeout
        target = dialog.remote_target
        if in_dialog or not (isinstance(target, SipURI) and "gr" in target.params):
            refer = dialog.create_request(
                "REFER", ids=session.host.ids, contact=session.contact, extra_headers=common
            )
            transfer.refer_cseq = refer.cseq.number
            transfer.tx = session.host.send_request(refer, _ReferOwner(self, transfer), now)
            return
        peer = session.peer_supported
        no_sub = self.policy.norefersub and "norefersub" in peer
        ids = session.host.ids
        supported = [
            t for t in ("tdialog", "norefersub") if t != "tdialog" or "tdialog" not in peer
        ]
        headers = [
            ("Max-Forwards", "70"),
            ("From", f"<{info.aor}>;tag={new_tag(ids)}"),
            ("To", f"<{dialog.remote_uri}>"),
            ("Call-ID", new_call_id(ids)),
            ("CSeq", "1 REFER"),
            ("Contact", session.contact),
            (
                "Target-Dialog",
                f"{dialog.call_id};local-tag={dialog.local_tag};remote-tag={dialog.remote_tag}",
            ),
            *([("Require", "tdialog")] if "tdialog" in peer else []),
            ("Supported", ", ".join(supported)),
            *common,
            *([("Refer-Sub", "false")] if no_sub else []),
        ]
        refer = make_request("REFER", str(target), headers=headers)
        transfer.refer_cseq = 1
        call.extras["transfer_out_of_dialog"] = True
        transfer.tx = self.calls.ua.send_request(
            refer, _ReferOwner(self, transfer), now, dest=info.dest
        )

    # ----- transferor, attended (RFC 5589 section 7) ----------------------------------------------
    def transfer_attended(self, call_id: str, consult_id: str, now: float) -> bool:
        """Hand call ``call_id`` over to the party of consultation call ``consult_id``.

        REFER with Refer-To: <consultation peer's Contact?Replaces=<our dialog with it>> (RFC 5589
        7.3; the Contact reaches that very device, so no Require: replaces is needed, and our own
        UA core does not accept Require: replaces yet). If the consultation call still rings, the
        REFER waits until it is answered (RFC 5589 7.6: a ringing target cannot be replaced).
        """
        if call_id == consult_id:
            return False
        call, consult = self.calls.get(call_id), self.calls.get(consult_id)
        if call.state not in ("connected", "held") or call.session.dialog is None:
            return False
        if consult.direction != "outgoing" and consult.state not in ("connected", "held"):
            return False
        if consult.state not in ("calling", "early", "connected", "held"):
            return False
        existing = self._transfers.get(call_id)
        if existing is not None and existing.state in ("waiting", "trying"):
            return False
        held_by_us = call.state == "connected" and self.calls.hold(call_id, now)
        if consult.state == "connected":
            self.calls.hold(consult_id, now)
        transfer = _Transfer(call, "", 0, held_by_us, state="waiting", consult=consult)
        self._transfers[call_id] = transfer
        call.extras.update(
            transfer="waiting",
            transfer_role="transferor",
            transfer_status=None,
            transfer_to_call=consult_id,
        )
        if consult.state in ("connected", "held"):
            self._send_attended_refer(transfer, now)
        return True

    def _consultation_synced(self, consult: Call, now: float) -> None:
        for transfer in list(self._transfers.values()):
            if transfer.consult is not consult:
                continue
            if transfer.state == "trying" and transfer.no_sub and consult.state == "ended":
                # norefersub: the target ending our consultation dialog is the only news
                ok = consult.end_cause == "remote_bye"
                why = "target replaced the consultation call" if ok else "consultation ended"
                self._transfer_over(transfer, 200 if ok else 487, now, why)
                continue
            if transfer.state != "waiting":
                continue
            if consult.state in ("connected", "held"):
                self._send_attended_refer(transfer, now)
            elif consult.state == "ended":
                self._transfer_over(transfer, consult.end_status or 487, now)

    def _send_attended_refer(self, transfer: _Transfer, now: float) -> None:
        call, consult = transfer.call, transfer.consult
        assert consult is not None
        dialog, c_dialog = call.session.dialog, consult.session.dialog
        if dialog is None or c_dialog is None or not c_dialog.remote_tag or call.state == "ended":
            self._transfer_over(transfer, 481, now)
            return
        transfer.target = attended_refer_to(
            c_dialog.remote_target, c_dialog.call_id, c_dialog.remote_tag, c_dialog.local_tag
        )
        transfer.state = "trying"
        call.extras.update(transfer="trying", transfer_to=transfer.target)
        self._send_refer(transfer, now)

    def _on_refer_response(
        self,
        transfer: _Transfer,
        status: int,
        reason: str,
        now: float,
        response: SipResponse | None = None,
    ) -> None:
        if status < 200 or transfer.state != "trying":
            return
        call = transfer.call
        if status in FALLBACK_STATUSES and call.extras.get("transfer_out_of_dialog"):
            # RFC 5589 section 5: a peer that will not take the REFER outside the dialog (no
            # tdialog, or it wants proof we cannot give) may still take it inside.
            log.info(
                "call %s: out-of-dialog REFER refused (%d): REFER in the dialog", call.id, status
            )
            call.extras["transfer_out_of_dialog"] = False
            call.extras["transfer_fallback"] = f"{status} {reason}"
            if call.state != "ended" and call.session.dialog is not None:
                self._send_refer(transfer, now, in_dialog=True)
                return
        if status >= 300:
            self._transfer_over(transfer, status, now, f"REFER refused: {status} {reason}")
            return
        # 200, or 202 from an RFC 3515 peer (RFC 7647: same meaning)
        log.info("call %s: REFER accepted (%d)", transfer.call.id, status)
        granted = response is not None and (
            (response.headers.get("Refer-Sub") or "").strip().lower() == "false"
        )
        if granted:  # RFC 4488: no NOTIFYs; we end the transfer by our own logic
            transfer.no_sub = True
            transfer.call.extras["transfer_norefersub"] = True
            if transfer.consult is None:
                self._transfer_over(transfer, 200, now, "REFER accepted (norefersub)")
            # attended: done when the target ends our consultation dialog (it replaced it)
            return
        if response is not None and transfer.call.extras.get("transfer_out_of_dialog"):
            # The REFER created its own dialog: the NOTIFYs arrive there (RFC 3515 2.4.4).
            dialog_id = DialogId(response.call_id, response.from_.tag or "", response.to.tag)
            transfer.subscription = dialog_id
            self.calls.ua.bind_dialog(dialog_id, _SubscriptionUsage(self, transfer))

    def _on_notify(
        self, call: Call, server_tx: ServerTransaction, request: SipRequest, now: float
    ) -> None:
        session = call.session
        transfer = self._transfers.get(call.id)
        if transfer is not None and transfer.subscription is not None:
            transfer = None  # its NOTIFYs belong to the REFER's own dialog, not this one

        def reply(status: int, reason: str) -> None:
            session.reply(server_tx, request, status, reason, now)

        self._notify_received(transfer, request, reply, now)

    def _notify_received(
        self,
        transfer: _Transfer | None,
        request: SipRequest,
        reply: Callable[[int, str], None],
        now: float,
    ) -> None:
        """A refer NOTIFY for our transfer (in the call's dialog or the REFER's own)."""
        event = (request.headers.get("Event") or "").split(";")
        if event[0].strip().lower() != "refer":
            reply(489, "Bad Event")
            return
        event_id = next(
            (p.split("=", 1)[1].strip() for p in event[1:] if p.strip().startswith("id=")), None
        )
        if (
            transfer is None
            or transfer.state != "trying"
            or transfer.no_sub
            or (event_id is not None and event_id != str(transfer.refer_cseq))
        ):
            reply(481, "Subscription Does Not Exist")
            return
        reply(200, "OK")
        call = transfer.call
        match = _STATUS_LINE.match(request.body.decode("utf-8", "replace"))
        status = int(match.group(1)) if match else None
        terminated = ((request.headers.get("Subscription-State") or "").strip().lower()).startswith(
            "terminated"
        )
        if status is not None:
            transfer.status = status
            call.extras["transfer_status"] = status
        if status is not None and status >= 200:
            self._transfer_over(transfer, status, now, f"final NOTIFY: {status}")
            # Attended: the target BYEs its replaced dialog with us (RFC 3891); nothing to send.
        elif terminated:
            self._transfer_over(transfer, status or 487, now, "subscription terminated")
        else:
            transfer.deadline = now + self.policy.notify_timeout  # the subscription lives

    def _transfer_over(
        self, transfer: _Transfer, status: int, now: float, why: str | None = None
    ) -> None:
        call = transfer.call
        transfer.state = "done" if 200 <= status < 300 else "failed"
        transfer.status = status
        transfer.deadline = None
        call.extras.update(transfer=transfer.state, transfer_status=status)
        if why is not None:
            call.extras["transfer_reason"] = why
        if transfer.subscription is not None:
            self.calls.ua.unbind_dialog(transfer.subscription)
            transfer.subscription = None
        if call.state == "ended":
            return
        if transfer.state == "done":
            self.calls.hangup(call.id, now)
        elif transfer.held_by_us:
            self.calls.resume(call.id, now)

    # ----- the transferor's NOTIFY timeout (polled by the UA core like a dialog usage) ---------
    def get_timer(self) -> float | None:
        deadlines = [
            t.deadline
            for t in self._transfers.values()
            if t.state == "trying" and t.deadline is not None
        ]
        deadlines += [n.retry_at for n in self._waiting if n.retry_at is not None]
        return min(deadlines, default=None)

    def handle_timer(self, now: float) -> None:
        """No final NOTIFY in time (RFC 5589 section 6): give up, resume the call we held.
        As transferee: retry a triggered INVITE that waited for the original call's hold."""
        for notifier in list(self._waiting):
            if notifier.retry_at is not None and notifier.retry_at <= now:
                self._trigger(notifier, now)
                self.calls.process(now)
        for transfer in list(self._transfers.values()):
            if transfer.state == "trying" and transfer.deadline is not None:
                if transfer.deadline <= now:
                    seconds = round(self.policy.notify_timeout)
                    log.info("call %s: no final NOTIFY in %d s", transfer.call.id, seconds)
                    why = f"no final NOTIFY within {seconds} s"
                    self._transfer_over(transfer, 408, now, why)
                    self.calls.process(now)

    def status(self, call_id: str) -> dict[str, Any]:
        """The transfer fields of one call's status (empty when there was no transfer)."""
        call = self.calls.get(call_id)
        return {k: v for k, v in call.extras.items() if k.startswith(("transfer", "referred"))}


def attended_refer_to(
    target: Any, call_id: str, to_tag: str, from_tag: str, *, require: bool = False
) -> str:
    """Refer-To URI carrying Replaces of our dialog with the target (RFC 5589 7.3, RFC 3261 19.1.5).

    ``to_tag`` is the target's own tag (our remote tag), ``from_tag`` ours: the tags as the
    target will match them. The whole header value is escaped, ';' and '=' included.
    """
    replaces = quote(f"{call_id};to-tag={to_tag};from-tag={from_tag}", safe="")
    uri = target.copy(headers={}) if isinstance(target, SipURI) else parse_uri(str(target))
    suffix = "&Require=replaces" if require else ""
    return f"{uri}?Replaces={replaces}{suffix}"
