"""Panel logic test cases that run unchanged under CPython (pytest) and MicroPython (node).

Plain functions named case_* with bare asserts: MicroPython has no pytest, so
tests/panel/test_panel_logic.py collects these for CPython and tests/panel/node/run_micropython.mjs
runs them inside the real MicroPython WebAssembly port.
"""

try:
    from frontpanel import protocol
    from frontpanel.app import PanelApp
    from frontpanel.core import PanelCore
    from frontpanel.scanner import Debouncer, DirectInputs, LedPatterns, MatrixScanner
except ImportError:
    from board.frontpanel import protocol
    from board.frontpanel.app import PanelApp
    from board.frontpanel.core import PanelCore
    from board.frontpanel.scanner import Debouncer, DirectInputs, LedPatterns, MatrixScanner


def _raises(exc, fn, *args):
    try:
        fn(*args)
    except exc:
        return True
    return False


def case_crc16_check_value():
    # The CRC-16/CCITT-FALSE catalogue check value for "123456789".
    assert protocol.crc16(b"123456789") == 0x29B1


def case_frame_round_trip():
    frame = protocol.encode(protocol.KEY, 7, ("DIGIT_5", "D", 1234))
    assert frame.endswith(b"\n")
    assert protocol.decode(frame) == ("K", 7, ["DIGIT_5", "D", "1234"])


def case_sequence_wraps_at_16_bits():
    seq = protocol.Sequencer()
    seq.next = 0xFFFF
    assert seq.take() == 0xFFFF
    assert seq.take() == 0
    assert protocol.decode(protocol.encode(protocol.HEARTBEAT, 70000, (1,)))[1] == 70000 & 0xFFFF


def case_corrupted_frame_is_refused():
    frame = bytearray(protocol.encode(protocol.LED, 3, ("MWI", "on")))
    frame[4] = ord("X")
    assert _raises(protocol.FrameError, protocol.decode, bytes(frame))
    assert _raises(protocol.FrameError, protocol.decode, b"L|3|MWI|on")
    assert _raises(protocol.FrameError, protocol.decode, b"Z|1*0000")


def case_fields_with_separators_are_refused():
    assert _raises(protocol.FrameError, protocol.encode, protocol.ERROR, 1, ("a|b",))
    assert _raises(protocol.FrameError, protocol.encode, protocol.ERROR, 1, ("a*b",))
    assert _raises(protocol.FrameError, protocol.encode, "?", 1, ())


def case_reader_skips_garbage_and_resynchronises():
    reader = protocol.LineReader()
    good = protocol.encode(protocol.HEARTBEAT, 1, (500,))
    frames = reader.feed(b"\x00\xffnoise*12\n" + good[:5])
    assert frames == []
    assert reader.errors == 1
    frames = reader.feed(good[5:] + b"x" * 300)
    assert frames == [("B", 1, ["500"])]
    assert reader.errors == 2  # the overlong run of garbage
    frames = reader.feed(b"\n" + good)
    assert frames == [("B", 1, ["500"])]


def case_debounce_reports_after_stable_period_with_first_change_time():
    d = Debouncer(20)
    assert d.update(True, 100) == (False, False, 100)
    assert d.update(False, 105)[0] is False  # bounce
    assert d.update(True, 110)[0] is False
    assert d.update(True, 129)[0] is False  # stable for 19 ms only
    assert d.update(True, 130) == (True, True, 110)
    assert d.update(True, 500)[0] is False
    assert d.update(False, 600)[0] is False
    assert d.update(False, 620) == (True, False, 600)


def case_matrix_scan_edges():
    keymap = {(0, 0): "DIGIT_1", (0, 1): "DIGIT_2", (1, 0): "DIGIT_4", (1, 1): "DIGIT_5"}
    m = MatrixScanner(2, 2, keymap, debounce_ms=10)
    assert m.scan_row(0, [False, True], 0) == []
    assert m.scan_row(1, [False, False], 1) == []
    assert m.scan_row(0, [False, True], 10) == [("DIGIT_2", True, 0)]
    assert m.pressed() == ["DIGIT_2"]
    assert m.scan_row(0, [False, False], 50) == []
    assert m.scan_row(0, [False, False], 60) == [("DIGIT_2", False, 50)]
    assert _raises(ValueError, m.scan_row, 0, [True], 70)
    assert _raises(ValueError, MatrixScanner, 1, 1, {(1, 0): "X"})


def case_matrix_ghost_rectangle_is_ignored():
    keymap = {(r, c): f"K{r}{c}" for r in range(2) for c in range(2)}
    m = MatrixScanner(2, 2, keymap, debounce_ms=0)
    # Three real keys (0,0) (0,1) (1,0) make (1,1) read pressed too on a diode-less matrix.
    m.scan_row(0, [True, True], 0)
    edges = m.scan_row(1, [True, True], 0)
    assert edges == []  # row 1 is ambiguous: nothing reported for it
    assert "K11" not in m.pressed()


def case_direct_input_hook():
    d = DirectInputs(["HOOK"], debounce_ms=30)
    assert d.update("HOOK", True, 0) == []
    assert d.update("HOOK", True, 30) == [("HOOK", True, 0)]


def case_led_patterns():
    leds = LedPatterns(["MWI", "LINE_1"])
    leds.set("MWI", "slow_flash")
    leds.set("LINE_1", "fast_flash")
    assert [leds.lit("MWI", t) for t in (0, 499, 500, 999, 1000)] == [True, True, False, False, True]
    assert [leds.lit("LINE_1", t) for t in (0, 124, 125, 249)] == [True, True, False, False]
    assert _raises(ValueError, leds.set, "NOPE", "on")
    assert _raises(ValueError, leds.set, "MWI", "blink")


def case_core_hello_keys_heartbeat_and_led_commands():
    core = PanelCore(["DIGIT_1", "HOOK"], ["MWI"], now_ms=1000, heartbeat_ms=500)
    kind, seq, fields = protocol.decode(core.hello())
    assert (kind, seq) == ("H", 0)
    assert fields[0] == str(protocol.PROTOCOL_VERSION)
    assert protocol.decode(core.key("HOOK", True, 1010)) == ("K", 1, ["HOOK", "D", "10"])
    assert core.tick(1499) == b""
    assert protocol.decode(core.tick(1500)) == ("B", 2, ["500"])
    reply = core.receive(protocol.encode(protocol.LED, 41, ("MWI", "fast_flash")))
    assert protocol.decode(reply) == ("A", 3, ["41"])
    assert core.leds.modes["MWI"] == "fast_flash"
    reply = core.receive(protocol.encode(protocol.LED, 42, ("NOPE", "on")) + b"junk\n")
    assert protocol.decode(reply)[0] == "E"
    assert core.reader.errors == 1
    reply = core.receive(protocol.encode(protocol.QUERY, 43, ()))
    assert protocol.decode(reply)[0] == "H"
    core.receive(protocol.encode(protocol.RESET, 44, ()))
    assert core.reset_requested


class FakePin:
    """MicroPython's Pin interface: value() reads, value(v) drives."""

    def __init__(self, level=1, read=None):
        self.level = level
        self.history = []
        self._read = read

    def value(self, v=None):
        if v is None:
            return self._read() if self._read else self.level
        self.level = v
        self.history.append(v)
        return None


class FakeUart:
    def __init__(self):
        self.rx = b""
        self.tx = b""

    def read(self):
        data, self.rx = self.rx, b""
        return data or None

    def write(self, data):
        self.tx += data


def _frames(uart):
    frames = protocol.LineReader().feed(uart.tx)
    uart.tx = b""
    return frames


def case_app_scans_matrix_and_hook_and_drives_leds():
    held = set()  # (row, col) of keys a finger holds down
    rows = [FakePin(), FakePin()]

    def column(c):
        # A column reads low when a held key joins it to the row currently driven low.
        return lambda: 0 if any(rows[r].level == 0 and (r, c) in held for r in range(2)) else 1

    cols = [FakePin(read=column(0)), FakePin(read=column(1))]
    hook = FakePin(level=1)
    mwi = FakePin(level=0)
    uart = FakeUart()
    keymap = {(0, 0): "DIGIT_1", (0, 1): "DIGIT_2", (1, 0): "HOLD", (1, 1): "CONF"}
    app = PanelApp(uart, rows, cols, keymap, {"MWI": mwi}, hook, debounce_ms=10, now_ms=0)
    app.start()
    assert [f[0] for f in _frames(uart)] == ["H"]
    held.add((1, 1))
    hook.level = 0  # handset lifted
    for t in (0, 5, 10):
        app.scan(t)
    keys = [f[2][:2] for f in _frames(uart) if f[0] == "K"]
    assert keys == [["CONF", "D"], ["HOOK", "D"]]
    held.clear()
    for t in (20, 30):
        app.scan(t)
    assert [f[2][:2] for f in _frames(uart)] == [["CONF", "U"]]
    assert rows[0].level == 1 and rows[1].level == 1  # rows idle high between scans
    uart.rx = protocol.encode(protocol.LED, 9, ("MWI", "slow_flash"))
    assert app.serve(100) is False
    assert [(f[0], f[2]) for f in _frames(uart)] == [("A", ["9"])]
    assert mwi.level == 1  # 100 ms into a 1 s period: the on half
    app.serve(600)
    assert mwi.level == 0
    assert [f[0] for f in _frames(uart)] == ["B"]  # the heartbeat was due
    uart.rx = protocol.encode(protocol.RESET, 10, ())
    assert app.serve(610) is True


CASES = sorted(name for name in dir() if name.startswith("case_"))
