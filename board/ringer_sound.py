"""A ringer on the sound card: a warbling tone through PortAudio while the cadence is on.

For boards without a buzzer the loudspeaker rings. The stream runs in PortAudio's callback mode,
so the card's own clock paces it (no timer of ours); `ring(on)` only flips what the callback
returns: the tone, or silence. Opened once at start so ringing starts without a device open.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np

from audio.devices import PREFERRED_RATES, AudioSystem
from audio.tones import ToneGenerator, ToneSpec

log = logging.getLogger(__name__)
# Two tones summed (1000 + 1250 Hz): clearly a phone ringing, distinct from the ringback tone.
RING_TONE = ToneSpec((1000.0, 1250.0), (), -14.0)


class SoundRinger:
    """A Ringer on a playback device (name as in audio.playback_device)."""

    def __init__(self, device: str = "default", audio: AudioSystem | None = None) -> None:
        self._own_audio = audio is None
        self._audio = audio if audio is not None else AudioSystem()
        info = self._audio.find(device, capture=False)
        self.rate = self._audio.pick_rate(info, capture=False, rates=PREFERRED_RATES)
        self._tone = ToneGenerator(RING_TONE, self.rate)
        self._lock = threading.Lock()
        self._on = False
        self.samples_rung = 0
        pa_mod = self._audio._pa_mod
        self._continue = pa_mod.paContinue
        self._stream: Any = self._audio._pa.open(
            format=pa_mod.paInt16, channels=1, rate=self.rate, output=True,
            output_device_index=info.index, frames_per_buffer=self.rate // 50,
            stream_callback=self._callback,
        )
        log.info("ringer on %r at %d Hz", info.name, self.rate)

    def _callback(self, _in: Any, frames: int, _time: Any, _status: Any) -> tuple[bytes, int]:
        with self._lock:
            if self._on:
                pcm = self._tone.read(frames)
                self.samples_rung += frames
            else:
                pcm = np.zeros(frames, dtype=np.int16)
        return pcm.astype("<i2").tobytes(), self._continue

    def ring(self, on: bool) -> None:
        with self._lock:
            if on and not self._on:
                self._tone.reset()
            self._on = on

    def close(self) -> None:
        try:
            self._stream.stop_stream()
            self._stream.close()
        finally:
            if self._own_audio:
                self._audio.close()
