"""What happens to an incoming call before (and instead of) ringing; sans-IO.

`IncomingPolicy` sits in front of the call manager's INVITE handler (``ua.handlers["INVITE"]``)
and applies, in this order:

* INVITEs with Replaces/Join pass untouched (pickups and transfers are vetted elsewhere);
* DND: refused at once with the configured 486/603, nothing rings (RFC 5850 A.16);
* forwarding always, and busy (a call is already up): 302 with Contact = the target
  (RFC 5359 2.7/2.8 done by the phone); no answer: 302 after ``no_answer_after`` seconds of
  ringing;
* caller identity (T25, RFC 3325 8): a P-Asserted-Identity is believed - and shown - only when
  the INVITE came over the registrar/proxy flow; otherwise From is shown and PAI ignored
  (Referred-By is shown unverified by firmware.call.refer, T15);
* intercom/auto-answer (T27, RFC 5373, RFC 5850 A.21): Answer-Mode/Priv-Answer-Mode ``Auto``,
  Call-Info ``answer-after=N`` or Alert-Info ``info=alert-autoanswer`` make the phone answer by
  itself (after N s, capped) only when the INVITE came over the proxy flow and, if an allow-list
  is configured, from a listed identity; everyone else just rings.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from firmware.sip.errors import SipParseError
from firmware.sip.headers import parse_name_addr, split_list
from firmware.sip.message import SipRequest
from firmware.sip.uri import SipURI

log = logging.getLogger(__name__)

_ANSWER_AFTER = re.compile(r"answer-after\s*=\s*(\d+)", re.I)
_AUTO_ALERT = re.compile(r"info\s*=\s*\"?(alert-autoanswer|auto ?answer|intercom)", re.I)


@dataclass
class IncomingConfig:
    """Live settings (the action API changes DND and forwarding at run time)."""

    dnd: bool = False
    dnd_status: int = 486
    forward_always: str | None = None
    forward_busy: str | None = None
    forward_no_answer: str | None = None
    forward_no_answer_after: float = 20.0
    intercom_enabled: bool = True
    intercom_allow: tuple[str, ...] = ()
    intercom_max_delay: float = 10.0


@dataclass
class _Timer:
    call_id: str
    at: float
    action: str  # "answer" | "forward"


def auto_answer_delay(request: SipRequest) -> float | None:
    """Seconds after which the INVITE asks to be answered automatically, or None."""
    for name in ("Answer-Mode", "Priv-Answer-Mode"):
        value = request.headers.get(name)
        if value and value.split(";")[0].strip().lower() == "auto":
            return 0.0
    for raw in request.headers.get_raw("Call-Info"):
        m = _ANSWER_AFTER.search(raw)
        if m:
            return float(m.group(1))
    for raw in request.headers.get_raw("Alert-Info"):
        if _AUTO_ALERT.search(raw):
            return 0.0
    return None


def _same_identity(a: Any, b: Any) -> bool:
    if not isinstance(a, SipURI) or not isinstance(b, SipURI):
        return str(a) == str(b)
    return (a.user or "", a.host.lower()) == (b.user or "", b.host.lower())


class IncomingPolicy:
    """DND, forwarding, trusted caller identity and intercom for incoming INVITEs."""

    def __init__(
        self,
        ua: Any,
        calls: Any,
        config: IncomingConfig,
        *,
        trusted: Callable[[Hashable], bool],
        target_uri: Callable[[str, str], str],
    ) -> None:
        self.ua = ua
        self.calls = calls
        self.config = config
        self.trusted = trusted  # is this peer the registrar/proxy flow?
        self.target_uri = target_uri  # (number or URI, account) -> full URI
        self.refused: list[dict[str, Any]] = []  # what DND/forwarding did, newest last
        self._timers: list[_Timer] = []
        self._next = ua.handlers["INVITE"]
        ua.handlers["INVITE"] = self._on_invite
        ua.services.append(self)

    # ----- the INVITE -------------------------------------------------------------------------
    def _on_invite(self, server_tx: Any, request: SipRequest, now: float) -> None:
        if request.headers.get_raw("Replaces") or request.headers.get_raw("Join"):
            self._next(server_tx, request, now)
            return
        cfg = self.config
        account = self.ua.account_for_request(request) or "line1"
        if cfg.dnd:
            reason = "Decline" if cfg.dnd_status == 603 else "Busy Here"
            if cfg.dnd_status == 480:
                reason = "Temporarily Unavailable"
            self._record("dnd", request, cfg.dnd_status, None)
            self.ua.respond(server_tx, request, cfg.dnd_status, f"{reason} (DND)", now)
            return
        target = cfg.forward_always
        why = "always"
        if target is None and cfg.forward_busy and self.calls.active_calls():
            target, why = cfg.forward_busy, "busy"
        if target is not None:
            uri = self.target_uri(target, account)
            self._record(f"forward_{why}", request, 302, uri)
            self.ua.respond(
                server_tx, request, 302, "Moved Temporarily", now, [("Contact", f"<{uri}>")]
            )
            return
        before = set(self.calls.calls)
        self._next(server_tx, request, now)
        new = [c for cid, c in self.calls.calls.items() if cid not in before]
        if not new:
            return
        call = new[0]
        self._identity(call, request, server_tx.peer)
        delay = auto_answer_delay(request)
        if delay is not None:
            if self._intercom_allowed(call, request, server_tx.peer):
                delay = min(delay, cfg.intercom_max_delay)
                call.extras["auto_answer"] = {"after": delay}
                self._timers.append(_Timer(call.id, now + delay, "answer"))
                log.info("call %s: intercom, auto-answer in %.1f s", call.id, delay)
            else:
                call.extras["auto_answer_refused"] = True
                log.warning("call %s asks for auto-answer from an untrusted source", call.id)
        if cfg.forward_no_answer and "auto_answer" not in call.extras:
            self._timers.append(_Timer(call.id, now + cfg.forward_no_answer_after, "forward"))

    def _record(self, what: str, request: SipRequest, status: int, target: str | None) -> None:
        try:
            caller = str(request.from_.uri)
        except SipParseError:
            caller = None
        self.refused = [
            *self.refused[-9:],
            {"by": what, "from": caller, "status": status, "target": target},
        ]
        log.info("incoming call from %s: %s -> %d %s", caller, what, status, target or "")

    def _identity(self, call: Any, request: SipRequest, peer: Hashable) -> None:
        """T25: P-Asserted-Identity is believed (and shown) only from the proxy flow."""
        from_proxy = self.trusted(peer)
        shown: dict[str, Any] = {
            "uri": call.remote,
            "display": call.remote_display,
            "source": "from",
            "verified": False,
        }
        pai = request.headers.get_raw("P-Asserted-Identity")
        if pai and from_proxy:
            try:
                first = parse_name_addr(split_list(pai[0])[0])
                shown = {
                    "uri": str(first.uri),
                    "display": first.display,
                    "source": "pai",
                    "verified": True,
                }
                call.remote_display = first.display or call.remote_display
            except (SipParseError, IndexError):
                log.info("call %s: unreadable P-Asserted-Identity ignored", call.id)
        elif pai:
            log.warning("call %s: P-Asserted-Identity from an untrusted peer ignored", call.id)
        call.extras["caller"] = shown
        # Referred-By is shown unverified by firmware.call.refer.TransferService (T15).

    def _intercom_allowed(self, call: Any, request: SipRequest, peer: Hashable) -> bool:
        cfg = self.config
        if not cfg.intercom_enabled or not self.trusted(peer):
            return False
        if not cfg.intercom_allow:
            return True
        who = call.extras.get("caller", {}).get("uri") or call.remote
        try:
            uri = parse_name_addr(who).uri
            return any(_same_identity(uri, parse_name_addr(a).uri) for a in cfg.intercom_allow)
        except SipParseError:
            return False

    # ----- timers (polled through ua.services) ------------------------------------------------
    def get_timer(self) -> float | None:
        return min((t.at for t in self._timers), default=None)

    def handle_timer(self, now: float) -> None:
        due = [t for t in self._timers if t.at <= now]
        self._timers = [t for t in self._timers if t.at > now]
        for timer in due:
            call = self.calls.calls.get(timer.call_id)
            if call is None or call.state != "ringing":
                continue
            if timer.action == "answer":
                self.calls.answer(call.id, now)
                call.extras["auto_answered"] = True
            elif timer.action == "forward" and self.config.forward_no_answer:
                uri = self.target_uri(self.config.forward_no_answer, call.account)
                session = call.session
                # A 302 needs our Contact header: the session's generic reject() has none.
                session._respond_invite(  # noqa: SLF001
                    302, "Moved Temporarily", now, headers=[("Contact", f"<{uri}>")]
                )
                session._terminate("forwarded", 302, "Moved Temporarily")  # noqa: SLF001
                self.refused = [
                    *self.refused[-9:],
                    {"by": "forward_no_answer", "from": call.remote, "status": 302, "target": uri},
                ]
                self.calls.process(now)

    # ----- status / actions -------------------------------------------------------------------
    def forward_status(self) -> dict[str, Any]:
        c = self.config
        return {
            "always": c.forward_always,
            "busy": c.forward_busy,
            "no_answer": c.forward_no_answer,
            "no_answer_after": c.forward_no_answer_after,
        }
