"""CPU of a 3-way local conference relative to a single call, same phone, same run.

Run from the repo root:  python bench/conference_cpu.py [--seconds 20] [--codec PCMU|G722]

Three deskphone processes on 127.0.0.1, direct calls (no registrar), WAV files for audio: the
hub H (the one measured) plays a 1 kHz tone, peers P1 and P2 play 440 Hz and 1500 Hz. First H
calls P1 and the CPU time of H (user + system, all threads, /proc/<pid>/stat) is measured over
the window; that call ends. Then H calls P1 and P2, joins them with the "conference" action and
is measured again over the same window. Printed: CPU s per minute for both and the ratio.
Target (issue 4, acceptance 6): under 2.2x (two RTP streams are 2x already; the mixing,
its resampling to 16 kHz and back and the handset leg must cost under a fifth of one call).
Nothing is asserted.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import _harness as h  # noqa: E402
from tests.interop.phone import PhoneProcess  # noqa: E402

TARGET = 2.2


def audio(lab: h.Lab, name: str, hz: float, codec: str) -> dict[str, Any]:
    tone = h.write_tone_wav(lab.root / f"{name}-tone.wav", hz, 16000, 5.0)
    return {
        "codecs": [codec],
        "capture_file": str(tone),
        "playback_file": str(lab.root / f"{name}-heard.wav"),
    }


def call(hub: PhoneProcess, peer: PhoneProcess) -> tuple[str, str]:
    """Hub dials peer directly; peer answers. Returns (hub's call id, peer's call id)."""
    placed = hub.dial(f"sip:bench@127.0.0.1:{peer.sip_port}")
    ringing = peer.wait_call(lambda c: c["state"] == "ringing", h.SETUP_TIMEOUT, "peer to ring")
    peer.call_action(ringing["id"], "answer")
    hub.wait_call(
        lambda c: c["id"] == placed["id"] and c["state"] == "connected",
        h.SETUP_TIMEOUT,
        "the call to connect",
    )
    return placed["id"], ringing["id"]


def hangup(hub: PhoneProcess, peer: PhoneProcess, ids: tuple[str, str]) -> None:
    hub.call_action(ids[0], "hangup")
    peer.wait_call(lambda c: c["id"] == ids[1] and c["state"] == "ended", 10, "the BYE")


def cpu_per_minute(pid: int, seconds: float) -> float:
    before = h.cpu_seconds(pid)
    h.wait(seconds)
    return (h.cpu_seconds(pid) - before) / seconds * 60.0


def run(seconds: float, codec: str) -> tuple[float, float, dict[str, Any]]:
    with h.lab() as lab:
        hub = h._phone(lab, "hub", audio(lab, "hub", 1000.0, codec), None)
        p1 = h._phone(lab, "p1", audio(lab, "p1", 440.0, codec), None)
        p2 = h._phone(lab, "p2", audio(lab, "p2", 1500.0, codec), None)
        assert hub.proc is not None
        pid = hub.proc.pid

        ids = call(hub, p1)
        h.wait(0.5)  # past call set-up
        single = cpu_per_minute(pid, seconds)
        hangup(hub, p1, ids)

        ids1, ids2 = call(hub, p1), call(hub, p2)
        hub.call_action(ids1[0], "conference", **{"with": ids2[0]})
        assert hub.status()["conference"] == [ids1[0], ids2[0]], hub.status()
        h.wait(0.5)
        conference = cpu_per_minute(pid, seconds)
        stats = {
            "p1_received": p1.call(ids1[1])["media"].get("packets_received", 0),
            "p2_received": p2.call(ids2[1])["media"].get("packets_received", 0),
        }
        hangup(hub, p1, ids1)
        hangup(hub, p2, ids2)
    return single, conference, stats


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="window per case (20)")
    parser.add_argument("--codec", choices=("PCMU", "G722"), default="PCMU")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    single, conference, stats = run(args.seconds, args.codec)
    ratio = conference / single if single > 0 else float("inf")
    print(f"CPU s per minute of the hub phone, {args.codec}, {args.seconds:g} s window per case")
    print(f"single call       {single:8.3f}s")
    print(f"3-way conference  {conference:8.3f}s")
    verdict = "ok" if ratio < TARGET else "OVER TARGET"
    print(f"ratio {ratio:.2f}x (target < {TARGET}x): {verdict}")
    print(f"peer packets received during the conference: {stats}")


if __name__ == "__main__":
    main()
