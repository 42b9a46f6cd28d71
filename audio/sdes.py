"""SDES: SRTP keys in SDP `a=crypto` lines (RFC 4568), sans-IO.

Parses and formats `a=crypto:<tag> <suite> inline:<base64(key||salt)>[|lifetime][|MKI:len]
[session-params]`, generates keys from an injected random-bytes callable (`secrets.token_bytes`
in production, a deterministic one in tests), and applies the offer/answer rules:

- the answer echoes exactly one offered tag and suite with the answerer's own key (5.1.2), and
  no acceptable line means no answer (the caller refuses the stream with port 0);
- UNENCRYPTED_SRTP, UNENCRYPTED_SRTCP and UNAUTHENTICATED_SRTP weaken the protection, so a line
  carrying them is refused unless local policy explicitly allows it (THREATS.md T20);
- keys travel in clear text inside SDP, so SDES is used only when signalling is protected
  (TLS/SIPS) unless the config explicitly allows otherwise: `sdes_allowed()` (8.3, T20);
- every new media destination gets a master key that differs from every earlier one, and our
  key never equals the peer's (7.1.4, 8.2, T21): `SdesKeys`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import re
import secrets
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field

from audio.srtp import SUITE_32, SUITE_80, SUITES, SrtpTransform, new_srtp_session

log = logging.getLogger(__name__)

RandomBytes = Callable[[int], bytes]

SUPPORTED_SUITES: tuple[str, ...] = (SUITE_80, SUITE_32)  # our preference order when offering
WEAKENING_PARAMS = frozenset({"UNENCRYPTED_SRTP", "UNENCRYPTED_SRTCP", "UNAUTHENTICATED_SRTP"})
MAX_TAG = 999_999_999  # 1*9DIGIT

_TAG_RE = re.compile(r"[0-9]{1,9}")
_LIFETIME_RE = re.compile(r"(2\^)?([0-9]+)")
_MKI_RE = re.compile(r"([0-9]+):([0-9]{1,3})")


class SdesError(ValueError):
    """A malformed a=crypto line or an answer that breaks RFC 4568's rules; says which."""


@dataclass(frozen=True)
class KeyParams:
    """One `inline:` key: master key and salt, optional lifetime (packets) and MKI."""

    key: bytes
    salt: bytes
    lifetime: int | None = None
    mki: int | None = None
    mki_length: int | None = None

    @property
    def mki_bytes(self) -> bytes:
        """The MKI as it appears in each SRTP packet (b"" when there is none)."""
        if self.mki is None or self.mki_length is None:
            return b""
        return self.mki.to_bytes(self.mki_length, "big")

    def format(self) -> str:
        text = "inline:" + base64.b64encode(self.key + self.salt).decode("ascii")
        if self.lifetime is not None:
            exp = self.lifetime.bit_length() - 1
            text += f"|2^{exp}" if self.lifetime == 1 << exp else f"|{self.lifetime}"
        if self.mki is not None:
            text += f"|{self.mki}:{self.mki_length}"
        return text

    def __repr__(self) -> str:  # keys stay out of logs and tracebacks
        return f"KeyParams(key=<{len(self.key)} bytes>, lifetime={self.lifetime}, mki={self.mki})"


@dataclass(frozen=True)
class CryptoAttribute:
    """One a=crypto line. `keys` is empty for suites we do not implement (kept only to skip)."""

    tag: int
    suite: str
    keys: tuple[KeyParams, ...]
    params: tuple[str, ...] = ()
    raw_key_params: str = field(default="", compare=False)

    @property
    def key(self) -> KeyParams:
        if not self.keys:
            raise SdesError(f"a=crypto tag {self.tag}: no usable key for {self.suite}")
        return self.keys[0]

    @property
    def supported_suite(self) -> bool:
        return self.suite in SUITES

    def has(self, name: str) -> bool:
        """True when session parameter `name` (e.g. UNENCRYPTED_SRTP) is present."""
        return any(p.split("=", 1)[0].upper() == name for p in self.params)

    @property
    def weakening(self) -> frozenset[str]:
        return frozenset(p.upper() for p in self.params if p.upper() in WEAKENING_PARAMS)

    def format(self) -> str:
        """The attribute value (what follows `a=crypto:`)."""
        key_params = ";".join(k.format() for k in self.keys) if self.keys else self.raw_key_params
        return " ".join([str(self.tag), self.suite, key_params, *self.params])

    def line(self) -> str:
        return "a=crypto:" + self.format()


def _parse_key_param(text: str, suite: str) -> KeyParams:
    method, sep, info = text.partition(":")
    if not sep or method.lower() != "inline":
        raise SdesError(f"key method {method!r} is not 'inline' (RFC 4568 6.1)")
    parts = info.split("|")
    if len(parts) > 3:
        raise SdesError(f"too many '|' fields in key {text[:12]!r}...")
    params = SUITES[suite]
    try:
        material = base64.b64decode(parts[0], validate=True)
    except (binascii.Error, ValueError):
        raise SdesError(f"{suite}: key-salt is not valid base64") from None
    if len(material) != params.key_len + params.salt_len:
        raise SdesError(
            f"{suite}: key-salt is {len(material)} bytes, "
            f"expected {params.key_len + params.salt_len}"
        )
    lifetime: int | None = None
    mki: int | None = None
    mki_length: int | None = None
    for extra in parts[1:]:
        if (m := _MKI_RE.fullmatch(extra)) is not None:
            if mki is not None:
                raise SdesError("two MKI fields in one key")
            mki, mki_length = int(m.group(1)), int(m.group(2))
            if not 1 <= mki_length <= 128 or mki >= 1 << (8 * mki_length):
                raise SdesError(f"MKI {extra!r}: length must be 1-128 and hold the value")
        elif (m := _LIFETIME_RE.fullmatch(extra)) is not None:
            if lifetime is not None or mki is not None:
                raise SdesError("lifetime must come once, before the MKI (RFC 4568 9.2)")
            n = int(m.group(2))
            lifetime = 1 << n if m.group(1) else n
            if lifetime <= 0 or (m.group(1) and n > 64):
                raise SdesError(f"lifetime {extra!r} out of range")
        else:
            raise SdesError(f"key field {extra!r} is neither a lifetime nor an MKI")
    key, salt = material[: params.key_len], material[params.key_len :]
    return KeyParams(key, salt, lifetime, mki, mki_length)


def parse_crypto(value: str) -> CryptoAttribute:
    """Parse one a=crypto value ('a=crypto:' prefix optional); SdesError naming the fault."""
    text = value.strip()
    for prefix in ("a=crypto:", "crypto:"):
        if text[: len(prefix)].lower() == prefix:
            text = text[len(prefix) :]
            break
    parts = text.split()
    if len(parts) < 3:
        raise SdesError(f"a=crypto needs '<tag> <suite> <key-params>': {value!r}")
    if not _TAG_RE.fullmatch(parts[0]):
        raise SdesError(f"a=crypto tag {parts[0]!r} is not 1-9 digits")
    tag, suite, key_params, params = int(parts[0]), parts[1].upper(), parts[2], tuple(parts[3:])
    if suite not in SUITES:
        return CryptoAttribute(tag, suite, (), params, raw_key_params=key_params)
    keys = tuple(_parse_key_param(k, suite) for k in key_params.split(";"))
    if len(keys) > 1 and any(k.mki is None for k in keys):
        raise SdesError(f"a=crypto tag {tag}: several keys need an MKI each (RFC 4568 6.1)")
    if len({k.mki_length for k in keys}) > 1:
        raise SdesError(f"a=crypto tag {tag}: all MKIs must have the same length")
    return CryptoAttribute(tag, suite, keys, params)


def _unusable_reason(attr: CryptoAttribute, allow_weak_params: bool) -> str | None:
    """Why we cannot use this line as it stands, or None."""
    if not attr.supported_suite:
        return f"suite {attr.suite} not supported"
    if len(attr.keys) != 1:
        return "more than one master key (MKI-indexed rekeying) not supported"
    if attr.weakening and not allow_weak_params:
        return f"weakening parameters {sorted(attr.weakening)} refused by policy"
    for p in attr.params:
        name, _, val = p.partition("=")
        upper = name.upper()
        if upper in WEAKENING_PARAMS or name.startswith("-"):
            continue  # weakening ones handled above; '-' marks an ignorable extension
        if upper == "WSH" and val.isdigit() and int(val) >= 64:
            continue  # a hint; our window is fixed at 128
        if upper == "FEC_ORDER" and val.upper() in ("FEC_SRTP", "SRTP_FEC"):
            continue  # we send no FEC, so the order never applies
        return f"session parameter {p!r} not supported"  # KDR, FEC_KEY, unknown mandatory
    return None


class SdesKeys:
    """Master keys for our side: fresh per media destination, never repeating (T21).

    Remembers a SHA-256 digest of every key it handed out and of every peer key it was shown,
    so a broken random source or a reflected key is caught instead of reusing keystream.
    """

    def __init__(self, random_bytes: RandomBytes = secrets.token_bytes) -> None:
        self._random = random_bytes
        self._seen: set[bytes] = set()
        self._by_destination: dict[tuple[Hashable, str], KeyParams] = {}

    def note_peer_key(self, key: KeyParams) -> None:
        """Remember a peer's key so ours never equals it (RFC 4568 8.2: keys per direction)."""
        self._seen.add(_digest(key))

    def fresh(self, suite: str = SUITE_80) -> KeyParams:
        """A new master key and salt for `suite`, different from all earlier ones."""
        params = SUITES[suite.upper()]
        for _ in range(3):
            material = self._random(params.key_len + params.salt_len)
            if len(material) != params.key_len + params.salt_len:
                raise SdesError("random source returned the wrong number of bytes")
            key = KeyParams(material[: params.key_len], material[params.key_len :])
            digest = _digest(key)
            if digest not in self._seen:
                self._seen.add(digest)
                return key
            log.error("SDES: random source repeated a master key; drawing again")
        raise SdesError("random source keeps repeating master keys; refusing to reuse one")

    def for_destination(self, destination: Hashable, suite: str = SUITE_80) -> KeyParams:
        """Our key towards `destination` (e.g. (address, port)): the same while it stays put,
        a fresh one as soon as the media goes anywhere else (RFC 4568 7.1.4)."""
        slot = (destination, suite.upper())
        key = self._by_destination.get(slot)
        if key is None:
            key = self.fresh(suite)
            self._by_destination = {
                k: v for k, v in self._by_destination.items() if k[0] == destination
            }
            self._by_destination[slot] = key
        return key


def _digest(key: KeyParams) -> bytes:
    return hashlib.sha256(key.key + key.salt).digest()


def make_offer(
    keys: SdesKeys,
    suites: Sequence[str] = SUPPORTED_SUITES,
    *,
    destination: Hashable | None = None,
) -> list[CryptoAttribute]:
    """Our a=crypto lines, tags 1.. in preference order, each with its own fresh key
    (or the key kept for `destination` when given, so a re-offer to the same place keeps it)."""
    out = []
    for tag, suite in enumerate(suites, start=1):
        key = keys.for_destination(destination, suite) if destination is not None else None
        out.append(CryptoAttribute(tag, suite.upper(), (key or keys.fresh(suite),)))
    return out


def _parsed(lines: Iterable[CryptoAttribute | str]) -> list[CryptoAttribute]:
    out = []
    for line in lines:
        if isinstance(line, CryptoAttribute):
            out.append(line)
            continue
        try:
            out.append(parse_crypto(line))
        except SdesError as exc:
            log.info("ignoring a=crypto line: %s", exc)
    return out


def select_answer(
    offered: Iterable[CryptoAttribute | str],
    keys: SdesKeys,
    *,
    allow_weak_params: bool = False,
    suites: Sequence[str] = SUPPORTED_SUITES,
) -> tuple[CryptoAttribute, CryptoAttribute] | None:
    """Answerer: (our answer line, the offered line it answers), or None if none is acceptable.

    Takes the first acceptable line in the offerer's order, echoes its tag and suite with a
    fresh key of ours, and echoes the weakening parameters it accepted (RFC 4568 6.3.5-6.3.7:
    they apply to both directions). Malformed lines are skipped, not fatal (5.1.2).
    """
    wanted = {s.upper() for s in suites}
    for attr in _parsed(offered):
        reason = "suite not enabled" if attr.suite not in wanted else None
        reason = reason or _unusable_reason(attr, allow_weak_params)
        if reason is not None:
            log.info("a=crypto tag %d not acceptable: %s", attr.tag, reason)
            continue
        keys.note_peer_key(attr.key)
        ours = keys.fresh(attr.suite)
        weak = tuple(p for p in attr.params if p.upper() in WEAKENING_PARAMS)
        if weak:
            log.warning("SDES: accepting %s because policy allows it", " ".join(weak))
        return CryptoAttribute(attr.tag, attr.suite, (ours,), weak), attr
    return None


def accept_answer(
    offered: Sequence[CryptoAttribute],
    answer: Iterable[CryptoAttribute | str],
    *,
    allow_weak_params: bool = False,
) -> tuple[CryptoAttribute, CryptoAttribute]:
    """Offerer: check the answer and return (our offered line, the peer's answer line).

    SdesError unless the answer holds exactly one line that echoes one of our tags with the
    same suite, a usable key of its own, and no weakening parameter we did not offer.
    """
    lines = list(answer)
    if len(lines) != 1:
        raise SdesError(f"the answer must carry exactly one a=crypto line, not {len(lines)}")
    theirs = parse_crypto(lines[0]) if isinstance(lines[0], str) else lines[0]
    ours = next((o for o in offered if o.tag == theirs.tag), None)
    if ours is None:
        raise SdesError(f"answer a=crypto tag {theirs.tag} was not offered")
    if ours.suite != theirs.suite:
        raise SdesError(f"answer tag {theirs.tag} changed suite {ours.suite} -> {theirs.suite}")
    reason = _unusable_reason(theirs, allow_weak_params)
    if reason is not None:
        raise SdesError(f"answer a=crypto tag {theirs.tag}: {reason}")
    if not theirs.weakening <= ours.weakening:
        raise SdesError(f"answer added parameters we did not offer: {sorted(theirs.weakening)}")
    if _digest(theirs.key) == _digest(ours.key):
        raise SdesError("answer reflects our own master key (RFC 4568 8.2 needs one per side)")
    return ours, theirs


def srtp_sessions(
    local: CryptoAttribute, remote: CryptoAttribute, *, prefer: str = "auto"
) -> tuple[SrtpTransform, SrtpTransform]:
    """(send, receive) SRTP transforms for a negotiated pair: ours keys what we send, the
    peer's what we receive. A weakening parameter on either line applies to both directions."""

    def off(name: str) -> bool:
        return local.has(name) or remote.has(name)

    flags = {
        "encrypt_rtp": not off("UNENCRYPTED_SRTP"),
        "encrypt_rtcp": not off("UNENCRYPTED_SRTCP"),
        "authenticate_rtp": not off("UNAUTHENTICATED_SRTP"),
    }
    send = new_srtp_session(
        local.suite, local.key.key, local.key.salt, mki=local.key.mki_bytes, prefer=prefer, **flags
    )
    receive = new_srtp_session(
        remote.suite,
        remote.key.key,
        remote.key.salt,
        mki=remote.key.mki_bytes,
        prefer=prefer,
        **flags,
    )
    return send, receive


def sdes_allowed(signalling_secure: bool, allow_insecure: bool) -> bool:
    """Whether a=crypto may be offered or accepted on this signalling path (THREATS.md T20).

    SDES keys are in clear text in the SDP, so anyone who can read the signalling can decrypt
    the media: only over TLS/SIPS, unless the configuration explicitly says otherwise.
    """
    if signalling_secure:
        return True
    if allow_insecure:
        log.warning("SDES over unprotected signalling: SRTP keys are visible on the network")
        return True
    return False
