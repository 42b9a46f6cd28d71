"""MUTE and the volume keys acting on the real audio: a microphone gate and a playback gain.

The media engine opens the microphone and the loudspeaker per call through its
`AudioEndpoints`; `install` wraps those two openers so every source and sink they hand out
passes through a `MicGate` (silence while muted: RTP keeps flowing, as on any desk phone, so the
far end hears silence rather than a broken call) and a `VolumeSink` (the handset volume). Both
read the UI's state on every frame, so a key press takes effect within one packet time, on calls
already running too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

VOLUME_UNITY = 5  # the UI's volume step that plays at 0 dB
DB_PER_STEP = 3.0


def volume_gain(step: int) -> float:
    """Linear gain of a volume step: 3 dB per step around unity at step 5."""
    return float(10.0 ** ((step - VOLUME_UNITY) * DB_PER_STEP / 20.0))


class MicGate:
    """A source that reads silence while `muted()` (the device keeps being read)."""

    def __init__(self, source: Any, muted: Callable[[], bool]) -> None:
        self.source = source
        self.muted = muted
        self.rate = source.rate

    def read(self, n: int) -> np.ndarray:
        pcm = self.source.read(n)
        return np.zeros_like(pcm) if self.muted() else pcm

    def close(self) -> None:
        self.source.close()


class VolumeSink:
    """A sink that scales what it plays by `gain()` (int16, clipped)."""

    def __init__(self, sink: Any, gain: Callable[[], float]) -> None:
        self.sink = sink
        self.gain = gain
        self.rate = sink.rate

    def write(self, pcm: np.ndarray) -> None:
        g = self.gain()
        if g != 1.0 and pcm.size:
            scaled = np.clip(pcm.astype(np.float32) * g, -32768, 32767)
            pcm = scaled.astype(pcm.dtype)
        self.sink.write(pcm)

    def close(self) -> None:
        self.sink.close()


def install(audio: Any, muted: Callable[[], bool], gain: Callable[[], float]) -> None:
    """Wrap the media engine's audio openers (`open_source`/`open_sink` -> (node, owned))."""
    open_source, open_sink = audio.open_source, audio.open_sink

    def gated_source() -> tuple[Any, bool]:
        source, owned = open_source()
        return MicGate(source, muted), owned

    def scaled_sink() -> tuple[Any, bool]:
        sink, owned = open_sink()
        return VolumeSink(sink, gain), owned

    audio.open_source, audio.open_sink = gated_source, scaled_sink


class AudioPaths:
    """Handset, speaker and headset as the board profile's sound devices (`[audio]`).

    When the person moves a call (lift the handset, SPEAKER, HEADSET), `switch` points the
    media engine's device names at that path - for the calls that start later - and re-opens
    the microphone and speaker of every running call on the new devices (MediaSession.set_audio;
    the old devices are closed). Calls mixed in a local conference keep the bridge's adapters.
    A phone configured with WAV files instead of devices has nothing to switch.
    """

    def __init__(self, engine: Any, devices: dict[str, Any], skip: Callable[[], Any]) -> None:
        self.engine = engine
        self.devices = devices  # path -> board.profile.AudioDevices(capture, playback)
        self.skip = skip  # call ids whose audio someone else owns (the conference bridge)
        self.path: str | None = None

    @property
    def active(self) -> bool:
        audio = self.engine.audio
        return bool(self.devices) and audio.capture_file is None and audio.playback_file is None

    def switch(self, path: str) -> None:
        if not self.active or path == self.path or path not in self.devices:
            return
        self.path = path
        audio = self.engine.audio
        dev = self.devices[path]
        audio.capture_device, audio.playback_device = dev.capture, dev.playback
        log.info("audio path %s: capture %r, playback %r", path, dev.capture, dev.playback)
        self.engine.reopen_devices(skip=self.skip())
