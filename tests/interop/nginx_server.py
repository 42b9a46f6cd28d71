"""Run a real nginx with the config `deskphone-provision nginx-config` generates (tests only)."""

from __future__ import annotations

import contextlib
import os
import signal
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require_tool
from tools.provision.cli import main as provision_main


@contextlib.contextmanager
def run_nginx(fleet: Path, port: int, workdir: Path) -> Iterator[Path]:
    """nginx serving ``fleet``'s rendered tree on 127.0.0.1:``port``; yields its prefix dir."""
    nginx = require_tool("nginx")
    conf = workdir / "nginx" / "nginx.conf"
    args = ["nginx-config", str(fleet), "--out", str(conf), "--listen", f"127.0.0.1:{port}"]
    if os.geteuid() == 0:
        args += ["--user", "root"]  # workers must read the tree under pytest's 0700 tmp dirs
    assert provision_main(args) == 0
    prefix = conf.parent / "nginx-run"
    check = subprocess.run(
        [nginx, "-t", "-p", str(prefix), "-c", str(conf)], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stderr
    proc = subprocess.Popen(
        [nginx, "-p", str(prefix), "-c", str(conf), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:  # bounded wait for the listener (nginx has no readiness signal)
            try:
                ssl.get_server_certificate(("127.0.0.1", port), timeout=1)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log = prefix / "error.log"
                    pytest.fail(f"nginx did not start: {log.read_text() if log.exists() else ''}")
                time.sleep(0.05)
        yield prefix
    finally:
        proc.send_signal(signal.SIGQUIT)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
