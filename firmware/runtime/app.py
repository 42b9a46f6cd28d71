"""The phone process: one asyncio loop owning sockets, the timer, and the action API.

It feeds the sans-IO UA core with what the transports receive and the single earliest timer
deadline, and writes what the core wants sent. Everything protocol-related lives in
firmware/sip; this module only moves bytes and time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import time
from typing import Any

from firmware.call.authorise import Authoriser
from firmware.call.focus import ConferenceError, NetworkConferences
from firmware.call.join import JoinService
from firmware.call.lines import LineAppearances, LineBusy
from firmware.call.manager import AccountInfo, CallManager
from firmware.call.refer import DEFAULT_DENY, ReferPolicy, TransferService
from firmware.call.replaces import ReplacesPolicy, ReplacesService
from firmware.provisioning.config import AccountConfig, PhoneConfig
from firmware.runtime.addresses import Address, resolve_target
from firmware.runtime.api import ActionError, ApiServer
from firmware.runtime.conference import ConferenceBridge
from firmware.runtime.progress_tones import CallWaitingTone, ProgressTonePlayer
from firmware.runtime.state import DeviceState
from firmware.runtime.transports import Flow, TlsConfig, TransportError, TransportManager
from firmware.runtime.ui_driver import UiDriver
from firmware.sip.auth import DigestClient, DigestCredentials
from firmware.sip.errors import SipParseError
from firmware.sip.ids import IdSource, SecureIds
from firmware.sip.message import SipRequest, SipResponse, make_response
from firmware.sip.offer_answer import CodecSpec
from firmware.sip.registration import Registration
from firmware.sip.session_timer import SessionTimerConfig
from firmware.sip.transaction import Timers
from firmware.sip.ua import LocalEndpoint, UserAgent
from firmware.sip.uri import URI, SipURI

log = logging.getLogger(__name__)

SHUTDOWN_GRACE = 5.0  # seconds to wait for un-REGISTER answers on SIGTERM


def wall_time(monotonic_t: float | None) -> float | None:
    """Convert a monotonic deadline from the core into Unix time for people and scripts."""
    if monotonic_t is None:
        return None
    return round(time.time() + (monotonic_t - time.monotonic()), 3)


class Phone:
    """A running phone: transports + UA core + registrations + action API."""

    def __init__(self, config: PhoneConfig, ids: IdSource | None = None) -> None:
        self.config = config
        self.ids = ids or SecureIds()
        self.ua = UserAgent(
            ids=self.ids, user_agent=config.sip.user_agent, timers=Timers(t1=config.sip.t1)
        )
        tls = TlsConfig(
            ca_file=str(config.sip.tls_ca) if config.sip.tls_ca else None,
            verify=config.sip.tls_verify,
            cert_file=str(config.sip.tls_cert) if config.sip.tls_cert else None,
            key_file=str(config.sip.tls_key) if config.sip.tls_key else None,
        )
        self.transports = TransportManager(
            self._on_message, self._on_bad_message, self._on_flow_failed, tls=tls
        )
        self.api: ApiServer | None = None
        self.state = DeviceState(config.device.state_dir)
        self._wake = asyncio.Event()
        self._out: asyncio.Queue[tuple[bytes, Any]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[None]] = set()
        self._account_dest: dict[str, Address] = {}
        self._accounts: dict[str, AccountConfig] = {}
        self._keepalive_flows: set[Flow] = set()
        self.started_at = time.time()
        self.ua.network = self
        self.media = self._make_media()
        # looked up per tone, not bound now: the UI (below) wraps the opener with the volume
        self.tones = ProgressTonePlayer(
            lambda: self.media.audio.open_sink(), config.audio.tone_country
        )
        self.calls = CallManager(
            self.ua,
            ports=self.media.ports,
            codecs=_codec_specs(config.audio.codecs),
            accounts=self._account_info,
            srtp=config.audio.srtp,
            fresh_crypto=self.media.fresh_crypto,
            user_agent=config.sip.user_agent,
            telephone_event=CodecSpec("telephone-event", 8000, 101, fmtp="0-16")
            if config.audio.telephone_event
            else None,
            srtp_without_tls=config.audio.srtp_without_tls,
            max_calls=config.calls.max_calls,
            session_timer=SessionTimerConfig(session_expires=config.sip.session_expires)
            if config.sip.session_timers
            else None,
        )
        self.media.on_dtmf = self._on_dtmf
        self.conference = ConferenceBridge()  # local 3-way: calls mixed with the handset
        tr = config.transfer
        # Who may transfer/replace/join from outside a call: listed and proven by our Digest.
        self.authoriser = Authoriser(
            self.ids,
            tr.allow_from,
            tr.auth_users,
            allow_md5=config.sip.allow_md5,
            algorithms=tr.auth_algorithms,
            trust_asserted=tr.trust_asserted_identity,
        )
        self.transfers = TransferService(
            self.calls,
            ReferPolicy(
                in_dialog=tr.allow_refer,
                out_of_dialog=tr.allow_out_of_dialog,
                allow=tr.allow,
                deny=DEFAULT_DENY if tr.deny is None else tr.deny,
                norefersub=tr.norefersub,
                notify_timeout=tr.notify_timeout,
            ),
            self.authoriser,
        )
        # INVITE with Replaces (attended transfer target, RFC 3891): peer, transferor, or listed.
        self.replaces = ReplacesService(
            self.calls,
            ReplacesPolicy(referred_by_peer=tr.replaces_referred_by),
            auth=self.authoriser,
        )
        # INVITE with Join (RFC 3911): a listed, Digest-proven identity enters a call; mixed here.
        self.joins = JoinService(self.calls, self.authoriser)
        # line appearances: call waiting, answer-and-hold, swap; one talking call at a time
        self.lines = LineAppearances(self.calls)
        self.call_waiting = CallWaitingTone(config.audio.tone_country)
        # network conference through a focus (RFC 4579): INVITE the focus, REFER parties there
        self.network_conferences = NetworkConferences(self.calls, self.transfers)
        # BLF, MWI, DND, forwarding, intercom, privacy, park (issue 5; after calls/transfers)
        from firmware.runtime.desk_features import DeskFeatures

        self.desk = DeskFeatures(self)
        # [transfer] trust_asserted_identity: PAI counts only on the registrar/proxy flow (T25)
        self.authoriser.trusted = self.desk.from_registrar
        # the phone's screens and keys on the [board] (firmware/ui via runtime/ui_driver.py)
        self.ui: UiDriver | None = UiDriver(self)

    def _on_dtmf(self, call_id: str, digit: str) -> None:
        """A digit the far end sent (RFC 4733), for status and (later) the UI."""
        call = self.calls.calls.get(call_id)
        if call is not None:
            call.dtmf_received.append(digit)
            log.info("call %s: DTMF %s received", call_id, digit)

    def _make_media(self) -> Any:
        """The media engine (RTP sockets, codecs, devices) for this config."""
        from firmware.runtime.media import MediaEngine

        return MediaEngine.from_config(self.config, self.ids)

    # ----- routing for the core (firmware.sip.ua.Network) ------------------------------------
    def route(self, uri: URI) -> Any:
        """Next-hop address for a URI (numeric hosts; names resolve at send time)."""
        return resolve_target(uri)

    def endpoint_for(self, dest: Any) -> LocalEndpoint:
        """How we appear towards ``dest`` (an Address we send to, or a Flow a request came on)."""
        user = self.config.accounts[0].user if self.config.accounts else "deskphone"
        if isinstance(dest, Flow):
            local = dest.local
            if dest.is_stream and not self.transports.has_listener(dest.transport):
                pass  # our own outbound connection: its local address is where we are
            elif local.host in ("0.0.0.0", "::"):
                local = Address(
                    local.transport, self.transports.outbound_ip(dest.remote.host), local.port
                )
            return _endpoint_at(local, user, dest.is_stream)
        for account_id, account_dest in self._account_dest.items():
            binding = self.ua.accounts.get(account_id)
            if account_dest == dest and binding is not None and binding.endpoint is not None:
                return binding.endpoint
        account = self.config.accounts[0] if self.config.accounts else None
        if account is not None and self.transports.has_listener(dest.transport):
            return self._endpoint(dest, account)
        family = socket.AF_INET6 if dest.ip_version == 6 else socket.AF_INET
        local = self.transports.local_address("udp", family)
        return _endpoint_at(local, user, dest.is_stream)

    def _account_info(self, account_id: str) -> AccountInfo:
        if not self._accounts and not self.config.accounts:
            # no account at all: every call is direct (incoming ones carry the default "line1",
            # and a transferee's new call is placed on the original call's account)
            return self._direct_account()
        account = self._accounts.get(account_id)
        binding = self.ua.accounts.get(account_id)
        if account is None or binding is None:
            raise ActionError(404, f"no enabled account {account_id!r}")
        if binding.endpoint is None:
            raise ActionError(409, f"account {account_id} has no connection to its registrar yet")
        dest = self._account_dest[account_id]
        return AccountInfo(
            aor=str(account.aor),
            display_name=account.display_name,
            domain=account.domain,
            contact=f"<{binding.endpoint.contact}>",
            dest=dest,
            digest=binding.registration.digest,
            secure=dest.transport == "tls" or account.registrar.scheme == "sips",
        )

    def _direct_account(self) -> AccountInfo:
        """No account configured: peer-to-peer calls to full SIP URIs (the demo, labs)."""
        family = socket.AF_INET
        local = self.transports.local_address("udp", family)
        host = local.host if local.host not in ("0.0.0.0", "::") else "127.0.0.1"
        local = Address("udp", host, local.port)
        endpoint = _endpoint_at(local, "deskphone", False)
        return AccountInfo(
            aor=f"sip:deskphone@{local.host_for_uri}",
            display_name=self.config.device.name,
            domain=local.host_for_uri,
            contact=f"<{endpoint.contact}>",
            dest=None,
            digest=None,
            secure=False,
        )

    # ----- actions (the action API) ----------------------------------------------------------
    def dial(self, number: str, account: str | None, hold: bool = True) -> dict[str, Any]:
        account_id = account or (self.config.accounts[0].id if self.config.accounts else "")
        now = time.monotonic()
        try:
            call = self.calls.dial(number, account_id, now, hold_others=hold)
        except RuntimeError as e:
            raise ActionError(409, str(e)) from None
        self._after_calls()
        return call.status(now)

    def call_action(self, call_id: str, action: str, body: dict[str, Any]) -> dict[str, Any]:
        now = time.monotonic()
        try:
            call = self.calls.get(call_id)
        except KeyError:
            raise ActionError(404, f"no call {call_id!r}") from None
        if call.state == "ended":
            raise ActionError(409, f"call {call_id} has ended")
        if action in ("answer", "resume", "swap", "leave"):
            self._line_action(call_id, action, now)
        elif action == "reject":
            self.calls.reject(
                call_id, now, int(body.get("status", 486)), str(body.get("reason", "Busy Here"))
            )
        elif action in ("hangup", "drop"):  # "drop": a party leaves the conference
            self.calls.hangup(call_id, now)
        elif action == "conference" and {"focus", "invite", "add", "move", "remove"} & set(body):
            self._network_conference(call_id, body, now)
        elif action == "conference":
            self._conference(call_id, body.get("with"), now)
        elif action == "hold":
            if not self.calls.hold(call_id, now):
                raise ActionError(409, f"call {call_id} cannot be held now ({call.state})")
        elif action == "transfer" and "target_call" in body:
            self._transfer_attended(call_id, body["target_call"], now)
        elif action == "transfer":
            target = body.get("target")
            if not isinstance(target, str) or not target.strip():
                raise ActionError(400, 'body needs "target": a number or a sip:/sips: URI')
            try:
                started = self.transfers.transfer(call_id, target.strip(), now)
            except SipParseError as e:
                raise ActionError(400, f"bad transfer target: {e.reason}") from None
            if not started:
                raise ActionError(409, f"call {call_id} cannot be transferred now ({call.state})")
        elif action == "dtmf":
            digits = body.get("digits")
            if (
                not isinstance(digits, str)
                or not digits
                or any(d not in "0123456789*#ABCDabcd" for d in digits)
            ):
                raise ActionError(400, 'body needs "digits": a string of 0-9, *, #, A-D')
            if call.state != "connected":
                raise ActionError(409, f"call {call_id} is not connected")
            try:
                self.media.send_dtmf(call_id, digits.upper())
            except (KeyError, ValueError) as e:
                raise ActionError(409, f"cannot send DTMF on call {call_id}: {e}") from None
        self._after_calls()
        return self.calls.get(call_id).status(now)

    def _line_action(self, call_id: str, action: str, now: float) -> None:
        """answer (answer-and-hold), resume/swap (hold the talking call first), leave a
        3-way conference (firmware/call/lines.py, conference_leave)."""
        call = self.calls.get(call_id)
        try:
            if action == "answer":
                if call.direction != "incoming" or call.state != "ringing":
                    raise ActionError(409, f"call {call_id} is not ringing")
                self.calls.answer(call_id, now)
            elif action == "resume" and not self.calls.resume(call_id, now):
                raise ActionError(409, f"call {call_id} is not held")
            elif action == "swap":
                self.lines.swap(call_id, now)
            elif action == "leave":
                self._leave(call_id, now)
        except LineBusy as e:
            raise ActionError(409, str(e)) from None

    def _leave(self, call_id: str, now: float) -> None:
        """Leave a 3-way conference: the two others are transferred to each other (REFER to
        this call's party with Replaces of the other call's dialog, RFC 5589 7 / RFC 5850 7);
        our calls end when the transfer succeeds (BYE from us, and from the target)."""
        members = self.conference.members or sorted(self.lines.conference)
        if call_id not in members or len(members) != 2:
            raise ActionError(409, f"call {call_id} is not in a 3-way conference")
        other = next(c for c in members if c != call_id)
        self.conference.dissolve()
        if not self.lines.hand_over(call_id, other, self.transfers, now):
            raise ActionError(409, f"calls {call_id} and {other} cannot be transferred now")

    def _network_conference(self, call_id: str, body: dict[str, Any], now: float) -> None:
        """{"focus": uri|true}: create a conference on a focus and send this call's party there;
        on the focus call, {"invite": number|uri}: ask the focus to call someone in; {"add":
        call id}: REFER that call's party to the conference; {"move": call id}: the focus takes
        that call over with Replaces (RFC 4579 5.5, 5.10)."""
        try:
            for key in ("add", "move"):
                if key in body:
                    other = body[key]
                    if not isinstance(other, str) or other not in self.calls.calls:
                        raise ActionError(404, f'"{key}": no call {other!r}')
                    if key == "add":
                        self.network_conferences.add(call_id, other, now)
                    else:
                        self.network_conferences.move(call_id, other, now)
                    return
            for key in ("invite", "remove"):
                if key in body:
                    target = body[key]
                    if not isinstance(target, str) or not target.strip():
                        raise ActionError(400, f'"{key}" must be a number or a sip:/sips: URI')
                    if key == "invite":
                        self.network_conferences.invite(call_id, target.strip(), now)
                    else:
                        self.network_conferences.remove(call_id, target.strip(), now)
                    return
            focus = body["focus"]
            if focus is True:
                focus = self.config.calls.conference_focus
                if focus is None:
                    raise ActionError(409, "no [calls] conference_focus is configured")
            if not isinstance(focus, str) or not focus.startswith(("sip:", "sips:")):
                raise ActionError(400, '"focus" must be a sip:/sips: URI (or true: the configured)')
            account = self.calls.get(call_id).account
            self.network_conferences.create(focus, account, now, parties=[call_id])
        except SipParseError as e:
            raise ActionError(400, f"bad conference URI: {e.reason}") from None
        except (ConferenceError, RuntimeError) as e:
            raise ActionError(409, str(e)) from None

    def _conference(self, call_id: str, other: Any, now: float) -> None:
        """Mix `call_id` and `other` (and any calls already conferenced) with the handset."""
        if not isinstance(other, str) or other == call_id:
            raise ActionError(400, 'body needs "with": the id of another call')
        ids = [call_id, other]
        if other not in self.calls.calls or self.calls.calls[other].state == "ended":
            raise ActionError(404, f"no call {other!r}")
        missing = [c for c in ids if c not in self.media.sessions]
        if missing:
            raise ActionError(409, f"call {missing[0]} has no media yet")
        try:
            self.calls.conference(ids, now)  # resumes held legs
        except RuntimeError as e:
            raise ActionError(409, str(e)) from None
        for c in ids:
            self.conference.add(c, self.media.sessions[c])

    def _transfer_attended(self, call_id: str, target_call: Any, now: float) -> None:
        """Attended transfer (RFC 5589 7): hand ``call_id`` to the consultation call's party."""
        if not isinstance(target_call, str) or target_call == call_id:
            raise ActionError(400, 'body needs "target_call": the id of the consultation call')
        if target_call not in self.calls.calls or self.calls.calls[target_call].state == "ended":
            raise ActionError(404, f"no call {target_call!r}")
        if not self.transfers.transfer_attended(call_id, target_call, now):
            state = self.calls.get(call_id).state
            raise ActionError(409, f"call {call_id} cannot be transferred now ({state})")

    def _after_calls(self) -> None:
        """Let the media engine follow the calls, then send what the core produced."""
        changes = self.calls.media_changes()
        # progress tones first: a tone that must stop frees the device before a session opens it
        self.tones.follow(self.calls.calls.values(), time.monotonic())
        for change in changes:
            self.media.apply(change)
        self.conference.sync(self.media.sessions)  # ended calls leave the conference
        for pair in self.joins.ready_to_mix(lambda c: c in self.media.sessions):
            for c in pair:  # an authorised Join: this phone mixes the three (local focus)
                self.conference.add(c, self.media.sessions[c])
        self.call_waiting.follow(
            self.calls.calls.values(), self.media.sessions, skip=self.conference.members
        )
        self.desk.follow_media(self.media.sessions)  # intercom warning beep
        self._pump()
        if getattr(self, "ui", None) is not None:
            self.ui.refresh()  # type: ignore[union-attr]

    # ----- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        listen = [Address(s.transport, s.host, s.port) for s in self.config.sip.listen]
        await self.transports.start(listen)
        log.info("SIP listening on %s", ", ".join(str(a) for a in self.transports.listeners))
        self._tasks = [
            asyncio.create_task(self._timer_loop(), name="sip-timer"),
            asyncio.create_task(self._sender(), name="sip-sender"),
        ]
        instance = self.state.instance_urn()
        for reg_id, account in enumerate(self.config.accounts, start=1):
            if account.enabled:
                await self._add_account(account, instance, reg_id)
        if self.ui is not None:
            await self.ui.start()
        self.desk.start()  # subscriptions once the accounts have a Contact
        if self.config.api.enabled and self.config.api.token:
            self.api = ApiServer(
                self.config.api.host,
                self.config.api.port,
                self.config.api.token,
                self.status,
                actions=self,
            )
            await self.api.start()
        self._pump()

    async def _add_account(self, account: AccountConfig, instance: str, reg_id: int) -> None:
        target = account.outbound_proxy or account.registrar
        dest = resolve_target(target)
        if dest.ip_version is None:
            infos = await asyncio.get_running_loop().getaddrinfo(
                dest.host, dest.port, type=socket.SOCK_DGRAM
            )
            dest = Address(dest.transport, str(infos[0][4][0]), dest.port)
        self._account_dest[account.id] = dest
        # The PBX password answers only the account realm (configured or learned from the
        # registrar); peer phones' challenges get their own secret (threat-model "Transitive
        # credential leak", firmware/sip/auth.py).
        creds = [DigestCredentials(account.auth_user, account.password)] + [
            DigestCredentials(peer.user, peer.password, peer.realm)
            for peer in account.peer_credentials
        ]
        registration = Registration(
            account=account.id,
            aor=account.aor,
            registrar=account.registrar,
            ids=self.ids,
            instance_id=instance,
            digest=DigestClient(
                creds,
                self.ids,
                allow_md5=self.config.sip.allow_md5,
                scoped=True,
                account_realm=account.realm,
            ),
            reg_id=reg_id,
            expires=account.expires,
            user_agent=self.config.sip.user_agent,
            allow=self.ua.allow,
            base_all_failed=self.config.sip.retry_base,
            base_some_ok=self.config.sip.retry_base * 3,
        )
        self._accounts[account.id] = account
        if self._uses_connection(dest):
            # No listener for this transport: we appear as the connection's local address, and
            # the registrar reaches us back over that same connection (RFC 5626 style).
            self.ua.add_account(account.id, registration, dest, None, time.monotonic())
            self._spawn(self._connect_account(account.id, first=True))
        else:
            endpoint = self._endpoint(dest, account)
            self.ua.add_account(account.id, registration, dest, endpoint, time.monotonic())

    def _uses_connection(self, dest: Address) -> bool:
        return dest.is_stream and not self.transports.has_listener(dest.transport)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _connect_account(self, account_id: str, *, first: bool) -> None:
        """Open the account's connection, then (re-)register over it; retry with backoff."""
        dest = self._account_dest[account_id]
        binding = self.ua.accounts[account_id]
        failures = 0
        while True:
            try:
                flow = await self.transports.connect(dest)
                break
            except (TransportError, OSError) as e:
                failures += 1
                binding.registration.unreachable(
                    time.monotonic(), f"cannot connect: {e}", permanent="certificate" in str(e)
                )
                wait = binding.registration.backoff(failures)
                log.warning(
                    "%s: cannot connect to %s (%s); retrying in %.1f s", account_id, dest, e, wait
                )
                await asyncio.sleep(wait)  # reconnect backoff (RFC 5626 4.5), not a poll
        endpoint = self._endpoint(dest, self._accounts[account_id], local=flow.local)
        now = time.monotonic()
        if first:
            self.ua.set_endpoint(account_id, endpoint, now)
        else:
            self.ua.rebind_account(account_id, dest, endpoint, now)
        self._pump()

    def _endpoint(
        self, dest: Address, account: AccountConfig, local: Address | None = None
    ) -> LocalEndpoint:
        """Via sent-by and Contact towards ``dest``: our listener, or the connection we opened."""
        if local is None:
            family = socket.AF_INET6 if dest.ip_version == 6 else socket.AF_INET
            local = self.transports.local_address(dest.transport, family)
        host = local.host
        if host in ("0.0.0.0", "::"):
            host = self.transports.outbound_ip(dest.host)
        local = Address(local.transport, host, local.port)
        params: dict[str, str | None] = {}
        if dest.transport != "udp":
            params["transport"] = dest.transport
        contact = SipURI(
            scheme="sip",
            user=account.user,
            password=None,
            host=local.host_for_uri,
            port=local.port,
            params=params,
            headers={},
        )
        return LocalEndpoint(
            via_transport=local.via_transport,
            sent_by=local.sent_by,
            contact=contact,
            reliable=dest.is_stream,
        )

    async def stop(self) -> None:
        """Hang up, un-REGISTER (waiting a bounded time for the answers), then close everything."""
        now = time.monotonic()
        for call in self.calls.active_calls():
            self.calls.hangup(call.id, now)
        await self.desk.stop()  # un-SUBSCRIBE (Expires: 0)
        self._after_calls()
        self.ua.stop(now)
        self._pump()
        deadline = time.monotonic() + SHUTDOWN_GRACE
        while self.ua.busy() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)  # bounded wait for un-REGISTER answers at shutdown only
        await self._out.join()
        tasks = [*self._tasks, *self._background]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.api is not None:
            await self.api.stop()
        if self.ui is not None:
            await self.ui.stop()
        await self.tones.close()
        await self.media.close()
        await self.transports.stop()

    # ----- the loop ------------------------------------------------------------------------
    def _pump(self) -> None:
        """Queue what the core wants sent and let the timer loop re-arm."""
        for out in self.ua.drain():
            self._out.put_nowait((out.data, out.dest))
        self._wake.set()

    async def _timer_loop(self) -> None:
        while True:
            self._wake.clear()
            deadline = self.ua.get_timer()
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel that races the
            # wake-up, and stop() then waits forever for this task (seen on config restarts)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            now = time.monotonic()
            deadline = self.ua.get_timer()
            if deadline is not None and deadline <= now:
                try:
                    self.ua.handle_timer(now)
                    self.calls.process(now)
                except Exception:  # a core bug must not stop every future timer
                    log.exception("internal error while handling SIP timers")
                self._after_calls()

    async def _sender(self) -> None:
        """Send in order; a TCP/TLS connect happens here, outside the core."""
        while True:
            data, dest = await self._out.get()
            try:
                flow = await self.transports.send(data, dest)
                if log.isEnabledFor(logging.DEBUG):
                    log.debug(
                        "sent %d bytes to %s: %s",
                        len(data),
                        flow,
                        data.split(b"\r\n", 1)[0].decode(errors="replace"),
                    )
                self._maybe_keepalive(flow, dest)
            except (TransportError, OSError) as e:
                log.warning("cannot send to %s: %s", dest, e)
                self.ua.transport_failed(dest, time.monotonic())
                self._pump()
            finally:
                self._out.task_done()

    def _maybe_keepalive(self, flow: Flow, dest: Any) -> None:
        """CRLF keep-alives on the connections our registrations use (RFC 5626 4.4.1)."""
        if (
            flow.is_stream
            and isinstance(dest, Address)
            and flow not in self._keepalive_flows
            and dest in self._account_dest.values()
        ):
            self._keepalive_flows.add(flow)
            self.transports.start_keepalive(flow, self.config.sip.keepalive_interval)

    # ----- transport callbacks -------------------------------------------------------------
    def _on_message(self, message: SipRequest | SipResponse, flow: Flow, now: float) -> None:
        now = time.monotonic()
        try:
            self.ua.receive(message, flow, reliable=flow.is_stream, now=now)
            self.calls.process(now)
        except Exception:  # a core bug on one message must not take the phone down
            log.exception("internal error while handling a message from %s", flow)
        self._after_calls()

    def _on_bad_message(self, error: SipParseError, raw: bytes, flow: Flow) -> None:
        """Answer a request whose head parsed but whose framing did not with a stateless 400
        (RFC 4475 clerr/ncl/mcl01); anything else cannot be addressed and is dropped."""
        request = error.message
        if isinstance(request, SipRequest) and request.method != "ACK":
            try:
                response = make_response(
                    request,
                    error.status,
                    error.reason,
                    to_tag=None if request.to.tag else self.ids.token(8),
                )
                self.transports.send_on_flow(flow, response.serialize())
                log.info(
                    "answered %d to a malformed request from %s: %s",
                    error.status,
                    flow,
                    error.reason,
                )
                return
            except (SipParseError, TransportError, OSError) as e:
                log.debug("cannot answer the malformed request: %s", e)
        log.info("dropped unparseable message from %s: %s", flow, error.reason)

    def _on_flow_failed(self, flow: Flow) -> None:
        self._keepalive_flows.discard(flow)
        now = time.monotonic()
        for account_id, dest in self._account_dest.items():
            if (
                dest.transport == flow.transport
                and dest.port == flow.remote.port
                and dest.host == flow.remote.host
            ):
                log.warning(
                    "flow %s to the registrar of %s failed; re-registering", flow, account_id
                )
                self.ua.transport_failed(dest, now)
                binding = self.ua.accounts.get(account_id)
                if binding is None:
                    continue
                if self._uses_connection(dest):
                    self._spawn(self._connect_account(account_id, first=False))
                elif binding.endpoint is not None:
                    self.ua.rebind_account(account_id, dest, binding.endpoint, now)
        self._pump()

    # ----- status ----------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        regs = []
        for item in self.ua.registration_status():
            item = dict(item)
            for key in ("expires_at", "next_attempt"):
                item[key] = wall_time(item.get(key))
            regs.append(item)
        return {
            "device": {
                "name": self.config.device.name,
                "uptime": round(time.time() - self.started_at, 1),
            },
            "registrations": regs,
            "calls": [self._call_status(c) for c in self.calls.calls.values()],
            "conference": self.conference.members,
            "lines": self.lines.status(),
            **self.desk.status(),  # blf, mwi, dnd, forward
            **(self.ui.status() if getattr(self, "ui", None) else {}),  # type: ignore[union-attr]
        }

    # desk features (firmware/runtime/desk_features.py): the UI's DND/forward/BLF keys
    def blf_press(self, key: str) -> dict[str, Any]:
        return self.desk.blf_press(key)

    def set_dnd(self, enabled: bool) -> dict[str, Any]:
        return self.desk.set_dnd(bool(enabled))

    def set_forward(self, target: str | None) -> dict[str, Any]:
        """Unconditional forwarding to ``target`` (None switches it off)."""
        return self.desk.set_forward({"always": target})

    def press_key(self, key: str, long: bool) -> dict[str, Any]:
        """POST /api/keys/{key}: a key press through the UI; answers with screen and LEDs."""
        if self.ui is None:
            raise ActionError(409, "this phone has no UI")
        self.ui.press(key, long)
        return self.ui.status()

    def set_hook(self, offhook: bool) -> dict[str, Any]:
        """POST /api/hook: lift or put down the handset."""
        if self.ui is None:
            raise ActionError(409, "this phone has no UI")
        self.ui.hook(offhook)
        return self.ui.status()

    def _call_status(self, call: Any) -> dict[str, Any]:
        item = call.status(time.monotonic())
        item["media"] = self.media.stats(call.id)
        return item


async def run_phone(config: PhoneConfig) -> int:
    """Run until SIGTERM/SIGINT, then un-register and exit 0."""
    phone = Phone(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await phone.start()
    if phone.api is not None and phone.api.bound is not None:
        log.info("action API on http://%s:%d/api/status", *phone.api.bound)
    await stop.wait()
    log.info("shutting down: un-registering")
    await phone.stop()
    return 0


def _codec_specs(names: tuple[str, ...]) -> list[CodecSpec]:
    """SDP codec entries for the configured codec names, in preference order."""
    table = {
        "PCMU": CodecSpec("PCMU", 8000, 0),
        "PCMA": CodecSpec("PCMA", 8000, 8),
        "G722": CodecSpec("G722", 8000, 9),
        "opus": CodecSpec("opus", 48000, 111, channels=2, fmtp="useinbandfec=1"),
    }
    return [table[n] for n in names if n in table]


def _endpoint_at(local: Address, user: str, reliable: bool) -> LocalEndpoint:
    params: dict[str, str | None] = {}
    if local.transport != "udp":
        params["transport"] = local.transport
    contact = SipURI(
        scheme="sip",
        user=user,
        password=None,
        host=local.host_for_uri,
        port=local.port,
        params=params,
        headers={},
    )
    return LocalEndpoint(
        via_transport=local.via_transport, sent_by=local.sent_by, contact=contact, reliable=reliable
    )
