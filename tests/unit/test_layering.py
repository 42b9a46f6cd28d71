"""The sans-IO layering (DESIGN.md): protocol code never touches sockets, threads, clocks or `random`.

Checked on the import graph by parsing the source, so a forbidden import anywhere in the module
(also inside a function) fails the build.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SANS_IO_PACKAGES = [
    "firmware/sip", "firmware/call", "firmware/ui", "board/keys", "board/leds", "board/charset",
    "board/panel", "board/frontpanel/protocol", "board/frontpanel/scanner",
    "board/frontpanel/core", "board/frontpanel/app", "audio",
]
# The only I/O modules inside those packages: PyAudio device access (DESIGN.md).
IO_EDGES = {"audio/devices.py"}
FORBIDDEN = {
    "asyncio",
    "socket",
    "threading",
    "time",
    "random",
    "selectors",
    "subprocess",
    "multiprocessing",
    "ssl",
    "aiohttp",
    "firmware.runtime",
}


def _sans_io_files() -> list[Path]:
    files: list[Path] = []
    for pkg in SANS_IO_PACKAGES:
        base = ROOT / pkg
        if base.is_dir():
            files += sorted(
                p for p in base.rglob("*.py") if str(p.relative_to(ROOT)) not in IO_EDGES
            )
        elif base.with_suffix(".py").is_file():
            files.append(base.with_suffix(".py"))
    return files


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _forbidden(name: str) -> bool:
    return any(name == f or name.startswith(f + ".") for f in FORBIDDEN)


def test_sans_io_packages_exist() -> None:
    assert (ROOT / "firmware/sip/parser.py").is_file()
    assert len(_sans_io_files()) >= 5


@pytest.mark.parametrize("path", _sans_io_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_io_imports(path: Path) -> None:
    bad = sorted(n for n in _imports(path) if _forbidden(n))
    assert not bad, (
        f"{path.relative_to(ROOT)} imports {bad}: sans-IO code must get I/O, time "
        "and randomness injected"
    )


def test_checker_catches_a_violation(tmp_path: Path) -> None:
    sample = tmp_path / "x.py"
    sample.write_text("def f():\n    import time\n    from asyncio import sleep\n")
    assert {n for n in _imports(sample) if _forbidden(n)} == {"time", "asyncio"}
