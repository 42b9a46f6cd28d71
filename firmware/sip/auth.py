"""HTTP Digest authentication as a SIP UAC (RFC 3261 section 22, RFC 7616, RFC 8760).

Answers 401/407 challenges and pre-authorises later requests with a cached nonce. Security
choices (THREATS.md T23): Basic is never answered; the topmost supported Digest challenge
wins (the RFC 7616 section 3.7 default) unless ``allow_md5=False`` removes MD5 entirely;
unknown algorithms are skipped; a realm we hold no credentials for is not answered; a
rejected nonce is never retried blindly, so a wrong password cannot loop. Passwords and
full Authorization values are never logged.

SHA-512-256 means FIPS 180-4 SHA-512/256 (distinct initial hash values), as RFC 7616
section 3.2 and RFC 8760 say. Note that the RFC 7616 section 3.9.2 example was computed
with *truncated SHA-512* instead (RFC errata 4897), so it cannot be used as a vector for
the real algorithm; the tests check that example's construction with the truncated hash
and check SHA-512/256 itself against FIPS 180-4 vectors.
"""

from __future__ import annotations

import hashlib
import logging
import struct
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from firmware.sip.ids import IdSource

if TYPE_CHECKING:  # only for annotations; keeps this module importable on its own
    from firmware.sip.message import SipRequest, SipResponse

log = logging.getLogger(__name__)

HashFn = Callable[[bytes], str]

# ----------------------------------------------------------------------------------------------
# Hash functions
# ----------------------------------------------------------------------------------------------

_SHA512_K = (
    0x428A2F98D728AE22, 0x7137449123EF65CD, 0xB5C0FBCFEC4D3B2F, 0xE9B5DBA58189DBBC,
    0x3956C25BF348B538, 0x59F111F1B605D019, 0x923F82A4AF194F9B, 0xAB1C5ED5DA6D8118,
    0xD807AA98A3030242, 0x12835B0145706FBE, 0x243185BE4EE4B28C, 0x550C7DC3D5FFB4E2,
    0x72BE5D74F27B896F, 0x80DEB1FE3B1696B1, 0x9BDC06A725C71235, 0xC19BF174CF692694,
    0xE49B69C19EF14AD2, 0xEFBE4786384F25E3, 0x0FC19DC68B8CD5B5, 0x240CA1CC77AC9C65,
    0x2DE92C6F592B0275, 0x4A7484AA6EA6E483, 0x5CB0A9DCBD41FBD4, 0x76F988DA831153B5,
    0x983E5152EE66DFAB, 0xA831C66D2DB43210, 0xB00327C898FB213F, 0xBF597FC7BEEF0EE4,
    0xC6E00BF33DA88FC2, 0xD5A79147930AA725, 0x06CA6351E003826F, 0x142929670A0E6E70,
    0x27B70A8546D22FFC, 0x2E1B21385C26C926, 0x4D2C6DFC5AC42AED, 0x53380D139D95B3DF,
    0x650A73548BAF63DE, 0x766A0ABB3C77B2A8, 0x81C2C92E47EDAEE6, 0x92722C851482353B,
    0xA2BFE8A14CF10364, 0xA81A664BBC423001, 0xC24B8B70D0F89791, 0xC76C51A30654BE30,
    0xD192E819D6EF5218, 0xD69906245565A910, 0xF40E35855771202A, 0x106AA07032BBD1B8,
    0x19A4C116B8D2D0C8, 0x1E376C085141AB53, 0x2748774CDF8EEB99, 0x34B0BCB5E19B48A8,
    0x391C0CB3C5C95A63, 0x4ED8AA4AE3418ACB, 0x5B9CCA4F7763E373, 0x682E6FF3D6B2B8A3,
    0x748F82EE5DEFB2FC, 0x78A5636F43172F60, 0x84C87814A1F0AB72, 0x8CC702081A6439EC,
    0x90BEFFFA23631E28, 0xA4506CEBDE82BDE9, 0xBEF9A3F7B2C67915, 0xC67178F2E372532B,
    0xCA273ECEEA26619C, 0xD186B8C721C0C207, 0xEADA7DD6CDE0EB1E, 0xF57D4F7FEE6ED178,
    0x06F067AA72176FBA, 0x0A637DC5A2C898A6, 0x113F9804BEF90DAE, 0x1B710B35131C471B,
    0x28DB77F523047D84, 0x32CAAB7B40C72493, 0x3C9EBE0A15C9BEBC, 0x431D67C49C100D4C,
    0x4CC5D4BECB3E42B6, 0x597F299CFC657E2A, 0x5FCB6FAB3AD6FAEC, 0x6C44198C4A475817,
)  # fmt: skip

# FIPS 180-4 section 5.3.6.2: the SHA-512/256 initial hash value.
_SHA512_256_IV = (
    0x22312194FC2BF72C, 0x9F555FA3C84C64C2, 0x2393B86B6F53B151, 0x963877195940EABD,
    0x96283EE2A88EFFE3, 0xBE5E1E2553863992, 0x2B0199FC2C85B8AA, 0x0EB72DDC81C52CA2,
)  # fmt: skip

_M64 = (1 << 64) - 1


def _rotr(x: int, n: int) -> int:
    return ((x >> n) | (x << (64 - n))) & _M64


def _sha512_core(data: bytes, iv: Sequence[int]) -> bytes:
    """SHA-512 compression over ``data`` from ``iv`` (FIPS 180-4 section 6.4); pure Python."""
    h = list(iv)
    length = len(data)
    data += b"\x80" + b"\x00" * ((111 - length) % 128) + (length * 8).to_bytes(16, "big")
    for off in range(0, len(data), 128):
        w = list(struct.unpack(">16Q", data[off : off + 128]))
        for t in range(16, 80):
            s0 = _rotr(w[t - 15], 1) ^ _rotr(w[t - 15], 8) ^ (w[t - 15] >> 7)
            s1 = _rotr(w[t - 2], 19) ^ _rotr(w[t - 2], 61) ^ (w[t - 2] >> 6)
            w.append((w[t - 16] + s0 + w[t - 7] + s1) & _M64)
        a, b, c, d, e, f, g, hh = h
        for t in range(80):
            t1 = hh + (_rotr(e, 14) ^ _rotr(e, 18) ^ _rotr(e, 41)) + ((e & f) ^ (~e & g))
            t1 = (t1 + _SHA512_K[t] + w[t]) & _M64
            t2 = (_rotr(a, 28) ^ _rotr(a, 34) ^ _rotr(a, 39)) + ((a & b) ^ (a & c) ^ (b & c))
            hh, g, f, e = g, f, e, (d + t1) & _M64
            d, c, b, a = c, b, a, (t1 + t2) & _M64
        h = [(x + y) & _M64 for x, y in zip(h, (a, b, c, d, e, f, g, hh), strict=True)]
    return struct.pack(">8Q", *h)


def sha512_256_fallback(data: bytes) -> str:
    """SHA-512/256 for OpenSSL builds whose hashlib lacks it (slow, but only hashes short strings)."""
    return _sha512_core(data, _SHA512_256_IV)[:32].hex()


def _hashlib_fn(name: str) -> HashFn | None:
    try:
        hashlib.new(name, b"")
    except ValueError:
        return None
    return lambda data: hashlib.new(name, data).hexdigest()


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


_sha512_256: HashFn = _hashlib_fn("sha512_256") or sha512_256_fallback

# Canonical (upper-case) algorithm token -> hash. "-sess" variants derive from these.
HASHES: dict[str, HashFn] = {"MD5": _md5, "SHA-256": _sha256, "SHA-512-256": _sha512_256}


def split_algorithm(token: str | None) -> tuple[str, bool] | None:
    """Map an algorithm token to (base hash name, is_session); None if unsupported.

    A missing algorithm means MD5 (RFC 7616 section 3.3).
    """
    name = (token or "MD5").strip().upper()
    sess = name.endswith("-SESS")
    base = name[:-5] if sess else name
    if base not in HASHES:
        return None
    return base, sess


# ----------------------------------------------------------------------------------------------
# Challenge grammar (RFC 7235 section 2.1 / RFC 3261 section 25.1)
# ----------------------------------------------------------------------------------------------


class AuthParseError(ValueError):
    """A WWW-/Proxy-Authenticate value that does not follow the challenge grammar."""


@dataclass(frozen=True)
class Challenge:
    """One parsed challenge; ``params`` keys are lower-cased, values unquoted."""

    scheme: str
    params: dict[str, str]
    proxy: bool = False

    @property
    def realm(self) -> str | None:
        return self.params.get("realm")

    @property
    def nonce(self) -> str | None:
        return self.params.get("nonce")

    @property
    def algorithm(self) -> str:
        return self.params.get("algorithm", "MD5")

    @property
    def stale(self) -> bool:
        return self.params.get("stale", "").lower() == "true"

    @property
    def qop_options(self) -> list[str]:
        raw = self.params.get("qop")
        if raw is None:
            return []
        return [q.strip().lower() for q in raw.split(",") if q.strip()]


_SEPARATORS = ' \t\r\n,="'


def _skip_ws(text: str, i: int) -> int:
    while i < len(text) and text[i] in " \t\r\n":
        i += 1
    return i


def _read_token(text: str, i: int) -> tuple[str, int]:
    start = i
    while i < len(text) and text[i] not in _SEPARATORS:
        i += 1
    return text[start:i], i


def _read_quoted(text: str, i: int) -> tuple[str, int]:
    """Read a quoted-string starting at the opening quote; handles backslash escapes."""
    out: list[str] = []
    i += 1
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            out.append(text[i + 1])
            i += 2
        elif ch == '"':
            return "".join(out), i + 1
        else:
            out.append(ch)
            i += 1
    raise AuthParseError("unterminated quoted string in challenge")


def parse_challenges(value: str, *, proxy: bool = False) -> list[Challenge]:
    """Parse one header value that may hold several comma-separated challenges.

    A name followed by ``=`` is an auth-param of the current challenge; a bare token is
    a new scheme. token68 credentials of other schemes are tolerated (and ignored).
    """
    challenges: list[tuple[str, dict[str, str]]] = []
    i = 0
    n = len(value)
    while True:
        i = _skip_ws(value, i)
        while i < n and value[i] == ",":
            i = _skip_ws(value, i + 1)
        if i >= n:
            break
        token, i = _read_token(value, i)
        if not token:
            raise AuthParseError(f"unexpected {value[i]!r} in challenge at offset {i}")
        j = _skip_ws(value, i)
        if j < n and value[j] == "=":
            if not challenges:
                raise AuthParseError("auth-param before any auth-scheme")
            j = _skip_ws(value, j + 1)
            if j < n and value[j] == '"':
                param_value, i = _read_quoted(value, j)
            else:
                param_value, i = _read_token(value, j)
                while i < n and value[i] == "=":  # token68 padding of another scheme
                    i += 1
            challenges[-1][1].setdefault(token.lower(), param_value)
        else:
            challenges.append((token, {}))
            i = j
    return [Challenge(scheme, params, proxy) for scheme, params in challenges]


def challenges_from(response: SipResponse) -> list[Challenge]:
    """Every challenge in a 401 (WWW-Authenticate) or 407 (Proxy-Authenticate), in order.

    Headers are walked directly rather than through a list-splitting accessor because
    challenge values contain commas. Unparseable header values are skipped with a warning.
    """
    proxy = response.status == 407
    wanted = "proxy-authenticate" if proxy else "www-authenticate"
    found: list[Challenge] = []
    for name, value in response.headers:
        if name.lower() != wanted:
            continue
        try:
            found.extend(parse_challenges(value, proxy=proxy))
        except AuthParseError as exc:
            log.warning("ignoring malformed %s header: %s", name, exc)
    return found


# ----------------------------------------------------------------------------------------------
# Response computation (RFC 7616 section 3.4.1)
# ----------------------------------------------------------------------------------------------


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class DigestCredentials:
    """A username/password, optionally bound to one realm (None answers any realm)."""

    username: str
    password: str = field(repr=False)
    realm: str | None = None


def compute_response(
    hash_fn: HashFn,
    *,
    username: str,
    password: str,
    realm: str,
    method: str,
    uri: str,
    nonce: str,
    nc: str = "",
    cnonce: str = "",
    qop: str | None = None,
    session: bool = False,
    body: bytes = b"",
) -> str:
    """The request-digest; without qop this is the RFC 2069 form RFC 3261 still allows."""

    def h(text: str) -> str:
        return hash_fn(text.encode("utf-8"))

    ha1 = h(f"{username}:{realm}:{password}")
    if session:
        ha1 = h(f"{ha1}:{nonce}:{cnonce}")
    if qop == "auth-int":
        ha2 = h(f"{method}:{uri}:{hash_fn(body)}")
    else:
        ha2 = h(f"{method}:{uri}")
    if qop is None:
        return h(f"{ha1}:{nonce}:{ha2}")
    return h(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


# ----------------------------------------------------------------------------------------------
# The client
# ----------------------------------------------------------------------------------------------

_MAX_REJECTIONS = 2  # non-stale rejections with fresh nonces before we give up
_MAX_STALE = 3  # consecutive stale=true answers tolerated (guards against a looping server)
_MAX_TRACKED = 256  # remembered authorised requests (Call-ID, CSeq) for rejection detection


@dataclass
class _NonceState:
    """A challenge we answer, with the nonce-count we used last."""

    challenge: Challenge
    credentials: DigestCredentials
    hash_name: str
    session: bool
    qop: str | None
    cnonce: str
    nc: int = 0


@dataclass(frozen=True)
class _Sent:
    nonce: str
    rejections: int
    stales: int


class DigestClient:
    """Answers Digest challenges for one set of credentials; sans-IO and side-effect free
    apart from the nonce cache.

    Realm scope (THREATS.md / docs/threat-model.md "Transitive credential leak"): with
    ``scoped=True`` the realm-less credentials (the account's PBX password) answer only the
    *account realm* - ``account_realm`` when configured, else the realm of the first
    challenge the registrar sends to our REGISTER (``learn_realm``: trust on first use
    through the registrar flow, kept for the object's lifetime). Until that realm is known
    they answer nothing. Credentials carrying their own realm (peer phones' secrets) answer
    exactly that realm. So a callee, forking target or man in the middle that challenges an
    INVITE in its own realm gets no digest of the PBX password to attack offline. Without
    ``scoped`` (library default) realm-less credentials answer any realm.

    ``authorize(request, response)`` adds Authorization (401) or Proxy-Authorization (407)
    to ``request`` - the *new* request to send, already carrying its new CSeq and the
    same Call-ID - and returns False when it must give up. Rejection is detected from the
    challenge response itself: its (Call-ID, CSeq) names the request we authorised, so a
    challenge to one of our own authorised requests means the credentials were refused.
    """

    def __init__(
        self,
        credentials: DigestCredentials | Iterable[DigestCredentials],
        ids: IdSource,
        *,
        allow_md5: bool = True,
        scoped: bool = False,
        account_realm: str | None = None,
    ) -> None:
        if isinstance(credentials, DigestCredentials):
            credentials = [credentials]
        self._credentials = list(credentials)
        if not self._credentials:
            raise ValueError("DigestClient needs at least one set of credentials")
        self._ids = ids
        self.allow_md5 = allow_md5
        # (proxy, realm) -> nonce state; insertion order = order learned.
        self._cache: dict[tuple[bool, str], _NonceState] = {}
        # (call_id, cseq, proxy, realm) -> what we sent; bounded LRU.
        self._sent: OrderedDict[tuple[str, int, bool, str], _Sent] = OrderedDict()
        self.last_error: str | None = None
        self.scoped = scoped or account_realm is not None
        # The one realm the realm-less credentials answer when scoped (configured or learned).
        self.account_realm = account_realm

    # -- choice ---------------------------------------------------------------------------------
    def _credentials_for(self, realm: str) -> DigestCredentials | None:
        for cred in self._credentials:
            if cred.realm == realm:
                return cred
        if self.scoped and realm != self.account_realm:
            return None  # the account password never answers another realm
        for cred in self._credentials:
            if cred.realm is None:
                return cred
        return None

    def learn_realm(self, registrar_challenge: SipResponse) -> str | None:
        """Bind the account credentials to the realm of the registrar's first challenge
        (call only with a 401/407 to our own REGISTER); returns the account realm.

        Trust on first use: later challenges never change it, so a man in the middle that
        arrives after the first registration cannot move the password to its realm.
        """
        if not self.scoped or self.account_realm is not None:
            return self.account_realm
        for ch in challenges_from(registrar_challenge):
            if self._usable(ch) is None:
                continue
            assert ch.realm is not None
            if any(cred.realm == ch.realm for cred in self._credentials):
                continue  # a peer secret's realm is never the account realm
            self.account_realm = ch.realm
            log.info("account realm learned from the registrar: %r", ch.realm)
            break
        return self.account_realm

    def _refusal(self, status: int, realm: str) -> str:
        """Why a challenge for ``realm`` was not answered (for status and logs)."""
        if self.account_realm is not None:
            known = f"the account's realm is {self.account_realm!r}"
        else:
            known = (
                "the account's realm is not known yet: no registrar challenge seen and no "
                "[[accounts]] realm configured"
            )
        return f"{status} from realm {realm!r}: no credentials for that realm ({known})"

    def _usable(self, ch: Challenge) -> tuple[str, bool, str | None] | None:
        """(hash name, session, qop) if we can and may answer ``ch``, else None."""
        if ch.scheme.lower() != "digest" or not ch.realm or ch.nonce is None:
            return None
        algo = split_algorithm(ch.params.get("algorithm"))
        if algo is None:
            return None
        base, session = algo
        if base == "MD5" and not self.allow_md5:
            return None
        options = ch.qop_options
        if not options:
            qop = None
        elif "auth" in options:
            qop = "auth"
        elif "auth-int" in options:
            qop = "auth-int"
        else:
            return None
        return base, session, qop

    def choose(self, challenges: Sequence[Challenge]) -> list[Challenge]:
        """Per realm, the topmost challenge we support and may answer (RFC 7616 section 3.7)."""
        chosen: dict[str, Challenge] = {}
        for ch in challenges:
            if self._usable(ch) is None or ch.realm in chosen:
                continue
            assert ch.realm is not None
            if self._credentials_for(ch.realm) is None:
                log.info("no credentials for digest realm %r; not answering it", ch.realm)
                continue
            chosen[ch.realm] = ch
        return list(chosen.values())

    # -- answering ------------------------------------------------------------------------------
    def authorize(self, request: SipRequest, challenge_response: SipResponse) -> bool:
        """Add credentials answering ``challenge_response`` to ``request``; False = give up."""
        self.last_error = None
        if challenge_response.status not in (401, 407):
            raise ValueError(f"authorize() needs a 401 or 407, got {challenge_response.status}")
        proxy = challenge_response.status == 407
        offered = challenges_from(challenge_response)
        chosen = self.choose(offered)
        if not chosen:
            schemes = sorted({c.scheme for c in offered}) or ["none"]
            foreign = [
                c.realm
                for c in offered
                if c.realm
                and self._usable(c) is not None
                and self._credentials_for(c.realm) is None
            ]
            if foreign:
                self.last_error = self._refusal(challenge_response.status, foreign[0])
            else:
                self.last_error = (
                    "no acceptable challenge (schemes/realms/algorithms offered are "
                    f"unsupported, disallowed or have no credentials: {', '.join(schemes)})"
                )
            log.warning("cannot answer %d: %s", challenge_response.status, self.last_error)
            return False
        call_id = challenge_response.call_id
        cseq = challenge_response.cseq.number
        plans: list[tuple[Challenge, _Sent]] = []
        for ch in chosen:
            assert ch.realm is not None and ch.nonce is not None
            prior = self._sent.get((call_id, cseq, proxy, ch.realm))
            if prior is None:
                plans.append((ch, _Sent(ch.nonce, 0, 0)))
                continue
            if ch.stale:
                if prior.stales + 1 > _MAX_STALE:
                    self.last_error = f"realm {ch.realm!r}: server keeps declaring nonces stale"
                    return self._give_up(proxy, ch.realm)
                plans.append((ch, _Sent(ch.nonce, prior.rejections, prior.stales + 1)))
                continue
            if ch.nonce == prior.nonce or prior.rejections + 1 >= _MAX_REJECTIONS:
                self.last_error = f"realm {ch.realm!r}: credentials rejected"
                return self._give_up(proxy, ch.realm)
            plans.append((ch, _Sent(ch.nonce, prior.rejections + 1, 0)))
        for ch, sent in plans:
            assert ch.realm is not None
            state = self._learn(ch)
            self._apply(request, state)
            self._remember(request, proxy, ch.realm, sent)
        return True

    def pre_authorize(self, request: SipRequest, realms: Iterable[str] | None = None) -> bool:
        """Add credentials from every cached challenge (nonce reuse, nc incremented); with
        ``realms``, only for those (a retry answers the realms that challenged this request,
        not every server the account ever met).

        Returns True if any header was added. A server that no longer accepts the nonce
        answers 401/407 with stale=true, which ``authorize`` handles without counting a failure.
        """
        added = False
        wanted = None if realms is None else set(realms)
        for (proxy, realm), state in self._cache.items():
            if wanted is not None and realm not in wanted:
                continue
            self._apply(request, state)
            self._remember(request, proxy, realm, _Sent(state.challenge.nonce or "", 0, 0))
            added = True
        return added

    def forget(self) -> None:
        """Drop cached nonces (e.g. credentials changed)."""
        self._cache.clear()
        self._sent.clear()

    def _give_up(self, proxy: bool, realm: str) -> bool:
        log.warning("giving up digest authentication: %s", self.last_error)
        self._cache.pop((proxy, realm), None)
        return False

    def _learn(self, ch: Challenge) -> _NonceState:
        assert ch.realm is not None
        usable = self._usable(ch)
        cred = self._credentials_for(ch.realm)
        assert usable is not None and cred is not None
        base, session, qop = usable
        state = _NonceState(ch, cred, base, session, qop, cnonce=self._ids.token(16))
        self._cache[(ch.proxy, ch.realm)] = state
        return state

    def _remember(self, request: SipRequest, proxy: bool, realm: str, sent: _Sent) -> None:
        key = (request.call_id, request.cseq.number, proxy, realm)
        self._sent[key] = sent
        self._sent.move_to_end(key)
        while len(self._sent) > _MAX_TRACKED:
            self._sent.popitem(last=False)

    def _apply(self, request: SipRequest, state: _NonceState) -> None:
        """Compute and add one Authorization/Proxy-Authorization header for ``state``."""
        ch = state.challenge
        assert ch.realm is not None and ch.nonce is not None
        state.nc += 1
        nc = f"{state.nc:08x}"
        uri = request.uri_text  # exactly what the start line carries
        hash_fn = HASHES[state.hash_name]
        cred = state.credentials
        userhash = ch.params.get("userhash", "").lower() == "true"
        username = hash_fn(f"{cred.username}:{ch.realm}".encode()) if userhash else cred.username
        digest = compute_response(
            hash_fn,
            username=cred.username,
            password=cred.password,
            realm=ch.realm,
            method=request.method,
            uri=uri,
            nonce=ch.nonce,
            nc=nc,
            cnonce=state.cnonce,
            qop=state.qop,
            session=state.session,
            body=request.body,
        )
        algorithm = state.hash_name + ("-sess" if state.session else "")
        parts = [
            f"username={_quote(username)}",
            f"realm={_quote(ch.realm)}",
            f"nonce={_quote(ch.nonce)}",
            f"uri={_quote(uri)}",
            f"response={_quote(digest)}",
            f"algorithm={algorithm}",
        ]
        if state.qop is not None:
            parts += [f"cnonce={_quote(state.cnonce)}", f"qop={state.qop}", f"nc={nc}"]
        if "opaque" in ch.params:
            parts.append(f"opaque={_quote(ch.params['opaque'])}")
        if userhash:
            parts.append("userhash=true")
        header = "Proxy-Authorization" if ch.proxy else "Authorization"
        _replace_realm(request, header, ch.realm)
        request.headers.add(header, "Digest " + ", ".join(parts))
        log.debug(
            "%s for realm %r: algorithm=%s qop=%s nc=%s", header, ch.realm, algorithm,
            state.qop, nc,
        )  # fmt: skip


def credential_realms(request: SipRequest) -> list[str]:
    """The realms ``request`` already carries credentials for (Authorization and
    Proxy-Authorization), so a retry can keep answering exactly those."""
    realms: list[str] = []
    for name in ("Authorization", "Proxy-Authorization"):
        for value in request.headers.get_raw(name):
            try:
                parsed = parse_challenges(value)
            except AuthParseError:
                continue
            realm = parsed[0].params.get("realm") if parsed else None
            if realm is not None and realm not in realms:
                realms.append(realm)
    return realms


def _replace_realm(request: SipRequest, header: str, realm: str) -> None:
    """Remove our earlier credentials for ``realm`` from ``request``, keeping other realms."""
    keep: list[str] = []
    dropped = False
    for name, value in list(request.headers):
        if name.lower() != header.lower():
            continue
        try:
            parsed = parse_challenges(value)
        except AuthParseError:
            parsed = []
        if parsed and parsed[0].params.get("realm") == realm:
            dropped = True
        else:
            keep.append(value)
    if dropped:
        request.headers.remove(header)
        for value in keep:
            request.headers.add(header, value)
