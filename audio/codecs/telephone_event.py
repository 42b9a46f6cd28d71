"""RFC 4733 telephone-event as a registry entry, so SDP offers it like any other codec.

It carries no audio: the payloads are built and parsed by ``audio.dtmf``; asking this
entry for an encoder or decoder is a programming error and says so.
"""

from __future__ import annotations

from typing import NoReturn


class TelephoneEventCodec:
    name = "telephone-event"
    clock_rate = 8000
    sample_rate = 8000
    channels = 1
    static_pt: int | None = None
    fmtp: str | None = "0-16"

    def encoder(self) -> NoReturn:
        raise TypeError("telephone-event has no audio encoder: use audio.dtmf.DtmfSender")

    def decoder(self) -> NoReturn:
        raise TypeError("telephone-event has no audio decoder: use audio.dtmf.DtmfReceiver")


TELEPHONE_EVENT = TelephoneEventCodec()
