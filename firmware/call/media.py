"""One call's SDP side: our capabilities, hold state and the negotiated stream (RFC 3264).

`CallMedia` implements the INVITE session's `MediaHandler`: it builds offers and answers with
`firmware.sip.offer_answer`, keeps the o= line rules with `SdpVersion`, and records the result
as `negotiated` for the media layer. Hold is a direction we put into our next offer (section
8.4: sendonly when the stream was sendrecv, inactive when it was recvonly).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from firmware.sip.offer_answer import (
    LocalMediaCaps,
    NegotiatedMedia,
    OfferAnswerError,
    SdpVersion,
    build_answer,
    build_offer,
    process_answer,
)
from firmware.sip.sdp import SdpError, SessionDescription

log = logging.getLogger(__name__)


class CallMedia:
    """SDP negotiation state for one call."""

    def __init__(
        self,
        caps: LocalMediaCaps,
        session_id: int,
        fresh_crypto: Callable[[], list[str]] | None = None,
    ) -> None:
        self.caps = caps
        self.version = SdpVersion(session_id)
        self.session_id = session_id
        self.fresh_crypto = fresh_crypto
        self.on_hold = False  # we hold the peer
        self.negotiated: NegotiatedMedia | None = None
        self.remote_sdp: SessionDescription | None = None
        self._last_sent: SessionDescription | None = None
        self._last_offer: SessionDescription | None = None
        self.changes = 0  # bumped whenever `negotiated` changes, for the runtime

    def _caps_now(self) -> LocalMediaCaps:
        direction = "sendrecv"
        if self.on_hold:
            # 8.4: a sendrecv stream is held with sendonly; one we only received is inactive.
            we_were_receiving_only = self.negotiated is not None and self.negotiated.direction in (
                "recvonly",
                "inactive",
            )
            direction = "inactive" if we_were_receiving_only else "sendonly"
        self.caps.direction = direction
        return self.caps

    def make_offer(self) -> bytes:
        sd = build_offer(
            self._caps_now(),
            self.version.version,
            session_id=self.session_id,
            previous=self._last_sent,
        )
        self.version.stamp(sd)
        self._last_offer = sd
        self._last_sent = sd
        return sd.to_bytes()

    def make_answer(self, offer: bytes) -> bytes | None:
        try:
            remote = SessionDescription.parse(offer)
            sd, negotiated = build_answer(
                remote,
                self._caps_now(),
                session_version=self.version.version,
                session_id=self.session_id,
            )
        except (SdpError, OfferAnswerError) as e:
            log.info("unusable SDP offer: %s", e)
            return None
        if negotiated is None:
            return None
        self.version.stamp(sd)
        self._last_sent = sd
        self.remote_sdp = remote
        self._set(negotiated)
        return sd.to_bytes()

    def take_answer(self, answer: bytes) -> bool:
        if self._last_offer is None:
            return False
        try:
            remote = SessionDescription.parse(answer)
            negotiated = process_answer(self._last_offer, remote)
        except (SdpError, OfferAnswerError) as e:
            log.info("unusable SDP answer: %s", e)
            return False
        if negotiated is None:
            return False
        self.remote_sdp = remote
        self._set(negotiated)
        return True

    def _set(self, negotiated: NegotiatedMedia) -> None:
        if negotiated != self.negotiated:
            self.negotiated = negotiated
            self.changes += 1

    @property
    def remote_holds(self) -> bool:
        """The peer put us on hold (its side does not send to us)."""
        n = self.negotiated
        return n is not None and not n.sending and not self.on_hold
