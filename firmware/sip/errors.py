"""The one exception the SIP parser raises, carrying the response a UAS should send.

A peer's malformed message is a protocol event, not a crash: callers catch `SipParseError`
and answer with `status` and `reason` (DESIGN.md "Errors").
"""

from __future__ import annotations


class SipParseError(ValueError):
    """A message, header or URI is malformed; `reason` names the defect."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status

    def __repr__(self) -> str:
        return f"SipParseError({self.reason!r}, status={self.status})"
