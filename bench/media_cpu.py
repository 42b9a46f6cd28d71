"""CPU seconds per call-minute of a PCMU call (clear and SRTP): deskphone vs baresip, same run.

Run from the repo root:  python bench/media_cpu.py [--seconds 20] [--only plain|srtp]

For each case two processes of one kind call each other on 127.0.0.1 and exchange audio for
`--seconds`: two deskphones (direct, no registrar; each plays a tone WAV and writes what it
hears to a WAV) and two baresips (through Kamailio; aufile tone in, sndfile recording out).
The CPU time (user + system, all threads, from /proc/<pid>/stat) of each phone process is read
when the call is up and again at the end of the window, so start-up and registration are
excluded. By default both pairs talk at the same time and are measured over the same window
(`--sequential`: one pair after the other), so load from other work on a shared machine falls
on both alike. Printed: CPU s per call-minute per phone for both, and deskphone / baresip.
Target (issue 3, acceptance 6): deskphone within 2x of baresip. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import _harness as h  # noqa: E402


def measure(call: h.PhoneCall, seconds: float) -> float:
    """CPU s per call-minute of ONE phone: mean of the two processes over the window."""
    return measure_together([call], seconds)[0]


def measure_together(calls: list[h.PhoneCall], seconds: float) -> list[float]:
    """`measure` for several calls over one and the same window."""
    before = [[h.cpu_seconds(pid) for pid in call.pids] for call in calls]
    h.wait(seconds)
    out = []
    for call, start in zip(calls, before, strict=True):
        after = [h.cpu_seconds(pid) for pid in call.pids]
        used = sum(b - a for a, b in zip(start, after, strict=True)) / len(call.pids)
        out.append(used / seconds * 60.0)
    return out


def deskphone_audio(lab: h.Lab, name: str, srtp: bool) -> dict[str, Any]:
    tone = h.write_tone_wav(lab.root / f"{name}-tone.wav", 1000.0, 8000, 5.0)
    audio: dict[str, Any] = {
        "codecs": ["PCMU"],
        "capture_file": str(tone),
        "playback_file": str(lab.root / f"{name}-heard.wav"),
    }
    if srtp:
        audio.update(srtp="mandatory", srtp_without_tls=True)
    return audio


def deskphone_pair(lab: h.Lab, srtp: bool) -> h.PhoneCall:
    call = h.deskphone_call(
        lab,
        audio_a=deskphone_audio(lab, "a", srtp),
        audio_b=deskphone_audio(lab, "b", srtp),
    )
    assert call.info["a"]["srtp"] is srtp, call.info["a"]
    return call


def check_received(call: h.PhoneCall, seconds: float) -> None:
    stats = call.info["phones"][1].call(call.info["call_ids"][1])["media"]
    if stats.get("packets_received", 0) < seconds * 40:
        print(f"  warning: deskphone B received only {stats.get('packets_received')} packets")


def run_case(srtp: bool, seconds: float, together: bool = True) -> tuple[float, float]:
    mediaenc = "srtp-mand" if srtp else None
    if together:
        with h.lab() as ours_lab, h.lab() as their_lab:
            call = deskphone_pair(ours_lab, srtp)
            theirs_call = h.baresip_call(their_lab, mediaenc=mediaenc)
            ours, theirs = measure_together([call, theirs_call], seconds)
            check_received(call, seconds)
            call.hangup()
            theirs_call.hangup()
        return ours, theirs
    with h.lab() as lab:
        call = deskphone_pair(lab, srtp)
        ours = measure(call, seconds)
        check_received(call, seconds)
        call.hangup()
    with h.lab() as lab:
        call = h.baresip_call(lab, mediaenc=mediaenc)
        theirs = measure(call, seconds)
        call.hangup()
    return ours, theirs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="call window (default 20)")
    parser.add_argument("--only", choices=("plain", "srtp"), help="run one case only")
    parser.add_argument(
        "--sequential", action="store_true", help="measure one pair after the other"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    cases = [c for c in ("plain", "srtp") if args.only in (None, c)]
    how = "one after the other" if args.sequential else "both pairs at once"
    print(f"CPU per call-minute, one phone (mean of 2 processes), {args.seconds:g} s window, {how}")
    print(f"{'case':12s} {'deskphone':>10s} {'baresip':>10s} {'ratio':>7s}   target <= 2.00")
    for case in cases:
        ours, theirs = run_case(case == "srtp", args.seconds, together=not args.sequential)
        name = "PCMU" if case == "plain" else "PCMU+SRTP"
        print(f"{name:12s} {ours:9.3f}s {theirs:9.3f}s {h.ratio(ours, theirs):>7s}", flush=True)


if __name__ == "__main__":
    main()
