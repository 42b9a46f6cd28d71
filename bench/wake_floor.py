"""What one wake-up every 20 ms costs before any media work: Python thread vs C, same run.

Run from the repo root:  python bench/wake_floor.py [--seconds 10]

A phone's media path runs once per packet time. deskphone's media thread wakes once per tick
(`MediaClock`: `Lock.acquire(timeout)` until the absolute deadline); baresip's threads wake
several times per tick, in C. This prints the CPU seconds per minute of a thread that wakes
every 20 ms and does nothing else:

* C: `clock_nanosleep(TIMER_ABSTIME)` in a loop (compiled here with the system `cc`/`gcc`; the
  row is left out when there is no compiler);
* Python, as the media thread waits (`threading.Lock.acquire(timeout=...)`, in a thread);
* Python, `time.sleep` (clock_nanosleep inside CPython 3.11+), for comparison.

It is the floor under bench/media_cpu.py's figures: on a VM whose caches are cold after 20 ms
the interpreter's own wake-up costs several times the kernel's. Nothing is asserted.
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
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
int main(int argc, char **argv) {
    long ticks = atol(argv[1]);
    struct timespec t, used;
    clock_gettime(CLOCK_MONOTONIC, &t);
    for (long i = 0; i < ticks; i++) {
        t.tv_nsec += 20000000L;
        if (t.tv_nsec >= 1000000000L) { t.tv_nsec -= 1000000000L; t.tv_sec++; }
        clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &t, NULL);
    }
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &used);
    printf("%.6f\n", used.tv_sec + used.tv_nsec / 1e9);
    return 0;
}
"""


def c_wakes(seconds: float) -> float | None:
    """CPU s per minute of the C loop, or None without a C compiler."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        src, exe = Path(tmp) / "wake.c", Path(tmp) / "wake"
        src.write_text(C_SOURCE)
        subprocess.run([cc, "-O2", "-o", str(exe), str(src)], check=True)
        ticks = int(seconds / PERIOD)
        out = subprocess.run([str(exe), str(ticks)], check=True, capture_output=True, text=True)
    return float(out.stdout) / (ticks * PERIOD) * 60.0


def python_wakes(seconds: float, wait: Callable[[float], object]) -> float:
    """CPU s per minute of a Python thread waking every 20 ms with `wait(delay)`."""
    ticks = int(seconds / PERIOD)
    used: list[float] = []

    def run() -> None:
        start_cpu = time.thread_time()
        start = time.monotonic()
        for n in range(1, ticks + 1):
            delay = start + n * PERIOD - time.monotonic()
            if delay > 0:
                wait(delay)
        used.append(time.thread_time() - start_cpu)

    thread = threading.Thread(target=run, name="wake")
    thread.start()
    thread.join(seconds * 2 + 10)
    return used[0] / (ticks * PERIOD) * 60.0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="per case (default 10)")
    args = parser.parse_args(argv)
    lock = threading.Lock()
    lock.acquire()  # never released: acquire(timeout) is a pure timed wait, as in MediaClock
    c = c_wakes(args.seconds)
    rows = [
        (
            "Python Lock.acquire(timeout)",
            python_wakes(args.seconds, lambda d: lock.acquire(timeout=d)),
        ),
        ("Python time.sleep", python_wakes(args.seconds, time.sleep)),
    ]
    print(f"CPU s per minute of one empty wake-up every 20 ms, {args.seconds:g} s per case")
    print(f"{'case':30s} {'s/min':>7s} {'vs C':>6s}")
    if c is not None:
        print(f"{'C clock_nanosleep':30s} {c:7.3f} {'1.00':>6s}")
    else:
        print("C clock_nanosleep               (no C compiler: not measured)")
    for name, value in rows:
        ratio = f"{value / c:.2f}" if c else "-"
        print(f"{name:30s} {value:7.3f} {ratio:>6s}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
