"""The board's asyncio side: raw key edges in, debounced key events out; LCD, LEDs, ringer out.

board/ is sans-IO where it decides things (board/keys, board/leds); this module owns the time:
it feeds every edge into the `KeyInterpreter` on the event loop (gpiozero calls back from its
own thread, so edges hop over with `call_soon_threadsafe`), keeps ONE timer armed at the
earliest deadline of the key interpreter, the LED flasher and the ring cadence, scans a key
matrix on absolute deadlines, and writes the LCD off the loop (an I2C HD44780 needs ~0.5 ms
per character; only the latest screen is written when the UI changes faster than the glass).

The UI side (firmware/runtime/ui_driver.py) uses the plain API: `BoardIO(board, clock, on_key)`,
`.show(lines)`, `.led(name, mode)`, `.ring(on)`, `.status()`, `await .start()`, `await .close()`,
or `open_board(profile, on_key)` to build one from a profile name or file.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from board.charset import fit, plain, scroll
from board.factory import Board, build_board
from board.keys import KeyInterpreter
from board.leds import Cadence, LedDriver
from board.ports import LED_MODES, LED_NAMES, Clock, KeyEdge, KeyEvent, LedMode
from board.profile import AudioDevices, load_profile
from board.sim import SimKeypad

log = logging.getLogger(__name__)

KeySink = Callable[[KeyEvent], None]


class MonotonicClock:
    """The phone's clock: `time.monotonic()` (the event loop's time base too)."""

    def now(self) -> float:
        return time.monotonic()


class BoardIO:
    """Runs one board on the event loop."""

    def __init__(self, board: Board, clock: Clock, on_key: KeySink) -> None:
        self.board = board
        self.clock = clock
        self.on_key = on_key
        self.keys = KeyInterpreter(board.profile.timing)
        self.leds = LedDriver(board.indicator.names)
        self.cadence = Cadence(board.profile.ringer.cadence)
        cols, rows = board.display.size
        self.lines = fit([], cols, rows)
        self._source: list[str] = []  # the UI's lines before fitting (long ones scroll)
        self._scroll_since: dict[int, float] = {}
        self._scroll_at: float | None = None
        self.led_modes: dict[str, LedMode] = {}  # what the UI asked for, also LEDs we lack
        self.events: deque[KeyEvent] = deque(maxlen=256)  # recent key events, for diagnostics
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._poll: asyncio.TimerHandle | None = None
        self._blocking_display = getattr(board.display, "blocking_io", True)
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="lcd") if self._blocking_display \
            else None
        self._written: list[str] | None = None
        self._writing: asyncio.Future[None] | None = None
        self._closed = False
        # A keypad that can fail on its own (a serial front panel) reports health(); while it
        # is unwell its error replaces the LCD's bottom line, so the person at the desk sees why
        # the keys do nothing (and lab scripts see it in status "lcd").
        self._health = getattr(board.keypad, "health", None)
        self.hardware_error: str | None = None
        self._health_timer: asyncio.TimerHandle | None = None

    # ----- lifecycle -----------------------------------------------------------------------
    @property
    def size(self) -> tuple[int, int]:
        """(columns, rows) of the LCD."""
        return self.board.display.size

    async def start(self) -> None:
        """Attach to the running loop, start the keypad and its matrix scan, blank the LCD."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self.board.keypad.start(self._edge_from_driver)
        interval = getattr(self.board.keypad, "poll_interval", None)
        if interval:
            self._schedule_poll(self.clock.now() + interval, interval)
        for name in sorted(self.board.indicator.names):
            self._set_led(name, self.led_modes.get(name, "off"))
        if callable(self._health):
            self._check_health()
        self._flush_display()
        self._rearm()

    HEALTH_INTERVAL = 0.5

    def _check_health(self) -> None:
        if self._closed or self._loop is None or not callable(self._health):
            return
        error = self._health()
        if error != self.hardware_error:
            if error:
                log.warning("board: %s", error)
            self.hardware_error = error
            self._scroll_since[self.size[1] - 1] = self.clock.now()
            self._render_lines(self.clock.now())
            self._rearm()
        self._health_timer = self._loop.call_later(self.HEALTH_INTERVAL, self._check_health)

    async def close(self) -> None:
        """Stop timers and scanning, let the last LCD write finish, close the hardware."""
        self._closed = True
        for handle in (self._timer, self._poll, self._health_timer):
            if handle is not None:
                handle.cancel()
        if self._writing is not None:
            try:
                await self._writing
            except Exception:  # noqa: BLE001 - already logged by the writer
                pass
        if self._writer is not None:
            self._writer.shutdown(wait=True)
        self.board.close()

    # ----- keys ----------------------------------------------------------------------------
    def _edge_from_driver(self, edge: KeyEdge) -> None:
        """The keypad's sink: runs on gpiozero's thread on a Pi, on the loop otherwise."""
        loop = self._loop
        if loop is None or self._closed:
            return
        if threading.get_ident() == self._loop_thread:
            self.feed(edge)
            return
        try:
            loop.call_soon_threadsafe(self.feed, edge)
        except RuntimeError:  # the loop closed under a late gpiozero callback: drop the edge
            log.debug("edge %s after the event loop closed", edge)

    def feed(self, edge: KeyEdge) -> None:
        """One raw edge (on the loop)."""
        if self._closed:
            return
        try:
            events = self.keys.feed(edge)
        except ValueError:
            log.warning("ignoring an edge for an unknown key %r", edge.key)
            return
        self._deliver(events)
        self._rearm()

    def _deliver(self, events: list[KeyEvent]) -> None:
        for event in events:
            self.events.append(event)
            try:
                self.on_key(event)
            except Exception:  # noqa: BLE001 - a UI bug must not stop the keypad
                log.exception("key handler failed for %s", event)

    def _schedule_poll(self, at: float, interval: float) -> None:
        assert self._loop is not None
        self._poll = self._loop.call_later(max(0.0, at - self.clock.now()), self._do_poll,
                                           at, interval)

    def _do_poll(self, at: float, interval: float) -> None:
        if self._closed:
            return
        try:
            self.board.keypad.poll(self.clock.now())  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001 - a flaky pin read must not stop scanning
            log.exception("key matrix scan failed")
        now = self.clock.now()
        nxt = at + interval
        if nxt < now:  # fell behind (loop was busy): skip missed scans, keep the grid
            nxt += interval * int((now - nxt) / interval + 1)
        self._schedule_poll(nxt, interval)

    def tap(self, key: str, hold: float = 0.1) -> None:
        """Press a key of the simulated keypad for `hold` seconds (a terminal reports no key-up,
        and a 0 ms tap would be filtered as a glitch); hold >= 0.8 s is a long press."""
        pad = self.board.keypad
        if not isinstance(pad, SimKeypad) or self._loop is None:
            raise RuntimeError("tap() needs the simulated keypad of a started board")
        pad.press(key)
        self._loop.call_later(hold, pad.release, key)

    # ----- outputs -------------------------------------------------------------------------
    def show(self, lines: list[str]) -> None:
        """Put `lines` on the LCD (fitted to its size; identical screens are not rewritten).

        A line longer than the display scrolls (board/charset.scroll: hold, step, hold,
        restart), timed by the board's one timer; the UI opts in by not cutting the line.
        """
        now = self.clock.now()
        rows = self.size[1]
        source = [line.replace("\n", " ").replace("\r", " ") for line in list(lines)[:rows]]
        for row, line in enumerate(source):
            if row >= len(self._source) or self._source[row] != line:
                self._scroll_since[row] = now  # a new text starts scrolling from its start
        self._source = source
        self._render_lines(now)
        self._rearm()

    def _render_lines(self, now: float) -> None:
        cols, rows = self.size
        windows: list[str] = []
        self._scroll_at = None
        source = list(self._source)
        if self.hardware_error:
            source += [""] * (rows - len(source))
            source[rows - 1] = self.hardware_error
        for row, line in enumerate(source):
            window, wait = scroll(line, cols, now - self._scroll_since.get(row, now))
            windows.append(window)
            if wait is not None:
                at = now + wait
                self._scroll_at = at if self._scroll_at is None else min(self._scroll_at, at)
        self.lines = fit(windows, cols, rows)
        self._flush_display()

    def led(self, name: str, mode: LedMode) -> None:
        """Set an LED's mode; an LED this board does not have is remembered for status only."""
        if name not in LED_NAMES or mode not in LED_MODES:
            log.warning("ignoring LED %r mode %r", name, mode)
            return
        self.led_modes[name] = mode
        if name in self.board.indicator.names:
            self._set_led(name, mode)
            self._rearm()

    def _set_led(self, name: str, mode: LedMode) -> None:
        """Flash on our clock, unless the indicator keeps the rhythm itself (a front panel)."""
        set_mode = getattr(self.board.indicator, "set_mode", None)
        if not callable(set_mode):
            self._apply_leds(self.leds.set_mode(name, mode, self.clock.now()))
            return
        try:
            set_mode(name, mode)
        except Exception:  # noqa: BLE001 - a dead LED must not stop the phone
            log.exception("LED %s failed", name)

    def ring(self, on: bool) -> None:
        """Start (cadence from its on-phase) or stop the ringer."""
        for level in self.cadence.ring(on, self.clock.now()):
            self._ringer(level)
        self._rearm()

    def audio_devices(self, path: str) -> AudioDevices | None:
        """The profile's capture/playback devices for an audio path (handset, speaker,
        headset), for the media engine when the UI switches paths; None if not configured."""
        return self.board.profile.audio.get(path)

    def status(self) -> dict[str, Any]:
        """What the hardware shows: LCD text (icons as look-alikes), LED modes, ringer."""
        return {
            "lcd": [plain(line) for line in self.lines],
            "leds": {name: self.led_modes.get(name, "off")
                     for name in sorted(self.board.indicator.names)},
            "ringing": self.cadence.ringing,
            "board": self.board.profile.name,
        }

    def _apply_leds(self, changes: list[tuple[str, bool]]) -> None:
        for name, lit in changes:
            try:
                self.board.indicator.set(name, lit)
            except Exception:  # noqa: BLE001 - a dead LED must not stop the phone
                log.exception("LED %s failed", name)

    def _ringer(self, level: bool) -> None:
        try:
            self.board.ringer.ring(level)
        except Exception:  # noqa: BLE001
            log.exception("ringer failed")

    def _flush_display(self) -> None:
        if self._closed or self.lines == self._written:
            return
        if self._writer is None or self._loop is None:
            self._written = list(self.lines)
            self._write_display(self._written)
            return
        if self._writing is not None and not self._writing.done():
            return  # the writer picks up the latest lines when it finishes
        lines = list(self.lines)
        self._written = lines
        self._writing = self._loop.run_in_executor(self._writer, self._write_display, lines)
        self._writing.add_done_callback(lambda _f: self._flush_display())

    def _write_display(self, lines: list[str]) -> None:
        try:
            self.board.display.show(lines)
        except Exception:  # noqa: BLE001 - an I2C/serial error must not stop the phone
            log.exception("LCD write failed")

    # ----- the one timer -------------------------------------------------------------------
    def _next_deadline(self) -> float | None:
        times = [t for t in (self.keys.get_timer(), self.leds.get_timer(),
                             self.cadence.get_timer(), self._scroll_at) if t is not None]
        return min(times) if times else None

    def _rearm(self) -> None:
        if self._loop is None or self._closed:
            return
        deadline = self._next_deadline()
        if deadline == self._timer_at and self._timer is not None:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = deadline
        if deadline is not None:
            self._timer = self._loop.call_later(max(0.0, deadline - self.clock.now()),
                                                self._on_timer)

    def _on_timer(self) -> None:
        self._timer = self._timer_at = None
        now = self.clock.now()
        self._deliver(self.keys.handle_timer(now))
        self._apply_leds(self.leds.handle_timer(now))
        for level in self.cadence.handle_timer(now):
            self._ringer(level)
        if self._scroll_at is not None and self._scroll_at <= now + 1e-6:
            self._render_lines(now)
        self._rearm()


def open_board(
    profile: str | Path,
    on_key: KeySink,
    *,
    clock: Clock | None = None,
    pin_factory: Any = None,
    i2c_bus: Any = None,
    serial_port: Any = None,
    base: Path | None = None,
) -> BoardIO:
    """Load the profile (a shipped name such as "sim", or a file) and build its board."""
    clock = clock or MonotonicClock()
    board = build_board(load_profile(profile, base), clock, pin_factory, i2c_bus=i2c_bus,
                        serial_port=serial_port)
    return BoardIO(board, clock, on_key)
