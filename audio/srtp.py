"""SRTP and SRTCP (RFC 3711) with the AES_CM_128_HMAC_SHA1_80 and _32 suites, sans-IO.

One `SrtpSession` holds one master key and protects or unprotects every SSRC keyed by it.
With SDES (RFC 4568 8.2) each direction has its own key, so a call uses two sessions: one with
our key for `protect`/`protect_rtcp`, one with the peer's key for `unprotect`/`unprotect_rtcp`.

What is implemented here, and why it matters:
- key derivation (RFC 3711 4.3.1, AES-CM PRF, key_derivation_rate 0, labels 0-5);
- AES-CM encryption (4.1.1) and HMAC-SHA1 authentication over header, payload and ROC (4.2);
- the rollover counter estimated from the highest index seen (3.3.1, Appendix A), so the
  keystream stays right across the 16-bit sequence wrap and reordered packets around it;
- a 128-packet replay window per SSRC for SRTP and SRTCP (3.3.2 asks for at least 64);
- SRTCP with the E flag and a 31-bit index, always authenticated with an 80-bit tag in both
  suites (RFC 4568 6.2.1, 6.2.2);
- an optional MKI and the SDES session parameters UNENCRYPTED_SRTP, UNENCRYPTED_SRTCP and
  UNAUTHENTICATED_SRTP (only used when the caller's policy accepted them);
- the sender refuses to protect an index it already used: with a counter-mode cipher a
  repeated index reuses the keystream (9.1), which leaks the XOR of two payloads.
Every failure (tampered, replayed, malformed, exhausted) raises `SrtpError` with a `reason`,
so the media layer can count drops per reason without catching anything else.

Implementation choice (issue 3: "pick pylibsrtp or cryptography by measurement")
--------------------------------------------------------------------------------
`python bench/srtp.py`: CPU microseconds for protect + unprotect of one RTP packet with a
160-byte G.711 payload (20 ms), best of 9 rounds of 20000 packets, both in one process; 2-core
AMD EPYC VM under load, Python 3.11.7, cryptography 48.0.0 (OpenSSL 3), pylibsrtp 1.0.0:

    case               ours (us)   pylibsrtp (us)   ours / pylibsrtp
    SHA1_80 RTP          19.5          6.1              3.2x
    SHA1_32 RTP          19.3          6.0              3.2x
    SHA1_80 RTCP         14.7          5.3              2.8x

A call is 50 packets/s each way, so one call costs ours ~1.0 ms CPU per second (0.10 % of a
core) against libsrtp's ~0.3 ms (0.03 %). A Raspberry Pi 4 core runs this Python roughly 5-8x
slower (and its BCM2711 has no AES instructions), which still puts ours under 1 % of one core
per call. Both fit a desk phone's budget by a wide margin; libsrtp is 3x cheaper, is what the
other phones run, and keeps the per-packet work out of the interpreter.

Decision: `new_srtp_session()` uses pylibsrtp when it is installed and the parameters are ones
it supports (no MKI, no UNENCRYPTED_*/UNAUTHENTICATED_SRTP), otherwise this module's
`SrtpSession`. Ours stays as the verified fallback because pylibsrtp publishes wheels for x86-64
and aarch64 only (32-bit Raspberry Pi OS would have to build it against libsrtp2-dev) while
`cryptography`, already a hard dependency, has armv7 wheels; and because ours covers MKI and the
SDES session parameters the binding does not expose. tests/unit/test_srtp.py checks that both
produce the same bytes, both ways, across the ROC wrap.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

log = logging.getLogger(__name__)

SUITE_80 = "AES_CM_128_HMAC_SHA1_80"
SUITE_32 = "AES_CM_128_HMAC_SHA1_32"

REPLAY_WINDOW = 128  # packets; RFC 3711 3.3.2 requires >= 64, libsrtp uses 128 as well
MAX_STREAMS = 32  # SSRC states kept per direction; the least recently used one is dropped

# Key derivation labels, RFC 3711 4.3.2 / 4.3.3.
_LABEL_RTP_ENC, _LABEL_RTP_AUTH, _LABEL_RTP_SALT = 0, 1, 2
_LABEL_RTCP_ENC, _LABEL_RTCP_AUTH, _LABEL_RTCP_SALT = 3, 4, 5

_SRTP_INDEX_LIMIT = 1 << 48  # 3.3.1: the master key must be replaced before 2^48 packets
_SRTCP_INDEX_LIMIT = 1 << 31  # 3.4: 31-bit SRTCP index
_E_FLAG = 0x80000000
_BLOCK = 16
_HEADER_LEN = 12
_RTCP_HEADER_LEN = 8
# Low two bytes of every counter block: the IV has its low 16 bits clear (4.1.1), so block j's
# counter is the IV's first 14 bytes followed by j as 16 bits. 4096 blocks cover any UDP datagram.
_CTR_SUFFIX = tuple(j.to_bytes(2, "big") for j in range(4096))


class SrtpError(Exception):
    """A packet SRTP refused to protect or unprotect; `reason` says why, for counters.

    Reasons: "auth" (tag mismatch: tampered or wrong key), "replay" (duplicate or older than
    the window), "malformed" (not RTP/RTCP, too short), "mki" (unknown MKI), "keystream_reuse"
    (we were asked to protect an index twice), "limit" (index space exhausted: rekey).
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class SuiteParams:
    """Key sizes and tag lengths of one SDES crypto-suite (RFC 4568 6.2)."""

    name: str
    key_len: int
    salt_len: int
    rtp_tag_len: int
    rtcp_tag_len: int


SUITES: dict[str, SuiteParams] = {
    SUITE_80: SuiteParams(SUITE_80, 16, 14, 10, 10),
    # _32 shortens only the SRTP tag; SRTCP keeps 80 bits (RFC 4568 6.2.2).
    SUITE_32: SuiteParams(SUITE_32, 16, 14, 4, 10),
}


def suite_params(suite: str) -> SuiteParams:
    """Look a suite up by its SDES name (case-insensitive); SrtpError naming it otherwise."""
    try:
        return SUITES[suite.upper()]
    except KeyError:
        raise SrtpError("malformed", f"unsupported SRTP crypto-suite {suite!r}") from None


class SrtpTransform(Protocol):
    """What the media layer calls; both implementations here provide it."""

    def protect(self, rtp: bytes) -> bytes: ...
    def unprotect(self, srtp: bytes) -> bytes: ...
    def protect_rtcp(self, rtcp: bytes) -> bytes: ...
    def unprotect_rtcp(self, srtcp: bytes) -> bytes: ...


def aes_cm_keystream(key: bytes, iv: bytes, length: int) -> bytes:
    """`length` bytes of AES counter-mode keystream starting at counter block `iv` (4.1.1)."""
    encryptor = Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor()
    return encryptor.update(bytes(length)) + encryptor.finalize()


def derive_key(master_key: bytes, master_salt: bytes, label: int, length: int) -> bytes:
    """RFC 3711 4.3.1 with key_derivation_rate 0: the AES-CM PRF keyed with the master key.

    key_id = label || (index DIV kdr), and with kdr 0 the 48-bit r is zero, so x is the master
    salt with the label XORed into its 8th byte; the PRF input is x * 2^16.
    """
    x = int.from_bytes(master_salt, "big") ^ (label << 48)
    return aes_cm_keystream(master_key, (x << 16).to_bytes(_BLOCK, "big"), length)


class ReplayWindow:
    """Highest index seen plus a bitmask of the `size` indices below it (RFC 3711 3.3.2)."""

    __slots__ = ("highest", "mask", "size")

    def __init__(self, size: int = REPLAY_WINDOW) -> None:
        self.highest = -1  # no packet yet
        self.mask = 0
        self.size = size

    def check(self, index: int) -> str | None:
        """None if `index` is new, else why it is not ("duplicate" or "too old")."""
        delta = self.highest - index
        if self.highest < 0 or delta < 0:
            return None
        if delta >= self.size:
            return "too old"
        if (self.mask >> delta) & 1:
            return "duplicate"
        return None

    def update(self, index: int) -> None:
        """Record `index`; only call after the packet authenticated (3.3.2)."""
        if self.highest < 0:
            self.highest, self.mask = index, 1
        elif index > self.highest:
            shift = index - self.highest
            # A big jump clears the window; never build a shift as wide as the jump itself.
            self.mask = (
                1 if shift >= self.size else ((self.mask << shift) | 1) & ((1 << self.size) - 1)
            )
            self.highest = index
        else:
            self.mask |= 1 << (self.highest - index)


def estimate_index(highest: int, seq: int) -> int:
    """RFC 3711 3.3.1 / Appendix A: the 48-bit index of `seq` given the highest index seen.

    Picks the ROC (v) among ROC-1, ROC, ROC+1 that puts `seq` closest to s_l. A first packet
    (highest < 0) starts at ROC 0. Returns -1 when the guess would be ROC -1: a packet from
    before the stream started, which no legitimate sender produces.
    """
    if highest < 0:
        return seq
    roc, s_l = highest >> 16, highest & 0xFFFF
    if s_l < 0x8000:
        v = roc - 1 if seq - s_l > 0x8000 else roc
    else:
        v = roc + 1 if s_l - 0x8000 > seq else roc
    return -1 if v < 0 else (v << 16) | seq


def _rtp_header_len(packet: bytes) -> int:
    """Length of the RTP header including CSRCs and extension (not encrypted, 3.1)."""
    n = len(packet)
    if n < _HEADER_LEN or packet[0] >> 6 != 2:
        raise SrtpError("malformed", f"not an RTP packet ({n} bytes)")
    hl = _HEADER_LEN + 4 * (packet[0] & 0x0F)
    if packet[0] & 0x10:
        if hl + 4 > n:
            raise SrtpError("malformed", "RTP header extension runs past the packet")
        hl += 4 + 4 * int.from_bytes(packet[hl + 2 : hl + 4], "big")
    if hl > n:
        raise SrtpError("malformed", f"RTP header ({hl} bytes) longer than the packet ({n})")
    return hl


class _Keys:
    """Session keys for one direction of RTP or RTCP, with reusable cipher and MAC state."""

    __slots__ = ("_auth_key", "_ecb", "salt")

    def __init__(self, master_key: bytes, master_salt: bytes, labels: tuple[int, int, int]):
        enc, auth, salt = labels
        key = derive_key(master_key, master_salt, enc, len(master_key))
        self.salt = int.from_bytes(derive_key(master_key, master_salt, salt, 14), "big")
        # ECB over explicit counter blocks is counter mode; one long-lived context saves
        # building a cipher object per packet (3x faster in bench/srtp.py).
        self._ecb = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
        self._auth_key = derive_key(master_key, master_salt, auth, 20)

    def crypt(self, data: bytes, ssrc: int, index: int) -> bytes:
        """XOR `data` with the AES-CM keystream for (ssrc, index): IV per RFC 3711 4.1.1."""
        n = len(data)
        if not n:
            return b""
        iv = ((self.salt ^ (ssrc << 48) ^ index) << 16).to_bytes(_BLOCK, "big")[:14]
        blocks = (n + _BLOCK - 1) // _BLOCK
        if blocks > len(_CTR_SUFFIX):
            raise SrtpError("malformed", f"{n}-byte payload is larger than any UDP datagram")
        stream = self._ecb.update(b"".join([iv + s for s in _CTR_SUFFIX[:blocks]]))
        return (int.from_bytes(data, "big") ^ int.from_bytes(stream[:n], "big")).to_bytes(n, "big")

    def tag(self, body: bytes, trailer: bytes) -> bytes:
        """Full HMAC-SHA1 over the authenticated portion and the ROC or E||index (4.2.1)."""
        # hmac.digest is one C call (OpenSSL); a copied HMAC object costs two more.
        return hmac.digest(self._auth_key, body + trailer, "sha1")


class _Streams:
    """Per-SSRC replay windows, bounded so a stream of new SSRCs cannot grow memory."""

    def __init__(self) -> None:
        self._by_ssrc: dict[int, ReplayWindow] = {}

    def get(self, ssrc: int) -> ReplayWindow:
        window = self._by_ssrc.get(ssrc)
        return window if window is not None else ReplayWindow()

    def store(self, ssrc: int, window: ReplayWindow) -> None:
        if ssrc not in self._by_ssrc and len(self._by_ssrc) >= MAX_STREAMS:
            dropped = next(iter(self._by_ssrc))
            del self._by_ssrc[dropped]
            log.info("SRTP: forgetting SSRC %08x (more than %d streams)", dropped, MAX_STREAMS)
        self._by_ssrc.pop(ssrc, None)
        self._by_ssrc[ssrc] = window  # re-insert: dict order is least recently used first


class SrtpSession:
    """SRTP/SRTCP with one master key (RFC 3711), on `cryptography`; see the module docstring.

    `mki` (bytes) is carried in every packet and checked on receipt (3.1). The three flags
    mirror the SDES session parameters UNENCRYPTED_SRTP, UNENCRYPTED_SRTCP and
    UNAUTHENTICATED_SRTP (RFC 4568 6.3.5-6.3.7); leave them alone unless the peer's offer
    carried them and local policy accepted that (THREATS.md T20).
    """

    def __init__(
        self,
        suite: str,
        master_key: bytes,
        master_salt: bytes,
        *,
        mki: bytes = b"",
        encrypt_rtp: bool = True,
        encrypt_rtcp: bool = True,
        authenticate_rtp: bool = True,
    ) -> None:
        params = suite_params(suite)
        if len(master_key) != params.key_len or len(master_salt) != params.salt_len:
            raise SrtpError(
                "malformed",
                f"{params.name} needs a {params.key_len}-byte key and {params.salt_len}-byte "
                f"salt, got {len(master_key)} and {len(master_salt)}",
            )
        self.suite = params.name
        self._rtp_tag_len = params.rtp_tag_len if authenticate_rtp else 0
        self._rtcp_tag_len = params.rtcp_tag_len
        self._mki = bytes(mki)
        self._encrypt_rtp = encrypt_rtp
        self._encrypt_rtcp = encrypt_rtcp
        self._authenticate_rtp = authenticate_rtp
        self._rtp = _Keys(
            master_key, master_salt, (_LABEL_RTP_ENC, _LABEL_RTP_AUTH, _LABEL_RTP_SALT)
        )
        self._rtcp = _Keys(
            master_key, master_salt, (_LABEL_RTCP_ENC, _LABEL_RTCP_AUTH, _LABEL_RTCP_SALT)
        )
        self._tx_rtp = _Streams()
        self._rx_rtp = _Streams()
        self._tx_rtcp_index: dict[int, int] = {}
        self._rx_rtcp = _Streams()

    # ------------------------------------------------------------------ SRTP

    def protect(self, rtp: bytes) -> bytes:
        """RTP packet -> SRTP packet (payload encrypted, MKI and tag appended)."""
        hl = _rtp_header_len(rtp)
        seq = (rtp[2] << 8) | rtp[3]
        ssrc = int.from_bytes(rtp[8:12], "big")
        window = self._tx_rtp.get(ssrc)
        index = estimate_index(window.highest, seq)
        if index < 0 or window.check(index) is not None:
            raise SrtpError(
                "keystream_reuse", f"SRTP index of seq {seq} for SSRC {ssrc:08x} already used"
            )
        if index >= _SRTP_INDEX_LIMIT:
            raise SrtpError("limit", "SRTP index space exhausted: a new master key is needed")
        payload = rtp[hl:]
        if self._encrypt_rtp:
            payload = self._rtp.crypt(payload, ssrc, index)
        body = rtp[:hl] + payload
        window.update(index)
        self._tx_rtp.store(ssrc, window)
        if not self._authenticate_rtp:
            return body + self._mki
        tag = self._rtp.tag(body, (index >> 16).to_bytes(4, "big"))
        return body + self._mki + tag[: self._rtp_tag_len]

    def unprotect(self, srtp: bytes) -> bytes:
        """SRTP packet -> RTP packet; SrtpError if it fails authentication or is a replay."""
        trailer = len(self._mki) + self._rtp_tag_len
        end = len(srtp) - trailer
        if end < _HEADER_LEN:
            raise SrtpError("malformed", f"SRTP packet too short ({len(srtp)} bytes)")
        body = srtp[:end]
        hl = _rtp_header_len(body)
        self._check_mki(srtp[end : end + len(self._mki)])
        seq = (srtp[2] << 8) | srtp[3]
        ssrc = int.from_bytes(srtp[8:12], "big")
        window = self._rx_rtp.get(ssrc)
        index = estimate_index(window.highest, seq)
        if index < 0:
            raise SrtpError("replay", f"SRTP seq {seq} from SSRC {ssrc:08x} is before the stream")
        if self._authenticate_rtp:
            expected = self._rtp.tag(body, (index >> 16).to_bytes(4, "big"))[: self._rtp_tag_len]
            if not hmac.compare_digest(expected, srtp[end + len(self._mki) :]):
                raise SrtpError("auth", f"SRTP authentication failed (SSRC {ssrc:08x}, seq {seq})")
            # Replay protection needs integrity (3.3.2): only authenticated packets move it.
            why = window.check(index)
            if why is not None:
                raise SrtpError("replay", f"SRTP replay ({why}): SSRC {ssrc:08x} index {index}")
            window.update(index)
            self._rx_rtp.store(ssrc, window)
        else:
            window.update(index)  # tracks the ROC only; no replay check without integrity
            self._rx_rtp.store(ssrc, window)
        payload = body[hl:]
        if self._encrypt_rtp:
            payload = self._rtp.crypt(payload, ssrc, index)
        return body[:hl] + payload

    # ------------------------------------------------------------------ SRTCP

    def protect_rtcp(self, rtcp: bytes) -> bytes:
        """RTCP compound packet -> SRTCP (3.4): encrypted after the first 8 bytes, E||index, tag."""
        if len(rtcp) < _RTCP_HEADER_LEN or rtcp[0] >> 6 != 2:
            raise SrtpError("malformed", f"not an RTCP packet ({len(rtcp)} bytes)")
        ssrc = int.from_bytes(rtcp[4:8], "big")
        # The first SRTCP index is 1, as libsrtp numbers them (RFC 3711 leaves it open).
        index = self._tx_rtcp_index.get(ssrc, 0) + 1
        if index >= _SRTCP_INDEX_LIMIT:
            raise SrtpError("limit", "SRTCP index space exhausted: a new master key is needed")
        if index == 1 and len(self._tx_rtcp_index) >= MAX_STREAMS:
            # Our own SSRCs only; forgetting a counter would restart it and reuse keystream.
            raise SrtpError("limit", f"more than {MAX_STREAMS} SRTCP sending SSRCs")
        self._tx_rtcp_index[ssrc] = index
        if self._encrypt_rtcp:
            body = rtcp[:_RTCP_HEADER_LEN] + self._rtcp.crypt(rtcp[_RTCP_HEADER_LEN:], ssrc, index)
            e_index = (_E_FLAG | index).to_bytes(4, "big")
        else:
            body = rtcp
            e_index = index.to_bytes(4, "big")
        tag = self._rtcp.tag(body, e_index)[: self._rtcp_tag_len]
        return body + e_index + self._mki + tag

    def unprotect_rtcp(self, srtcp: bytes) -> bytes:
        """SRTCP -> RTCP compound packet; SrtpError on auth failure, replay or bad framing."""
        mki_len = len(self._mki)
        end = len(srtcp) - 4 - mki_len - self._rtcp_tag_len
        if end < _RTCP_HEADER_LEN or srtcp[0] >> 6 != 2:
            raise SrtpError("malformed", f"not an SRTCP packet ({len(srtcp)} bytes)")
        body = srtcp[:end]
        e_index = srtcp[end : end + 4]
        self._check_mki(srtcp[end + 4 : end + 4 + mki_len])
        ssrc = int.from_bytes(srtcp[4:8], "big")
        expected = self._rtcp.tag(body, e_index)[: self._rtcp_tag_len]
        if not hmac.compare_digest(expected, srtcp[end + 4 + mki_len :]):
            raise SrtpError("auth", f"SRTCP authentication failed (SSRC {ssrc:08x})")
        word = int.from_bytes(e_index, "big")
        index = word & ~_E_FLAG
        window = self._rx_rtcp.get(ssrc)
        why = window.check(index)
        if why is not None:
            raise SrtpError("replay", f"SRTCP replay ({why}): SSRC {ssrc:08x} index {index}")
        window.update(index)
        self._rx_rtcp.store(ssrc, window)
        if word & _E_FLAG:
            return body[:_RTCP_HEADER_LEN] + self._rtcp.crypt(body[_RTCP_HEADER_LEN:], ssrc, index)
        if self._encrypt_rtcp:
            # A peer that agreed to encrypt must not fall back to clear text (downgrade).
            raise SrtpError("malformed", f"SRTCP packet from SSRC {ssrc:08x} is not encrypted")
        return body

    def _check_mki(self, mki: bytes) -> None:
        if mki != self._mki:
            raise SrtpError("mki", f"SRTP MKI {mki.hex() or '(none)'} is not ours")


class LibSrtpSession:
    """The same interface on pylibsrtp (libsrtp 2): one outbound and one inbound libsrtp session.

    Errors are mapped onto SrtpError with the same reasons as `SrtpSession`.
    """

    def __init__(self, suite: str, master_key: bytes, master_salt: bytes) -> None:
        import pylibsrtp

        params = suite_params(suite)
        if len(master_key) != params.key_len or len(master_salt) != params.salt_len:
            raise SrtpError("malformed", f"{params.name}: wrong master key or salt length")
        profile = {
            SUITE_80: pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
            SUITE_32: pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
        }[params.name]
        self.suite = params.name
        self._error = pylibsrtp.Error
        key = master_key + master_salt
        self._tx = pylibsrtp.Session(
            pylibsrtp.Policy(key, pylibsrtp.Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile)
        )
        self._rx = pylibsrtp.Session(
            pylibsrtp.Policy(key, pylibsrtp.Policy.SSRC_ANY_INBOUND, srtp_profile=profile)
        )

    def protect(self, rtp: bytes) -> bytes:
        _rtp_header_len(rtp)
        return self._call(self._tx.protect, rtp, "protect")

    def unprotect(self, srtp: bytes) -> bytes:
        return self._call(self._rx.unprotect, srtp, "unprotect")

    def protect_rtcp(self, rtcp: bytes) -> bytes:
        return self._call(self._tx.protect_rtcp, rtcp, "protect_rtcp")

    def unprotect_rtcp(self, srtcp: bytes) -> bytes:
        return self._call(self._rx.unprotect_rtcp, srtcp, "unprotect_rtcp")

    def _call(self, fn: Callable[[bytes], bytes], packet: bytes, what: str) -> bytes:
        try:
            return fn(bytes(packet))
        except self._error as exc:
            text = str(exc)
            if "authentication" in text:
                reason = "auth"
            elif "replay" in text or "too old" in text:
                reason = "keystream_reuse" if what.startswith("protect") else "replay"
            else:
                reason = "malformed"
            raise SrtpError(reason, f"libsrtp {what}: {text}") from exc
        except (ValueError, TypeError) as exc:
            raise SrtpError("malformed", f"libsrtp {what}: {exc}") from exc


def libsrtp_available() -> bool:
    """True when pylibsrtp imports (it bundles or links libsrtp 2)."""
    try:
        import pylibsrtp  # noqa: F401
    except ImportError:
        return False
    return True


def new_srtp_session(
    suite: str,
    master_key: bytes,
    master_salt: bytes,
    *,
    mki: bytes = b"",
    encrypt_rtp: bool = True,
    encrypt_rtcp: bool = True,
    authenticate_rtp: bool = True,
    prefer: str = "auto",
) -> SrtpTransform:
    """The SRTP implementation for one master key: libsrtp when usable, else ours.

    prefer: "auto" (libsrtp if installed and the parameters are plain), "libsrtp" (SrtpError if
    it cannot be used), or "python". The reasoning and the numbers are in the module docstring.
    """
    plain = not mki and encrypt_rtp and encrypt_rtcp and authenticate_rtp
    if prefer not in ("auto", "libsrtp", "python"):
        raise ValueError(f"prefer must be 'auto', 'libsrtp' or 'python', not {prefer!r}")
    if prefer == "libsrtp" and not (plain and libsrtp_available()):
        raise SrtpError("malformed", "libsrtp requested but unavailable for these parameters")
    if prefer != "python" and plain and libsrtp_available():
        return LibSrtpSession(suite, master_key, master_salt)
    return SrtpSession(
        suite,
        master_key,
        master_salt,
        mki=mki,
        encrypt_rtp=encrypt_rtp,
        encrypt_rtcp=encrypt_rtcp,
        authenticate_rtp=authenticate_rtp,
    )
