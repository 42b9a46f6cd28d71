"""gpiozero adapters: hook switch, buttons, scanned key matrix, LEDs and buzzer on GPIO pins.

gpiozero only reports raw edges here (no `bounce_time`: debounce, long press and repeat are
decided on our clock by board/keys). Its callbacks run on gpiozero's own thread on a real Pi
(on the driving thread with MockFactory), so the sink must be thread-safe; the runtime's sink
hops onto the event loop (firmware/runtime/board_io.py). Edges are stamped with the phone's
clock when the callback runs.

The key matrix is scanned by us with raw gpiozero pins: one row at a time is switched to output
and driven to the active level while the others stay high-impedance inputs (so two keys in one
column never short two driven rows), and the pulled-up columns are read.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from gpiozero import Button, Buzzer, Device, DigitalOutputDevice

from board.keys import MatrixScanner
from board.ports import HOOK, Clock, EdgeSink, KeyEdge
from board.profile import BoardProfile, MatrixSpec, Pin

log = logging.getLogger(__name__)


def _factory(pin_factory: Any) -> Any:
    if pin_factory is not None:
        return pin_factory
    Device.ensure_pin_factory()  # the same default the gpiozero devices use
    return Device.pin_factory


class GpioKeypad:
    """Hook switch and direct buttons (gpiozero Button) plus an optional scanned matrix.

    The pins are claimed when it is created (so a missing GPIO driver or a pin in use fails
    while the board is built); edges flow once `start` gives the sink.
    """

    def __init__(self, profile: BoardProfile, clock: Clock, pin_factory: Any = None) -> None:
        self._profile, self._clock = profile, clock
        self._sink: EdgeSink | None = None
        self._buttons: list[tuple[str, Button]] = []
        self._matrix: _Matrix | None = None
        try:
            if profile.hook is not None:
                self._button(HOOK, profile.hook.pin, profile.hook.active_low, pin_factory)
            for key, pin in profile.buttons.items():
                self._button(key, pin, profile.buttons_pull_up, pin_factory)
            if profile.matrix is not None:
                self._matrix = _Matrix(profile.matrix, pin_factory)
        except BaseException:
            self.close()
            raise

    @property
    def poll_interval(self) -> float | None:
        return self._profile.matrix.scan_interval if self._profile.matrix else None

    def start(self, sink: EdgeSink) -> None:
        self._sink = sink
        for key, button in self._buttons:
            button.when_pressed = functools.partial(self._edge, key, True)
            button.when_released = functools.partial(self._edge, key, False)
        # A key already down at start (handset off hook) is reported like any other edge.
        for key, button in self._buttons:
            if button.is_pressed:
                self._edge(key, True)

    def _button(self, key: str, pin: Pin, pull_up: bool, pin_factory: Any) -> None:
        button = Button(pin, pull_up=pull_up, bounce_time=None, pin_factory=pin_factory)
        self._buttons.append((key, button))

    def _edge(self, key: str, pressed: bool) -> None:
        if self._sink is not None:
            self._sink(KeyEdge(key, pressed, self._clock.now()))

    def poll(self, now: float) -> None:
        """Scan the matrix once (called every `poll_interval` by the runtime)."""
        if self._matrix is None or self._sink is None:
            return
        for edge in self._matrix.scan(now):
            self._sink(edge)

    def close(self) -> None:
        self._sink = None
        for _key, button in self._buttons:
            button.close()
        self._buttons.clear()
        if self._matrix is not None:
            self._matrix.close()
            self._matrix = None


class _Matrix:
    def __init__(self, spec: MatrixSpec, pin_factory: Any) -> None:
        self._factory = _factory(pin_factory)
        self._scanner = MatrixScanner(spec.layout)
        self._active = not spec.active_low  # the level a driven row and a pressed column have
        self._factory.reserve_pins(self, *spec.rows, *spec.cols)
        self._rows = [self._factory.pin(p) for p in spec.rows]
        self._cols = [self._factory.pin(p) for p in spec.cols]
        for pin in self._rows:
            pin.function = "input"
        for pin in self._cols:
            pin.function = "input"
            pin.pull = "up" if spec.active_low else "down"

    def scan(self, now: float) -> list[KeyEdge]:
        edges: list[KeyEdge] = []
        for r, row in enumerate(self._rows):
            row.function = "output"
            row.state = self._active
            levels = [bool(col.state) == self._active for col in self._cols]
            row.function = "input"
            edges += self._scanner.feed_row(r, levels, now)
        return edges

    def close(self) -> None:
        for pin in self._rows + self._cols:
            pin.close()
        self._factory.release_all(self)


class GpioIndicator:
    """LEDs on GPIO outputs (gpiozero DigitalOutputDevice); flashing is timed by the caller."""

    def __init__(self, leds: dict[str, Pin], active_high: bool = True,
                 pin_factory: Any = None) -> None:
        self._leds = {
            name: DigitalOutputDevice(pin, active_high=active_high, initial_value=False,
                                      pin_factory=pin_factory)
            for name, pin in leds.items()
        }

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self._leds)

    def set(self, name: str, lit: bool) -> None:
        device = self._leds[name]
        device.on() if lit else device.off()

    def close(self) -> None:
        for device in self._leds.values():
            device.close()


class BuzzerRinger:
    """An active buzzer on a GPIO pin (gpiozero Buzzer): on while the cadence is on."""

    def __init__(self, pin: Pin, active_high: bool = True, pin_factory: Any = None) -> None:
        self._buzzer = Buzzer(pin, active_high=active_high, initial_value=False,
                              pin_factory=pin_factory)

    def ring(self, on: bool) -> None:
        self._buzzer.on() if on else self._buzzer.off()

    def close(self) -> None:
        self._buzzer.close()
