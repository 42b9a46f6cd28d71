"""The desk phone's screens and key logic as a sans-IO state machine.

Fed `KeyEvent`s (board/keys), `PhoneView`s (calls, registrations, features, from the same status
the action API serves) and `now`; it keeps what the person sees and hears - LCD lines fitted to the
display, LED modes, ringer on/off, the audio path - and queues `UiAction`s (dial, answer, hold,
transfer...) for the runtime to carry out. Its only timers (digit-map inter-digit timeout, notices)
come out of `get_timer()` and are fired with `handle_timer(now)`, the same shape as the SIP core,
so every flow is testable with exact clock times.

Flows follow common desk phones (Cisco/Yealink/Polycom): lift the handset or press SPEAKER to get
a dial screen; digits are sent when the digit map matches, on '#', OK or after the inter-digit
timeout; TRANSFER holds the call and dials a consultation call, TRANSFER again completes an
attended transfer (softkey "Blind" sends the number dialled as a blind transfer); CONF likewise
joins a 3-way conference; a second call rings as call waiting and "Swap" or its line key toggles.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from board.ports import DIGIT_KEYS, HOOK, AudioPath, KeyEvent, LedMode
from firmware.ui.digitmap import DigitMap, Match
from firmware.ui.model import CallView, PhoneView, UiAction, UiSettings
from firmware.ui.text import (
    LOCK,
    call_failure_text,
    display_name,
    fit,
    format_duration,
    number_of,
    registration_text,
    softkey_row,
)

log = logging.getLogger(__name__)

VOLUME_MAX = 9
LIVE = ("calling", "early", "dialing", "ringing", "connected", "held")
DIGIT_OF = {f"DIGIT_{d}": d for d in "0123456789"} | {"STAR": "*", "POUND": "#"}
BLF_LED: dict[str, LedMode] = {
    "ringing": "fast_flash",
    "talking": "on",
    "held": "slow_flash",
    "parked": "slow_flash",
}
Softkey = tuple[str, Callable[[float], None]]


@dataclass(slots=True)
class HistoryEntry:
    kind: str  # "missed" | "received" | "placed"
    number: str
    name: str | None


class PhoneUI:
    """One phone's UI. Call `update` whenever calls/features change, `key` for each KeyEvent."""

    def __init__(self, settings: UiSettings, now: float = 0.0) -> None:
        self.settings = settings
        self.digit_map = DigitMap(settings.digit_map)
        self.view = PhoneView()
        self.mode = "idle"  # idle | dialing | history | directory | menu | forward
        self.purpose = "call"  # what the dial screen is for: call | transfer | conference
        self.digits = ""
        self.digit_deadline: float | None = None
        self.hook_off = False
        self.headset_mode = False
        self.path: AudioPath = "none"
        self.muted = False
        self.volume = 5
        self.volume_until: float | None = None
        self.notice: str | None = None
        self.notice_until: float | None = None
        self.redial: str | None = None
        self.history: list[HistoryEntry] = []
        self.missed_unseen = 0
        self.cursor = 0  # selection in history / directory / menu
        self.xfer_call: str | None = None  # call being transferred / conferenced
        self.consult: str | None = None  # the consultation call dialled for it
        self.xfer_purpose = "transfer"  # or "conference"
        self.focus: str | None = None  # call shown and acted on
        self._seen: dict[str, CallView] = {}
        self._connected_once: set[str] = set()
        self._lines: dict[str, str] = {}  # call id -> LINE_n key
        self._answered: set[str] = set()  # answered, still ringing until the ACK
        self._actions: list[UiAction] = []
        self.now = now

    # ----- outputs ---------------------------------------------------------------------------
    def drain_actions(self) -> list[UiAction]:
        actions, self._actions = self._actions, []
        return actions

    def get_timer(self) -> float | None:
        times = [t for t in (self.digit_deadline, self.notice_until, self.volume_until) if t]
        return min(times) if times else None

    @property
    def ringer(self) -> bool:
        """Ring only for a call when nothing else is going on (else it is call waiting)."""
        ringing = [c for c in self._live() if c.state == "ringing" and c.id not in self._answered]
        busy = [c for c in self._live() if c.state != "ringing"]
        return bool(ringing) and not busy and self.mode != "dialing"

    def leds(self) -> dict[str, LedMode]:
        leds: dict[str, LedMode] = {}
        for call_id, key in self._lines.items():
            call = self._call(call_id)
            if call is None:
                continue
            leds[key] = (
                "fast_flash"
                if call.state == "ringing"
                else "slow_flash"
                if call.state == "held"
                else "on"
            )
        for entry in self.view.blf:
            key = str(entry.get("key", ""))
            if key and key not in leds:
                led = entry.get("led") or BLF_LED.get(str(entry.get("state")), "off")
                leds[key] = led
        mwi = self.view.mwi or {}
        leds["MWI"] = "on" if mwi.get("waiting") else "off"
        leds["MUTE"] = "on" if self.muted and self._live() else "off"
        leds["SPEAKER"] = "on" if self.path == "speaker" else "off"
        leds["HEADSET"] = "on" if self.path == "headset" else "off"
        leds["DND"] = "on" if self.view.dnd else "off"
        return leds

    def lcd(self) -> list[str]:
        """The screen as lines fitted to the display (softkey labels on the last row)."""
        content, softkeys = self._screen()
        overlay = self._overlay()
        if overlay is not None:
            # the notice replaces the last content line so the main information stays visible
            keep = max(1, min(len(content), self.settings.rows - 2))
            content = [*content[:keep], overlay]
        labels = [label for label, _ in softkeys]
        return fit(content, softkey_row(labels, self.settings.cols), self.settings)

    # ----- inputs ----------------------------------------------------------------------------
    def update(self, view: PhoneView, now: float) -> None:
        """New call / registration / feature state from the phone."""
        self.now = now
        self.view = view
        for call in view.calls:
            old = self._seen.get(call.id)
            if old is None and call.state in LIVE:
                self._call_added(call)
            if call.state in ("connected", "held"):
                self._connected_once.add(call.id)
            if (
                call.state == "ended"
                and (old is None or old.state != "ended")
                and call.id in (self._seen)
            ):
                self._call_ended(call, now)
            self._seen[call.id] = call
        for gone in set(self._seen) - {c.id for c in view.calls}:
            if self._seen[gone].state != "ended":
                self._call_ended(self._seen[gone], now)
            del self._seen[gone]
        self._refocus()
        self._follow_path()

    def key(self, event: KeyEvent) -> None:
        """A debounced key event from the board (or the action API / simulator)."""
        now = self.now = event.at
        if event.key == HOOK:
            if event.kind == "press":
                self._off_hook(now)
            elif event.kind == "release":
                self._on_hook(now)
            return
        if event.kind == "release":
            return
        if event.kind == "long_press":
            if event.key == "DIGIT_0" and self.mode == "dialing":
                # long 0 = '+', as on mobiles and many desk phones: it replaces the pressed 0
                if self.digits.endswith("0"):
                    self.digits = self.digits[:-1]
                self._digit("+", now)
            return
        handler = getattr(self, f"_key_{event.key.lower()}", None)
        if event.key in DIGIT_KEYS:
            self._key_digit(DIGIT_OF[event.key], now)
        elif event.key.startswith("SOFT_"):
            self._softkey(int(event.key[5:]) - 1, now)
        elif event.key.startswith("LINE_"):
            self._line_key(event.key, now)
        elif handler is not None:
            handler(now)
        else:
            log.debug("key %s has no function here", event.key)

    def handle_timer(self, now: float) -> None:
        self.now = now
        if self.digit_deadline is not None and now >= self.digit_deadline:
            self.digit_deadline = None
            if self.mode == "dialing" and self.digits:
                self._send(now)
        if self.notice_until is not None and now >= self.notice_until:
            self.notice, self.notice_until = None, None
        if self.volume_until is not None and now >= self.volume_until:
            self.volume_until = None

    def dial_result(self, action: UiAction, call_id: str | None, error: str | None) -> None:
        """What became of a dial the UI asked for (the runtime answers synchronously)."""
        if error is not None:
            self.show_error(error, self.now)
            if action.purpose in ("transfer", "conference") and self.xfer_call:
                self._act("resume", self.xfer_call)
                self.xfer_call = None
            return
        if call_id is not None:
            self.focus = call_id
            if action.purpose in ("transfer", "conference"):
                self.consult = call_id

    def show_error(self, text: str, now: float) -> None:
        """Show a notice (an error in plain words) for a few seconds."""
        self.notice = text
        self.notice_until = now + self.settings.notice_time

    # ----- call bookkeeping -------------------------------------------------------------------
    def _live(self) -> list[CallView]:
        return [c for c in self.view.calls if c.state in LIVE]

    def _call(self, call_id: str | None) -> CallView | None:
        for call in self.view.calls:
            if call.id == call_id:
                return call
        return None

    def _call_added(self, call: CallView) -> None:
        used = set(self._lines.values()) | {str(b.get("key")) for b in self.view.blf}
        for n in range(1, self.settings.line_keys + 1):
            if f"LINE_{n}" not in used:
                self._lines[call.id] = f"LINE_{n}"
                break
        if call.direction == "outgoing":
            self._remember("placed", call)
        if call.state == "ringing" and self.mode in ("history", "directory", "menu", "forward"):
            self.mode = "idle"

    def _call_ended(self, call: CallView, now: float) -> None:
        self._lines.pop(call.id, None)
        self._answered.discard(call.id)
        if call.direction == "incoming":
            if call.id in self._connected_once:
                self._remember("received", call)
            else:
                self._remember("missed", call)
                self.missed_unseen += 1
        elif call.id not in self._connected_once and call.end_cause in ("failed", "timeout"):
            self.show_error(call_failure_text(call.end_status, call.end_reason), now)
        if call.id == self.consult:
            self.consult = None
        if call.id == self.xfer_call:
            self.xfer_call, self.consult = None, None
            if self.mode == "dialing" and self.purpose != "call":
                self._leave_dialing()
        if call.id == self.focus:
            self.focus = None
        if not self._live():
            self.muted = False

    def _remember(self, kind: str, call: CallView) -> None:
        entry = HistoryEntry(kind, number_of(call.remote), call.remote_display)
        self.history.insert(0, entry)
        del self.history[self.settings.history_size :]

    def _refocus(self) -> None:
        live = self._live()
        current = self._call(self.focus)
        if current is not None and current.state in LIVE:
            # a held focus call yields to a call that is talking (after a swap or resume)
            talking = [c for c in live if c.state in ("connected", "calling", "early")]
            if current.state != "held" or not talking:
                return
        order = ("connected", "calling", "early", "dialing", "ringing", "held")
        live.sort(key=lambda c: order.index(c.state))
        self.focus = live[0].id if live else None

    def _follow_path(self) -> None:
        """The audio path follows the hook, SPEAKER/HEADSET and whether anything is going on."""
        active = self.mode == "dialing" or any(
            c.state != "ringing" or c.id in self._answered for c in self._live()
        )
        if not active:
            self.path = "handset" if self.hook_off else "none"
        elif self.path == "none":
            self.path = self._hands_free() if not self.hook_off else "handset"

    def _hands_free(self) -> AudioPath:
        return "headset" if self.headset_mode else "speaker"

    def _act(self, kind: str, call_id: str | None = None, **kw: object) -> None:
        self._actions.append(UiAction(kind, call_id, **kw))  # type: ignore[arg-type]

    # ----- hook, speaker, headset -------------------------------------------------------------
    def _off_hook(self, now: float) -> None:
        self.hook_off = True
        ringing = self._ringing()
        if ringing is not None and not self._talking():
            self._answer(ringing, now)
            self.path = "handset"
            return
        if self._live() or self.mode == "dialing":
            self.path = "handset"  # take the call (or dialling) from the speaker to the handset
            return
        self._start_dialing(now, "call")
        self.path = "handset"

    def _on_hook(self, now: float) -> None:
        self.hook_off = False
        if self.path != "handset":
            return  # the call is on the speaker or headset: putting the handset down is fine
        self._end_current(now)
        self.path = "none"
        self._follow_path()

    def _key_speaker(self, now: float) -> None:
        self._hands_free_key("speaker", now)

    def _key_headset(self, now: float) -> None:
        self.headset_mode = not self.headset_mode
        if self.path in ("headset", "speaker") or not self.headset_mode:
            # HEADSET while on the headset hangs up like SPEAKER does on the speaker
            if self.path == "headset" and not self.headset_mode:
                self._end_current(now)
                self.path = "handset" if self.hook_off else "none"
                self._follow_path()
                return
        if self.headset_mode:
            self._hands_free_key("headset", now)

    def _hands_free_key(self, path: AudioPath, now: float) -> None:
        ringing = self._ringing()
        if ringing is not None and not self._talking():
            self._answer(ringing, now)
            self.path = path
            return
        if self.path == path:
            if self.hook_off:
                self.path = "handset"
                return
            self._end_current(now)
            self.path = "none"
            self._follow_path()
            return
        if self._live() or self.mode == "dialing":
            self.path = path
            return
        self._start_dialing(now, "call")
        self.path = path

    def _end_current(self, now: float) -> None:
        """Hang up what the person is doing: dialling, the focus call, or the conference."""
        if self.mode == "dialing":
            self._cancel_dialing(now)
            if self.purpose == "call":
                return
        if self.view.conference and self.focus in self.view.conference:
            for call_id in self.view.conference:
                self._act("hangup", call_id)
            return
        call = self._call(self.focus)
        if call is not None and call.state != "ringing":
            self._act("hangup", call.id)

    # ----- dialling --------------------------------------------------------------------------
    def _start_dialing(self, now: float, purpose: str) -> None:
        self.mode, self.purpose, self.digits = "dialing", purpose, ""
        self.digit_deadline = None

    def _leave_dialing(self) -> None:
        self.mode, self.digits, self.digit_deadline = "idle", "", None

    def _cancel_dialing(self, now: float) -> None:
        purpose = self.purpose
        self._leave_dialing()
        self.purpose = "call"
        if purpose != "call" and self.xfer_call is not None and self.consult is None:
            self._act("resume", self.xfer_call)  # nothing dialled: back to the original call
            self.xfer_call = None

    def _key_digit(self, digit: str, now: float) -> None:
        if self.mode == "dialing":
            self._digit(digit, now)
            return
        if self.mode in ("forward",):
            self.digits += digit
            return
        call = self._call(self.focus)
        if call is not None and call.state == "connected":
            self._act("dtmf", call.id, target=digit)
            return
        if self._live():
            return
        # on-hook dialling: digits on the idle screen start a call on the speaker
        self._start_dialing(now, "call")
        self._digit(digit, now)
        self._follow_path()

    def _digit(self, digit: str, now: float) -> None:
        if digit == "#" and self.digits:
            self._send(now)
            return
        self.digits += digit
        match = self.digit_map.match(self.digits)
        if match is Match.COMPLETE:
            self._send(now)
        else:
            self.digit_deadline = now + self.settings.inter_digit_timeout

    def _send(self, now: float) -> None:
        number, purpose = self.digits, self.purpose
        self._leave_dialing()
        self.purpose = "call"
        if not number:
            return
        self.redial = number if purpose == "call" else self.redial
        self._act("dial", target=number, purpose=purpose)

    def _key_redial(self, now: float) -> None:
        if self.redial is None:
            self.show_error("No number to redial", now)
            return
        if self._talking() and self.mode != "dialing":
            return
        self.mode = "idle"
        self._act("dial", target=self.redial)
        self._follow_path()

    def _key_voicemail(self, now: float) -> None:
        if not self.settings.voicemail:
            self.show_error("No voicemail number set", now)
            return
        self._act("dial", target=self.settings.voicemail)
        self._follow_path()

    def _key_ok(self, now: float) -> None:
        if self.mode == "dialing":
            self._send(now)
        elif self.mode in ("history", "directory"):
            self._dial_selected(now)
        elif self.mode == "menu":
            self._menu_select(now)
        elif self.mode == "forward":
            self._act("forward", target=self.digits or None)
            self._leave_dialing()
        elif (ringing := self._ringing()) is not None:
            self._answer(ringing, now)

    def _key_cancel(self, now: float) -> None:
        if self.mode == "dialing":
            if self.digits and self.purpose == "call":
                self.digits = self.digits[:-1]
                return
            self._cancel_dialing(now)
        elif self.mode != "idle":
            self.mode, self.digits = "idle", ""
        elif (ringing := self._ringing()) is not None:
            self._act("reject", ringing.id)
        elif self.consult is not None:
            self._act("hangup", self.consult)

    # ----- call keys ---------------------------------------------------------------------------
    def _ringing(self) -> CallView | None:
        return next((c for c in self._live() if c.state == "ringing"), None)

    def _talking(self) -> CallView | None:
        return next((c for c in self._live() if c.state in ("connected", "calling", "early")), None)

    def _answer(self, call: CallView, now: float) -> None:
        # call waiting: the phone's answer puts the talking call on hold first (answer-and-hold)
        self._act("answer", call.id)
        self._answered.add(call.id)
        self.focus = call.id
        self.mode = "idle"

    def _key_hold(self, now: float) -> None:
        call = self._call(self.focus)
        if call is None:
            return
        if call.state == "connected":
            self._act("hold", call.id)
        elif call.state == "held":
            self._act("resume", call.id)  # resume holds a talking call first

    def _swap(self, now: float) -> None:
        held = next((c for c in self._live() if c.state == "held"), None)
        if held is None:
            return
        self._act("resume", held.id)
        self.focus = held.id

    def _key_transfer(self, now: float) -> None:
        self._xfer_or_conf("transfer", now)

    def _key_conf(self, now: float) -> None:
        self._xfer_or_conf("conference", now)

    def _xfer_or_conf(self, purpose: str, now: float) -> None:
        if self.mode == "dialing" and self.purpose == purpose:
            if purpose == "transfer" and self.digits and self.xfer_call:
                self._blind(now)  # TRANSFER again before a consultation call: blind transfer
            return
        if self.xfer_call is not None and self.consult is not None:
            consult = self._call(self.consult)
            if purpose == "transfer":
                self._act("transfer_attended", self.xfer_call, target=self.consult)
            elif consult is not None and consult.state in ("connected", "held"):
                self._act("conference", self.consult, target=self.xfer_call)
            else:
                self.show_error("Wait for an answer", now)
                return
            self.xfer_call, self.consult = None, None
            return
        call = self._call(self.focus)
        if call is None or call.state not in ("connected", "held"):
            self.show_error("No call to " + ("transfer" if purpose == "transfer" else "join"), now)
            return
        other = next(
            (c for c in self._live() if c.id != call.id and c.state in ("connected", "held")), None
        )
        if purpose == "conference" and other is not None:
            self._act("conference", call.id, target=other.id)  # two calls already: join them
            return
        if call.state == "connected":
            self._act("hold", call.id)
        self.xfer_call, self.xfer_purpose = call.id, purpose
        self.consult = None
        self._start_dialing(now, purpose)

    def _blind(self, now: float) -> None:
        if self.xfer_call is None or not self.digits:
            return
        self._act("transfer", self.xfer_call, target=self.digits)
        self.xfer_call = None
        self._leave_dialing()
        self.purpose = "call"

    def _key_mute(self, now: float) -> None:
        if not self._live():
            return
        self.muted = not self.muted
        self._act("mute", value=self.muted)

    def _key_vol_up(self, now: float) -> None:
        self._volume(+1, now)

    def _key_vol_down(self, now: float) -> None:
        self._volume(-1, now)

    def _volume(self, step: int, now: float) -> None:
        self.volume = max(0, min(VOLUME_MAX, self.volume + step))
        self.volume_until = now + 2.0
        self._act("volume", value=self.volume)

    def _key_dnd(self, now: float) -> None:
        self._act("dnd", value=not self.view.dnd)

    def _key_up(self, now: float) -> None:
        if self.mode == "idle" and not self._live():
            self._open("history")
        elif self.mode in ("history", "directory", "menu"):
            self.cursor = max(0, self.cursor - 1)

    def _key_down(self, now: float) -> None:
        if self.mode == "idle" and not self._live():
            self._open("directory")
        elif self.mode in ("history", "directory", "menu"):
            self.cursor = min(max(0, len(self._list_items()) - 1), self.cursor + 1)

    def _line_key(self, key: str, now: float) -> None:
        if any(b.get("key") == key for b in self.view.blf):
            self._act("blf", target=key)
            return
        call_id = next((c for c, k in self._lines.items() if k == key), None)
        call = self._call(call_id)
        if call is None:
            if not self._live() and self.mode == "idle":
                self._start_dialing(now, "call")
                self._follow_path()
            return
        if call.state == "ringing":
            self._answer(call, now)
        elif call.state == "held":
            self._act("resume", call.id)
            self.focus = call.id
        else:
            self.focus = call.id

    # ----- lists and menus ----------------------------------------------------------------------
    def _open(self, mode: str) -> None:
        self.mode, self.cursor = mode, 0
        if mode == "history":
            self.missed_unseen = 0

    def _list_items(self) -> list[tuple[str, str, str]]:
        """(title, name, number) rows of the open list."""
        if self.mode == "history":
            return [(e.kind.capitalize(), e.name or e.number, e.number) for e in self.history]
        if self.mode == "directory":
            return [("Directory", e.name, e.number) for e in self.settings.directory]
        if self.mode == "menu":
            fwd = (self.view.forward or {}).get("always")
            return [
                ("Menu", "Do not disturb", "on" if self.view.dnd else "off"),
                ("Menu", "Forward all", number_of(fwd) if fwd else "off"),
            ]
        return []

    def _dial_selected(self, now: float) -> None:
        items = self._list_items()
        if not items:
            return
        number = items[min(self.cursor, len(items) - 1)][2]
        self.mode = "idle"
        self.redial = number
        self._act("dial", target=number)
        self._follow_path()

    def _menu_select(self, now: float) -> None:
        if self.cursor == 0:
            self._act("dnd", value=not self.view.dnd)
            self.mode = "idle"
        else:
            if (self.view.forward or {}).get("always"):
                self._act("forward", target=None)
                self.mode = "idle"
            else:
                self.mode, self.digits = "forward", ""

    # ----- softkeys ---------------------------------------------------------------------------
    def _softkey(self, index: int, now: float) -> None:
        _, softkeys = self._screen()
        if 0 <= index < len(softkeys) and softkeys[index][0]:
            softkeys[index][1](now)

    def _screen(self) -> tuple[list[str], list[Softkey]]:
        """(content lines, softkeys) of the current screen."""
        s = self.settings
        if self.mode == "dialing":
            return self._dial_screen()
        if self.mode in ("history", "directory", "menu"):
            return self._list_screen()
        if self.mode == "forward":
            return (
                ["Forward all to:", self.digits + "_"],
                [("OK", self._key_ok), ("", _noop), ("", _noop), ("Back", self._key_cancel)],
            )
        call = self._call(self.focus)
        if call is not None and call.state in LIVE:
            return self._call_screen(call)
        idle = [self._title(s.name), registration_text(self.view.registrations)]
        idle.append(self._indicators())
        return idle, [
            ("Redl", self._key_redial),
            ("Hist", lambda now: self._open("history")),
            ("Dir", lambda now: self._open("directory")),
            ("Menu", lambda now: self._open("menu")),
        ]

    def _title(self, left: str) -> str:
        clock = self.view.clock
        room = self.settings.cols - len(clock) - 1
        return f"{left[:room]:<{room}} {clock}" if clock else left

    def _indicators(self) -> str:
        parts = []
        mwi = self.view.mwi or {}
        if mwi.get("waiting"):
            new = mwi.get("new")
            parts.append(f"{new} new msg" if new else "New msgs")
        if self.missed_unseen:
            parts.append(f"{self.missed_unseen} missed")
        if self.view.dnd:
            parts.append("DND")
        fwd = (self.view.forward or {}).get("always")
        if fwd:
            parts.append(f"Fwd>{number_of(fwd)}")
        return " ".join(parts)

    def _dial_screen(self) -> tuple[list[str], list[Softkey]]:
        title = {"call": "Dial:", "transfer": "Transfer to:", "conference": "Conference with:"}
        lines = [title[self.purpose], self.digits[-(self.settings.cols - 1) :] + "_"]
        held = self._call(self.xfer_call)
        if held is not None:
            lines.append("Holding " + display_name(held, self.settings.directory))
        keys: list[Softkey] = [("Send", self._send), ("Del", self._backspace)]
        keys.append(("Blnd", self._blind) if self.purpose == "transfer" else ("", _noop))
        keys.append(("Back", self._cancel_dialing))
        return lines, keys

    def _backspace(self, now: float) -> None:
        self.digits = self.digits[:-1]

    def _list_screen(self) -> tuple[list[str], list[Softkey]]:
        items = self._list_items()
        back: Softkey = ("Back", self._key_cancel)
        if not items:
            empty = {"history": "No calls yet", "directory": "Directory empty"}.get(self.mode, "")
            return [self.mode.capitalize(), empty], [("", _noop), ("", _noop), ("", _noop), back]
        self.cursor = min(self.cursor, len(items) - 1)
        title, name, number = items[self.cursor]
        lines = [f"{title} {self.cursor + 1}/{len(items)}", ">" + name]
        if number != name:
            lines.append(" " + number)
        first: Softkey = ("Dial", self._dial_selected)
        if self.mode == "menu":
            first = ("Sel", self._key_ok)
        return lines, [first, ("Up", self._key_up), ("Dn", self._key_down), back]

    def _call_screen(self, call: CallView) -> tuple[list[str], list[Softkey]]:
        name = display_name(call, self.settings.directory)
        number = number_of(call.remote)
        end: Softkey = ("End", self._end_current)
        if call.state == "ringing":
            lines = ["Incoming call", name]
            if number != name:
                lines.append(number)
            return lines, [
                ("Ans", lambda now: self._answer(call, now)),
                ("Rej", lambda now: self._act("reject", call.id)),
                ("", _noop),
                ("", _noop),
            ]
        if call.state in ("calling", "dialing", "early"):
            what = "Ringing..." if call.state == "early" else "Calling..."
            if call.id == self.consult and self.xfer_call and self.xfer_purpose == "transfer":
                what = "Xfer: " + what
            return [what, name], [("", _noop), ("", _noop), ("", _noop), end]
        secure = f" {LOCK}" if call.srtp else ""
        detail = f"{format_duration(call.duration)} {call.codec or ''}{secure}".rstrip()
        if self.view.conference and call.id in self.view.conference:
            n = len(self.view.conference) + 1
            others = [self._call(c) for c in self.view.conference]
            names = ", ".join(display_name(c, self.settings.directory) for c in others if c)
            return [f"Conference ({n})", names, detail], [
                ("", _noop),
                ("", _noop),
                ("", _noop),
                end,
            ]
        header = "On hold" if call.state == "held" else name
        lines = [header, name if call.state == "held" else detail]
        other = next((c for c in self._live() if c.id != call.id), None)
        if other is not None and other.state == "ringing":
            lines.append("Waiting: " + display_name(other, self.settings.directory))
        elif other is not None:
            lines.append("Hold: " + display_name(other, self.settings.directory))
        elif call.remote_held:
            lines.append("Held by " + name)
        elif self.muted:
            lines.append("Muted")
        hold: Softkey = ("Res" if call.state == "held" else "Hold", self._key_hold)
        if other is not None and other.state == "ringing":
            return lines, [
                ("Ans", lambda now: self._answer(other, now)),
                ("Rej", lambda now: self._act("reject", other.id)),
                hold,
                end,
            ]
        if other is not None and other.state in ("held", "connected"):
            hold = ("Swap", self._swap)
        if self.xfer_call and self.consult == call.id:
            return lines, [
                ("Xfer", self._key_transfer),
                ("Conf", self._key_conf),
                ("", _noop),
                end,
            ]
        return lines, [hold, ("Xfer", self._key_transfer), ("Conf", self._key_conf), end]

    def _overlay(self) -> str | None:
        if self.volume_until is not None:
            bar = "#" * self.volume + "-" * (VOLUME_MAX - self.volume)
            return f"Vol {bar}"
        return self.notice


def _noop(now: float) -> None:
    """A softkey without a function on this screen."""
