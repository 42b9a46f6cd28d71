"""SIP dialogs (RFC 3261 section 12), sans-IO.

A dialog is the state two UAs share between an INVITE (or SUBSCRIBE/REFER) and its end: the
identifiers, the CSeq counters in each direction, where in-dialog requests go (remote target)
and through which proxies (route set). This module keeps that state and builds in-dialog
requests from it; it never sends anything and never adds a Via (the UA core does that, because
sent-by depends on the transport the request leaves on).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from firmware.sip.headers import NameAddr, parse_name_addr
from firmware.sip.ids import IdSource
from firmware.sip.message import SipMessage, SipRequest, SipResponse, make_request
from firmware.sip.uri import URI, SipURI

log = logging.getLogger(__name__)

__all__ = ["Dialog", "DialogError", "DialogId", "DialogSet", "DialogState", "TARGET_REFRESH"]

# Requests whose Contact replaces the remote target (3261 12.2, 3311 UPDATE, 6665, 3515).
TARGET_REFRESH = frozenset({"INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY", "REFER"})
_MAX_FORWARDS = "70"
_CSEQ_LIMIT = 2**31  # 8.1.1.5: the first CSeq must be below 2**31


class DialogError(ValueError):
    """The messages given cannot make or drive a dialog (our misuse or a peer's broken message)."""


class DialogState(enum.Enum):
    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


@dataclass(frozen=True)
class DialogId:
    """12: Call-ID plus both tags, always seen from our side (local tag first).

    ``remote_tag`` is None for a peer that follows RFC 2543 and sends no tag.
    """

    call_id: str
    local_tag: str
    remote_tag: str | None


@dataclass(eq=False)
class Dialog:
    """The state of one dialog and the construction of the requests sent inside it."""

    call_id: str
    local_tag: str
    remote_tag: str | None
    local_uri: URI
    remote_uri: URI
    remote_target: URI
    local_seq: int | None = None
    remote_seq: int | None = None
    route_set: list[NameAddr] = field(default_factory=list)
    secure: bool = False
    state: DialogState = DialogState.EARLY
    local_contact: str | None = None
    local_display: str | None = None
    remote_display: str | None = None
    is_uac: bool = True

    # --- construction ------------------------------------------------------------------------
    @classmethod
    def from_uac(
        cls, request: SipRequest, response: SipResponse, *, secure: bool | None = None
    ) -> Dialog:
        """12.1.2: the dialog a 101-299 response to our request creates.

        ``secure`` is "sent over TLS with a SIPS Request-URI"; only the runtime knows the
        transport, so by default the SIPS scheme alone decides.
        """
        if not 101 <= response.status <= 299:
            raise DialogError(f"a {response.status} response does not create a dialog")
        remote_tag = response.to.tag
        if remote_tag is None and response.status < 200:
            raise DialogError("a provisional response without a To tag creates no dialog")
        local_tag = request.from_.tag
        if local_tag is None:
            raise DialogError("our request has no From tag")
        to = request.to
        from_ = request.from_
        dialog = cls(
            call_id=request.call_id,
            local_tag=local_tag,
            remote_tag=remote_tag,
            local_uri=from_.uri,
            remote_uri=to.uri,
            remote_target=_contact_uri(response) or to.uri,
            local_seq=request.cseq.number,
            remote_seq=None,
            route_set=_record_route(response, reverse=True),
            secure=_is_sips(request.uri) if secure is None else secure,
            state=DialogState.EARLY if response.status < 200 else DialogState.CONFIRMED,
            local_contact=request.headers.get("Contact"),
            local_display=from_.display,
            remote_display=to.display,
            is_uac=True,
        )
        if _contact_uri(response) is None:
            log.info("%d without Contact: using the To URI as remote target", response.status)
        return dialog

    @classmethod
    def from_uas(
        cls,
        request: SipRequest,
        local_tag: str,
        local_contact: str | SipURI,
        *,
        secure: bool | None = None,
        state: DialogState = DialogState.EARLY,
    ) -> Dialog:
        """12.1.1: the dialog we create by answering ``request`` with a 101-299 carrying
        ``local_tag`` in To and ``local_contact`` in Contact."""
        target = _contact_uri(request)
        if target is None:
            raise DialogError(f"{request.method} without Contact cannot create a dialog")
        to = request.to
        from_ = request.from_
        return cls(
            call_id=request.call_id,
            local_tag=local_tag,
            remote_tag=from_.tag,
            local_uri=to.uri,
            remote_uri=from_.uri,
            remote_target=target,
            local_seq=None,
            remote_seq=request.cseq.number,
            route_set=_record_route(request, reverse=False),
            secure=_is_sips(request.uri) if secure is None else secure,
            state=state,
            local_contact=str(local_contact),
            local_display=to.display,
            remote_display=from_.display,
            is_uac=False,
        )

    @property
    def id(self) -> DialogId:
        return DialogId(self.call_id, self.local_tag, self.remote_tag)

    # --- requests we send ----------------------------------------------------------------------
    def create_request(
        self,
        method: str,
        *,
        ids: IdSource,
        contact: str | SipURI | None = None,
        body: bytes = b"",
        extra_headers: Iterable[tuple[str, str]] = (),
    ) -> SipRequest:
        """12.2.1.1: a new in-dialog request (BYE, re-INVITE, UPDATE, INFO, REFER, NOTIFY...).

        Takes the next local CSeq (a UAS dialog starts its counter at a random value below
        2**31, drawn from ``ids``). Contact (``contact`` or the dialog's own) is added for target
        refresh requests. No Via: the UA core adds it when it picks the transport.
        """
        method = method.upper()
        if method in ("ACK", "CANCEL"):
            raise DialogError(f"{method} is not built with create_request (see create_ack / 9.1)")
        if self.state is DialogState.TERMINATED:
            raise DialogError(f"cannot send {method} in a terminated dialog")
        if self.local_seq is None:
            self.local_seq = ids.randbelow(_CSEQ_LIMIT - 1)
        self.local_seq += 1
        headers = self._base_headers(f"{self.local_seq} {method}")
        contact = contact if contact is not None else self.local_contact
        if method in TARGET_REFRESH and contact is not None:
            headers.append(("Contact", _as_contact(contact)))
        return self._build(method, headers, extra_headers, body)

    def create_ack(
        self,
        invite: SipRequest,
        *,
        body: bytes = b"",
        extra_headers: Iterable[tuple[str, str]] = (),
    ) -> SipRequest:
        """13.2.2.4: the ACK for a 2xx, built like any in-dialog request but with the INVITE's
        CSeq number and its credentials (22.1), and without touching the local CSeq."""
        if invite.method != "INVITE":
            raise DialogError(f"ACK acknowledges an INVITE, not {invite.method}")
        headers = self._base_headers(f"{invite.cseq.number} ACK")
        for name in ("Authorization", "Proxy-Authorization"):
            # As written: credentials contain commas and must not be split.
            headers += [(name, value) for value in invite.headers.get_raw(name)]
        return self._build("ACK", headers, extra_headers, body)

    def _base_headers(self, cseq: str) -> list[tuple[str, str]]:
        headers = [("Route", str(route)) for route in self._routes()]
        headers += [
            ("Max-Forwards", _MAX_FORWARDS),
            ("From", _party(self.local_display, self.local_uri, self.local_tag)),
            ("To", _party(self.remote_display, self.remote_uri, self.remote_tag)),
            ("Call-ID", self.call_id),
            ("CSeq", cseq),
        ]
        return headers

    def _build(
        self,
        method: str,
        headers: list[tuple[str, str]],
        extra_headers: Iterable[tuple[str, str]],
        body: bytes,
    ) -> SipRequest:
        headers += list(extra_headers)
        return make_request(method, self.request_uri(), headers=headers, body=body)

    def request_uri(self) -> URI:
        """12.2.1.1: the remote target, unless the first hop is a strict (pre-lr) router."""
        if self.route_set and not _is_loose(self.route_set[0]):
            return _strip_for_request_uri(self.route_set[0].uri)
        return self.remote_target

    def _routes(self) -> list[str]:
        if not self.route_set:
            return []
        if _is_loose(self.route_set[0]):
            return [str(route) for route in self.route_set]
        # Strict routing: the first hop moved into the Request-URI, the target goes last.
        return [str(route) for route in self.route_set[1:]] + [f"<{self.remote_target}>"]

    # --- requests and responses we receive -----------------------------------------------------
    def check_request(self, request: SipRequest) -> int | None:
        """12.2.2: vet an in-dialog request before the UAS acts on it.

        Returns the status code to reject it with (481 for a terminated dialog, 500 for a CSeq
        lower than the last one seen) or None when it is in order; in that case the remote CSeq
        is advanced and a target refresh request with a Contact updates the remote target.
        ACK and CANCEL carry the CSeq number of the request they refer to and skip the check.
        """
        if self.state is DialogState.TERMINATED:
            return 481
        if request.method in ("ACK", "CANCEL"):
            return None
        number = request.cseq.number
        if self.remote_seq is not None and number < self.remote_seq:
            log.info(
                "%s CSeq %d below remote CSeq %d: 500", request.method, number, self.remote_seq
            )
            return 500
        self.remote_seq = number
        if request.method in TARGET_REFRESH:
            self._refresh_target(request)
        return None

    def update_from_response(self, response: SipResponse) -> None:
        """12.2.1.2 / 13.2.2.4: what a response to a request of ours does to the dialog.

        - 2xx to the INVITE of an early dialog confirms it, and (UAC) the route set is
          recomputed from that 2xx's Record-Route.
        - 1xx (while early) and 2xx to a target refresh request with a Contact move the target.
        - A 300-699 to the INVITE ends an early dialog; 481 and 408 end any dialog.
        """
        status = response.status
        method = response.cseq.method
        if status in (408, 481):
            self.state = DialogState.TERMINATED
            return
        if status >= 300:
            if method == "INVITE" and self.state is DialogState.EARLY:
                self.state = DialogState.TERMINATED
            return
        if status < 200:
            if self.state is DialogState.EARLY and status > 100 and method in TARGET_REFRESH:
                self._refresh_target(response)
            return
        if method == "INVITE" and self.state is DialogState.EARLY:
            self.state = DialogState.CONFIRMED
            if self.is_uac:
                self.route_set = _record_route(response, reverse=True)
        if method in TARGET_REFRESH:
            self._refresh_target(response)

    def confirm(self) -> None:
        """UAS side: our 2xx to the dialog-creating request went out."""
        if self.state is DialogState.EARLY:
            self.state = DialogState.CONFIRMED

    def terminate(self) -> None:
        self.state = DialogState.TERMINATED

    def _refresh_target(self, message: SipMessage) -> None:
        target = _contact_uri(message)
        if target is not None:
            self.remote_target = target


class DialogSet:
    """The dialogs of a UA, keyed by `DialogId`, found from incoming requests and responses."""

    def __init__(self) -> None:
        self._dialogs: dict[DialogId, Dialog] = {}

    def add(self, dialog: Dialog) -> Dialog:
        if dialog.id in self._dialogs:
            raise DialogError(f"dialog {dialog.id} already exists")
        self._dialogs[dialog.id] = dialog
        return dialog

    def remove(self, dialog: Dialog) -> None:
        self._dialogs.pop(dialog.id, None)

    def get(self, dialog_id: DialogId) -> Dialog | None:
        return self._dialogs.get(dialog_id)

    def find_for_request(self, request: SipRequest) -> Dialog | None:
        """12.2.2: a request belongs to the dialog whose local tag is its To tag."""
        local_tag = request.to.tag
        if local_tag is None:
            return None
        return self._dialogs.get(DialogId(request.call_id, local_tag, request.from_.tag))

    def find_for_response(self, response: SipResponse) -> Dialog | None:
        """A response to our request: the From tag is ours, the To tag the peer's."""
        local_tag = response.from_.tag
        if local_tag is None:
            return None
        return self._dialogs.get(DialogId(response.call_id, local_tag, response.to.tag))

    def early_dialogs(self, call_id: str, local_tag: str) -> list[Dialog]:
        """Every early dialog of one forked INVITE (all end with its non-2xx final response)."""
        return [
            d
            for d in self._dialogs.values()
            if d.call_id == call_id and d.local_tag == local_tag and d.state is DialogState.EARLY
        ]

    def purge_terminated(self) -> list[Dialog]:
        gone = [d for d in self._dialogs.values() if d.state is DialogState.TERMINATED]
        for dialog in gone:
            del self._dialogs[dialog.id]
        return gone

    def __len__(self) -> int:
        return len(self._dialogs)

    def __iter__(self) -> Iterator[Dialog]:
        return iter(list(self._dialogs.values()))

    def __contains__(self, dialog: object) -> bool:
        return isinstance(dialog, Dialog) and self._dialogs.get(dialog.id) is dialog


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def _contact_uri(message: SipMessage) -> URI | None:
    contacts = message.contacts
    return contacts[0].uri if contacts else None


def _record_route(message: SipMessage, *, reverse: bool) -> list[NameAddr]:
    routes = [parse_name_addr(value) for value in message.headers.get_all("Record-Route")]
    return routes[::-1] if reverse else routes


def _is_sips(uri: URI) -> bool:
    return isinstance(uri, SipURI) and uri.scheme == "sips"


def _is_loose(route: NameAddr) -> bool:
    uri = route.uri
    return isinstance(uri, SipURI) and "lr" in uri.params


def _strip_for_request_uri(uri: URI) -> URI:
    """19.1.1 table 1: headers and the method parameter are not allowed in a Request-URI."""
    if not isinstance(uri, SipURI):
        return uri
    params = {k: v for k, v in uri.params.items() if k != "method"}
    return uri.copy(params=params, headers={})


def _party(display: str | None, uri: URI, tag: str | None) -> str:
    """From/To of an in-dialog request: the dialog's URI, display name kept, our/their tag."""
    return str(NameAddr(uri, display or None, {"tag": tag} if tag is not None else None))


def _as_contact(contact: str | SipURI) -> str:
    text = str(contact)
    return text if "<" in text else f"<{text}>"
