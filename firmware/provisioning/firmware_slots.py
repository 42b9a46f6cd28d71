"""A/B firmware slots with a trial boot and automatic rollback.

Layout of the slots directory::

    a/  b/          two complete firmware trees (each with .deskphone-slot.json: version, sha256)
    current -> a    symlink switched atomically (new symlink renamed over the old one)
    trial.json      {"slot", "previous", "version", "booted"}: a new slot on probation
    floor.json      {"version"}: the anti-rollback floor (highest committed version)
    last.json       {"event", "version", "reason"}: the last install/commit/rollback, for status

An update is unpacked into the *inactive* slot (into ``<slot>.new`` first, then renamed), so the
running slot is never touched. ``start_trial`` writes the marker, then flips ``current``. The
boot decision (``boot()``) runs before the firmware starts: a marker that was already booted once
means the trial died (crash, kill -9, power cut, failed health check) -> back to the previous
slot, by itself. A passed health check calls ``commit()``. Every step is a named fault point.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from firmware.provisioning.files import (
    atomic_remove,
    atomic_symlink,
    atomic_write,
    clean_temporaries,
    fault,
    fsync_dir,
)

log = logging.getLogger(__name__)

SLOTS = ("a", "b")
META = ".deskphone-slot.json"
VERSION_RE = re.compile(r"^\d{1,6}(\.\d{1,6}){0,3}$")


class FirmwareError(Exception):
    """An update the phone refuses or cannot install, with a clear reason."""


def version_key(version: str) -> tuple[int, ...]:
    if not VERSION_RE.match(version):
        raise FirmwareError(f"bad version {version!r}: expected numbers like 1.4.2")
    return tuple(int(p) for p in version.split("."))


@dataclass(frozen=True)
class BootDecision:
    slot: str
    version: str | None
    trial: bool
    rolled_back: str | None  # reason, when this boot undid a failed trial


class Slots:
    def __init__(self, root: Path) -> None:
        self.root = root

    # ----- reading --------------------------------------------------------------------------
    def _read(self, name: str) -> dict[str, Any] | None:
        try:
            data = json.loads((self.root / name).read_bytes())
        except (FileNotFoundError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def _write(self, name: str, data: dict[str, Any], step: str = "") -> None:
        atomic_write(self.root / name, json.dumps(data, sort_keys=True).encode(), step=step)

    def active(self) -> str:
        try:
            target = os.readlink(self.root / "current")
        except FileNotFoundError:
            raise FirmwareError(f"{self.root}: no current slot (not initialised)") from None
        if target not in SLOTS:
            raise FirmwareError(f"{self.root}/current points at {target!r}, not a or b")
        return target

    def inactive(self) -> str:
        return "b" if self.active() == "a" else "a"

    def slot_version(self, slot: str) -> str | None:
        meta = _read_json(self.root / slot / META)
        version = meta.get("version") if meta else None
        return version if isinstance(version, str) else None

    def current_version(self) -> str | None:
        return self.slot_version(self.active())

    def floor(self) -> str | None:
        data = self._read("floor.json") or {}
        v = data.get("version")
        return v if isinstance(v, str) else None

    def trial(self) -> dict[str, Any] | None:
        return self._read("trial.json")

    def status(self) -> dict[str, Any]:
        return {
            "slot": self.active(),
            "version": self.current_version(),
            "floor": self.floor(),
            "trial": self.trial() is not None,
            "last": self._read("last.json"),
        }

    # ----- setup (the flashing tool / factory image) ------------------------------------------
    def init_from_tree(self, tree: Path, version: str) -> None:
        """Factory state: ``tree`` copied into slot a, ``current -> a``, floor = version."""
        version_key(version)
        self.root.mkdir(parents=True, exist_ok=True)
        dest = self.root / "a"
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(tree, dest, symlinks=True)
        atomic_write(dest / META, json.dumps({"version": version}).encode())
        atomic_symlink(self.root / "current", "a")
        self._write("floor.json", {"version": version})

    def init_from_bundle(self, bundle: Path, version: str) -> None:
        """Factory state from a firmware bundle (what the first-boot installer has on the boot
        partition): unpacked like an update, then made slot a."""
        staging = self.root.parent / f".{self.root.name}-factory"
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir(parents=True)
        try:
            with tarfile.open(bundle, "r:gz") as tar:
                tar.extractall(staging, filter="data")
            entries = list(staging.iterdir())
            tree = entries[0] if len(entries) == 1 and entries[0].is_dir() else staging
            self.init_from_tree(tree, version)
        except (tarfile.TarError, OSError) as e:
            raise FirmwareError(f"cannot unpack the factory bundle {bundle}: {e}") from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    # ----- install ----------------------------------------------------------------------------
    def check_update(self, version: str) -> None:
        """Refuse a downgrade below the floor, and re-installing what runs."""
        floor = self.floor()
        if floor is not None and version_key(version) < version_key(floor):
            raise FirmwareError(
                f"firmware {version} is older than the anti-rollback floor {floor}"
            )
        if self.current_version() == version:
            raise FirmwareError(f"firmware {version} is already running")

    def install(self, bundle: Path, manifest: dict[str, Any]) -> str:
        """Unpack a bundle (whose manifest signature the caller verified) into the inactive slot.

        Checks size and sha256 against the manifest before unpacking anything; returns the slot.
        """
        version = str(manifest.get("version", ""))
        self.check_update(version)
        size = bundle.stat().st_size
        if size != manifest.get("size"):
            raise FirmwareError(
                f"firmware {version}: size {size} does not match the manifest's {manifest.get('size')}"
            )
        digest = _sha256(bundle)
        if digest != manifest.get("sha256"):
            raise FirmwareError(f"firmware {version}: sha256 does not match the signed manifest")
        fault("firmware:verified")
        slot = self.inactive()
        staging = self.root / f"{slot}.new"
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir()
        try:
            with tarfile.open(bundle, "r:gz") as tar:
                members = tar.getmembers()
                for n, member in enumerate(members):
                    # "data" filter: no absolute paths, no .., no device files, no escaping links
                    tar.extract(member, staging, filter="data")
                    if n == len(members) // 2:
                        fault("firmware:unpacking")
        except (tarfile.TarError, OSError) as e:
            shutil.rmtree(staging, ignore_errors=True)
            raise FirmwareError(f"firmware {version}: cannot unpack: {e}") from None
        entries = list(staging.iterdir())
        if len(entries) == 1 and entries[0].is_dir():  # deskphone-<version>/...: hoist it
            hoisted = self.root / f"{slot}.hoist"
            os.replace(entries[0], hoisted)
            staging.rmdir()
            os.replace(hoisted, staging)
        atomic_write(staging / META, json.dumps({"version": version, "sha256": digest}).encode())
        _fsync_tree(staging)
        fault("firmware:unpacked")
        old = self.root / slot
        if old.exists():
            trash = self.root / f"{slot}.old"
            if trash.exists():
                shutil.rmtree(trash)
            os.replace(old, trash)
            fault("firmware:slot-cleared")
            shutil.rmtree(trash)
        os.replace(staging, old)
        fsync_dir(self.root)
        fault("firmware:installed")
        self._write("last.json", {"event": "installed", "version": version, "reason": None})
        return slot

    def start_trial(self, slot: str) -> None:
        """Mark ``slot`` as on trial, then switch ``current`` to it (boot() picks it up)."""
        version = self.slot_version(slot)
        if version is None:
            raise FirmwareError(f"slot {slot} holds no installed firmware")
        previous = self.active()
        self._write(
            "trial.json",
            {"slot": slot, "previous": previous, "version": version, "booted": False},
            step="firmware:trial-marker",
        )
        atomic_symlink(self.root / "current", slot, step="firmware:switch")

    # ----- boot / commit / rollback -------------------------------------------------------------
    def boot(self) -> BootDecision:
        """Decide which slot starts now; undo a trial that did not survive its first boot."""
        clean_temporaries(self.root)
        for slot in SLOTS:  # half-done unpack or clear: never visible, just remove
            for suffix in (".new", ".old", ".hoist"):
                leftover = self.root / f"{slot}{suffix}"
                if leftover.exists():
                    shutil.rmtree(leftover)
        trial = self.trial()
        if trial is not None:
            slot, previous = str(trial.get("slot")), str(trial.get("previous"))
            if slot not in SLOTS or previous not in SLOTS:
                atomic_remove(self.root / "trial.json")
            elif trial.get("booted") and self.floor() == trial.get("version"):
                atomic_remove(self.root / "trial.json")  # commit was cut short after the floor
            elif trial.get("booted"):
                reason = (
                    f"firmware {trial.get('version')} did not pass its health check before the "
                    f"phone restarted; rolled back to {self.slot_version(previous)}"
                )
                self.rollback(reason)
                return BootDecision(previous, self.slot_version(previous), False, reason)
            else:
                if self.active() != slot:  # the kill came between marker and switch
                    atomic_symlink(self.root / "current", slot)
                trial["booted"] = True
                self._write("trial.json", trial, step="firmware:booted")
                return BootDecision(slot, self.slot_version(slot), True, None)
        active = self.active()
        return BootDecision(active, self.slot_version(active), False, None)

    def commit(self) -> None:
        """The trial passed its health check: raise the floor, drop the marker."""
        trial = self.trial()
        if trial is None:
            return
        version = str(trial.get("version"))
        self._write("floor.json", {"version": version}, step="firmware:commit")
        atomic_remove(self.root / "trial.json")
        self._write("last.json", {"event": "committed", "version": version, "reason": None})
        log.info("firmware %s committed", version)

    def rollback(self, reason: str) -> None:
        """Back to the previous slot (the trial failed); remembered for status."""
        trial = self.trial()
        if trial is None:
            return
        previous = str(trial.get("previous"))
        atomic_symlink(self.root / "current", previous, step="firmware:rollback")
        atomic_remove(self.root / "trial.json")
        self._write(
            "last.json", {"event": "rolled_back", "version": trial.get("version"), "reason": reason}
        )
        log.error("firmware rollback: %s", reason)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_bytes())
    except (FileNotFoundError, NotADirectoryError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 16), b""):
            h.update(block)
    return h.hexdigest()


def _fsync_tree(root: Path) -> None:
    """Flush every unpacked file and directory before the slot becomes visible."""
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            p = os.path.join(dirpath, name)
            if os.path.islink(p):
                continue
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(dirpath))
