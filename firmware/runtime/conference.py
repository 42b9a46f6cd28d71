"""A local conference bridge: the phone mixes its calls and its own handset into one conference.

Each call's MediaSession keeps doing RTP, codecs and timing exactly as in a plain call; the
bridge only swaps where its audio comes from and goes to (`MediaSession.set_audio`): the
session now sends what `LegSource` pulls from the mixer (the others' sum) and plays what it
received into `LegSink` (which pushes it into the mixer). The handset (microphone and speaker)
is one more leg, named "local".

Why the handset is serviced from one call's ticker (the "clock leg") rather than its own timer:
the sessions already wake on absolute deadlines every ptime, so reading one mic frame and
writing one speaker frame inside one of those ticks keeps the device paced exactly like in a
single call, with no extra timer. The device nodes used are the clock leg's own (the ones the
engine opened for that call and closes when it ends); when the clock leg leaves, the next leg's
device nodes take over. When fewer than two calls remain the conference dissolves and every
remaining session gets its own device back, so a two-party call is a plain call again.

The ticks run on the media thread (firmware/runtime/media.py, MediaClock): every change the
event loop makes here holds the media lock, so no tick ever sees the mixer half-changed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np

from audio.graph import ResamplingSink, Sink, Source
from audio.mixer import Mixer
from firmware.runtime.media import CLOCK

log = logging.getLogger(__name__)

LOCAL = "local"
MIX_RATE = 16000


class Leg(Protocol):
    """What the bridge needs of a call's media session (firmware.runtime.media.MediaSession)."""

    codec: Any  # .sample_rate: the PCM rate the session's codec encodes

    def set_audio(self, source: Source, sink: Sink) -> tuple[Source, Sink]: ...


class LegSource:
    """What a call sends: everyone else in the conference (pulled from the mixer)."""

    def __init__(self, bridge: ConferenceBridge, name: str, rate: int) -> None:
        self.bridge, self.name, self.rate = bridge, name, rate

    def read(self, n: int) -> np.ndarray:
        return self.bridge.mixer.pull(self.name, n)

    def close(self) -> None:
        pass


class LegSink:
    """What a call received: into the mixer; the clock leg also services the handset."""

    def __init__(self, bridge: ConferenceBridge, name: str, rate: int) -> None:
        self.bridge, self.name, self.rate = bridge, name, rate

    def write(self, pcm: np.ndarray) -> None:
        self.bridge.mixer.push(self.name, pcm)
        if self.bridge.clock == self.name:
            self.bridge.service_local(len(pcm) / self.rate)

    def close(self) -> None:
        pass


class ConferenceBridge:
    """Calls joined into one local conference (see the module docstring)."""

    def __init__(self, rate: int = MIX_RATE) -> None:
        self.mixer = Mixer(rate)
        self._legs: dict[str, Leg] = {}
        self._saved: dict[str, tuple[Source, Sink]] = {}  # each call's own device nodes
        self.clock: str | None = None
        self._mic: Source | None = None
        self._speaker: Sink | None = None
        self.local_muted = False

    @property
    def members(self) -> list[str]:
        """Call ids in the conference, in joining order."""
        return list(self._legs)

    def __contains__(self, call_id: object) -> bool:
        return call_id in self._legs

    def add(self, call_id: str, session: Leg) -> None:
        """Put a call into the conference (idempotent)."""
        if call_id == LOCAL:
            raise ValueError(f"{LOCAL!r} is the handset's leg name, not a call id")
        with CLOCK.lock:
            self._add(call_id, session)

    def _add(self, call_id: str, session: Leg) -> None:
        if call_id in self._legs:
            return
        rate = int(session.codec.sample_rate)
        self.mixer.add_leg(call_id, rate)
        self._saved[call_id] = session.set_audio(
            LegSource(self, call_id, rate), LegSink(self, call_id, rate)
        )
        self._legs[call_id] = session
        log.info("conference: call %s joins (%s)", call_id, ", ".join(self._legs))
        if self.clock is None:
            self._use_device_of(call_id)

    def _use_device_of(self, call_id: str | None) -> None:
        """The handset leg now uses this call's device nodes, serviced from its ticker."""
        if LOCAL in self.mixer.legs:
            self.mixer.remove_leg(LOCAL)
        self.clock = call_id
        if call_id is None:
            self._mic = self._speaker = None
            return
        mic, speaker = self._saved[call_id]
        self._mic = mic
        self._speaker = speaker if speaker.rate == mic.rate else ResamplingSink(speaker, mic.rate)
        self.mixer.add_leg(LOCAL, mic.rate, heard=not self.local_muted)

    def service_local(self, seconds: float) -> None:
        """One tick of the handset: mic frame into the mix, the mix-minus-local to the speaker."""
        if self._mic is None or self._speaker is None:
            return
        n = round(seconds * self._mic.rate)
        self.mixer.push(LOCAL, self._mic.read(n))
        self._speaker.write(self.mixer.pull(LOCAL, n))

    def mute_local(self, muted: bool) -> None:
        """Keep the handset's microphone out of the mix (the others still hear each other)."""
        with CLOCK.lock:
            self.local_muted = muted
            if LOCAL in self.mixer.legs:
                self.mixer.set_heard(LOCAL, not muted)

    def remove(self, call_id: str, *, restore: bool = True) -> None:
        """Take a call out; `restore=False` when its session is already gone (the call ended).
        Dissolves the conference when fewer than two calls are left."""
        with CLOCK.lock:
            self._remove(call_id, restore)

    def _remove(self, call_id: str, restore: bool) -> None:
        session = self._legs.pop(call_id, None)
        if session is None:
            return
        saved = self._saved.pop(call_id)
        self.mixer.remove_leg(call_id)
        if restore:
            session.set_audio(*saved)
        log.info("conference: call %s leaves (%s left)", call_id, ", ".join(self._legs) or "none")
        if self.clock == call_id:
            self._use_device_of(next(iter(self._legs), None))
        if len(self._legs) < 2:
            self.dissolve()

    def dissolve(self) -> None:
        """End the conference: every remaining call gets its own device nodes back."""
        with CLOCK.lock:
            for call_id in list(self._legs):
                session = self._legs.pop(call_id)
                session.set_audio(*self._saved.pop(call_id))
                self.mixer.remove_leg(call_id)
            self._use_device_of(None)

    def sync(self, sessions: Mapping[str, Any]) -> None:
        """Follow the media engine: calls whose session stopped (or was replaced) leave."""
        for call_id, session in list(self._legs.items()):
            if sessions.get(call_id) is not session:
                self.remove(call_id, restore=False)

    def status(self) -> list[str]:
        return self.members


__all__ = ["LOCAL", "ConferenceBridge", "LegSink", "LegSource"]
