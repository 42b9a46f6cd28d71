"""Front-panel firmware entry point (MicroPython on a Raspberry Pi Pico / RP2040).

Only pin, UART and watchdog I/O lives here; the behaviour is in core.py and scanner.py, which
the project tests under CPython and MicroPython. The pin map comes from panel_config.py, which
`deskphone-flash panel` writes from the board profile.

Optional micropython-lib package: `logging` (installed with `mip` by the flasher when the board
can reach an index); without it the panel logs nothing and still works.
"""

import asyncio
import time

import machine  # noqa: F401  (MicroPython only)
import panel_config as cfg
from frontpanel.core import PanelCore
from frontpanel.scanner import DirectInputs, MatrixScanner

try:
    import logging

    log = logging.getLogger("panel")
except ImportError:
    log = None

SCAN_PERIOD_MS = 2  # a full 6-row matrix scan every ~12 ms: well under the 20 ms debounce
WATCHDOG_MS = 2000


class Clock:
    """An ever-growing millisecond count from the wrapping time.ticks_ms()."""

    def __init__(self):
        self._last = time.ticks_ms()
        self.now = 0

    def read(self):
        t = time.ticks_ms()
        self.now += time.ticks_diff(t, self._last)
        self._last = t
        return self.now


async def scan(core, scanner, direct, rows, cols, hook, uart, clock):
    while True:
        for r, row_pin in enumerate(rows):
            row_pin.value(0)  # active-low: the pressed key pulls its column down
            readings = [pin.value() == 0 for pin in cols]
            row_pin.value(1)
            for name, pressed, at in scanner.scan_row(r, readings, clock.read()):
                uart.write(core.key(name, pressed, at))
        if hook is not None:
            # Hook switch closed = handset lifted = HOOK pressed.
            for name, pressed, at in direct.update("HOOK", hook.value() == 0, clock.read()):
                uart.write(core.key(name, pressed, at))
        await asyncio.sleep_ms(SCAN_PERIOD_MS)


async def serve(core, leds, uart, clock, wdt):
    while True:
        now = clock.read()
        data = uart.read()
        if data:
            reply = core.receive(data)
            if reply:
                uart.write(reply)
            if core.reset_requested:
                machine.reset()
        beat = core.tick(now)
        if beat:
            uart.write(beat)
        for name, pin in leds.items():
            pin.value(1 if core.leds.lit(name, now) else 0)
        wdt.feed()
        await asyncio.sleep_ms(5)


def main():
    uart = machine.UART(cfg.UART_ID, baudrate=cfg.BAUD, tx=machine.Pin(cfg.TX), rx=machine.Pin(cfg.RX))
    rows = [machine.Pin(p, machine.Pin.OUT, value=1) for p in cfg.ROWS]
    cols = [machine.Pin(p, machine.Pin.IN, machine.Pin.PULL_UP) for p in cfg.COLS]
    hook = None
    if cfg.HOOK is not None:
        hook = machine.Pin(cfg.HOOK, machine.Pin.IN, machine.Pin.PULL_UP)
    leds = {name: machine.Pin(p, machine.Pin.OUT, value=0) for name, p in cfg.LEDS.items()}
    clock = Clock()
    names = list(cfg.KEYMAP.values()) + (["HOOK"] if hook is not None else [])
    core = PanelCore(names, leds.keys(), clock.read())
    scanner = MatrixScanner(len(rows), len(cols), cfg.KEYMAP, cfg.DEBOUNCE_MS)
    direct = DirectInputs(["HOOK"], cfg.DEBOUNCE_MS)
    wdt = machine.WDT(timeout=WATCHDOG_MS)  # a hung scan loop resets the panel; the Pi notices
    uart.write(core.hello())
    if log:
        log.info("panel %s up", cfg.UART_ID)
    asyncio.run(
        asyncio.gather(
            scan(core, scanner, direct, rows, cols, hook, uart, clock),
            serve(core, leds, uart, clock, wdt),
        )
    )


main()
