"""Transfer policy pieces that need no network: the [transfer] config section and ReferPolicy.

The wire behaviour of transfers is in test_refer.py; here: config validation names the key, the
toll-fraud patterns match the way an administrator expects (escapes and visual separators do
not get a number past the deny list), and parse_refer_to keeps only what it may.
"""

from __future__ import annotations

from typing import Any

import pytest

from firmware.call.refer import DEFAULT_DENY, ReferPolicy, ReferRefused, parse_refer_to
from firmware.provisioning.config import ConfigError, parse_config
from firmware.sip.message import make_request
from firmware.sip.uri import SipURI, parse_uri

BASE: dict[str, Any] = {"api": {"enabled": False}}


def uri(text: str) -> SipURI:
    parsed = parse_uri(text)
    assert isinstance(parsed, SipURI)
    return parsed


def test_transfer_config_defaults_and_values() -> None:
    default = parse_config(BASE).transfer
    assert (default.allow_refer, default.allow_out_of_dialog, default.allow, default.deny) == (
        True,
        True,
        (),
        None,
    )
    cfg = parse_config(
        {**BASE, "transfer": {"allow_refer": False, "allow": ["0044*"], "deny": ["00*", "+*"]}}
    ).transfer
    assert cfg.allow_refer is False and cfg.allow == ("0044*",) and cfg.deny == ("00*", "+*")
    assert (default.allow_from, default.auth_users) == ((), {})
    assert (default.norefersub, default.notify_timeout) == (True, 32.0)
    assert default.auth_algorithms == ("SHA-256", "MD5")
    md5 = parse_config({**BASE, "transfer": {"auth_algorithms": ["MD5"]}}).transfer
    assert md5.auth_algorithms == ("MD5",)
    assert default.trust_asserted_identity is False
    assert default.replaces_referred_by is True
    off = parse_config({**BASE, "transfer": {"replaces_referred_by": False}}).transfer
    assert off.replaces_referred_by is False
    auth = parse_config(
        {
            **BASE,
            "transfer": {
                "allow_from": ["sip:1001@pbx.example"],
                "auth_users": {"1001": "s3cret"},
                "notify_timeout": 10,
                "norefersub": False,
            },
        }
    ).transfer
    assert auth.allow_from == ("sip:1001@pbx.example",) and auth.auth_users == {"1001": "s3cret"}
    assert (auth.notify_timeout, auth.norefersub) == (10.0, False)
    assert "s3cret" not in repr(auth)


@pytest.mark.parametrize(
    ("section", "key", "words"),
    [
        ({"allow": [3]}, "transfer.allow[0]", "glob pattern"),
        ({"deny": ["00 *"]}, "transfer.deny[0]", "glob pattern"),
        ({"deny": "00*"}, "transfer.deny", "must be a list"),
        ({"allow_refer": "yes"}, "transfer.allow_refer", "true or false"),
        ({"colour": "red"}, "transfer.colour", "unknown key"),
        ({"allow_from": ["http://pbx"]}, "transfer.allow_from[0]", "sip: or sips: URI"),
        ({"allow_from": [7]}, "transfer.allow_from[0]", "sip: URI string"),
        ({"auth_users": {"1001": ""}}, "transfer.auth_users.1001", "password"),
        ({"notify_timeout": 0}, "transfer.notify_timeout", "between 1 and 600"),
        ({"norefersub": "no"}, "transfer.norefersub", "true or false"),
        ({"auth_algorithms": ["SHA-1"]}, "transfer.auth_algorithms", "SHA-256"),
        ({"auth_algorithms": []}, "transfer.auth_algorithms", "SHA-256"),
    ],
)
def test_transfer_config_mistakes_name_the_key(
    section: dict[str, Any], key: str, words: str
) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({**BASE, "transfer": section})
    assert info.value.key == key and words in info.value.message


@pytest.mark.parametrize(
    ("user", "allowed"),
    [
        ("1002", True),
        ("0800123", True),  # national freephone: not on the default list
        ("00441234", False),
        ("011441234", False),
        ("+441234", False),
        ("%2B441234", False),  # escaped '+' is still '+'
        ("%30%30441234", False),  # escaped digits too
        ("0-0-44", False),  # visual separators removed first
        ("(900)5551234", False),
        ("19005551234", False),
    ],
)
def test_default_deny_patterns(user: str, allowed: bool) -> None:
    assert ReferPolicy().target_allowed(uri(f"sip:{user}@pbx.example")) is allowed


def test_allow_overrides_deny_and_deny_is_replaceable() -> None:
    policy = ReferPolicy(allow=("0044*",))
    assert policy.target_allowed(uri("sip:0044123@pbx"))
    assert not policy.target_allowed(uri("sip:0033123@pbx"))
    assert ReferPolicy(deny=()).target_allowed(uri("sip:0033123@pbx"))
    assert "00*" in DEFAULT_DENY


def refer(*refer_to: str) -> Any:
    headers = [
        ("Via", "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1"),
        ("From", "<sip:a@192.0.2.1>;tag=1"),
        ("To", "<sip:b@192.0.2.2>;tag=2"),
        ("Call-ID", "x"),
        ("CSeq", "2 REFER"),
        *[("Refer-To", r) for r in refer_to],
    ]
    return make_request("REFER", "sip:b@192.0.2.2", headers=headers)


def test_parse_refer_to_keeps_only_replaces_and_require() -> None:
    target = parse_refer_to(
        refer("<sip:c@192.0.2.3;transport=tcp?Replaces=a%3Bto-tag%3D1&Route=x&Require=replaces>"),
        ReferPolicy(),
    )
    assert str(target.uri) == "sip:c@192.0.2.3;transport=tcp"
    assert target.headers == [("Replaces", "a;to-tag=1"), ("Require", "replaces")]
    assert target.dropped == ["Route"]


@pytest.mark.parametrize(
    ("refer_to", "status"),
    [
        (("<sip:c@192.0.2.3>", "<sip:d@192.0.2.3>"), 400),
        ((), 400),
        (("<not a uri",), 400),
        (("<https://example.com/x>",), 403),
        (("<sips:c@192.0.2.3;method=REGISTER>",), 403),
        (("<sip:+1900555@192.0.2.3>",), 403),
    ],
)
def test_parse_refer_to_refusals(refer_to: tuple[str, ...], status: int) -> None:
    with pytest.raises(ReferRefused) as info:
        parse_refer_to(refer(*refer_to), ReferPolicy())
    assert info.value.status == status and info.value.reason
