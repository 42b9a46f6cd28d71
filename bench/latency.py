"""Added mouth-to-ear latency through two phones on a paced sound card: deskphone vs baresip.

Run from the repo root:  python bench/latency.py [--clicks 10]
Needs pulseaudio, pulseaudio-utils (pacat/parec) and libasound2-plugins (ALSA's pulse pcm).

The sound card is a private PulseAudio server (null sinks: paced by the system clock like real
hardware, no sound card needed) with one stereo sink, "room", recorded as a whole by `parec`:

    clicks --pacat--> "mouth" --(left)--> room --(left)--> phone A's microphone "mic_a"
    phone B's speaker "ear" --(right)--> room
    phone B's microphone: a silent monitor; phone A's speaker: a discarding sink.

Phone A calls phone B (PCMU); a train of short clicks is played into "mouth". In the one
stereo recording of "room" the left channel shows when each click entered A's microphone and
the right channel when it left B's speaker, on the same sample clock, so the difference is the
latency the two phones add (capture buffering, packetisation, network, jitter buffer,
playback buffering), with no clock alignment error. The same is then done with two baresips
using the same ALSA devices (its `alsa` module). Printed: median/min/max latency of each and
deskphone / baresip. Target (issue 3, acceptance 6): no worse than baresip (ratio <= 1).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import _harness as h  # noqa: E402

RATE = 48000
CLICK_MS = 5
CLICK_GAP = 0.8  # seconds between clicks: far longer than any plausible latency
THRESHOLD = 0.1  # of full scale; clicks are 0.5, the rest silence or faint comfort noise
MAX_LATENCY = 0.6  # a click is matched only within this window

PULSE_CONFIG = """\
load-module module-native-protocol-unix auth-anonymous=1 socket={socket}
load-module module-null-sink sink_name=room channels=2 channel_map=front-left,front-right rate={rate}
load-module module-null-sink sink_name=quiet channels=1 rate={rate}
load-module module-null-sink sink_name=trash channels=1 rate={rate}
load-module module-remap-sink sink_name=mouth master=room channels=1 channel_map=mono \
master_channel_map=front-left remix=no
load-module module-remap-sink sink_name=ear master=room channels=1 channel_map=mono \
master_channel_map=front-right remix=no
load-module module-remap-source source_name=mic_a master=room.monitor channels=1 \
channel_map=mono master_channel_map=front-left remix=no
"""

# ALSA devices of both phones, as PortAudio and baresip's alsa module see them.
ASOUNDRC = """\
pcm.!default { type pulse }
ctl.!default { type pulse }
pcm.mic_a { type pulse device "mic_a" }
pcm.spk_a { type pulse device "trash" }
pcm.mic_b { type pulse device "quiet.monitor" }
pcm.spk_b { type pulse device "ear" }
"""


@dataclass
class Pulse:
    """A private PulseAudio server with the bench's devices; `env` points clients at it."""

    workdir: Path
    proc: subprocess.Popen[bytes]
    env: dict[str, str]

    def run(self, *args: str, timeout: float = 10.0) -> str:
        out = subprocess.run(
            [h.tool(args[0]), *args[1:]],
            env={**_base_env(), **self.env},
            capture_output=True,
            timeout=timeout,
            check=True,
        )
        return out.stdout.decode()


def _base_env() -> dict[str, str]:
    return dict(os.environ)


@contextlib.contextmanager
def pulse(workdir: Path) -> Iterator[Pulse]:
    socket_path = workdir / "native"
    config = workdir / "bench.pa"
    config.write_text(PULSE_CONFIG.format(socket=socket_path, rate=RATE))
    asoundrc = workdir / "asoundrc"
    asoundrc.write_text(ASOUNDRC)
    env = {
        "PULSE_SERVER": f"unix:{socket_path}",
        "PULSE_RUNTIME_PATH": str(workdir / "runtime"),
        "ALSA_CONFIG_PATH": str(asoundrc),
    }
    log_file = (workdir / "pulse.log").open("wb")
    proc = subprocess.Popen(
        [h.tool("pulseaudio"), "--daemonize=no", "--exit-idle-time=-1", "-n", "-F", str(config),
         "--use-pid-file=no", "--disallow-exit", "--log-target=stderr"],
        env={**_base_env(), "PULSE_RUNTIME_PATH": str(workdir / "runtime")},
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    server = Pulse(workdir, proc, env)
    try:
        deadline = time.monotonic() + 10
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"pulseaudio exited:\n{(workdir / 'pulse.log').read_text()}")
            try:
                if "mic_a" in server.run("pactl", "list", "short", "sources", timeout=3):
                    break
            except subprocess.SubprocessError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("pulseaudio did not come up within 10 s")
            time.sleep(0.1)
        yield server
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log_file.close()


def click_train(path: Path, clicks: int) -> Path:
    """Raw s16le mono: 0.5 s of silence, then `clicks` 1 kHz bursts CLICK_GAP apart."""
    gap = int(RATE * CLICK_GAP)
    n = int(RATE * CLICK_MS / 1000)
    burst = 0.5 * np.sin(2 * np.pi * 1000 * np.arange(n) / RATE) * np.hanning(n) ** 0.25
    pcm = np.zeros(RATE // 2 + gap * clicks)
    for i in range(clicks):
        start = RATE // 2 + i * gap
        pcm[start : start + n] = burst
    path.write_bytes((pcm * 32767).astype("<i2").tobytes())
    return path


def onsets(x: np.ndarray) -> np.ndarray:
    """Sample indices where |x| first crosses THRESHOLD after at least 0.3 s below it."""
    loud = np.flatnonzero(np.abs(x) > THRESHOLD)
    if loud.size == 0:
        return loud
    keep = np.concatenate(([True], np.diff(loud) > int(0.3 * RATE)))
    return loud[keep]


def latencies(recording: Path) -> list[float]:
    """Seconds from each click on the left (A's mic) to its arrival on the right (B's ear)."""
    pcm = np.frombuffer(recording.read_bytes(), dtype="<i2")
    pcm = pcm[: pcm.size // 2 * 2].reshape(-1, 2).astype(np.float64) / 32768
    mouth, ear = onsets(pcm[:, 0]), onsets(pcm[:, 1])
    out = []
    for m in mouth:
        later = ear[(ear > m) & (ear < m + MAX_LATENCY * RATE)]
        if later.size:
            out.append(float(later[0] - m) / RATE)
    return out


def measure(
    server: Pulse, name: str, clicks: int, start_call: Callable[[], h.PhoneCall]
) -> list[float]:
    """Record "room" while a call set up by `start_call` carries the click train."""
    recording = server.workdir / f"{name}-room.raw"
    with recording.open("wb") as out:
        parec = subprocess.Popen(
            [h.tool("parec"), "-d", "room.monitor", "--raw", "--format=s16le",
             f"--rate={RATE}", "--channels=2", "--latency-msec=20"],
            env={**_base_env(), **server.env},
            stdout=out,
        )  # fmt: skip
        try:
            call = start_call()
            h.wait(1.0)  # let both media paths and jitter buffers settle
            train = click_train(server.workdir / "clicks.raw", clicks)
            server.run(
                "pacat", "-d", "mouth", "--raw", "--format=s16le", f"--rate={RATE}",
                "--channels=1", str(train), timeout=clicks * CLICK_GAP + 15,
            )  # fmt: skip
            h.wait(MAX_LATENCY + 0.2)  # the last click's way through both phones
            call.hangup()
        finally:
            parec.send_signal(signal.SIGTERM)
            parec.wait(5)
    return latencies(recording)


def deskphone(lab: h.Lab, server: Pulse) -> h.PhoneCall:
    def audio(mic: str, speaker: str) -> dict[str, object]:
        return {"codecs": ["PCMU"], "capture_device": mic, "playback_device": speaker}

    return h.deskphone_call(
        lab,
        audio_a=audio("mic_a", "spk_a"),
        audio_b=audio("mic_b", "spk_b"),
        env_a=server.env,
        env_b=server.env,
    )


def baresip(lab: h.Lab, server: Pulse) -> h.PhoneCall:
    def devices(role: str, text: str) -> str:
        text = re.sub(r"(?m)^audio_source\s.*$", f"audio_source\t\talsa,mic_{role}", text)
        text = re.sub(r"(?m)^audio_player\s.*$", f"audio_player\t\talsa,spk_{role}", text)
        return text.replace("module\t\t\taufile.so", "module\t\t\taufile.so\nmodule\t\t\talsa.so")

    return h.baresip_call(lab, config_edit=devices, env=server.env)


def summary(values: list[float]) -> str:
    if not values:
        return "no click found"
    ms = np.array(values) * 1000
    return f"median {np.median(ms):6.1f} ms (min {ms.min():.1f}, max {ms.max():.1f}, n={ms.size})"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clicks", type=int, default=10, help="clicks per call (default 10)")
    parser.add_argument("--keep", action="store_true", help="keep recordings and logs")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    results: dict[str, list[float]] = {}
    with h.lab(keep=args.keep) as lab, pulse(lab.dir("pulse")) as server:
        for name, start in (("deskphone", deskphone), ("baresip", baresip)):
            with h.lab(keep=args.keep) as inner:
                results[name] = measure(server, name, args.clicks, partial(start, inner, server))
    print("Mouth-to-ear latency added by two phones (PCMU, PulseAudio null sinks via ALSA)")
    for name, values in results.items():
        print(f"{name:10s} {summary(values)}")
    ours, theirs = (float(np.median(results[k])) if results[k] else float("nan") for k in results)
    print(f"ratio deskphone / baresip (medians): {h.ratio(ours, theirs)}; target <= 1.00")


if __name__ == "__main__":
    main()
