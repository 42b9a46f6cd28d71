"""Sound devices through the real PyAudio -> PortAudio -> ALSA path (audio/devices.py).

There is no sound card here, so ALSA itself is pointed (ALSA_CONFIG_PATH) at
tests/data/alsa/asoundrc, whose `default` device plays into one raw file and captures from
another. PortAudio reads the ALSA configuration once when it initialises, so each test runs
its PyAudio part in a fresh interpreter with that environment, and the parent checks the
bytes that came out.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np

from audio.pcm import dominant_frequency
from tests.conftest import skip_or_fail

ROOT = Path(__file__).resolve().parents[2]
ASOUNDRC = ROOT / "tests/data/alsa/asoundrc"
RATE = 48000

try:
    import pyaudio  # noqa: F401
except ImportError:
    skip_or_fail("PyAudio (and portaudio19-dev to build it) not installed")


def tone(freq: float, seconds: float, rate: int = RATE) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (np.sin(2 * np.pi * freq * t) * 12000).astype("<i2")


def run_child(code: str, tmp_path: Path, *, alsa_in: Path | None = None) -> dict[str, Any]:
    """Run `code` with the file sound card; it sets `result` (a dict) which comes back."""
    out_json = tmp_path / "result.json"
    if alsa_in is None:  # without an input file the capture devices do not open at all
        alsa_in = tmp_path / "empty.raw"
        alsa_in.write_bytes(b"")
    env = dict(os.environ)
    env.update(
        ALSA_CONFIG_PATH=str(ASOUNDRC),
        DESKPHONE_ALSA_OUT=str(tmp_path / "out.raw"),
        DESKPHONE_ALSA_IN=str(alsa_in),
        PYTHONPATH=str(ROOT),
        JACK_NO_START_SERVER="1",
    )
    script = (
        "import json, sys\nresult = {}\n"
        + textwrap.dedent(code)
        + f"\njson.dump(result, open({str(out_json)!r}, 'w'))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out_json.read_text())


def test_playback_is_byte_exact(tmp_path: Path) -> None:
    np.save(tmp_path / "tone.npy", tone(1000.0, 1.0))
    result = run_child(
        f"""
        import numpy as np
        from audio.devices import AudioSystem
        system = AudioSystem()
        sink = system.open_playback("default", prefill_frames=0)
        pcm = np.load({str(tmp_path / "tone.npy")!r})
        for i in range(0, len(pcm), 960):
            sink.write(pcm[i : i + 960])
        result.update(rate=sink.rate, name=sink.name, overruns=sink.overruns)
        system.close()
        """,
        tmp_path,
    )
    assert result == {"rate": RATE, "name": "default", "overruns": 0}
    played = np.fromfile(tmp_path / "out.raw", dtype="<i2")
    assert np.array_equal(played, tone(1000.0, 1.0))
    assert abs(dominant_frequency(played, RATE) - 1000.0) < 1.0


def test_capture_is_byte_exact(tmp_path: Path) -> None:
    source = tone(1000.0, 1.0)
    source.tofile(tmp_path / "in.raw")
    result = run_child(
        f"""
        import numpy as np
        from audio.devices import AudioSystem
        system = AudioSystem()
        mic = system.open_capture("deskphone_in")  # by (part of) its PortAudio name
        pcm = np.concatenate([mic.read(960) for _ in range(40)])
        np.save({str(tmp_path / "captured.npy")!r}, pcm)
        result.update(rate=mic.rate, name=mic.name, underruns=mic.underruns)
        system.close()
        """,
        tmp_path,
        alsa_in=tmp_path / "in.raw",
    )
    assert result == {"rate": RATE, "name": "deskphone_in", "underruns": 0}
    captured = np.load(tmp_path / "captured.npy")
    assert np.array_equal(captured, source[: 40 * 960])
    assert abs(dominant_frequency(captured, RATE) - 1000.0) < 1.0


def test_missing_device_is_named(tmp_path: Path) -> None:
    result = run_child(
        """
        from audio.devices import AudioSystem, DeviceError
        system = AudioSystem()
        for capture in (True, False):
            try:
                system.find("USB Headset", capture=capture)
            except DeviceError as e:
                result["capture" if capture else "playback"] = str(e)
        result["rates"] = system.pick_rate(
            system.find("default", capture=True), capture=True, rates=(16000, 8000)
        )
        system.close()
        """,
        tmp_path,
    )
    assert result["capture"].startswith("capture device 'USB Headset' not found (have: ")
    assert "'default'" in result["capture"] and "'deskphone_in'" in result["capture"]
    assert result["playback"].startswith("playback device 'USB Headset' not found")
    assert result["rates"] == 16000


def test_call_audio_through_the_alsa_devices(tmp_path: Path) -> None:
    """Phone A captures a 1 kHz tone from the ALSA input file, sends it as PCMU over RTP on
    loopback, phone B plays it to the ALSA output file: PortAudio on both ends."""
    tone(1000.0, 2.0).tofile(tmp_path / "in.raw")
    result = run_child(
        """
        import asyncio
        from firmware.call.manager import MediaChange
        from firmware.runtime.media import AudioEndpoints, MediaEngine
        from firmware.runtime.ports import PortAllocator
        from firmware.sip.ids import SeededIds
        from firmware.sip.offer_answer import CodecSpec, NegotiatedMedia

        def negotiated(port):
            pcmu = CodecSpec("PCMU", 8000, 0)
            return NegotiatedMedia(0, "127.0.0.1", port, "127.0.0.1", port + 1, 0, pcmu,
                                   {0: pcmu}, 101, frozenset(range(16)), 20, "sendrecv", None)

        async def main():
            a = MediaEngine(PortAllocator(40000, 49999, bind_address="127.0.0.1"),
                            SeededIds("a"),
                            AudioEndpoints(capture_device="default",
                                           playback_device="deskphone_null"))
            b = MediaEngine(PortAllocator(40000, 49999, bind_address="127.0.0.1"),
                            SeededIds("b"),
                            AudioEndpoints(capture_device="deskphone_null",
                                           playback_device="default"))
            la = a.ports.allocate("c1", None)
            lb = b.ports.allocate("c1", None)
            a.apply(MediaChange("c1", "start", negotiated(lb[1]), la))
            b.apply(MediaChange("c1", "start", negotiated(la[1]), lb))
            loop = asyncio.get_running_loop()
            end = loop.time() + 8
            while b.stats("c1")["packets_received"] < 60 and loop.time() < end:
                await asyncio.sleep(0.02)
            result["received"] = b.stats("c1")["packets_received"]
            result["errors"] = a.audio.errors + b.audio.errors
            for e in (a, b):
                e.apply(MediaChange("c1", "stop", None, None))
                await e.close()

        asyncio.run(main())
        """,
        tmp_path,
        alsa_in=tmp_path / "in.raw",
    )
    assert result["errors"] == []
    assert result["received"] >= 60
    played = np.fromfile(tmp_path / "out.raw", dtype="<i2")
    loud = np.flatnonzero(np.abs(played) > 2000)
    assert len(loud) > RATE // 2, "the tone did not reach the playback device"
    heard = played[loud[0] : loud[-1]]
    assert abs(dominant_frequency(heard[-RATE // 2 :], RATE) - 1000.0) < 5.0
