"""The phone UI state machine (firmware/ui): keys and call views in, screens and actions out.

Exact clock times throughout (acceptance 3): the inter-digit timeout fires at exactly
`last digit + inter_digit_timeout`, never a moment before.
"""

from __future__ import annotations

from typing import Any

import pytest

from board.ports import KeyEvent
from firmware.ui.digitmap import DigitMap, DigitMapError, Match
from firmware.ui.model import CallView, DirectoryEntry, PhoneView, UiAction, UiSettings
from firmware.ui.phone import PhoneUI
from firmware.ui.text import LOCK, call_failure_text, fit, number_of, registration_text

MAP = "[2-9]xxx|0[1-9]x.T|*xx"


def make_ui(**kw: Any) -> PhoneUI:
    settings = UiSettings(name="Reception", digit_map=MAP, inter_digit_timeout=4.0, **kw)
    ui = PhoneUI(settings)
    ui.update(PhoneView(clock="10:42", registrations=({"state": "registered"},)), 0.0)
    return ui


def press(ui: PhoneUI, key: str, at: float, kind: str = "press") -> list[UiAction]:
    ui.key(KeyEvent(key, kind, at))  # type: ignore[arg-type]
    return ui.drain_actions()


def dial_keys(ui: PhoneUI, digits: str, start: float, step: float = 0.5) -> list[UiAction]:
    names = {"*": "STAR", "#": "POUND"}
    out: list[UiAction] = []
    for i, d in enumerate(digits):
        out += press(ui, names.get(d, f"DIGIT_{d}"), start + i * step)
    return out


def call(cid: str, state: str, remote: str = "sip:1002@pbx", **kw: Any) -> CallView:
    direction = kw.pop("direction", "incoming" if state == "ringing" else "outgoing")
    return CallView(id=cid, state=state, direction=direction, remote=remote, **kw)


def show(ui: PhoneUI, now: float, *calls: CallView, **kw: Any) -> None:
    ui.update(PhoneView(calls=calls, clock="10:42", **kw), now)


# ----- digit map --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("digits", "expected"),
    [
        ("2", Match.PARTIAL),
        ("2001", Match.COMPLETE),
        ("20011", Match.NONE),
        ("1", Match.NONE),
        ("0", Match.PARTIAL),
        ("01", Match.TIMEOUT),
        ("0123456", Match.TIMEOUT),
        ("*1", Match.PARTIAL),
        ("*12", Match.COMPLETE),
    ],
)
def test_digit_map_matches(digits: str, expected: Match) -> None:
    assert DigitMap(MAP).match(digits) is expected


@pytest.mark.parametrize("bad", ["", "12|", "[2-", "[9-2]x", "x.T3", ".1", "12a"])
def test_bad_digit_map_names_the_pattern(bad: str) -> None:
    with pytest.raises(DigitMapError):
        DigitMap(bad)


def test_complete_match_sends_on_the_last_digit() -> None:
    ui = make_ui()
    assert press(ui, "HOOK", 1.0) == []
    assert ui.path == "handset"
    assert ui.lcd()[0] == "Dial:"
    actions = dial_keys(ui, "2001", 2.0)
    assert actions == [UiAction("dial", target="2001")]
    assert ui.get_timer() is None
    assert ui.redial == "2001"


def test_inter_digit_timeout_exact_clock() -> None:
    ui = make_ui()
    press(ui, "HOOK", 1.0)
    assert dial_keys(ui, "0123", 2.0) == []  # last digit at 3.5
    assert ui.get_timer() == 7.5
    ui.handle_timer(7.4999)
    assert ui.drain_actions() == []
    assert ui.lcd()[1] == "0123_"
    ui.handle_timer(7.5)
    assert ui.drain_actions() == [UiAction("dial", target="0123")]


def test_each_digit_restarts_the_timeout_and_pound_sends() -> None:
    ui = make_ui()
    press(ui, "HOOK", 1.0)
    dial_keys(ui, "01", 2.0)
    assert ui.get_timer() == 6.5
    dial_keys(ui, "5", 6.0)
    assert ui.get_timer() == 10.0
    assert press(ui, "POUND", 7.0) == [UiAction("dial", target="015")]


def test_a_number_outside_the_map_goes_after_the_timeout() -> None:
    ui = make_ui()
    press(ui, "SPEAKER", 1.0)
    assert ui.path == "speaker"
    dial_keys(ui, "1", 2.0)
    ui.handle_timer(6.0)
    assert ui.drain_actions() == [UiAction("dial", target="1")]


def test_cancel_deletes_then_leaves_and_hook_down_cancels() -> None:
    ui = make_ui()
    press(ui, "HOOK", 1.0)
    dial_keys(ui, "01", 2.0)
    press(ui, "CANCEL", 3.0)
    assert ui.digits == "0"
    press(ui, "HOOK", 4.0, "release")
    assert ui.mode == "idle" and ui.path == "none" and ui.get_timer() is None
    assert ui.lcd()[0] == "Reception      10:42"


def test_redial_and_on_hook_dialling() -> None:
    ui = make_ui()
    assert press(ui, "REDIAL", 1.0) == []
    assert ui.lcd()[2] == "No number to redial"
    ui.handle_timer(4.0)
    assert ui.notice is None
    assert dial_keys(ui, "2001", 5.0) == [UiAction("dial", target="2001")]  # on-hook dialling
    assert press(ui, "REDIAL", 9.0) == [UiAction("dial", target="2001")]


# ----- incoming, connected, errors ---------------------------------------------------------------
def test_incoming_call_rings_and_lifting_the_handset_answers() -> None:
    ui = make_ui()
    show(ui, 1.0, call("c1", "ringing", "sip:1003@pbx", remote_display="Carol"))
    assert ui.ringer
    assert ui.lcd() == ["Incoming call", "Carol", "1003", "Ans  Rej"]
    assert ui.leds()["LINE_1"] == "fast_flash"
    assert press(ui, "HOOK", 2.0) == [UiAction("answer", "c1")]
    show(
        ui,
        2.1,
        call(
            "c1",
            "connected",
            "sip:1003@pbx",
            remote_display="Carol",
            codec="G722",
            srtp=True,
            duration=65.2,
            direction="incoming",
        ),
    )
    assert not ui.ringer and ui.path == "handset"
    assert ui.lcd()[:2] == ["Carol", f"01:05 G722 {LOCK}"]
    assert ui.lcd()[3] == "Hold Xfer Conf End"
    assert ui.leds()["LINE_1"] == "on"
    assert press(ui, "HOOK", 30.0, "release") == [UiAction("hangup", "c1")]
    show(ui, 30.1, call("c1", "ended", "sip:1003@pbx", direction="incoming"))
    assert ui.history[0].kind == "received"


@pytest.mark.parametrize(("key", "path"), [("SPEAKER", "speaker"), ("SOFT_1", "none")])
def test_answer_by_speaker_or_softkey_and_reject(key: str, path: str) -> None:
    ui = make_ui()
    show(ui, 1.0, call("c1", "ringing"))
    assert press(ui, key, 2.0) == [UiAction("answer", "c1")]
    ui2 = make_ui()
    show(ui2, 1.0, call("c9", "ringing"))
    assert press(ui2, "SOFT_2", 2.0) == [UiAction("reject", "c9")]
    show(ui2, 2.1, call("c9", "ended", direction="incoming", end_status=486))
    assert ui2.history[0].kind == "missed" and ui2.missed_unseen == 1
    assert "1 missed" in ui2.lcd()[2]


def test_failed_call_is_shown_in_words() -> None:
    ui = make_ui()
    dial_keys(ui, "2001", 1.0)
    show(ui, 3.0, call("c1", "calling", "sip:2001@pbx"))
    assert ui.lcd()[:2] == ["Calling...", "2001"]
    show(ui, 3.5, call("c1", "early", "sip:2001@pbx"))
    assert ui.lcd()[0] == "Ringing..."
    show(
        ui,
        4.0,
        call(
            "c1",
            "ended",
            "sip:2001@pbx",
            end_status=486,
            end_reason="Busy Here",
            end_cause="failed",
        ),
    )
    assert ui.lcd()[2] == "Busy (486)"
    assert ui.get_timer() == 7.0
    ui.handle_timer(7.0)
    assert ui.lcd()[2] == ""


def test_registration_errors_in_words() -> None:
    assert registration_text([{"state": "failed", "last_status": 403}]) == "Login refused (403)"
    assert registration_text([{"state": "retrying"}]) == "No connection to PBX"
    assert registration_text([{"state": "registered"}]) == "Ready"
    assert call_failure_text(404, "Not Found") == "Number not found (404)"
    assert call_failure_text(499, "Odd") == "Call failed: Odd (499)"
    assert number_of("sips:alice@example.com;transport=tls") == "alice"


def test_dtmf_mute_and_volume_in_a_call() -> None:
    ui = make_ui()
    show(ui, 1.0, call("c1", "connected"))
    assert press(ui, "DIGIT_5", 2.0) == [UiAction("dtmf", "c1", target="5")]
    assert press(ui, "MUTE", 3.0) == [UiAction("mute", value=True)]
    assert ui.leds()["MUTE"] == "on" and ui.lcd()[2] == "Muted"
    assert press(ui, "VOL_UP", 4.0) == [UiAction("volume", value=6)]
    assert ui.lcd()[2] == "Vol ######---"
    ui.handle_timer(6.0)
    assert ui.lcd()[2] == "Muted"


# ----- hold, call waiting, transfer, conference ------------------------------------------------
def test_hold_resume_and_call_waiting_swap() -> None:
    ui = make_ui()
    show(ui, 1.0, call("c1", "connected"))
    assert press(ui, "HOLD", 2.0) == [UiAction("hold", "c1")]
    show(ui, 2.1, call("c1", "held"))
    assert ui.lcd()[0] == "On hold" and ui.leds()["LINE_1"] == "slow_flash"
    assert press(ui, "HOLD", 3.0) == [UiAction("resume", "c1")]
    show(ui, 3.1, call("c1", "connected"), call("c2", "ringing", "sip:1004@pbx"))
    assert not ui.ringer  # call waiting, not the ringer
    assert ui.lcd()[2] == "Waiting: 1004"
    assert press(ui, "SOFT_1", 4.0) == [UiAction("answer", "c2")]
    show(ui, 4.1, call("c1", "held"), call("c2", "connected", "sip:1004@pbx", direction="incoming"))
    assert ui.lcd()[0] == "1004" and ui.lcd()[2] == "Hold: 1002"
    assert ui.lcd()[3].startswith("Swap")
    assert press(ui, "SOFT_1", 5.0) == [UiAction("resume", "c1")]
    show(ui, 5.1, call("c1", "connected"), call("c2", "held", "sip:1004@pbx", direction="incoming"))
    assert ui.lcd()[0] == "1002"
    # the held call's line key swaps back
    assert press(ui, "LINE_2", 6.0) == [UiAction("resume", "c2")]


def test_attended_transfer_transfer_dial_transfer() -> None:
    ui = make_ui()
    show(ui, 1.0, call("c1", "connected"))
    assert press(ui, "TRANSFER", 2.0) == [UiAction("hold", "c1")]
    show(ui, 2.1, call("c1", "held"))
    assert ui.lcd()[:3] == ["Transfer to:", "_", "Holding 1002"]
    actions = dial_keys(ui, "2003", 3.0)
    assert actions == [UiAction("dial", target="2003", purpose="transfer")]
    ui.dial_result(actions[0], "c2", None)
    show(ui, 5.0, call("c1", "held"), call("c2", "connected", "sip:2003@pbx"))
    assert ui.lcd()[0] == "2003"
    assert press(ui, "TRANSFER", 6.0) == [UiAction("transfer_attended", "c1", target="c2")]


def test_blind_transfer_by_softkey_and_cancel_resumes() -> None:
    ui = make_ui()
    show(ui, 1.0, call("c1", "connected"))
    press(ui, "TRANSFER", 2.0)
    show(ui, 2.1, call("c1", "held"))
    dial_keys(ui, "01", 3.0)
    assert press(ui, "SOFT_3", 4.0) == [UiAction("transfer", "c1", target="01")]
    ui2 = make_ui()
    show(ui2, 1.0, call("c1", "connected"))
    press(ui2, "TRANSFER", 2.0)
    assert press(ui2, "CANCEL", 3.0) == [UiAction("resume", "c1")]
    assert ui2.mode == "idle"


def test_conference_conf_dial_conf() -> None:
    ui = make_ui()
    show(ui, 1.0, call("c1", "connected"))
    assert press(ui, "CONF", 2.0) == [UiAction("hold", "c1")]
    actions = dial_keys(ui, "2003", 3.0)
    assert actions == [UiAction("dial", target="2003", purpose="conference")]
    ui.dial_result(actions[0], "c2", None)
    show(ui, 4.0, call("c1", "held"), call("c2", "calling", "sip:2003@pbx"))
    assert press(ui, "CONF", 4.5) == []
    assert ui.lcd()[2] == "Wait for an answer"
    show(ui, 5.0, call("c1", "held"), call("c2", "connected", "sip:2003@pbx"))
    assert press(ui, "CONF", 6.0) == [UiAction("conference", "c2", target="c1")]
    show(
        ui,
        6.1,
        call("c1", "connected"),
        call("c2", "connected", "sip:2003@pbx"),
        conference=("c1", "c2"),
    )
    assert ui.lcd()[0] == "Conference (3)"
    assert press(ui, "SOFT_4", 7.0) == [UiAction("hangup", "c1"), UiAction("hangup", "c2")]


# ----- idle screen, lists, menus, LEDs -----------------------------------------------------------
def test_idle_indicators_blf_and_mwi_leds() -> None:
    ui = make_ui()
    ui.update(
        PhoneView(
            clock="10:42",
            mwi={"waiting": True, "new": 2, "old": 5},
            dnd=True,
            forward={"always": "sip:1009@pbx"},
            blf=({"key": "LINE_3", "target": "sip:1003@pbx", "state": "ringing"},),
        ),
        1.0,
    )
    lcd = ui.lcd()
    assert lcd[2] == "2 new msg DND Fwd>1009"  # longer than 20 columns: the board scrolls it
    leds = ui.leds()
    assert leds["MWI"] == "on" and leds["LINE_3"] == "fast_flash" and leds["DND"] == "on"
    assert press(ui, "LINE_3", 2.0) == [UiAction("blf", target="LINE_3")]
    assert press(ui, "DND", 3.0) == [UiAction("dnd", value=False)]


def test_directory_history_and_menus() -> None:
    ui = make_ui(directory=(DirectoryEntry("Bob", "2002"), DirectoryEntry("Carol", "2003")))
    press(ui, "DOWN", 1.0)
    assert ui.lcd()[:3] == ["Directory 1/2", ">Bob", " 2002"]
    press(ui, "DOWN", 1.5)
    assert press(ui, "OK", 2.0) == [UiAction("dial", target="2003")]
    show(ui, 2.1, call("c1", "calling", "sip:2003@pbx"))
    assert ui.lcd()[1] == "Carol"  # the directory names the number
    show(ui, 3.0, call("c1", "ended", "sip:2003@pbx", end_cause="local_bye"))
    press(ui, "UP", 4.0)
    assert ui.lcd()[:2] == ["Placed 1/1", ">2003"]
    press(ui, "CANCEL", 5.0)
    press(ui, "SOFT_4", 6.0)  # Menu
    assert ui.lcd()[1] == ">Do not disturb"
    assert press(ui, "OK", 7.0) == [UiAction("dnd", value=True)]
    press(ui, "SOFT_4", 8.0)
    press(ui, "DOWN", 8.5)
    press(ui, "OK", 9.0)
    dial_keys(ui, "2009", 9.5)
    assert press(ui, "OK", 10.0) == [UiAction("forward", target="2009")]


def test_small_display_fits_16x2() -> None:
    ui = PhoneUI(UiSettings(name="A very long phone name", cols=16, rows=2))
    ui.update(PhoneView(clock="09:05"), 0.0)
    assert ui.lcd() == ["A very lon 09:05", "Direct calls only"]  # the board scrolls line 2
    assert fit(["a", "b", "c", "d"], "K", ui.settings) == ["a", "b"]


def test_directory_names_direct_uris_and_remote_hold() -> None:
    ui = make_ui(directory=(DirectoryEntry("Bob", "2002", "sip:bob@127.0.0.1:5062"),))
    show(ui, 1.0, call("c1", "connected", "sip:bob@127.0.0.1:5062;transport=udp", remote_held=True))
    assert ui.lcd()[0] == "Bob" and ui.lcd()[2] == "Held by Bob"


def test_caller_text_cannot_forge_icons_on_the_lcd() -> None:
    """T33: a display name carrying the lock glyph or control characters shows as '?'."""
    ui = make_ui()
    forged = f"Bank {LOCK}\x1b[2J"
    show(ui, 1.0, call("c1", "ringing", f"sip:evil{LOCK}@pbx", remote_display=forged))
    lcd = ui.lcd()
    assert lcd[1] == "Bank ??[2J" and lcd[2] == "evil?"
    assert not any(LOCK in line for line in lcd)
    show(ui, 2.0, call("c1", "ended", direction="incoming", end_cause="failed"))
    show(ui, 3.0, call("c2", "calling", "sip:2001@pbx"))
    show(
        ui,
        4.0,
        call(
            "c2", "ended", "sip:2001@pbx", end_status=499, end_reason=f"x{LOCK}", end_cause="failed"
        ),
    )
    assert ui.lcd()[2] == "Call failed: x? (499)"
