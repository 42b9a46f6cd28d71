"""Sound-card capture and playback through PyAudio (PortAudio, over ALSA on the boards).

The one module in audio/ that touches hardware. Devices are chosen by NAME, as the config
says: "default" (PortAudio's default device, which is ALSA's `pcm.!default`) or a
case-insensitive substring of the PortAudio device name ("USB Audio", "hw:1,0").

No threads of our own and no blocking: the streams are opened in PortAudio's blocking mode
but we only `read` what `get_read_available()` says is there and only `write` when
`get_write_available()` has room, so a call returns at once and never holds up the media
thread's next send. The *caller* paces the calls: the media session's ticks run on absolute
monotonic deadlines (`start + n * ptime`, firmware/runtime/media.py's media thread), never
on accumulated sleeps, and the card's own buffer absorbs the
small jitter of those wake-ups. Differences between the card clock and the monotonic clock
show up as a short read (padded with silence, counted in `underruns`) or a full playback
buffer (frame dropped, counted in `overruns`) once in a while, not as growing delay.

For tests without a sound card, ALSA's `file` plugin selected with ALSA_CONFIG_PATH gives
byte-exact capture/playback through this same path (tests/data/alsa/asoundrc); it is not
paced by a clock, which is fine because we never rely on the device for timing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from audio.pcm import silence

log = logging.getLogger(__name__)

PREFERRED_RATES = (48000, 16000, 8000)


class DeviceError(RuntimeError):
    """A sound device that cannot be used; the message names the device and what is wrong."""


@dataclass(frozen=True)
class DeviceInfo:
    index: int
    name: str
    max_input_channels: int
    max_output_channels: int
    default_rate: float


def _pyaudio() -> Any:
    try:
        import pyaudio
    except ImportError as e:  # pragma: no cover - packaging problem
        raise DeviceError(
            "PyAudio is not installed (pip install pyaudio; needs portaudio19-dev to build)"
        ) from e
    return pyaudio


class AudioSystem:
    """One PortAudio instance: device lookup and stream factory.

    PortAudio reads the ALSA configuration when it initialises, so create this after
    ALSA_CONFIG_PATH is set (tests do that in a subprocess).
    """

    def __init__(self) -> None:
        self._pa_mod = _pyaudio()
        self._pa: Any = self._pa_mod.PyAudio()
        self._streams: list[DeviceCapture | DevicePlayback] = []

    def devices(self) -> list[DeviceInfo]:
        out = []
        for i in range(self._pa.get_device_count()):
            d = self._pa.get_device_info_by_index(i)
            out.append(
                DeviceInfo(
                    i,
                    str(d["name"]),
                    int(d["maxInputChannels"]),
                    int(d["maxOutputChannels"]),
                    float(d["defaultSampleRate"]),
                )
            )
        return out

    def find(self, name: str, *, capture: bool) -> DeviceInfo:
        """The device called `name` (exact, then "default", then a unique-ish substring)."""
        kind = "capture" if capture else "playback"
        usable = [
            d
            for d in self.devices()
            if (d.max_input_channels if capture else d.max_output_channels) > 0
        ]
        have = ", ".join(repr(d.name) for d in usable) or "none"
        for d in usable:
            if d.name == name:
                return d
        if name == "default":
            try:
                info = (
                    self._pa.get_default_input_device_info()
                    if capture
                    else self._pa.get_default_output_device_info()
                )
            except OSError:
                raise DeviceError(
                    f"{kind} device 'default': PortAudio has no default {kind} device "
                    f"(have: {have})"
                ) from None
            return next(d for d in usable if d.index == int(info["index"]))
        matches = [d for d in usable if name.lower() in d.name.lower()]
        if not matches:
            raise DeviceError(f"{kind} device {name!r} not found (have: {have})")
        if len(matches) > 1:
            log.info(
                "%s device %r matches %s; using the first",
                kind,
                name,
                ", ".join(d.name for d in matches),
            )
        return matches[0]

    def pick_rate(self, device: DeviceInfo, *, capture: bool, rates: tuple[int, ...]) -> int:
        """The first of `rates` the device accepts for 16-bit mono."""
        fmt = self._pa_mod.paInt16
        for rate in rates:
            try:
                if capture:
                    ok = self._pa.is_format_supported(
                        rate, input_device=device.index, input_channels=1, input_format=fmt
                    )
                else:
                    ok = self._pa.is_format_supported(
                        rate, output_device=device.index, output_channels=1, output_format=fmt
                    )
            except ValueError:
                ok = False
            if ok:
                return rate
        kind = "capture" if capture else "playback"
        raise DeviceError(
            f"{kind} device {device.name!r} supports none of {list(rates)} Hz for 16-bit mono"
        )

    def _open_stream(
        self, name: str, *, capture: bool, rates: tuple[int, ...], frame_ms: int
    ) -> tuple[Any, DeviceInfo, int, int]:
        """Find the device, pick a rate and open a 16-bit mono stream in one direction."""
        device = self.find(name, capture=capture)
        rate = self.pick_rate(device, capture=capture, rates=rates)
        frames = rate * frame_ms // 1000
        direction = "input" if capture else "output"
        try:
            stream = self._pa.open(
                format=self._pa_mod.paInt16,
                channels=1,
                rate=rate,
                frames_per_buffer=frames,
                **{direction: True, f"{direction}_device_index": device.index},
            )
        except OSError as e:
            kind = "capture" if capture else "playback"
            raise DeviceError(f"{kind} device {device.name!r} at {rate} Hz: {e}") from None
        return stream, device, rate, frames

    def open_capture(
        self, name: str = "default", *, rates: tuple[int, ...] = PREFERRED_RATES, frame_ms: int = 20
    ) -> DeviceCapture:
        stream, device, rate, _ = self._open_stream(
            name, capture=True, rates=rates, frame_ms=frame_ms
        )
        log.info("capture from %r at %d Hz", device.name, rate)
        capture = DeviceCapture(stream, rate, device.name)
        self._streams.append(capture)
        return capture

    def open_playback(
        self,
        name: str = "default",
        *,
        rates: tuple[int, ...] = PREFERRED_RATES,
        frame_ms: int = 20,
        prefill_frames: int = 2,
    ) -> DevicePlayback:
        stream, device, rate, frames = self._open_stream(
            name, capture=False, rates=rates, frame_ms=frame_ms
        )
        log.info("playback to %r at %d Hz", device.name, rate)
        playback = DevicePlayback(stream, rate, device.name, prefill=frames * prefill_frames)
        self._streams.append(playback)
        return playback

    def close(self) -> None:
        for s in self._streams:
            s.close()
        self._streams.clear()
        self._pa.terminate()


class DeviceCapture:
    """A capture stream as a graph Source; `read(n)` never blocks (see the module docstring)."""

    def __init__(self, stream: Any, rate: int, name: str) -> None:
        self._stream = stream
        self.rate = rate
        self.name = name
        self.underruns = 0
        self.samples = 0

    def read(self, n: int) -> np.ndarray:
        if self._stream is None:
            return silence(n)
        try:
            avail = self._stream.get_read_available()
            take = min(n, avail)
            data = self._stream.read(take, exception_on_overflow=False) if take else b""
        except OSError as e:
            log.warning("capture device %r failed: %s; capturing silence", self.name, e)
            self.close()
            return silence(n)
        pcm = np.frombuffer(data, dtype="<i2").astype(np.int16)
        self.samples += len(pcm)
        if len(pcm) < n:
            self.underruns += 1
            pcm = np.concatenate((pcm, silence(n - len(pcm))))
        return pcm

    def close(self) -> None:
        if self._stream is not None:
            try:
                self._stream.stop_stream()
                self._stream.close()
            except (OSError, ValueError):
                pass
            self._stream = None


class DevicePlayback:
    """A playback stream as a graph Sink; `write` never blocks (a frame that does not fit is
    dropped and counted). `prefill` samples of silence go first so that the jitter of the
    caller's wake-ups does not underrun the card."""

    def __init__(self, stream: Any, rate: int, name: str, prefill: int = 0) -> None:
        self._stream = stream
        self.rate = rate
        self.name = name
        self.overruns = 0
        self.samples = 0
        self._prefill = prefill

    def write(self, pcm: np.ndarray) -> None:
        if self._stream is None:
            return
        try:
            if self._prefill:
                room = self._stream.get_write_available()
                self._stream.write(silence(min(self._prefill, room)).tobytes())
                self._prefill = 0
            if self._stream.get_write_available() < len(pcm):
                self.overruns += 1
                return
            self._stream.write(np.asarray(pcm, dtype="<i2").tobytes())
        except OSError as e:
            log.warning("playback device %r failed: %s; discarding audio", self.name, e)
            self.close()
            return
        self.samples += len(pcm)

    def close(self) -> None:
        if self._stream is not None:
            try:
                self._stream.stop_stream()
                self._stream.close()
            except (OSError, ValueError):
                pass
            self._stream = None
