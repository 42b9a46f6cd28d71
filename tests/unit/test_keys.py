"""board/keys: debounce, long press, auto-repeat and matrix scanning at exact clock times."""

from __future__ import annotations

from typing import Any

import pytest

from board.keys import KeyInterpreter, KeyTiming, MatrixScanner
from board.ports import KeyEdge, KeyEvent

T = KeyTiming(debounce=0.02, hook_debounce=0.05, long_press=0.8, repeat_delay=0.5,
              repeat_interval=0.15)


def ev(key: str, kind: str, at: Any) -> KeyEvent:
    return KeyEvent(key, kind, at)  # type: ignore[arg-type]


def test_clean_press_is_confirmed_after_the_debounce_time() -> None:
    k = KeyInterpreter(T)
    assert k.feed(KeyEdge("DIGIT_5", True, 10.0)) == []
    assert k.get_timer() == pytest.approx(10.02)
    assert k.handle_timer(10.019) == []
    assert k.handle_timer(10.02) == [ev("DIGIT_5", "press", 10.02)]
    assert k.is_down("DIGIT_5")
    k.feed(KeyEdge("DIGIT_5", False, 10.1))
    assert k.handle_timer(10.12) == [ev("DIGIT_5", "release", pytest.approx(10.12))]
    assert k.get_timer() is None


def test_bounces_shorter_than_the_debounce_time_are_ignored() -> None:
    k = KeyInterpreter(T)
    # contact bounce on press: the level is stable only from 1.006
    for at, level in [(1.000, True), (1.002, False), (1.004, True), (1.005, False), (1.006, True)]:
        assert k.feed(KeyEdge("HOLD", level, at)) == []
    assert k.handle_timer(1.025) == []
    assert k.handle_timer(1.026) == [ev("HOLD", "press", pytest.approx(1.026))]
    # a single 5 ms glitch while idle never reaches the UI
    k2 = KeyInterpreter(T)
    k2.feed(KeyEdge("MUTE", True, 2.0))
    k2.feed(KeyEdge("MUTE", False, 2.005))
    assert k2.get_timer() is None
    assert k2.handle_timer(3.0) == []


def test_hook_has_its_own_debounce_and_no_long_press() -> None:
    k = KeyInterpreter(T)
    k.feed(KeyEdge("HOOK", True, 0.0))
    assert k.handle_timer(0.049) == []
    assert k.handle_timer(0.05) == [ev("HOOK", "press", 0.05)]
    assert k.handle_timer(60.0) == []  # held off hook for a minute: no long press


def test_long_press_fires_once_while_held() -> None:
    k = KeyInterpreter(T)
    k.feed(KeyEdge("REDIAL", True, 5.0))
    assert k.handle_timer(5.02) == [ev("REDIAL", "press", 5.02)]
    assert k.get_timer() == pytest.approx(5.82)
    assert k.handle_timer(5.8199) == []
    assert k.handle_timer(5.82) == [ev("REDIAL", "long_press", pytest.approx(5.82))]
    assert k.handle_timer(9.0) == []
    k.feed(KeyEdge("REDIAL", False, 9.0))
    assert k.handle_timer(9.02) == [ev("REDIAL", "release", pytest.approx(9.02))]


def test_release_before_the_long_press_time_is_a_short_press() -> None:
    k = KeyInterpreter(T)
    k.feed(KeyEdge("DND", True, 0.0))
    # the release edge first brings out the press that settled before it
    assert k.feed(KeyEdge("DND", False, 0.79)) == [ev("DND", "press", 0.02)]
    # the release settles at 0.81, before the long-press time 0.82
    assert k.handle_timer(1.0) == [ev("DND", "release", pytest.approx(0.81))]


def test_key_released_while_the_long_press_time_passes_gets_no_long_press() -> None:
    k = KeyInterpreter(T)
    k.feed(KeyEdge("DND", True, 0.0))
    events = k.feed(KeyEdge("DND", False, 0.81))  # up at 0.81, confirmed 0.83; long due 0.82
    assert [e.kind for e in events + k.handle_timer(2.0)] == ["press", "release"]


def test_volume_auto_repeats_at_the_configured_rate() -> None:
    k = KeyInterpreter(T)
    k.feed(KeyEdge("VOL_UP", True, 0.0))
    events = k.handle_timer(1.0)
    assert events == [
        ev("VOL_UP", "press", 0.02),
        ev("VOL_UP", "repeat", pytest.approx(0.52)),
        ev("VOL_UP", "repeat", pytest.approx(0.67)),
        ev("VOL_UP", "repeat", pytest.approx(0.82)),
        ev("VOL_UP", "repeat", pytest.approx(0.97)),
    ]
    assert k.get_timer() == pytest.approx(1.12)
    k.feed(KeyEdge("VOL_UP", False, 1.05))
    assert k.handle_timer(2.0) == [ev("VOL_UP", "release", pytest.approx(1.07))]


def test_late_edge_fires_the_timers_that_were_due_before_it() -> None:
    k = KeyInterpreter(T)
    k.feed(KeyEdge("DIGIT_1", True, 0.0))
    # the driver never called handle_timer; the next edge brings the press out first, in order
    events = k.feed(KeyEdge("DIGIT_2", True, 0.5))
    assert events == [ev("DIGIT_1", "press", 0.02)]
    assert k.handle_timer(0.52) == [ev("DIGIT_2", "press", pytest.approx(0.52))]


def test_two_keys_are_independent() -> None:
    k = KeyInterpreter(T)
    k.feed(KeyEdge("HOOK", True, 0.0))
    k.feed(KeyEdge("DIGIT_1", True, 0.01))
    assert k.handle_timer(0.1) == [ev("DIGIT_1", "press", pytest.approx(0.03)),
                                   ev("HOOK", "press", 0.05)]


def test_unknown_key_and_bad_timing_raise() -> None:
    with pytest.raises(ValueError, match="unknown key 'FOO'"):
        KeyInterpreter(T).feed(KeyEdge("FOO", True, 0.0))
    with pytest.raises(ValueError, match="long_press"):
        KeyTiming(long_press=0)
    with pytest.raises(ValueError, match="repeat_keys"):
        KeyTiming(repeat_keys=frozenset({"VOLUME"}))


def test_matrix_scanner_turns_row_reads_into_edges() -> None:
    m = MatrixScanner([["DIGIT_1", "DIGIT_2", "DIGIT_3"],
                       ["DIGIT_4", "DIGIT_5", "DIGIT_6"],
                       ["DIGIT_7", "DIGIT_8", "DIGIT_9"],
                       ["STAR", "DIGIT_0", None]])
    assert (m.rows, m.cols) == (4, 3)
    assert m.feed_row(1, [False, True, False], 1.0) == [KeyEdge("DIGIT_5", True, 1.0)]
    assert m.feed_row(1, [False, True, False], 1.005) == []  # still held: no new edge
    assert m.feed_row(3, [False, False, True], 1.01) == []  # empty position
    assert m.feed_row(1, [False, False, False], 1.2) == [KeyEdge("DIGIT_5", False, 1.2)]
    with pytest.raises(ValueError, match="expected 3 column levels"):
        m.feed_row(0, [True], 0.0)
    with pytest.raises(ValueError, match="row 1 has 1 columns, expected 2"):
        MatrixScanner([["DIGIT_1", "DIGIT_2"], ["DIGIT_3"], ])
    with pytest.raises(ValueError, match="unknown key 'X'"):
        MatrixScanner([["X"]])


def test_matrix_scan_through_the_interpreter_debounces_too() -> None:
    m = MatrixScanner([["DIGIT_1", "DIGIT_2"]])
    k = KeyInterpreter(T)
    events = []
    for at, cols in [(0.000, [True, False]), (0.005, [False, False]), (0.010, [True, False]),
                     (0.015, [True, False]), (0.020, [True, False])]:
        for edge in m.feed_row(0, cols, at):
            events += k.feed(edge)
    events += k.handle_timer(0.03)
    assert events == [ev("DIGIT_1", "press", pytest.approx(0.03))]
