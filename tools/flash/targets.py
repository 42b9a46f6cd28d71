"""Where `deskphone-flash` writes a board's files: a mounted boot partition or a disk image.

Paths are relative to the root of the Raspberry Pi OS boot partition (``/boot/firmware`` on a
running board). Every file is read back and compared by sha256 after writing.

Disk images are written with mtools (`mcopy`, `mmd`, `mtype`; Debian package ``mtools``) rather
than a pure-Python FAT library: mtools is the long-maintained reference userspace FAT
implementation (FAT12/16/32 with long names), needs neither root nor a loop mount, and its
``image@@offset`` syntax reaches the boot partition inside a whole-disk image (MBR) directly.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Protocol

from tools.provision.pki import atomic_write

log = logging.getLogger(__name__)

FAT_PARTITION_TYPES = {0x01, 0x04, 0x06, 0x0B, 0x0C, 0x0E}


class FlashError(Exception):
    """Writing to the target failed; the message says where and why."""


class Target(Protocol):
    def write(self, rel: str, data: bytes, mode: int = 0o644) -> None: ...

    def read(self, rel: str) -> bytes | None: ...

    def describe(self) -> str: ...


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class DirTarget:
    """A mounted boot partition (or any directory)."""

    def __init__(self, root: Path) -> None:
        if not root.is_dir():
            raise FlashError(f"{root} is not a directory (mount the boot partition first)")
        self.root = root

    def write(self, rel: str, data: bytes, mode: int = 0o644) -> None:
        path = self.root / rel
        atomic_write(path, data, mode)
        if sha256(path.read_bytes()) != sha256(data):
            raise FlashError(f"{path}: read-back does not match what was written")

    def read(self, rel: str) -> bytes | None:
        path = self.root / rel
        return path.read_bytes() if path.is_file() else None

    def describe(self) -> str:
        return f"dir:{self.root}"


def fat_offset(image: Path) -> int:
    """Byte offset of the boot FAT filesystem: 0 for a bare FAT image, else the first FAT
    partition of an MBR disk image (how Raspberry Pi OS images are laid out)."""
    with image.open("rb") as f:
        sector = f.read(512)
    if len(sector) < 512 or sector[510:512] != b"\x55\xaa":
        raise FlashError(f"{image}: neither a FAT filesystem nor an MBR disk image")
    if sector[0] in (0xEB, 0xE9) and (sector[0x36:0x39] == b"FAT" or sector[0x52:0x55] == b"FAT"):
        return 0
    for i in range(4):
        entry = sector[446 + 16 * i : 462 + 16 * i]
        ptype = entry[4]
        lba = struct.unpack_from("<I", entry, 8)[0]
        if ptype in FAT_PARTITION_TYPES and lba:
            return lba * 512
    raise FlashError(f"{image}: the partition table has no FAT (boot) partition")


class FatImageTarget:
    """A FAT filesystem image, or a whole-disk image whose first FAT partition is /boot."""

    def __init__(self, image: Path) -> None:
        if not image.is_file():
            raise FlashError(f"{image} does not exist")
        for tool in ("mcopy", "mmd", "mtype"):
            if shutil.which(tool) is None:
                raise FlashError(f"{tool} not found: install the Debian package mtools")
        self.image = image
        offset = fat_offset(image)
        self.spec = f"{image}@@{offset}" if offset else str(image)
        self._dirs: set[str] = set()

    def _run(self, *args: str, stdin: bytes | None = None) -> bytes:
        env = dict(os.environ, MTOOLS_SKIP_CHECK="1", MTOOLS_NO_VFAT="0")
        proc = subprocess.run(
            [*args], input=stdin, capture_output=True, env=env, check=False, timeout=60
        )
        if proc.returncode != 0:
            raise FlashError(
                f"{args[0]} on {self.image}: {proc.stderr.decode(errors='replace').strip()}"
            )
        return proc.stdout

    def _mkdirs(self, rel: str) -> None:
        parts = rel.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d in self._dirs:
                continue
            env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
            # mmd fails when the directory exists: that is fine, a later mcopy reports real errors
            subprocess.run(
                ["mmd", "-i", self.spec, f"::/{d}"], capture_output=True, env=env, check=False
            )
            self._dirs.add(d)

    def write(self, rel: str, data: bytes, mode: int = 0o644) -> None:
        self._mkdirs(rel)
        # "-" reads stdin: no temporary copy of a private key on the host disk
        self._run("mcopy", "-o", "-i", self.spec, "-", f"::/{rel}", stdin=data)
        back = self.read(rel)
        if back is None or sha256(back) != sha256(data):
            raise FlashError(f"{self.image}::/{rel}: read-back does not match what was written")

    def read(self, rel: str) -> bytes | None:
        try:
            return self._run("mcopy", "-n", "-i", self.spec, f"::/{rel}", "-")
        except FlashError:
            return None

    def describe(self) -> str:
        return f"image:{self.image}"
