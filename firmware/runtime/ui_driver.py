"""Runs the phone UI (firmware/ui) inside the phone process: board in, UI actions out.

The UI is sans-IO; this is its asyncio side. It feeds key events from the board (or the action
API's key/hook endpoints) into `PhoneUI`, gives it a fresh `PhoneView` whenever calls change and
once a second (clock, call duration), fires its timers, carries out the `UiAction`s it queues
through the same Phone methods the action API uses (so a key press and an API call behave
identically), and pushes LCD lines, LED modes and the ringer to the board when they change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from board.charset import plain
from board.ports import ALL_KEYS, HOOK, KeyEvent, LedMode
from firmware.provisioning.ui_config import board_ui_of
from firmware.runtime import ui_audio
from firmware.runtime.api import ActionError
from firmware.ui.model import PhoneView, UiAction, UiSettings
from firmware.ui.phone import PhoneUI

log = logging.getLogger(__name__)

KeySink = Callable[[KeyEvent], None]
RETRY_TIME = 4.0  # seconds a HOLD/resume waits for a running re-INVITE to finish


class BoardOutput(Protocol):
    """What the driver needs from the board side (firmware/runtime/board_io.BoardIO)."""

    def show(self, lines: list[str]) -> None: ...

    def led(self, name: str, mode: LedMode) -> None: ...

    def ring(self, on: bool) -> None: ...


def make_board(profile: str, on_key: KeySink) -> Any:
    """The board for a `[board] profile` (validated when the config was loaded)."""
    from firmware.runtime.board_io import open_board

    return open_board(profile, on_key)


class UiDriver:
    """The phone's UI: `PhoneUI` + a board, wired to a running `Phone`."""

    def __init__(self, phone: Any, board: Any | None = None) -> None:
        self.phone = phone
        cfg = board_ui_of(phone.config)
        self.config = cfg
        self.board = board if board is not None else make_board(cfg.board_profile, self.on_key)
        cols, rows = getattr(self.board, "size", (20, 4))
        settings = UiSettings(
            name=phone.config.device.name,
            digit_map=cfg.digit_map,
            inter_digit_timeout=cfg.inter_digit_timeout,
            voicemail=cfg.voicemail,
            directory=cfg.directory,
            cols=cols,
            rows=rows,
        )
        self.ui = PhoneUI(settings, time.monotonic())
        media = getattr(phone, "media", None)
        audio = getattr(media, "audio", None)
        self.paths: ui_audio.AudioPaths | None = None
        if audio is not None:  # MUTE and VOL_UP/VOL_DOWN act on the real microphone/speaker
            ui_audio.install(
                audio, lambda: self.ui.muted, lambda: ui_audio.volume_gain(self.ui.volume)
            )
            profile = getattr(getattr(self.board, "board", None), "profile", None)
            conference = getattr(phone, "conference", None)
            self.paths = ui_audio.AudioPaths(
                media,
                dict(getattr(profile, "audio", {}) or {}),
                lambda: getattr(conference, "members", []),
            )
        self.lcd: list[str] = []
        self.leds: dict[str, LedMode] = {}
        self.ringing = False
        self.watchers: list[Callable[[list[str]], None]] = []  # LCD change listeners (demo, sim)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._busy = False
        # HOLD pressed again while the previous re-INVITE is still running: retried when the
        # calls change (its answer arrives) until this deadline, as a person expects
        self._pending: tuple[UiAction, float] | None = None

    # ----- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        start = getattr(self.board, "start", None)
        if start is not None:
            result = start()
            if asyncio.iscoroutine(result):
                await result
        self.refresh()
        self._task = asyncio.create_task(self._timer_loop(), name="ui-timer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        close = getattr(self.board, "close", None)
        if close is not None:
            result = close()
            if asyncio.iscoroutine(result):
                await result

    async def _timer_loop(self) -> None:
        """Wake at the UI's next deadline or the next wall-clock second (clock, durations)."""
        while True:
            self._wake.clear()
            now = time.monotonic()
            deadline = self.ui.get_timer()
            tick = 1.0 - (time.time() % 1.0)
            timeout = tick if deadline is None else max(0.0, min(tick, deadline - now))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            now = time.monotonic()
            deadline = self.ui.get_timer()
            if deadline is not None and deadline <= now:
                self.ui.handle_timer(now)
            self.refresh()

    # ----- inputs ----------------------------------------------------------------------------
    def on_key(self, event: KeyEvent) -> None:
        """A key event from the board's key interpreter."""
        self.refresh(render=False)
        self.ui.key(event)
        self._run_actions()
        self.refresh()
        self._wake.set()

    def press(self, key: str, long: bool = False) -> None:
        """A key press from the action API or simulator (already clean: no debounce needed)."""
        if key not in ALL_KEYS:
            raise ActionError(400, f"unknown key {key!r}")
        now = time.monotonic()
        if key == HOOK:
            raise ActionError(400, 'HOOK is not a key to press; use POST /api/hook {"state": ...}')
        self.on_key(KeyEvent(key, "long_press" if long else "press", now))
        self.on_key(KeyEvent(key, "release", now))

    def hook(self, offhook: bool) -> None:
        """Lift (True) or put down (False) the handset."""
        if offhook == self.ui.hook_off:
            return
        self.on_key(KeyEvent(HOOK, "press" if offhook else "release", time.monotonic()))

    def refresh(self, render: bool = True) -> None:
        """New call / feature state: update the UI and push what changed to the board."""
        if self._busy:
            return
        view = PhoneView.from_status(self.phone.status(), clock=time.strftime("%H:%M"))
        self.ui.update(view, time.monotonic())
        self._run_actions()
        if self._pending is not None and not self._busy:
            action, deadline = self._pending
            self._pending = None
            self._busy = True
            try:
                self._run(action, deadline)
            finally:
                self._busy = False
        if render:
            self._render()

    # ----- actions ---------------------------------------------------------------------------
    def _run_actions(self) -> None:
        if self._busy:
            return
        self._busy = True
        try:
            for _ in range(8):  # actions may lead to more (a dial result refocuses)
                actions = self.ui.drain_actions()
                if not actions:
                    break
                for action in actions:
                    self._run(action)
                view = PhoneView.from_status(self.phone.status(), clock=time.strftime("%H:%M"))
                self.ui.update(view, time.monotonic())
        finally:
            self._busy = False

    def _run(self, action: UiAction, retry_until: float | None = None) -> None:
        log.info("UI: %s %s %s", action.kind, action.call_id or "", action.target or "")
        try:
            if action.kind == "dial":
                result = self.phone.dial(self._resolve(action.target or ""), None)
                self.ui.dial_result(action, str(result["id"]), None)
            elif action.kind in ("answer", "reject", "hangup", "hold", "resume"):
                self.phone.call_action(action.call_id, action.kind, {})
            elif action.kind == "transfer":
                target = self._resolve(action.target or "")
                self.phone.call_action(action.call_id, "transfer", {"target": target})
            elif action.kind == "transfer_attended":
                body: dict[str, Any] = {"target_call": action.target}
                self.phone.call_action(action.call_id, "transfer", body)
            elif action.kind == "conference":
                self.phone.call_action(action.call_id, "conference", {"with": action.target})
            elif action.kind == "dtmf":
                self.phone.call_action(action.call_id, "dtmf", {"digits": action.target})
            else:
                self._feature(action)
        except ActionError as e:
            now = time.monotonic()
            if action.kind in ("hold", "resume") and e.status == 409:
                deadline = retry_until if retry_until is not None else now + RETRY_TIME
                if now < deadline:
                    self._pending = (action, deadline)
                    return
            log.info("UI action %s refused: %s", action.kind, e.message)
            if action.kind == "dial":
                self.ui.dial_result(action, None, _plain_error(e.message))
            else:
                self.ui.show_error(_plain_error(e.message), time.monotonic())

    def _feature(self, action: UiAction) -> None:
        """Features of other parts of the phone (DND, forwarding, BLF keys)."""
        if action.kind in ("mute", "volume"):
            return  # the audio wrappers (ui_audio) read the UI's state on every frame
        names = {
            "dnd": "set_dnd",
            "forward": "set_forward",
            "blf": "blf_press",
        }
        method = getattr(self.phone, names[action.kind], None)
        if method is None:
            self.ui.show_error(f"{action.kind.upper()} not available", time.monotonic())
            return
        method(action.target if action.kind in ("forward", "blf") else action.value)

    def _resolve(self, number: str) -> str:
        """A directory number that is reached directly (no PBX) dials its URI."""
        for entry in self.config.directory:
            if entry.number == number and entry.uri:
                return entry.uri
        return number

    # ----- outputs ---------------------------------------------------------------------------
    def _render(self) -> None:
        if self.paths is not None and self.ui.path != "none":
            self.paths.switch(self.ui.path)
        lcd = self.ui.lcd()
        if lcd != self.lcd:
            self.lcd = lcd
            self.board.show(lcd)
            for watch in self.watchers:
                watch(lcd)
        leds = self.ui.leds()
        for name, mode in leds.items():
            if self.leds.get(name) != mode:
                self.board.led(name, mode)
        self.leds = leds
        if self.ui.ringer != self.ringing:
            self.ringing = self.ui.ringer
            self.board.ring(self.ringing)

    def status(self) -> dict[str, Any]:
        """`lcd` (plain text) and `leds` for GET /api/status, plus the UI's own state."""
        board_status = getattr(self.board, "status", None)
        glass = board_status().get("lcd") if callable(board_status) else None
        if glass is not None:
            glass = [line.rstrip() for line in glass]  # the glass pads; status shows the text
        return {
            # what the glass shows (long lines scroll there); the UI's lines without a board
            "lcd": glass if glass is not None else [plain(line) for line in self.lcd],
            "leds": dict(sorted(self.leds.items())),
            "ui": {
                "screen": self.ui.mode,
                "hook": "offhook" if self.ui.hook_off else "onhook",
                "audio_path": self.ui.path,
                "ringer": self.ringing,
                "muted": self.ui.muted,
                "volume": self.ui.volume,
                "history": [
                    {"kind": e.kind, "number": e.number, "name": e.name} for e in self.ui.history
                ],
            },
        }


def _plain_error(message: str) -> str:
    """An action error as a short line for the LCD."""
    text = message.replace("call c", "call ").strip()
    return text[:1].upper() + text[1:]
