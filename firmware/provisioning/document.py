"""Signed and encrypted provisioning documents: the one format the fleet tool and the phone share.

Pure functions over bytes and `cryptography` key objects (no files, sockets or clocks: ``now``
is passed in), so the server side (tools/provision) and the phone side
(firmware/provisioning) cannot drift apart.

- A *signed document* is ``{"payload": ..., "signature": b64, "key_id": hex16}``; the Ed25519
  signature covers `canonical(payload)` (sorted keys, no whitespace, UTF-8), so any JSON
  re-encoding by a web server or CDN in between does not matter and any change to a value does.
- Config payloads (`CONFIG_FORMAT`) carry the device id, a serial that only ever grows
  (anti-rollback), an expiry (a captured old document stops working), the config as a dict
  shaped like phone.toml, and secrets encrypted to the device's own X25519 key.
- Secrets use ECIES: a fresh ephemeral X25519 key per secret, HKDF-SHA256 of the shared secret,
  AES-256-GCM with ``aad = "<device id>:<dotted config path>"`` so a blob cannot be replayed
  under another device or moved to another key (e.g. a password shown as a display name).
- Optional ``local_reset``: dotted paths (``audio.ptime``, ``accounts.line1.display_name``) the
  admin forced back to the central value (``render --force``); the phone deletes them from its
  local changes (`drop_local_paths`) before layering those over the config.
- Firmware manifests (`FIRMWARE_FORMAT`) are signed the same way with the same key.
"""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import json
import os
import re
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

CONFIG_FORMAT = "deskphone-config/1"
FIRMWARE_FORMAT = "deskphone-firmware/1"
SECRET_ALG = "X25519-HKDF-SHA256-AES256GCM"
DEVICE_ID_RE = re.compile(r"^[a-z0-9-]{1,63}$")
LOCAL_PATH_RE = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)+$")
_HKDF_INFO = b"deskphone secret v1"
_RAW = serialization.Encoding.Raw, serialization.PublicFormat.Raw


class DocumentError(Exception):
    """A document or secret that must not be used; ``reason`` says why (for logs and status)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --- encoding helpers -------------------------------------------------------------------------


def canonical(obj: Any) -> bytes:
    """The exact bytes that are signed: sorted keys, no whitespace, UTF-8."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise DocumentError(f"bad format: {what} must be a base64 string")
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise DocumentError(f"bad format: {what} is not valid base64") from None


def key_id(public: Ed25519PublicKey | X25519PublicKey) -> str:
    """Short fingerprint of a public key: first 16 hex digits of sha256(raw key)."""
    return hashlib.sha256(public.public_bytes(*_RAW)).hexdigest()[:16]


def format_time(ts: int | float) -> str:
    """Unix time as ISO 8601 UTC, for reasons humans read."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def secret_aad(device_id: str, path: str) -> str:
    """Associated data binding a secret blob to its device and config path."""
    return f"{device_id}:{path}"


# --- PEM helpers (bytes in, keys out: the caller does the file I/O) -----------------------------


def private_pem(key: Ed25519PrivateKey | X25519PrivateKey) -> bytes:
    """Unencrypted PKCS#8 PEM (files are protected by 0600 permissions, not a passphrase)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_pem(key: Ed25519PublicKey | X25519PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_ed25519_private(pem: bytes) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise DocumentError("bad key: not an Ed25519 private key")
    return key


def load_ed25519_public(pem: bytes) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(pem)
    if not isinstance(key, Ed25519PublicKey):
        raise DocumentError("bad key: not an Ed25519 public key")
    return key


def load_x25519_private(pem: bytes) -> X25519PrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, X25519PrivateKey):
        raise DocumentError("bad key: not an X25519 private key")
    return key


def load_x25519_public(pem: bytes) -> X25519PublicKey:
    key = serialization.load_pem_public_key(pem)
    if not isinstance(key, X25519PublicKey):
        raise DocumentError("bad key: not an X25519 public key")
    return key


# --- signing ------------------------------------------------------------------------------------


def sign_document(payload: dict[str, Any], private: Ed25519PrivateKey) -> dict[str, Any]:
    """Wrap ``payload`` with an Ed25519 signature over its canonical bytes."""
    return {
        "payload": payload,
        "signature": _b64(private.sign(canonical(payload))),
        "key_id": key_id(private.public_key()),
    }


def verify_signature(doc: Any, public: Ed25519PublicKey) -> dict[str, Any]:
    """Check the envelope and signature only; returns the (now authentic) payload."""
    if not isinstance(doc, dict) or set(doc) != {"payload", "signature", "key_id"}:
        raise DocumentError("bad format: expected an object with payload, signature, key_id")
    payload = doc["payload"]
    if not isinstance(payload, dict):
        raise DocumentError("bad format: payload must be an object")
    signature = _unb64(doc["signature"], "signature")
    trusted = key_id(public)
    if doc["key_id"] != trusted:
        raise DocumentError(
            f"signature does not verify: signed by key {doc['key_id']!r}, "
            f"the trusted key is {trusted}"
        )
    try:
        public.verify(signature, canonical(payload))
    except InvalidSignature:
        raise DocumentError("signature does not verify") from None
    return payload


def _int_field(payload: dict[str, Any], name: str) -> int:
    value = payload.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise DocumentError(f"bad format: {name} must be a non-negative integer")
    return value


def check_config_payload(payload: dict[str, Any]) -> None:
    """Shape of a config payload (raises DocumentError 'bad format: ...')."""
    if payload.get("format") != CONFIG_FORMAT:
        raise DocumentError(f"bad format: format must be {CONFIG_FORMAT!r}")
    device = payload.get("device")
    if not isinstance(device, str) or not DEVICE_ID_RE.match(device):
        raise DocumentError("bad format: device must be a device id ([a-z0-9-]{1,63})")
    for name in ("serial", "issued_at", "expires_at"):
        _int_field(payload, name)
    if not isinstance(payload.get("config"), dict):
        raise DocumentError("bad format: config must be an object")
    secrets = payload.get("secrets", {})
    if not isinstance(secrets, dict) or not all(
        isinstance(k, str) and isinstance(v, dict) for k, v in secrets.items()
    ):
        raise DocumentError("bad format: secrets must map config paths to encrypted blobs")
    reset = payload.get("local_reset", [])
    if not isinstance(reset, list) or not all(
        isinstance(p, str) and LOCAL_PATH_RE.match(p) for p in reset
    ):
        raise DocumentError("bad format: local_reset must be a list of dotted config paths")
    unknown = set(payload) - {
        "format",
        "device",
        "serial",
        "issued_at",
        "expires_at",
        "config",
        "secrets",
        "local_reset",
    }
    if unknown:
        raise DocumentError(f"bad format: unknown payload keys {sorted(unknown)}")


def verify_document(
    doc: Any, public: Ed25519PublicKey, *, device_id: str, min_serial: int, now: float
) -> dict[str, Any]:
    """Authenticate a config document for this device and return its payload.

    Refused (DocumentError) when the signature does not verify, the payload is malformed, it
    was issued for another device, its serial is below ``min_serial`` (the serial the phone has
    applied; the same serial again is fine, it is a re-fetch) or it has expired at ``now``.
    """
    payload = verify_signature(doc, public)
    check_config_payload(payload)
    if payload["device"] != device_id:
        raise DocumentError(f"issued for device {payload['device']}, this is {device_id}")
    if payload["serial"] < min_serial:
        raise DocumentError(
            f"serial {payload['serial']} is older than the applied serial {min_serial}"
        )
    if now >= payload["expires_at"]:
        raise DocumentError(f"expired at {format_time(payload['expires_at'])}")
    return payload


def firmware_manifest(version: str, data: bytes, issued_at: int) -> dict[str, Any]:
    """The payload describing a firmware bundle (to be signed with `sign_document`)."""
    return {
        "format": FIRMWARE_FORMAT,
        "version": version,
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
        "issued_at": issued_at,
    }


def verify_manifest(doc: Any, public: Ed25519PublicKey) -> dict[str, Any]:
    """Authenticate a firmware manifest and check its shape; returns the payload."""
    payload = verify_signature(doc, public)
    if payload.get("format") != FIRMWARE_FORMAT:
        raise DocumentError(f"bad format: format must be {FIRMWARE_FORMAT!r}")
    version = payload.get("version")
    if not isinstance(version, str) or not re.fullmatch(r"[0-9A-Za-z.+_-]{1,64}", version):
        raise DocumentError("bad format: version must be 1-64 of 0-9 A-Z a-z . + _ -")
    digest = payload.get("sha256")
    if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise DocumentError("bad format: sha256 must be 64 lowercase hex digits")
    _int_field(payload, "size")
    _int_field(payload, "issued_at")
    return payload


def check_firmware(manifest: dict[str, Any], data: bytes) -> None:
    """The bundle bytes are the ones the (verified) manifest names."""
    if len(data) != manifest["size"]:
        raise DocumentError(f"firmware size {len(data)} != manifest size {manifest['size']}")
    if hashlib.sha256(data).hexdigest() != manifest["sha256"]:
        raise DocumentError("firmware sha256 does not match the manifest")


# --- secrets ------------------------------------------------------------------------------------


def _derive(shared: bytes, epk: bytes, recipient: bytes) -> bytes:
    # Salt binds the key to both public keys (as in ECIES/HPKE), so a blob is only ever opened
    # with the key pair it was made for.
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=epk + recipient, info=_HKDF_INFO).derive(
        shared
    )


def encrypt_secret(plaintext: str, device_public: X25519PublicKey, aad: str) -> dict[str, str]:
    """Encrypt one secret to a device (fresh ephemeral key and nonce each time)."""
    ephemeral = X25519PrivateKey.generate()
    epk = ephemeral.public_key().public_bytes(*_RAW)
    key = _derive(ephemeral.exchange(device_public), epk, device_public.public_bytes(*_RAW))
    nonce = os.urandom(12)
    ct = AESGCM(key).encrypt(nonce, plaintext.encode(), aad.encode())
    return {"alg": SECRET_ALG, "epk": _b64(epk), "nonce": _b64(nonce), "ct": _b64(ct)}


def decrypt_secret(blob: Any, device_private: X25519PrivateKey, aad: str) -> str:
    """Open a secret made by `encrypt_secret` for this device and ``aad``."""
    if not isinstance(blob, dict) or blob.get("alg") != SECRET_ALG:
        raise DocumentError(f"bad format: secret for {aad} is not an {SECRET_ALG} blob")
    epk = _unb64(blob.get("epk"), "secret epk")
    nonce = _unb64(blob.get("nonce"), "secret nonce")
    ct = _unb64(blob.get("ct"), "secret ct")
    if len(epk) != 32 or len(nonce) != 12:
        raise DocumentError(f"bad format: secret for {aad} has a bad key or nonce length")
    recipient = device_private.public_key().public_bytes(*_RAW)
    try:
        shared = device_private.exchange(X25519PublicKey.from_public_bytes(epk))
        key = _derive(shared, epk, recipient)
        return AESGCM(key).decrypt(nonce, ct, aad.encode()).decode()
    except (InvalidTag, ValueError, UnicodeDecodeError):
        raise DocumentError(
            f"secret {aad} does not decrypt (not for this device key, or moved or altered)"
        ) from None


# --- secrets <-> config dicts -------------------------------------------------------------------

# Keys that are always sent encrypted, by section; accounts are addressed by their id.
SECRET_KEYS: dict[str, tuple[str, ...]] = {"accounts": ("password",), "api": ("token",)}


def _account_id(account: dict[str, Any], index: int) -> str:
    value = account.get("id", f"line{index + 1}")
    return str(value)


def split_secrets(
    config: dict[str, Any], device_id: str, device_public: X25519PublicKey
) -> tuple[dict[str, Any], dict[str, dict[str, str]]]:
    """Move every secret (`SECRET_KEYS`) out of ``config`` into encrypted blobs.

    Returns (config without secrets, {"accounts.<id>.password": blob, ...}); the input is not
    modified.
    """
    clean = copy.deepcopy(config)
    secrets: dict[str, dict[str, str]] = {}
    accounts = clean.get("accounts", [])
    if isinstance(accounts, list):
        for i, account in enumerate(accounts):
            if not isinstance(account, dict):
                continue
            for key in SECRET_KEYS["accounts"]:
                if key in account:
                    path = f"accounts.{_account_id(account, i)}.{key}"
                    value = account.pop(key)
                    secrets[path] = encrypt_secret(
                        str(value), device_public, secret_aad(device_id, path)
                    )
    for section, keys in SECRET_KEYS.items():
        table = clean.get(section)
        if section == "accounts" or not isinstance(table, dict):
            continue
        for key in keys:
            if key in table:
                path = f"{section}.{key}"
                secrets[path] = encrypt_secret(
                    str(table.pop(key)), device_public, secret_aad(device_id, path)
                )
    return clean, secrets


def merge_secrets(
    config: dict[str, Any],
    secrets: dict[str, Any],
    device_private: X25519PrivateKey,
    device_id: str,
) -> dict[str, Any]:
    """Decrypt ``secrets`` and put them at their dotted paths in a copy of ``config``.

    ``accounts.<id>.<key>`` names the account whose ``id`` (default ``line<N>``) is <id>; any
    other path walks tables. A path that names nothing is a DocumentError (never silently lost).
    """
    merged = copy.deepcopy(config)
    for path, blob in secrets.items():
        value = decrypt_secret(blob, device_private, secret_aad(device_id, path))
        parts = path.split(".")
        if len(parts) < 2 or not all(parts):
            raise DocumentError(f"bad format: secret path {path!r}")
        if parts[0] == "accounts":
            if len(parts) != 3:
                raise DocumentError(f"bad format: secret path {path!r} is not accounts.<id>.<key>")
            accounts = merged.get("accounts")
            target = None
            if isinstance(accounts, list):
                for i, account in enumerate(accounts):
                    if isinstance(account, dict) and _account_id(account, i) == parts[1]:
                        target = account
                        break
            if target is None:
                raise DocumentError(f"secret {path} names no account {parts[1]!r} in the config")
            target[parts[2]] = value
            continue
        node: Any = merged
        for part in parts[:-1]:
            node = node.setdefault(part, {}) if isinstance(node, dict) else None
            if not isinstance(node, dict):
                raise DocumentError(f"secret {path} does not fit the config (not a table)")
        node[parts[-1]] = value
    return merged


def drop_local_paths(local: dict[str, Any], paths: list[str] | set[str]) -> dict[str, Any]:
    """A copy of a local-changes layer without ``paths`` (``local_reset``); tables and accounts
    left empty are removed. ``accounts.<id>.<key>`` names the account by id (default line<N>)."""
    out = copy.deepcopy(local)
    for path in paths:
        parts = path.split(".")
        if parts[0] == "accounts" and isinstance(out.get("accounts"), list) and len(parts) > 2:
            for i, account in enumerate(out["accounts"]):
                if isinstance(account, dict) and _account_id(account, i) == parts[1]:
                    _drop(account, parts[2:])
            out["accounts"] = [
                a for a in out["accounts"] if not (isinstance(a, dict) and set(a) <= {"id"})
            ]
            if not out["accounts"]:
                del out["accounts"]
        else:
            _drop(out, parts)
    return out


def _drop(node: dict[str, Any], parts: list[str]) -> None:
    if len(parts) == 1:
        node.pop(parts[0], None)
        return
    child = node.get(parts[0])
    if isinstance(child, dict):
        _drop(child, parts[1:])
        if not child:
            del node[parts[0]]
