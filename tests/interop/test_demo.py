"""`deskphone demo` end to end (acceptance 5): three simulated phones, all checks pass, exit 0."""

from __future__ import annotations

import os
import subprocess
import sys
import wave
from pathlib import Path

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
