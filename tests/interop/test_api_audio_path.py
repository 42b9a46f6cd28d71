"""Handset / speaker switching moves a running call between the board profile's sound devices.

Alice's phone runs on the file sound card (tests/data/alsa/asoundrc): her board profile puts the
handset's playback on `default` (written to a raw file) and the speaker's on `deskphone_null`.
Bob (WAV files) calls her and plays a tone; Alice lifts the handset through the action API and
the tone is written to the handset file; SPEAKER moves the call and the file stops growing;
lifting the handset again brings it back.
"""

from __future__ import annotations

import math
import struct
import time
import tomllib
import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tomli_w

from tests.conftest import skip_or_fail
from tests.interop.phone import PhoneProcess

ROOT = Path(__file__).resolve().parents[2]
ASOUNDRC = ROOT / "tests" / "data" / "alsa" / "asoundrc"


def _tone_wav(path: Path, freq: float = 700.0, rate: int = 8000) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(
            b"".join(
                struct.pack("<h", int(9000 * math.sin(2 * math.pi * freq * n / rate)))
                for n in range(rate)
            )
        )


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _grows(path: Path, by: int, timeout: float) -> bool:
    """Bounded poll: does the playback file grow by `by` bytes within `timeout`?"""
    start, deadline = _size(path), time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _size(path) - start >= by:
            return True
        time.sleep(0.05)  # an external observer of a file: polling is all there is
    return False


@pytest.fixture
def alice_and_bob(tmp_path: Path) -> Iterator[tuple[PhoneProcess, PhoneProcess, Path]]:
    try:
        import pyaudio  # noqa: F401
    except ImportError:
        skip_or_fail("PyAudio (and portaudio19-dev to build it) not installed")
    profile = tomllib.loads((ROOT / "board" / "profiles" / "sim.toml").read_text())
    profile["audio"] = {
        "handset": {"capture": "deskphone_null", "playback": "default"},
        "speaker": {"capture": "deskphone_null", "playback": "deskphone_null"},
    }
    (tmp_path / "desk.toml").write_text(tomli_w.dumps(profile))
    handset = tmp_path / "handset.raw"
    (tmp_path / "empty.raw").write_bytes(b"")
    (tmp_path / "alice").mkdir()
    alice = PhoneProcess(
        tmp_path / "alice",
        [],
        audio={"codecs": ["PCMU"]},
        env={
            "ALSA_CONFIG_PATH": str(ASOUNDRC),
            "DESKPHONE_ALSA_OUT": str(handset),
            "DESKPHONE_ALSA_IN": str(tmp_path / "empty.raw"),
            "JACK_NO_START_SERVER": "1",
        },
    )
    doc = tomllib.loads(alice.config_path.read_text())
    doc["board"] = {"profile": str(tmp_path / "desk.toml")}
    doc["logging"] = {"level": "info"}
    alice.config_path.write_text(tomli_w.dumps(doc))
    (tmp_path / "bob").mkdir()
    _tone_wav(tmp_path / "bob-says.wav")
    bob = PhoneProcess(
        tmp_path / "bob",
        [],
        audio={
            "codecs": ["PCMU"],
            "capture_file": str(tmp_path / "bob-says.wav"),
            "playback_file": str(tmp_path / "bob-hears.wav"),
        },
    )
    started = []
    try:
        started.append(alice.start())
        started.append(bob.start())
        yield alice, bob, handset
    finally:
        for phone in started:
            phone.kill()


def test_handset_and_speaker_are_different_sound_devices(
    alice_and_bob: tuple[PhoneProcess, PhoneProcess, Path],
) -> None:
    alice, bob, handset = alice_and_bob
    bob.dial(f"sip:alice@127.0.0.1:{alice.sip_port}")
    alice.wait_for(lambda s: s["lcd"][0] == "Incoming call", 10, "Alice's phone rings")
    code, reply = alice.post("/api/hook", {"state": "offhook"})
    assert code == 200 and reply["ui"]["audio_path"] == "handset", reply
    alice.wait_for(lambda s: s["calls"][0]["state"] == "connected", 10, "connected")
    assert _grows(handset, 8000, 10), "Bob's tone never reached the handset device"

    code, reply = alice.post("/api/keys/SPEAKER", {})
    assert code == 200 and reply["ui"]["audio_path"] == "speaker"
    assert reply["leds"]["SPEAKER"] == "on"
    time.sleep(0.3)  # frames already queued for the handset device drain
    assert not _grows(handset, 1600, 1.5), "the handset still plays after SPEAKER"
    assert alice.status()["calls"][0]["media"]["packets_received"] > 0

    code, reply = alice.post("/api/keys/SPEAKER", {})  # SPEAKER again with the handset up
    assert reply["ui"]["audio_path"] == "handset"
    assert _grows(handset, 8000, 10), "the call did not come back to the handset"
    assert "audio device unusable" not in alice.log()
    # the device was re-opened (the file plugin starts a new file) and plays Bob's tone again
    played = np.fromfile(handset, dtype="<i2").astype(np.float64)[-4000:]
    assert np.sqrt(np.mean(played**2)) > 1000, "the handset plays silence"
