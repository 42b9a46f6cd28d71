"""Config validation: every mistake names the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from firmware.provisioning.config import ConfigError, load_config

GOOD = """
[device]
name = "Desk"
state_dir = "state"
[[accounts]]
id = "line1"
user = "1001"
password = "pw"
domain = "127.0.0.1"
registrar = "sip:127.0.0.1:5070;transport=tcp"
expires = 60
[sip]
listen = ["udp:127.0.0.1:0", "tcp:[::1]:0"]
[api]
listen = "127.0.0.1:0"
token = "0123456789abcdef"
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "phone.toml"
    p.write_text(text)
    return p


def test_good_config_loads(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, GOOD))
    acc = cfg.accounts[0]
    assert acc.registrar.port == 5070 and acc.registrar.transport == "tcp"
    assert str(acc.aor) == "sip:1001@127.0.0.1"
    assert cfg.sip.listen[1].host == "::1"
    assert cfg.device.state_dir == tmp_path / "state"
    assert cfg.api.port == 0


def test_shipped_example_is_valid() -> None:
    example = Path(__file__).resolve().parents[2] / "firmware/examples/phone.toml"
    assert load_config(example).accounts[0].user == "1001"


@pytest.mark.parametrize(
    ("change", "key", "words"),
    [
        (("expires = 60", 'expires = "60"'), "accounts[0].expires", "must be an integer"),
        (("expires = 60", "expires = 5"), "accounts[0].expires", "between 10"),
        (('user = "1001"', 'usr = "1001"'), "accounts[0].user", "is required"),
        (
            ('password = "pw"', 'password = "pw"\ncolour = "red"'),
            "accounts[0].colour",
            "unknown key",
        ),
        (('"tcp:[::1]:0"', '"sctp:[::1]:0"'), "sip.listen[1]", "transport:host:port"),
        (('token = "0123456789abcdef"', 'token = "short"'), "api.token", "at least 16"),
        (
            ('registrar = "sip:127.0.0.1:5070;transport=tcp"', 'registrar = "http://x"'),
            "accounts[0].registrar",
            "sip: or sips:",
        ),
    ],
)
def test_bad_values_name_the_key(
    tmp_path: Path, change: tuple[str, str], key: str, words: str
) -> None:
    path = write(tmp_path, GOOD.replace(*change))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key == key
    assert words in info.value.message
    assert str(path) in str(info.value)


def test_invalid_toml_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[device\n"))


def test_udp_registrar_needs_a_udp_listener(tmp_path: Path) -> None:
    text = GOOD.replace(";transport=tcp", "").replace('"udp:127.0.0.1:0", ', "")
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert info.value.key == "accounts[0].registrar"
    assert "no udp entry" in info.value.message


def test_tls_registrar_needs_no_listener(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, GOOD.replace("transport=tcp", "transport=tls")))
    assert cfg.accounts[0].registrar.transport == "tls"


def test_ipv6_domain_makes_a_bracketed_aor(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, GOOD.replace('domain = "127.0.0.1"', 'domain = "::1"')))
    assert str(cfg.accounts[0].aor) == "sip:1001@[::1]"
