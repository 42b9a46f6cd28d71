"""Board profiles: the shipped ones load; every mistake names the file and the key."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from board.ports import ALL_KEYS, HOOK
from board.profile import PROFILE_DIR, ProfileError, load_profile, parse_profile, shipped_profiles


def test_shipped_profiles_load_by_name() -> None:
    assert {"pi-reference", "sim"} <= set(shipped_profiles())
    pi = load_profile("pi-reference")
    assert pi.driver == "gpio" and pi.hook is not None and pi.hook.pin == 17
    assert pi.matrix is not None and len(pi.matrix.rows) == 7 and len(pi.matrix.cols) == 5
    # the reference keypad has every digit, every function key and the hook
    assert {f"DIGIT_{d}" for d in "0123456789"} | {"STAR", "POUND", "HOLD", "TRANSFER", "CONF",
                                                  "REDIAL", "MUTE", "SPEAKER", "HEADSET",
                                                  "VOL_UP", "VOL_DOWN", "DND", "VOICEMAIL",
                                                  "OK", "CANCEL", "UP", "DOWN", HOOK} <= pi.keys
    assert pi.lcd.type == "hd44780" and (pi.lcd.cols, pi.lcd.rows, pi.lcd.address) == (20, 4, 0x27)
    assert pi.ringer.type == "buzzer" and pi.ringer.pin == 18
    assert set(pi.audio) == {"handset", "speaker", "headset"}
    sim = load_profile("sim")
    assert sim.driver == "sim" and sim.keys == ALL_KEYS and "MWI" in sim.leds
    assert sim.timing.debounce == pytest.approx(0.02)


def test_profile_by_path_relative_to_a_base(tmp_path: Path) -> None:
    (tmp_path / "mine.toml").write_text('[board]\nname = "Mine"\ndriver = "sim"\n')
    assert load_profile("mine.toml", base=tmp_path).name == "Mine"


def _pi() -> dict[str, Any]:
    return tomllib.loads((PROFILE_DIR / "pi-reference.toml").read_text())


def _error(data: dict[str, Any]) -> ProfileError:
    with pytest.raises(ProfileError) as info:
        parse_profile(data, "my-board.toml")
    assert str(info.value).startswith("my-board.toml: ")
    return info.value


@pytest.mark.parametrize("change,key,words", [
    (lambda d: d["board"].update(driver="arduino"), "board.driver", "not one of gpio, sim"),
    (lambda d: d["board"].pop("name"), "board.name", "is required"),
    (lambda d: d["board"].update(colour="red"), "board.colour", "unknown key"),
    (lambda d: d["hook"].update(pin=99), "hook.pin", "BCM pin 99 does not exist"),
    (lambda d: d["hook"].update(pin=True), "hook.pin", "not a boolean"),
    (lambda d: d["matrix"]["layout"][0].__setitem__(0, "DIGIT_X"), "matrix.layout[0][0]",
     "'DIGIT_X' is not a key name"),
    (lambda d: d["matrix"]["layout"][1].pop(), "matrix.layout[1]", "must list 5 keys"),
    (lambda d: d["matrix"]["rows"].pop(), "matrix.layout", "one list per row pin (6)"),
    (lambda d: d["leds"]["pins"].update(MWI=17), "leds.pins.MWI",
     "pin 17 is already used by hook.pin"),
    (lambda d: d["leds"]["pins"].update(BLINKY=4), "leds.pins.BLINKY", "is not an LED name"),
    (lambda d: d["lcd"].update(type="oled"), "lcd.type", "not one of hd44780, serial"),
    (lambda d: d["lcd"].update(address=0x99), "lcd.address", "0x99 is not a 7-bit I2C address"),
    (lambda d: d["lcd"].update(rows=3), "lcd.rows", "must be 1, 2 or 4"),
    (lambda d: d["lcd"].update(expander="PCF9999"), "lcd.expander", "not one of PCF8574"),
    (lambda d: d["ringer"].update(cadence="FR"), "ringer.cadence", "'FR' is not one of"),
    (lambda d: d["ringer"].update(cadence=[1.0]), "ringer.cadence", "even number"),
    (lambda d: d["ringer"].pop("pin"), "ringer.pin", "is required"),
    (lambda d: d["timing"].update(debounce_ms=-1), "timing.debounce_ms", "between 0 and 60000"),
    (lambda d: d["timing"].update(repeat_keys=["VOLUME"]), "timing.repeat_keys[0]",
     "not a key name"),
    (lambda d: d["audio"].update(handset={"capture": 3}), "audio.handset.capture",
     "must be a string"),
    (lambda d: d["audio"].update(earpiece={}), "audio.earpiece", "unknown key"),
    (lambda d: d.update(buttons={"pins": {"HOLD": 4}}), "buttons.pins.HOLD",
     "is also in the [matrix]"),
    (lambda d: d.update(buttons={"pins": {"HOOK": 4}}), "buttons.pins.HOOK", "[hook] table"),
    (lambda d: d.pop("hook"), "hook", "needs a hook switch"),
])
def test_mistakes_name_file_and_key(change: Any, key: str, words: str) -> None:
    data = _pi()
    change(data)
    err = _error(data)
    assert err.key == key, err
    assert words in err.message, err


def test_serial_lcd_section() -> None:
    data = _pi()
    data["lcd"] = {"type": "serial", "protocol": "serlcd", "port": "/dev/ttyAMA0", "baud": 9600,
                   "cols": 16, "rows": 2}
    lcd = parse_profile(data, "x.toml").lcd
    assert (lcd.protocol, lcd.port, lcd.cols, lcd.rows) == ("serlcd", "/dev/ttyAMA0", 16, 2)
    data["lcd"]["baud"] = 1234
    assert _error(data).key == "lcd.baud"
    data["lcd"]["baud"] = 9600
    data["lcd"]["protocol"] = "lcdproc"
    assert _error(data).key == "lcd.protocol"


def test_unreadable_profiles(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="no such board profile .*shipped: .*pi-reference"):
        load_profile("nonexistent")
    bad = tmp_path / "bad.toml"
    bad.write_text("[board\n")
    with pytest.raises(ProfileError, match="bad.toml: -: not valid TOML"):
        load_profile(bad)


def test_phone_config_checks_the_board_profile_at_load(tmp_path: Path) -> None:
    from firmware.provisioning.config import ConfigError, load_config

    (tmp_path / "mine.toml").write_text('[board]\nname = "x"\n[lcd]\ntype = "oled"\n')
    phone = tmp_path / "phone.toml"
    phone.write_text('[api]\nenabled = false\n[board]\nprofile = "mine.toml"\n')
    with pytest.raises(ConfigError) as info:
        load_config(str(phone))
    assert info.value.key == "board.profile"
    assert "mine.toml: lcd.type: 'oled' is not one of" in info.value.message
    phone.write_text('[api]\nenabled = false\n[board]\nprofile = "pi-reference"\n')
    load_config(str(phone))
