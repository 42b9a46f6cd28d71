"""The phone's provisioning state on disk: anti-rollback floor, last known good, trial candidate.

Layout of ``<state_dir>/provisioning/`` (every file replaced atomically, see files.py):

* ``floor.json``     - ``{"serial": N}``: the highest serial ever accepted (anti-rollback).
* ``good.json``      - the signed document of the last known good config (it registered).
* ``candidate.json`` - a verified newer document being tried.
* ``trial.json``     - ``{"serial": N}``: the candidate has been started; if the process dies
  before the candidate proves itself, the next start treats the trial as failed.
* ``rejected.json``  - ``{"serial": N, "reason": ...}``: a serial that failed its trial is not
  retried until the server issues a newer one.
* ``local.toml``     - changes made on the phone itself, layered over the provisioned config and
  kept separate so a re-provisioning does not wipe them.
* ``reset.json``     - ``{"at", "reason", "removed"}`` of the last factory reset (shown in status).

Documents are stored as received (signed, secrets still encrypted), so no plaintext password
ever rests on disk; they are verified again and decrypted at every start.

Apply sequence (each step a named fault point for the kill -9 tests)::

    config:verified -> candidate written -> floor written -> trial written -> phone restarted
    -> registered: good written, trial + candidate removed   (or rejected: back to good)
"""

from __future__ import annotations

import copy
import json
import logging
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from firmware.provisioning.config import ConfigError, PhoneConfig, parse_config
from firmware.provisioning.document import (
    DocumentError,
    drop_local_paths,
    load_ed25519_public,
    load_x25519_private,
    merge_secrets,
    verify_document,
)
from firmware.provisioning.files import atomic_remove, atomic_write, clean_temporaries, fault

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Keys:
    """The trust anchors and device key the store needs (loaded from the bootstrap files)."""

    signing: Ed25519PublicKey  # verifies config documents and firmware manifests
    secret: X25519PrivateKey  # opens the secrets encrypted to this device

    @classmethod
    def from_files(cls, signing_pem: Path, secret_pem: Path) -> Keys:
        return cls(
            load_ed25519_public(signing_pem.read_bytes()),
            load_x25519_private(secret_pem.read_bytes()),
        )


class ProvisioningError(Exception):
    """A document the phone refuses, with the reason shown in status and logs."""


@dataclass
class Loaded:
    """A stored document turned into a runnable config."""

    serial: int
    config: PhoneConfig
    document: dict[str, Any]
    trial: bool  # running it is a trial: it must register before it becomes last known good


def merge_layers(base: dict[str, Any], local: dict[str, Any]) -> dict[str, Any]:
    """Local changes over the provisioned config: tables merge, anything else is replaced;
    ``accounts`` entries merge by id so a local tweak of one line keeps the others."""
    out = copy.deepcopy(base)
    for key, value in local.items():
        if key == "accounts" and isinstance(value, list) and isinstance(out.get(key), list):
            by_id = {a.get("id", f"line{n + 1}"): a for n, a in enumerate(out[key])}
            for item in value:
                if isinstance(item, dict) and item.get("id") in by_id:
                    by_id[item["id"]].update(copy.deepcopy(item))
                else:
                    out[key].append(copy.deepcopy(item))
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_layers(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


class ConfigStore:
    """Crash-safe storage and the trial/rollback decisions for provisioned configs."""

    def __init__(
        self,
        state_dir: Path,
        device_id: str,
        keys: Keys,
        *,
        device_name: str | None = None,
    ) -> None:
        self.state_dir = state_dir
        self.dir = state_dir / "provisioning"
        self.device_id = device_id
        self.device_name = device_name or device_id
        self.keys = keys
        self.dir.mkdir(parents=True, exist_ok=True)

    # ----- small files ------------------------------------------------------------------------
    def _read(self, name: str) -> dict[str, Any] | None:
        try:
            data = json.loads((self.dir / name).read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:  # cannot happen with atomic writes; be robust anyway
            log.error("provisioning state %s unreadable (%s); ignoring it", name, e)
            return None
        return data if isinstance(data, dict) else None

    def _write(self, name: str, data: dict[str, Any], step: str) -> None:
        atomic_write(self.dir / name, json.dumps(data, sort_keys=True).encode(), step=step)

    @property
    def floor(self) -> int:
        data = self._read("floor.json") or {}
        serial = data.get("serial", 0)
        return serial if isinstance(serial, int) else 0

    def rejected(self) -> dict[str, Any] | None:
        return self._read("rejected.json")

    def local_layer(self) -> dict[str, Any]:
        path = self.dir / "local.toml"
        try:
            return tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            log.error("local changes %s unreadable (%s); ignoring them", path, e)
            return {}

    # ----- documents -> config ------------------------------------------------------------------
    def to_config(self, payload: dict[str, Any]) -> PhoneConfig:
        """Decrypt the secrets, layer local changes, validate; ProvisioningError on any problem."""
        try:
            cfg = merge_secrets(
                payload["config"], payload.get("secrets", {}), self.keys.secret, self.device_id
            )
        except DocumentError as e:
            raise ProvisioningError(e.reason) from None
        cfg = merge_layers(cfg, self.local_layer())
        device = cfg.setdefault("device", {})
        if isinstance(device, dict):
            device.setdefault("name", self.device_name)
            device.setdefault("state_dir", str(self.state_dir))
        serial = payload.get("serial")
        try:
            return parse_config(cfg, file=f"provisioned config serial {serial}", base_dir=self.dir)
        except ConfigError as e:
            raise ProvisioningError(f"invalid config: {e}") from None

    def _verify(self, doc: Any, min_serial: int, now: float) -> dict[str, Any]:
        try:
            return verify_document(
                doc, self.keys.signing, device_id=self.device_id, min_serial=min_serial, now=now
            )
        except DocumentError as e:
            raise ProvisioningError(e.reason) from None

    def check(self, doc: Any, now: float) -> tuple[dict[str, Any], PhoneConfig]:
        """Verify a fetched document (signature, device, expiry, anti-rollback) and validate it."""
        payload = self._verify(doc, self.floor, now)
        fault("config:verified")
        self.reconcile_local(payload)
        return payload, self.to_config(payload)

    def reconcile_local(self, payload: dict[str, Any]) -> list[str]:
        """Drop the local changes the admin forced back to the central value (``render
        --force``): the document lists them in ``local_reset``. The next status report then no
        longer carries them, which tells the server the reset arrived."""
        reset = [p for p in payload.get("local_reset", []) if isinstance(p, str)]
        local = self.local_layer()
        if not reset or not local:
            return []
        kept = drop_local_paths(local, reset)
        if kept == local:
            return []
        dropped = sorted(set(_leaves(local)) - set(_leaves(kept)))
        log.warning("local changes %s were forced back to the central values", dropped)
        atomic_write(self.dir / "local.toml", tomli_w.dumps(kept).encode())
        return dropped

    def _load(self, doc: dict[str, Any]) -> tuple[int, PhoneConfig]:
        """A stored document: signature and device re-checked, expiry and floor not (it was
        accepted before; an old last-known-good beats no config when offline)."""
        payload = doc.get("payload")
        issued = payload.get("issued_at", 0) if isinstance(payload, dict) else 0
        payload = self._verify(doc, 0, float(issued) if isinstance(issued, int) else 0.0)
        return int(payload["serial"]), self.to_config(payload)

    # ----- the apply sequence -------------------------------------------------------------------
    def stage(self, doc: dict[str, Any], serial: int) -> None:
        """Persist a verified newer document as the candidate and raise the floor to it."""
        self._write("candidate.json", doc, "config:candidate")
        self._write("floor.json", {"serial": serial}, "config:floor")

    def begin_trial(self, serial: int) -> None:
        self._write("trial.json", {"serial": serial}, "config:trial")

    def promote(self) -> None:
        """The candidate registered: it becomes the last known good."""
        candidate = self._read("candidate.json")
        if candidate is None:
            return
        self._write("good.json", candidate, "config:promote")
        atomic_remove(self.dir / "trial.json")
        fault("config:promoted")
        atomic_remove(self.dir / "candidate.json")

    def reject(self, serial: int, reason: str) -> None:
        """The candidate failed its trial: remember why, drop it (good.json stays)."""
        self._write("rejected.json", {"serial": serial, "reason": reason}, "config:reject")
        atomic_remove(self.dir / "trial.json")
        atomic_remove(self.dir / "candidate.json")

    def factory_reset(self, reason: str, now: float) -> list[str]:
        """Wipe the provisioned config, trial state and local changes; keep the device identity
        (bootstrap keys live elsewhere) and the anti-rollback floor (a reset must not reopen
        replays). The reason is kept and shown in status until the next reset."""
        removed = []
        names = ("good.json", "candidate.json", "trial.json", "rejected.json", "local.toml")
        for name in names:
            if (self.dir / name).exists():
                atomic_remove(self.dir / name)
                removed.append(name)
        self._write("reset.json", {"at": now, "reason": reason, "removed": removed}, "config:reset")
        log.warning("factory reset (%s): removed %s", reason, ", ".join(removed) or "nothing")
        return removed

    def last_reset(self) -> dict[str, Any] | None:
        return self._read("reset.json")

    def has_good(self) -> bool:
        return (self.dir / "good.json").is_file()

    def startup(self) -> Loaded | None:
        """What to run after a (re)start, finishing or undoing an interrupted apply.

        * candidate without trial marker: the crash came before it was started -> try it.
        * candidate with trial marker and a good config: the trial was interrupted (crash, kill,
          power cut) -> the candidate is rejected and the good config runs.
        * candidate already promoted (same serial as good): only the clean-up was missed.
        * no good config at all: the candidate (complete and verified) is the best there is.
        """
        clean_temporaries(self.dir)
        good_doc = self._read("good.json")
        good: tuple[int, PhoneConfig] | None = None
        if good_doc is not None:
            try:
                good = self._load(good_doc)
            except Exception as e:  # noqa: BLE001 - a bad stored doc must not brick the phone
                log.error("last known good config unusable: %s", e)
        cand_doc = self._read("candidate.json")
        if cand_doc is not None:
            trial = self._read("trial.json")
            try:
                serial, config = self._load(cand_doc)
            except Exception as e:  # noqa: BLE001
                log.error("candidate config unusable: %s", e)
                atomic_remove(self.dir / "candidate.json")
                atomic_remove(self.dir / "trial.json")
            else:
                if good is not None and good[0] == serial:
                    atomic_remove(self.dir / "trial.json")
                    atomic_remove(self.dir / "candidate.json")
                elif good is None or trial is None or trial.get("serial") != serial:
                    return Loaded(serial, config, cand_doc, trial=True)
                else:
                    reason = (
                        f"config serial {serial} was rolled back: the phone restarted during its "
                        f"trial; running last known good serial {good[0]}"
                    )
                    log.error("%s", reason)
                    self.reject(serial, reason)
        if good is not None and good_doc is not None:
            return Loaded(good[0], good[1], good_doc, trial=False)
        return None


def _leaves(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted paths of the non-table values (lists, like accounts, count as one value)."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_leaves(value, path + "."))
        else:
            out[path] = value
    return out


def desired_firmware(payload: dict[str, Any]) -> str | None:
    """``[firmware] version`` of a config payload: the version the admin wants running."""
    config = payload.get("config")
    section = config.get("firmware") if isinstance(config, dict) else None
    version = section.get("version") if isinstance(section, dict) else None
    return version if isinstance(version, str) else None
