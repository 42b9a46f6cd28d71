"""The shared provisioning document format: signatures, anti-rollback, expiry, device binding,
and secrets that only the right device can open at the right place."""

from __future__ import annotations

import copy
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from firmware.provisioning import document as d

NOW = 1_800_000_000


def _payload(**over: object) -> dict:
    p = {
        "format": d.CONFIG_FORMAT,
        "device": "b827eb123456",
        "serial": 5,
        "issued_at": NOW - 10,
        "expires_at": NOW + 86400,
        "config": {"device": {"name": "Reception"}, "accounts": [{"id": "line1", "user": "1001"}]},
        "secrets": {},
    }
    p.update(over)
    return p


@pytest.fixture(scope="module")
def signer() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def _verify(doc: dict, signer: Ed25519PrivateKey, **kw: object) -> dict:
    args: dict = {"device_id": "b827eb123456", "min_serial": 0, "now": NOW}
    args.update(kw)
    return d.verify_document(doc, signer.public_key(), **args)


def test_canonical_is_sorted_compact_utf8() -> None:
    assert d.canonical({"b": 1, "a": ["é", {"d": 2, "c": None}]}) == (
        '{"a":["é",{"c":null,"d":2}],"b":1}'.encode()
    )


def test_sign_and_verify_roundtrip_survives_reencoding(signer: Ed25519PrivateKey) -> None:
    doc = d.sign_document(_payload(), signer)
    assert doc["key_id"] == d.key_id(signer.public_key()) and len(doc["key_id"]) == 16
    # A web server or CDN may pretty-print or reorder: the canonical bytes are what count.
    reencoded = json.loads(json.dumps(doc, indent=4, sort_keys=False))
    assert _verify(reencoded, signer) == _payload()


def test_tampered_payload_is_refused(signer: Ed25519PrivateKey) -> None:
    doc = d.sign_document(_payload(), signer)
    doc["payload"]["config"]["device"]["name"] = "Evil"
    with pytest.raises(d.DocumentError, match="^signature does not verify$"):
        _verify(doc, signer)


def test_other_signing_key_is_refused_naming_both_keys(signer: Ed25519PrivateKey) -> None:
    other = Ed25519PrivateKey.generate()
    doc = d.sign_document(_payload(), other)
    with pytest.raises(d.DocumentError, match="signature does not verify: signed by key"):
        _verify(doc, signer)
    # Same key id claimed, wrong signature bytes.
    doc["key_id"] = d.key_id(signer.public_key())
    with pytest.raises(d.DocumentError, match="^signature does not verify$"):
        _verify(doc, signer)


def test_older_serial_refused_same_serial_accepted(signer: Ed25519PrivateKey) -> None:
    doc = d.sign_document(_payload(serial=4), signer)
    with pytest.raises(d.DocumentError, match="^serial 4 is older than the applied serial 5$"):
        _verify(doc, signer, min_serial=5)
    assert _verify(doc, signer, min_serial=4)["serial"] == 4


def test_expired_refused_with_time(signer: Ed25519PrivateKey) -> None:
    doc = d.sign_document(_payload(expires_at=NOW), signer)
    with pytest.raises(d.DocumentError, match="^expired at 2027-01-15T08:00:00Z$"):
        _verify(doc, signer)


def test_other_device_refused(signer: Ed25519PrivateKey) -> None:
    doc = d.sign_document(_payload(device="desk-42"), signer)
    with pytest.raises(d.DocumentError, match="^issued for device desk-42, this is b827eb123456$"):
        _verify(doc, signer)


@pytest.mark.parametrize(
    ("doc", "reason"),
    [
        ([], "expected an object"),
        ({"payload": {}, "signature": "x"}, "expected an object"),
        ({"payload": 1, "signature": "", "key_id": ""}, "payload must be an object"),
        ({"payload": {}, "signature": "!!", "key_id": ""}, "signature is not valid base64"),
    ],
)
def test_bad_envelopes(signer: Ed25519PrivateKey, doc: object, reason: str) -> None:
    with pytest.raises(d.DocumentError, match=f"^bad format: .*{reason}"):
        d.verify_document(doc, signer.public_key(), device_id="x", min_serial=0, now=NOW)


@pytest.mark.parametrize(
    ("over", "reason"),
    [
        ({"format": "other/1"}, "format must be"),
        ({"device": "B8:27"}, "device must be a device id"),
        ({"serial": True}, "serial must be a non-negative integer"),
        ({"serial": -1}, "serial must be"),
        ({"expires_at": "never"}, "expires_at must be"),
        ({"config": []}, "config must be an object"),
        ({"secrets": {"a": "plain"}}, "secrets must map"),
        ({"extra": 1}, "unknown payload keys"),
        ({"local_reset": "audio.ptime"}, "local_reset must be a list"),
        ({"local_reset": ["ptime"]}, "local_reset must be a list of dotted"),
    ],
)
def test_bad_payloads_are_signed_but_still_refused(
    signer: Ed25519PrivateKey, over: dict, reason: str
) -> None:
    doc = d.sign_document(_payload(**over), signer)
    with pytest.raises(d.DocumentError, match=f"^bad format: {reason}"):
        _verify(doc, signer)


def test_secret_roundtrip_and_binding() -> None:
    device = X25519PrivateKey.generate()
    aad = d.secret_aad("b827eb123456", "accounts.line1.password")
    blob = d.encrypt_secret("s3cret-ü", device.public_key(), aad)
    assert set(blob) == {"alg", "epk", "nonce", "ct"} and blob["alg"] == d.SECRET_ALG
    assert "s3cret" not in json.dumps(blob)
    assert d.decrypt_secret(blob, device, aad) == "s3cret-ü"
    # Fresh ephemeral key and nonce every time.
    again = d.encrypt_secret("s3cret-ü", device.public_key(), aad)
    assert again["epk"] != blob["epk"] and again["ct"] != blob["ct"]
    # Moved to another path or another device, or opened with another key: refused.
    with pytest.raises(d.DocumentError, match="does not decrypt"):
        d.decrypt_secret(blob, device, d.secret_aad("b827eb123456", "device.name"))
    with pytest.raises(d.DocumentError, match="does not decrypt"):
        d.decrypt_secret(blob, device, d.secret_aad("desk-2", "accounts.line1.password"))
    with pytest.raises(d.DocumentError, match="does not decrypt"):
        d.decrypt_secret(blob, X25519PrivateKey.generate(), aad)
    bad = dict(blob, ct=blob["ct"][:-4] + "AAAA")
    with pytest.raises(d.DocumentError, match="does not decrypt"):
        d.decrypt_secret(bad, device, aad)
    with pytest.raises(d.DocumentError, match="bad format"):
        d.decrypt_secret({"alg": "none"}, device, aad)


def test_split_and_merge_secrets() -> None:
    device = X25519PrivateKey.generate()
    config = {
        "device": {"name": "R"},
        "accounts": [
            # '@' never occurs in base64 or in the JSON around it: no chance match (a bare
            # "pw1" once turned up inside a random ciphertext)
            {"user": "1001", "password": "p@ss-one", "domain": "d"},
            {"id": "sales", "user": "1002", "password": "p@ss-two", "domain": "d"},
        ],
        "api": {"token": "t" * 20},
    }
    original = copy.deepcopy(config)
    clean, secrets = d.split_secrets(config, "desk-1", device.public_key())
    assert config == original
    assert sorted(secrets) == ["accounts.line1.password", "accounts.sales.password", "api.token"]
    wire = json.dumps([clean, secrets])
    assert "@" not in wire and "password" not in json.dumps(clean)
    assert d.merge_secrets(clean, secrets, device, "desk-1") == original
    with pytest.raises(d.DocumentError, match="does not decrypt"):
        d.merge_secrets(clean, secrets, device, "desk-2")
    clean["accounts"][1]["id"] = "renamed"
    with pytest.raises(d.DocumentError, match="names no account 'sales'"):
        d.merge_secrets(clean, secrets, device, "desk-1")


def test_firmware_manifest_sign_verify_and_check(signer: Ed25519PrivateKey) -> None:
    data = b"firmware bytes" * 100
    doc = d.sign_document(d.firmware_manifest("0.2.0", data, NOW), signer)
    manifest = d.verify_manifest(doc, signer.public_key())
    assert manifest["size"] == len(data)
    d.check_firmware(manifest, data)
    with pytest.raises(d.DocumentError, match="sha256 does not match"):
        d.check_firmware(manifest, data[:-1] + b"X")
    doc["payload"]["version"] = "9.9.9"
    with pytest.raises(d.DocumentError, match="signature does not verify"):
        d.verify_manifest(doc, signer.public_key())
    cfg = d.sign_document(_payload(), signer)
    with pytest.raises(d.DocumentError, match="format must be 'deskphone-firmware/1'"):
        d.verify_manifest(cfg, signer.public_key())


def test_pem_helpers_roundtrip_and_refuse_wrong_types() -> None:
    ed = Ed25519PrivateKey.generate()
    x = X25519PrivateKey.generate()
    assert d.key_id(d.load_ed25519_private(d.private_pem(ed)).public_key()) == d.key_id(
        d.load_ed25519_public(d.public_pem(ed.public_key()))
    )
    assert d.load_x25519_public(d.public_pem(x.public_key())).public_bytes_raw() == (
        d.load_x25519_private(d.private_pem(x)).public_key().public_bytes_raw()
    )
    with pytest.raises(d.DocumentError, match="not an Ed25519 private key"):
        d.load_ed25519_private(d.private_pem(x))
    with pytest.raises(d.DocumentError, match="not an X25519 public key"):
        d.load_x25519_public(d.public_pem(ed.public_key()))


def test_local_reset_is_carried_and_applied(signer: Ed25519PrivateKey) -> None:
    doc = d.sign_document(
        _payload(local_reset=["audio.ptime", "accounts.line1.display_name"]), signer
    )
    payload = _verify(doc, signer)
    local = {
        "audio": {"ptime": 30},
        "logging": {"level": "debug"},
        "accounts": [{"id": "line1", "display_name": "Ann"}, {"id": "sales", "expires": 60}],
    }
    assert d.drop_local_paths(local, payload["local_reset"]) == {
        "logging": {"level": "debug"},
        "accounts": [{"id": "sales", "expires": 60}],
    }
    assert local["audio"] == {"ptime": 30}  # the input is not modified
