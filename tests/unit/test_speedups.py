"""audio.speedups: the C module and its Python twins give the same results.

Every case runs against both implementations (the C one only where it was built, which CI
requires), so the Python twin stays a working fallback and a reference for the C code.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from audio import speedups
from audio.codecs import g711
from tests.conftest import skip_or_fail

PYTHON = SimpleNamespace(
    name="python",
    g711_encode=speedups.g711_encode_py,
    g711_decode=speedups.g711_decode_py,
    rms_int16=speedups.rms_int16_py,
)


def _c_impl() -> SimpleNamespace | None:
    if speedups._c is None:
        return None
    c = speedups._c
    return SimpleNamespace(
        name="c",
        g711_encode=c.g711_encode,
        g711_decode=c.g711_decode,
        rms_int16=c.rms_int16,
    )


@pytest.fixture(params=["python", "c"])
def impl(request: pytest.FixtureRequest) -> SimpleNamespace:
    if request.param == "python":
        return PYTHON
    c = _c_impl()
    if c is None:
        skip_or_fail("audio._speedups is not built (needs gcc and python3-dev)")
    assert c is not None
    return c


def test_the_c_module_is_what_runs_when_built() -> None:
    if speedups._c is None:
        skip_or_fail("audio._speedups is not built (needs gcc and python3-dev)")
    assert speedups.ACCELERATED
    assert speedups.g711_encode is speedups._c.g711_encode


ALL_INT16 = np.arange(-32768, 32768, dtype=np.int32).astype(np.int16)


@pytest.mark.parametrize("law", ["ulaw", "alaw"])
def test_g711_encode_matches_the_reference_tables_for_every_sample(
    impl: SimpleNamespace, law: str
) -> None:
    table = {"ulaw": g711.ULAW_ENCODE, "alaw": g711.ALAW_ENCODE}[law]
    got = impl.g711_encode(table.tobytes(), ALL_INT16)
    assert got == table[ALL_INT16.view(np.uint16)].tobytes()
    # the ITU-T anchor values: silence, and the extremes
    codes = impl.g711_encode(table.tobytes(), np.array([0, 32767, -32768], dtype=np.int16))
    expected = {"ulaw": b"\xff\x80\x00", "alaw": b"\xd5\xaa\x2a"}[law]
    assert codes == expected


@pytest.mark.parametrize("law", ["ulaw", "alaw"])
def test_g711_decode_matches_the_reference_tables_for_every_code(
    impl: SimpleNamespace, law: str
) -> None:
    table = {"ulaw": g711.ULAW_DECODE, "alaw": g711.ALAW_DECODE}[law]
    codes = bytes(range(256))
    out = impl.g711_decode(table.astype(np.int16).tobytes(), codes)
    assert isinstance(out, bytearray)  # so np.frombuffer gives a writable frame
    pcm = np.frombuffer(out, dtype=np.int16)
    assert pcm.flags.writeable
    assert np.array_equal(pcm, table)


def test_the_c_module_checks_table_sizes_and_sample_width() -> None:
    """The checks that guard the C code's memory accesses (the twins take numpy's word)."""
    c = _c_impl()
    if c is None:
        skip_or_fail("audio._speedups is not built (needs gcc and python3-dev)")
    assert c is not None
    with pytest.raises(ValueError, match="65536"):
        c.g711_encode(b"\x00" * 10, np.zeros(4, dtype=np.int16))
    with pytest.raises(ValueError, match="int16"):
        c.g711_encode(g711.ULAW_ENCODE.tobytes(), b"\x00\x00\x00")
    with pytest.raises(ValueError, match="512"):
        c.g711_decode(b"\x00" * 10, b"\x00")
    with pytest.raises(ValueError, match="odd"):
        c.rms_int16(b"\x00\x00\x00")


def test_the_codec_round_trip_is_unchanged_by_the_fast_path() -> None:
    rng = np.random.default_rng(7)
    pcm = rng.integers(-32768, 32768, 160).astype(np.int16)
    for codec, enc, dec in (
        (g711.PCMU, g711.ULAW_ENCODE, g711.ULAW_DECODE),
        (g711.PCMA, g711.ALAW_ENCODE, g711.ALAW_DECODE),
    ):
        payload = codec.encoder().encode(pcm)
        assert payload == enc[pcm.view(np.uint16)].tobytes()
        assert payload == codec.encoder().encode(pcm.astype(np.float64))  # converted first
        assert payload[::2] == codec.encoder().encode(pcm[::2])  # a strided view
        decoded = codec.decoder().decode(payload)
        assert decoded.dtype == np.int16 and np.array_equal(
            decoded, dec[np.frombuffer(payload, np.uint8)]
        )


@pytest.mark.parametrize(
    "frame",
    [
        np.zeros(0, dtype=np.int16),
        np.zeros(160, dtype=np.int16),
        np.full(160, -32768, dtype=np.int16),
        np.full(320, 32767, dtype=np.int16),
        np.random.default_rng(1).integers(-32768, 32768, 160).astype(np.int16),
    ],
    ids=["empty", "silence", "min", "max", "noise"],
)
def test_rms_is_exact(impl: SimpleNamespace, frame: np.ndarray) -> None:
    reference = math.sqrt(sum(int(x) * int(x) for x in frame) / len(frame)) if len(frame) else 0.0
    assert impl.rms_int16(frame) == reference


def test_pcm_rms_takes_any_frame() -> None:
    from audio.pcm import rms

    x = (np.arange(320) * 37 % 2000 - 1000).astype(np.int16)
    assert rms(x[::2]) == pytest.approx(math.sqrt(np.mean(x[::2].astype(float) ** 2)))
    assert rms(x.astype(np.float64)) == pytest.approx(rms(x))


def test_the_pure_python_switch_runs_the_twins_even_when_built() -> None:
    code = (
        "from audio import speedups; from firmware.runtime import udp; "
        "print(speedups.ACCELERATED, udp.ACCELERATED, speedups.g711_encode is "
        "speedups.g711_encode_py, udp.recv_datagrams is udp.recv_datagrams_py)"
    )
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=str(root), **{speedups.PURE_PYTHON: "1"})
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=root, capture_output=True, text=True, timeout=60
    )
    assert out.stdout.split() == ["False", "False", "True", "True"], out.stderr
