"""PCM helpers: streaming resampler (frame-independent, exact lengths, SNR, anti-aliasing),
levels and the FFT frequency finder the acceptance tests rely on."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from audio.pcm import (
    Resampler,
    dbfs,
    dominant_frequency,
    peak,
    resample,
    rms,
    silence,
    snr_db,
    to_int16,
)

RATE_PAIRS = [
    (8000, 16000),
    (16000, 8000),
    (8000, 48000),
    (48000, 8000),
    (16000, 48000),
    (48000, 16000),
    (44100, 48000),
    (48000, 44100),
    (44100, 8000),
    (16000, 44100),
]


def sine(freq: float, rate: int, n: int, amplitude: float = 10000.0) -> np.ndarray:
    return to_int16(amplitude * np.sin(2 * np.pi * freq * np.arange(n) / rate))


def test_silence_and_levels() -> None:
    assert silence(160).dtype == np.int16 and not silence(160).any()
    assert len(silence(0)) == 0
    with pytest.raises(ValueError):
        silence(-1)
    full = sine(1000, 8000, 8000, 32767)
    assert dbfs(full) == pytest.approx(0.0, abs=0.01)
    assert dbfs(sine(1000, 8000, 8000, 32767 / 10)) == pytest.approx(-20.0, abs=0.01)
    assert dbfs(silence(10)) == float("-inf")
    assert rms(np.array([3, -3, 3, -3], np.int16)) == 3.0
    assert peak(np.array([5, -32768, 7], np.int16)) == 32768
    assert to_int16(np.array([40000.0, -40000.0, 1.5])).tolist() == [32767, -32768, 2]


def test_snr() -> None:
    x = sine(1000, 8000, 800)
    assert snr_db(x, x) == float("inf")
    noisy = x.copy()
    noisy[::2] += 10
    assert 55 < snr_db(x, noisy) < 65
    with pytest.raises(ValueError):
        snr_db(x, x[:-1])


@pytest.mark.parametrize("freq", [350.0, 425.0, 440.0, 1000.0, 1234.5, 3400.0])
@pytest.mark.parametrize("rate", [8000, 16000, 44100, 48000])
def test_dominant_frequency_within_half_hz(freq: float, rate: int) -> None:
    x = sine(freq, rate, rate // 2)
    assert abs(dominant_frequency(x, rate) - freq) < 0.5


def test_dominant_frequency_ignores_dc() -> None:
    x = sine(600, 8000, 4000, 3000) + 20000
    assert abs(dominant_frequency(x.astype(np.int16), 8000) - 600) < 0.5


@pytest.mark.parametrize("src,dst", RATE_PAIRS)
def test_stream_output_independent_of_framing(src: int, dst: int) -> None:
    x = sine(700, src, src // 2)
    a, b = Resampler(src, dst), Resampler(src, dst)
    frame = src // 50
    out_frames = [a.process(x[i : i + frame]) for i in range(0, len(x), frame)]
    out_odd = np.concatenate([b.process(x[i : i + 37]) for i in range(0, len(x), 37)])
    whole = np.concatenate(out_frames)
    assert np.array_equal(whole, out_odd[: len(whole)])
    # 20 ms in always gives exactly 20 ms out: no drift over a stream
    assert {len(f) for f in out_frames} == {dst // 50}
    assert len(whole) == len(x) * dst // src


@pytest.mark.parametrize("src,dst", RATE_PAIRS)
def test_resample_tone_snr_and_frequency(src: int, dst: int) -> None:
    x = sine(1000, src, src)
    y = resample(x, src, dst)
    assert len(y) == dst
    ref = sine(1000, dst, dst)
    assert snr_db(ref[300:-300], y[300:-300]) > 60.0
    assert abs(dominant_frequency(y, dst) - 1000) < 0.5


@pytest.mark.parametrize("src,dst", [(16000, 8000), (48000, 8000), (48000, 16000), (48000, 44100)])
def test_downsampling_rejects_aliases(src: int, dst: int) -> None:
    # a tone above the new Nyquist must not fold back into the band
    x = sine(dst / 2 + 1000, src, src)
    y = resample(x, src, dst)
    assert dbfs(y[300:-300]) < dbfs(x) - 40


@pytest.mark.parametrize("src,dst", [(8000, 48000), (16000, 48000), (48000, 8000), (48000, 16000)])
def test_integer_ratio_fast_path_equals_general_polyphase(src: int, dst: int) -> None:
    rng = np.random.default_rng(7)
    x = rng.integers(-20000, 20000, src // 2).astype(np.int16)
    fast, general = Resampler(src, dst), Resampler(src, dst)
    general.fast = False
    sizes = [1, 7, 160, 0, 333, 960, 5]
    a, b, i = [], [], 0
    for k in range(40):
        chunk = x[i : i + sizes[k % len(sizes)]]
        i += len(chunk)
        a.append(fast.process(chunk))
        b.append(general.process(chunk))
    fa, gb = np.concatenate(a), np.concatenate(b)
    assert (
        len(fa) == len(gb) == -(-i * dst // src)
    )  # output k exists once input k*src/dst has arrived
    assert int(np.max(np.abs(fa.astype(int) - gb.astype(int)))) <= 1


def test_same_rate_is_identity() -> None:
    x = sine(1000, 8000, 160)
    assert np.array_equal(Resampler(8000, 8000).process(x), x)
    assert np.array_equal(resample(x, 16000, 16000), x)


def test_rejects_bad_rates() -> None:
    with pytest.raises(ValueError, match="positive"):
        Resampler(0, 8000)


ROOT = Path(__file__).resolve().parents[2]
AUDIO_MODULES = [
    "audio/pcm.py",
    "audio/dtmf.py",
    "audio/tones.py",
    *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "audio/codecs").glob("*.py")),
]
FORBIDDEN = {"asyncio", "socket", "threading", "time", "random", "selectors", "subprocess"}


@pytest.mark.parametrize("rel", AUDIO_MODULES)
def test_codec_modules_are_sans_io(rel: str) -> None:
    tree = ast.parse((ROOT / rel).read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    assert not names & FORBIDDEN
