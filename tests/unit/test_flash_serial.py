"""Acceptance 6: `deskphone-flash --serial` against an emulated board console on a pty.

The emulated board is a getty-like login (``raspberrypi login:`` / ``Password:``, "Login
incorrect" on a wrong password) followed by a real ``/bin/sh`` whose input and output go over
the pty, with terminal echo until the flasher turns it off - what a Raspberry Pi's serial console
looks like from the other end of the cable. Files land in a directory standing in for
/boot/firmware.
"""

from __future__ import annotations

import os
import pty
import re
import subprocess
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from tests.unit.provision_helpers import make_fleet
from tools.flash.cli import main as flash_main
from tools.provision import pki
from tools.provision.fleet import Fleet

USER, PASSWORD = "pi", "raspberry-board"
B64_LINE = re.compile(rb"^[A-Za-z0-9+/=]{76}$")


class EmulatedBoard:
    """The board end of a serial cable: login prompt, then a shell, over a pty master."""

    def __init__(self, corrupt_once: bool = False, sudo: bool = False) -> None:
        self.master, self.slave = pty.openpty()
        self.path = os.ttyname(self.slave)
        self.corrupt_once = corrupt_once
        self.sudo = sudo
        self.sudo_calls = 0
        self.logins: list[tuple[str, str]] = []
        self.shell: subprocess.Popen[bytes] | None = None
        self._echo = True
        self._stop = False
        self._pump: threading.Thread
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _write(self, data: bytes) -> None:
        if not self._stop:
            os.write(self.master, data)

    def _lines(self) -> Iterator[bytes]:
        buf = b""
        while not self._stop:
            try:
                chunk = os.read(self.master, 4096)
            except OSError:
                return
            if not chunk:
                return
            buf += chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                yield line

    def _run(self) -> None:
        lines = self._lines()
        next(lines, None)  # the flasher's wake-up Enter
        while True:
            self._write(b"\r\nraspberrypi login: ")
            user = next(lines, None)
            if user is None:
                return
            self._write(user + b"\r\nPassword: ")
            password = next(lines, None)  # not echoed, like a real getty
            if password is None:
                return
            self.logins.append((user.decode(), password.decode()))
            if (user.decode(), password.decode()) == (USER, PASSWORD):
                break
            self._write(b"\r\nLogin incorrect\r\n")
        self.shell = subprocess.Popen(
            ["/bin/sh"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        self._pump = threading.Thread(target=self._pump_out, daemon=True)
        self._pump.start()
        self._write(b"\r\npi@raspberrypi:~ $ ")
        assert self.shell.stdin is not None
        if self.sudo:  # a non-root login whose sudo works without a password (counted)
            self.shell.stdin.write(b'sudo() { echo x >> "${SUDO_LOG:-/dev/null}"; "$@"; }\n')
        for line in lines:
            if self._echo:
                self._write(line + b"\r\n")
            if b"stty -echo" in line:
                self._echo = False
            if self.corrupt_once and B64_LINE.match(line):
                self.corrupt_once = False
                line = line[:10] + (b"A" if line[10:11] != b"A" else b"B") + line[11:]
            self.shell.stdin.write(line + b"\n")
            self.shell.stdin.flush()

    def _pump_out(self) -> None:
        assert self.shell is not None and self.shell.stdout is not None
        while True:
            data = self.shell.stdout.read1(4096)  # type: ignore[attr-defined]
            if not data:
                return
            self._write(data.replace(b"\n", b"\r\n"))

    def close(self) -> None:
        """Stop both threads before the master fd is closed (its number must not be reused
        by someone else while a thread could still write to it)."""
        self._stop = True
        if self.shell is not None:
            self.shell.kill()
            self.shell.wait()
            self._pump.join(5)
        os.close(self.slave)  # the master side now reads EIO: the board thread ends
        self._thread.join(5)
        os.close(self.master)


@pytest.fixture(params=[False, True], ids=["root-login", "sudo"])
def board(request: pytest.FixtureRequest) -> Iterator[EmulatedBoard]:
    b = EmulatedBoard(sudo=request.param)
    yield b
    b.close()


def _flash(fleet: Path, board: EmulatedBoard, remote: Path, *extra: str) -> int:
    return flash_main(
        [str(fleet), "--id", "desk-9", "--url", "https://127.0.0.1:8443", "--serial", board.path,
         "--user", USER, "--password", PASSWORD, "--remote-root", str(remote), *extra]
    )  # fmt: skip


def test_serial_flash_writes_verified_identity_onto_the_board(
    tmp_path: Path, board: EmulatedBoard, monkeypatch: pytest.MonkeyPatch
) -> None:
    ff = make_fleet(tmp_path, devices=())
    remote = tmp_path / "board" / "boot-firmware"
    sudo_log = tmp_path / "sudo.log"
    monkeypatch.setenv("SUDO_LOG", str(sudo_log))  # inherited by the board's shell at login
    assert _flash(ff.fleet, board, remote, *(["--sudo"] if board.sudo else [])) == 0
    if board.sudo:  # mkdir, write, sha256sum, chmod, mv of each of the 11 files via sudo
        assert len(sudo_log.read_text().split()) == 5 * 11
    else:
        assert not sudo_log.exists()
    assert board.logins == [(USER, PASSWORD)]
    files = remote / "deskphone"
    bootstrap = tomllib.loads((files / "bootstrap.toml").read_text())
    assert bootstrap["device"]["id"] == "desk-9"
    assert bootstrap["provisioning"]["url"] == "https://127.0.0.1:8443"
    # The certificate on the board is the fleet CA's, for this device, matching its key...
    cert = x509.load_pem_x509_certificate((files / "device.crt").read_bytes())
    ca = x509.load_pem_x509_certificate((ff.fleet / "ca.crt").read_bytes())
    cert.verify_directly_issued_by(ca)
    assert cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == "desk-9"
    key = pki.load_key((files / "device.key").read_bytes())
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.public_key().public_numbers() == cert.public_key().public_numbers()
    assert (files / "device.key").stat().st_mode & 0o777 == 0o600
    # ... and it is what the inventory recorded (the private key itself is not in the fleet).
    rec = Fleet(ff.fleet).device("desk-9")
    assert rec["cert_sha256"] == pki.fingerprint(cert)
    assert rec["flashed_to"].startswith(f"serial:{board.path}:")
    assert not list(ff.fleet.rglob("device.key"))
    # The firmware bundle arrived byte for byte; no temporary files were left behind.
    assert (files / "firmware" / "0.1.0.tar.gz").read_bytes() == (
        ff.fleet / "firmware" / "0.1.0.tar.gz"
    ).read_bytes()
    assert not list(files.rglob("*.dpf-tmp"))


def test_wrong_password_is_a_clear_error(
    tmp_path: Path, board: EmulatedBoard, capsys: pytest.CaptureFixture[str]
) -> None:
    ff = make_fleet(tmp_path, devices=())
    capsys.readouterr()
    rc = flash_main(
        [str(ff.fleet), "--id", "desk-9", "--url", "https://127.0.0.1:8443", "--serial",
         board.path, "--password", "wrong", "--remote-root", str(tmp_path / "b")]
    )  # fmt: skip
    assert rc == 2
    assert "login as pi refused (Login incorrect)" in capsys.readouterr().err
    assert "desk-9" not in Fleet(ff.fleet).inventory()["devices"]


def test_damaged_transfer_is_detected_and_nothing_recorded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ff = make_fleet(tmp_path, devices=())
    board = EmulatedBoard(corrupt_once=True)
    try:
        capsys.readouterr()
        assert _flash(ff.fleet, board, tmp_path / "b") == 2
    finally:
        board.close()
    err = capsys.readouterr().err
    assert "arrived damaged (sha256 mismatch), removed" in err
    assert not list((tmp_path / "b").rglob("*.dpf-tmp"))
    assert "cert_sha256" not in Fleet(ff.fleet).device("desk-9")
