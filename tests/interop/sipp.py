"""Run sipp scenarios against a SIP peer on loopback and collect what crossed the wire.

API::

    result = run_sipp("options_and_unknown.xml", ("127.0.0.1", 5060), workdir=tmp_path)
    result.returncode        # sipp's exit status: 0 = every call succeeded
    result.ok                # returncode == 0
    result.messages          # list[SippMessage(direction "sent"|"received", text)] in order
    result.received_statuses # e.g. [200, 501]
    result.explain()         # command, exit code, sipp's errors and the message trace

`scenario` is a file name in tests/interop/data (or any path). `transport` is "udp" or "tcp"
(Debian's sipp is built without TLS). For IPv6 pass ``target=("::1", port), local_ip="::1"``. `keys` become ``-key NAME VALUE`` (used as [NAME] in the
scenario); `auth_user`/`auth_password` answer digest challenges (``[authentication]``).
Every run has a global timeout, so a silent peer makes the run fail instead of hanging.

Scenarios shipped in data/:
  register_auth.xml        REGISTER, 401, REGISTER with credentials, 200 (keys user, domain, expires)
  options_and_unknown.xml  OPTIONS -> 200 with Allow; FOOBAR -> 501
  invite_malformed.xml     INVITE with CSeq over 2**31 -> 400, then ACK (key user)
"""

from __future__ import annotations

import itertools
import logging
import re
import shutil
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

DATA_DIR = Path(__file__).resolve().parent / "data"
_TRANSPORTS = {"udp": "u1", "tcp": "t1"}
_run_ids = itertools.count(1)
# sipp's -trace_msg file: a dashed separator line, then e.g.
# "UDP message sent (123 bytes):" or "TCP message received [123] bytes :", a blank line, the message.
_ENTRY = re.compile(
    r"^(?P<transport>[A-Z]+) message (?P<dir>sent|received) (?:\(\d+ bytes\)|\[\d+\] bytes ?):\s*$",
    re.M,
)


class SippError(RuntimeError):
    """sipp could not be run at all."""


@dataclass(frozen=True)
class SippMessage:
    direction: str  # "sent" or "received"
    text: str

    @property
    def first_line(self) -> str:
        return self.text.split("\r\n", 1)[0].split("\n", 1)[0]

    @property
    def status(self) -> int | None:
        """Status code if this is a response."""
        match = re.match(r"SIP/2\.0 (\d{3}) ", self.first_line)
        return int(match.group(1)) if match else None

    def header(self, name: str) -> str | None:
        """First value of header `name` (case-insensitive, no compact forms)."""
        for line in re.split(r"\r?\n", self.text)[1:]:
            if not line:
                break
            key, _, value = line.partition(":")
            if key.strip().lower() == name.lower():
                return value.strip()
        return None


@dataclass
class SippResult:
    command: list[str]
    returncode: int
    stdout: str
    stderr: str
    message_log: str
    error_log: str
    messages: list[SippMessage] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def received(self) -> list[SippMessage]:
        return [m for m in self.messages if m.direction == "received"]

    @property
    def sent(self) -> list[SippMessage]:
        return [m for m in self.messages if m.direction == "sent"]

    @property
    def received_statuses(self) -> list[int]:
        return [m.status for m in self.received if m.status is not None]

    def explain(self) -> str:
        """Everything needed to understand a failed run, for assertion messages."""
        return (
            f"sipp exit {self.returncode}: {' '.join(self.command)}\n"
            f"--- sipp errors ---\n{self.error_log[-4000:]}\n"
            f"--- sipp stderr ---\n{self.stderr[-2000:]}\n"
            f"--- messages ---\n{self.message_log[-8000:]}"
        )


def parse_message_log(text: str) -> list[SippMessage]:
    """Split sipp's -message_file into the messages it sent and received, in order."""
    messages: list[SippMessage] = []
    entries = list(_ENTRY.finditer(text))
    for index, entry in enumerate(entries):
        end = entries[index + 1].start() if index + 1 < len(entries) else len(text)
        body = text[entry.end() : end]
        # Drop the dashed separator (and timestamp) that precedes the next entry.
        body = re.sub(r"\n-{10,}[^\n]*\n?\s*$", "\n", body)
        body = body.lstrip("\r\n").rstrip() + "\r\n\r\n"
        messages.append(SippMessage(entry.group("dir"), body))
    return messages


def _free_port(kind: int, host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, kind) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def scenario_path(scenario: str | Path) -> Path:
    path = Path(scenario)
    if not path.is_absolute() and not path.exists():
        path = DATA_DIR / path
    if not path.is_file():
        raise SippError(f"sipp scenario not found: {scenario}")
    return path


def start_sipp(
    sipp: str,
    scenario: str | Path,
    *,
    port: int,
    log_file: Path,
    workdir: Path,
    calls: int = 1,
    timeout: str = "30s",
    target: str | None = None,
    extra_args: list[str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start sipp in the background on 127.0.0.1:`port` (a UAS, or a UAC towards `target`),
    tracing every message to `log_file`; the caller waits with `communicate()`. For scenarios
    that must run while the test drives the phone (`run_sipp` waits for sipp to finish)."""
    command = [sipp] + ([target] if target else []) + [
        "-sf", str(scenario_path(scenario)),
        "-i", "127.0.0.1",
        "-p", str(port),
        "-m", str(calls),
        "-timeout", timeout,
        "-timeout_error",
        "-nostdin",
        "-trace_msg",
        "-message_file", str(log_file),
    ] + (extra_args or [])  # fmt: skip
    log.info("starting %s", " ".join(command))
    return subprocess.Popen(
        command, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )


def run_sipp(
    scenario: str | Path,
    target: tuple[str, int],
    *,
    workdir: Path,
    transport: str = "udp",
    keys: dict[str, str] | None = None,
    auth_user: str | None = None,
    auth_password: str | None = None,
    service: str | None = None,
    calls: int = 1,
    timeout: float = 15.0,
    local_ip: str = "127.0.0.1",
    extra_args: list[str] | None = None,
    binary: str = "sipp",
) -> SippResult:
    """Run one sipp scenario as UAC against `target` and return what happened."""
    if transport not in _TRANSPORTS:
        raise ValueError(f"transport must be one of {sorted(_TRANSPORTS)}")
    exe = shutil.which(binary)
    if exe is None:
        raise SippError(f"{binary} not found on PATH")
    path = scenario_path(scenario)
    run_dir = workdir / f"sipp-{path.stem}-{next(_run_ids)}"
    run_dir.mkdir(parents=True, exist_ok=True)
    message_file = run_dir / "messages.log"
    error_file = run_dir / "errors.log"
    host, port = target
    remote = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    sip_port_kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
    seconds = max(1, int(timeout))
    command = [
        exe,
        remote,
        "-sf",
        str(path),
        "-t",
        _TRANSPORTS[transport],
        "-i",
        local_ip,
        "-p",
        str(_free_port(sip_port_kind, local_ip)),
        "-cp",
        str(_free_port(socket.SOCK_DGRAM)),
        "-m",
        str(calls),
        "-timeout",
        f"{seconds}s",
        "-timeout_error",
        "-recv_timeout",
        f"{seconds * 1000}",
        "-nostdin",
        "-trace_msg",
        "-message_file",
        str(message_file),
        "-trace_err",
        "-error_file",
        str(error_file),
    ]
    if service is not None:
        command += ["-s", service]
    if auth_user is not None:
        command += ["-au", auth_user, "-ap", auth_password or ""]
    for name, value in (keys or {}).items():
        command += ["-key", name, str(value)]
    command += extra_args or []
    log.info("running %s", " ".join(command))
    try:
        proc = subprocess.run(
            command,
            cwd=run_dir,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=seconds + 10,
            check=False,
        )
        returncode = proc.returncode
        stdout, stderr = proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as exc:
        returncode = -9
        stdout = exc.stdout or b""
        stderr = (exc.stderr or b"") + b"\n[killed: sipp overran its own timeout]"
    message_log = message_file.read_text(errors="replace") if message_file.exists() else ""
    error_log = error_file.read_text(errors="replace") if error_file.exists() else ""
    return SippResult(
        command=command,
        returncode=returncode,
        stdout=stdout.decode(errors="replace"),
        stderr=stderr.decode(errors="replace"),
        message_log=message_log,
        error_log=error_log,
        messages=parse_message_log(message_log),
    )
