"""The panel's pure logic under CPython and under a real MicroPython (WebAssembly port on node)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import skip_or_fail
from tests.panel import cases

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
RUNNER = HERE / "node" / "run_micropython.mjs"
NODE_DIR = ROOT / "tests" / "panel" / "node"  # where scripts/test installs the npm package


@pytest.mark.parametrize("name", cases.CASES)
def test_case_under_cpython(name: str) -> None:
    getattr(cases, name)()


def test_cases_under_micropython() -> None:
    node = shutil.which("node")
    package = NODE_DIR / "node_modules" / "@micropython" / "micropython-webassembly-pyscript"
    if node is None or not package.is_dir():
        skip_or_fail("node and @micropython/micropython-webassembly-pyscript (scripts/test installs them)")
    proc = subprocess.run(
        [node, str(RUNNER), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=NODE_DIR,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")][-1]
    report = json.loads(line)
    assert report["implementation"] == "micropython"
    assert report["failed"] == {}, report["failed"]
    assert sorted(report["passed"]) == cases.CASES


def test_panel_code_avoids_what_micropython_lacks() -> None:
    """The MicroPython WebAssembly port has no sockets and a different `re`: the panel uses neither."""
    import ast

    banned = {"re", "socket", "typing", "dataclasses", "select", "threading"}
    for path in sorted((ROOT / "board" / "frontpanel").glob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module.split(".")[0]]
            assert not banned.intersection(names), f"{path.name} imports {names}"
