"""G.711 both ways and a frame's level: a C implementation (audio/_speedups.c) and Python twins.

Why: a call's media tick runs once per 20 ms, and by then the CPU caches have forgotten the
interpreter and numpy, so every Python-level step costs 10-40 us however little it computes
(bench/README.md). The C module does each of these per-frame steps in one small call; the
socket read of the same kind is firmware/runtime/udp.py. It is built when the project is
installed (setup.py); a machine without a C compiler gets the Python twins below, which give
the same results (tests/unit/test_speedups.py runs both). `ACCELERATED` says which one runs
(the phone logs a warning when it is the twins).
"""

from __future__ import annotations

import importlib
import math
import os
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np

PURE_PYTHON = "DESKPHONE_PURE_PYTHON"  # environment variable: run the twins even when built


def optional_c_module(name: str) -> ModuleType | None:
    """C module `name`, or None when it is not built (no compiler when installed) or when
    PURE_PYTHON is set (reference runs, tests): the caller then runs its Python twins."""
    if os.environ.get(PURE_PYTHON):
        return None
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


_c = optional_c_module("audio._speedups")
ACCELERATED = _c is not None

_INT16 = np.dtype(np.int16)


def g711_encode_py(table: bytes, pcm: np.ndarray) -> bytes:
    """G.711 codes of int16 `pcm`: `table` holds the code of every uint16 bit pattern."""
    codes = np.frombuffer(table, dtype=np.uint8)
    return codes.take(np.asarray(pcm, dtype=np.int16).view(np.uint16)).tobytes()


def g711_decode_py(table: bytes, payload: bytes) -> bytearray:
    """int16 PCM (native byte order) of G.711 `payload`: `table` holds 256 int16 samples."""
    samples = np.frombuffer(table, dtype=np.int16)
    return bytearray(samples.take(np.frombuffer(payload, dtype=np.uint8)))  # one copy


def rms_int16_py(pcm: Any) -> float:
    """Root mean square of int16 samples, exact (integer sum of squares); 0.0 when empty."""
    x = np.frombuffer(pcm, dtype=np.int16) if not isinstance(pcm, np.ndarray) else pcm
    if x.size == 0:
        return 0.0
    wide = x.astype(np.int64)
    return math.sqrt(int(np.dot(wide, wide)) / x.size)


g711_encode: Callable[[bytes, np.ndarray], bytes] = g711_encode_py
g711_decode: Callable[[bytes, bytes], bytearray] = g711_decode_py
rms_int16: Callable[[Any], float] = rms_int16_py
if _c is not None:
    g711_encode, g711_decode, rms_int16 = _c.g711_encode, _c.g711_decode, _c.rms_int16
