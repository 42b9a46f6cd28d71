"""Network conference through a focus (RFC 4579 section 5); sans-IO.

A local 3-way conference mixes on the phone (firmware/runtime/conference.py); a network
conference lets a conference server (the focus) mix instead, for more parties or when the phone
should not carry the media. `NetworkConferences` plays the RFC 4579 "conference-unaware
participant that creates a conference" role on top of `CallManager` and `TransferService`:

* create (5.4): INVITE to a conference factory URI (config ``[calls] conference_focus`` or the
  action's ``focus``). The focus answers with a Contact that is the conference URI and carries
  the ``isfocus`` feature parameter (RFC 3840); without it the far end is not a focus, and no
  one is sent there (``conference`` = ``"not_a_focus"``);
* add a party we are in a call with (5.5, REFER to the participant): a REFER in that call with
  Refer-To the conference URI - an ordinary blind transfer (firmware/call/refer.py), so the
  party INVITEs the focus and our call with it ends on the final NOTIFY 200;
* add a party we are not in a call with (5.5, REFER to the focus): a REFER in the focus dialog
  with Refer-To the party's URI (method INVITE implied) and Refer-Sub: false (RFC 4488: the
  focus reports progress in its conference state, not by NOTIFY);
* remove a party (5.11): REFER the focus with Refer-To <party;method=BYE>;
* move a party we are in a call with, without asking it anything (5.10): a REFER to the focus
  with Refer-To <party's Contact?Replaces=our dialog with it>; the focus INVITEs the party with
  Replaces and the party BYEs our call (for parties that do not do REFER).

Status (call ``extras``) of the focus call: ``conference`` (creating | active | not_a_focus |
redirected (a 3xx from the factory: ``redirected_to`` is the new call) | failed | ended), ``conference_uri``, ``isfocus``, ``focus_secure`` (the focus dialog runs over
TLS or sips, the only integrity the isfocus Contact gets: no S/MIME, THREATS T28),
``conference_parties`` (our calls sent to the focus) and ``conference_invited`` ({uri or moved
call id: the focus' answer to our REFER}).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from firmware.call.refer import attended_refer_to
from firmware.sip.errors import SipParseError
from firmware.sip.message import SipResponse
from firmware.sip.transaction import ClientTransaction
from firmware.sip.uri import SipURI, parse_uri

if TYPE_CHECKING:
    from firmware.call.manager import Call, CallManager

log = logging.getLogger(__name__)


MAX_REDIRECTS = 3


class ConferenceError(RuntimeError):
    """A conference intent that cannot be carried out now (the message says why)."""


@dataclass
class _Conference:
    call: Call
    focus_uri: str
    waiting: list[str] = field(default_factory=list)  # our calls to send once it is up
    isfocus: bool | None = None
    contact_uri: str | None = None
    redirect: str | None = None  # a 3xx Contact: the factory points at the conference URI
    hops: int = 0


@dataclass
class _InviteOwner:
    """Hears the answer to a REFER we sent the focus."""

    conference: _Conference
    target: str

    def on_response(self, tx: ClientTransaction, response: SipResponse, now: float) -> None:
        if response.status >= 200:
            self.conference.call.extras["conference_invited"][self.target] = response.status

    def on_timeout(self, tx: ClientTransaction, now: float) -> None:
        self.conference.call.extras["conference_invited"][self.target] = 408


class NetworkConferences:
    """RFC 4579 conference creation and REFERs (see the module docstring)."""

    def __init__(self, calls: CallManager, transfers: Any) -> None:
        self.calls = calls
        self.transfers = transfers  # firmware.call.refer.TransferService
        self._conferences: dict[str, _Conference] = {}
        calls.features.append(self)

    # ----- intents ------------------------------------------------------------------------
    def create(
        self, focus_uri: str, account_id: str, now: float, parties: list[str] | tuple[str, ...] = ()
    ) -> Call:
        """INVITE the conference factory URI; once the focus answers (with isfocus), each call
        in ``parties`` is REFERred to the conference URI. The talking call is held first."""
        parse_uri(focus_uri)  # SipParseError for a bad URI, before anything is sent
        for party in parties:
            call = self.calls.get(party)  # KeyError for an unknown call
            if call.state not in ("connected", "held"):
                raise ConferenceError(f"call {party} is {call.state}, not connected or held")
        call = self.calls.dial(focus_uri, account_id, now)
        conference = _Conference(call, focus_uri, waiting=list(parties))
        for party in parties:
            self.calls.get(party).extras["conference_of"] = call.id
        self._conferences[call.id] = conference
        self._tap_answer(conference)
        info = self.calls.accounts(account_id)
        call.extras.update(
            conference="creating",
            conference_focus=focus_uri,
            # THREATS T28: only TLS/sips hop-by-hop integrity protects the isfocus Contact
            focus_secure=bool(info.secure or focus_uri.startswith("sips:")),
            conference_uri=None,
            isfocus=None,
            conference_parties=[],
            conference_invited={},
        )
        return call

    def add(self, conference_id: str, party_id: str, now: float) -> None:
        """Send our call ``party_id`` to the conference: REFER it to the conference URI."""
        conference = self._get(conference_id)
        if conference.call.state != "connected" or not conference.isfocus:
            conference.waiting.append(party_id)  # sent when the focus is up
            return
        self._send_party(conference, party_id, now)

    def invite(self, conference_id: str, target: str, now: float) -> None:
        """Ask the focus to INVITE ``target`` (a number or URI) into the conference."""
        conference = self._focus_up(conference_id)
        info = self.calls.accounts(conference.call.account)
        uri = target if target.startswith(("sip:", "sips:")) else f"sip:{target}@{info.domain}"
        parse_uri(uri)
        self._refer_focus(conference, uri, uri, now)

    def remove(self, conference_id: str, target: str, now: float) -> None:
        """Ask the focus to drop ``target`` from the conference (RFC 4579 5.11): REFER with
        Refer-To <target;method=BYE>; the focus decides whether we may."""
        conference = self._focus_up(conference_id)
        info = self.calls.accounts(conference.call.account)
        uri = target if target.startswith(("sip:", "sips:")) else f"sip:{target}@{info.domain}"
        parsed = parse_uri(uri)
        if not isinstance(parsed, SipURI):
            raise ConferenceError(f"{uri} is not a sip:/sips: URI")
        bye = parsed.copy(params={**parsed.params, "method": "BYE"}, headers={})
        self._refer_focus(conference, str(bye), f"remove {uri}", now)

    def move(self, conference_id: str, party_id: str, now: float) -> None:
        """Have the focus take over our call ``party_id`` (RFC 4579 5.10): REFER the focus
        with Refer-To the party's Contact and Replaces of our dialog with it."""
        conference = self._focus_up(conference_id)
        party = self.calls.get(party_id)
        dialog = party.session.dialog
        if party.state not in ("connected", "held") or dialog is None or not dialog.remote_tag:
            raise ConferenceError(f"call {party_id} is {party.state}, not connected or held")
        target = attended_refer_to(
            dialog.remote_target, dialog.call_id, dialog.remote_tag, dialog.local_tag
        )
        party.extras["conference_of"] = conference.call.id
        self._refer_focus(conference, target, party_id, now)

    def _focus_up(self, conference_id: str) -> _Conference:
        conference = self._get(conference_id)
        call = conference.call
        if call.state not in ("connected", "held") or call.session.dialog is None:
            raise ConferenceError(f"conference call {conference_id} is {call.state}")
        if not conference.isfocus:
            raise ConferenceError(f"call {conference_id} is not with a conference focus")
        return conference

    def _refer_focus(self, conference: _Conference, refer_to: str, key: str, now: float) -> None:
        """REFER in the focus dialog; its answer lands in ``conference_invited[key]``."""
        session, dialog = conference.call.session, conference.call.session.dialog
        assert dialog is not None
        info = self.calls.accounts(conference.call.account)
        refer = dialog.create_request(
            "REFER",
            ids=session.host.ids,
            contact=session.contact,
            extra_headers=[
                ("Refer-To", f"<{refer_to}>"),
                ("Referred-By", f"<{info.aor}>"),
                ("Refer-Sub", "false"),
                ("User-Agent", session.user_agent),
            ],
        )
        conference.call.extras["conference_invited"][key] = None
        session.host.send_request(refer, _InviteOwner(conference, key), now)

    def _get(self, conference_id: str) -> _Conference:
        conference = self._conferences.get(conference_id)
        if conference is None:
            raise ConferenceError(f"call {conference_id} is not a network conference")
        return conference

    # ----- the focus' answer --------------------------------------------------------------
    def _tap_answer(self, conference: _Conference) -> None:
        """Read the Contact of the focus' 2xx: the conference URI and its isfocus parameter.

        InviteSession keeps the remote target but not the Contact's header parameters, so the
        session's response entry point is wrapped for this one call (the core stays as is)."""
        session = conference.call.session
        original = session.on_response

        def on_response(tx: ClientTransaction, response: SipResponse, now: float) -> None:
            if 200 <= response.status < 300 and response.cseq.method == "INVITE":
                contacts = response.contacts
                if contacts:
                    conference.contact_uri = str(contacts[0].uri)
                    conference.isfocus = "isfocus" in {k.lower() for k in contacts[0].params}
                else:
                    conference.isfocus = False
            elif 300 <= response.status < 400 and response.cseq.method == "INVITE":
                contacts = response.contacts
                conference.redirect = str(contacts[0].uri) if contacts else None
            original(tx, response, now)

        session.on_response = on_response  # type: ignore[method-assign]

    def _send_party(self, conference: _Conference, party_id: str, now: float) -> None:
        uri = conference.contact_uri or conference.focus_uri
        party = self.calls.get(party_id)
        if party.state not in ("connected", "held") or not self.transfers.transfer(
            party_id, uri, now
        ):
            log.info("conference %s: call %s cannot be sent there", conference.call.id, party_id)
            return
        party.extras["conference_of"] = conference.call.id
        conference.call.extras["conference_parties"].append(party_id)
        log.info("conference %s: call %s referred to %s", conference.call.id, party_id, uri)

    def _follow_redirect(self, conference: _Conference, now: float) -> bool:
        """The factory answered 3xx with a Contact (RFC 4579 5.4, RFC 5850 3.3.3: it may
        redirect to the conference URI it made): INVITE that, a few hops at most."""
        target, call = conference.redirect, conference.call
        if target is None or conference.hops >= MAX_REDIRECTS or target == conference.focus_uri:
            return False
        parties = [
            p for p in conference.waiting if self.calls.get(p).state in ("connected", "held")
        ]
        try:
            new = self.create(target, call.account, now, parties=parties)
        except (ConferenceError, RuntimeError, SipParseError) as e:
            log.info("conference %s: cannot follow the redirect to %s: %s", call.id, target, e)
            return False
        self._conferences[new.id].hops = conference.hops + 1
        call.extras.update(conference="redirected", redirected_to=new.id)
        log.info("conference %s: factory redirected to %s (call %s)", call.id, target, new.id)
        return True

    # ----- CallManager feature hooks ------------------------------------------------------
    def call_added(self, call: Call) -> None:
        """A focus that calls us marks its INVITE's Contact with isfocus: show it."""
        request = call.session.initial_request if call.direction == "incoming" else None
        if request is not None and request.contacts:
            if "isfocus" in {k.lower() for k in request.contacts[0].params}:
                call.extras["isfocus"] = True

    def call_synced(self, call: Call, now: float) -> None:
        conference = self._conferences.get(call.id)
        if conference is None:
            return
        extras = call.extras
        if call.state == "ended":
            self._conferences.pop(call.id, None)
            if extras["conference"] == "creating" and self._follow_redirect(conference, now):
                return
            extras["conference"] = "ended" if extras["conference"] != "creating" else "failed"
            return
        if call.state != "connected" or extras["conference"] != "creating":
            return
        extras.update(isfocus=bool(conference.isfocus), conference_uri=conference.contact_uri)
        if not conference.isfocus:
            extras["conference"] = "not_a_focus"  # RFC 4579 5.4: send no one there
            log.warning("call %s: %s answered without isfocus", call.id, conference.focus_uri)
            return
        extras["conference"] = "active"
        waiting, conference.waiting = conference.waiting, []
        for party_id in waiting:
            self._send_party(conference, party_id, now)


__all__ = ["ConferenceError", "NetworkConferences"]
