"""The media benchmarks run and print their tables (bench/*.py); no performance is asserted.

The analysis helpers are checked on synthetic input whose answer is known; each bench script
is then run end to end with a tiny duration (slow: real phones, baresip, Kamailio).
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench import _harness as h
from bench import latency
from tests.conftest import require_tool, skip_or_fail

ROOT = Path(__file__).resolve().parents[2]


def test_interval_deviation_of_a_known_send_pattern() -> None:
    # 20 ms ticks, one packet 3 ms late (two intervals off by 3 ms), one 0.5 ms early.
    t = np.arange(200) * 0.020
    t[50] += 0.003
    t[120] -= 0.0005
    s = h.interval_deviation(t)
    assert s["n"] == 200
    assert s["p50"] == pytest.approx(0.0, abs=1e-6)
    assert s["max"] == pytest.approx(3.0, abs=1e-6)
    assert 0.5 - 1e-6 <= s["p99"] <= 3.0 + 1e-6


def test_rtp_header_read_from_an_ipv4_udp_datagram() -> None:
    rtp = struct.pack("!BBHII", 0x80, 0x80 | 0, 65535, 160, 0xDEADBEEF) + bytes(160)
    udp = struct.pack("!HHHH", 40000, 40002, 8 + len(rtp), 0) + rtp
    ip = bytes([0x45, 0]) + struct.pack("!H", 20 + len(udp)) + bytes(5) + bytes([17]) + bytes(10)
    p = h._rtp_of(ip + udp, 12.5)
    assert p == h.RtpPacket(12.5, 40000, 40002, 0xDEADBEEF, 65535, 0, 172)
    rtcp = struct.pack("!BBH", 0x80, 200, 6) + bytes(24)
    udp = struct.pack("!HHHH", 40001, 40003, 8 + len(rtcp), 0) + rtcp
    assert h._rtp_of(ip[:2] + struct.pack("!H", 20 + len(udp)) + ip[4:] + udp, 1.0) is None


def test_cpu_seconds_grows_with_work_of_this_process() -> None:
    before = h.cpu_seconds(os.getpid())
    x = 0
    for i in range(3_000_000):
        x += i * i
    assert h.cpu_seconds(os.getpid()) > before


def test_latency_found_between_the_two_channels(tmp_path: Path) -> None:
    rate = latency.RATE
    train = np.frombuffer(latency.click_train(tmp_path / "c.raw", 3).read_bytes(), "<i2")
    delay = int(0.0873 * rate)
    right = np.concatenate((np.zeros(delay, "<i2"), train[:-delay] // 2))  # softer, later
    stereo = np.stack((train, right), axis=1).astype("<i2")
    (tmp_path / "room.raw").write_bytes(stereo.tobytes())
    found = latency.latencies(tmp_path / "room.raw")
    assert len(found) == 3
    # The threshold crossing of the half-amplitude copy comes a few samples into the burst.
    assert all(0.0873 <= v < 0.0873 + 0.002 for v in found), found


def run_bench(*args: str, timeout: float = 240) -> str:
    out = subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        timeout=timeout,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    return out.stdout


@pytest.mark.slow
def test_media_cpu_prints_both_cases_with_a_ratio() -> None:
    require_tool("kamailio")
    require_tool("baresip")
    text = run_bench("bench/media_cpu.py", "--seconds", "1")
    for case in ("PCMU", "PCMU+SRTP"):
        assert re.search(rf"^{re.escape(case)}\s+[\d.]+s\s+[\d.]+s\s+([\d.]+|inf)$", text, re.M), (
            text
        )


def test_wake_floor_prints_c_and_both_python_waits() -> None:
    require_tool("gcc")  # .ci/run installs it (C extensions without wheels)
    text = run_bench("bench/wake_floor.py", "--seconds", "0.3", timeout=60)
    for case in ("C clock_nanosleep", "Python Lock.acquire(timeout)", "Python time.sleep"):
        # CPU s/min, ratio to C, then wake-up lateness p50 / p99 / max in ms
        number = r"\s+-?[\d.]+"
        assert re.search(rf"^{re.escape(case)}{number * 5}$", text, re.M), text


@pytest.mark.slow
@pytest.mark.parametrize("awake", [False, True], ids=["as-is", "cpus-awake"])
def test_rtp_timing_prints_all_four_senders(awake: bool) -> None:
    require_tool("kamailio")
    require_tool("baresip")
    if os.geteuid() != 0:
        skip_or_fail("sniffing lo needs root")
    text = run_bench("bench/rtp_timing.py", "--seconds", "1", *(["--cpus-awake"] if awake else []))
    for sender in ("deskphone A", "deskphone B", "baresip A", "baresip B"):
        assert re.search(rf"^{sender}\s+\d+\s+[\d.]+\s+[\d.]+\s+[\d.]+$", text, re.M), text
    assert "worst p99: deskphone" in text
    assert ("kept out of idle" in text) is awake
    # the busy loops end with the benchmark
    assert not [c for c in _command_lines() if "os.SCHED_IDLE" in c]


def _command_lines() -> list[str]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                out.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode())
            except OSError:  # the process ended meanwhile
                pass
    return out


@pytest.mark.slow
def test_latency_finds_every_click_through_both_kinds_of_phone() -> None:
    require_tool("kamailio")
    require_tool("baresip")
    for name in ("pulseaudio", "pacat", "parec"):
        if shutil.which(name) is None:
            skip_or_fail(f"{name} missing (apt-get install pulseaudio pulseaudio-utils)")
    text = run_bench("bench/latency.py", "--clicks", "2")
    for kind in ("deskphone", "baresip"):
        assert re.search(rf"^{kind}\s+median\s+[\d.]+ ms .*n=2\)$", text, re.M), text
    assert "ratio deskphone / baresip" in text
