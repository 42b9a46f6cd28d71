"""INVITE sessions: the life of one call's signalling (RFC 3261 sections 13-15, RFC 6026), sans-IO.

An `InviteSession` is one call seen from this phone: as caller (UAC: INVITE, provisional
responses and early dialogs, the 2xx and its ACK, forked 2xx answered with ACK+BYE, CANCEL and
the 487/200 race, digest challenges) or as callee (UAS: 180, the 2xx retransmitted until the ACK,
CANCEL, rejection), and then the confirmed dialog (re-INVITE and UPDATE in both directions with
the glare rules of 14.1, INFO, BYE in either direction, 481 for stale requests).

The session never looks inside SDP: a `MediaHandler` (the call layer) makes offers and answers.
It never touches the network either: it asks its `InviteHost` (the UA core) to send requests,
responses and ACKs, and the UA routes responses, in-dialog requests and timers back here.
Everything the user should see comes out as `SessionEvent`s in `events` (drained by the call
layer).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from firmware.sip.auth import DigestClient, credential_realms
from firmware.sip.dialog import Dialog, DialogId, DialogState
from firmware.sip.errors import SipParseError
from firmware.sip.ids import IdSource, new_call_id, new_tag
from firmware.sip.message import SipRequest, SipResponse, make_request, make_response
from firmware.sip.session_timer import (
    SessionTimer,
    SessionTimerConfig,
    UacSessionTimer,
    UasDecision,
    uas_negotiate,
)
from firmware.sip.transaction import ClientTransaction, ServerTransaction, Timers, build_cancel

log = logging.getLogger(__name__)

SDP = "application/sdp"
ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO"


# --------------------------------------------------------------------------------------------
# Interfaces to the call layer (media) and to the UA core (host)
# --------------------------------------------------------------------------------------------
class MediaHandler(Protocol):
    """SDP offer/answer on behalf of a session (RFC 3264); implemented by the call layer."""

    def make_offer(self) -> bytes: ...

    def make_answer(self, offer: bytes) -> bytes | None:
        """Our answer to ``offer``; None if nothing in it is acceptable (-> 488)."""
        ...

    def take_answer(self, answer: bytes) -> bool:
        """Apply the peer's answer to our last offer; False if it is unusable."""
        ...


class InviteHost(Protocol):
    """What a session needs from the UA core."""

    ids: IdSource
    timers: Timers

    def send_request(
        self, request: SipRequest, owner: Any, now: float, *, dest: Hashable | None = None
    ) -> ClientTransaction:
        """Send through a client transaction; ``dest`` None = route by Route/Request-URI."""
        ...

    def send_ack(self, ack: SipRequest, now: float) -> None: ...

    def send_response(
        self, server_tx: ServerTransaction, response: SipResponse, now: float
    ) -> None: ...

    def bind_dialog(self, dialog_id: DialogId, usage: Any) -> None: ...

    def unbind_dialog(self, dialog_id: DialogId) -> None: ...


def _option_tags(message: SipRequest | SipResponse) -> frozenset[str]:
    """The option tags of a message's Supported header(s), lower-cased."""
    raw = message.headers.get_raw("Supported")
    return frozenset(t.strip().lower() for v in raw for t in v.split(",") if t.strip())


# --------------------------------------------------------------------------------------------
# Events for the call layer
# --------------------------------------------------------------------------------------------
@dataclass
class Progress:
    """A provisional response to our INVITE (180 ringing, 183 early media...)."""

    status: int
    reason: str
    has_sdp: bool


@dataclass
class Answered:
    """The call is up (we got a 2xx and sent the ACK, or the peer ACKed our 2xx)."""


@dataclass
class Failed:
    """Our INVITE got a final failure, or timed out (408), or was cancelled (487)."""

    status: int
    reason: str


@dataclass
class Ended:
    """A call that was up (or ringing in) ended: why, and the status that ended it."""

    cause: str  # "local_bye", "remote_bye", "cancelled", "no_ack", "timeout", "rejected"
    status: int | None = None
    reason: str | None = None


@dataclass
class ModifyResult:
    """The outcome of our re-INVITE/UPDATE (hold, resume, codec change)."""

    ok: bool
    status: int
    reason: str


@dataclass
class RemoteModified:
    """The peer changed the session with a re-INVITE or UPDATE carrying SDP."""


@dataclass
class InfoReceived:
    content_type: str
    body: bytes


SessionEvent = Progress | Answered | Failed | Ended | ModifyResult | RemoteModified | InfoReceived


class State(enum.Enum):
    CALLING = "calling"  # UAC: INVITE sent, nothing but 100 yet
    EARLY = "early"  # UAC: 1xx with a tag / UAS: 180 sent
    CONFIRMED = "confirmed"  # 2xx sent or received
    TERMINATED = "terminated"


# --------------------------------------------------------------------------------------------
# The session
# --------------------------------------------------------------------------------------------
class InviteSession:
    """One call's signalling; build with `outgoing()` or `incoming()`."""

    def __init__(
        self,
        host: InviteHost,
        media: MediaHandler,
        *,
        is_uac: bool,
        contact: str,
        user_agent: str = "deskphone/0.1",
        supported: str = "",
    ) -> None:
        self.host = host
        self.media = media
        self.is_uac = is_uac
        self.contact = contact
        self.user_agent = user_agent
        self.supported = supported
        self.state = State.CALLING if is_uac else State.EARLY
        self.events: list[SessionEvent] = []
        self.dialog: Dialog | None = None
        self._early: dict[str, Dialog] = {}  # UAC: early dialogs by remote tag (forking)
        # UAC side
        self.invite: SipRequest | None = None
        self._invite_tx: ClientTransaction | None = None
        self._digest: DigestClient | None = None
        self._provisional_seen = False
        self._cancel_requested = False
        self._cancel_sent = False
        self._acks: dict[str, SipRequest] = {}  # remote tag -> ACK sent for its 2xx
        self._offer_pending = False  # our offer awaits an answer
        # UAS side
        self._server_tx: ServerTransaction | None = None
        self._invite_request: SipRequest | None = None
        self._local_tag: str | None = None
        self._ok: SipResponse | None = None  # our 2xx, retransmitted until the ACK
        self._ok_tx: ServerTransaction | None = None
        self._ok_interval = 0.0
        self._ok_next: float | None = None
        self._ok_give_up: float | None = None
        self._late_offer = False
        # re-INVITE / UPDATE
        self._modify_tx: ClientTransaction | None = None
        self._modify_request: SipRequest | None = None
        self._incoming_modify: ServerTransaction | None = None
        self._glare_retry_at: float | None = None
        self._bye_tx: ClientTransaction | None = None
        self.end_cause: str | None = None
        self.dest: Hashable | None = None  # where the INVITE (and its CANCEL) goes
        # RFC 4028 session timers: our negotiation state and the running clock.
        self.timer_config: SessionTimerConfig | None = None
        self._st_uac: UacSessionTimer | None = None
        self._st_uas: UasDecision | None = None
        self.session_timer: SessionTimer | None = None
        self.refreshes = 0  # completed session refreshes, in either direction
        # In-dialog methods handled by features (e.g. "REFER", "NOTIFY"): fn(session, tx, req, now)
        self.extensions: dict[str, Any] = {}
        # Methods features will handle in this dialog, advertised in Allow from the first message.
        self.advertise: tuple[str, ...] = ()
        self._glare_method = "INVITE"
        # Option tags the peer listed in Supported (its INVITE, or the 2xx to ours): features
        # use them (e.g. norefersub, tdialog for REFER, RFC 4488 / RFC 4538).
        self.peer_supported: frozenset[str] = frozenset()

    # ----- construction ------------------------------------------------------------------------
    @classmethod
    def outgoing(
        cls,
        host: InviteHost,
        media: MediaHandler,
        *,
        request_uri: str,
        from_uri: str,
        to_uri: str,
        contact: str,
        now: float,
        display_name: str | None = None,
        digest: DigestClient | None = None,
        route: Iterable[str] = (),
        extra_headers: Iterable[tuple[str, str]] = (),
        user_agent: str = "deskphone/0.1",
        late_offer: bool = False,
        dest: Hashable | None = None,
        session_timer: SessionTimerConfig | None = None,
        advertise: Iterable[str] = (),
        supported: Iterable[str] = (),
    ) -> InviteSession:
        """Place a call: send the INVITE with our offer (or none for a late-offer INVITE).

        ``supported``: option tags for Supported (with "timer" when session timers are on).
        """
        session = cls(host, media, is_uac=True, contact=contact, user_agent=user_agent)
        session.advertise = tuple(advertise)
        session.supported = ", ".join(supported)
        session._digest = digest
        session.dest = dest
        if session_timer is not None:
            session.timer_config = session_timer
            session._st_uac = UacSessionTimer(session_timer)
            session.supported = ", ".join([*supported, "timer"])
        ids = host.ids
        from_value = f"<{from_uri}>;tag={new_tag(ids)}"
        if display_name:
            from_value = f"{_quote(display_name)} {from_value}"
        headers = [(name_, value) for name_, value in (("Route", r) for r in route)]
        headers += [
            ("Max-Forwards", "70"),
            ("From", from_value),
            ("To", f"<{to_uri}>"),
            ("Call-ID", new_call_id(ids)),
            ("CSeq", f"{1 + ids.randbelow(2**16)} INVITE"),
            ("Contact", contact),
            ("Allow", session.allow()),
            *([("Supported", session.supported)] if session.supported else []),
            *([("User-Agent", user_agent)] if user_agent else []),  # none: anonymous call
            *extra_headers,
        ]
        body = b""
        if not late_offer:
            body = media.make_offer()
            session._offer_pending = True
            headers.append(("Content-Type", SDP))
        invite = make_request("INVITE", request_uri, headers=headers, body=body)
        if session._st_uac is not None:
            session._st_uac.apply(invite.headers)
        session._send_invite(invite, now)
        return session

    @classmethod
    def incoming(
        cls,
        host: InviteHost,
        media: MediaHandler,
        server_tx: ServerTransaction,
        request: SipRequest,
        *,
        contact: str,
        now: float,
        user_agent: str = "deskphone/0.1",
        session_timer: SessionTimerConfig | None = None,
        advertise: Iterable[str] = (),
        alert: bool = True,
        supported: Iterable[str] = (),
    ) -> InviteSession:
        """Take a new incoming INVITE: the phone rings (180) in an early dialog.

        ``alert=False`` sends no 180: the caller is answered at once (an authorised INVITE
        with Replaces or Join must not ring, RFC 3891 section 3).

        With session timers on, an interval below our Min-SE is refused right here with 422
        (RFC 4028 section 8.1; THREATS T19) and the returned session is already terminated.
        """
        session = cls(host, media, is_uac=False, contact=contact, user_agent=user_agent)
        session.advertise = tuple(advertise)
        session.supported = ", ".join(supported)
        session._server_tx = server_tx
        session._invite_request = request
        session.peer_supported = _option_tags(request)
        session._local_tag = new_tag(host.ids)
        session._late_offer = not request.body
        dialog = Dialog.from_uas(request, session._local_tag, contact)
        session.dialog = dialog
        host.bind_dialog(dialog.id, session)
        if session_timer is not None:
            session.timer_config = session_timer
            session.supported = ", ".join([*supported, "timer"])
            try:
                decision = uas_negotiate(request, session_timer)
            except SipParseError as e:
                session._respond_invite(400, e.reason, now)
                session._terminate("rejected", 400, e.reason)
                return session
            if decision.rejected:
                session._respond_invite(
                    422, "Session Interval Too Small", now, headers=decision.response_headers
                )
                session._terminate("rejected", 422, "Session Interval Too Small")
                return session
            session._st_uas = decision
        if alert:
            session._respond_invite(180, "Ringing", now)
        return session

    # ----- common helpers ----------------------------------------------------------------------
    @property
    def call_id(self) -> str:
        if self.invite is not None:
            return self.invite.call_id
        assert self._invite_request is not None
        return self._invite_request.call_id

    @property
    def remote_party(self) -> str:
        """The other side as a URI string (To for calls we placed, From for calls we got)."""
        message = self.invite if self.is_uac else self._invite_request
        assert message is not None
        party = message.to if self.is_uac else message.from_
        return str(party.uri)

    @property
    def remote_display(self) -> str | None:
        message = self.invite if self.is_uac else self._invite_request
        assert message is not None
        return (message.to if self.is_uac else message.from_).display

    def _emit(self, event: SessionEvent) -> None:
        self.events.append(event)

    def drain_events(self) -> list[SessionEvent]:
        events, self.events = self.events, []
        return events

    def _terminate(
        self,
        cause: str,
        status: int | None = None,
        reason: str | None = None,
        *,
        event: SessionEvent | None = None,
    ) -> None:
        if self.state is State.TERMINATED:
            return
        self.state = State.TERMINATED
        self.end_cause = cause
        self._ok_next = self._ok_give_up = self._glare_retry_at = None
        dialogs = list(self._early.values())
        if self.dialog is not None:
            dialogs.append(self.dialog)
        for dialog in dialogs:
            dialog.terminate()
            self.host.unbind_dialog(dialog.id)
        self._emit(event if event is not None else Ended(cause, status, reason))

    # ----- UAC: the INVITE and its responses ----------------------------------------------------
    def _send_invite(self, invite: SipRequest, now: float) -> None:
        self.invite = invite
        self._invite_tx = self.host.send_request(invite, self, now, dest=self.dest)

    def on_response(self, tx: ClientTransaction, response: SipResponse, now: float) -> None:
        """A response to a request this session sent (routed by the UA core)."""
        if tx is self._invite_tx:
            self._on_invite_response(response, now)
        elif tx is self._modify_tx:
            self._on_modify_response(response, now)
        elif tx is self._bye_tx and response.status >= 200:
            self._terminate(self.end_cause or "local_bye", response.status, response.reason)

    def on_timeout(self, tx: ClientTransaction, now: float) -> None:
        """Timer B/F or a transport failure for one of our requests."""
        if tx is self._invite_tx and self.state in (State.CALLING, State.EARLY):
            self._terminate("timeout", 408, "Request Timeout", event=Failed(408, "Request Timeout"))
        elif tx is self._modify_tx:
            # 14.1: a re-INVITE that times out ends the dialog.
            self._modify_tx = None
            self._emit(ModifyResult(False, 408, "Request Timeout"))
            self._send_bye(now, cause="timeout")
        elif tx is self._bye_tx:
            self._terminate(self.end_cause or "local_bye", 408, "Request Timeout")

    def _on_invite_response(self, response: SipResponse, now: float) -> None:
        status = response.status
        tag = response.to.tag
        if status < 200:
            self._provisional_seen = True
            if self._cancel_requested and not self._cancel_sent:
                self._send_cancel(now)
            if self.state is State.TERMINATED:
                return
            if tag is not None and status > 100:
                self._early_dialog(response, tag)
                self.state = State.EARLY
                has_sdp = bool(response.body) and _is_sdp(response)
                if has_sdp and self._offer_pending:
                    # Without 100rel the SDP in an 18x is the (preview of the) answer.
                    self.media.take_answer(response.body)
                self._emit(Progress(status, response.reason, has_sdp))
            return
        if 200 <= status < 300:
            self._on_invite_2xx(response, tag, now)
            return
        # 3xx-6xx: the transaction ACKs it itself (17.1.1.3).
        if (
            status in (401, 407)
            and self._digest is not None
            and self.state is State.CALLING
            and not self._cancel_requested
        ):
            assert self.invite is not None
            retry = _next_cseq(self.invite)
            # Keep answering the realms that challenged this INVITE before (RFC 3261 22.3): a
            # proxy's 407 and then the callee's own 401 (e.g. a pickup group's Digest) need both.
            self._digest.pre_authorize(retry, realms=credential_realms(self.invite))
            if self._digest.authorize(retry, response):
                self._send_invite(retry, now)
                return
            if self._digest.last_error:  # e.g. a realm the account password must not answer
                reason = f"{response.reason} ({self._digest.last_error})"
                self._terminate("failed", status, reason, event=Failed(status, reason))
                return
        if (
            status == 422
            and self._st_uac is not None
            and self.state is State.CALLING
            and self._st_uac.handle_422(response)
        ):
            assert self.invite is not None
            retry = _next_cseq(self.invite)
            self._st_uac.apply(retry.headers)
            if self._digest is not None:
                self._digest.pre_authorize(retry, realms=credential_realms(self.invite))
            self._send_invite(retry, now)
            return
        if self.state is State.TERMINATED:
            return
        cause = "cancelled" if status == 487 and self._cancel_requested else "failed"
        self._terminate(cause, status, response.reason, event=Failed(status, response.reason))

    def on_stray_response(self, response: SipResponse, now: float) -> None:
        """A 2xx retransmission after the INVITE transaction ended: our ACK was lost; resend."""
        if 200 <= response.status < 300 and response.cseq.method == "INVITE":
            ack = self._acks.get(response.to.tag or "")
            if ack is not None:
                self.host.send_ack(ack, now)

    def _early_dialog(self, response: SipResponse, tag: str) -> Dialog:
        dialog = self._early.get(tag)
        if dialog is None:
            assert self.invite is not None
            dialog = Dialog.from_uac(self.invite, response)
            dialog.local_contact = self.contact
            self._early[tag] = dialog
            self.host.bind_dialog(dialog.id, self)
        else:
            dialog.update_from_response(response)
        return dialog

    def _on_invite_2xx(self, response: SipResponse, tag: str | None, now: float) -> None:
        assert self.invite is not None
        if tag is None:
            log.warning("2xx without a To tag on call %s ignored", self.invite.call_id)
            return
        if tag in self._acks:  # a retransmitted 2xx: our ACK was lost
            self.host.send_ack(self._acks[tag], now)
            return
        dialog = self._early.pop(tag, None)
        if dialog is None:
            dialog = Dialog.from_uac(self.invite, response)
            dialog.local_contact = self.contact
            self.host.bind_dialog(dialog.id, self)
        else:
            dialog.update_from_response(response)
        dialog.confirm()
        ack = dialog.create_ack(self.invite)
        if self._late_offer_answer_needed(response):
            answer = self.media.make_answer(response.body)
            if answer is not None:
                ack = dialog.create_ack(
                    self.invite, body=answer, extra_headers=[("Content-Type", SDP)]
                )
        self._acks[tag] = ack
        self.host.send_ack(ack, now)
        if self.dialog is not None or self.state is State.TERMINATED:
            # A second 2xx from another fork, or the 200 that won the race with our CANCEL:
            # acknowledge it and hang that leg up (RFC 3261 13.2.2.4).
            self._bye_dialog(dialog, now)
            return
        self.dialog = dialog
        self.peer_supported = _option_tags(response)
        if self._offer_pending and response.body:
            if not self.media.take_answer(response.body):
                self.state = State.CONFIRMED
                self._send_bye(
                    now,
                    cause="failed",
                    extra=[("Reason", 'SIP;cause=488;text="Not Acceptable Here"')],
                )
                return
        self._offer_pending = False
        self.state = State.CONFIRMED
        if self._cancel_requested:
            self._send_bye(now, cause="cancelled")
            return
        if self._st_uac is not None:
            self.session_timer = self._st_uac.handle_2xx(response, now)
        self._emit(Answered())

    def _late_offer_answer_needed(self, response: SipResponse) -> bool:
        assert self.invite is not None
        return not self.invite.body and bool(response.body) and not self._acks

    def _bye_dialog(self, dialog: Dialog, now: float) -> None:
        bye = dialog.create_request(
            "BYE", ids=self.host.ids, extra_headers=[("User-Agent", self.user_agent)]
        )
        self.host.send_request(bye, _Ignore(), now)
        dialog.terminate()
        self.host.unbind_dialog(dialog.id)

    def cancel(self, now: float) -> None:
        """Hang up a call we placed before it was answered (RFC 3261 9.1)."""
        if not self.is_uac or self.state not in (State.CALLING, State.EARLY):
            return
        self._cancel_requested = True
        if self._provisional_seen and not self._cancel_sent:
            self._send_cancel(now)

    def _send_cancel(self, now: float) -> None:
        assert self.invite is not None and self._invite_tx is not None
        self._cancel_sent = True
        cancel = build_cancel(self._invite_tx.request)
        self.host.send_request(cancel, _Ignore(), now, dest=self.dest)

    # ----- UAS: answering -----------------------------------------------------------------------
    def _respond_invite(
        self,
        status: int,
        reason: str,
        now: float,
        *,
        body: bytes = b"",
        headers: Iterable[tuple[str, str]] = (),
    ) -> SipResponse:
        assert self._invite_request is not None and self._server_tx is not None
        response = make_response(self._invite_request, status, reason, to_tag=self._local_tag)
        if status < 300 and status > 100:
            response.headers.add("Contact", self.contact)
        if 200 <= status < 300:
            response.headers.add("Allow", self.allow())
            if self.supported:
                response.headers.add("Supported", self.supported)
        response.headers.add("Server", self.user_agent)
        for name, value in headers:
            response.headers.add(name, value)
        if body:
            response.headers.add("Content-Type", SDP)
            response.body = body
        self.host.send_response(self._server_tx, response, now)
        return response

    def accept(self, now: float) -> bool:
        """Answer a ringing incoming call: 200 with our answer (or our offer for a late offer)."""
        if self.is_uac or self.state is not State.EARLY:
            return False
        assert self._invite_request is not None
        if self._late_offer:
            body = self.media.make_offer()
            self._offer_pending = True
        else:
            answer = self.media.make_answer(self._invite_request.body)
            if answer is None:
                self.reject(488, "Not Acceptable Here", now)
                return False
            body = answer
        st_headers = self._st_uas.response_headers if self._st_uas is not None else []
        self._ok = self._respond_invite(200, "OK", now, body=body, headers=st_headers)
        if self._st_uas is not None:
            self.session_timer = self._st_uas.start(now, self._min_se())
        self._ok_tx = self._server_tx
        self._start_ok_retransmit(now)
        self.state = State.CONFIRMED
        if self.dialog is not None:
            self.dialog.state = DialogState.CONFIRMED
        return True

    def reject(self, status: int, reason: str, now: float) -> None:
        """Refuse a ringing incoming call (486 Busy Here, 603 Decline, 480...)."""
        if self.is_uac or self.state is not State.EARLY:
            return
        self._respond_invite(status, reason, now)
        self._terminate("rejected", status, reason)

    def on_cancel(self, now: float) -> bool:
        """The caller sent CANCEL: 487 to the INVITE (the UA core answered the CANCEL)."""
        if self.is_uac or self.state is not State.EARLY:
            return False
        self._respond_invite(487, "Request Terminated", now)
        self._terminate("cancelled", 487, "Request Terminated")
        return True

    def _start_ok_retransmit(self, now: float) -> None:
        # 13.3.1.4: retransmit the 2xx at T1, 2T1... capped at T2 until the ACK; 64*T1 max.
        t = self.host.timers
        self._ok_interval = t.t1
        self._ok_next = now + t.t1
        self._ok_give_up = now + 64 * t.t1

    def on_ack(self, request: SipRequest, now: float) -> None:
        """The ACK for our 2xx (routed by dialog)."""
        if self._ok is None or self._ok.cseq.number != request.cseq.number:
            return
        self._ok = None
        self._ok_next = self._ok_give_up = None
        if self._offer_pending:
            self._offer_pending = False
            if not request.body or not self.media.take_answer(request.body):
                self._send_bye(
                    now,
                    cause="failed",
                    extra=[("Reason", 'SIP;cause=488;text="No usable answer in ACK"')],
                )
                return
        if self._incoming_modify is not None:
            self._incoming_modify = None
            return
        if self.state is State.CONFIRMED and self.end_cause is None:
            self._emit(Answered())

    # ----- in-dialog requests from the peer -----------------------------------------------------
    def on_request(self, server_tx: ServerTransaction, request: SipRequest, now: float) -> None:
        """An in-dialog request (BYE, re-INVITE, UPDATE, INFO, OPTIONS...)."""
        dialog = self._dialog_for(request)
        if dialog is None:
            self.reply(server_tx, request, 481, "Call/Transaction Does Not Exist", now)
            return
        error = dialog.check_request(request)
        if error is not None:
            reason = "Server Internal Error" if error == 500 else "Call/Transaction Does Not Exist"
            self.reply(server_tx, request, error, reason, now)
            return
        method = request.method
        if method == "BYE":
            self.reply(server_tx, request, 200, "OK", now)
            if dialog is not self.dialog:  # BYE for an early dialog of another fork
                dialog.terminate()
                self.host.unbind_dialog(dialog.id)
                return
            if self.state is State.EARLY and not self.is_uac:
                # 15.1.2: BYE before our 2xx was ACKed/sent ends the pending INVITE too.
                self._respond_invite(487, "Request Terminated", now)
            self._terminate("remote_bye")
        elif method in ("INVITE", "UPDATE"):
            self._on_remote_modify(server_tx, request, dialog, now)
        elif method == "INFO":
            self.reply(server_tx, request, 200, "OK", now)
            self._emit(InfoReceived(request.headers.get("Content-Type") or "", request.body))
        elif method == "OPTIONS":
            self.reply(server_tx, request, 200, "OK", now, [("Allow", self.allow())])
        elif method in self.extensions and dialog is self.dialog:
            # Features built on the call's dialog (REFER, NOTIFY for transfers...) plug in here.
            self.extensions[method](self, server_tx, request, now)
        else:
            self.reply(server_tx, request, 501, "Not Implemented", now, [("Allow", self.allow())])

    def allow(self) -> str:
        """Allow for this dialog: the core INVITE-usage methods plus registered extensions."""
        extra = [m for m in dict.fromkeys([*self.advertise, *self.extensions]) if m not in ALLOW]
        return ", ".join([ALLOW, *extra])

    @property
    def initial_request(self) -> SipRequest:
        """The INVITE that started this session (ours, or the one we received)."""
        request = self.invite if self.is_uac else self._invite_request
        assert request is not None
        return request

    def reply(
        self,
        server_tx: ServerTransaction,
        request: SipRequest,
        status: int,
        reason: str,
        now: float,
        headers: Iterable[tuple[str, str]] = (),
        *,
        body: bytes = b"",
        content_type: str = SDP,
    ) -> SipResponse:
        """Answer an in-dialog request with our dialog's To tag (for extensions)."""
        tag = self.dialog.local_tag if self.dialog is not None else None
        response = make_response(request, status, reason, to_tag=tag)
        for name, value in headers:
            response.headers.add(name, value)
        response.headers.add("Server", self.user_agent)
        if body:
            response.headers.add("Content-Type", content_type)
            response.body = body
        self.host.send_response(server_tx, response, now)
        return response

    def _dialog_for(self, request: SipRequest) -> Dialog | None:
        tag = request.from_.tag
        if self.dialog is not None and self.dialog.remote_tag == tag:
            return self.dialog
        return self._early.get(tag or "")

    def _on_remote_modify(
        self, server_tx: ServerTransaction, request: SipRequest, dialog: Dialog, now: float
    ) -> None:
        is_invite = request.method == "INVITE"
        if dialog is not self.dialog or self.state is not State.CONFIRMED:
            if not is_invite and dialog is self.dialog and request.body:
                # UPDATE in an early dialog (RFC 3311): allowed, but we keep it simple.
                self.reply(server_tx, request, 491, "Request Pending", now)
                return
            self.reply(
                server_tx,
                request,
                491 if is_invite else 200,
                "Request Pending" if is_invite else "OK",
                now,
            )
            return
        if self._modify_tx is not None or self._offer_pending:
            # 14.2: glare - our own offer is outstanding.
            self.reply(server_tx, request, 491, "Request Pending", now)
            return
        if self._incoming_modify is not None or self._ok is not None:
            self.reply(
                server_tx,
                request,
                500,
                "Server Internal Error",
                now,
                [("Retry-After", str(1 + self.host.ids.randbelow(10)))],
            )
            return
        if request.body:
            answer = self.media.make_answer(request.body)
            if answer is None:
                self.reply(server_tx, request, 488, "Not Acceptable Here", now)
                return
            body, offer_pending = answer, False
        elif is_invite:
            body, offer_pending = self.media.make_offer(), True  # offer in our 2xx
        else:
            body, offer_pending = b"", False  # UPDATE as a session refresh
        headers = [("Contact", self.contact), ("Allow", self.allow())]
        decision = self._refresh_terms(request)
        if decision is not None and decision.rejected:
            self.reply(
                server_tx,
                request,
                422,
                "Session Interval Too Small",
                now,
                decision.response_headers,
            )
            return
        if decision is not None:
            headers += decision.response_headers
        response = self.reply(server_tx, request, 200, "OK", now, headers, body=body)
        if decision is not None and decision.interval is not None:
            self._note_refresh(now, decision.interval, decision.we_refresh)
        if request.body:
            self._emit(RemoteModified())
        if is_invite:
            self._incoming_modify = server_tx
            self._offer_pending = offer_pending
            self._ok = response
            self._ok_tx = server_tx
            self._start_ok_retransmit(now)

    # ----- our own re-INVITE / UPDATE / BYE -----------------------------------------------------
    def modify(self, now: float, *, method: str = "INVITE") -> bool:
        """Send a new offer (hold, resume, codec change) in a re-INVITE or UPDATE."""
        if self.state is not State.CONFIRMED or self.dialog is None:
            return False
        if self._modify_tx is not None or self._incoming_modify is not None or self._ok is not None:
            return False
        offer = self.media.make_offer()
        request = self.dialog.create_request(
            method,
            ids=self.host.ids,
            contact=self.contact,
            body=offer,
            extra_headers=[
                ("Content-Type", SDP),
                ("Allow", self.allow()),
                ("User-Agent", self.user_agent),
            ],
        )
        if self._st_uac is None and self.timer_config is not None:
            self._st_uac = UacSessionTimer(self.timer_config)
        if self._st_uac is not None and self.session_timer is not None:
            self._st_uac.for_refresh(self.session_timer, we_are_uac_refresher=True)
            self._st_uac.apply(request.headers)
        self._offer_pending = True
        self._modify_request = request
        self._modify_tx = self.host.send_request(request, self, now)
        return True

    def _on_modify_response(self, response: SipResponse, now: float) -> None:
        status = response.status
        if status < 200:
            return
        request = self._modify_request
        assert request is not None and self.dialog is not None
        self._modify_tx = None
        if 200 <= status < 300:
            if request.method == "INVITE":
                self.host.send_ack(self.dialog.create_ack(request), now)
            self.dialog.update_from_response(response)
            self._offer_pending = False
            ok = bool(response.body) and self.media.take_answer(response.body)
            if self._st_uac is not None and self.session_timer is not None:
                agreed = self._st_uac.handle_2xx(response, now)
                self._note_refresh(
                    now,
                    agreed.interval if agreed is not None else self.session_timer.interval,
                    agreed.we_refresh if agreed is not None else True,
                )
            self._emit(ModifyResult(ok, status, response.reason))
            return
        self._offer_pending = False
        if status == 491:
            # 14.1: retry after 2.1-4 s if we own the Call-ID, else 0-2 s.
            owner = self.is_uac
            low, span = (2.1, 1.9) if owner else (0.0, 2.0)
            self._glare_retry_at = now + low + span * self.host.ids.randbelow(1001) / 1000
            self._glare_method = request.method
            return
        self._emit(ModifyResult(False, status, response.reason))
        if status in (408, 481):
            self._send_bye(now, cause="failed")

    def hangup(self, now: float) -> None:
        """The user hung up: CANCEL, reject or BYE depending on where the call is."""
        if self.state is State.TERMINATED:
            return
        if self.is_uac and self.state in (State.CALLING, State.EARLY):
            self.cancel(now)
        elif not self.is_uac and self.state is State.EARLY:
            self.reject(603, "Decline", now)
        else:
            self._send_bye(now, cause="local_bye")

    def _send_bye(self, now: float, *, cause: str, extra: Iterable[tuple[str, str]] = ()) -> None:
        if self.dialog is None or self._bye_tx is not None or self.state is State.TERMINATED:
            return
        self.end_cause = cause
        bye = self.dialog.create_request(
            "BYE", ids=self.host.ids, extra_headers=[("User-Agent", self.user_agent), *extra]
        )
        self._bye_tx = self.host.send_request(bye, self, now)
        # The call is over for the user at once; the BYE transaction finishes on its own.
        self._terminate(cause)

    def send_info(self, body: bytes, content_type: str, now: float) -> None:
        if self.dialog is None or self.state is not State.CONFIRMED:
            return
        info = self.dialog.create_request(
            "INFO", ids=self.host.ids, body=body, extra_headers=[("Content-Type", content_type)]
        )
        self.host.send_request(info, _Ignore(), now)

    # ----- timers ------------------------------------------------------------------------------
    def get_timer(self) -> float | None:
        st = self.session_timer.get_timer() if self.session_timer is not None else None
        deadlines = [
            t for t in (self._ok_next, self._ok_give_up, self._glare_retry_at, st) if t is not None
        ]
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> None:
        if self._ok_give_up is not None and now >= self._ok_give_up:
            # 13.3.1.4: no ACK for 64*T1 - the dialog is dead.
            self._ok = None
            self._ok_next = self._ok_give_up = None
            if self._incoming_modify is not None:
                self._incoming_modify = None
            self._send_bye(now, cause="no_ack")
            return
        if self._ok_next is not None and now >= self._ok_next and self._ok is not None:
            assert self._ok_tx is not None
            self.host.send_response(self._ok_tx, self._ok, now)
            self._ok_interval = min(2 * self._ok_interval, self.host.timers.t2)
            self._ok_next = now + self._ok_interval
        if self._glare_retry_at is not None and now >= self._glare_retry_at:
            self._glare_retry_at = None
            self.modify(now, method=self._glare_method)
        if self.session_timer is not None and self.state is State.CONFIRMED:
            deadline = self.session_timer.get_timer()
            if deadline is not None and now >= deadline:
                action = self.session_timer.handle_timer(now)
                if action == "refresh" and not self.modify(now):
                    # Busy with another offer: that exchange refreshes the session too.
                    log.debug("session refresh deferred: an offer is in progress")
                elif action == "expire":
                    self._send_bye(
                        now,
                        cause="session_expired",
                        extra=[("Reason", 'SIP;cause=408;text="Session timer expired"')],
                    )

    # ----- session timer helpers ---------------------------------------------------------------
    def _min_se(self) -> int:
        return self.timer_config.min_se if self.timer_config is not None else 90

    def _refresh_terms(self, request: SipRequest) -> UasDecision | None:
        """RFC 4028 9 for a refresh the peer sends (re-INVITE/UPDATE in the dialog)."""
        if self.timer_config is None:
            return None
        try:
            return uas_negotiate(request, self.timer_config)
        except SipParseError:
            return None

    def _note_refresh(self, now: float, interval: int, we_refresh: bool) -> None:
        self.refreshes += 1
        if self.session_timer is None:
            self.session_timer = SessionTimer(interval, we_refresh, now, self._min_se())
        else:
            self.session_timer.refreshed(now, interval, we_refresh)

    # ----- status ------------------------------------------------------------------------------
    def dialog_id(self) -> DialogId | None:
        return self.dialog.id if self.dialog is not None else None


class _Ignore:
    """Owner for fire-and-forget requests (CANCEL, BYE of a losing fork, INFO)."""

    def on_response(self, tx: ClientTransaction, response: SipResponse, now: float) -> None:
        return None

    def on_timeout(self, tx: ClientTransaction, now: float) -> None:
        return None


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _is_sdp(message: SipRequest | SipResponse) -> bool:
    content_type = (message.headers.get("Content-Type") or "").split(";")[0].strip().lower()
    return content_type == SDP


def _next_cseq(request: SipRequest) -> SipRequest:
    """A copy of ``request`` with CSeq + 1 and no Via/credentials, for an authenticated retry."""
    headers = [
        (n, v)
        for n, v in request.headers
        if n.lower() not in ("via", "v", "authorization", "proxy-authorization", "cseq")
    ]
    cseq = request.cseq
    headers.insert(0, ("CSeq", f"{cseq.number + 1} {cseq.method}"))
    return make_request(request.method, request.uri_text, headers=headers, body=request.body)


__all__ = [
    "Answered",
    "Ended",
    "Failed",
    "InfoReceived",
    "InviteHost",
    "InviteSession",
    "MediaHandler",
    "ModifyResult",
    "Progress",
    "RemoteModified",
    "SessionEvent",
    "State",
]
