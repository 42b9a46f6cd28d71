"""The Pi side of the front panel against an emulated panel on a real pty (acceptance 2, issue 8)."""

from __future__ import annotations

import queue
import time
from collections.abc import Callable, Iterator

import pytest

from board.panel_serial import SerialPanel
from board.ports import KeyEdge
from tests.panel.emulator import LEDS, EmulatedPanel


def wait_for(predicate: Callable[[], object], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def emulator() -> Iterator[EmulatedPanel]:
    panel = EmulatedPanel()
    yield panel
    panel.close()


@pytest.fixture
def pi(emulator: EmulatedPanel) -> Iterator[tuple[SerialPanel, queue.Queue[KeyEdge]]]:
    edges: queue.Queue[KeyEdge] = queue.Queue()
    panel = SerialPanel(emulator.path, set(LEDS), reconnect_interval=0.05)
    panel.start(edges.put)
    wait_for(lambda: panel.status()["state"] == "connected", "the panel's hello")
    yield panel, edges
    panel.close()


def next_edge(edges: queue.Queue[KeyEdge]) -> KeyEdge:
    return edges.get(timeout=5)


def test_key_presses_arrive_as_phone_keys(emulator: EmulatedPanel, pi) -> None:
    panel, edges = pi
    emulator.press("HOOK")
    edge = next_edge(edges)
    assert (edge.key, edge.pressed) == ("HOOK", True)
    emulator.press("DIGIT_2")
    emulator.release("DIGIT_2")
    # A tap shorter than the panel's debounce would vanish; wait for the press to be seen first.
    emulator.press("DIGIT_1")
    edge = next_edge(edges)
    assert (edge.key, edge.pressed) == ("DIGIT_1", True)
    emulator.release("DIGIT_1")
    edge = next_edge(edges)
    assert (edge.key, edge.pressed) == ("DIGIT_1", False)
    assert panel.status()["firmware"] == "1.0.0"


def test_led_commands_arrive_at_the_panel(emulator: EmulatedPanel, pi) -> None:
    panel, _ = pi
    panel.set_mode("MWI", "slow_flash")
    panel.set("LINE_1", True)
    wait_for(lambda: emulator.led_mode("MWI") == "slow_flash", "MWI slow flash on the panel")
    wait_for(lambda: emulator.led_mode("LINE_1") == "on", "LINE_1 on at the panel")
    assert [f for k, _, f in emulator.received if k == "L"] == [["MWI", "slow_flash"], ["LINE_1", "on"]]
    with pytest.raises(ValueError, match="no LED 'SPEAKER'"):
        panel.set("SPEAKER", True)


def test_panel_reset_restores_leds_and_keys_keep_working(emulator: EmulatedPanel, pi) -> None:
    panel, edges = pi
    panel.set_mode("MWI", "fast_flash")
    wait_for(lambda: emulator.led_mode("MWI") == "fast_flash", "MWI set")
    emulator.reset()
    wait_for(lambda: panel.status()["resets"] == 1, "the reset noticed")
    wait_for(lambda: emulator.led_mode("MWI") == "fast_flash", "MWI restored after the reset")
    emulator.press("HOLD")
    assert next_edge(edges).key == "HOLD"


def test_garbled_frame_is_skipped(emulator: EmulatedPanel, pi) -> None:
    panel, edges = pi
    emulator.garble()
    wait_for(lambda: panel.status()["bad_frames"] >= 2, "garbage counted")
    emulator.press("DIGIT_2")
    edge = next_edge(edges)
    assert (edge.key, edge.pressed) == ("DIGIT_2", True)  # not the forged DIGIT_1 frame
    assert edges.empty()
    assert panel.status()["state"] == "connected"


def test_silent_panel_is_reported_then_recovers(emulator: EmulatedPanel, pi) -> None:
    panel, edges = pi
    emulator.go_silent()
    wait_for(lambda: panel.status()["state"] == "silent", "silence detected")
    assert "silent for" in str(panel.status()["error"])
    emulator.go_silent(False)
    wait_for(lambda: panel.status()["state"] == "connected", "the panel back")
    emulator.press("DIGIT_1")
    assert next_edge(edges).key == "DIGIT_1"


def test_missing_panel_is_reported(tmp_path) -> None:
    panel = SerialPanel(str(tmp_path / "ttyNOPE"), {"MWI"}, reconnect_interval=0.05)
    panel.start(lambda edge: None)
    try:
        wait_for(lambda: "cannot open" in str(panel.status()["error"]), "the open failure")
        assert panel.status()["state"] != "connected"
    finally:
        panel.close()


def test_wrong_protocol_version_is_reported() -> None:
    emulator = EmulatedPanel(protocol_version=2)
    panel = SerialPanel(emulator.path, set(LEDS), reconnect_interval=0.05)
    panel.start(lambda edge: None)
    try:
        wait_for(lambda: panel.status()["state"] == "wrong_version", "the version check")
        assert "protocol version 2" in str(panel.status()["error"])
    finally:
        panel.close()
        emulator.close()


def test_unplugged_panel_is_reported_and_a_new_one_picked_up(tmp_path) -> None:
    """A USB panel that resets re-enumerates: the port vanishes, then a device is there again."""
    port = tmp_path / "ttyACM0"  # stands for the udev name; it points at the current pty
    first = EmulatedPanel()
    port.symlink_to(first.path)
    edges: queue.Queue[KeyEdge] = queue.Queue()
    panel = SerialPanel(str(port), set(LEDS), reconnect_interval=0.05)
    panel.start(edges.put)
    second = None
    try:
        wait_for(lambda: panel.status()["state"] == "connected", "the first panel")
        panel.set_mode("MWI", "on")
        wait_for(lambda: first.led_mode("MWI") == "on", "MWI on the first panel")
        first.close()
        port.unlink()
        wait_for(lambda: panel.health() == "Front panel missing", "the unplugged panel noticed")
        second = EmulatedPanel()
        port.symlink_to(second.path)
        wait_for(lambda: panel.status()["state"] == "connected", "the replugged panel")
        wait_for(lambda: second.led_mode("MWI") == "on", "MWI restored on the new panel")
        second.press("HOLD")
        assert next_edge(edges).key == "HOLD"
    finally:
        panel.close()
        if second is not None:
            second.close()
