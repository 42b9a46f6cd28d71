"""[board] and [ui] in phone.toml: defaults, a directory, and mistakes named by key."""

from __future__ import annotations

from typing import Any

import pytest

from firmware.provisioning.config import ConfigError, parse_config
from firmware.provisioning.ui_config import board_ui_of
from firmware.ui.model import DirectoryEntry


def _parse(**sections: Any) -> Any:
    return parse_config({"api": {"enabled": False}, **sections}, file="phone.toml")


def test_defaults_and_directory() -> None:
    assert board_ui_of(_parse()).board_profile == "sim"
    cfg = board_ui_of(
        _parse(
            ui={
                "digit_map": "2xxx|*xx",
                "inter_digit_timeout": 3,
                "voicemail": "*97",
                "directory": [{"name": "Bob", "number": "2002", "uri": "sip:bob@127.0.0.1:5070"}],
            }
        )
    )
    assert cfg.digit_map == "2xxx|*xx" and cfg.inter_digit_timeout == 3.0
    assert cfg.directory == (DirectoryEntry("Bob", "2002", "sip:bob@127.0.0.1:5070"),)


@pytest.mark.parametrize(
    ("sections", "key"),
    [
        ({"ui": {"digit_map": "[2-"}}, "ui.digit_map"),
        ({"ui": {"inter_digit_timeout": 0.1}}, "ui.inter_digit_timeout"),
        ({"ui": {"colour": "red"}}, "ui.colour"),
        ({"board": {"profile": ""}}, "board.profile"),
        ({"ui": {"directory": [{"name": "Bob", "number": "bob"}]}}, "ui.directory[0].number"),
        (
            {"ui": {"directory": [{"name": "Bob", "number": "1", "uri": "http://x"}]}},
            "ui.directory[0].uri",
        ),
    ],
)
def test_mistakes_name_the_key(sections: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as e:
        _parse(**sections)
    assert e.value.key == key and e.value.file == "phone.toml"


def test_a_bad_board_profile_is_a_config_error(tmp_path: Any) -> None:
    with pytest.raises(ConfigError) as e:
        _parse(board={"profile": "no-such-board"})
    assert e.value.key == "board.profile" and "no such board profile" in e.value.message
    bad = tmp_path / "desk.toml"
    bad.write_text('[board]\nname = "x"\ndriver = "warp"\n')
    with pytest.raises(ConfigError) as e:
        parse_config(
            {"api": {"enabled": False}, "board": {"profile": "desk.toml"}},
            file="phone.toml",
            base_dir=tmp_path,
        )
    assert e.value.key == "board.profile" and "desk.toml" in e.value.message
