"""Build a firmware bundle: a reproducible tarball of the deskphone package source.

The phone installs it with pip into its inactive slot (the phone side's job), so the bundle is
just the source tree pip needs: pyproject.toml, README.md and the packages. Entries are sorted
and normalised (mtime 0, root owner, fixed modes) so the same source gives the same bytes and
the same sha256 in the signed manifest.
"""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

import firmware

SOURCE_ROOT = Path(firmware.__file__).resolve().parents[1]
PACKAGES = ("firmware", "audio", "board")
TOP_FILES = ("pyproject.toml", "README.md")


def _files(root: Path) -> list[Path]:
    files = [root / name for name in TOP_FILES if (root / name).is_file()]
    for pkg in PACKAGES:
        base = root / pkg
        if base.is_dir():
            files += [
                p
                for p in base.rglob("*")
                if p.is_file() and "__pycache__" not in p.parts and p.suffix not in {".pyc", ".so"}
            ]
    return sorted(files)


def build_bundle(version: str, root: Path = SOURCE_ROOT) -> bytes:
    """Tar.gz of the package source under the directory ``deskphone-<version>/``."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in _files(root):
            info = tarfile.TarInfo(f"deskphone-{version}/{path.relative_to(root).as_posix()}")
            data = path.read_bytes()
            info.size = len(data)
            info.mtime = 0
            info.mode = 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0)
