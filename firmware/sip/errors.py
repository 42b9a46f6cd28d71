"""The one exception the SIP parser raises, carrying the response a UAS should send.

A peer's malformed message is a protocol event, not a crash: callers catch `SipParseError`
and answer with `status` and `reason` (DESIGN.md "Errors").
"""

from __future__ import annotations

from typing import Any

MAX_REASON = 160


class SipParseError(ValueError):
    """A message, header or URI is malformed; `reason` names the defect.

    `breaks_framing` is set by the stream parser when it can no longer tell where the next
    message starts (the connection should be closed). `message` is set by `parse_message`
    when the start line and headers parsed but the body framing did not (e.g. a
    Content-Length larger than the datagram), so a UAS can still address a 400 to the sender.
    """

    def __init__(
        self,
        reason: str,
        status: int = 400,
        *,
        breaks_framing: bool = False,
        message: Any = None,
    ) -> None:
        if len(reason) > MAX_REASON:
            # The reason may quote peer input and may be sent back as a reason phrase.
            reason = reason[: MAX_REASON - 3] + "..."
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.breaks_framing = breaks_framing
        self.message = message

    def __repr__(self) -> str:
        return f"SipParseError({self.reason!r}, status={self.status})"
