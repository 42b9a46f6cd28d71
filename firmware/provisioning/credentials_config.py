"""The credential scope of an ``[[accounts]]`` entry: ``realm`` and ``peer_credentials``.

Kept beside config.py (which calls `parse_credential_scope`) so the rules that keep the PBX
password inside its realm live with the Digest client (firmware/sip/auth.py, docs/threat-model.md
"Transitive credential leak"). Mistakes raise the same `ConfigError` naming file and key;
passwords never appear in an error message or a repr.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from firmware.provisioning.config import _USER_RE, _Section

# A realm is a quoted-string on the wire; keep it printable and free of quotes/backslashes so
# it can neither break the header nor smuggle parameters.
_REALM_RE = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e ]{1,128}$")


@dataclass(frozen=True)
class PeerCredential:
    """A separate secret answering only ``realm`` (e.g. colleagues' phones' "deskphone"
    challenge on a BLF pickup), so the account password never leaves for another realm."""

    realm: str
    user: str
    password: str = field(repr=False)


def _realm(section: _Section, key: str, value: str) -> str:
    if not _REALM_RE.match(value) or value != value.strip():
        raise section.error(key, "must be 1-128 printable characters without quotes or backslashes")
    return value


def parse_credential_scope(acc: _Section) -> tuple[str | None, tuple[PeerCredential, ...]]:
    """``realm`` (None = learn it from the registrar's first challenge) and the peer secrets."""
    realm = acc.get("realm", str, None)
    if realm is not None:
        realm = _realm(acc, "realm", realm)
    peers: list[PeerCredential] = []
    for i, raw in enumerate(acc.get("peer_credentials", list, [])):
        entry = _Section(acc.file, acc.key(f"peer_credentials[{i}]"), raw)
        peer_realm = _realm(entry, "realm", entry.get("realm", str))
        if peer_realm == realm:
            raise entry.error(
                "realm", f"{peer_realm!r} is the account's own realm; use the account password"
            )
        if any(p.realm == peer_realm for p in peers):
            raise entry.error("realm", f"duplicate peer realm {peer_realm!r}")
        user = entry.get("user", str)
        if not _USER_RE.match(user):
            raise entry.error("user", f"{user!r} is not a valid SIP user part")
        password = entry.get("password", str)
        if not password:
            raise entry.error("password", "must be a non-empty string")
        entry.finish()
        peers.append(PeerCredential(peer_realm, user, password))
    return realm, tuple(peers)
