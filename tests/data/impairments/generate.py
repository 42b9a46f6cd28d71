"""Regenerate the recorded impairment traces the jitter-buffer tests replay.

Each trace is a gzip'd CSV of the packets as they *arrive* at the receiver, in arrival order:
`frame,arrival_us` where `frame` is the sender's 20 ms frame index (RTP sequence number and
timestamp offsets follow from it) and `arrival_us` is the receiver's clock in microseconds.
Lost packets are absent, duplicates appear twice. `#` lines carry the parameters.

The traces are committed so the tests replay fixed, reviewable patterns; this script documents
how they were made (`python tests/data/impairments/generate.py`). It is a test-data tool, not
firmware, so it may use `random` (seeded).
"""

from __future__ import annotations

import gzip
import io
import random
from collections.abc import Callable, Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
FRAME = 0.020
BASE_DELAY = 0.040


def _emit(
    name: str,
    seconds: float,
    *,
    skew_ppm: float = 0.0,
    delay: Callable[[int, float], float],
    lost: Callable[[int], bool] = lambda i: False,
    duplicate: Callable[[int], bool] = lambda i: False,
    note: str,
) -> None:
    rows: list[tuple[int, int]] = []
    frames = int(seconds / FRAME)
    for i in range(frames):
        # The sender's clock runs (1 + skew) times as fast as ours: its 20 ms take less of our time.
        sent = i * FRAME / (1 + skew_ppm * 1e-6)
        if lost(i):
            continue
        arrival = sent + BASE_DELAY + delay(i, sent)
        rows.append((i, round(arrival * 1e6)))
        if duplicate(i):
            rows.append((i, round((arrival + 0.003) * 1e6)))
    rows.sort(key=lambda r: (r[1], r[0]))
    text = io.StringIO()
    text.write(f"# {name}: {note}\n# frame_ms=20 seconds={seconds:g} skew_ppm={skew_ppm:g}\n")
    text.write("frame,arrival_us\n")
    text.writelines(f"{i},{t}\n" for i, t in rows)
    # mtime=0 and no file name in the header: regenerating gives identical bytes.
    with open(HERE / f"{name}.csv.gz", "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", compresslevel=9, fileobj=raw, mtime=0) as gz:
            gz.write(text.getvalue().encode("ascii"))


def _gilbert(rng: random.Random, p_enter: float, p_stay: float) -> Iterator[bool]:
    bad = False
    while True:
        bad = rng.random() < (p_stay if bad else p_enter)
        yield bad


def main() -> None:
    rng = random.Random(3550)
    _emit(
        "loss_random_5pct",
        60,
        delay=lambda i, t: rng.uniform(0, 0.010),
        lost=lambda i: rng.random() < 0.05,
        note="independent 5% loss, 0-10 ms uniform jitter",
    )
    burst = _gilbert(random.Random(4), p_enter=0.01, p_stay=0.8)
    _emit(
        "loss_burst",
        60,
        delay=lambda i, t: rng.uniform(0, 0.005),
        lost=lambda i: next(burst),
        note="Gilbert-Elliott bursts (enter 1%, stay 80%: mean burst 5 frames), 0-5 ms jitter",
    )
    _emit(
        "reorder",
        60,
        delay=lambda i, t: (
            rng.uniform(0, 0.004)
            + (rng.choice((0.025, 0.045, 0.065)) if rng.random() < 0.05 else 0.0)
        ),
        duplicate=lambda i: rng.random() < 0.01,
        note="5% of packets held back 1-3 frames (arrive after later ones), 1% duplicated",
    )

    def spikes(i: int, t: float) -> float:
        # Every 8 s the path stalls for 150 ms (Wi-Fi rescan): packets queue, then flush at once.
        phase = t % 8.0
        stall = 0.150
        extra = stall - (phase - 4.0) if 4.0 <= phase < 4.0 + stall else 0.0
        return rng.uniform(0, 0.005) + extra

    _emit(
        "jitter_spikes", 64, delay=spikes, note="150 ms stall every 8 s, packets flushed together"
    )

    def steps(i: int, t: float) -> float:
        return rng.uniform(0, 0.080) if 20.0 <= t < 40.0 else rng.uniform(0, 0.004)

    _emit(
        "jitter_step",
        80,
        delay=steps,
        note="4 ms jitter, 80 ms jitter from 20 s to 40 s, then 4 ms",
    )
    for ppm in (300, -300):
        _emit(
            f"skew_{'plus' if ppm > 0 else 'minus'}{abs(ppm)}ppm",
            600,
            skew_ppm=ppm,
            delay=lambda i, t: rng.uniform(0, 0.020),
            lost=lambda i: rng.random() < 0.01,
            note=f"sender clock {ppm:+d} ppm for 10 minutes, 0-20 ms jitter, 1% loss",
        )


if __name__ == "__main__":
    main()
