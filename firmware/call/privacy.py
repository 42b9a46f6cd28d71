"""Anonymous outgoing calls (RFC 3323 user-provided privacy, T24); sans-IO.

`PrivacyService.anonymise` rewrites what an outgoing INVITE says about us (the call manager asks
it for ``dial(..., anonymous=True)``):

* From: ``"Anonymous" <sip:anonymous@anonymous.invalid>`` (RFC 3323 4.1.1.3);
* Contact: our address without the user part (no GRUU here, so the IP address stays: it is
  where the answer must go; RFC 3323 4.1.1.3 notes the same for Via);
* no User-Agent (it names the product and version, 4.1.1.3 "Identifying headers");
* Call-ID: already random without a host (firmware.sip.ids.new_call_id);
* Privacy: the configured values (``id`` by default: the proxy should withhold our
  authenticated identity from the callee too, RFC 3325 9.3); never ``none``.

The digest credentials stay: the proxy has to know who pays, the callee does not.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

ANONYMOUS_FROM = "sip:anonymous@anonymous.invalid"
ANONYMOUS_DISPLAY = "Anonymous"
# Headers a caller might add that identify the user or the device (RFC 3323 4.1.1.3).
IDENTIFYING = frozenset(
    {
        "user-agent",
        "organization",
        "call-info",
        "subject",
        "in-reply-to",
        "reply-to",
        "p-preferred-identity",
        "referred-by",
    }
)


def contact_without_user(contact: str) -> str:
    """``<sip:1061@192.0.2.10:5060;transport=tcp>`` -> ``<sip:192.0.2.10:5060;transport=tcp>``."""
    inner = contact.strip()
    if inner.startswith("<") and ">" in inner:
        inner = inner[1 : inner.index(">")]
    scheme, _, rest = inner.partition(":")
    if "@" in rest.split(";", 1)[0]:
        rest = rest.split("@", 1)[1]
    return f"<{scheme}:{rest}>"


class PrivacyService:
    """Plugs into ``CallManager.privacy``."""

    def __init__(self, calls: Any, *, privacy: Iterable[str] = ("id",)) -> None:
        self.privacy = tuple(v for v in privacy if v != "none")
        calls.privacy = self

    def anonymise(
        self, info: Any, extra_headers: Iterable[tuple[str, str]]
    ) -> tuple[Any, str, list[tuple[str, str]]]:
        """(account info to place the call with, User-Agent ("" = none), extra headers)."""
        anon = dataclasses.replace(
            info,
            aor=ANONYMOUS_FROM,
            display_name=ANONYMOUS_DISPLAY,
            contact=contact_without_user(info.contact),
        )
        headers = [(n, v) for n, v in extra_headers if n.lower() not in IDENTIFYING]
        if self.privacy:
            headers.append(("Privacy", "; ".join(self.privacy)))
        return anon, "", headers
