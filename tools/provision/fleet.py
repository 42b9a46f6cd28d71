"""A fleet directory: its keys, its inventory, its config layers, and rendering the signed tree.

Layout (all written atomically; private keys 0600)::

    FLEET/ca.crt ca.key                 fleet CA (signs the server and every device certificate)
    FLEET/server.crt server.key         the config server's certificate (hosts given at init)
    FLEET/config-signing.key .pub       Ed25519 key that signs config documents and manifests
    FLEET/inventory.json                devices: id, name, MAC, model, public keys, last serial
    FLEET/config/common.toml            fleet-wide layer
    FLEET/config/models/<model>.toml    per-model layer
    FLEET/config/devices/<id>.toml      per-device layer (accounts usually live here)
    FLEET/config/local/<id>.toml        changes made on the phone (see layers.py)
    FLEET/firmware/<version>.tar.gz     published firmware bundles
    FLEET/status/<id>.json              the phones' last status reports (written by serve)
    FLEET/www/                          default output of `render` (the static tree)

The device private keys are never stored here: `deskphone-flash` writes them to the board only.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from firmware.provisioning import document as doc
from firmware.provisioning.config import ConfigError, parse_config
from tools.provision import layers, pki

log = logging.getLogger(__name__)

INVENTORY_FORMAT = "deskphone-inventory/1"
MAC_RE = re.compile(r"^[0-9a-fA-F]{2}([:-]?[0-9a-fA-F]{2}){5}$")
VERSION_RE = re.compile(r"^[0-9A-Za-z.+_-]{1,64}$")
DEFAULT_VALIDITY = 30 * 86400


class FleetError(Exception):
    """An admin mistake or a fleet that cannot do what was asked; the message says which."""


def device_id_for(mac: str | None, name: str | None) -> str:
    """Device id: the lowercase MAC without separators, or an admin-given name."""
    if name:
        if not doc.DEVICE_ID_RE.match(name):
            raise FleetError(f"device id {name!r} must be 1-63 of a-z, 0-9 and '-'")
        return name
    if mac:
        return normalise_mac(mac)
    raise FleetError("give a MAC address (--mac) or a device id (--id)")


def normalise_mac(mac: str) -> str:
    if not MAC_RE.match(mac):
        raise FleetError(f"MAC address {mac!r} must be six hex octets (b8:27:eb:12:34:56)")
    return re.sub(r"[:-]", "", mac).lower()


def _read_toml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise FleetError(f"{path}: not valid TOML: {e}") from None


@dataclass
class RenderResult:
    written: list[str] = field(default_factory=list)  # device ids with a new document
    unchanged: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)  # device id -> reason
    conflicts: dict[str, dict[str, tuple[Any, Any]]] = field(default_factory=dict)
    firmware: list[str] = field(default_factory=list)


class Fleet:
    """One fleet directory (see the module docstring for its layout)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    # --- paths ---------------------------------------------------------------------------------
    @property
    def inventory_path(self) -> Path:
        return self.root / "inventory.json"

    @property
    def ca_cert_path(self) -> Path:
        return self.root / "ca.crt"

    @property
    def ca_key_path(self) -> Path:
        return self.root / "ca.key"

    @property
    def server_cert_path(self) -> Path:
        return self.root / "server.crt"

    @property
    def server_key_path(self) -> Path:
        return self.root / "server.key"

    @property
    def signing_key_path(self) -> Path:
        return self.root / "config-signing.key"

    @property
    def signing_pub_path(self) -> Path:
        return self.root / "config-signing.pub"

    @property
    def www(self) -> Path:
        return self.root / "www"

    @property
    def status_dir(self) -> Path:
        return self.root / "status"

    def layer_path(self, kind: str, name: str = "") -> Path:
        if kind == "common":
            return self.root / "config" / "common.toml"
        return self.root / "config" / kind / f"{name}.toml"

    # --- init ----------------------------------------------------------------------------------
    def init(self, hosts: list[str], name: str = "deskphone fleet CA") -> None:
        """Create the CA, the server certificate and the signing key (refuses to overwrite)."""
        if self.ca_key_path.exists() or self.signing_key_path.exists():
            raise FleetError(f"{self.root} already holds a fleet (ca.key / config-signing.key)")
        self.root.mkdir(parents=True, exist_ok=True)
        ca_key, ca_cert = pki.make_ca(name)
        pki.atomic_write(self.ca_key_path, pki.key_pem(ca_key), 0o600)
        pki.atomic_write(self.ca_cert_path, pki.cert_pem(ca_cert))
        self.issue_server_cert(hosts)
        signing = Ed25519PrivateKey.generate()
        pki.atomic_write(self.signing_key_path, doc.private_pem(signing), 0o600)
        pki.atomic_write(self.signing_pub_path, doc.public_pem(signing.public_key()))
        common = self.layer_path("common")
        if not common.exists():
            pki.atomic_write(common, b"# fleet-wide settings (phone.toml keys), lowest layer\n")
        if not self.inventory_path.exists():
            self.save_inventory({"format": INVENTORY_FORMAT, "devices": {}})
        log.info("fleet initialised in %s (server cert for %s)", self.root, ", ".join(hosts))

    def issue_server_cert(self, hosts: list[str]) -> None:
        key, cert = pki.server_cert(*self.ca(), hosts)
        pki.atomic_write(self.server_key_path, pki.key_pem(key), 0o600)
        pki.atomic_write(self.server_cert_path, pki.cert_pem(cert))

    def ca(self) -> tuple[Any, Any]:
        try:
            return (
                pki.load_key(self.ca_key_path.read_bytes()),
                pki.load_cert(self.ca_cert_path.read_bytes()),
            )
        except FileNotFoundError:
            raise FleetError(
                f"{self.root} is not a fleet: run `deskphone-provision init`"
            ) from None

    def signing_key(self) -> Ed25519PrivateKey:
        try:
            return doc.load_ed25519_private(self.signing_key_path.read_bytes())
        except FileNotFoundError:
            raise FleetError(
                f"{self.root} is not a fleet: run `deskphone-provision init`"
            ) from None

    # --- inventory -----------------------------------------------------------------------------
    def inventory(self) -> dict[str, Any]:
        try:
            data = json.loads(self.inventory_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FleetError(
                f"{self.root} is not a fleet: run `deskphone-provision init`"
            ) from None
        if data.get("format") != INVENTORY_FORMAT or not isinstance(data.get("devices"), dict):
            raise FleetError(f"{self.inventory_path}: not a {INVENTORY_FORMAT} inventory")
        return data

    def save_inventory(self, data: dict[str, Any]) -> None:
        text = json.dumps(data, indent=2, sort_keys=True) + "\n"
        pki.atomic_write(self.inventory_path, text.encode())

    def device(self, device_id: str) -> dict[str, Any]:
        devices = self.inventory()["devices"]
        if device_id not in devices:
            raise FleetError(f"device {device_id!r} is not in the inventory (add-device first)")
        return dict(devices[device_id])

    def add_device(
        self,
        *,
        mac: str | None = None,
        device_id: str | None = None,
        name: str | None = None,
        model: str | None = None,
        accounts: list[dict[str, Any]] | None = None,
        x25519_public: bytes | None = None,
        update: bool = False,
    ) -> str:
        """Register (or with ``update`` change) a device; accounts go to its device layer."""
        did = device_id_for(mac, device_id)
        inv = self.inventory()
        devices = inv["devices"]
        if did in devices and not update:
            raise FleetError(f"device {did} is already in the inventory (use --update)")
        rec = dict(devices.get(did, {"id": did, "serial": 0, "added_at": int(time.time())}))
        if mac:
            rec["mac"] = normalise_mac(mac)
        if name or "name" not in rec:
            rec["name"] = name or did
        if model:
            if not doc.DEVICE_ID_RE.match(model):
                raise FleetError(f"model {model!r} must be 1-63 of a-z, 0-9 and '-'")
            rec["model"] = model
        if x25519_public is not None:
            try:
                key = doc.load_x25519_public(x25519_public)
            except (ValueError, doc.DocumentError) as e:
                raise FleetError(f"device X25519 public key: {e}") from None
            rec["x25519_public"] = doc.public_pem(key).decode()
        devices[did] = rec
        if accounts:
            layer_path = self.layer_path("devices", did)
            layer = _read_toml(layer_path)
            layer = layers.merge(layer, {"accounts": accounts})
            pki.atomic_write(layer_path, tomli_w.dumps(layer).encode(), 0o600)
        elif not self.layer_path("devices", did).exists():
            pki.atomic_write(
                self.layer_path("devices", did),
                tomli_w.dumps({"device": {"name": rec["name"]}}).encode(),
                0o600,
            )
        self.save_inventory(inv)
        return did

    def remove_device(self, device_id: str) -> None:
        """Take a device out of the fleet: the server refuses it from now on (its certificate
        still verifies, so the inventory is the revocation list) and the next render deletes
        its document. Its config layers stay for a later re-add."""
        inv = self.inventory()
        if device_id not in inv["devices"]:
            raise FleetError(f"device {device_id!r} is not in the inventory")
        del inv["devices"][device_id]
        self.save_inventory(inv)
        (self.status_dir / f"{device_id}.json").unlink(missing_ok=True)

    def record_identity(
        self, device_id: str, *, cert_pem: bytes, x25519_public_pem: bytes, flashed_to: str
    ) -> None:
        """Store a freshly flashed device's public identity (certificate and X25519 key)."""
        inv = self.inventory()
        rec = inv["devices"][device_id]
        cert = pki.load_cert(cert_pem)
        rec["cert_sha256"] = pki.fingerprint(cert)
        rec["cert_sha1"] = cert.fingerprint(hashes.SHA1()).hex()  # nginx $ssl_client_fingerprint
        rec["cert_not_after"] = int(cert.not_valid_after_utc.timestamp())
        rec["x25519_public"] = x25519_public_pem.decode()
        rec["flashed_at"] = int(time.time())
        rec["flashed_to"] = flashed_to
        self.save_inventory(inv)

    # --- layers and rendering ------------------------------------------------------------------
    def layers_for(self, device_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """(central = common+model+device, local) for one device."""
        rec = self.device(device_id)
        stack = [self.layer_path("common")]
        if rec.get("model"):
            stack.append(self.layer_path("models", rec["model"]))
        stack.append(self.layer_path("devices", device_id))
        central = layers.merge_all([_read_toml(p) for p in stack])
        return central, _read_toml(self.layer_path("local", device_id))

    def set_local(self, device_id: str, changes: dict[str, Any]) -> None:
        """Replace the local layer of a device with what the phone reported.

        A path the admin forced back (``local_reset``) stays reset until a report no longer
        carries it: from then on the phone has dropped it, and a later local change to it is a
        new local change again.
        """
        _, secrets = doc.split_secrets(changes, device_id, _DUMMY_X25519)
        if secrets:
            raise FleetError(f"local changes may not carry secrets ({', '.join(sorted(secrets))})")
        pki.atomic_write(self.layer_path("local", device_id), tomli_w.dumps(changes).encode())
        inv = self.inventory()
        rec = inv["devices"].get(device_id)
        if rec and rec.get("local_reset"):
            still = sorted(set(rec["local_reset"]) & layers.leaves(changes))
            if still != rec["local_reset"]:
                rec["local_reset"] = still
                self.save_inventory(inv)

    def effective_config(
        self, device_id: str, rec: dict[str, Any], *, force: bool = False
    ) -> tuple[dict[str, Any], dict[str, tuple[Any, Any]]]:
        """(merged config, conflicts kept local) for the inventory record ``rec``.

        With ``force`` the conflicting local paths are dropped from the local layer and added
        to ``rec["local_reset"]`` (the caller saves the inventory).
        """
        central, local = self.layers_for(device_id)
        reset = set(rec.get("local_reset", []))
        local = layers.drop_paths(local, reset)
        clash = layers.conflicts(central, local)
        if clash and force:
            local = layers.drop_paths(local, set(clash))
            pki.atomic_write(self.layer_path("local", device_id), tomli_w.dumps(local).encode())
            rec["local_reset"] = sorted(reset | set(clash))
            log.warning("device %s: local changes %s reset (--force)", device_id, sorted(clash))
            clash = {}
        merged = layers.merge(central, local)
        merged.setdefault("device", {}).setdefault("name", rec.get("name", device_id))
        return merged, clash

    def render(
        self,
        out: str | Path | None = None,
        *,
        validity: int = DEFAULT_VALIDITY,
        force: bool = False,
        now: int | None = None,
    ) -> RenderResult:
        """Write every device's signed document and the signed firmware manifests into ``out``."""
        out = Path(out) if out is not None else self.www
        now = int(time.time()) if now is None else now
        signing = self.signing_key()
        mac_key = doc.private_pem(signing)  # keys the change-detection hash (no plaintext hash)
        result = RenderResult()
        inv = self.inventory()
        devices_dir = out / "devices"
        devices_dir.mkdir(parents=True, exist_ok=True)
        for did in sorted(inv["devices"]):
            rec = inv["devices"][did]
            try:
                merged, clash = self.effective_config(did, rec, force=force)
                if clash:
                    result.conflicts[did] = clash
                parse_config(merged, file=f"device {did}", base_dir=Path("/"))
                wanted = merged.get("firmware", {}).get("version")
                if wanted and not (self.root / "firmware" / f"{wanted}.tar.gz").is_file():
                    raise FleetError(
                        f"device {did}: firmware.version: {wanted} is not published "
                        "(deskphone-provision publish-firmware)"
                    )
            except ConfigError as e:
                result.errors[did] = str(e)
                continue
            except FleetError as e:
                result.errors[did] = str(e)
                continue
            reset = list(rec.get("local_reset", []))
            content = doc.canonical({"config": merged, "local_reset": reset})
            digest = hmac.new(mac_key, content, hashlib.sha256).hexdigest()
            target = devices_dir / f"{did}.json"
            if (
                digest == rec.get("config_hmac")
                and target.exists()
                and rec.get("expires_at", 0) - now > validity // 2
            ):
                result.unchanged.append(did)
                continue
            if not rec.get("x25519_public"):
                result.errors[did] = (
                    f"device {did} has no X25519 public key yet: flash it with deskphone-flash "
                    "or give add-device --update --x25519-public"
                )
                continue
            device_pub = doc.load_x25519_public(rec["x25519_public"].encode())
            clean, secrets = doc.split_secrets(merged, did, device_pub)
            serial = int(rec.get("serial", 0)) + 1
            payload = {
                "format": doc.CONFIG_FORMAT,
                "device": did,
                "serial": serial,
                "issued_at": now,
                "expires_at": now + validity,
                "config": clean,
                "secrets": secrets,
            }
            if reset:
                payload["local_reset"] = reset
            signed = doc.sign_document(payload, signing)
            pki.atomic_write(target, (json.dumps(signed, indent=1) + "\n").encode())
            rec.update(serial=serial, config_hmac=digest, expires_at=now + validity)
            result.written.append(did)
        for stale in devices_dir.glob("*.json"):
            if stale.stem not in inv["devices"]:
                stale.unlink()  # a device removed from the inventory loses its document
        self.save_inventory(inv)
        result.firmware = self._render_firmware(out, signing, now)
        return result

    def publish_firmware(self, version: str, data: bytes) -> Path:
        if not VERSION_RE.match(version):
            raise FleetError(f"firmware version {version!r} must be 1-64 of 0-9 A-Z a-z . + _ -")
        path = self.root / "firmware" / f"{version}.tar.gz"
        pki.atomic_write(path, data)
        return path

    def _render_firmware(self, out: Path, signing: Ed25519PrivateKey, now: int) -> list[str]:
        versions: list[str] = []
        src_dir = self.root / "firmware"
        if not src_dir.is_dir():
            return versions
        for src in sorted(src_dir.glob("*.tar.gz")):
            version = src.name[: -len(".tar.gz")]
            data = src.read_bytes()
            dst = out / "firmware" / src.name
            manifest_path = out / "firmware" / f"{version}.json"
            if not dst.exists() or dst.read_bytes() != data:
                pki.atomic_write(dst, data)
            current = None
            if manifest_path.exists():
                try:
                    current = doc.verify_manifest(
                        json.loads(manifest_path.read_text()), signing.public_key()
                    )
                except (ValueError, doc.DocumentError):
                    current = None
            if current is None or current["sha256"] != hashlib.sha256(data).hexdigest():
                signed = doc.sign_document(doc.firmware_manifest(version, data, now), signing)
                pki.atomic_write(manifest_path, (json.dumps(signed, indent=1) + "\n").encode())
            versions.append(version)
        return versions

    # --- status --------------------------------------------------------------------------------
    def statuses(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        if self.status_dir.is_dir():
            for path in sorted(self.status_dir.glob("*.json")):
                try:
                    out[path.stem] = json.loads(path.read_text(encoding="utf-8"))
                except ValueError:
                    continue
        return out


# Only used to detect secret keys in local changes (nothing is ever sent to it).
_DUMMY_X25519 = X25519PrivateKey.generate().public_key()
