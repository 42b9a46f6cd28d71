"""Who may make this phone transfer, replace or join a call from outside it; sans-IO.

RFC 5850 section 4 and RFC 3891/3911 want every REFER and every INVITE with Replaces or Join
authorised by explicit policy. Inside a dialog the current peer is authorised by the dialog
itself (refer.py, replaces.py). Everyone else must be an identity on ``allow_from`` (config
``[transfer] allow_from``) AND prove it: the phone challenges with its own Digest (401, RFC 7616
as UAS, THREATS T23) and checks the answer against ``[transfer] auth_users``.

Replay protection (THREATS T2): Digest covers only method and Request-URI, never Refer-To,
Replaces or Join (FEATURES finding 7), so a captured authorised request must not be usable
again. Nonces here are limited-use: each lives ``NONCE_TTL`` seconds and ``NONCE_USES`` answers,
and every nonce-count may be used once, in increasing order. A replay (same nonce and nc) or an
expired nonce gets 401 with ``stale=true`` and a fresh nonce, never the feature.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field

from firmware.sip.auth import HASHES, AuthParseError, compute_response, parse_challenges
from firmware.sip.errors import SipParseError
from firmware.sip.headers import parse_name_addr, split_list
from firmware.sip.ids import IdSource
from firmware.sip.message import SipRequest
from firmware.sip.uri import URI, SipURI

log = logging.getLogger(__name__)

NONCE_TTL = 30.0  # seconds a nonce we issued may be answered
NONCE_USES = 4  # answers (distinct increasing nc values) per nonce
_MAX_NONCES = 256  # outstanding nonces remembered (oldest dropped first)
DEFAULT_ALGORITHMS = ("SHA-256", "MD5")
ALGORITHMS = ("SHA-256", "SHA-512-256", "MD5")  # what the phone can check


class NotAuthorised(Exception):
    """Refuse the request: status, reason phrase and extra headers (a challenge for 401)."""

    def __init__(
        self, status: int, reason: str, headers: list[tuple[str, str]] | None = None
    ) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.headers = headers or []


def same_identity(a: URI, b: URI) -> bool:
    """Same user at the same host (sip/sips and URI parameters do not make another person)."""
    if not isinstance(a, SipURI) or not isinstance(b, SipURI):
        return str(a) == str(b)
    return (a.user or "") == (b.user or "") and (a.host.lower(), a.port) == (b.host.lower(), b.port)


@dataclass
class _Nonce:
    issued: float
    last_nc: int = 0
    uses: int = 0


@dataclass
class DigestServer:
    """The phone as a Digest UAS: limited-use nonces with nonce-count tracking (RFC 7616 5.4/5.5)."""

    ids: IdSource
    users: Mapping[str, str] = field(default_factory=dict)  # username -> password
    realm: str = "deskphone"
    allow_md5: bool = True
    # Offered in this order, most preferred first (RFC 8760 section 2.4); some peers (sipp 3.6)
    # answer only the first challenge and only MD5, hence configurable.
    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS

    def __post_init__(self) -> None:
        self._nonces: dict[str, _Nonce] = {}
        self._algorithms = [a for a in self.algorithms if self.allow_md5 or a != "MD5"]
        if not self._algorithms:  # only MD5 configured, MD5 forbidden: stricter wins
            log.warning("MD5 is not allowed: challenging with SHA-256 instead")
            self._algorithms = ["SHA-256"]

    def challenge(self, now: float, *, stale: bool = False) -> list[tuple[str, str]]:
        """WWW-Authenticate headers with one fresh nonce, one per algorithm in our order of
        preference (RFC 8760 2.4), always with qop (RFC 7616 as UAS)."""
        self._prune(now)
        nonce = self.ids.token(16)
        self._nonces[nonce] = _Nonce(now)
        flag = ", stale=true" if stale else ""
        return [
            (
                "WWW-Authenticate",
                f'Digest realm="{self.realm}", nonce="{nonce}", qop="auth", algorithm={alg}{flag}',
            )
            for alg in self._algorithms
        ]

    def _prune(self, now: float) -> None:
        for nonce in [n for n, s in self._nonces.items() if now - s.issued > 2 * NONCE_TTL]:
            del self._nonces[nonce]
        while len(self._nonces) >= _MAX_NONCES:
            del self._nonces[next(iter(self._nonces))]

    def _credentials(self, request: SipRequest) -> dict[str, str] | None:
        for value in request.headers.get_raw("Authorization"):
            try:
                parsed = parse_challenges(value)
            except AuthParseError:
                continue
            for cred in parsed:
                if cred.scheme.lower() == "digest" and cred.params.get("realm") == self.realm:
                    return cred.params
        return None

    def verify(self, request: SipRequest, now: float) -> str:
        """The authenticated username, or `NotAuthorised` (401 with a challenge, or 403)."""
        params = self._credentials(request)
        if params is None:
            raise NotAuthorised(401, "Unauthorized", self.challenge(now))
        nonce = self._nonces.get(params.get("nonce", ""))
        if nonce is None:  # never ours, or forgotten long ago
            raise NotAuthorised(401, "Unauthorized (unknown nonce)", self.challenge(now))
        algorithm = params.get("algorithm", "MD5").upper()
        if algorithm not in HASHES or algorithm not in self._algorithms:
            raise NotAuthorised(401, f"Unauthorized (algorithm {algorithm})", self.challenge(now))
        if params.get("qop", "").lower() != "auth" or not params.get("cnonce"):
            raise NotAuthorised(
                401, "Unauthorized (qop=auth with cnonce required)", self.challenge(now)
            )
        try:
            nc = int(params.get("nc", ""), 16)
        except ValueError:
            raise NotAuthorised(400, "Bad nonce-count in Authorization") from None
        if now - nonce.issued > NONCE_TTL or nonce.uses >= NONCE_USES:
            raise NotAuthorised(
                401, "Unauthorized (nonce expired)", self.challenge(now, stale=True)
            )
        if nc <= nonce.last_nc:
            log.warning("Digest nonce-count %d reused by %s: replay refused", nc, request.from_.uri)
            raise NotAuthorised(
                401, "Unauthorized (nonce-count reused)", self.challenge(now, stale=True)
            )
        if params.get("uri") != str(request.uri):
            raise NotAuthorised(403, "Digest uri does not match the Request-URI")
        username = params.get("username", "")
        password = self.users.get(username)
        expected = compute_response(
            HASHES[algorithm],
            username=username,
            password=password if password is not None else self.ids.token(16),
            realm=self.realm,
            method=request.method,
            uri=params["uri"],
            nonce=params["nonce"],
            nc=params["nc"],
            cnonce=params["cnonce"],
            qop="auth",
        )
        if password is None or not hmac.compare_digest(expected, params.get("response", "")):
            raise NotAuthorised(403, "Authentication failed")
        nonce.last_nc, nonce.uses = nc, nonce.uses + 1
        return username


@dataclass
class Authoriser:
    """Identities outside a call allowed to transfer/replace/join (``allow_from``), proven by Digest.

    The authenticated Digest username must be the user part of the requester's From URI, and
    that From must be on ``allow_from``; an identity that is not listed is refused before any
    challenge (403), so strangers cannot even probe passwords.
    """

    ids: IdSource
    allow_from: tuple[str, ...] = ()
    users: Mapping[str, str] = field(default_factory=dict)
    realm: str = "deskphone"
    allow_md5: bool = True
    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS
    # RFC 3325: believe P-Asserted-Identity instead of challenging, only when switched on and
    # only on a request from the registrar/proxy flow (``trusted(peer)``, set by the runtime).
    trust_asserted: bool = False
    trusted: Callable[[Hashable], bool] | None = None

    def __post_init__(self) -> None:
        self.digest = DigestServer(
            self.ids, self.users, self.realm, self.allow_md5, self.algorithms
        )
        self._allowed: list[URI] = []
        for entry in self.allow_from:
            try:
                self._allowed.append(parse_name_addr(entry).uri)
            except SipParseError:
                log.warning("bad transfer allow_from entry %r ignored", entry)

    def listed(self, uri: URI) -> bool:
        return any(same_identity(uri, allowed) for allowed in self._allowed)

    def asserted(self, request: SipRequest, peer: Hashable | None) -> URI | None:
        """The P-Asserted-Identity, when we trust assertions and the request came over the
        registrar/proxy flow (RFC 3325 section 8; T25); else None."""
        if not self.trust_asserted or peer is None or self.trusted is None:
            return None
        values = request.headers.get_raw("P-Asserted-Identity")
        if not values or not self.trusted(peer):
            return None
        try:
            return parse_name_addr(split_list(values[0])[0]).uri
        except (SipParseError, IndexError):
            return None

    def identity(self, request: SipRequest, peer: Hashable | None = None) -> URI:
        """Who asks: the trusted asserted identity, else the From URI (a claim to prove)."""
        return self.asserted(request, peer) or request.from_.uri

    def listed_request(self, request: SipRequest, peer: Hashable | None = None) -> bool:
        return self.listed(self.identity(request, peer))

    def authenticate(
        self, request: SipRequest, now: float, what: str, peer: Hashable | None = None
    ) -> str:
        """Check a listed requester, proven by Digest or asserted by the registrar flow;
        returns its identity, else `NotAuthorised`."""
        asserted = self.asserted(request, peer)
        if asserted is not None:
            if not self.listed(asserted):
                raise NotAuthorised(403, f"{what} not authorised")
            log.info("%s from %s authorised (asserted by the registrar flow)", what, asserted)
            return str(asserted)
        requester = request.from_.uri
        if not self.listed(requester):
            raise NotAuthorised(403, f"{what} not authorised")
        username = self.digest.verify(request, now)
        if not isinstance(requester, SipURI) or requester.user != username:
            raise NotAuthorised(403, f"{what}: Digest user is not the From identity")
        log.info("%s from %s authorised (Digest user %s)", what, requester, username)
        return str(requester)
