"""G.722 wideband via the PyPI ``g722`` package (C implementation of the ITU-T codec).

RFC 3551 section 4.5.2 keeps the RTP clock at 8000 Hz for historical reasons although
the audio is sampled at 16 kHz, so ``clock_rate`` (RTP timestamps, SDP) and
``sample_rate`` (PCM) differ here: 20 ms is 160 timestamp units but 320 samples.
"""

from __future__ import annotations

import numpy as np

from audio.codecs.plc import PitchPlc

try:
    import G722 as _g722  # the PyPI package "g722" installs the module "G722"
except ImportError:  # pragma: no cover - exercised only where the package is missing
    _g722 = None

BIT_RATE = 64000  # mode 1, the only rate RFC 3551 registers for PT 9


def available() -> bool:
    return _g722 is not None


class G722Encoder:
    def __init__(self) -> None:
        self._state = _g722.G722(16000, BIT_RATE)

    def encode(self, pcm: np.ndarray) -> bytes:
        return bytes(self._state.encode(np.ascontiguousarray(pcm, dtype=np.int16)))


class G722Decoder:
    """ADPCM decode plus the generic pitch PLC at 16 kHz (the ADPCM state simply resumes)."""

    def __init__(self) -> None:
        self._state = _g722.G722(16000, BIT_RATE)
        self._plc = PitchPlc(16000)

    def decode(self, payload: bytes) -> np.ndarray:
        pcm = np.frombuffer(self._state.decode(payload), dtype=np.int16).copy()
        return self._plc.good(pcm)

    def conceal(self, samples: int) -> np.ndarray:
        return self._plc.conceal(samples)


class G722Codec:
    name = "G722"
    clock_rate = 8000
    sample_rate = 16000
    channels = 1
    static_pt: int | None = 9
    fmtp: str | None = None

    def encoder(self) -> G722Encoder:
        return G722Encoder()

    def decoder(self) -> G722Decoder:
        return G722Decoder()


G722 = G722Codec()
