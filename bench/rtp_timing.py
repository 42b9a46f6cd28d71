"""RTP send interval deviation from 20 ms: deskphone's sender vs baresip's, same run.

Run from the repo root, as root (the packets are read off lo with an AF_PACKET socket):
    python bench/rtp_timing.py [--seconds 20]

Two deskphones call each other directly, then two baresips call each other through Kamailio,
PCMU with 20 ms packets, each for `--seconds`. A sniffer on the loopback interface takes the
kernel's timestamp of every RTP packet (SO_TIMESTAMPNS, i.e. the moment the sender's sendto()
put it on lo), grouped by sending port. Printed per sender: packets, and |interval - 20 ms|
p50 / p99 / max in ms; then the ratio deskphone / baresip of the worse sender's p99.
Target (issue 3, acceptance 6): deskphone p99 deviation under 1 ms. Nothing is asserted.

    python bench/rtp_timing.py --cpus-awake

measures the same with every CPU kept out of idle by one SCHED_IDLE busy loop each (they run
only when nothing else wants the CPU, so they take no time from the phones). On a VM whose
idle vCPUs halt (no cpuidle driver), a wake-up first waits for the host to run the vCPU again,
and that sets the tail of any sender (bench/wake_floor.py shows it for an empty C loop);
comparing the two runs separates the host's share from the phones' own.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import _harness as h  # noqa: E402
from bench.media_cpu import deskphone_audio  # noqa: E402

# One busy loop at SCHED_IDLE (bounded: it ends by itself after argv[1] seconds).
_SPIN = (
    "import os, sys, time\n"
    "os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))\n"
    "end = time.monotonic() + float(sys.argv[1])\n"
    "while time.monotonic() < end:\n"
    "    pass\n"
)


@contextlib.contextmanager
def cpus_kept_awake(limit: float) -> Iterator[None]:
    """One SCHED_IDLE busy loop pinned to each CPU this process may use, for at most `limit` s."""
    spinners: list[subprocess.Popen[bytes]] = []
    try:
        for cpu in sorted(os.sched_getaffinity(0)):
            proc = subprocess.Popen([sys.executable, "-c", _SPIN, str(limit)])
            spinners.append(proc)
            os.sched_setaffinity(proc.pid, {cpu})
        yield
    finally:
        for proc in spinners:
            proc.kill()
            proc.wait(10)


def sniff_call(call: h.PhoneCall, seconds: float) -> dict[int, list[h.RtpPacket]]:
    sniffer = h.RtpSniffer()
    h.wait(seconds)
    packets = sniffer.close()
    call.hangup()
    # Drop the first packets of each stream: they may predate the sniffer's start.
    return {port: p[1:] for port, p in h.streams(packets).items() if len(p) > 10}


def run(seconds: float) -> list[tuple[str, dict[str, float]]]:
    rows: list[tuple[str, dict[str, float]]] = []
    with h.lab() as lab:
        call = h.deskphone_call(
            lab,
            audio_a=deskphone_audio(lab, "a", False),
            audio_b=deskphone_audio(lab, "b", False),
        )
        ports = {
            int(call.info["a"]["local_rtp"].rsplit(":", 1)[1]): "deskphone A",
            int(call.info["b"]["local_rtp"].rsplit(":", 1)[1]): "deskphone B",
        }
        for port, packets in sorted(sniff_call(call, seconds).items()):
            if port in ports:  # other software may be sending RTP on lo too
                rows.append((ports[port], h.interval_deviation([p.time for p in packets])))
    with h.lab() as lab:
        call = h.baresip_call(lab)
        ports = h.baresip_rtp_ports(call)
        for port, packets in sorted(sniff_call(call, seconds).items()):
            if port in ports:
                rows.append((ports[port], h.interval_deviation([p.time for p in packets])))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="call window (default 20)")
    parser.add_argument(
        "--cpus-awake",
        action="store_true",
        help="keep every CPU out of idle with SCHED_IDLE busy loops (see the module docstring)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    awake = cpus_kept_awake(4 * args.seconds + 120) if args.cpus_awake else contextlib.nullcontext()
    with awake:
        rows = run(args.seconds)
    print(f"RTP send interval |interval - 20 ms|, ms ({args.seconds:g} s per call, kernel stamps)")
    if args.cpus_awake:
        print("(every CPU kept out of idle by a SCHED_IDLE busy loop: no vCPU wake-up latency)")
    print(f"{'sender':14s} {'packets':>8s} {'p50':>7s} {'p99':>7s} {'max':>7s}")
    for label, s in rows:
        print(f"{label:14s} {int(s['n']):8d} {s['p50']:7.3f} {s['p99']:7.3f} {s['max']:7.3f}")
    ours = max(
        (s["p99"] for label, s in rows if label.startswith("deskphone")), default=float("nan")
    )
    theirs = max(
        (s["p99"] for label, s in rows if label.startswith("baresip")), default=float("nan")
    )
    verdict = "met" if ours < 1.0 else "NOT met"
    print(
        f"worst p99: deskphone {ours:.3f} ms, baresip {theirs:.3f} ms, "
        f"ratio {h.ratio(ours, theirs)}; target p99 < 1 ms: {verdict}"
    )


if __name__ == "__main__":
    main()
