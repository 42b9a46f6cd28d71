"""Codecs: G.711 bit-exact against the ITU-T reference algorithm, G.722 and Opus by SNR and
FFT frequency, PLC behaviour, and the registry contract of docs/audio-api.md."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from audio.codecs import available_codecs, g711, get_codec, opus, register
from audio.pcm import dominant_frequency, rms, snr_db, to_int16
from tests.conftest import in_ci, skip_or_fail

ALL_INT16 = np.arange(-32768, 32768, dtype=np.int64)


# --- ITU-T G.711 reference (the segment algorithms of the G.191 software tools), scalar ---


def ref_ulaw_compress(x: int) -> int:
    absno = ((~x) >> 2) + 33 if x < 0 else (x >> 2) + 33
    absno = min(absno, 0x1FFF)
    i, segno = absno >> 6, 1
    while i:
        segno += 1
        i >>= 1
    high = 0x8 - segno
    low = 0xF - ((absno >> segno) & 0xF)
    code = (high << 4) | low
    return code | 0x80 if x >= 0 else code


def ref_ulaw_expand(b: int) -> int:
    sign = -1 if b < 0x80 else 1
    mant = ~b
    exponent = (mant >> 4) & 0x7
    segment = exponent + 1
    mant &= 0xF
    step = 4 << segment
    return sign * ((0x80 << exponent) + step * mant + step // 2 - 4 * 33)


def ref_alaw_compress(x: int) -> int:
    ix = (~x) >> 4 if x < 0 else x >> 4
    if ix > 15:
        iexp = 1
        while ix > 16 + 15:
            ix >>= 1
            iexp += 1
        ix -= 16
        ix += iexp << 4
    if x >= 0:
        ix |= 0x80
    return ix ^ 0x55


def ref_alaw_expand(b: int) -> int:
    ix = (b ^ 0x55) & 0x7F
    iexp = ix >> 4
    mant = ix & 0xF
    if iexp > 0:
        mant += 16
    mant = (mant << 4) + 0x8
    if iexp > 1:
        mant <<= iexp - 1
    return mant if b > 127 else -mant


def tone(freq: float, rate: int, seconds: float = 1.0, amplitude: float = 10000.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return to_int16(amplitude * np.sin(2 * np.pi * freq * t))


def run_codec(name: str, pcm: np.ndarray, frame_ms: int = 20) -> np.ndarray:
    codec = get_codec(name)
    enc, dec = codec.encoder(), codec.decoder()
    step = codec.sample_rate * frame_ms // 1000
    return np.concatenate(
        [dec.decode(enc.encode(pcm[i : i + step])) for i in range(0, len(pcm), step)]
    )


def aligned_snr(ref: np.ndarray, out: np.ndarray, max_delay: int = 400) -> tuple[int, float]:
    """Best SNR over codec delays 0..max_delay (G.722 and Opus add a few ms of delay)."""
    n = len(ref) - max_delay
    best = max(range(max_delay + 1), key=lambda d: snr_db(ref[:n], out[d : d + n]))
    return best, snr_db(ref[:n], out[best : best + n])


# --- G.711 ---


def test_ulaw_encode_matches_reference_for_every_sample() -> None:
    expected = bytes(ref_ulaw_compress(int(x)) for x in ALL_INT16)
    assert g711.ulaw_encode(ALL_INT16.astype(np.int16)) == expected


def test_alaw_encode_matches_reference_for_every_sample() -> None:
    expected = bytes(ref_alaw_compress(int(x)) for x in ALL_INT16)
    assert g711.alaw_encode(ALL_INT16.astype(np.int16)) == expected


def test_decode_tables_match_reference() -> None:
    codes = bytes(range(256))
    assert g711.ulaw_decode(codes).tolist() == [ref_ulaw_expand(b) for b in codes]
    assert g711.alaw_decode(codes).tolist() == [ref_alaw_expand(b) for b in codes]


def test_known_code_points() -> None:
    assert g711.ulaw_encode(np.array([0, -1, 32767, -32768], np.int16)) == b"\xff\x7f\x80\x00"
    assert g711.alaw_encode(np.array([0, -1, 32767, -32768], np.int16)) == b"\xd5\x55\xaa\x2a"
    assert g711.ulaw_decode(b"\x00\x80\xff\x7f").tolist() == [-32124, 32124, 0, 0]
    assert g711.alaw_decode(b"\x2a\xaa\xd5\x55").tolist() == [-32256, 32256, 8, -8]


def _audioop():
    """The stdlib G.711 as an oracle: removed in Python 3.13, so only there may it be missing."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import audioop
        except ImportError:
            if sys.version_info < (3, 13):
                skip_or_fail("audioop (the stdlib oracle) is missing on Python < 3.13")
            pytest.skip("audioop was removed in Python 3.13: no oracle to compare with")
        return audioop


def test_alaw_and_decoders_bit_exact_with_audioop() -> None:
    audioop = _audioop()
    raw = ALL_INT16.astype(np.int16).tobytes()
    assert g711.alaw_encode(ALL_INT16.astype(np.int16)) == audioop.lin2alaw(raw, 2)
    codes = bytes(range(256))
    assert g711.ulaw_decode(codes).tobytes() == audioop.ulaw2lin(codes, 2)
    assert g711.alaw_decode(codes).tobytes() == audioop.alaw2lin(codes, 2)


def test_ulaw_encode_vs_audioop_differs_only_at_negative_decision_thresholds() -> None:
    """audioop negates negative samples (two's complement), the ITU reference takes the one's
    complement: they disagree exactly at the 4 lowest values of each negative threshold
    (127 thresholds), by one quantisation step. Everything else is identical."""
    audioop = _audioop()
    pcm = ALL_INT16.astype(np.int16)
    ours = np.frombuffer(g711.ulaw_encode(pcm), np.uint8).astype(int)
    theirs = np.frombuffer(audioop.lin2ulaw(pcm.tobytes(), 2), np.uint8).astype(int)
    differ = ours != theirs
    assert int(differ.sum()) == 127 * 4
    assert (ALL_INT16[differ] < 0).all()
    assert (np.abs(ours[differ] - theirs[differ]) == 1).all()


@pytest.mark.parametrize("name,min_snr", [("PCMU", 35.0), ("PCMA", 35.0)])
def test_g711_tone_round_trip(name: str, min_snr: float) -> None:
    x = tone(1000, 8000)
    out = run_codec(name, x)
    assert len(out) == len(x)
    assert snr_db(x, out) > min_snr
    assert abs(dominant_frequency(out, 8000) - 1000) < 2


def test_g711_payload_is_one_byte_per_sample() -> None:
    enc = get_codec("PCMA").encoder()
    assert len(enc.encode(np.zeros(160, np.int16))) == 160
    assert enc.encode(np.zeros(160, np.int16)) == b"\xd5" * 160


# --- PLC ---


def test_plc_continues_pitch_then_fades_to_silence() -> None:
    dec = get_codec("PCMU").decoder()
    enc = get_codec("PCMU").encoder()
    x = tone(250, 8000, 0.2)
    for i in range(0, len(x), 160):
        dec.decode(enc.encode(x[i : i + 160]))
    first = dec.conceal(160)
    assert abs(dominant_frequency(first, 8000) - 250) < 5
    assert rms(first) > 0.8 * rms(x)
    # the concealment continues the waveform: no jump at the frame join
    assert abs(int(first[0]) - int(x[-1])) < 0.2 * 10000 + 1000
    later = [dec.conceal(160) for _ in range(3)]  # 20..80 ms into the loss
    assert rms(later[0]) < rms(first)
    assert rms(later[-1]) == 0.0


def test_plc_recovery_crossfades_first_good_frame() -> None:
    codec = get_codec("PCMU")
    enc, dec = codec.encoder(), codec.decoder()
    x = tone(400, 8000, 0.2)
    for i in range(0, 800, 160):
        dec.decode(enc.encode(x[i : i + 160]))
    dec.conceal(160)
    good = x[960:1120]
    out = dec.decode(enc.encode(good))
    plain = g711.ulaw_decode(enc.encode(good))
    assert len(out) == 160
    assert not np.array_equal(out[:32], plain[:32])  # blended
    assert np.array_equal(out[32:], plain[32:])  # untouched after the 4 ms fade


def test_plc_on_silence_is_silence() -> None:
    dec = get_codec("PCMA").decoder()
    assert dec.conceal(160).tolist() == [0] * 160


# --- G.722 ---


def test_g722_descriptor() -> None:
    c = get_codec("g722")
    assert (c.name, c.clock_rate, c.sample_rate, c.static_pt, c.channels) == (
        "G722",
        8000,
        16000,
        9,
        1,
    )


def test_g722_tone_round_trip() -> None:
    x = tone(1000, 16000)
    enc = get_codec("G722").encoder()
    payload = enc.encode(x[:320])
    assert len(payload) == 160  # 64 kbit/s: 20 ms = 160 bytes = 160 RTP clock ticks
    out = run_codec("G722", x)
    assert len(out) == len(x)
    delay, snr = aligned_snr(x, out, max_delay=64)
    assert delay < 64
    assert snr > 30.0
    assert abs(dominant_frequency(out[1600:], 16000) - 1000) < 2


def test_g722_keeps_wideband_content() -> None:
    x = tone(6000, 16000, amplitude=8000)
    out = run_codec("G722", x)
    assert abs(dominant_frequency(out[1600:], 16000) - 6000) < 2
    assert rms(out[1600:]) > 0.7 * rms(x)


def test_g722_conceal_length() -> None:
    dec = get_codec("G722").decoder()
    dec.decode(get_codec("G722").encoder().encode(tone(300, 16000, 0.02)))
    assert len(dec.conceal(320)) == 320


# --- Opus ---

needs_opus = pytest.mark.skipif(not opus.available() and not in_ci(), reason="libopus not loadable")


@needs_opus
def test_opus_descriptor_and_round_trip() -> None:
    c = get_codec("OPUS")
    assert (c.name, c.clock_rate, c.sample_rate, c.channels, c.static_pt) == (
        "opus",
        48000,
        48000,
        2,
        None,
    )
    assert c.fmtp == "useinbandfec=1"
    assert opus.OPUS.encoder().inband_fec
    x = tone(1000, 48000)
    out = run_codec("opus", x)
    assert len(out) == len(x)
    assert abs(dominant_frequency(out[4800:], 48000) - 1000) < 2
    assert rms(out[4800:]) > 0.7 * rms(x)


@needs_opus
def test_opus_plc_and_fec() -> None:
    enc, dec = opus.OPUS.encoder(), opus.OPUS.decoder()  # concrete: recover() is Opus-only
    x = tone(440, 48000, 0.5)
    packets = [enc.encode(x[i : i + 960]) for i in range(0, len(x), 960)]
    for p in packets[:10]:
        dec.decode(p)
    concealed = dec.conceal(960)
    assert len(concealed) == 960 and rms(concealed) > 0
    assert len(dec.conceal(100)) == 100
    recovered = dec.recover(packets[12], 960)
    assert len(recovered) == 960
    with pytest.raises(ValueError, match="opus frames must be"):
        enc.encode(x[:800])


def test_opus_absent_means_not_registered() -> None:
    code = (
        "import sys; sys.modules['opuslib'] = None\n"
        "from audio.codecs import available_codecs\n"
        "print(sorted(available_codecs()))\n"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root
    )
    assert out.stdout.strip() == "['G722', 'PCMA', 'PCMU', 'telephone-event']"


# --- registry ---


def test_registry_contents_and_lookup() -> None:
    codecs = available_codecs()
    assert {"PCMU", "PCMA", "G722", "telephone-event"} <= set(codecs)
    assert ("opus" in codecs) == opus.available()
    assert get_codec("pcmu") is codecs["PCMU"]
    assert get_codec("Telephone-Event").fmtp == "0-16"
    for codec in codecs.values():
        assert codec.name and codec.clock_rate and codec.sample_rate


def test_unknown_codec_names_itself() -> None:
    with pytest.raises(KeyError, match="'GSM' is not available"):
        get_codec("GSM")


def test_telephone_event_has_no_audio_path() -> None:
    with pytest.raises(TypeError, match="audio.dtmf"):
        get_codec("telephone-event").encoder()


def test_register_adds_a_codec() -> None:
    class Null:
        name = "X-NULL"
        clock_rate = sample_rate = 8000
        channels = 1
        static_pt: int | None = None
        fmtp: str | None = None

        def encoder(self):  # pragma: no cover - not called
            raise NotImplementedError

        def decoder(self):  # pragma: no cover - not called
            raise NotImplementedError

    from audio import codecs as registry

    register(Null())
    try:
        assert get_codec("x-null").name == "X-NULL"
    finally:
        del registry._REGISTRY["x-null"]
    assert "X-NULL" not in available_codecs()
