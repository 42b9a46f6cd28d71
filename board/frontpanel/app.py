"""The panel's main loop bodies, written against pin and UART objects passed in.

main.py builds the objects from `machine` and calls scan() and serve() from two asyncio tasks;
tests pass simple fake pins and UART and call them on chosen times, under CPython and under a
real MicroPython, so the loop logic that runs on the panel is the logic that was tested.
Pins follow MicroPython's interface: value() reads, value(v) writes. Rows are driven low one at
a time; a pressed key pulls its column low (columns have pull-ups); the hook switch closes to
ground when the handset is lifted.
"""

try:
    from frontpanel.core import PanelCore
    from frontpanel.scanner import DirectInputs, MatrixScanner
except ImportError:  # CPython: the package lives under board/
    from board.frontpanel.core import PanelCore
    from board.frontpanel.scanner import DirectInputs, MatrixScanner


class PanelApp:
    def __init__(self, uart, rows, cols, keymap, leds, hook=None, debounce_ms=20, now_ms=0):
        self.uart = uart
        self.rows = rows
        self.cols = cols
        self.hook = hook
        self.leds = leds  # name -> output pin
        names = list(keymap.values()) + (["HOOK"] if hook is not None else [])
        self.core = PanelCore(names, list(leds.keys()), now_ms)
        self.scanner = MatrixScanner(len(rows), len(cols), keymap, debounce_ms)
        self.direct = DirectInputs(["HOOK"], debounce_ms)

    def start(self):
        for pin in self.rows:
            pin.value(1)
        self.uart.write(self.core.hello())

    def scan(self, now_ms):
        """One full matrix scan plus the hook switch; key frames go straight out."""
        out = b""
        for r, row_pin in enumerate(self.rows):
            row_pin.value(0)
            readings = [pin.value() == 0 for pin in self.cols]
            row_pin.value(1)
            for name, pressed, at in self.scanner.scan_row(r, readings, now_ms):
                out += self.core.key(name, pressed, at)
        if self.hook is not None:
            for name, pressed, at in self.direct.update("HOOK", self.hook.value() == 0, now_ms):
                out += self.core.key(name, pressed, at)
        if out:
            self.uart.write(out)

    def serve(self, now_ms):
        """Obey the Pi, send the heartbeat when due, drive the LEDs. True = reset requested."""
        data = self.uart.read()
        if data:
            reply = self.core.receive(data)
            if reply:
                self.uart.write(reply)
        beat = self.core.tick(now_ms)
        if beat:
            self.uart.write(beat)
        for name, pin in self.leds.items():
            pin.value(1 if self.core.leds.lit(name, now_ms) else 0)
        return self.core.reset_requested
