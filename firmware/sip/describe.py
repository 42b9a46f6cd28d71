"""Summary of one SIP message file for `deskphone sip-check` (JSON-ready dict).

A message is reported as an error exactly when the phone would refuse it: the parser rejects
its framing or start line, or, for a request, `validate_request` would answer 400/416/505.
An unknown Require option tag is *not* an error here (the phone would answer 420, but the
message itself is well-formed), so the request's own Require tags are passed as supported.
For a response, the checks a UAC applies before using it (`validate_response`) decide.
"""

from __future__ import annotations

from typing import Any

from firmware.sip.errors import SipParseError
from firmware.sip.headers import NameAddr
from firmware.sip.message import SipRequest
from firmware.sip.parser import parse_message
from firmware.sip.validate import validate_request, validate_response


def _party(addr: NameAddr) -> dict[str, Any]:
    return {"uri": str(addr.uri), "tag": addr.tag}


def describe(path: str, data: bytes) -> dict[str, Any]:
    """Describe the message in `data` (read from `path`), or say why it is rejected."""
    try:
        msg = parse_message(data)
        if isinstance(msg, SipRequest):
            resp = validate_request(msg, set(msg.headers.get_all("Require")))
            if resp is not None:
                return {"file": path, "error": resp.reason}
        else:
            defect = validate_response(msg)
            if defect is not None:
                return {"file": path, "error": defect}
        cseq = msg.cseq
        is_request = isinstance(msg, SipRequest)
        return {
            "file": path,
            "kind": "request" if is_request else "response",
            "method": msg.method if isinstance(msg, SipRequest) else None,
            "status": None if isinstance(msg, SipRequest) else msg.status,
            "request_uri": msg.uri_text if isinstance(msg, SipRequest) else None,
            "call_id": msg.call_id,
            "cseq": {"number": cseq.number, "method": cseq.method},
            "vias": [
                {"transport": v.transport, "sent_by": v.sent_by, "branch": v.branch}
                for v in msg.vias
            ],
            "from": _party(msg.from_),
            "to": _party(msg.to),
            "header_count": len(msg.headers),
            "body_length": len(msg.body),
        }
    except SipParseError as exc:
        return {"file": path, "error": exc.reason}
