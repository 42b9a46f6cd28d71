"""Identifier generation, injected so the sans-IO core stays deterministic in tests.

Tags, branches and Call-IDs double as bearer credentials for Replaces/Join/Target-Dialog
(THREATS.md T9), so production identifiers come from the OS CSPRNG (`secrets`); tests
inject `SeededIds` to get repeatable wire bytes.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Protocol

BRANCH_MAGIC = "z9hG4bK"


class IdSource(Protocol):
    """Where the core gets its random identifiers and nonces."""

    def token(self, nbytes: int = 8) -> str:
        """Return a URL/token-safe random string carrying ``nbytes`` of entropy."""
        ...

    def randbelow(self, n: int) -> int:
        """Return a uniformly distributed integer in [0, n)."""
        ...


class SecureIds:
    """Production identifiers from the CSPRNG."""

    def token(self, nbytes: int = 8) -> str:
        return secrets.token_hex(nbytes)

    def randbelow(self, n: int) -> int:
        return secrets.randbelow(n)


class SeededIds:
    """Deterministic identifiers for tests: a hash chain over a seed."""

    def __init__(self, seed: str = "test") -> None:
        self._state = hashlib.sha256(seed.encode()).digest()

    def _next(self) -> bytes:
        self._state = hashlib.sha256(self._state).digest()
        return self._state

    def token(self, nbytes: int = 8) -> str:
        out = b""
        while len(out) < nbytes:
            out += self._next()
        return out[:nbytes].hex()

    def randbelow(self, n: int) -> int:
        return int.from_bytes(self._next()[:8], "big") % n


def new_tag(ids: IdSource) -> str:
    """A From/To tag: 64 random bits (RFC 3261 19.3 asks for at least 32)."""
    return ids.token(8)


def new_branch(ids: IdSource) -> str:
    """A Via branch with the RFC 3261 magic cookie."""
    return BRANCH_MAGIC + ids.token(10)


def new_call_id(ids: IdSource) -> str:
    """A Call-ID with 128 random bits and no host part (nothing about us leaks, RFC 3323)."""
    return ids.token(16)
