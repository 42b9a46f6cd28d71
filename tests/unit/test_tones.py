"""Call-progress tones: frequencies by FFT, cadence edges by exact sample counts, and
phase/cadence continuity across frames."""

from __future__ import annotations

import numpy as np
import pytest

from audio.pcm import dbfs, dominant_frequency
from audio.tones import (
    TONE_NAMES,
    TONE_PLANS,
    ToneGenerator,
    ToneSpec,
    dtmf_tone,
    get_tone,
    tone_plan,
)


def spectral_peaks(pcm: np.ndarray, rate: int, count: int) -> list[float]:
    """The ``count`` strongest spectral peaks (Hz, >20 Hz apart), parabolically refined."""
    nfft = 4 * len(pcm)
    mag = np.log(np.abs(np.fft.rfft(pcm.astype(float) * np.hanning(len(pcm)), nfft)) + 1e-9)
    hz = rate / nfft
    peaks: list[float] = []
    for k in np.argsort(mag)[::-1]:
        k = int(k)
        if 0 < k < len(mag) - 1 and all(abs(k * hz - p) > 20 for p in peaks):
            a, b, c = mag[k - 1 : k + 2]
            peaks.append((k + 0.5 * (a - c) / (a - 2 * b + c)) * hz)
        if len(peaks) == count:
            break
    return sorted(peaks)


def continuous(spec: ToneSpec) -> ToneSpec:
    return ToneSpec(spec.frequencies, (), spec.level_dbfs)


@pytest.mark.parametrize("country", sorted(TONE_PLANS))
@pytest.mark.parametrize("name", TONE_NAMES)
@pytest.mark.parametrize("rate", [8000, 16000, 48000])
def test_tone_frequencies(country: str, name: str, rate: int) -> None:
    spec = get_tone(country, name)
    pcm = ToneGenerator(continuous(spec), rate).read(rate)
    found = spectral_peaks(pcm, rate, len(spec.frequencies))
    assert found == pytest.approx(sorted(spec.frequencies), abs=2.0)


def test_known_plan_values() -> None:
    assert get_tone("US", "dial").frequencies == (350.0, 440.0)
    assert get_tone("us", "busy").cadence == (0.5, 0.5)
    assert get_tone("UK", "ringback").frequencies == (400.0, 450.0)
    assert get_tone("GB", "ringback").cadence == (0.4, 0.2, 0.4, 2.0)
    assert get_tone("DE", "dial").frequencies == (425.0,)
    assert tone_plan("EU") is tone_plan("DE")


def test_single_tone_by_fft() -> None:
    pcm = ToneGenerator(get_tone("DE", "dial"), 8000).read(8000)
    assert abs(dominant_frequency(pcm, 8000) - 425.0) < 2.0
    assert dbfs(pcm) == pytest.approx(-16.0, abs=0.1)


def test_unknown_country_and_tone() -> None:
    with pytest.raises(KeyError, match="no tone plan for country 'XX'"):
        tone_plan("XX")
    with pytest.raises(KeyError, match="no tone 'howler'"):
        get_tone("US", "howler")


def _gated(spec: ToneSpec, rate: int, on_off_samples: list[int], cycles: int = 2) -> None:
    """Generated tone == continuous tone where on, exactly 0 where off, at these sample counts."""
    total = sum(on_off_samples) * cycles
    out = ToneGenerator(spec, rate).read(total)
    ref = ToneGenerator(continuous(spec), rate).read(total)
    mask = np.concatenate(
        [np.full(n, i % 2 == 0) for _ in range(cycles) for i, n in enumerate(on_off_samples)]
    )
    assert np.array_equal(out[mask], ref[mask])
    assert not out[~mask].any()


def test_cadence_us_busy_at_8k() -> None:
    _gated(get_tone("US", "busy"), 8000, [4000, 4000])


def test_cadence_uk_ringback_double_ring() -> None:
    _gated(get_tone("UK", "ringback"), 8000, [3200, 1600, 3200, 16000])


def test_cadence_uk_congestion_at_16k() -> None:
    _gated(get_tone("UK", "congestion"), 16000, [6400, 5600, 3600, 8400])


def test_cadence_de_ringback_at_48k() -> None:
    _gated(get_tone("DE", "ringback"), 48000, [48000, 192000], cycles=1)


def test_cadence_de_call_waiting_at_44100() -> None:
    _gated(get_tone("DE", "call_waiting"), 44100, [8820, 8820, 8820, 220500])


def test_cadence_rounding_keeps_cycle_exact() -> None:
    # 0.375 s at 8000 Hz = 3000 samples; at 44100 Hz = 16537.5: edges rounded cumulatively
    spec = get_tone("UK", "busy")
    _gated(spec, 44100, [16538, 16537])


@pytest.mark.parametrize("frame", [160, 320, 441, 960, 1234])
def test_frames_continue_phase_and_cadence(frame: int) -> None:
    spec = get_tone("UK", "congestion")
    total = 8000 * 3
    whole = ToneGenerator(spec, 8000).read(total)
    gen = ToneGenerator(spec, 8000)
    framed = np.concatenate([gen.read(min(frame, total - i)) for i in range(0, total, frame)])
    assert len(framed) == total
    assert int(np.max(np.abs(framed.astype(int) - whole.astype(int)))) <= 1


def test_reset_restarts_cadence() -> None:
    gen = ToneGenerator(get_tone("US", "ringback"), 8000)
    first = gen.read(800)
    gen.read(12345)
    gen.reset()
    assert np.array_equal(gen.read(800), first)


def test_spec_validation() -> None:
    with pytest.raises(ValueError, match="on/off pairs"):
        ToneSpec((400.0,), (0.1,))
    with pytest.raises(ValueError, match="frequency"):
        ToneSpec(())


@pytest.mark.parametrize(
    "key,low,high",
    [
        ("1", 697, 1209),
        ("5", 770, 1336),
        ("9", 852, 1477),
        ("*", 941, 1209),
        ("#", 941, 1477),
        ("d", 941, 1633),
    ],
)
def test_inband_dtmf_q23_frequencies_and_timing(key: str, low: int, high: int) -> None:
    spec = dtmf_tone(key, on=0.08, off=0.04)
    pcm = ToneGenerator(spec, 8000).read(960)
    assert spectral_peaks(pcm[:640], 8000, 2) == pytest.approx([low, high], abs=2.0)
    assert not pcm[640:].any()
    assert pcm[600:640].any()


def test_inband_dtmf_rejects_non_keys() -> None:
    with pytest.raises(KeyError, match="not a DTMF key"):
        dtmf_tone("E")
