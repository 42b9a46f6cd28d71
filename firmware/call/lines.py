"""Line appearances: call waiting, answer-and-hold, swap; at most one call talks at a time.

A desk phone has one handset, so however many calls it carries (``max_calls`` line
appearances, default 4; the next INVITE gets 486 from `CallManager`), only one of them may be
sendrecv ("talking"); the others are held by us (RFC 3264 8.4 sendonly/inactive) or still ring.
`LineAppearances` keeps that invariant: the manager calls `make_room` before it answers, resumes
or dials, and every other talking call is put on hold first, so the hold re-INVITE is queued
(hence on the wire) before the 200 OK of the answered call or the INVITE of the new one. A call
that starts talking without such an intent (an outgoing call answered after the user resumed
another one, a peer taking us off hold) is held at once: the call the user chose last keeps
the handset. The only exception is a local conference: its legs talk together and count as one
line (`join`; ``CallManager.dial(hold_others=False)`` joins the new call for that purpose).

It is a CallManager feature (``call_added`` / ``call_synced``) that also marks each call's
status: ``waiting`` (an incoming call ringing while another call is up: call waiting, the
runtime plays the call-waiting tone into the talking call instead of ringing) and ``active``
(the call the handset is talking on). Sans-IO: no clock, no I/O.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from firmware.call.manager import Call, CallManager

log = logging.getLogger(__name__)


class LineBusy(RuntimeError):
    """An intent that would make two calls talk at once and cannot hold the other one now."""


class LineAppearances:
    """The line-appearance rules on top of a `CallManager` (see the module docstring)."""

    def __init__(self, calls: CallManager) -> None:
        self.calls = calls
        self.conference: set[str] = set()  # ids mixed together locally: they talk as one line
        self._intended: str | None = None  # the call the user last chose to talk on
        self._enforcing = False
        calls.features.append(self)
        calls.lines = self

    # ----- queries ------------------------------------------------------------------------
    def talking(self) -> list[Call]:
        """Calls whose media is sendrecv: connected, held neither by us nor by the peer (a
        peer that holds us leaves us recvonly; it may be about to transfer us, RFC 5589)."""
        return [
            c
            for c in self.calls.calls.values()
            if c.state == "connected" and not c.held and not c.remote_held
        ]

    def waiting(self) -> list[Call]:
        """Incoming calls ringing while another call is up (connected or held)."""
        up = [c for c in self.calls.calls.values() if c.state in ("connected", "held")]
        if not up:
            return []
        return [
            c
            for c in self.calls.calls.values()
            if c.direction == "incoming" and c.state == "ringing"
        ]

    def active(self) -> Call | None:
        """The call the handset talks on (the first conference leg for a conference)."""
        talking = self.talking() or [  # a peer holding us: still the line we are on
            c for c in self.calls.calls.values() if c.state == "connected" and not c.held
        ]
        return talking[0] if talking else None

    def violations(self) -> list[str]:
        """Ids of talking calls beyond the one allowed (conference legs count as one)."""
        talking = [c.id for c in self.talking()]
        lines = {("conference" if c in self.conference else c) for c in talking}
        return talking if len(lines) > 1 else []

    # ----- the rule -----------------------------------------------------------------------
    def make_room(self, call: Call | None, now: float) -> list[str]:
        """Hold every talking call except ``call`` (and its conference partners) before
        ``call`` starts talking; returns the ids held. LineBusy when one cannot be held now
        (e.g. its own re-INVITE is still pending): the caller must not go ahead."""
        keep = set(self.conference) if call is not None and call.id in self.conference else set()
        held: list[str] = []
        for other in self.talking():
            if (call is not None and other.id == call.id) or other.id in keep:
                continue
            if not self.calls.hold(other.id, now):
                raise LineBusy(f"call {other.id} cannot be put on hold now")
            log.info("call %s held to free the handset", other.id)
            held.append(other.id)
        self._intended = call.id if call is not None else None
        return held

    def swap(self, call_id: str, now: float) -> str:
        """Talk on the other call: resume ``call_id`` if it is held (holding the talking one),
        or, when ``call_id`` is the talking call, resume the most recent held call. Returns
        the id now talking; LineBusy when there is nothing to swap to."""
        call = self.calls.get(call_id)
        if call.state == "held":
            target = call
        else:
            held = [c for c in self.calls.calls.values() if c.state == "held" and c.id != call_id]
            if call.state != "connected" or not held:
                raise LineBusy(f"call {call_id} has no held call to swap with")
            target = max(held, key=lambda c: c.started_at or 0.0)
        if not self.calls.resume(target.id, now):
            raise LineBusy(f"call {target.id} cannot be resumed now")
        return target.id

    def join(self, call_ids: list[str]) -> None:
        """These calls are mixed together from now on (a local conference)."""
        self.conference.update(call_ids)

    def leave(self, call_id: str) -> None:
        """A call left the local conference; with fewer than two legs it is a plain call."""
        self.conference.discard(call_id)
        if len(self.conference) < 2:
            self.conference.clear()

    def hand_over(self, call_id: str, other_id: str, transfers: Any, now: float) -> bool:
        """Leave a 3-way conference: connect its two other parties to each other and drop out
        (RFC 5850 7 "transfer the remaining parties to each other", done as an attended
        transfer, RFC 5589 7): REFER ``call_id``'s party with Refer-To the other party's
        Contact and Replaces of our dialog with it; `transfers` (firmware.call.refer's
        TransferService) ends our call when the NOTIFY reports success, and the other party's
        call ends with the BYE it gets from the replacing side. False when it cannot start."""
        self.leave(call_id)
        self.leave(other_id)
        return bool(transfers.transfer_attended(call_id, other_id, now))

    # ----- CallManager feature hooks ------------------------------------------------------
    def call_added(self, call: Call) -> None:
        return None

    def call_synced(self, call: Call, now: float) -> None:
        if call.state == "ended":
            self.leave(call.id)
            call.extras.pop("waiting", None)
            call.extras.pop("active", None)
        waiting = {c.id for c in self.waiting()}
        current = self.active()
        active = {c.id for c in self.talking()} | ({current.id} if current is not None else set())
        for c in self.calls.calls.values():
            if c.state == "ended":
                continue
            c.extras["waiting"] = c.id in waiting
            c.extras["active"] = c.id in active
        bad = self.violations()
        if bad and call.id in bad and not self._enforcing:
            self._enforce(call, now)

    def _enforce(self, call: Call, now: float) -> None:
        """``call`` started talking next to another one without an intent for it (an outgoing
        call answered after the user resumed another one, a peer resuming us): the call the
        user chose last keeps talking, ``call`` is held at once (muted locally right away)."""
        self._enforcing = True
        try:
            if call.id == self._intended:
                self.make_room(call, now)
            elif self.calls.hold(call.id, now):
                log.info("call %s held: call %s is the one talking", call.id, self._intended)
        except LineBusy as e:
            log.error("line appearances: %s", e)
        finally:
            self._enforcing = False
        bad = self.violations()
        if bad:  # e.g. a re-INVITE still pending: no hold possible yet; loud, never silent
            log.error("line appearances: calls %s all talk at once", ", ".join(bad))

    def status(self) -> dict[str, Any]:
        """For the status JSON: which call talks, which wait, how many lines there are."""
        active = self.active()
        return {
            "max_calls": self.calls.max_calls,
            "active_call": active.id if active is not None else None,
            "waiting": [c.id for c in self.waiting()],
        }


__all__ = ["LineAppearances", "LineBusy"]
