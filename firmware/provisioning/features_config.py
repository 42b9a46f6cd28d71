"""Desk-phone feature sections of phone.toml: [[keys]], [blf], [mwi], [dnd], [forward],
[intercom], [privacy], [park].

Kept beside config.py (which calls `parse_features`) so the feature settings live with the
features' code; every mistake raises the same `ConfigError` naming file and key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from firmware.provisioning.config import _Section

KEY_TYPES = ("blf", "park", "speeddial")
LED_MODES = ("off", "on", "slow_flash", "fast_flash")
LED_ALIASES = {"steady": "on"}
BLF_STATES = ("idle", "ringing", "talking", "held", "parked", "unknown")
PRIVACY_VALUES = ("header", "session", "user", "id", "critical")
_KEY_RE = re.compile(r"^[A-Z][A-Z0-9_]{0,31}$")
_CODE_RE = re.compile(r"^[0-9*#]{1,16}$")
_TARGET_RE = re.compile(r"^[A-Za-z0-9*#+\-_.!~'()]{1,64}$")


@dataclass(frozen=True)
class KeyConfig:
    """One [[keys]] entry: a programmable line key."""

    key: str
    type: str  # blf | park | speeddial
    target: str  # number or sip:/sips: URI
    account: str | None = None
    label: str | None = None


@dataclass(frozen=True)
class FeaturesConfig:
    """Everything issue 5 adds to the config."""

    keys: tuple[KeyConfig, ...] = ()
    blf_expires: int = 600
    blf_leds: dict[str, str] = field(default_factory=dict)
    pickup: str = "replaces"  # replaces | code
    pickup_code: str = "**"
    group_pickup_code: str | None = None
    park_uri: str | None = None  # REFER target for the park action (a park server / orbit)
    park_code: str | None = None  # or: blind transfer to this feature code
    mwi_subscribe: bool = True
    mwi_expires: int = 3600
    mwi_uri: str | None = None  # message-summary resource; default: our own AOR
    dnd: bool = False
    dnd_status: int = 486
    dnd_on_code: str | None = None  # server-side DND: dial this to switch it on at the PBX
    dnd_off_code: str | None = None
    forward_always: str | None = None
    forward_busy: str | None = None
    forward_no_answer: str | None = None
    forward_no_answer_after: float = 20.0
    # Server-side forwarding: mode -> (code dialled with the target appended, code to cancel)
    forward_codes: dict[str, tuple[str, str]] = field(default_factory=dict)
    intercom_enabled: bool = True
    intercom_allow: tuple[str, ...] = ()
    intercom_max_delay: float = 10.0
    privacy: tuple[str, ...] = ("id",)


def _target(section: _Section, name: str, value: str) -> str:
    if value.startswith(("sip:", "sips:")) or _TARGET_RE.match(value):
        return value
    raise section.error(name, f"{value!r} is not a number or a sip:/sips: URI")


def _opt_target(section: _Section, name: str) -> str | None:
    value = section.get(name, str, None)
    if value is None or value == "":
        return None
    return _target(section, name, value)


def _code(section: _Section, name: str, default: str | None) -> str | None:
    value = section.get(name, str, default)
    if value is not None and not _CODE_RE.match(value):
        raise section.error(name, f"{value!r} is not a feature code (digits, * and #)")
    return value


def _identities(section: _Section, name: str) -> tuple[str, ...]:
    raw = section.get(name, list, [])
    for i, item in enumerate(raw):
        if not isinstance(item, str) or not item.startswith(("sip:", "sips:")):
            raise section.error(f"{name}[{i}]", "must be a sip: or sips: URI")
    return tuple(raw)


def parse_features(top: _Section, file: str) -> FeaturesConfig:
    keys: list[KeyConfig] = []
    seen: set[str] = set()
    for i, raw in enumerate(top.get("keys", list, [])):
        k = _Section(file, f"keys[{i}]", raw)
        name = k.get("key", str)
        if not _KEY_RE.match(name):
            raise k.error("key", f"{name!r} is not a key name like LINE_2")
        if name in seen:
            raise k.error("key", f"duplicate key {name!r}")
        seen.add(name)
        kind = k.get("type", str)
        if kind not in KEY_TYPES:
            raise k.error("type", f"must be one of {', '.join(KEY_TYPES)}")
        keys.append(
            KeyConfig(
                key=name,
                type=kind,
                target=_target(k, "target", k.get("target", str)),
                account=k.get("account", str, None),
                label=k.get("label", str, None),
            )
        )
        k.finish()

    blf = _Section(file, "blf", top.get("blf", dict, {}))
    expires = blf.get("expires", int, 600)
    if not 60 <= expires <= 86400:
        raise blf.error("expires", "must be between 60 and 86400 seconds")
    leds_raw = _Section(file, "blf.leds", blf.get("leds", dict, {}))
    leds: dict[str, str] = {}
    for state in BLF_STATES:
        mode = leds_raw.get(state, str, None)
        if mode is None:
            continue
        mode = LED_ALIASES.get(mode, mode)
        if mode not in LED_MODES:
            raise leds_raw.error(state, f"must be one of {', '.join(LED_MODES)} (or steady)")
        leds[state] = mode
    leds_raw.finish()
    pickup = blf.get("pickup", str, "replaces")
    if pickup not in ("replaces", "code"):
        raise blf.error("pickup", 'must be "replaces" (INVITE with Replaces) or "code"')
    pickup_code = _code(blf, "pickup_code", "**") or "**"
    group_code = _code(blf, "group_pickup_code", None)
    blf.finish()

    park = _Section(file, "park", top.get("park", dict, {}))
    park_uri = park.get("uri", str, None)
    if park_uri is not None and not park_uri.startswith(("sip:", "sips:")):
        raise park.error("uri", "must be a sip: or sips: URI (the park server or orbit)")
    park_code = _code(park, "code", None)
    park.finish()

    mwi = _Section(file, "mwi", top.get("mwi", dict, {}))
    mwi_expires = mwi.get("expires", int, 3600)
    if not 60 <= mwi_expires <= 86400 * 7:
        raise mwi.error("expires", "must be between 60 and 604800 seconds")
    mwi_uri = mwi.get("uri", str, None)
    if mwi_uri is not None and not mwi_uri.startswith(("sip:", "sips:")):
        raise mwi.error("uri", "must be a sip: or sips: URI")
    mwi_subscribe = mwi.get("subscribe", bool, True)
    mwi.finish()

    dnd = _Section(file, "dnd", top.get("dnd", dict, {}))
    dnd_on_flag = dnd.get("enabled", bool, False)
    dnd_status = dnd.get("status", int, 486)
    if dnd_status not in (486, 603, 480):
        raise dnd.error("status", "must be 486 (Busy Here), 603 (Decline) or 480")
    dnd_on, dnd_off = _code(dnd, "on_code", None), _code(dnd, "off_code", None)
    if (dnd_on is None) != (dnd_off is None):
        raise dnd.error(
            "on_code" if dnd_on is None else "off_code", "on_code and off_code go together"
        )
    dnd.finish()

    fwd = _Section(file, "forward", top.get("forward", dict, {}))
    after = fwd.get("no_answer_after", float, 20.0)
    if not 1 <= after <= 300:
        raise fwd.error("no_answer_after", "must be between 1 and 300 seconds")
    always, busy, no_answer = (
        _opt_target(fwd, "always"),
        _opt_target(fwd, "busy"),
        _opt_target(fwd, "no_answer"),
    )
    codes_raw = _Section(file, "forward.codes", fwd.get("codes", dict, {}))
    codes: dict[str, tuple[str, str]] = {}
    for mode in ("always", "busy", "no_answer"):
        on, off = _code(codes_raw, mode, None), _code(codes_raw, f"{mode}_off", None)
        if (on is None) != (off is None):
            raise codes_raw.error(mode if on is None else f"{mode}_off", "set both or neither")
        if on is not None and off is not None:
            codes[mode] = (on, off)
    codes_raw.finish()
    fwd.finish()

    ic = _Section(file, "intercom", top.get("intercom", dict, {}))
    max_delay = ic.get("max_delay", float, 10.0)
    if not 0 <= max_delay <= 60:
        raise ic.error("max_delay", "must be between 0 and 60 seconds")
    intercom_on = ic.get("enabled", bool, True)
    intercom_allow = _identities(ic, "allow")
    ic.finish()

    pv = _Section(file, "privacy", top.get("privacy", dict, {}))
    values = pv.get("header", list, ["id"])
    for i, v in enumerate(values):
        if v not in PRIVACY_VALUES:
            raise pv.error(f"header[{i}]", f"must be one of {', '.join(PRIVACY_VALUES)}")
    pv.finish()

    return FeaturesConfig(
        keys=tuple(keys),
        blf_expires=expires,
        blf_leds=leds,
        pickup=pickup,
        pickup_code=pickup_code,
        group_pickup_code=group_code,
        park_uri=park_uri,
        park_code=park_code,
        mwi_subscribe=mwi_subscribe,
        mwi_expires=mwi_expires,
        mwi_uri=mwi_uri,
        dnd=dnd_on_flag,
        dnd_status=dnd_status,
        dnd_on_code=dnd_on,
        dnd_off_code=dnd_off,
        forward_codes=codes,
        forward_always=always,
        forward_busy=busy,
        forward_no_answer=no_answer,
        forward_no_answer_after=after,
        intercom_enabled=intercom_on,
        intercom_allow=intercom_allow,
        intercom_max_delay=max_delay,
        privacy=tuple(values),
    )


def features_of(config: Any) -> FeaturesConfig:
    """The config's features (defaults for configs built without them, e.g. in tests)."""
    return getattr(config, "features", None) or FeaturesConfig()
