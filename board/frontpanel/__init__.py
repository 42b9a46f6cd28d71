"""MicroPython firmware for the deskphone front panel (keypad matrix, hook switch, LEDs).

protocol.py, scanner.py and core.py are pure and shared with the Pi side (board/panel.py);
main.py is the only module that touches pins. See board/frontpanel/README.md.
"""
