"""The board layer: the phone's hardware behind small ports (DESIGN.md "board layer").

ports.py      the contract (key names, KeyEdge/KeyEvent, Keypad/Display/Indicator/Ringer)
keys.py       debounce, long press, auto-repeat, matrix scanning (sans-IO, on the phone clock)
leds.py       LED modes and the ring cadence (sans-IO)
charset.py    HD44780 ROM A00 text, CGRAM icons, scrolling, untrusted text (sans-IO)
profile.py    board profiles in TOML (profiles/: pi-reference, sim), validated
gpio.py       gpiozero: hook, buttons, scanned matrix, LEDs, buzzer
lcd_hd44780.py, lcd_serial.py, ringer_sound.py, sim.py: the other parts
factory.py    build_board(profile, clock, pin_factory) -> Board
frontpanel/   the serial front panel (its MicroPython firmware and line protocol)
The asyncio side is firmware/runtime/board_io.py.
"""
