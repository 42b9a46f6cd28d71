"""Per-frame cost of the codecs and the resampler (20 ms frames), and G.711 vs stdlib audioop.

Run: python bench/codec_costs.py [seconds-per-case]
Prints microseconds per 20 ms frame and the share of one CPU a call direction would use.
audioop (deprecated, gone in 3.13) is timed only where it still imports, as the reference
for the ratio. Not a test: nothing is asserted.
"""

from __future__ import annotations

import logging
import sys
import time
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from audio.codecs import available_codecs  # noqa: E402
from audio.pcm import Resampler, to_int16  # noqa: E402

log = logging.getLogger("bench.codec_costs")


def per_call_us(fn: Callable[[], object], seconds: float) -> float:
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(100):
            fn()
        n += 100
    return elapsed / n * 1e6


def frame(rate: int) -> np.ndarray:
    t = np.arange(rate // 50) / rate
    return to_int16(8000 * np.sin(2 * np.pi * 1000 * t))


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 0.5
    rows: list[tuple[str, float]] = []
    for name, codec in sorted(available_codecs().items()):
        if name == "telephone-event":
            continue
        pcm = frame(codec.sample_rate)
        enc, dec = codec.encoder(), codec.decoder()
        payload = enc.encode(pcm)
        rows.append((f"{name} encode", per_call_us(partial(enc.encode, pcm), seconds)))
        rows.append((f"{name} decode", per_call_us(partial(dec.decode, payload), seconds)))
        n = len(pcm)
        rows.append((f"{name} conceal", per_call_us(partial(dec.conceal, n), seconds)))
    for src, dst in [(8000, 48000), (48000, 8000), (16000, 48000), (44100, 48000)]:
        r, pcm = Resampler(src, dst), frame(src)
        rows.append((f"resample {src}->{dst}", per_call_us(partial(r.process, pcm), seconds)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import audioop
        except ImportError:
            audioop = None  # type: ignore[assignment]
    if audioop is not None:
        raw = frame(8000).tobytes()
        ulaw = audioop.lin2ulaw(raw, 2)
        rows.append(("audioop lin2ulaw", per_call_us(lambda: audioop.lin2ulaw(raw, 2), seconds)))
        rows.append(("audioop ulaw2lin", per_call_us(lambda: audioop.ulaw2lin(ulaw, 2), seconds)))
    width = max(len(label) for label, _ in rows)
    log.info("%-*s  %9s  %8s", width, "per 20 ms frame", "us", "% CPU")
    for label, us in rows:
        log.info("%-*s  %9.1f  %7.3f%%", width, label, us, us / 20000 * 100)
    table = dict(rows)
    if "audioop lin2ulaw" in table:
        log.info(
            "PCMU encode/decode vs audioop: %.2fx / %.2fx",
            table["PCMU encode"] / table["audioop lin2ulaw"],
            table["PCMU decode"] / table["audioop ulaw2lin"],
        )


if __name__ == "__main__":
    main()
