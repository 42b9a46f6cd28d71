"""audio/mixer.py: mix-minus sums, clipping protection, mixed rates, FIFO pacing."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from audio.graph import ToneSource
from audio.mixer import KNEE, Mixer, mix_minus, soft_limit
from audio.pcm import INT16_MAX, dominant_frequency, rms


def frame(values: list[int]) -> np.ndarray:
    return np.array(values, dtype=np.int16)


def spectrum_peaks(pcm: np.ndarray, rate: int, freqs: list[float]) -> dict[float, float]:
    """Magnitude at each frequency relative to the strongest bin (1.0 = the peak)."""
    x = pcm.astype(np.float64) * np.hanning(len(pcm))
    mag = np.abs(np.fft.rfft(x))
    bins = np.fft.rfftfreq(len(pcm), 1.0 / rate)
    top = float(mag.max())
    return {f: float(mag[np.abs(bins - f) < 15].max()) / top for f in freqs}


# ----- soft limiter ------------------------------------------------------------------------


def test_soft_limit_is_exact_below_the_knee() -> None:
    acc = np.array([0, 1, -1, 1000, -20000, KNEE, -KNEE], dtype=np.int32)
    assert soft_limit(acc).tolist() == acc.tolist()


def test_soft_limit_never_exceeds_full_scale_and_keeps_order() -> None:
    acc = np.array([KNEE + 1, 30000, 40000, 65534, 200000, -40000, -200000], dtype=np.int32)
    out = soft_limit(acc).astype(np.int32)
    assert out.max() <= INT16_MAX and out.min() >= -INT16_MAX
    assert out[0] == KNEE + 1  # slope 1 at the knee: no corner
    assert list(out[:5]) == sorted(out[:5]) and len(set(out[:5].tolist())) == 5  # monotonic
    assert out[5] == -out[2] and out[6] == -out[4]  # symmetric


@given(st.lists(st.integers(-3 * 32768, 3 * 32767), min_size=1, max_size=64))
def test_soft_limit_bounds_and_sign(values: list[int]) -> None:
    acc = np.array(values, dtype=np.int32)
    out = soft_limit(acc).astype(np.int32)
    assert np.all(np.abs(out) <= INT16_MAX)
    assert np.all(np.sign(out) == np.sign(acc))
    assert np.all(np.abs(out) <= np.abs(acc))


# ----- synchronous mix-minus ---------------------------------------------------------------


@pytest.mark.parametrize("n_legs", [2, 3, 4])
def test_mix_minus_each_leg_hears_exactly_the_sum_of_the_others(n_legs: int) -> None:
    frames = {f"l{i}": frame([(i + 1) * 100, -(i + 1) * 7, i]) for i in range(n_legs)}
    out = mix_minus(frames)
    for name in frames:
        expected = sum(f.astype(np.int32) for k, f in frames.items() if k != name)
        assert out[name].tolist() == list(expected)


def test_mix_minus_never_contains_the_leg_itself() -> None:
    out = mix_minus({"a": frame([5000] * 4), "b": frame([0] * 4), "c": frame([0] * 4)})
    assert out["a"].tolist() == [0, 0, 0, 0]
    assert out["b"].tolist() == out["c"].tolist() == [5000] * 4


def test_mix_minus_limits_a_loud_sum_instead_of_wrapping() -> None:
    loud = frame([30000, -30000])
    out = mix_minus({"a": loud, "b": loud, "c": loud, "d": frame([0, 0])})
    # d hears 90000 / -90000: a wrap-around would flip the sign; saturation keeps it
    assert out["d"][0] > KNEE and out["d"][1] < -KNEE
    assert abs(int(out["d"][0])) <= INT16_MAX


def test_mix_minus_rejects_unequal_frames() -> None:
    with pytest.raises(ValueError, match="equal frame lengths"):
        mix_minus({"a": frame([1, 2]), "b": frame([1])})


# ----- the streaming mixer -----------------------------------------------------------------


@pytest.mark.parametrize("n_legs", [2, 3, 4])
def test_streaming_mixer_exact_sums_at_one_rate(n_legs: int) -> None:
    m = Mixer(16000, prime=0.0)
    names = [f"l{i}" for i in range(n_legs)]
    for name in names:
        m.add_leg(name, 16000)
    rng = np.random.default_rng(n_legs)
    for _ in range(5):
        said = {n: rng.integers(-3000, 3000, 320).astype(np.int16) for n in names}
        for n in names:
            m.push(n, said[n])
        for n in names:
            heard = m.pull(n, 320)
            expected = sum(said[k].astype(np.int32) for k in names if k != n)
            assert heard.tolist() == list(expected)


def test_a_leg_does_not_hear_itself_in_the_stream() -> None:
    m = Mixer(16000, prime=0.0)
    m.add_leg("a", 16000)
    m.add_leg("b", 16000)
    m.push("a", frame([1234] * 320))
    assert not m.pull("a", 320).any()
    assert m.pull("b", 320).tolist() == [1234] * 320


def test_muted_leg_is_not_heard_and_unmuted_is() -> None:
    m = Mixer(16000, prime=0.0)
    for n in ("local", "c1", "c2"):
        m.add_leg(n, 16000)
    m.set_heard("local", False)
    m.push("local", frame([999] * 320))
    m.push("c1", frame([10] * 320))
    assert m.pull("c2", 320).tolist() == [10] * 320
    m.set_heard("local", True)
    m.push("local", frame([999] * 320))
    assert m.pull("c2", 320).tolist() == [999] * 320


def test_prime_holds_back_one_frame_then_plays_in_order() -> None:
    m = Mixer(8000, prime=0.02)  # 160 samples of slack
    m.add_leg("a", 8000)
    m.add_leg("b", 8000)
    m.push("a", frame([1] * 160))
    assert not m.pull("b", 160).any()  # not primed: 160 < 160 + 160
    m.push("a", frame([2] * 160))
    assert m.pull("b", 160).tolist() == [1] * 160
    m.push("a", frame([3] * 160))
    assert m.pull("b", 160).tolist() == [2] * 160
    assert m.queued("b", "a") == 160  # latency stays one frame


def test_fifo_is_capped_when_a_listener_stops_pulling() -> None:
    m = Mixer(8000, prime=0.0, max_delay=0.04)  # 320 samples
    m.add_leg("a", 8000)
    m.add_leg("b", 8000)
    for i in range(10):
        m.push("a", frame([i] * 160))
    assert m.queued("b", "a") == 320
    assert m.pull("b", 160).tolist() == [8] * 160  # the newest audio, not 1.2 s old


def test_legs_at_different_rates_hear_each_others_tones() -> None:
    """PCMU (8 kHz), G.722 (16 kHz) and a 48 kHz sound card: each hears both others."""
    m = Mixer(16000)
    legs = {"pcmu": (8000, 440.0), "g722": (16000, 1000.0), "local": (48000, 2500.0)}
    sources = {n: ToneSource(hz, rate, -12.0) for n, (rate, hz) in legs.items()}
    heard: dict[str, list[np.ndarray]] = {n: [] for n in legs}
    for n, (rate, _) in legs.items():
        m.add_leg(n, rate)
    for _ in range(100):  # 2 s of 20 ms ticks
        for n, (rate, _) in legs.items():
            m.push(n, sources[n].read(rate // 50))
        for n, (rate, _) in legs.items():
            out = m.pull(n, rate // 50)
            assert len(out) == rate // 50
            heard[n].append(out)
    for n, (rate, own) in legs.items():
        pcm = np.concatenate(heard[n])[rate // 2 :]  # skip the priming and filter start
        others = [hz for k, (_, hz) in legs.items() if k != n]
        peaks = spectrum_peaks(pcm, rate, [*others, own])
        for hz in others:
            assert peaks[hz] > 0.5, f"{n} does not hear {hz} Hz: {peaks}"
        assert peaks[own] < 0.01, f"{n} hears itself: {peaks}"


def test_rates_do_not_drift_over_many_frames() -> None:
    m = Mixer(16000)
    m.add_leg("a", 8000)
    m.add_leg("b", 48000)
    src = ToneSource(700.0, 8000, -6.0)
    out = []
    for _ in range(500):  # 10 s
        m.push("a", src.read(160))
        m.push("b", np.zeros(960, dtype=np.int16))
        out.append(m.pull("b", 960))
        m.pull("a", 160)
    pcm = np.concatenate(out)
    assert len(pcm) == 480000
    assert abs(dominant_frequency(pcm[48000:], 48000) - 700.0) < 1.0
    assert m.queued("b", "a") <= m.prime + 320  # bounded, no creeping latency
    assert rms(pcm[-960:]) > 1000


def test_unknown_and_duplicate_legs_are_clear_errors() -> None:
    m = Mixer()
    m.add_leg("a", 8000)
    with pytest.raises(ValueError, match="already"):
        m.add_leg("a", 8000)
    with pytest.raises(KeyError, match="no leg 'zz'"):
        m.pull("zz", 10)
    m.remove_leg("a")
    m.remove_leg("a")  # idempotent
    assert m.legs == []
