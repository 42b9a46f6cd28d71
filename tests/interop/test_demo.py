"""`deskphone demo` end to end (acceptance 5): three simulated phones, all checks pass, exit 0."""

from __future__ import annotations

import os
import subprocess
import sys
import wave
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def test_demo_runs_and_all_checks_pass(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "firmware", "demo", "--out", str(out)],
        cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        timeout=55,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    lines = proc.stdout.splitlines()
    assert lines[-1].startswith("demo PASSED: ")
    assert not [line for line in lines if "[FAIL]" in line]
    # the LCDs as they changed: Bob's phone showed Alice's call, Carol's the conference
    assert any("Bob   [Incoming call | Alice" in line for line in lines)
    assert any("Carol [Conference (3)" in line for line in lines)
    assert any("REFER" in line and "Replaces=" in line for line in lines)  # the ladder
    for name in ("alice", "bob", "carol"):
        with wave.open(str(out / f"{name}.wav")) as w:
            assert w.getnframes() > 8000  # over a second of received audio each


def test_demo_through_a_real_registrar(tmp_path: Path, kamailio: Any) -> None:
    """`--registrar`: the same script with the phones registered at Kamailio (users 1091-1093)."""
    users = ["1091", "1092", "1093"]
    accounts = [arg for u in users for arg in ("--account", f"{u}:{kamailio.users[u]}")]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "firmware",
            "demo",
            "--out",
            str(tmp_path / "out"),
            "--registrar",
            kamailio.uri("udp"),
            "--domain",
            kamailio.domain,
            *accounts,
        ],
        cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        timeout=55,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "[ok] all three phones registered at" in proc.stdout
    assert "Bob   [Incoming call | Alice | 1091" in proc.stdout
