"""One account's registration as a sans-IO state machine (RFC 3261 section 10, RFC 5626).

The object builds REGISTER requests *without* Via (the UA core adds Via and a branch when it
hands them to a client transaction), is told about final responses and timeouts, and keeps
one deadline (`get_timer`). It never sends anything itself: the UA drains `take_requests()`.

Timing choices, and why:
- Refresh at ``max(granted / 2, granted - REFRESH_MARGIN)`` after the 2xx. With the usual
  3600 s that is 64 s before expiry, like phones that refresh a fixed margin early (pjsip
  uses 5 s) but with room for a whole UDP transaction timeout (Timer B = 32 s) plus a second
  attempt before the binding lapses; short expiries (10-60 s) refresh at half-life, which is
  always strictly before expiry.
- Failures back off as RFC 5626 section 4.5 says: uniform in [50 %, 100 %] of
  ``min(1800, base * 2 ** consecutive_failures)``, base 30 s when no other flow works, 90 s
  otherwise; a Retry-After from the server lengthens (never shortens) the wait.
- "failed" means the server refused us (credentials, 403, 404...) and "retrying" means a
  transient problem; both keep retrying on the backoff schedule so a fixed PBX recovers
  the phone without a reboot, but neither can loop tightly.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from firmware.sip.auth import DigestClient, credential_realms
from firmware.sip.ids import IdSource, new_call_id, new_tag
from firmware.sip.message import SipRequest, SipResponse, make_request
from firmware.sip.uri import SipURI

log = logging.getLogger(__name__)

DEFAULT_EXPIRES = 3600
REFRESH_MARGIN = 64.0  # 2 x Timer B: a timed-out refresh still leaves time for another
MAX_BACKOFF = 1800.0  # RFC 5626 section 4.5 max-time
BASE_ALL_FAILED = 30.0  # RFC 5626 section 4.5 base-time when all flows have failed
BASE_SOME_OK = 90.0  # ... and when some other flow still works
# Allow must not promise methods the UA cannot handle; pass the UA's own `allow` callable so
# the header follows its handler table. This default is the UA core's initial table.
DEFAULT_ALLOW = ("INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "NOTIFY")
SUPPORTED = "path, outbound, gruu"

STATES = ("unregistered", "registering", "registered", "retrying", "failed")
# Final responses that mean "the server refused us" rather than "try again later".
_PERMANENT = {400, 401, 403, 404, 405, 407, 410, 416, 420, 484, 488, 603, 604, 606}


def refresh_delay(granted: float) -> float:
    """Seconds after a 2xx at which to refresh a binding granted for ``granted`` seconds."""
    return max(granted / 2.0, granted - REFRESH_MARGIN)


def _unquote(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        value = value[1:-1]
    return value


def _int_or_none(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        number = int(value.strip().split(";")[0].split("(")[0].strip())
    except ValueError:
        return None
    return number if number >= 0 else None


class Registration:
    """Registers ``aor`` at ``registrar`` and keeps it registered.

    ``instance_id`` is the RFC 5626 instance URN (``urn:uuid:...``); the caller keeps it
    stable across reboots (THREATS.md T30). ``digest`` may be None for an unauthenticated
    registrar. ``set_contact`` only records the contact for the *next* REGISTER: the UA
    calls it before ``start`` and, after flow recovery, before ``flow_failed``.
    """

    def __init__(
        self,
        *,
        account: str,
        aor: SipURI,
        registrar: SipURI,
        ids: IdSource,
        instance_id: str,
        digest: DigestClient | None = None,
        reg_id: int = 1,
        expires: int = DEFAULT_EXPIRES,
        user_agent: str = "deskphone/0.1",
        allow: Sequence[str] | Callable[[], str] = DEFAULT_ALLOW,
        base_all_failed: float = BASE_ALL_FAILED,
        base_some_ok: float = BASE_SOME_OK,
        max_backoff: float = MAX_BACKOFF,
    ) -> None:
        if not instance_id.lower().startswith("urn:"):
            raise ValueError(f"instance_id must be a URN such as urn:uuid:..., got {instance_id!r}")
        if expires <= 0:
            raise ValueError(f"requested expires must be positive, got {expires}")
        self.account = account
        self.aor = aor
        self.registrar = registrar
        self.instance_id = instance_id
        self.reg_id = reg_id
        self.digest = digest
        self.requested_expires = expires
        self.user_agent = user_agent
        self._allow = allow
        self.base_all_failed = base_all_failed
        self.base_some_ok = base_some_ok
        self.max_backoff = max_backoff
        self.other_flows_ok = False  # the UA sets this when another flow still works
        self._ids = ids
        self._call_id = new_call_id(ids)
        self._from_tag = new_tag(ids)
        self._cseq = 0
        self._contact: SipURI | None = None
        # Realms our REGISTERs were challenged in and answered: the only ones a REGISTER
        # pre-authorises (a peer phone's realm cached by a pickup never goes to the registrar).
        self._realms: list[str] = []

        self.state = "unregistered"
        self._active = False  # start() called and stop() not since
        self._outbox: list[SipRequest] = []
        self._in_flight: SipRequest | None = None
        self._in_flight_expires = 0
        self._pending: str | None = None  # "register" | "unregister" once the in-flight ends
        self._timer_at: float | None = None
        self._failures = 0
        self.expires_at: float | None = None
        self.granted: int | None = None
        self.last_status: int | None = None
        self.last_reason: str | None = None
        self.next_attempt: float | None = None
        self.pub_gruu: str | None = None
        self.temp_gruu: str | None = None
        self.flow_timer: int | None = None
        self.outbound: bool = False

    # -- inputs from the UA --------------------------------------------------------------------
    @property
    def call_id(self) -> str:
        return self._call_id

    @property
    def contact(self) -> SipURI | None:
        return self._contact

    def set_contact(self, uri: SipURI) -> None:
        """Record the contact for the next REGISTER (it changes after flow recovery).

        It does not by itself send anything, except a REGISTER that was waiting for a contact.
        """
        had_none = self._contact is None
        self._contact = uri
        if had_none and self._pending is not None and self._in_flight is None:
            self._flush_pending()

    def start(self, now: float) -> None:
        """Begin registering (no-op if already active)."""
        if self._active:
            return
        self._active = True
        self._failures = 0
        self._set_state("registering")
        self._send("register")

    def stop(self, now: float) -> None:
        """Remove our binding (expires=0) and stop refreshing."""
        if not self._active:
            return
        self._active = False
        had_binding = self.state == "registered" or self._in_flight is not None
        self._timer_at = None
        self.next_attempt = None
        self.expires_at = None
        self._set_state("unregistered")
        if self._in_flight is None:
            # A REGISTER still waiting for a contact must never go out after stop().
            self._pending = None
            self._outbox.clear()
        if had_binding:
            self._send("unregister")

    def flow_failed(self, now: float) -> None:
        """The connection carrying the registration dropped: re-register promptly.

        A registered phone re-registers at once (RFC 5626 section 4.4.1). If a REGISTER
        was already under way the failed flow took it down too, which counts as a failed
        attempt and backs off, so a flapping connection cannot cause a tight loop.
        """
        if not self._active:
            return
        if self._in_flight is not None:
            self._in_flight = None
            self._pending = None
            # RFC 3261 8.1.3.1: a transport failure is treated as a 503.
            self._fail(now, 503, "flow failed", permanent=False)
        elif self.state == "registered":
            self._set_state("registering")
            self._send("register")
        # retrying/failed: the backoff timer already decides when to try again.

    def unreachable(self, now: float, reason: str, *, permanent: bool = False) -> None:
        """The runtime could not even open a flow to the registrar (connect/TLS failure).

        Shown in status like a 503 from the registrar; ``permanent`` (e.g. a certificate that
        fails verification) makes the state "failed" rather than "retrying".
        """
        if self._active and self._in_flight is None:
            self._fail(now, 503, reason, permanent=permanent)

    def take_requests(self) -> list[SipRequest]:
        """REGISTER requests to send now (without Via), oldest first."""
        out, self._outbox = self._outbox, []
        return out

    def get_timer(self) -> float | None:
        return self._timer_at

    def handle_timer(self, now: float) -> None:
        """Called whenever the UA's timer fires; acts only if our own deadline has passed."""
        if self._timer_at is None or now < self._timer_at:
            return
        self._timer_at = None
        self.next_attempt = None
        if not self._active:
            return
        if self.state != "registered":
            self._set_state("registering")
        self._send("register")

    def handle_timeout(self, now: float, request: SipRequest | None = None) -> None:
        """The in-flight REGISTER's client transaction timed out (no response).

        Pass the timed-out ``request`` when known: a transaction abandoned by
        ``flow_failed`` may time out later, while a newer REGISTER is in flight.
        """
        current = self._in_flight
        if current is None:
            return
        if request is not None and request.cseq.number != current.cseq.number:
            log.debug("%s: timeout of an abandoned REGISTER ignored", self.account)
            return
        self._in_flight = None
        if self._in_flight_expires == 0:
            self._after_unregister(now)
            return
        self._fail(now, 408, "Request Timeout (no response from registrar)", permanent=False)

    def handle_response(self, response: SipResponse, now: float) -> None:
        """A final response to our in-flight REGISTER (provisional ones are ignored)."""
        request = self._in_flight
        if request is None or response.status < 200:
            return
        if response.call_id != self._call_id or response.cseq.number != request.cseq.number:
            log.debug("%s: response for an earlier REGISTER ignored", self.account)
            return
        self._in_flight = None
        unregistering = self._in_flight_expires == 0
        status = response.status
        self.last_status, self.last_reason = status, response.reason

        if not unregistering and not self._active:
            # A REGISTER finished after stop(): now send the deferred un-REGISTER.
            self._flush_pending()
            return

        if status in (401, 407) and self.digest is not None:
            retry = self._build(self._in_flight_expires)
            self.digest.learn_realm(response)  # trust on first use: the registrar's realm
            self.digest.pre_authorize(retry, realms=self._realms)  # registrar realms only
            if self.digest.authorize(retry, response):
                for realm in credential_realms(retry):
                    if realm not in self._realms:
                        self._realms.append(realm)
                self._queue(retry)
                return
            if unregistering:
                self._after_unregister(now)
                return
            reason = self.digest.last_error or "authentication failed"
            self._fail(now, status, f"{response.reason} ({reason})", permanent=True)
            return

        if unregistering:
            self._after_unregister(now)
            return

        if 200 <= status < 300:
            self._registered(response, now)
        elif status == 423:
            self._too_brief(response, now)
        else:
            permanent = status in _PERMANENT or (300 <= status < 400)
            retry_after = _int_or_none(response.headers.get("Retry-After"))
            self._fail(now, status, response.reason, permanent=permanent, retry_after=retry_after)

    def status(self) -> dict[str, Any]:
        return {
            "account": self.account,
            "aor": str(self.aor),
            "state": self.state,
            "expires_at": self.expires_at,
            "last_status": self.last_status,
            "last_reason": self.last_reason,
            "next_attempt": self.next_attempt,
            "contact": str(self._contact) if self._contact is not None else None,
            "pub_gruu": self.pub_gruu,
            "temp_gruu": self.temp_gruu,
            # The one realm the account password answers (None: not learned yet / no auth).
            "realm": self.digest.account_realm if self.digest is not None else None,
        }

    # -- outcomes ------------------------------------------------------------------------------
    def _registered(self, response: SipResponse, now: float) -> None:
        granted = self._granted_expiry(response)
        if granted <= 0:
            self._fail(now, response.status, "registrar kept no binding for our contact",
                       permanent=False)  # fmt: skip
            return
        self._failures = 0
        self.granted = granted
        self.expires_at = now + granted
        self._timer_at = now + refresh_delay(granted)
        self.next_attempt = self._timer_at
        self.flow_timer = _int_or_none(response.headers.get("Flow-Timer"))
        require = response.headers.get("Require") or ""
        self.outbound = "outbound" in [t.strip().lower() for t in require.split(",")]
        self._set_state("registered")
        log.info(
            "%s: registered %s for %d s (refresh in %.0f s)", self.account, self.aor, granted,
            self._timer_at - now,
        )  # fmt: skip
        self._flush_pending()

    def _too_brief(self, response: SipResponse, now: float) -> None:
        """423: raise our request to Min-Expires and retry at once (RFC 3261 10.2.8)."""
        minimum = _int_or_none(response.headers.get("Min-Expires"))
        if minimum is None or minimum <= self.requested_expires:
            self._fail(now, 423, f"{response.reason} (unusable Min-Expires)", permanent=True)
            return
        log.info("%s: registrar wants expires >= %d", self.account, minimum)
        self.requested_expires = minimum
        self._send("register")

    def _fail(
        self,
        now: float,
        status: int,
        reason: str,
        *,
        permanent: bool,
        retry_after: int | None = None,
    ) -> None:
        self.last_status, self.last_reason = status, reason
        self._failures += 1
        wait = self.backoff(self._failures)
        if retry_after is not None:
            wait = max(wait, min(float(retry_after), self.max_backoff))
        self._pending = None
        self.expires_at = None
        if not self._active:
            self._timer_at = self.next_attempt = None
            return
        self._timer_at = self.next_attempt = now + wait
        self._set_state("failed" if permanent else "retrying")
        log.warning(
            "%s: registration %s: %d %s; next attempt in %.1f s", self.account, self.state,
            status, reason, wait,
        )  # fmt: skip

    def _after_unregister(self, now: float) -> None:
        self.expires_at = None
        self._pending = None
        if self._active:  # start() was called again while un-registering
            self._set_state("registering")
            self._send("register")

    def backoff(self, failures: int) -> float:
        """RFC 5626 section 4.5 wait: uniform in [50 %, 100 %] of min(max, base * 2^failures)."""
        base = self.base_some_ok if self.other_flows_ok else self.base_all_failed
        ceiling = min(self.max_backoff, base * (2 ** min(failures, 32)))
        fraction = self._ids.randbelow(1_000_001) / 1_000_000
        return ceiling * (0.5 + 0.5 * fraction)

    # -- request building ----------------------------------------------------------------------
    def _send(self, kind: str) -> None:
        """Queue a REGISTER (or un-REGISTER), or defer it until the in-flight one completes."""
        if self._in_flight is not None:
            self._pending = kind
            return
        if self._contact is None:
            log.info("%s: waiting for a contact before registering", self.account)
            self._pending = kind
            return
        expires = 0 if kind == "unregister" else self.requested_expires
        request = self._build(expires)
        if self.digest is not None:
            self.digest.pre_authorize(request, realms=self._realms)
        self._queue(request)

    def _queue(self, request: SipRequest) -> None:
        self._in_flight = request
        self._in_flight_expires = int(request.headers.get("Expires") or 0)
        self._timer_at = None  # a new deadline comes with the outcome of this request
        self._outbox.append(request)

    def _flush_pending(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            self._send(pending)

    def _build(self, expires: int) -> SipRequest:
        if self._contact is None:
            raise RuntimeError("Registration has no contact; call set_contact() first")
        self._cseq += 1
        contact = (
            f'<{self._contact}>;+sip.instance="<{self.instance_id}>"'
            f";reg-id={self.reg_id};expires={expires}"
        )
        headers = [
            ("Max-Forwards", "70"),
            ("To", f"<{self.aor}>"),
            ("From", f"<{self.aor}>;tag={self._from_tag}"),
            ("Call-ID", self._call_id),
            ("CSeq", f"{self._cseq} REGISTER"),
            ("Contact", contact),
            ("Expires", str(expires)),
            ("Supported", SUPPORTED),
            ("Allow", self._allow() if callable(self._allow) else ", ".join(self._allow)),
            ("User-Agent", self.user_agent),
        ]
        return make_request("REGISTER", self.registrar, headers=headers)

    def _granted_expiry(self, response: SipResponse) -> int:
        """Our contact's expires param in the 2xx, else Expires, else what we asked for."""
        fallback = _int_or_none(response.headers.get("Expires"))
        if fallback is None:
            fallback = self.requested_expires
        try:
            contacts = response.contacts
        except ValueError:
            log.warning("%s: unparseable Contact in 2xx; using Expires", self.account)
            return fallback
        for contact in contacts:
            if not self._is_ours(contact):
                continue
            params = {k.lower(): v for k, v in contact.params.items()}
            self.pub_gruu = _unquote(params.get("pub-gruu")) or self.pub_gruu
            self.temp_gruu = _unquote(params.get("temp-gruu")) or self.temp_gruu
            value = _int_or_none(params.get("expires"))
            return value if value is not None else fallback
        return fallback

    def _is_ours(self, contact: Any) -> bool:
        params = {k.lower(): v for k, v in contact.params.items()}
        instance = _unquote(params.get("+sip.instance"))
        if instance is not None:
            same_instance = instance.strip("<>").lower() == self.instance_id.lower()
            reg_id = params.get("reg-id")
            return same_instance and (reg_id is None or reg_id.strip() == str(self.reg_id))
        return contact.uri == self._contact

    def _set_state(self, state: str) -> None:
        if state != self.state:
            log.info("%s: registration %s -> %s", self.account, self.state, state)
            self.state = state
