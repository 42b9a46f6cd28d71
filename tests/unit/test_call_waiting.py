"""The call-waiting tone (firmware/runtime/progress_tones.py CallWaitingTone) and [calls] config.

A stand-in media session plays the far end's 1000 Hz into its earpiece sink every 20 ms tick,
exactly as MediaSession._play_frame does; the tone must be mixed into that earpiece (FFT: the
country's call-waiting frequency next to the far end's), with the E.180 cadence, only while a
call waits and another talks, and the session must get its own sink back afterwards.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from audio.graph import BufferSink, Sink, Source, ToneSource
from firmware.provisioning.config import ConfigError, parse_config
from firmware.runtime.progress_tones import (
    CallView,
    CallWaitingTone,
    ToneOverlaySink,
    call_waiting_target,
)

RATE = 8000
FRAME = RATE // 50


class FakeSession:
    """What the overlay touches of a MediaSession: set_audio, and one sink write per tick."""

    def __init__(self) -> None:
        self.far = ToneSource(1000.0, RATE, -20.0)
        self.source: Source = ToneSource(2500.0, RATE, -20.0)
        self.device = BufferSink(RATE)
        self.sink: Sink = self.device

    def set_audio(self, source: Source, sink: Sink) -> tuple[Source, Sink]:
        old = (self.source, self.sink)
        self.source, self.sink = source, sink
        return old

    def tick(self, frames: int) -> None:
        for _ in range(frames):
            self.sink.write(self.far.read(FRAME))


def call(cid: str, direction: str, state: str, started: float = 0.0) -> Any:
    media = SimpleNamespace(negotiated=object() if state in ("connected", "held") else None)
    return SimpleNamespace(
        id=cid,
        direction=direction,
        state=state,
        started_at=started,
        media=media,
        connected_at=None,
        ended_at=None,
        end_status=None,
    )


def level_near(pcm: np.ndarray, freq: float) -> float:
    """Spectral magnitude within 15 Hz of ``freq`` relative to the strongest bin."""
    x = pcm.astype(np.float64) * np.hanning(len(pcm))
    mag = np.abs(np.fft.rfft(x))
    bins = np.fft.rfftfreq(len(pcm), 1.0 / RATE)
    return float(mag[np.abs(bins - freq) < 15].max() / mag.max())


def test_target_is_the_talking_call_while_an_incoming_call_rings() -> None:
    views = [
        CallView.of(call("c1", "outgoing", "connected")),
        CallView.of(call("c2", "incoming", "ringing", 5.0)),
    ]
    assert call_waiting_target(views) == ("c1", "c2")
    held = [CallView.of(call("c1", "outgoing", "held")), views[1]]
    assert call_waiting_target(held) is None  # nobody talks: the phone rings normally
    assert call_waiting_target(views[:1]) is None
    assert call_waiting_target(views[1:]) is None


@pytest.mark.parametrize(("country", "freq", "on_s"), [("US", 440.0, 0.3), ("DE", 425.0, 0.2)])
def test_tone_is_mixed_into_the_talking_calls_earpiece_with_its_cadence(
    country: str, freq: float, on_s: float
) -> None:
    session = FakeSession()
    player = CallWaitingTone(country)
    c1, c2 = call("c1", "outgoing", "connected"), call("c2", "incoming", "ringing", 5.0)
    player.follow([c1], {"c1": session})
    assert player.current is None and session.sink is session.device
    player.follow([c1, c2], {"c1": session})
    assert player.current == ("c1", "c2") and player.played == ["c1"]
    assert session.sink is not session.device and session.sink.rate == RATE
    player.follow([c1, c2], {"c1": session})  # idempotent
    assert player.played == ["c1"]
    session.tick(50)  # 1 s

    heard = session.device.pcm
    burst = heard[: int(on_s * RATE) - FRAME]
    assert level_near(burst, freq) > 0.5 and level_near(burst, 1000.0) > 0.5  # tone + far end
    pause = heard[int(on_s * RATE) + FRAME : int((on_s + 0.1) * RATE)]
    assert level_near(pause, freq) < 0.05 and level_near(pause, 1000.0) > 0.9  # cadence: off

    c2.state = "connected"  # answered (and c1 held by the line rules): the tone stops
    c1.state = "held"
    player.follow([c1, c2], {"c1": session})
    assert player.current is None and session.sink is session.device
    before = len(session.device.pcm)
    session.tick(20)
    assert level_near(session.device.pcm[before:], freq) < 0.05


def test_removal_leaves_a_sink_someone_else_installed_since() -> None:
    """A conference bridge took the session's audio meanwhile: keep its nodes, mute ours."""
    session = FakeSession()
    player = CallWaitingTone("US")
    c1, c2 = call("c1", "outgoing", "connected"), call("c2", "incoming", "ringing", 5.0)
    player.follow([c1, c2], {"c1": session})
    overlay = session.sink
    assert isinstance(overlay, ToneOverlaySink)
    bridge_sink = BufferSink(RATE)
    session.set_audio(session.source, bridge_sink)
    c2.state = "ended"
    player.follow([c1, c2], {"c1": session})
    assert session.sink is bridge_sink
    assert overlay.enabled is False


def test_no_tone_into_a_conference_leg_or_a_call_without_session() -> None:
    session = FakeSession()
    player = CallWaitingTone("US")
    c1, c2 = call("c1", "outgoing", "connected"), call("c2", "incoming", "ringing", 5.0)
    player.follow([c1, c2], {"c1": session}, skip=["c1"])
    assert player.current is None and session.sink is session.device
    player.follow([c1, c2], {})
    assert player.current is None


def test_calls_config_defaults_values_and_mistakes() -> None:
    base: dict[str, Any] = {"api": {"enabled": False}}
    cfg = parse_config(base).calls
    assert (cfg.max_calls, cfg.conference_focus) == (4, None)
    cfg = parse_config(
        {**base, "calls": {"max_calls": 2, "conference_focus": "sip:conf@pbx.example"}}
    ).calls
    assert (cfg.max_calls, cfg.conference_focus) == (2, "sip:conf@pbx.example")
    for section, key, words in [
        ({"max_calls": 0}, "calls.max_calls", "between 1 and 16"),
        ({"max_calls": "4"}, "calls.max_calls", "an integer"),
        ({"conference_focus": "http://x"}, "calls.conference_focus", "sip: or sips:"),
        ({"lines": 3}, "calls.lines", "unknown key"),
    ]:
        with pytest.raises(ConfigError) as info:
            parse_config({**base, "calls": section})
        assert info.value.key == key and words in info.value.message, info.value.message
