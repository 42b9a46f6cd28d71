"""The user agent core (RFC 3261 sections 8 and 12 for the UAS side): sans-IO.

It sits on the transaction layer: incoming requests are validated and answered (OPTIONS, 501
for unknown methods, 405 for REGISTER, 481 for unknown dialogs, 482 for merged requests), and
account registrations are driven through client transactions. Method handling is a table
(`self.handlers`), so later features (calls, REFER, SUBSCRIBE...) register a handler instead of
growing an if/elif chain; Allow is derived from that table so it never lies.

The runtime feeds `receive()` / `handle_timer()` and sends what `drain()` returns.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Protocol

from firmware.sip.dialog import DialogId
from firmware.sip.errors import SipParseError
from firmware.sip.headers import parse_name_addr
from firmware.sip.ids import IdSource, new_branch, new_tag
from firmware.sip.message import SipRequest, SipResponse, make_response
from firmware.sip.registration import Registration
from firmware.sip.transaction import (
    AckFor2xx,
    ClientTransaction,
    NewRequest,
    Outgoing,
    ResponseReceived,
    ServerTransaction,
    StrayResponse,
    Timeout,
    Timers,
    TransactionLayer,
    TransportError,
    TxState,
)
from firmware.sip.uri import URI, SipURI
from firmware.sip.validate import validate_request, validate_response

log = logging.getLogger(__name__)

# Option tags we implement (sent in Supported, accepted in Require).
SUPPORTED: tuple[str, ...] = (
    "path",
    "outbound",
    "gruu",
    "timer",
    "replaces",
    "join",  # RFC 3911 (firmware/call/join.py)
    "tdialog",  # RFC 4538 Target-Dialog (firmware/call/refer.py)
    "norefersub",  # RFC 4488 Refer-Sub: false is honoured
)
ACCEPT = "application/sdp"
NOT_ALLOWED = frozenset({"REGISTER"})  # recognised, answered 405, never advertised
TRANSPORT_FAILURE = "Service Unavailable (transport failure)"
MERGE_WINDOW = 32.0  # seconds a request's identity is remembered for merge detection (Timer J)


@dataclass(frozen=True)
class LocalEndpoint:
    """How this phone appears on one transport: what goes in Via and Contact."""

    via_transport: str  # "UDP", "TCP", "TLS"
    sent_by: str  # "host:port" with IPv6 in brackets
    contact: SipURI
    reliable: bool


@dataclass
class AccountBinding:
    """A registration plus where its requests go and how we appear there."""

    registration: Registration
    dest: Hashable
    endpoint: LocalEndpoint | None  # None until the runtime knows (e.g. TLS still connecting)


Handler = Callable[[Any, SipRequest, float], None]


class Network(Protocol):
    """What the runtime tells the core about routing (it owns DNS and sockets)."""

    def route(self, uri: URI) -> Hashable:
        """The destination (opaque to the core) for a next-hop URI."""
        ...

    def endpoint_for(self, dest: Hashable) -> LocalEndpoint:
        """How we appear (Via sent-by, Contact) towards ``dest`` (an address or a flow)."""
        ...


class TransactionOwner(Protocol):
    """Whoever sent a request hears about its responses and its failure."""

    def on_response(self, tx: ClientTransaction, response: SipResponse, now: float) -> None: ...

    def on_timeout(self, tx: ClientTransaction, now: float) -> None: ...


class _RegistrationOwner:
    """Adapts a `Registration` to the transaction-owner interface."""

    def __init__(self, binding: AccountBinding) -> None:
        self.binding = binding

    def on_response(self, tx: ClientTransaction, response: SipResponse, now: float) -> None:
        if response.status >= 200:
            self.binding.registration.handle_response(response, now)

    def on_timeout(self, tx: ClientTransaction, now: float) -> None:
        # Timer B/F: the REGISTER got no answer (RFC 3261 8.1.3.1: as a 408).
        self.binding.registration.handle_timeout(now, tx.request)

    def on_transport_error(self, tx: ClientTransaction, now: float) -> None:
        # 8.1.3.1: a transport failure counts as a 503, not as a timeout, so the status
        # shows that the registrar could not be reached rather than that it was silent.
        failed = make_response(tx.request, 503, TRANSPORT_FAILURE)
        self.binding.registration.handle_response(failed, now)


@dataclass
class _MergeEntry:
    branch: str
    expires: float


@dataclass
class UserAgent:
    """UA core: validation, method dispatch and registration plumbing over the transaction layer."""

    ids: IdSource
    user_agent: str = "deskphone/0.1"
    timers: Timers = field(default_factory=Timers)

    def __post_init__(self) -> None:
        self.transactions = TransactionLayer(self.timers)
        self.accounts: dict[str, AccountBinding] = {}
        self._tx_owner: dict[int, Any] = {}
        self._dialogs: dict[DialogId, Any] = {}
        self._invite_usage: dict[int, tuple[ServerTransaction, Any]] = {}
        self.network: Network | None = None
        self._merge: dict[tuple[str, str, int, str], _MergeEntry] = {}
        # Sans-IO services with their own timers (subscriptions), polled like dialog usages.
        self.services: list[Any] = []
        # In-dialog requests of no bound dialog that a usage may still claim (a NOTIFY that
        # overtakes the SUBSCRIBE's 2xx, RFC 6665 4.1.2.4); others get 481.
        self.unmatched: dict[str, Handler] = {}
        self.handlers: dict[str, Handler] = {
            "OPTIONS": self._on_options,
            "REGISTER": self._on_register,
            "INVITE": self._on_invite,
            "BYE": self._on_unknown_dialog,
            "CANCEL": self._on_cancel,
            "ACK": self._on_ack,
            "NOTIFY": self._on_unknown_dialog,
        }

    # ----- accounts -------------------------------------------------------------------------
    def add_account(
        self,
        name: str,
        registration: Registration,
        dest: Hashable,
        endpoint: LocalEndpoint | None,
        now: float,
    ) -> None:
        """Start registering; with no endpoint yet the REGISTER waits for `set_endpoint`."""
        binding = AccountBinding(registration, dest, endpoint)
        self.accounts[name] = binding
        if endpoint is not None:
            registration.set_contact(endpoint.contact)
        registration.start(now)
        self._pump_registrations(now)

    def set_endpoint(self, name: str, endpoint: LocalEndpoint, now: float) -> None:
        """The runtime learned how we appear towards the account's registrar."""
        binding = self.accounts[name]
        binding.endpoint = endpoint
        binding.registration.set_contact(endpoint.contact)
        self._pump_registrations(now)

    def rebind_account(
        self, name: str, dest: Hashable, endpoint: LocalEndpoint, now: float
    ) -> None:
        """A flow failed: re-register on a new flow (RFC 5626 section 4.4.1)."""
        binding = self.accounts[name]
        binding.dest, binding.endpoint = dest, endpoint
        binding.registration.set_contact(endpoint.contact)
        binding.registration.flow_failed(now)
        self._pump_registrations(now)

    def transport_failed(self, dest: Hashable, now: float) -> None:
        """The runtime could not send to ``dest``: fail the transactions using it."""
        for event in self.transactions.transport_failed(dest, now):
            self._dispatch(event, now)
        self._pump_registrations(now)

    def stop(self, now: float) -> None:
        """Shutdown: un-REGISTER every account."""
        for binding in self.accounts.values():
            binding.registration.stop(now)
        self._pump_registrations(now)

    def busy(self) -> bool:
        """True while our client transactions (e.g. the un-REGISTER) still await a final answer.

        An INVITE answered 2xx stays owned for Timer M (RFC 6026) only to absorb retransmitted
        2xx: waiting for it at shutdown would just stall every stop by the whole grace period.
        """
        waiting = (TxState.CALLING, TxState.TRYING, TxState.PROCEEDING)
        return any(
            id(tx) in self._tx_owner and tx.state in waiting
            for tx in self.transactions.client_transactions
        )

    def _pump_registrations(self, now: float) -> None:
        for binding in self.accounts.values():
            for request in binding.registration.take_requests():
                self._send_request(binding, request, now)

    def _send_request(self, binding: AccountBinding, request: SipRequest, now: float) -> None:
        ep = binding.endpoint
        if ep is None:
            raise RuntimeError("request for an account whose endpoint is not known yet")
        # rport (RFC 3581) lets the registrar answer through NATs to the port we sent from.
        request.headers.remove("Via")
        request.headers.insert(
            0, "Via", f"SIP/2.0/{ep.via_transport} {ep.sent_by};branch={new_branch(self.ids)};rport"
        )
        tx = self.transactions.send_request(request, binding.dest, reliable=ep.reliable, now=now)
        self._tx_owner[id(tx)] = _RegistrationOwner(binding)

    # ----- requests of other usages (calls, subscriptions...) ---------------------------------
    def _stamp_via(self, request: SipRequest, ep: LocalEndpoint) -> None:
        request.headers.remove("Via")
        request.headers.insert(
            0, "Via", f"SIP/2.0/{ep.via_transport} {ep.sent_by};branch={new_branch(self.ids)};rport"
        )

    def next_hop(self, request: SipRequest) -> URI:
        """12.2.1.1 / 16.12: the first Route (loose routing) or else the Request-URI."""
        routes = request.headers.get_all("Route")
        if routes:
            return parse_name_addr(routes[0]).uri
        return request.uri

    def _network(self) -> Network:
        if self.network is None:
            raise RuntimeError("UserAgent.network is not set: the runtime must provide routing")
        return self.network

    def endpoint_for(self, dest: Hashable) -> LocalEndpoint:
        return self._network().endpoint_for(dest)

    def send_request(
        self, request: SipRequest, owner: Any, now: float, *, dest: Hashable | None = None
    ) -> ClientTransaction:
        """Send a request through a new client transaction; ``owner`` hears the outcome."""
        if dest is None:
            dest = self._network().route(self.next_hop(request))
        ep = self.endpoint_for(dest)
        if request.method != "CANCEL":  # 9.1: a CANCEL keeps the INVITE's Via (and branch)
            self._stamp_via(request, ep)
        tx = self.transactions.send_request(request, dest, reliable=ep.reliable, now=now)
        self._tx_owner[id(tx)] = owner
        return tx

    def send_ack(self, ack: SipRequest, now: float) -> None:
        """The ACK for a 2xx: outside any transaction, routed like an in-dialog request."""
        dest = self._network().route(self.next_hop(ack))
        self._stamp_via(ack, self.endpoint_for(dest))
        self.transactions.send_stateless(ack, dest)

    def send_response(
        self, server_tx: ServerTransaction, response: SipResponse, now: float
    ) -> None:
        """A response built by a usage (which chose its own To tag)."""
        self._respond(server_tx, response, now, tag=False)

    def bind_dialog(self, dialog_id: DialogId, usage: Any) -> None:
        """Route the dialog's requests (and 2xx ACKs) to ``usage``."""
        self._dialogs[dialog_id] = usage

    def unbind_dialog(self, dialog_id: DialogId) -> None:
        self._dialogs.pop(dialog_id, None)

    def watch_invite(self, server_tx: ServerTransaction, usage: Any) -> None:
        """A CANCEL for this INVITE goes to ``usage.on_cancel(now)``."""
        self._invite_usage[id(server_tx)] = (server_tx, usage)

    def account_for_request(self, request: SipRequest) -> str | None:
        """The account an incoming request is for, by the Request-URI's user part."""
        user = getattr(request.uri, "user", None)
        for name, binding in self.accounts.items():
            if binding.registration.aor.user == user:
                return name
        return None

    def _usages(self) -> list[Any]:
        seen: dict[int, Any] = {}
        for usage in self._dialogs.values():
            seen[id(usage)] = usage
        for _tx, usage in self._invite_usage.values():
            seen[id(usage)] = usage
        for service in self.services:
            seen[id(service)] = service
        return [u for u in seen.values() if hasattr(u, "get_timer")]

    # ----- inbound ----------------------------------------------------------------------------
    def receive(
        self, message: SipRequest | SipResponse, source: Hashable, *, reliable: bool, now: float
    ) -> None:
        """Feed one parsed message from the network."""
        if isinstance(message, SipResponse):
            defect = validate_response(message)
            if defect is not None:
                # 8.1.3.3: discard it before it reaches a client transaction, which would
                # otherwise complete on a response the TU cannot read (and stop retrying).
                log.warning("discarding malformed response from %r: %s", source, defect)
                return
        for event in self.transactions.receive(message, source, reliable=reliable, now=now):
            self._dispatch(event, now)
        self._pump_registrations(now)

    def handle_timer(self, now: float) -> None:
        for event in self.transactions.handle_timer(now):
            self._dispatch(event, now)
        for binding in self.accounts.values():
            binding.registration.handle_timer(now)
        for usage in self._usages():
            deadline = usage.get_timer()
            if deadline is not None and deadline <= now:
                usage.handle_timer(now)
        for key in [
            k for k, (tx, _u) in self._invite_usage.items() if tx.state.value == "terminated"
        ]:
            del self._invite_usage[key]
        self._expire_merge(now)
        self._pump_registrations(now)

    def get_timer(self) -> float | None:
        deadlines = [t for t in [self.transactions.get_timer()] if t is not None]
        deadlines += [
            t for b in self.accounts.values() if (t := b.registration.get_timer()) is not None
        ]
        deadlines += [t for u in self._usages() if (t := u.get_timer()) is not None]
        if self._merge:
            deadlines.append(min(e.expires for e in self._merge.values()))
        return min(deadlines) if deadlines else None

    def drain(self) -> list[Outgoing]:
        return self.transactions.drain()

    def _dispatch(self, event: object, now: float) -> None:
        if isinstance(event, NewRequest):
            self._on_request(event.server_tx, event.request, now)
        elif isinstance(event, ResponseReceived):
            tx = event.client_tx
            owner = self._tx_owner.get(id(tx))
            if owner is None:
                return
            if event.response.status >= 200 and not (
                tx.method == "INVITE" and event.response.status < 300
            ):
                del self._tx_owner[id(tx)]
            owner.on_response(tx, event.response, now)
            if tx.state.value == "terminated":
                self._tx_owner.pop(id(tx), None)
        elif isinstance(event, Timeout):
            owner = self._tx_owner.pop(id(event.tx), None)
            if owner is not None and isinstance(event.tx, ClientTransaction):
                owner.on_timeout(event.tx, now)
        elif isinstance(event, TransportError):
            owner = self._tx_owner.pop(id(event.tx), None)
            if owner is not None and isinstance(event.tx, ClientTransaction):
                handler = getattr(owner, "on_transport_error", owner.on_timeout)
                handler(event.tx, now)
        elif isinstance(event, AckFor2xx):
            request = event.request
            try:
                key = DialogId(request.call_id, request.to.tag or "", request.from_.tag)
            except SipParseError as e:
                log.info("malformed ACK dropped: %s", e.reason)
                return
            usage = self._dialogs.get(key)
            if usage is not None:
                usage.on_ack(request, now)
            else:
                log.debug("ACK for 2xx with no dialog ignored")
        elif isinstance(event, StrayResponse):
            response = event.response
            try:
                key = DialogId(response.call_id, response.from_.tag or "", response.to.tag)
            except SipParseError:
                return
            usage = self._dialogs.get(key)
            if usage is not None and hasattr(usage, "on_stray_response"):
                usage.on_stray_response(response, now)
            else:
                log.debug("stray response %s ignored", response.status)

    def _on_request(self, server_tx: Any, request: SipRequest, now: float) -> None:
        try:
            # Unknown methods get 501 before any header check (RFC 4475 3.1.2.18).
            error = validate_request(request, set(SUPPORTED), methods=set(self.handlers))
            if error is not None and error.status == 501:
                error.headers.set("Allow", self.allow())
        except SipParseError as e:
            error = make_response(request, e.status, e.reason)
        if error is not None:
            if request.method != "ACK":
                self._respond(server_tx, error, now, tag=True)
            return
        if self._is_merged(request, now):
            self.respond(server_tx, request, 482, "Loop Detected", now)
            return
        handler = self.handlers.get(request.method)
        if handler is None:
            self.respond(server_tx, request, 501, "Not Implemented", now, [("Allow", self.allow())])
            return
        if request.to.tag is not None and request.method not in ("ACK", "CANCEL"):
            usage = self._dialogs.get(DialogId(request.call_id, request.to.tag, request.from_.tag))
            if usage is None and request.method in self.unmatched:
                self.unmatched[request.method](server_tx, request, now)
            elif usage is None:
                self.respond(server_tx, request, 481, "Call/Transaction Does Not Exist", now)
            else:
                usage.on_request(server_tx, request, now)
            return
        handler(server_tx, request, now)

    def _is_merged(self, request: SipRequest, now: float) -> bool:
        """RFC 3261 8.2.2.2: same From tag, Call-ID and CSeq on a new branch = merged by a fork."""
        if request.to.tag is not None or request.method in ("ACK", "CANCEL"):
            return False
        key = (request.from_.tag or "", request.call_id, request.cseq.number, request.cseq.method)
        branch = request.top_via.branch or ""
        entry = self._merge.get(key)
        if entry is not None and entry.branch != branch and entry.expires > now:
            return True
        self._merge[key] = _MergeEntry(branch, now + MERGE_WINDOW)
        return False

    def _expire_merge(self, now: float) -> None:
        for key in [k for k, e in self._merge.items() if e.expires <= now]:
            del self._merge[key]

    # ----- responses --------------------------------------------------------------------------
    def allow(self) -> str:
        # REGISTER has a handler only to refuse it with 405; it must not be advertised.
        return ", ".join(m for m in self.handlers if m not in NOT_ALLOWED)

    def respond(
        self,
        server_tx: Any,
        request: SipRequest,
        status: int,
        reason: str,
        now: float,
        headers: list[tuple[str, str]] | None = None,
    ) -> SipResponse:
        response = make_response(request, status, reason)
        for name, value in headers or []:
            response.headers.add(name, value)
        self._respond(server_tx, response, now, tag=True)
        return response

    def _respond(self, server_tx: Any, response: SipResponse, now: float, *, tag: bool) -> None:
        if tag and response.status > 100:
            self._ensure_to_tag(response, server_tx)
        if "Server" not in response.headers:
            response.headers.add("Server", self.user_agent)
        self.transactions.respond(server_tx, response, now)

    def _ensure_to_tag(self, response: SipResponse, server_tx: Any) -> None:
        """Give a final/provisional response our To tag (RFC 3261 8.2.6.2).

        The To header may be the malformed part of a request being refused with 400, so the
        check must not depend on parsing it successfully.
        """
        to = response.headers.get("To")
        if to is None:
            return
        try:
            has_tag = response.to.tag is not None
        except SipParseError:
            has_tag = ";tag=" in to.replace(" ", "").lower()
        if not has_tag:
            response.headers.set("To", f"{to};tag={self._to_tag_for(server_tx)}")

    def _to_tag_for(self, server_tx: Any) -> str:
        """The tag already given to this request's earlier responses, else a new one.

        8.2.6.2: all responses to one request (100 aside) carry the same To tag, or a 180
        and the 200/487 that follows it would look like two different dialogs.
        """
        previous = server_tx.last_response if isinstance(server_tx, ServerTransaction) else None
        if previous is not None and previous.status > 100:
            try:
                tag = previous.to.tag
            except SipParseError:
                tag = None
            if tag:
                return tag
        return new_tag(self.ids)

    # ----- method handlers ---------------------------------------------------------------------
    def _on_options(self, server_tx: Any, request: SipRequest, now: float) -> None:
        self.respond(
            server_tx,
            request,
            200,
            "OK",
            now,
            [
                ("Allow", self.allow()),
                ("Accept", ACCEPT),
                ("Accept-Encoding", "identity"),
                ("Accept-Language", "en"),
                ("Supported", ", ".join(SUPPORTED)),
            ],
        )

    def _on_register(self, server_tx: Any, request: SipRequest, now: float) -> None:
        # A phone is not a registrar (RFC 3261 10.3 / 21.4.6).
        self.respond(server_tx, request, 405, "Method Not Allowed", now, [("Allow", self.allow())])

    def _on_invite(self, server_tx: Any, request: SipRequest, now: float) -> None:
        # Calls arrive with the call-control layer; until a handler replaces this one the
        # phone honestly says it cannot take the call.
        self.respond(server_tx, request, 480, "Temporarily Unavailable", now)

    def _on_unknown_dialog(self, server_tx: Any, request: SipRequest, now: float) -> None:
        self.respond(server_tx, request, 481, "Call/Transaction Does Not Exist", now)

    def _on_cancel(self, server_tx: Any, request: SipRequest, now: float) -> None:
        invite_tx = self.transactions.find_invite_for_cancel(request)
        if invite_tx is None:
            self.respond(server_tx, request, 481, "Call/Transaction Does Not Exist", now)
            return
        self.respond(server_tx, request, 200, "OK", now)
        watched = self._invite_usage.pop(id(invite_tx), None)
        if watched is not None and watched[1].on_cancel(now):
            return
        cancelled = invite_tx.request
        self.respond(invite_tx, cancelled, 487, "Request Terminated", now)

    def _on_ack(self, server_tx: Any, request: SipRequest, now: float) -> None:
        """ACKs that reach the TU with no dialog are simply absorbed."""

    # ----- status -----------------------------------------------------------------------------
    def registration_status(self) -> list[dict[str, Any]]:
        return [b.registration.status() for b in self.accounts.values()]
