"""Pure parts of the desk features: message-summary, auto-answer requests, anonymity, config."""

from __future__ import annotations

import pytest

from firmware.call.incoming import auto_answer_delay
from firmware.call.mwi import MAX_COUNT, parse_message_summary
from firmware.call.privacy import contact_without_user
from firmware.provisioning.config import ConfigError, parse_config
from firmware.sip.message import make_request


def test_message_summary_counts_clamp_and_errors() -> None:
    s = parse_message_summary(
        b"Messages-Waiting: yes\r\nMessage-Account: sip:*97@pbx\r\n"
        b"Voice-Message: 2/8 (1/0)\r\nFax-Message: 9/9\r\n"
    )
    assert (s.waiting, s.new, s.old, s.urgent_new, s.urgent_old) == (True, 2, 8, 1, 0)
    assert s.account == "sip:*97@pbx"
    huge = parse_message_summary(b"Messages-Waiting: yes\r\nVoice-Message: 99999999999/0\r\n")
    assert huge.new == MAX_COUNT
    assert parse_message_summary(b"Messages-Waiting: no\r\n").waiting is False
    with pytest.raises(ValueError, match="Messages-Waiting"):
        parse_message_summary(b"Voice-Message: 1/1\r\n")
    with pytest.raises(ValueError, match="Voice-Message"):
        parse_message_summary(b"Messages-Waiting: yes\r\nVoice-Message: lots\r\n")


def _invite(*headers: tuple[str, str]) -> object:
    base = [
        ("Via", "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKx"),
        ("From", "<sip:a@x>;tag=1"),
        ("To", "<sip:b@y>"),
        ("Call-ID", "c"),
        ("CSeq", "1 INVITE"),
    ]
    names = {n.lower() for n, _ in headers}
    base = [(n, v) for n, v in base if n.lower() not in names]
    return make_request("INVITE", "sip:b@y", headers=[*base, *headers])


@pytest.mark.parametrize(
    ("header", "delay"),
    [
        (("Answer-Mode", "Auto"), 0.0),
        (("Priv-Answer-Mode", "Auto;require"), 0.0),
        (("Answer-Mode", "Manual"), None),
        (("Call-Info", "<sip:pbx>;answer-after=3"), 3.0),
        (("Alert-Info", "<http://x/ring>;info=alert-autoanswer"), 0.0),
        (("Alert-Info", "<http://x/ring>;info=alert-internal"), None),
        (("Subject", "hello"), None),
    ],
)
def test_auto_answer_requests(header: tuple[str, str], delay: float | None) -> None:
    assert auto_answer_delay(_invite(header)) == delay  # type: ignore[arg-type]


def test_contact_loses_its_user_part() -> None:
    assert contact_without_user("<sip:1061@192.0.2.10:5060>") == "<sip:192.0.2.10:5060>"
    assert (
        contact_without_user("<sip:1061@[2001:db8::1]:5061;transport=tls>")
        == "<sip:[2001:db8::1]:5061;transport=tls>"
    )


@pytest.mark.parametrize(
    ("doc", "key"),
    [
        ({"keys": [{"key": "LINE_2", "type": "lamp", "target": "1002"}]}, "keys[0].type"),
        ({"keys": [{"key": "line2", "type": "blf", "target": "1002"}]}, "keys[0].key"),
        ({"keys": [{"key": "LINE_2", "type": "blf", "target": "a b"}]}, "keys[0].target"),
        ({"blf": {"leds": {"ringing": "disco"}}}, "blf.leds.ringing"),
        ({"blf": {"pickup": "magic"}}, "blf.pickup"),
        ({"dnd": {"status": 404}}, "dnd.status"),
        ({"forward": {"no_answer_after": 0}}, "forward.no_answer_after"),
        ({"intercom": {"allow": ["1001"]}}, "intercom.allow[0]"),
        ({"privacy": {"header": ["none"]}}, "privacy.header[0]"),
        ({"mwi": {"expirse": 60}}, "mwi.expirse"),
    ],
)
def test_feature_config_errors_name_the_key(doc: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"api": {"enabled": False}, **doc})
    assert err.value.key == key


def test_feature_config_defaults_and_values() -> None:
    cfg = parse_config(
        {
            "api": {"enabled": False},
            "keys": [{"key": "LINE_2", "type": "blf", "target": "1002", "label": "Bob"}],
            "blf": {"leds": {"talking": "steady", "held": "fast_flash"}, "pickup": "code"},
            "forward": {"always": "sip:voicemail@pbx", "no_answer_after": 12},
            "dnd": {"enabled": True, "status": 603},
        }
    ).features
    assert cfg.keys[0].label == "Bob" and cfg.pickup == "code"
    assert cfg.blf_leds == {"talking": "on", "held": "fast_flash"}
    assert cfg.forward_always == "sip:voicemail@pbx" and cfg.forward_no_answer_after == 12
    assert cfg.dnd and cfg.dnd_status == 603 and cfg.privacy == ("id",)


def test_a_retry_keeps_only_the_realms_that_challenged_this_request() -> None:
    """A pickup INVITE meets the proxy's 407 and the caller's own 401: the retry answers both,
    but credentials cached for other servers are not sprayed into it (RFC 3261 22.3)."""
    from firmware.sip.auth import DigestClient, DigestCredentials, credential_realms
    from firmware.sip.ids import SeededIds
    from firmware.sip.parser import parse_message

    digest = DigestClient(DigestCredentials("1061", "pw1061"), SeededIds("realms"))

    def answered(realm: str, status: int, cseq: int) -> object:
        request = _invite(("CSeq", f"{cseq} INVITE"))
        name = "Proxy-Authenticate" if status == 407 else "WWW-Authenticate"
        raw = (
            f"SIP/2.0 {status} Challenge\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKx\r\n"
            "From: <sip:a@x>;tag=1\r\nTo: <sip:b@y>;tag=2\r\nCall-ID: c\r\n"
            f'CSeq: {cseq} INVITE\r\n{name}: Digest realm="{realm}", nonce="n-{realm}", '
            'qop="auth", algorithm=MD5\r\nContent-Length: 0\r\n\r\n'
        )
        assert digest.authorize(request, parse_message(raw.encode()))  # type: ignore[arg-type]
        return request

    answered("elsewhere", 401, 1)  # some other server the account met before
    first = answered("proxy", 407, 2)
    assert credential_realms(first) == ["proxy"]  # type: ignore[arg-type]
    retry = _invite(("CSeq", "3 INVITE"))
    digest.pre_authorize(retry, realms=credential_realms(first))  # type: ignore[arg-type]
    assert credential_realms(retry) == ["proxy"]  # type: ignore[arg-type]
