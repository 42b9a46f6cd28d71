"""Front-panel firmware entry point (MicroPython on a Raspberry Pi Pico / RP2040).

Only pin, UART and watchdog set-up lives here; the loop bodies are in app.py (tested under
CPython and MicroPython with fake pins), the protocol and debounce in protocol.py/scanner.py.
The pin map comes from panel_config.py, which `deskphone-flash panel` writes from the board
profile.

Optional micropython-lib package: `logging` (the flasher installs it with `mip` when asked and
the board can reach an index); without it the panel logs nothing and still works.
"""

import asyncio
import time

import machine
import panel_config as cfg
from frontpanel.app import PanelApp

try:
    import logging

    log = logging.getLogger("panel")
except ImportError:
    log = None

SCAN_PERIOD_MS = 2  # a 6-row matrix is scanned every few ms: well inside the 20 ms debounce
SERVE_PERIOD_MS = 5
WATCHDOG_MS = 2000  # a hung loop resets the panel; the Pi notices the new hello


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


async def scan_loop(app, clock):
    while True:
        app.scan(clock.read())
        await asyncio.sleep_ms(SCAN_PERIOD_MS)


async def serve_loop(app, clock, wdt):
    while True:
        if app.serve(clock.read()):
            machine.reset()
        wdt.feed()
        await asyncio.sleep_ms(SERVE_PERIOD_MS)


async def run(app, clock, wdt):
    await asyncio.gather(scan_loop(app, clock), serve_loop(app, clock, wdt))


def main():
    pin = machine.Pin
    uart = machine.UART(cfg.UART_ID, baudrate=cfg.BAUD, tx=pin(cfg.TX), rx=pin(cfg.RX))
    rows = [pin(p, pin.OUT, value=1) for p in cfg.ROWS]
    cols = [pin(p, pin.IN, pin.PULL_UP) for p in cfg.COLS]
    hook = pin(cfg.HOOK, pin.IN, pin.PULL_UP) if cfg.HOOK is not None else None
    leds = {name: pin(p, pin.OUT, value=0) for name, p in cfg.LEDS.items()}
    clock = Clock()
    app = PanelApp(uart, rows, cols, cfg.KEYMAP, leds, hook, cfg.DEBOUNCE_MS, clock.read())
    wdt = machine.WDT(timeout=WATCHDOG_MS)
    app.start()
    if log:
        log.info("front panel up on UART %d", cfg.UART_ID)
    asyncio.run(run(app, clock, wdt))


main()
