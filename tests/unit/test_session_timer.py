"""RFC 4028 session timers: negotiation on the wire bytes and the refresh/expiry clock."""

from __future__ import annotations

import pytest

from firmware.sip.errors import SipParseError
from firmware.sip.message import SipRequest, SipResponse, make_request, make_response
from firmware.sip.parser import parse_message
from firmware.sip.session_timer import (
    SessionExpires,
    SessionTimer,
    SessionTimerConfig,
    UacSessionTimer,
    parse_min_se,
    parse_session_expires,
    uas_negotiate,
)


def invite(*extra: str) -> SipRequest:
    """An INVITE as it arrives from the wire, with the given extra header lines."""
    raw = (
        "INVITE sip:bob@192.0.2.20 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:alice@example.com>;tag=1928301774\r\n"
        "To: <sip:bob@example.com>\r\n"
        "Call-ID: a84b4c76e66710@192.0.2.10\r\n"
        "CSeq: 314159 INVITE\r\n"
        "Contact: <sip:alice@192.0.2.10>\r\n"
        + "".join(f"{h}\r\n" for h in extra)
        + "Content-Length: 0\r\n\r\n"
    )
    msg = parse_message(raw.encode())
    assert isinstance(msg, SipRequest)
    return msg


def response(status: int, *extra: str) -> SipResponse:
    raw = (
        f"SIP/2.0 {status} Whatever\r\n"
        "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds\r\n"
        "From: <sip:alice@example.com>;tag=1928301774\r\n"
        "To: <sip:bob@example.com>;tag=a6c85cf\r\n"
        "Call-ID: a84b4c76e66710@192.0.2.10\r\n"
        "CSeq: 314159 INVITE\r\n" + "".join(f"{h}\r\n" for h in extra) + "Content-Length: 0\r\n\r\n"
    )
    msg = parse_message(raw.encode())
    assert isinstance(msg, SipResponse)
    return msg


def answer_bytes(req: SipRequest, status: int, headers: list[tuple[str, str]]) -> bytes:
    resp = make_response(req, status, to_tag="a6c85cf")
    for name, value in headers:
        resp.headers.add(name, value)
    return resp.serialize()


# ------------------------------------------------------------------ header grammar


def test_parse_session_expires_and_min_se() -> None:
    assert parse_session_expires("1800") == SessionExpires(1800)
    assert parse_session_expires("4000;refresher=UAC") == SessionExpires(4000, "uac")
    assert parse_session_expires("90 ; foo=bar;refresher=uas") == SessionExpires(90, "uas")
    assert str(SessionExpires(1800, "uas")) == "1800;refresher=uas"
    assert parse_min_se("600;x=y") == 600
    for bad in ["", "abc", "-5", "1800;refresher=proxy"]:
        with pytest.raises(SipParseError):
            parse_session_expires(bad)
    with pytest.raises(SipParseError):
        parse_min_se("soon")


def test_config_never_goes_below_90_seconds() -> None:
    assert SessionTimerConfig(session_expires=120, min_se=30).min_se == 90
    with pytest.raises(ValueError, match="below Min-SE"):
        SessionTimerConfig(session_expires=60)


# ------------------------------------------------------------------ UAC


def test_uac_invite_carries_supported_session_expires_and_min_se() -> None:
    uac = UacSessionTimer(SessionTimerConfig(session_expires=1800, min_se=120))
    req = make_request(
        "INVITE",
        "sip:bob@192.0.2.20",
        headers=[("Call-ID", "x@y"), ("CSeq", "1 INVITE"), ("Supported", "replaces")],
    )
    uac.apply(req.headers)
    wire = req.serialize()
    assert b"Supported: replaces, timer\r\n" in wire
    assert b"Session-Expires: 1800\r\n" in wire
    assert b"Min-SE: 120\r\n" in wire
    uac.apply(req.headers)  # idempotent: no second "timer"
    assert req.serialize().count(b"timer") == 1
    assert uac.request_headers() == [
        ("Supported", "timer"),
        ("Session-Expires", "1800"),
        ("Min-SE", "120"),
    ]


def test_uac_422_retry_uses_the_larger_min_se() -> None:
    uac = UacSessionTimer(SessionTimerConfig(session_expires=120))
    assert uac.handle_422(response(422, "Min-SE: 300"))
    assert uac.request_headers()[1:] == [("Session-Expires", "300"), ("Min-SE", "300")]
    # A second 422 with no larger demand would loop: give up instead.
    assert not uac.handle_422(response(422, "Min-SE: 300"))
    assert not uac.handle_422(response(422, "Min-SE: 200"))
    assert not UacSessionTimer().handle_422(response(422))
    assert not UacSessionTimer().handle_422(response(422, "Min-SE: never"))


def test_uac_422_keeps_a_larger_session_expires() -> None:
    uac = UacSessionTimer(SessionTimerConfig(session_expires=1800))
    assert uac.handle_422(response(422, "Min-SE: 600"))
    assert uac.request_headers()[1:] == [("Session-Expires", "1800"), ("Min-SE", "600")]


def test_uac_2xx_we_refresh_at_half_the_interval() -> None:
    uac = UacSessionTimer()
    timer = uac.handle_2xx(
        response(200, "Session-Expires: 600;refresher=uac", "Require: timer"), 1000.0
    )
    assert timer is not None and timer.we_refresh and timer.interval == 600
    assert timer.get_timer() == 1300.0
    assert timer.handle_timer(1299.9) is None
    assert timer.handle_timer(1300.0) == "refresh"
    assert timer.handle_timer(1300.0) is None  # one refresh per interval, never a burst
    assert timer.get_timer() == 1600.0  # the refresh never completed: the session ends
    assert timer.handle_timer(1600.0) == "expire"
    assert timer.get_timer() is None and timer.handle_timer(5000.0) is None


def test_uac_2xx_peer_refreshes_we_bye_before_expiry() -> None:
    timer = UacSessionTimer().handle_2xx(response(200, "Session-Expires: 1800;refresher=uas"), 0.0)
    assert timer is not None and not timer.we_refresh
    assert timer.get_timer() == 1800 - 32  # min(32, N/3) before expiry
    assert timer.handle_timer(1767.0) is None
    timer.refreshed(1000.0)  # the peer's re-INVITE/UPDATE succeeded
    assert timer.get_timer() == 1000 + 1768
    assert timer.handle_timer(2768.0) == "expire"


def test_short_interval_bye_margin_is_a_third() -> None:
    timer = SessionTimer(90, we_refresh=False, now=10.0)
    assert timer.get_timer() == 10 + 90 - 30


def test_uac_2xx_without_session_expires_means_no_timer() -> None:
    assert UacSessionTimer().handle_2xx(response(200), 0.0) is None
    assert UacSessionTimer().handle_2xx(response(200, "Session-Expires: soon"), 0.0) is None


def test_uac_2xx_without_refresher_means_we_refresh() -> None:
    uac = UacSessionTimer()
    timer = uac.handle_2xx(response(200, "Session-Expires: 900"), 0.0)
    assert timer is not None and timer.we_refresh and uac.refresher == "uac"


def test_t19_a_tiny_interval_in_a_2xx_never_makes_us_refresh_faster_than_our_minimum() -> None:
    timer = UacSessionTimer().handle_2xx(response(200, "Session-Expires: 10;refresher=uac"), 0.0)
    assert timer is not None and timer.interval == 90
    assert timer.get_timer() == 45.0
    assert [timer.handle_timer(t) for t in (5.0, 10.0, 44.9)] == [None, None, None]
    assert timer.handle_timer(45.0) == "refresh"
    timer.refreshed(45.5, interval=1)  # even a renegotiation cannot shrink it
    assert timer.interval == 90 and timer.get_timer() == 90.5


def test_refresh_request_names_the_current_refresher_and_interval() -> None:
    uac = UacSessionTimer()
    timer = uac.handle_2xx(response(200, "Session-Expires: 600;refresher=uac"), 0.0)
    assert timer is not None
    uac.for_refresh(timer)
    assert ("Session-Expires", "600;refresher=uac") in uac.request_headers()


def test_refreshed_can_swap_roles() -> None:
    timer = SessionTimer(600, we_refresh=True, now=0.0)
    timer.refreshed(100.0, interval=900, we_refresh=False)
    assert (timer.interval, timer.we_refresh, timer.get_timer()) == (900, False, 100 + 900 - 32)
    timer.stop()
    assert timer.get_timer() is None and timer.handle_timer(10_000.0) is None


# ------------------------------------------------------------------ UAS


def test_t19_uas_answers_422_with_min_se_for_a_short_interval() -> None:
    req = invite("Supported: timer", "Session-Expires: 30;refresher=uas")
    decision = uas_negotiate(req)
    assert decision.rejected and decision.status == 422
    assert decision.start(0.0) is None
    wire = answer_bytes(req, 422, decision.response_headers)
    assert wire.startswith(b"SIP/2.0 422 Session Interval Too Small\r\n")
    assert b"\r\nMin-SE: 90\r\n" in wire


def test_uas_422_uses_our_configured_minimum() -> None:
    req = invite("Supported: timer", "Session-Expires: 300")
    decision = uas_negotiate(req, SessionTimerConfig(min_se=600, session_expires=1800))
    assert decision.response_headers == [("Min-SE", "600")]


def test_uas_short_interval_from_a_uac_without_timer_support_is_raised_not_rejected() -> None:
    # A proxy inserted the header; the UAC could not understand a 422.
    req = invite("Session-Expires: 30")
    decision = uas_negotiate(req)
    assert not decision.rejected
    assert decision.response_headers == [("Session-Expires", "90;refresher=uas")]
    timer = decision.start(0.0)
    assert timer is not None and timer.we_refresh and timer.get_timer() == 45.0


def test_uas_2xx_echoes_the_interval_with_the_requested_refresher() -> None:
    req = invite("Supported: timer", "Session-Expires: 1800;refresher=uac", "Min-SE: 90")
    decision = uas_negotiate(req)
    wire = answer_bytes(req, 200, decision.response_headers)
    assert b"\r\nSession-Expires: 1800;refresher=uac\r\n" in wire
    assert b"\r\nRequire: timer\r\n" in wire  # the UAC must know it has to refresh
    timer = decision.start(50.0)
    assert timer is not None and not timer.we_refresh and timer.get_timer() == 50 + 1768


def test_uas_never_answers_longer_than_requested() -> None:
    req = invite("Supported: timer", "Session-Expires: 120")
    decision = uas_negotiate(req, SessionTimerConfig(session_expires=1800))
    assert decision.interval == 120
    assert ("Session-Expires", "120;refresher=uac") in decision.response_headers


def test_uas_may_shorten_to_its_own_interval_but_not_below_any_min_se() -> None:
    cfg = SessionTimerConfig(session_expires=300)
    shortened = uas_negotiate(invite("Supported: timer", "Session-Expires: 1800"), cfg)
    assert shortened.interval == 300
    req = invite("Supported: timer", "Session-Expires: 1800", "Min-SE: 600")
    assert uas_negotiate(req, cfg).interval == 600


def test_uas_refresher_uas_in_request_is_honoured_without_require() -> None:
    req = invite("Supported: timer", "Session-Expires: 600;refresher=uas")
    decision = uas_negotiate(req)
    assert decision.response_headers == [("Session-Expires", "600;refresher=uas")]
    timer = decision.start(0.0)
    assert timer is not None and timer.we_refresh and timer.get_timer() == 300.0


def test_uas_chooses_the_refresher_when_the_request_does_not() -> None:
    req = invite("Supported: timer", "Session-Expires: 600")
    assert uas_negotiate(req).refresher == "uac"
    prefer_us = SessionTimerConfig(uas_prefers="uas")
    assert uas_negotiate(req, prefer_us).response_headers == [
        ("Session-Expires", "600;refresher=uas")
    ]


def test_uas_adds_a_timer_for_a_supporting_uac_that_asked_for_none() -> None:
    req = invite("Supported: 100rel, timer")
    decision = uas_negotiate(req, SessionTimerConfig(session_expires=900))
    assert decision.response_headers == [
        ("Session-Expires", "900;refresher=uac"),
        ("Require", "timer"),
    ]


def test_uas_imposes_nothing_on_a_uac_without_timer_support() -> None:
    decision = uas_negotiate(invite())
    assert not decision.rejected and decision.response_headers == [] and decision.start(0) is None


def test_uas_refresher_uac_for_a_non_supporting_uac_becomes_uas() -> None:
    decision = uas_negotiate(invite("Session-Expires: 600;refresher=uac"))
    assert decision.response_headers == [("Session-Expires", "600;refresher=uas")]


def test_uas_malformed_headers_raise_parse_errors_for_a_400() -> None:
    with pytest.raises(SipParseError, match="Session-Expires"):
        uas_negotiate(invite("Supported: timer", "Session-Expires: half an hour"))
    with pytest.raises(SipParseError, match="Min-SE"):
        uas_negotiate(invite("Supported: timer", "Session-Expires: 1800", "Min-SE: x"))


def test_compact_form_x_is_understood() -> None:
    decision = uas_negotiate(invite("k: timer", "x: 30"))
    assert decision.rejected


def test_full_negotiation_uac_422_then_2xx() -> None:
    """A UAC asking 60 s meets a UAS wanting 300 s: 422, retry, 2xx, then the clock."""
    uac = UacSessionTimer(SessionTimerConfig(session_expires=90))
    uas_cfg = SessionTimerConfig(session_expires=1800, min_se=300)
    first = invite(*(f"{n}: {v}" for n, v in uac.request_headers()))
    d1 = uas_negotiate(first, uas_cfg)
    assert d1.rejected
    assert uac.handle_422(response(422, *(f"{n}: {v}" for n, v in d1.response_headers)))
    second = invite(*(f"{n}: {v}" for n, v in uac.request_headers()))
    assert second.headers.get("Min-SE") == "300"
    d2 = uas_negotiate(second, uas_cfg)
    assert not d2.rejected and d2.interval == 300
    ok = response(200, *(f"{n}: {v}" for n, v in d2.response_headers))
    timer = uac.handle_2xx(ok, 10.0)
    assert timer is not None and timer.we_refresh and timer.get_timer() == 160.0
