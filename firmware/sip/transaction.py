"""SIP transactions (RFC 3261 section 17, with the RFC 6026 "Accepted" state), sans-IO.

The transaction layer is where reliability lives: it retransmits requests and final responses
over unreliable transports, absorbs retransmissions from the peer, builds the ACK for non-2xx
final responses, and tells the transaction user (the UA core) when a transaction timed out.

It is driven from outside: `receive()` for parsed messages, `handle_timer(now)` when the
deadline from `get_timer()` has passed, `transport_failed()` when a send failed. Whatever has to
go on the wire is collected and handed out by `drain()`. Destinations and sources are opaque
hashable values chosen by the runtime (for example ``("udp", "192.0.2.1", 5060)``); they are
stored and handed back, never interpreted.

RFC 6026 replaces RFC 3261's "2xx terminates the INVITE transaction": both INVITE state machines
stay in an Accepted state for 64*T1 so that 2xx retransmissions reach the UAC's TU (which must
re-ACK them) and INVITE retransmissions at the UAS are absorbed instead of starting a new call.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from firmware.sip.errors import SipParseError
from firmware.sip.ids import BRANCH_MAGIC
from firmware.sip.message import (
    SipMessage,
    SipRequest,
    SipResponse,
    make_request,
    make_response,
)

log = logging.getLogger(__name__)

__all__ = [
    "AckFor2xx",
    "ClientTransaction",
    "Event",
    "InviteClientTransaction",
    "InviteServerTransaction",
    "NewRequest",
    "NonInviteClientTransaction",
    "NonInviteServerTransaction",
    "Outgoing",
    "ResponseReceived",
    "ServerTransaction",
    "StrayResponse",
    "Timeout",
    "Timers",
    "Transaction",
    "TransactionLayer",
    "TransportError",
    "TxState",
    "build_ack_for_non2xx",
    "build_cancel",
]


# --------------------------------------------------------------------------------------------
# Timers (RFC 3261 table 4, RFC 6026 timers L and M)
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Timers:
    """The three base values; every transaction timer is derived from them.

    Deployments on lossy links or with slow peers tune T1/T2/T4 only, so the derived timers
    keep the RFC's proportions. Timers that the RFC sets to zero on reliable transports take a
    ``reliable`` flag.
    """

    t1: float = 0.5  # RTT estimate
    t2: float = 4.0  # cap on non-INVITE request / INVITE response retransmit interval
    t4: float = 5.0  # how long a message may linger in the network
    trying_delay: float = 0.2  # 17.2.1: INVITE server sends 100 Trying if the TU is silent

    @property
    def a(self) -> float:
        """Initial INVITE retransmit interval (doubles without cap), unreliable only."""
        return self.t1

    @property
    def b(self) -> float:
        """INVITE transaction timeout in Calling."""
        return 64 * self.t1

    def d(self, reliable: bool) -> float:
        """Wait time for response retransmissions in INVITE client Completed (>32 s)."""
        return 0.0 if reliable else 32.0

    @property
    def e(self) -> float:
        """Initial non-INVITE retransmit interval (doubles, capped at T2), unreliable only."""
        return self.t1

    @property
    def f(self) -> float:
        """Non-INVITE transaction timeout."""
        return 64 * self.t1

    @property
    def g(self) -> float:
        """Initial INVITE final response retransmit interval (doubles, capped at T2)."""
        return self.t1

    @property
    def h(self) -> float:
        """Wait time for ACK receipt in INVITE server Completed."""
        return 64 * self.t1

    def i(self, reliable: bool) -> float:
        """Wait time for ACK retransmissions in INVITE server Confirmed."""
        return 0.0 if reliable else self.t4

    def j(self, reliable: bool) -> float:
        """Wait time for request retransmissions in non-INVITE server Completed."""
        return 0.0 if reliable else 64 * self.t1

    def k(self, reliable: bool) -> float:
        """Wait time for response retransmissions in non-INVITE client Completed."""
        return 0.0 if reliable else self.t4

    @property
    def l(self) -> float:  # noqa: E743 - the RFC's name
        """RFC 6026: INVITE server Accepted, wait for 2xx retransmissions / INVITE retransmits."""
        return 64 * self.t1

    @property
    def m(self) -> float:
        """RFC 6026: INVITE client Accepted, wait for 2xx retransmissions."""
        return 64 * self.t1


class TxState(enum.Enum):
    CALLING = "calling"
    TRYING = "trying"
    PROCEEDING = "proceeding"
    ACCEPTED = "accepted"
    COMPLETED = "completed"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


# --------------------------------------------------------------------------------------------
# What the layer hands out
# --------------------------------------------------------------------------------------------
@dataclass(eq=False)
class Outgoing:
    """Bytes to put on the wire towards ``dest`` (the opaque value given by the runtime).

    ``data`` is fixed when the message is first sent, so a retransmission is byte-identical
    even if someone edits the message object afterwards; ``message`` is there for logging.
    """

    message: SipMessage
    dest: Hashable
    data: bytes


@dataclass(eq=False)
class NewRequest:
    """A request that created a server transaction; the TU answers it with `respond()`."""

    server_tx: ServerTransaction
    request: SipRequest


@dataclass(eq=False)
class AckFor2xx:
    """An ACK no INVITE server transaction absorbs: it belongs to a 2xx, so to a dialog."""

    request: SipRequest
    source: Hashable


@dataclass(eq=False)
class ResponseReceived:
    """A response the client transaction passes up (1xx, the first final, 2xx retransmits)."""

    client_tx: ClientTransaction
    response: SipResponse


@dataclass(eq=False)
class StrayResponse:
    """A response matching no client transaction (e.g. a 2xx retransmit after Accepted ended).

    RFC 6026 (changing 3261 18.1.2) says a UA should silently discard these, since Accepted now
    catches every legitimate 2xx retransmission; the event exists so the UA core can log them
    and make that decision itself.
    """

    response: SipResponse
    source: Hashable


@dataclass(eq=False)
class Timeout:
    """Timer B/F (client: the TU synthesises a 408) or Timer H (server: the ACK never came)."""

    tx: Transaction


@dataclass(eq=False)
class TransportError:
    """The runtime reported that sending to the transaction's peer failed (17.1.4, 17.2.4)."""

    tx: Transaction


Event = NewRequest | AckFor2xx | ResponseReceived | StrayResponse | Timeout | TransportError

_RETRANSMIT_TIMERS = frozenset({"A", "E", "G"})
_Send = Callable[[SipMessage, Hashable, bytes], None]


# --------------------------------------------------------------------------------------------
# The four state machines
# --------------------------------------------------------------------------------------------
class Transaction:
    """Common plumbing: named timers with absolute deadlines and the link to the layer's queue."""

    state: TxState

    def __init__(
        self, request: SipRequest, peer: Hashable, reliable: bool, timers: Timers, send: _Send
    ) -> None:
        self.request = request
        self.peer = peer
        self.reliable = reliable
        self.timers = timers
        self._send_fn = send
        self._deadlines: dict[str, float] = {}

    @property
    def method(self) -> str:
        return self.request.method

    @property
    def branch(self) -> str | None:
        return self.request.top_via.branch

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.method} {self.branch} {self.state.value}>"

    # --- timers ----------------------------------------------------------------------------
    def next_deadline(self) -> float | None:
        return min(self._deadlines.values(), default=None)

    def timer_deadline(self, name: str) -> float | None:
        """When timer ``name`` ("A".."M", "trying") fires, or None if it is not running."""
        return self._deadlines.get(name)

    def _start(self, name: str, delay: float, now: float) -> None:
        self._deadlines[name] = now + delay

    def _stop(self, *names: str) -> None:
        for name in names:
            self._deadlines.pop(name, None)

    def fire_timers(self, now: float) -> list[Event]:
        """Run every timer due at ``now`` in deadline order (a late tick may owe several)."""
        events: list[Event] = []
        while self.state is not TxState.TERMINATED:
            due = [
                (deadline, name in _RETRANSMIT_TIMERS, name)
                for name, deadline in self._deadlines.items()
                if deadline <= now
            ]
            if not due:
                break
            # At equal deadlines the timeout wins: no pointless send as the transaction dies.
            _, _, name = min(due)
            del self._deadlines[name]
            events += self._on_timer(name, now)
        return events

    def _on_timer(self, name: str, now: float) -> list[Event]:
        raise NotImplementedError

    # --- lifecycle -------------------------------------------------------------------------
    def _send(self, message: SipMessage, wire: bytes | None = None) -> bytes:
        """Queue ``message`` (as ``wire`` when retransmitting); returns the bytes sent."""
        data = message.serialize() if wire is None else wire
        self._send_fn(message, self.peer, data)
        return data

    def _terminate(self) -> None:
        self.state = TxState.TERMINATED
        self._deadlines.clear()

    def transport_failed(self) -> list[Event]:
        if self.state is TxState.TERMINATED:
            return []
        self._terminate()
        return [TransportError(self)]


class ClientTransaction(Transaction):
    """A request we sent; `receive_response` is fed the responses matching it (17.1.3)."""

    def __init__(
        self, request: SipRequest, peer: Hashable, reliable: bool, timers: Timers, send: _Send
    ) -> None:
        super().__init__(request, peer, reliable, timers, send)
        self.last_response: SipResponse | None = None

    def start(self, now: float) -> None:
        raise NotImplementedError

    def receive_response(self, response: SipResponse, now: float) -> list[Event]:
        raise NotImplementedError


class InviteClientTransaction(ClientTransaction):
    """17.1.1 (figure 5) with RFC 6026: Calling -> Proceeding -> Accepted|Completed -> Terminated.

    Proceeding has no timer: how long a call may ring is the TU's call (it sends a CANCEL).
    """

    state = TxState.CALLING

    def __init__(
        self, request: SipRequest, peer: Hashable, reliable: bool, timers: Timers, send: _Send
    ) -> None:
        super().__init__(request, peer, reliable, timers, send)
        self.ack: SipRequest | None = None
        self._a_interval = timers.a
        self._request_wire = b""
        self._ack_wire = b""

    def start(self, now: float) -> None:
        self.state = TxState.CALLING
        self._request_wire = self._send(self.request)
        if not self.reliable:
            self._start("A", self._a_interval, now)
        self._start("B", self.timers.b, now)

    def _on_timer(self, name: str, now: float) -> list[Event]:
        if name == "A" and self.state is TxState.CALLING:
            self._send(self.request, self._request_wire)
            self._a_interval *= 2  # no T2 cap for INVITE requests (17.1.1.2)
            self._start("A", self._a_interval, now)
        elif name == "B" and self.state is TxState.CALLING:
            self._terminate()
            return [Timeout(self)]
        elif name in ("D", "M"):
            self._terminate()
        return []

    def receive_response(self, response: SipResponse, now: float) -> list[Event]:
        status = response.status
        if self.state in (TxState.CALLING, TxState.PROCEEDING):
            self._stop("A", "B")
            self.last_response = response
            if status < 200:
                self.state = TxState.PROCEEDING
            elif status < 300:
                self.state = TxState.ACCEPTED
                self._start("M", self.timers.m, now)
            else:
                self.state = TxState.COMPLETED
                self.ack = build_ack_for_non2xx(self.request, response)
                self._ack_wire = self._send(self.ack)
                self._enter_or_skip("D", self.timers.d(self.reliable), now)
            return [ResponseReceived(self, response)]
        if self.state is TxState.ACCEPTED and 200 <= status < 300:
            # RFC 6026 7.2: every 2xx goes up; the TU (not us) ACKs each one.
            return [ResponseReceived(self, response)]
        if self.state is TxState.COMPLETED and status >= 300 and self.ack is not None:
            self._send(self.ack, self._ack_wire)  # the final came again: our ACK was lost
        return []

    def _enter_or_skip(self, name: str, delay: float, now: float) -> None:
        """Zero-valued timers (reliable transports) terminate at once instead of lingering."""
        if delay <= 0:
            self._terminate()
        else:
            self._start(name, delay, now)


class NonInviteClientTransaction(ClientTransaction):
    """17.1.2 (figure 6): Trying -> Proceeding -> Completed -> Terminated."""

    state = TxState.TRYING

    def __init__(
        self, request: SipRequest, peer: Hashable, reliable: bool, timers: Timers, send: _Send
    ) -> None:
        super().__init__(request, peer, reliable, timers, send)
        self._e_interval = timers.e
        self._request_wire = b""

    def start(self, now: float) -> None:
        self.state = TxState.TRYING
        self._request_wire = self._send(self.request)
        if not self.reliable:
            self._start("E", self._e_interval, now)
        self._start("F", self.timers.f, now)

    def _on_timer(self, name: str, now: float) -> list[Event]:
        if name == "E" and self.state in (TxState.TRYING, TxState.PROCEEDING):
            self._send(self.request, self._request_wire)
            if self.state is TxState.TRYING:
                self._e_interval = min(2 * self._e_interval, self.timers.t2)
            else:
                self._e_interval = self.timers.t2
            self._start("E", self._e_interval, now)
        elif name == "F" and self.state in (TxState.TRYING, TxState.PROCEEDING):
            self._terminate()
            return [Timeout(self)]
        elif name == "K":
            self._terminate()
        return []

    def receive_response(self, response: SipResponse, now: float) -> list[Event]:
        if self.state not in (TxState.TRYING, TxState.PROCEEDING):
            return []  # Completed absorbs retransmitted finals
        self.last_response = response
        if response.status < 200:
            self.state = TxState.PROCEEDING
        else:
            self.state = TxState.COMPLETED
            self._stop("E", "F")
            delay = self.timers.k(self.reliable)
            if delay <= 0:
                self._terminate()
            else:
                self._start("K", delay, now)
        return [ResponseReceived(self, response)]


class ServerTransaction(Transaction):
    """A request we received; the TU answers through `TransactionLayer.respond()`."""

    def __init__(
        self, request: SipRequest, peer: Hashable, reliable: bool, timers: Timers, send: _Send
    ) -> None:
        super().__init__(request, peer, reliable, timers, send)
        self.last_response: SipResponse | None = None
        self._last_wire = b""

    @property
    def source(self) -> Hashable:
        """Where the request came from; responses go back there (the runtime applies 18.2.2)."""
        return self.peer

    def start(self, now: float) -> None:
        raise NotImplementedError

    def receive_request(self, request: SipRequest, now: float) -> list[Event]:
        raise NotImplementedError

    def respond(self, response: SipResponse, now: float) -> None:
        raise NotImplementedError

    def _send_response(self, response: SipResponse) -> None:
        self.last_response = response
        self._last_wire = self._send(response)

    def _resend_last(self) -> None:
        if self.last_response is not None:
            self._send(self.last_response, self._last_wire)


class InviteServerTransaction(ServerTransaction):
    """17.2.1 (figure 7) with RFC 6026: Proceeding -> Accepted|Completed -> Confirmed -> Terminated."""

    state = TxState.PROCEEDING

    def __init__(
        self, request: SipRequest, peer: Hashable, reliable: bool, timers: Timers, send: _Send
    ) -> None:
        super().__init__(request, peer, reliable, timers, send)
        self._g_interval = timers.g

    def start(self, now: float) -> None:
        self.state = TxState.PROCEEDING
        self._start("trying", self.timers.trying_delay, now)

    def _send_trying(self) -> None:
        self._stop("trying")
        self._send_response(make_response(self.request, 100, "Trying"))

    def receive_request(self, request: SipRequest, now: float) -> list[Event]:
        if request.method == "ACK":
            if self.state is TxState.COMPLETED:
                self.state = TxState.CONFIRMED
                self._stop("G", "H")
                delay = self.timers.i(self.reliable)
                if delay <= 0:
                    self._terminate()
                else:
                    self._start("I", delay, now)
            elif self.state is TxState.ACCEPTED:
                # Only reachable via RFC 2543 matching: a 2xx ACK is the dialog's business.
                return [AckFor2xx(request, self.peer)]
            return []
        # An INVITE retransmission.
        if self.state is TxState.PROCEEDING:
            if self.last_response is None:
                self._send_trying()  # the peer is already retransmitting: do not wait longer
            else:
                self._resend_last()
        elif self.state is TxState.COMPLETED:
            self._resend_last()
        # Accepted / Confirmed: absorbed (RFC 6026 8.5: never passed to the TU).
        return []

    def respond(self, response: SipResponse, now: float) -> None:
        status = response.status
        if self.state is TxState.PROCEEDING:
            self._stop("trying")
            self._send_response(response)
            if 200 <= status < 300:
                self.state = TxState.ACCEPTED
                self._start("L", self.timers.l, now)
            elif status >= 300:
                self.state = TxState.COMPLETED
                if not self.reliable:
                    self._start("G", self._g_interval, now)
                self._start("H", self.timers.h, now)
        elif self.state is TxState.ACCEPTED and 200 <= status < 300:
            self._send_response(response)  # the TU retransmits its 2xx through us (RFC 6026 8.6)
        else:
            log.info("discarding %d for INVITE transaction in state %s", status, self.state.value)

    def _on_timer(self, name: str, now: float) -> list[Event]:
        if name == "trying" and self.state is TxState.PROCEEDING and self.last_response is None:
            self._send_trying()
        elif name == "G" and self.state is TxState.COMPLETED:
            self._resend_last()
            self._g_interval = min(2 * self._g_interval, self.timers.t2)
            self._start("G", self._g_interval, now)
        elif name == "H" and self.state is TxState.COMPLETED:
            self._terminate()
            return [Timeout(self)]
        elif name in ("I", "L"):
            self._terminate()
        return []


class NonInviteServerTransaction(ServerTransaction):
    """17.2.2 (figure 8): Trying -> Proceeding -> Completed -> Terminated."""

    state = TxState.TRYING

    def start(self, now: float) -> None:
        self.state = TxState.TRYING

    def receive_request(self, request: SipRequest, now: float) -> list[Event]:
        if self.state in (TxState.PROCEEDING, TxState.COMPLETED):
            self._resend_last()
        return []  # Trying: absorbed until the TU says something

    def respond(self, response: SipResponse, now: float) -> None:
        if self.state not in (TxState.TRYING, TxState.PROCEEDING):
            log.info(
                "discarding %d for %s transaction in state %s",
                response.status,
                self.method,
                self.state.value,
            )
            return
        self._send_response(response)
        if response.status < 200:
            self.state = TxState.PROCEEDING
            return
        self.state = TxState.COMPLETED
        delay = self.timers.j(self.reliable)
        if delay <= 0:
            self._terminate()
        else:
            self._start("J", delay, now)

    def _on_timer(self, name: str, now: float) -> list[Event]:
        if name == "J":
            self._terminate()
        return []


def build_ack_for_non2xx(request: SipRequest, response: SipResponse) -> SipRequest:
    """17.1.1.3: the ACK the INVITE client transaction itself sends for a 300-699.

    Request-URI, Call-ID, From, CSeq number and Route come from the INVITE, the single Via is
    the INVITE's top Via (same branch: it is part of the same transaction), To comes from the
    response because it carries the UAS's tag.
    """
    headers: list[tuple[str, str]] = [("Via", str(request.top_via))]
    headers += [("Route", value) for value in request.headers.get_all("Route")]
    headers += [
        ("Max-Forwards", "70"),
        ("From", _required(request, "From")),
        ("To", _required(response, "To")),
        ("Call-ID", request.call_id),
        ("CSeq", f"{request.cseq.number} ACK"),
    ]
    return make_request("ACK", request.uri, headers=headers)


def build_cancel(request: SipRequest) -> SipRequest:
    """9.1: the CANCEL for a request we sent (an INVITE in Proceeding, in practice).

    Same Request-URI, Call-ID, From, To (no tag from any response) and CSeq number as the
    request, method CANCEL, the same Route set and a single Via equal to the request's top
    Via: the shared branch is what lets the UAS find the INVITE (9.2). It is sent as its own
    non-INVITE client transaction with `TransactionLayer.send_request`.
    """
    if request.method == "ACK":
        raise ValueError("an ACK cannot be cancelled")
    headers: list[tuple[str, str]] = [("Via", str(request.top_via))]
    headers += [("Route", value) for value in request.headers.get_all("Route")]
    headers += [
        ("Max-Forwards", "70"),
        ("From", _required(request, "From")),
        ("To", _required(request, "To")),
        ("Call-ID", request.call_id),
        ("CSeq", f"{request.cseq.number} CANCEL"),
    ]
    return make_request("CANCEL", request.uri, headers=headers)


def _check_response_fits(request: SipRequest, response: SipResponse) -> None:
    if not 100 <= response.status <= 699:
        raise ValueError(f"status {response.status} is not a SIP response code")
    try:
        theirs, ours = response.cseq, request.cseq
    except SipParseError:
        return  # a 400 for a request whose CSeq is the defect: nothing to compare
    if (theirs.number, theirs.method) != (ours.number, ours.method):
        raise ValueError(f"response CSeq {theirs} does not answer request CSeq {ours}")


def _required(message: SipMessage, name: str) -> str:
    value = message.headers.get(name)
    if value is None:
        raise SipParseError(f"missing {name} header")
    return value


# --------------------------------------------------------------------------------------------
# Matching (17.1.3, 17.2.3)
# --------------------------------------------------------------------------------------------
_ServerKey = tuple[object, ...]


def _client_key(branch: str, method: str) -> tuple[str, str]:
    return (branch, method.upper())


def _server_key(request: SipRequest, method: str, to_tag: str | None) -> _ServerKey:
    """The identity of a server transaction as seen from one request.

    RFC 3261 requests (magic cookie) are matched by branch + sent-by + method. RFC 2543 ones by
    Request-URI, tags, Call-ID, CSeq and the whole top Via; the caller passes the To tag to use,
    because an ACK carries the tag of our response, not the one of the INVITE.
    """
    via = request.top_via
    branch = via.branch
    if branch is not None and branch.startswith(BRANCH_MAGIC):
        return ("3261", branch, via.sent_by.lower(), method)
    return (
        "2543",
        request.uri_text,
        to_tag,
        request.from_.tag,
        request.call_id,
        request.cseq.number,
        method,
        via.transport.upper(),
        via.sent_by.lower(),
        branch,
    )


def _to_tag(request: SipRequest) -> str | None:
    """The To tag, or None when To is malformed: such a request still gets a transaction so
    the UA can answer it with 400 (RFC 3261 8.2.2) instead of it vanishing."""
    try:
        return request.to.tag
    except SipParseError:
        return None


def _tx_method(request: SipRequest) -> str:
    """ACK belongs to the INVITE transaction (17.2.3)."""
    return "INVITE" if request.method == "ACK" else request.method


# --------------------------------------------------------------------------------------------
# The layer
# --------------------------------------------------------------------------------------------
class TransactionLayer:
    """All transactions of one UA, matched and driven without doing any I/O.

    Usage by the runtime/UA core::

        tx = layer.send_request(request, dest, reliable=False, now=now)
        events = layer.receive(message, source, reliable=False, now=now)
        layer.respond(server_tx, response, now)
        events = layer.handle_timer(now)        # when now >= layer.get_timer()
        for out in layer.drain(): transport.send(out.dest, out.data)

    Terminated transactions are forgotten at the end of every call.
    """

    def __init__(self, timers: Timers | None = None) -> None:
        self.timers = timers if timers is not None else Timers()
        self._clients: dict[tuple[str, str], ClientTransaction] = {}
        self._servers: dict[_ServerKey, ServerTransaction] = {}
        self._out: list[Outgoing] = []

    # --- outbound ----------------------------------------------------------------------------
    def send_request(
        self, request: SipRequest, dest: Hashable, *, reliable: bool, now: float
    ) -> ClientTransaction:
        """Start a client transaction; the request must already carry its top Via with a branch.

        The UA core owns the Via (sent-by depends on the transport it picked). ACK is not a
        transaction: a 2xx ACK goes through `send_stateless()`, a non-2xx ACK is ours.
        """
        if request.method == "ACK":
            raise ValueError("ACK starts no transaction: use send_stateless() for a 2xx ACK")
        branch = request.top_via.branch
        if not branch or not branch.startswith(BRANCH_MAGIC):
            raise ValueError(f"request needs a top Via branch starting with {BRANCH_MAGIC}")
        key = _client_key(branch, request.method)
        if key in self._clients:
            raise ValueError(f"a client transaction for {key} already exists")
        cls = InviteClientTransaction if request.method == "INVITE" else NonInviteClientTransaction
        tx = cls(request, dest, reliable, self.timers, self._enqueue)
        self._clients[key] = tx
        tx.start(now)
        return tx

    def send_stateless(self, message: SipMessage, dest: Hashable) -> None:
        """Queue a message outside any transaction (2xx ACK, stateless error responses)."""
        self._enqueue(message, dest, message.serialize())

    def respond(self, server_tx: ServerTransaction, response: SipResponse, now: float) -> None:
        """Hand the TU's response to its server transaction (which sends and retransmits it).

        Raises ValueError for a response that is not for ``server_tx``'s request: that is a bug
        in the TU, and sending it would confuse the peer.
        """
        _check_response_fits(server_tx.request, response)
        server_tx.respond(response, now)
        self._forget_terminated()

    def drain(self) -> list[Outgoing]:
        """Everything queued for the wire since the last call, in order."""
        out, self._out = self._out, []
        return out

    def _enqueue(self, message: SipMessage, dest: Hashable, data: bytes) -> None:
        self._out.append(Outgoing(message, dest, data))

    # --- inbound -----------------------------------------------------------------------------
    def receive(
        self, message: SipRequest | SipResponse, source: Hashable, *, reliable: bool, now: float
    ) -> list[Event]:
        """Feed one parsed message; returns the events for the TU.

        ``reliable`` describes the transport the message came over and is what a new server
        transaction uses to decide about retransmissions.
        """
        try:
            if isinstance(message, SipResponse):
                events = self._receive_response(message, source, now)
            else:
                events = self._receive_request(message, source, reliable, now)
        except SipParseError as e:
            # Without a usable Via/CSeq/Call-ID nothing can be matched or answered.
            log.warning("dropping message from %r that cannot be matched: %s", source, e.reason)
            return []
        self._forget_terminated()
        return events

    def _receive_response(self, response: SipResponse, source: Hashable, now: float) -> list[Event]:
        branch = response.top_via.branch
        tx = self._clients.get(_client_key(branch, response.cseq.method)) if branch else None
        if tx is None:
            return [StrayResponse(response, source)]
        return tx.receive_response(response, now)

    def _receive_request(
        self, request: SipRequest, source: Hashable, reliable: bool, now: float
    ) -> list[Event]:
        tx = self._match_server(request)
        if tx is not None:
            return tx.receive_request(request, now)
        if request.method == "ACK":
            return [AckFor2xx(request, source)]
        cls = InviteServerTransaction if request.method == "INVITE" else NonInviteServerTransaction
        new = cls(request, source, reliable, self.timers, self._enqueue)
        self._servers[_server_key(request, request.method, _to_tag(request))] = new
        new.start(now)
        return [NewRequest(new, request)]

    def _match_server(self, request: SipRequest) -> ServerTransaction | None:
        method = _tx_method(request)
        key = _server_key(request, method, _to_tag(request))
        tx = self._servers.get(key)
        if request.method != "ACK" or key[0] != "2543":
            return tx
        # RFC 2543 ACK: it carries the To tag of our response, while the INVITE it belongs to
        # had none (or, for a re-INVITE, the same one); it matches only if the tags agree.
        if tx is None:
            tx = self._servers.get(_server_key(request, method, None))
        if tx is None or tx.last_response is None or tx.last_response.to.tag != _to_tag(request):
            return None
        return tx

    def find_invite_for_cancel(self, cancel: SipRequest) -> InviteServerTransaction | None:
        """9.2: the INVITE server transaction a CANCEL targets (matched as if it were the INVITE)."""
        try:
            tx = self._servers.get(_server_key(cancel, "INVITE", cancel.to.tag))
        except SipParseError:
            return None
        if isinstance(tx, InviteServerTransaction) and tx.state is not TxState.TERMINATED:
            return tx
        return None

    # --- time and failures -------------------------------------------------------------------
    def get_timer(self) -> float | None:
        """The earliest deadline over all transactions, or None when nothing is pending."""
        deadlines = [d for tx in self._all() if (d := tx.next_deadline()) is not None]
        return min(deadlines, default=None)

    def handle_timer(self, now: float) -> list[Event]:
        """Fire every timer due at ``now``."""
        events: list[Event] = []
        for tx in self._all():
            events += tx.fire_timers(now)
        self._forget_terminated()
        return events

    def transport_failed(self, dest: Hashable, now: float) -> list[Event]:
        """The runtime could not send to ``dest``: every transaction talking to it is over."""
        events: list[Event] = []
        for tx in self._all():
            if tx.peer == dest:
                events += tx.transport_failed()
        self._forget_terminated()
        return events

    # --- introspection -----------------------------------------------------------------------
    @property
    def client_transactions(self) -> list[ClientTransaction]:
        return list(self._clients.values())

    @property
    def server_transactions(self) -> list[ServerTransaction]:
        return list(self._servers.values())

    def _all(self) -> list[Transaction]:
        return [*self._clients.values(), *self._servers.values()]

    def _forget_terminated(self) -> None:
        for ckey in [k for k, tx in self._clients.items() if tx.state is TxState.TERMINATED]:
            del self._clients[ckey]
        for skey in [k for k, tx in self._servers.items() if tx.state is TxState.TERMINATED]:
            del self._servers[skey]
