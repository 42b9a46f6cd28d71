"""Run a real deskphone process (`python -m firmware run --config ...`) for interop tests.

The phone is driven and observed the way an administrator or lab script would: through its
config file, its action API (`GET /api/status`), signals, and what crosses the wire.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tomli_w

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "interop-test-token-0123456789"


def free_port(kind: int = socket.SOCK_STREAM, host: str = "127.0.0.1") -> int:
    """A port that is free right now for ``kind`` (and for the other kind, for SIP)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind((host, 0))
            port = int(s.getsockname()[1])
        other = socket.SOCK_DGRAM if kind == socket.SOCK_STREAM else socket.SOCK_STREAM
        try:
            with socket.socket(socket.AF_INET, other) as s:
                s.bind((host, port))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port found")


class PhoneProcess:
    """One deskphone process with a generated config; `status()` reads its action API."""

    def __init__(
        self,
        workdir: Path,
        accounts: list[dict[str, Any]],
        *,
        listen: list[str] | None = None,
        sip: dict[str, Any] | None = None,
        audio: dict[str, Any] | None = None,
        env: dict[str, str] | None = None,
        sections: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        self.workdir = workdir
        self.sip_port = free_port()
        self.api_port = free_port()
        self.listen = listen or [f"udp:127.0.0.1:{self.sip_port}", f"tcp:127.0.0.1:{self.sip_port}"]
        doc: dict[str, Any] = {
            "device": {"name": "Interop", "state_dir": str(workdir / "state")},
            "accounts": accounts,
            "sip": {"listen": self.listen, "retry_base": 1.0, **(sip or {})},
            "api": {"listen": f"127.0.0.1:{self.api_port}", "token": TOKEN},
            "audio": audio or {},
            "logging": {"level": "debug"},
            **(sections or {}),  # more config tables, e.g. {"calls": {"max_calls": 2}}
        }
        self.config_path = workdir / "phone.toml"
        self.config_path.write_bytes(tomli_w.dumps(doc).encode())
        self.log_path = workdir / "phone.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.env = env or {}

    def start(self, timeout: float = 15.0) -> PhoneProcess:
        env = dict(os.environ, PYTHONPATH=str(ROOT), **self.env)
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "firmware", "run", "--config", str(self.config_path)],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.wait_for(lambda s: True, timeout, what="action API up")
        return self

    def request(self, path: str, token: str | None = TOKEN) -> tuple[int, Any]:
        req = urllib.request.Request(f"http://127.0.0.1:{self.api_port}{path}")
        if token is not None:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def post(
        self, path: str, body: dict[str, Any] | None = None, token: str | None = TOKEN
    ) -> tuple[int, Any]:
        data = json.dumps(body if body is not None else {}).encode()
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.api_port}{path}",
            data=data,
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        if token is not None:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def dial(self, number: str) -> dict[str, Any]:
        code, body = self.post("/api/dial", {"number": number})
        assert code == 201, body
        return body  # type: ignore[no-any-return]

    def call_action(self, call_id: str, action: str, **body: Any) -> dict[str, Any]:
        code, reply = self.post(f"/api/calls/{call_id}/{action}", body)
        assert code == 200, reply
        return reply  # type: ignore[no-any-return]

    def call(self, call_id: str) -> dict[str, Any]:
        for call in self.status()["calls"]:
            if call["id"] == call_id:
                return call  # type: ignore[no-any-return]
        raise KeyError(call_id)

    def wait_call(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float, what: str
    ) -> dict[str, Any]:
        """Wait until some call in status satisfies ``predicate``; return that call."""
        status = self.wait_for(lambda s: any(predicate(c) for c in s["calls"]), timeout, what)
        return next(c for c in status["calls"] if predicate(c))  # type: ignore[no-any-return]

    def status(self) -> dict[str, Any]:
        code, body = self.request("/api/status")
        assert code == 200, body
        return body  # type: ignore[no-any-return]

    def registration(self, account: str = "line1") -> dict[str, Any]:
        for reg in self.status()["registrations"]:
            if reg["account"] == account:
                return reg  # type: ignore[no-any-return]
        raise KeyError(account)

    def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float, what: str = "condition"
    ) -> dict[str, Any]:
        """Poll the status API until ``predicate(status)`` holds; bounded by ``timeout``."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"phone exited with {self.proc.returncode}:\n{self.log()}")
            try:
                last = self.status()
                if predicate(last):
                    return last  # type: ignore[no-any-return]
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.05)  # polling interval of an external observer, not a protocol wait
        raise AssertionError(
            f"timed out after {timeout}s waiting for {what}; last status "
            f"{json.dumps(last)}\n--- phone log tail ---\n{self.log()[-4000:]}"
        )

    def wait_state(self, state: str, timeout: float, account: str = "line1") -> dict[str, Any]:
        def ok(status: dict[str, Any]) -> bool:
            return any(
                r["account"] == account and r["state"] == state for r in status["registrations"]
            )

        status = self.wait_for(ok, timeout, what=f"{account} {state}")
        return next(r for r in status["registrations"] if r["account"] == account)

    def terminate(self, timeout: float = 15.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
