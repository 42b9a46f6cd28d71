"""Words and layout for a small character display: what a person reads on the LCD.

SIP status codes and registration states become plain words here ("Busy", "Login refused"),
numbers are shown without the URI noise, and lines are fitted to the display's size. Icons are
board/charset's private-use characters: a CGRAM glyph on the LCD, a look-alike in plain text.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from board.charset import ICONS, untrusted
from firmware.ui.model import CallView, DirectoryEntry, UiSettings

LOCK = ICONS["lock"]  # SRTP: the call is encrypted (a CGRAM glyph on the LCD)

CALL_FAILURES = {
    403: "Call not allowed",
    404: "Number not found",
    408: "No answer",
    480: "Not available",
    484: "Number incomplete",
    486: "Busy",
    487: "Call cancelled",
    488: "Calls not compatible",
    503: "Service unavailable",
    600: "Busy",
    603: "Call declined",
    604: "Number not found",
}


def number_of(uri: str | None) -> str:
    """The part of a SIP URI a person dials: the user part, else the host."""
    if not uri:
        return ""
    text = uri.strip().strip("<>")
    for scheme in ("sips:", "sip:", "tel:"):
        if text.lower().startswith(scheme):
            text = text[len(scheme) :]
            break
    text = text.split(";", 1)[0]
    user, at, host = text.partition("@")
    return untrusted(user if at and user else user if not at else host)  # from the network (T33)


def display_name(call: CallView, directory: Iterable[DirectoryEntry] = ()) -> str:
    """Caller name: the display name, else the directory's name for the number, else the number."""
    if call.remote_display:
        return untrusted(call.remote_display.strip('"'))  # caller-supplied: no fake icons (T33)
    number = number_of(call.remote)
    for entry in directory:
        if entry.number == number or (entry.uri and _same_uri(entry.uri, call.remote)):
            return entry.name
    return number


def _same_uri(a: str, b: str) -> bool:
    """Same host:port (ignoring scheme, user, parameters): a direct entry names whatever
    identity the phone at that address uses (peer-to-peer phones have no stable user part)."""

    def key(uri: str) -> str:
        text = uri.strip().strip("<>").split(";", 1)[0].split("?", 1)[0]
        text = text.split(":", 1)[1] if ":" in text else text
        return text.rsplit("@", 1)[-1].lower()

    return ":" in key(a) and key(a) == key(b)


def format_duration(seconds: float) -> str:
    total = int(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def call_failure_text(status: int | None, reason: str | None) -> str:
    """Why a call did not connect, in words (the status code for those who need it)."""
    if status is None:
        return "Call failed: no response"
    words = CALL_FAILURES.get(status)
    if words is None:
        words = f"Call failed: {untrusted(reason)}" if reason else "Call failed"
    return f"{words} ({status})"


def registration_text(registrations: Sequence[dict[str, Any]]) -> str:
    """One line about the lines' registrations; the worst state wins."""
    if not registrations:
        return "Direct calls only"
    for reg in registrations:
        state = reg.get("state")
        status = reg.get("last_status")
        if state == "failed":
            if status in (401, 403, 407):
                return f"Login refused ({status})"
            return f"Registration failed ({status})" if status else "Registration failed"
        if state == "retrying":
            return "No connection to PBX"
    if all(r.get("state") == "registered" for r in registrations):
        return "Ready"
    if any(r.get("state") == "registering" for r in registrations):
        return "Registering..."
    return "Not registered"


def softkey_row(labels: Sequence[str], cols: int) -> str:
    """Labels spread over the bottom row, one equal-width cell per softkey."""
    if not any(labels):
        return ""
    cell = max(2, cols // max(1, len(labels)))
    return "".join(label[: cell - 1].ljust(cell) for label in labels).rstrip()


def fit(content: Sequence[str], softkeys: str, size: UiSettings) -> list[str]:
    """Exactly `rows` lines; softkeys take the last row on displays with three rows or more,
    and the first lines of content are the most important. Content lines longer than `cols`
    are kept whole: the board scrolls them (board/charset.scroll), so long names stay readable."""
    rows, cols = size.rows, size.cols
    body = [line for line in content]
    if rows >= 3 and softkeys:
        body = [*body[: rows - 1]]
        body += [""] * (rows - 1 - len(body))
        body.append(softkeys)
    else:
        body = body[:rows]
    body += [""] * (rows - len(body))
    if rows >= 3 and softkeys:
        body[-1] = body[-1][:cols]
    return body
