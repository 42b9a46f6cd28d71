"""Codec registry: adding a codec means registering one object implementing ``Codec``.

G.711 and telephone-event are always present; G.722 needs the ``g722`` package and
Opus needs libopus (via opuslib). A missing optional codec is simply not registered,
so SDP never offers what this build cannot decode.
"""

from __future__ import annotations

from audio.codecs import g722, opus
from audio.codecs.base import Codec, Decoder, Encoder
from audio.codecs.g711 import PCMA, PCMU
from audio.codecs.telephone_event import TELEPHONE_EVENT

__all__ = ["Codec", "Decoder", "Encoder", "available_codecs", "get_codec", "register"]

_REGISTRY: dict[str, Codec] = {}


def register(codec: Codec) -> None:
    """Add (or replace) a codec under its SDP encoding name, case-insensitively."""
    _REGISTRY[codec.name.lower()] = codec


def available_codecs() -> dict[str, Codec]:
    """Registered codecs by their SDP encoding name (as spelled in ``Codec.name``)."""
    return {c.name: c for c in _REGISTRY.values()}


def get_codec(name: str) -> Codec:
    """Look up a codec by SDP encoding name, case-insensitively (``pcmu`` finds PCMU)."""
    try:
        return _REGISTRY[name.lower()]
    except KeyError:
        known = ", ".join(sorted(c.name for c in _REGISTRY.values()))
        raise KeyError(f"codec {name!r} is not available (have: {known})") from None


for _codec in (PCMU, PCMA, TELEPHONE_EVENT):
    register(_codec)
if g722.available():
    register(g722.G722)
if opus.available():
    register(opus.OPUS)
