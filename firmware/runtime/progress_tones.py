"""Call-progress tones played locally, like a desk phone's earpiece: ringback, busy, congestion.

Two parts, so the decision can be tested with literal times and no sound card:

* `ProgressTonePolicy.decide(calls, now)` is pure: from a snapshot of the calls (`CallView`)
  it says which single tone should sound right now, or None.
* `ProgressTonePlayer` is the runtime half: `follow(calls, now)` after every change of the
  calls, and while a tone is wanted it writes one frame of the country's tone (audio/tones.py)
  to the playback device per tick, paced by absolute monotonic deadlines (`start + n * frame`),
  re-asking the policy on every tick so a busy tone ends on time without any SIP input.

What plays when (the newest call decides, so a new call silences the previous call's tone):
* an outgoing call in "early" with no negotiated media (a 180 without SDP): ringback, until
  early media starts, the call connects or it ends;
* an outgoing call that ended before it connected: 486/600/603 -> busy, 487 (we cancelled) ->
  nothing, any other final failure (404, 408 incl. our own timeout, 480, 5xx, other 4xx/6xx)
  -> congestion (reorder); each for `after_call_s` (3 s) from the end, then silence.
  603 Decline gets busy rather than silence: the callee refused, and a caller who hears nothing
  cannot tell a refusal from a dead line (most desk phones and PBXs do the same).
* nothing at all while any call has a running RTP session (connected, held or early media):
  the loudspeaker belongs to that session. So a second call dialled while one is on hold gets no
  local ringback (known limitation; the phone has one playback device per call).

Call waiting is the exception, and it has its own half, `CallWaitingTone`: while an incoming
call rings and another call is connected (talking), the country's call-waiting tone (E.180:
US 440 Hz 0.3 s every 10 s, UK 400 Hz, DE 425 Hz) is added into what the talking call plays in
the earpiece, instead of ringing loudly. It rides on that call's own media ticker (an overlay
on the session's sink, `MediaSession.set_audio`), so it needs no timer and no second device.
Not played while the talking call is a local-conference leg (its sink is the mixer's).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from audio.graph import BufferSink, SilenceSource, Sink
from audio.pcm import to_int16
from audio.tones import ToneGenerator, ToneSpec, get_tone

log = logging.getLogger(__name__)

FRAME_MS = 20
MAX_CATCH_UP = 5  # frames late before the ticker skips ahead instead of bursting
AFTER_CALL_S = 3.0  # how long busy/congestion sound after a failed call
BUSY_STATUSES = frozenset({486, 600, 603})
SILENT_STATUSES = frozenset({487})  # we cancelled: the user already knows


@dataclass(frozen=True)
class CallView:
    """What the policy needs to know about one call (a snapshot of firmware.call Call)."""

    id: str
    direction: str  # "outgoing" | "incoming"
    state: str  # calling | early | ringing | connected | held | ended
    started_at: float
    has_media: bool  # an RTP session exists for it (early media, connected, held)
    connected_at: float | None = None
    ended_at: float | None = None
    end_status: int | None = None

    @classmethod
    def of(cls, call: Any) -> CallView:
        """Snapshot of a firmware.call.manager.Call."""
        return cls(
            id=call.id,
            direction=call.direction,
            state=call.state,
            started_at=call.started_at if call.started_at is not None else 0.0,
            has_media=call.state != "ended" and call.media.negotiated is not None,
            connected_at=call.connected_at,
            ended_at=call.ended_at,
            end_status=call.end_status,
        )


@dataclass(frozen=True)
class ToneChoice:
    """One tone for one call; a different `call_id` or `name` is a new tone (cadence restarts)."""

    name: str  # a tone name of audio/tones.py: "ringback", "busy", "congestion"
    call_id: str


def failure_tone(status: int | None) -> str | None:
    """The tone for an outgoing call that ended with final `status` before it connected."""
    if status is None or status < 300 or status in SILENT_STATUSES:
        return None
    if status in BUSY_STATUSES:
        return "busy"
    return "congestion"


@dataclass(frozen=True)
class ProgressTonePolicy:
    """Which progress tone sounds now (pure; see the module docstring)."""

    after_call_s: float = AFTER_CALL_S

    def decide(self, calls: Iterable[CallView], now: float) -> ToneChoice | None:
        views = list(calls)
        if not views or any(c.has_media for c in views):
            return None
        # the newest call decides (ties: the later one in the list, i.e. created later)
        newest = max(reversed(views), key=lambda c: c.started_at)
        if newest.direction != "outgoing":
            return None
        if newest.state == "early":
            return ToneChoice("ringback", newest.id)
        if newest.state != "ended" or newest.connected_at is not None or newest.ended_at is None:
            return None
        if not newest.ended_at <= now < newest.ended_at + self.after_call_s:
            return None
        name = failure_tone(newest.end_status)
        return ToneChoice(name, newest.id) if name else None


class ProgressTonePlayer:
    """Plays what the policy decides on the playback device (see the module docstring).

    `open_sink` returns (sink, owned) like firmware.runtime.media.AudioEndpoints.open_sink;
    owned sinks (sound cards) are opened when a tone starts and closed as soon as no tone is
    wanted, so the device is free before a call's RTP session opens it. Switching from one
    tone to another (ringback -> busy) keeps the device open. Stopping is synchronous; the
    device is opened in the player's task, i.e. after the caller's current step (in which a
    stopped RTP session closes its own device).
    """

    def __init__(
        self,
        open_sink: Callable[[], tuple[Sink, bool]],
        country: str,
        policy: ProgressTonePolicy | None = None,
        *,
        frame_ms: int = FRAME_MS,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        get_tone(country, "ringback")  # fail at start-up for an unknown country, not mid-call
        self.open_sink = open_sink
        self.country = country
        self.policy = policy or ProgressTonePolicy()
        self.frame_ms = frame_ms
        self.clock = clock  # the calls' clock (time.monotonic in the runtime)
        self.sleep = sleep  # until the next absolute deadline; tests inject simulated time
        self.current: ToneChoice | None = None
        self.played: list[str] = []  # names of the tones started, in order (status, tests)
        self._calls: list[Any] = []
        self._task: asyncio.Task[None] | None = None
        self._sink: Sink | None = None
        self._owned = False
        self._generator: ToneGenerator | None = None

    @property
    def active(self) -> bool:
        """A tone is playing (or its device is being opened)."""
        return self._task is not None and not self._task.done()

    def follow(self, calls: Iterable[Any], now: float) -> None:
        """The calls changed (call from the event loop after every input)."""
        self._calls = list(calls)
        choice = self._decide(now)
        if choice is None:
            self.stop()
        elif self._task is None or self._task.done():
            self._switch(choice)
            self._task = asyncio.get_running_loop().create_task(self._run(), name="progress-tone")

    def _decide(self, now: float) -> ToneChoice | None:
        return self.policy.decide((CallView.of(c) for c in self._calls), now)

    def _switch(self, choice: ToneChoice | None) -> None:
        if choice == self.current:
            return
        if self.current is not None:
            log.info("progress tone %s stopped (call %s)", self.current.name, self.current.call_id)
        self.current = choice
        self._generator = None  # made at the sink's rate when the next frame is due
        if choice is not None:
            log.info("progress tone %s started (call %s)", choice.name, choice.call_id)
            self.played.append(choice.name)

    def stop(self) -> None:
        """Silence now: cancel the ticker and close the device (idempotent)."""
        self._switch(None)
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self._close_sink()

    def _close_sink(self) -> None:
        if self._sink is not None and self._owned:
            self._sink.close()
        self._sink, self._owned = None, False

    async def _run(self) -> None:
        sink: Sink | None = None
        owned = False
        try:
            sink, owned = self._sink, self._owned = self.open_sink()
            period = self.frame_ms / 1000.0
            start = self.clock()
            n = 0
            while True:
                now = self.clock()
                choice = self._decide(now)
                self._switch(choice)
                if choice is None:
                    break
                self._write_frame(sink, choice)
                n += 1
                deadline = start + n * period
                late = now - deadline
                if late > MAX_CATCH_UP * period:  # a stall: skip the lost time, no burst
                    n += int(late / period)
                    deadline = start + n * period
                await self.sleep(max(0.0, deadline - self.clock()))
        except asyncio.CancelledError:
            raise
        except Exception:  # a device fault must not take the phone down; calls go on
            log.exception("progress tone player failed")
            self._switch(None)
        finally:
            # only this task's own device: a newer task may already have opened another one
            if self._task is asyncio.current_task():
                self._task = None
            if sink is not None and sink is self._sink:
                self._sink, self._owned = None, False
            if sink is not None and owned:
                sink.close()

    def _write_frame(self, sink: Sink, choice: ToneChoice) -> None:
        if self._generator is None:
            self._generator = ToneGenerator(get_tone(self.country, choice.name), sink.rate)
        sink.write(self._generator.read(sink.rate * self.frame_ms // 1000))

    async def close(self) -> None:
        """Stop at shutdown and wait for the ticker to be gone."""
        task = self._task
        self.stop()
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await task


def call_waiting_target(calls: Iterable[CallView]) -> tuple[str, str] | None:
    """(talking call, waiting call) when the call-waiting tone should sound, else None: an
    incoming call rings while another call is connected (not held) with media."""
    views = list(calls)
    waiting = [c for c in views if c.direction == "incoming" and c.state == "ringing"]
    talking = [c for c in views if c.state == "connected" and c.has_media]
    if not waiting or not talking:
        return None
    return talking[0].id, min(waiting, key=lambda c: c.started_at).id


class ToneOverlaySink:
    """A sink that adds a tone to everything written through it (the earpiece of one call)."""

    def __init__(self, inner: Sink, spec: ToneSpec) -> None:
        self.inner = inner
        self.rate = inner.rate
        self.generator = ToneGenerator(spec, inner.rate)
        self.enabled = True

    def write(self, pcm: np.ndarray) -> None:
        if self.enabled and len(pcm):
            tone = self.generator.read(len(pcm))
            pcm = to_int16(pcm.astype(np.float64) + tone)  # saturating sum: no wrap-around
        self.inner.write(pcm)

    def close(self) -> None:
        """The inner sink belongs to the media engine (it closes it with the call)."""


class CallWaitingTone:
    """Plays the call-waiting tone into the talking call while another call waits.

    `follow(calls, sessions)` after every change of the calls (the runtime's media sessions by
    call id, each with `set_audio`). Installing swaps the session's sink for a `ToneOverlaySink`
    around it; removing puts the original back if nobody else (a conference bridge) swapped it
    since, and otherwise just silences the overlay, which then passes audio through unchanged.
    """

    def __init__(self, country: str) -> None:
        self.spec = get_tone(country, "call_waiting")
        self.current: tuple[str, str] | None = None  # (talking call, waiting call)
        self._session: Any = None
        self._overlay: ToneOverlaySink | None = None
        self._saved: tuple[Any, Sink] | None = None
        self.played: list[str] = []  # talking call ids the tone was played into (status, tests)

    def follow(self, calls: Iterable[Any], sessions: Mapping[str, Any], skip: Any = ()) -> None:
        """``skip``: call ids whose sessions must not be touched (local conference legs)."""
        target = call_waiting_target(CallView.of(c) for c in calls)
        if target is not None and target[0] in skip:
            target = None
        session = sessions.get(target[0]) if target is not None else None
        if target is not None and session is None:
            target = None
        if target == self.current and session is self._session:
            return
        if self.current is not None and (
            target is None or target[0] != self.current[0] or session is not self._session
        ):
            self._remove()
        if target is not None and session is not None and self._overlay is None:
            self._install(target, session)
        self.current = target if self._overlay is not None else None

    def _install(self, target: tuple[str, str], session: Any) -> None:
        # set_audio returns the current nodes; the placeholders are replaced at once
        source, sink = session.set_audio(SilenceSource(8000), BufferSink(8000))
        self._overlay = ToneOverlaySink(sink, self.spec)
        session.set_audio(source, self._overlay)
        self._session, self._saved = session, (source, sink)
        self.played.append(target[0])
        log.info("call-waiting tone started (call %s waits, played into call %s)", *target[::-1])

    def _remove(self) -> None:
        overlay, session, saved = self._overlay, self._session, self._saved
        self._overlay = self._session = self._saved = None
        if overlay is None or session is None or saved is None:
            return
        overlay.enabled = False
        current = session.set_audio(*saved)
        if current[1] is not overlay:  # somebody else swapped it since: leave theirs in place
            session.set_audio(*current)
        if self.current is not None:
            log.info("call-waiting tone stopped (call %s)", self.current[1])

    def stop(self) -> None:
        self._remove()
        self.current = None


__all__ = [
    "AFTER_CALL_S",
    "CallView",
    "CallWaitingTone",
    "ToneOverlaySink",
    "call_waiting_target",
    "ProgressTonePlayer",
    "ProgressTonePolicy",
    "ToneChoice",
    "failure_tone",
]
