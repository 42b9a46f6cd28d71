"""Session timers (RFC 4028), sans-IO: header negotiation and the refresh/expiry clock.

`UacSessionTimer` adds Supported/Session-Expires/Min-SE to our INVITE (or UPDATE), retries
after a 422 with the larger Min-SE, and reads the 2xx. `uas_negotiate` decides how to answer
a request: 422 when its interval is below our minimum, else the Session-Expires (with
refresher) and Require our 2xx must carry. Either side ends up with a `SessionTimer`, driven
by `get_timer()` / `handle_timer(now)` like every other core state machine.

Intervals are never accepted below 90 s, whatever the config says (THREATS T19: a short
interval turns refreshes into a flood), so we never refresh faster than every 45 s.
Roles ("uac"/"uas") are those of the transaction carrying the negotiation, so a re-INVITE
from the original callee swaps them, exactly as RFC 4028 section 7.4 describes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

from firmware.sip.errors import SipParseError
from firmware.sip.message import Headers, SipMessage, SipRequest, SipResponse

log = logging.getLogger(__name__)

MIN_SE_FLOOR = 90  # RFC 4028 section 4: Min-SE can never be below 90 seconds
DEFAULT_SESSION_EXPIRES = 1800  # RFC 4028 section 4 recommended interval
Refresher = Literal["uac", "uas"]
TimerAction = Literal["refresh", "expire"]


@dataclass(frozen=True)
class SessionTimerConfig:
    """Our policy: interval we ask for, our minimum, and who refreshes when we may choose."""

    session_expires: int = DEFAULT_SESSION_EXPIRES
    min_se: int = MIN_SE_FLOOR
    uas_prefers: Refresher = "uac"

    def __post_init__(self) -> None:
        if self.min_se < MIN_SE_FLOOR:
            log.warning("Min-SE %d below the RFC 4028 floor; using %d", self.min_se, MIN_SE_FLOOR)
            object.__setattr__(self, "min_se", MIN_SE_FLOOR)
        if self.session_expires < self.min_se:
            raise ValueError(
                f"session_expires {self.session_expires} is below Min-SE {self.min_se}"
            )


@dataclass(frozen=True)
class SessionExpires:
    """A parsed Session-Expires value: delta-seconds and optional refresher."""

    interval: int
    refresher: Refresher | None = None

    def __str__(self) -> str:
        return (
            f"{self.interval};refresher={self.refresher}" if self.refresher else str(self.interval)
        )


def _delta_seconds(text: str, header: str) -> int:
    text = text.strip()
    if not text.isdigit():
        raise SipParseError(f"{header} value {text!r} is not delta-seconds")
    return int(text)


def parse_session_expires(value: str) -> SessionExpires:
    """'1800;refresher=uac' -> SessionExpires; raises SipParseError when malformed."""
    head, *params = value.split(";")
    interval = _delta_seconds(head, "Session-Expires")
    refresher: Refresher | None = None
    for param in params:
        name, _, pvalue = param.partition("=")
        if name.strip().lower() == "refresher":
            r = pvalue.strip().lower()
            if r not in ("uac", "uas"):
                raise SipParseError(f"Session-Expires refresher {pvalue.strip()!r} is not uac/uas")
            refresher = "uac" if r == "uac" else "uas"
    return SessionExpires(interval, refresher)


def parse_min_se(value: str) -> int:
    return _delta_seconds(value.split(";", 1)[0], "Min-SE")


def _session_expires(msg: SipMessage) -> SessionExpires | None:
    value = msg.headers.get("Session-Expires")
    return parse_session_expires(value) if value is not None else None


def _min_se(msg: SipMessage) -> int | None:
    value = msg.headers.get("Min-SE")
    return parse_min_se(value) if value is not None else None


def _has_option(msg: SipMessage, header: str, option: str) -> bool:
    return any(v.strip().lower() == option for v in msg.headers.get_all(header))


def add_option(headers: Headers, header: str, option: str) -> None:
    """Add `option` to a Supported/Require list header unless it is already there."""
    existing = headers.get_all(header)
    if any(v.strip().lower() == option for v in existing):
        return
    headers.set(header, ", ".join([*existing, option]) if existing else option)


class SessionTimer:
    """The running clock of one session (RFC 4028 section 10).

    The refresher fires "refresh" at half the interval; the other side fires "expire" (send
    BYE) min(32, N/3) seconds before the interval ends, and the refresher fires "expire" at
    the end if no refresh completed. `refreshed(now)` restarts the clock after any
    successful refresh, in either direction.
    """

    def __init__(self, interval: int, we_refresh: bool, now: float, min_se: int = MIN_SE_FLOOR):
        self.min_se = max(min_se, MIN_SE_FLOOR)
        self.interval = 0
        self.we_refresh = we_refresh
        self._refresh_at: float | None = None
        self._expire_at: float | None = None
        self.refreshed(now, interval, we_refresh)

    def refreshed(
        self, now: float, interval: int | None = None, we_refresh: bool | None = None
    ) -> None:
        """Restart after a 2xx to a refresh (ours or the peer's), maybe with new terms."""
        if interval is not None:
            if interval < self.min_se:
                log.warning("session interval %d below Min-SE; using %d", interval, self.min_se)
            self.interval = max(interval, self.min_se)
        if we_refresh is not None:
            self.we_refresh = we_refresh
        n = self.interval
        if self.we_refresh:
            self._refresh_at = now + n / 2
            self._expire_at = now + n
        else:
            self._refresh_at = None
            self._expire_at = now + n - min(32.0, n / 3)

    def stop(self) -> None:
        self._refresh_at = self._expire_at = None

    def get_timer(self) -> float | None:
        """The next deadline at which `handle_timer` has something to do, or None."""
        return self._refresh_at if self._refresh_at is not None else self._expire_at

    def handle_timer(self, now: float) -> TimerAction | None:
        """'refresh' (send re-INVITE/UPDATE) once per interval, 'expire' (send BYE) once."""
        if self._refresh_at is not None and now >= self._refresh_at:
            self._refresh_at = None
            return "refresh"
        if self._expire_at is not None and now >= self._expire_at:
            self.stop()
            return "expire"
        return None


class UacSessionTimer:
    """Our side of the negotiation when we send the INVITE/UPDATE (RFC 4028 section 7)."""

    def __init__(self, config: SessionTimerConfig | None = None) -> None:
        self.config = config or SessionTimerConfig()
        self.min_se = self.config.min_se
        self.interval = self.config.session_expires
        self.refresher: Refresher | None = None

    def request_headers(self) -> list[tuple[str, str]]:
        """Headers for the request; merge Supported with the core's (see `add_option`)."""
        se = SessionExpires(self.interval, self.refresher)
        return [("Supported", "timer"), ("Session-Expires", str(se)), ("Min-SE", str(self.min_se))]

    def apply(self, headers: Headers) -> None:
        """Put our session-timer headers into an outgoing request's headers."""
        add_option(headers, "Supported", "timer")
        headers.set("Session-Expires", str(SessionExpires(self.interval, self.refresher)))
        headers.set("Min-SE", str(self.min_se))

    def for_refresh(self, timer: SessionTimer, we_are_uac_refresher: bool = True) -> None:
        """Prepare a refresh request: keep the current interval and name the refresher."""
        self.interval = max(timer.interval, self.min_se)
        self.refresher = "uac" if we_are_uac_refresher else "uas"

    def handle_422(self, response: SipResponse) -> bool:
        """Raise our Min-SE to the 422's and say whether a retry makes sense (7.3)."""
        try:
            demanded = _min_se(response)
        except SipParseError as exc:
            log.warning("422 with a malformed Min-SE (%s); not retrying", exc.reason)
            return False
        if demanded is None or demanded <= self.min_se:
            log.warning("422 without a larger Min-SE (%s); not retrying", demanded)
            return False
        self.min_se = demanded
        self.interval = max(self.interval, demanded)
        return True

    def handle_2xx(self, response: SipResponse, now: float) -> SessionTimer | None:
        """Start the clock the 2xx agreed on; None when it carries no Session-Expires."""
        try:
            se = _session_expires(response)
        except SipParseError as exc:
            log.warning("ignoring malformed Session-Expires in 2xx: %s", exc.reason)
            return None
        if se is None:
            return None
        # RFC 4028 7.2: an absent refresher in a 2xx can only come from a UAS that does not
        # do timers itself, so the UAC refreshes.
        refresher = se.refresher or "uac"
        self.refresher = refresher
        if se.interval < self.min_se:
            log.warning("2xx Session-Expires %d below our Min-SE %d", se.interval, self.min_se)
        return SessionTimer(se.interval, refresher == "uac", now, self.min_se)


@dataclass
class UasDecision:
    """How to answer a request as UAS: `status` 422, or None with the headers for our 2xx."""

    status: int | None = None
    response_headers: list[tuple[str, str]] = field(default_factory=list)
    interval: int | None = None
    refresher: Refresher | None = None

    @property
    def rejected(self) -> bool:
        return self.status == 422

    @property
    def we_refresh(self) -> bool:
        return self.refresher == "uas"

    def start(self, now: float, min_se: int = MIN_SE_FLOOR) -> SessionTimer | None:
        """The clock to run once the 2xx is sent (None if no session timer applies)."""
        if self.rejected or self.interval is None:
            return None
        return SessionTimer(self.interval, self.we_refresh, now, min_se)


def uas_negotiate(request: SipRequest, config: SessionTimerConfig | None = None) -> UasDecision:
    """Decide the session timer for a 2xx to `request` (RFC 4028 section 9).

    Raises SipParseError for a malformed Session-Expires/Min-SE (answer 400 with its reason).
    """
    cfg = config or SessionTimerConfig()
    se = _session_expires(request)
    their_min = _min_se(request) or 0
    supports = _has_option(request, "Supported", "timer") or _has_option(
        request, "Require", "timer"
    )
    floor = max(cfg.min_se, their_min)
    if se is not None and se.interval < cfg.min_se:
        if supports:
            return UasDecision(422, [("Min-SE", str(cfg.min_se))])
        # The UAC cannot understand a 422 (a proxy added the header): raise the interval
        # to our minimum and refresh ourselves rather than accept a short interval (T19).
        log.info("Session-Expires %d below our minimum; raising to %d", se.interval, floor)
        se = SessionExpires(floor, "uas")
    if se is None:
        if not supports:
            return UasDecision()  # no timer: we may not impose one the UAC cannot refresh
        interval = max(cfg.session_expires, floor)
        refresher: Refresher = cfg.uas_prefers
    else:
        # Never longer than asked, never below either minimum.
        interval = max(min(se.interval, cfg.session_expires), floor)
        if se.refresher is not None:
            refresher = se.refresher
        else:
            refresher = cfg.uas_prefers if supports else "uas"
    if refresher == "uac" and not supports:
        refresher = "uas"
    headers = [("Session-Expires", f"{interval};refresher={refresher}")]
    if refresher == "uac":
        headers.append(("Require", "timer"))
    return UasDecision(None, headers, interval, refresher)
