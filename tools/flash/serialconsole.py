"""Write files onto a running board through its serial console (pyserial).

Logs in at the ``login:``/``Password:`` prompts (or uses a shell that is already open), then
sends each file as a base64 heredoc into a temporary name, checks it with ``sha256sum`` and only
then renames it into place, so an interrupted transfer never leaves a half-written file under
the real name. Command completion is detected by a marker carrying the exit status
(``__DPF_<n>_<status>__``) that never appears in the echo of the command itself, so it works
with echoing interactive shells and with plain ones alike.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import shlex
import time

import serial

from tools.flash.targets import FlashError

log = logging.getLogger(__name__)

B64_LINE = 76


class SerialConsole:
    """A logged-in shell on a serial port."""

    def __init__(
        self,
        port: str,
        *,
        baudrate: int = 115200,
        user: str = "pi",
        password: str | None = None,
        timeout: float = 30.0,
        sudo: bool = False,
    ) -> None:
        try:
            self.ser = serial.Serial(port, baudrate=baudrate, timeout=0.1)
        except serial.SerialException as e:
            raise FlashError(f"cannot open serial port {port}: {e}") from None
        self.port = port
        self.user = user
        self.password = password
        self.timeout = timeout
        self.sudo = sudo
        self._buf = b""
        self._n = 0

    def close(self) -> None:
        self.ser.close()

    def _send(self, text: str) -> None:
        self.ser.write(text.encode())
        self.ser.flush()

    def _expect(self, pattern: bytes, timeout: float | None = None) -> re.Match[bytes]:
        deadline = time.monotonic() + (timeout or self.timeout)
        regex = re.compile(pattern)
        while True:
            m = regex.search(self._buf)
            if m:
                self._buf = self._buf[m.end() :]
                return m
            if time.monotonic() > deadline:
                tail = self._buf[-200:].decode(errors="replace")
                raise FlashError(
                    f"{self.port}: timed out waiting for {pattern.decode()!r} (last: {tail!r})"
                )
            # Returns as soon as anything arrived (or after the 0.1 s port timeout).
            self._buf += self.ser.read(max(1, self.ser.in_waiting))

    def login(self) -> None:
        """Get to a shell: answer the login prompts if there are any."""
        self._send("\r")
        m = self._expect(rb"(login: ?$|[#$] ?$)", timeout=self.timeout)
        if m.group(0).startswith(b"login"):
            self._send(self.user + "\n")
            self._expect(rb"[Pp]assword: ?$")
            if self.password is None:
                raise FlashError(f"{self.port}: the board asks for a password (--password)")
            self._send(self.password + "\n")
            m = self._expect(rb"(Login incorrect|[#$] ?$)")
            if m.group(0) == b"Login incorrect":
                raise FlashError(f"{self.port}: login as {self.user} refused (Login incorrect)")
        # No prompt games: every command ends with our own marker.
        self.run("stty -echo 2>/dev/null; true")

    def run(self, command: str, stdin_lines: list[str] | None = None) -> tuple[int, str]:
        """Run one shell command (optionally fed a heredoc); returns (status, output)."""
        self._n += 1
        n = self._n
        tag = f"DPF{n}EOF"
        line = command
        if stdin_lines is not None:
            line += f" <<'{tag}'"
        # The marker is built at run time ("__DPF_" "<n>_" "$?__"), so its echo never matches.
        marker_cmd = f'echo "__DPF_{n}_$?__"'
        payload = line + "\n"
        if stdin_lines is not None:
            payload += "\n".join(stdin_lines) + f"\n{tag}\n"
        payload += marker_cmd + "\n"
        self._send(payload)
        m = self._expect(rb"(?s)(.*?)__DPF_" + str(n).encode() + rb"_(\d+)__")
        return int(m.group(2)), m.group(1).decode(errors="replace")

    def write_file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        """Write, verify by sha256 and rename into place."""
        digest = hashlib.sha256(data).hexdigest()
        tmp = f"{path}.dpf-tmp"
        q, qt = shlex.quote(path), shlex.quote(tmp)
        sudo = "sudo " if self.sudo else ""
        enc = base64.b64encode(data).decode()
        lines = [enc[i : i + B64_LINE] for i in range(0, len(enc), B64_LINE)]
        parent = shlex.quote(path.rsplit("/", 1)[0] or "/")
        status, out = self.run(f"{sudo}mkdir -p {parent}")
        if status:
            raise FlashError(f"{self.port}: mkdir for {path} failed: {out.strip()[-200:]}")
        status, out = self.run(f"{sudo}sh -c {shlex.quote('umask 077; base64 -d > ' + qt)}", lines)
        if status:
            raise FlashError(f"{self.port}: writing {path} failed: {out.strip()[-200:]}")
        status, out = self.run(f"{sudo}sha256sum {qt}")
        m = re.search(r"\b([0-9a-f]{64})\b", out)
        if status or not m or m.group(1) != digest:
            self.run(f"{sudo}rm -f {qt}")
            raise FlashError(f"{self.port}: {path} arrived damaged (sha256 mismatch), removed")
        status, out = self.run(f"{sudo}chmod {mode:o} {qt} && {sudo}mv -f {qt} {q} && sync")
        if status:
            raise FlashError(f"{self.port}: installing {path} failed: {out.strip()[-200:]}")
        log.info("%s: wrote %s (%d bytes, sha256 ok)", self.port, path, len(data))

    def read_file(self, path: str) -> bytes | None:
        sudo = "sudo " if self.sudo else ""
        status, out = self.run(f"{sudo}base64 {shlex.quote(path)} 2>/dev/null")
        if status:
            return None
        text = "".join(
            ln.strip() for ln in out.splitlines() if re.fullmatch(r"[A-Za-z0-9+/=]+", ln.strip())
        )
        return base64.b64decode(text)


class SerialTarget:
    """The boot partition of a running board, reached over its serial console."""

    def __init__(self, console: SerialConsole, remote_root: str = "/boot/firmware") -> None:
        self.console = console
        self.root = remote_root.rstrip("/")

    def write(self, rel: str, data: bytes, mode: int = 0o644) -> None:
        self.console.write_file(f"{self.root}/{rel}", data, mode)

    def read(self, rel: str) -> bytes | None:
        return self.console.read_file(f"{self.root}/{rel}")

    def describe(self) -> str:
        return f"serial:{self.console.port}:{self.root}"
