"""A/B slots: verified install into the inactive slot, trial boot, commit, automatic rollback."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path
from typing import Any

import pytest

from firmware.provisioning.firmware_slots import FirmwareError, Slots


def bundle(tmp_path: Path, version: str, files: dict[str, str]) -> tuple[Path, dict[str, Any]]:
    path = tmp_path / f"{version}.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    data = path.read_bytes()
    manifest = {
        "format": "deskphone-firmware/1",
        "version": version,
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
        "issued_at": 0,
    }
    return path, manifest


@pytest.fixture
def slots(tmp_path: Path) -> Slots:
    factory = tmp_path / "factory"
    factory.mkdir()
    (factory / "main.py").write_text("v1")
    s = Slots(tmp_path / "slots")
    s.init_from_tree(factory, "1.0")
    return s


def test_install_goes_to_the_inactive_slot_and_trial_then_commit(
    slots: Slots, tmp_path: Path
) -> None:
    path, manifest = bundle(tmp_path, "1.1", {"main.py": "v2"})
    slot = slots.install(path, manifest)
    assert slot == "b" and slots.active() == "a"
    assert (slots.root / "b" / "main.py").read_text() == "v2"
    slots.start_trial(slot)
    assert os.readlink(slots.root / "current") == "b"
    decision = slots.boot()
    assert (decision.slot, decision.version, decision.trial) == ("b", "1.1", True)
    slots.commit()
    assert slots.floor() == "1.1" and slots.trial() is None
    assert slots.boot().trial is False


def test_a_trial_that_dies_rolls_back_on_the_next_boot(slots: Slots, tmp_path: Path) -> None:
    slots.start_trial(slots.install(*bundle(tmp_path, "1.1", {"main.py": "v2"})))
    assert slots.boot().trial  # first boot into the trial ... which never commits
    decision = slots.boot()
    assert (decision.slot, decision.version, decision.trial) == ("a", "1.0", False)
    assert decision.rolled_back is not None and "1.1 did not pass its health check" in (
        decision.rolled_back
    )
    assert slots.status()["last"]["event"] == "rolled_back"
    assert slots.floor() == "1.0"


def test_kill_between_marker_and_switch_still_boots_the_trial(
    slots: Slots, tmp_path: Path
) -> None:
    slot = slots.install(*bundle(tmp_path, "1.1", {"main.py": "v2"}))
    slots._write(
        "trial.json", {"slot": slot, "previous": "a", "version": "1.1", "booted": False}
    )
    decision = slots.boot()
    assert (decision.slot, decision.trial) == ("b", True)
    assert slots.active() == "b"


def test_hash_size_and_downgrade_are_refused_before_unpacking(
    slots: Slots, tmp_path: Path
) -> None:
    path, manifest = bundle(tmp_path, "1.1", {"main.py": "v2"})
    with pytest.raises(FirmwareError, match="sha256 does not match"):
        slots.install(path, {**manifest, "sha256": "0" * 64})
    with pytest.raises(FirmwareError, match="size"):
        slots.install(path, {**manifest, "size": 1})
    assert not (slots.root / "b").exists()
    old, old_manifest = bundle(tmp_path, "0.9", {"main.py": "v0"})
    with pytest.raises(FirmwareError, match="older than the anti-rollback floor 1.0"):
        slots.install(old, old_manifest)
    with pytest.raises(FirmwareError, match="already running"):
        slots.install(*bundle(tmp_path, "1.0", {"main.py": "again"}))


def test_path_traversal_in_a_bundle_is_refused(slots: Slots, tmp_path: Path) -> None:
    path, manifest = bundle(tmp_path, "1.1", {"../escape.py": "x"})
    with pytest.raises(FirmwareError, match="cannot unpack"):
        slots.install(path, manifest)
    assert not (slots.root / "escape.py").exists() and slots.active() == "a"


def test_half_unpacked_leftovers_are_cleaned_at_boot(slots: Slots) -> None:
    (slots.root / "b.new").mkdir()
    (slots.root / "b.new" / "junk").write_text("x")
    assert slots.boot().slot == "a"
    assert not (slots.root / "b.new").exists()


def test_a_bundle_with_one_top_directory_is_hoisted(slots: Slots, tmp_path: Path) -> None:
    slot = slots.install(*bundle(tmp_path, "1.1", {"deskphone-1.1/firmware/x.py": "v2"}))
    assert (slots.root / slot / "firmware" / "x.py").read_text() == "v2"
    assert slots.slot_version(slot) == "1.1"


def test_first_install_from_a_bundle_via_the_launcher(tmp_path: Path) -> None:
    from firmware.runtime.firmware_update import main

    path, _manifest = bundle(tmp_path, "1.0", {"deskphone-1.0/firmware/__main__.py": "v1"})
    assert main(["--slots", str(tmp_path / "slots"), "--init", str(path), "1.0"]) == 0
    slots = Slots(tmp_path / "slots")
    assert slots.active() == "a" and slots.current_version() == "1.0" and slots.floor() == "1.0"
    assert (slots.root / "a" / "firmware" / "__main__.py").read_text() == "v1"
