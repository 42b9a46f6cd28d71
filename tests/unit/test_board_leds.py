"""board/leds: LED modes and the ringer cadence switch at exact clock times."""

from __future__ import annotations

import pytest

from board.leds import RING_CADENCES, Cadence, LedDriver


def run(driver: LedDriver, until: float) -> list[tuple[float, str, bool]]:
    """Follow the driver's timer to `until`; the switching log."""
    log = []
    while (t := driver.get_timer()) is not None and t <= until:
        log += [(round(t, 6), name, lit) for name, lit in driver.handle_timer(t)]
    return log


def test_steady_modes_switch_once_and_need_no_timer() -> None:
    d = LedDriver(frozenset({"MWI", "MUTE"}))
    assert d.set_mode("MWI", "on", 3.0) == [("MWI", True)]
    assert d.set_mode("MWI", "on", 4.0) == []
    assert d.get_timer() is None
    assert d.set_mode("MWI", "off", 5.0) == [("MWI", False)]
    assert d.modes() == {"MUTE": "off", "MWI": "off"}


def test_slow_flash_is_500ms_on_500ms_off_on_the_clock_grid() -> None:
    d = LedDriver(frozenset({"LINE_1"}))
    assert d.set_mode("LINE_1", "slow_flash", 10.2) == [("LINE_1", True)]  # 10.0-10.5 is on
    assert d.get_timer() == pytest.approx(10.5)
    assert run(d, 12.0) == [(10.5, "LINE_1", False), (11.0, "LINE_1", True),
                            (11.5, "LINE_1", False), (12.0, "LINE_1", True)]
    assert d.mode("LINE_1") == "slow_flash"


def test_fast_flash_is_4hz_and_leds_flash_in_phase() -> None:
    d = LedDriver(frozenset({"LINE_1", "LINE_2"}))
    d.set_mode("LINE_1", "fast_flash", 0.0)
    assert d.set_mode("LINE_2", "fast_flash", 0.2) == [("LINE_2", False)]  # 0.125-0.25 off
    assert run(d, 0.5) == [(0.125, "LINE_1", False), (0.25, "LINE_1", True), (0.25, "LINE_2", True),
                           (0.375, "LINE_1", False), (0.375, "LINE_2", False),
                           (0.5, "LINE_1", True), (0.5, "LINE_2", True)]
    assert d.set_mode("LINE_1", "off", 0.6) == [("LINE_1", False)]
    assert d.modes()["LINE_1"] == "off" and d.lit("LINE_2")


def test_bad_led_or_mode_names_the_problem() -> None:
    d = LedDriver(frozenset({"MWI"}))
    with pytest.raises(ValueError, match="unknown LED 'DND'"):
        d.set_mode("DND", "on", 0.0)
    with pytest.raises(ValueError, match="unknown LED mode 'blink'"):
        d.set_mode("MWI", "blink", 0.0)  # type: ignore[arg-type]


def test_ringer_cadence_starts_with_the_on_phase() -> None:
    c = Cadence(RING_CADENCES["US"])
    assert c.ring(True, 7.3) == [True]
    assert c.ring(True, 8.0) == []  # already ringing: cadence keeps its phase
    assert c.get_timer() == pytest.approx(9.3)
    assert c.handle_timer(9.3) == [False]
    assert c.get_timer() == pytest.approx(13.3)
    assert c.handle_timer(13.3) == [True]
    assert c.ring(False, 14.0) == [False]
    assert c.get_timer() is None


def test_uk_double_ring() -> None:
    c = Cadence(RING_CADENCES["UK"])
    c.ring(True, 0.0)
    log = []
    while (t := c.get_timer()) is not None and t <= 3.0:
        log += [(round(t, 6), lit) for lit in c.handle_timer(t)]
    assert log == [(0.4, False), (0.6, True), (1.0, False), (3.0, True)]
