"""RTP send interval deviation from 20 ms: deskphone's sender vs baresip's, same run.

Run from the repo root, as root (the packets are read off lo with an AF_PACKET socket):
    python bench/rtp_timing.py [--seconds 20]

Two deskphones call each other directly, then two baresips call each other through Kamailio,
PCMU with 20 ms packets, each for `--seconds`. A sniffer on the loopback interface takes the
kernel's timestamp of every RTP packet (SO_TIMESTAMPNS, i.e. the moment the sender's sendto()
put it on lo), grouped by sending port. Printed per sender: packets, and |interval - 20 ms|
p50 / p99 / max in ms; then the ratio deskphone / baresip of the worse sender's p99.
Target (issue 3, acceptance 6): deskphone p99 deviation under 1 ms. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import _harness as h  # noqa: E402
from bench.media_cpu import deskphone_audio  # noqa: E402


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
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    rows = run(args.seconds)
    print(f"RTP send interval |interval - 20 ms|, ms ({args.seconds:g} s per call, kernel stamps)")
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
