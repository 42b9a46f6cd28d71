"""Local call-progress tones: the pure policy with literal times, and the player writing frames
to a sink on simulated time (every frame checked by FFT, cadence edges by sample counts)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from audio.graph import BufferSink
from audio.tones import get_tone
from firmware.runtime.progress_tones import (
    AFTER_CALL_S,
    CallView,
    ProgressTonePlayer,
    ProgressTonePolicy,
    ToneChoice,
    failure_tone,
)

POLICY = ProgressTonePolicy()
RATE = 8000
FRAME = RATE // 50


def view(
    id: str = "c1",
    state: str = "early",
    *,
    direction: str = "outgoing",
    started_at: float = 100.0,
    has_media: bool = False,
    connected_at: float | None = None,
    ended_at: float | None = None,
    end_status: int | None = None,
) -> CallView:
    return CallView(id, direction, state, started_at, has_media, connected_at, ended_at, end_status)


def ended(status: int | None, at: float = 110.0, **kw: Any) -> CallView:
    return view(state="ended", ended_at=at, end_status=status, **kw)


# ----- policy -------------------------------------------------------------------------------


def test_no_calls_no_tone() -> None:
    assert POLICY.decide([], 5.0) is None


def test_outgoing_early_without_media_rings_back() -> None:
    assert POLICY.decide([view()], 101.0) == ToneChoice("ringback", "c1")


@pytest.mark.parametrize("state", ["calling", "connected", "held", "ringing"])
def test_other_states_are_silent(state: str) -> None:
    assert POLICY.decide([view(state=state)], 101.0) is None


def test_early_media_silences_ringback() -> None:
    assert POLICY.decide([view(has_media=True)], 101.0) is None


def test_incoming_calls_get_no_progress_tone() -> None:
    assert POLICY.decide([view(direction="incoming", state="ringing")], 101.0) is None
    incoming_failed = ended(486, direction="incoming")
    assert POLICY.decide([incoming_failed], 110.5) is None


@pytest.mark.parametrize(
    ("status", "tone"),
    [
        (486, "busy"),
        (600, "busy"),
        (603, "busy"),  # documented choice: a refusal sounds like busy, not like nothing
        (487, None),  # we cancelled
        (404, "congestion"),
        (408, "congestion"),  # also our own INVITE timeout (Failed(408))
        (480, "congestion"),
        (403, "congestion"),
        (500, "congestion"),
        (503, "congestion"),
        (504, "congestion"),
        (606, "congestion"),
        (None, None),  # ended without a final response (e.g. transport gone before any)
        (200, None),
    ],
)
def test_failure_status_to_tone(status: int | None, tone: str | None) -> None:
    assert failure_tone(status) == tone
    expected = ToneChoice(tone, "c1") if tone else None
    assert POLICY.decide([ended(status)], 110.0) == expected


def test_failure_tone_is_bounded_in_time() -> None:
    calls = [ended(486, at=110.0)]
    assert POLICY.decide(calls, 110.0) == ToneChoice("busy", "c1")
    assert POLICY.decide(calls, 110.0 + AFTER_CALL_S - 0.001) == ToneChoice("busy", "c1")
    assert POLICY.decide(calls, 110.0 + AFTER_CALL_S) is None
    assert POLICY.decide(calls, 500.0) is None
    assert ProgressTonePolicy(after_call_s=1.0).decide(calls, 111.5) is None


def test_a_call_that_connected_and_ended_gets_no_failure_tone() -> None:
    bye = ended(486, connected_at=105.0)  # odd status, but it had connected: no tone
    assert POLICY.decide([bye], 110.5) is None


def test_a_new_call_silences_the_previous_calls_tone() -> None:
    old = ended(486, at=110.0, started_at=100.0)
    new_calling = view("c2", "calling", started_at=111.0)
    assert POLICY.decide([old, new_calling], 111.5) is None
    new_incoming = view("c2", "ringing", direction="incoming", started_at=111.0)
    assert POLICY.decide([old, new_incoming], 111.5) is None
    new_early = view("c2", "early", started_at=111.0)
    assert POLICY.decide([old, new_early], 111.5) == ToneChoice("ringback", "c2")


def test_never_two_tones_the_newest_call_wins() -> None:
    a = view("c1", "early", started_at=100.0)
    b = view("c2", "early", started_at=101.0)
    assert POLICY.decide([a, b], 102.0) == ToneChoice("ringback", "c2")
    assert POLICY.decide([b, a], 102.0) == ToneChoice("ringback", "c2")
    same_time = [view("c1", started_at=100.0), view("c2", started_at=100.0)]
    assert POLICY.decide(same_time, 101.0) == ToneChoice("ringback", "c2")


def test_any_call_with_media_owns_the_speaker() -> None:
    held = view("c1", "held", started_at=50.0, has_media=True, connected_at=55.0)
    dialling = view("c2", "early", started_at=100.0)
    assert POLICY.decide([held, dialling], 101.0) is None
    connected = view("c2", "connected", started_at=100.0, has_media=True, connected_at=102.0)
    assert POLICY.decide([connected], 103.0) is None


def test_call_view_of_a_call_object() -> None:
    call = SimpleNamespace(
        id="c7",
        direction="outgoing",
        state="early",
        started_at=3.0,
        connected_at=None,
        ended_at=None,
        end_status=None,
        media=SimpleNamespace(negotiated=object()),
    )
    assert CallView.of(call) == view("c7", started_at=3.0, has_media=True)
    call.state, call.ended_at, call.end_status = "ended", 9.0, 503
    assert CallView.of(call) == ended(503, at=9.0, id="c7", started_at=3.0)


# ----- player on simulated time --------------------------------------------------------------


class SimTime:
    """A monotonic clock the player's sleeps advance (no real waiting)."""

    def __init__(self, t: float = 100.0) -> None:
        self.t = t
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.t

    async def sleep(self, delay: float) -> None:
        self.sleeps.append(delay)
        self.t += delay
        await asyncio.sleep(0)


class Device(BufferSink):
    closed = 0

    def close(self) -> None:
        self.closed += 1


def fake_call(id: str = "c1", state: str = "early", started_at: float = 100.0) -> Any:
    return SimpleNamespace(
        id=id,
        direction="outgoing",
        state=state,
        started_at=started_at,
        connected_at=None,
        ended_at=None,
        end_status=None,
        media=SimpleNamespace(negotiated=None),
    )


def make_player(clock: SimTime, country: str = "US") -> tuple[ProgressTonePlayer, list[Device]]:
    devices: list[Device] = []

    def open_sink() -> tuple[Device, bool]:
        devices.append(Device(RATE))
        return devices[-1], True

    player = ProgressTonePlayer(open_sink, country, clock=clock, sleep=clock.sleep)
    return player, devices


async def run_until(clock: SimTime, t: float) -> None:
    for _ in range(100_000):
        if clock.t >= t:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"simulated time stuck at {clock.t}")


def frame_levels(pcm: np.ndarray) -> np.ndarray:
    """RMS of each 20 ms frame."""
    frames = pcm[: len(pcm) // FRAME * FRAME].reshape(-1, FRAME).astype(float)
    return np.sqrt(np.mean(frames**2, axis=1))


def peaks(pcm: np.ndarray, count: int = 2) -> list[float]:
    spectrum = np.abs(np.fft.rfft(pcm.astype(float) * np.hanning(len(pcm))))
    hz = np.fft.rfftfreq(len(pcm), 1 / RATE)
    found: list[float] = []
    for k in np.argsort(spectrum)[::-1]:
        if all(abs(hz[k] - f) > 20 for f in found):
            found.append(float(hz[k]))
        if len(found) == count:
            return sorted(found)
    return sorted(found)


async def test_ringback_with_its_cadence_until_the_call_connects() -> None:
    clock = SimTime()
    player, devices = make_player(clock)
    call = fake_call()
    player.follow([call], clock())
    await run_until(clock, 107.0)  # 7 s: on 2, off 4, on again
    assert len(devices) == 1
    pcm = devices[0].pcm
    on = frame_levels(pcm) > 100
    # exact cadence: 100 frames on, 200 off, then on again
    assert on[:100].all() and not on[100:300].any() and on[300:350].all()
    assert peaks(pcm[: 2 * RATE]) == pytest.approx([440.0, 480.0], abs=1.0)
    # every sleep aims at an absolute deadline: one frame, never accumulating
    assert all(s == pytest.approx(0.02) for s in clock.sleeps)

    call.state, call.media.negotiated = "connected", object()
    player.follow([call], clock())
    written = devices[0].samples
    assert devices[0].closed == 1 and player.current is None
    await run_until(clock, clock.t)
    for _ in range(10):
        await asyncio.sleep(0)
    assert devices[0].samples == written and devices[0].closed >= 1
    assert player.played == ["ringback"]


async def test_ringback_then_busy_on_one_device_then_silence_after_three_seconds() -> None:
    clock = SimTime()
    player, devices = make_player(clock)
    call = fake_call()
    player.follow([call], clock())
    await run_until(clock, 101.0)
    call.state, call.ended_at, call.end_status = "ended", clock(), 486
    player.follow([call], clock())
    for _ in range(100_000):
        if not player.active:
            break
        await asyncio.sleep(0)
    assert not player.active and clock.t == pytest.approx(104.0)
    assert player.played == ["ringback", "busy"]
    assert len(devices) == 1, "switching tones must not reopen the device"
    assert devices[0].closed == 1, "the device is closed once the busy tone is over"
    pcm = devices[0].pcm
    levels = frame_levels(pcm)
    assert len(levels) == 50 + 150  # 1 s ringback + exactly 3 s busy, then nothing more
    assert peaks(pcm[: RATE // 2]) == pytest.approx([440.0, 480.0], abs=1.0)
    busy = pcm[50 * FRAME :]
    busy_on = frame_levels(busy) > 100
    pattern = np.tile(np.repeat([True, False], 25), 3)  # 0.5 s on / 0.5 s off
    assert (busy_on == pattern).all()
    assert peaks(busy[: RATE // 2]) == pytest.approx([480.0, 620.0], abs=1.0)


async def test_congestion_in_another_country_and_a_new_call_stops_it() -> None:
    clock = SimTime()
    player, devices = make_player(clock, "DE")
    first = fake_call()
    first.state, first.ended_at, first.end_status = "ended", clock(), 503
    player.follow([first], clock())
    await run_until(clock, 100.5)
    second = fake_call("c2", "calling", started_at=clock())
    player.follow([first, second], clock())
    assert devices[0].closed == 1 and player.current is None
    pcm = devices[0].pcm
    assert len(pcm) == 25 * FRAME
    on = frame_levels(pcm) > 100
    assert on[:12].all() and not on[12:24].any() and on[24]  # 0.24 s on / 0.24 s off
    spec = get_tone("DE", "congestion")
    assert peaks(pcm[: 12 * FRAME], 1) == pytest.approx(list(spec.frequencies), abs=5.0)
    await run_until(clock, clock.t)
    second.state = "early"
    player.follow([first, second], clock())
    await run_until(clock, 101.0)
    assert player.played == ["congestion", "ringback"] and len(devices) == 2
    await player.close()
    assert devices[1].closed >= 1


async def test_a_cancelled_call_plays_nothing_and_opens_no_device() -> None:
    clock = SimTime()
    player, devices = make_player(clock)
    call = fake_call(state="calling")
    player.follow([call], clock())
    call.state, call.ended_at, call.end_status = "ended", clock(), 487
    player.follow([call], clock())
    for _ in range(10):
        await asyncio.sleep(0)
    assert devices == [] and player.played == []


async def test_a_failing_device_is_logged_and_the_player_recovers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = SimTime()
    attempts = []

    def broken() -> tuple[Device, bool]:
        attempts.append(1)
        raise OSError("no such card")

    player = ProgressTonePlayer(broken, "UK", clock=clock, sleep=clock.sleep)
    player.follow([fake_call()], clock())
    for _ in range(5):
        await asyncio.sleep(0)
    assert "progress tone player failed" in caplog.text
    assert player.current is None
    player.follow([fake_call()], clock())
    for _ in range(5):
        await asyncio.sleep(0)
    assert len(attempts) == 2


def test_unknown_country_fails_at_construction() -> None:
    with pytest.raises(KeyError, match="no tone plan"):
        ProgressTonePlayer(lambda: (Device(RATE), True), "XX")
