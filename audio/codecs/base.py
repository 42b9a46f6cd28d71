"""The one codec interface (docs/audio-api.md): a codec is a description plus factories.

Encoders and decoders carry per-stream state (ADPCM predictors, PLC history), so each
RTP stream asks its codec for fresh ones; the registered ``Codec`` object itself is
shared and stateless.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Encoder(Protocol):
    def encode(self, pcm: np.ndarray) -> bytes:
        """Encode one frame of int16 PCM at the codec's ``sample_rate``."""
        ...


@runtime_checkable
class Decoder(Protocol):
    def decode(self, payload: bytes) -> np.ndarray:
        """Decode one RTP payload to int16 PCM at the codec's ``sample_rate``."""
        ...

    def conceal(self, samples: int) -> np.ndarray:
        """Synthesize ``samples`` of audio for a lost frame (packet-loss concealment)."""
        ...


@runtime_checkable
class Codec(Protocol):
    name: str
    clock_rate: int
    sample_rate: int
    channels: int
    static_pt: int | None
    fmtp: str | None

    def encoder(self) -> Encoder: ...

    def decoder(self) -> Decoder: ...
