"""What one wake-up every 20 ms costs before any media work: Python thread vs C, same run.

Run from the repo root:  python bench/wake_floor.py [--seconds 10]

A phone's media path runs once per packet time. deskphone's media thread wakes once per tick
(`MediaClock`: `time.sleep` until the absolute deadline); baresip's threads wake several times
per tick, in C. This prints, for a thread that wakes every 20 ms and does nothing else, the
CPU seconds per minute and how late it wakes (first instruction after the sleep minus the
deadline, p50 / p99 / max in ms):

* C: `clock_nanosleep(TIMER_ABSTIME)` in a loop (compiled here with the system `cc`/`gcc`; the
  row is left out when there is no compiler), at SCHED_FIFO 10 where permitted, as the media
  thread asks for;
* Python, `time.sleep` (clock_nanosleep inside CPython 3.11+), as the media thread waits;
* Python, `threading.Lock.acquire(timeout=...)`, how it waited before.

It is the floor under bench/media_cpu.py's CPU figures (on a VM whose caches are cold after
20 ms the interpreter's own wake-up costs more than the kernel's), and the C row's lateness is
the floor under bench/rtp_timing.py's send deviation: no code, in any language, sends before
it is running again. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

PERIOD = 0.020

C_SOURCE = r"""
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
int main(int argc, char **argv) {
    long ticks = atol(argv[1]);
    struct sched_param rt = {.sched_priority = 10};
    sched_setscheduler(0, SCHED_FIFO, &rt); /* as the media thread; ignored when not permitted */
    struct timespec t, now, used;
    clock_gettime(CLOCK_MONOTONIC, &t);
    for (long i = 0; i < ticks; i++) {
        t.tv_nsec += 20000000L;
        if (t.tv_nsec >= 1000000000L) { t.tv_nsec -= 1000000000L; t.tv_sec++; }
        clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &t, NULL);
        clock_gettime(CLOCK_MONOTONIC, &now);
        printf("%.9f\n", (now.tv_sec - t.tv_sec) + (now.tv_nsec - t.tv_nsec) / 1e9);
    }
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &used);
    printf("%.6f\n", used.tv_sec + used.tv_nsec / 1e9);
    return 0;
}
"""


Wakes = tuple[float, list[float]]  # (CPU s per minute, lateness of each wake-up in s)


def c_wakes(seconds: float) -> Wakes | None:
    """CPU s per minute and wake-up lateness of the C loop, or None without a C compiler."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        src, exe = Path(tmp) / "wake.c", Path(tmp) / "wake"
        src.write_text(C_SOURCE)
        subprocess.run([cc, "-O2", "-o", str(exe), str(src)], check=True)
        ticks = int(seconds / PERIOD)
        out = subprocess.run([str(exe), str(ticks)], check=True, capture_output=True, text=True)
    *late, cpu = (float(line) for line in out.stdout.split())
    return cpu / (ticks * PERIOD) * 60.0, late


def python_wakes(seconds: float, wait: Callable[[float], object]) -> Wakes:
    """CPU s per minute and wake-up lateness of a Python thread waking every 20 ms with
    `wait(delay)`."""
    ticks = int(seconds / PERIOD)
    used: list[float] = []
    late: list[float] = []

    def run() -> None:
        start_cpu = time.thread_time()
        start = time.monotonic()
        for n in range(1, ticks + 1):
            deadline = start + n * PERIOD
            delay = deadline - time.monotonic()
            if delay > 0:
                wait(delay)
            late.append(time.monotonic() - deadline)
        used.append(time.thread_time() - start_cpu)

    thread = threading.Thread(target=run, name="wake")
    thread.start()
    thread.join(seconds * 2 + 10)
    return used[0] / (ticks * PERIOD) * 60.0, late


def lateness(late: list[float]) -> str:
    """p50 / p99 / max of wake-up lateness, in ms."""
    ordered = sorted(late)
    pick = [ordered[int(q * (len(ordered) - 1))] for q in (0.5, 0.99)] + [ordered[-1]]
    return " ".join(f"{v * 1000.0:7.3f}" for v in pick)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="per case (default 10)")
    args = parser.parse_args(argv)
    lock = threading.Lock()
    lock.acquire()  # never released: acquire(timeout) is a pure timed wait, as in MediaClock
    c = c_wakes(args.seconds)
    rows = [
        ("Python time.sleep", python_wakes(args.seconds, time.sleep)),
        (
            "Python Lock.acquire(timeout)",
            python_wakes(args.seconds, lambda d: lock.acquire(timeout=d)),
        ),
    ]
    print(f"One empty wake-up every 20 ms, {args.seconds:g} s per case")
    print(f"{'case':30s} {'s/min':>7s} {'vs C':>6s}   late ms: p50     p99     max")
    if c is not None:
        print(f"{'C clock_nanosleep':30s} {c[0]:7.3f} {'1.00':>6s}          {lateness(c[1])}")
    else:
        print("C clock_nanosleep               (no C compiler: not measured)")
    for name, (cpu, late) in rows:
        ratio = f"{cpu / c[0]:.2f}" if c else "-"
        print(f"{name:30s} {cpu:7.3f} {ratio:>6s}          {lateness(late)}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
