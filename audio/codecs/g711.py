"""G.711 mu-law (PCMU) and A-law (PCMA) without the stdlib ``audioop`` (gone in 3.13).

The ITU-T G.711 segment algorithms (as in the G.191 reference code) are evaluated once,
vectorised, over all 65536 int16 values; encoding is then a single table lookup by the
sample's uint16 bit pattern and decoding a lookup in a 256-entry table. That is both
bit-exact and faster than any per-sample code.
"""

from __future__ import annotations

import numpy as np

from audio.codecs.plc import PitchPlc
from audio.speedups import g711_decode, g711_encode


def _bit_length(v: np.ndarray, bits: int) -> np.ndarray:
    """Vectorised int.bit_length for 0 <= v < 2**bits."""
    out = np.zeros_like(v)
    for i in range(bits):
        out += (v >= (1 << i)).astype(v.dtype)
    return out


def _all_int16() -> np.ndarray:
    """Every int16 value, ordered by its uint16 bit pattern (the encode table index)."""
    return np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.int16).astype(np.int32)


def _ulaw_encode_table() -> np.ndarray:
    x = _all_int16()
    absno = np.where(x < 0, (~x) >> 2, x >> 2) + 33
    absno = np.minimum(absno, 0x1FFF)
    segno = 1 + _bit_length(absno >> 6, 8)
    high = 0x8 - segno
    low = 0xF - ((absno >> segno) & 0xF)
    code = (high << 4) | low
    code = np.where(x >= 0, code | 0x80, code)
    return code.astype(np.uint8)


def _ulaw_decode_table() -> np.ndarray:
    b = np.arange(256, dtype=np.int32)
    sign = np.where(b < 0x80, -1, 1)
    mant = ~b
    exponent = (mant >> 4) & 0x7
    step = 4 << (exponent + 1)
    mant &= 0xF
    return (sign * ((0x80 << exponent) + step * mant + step // 2 - 4 * 33)).astype(np.int16)


def _alaw_encode_table() -> np.ndarray:
    x = _all_int16()
    ix = np.where(x < 0, (~x) >> 4, x >> 4)
    iexp = np.maximum(_bit_length(ix, 12) - 4, 1)
    seg = np.where(ix > 15, (ix >> (iexp - 1)) - 16 + (iexp << 4), ix)
    seg = np.where(x >= 0, seg | 0x80, seg)
    return (seg ^ 0x55).astype(np.uint8)


def _alaw_decode_table() -> np.ndarray:
    b = np.arange(256, dtype=np.int32)
    ix = (b ^ 0x55) & 0x7F
    iexp = ix >> 4
    mant = ix & 0xF
    mant = np.where(iexp > 0, mant + 16, mant)
    mant = (mant << 4) + 0x8
    mant = np.where(iexp > 1, mant << np.maximum(iexp - 1, 0), mant)
    return np.where(b > 127, mant, -mant).astype(np.int16)


_INT16 = np.dtype(np.int16)
ULAW_ENCODE = _ulaw_encode_table()
ULAW_DECODE = _ulaw_decode_table()
ALAW_ENCODE = _alaw_encode_table()
ALAW_DECODE = _alaw_decode_table()


def ulaw_encode(pcm: np.ndarray) -> bytes:
    return ULAW_ENCODE[np.asarray(pcm, dtype=np.int16).view(np.uint16)].tobytes()


def ulaw_decode(payload: bytes) -> np.ndarray:
    return ULAW_DECODE[np.frombuffer(payload, dtype=np.uint8)]


def alaw_encode(pcm: np.ndarray) -> bytes:
    return ALAW_ENCODE[np.asarray(pcm, dtype=np.int16).view(np.uint16)].tobytes()


def alaw_decode(payload: bytes) -> np.ndarray:
    return ALAW_DECODE[np.frombuffer(payload, dtype=np.uint8)]


class G711Encoder:
    def __init__(self, table: np.ndarray) -> None:
        self._table = table.tobytes()  # what audio.speedups takes: no numpy call per packet

    def encode(self, pcm: np.ndarray) -> bytes:
        # the dtype test spares the usual int16 frame an asarray call
        if pcm.dtype != _INT16:
            pcm = np.ascontiguousarray(pcm, dtype=np.int16)
        try:
            return g711_encode(self._table, pcm)
        except ValueError:  # a strided view is no contiguous buffer
            return g711_encode(self._table, np.ascontiguousarray(pcm))


class G711Decoder:
    """Stateless table decode plus pitch-repetition PLC (G.711 Appendix I style)."""

    def __init__(self, table: np.ndarray) -> None:
        self._table = table.astype(_INT16).tobytes()  # native int16, as audio.speedups takes
        self._plc = PitchPlc(8000)

    def decode(self, payload: bytes) -> np.ndarray:
        # a bytearray: the frame is a writable array like any other decoder's
        return self._plc.good(np.frombuffer(g711_decode(self._table, payload), dtype=_INT16))

    def conceal(self, samples: int) -> np.ndarray:
        return self._plc.conceal(samples)


class G711:
    """PCMU (static PT 0) or PCMA (static PT 8), RFC 3551 section 4.5.14."""

    clock_rate = 8000
    sample_rate = 8000
    channels = 1
    fmtp: str | None = None

    def __init__(self, name: str, static_pt: int, encode: np.ndarray, decode: np.ndarray):
        self.name = name
        self.static_pt: int | None = static_pt
        self._encode = encode
        self._decode = decode

    def encoder(self) -> G711Encoder:
        return G711Encoder(self._encode)

    def decoder(self) -> G711Decoder:
        return G711Decoder(self._decode)


PCMU = G711("PCMU", 0, ULAW_ENCODE, ULAW_DECODE)
PCMA = G711("PCMA", 8, ALAW_ENCODE, ALAW_DECODE)
