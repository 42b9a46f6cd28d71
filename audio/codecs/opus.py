"""Opus via opuslib, registered only when libopus can be loaded.

RFC 7587: the RTP clock is always 48000 and SDP always says ``opus/48000/2`` whatever is
actually sent; we encode and decode mono at 48 kHz. Loss concealment uses the decoder's
own PLC (decode with no data), and ``recover`` uses in-band FEC from the next packet.
"""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)

try:
    import opuslib as _opuslib
    import opuslib.api.ctl as _opus_ctl
    import opuslib.api.decoder as _opus_decoder
    import opuslib.api.encoder as _opus_encoder
except Exception as exc:  # opuslib raises a plain Exception when libopus is missing
    log.info("opus unavailable: %s", exc)
    _opuslib = None
    _opus_decoder = None
    _opus_ctl = None
    _opus_encoder = None

RATE = 48000
MAX_FRAME = RATE * 120 // 1000  # longest Opus packet: 120 ms
PLC_STEP = RATE // 400  # opus decodes in multiples of 2.5 ms
FRAME_SIZES = frozenset(RATE * ms // 1000 for ms in (5, 10, 20, 40, 60, 80, 100, 120)) | {PLC_STEP}


def available() -> bool:
    return _opuslib is not None


def _fmtp_params(fmtp: str | None) -> dict[str, str]:
    params: dict[str, str] = {}
    for part in (fmtp or "").split(";"):
        key, _, value = part.strip().partition("=")
        if key:
            params[key.strip().lower()] = value.strip()
    return params


class OpusEncoder:
    def __init__(self, fmtp: str | None) -> None:
        self._enc = _opuslib.Encoder(RATE, 1, _opuslib.APPLICATION_VOIP)
        params = _fmtp_params(fmtp)
        # opuslib's inband_fec property setter drops its argument, so use the ctl calls
        state = self._enc.encoder_state
        if params.get("useinbandfec") == "1":
            _opus_encoder.encoder_ctl(state, _opus_ctl.set_inband_fec, 1)
            _opus_encoder.encoder_ctl(state, _opus_ctl.set_packet_loss_perc, 10)
        if params.get("maxaveragebitrate", "").isdigit():
            _opus_encoder.encoder_ctl(
                state, _opus_ctl.set_bitrate, int(params["maxaveragebitrate"])
            )

    @property
    def inband_fec(self) -> bool:
        return bool(_opus_encoder.encoder_ctl(self._enc.encoder_state, _opus_ctl.get_inband_fec))

    def encode(self, pcm: np.ndarray) -> bytes:
        data = np.ascontiguousarray(pcm, dtype=np.int16)
        if len(data) not in FRAME_SIZES:
            raise ValueError(
                f"opus frames must be 2.5, 5, 10, 20, 40, 60, 80, 100 or 120 ms, got {len(data)} samples"
            )
        return bytes(self._enc.encode(data.tobytes(), len(data)))


class OpusDecoder:
    def __init__(self) -> None:
        self._dec = _opuslib.Decoder(RATE, 1)

    def decode(self, payload: bytes) -> np.ndarray:
        return np.frombuffer(self._dec.decode(payload, MAX_FRAME), dtype=np.int16).copy()

    def conceal(self, samples: int) -> np.ndarray:
        """Opus's own PLC; it works in 2.5 ms steps, so round up and trim."""
        n = -(-samples // PLC_STEP) * PLC_STEP
        raw = _opus_decoder.decode(self._dec.decoder_state, None, 0, n, False, channels=1)
        return np.frombuffer(raw, dtype=np.int16)[:samples].copy()

    def recover(self, next_payload: bytes, samples: int) -> np.ndarray:
        """Rebuild a lost frame from the in-band FEC carried in the following packet."""
        raw = self._dec.decode(next_payload, samples, decode_fec=True)
        return np.frombuffer(raw, dtype=np.int16).copy()


class OpusCodec:
    name = "opus"
    clock_rate = RATE
    sample_rate = RATE
    channels = 2  # SDP always says 2 (RFC 7587 section 7); PCM is mono
    static_pt: int | None = None

    def __init__(self, fmtp: str | None = "useinbandfec=1") -> None:
        self.fmtp = fmtp

    def encoder(self) -> OpusEncoder:
        return OpusEncoder(self.fmtp)

    def decoder(self) -> OpusDecoder:
        return OpusDecoder()


OPUS = OpusCodec()
