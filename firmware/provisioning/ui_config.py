"""[board] and [ui] of phone.toml: which board the phone runs on and how its UI behaves.

Kept beside config.py (which calls `parse_board_ui`) so the UI's settings live with the UI's
owner; mistakes raise the same `ConfigError` naming file and key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from firmware.provisioning.config import ConfigError, _Section
from firmware.ui.digitmap import DigitMap, DigitMapError
from firmware.ui.model import DirectoryEntry

DEFAULT_DIGIT_MAP = "[2-9]xxx|0[1-9]x.T|*xx|x.T"
_NUMBER_RE = re.compile(r"^[0-9*#+]{1,32}$")


@dataclass(frozen=True)
class BoardUiConfig:
    """[board] profile (built-in name or a profile file) and the [ui] settings."""

    board_profile: str = "sim"
    digit_map: str = DEFAULT_DIGIT_MAP
    inter_digit_timeout: float = 5.0
    voicemail: str | None = None
    directory: tuple[DirectoryEntry, ...] = field(default_factory=tuple)


def parse_board_ui(top: _Section, file: str, base: Path) -> BoardUiConfig:
    board = _Section(file, "board", top.get("board", dict, {}))
    profile = board.get("profile", str, "sim")
    if not profile:
        raise board.error("profile", 'must name a profile ("sim") or a profile file')
    if profile.endswith(".toml"):
        profile = str((base / profile).expanduser())
    from board.profile import ProfileError, load_profile  # the whole profile is checked at load

    try:
        load_profile(profile, base)
    except ProfileError as e:
        raise board.error("profile", str(e)) from None
    board.finish()

    ui = _Section(file, "ui", top.get("ui", dict, {}))
    digit_map = ui.get("digit_map", str, DEFAULT_DIGIT_MAP)
    try:
        DigitMap(digit_map)
    except DigitMapError as e:
        raise ui.error("digit_map", str(e)) from None
    timeout = ui.get("inter_digit_timeout", float, 5.0)
    if not 0.5 <= timeout <= 60:
        raise ui.error("inter_digit_timeout", "must be between 0.5 and 60 seconds")
    voicemail = ui.get("voicemail", str, None)
    entries: list[DirectoryEntry] = []
    for i, raw in enumerate(ui.get("directory", list, [])):
        entry = _Section(file, f"ui.directory[{i}]", raw)
        name = entry.get("name", str)
        number = entry.get("number", str)
        if not name.strip():
            raise entry.error("name", "must not be empty")
        if not _NUMBER_RE.match(number):
            raise entry.error("number", f"{number!r} is not dialable (digits, *, #, +)")
        uri = entry.get("uri", str, None)
        if uri is not None and not uri.startswith(("sip:", "sips:")):
            raise entry.error("uri", f"{uri!r} must be a sip: or sips: URI")
        entry.finish()
        entries.append(DirectoryEntry(name.strip(), number, uri))
    ui.finish()
    return BoardUiConfig(profile, digit_map, timeout, voicemail, tuple(entries))


def board_ui_of(config: Any) -> BoardUiConfig:
    """The [board]/[ui] settings of a PhoneConfig (defaults when it was built without them)."""
    value = getattr(config, "board_ui", None)
    return value if isinstance(value, BoardUiConfig) else BoardUiConfig()


__all__ = ["BoardUiConfig", "ConfigError", "parse_board_ui", "board_ui_of"]
