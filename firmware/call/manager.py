"""The phone's calls: placing, answering, holding and ending them; sans-IO.

`CallManager` turns user intents (dial, answer, hang up, hold, resume) into INVITE sessions and
turns what the sessions report into the call states the UI and the action API show:
``dialing``/``calling``/``early``/``ringing``/``connected``/``held``/``ended``. For each call it
keeps a `CallMedia` (SDP) and tells the runtime through `media_changes()` which RTP streams to
start, change or stop; it never opens a socket itself.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from firmware.call.media import CallMedia
from firmware.sip.invite import (
    Answered,
    Ended,
    Failed,
    InfoReceived,
    InviteSession,
    ModifyResult,
    Progress,
    RemoteModified,
    State,
)
from firmware.sip.message import SipRequest
from firmware.sip.offer_answer import CodecSpec, LocalMediaCaps, NegotiatedMedia
from firmware.sip.session_timer import SessionTimerConfig
from firmware.sip.transaction import ServerTransaction

log = logging.getLogger(__name__)

MAX_CALLS = 4  # line appearances


class MediaPorts(Protocol):
    """Local RTP addresses, handed out by the runtime (which owns the sockets)."""

    def allocate(self, call_id: str, towards: Hashable | None) -> tuple[str, int]: ...

    def release(self, call_id: str) -> None: ...


@dataclass
class MediaChange:
    """What the runtime must do with a call's RTP stream."""

    call_id: str
    action: str  # "start" | "update" | "stop"
    negotiated: NegotiatedMedia | None
    local: tuple[str, int] | None


@dataclass
class Call:
    """One line appearance as the user sees it."""

    id: str
    direction: str  # "outgoing" | "incoming"
    remote: str
    account: str
    session: InviteSession
    media: CallMedia
    state: str = "calling"
    remote_display: str | None = None
    started_at: float | None = None
    connected_at: float | None = None
    ended_at: float | None = None
    end_status: int | None = None
    end_reason: str | None = None
    end_cause: str | None = None
    held: bool = False
    remote_held: bool = False
    dtmf_received: list[str] = field(default_factory=list)
    local_rtp: tuple[str, int] | None = None
    media_version: int = 0
    extras: dict[str, Any] = field(default_factory=dict)  # fields added by features (transfer)
    media_muted: bool = False

    def status(self, now: float) -> dict[str, Any]:
        n = self.media.negotiated
        duration = 0.0
        if self.connected_at is not None:
            duration = (self.ended_at or now) - self.connected_at
        return {
            "id": self.id,
            "state": self.state,
            "direction": self.direction,
            "remote": self.remote,
            "remote_display": self.remote_display,
            "account": self.account,
            "held": self.held,
            "remote_held": self.remote_held,
            "codec": n.send_codec.name if n is not None else None,
            "srtp": bool(n is not None and n.crypto is not None),
            "duration": round(duration, 1),
            "end_status": self.end_status,
            "end_reason": self.end_reason,
            "end_cause": self.end_cause,
            "dtmf_received": "".join(self.dtmf_received),
            "local_rtp": f"{self.local_rtp[0]}:{self.local_rtp[1]}" if self.local_rtp else None,
            "refreshes": self.session.refreshes,
            **self.extras,
        }


@dataclass
class AccountInfo:
    """What placing a call on an account needs from the UA core's account binding."""

    aor: str
    display_name: str | None
    domain: str
    contact: str
    dest: Hashable
    digest: Any
    secure: bool


class CallManager:
    """All calls of the phone."""

    def __init__(
        self,
        ua: Any,
        *,
        ports: MediaPorts,
        codecs: list[CodecSpec],
        accounts: Callable[[str], AccountInfo],
        srtp: str = "off",
        fresh_crypto: Callable[[], list[str]] | None = None,
        telephone_event: CodecSpec | None = None,
        max_calls: int = MAX_CALLS,
        user_agent: str = "deskphone/0.1",
        srtp_without_tls: bool = False,
        session_timer: SessionTimerConfig | None = None,
    ) -> None:
        self.ua = ua
        self.ports = ports
        self.codecs = codecs
        self.accounts = accounts
        self.srtp = srtp  # policy with secure (TLS/SIPS) signalling: off|optional|mandatory
        self.srtp_without_tls = srtp_without_tls  # SDES keys over plain SIP only if asked for
        self.session_timer = session_timer  # RFC 4028; None = no session timers
        self.fresh_crypto = fresh_crypto
        self.telephone_event = telephone_event or CodecSpec(
            "telephone-event", 8000, 101, fmtp="0-16"
        )
        self.max_calls = max_calls
        self.user_agent = user_agent
        self.calls: dict[str, Call] = {}
        self._by_session: dict[int, Call] = {}
        self._changes: list[MediaChange] = []
        self._next = 1
        self.on_incoming: Callable[[Call], None] | None = None
        # Features (e.g. firmware.call.refer.TransferService) hear of each call and its changes
        # through call_added(call) and call_synced(call, now).
        self.features: list[Any] = []
        # In-dialog methods features handle (REFER, NOTIFY...), advertised in every call's Allow.
        self.dialog_methods: list[str] = []
        # Option tags features implement (replaces, join, tdialog...), in every INVITE and 2xx.
        self.option_tags: list[str] = []
        # firmware.call.replaces.ReplacesService: vets INVITEs with Replaces before anything rings.
        self.replaces: Any = None
        # firmware.call.privacy.PrivacyService: dial(anonymous=True) asks it to strip identity.
        self.privacy: Any = None
        # firmware.call.join.JoinService: vets INVITEs with Join (RFC 3911) the same way.
        self.joins: Any = None
        # firmware.call.lines.LineAppearances: holds the talking call before another one talks.
        self.lines: Any = None
        ua.handlers["INVITE"] = self._on_invite

    # ----- helpers --------------------------------------------------------------------------
    def _new_id(self) -> str:
        call_id = f"c{self._next}"
        self._next += 1
        return call_id

    def _media(
        self, call_key: str, towards: Hashable | None, secure: bool
    ) -> tuple[CallMedia, tuple[str, int]]:
        address, port = self.ports.allocate(call_key, towards)
        # RFC 4568 8.3 / THREATS T20: keys in SDP only where signalling is encrypted.
        srtp = self.srtp if (secure or self.srtp_without_tls) else "off"
        crypto = self.fresh_crypto() if (srtp != "off" and self.fresh_crypto) else []
        caps = LocalMediaCaps(
            address=address,
            port=port,
            codecs=list(self.codecs),
            telephone_event=self.telephone_event,
            srtp=srtp,  # type: ignore[arg-type]
            crypto=crypto,
        )
        session_id = 1 + self.ua.ids.randbelow(2**31)
        return CallMedia(caps, session_id), (address, port)

    def active_calls(self) -> list[Call]:
        return [c for c in self.calls.values() if c.state != "ended"]

    # ----- user intents ---------------------------------------------------------------------
    def dial(
        self,
        target: str,
        account_id: str,
        now: float,
        *,
        late_offer: bool = False,
        extra_headers: Iterable[tuple[str, str]] = (),
        hold_others: bool = True,
        anonymous: bool = False,
    ) -> Call:
        """Place a call to ``target`` (a number/user, or a full sip:/sips: URI).

        The talking call is held first; ``hold_others=False`` keeps it talking because the
        two are about to be joined in a local conference (they count as one line).

        ``late_offer`` sends the INVITE without SDP, so the callee offers in its 2xx and we
        answer in the ACK (RFC 3261 13.2.1; some PBXs and gateways need it).
        """
        if len(self.active_calls()) >= self.max_calls:
            raise RuntimeError("all line appearances are busy")
        info = self.accounts(account_id)
        user_agent = self.user_agent
        if anonymous:  # RFC 3323 user-provided privacy: firmware.call.privacy rewrites it all
            if self.privacy is None:
                raise RuntimeError("anonymous calls need the privacy feature")
            info, user_agent, extra_headers = self.privacy.anonymise(info, extra_headers)
        talking = [] if self.lines is None else [c.id for c in self.lines.talking()]
        if self.lines is not None and hold_others:
            self.lines.make_room(None, now)  # the talking call goes on hold first
        uri = (
            target
            if target.startswith(("sip:", "sips:", "tel:"))
            else f"sip:{target}@{info.domain}"
        )
        call_key = self._new_id()
        media, local = self._media(call_key, info.dest, info.secure)
        session = InviteSession.outgoing(
            self.ua,
            media,
            request_uri=uri,
            from_uri=info.aor,
            to_uri=uri,
            contact=info.contact,
            now=now,
            display_name=info.display_name,
            digest=info.digest,
            dest=info.dest,
            user_agent=user_agent,
            session_timer=self.session_timer,
            advertise=self.dialog_methods,
            supported=self.option_tags,
            late_offer=late_offer,
            extra_headers=extra_headers,
        )
        call = Call(
            id=call_key,
            direction="outgoing",
            remote=uri,
            account=account_id,
            session=session,
            media=media,
            state="calling",
            started_at=now,
            local_rtp=local,
        )
        self._add(call)
        if self.lines is not None and not hold_others and talking:
            self.lines.join([*talking, call.id])
        self._sync(call, now)
        return call

    def _on_invite(self, server_tx: ServerTransaction, request: SipRequest, now: float) -> None:
        if self.replaces is not None and self.replaces.refuse(server_tx, request, now):
            return
        if self.joins is not None and self.joins.refuse(server_tx, request, now):
            return
        if len(self.active_calls()) >= self.max_calls:
            self.ua.respond(server_tx, request, 486, "Busy Here", now)
            return
        endpoint = self.ua.endpoint_for(server_tx.peer)
        account_id = self.ua.account_for_request(request) or "line1"
        secure = request.uri.scheme == "sips" if hasattr(request.uri, "scheme") else False
        secure = secure or endpoint.via_transport == "TLS"
        call_key = self._new_id()
        media, local = self._media(call_key, server_tx.peer, secure)
        if request.body:
            # Find out now whether the offer is acceptable at all (488 rather than ringing).
            probe = CallMedia(media.caps, media.session_id)
            if probe.make_answer(request.body) is None:
                self.ports.release(call_key)
                self.ua.respond(server_tx, request, 488, "Not Acceptable Here", now)
                return
        session = InviteSession.incoming(
            self.ua,
            media,
            server_tx,
            request,
            contact=f"<{endpoint.contact}>",
            now=now,
            user_agent=self.user_agent,
            session_timer=self.session_timer,
            advertise=self.dialog_methods,
            supported=self.option_tags,
            # RFC 3891 section 3 / RFC 3911: a vetted Replaces or Join is answered, never rung.
            alert=not (
                (self.replaces is not None and request.headers.get_raw("Replaces"))
                or (self.joins is not None and request.headers.get_raw("Join"))
            ),
        )
        if session.state is State.TERMINATED:  # refused at once (e.g. 422 Min-SE)
            self.ports.release(call_key)
            return
        self.ua.watch_invite(server_tx, session)
        call = Call(
            id=call_key,
            direction="incoming",
            remote=session.remote_party,
            account=account_id,
            session=session,
            media=media,
            state="ringing",
            remote_display=session.remote_display,
            started_at=now,
            local_rtp=local,
        )
        self._add(call)
        if self.on_incoming is not None:
            self.on_incoming(call)
        self._sync(call, now)

    def _add(self, call: Call) -> None:
        self.calls[call.id] = call
        self._by_session[id(call.session)] = call
        for feature in self.features:
            feature.call_added(call)

    def get(self, call_id: str) -> Call:
        call = self.calls.get(call_id)
        if call is None:
            raise KeyError(f"no call {call_id}")
        return call

    def answer(self, call_id: str, now: float) -> bool:
        call = self.get(call_id)
        if self.lines is not None:
            self.lines.make_room(call, now)  # answer-and-hold: hold re-INVITE before our 200
        ok = call.session.accept(now)
        self._sync(call, now)
        return ok

    def reject(
        self, call_id: str, now: float, status: int = 486, reason: str = "Busy Here"
    ) -> None:
        call = self.get(call_id)
        call.session.reject(status, reason, now)
        self._sync(call, now)

    def hangup(self, call_id: str, now: float) -> None:
        call = self.get(call_id)
        call.session.hangup(now)
        self._sync(call, now)

    def hold(self, call_id: str, now: float) -> bool:
        call = self.get(call_id)
        if call.held or call.state not in ("connected",):
            return False
        call.media.on_hold = True
        if not call.session.modify(now):
            call.media.on_hold = False
            return False
        call.held = True
        self._sync(call, now)
        return True

    def resume(self, call_id: str, now: float) -> bool:
        call = self.get(call_id)
        if not call.held:
            return False
        if self.lines is not None:
            self.lines.make_room(call, now)  # resume one = hold the other
        call.media.on_hold = False
        if not call.session.modify(now):
            call.media.on_hold = True
            return False
        call.held = False
        self._sync(call, now)
        return True

    def conference(self, call_ids: Iterable[str], now: float) -> list[str]:
        """Ready calls to be mixed into a local conference: held ones are resumed (a plain
        re-INVITE, RFC 3264 8.4); the mixing is the runtime's. Returns the ids resumed.
        RuntimeError naming the call when one is neither connected nor held."""
        calls = [self.get(call_id) for call_id in call_ids]
        for call in calls:
            if call.state not in ("connected", "held"):
                raise RuntimeError(f"call {call.id} is {call.state}, not connected or held")
        if self.lines is not None:
            self.lines.join([c.id for c in calls])  # the legs talk together as one line
        return [c.id for c in calls if c.held and self.resume(c.id, now)]

    # ----- events from sessions -------------------------------------------------------------
    def process(self, now: float) -> None:
        """Fold every session's new events into call states (call after each UA input)."""
        for call in list(self.calls.values()):
            self._sync(call, now)

    def _sync(self, call: Call, now: float) -> None:
        for event in call.session.drain_events():
            if isinstance(event, Progress):
                call.state = "early"
            elif isinstance(event, Answered):
                call.state = "held" if call.held else "connected"
                call.connected_at = call.connected_at or now
            elif isinstance(event, Failed):
                self._end(
                    call,
                    now,
                    event.status,
                    event.reason,
                    "cancelled" if event.status == 487 else "failed",
                )
            elif isinstance(event, Ended):
                self._end(call, now, event.status, event.reason, event.cause)
            elif isinstance(event, ModifyResult):
                if not event.ok:
                    log.info(
                        "call %s: re-INVITE failed: %d %s", call.id, event.status, event.reason
                    )
            elif isinstance(event, RemoteModified):
                pass
            elif isinstance(event, InfoReceived):
                self._on_info(call, event)
        if call.state in ("connected", "held"):
            call.state = "held" if call.held else "connected"
            call.remote_held = call.media.remote_holds
        if call.session.state is State.TERMINATED and call.state != "ended":
            self._end(call, now, None, None, call.session.end_cause or "ended")
        self._media_sync(call)
        for feature in self.features:
            feature.call_synced(call, now)

    def _on_info(self, call: Call, event: InfoReceived) -> None:
        """SIP INFO DTMF (application/dtmf-relay), the fallback when RFC 4733 is not offered."""
        if "dtmf" not in event.content_type.lower():
            return
        for line in event.body.decode(errors="replace").splitlines():
            key, _, value = line.partition("=")
            if key.strip().lower() == "signal" and value.strip():
                call.dtmf_received.append(value.strip()[0])

    def _end(
        self, call: Call, now: float, status: int | None, reason: str | None, cause: str
    ) -> None:
        if call.state == "ended":
            return
        call.state = "ended"
        call.ended_at = now
        call.end_status, call.end_reason, call.end_cause = status, reason, cause
        log.info(
            "call %s with %s ended: %s %s %s",
            call.id,
            call.remote,
            cause,
            status or "",
            reason or "",
        )

    def _media_sync(self, call: Call) -> None:
        if call.state == "ended":
            if call.media_version >= 0:
                call.media_version = -1
                self._changes.append(MediaChange(call.id, "stop", None, call.local_rtp))
                self.ports.release(call.id)
            return
        n = call.media.negotiated
        if n is None:
            return
        # The SDP says what we MAY do; a phone that holds a call also mutes it locally and
        # sends no RTP (FEATURES 1.2: RTCP continues), so the media layer gets "inactive".
        muted = call.held
        if (call.media.changes, muted) == (call.media_version, call.media_muted):
            return
        action = "start" if call.media_version == 0 else "update"
        call.media_version, call.media_muted = call.media.changes, muted
        if muted:
            n = dataclasses.replace(n, direction="inactive")
        self._changes.append(MediaChange(call.id, action, n, call.local_rtp))

    def media_changes(self) -> list[MediaChange]:
        changes, self._changes = self._changes, []
        return changes

    def status(self, now: float) -> list[dict[str, Any]]:
        return [c.status(now) for c in self.calls.values()]

    def forget_ended(self, keep: int = 10) -> None:
        ended = [c for c in self.calls.values() if c.state == "ended"]
        for call in ended[:-keep] if keep else ended:
            del self.calls[call.id]
            self._by_session.pop(id(call.session), None)
