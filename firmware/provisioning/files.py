"""Crash-safe file operations for provisioning, with named fault-injection points.

A phone can lose power (or be killed) at any instant while it applies a config or installs
firmware. Every state change is therefore one atomic rename of a fully written and fsynced file
(or symlink), followed by an fsync of the directory, so a reader after a crash sees either the
old or the new state, never a torn one.

`fault(step)` is the test hook for acceptance 4: with ``DESKPHONE_FAULT=<step>`` in the
environment the process SIGKILLs itself when it reaches that step, exactly like a power cut.
Steps: config:verified, config:{candidate,floor,trial,promote}:{tmp,renamed}, config:started,
config:promoted, config:reject:*, firmware:{downloaded,verified,unpacking,unpacked,slot-cleared,
installed}, firmware:{trial-marker,switch,booted,commit,rollback}:{tmp,renamed}.
"""

from __future__ import annotations

import logging
import os
import signal
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

FAULT_ENV = "DESKPHONE_FAULT"


def fault(step: str) -> None:
    """Die like a power cut at ``step`` if DESKPHONE_FAULT names it (test-only injection).

    ``DESKPHONE_FAULT=@FILE`` reads the step from FILE at every check, so a test can arm the
    next fault in a running process.
    """
    wanted = os.environ.get(FAULT_ENV)
    if wanted and wanted.startswith("@"):
        try:
            wanted = Path(wanted[1:]).read_text().strip()
        except OSError:
            return
    if wanted and wanted == step:
        log.warning("fault injection: SIGKILL at step %s", step)
        logging.shutdown()
        os.kill(os.getpid(), signal.SIGKILL)


def fsync_dir(path: Path) -> None:
    """Make a rename/unlink inside ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, *, step: str = "", mode: int = 0o600) -> None:
    """Replace ``path`` with ``data``: temp file, fsync, rename, fsync dir.

    ``step`` names the fault points ``<step>:tmp`` (after the temp file is half written) and
    ``<step>:renamed`` (after the rename, before the directory fsync).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)  # before any byte: a key is never readable by others, even briefly
        with os.fdopen(fd, "wb") as f:
            half = len(data) // 2
            f.write(data[:half])
            if step:
                f.flush()
                fault(f"{step}:tmp")
            f.write(data[half:])
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    if step:
        fault(f"{step}:renamed")
    fsync_dir(path.parent)


def atomic_remove(path: Path) -> None:
    """Remove ``path`` (if present) durably."""
    try:
        path.unlink()
    except FileNotFoundError:
        return
    fsync_dir(path.parent)


def atomic_symlink(link: Path, target: str, *, step: str = "") -> None:
    """Point symlink ``link`` at ``target`` atomically (new symlink renamed over the old one)."""
    tmp = link.with_name(f".{link.name}.new")
    try:
        tmp.unlink()
    except FileNotFoundError:
        pass
    os.symlink(target, tmp)
    if step:
        fault(f"{step}:tmp")
    os.replace(tmp, link)
    if step:
        fault(f"{step}:renamed")
    fsync_dir(link.parent)


def clean_temporaries(directory: Path) -> None:
    """Remove leftovers of writes a crash interrupted (they were never visible)."""
    if not directory.is_dir():
        return
    for p in directory.iterdir():
        if p.name.startswith(".") and (p.name.endswith(".tmp") or p.name.endswith(".new")):
            if p.is_symlink() or p.is_file():
                p.unlink()
