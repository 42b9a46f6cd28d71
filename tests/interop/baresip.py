"""A real baresip (Debian package, 1.0.x) as a headless second phone for interop tests.

`Baresip` writes a config directory from data/baresip/config.tmpl plus an `accounts` line,
starts ``baresip -f <dir>`` on 127.0.0.1 with free ports, and drives it over `ctrl_tcp`
(netstring-framed JSON: ``{"command": ..., "params": ..., "token": ...}`` in,
``{"response": true, "ok": ..., "data": ..., "token": ...}`` and
``{"event": true, "type": ..., "param": ..., ...}`` out). A reader thread collects every event.

Audio without a sound card: the `aufile` source plays a tone WAV (generated here at the first
codec's clock rate, because baresip 1.0's aufile refuses a WAV whose rate differs from the
codec's - so list codecs of one clock rate - and long enough: aufile ends the call when the file
ends); the `sndfile` filter writes ``dump-<YYYY-MM-DD-hh-mm-ss>-enc.wav`` (what it sent) and ``-dec.wav`` (what it received) to the
record directory. The file name has one-second resolution: two calls of one instance within the
same second share (overwrite) a file. After a re-INVITE (hold, resume, session refresh) baresip
1.0 keeps receiving RTP but its -dec.wav stops growing: measure received audio before any
re-INVITE, or in a new call.

Fixture ``make_baresip`` (function scope; a test module or conftest imports it from here)::

    def test_x(make_baresip, kamailio):
        b = make_baresip("1002", kamailio=kamailio, codecs=["G722"], auto_answer=True, tone_hz=440)
        a = make_baresip("1001", kamailio=kamailio, codecs=["G722"], tone_hz=1000)
        a.dial(kamailio.aor("1002"))
        b.wait_event("CALL_ESTABLISHED")
        ...
        a.hangup()
        b.wait_event("CALL_CLOSED")
        frequency, rms = tone_of(b.received_wavs()[0])   # tests/interop/audio_files.py

`start()` is called by the fixture and returns once the account is registered (REGISTER_OK, or
baresip's "200 OK" log line when the event came before ctrl_tcp was connected); every instance
is stopped by PID (SIGTERM, which un-registers, then SIGKILL) at the end of the test.

baresip 1.0 facts this relies on (checked against the installed binary):
* commands come from the `menu` module: dial, accept, hangup, hold, resume, sndcode;
* DTMF is sent only as RFC 4733 telephone-events (no INFO sending, no dtmfmode setting);
  received digits (RFC 4733 or SIP INFO dtmf-relay) raise CALL_DTMF_START (param = digit)
  and CALL_DTMF_END (no param);
* answermode=auto answers at once; SDES-SRTP is the account's ``mediaenc=srtp`` (optional),
  ``srtp-mand`` (RTP/SAVP, required) or ``srtp-mandf``;
* TLS listens on the SIP port + 1 and needs ``sip_certificate`` (certificate and key in one
  PEM) because the proxy opens a new TLS connection to it for incoming calls; libre does not
  reject an unverifiable server certificate, so ``sip_cafile`` does not make it verify.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import json
import logging
import os
import re
import signal
import socket
import subprocess
import threading
import time
import wave
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require_tool
from tests.interop.audio_files import write_tone

log = logging.getLogger(__name__)

CONFIG_TEMPLATE = Path(__file__).resolve().parent / "data" / "baresip" / "config.tmpl"

# Codec name -> the "name/rate/channels" form baresip needs (a bare "G722" means G722/8000).
CODECS = {
    "PCMU": ("PCMU/8000/1", 8000),
    "PCMA": ("PCMA/8000/1", 8000),
    "G722": ("G722/16000/1", 16000),
}
MEDIAENC = (None, "srtp", "srtp-mand", "srtp-mandf")
DTMF_MODES = ("rfc4733",)
_REGISTER_LINE = re.compile(r"\{\d+/(UDP|TCP|TLS)/v[46]\} (\d{3}) ")


class BaresipError(RuntimeError):
    """baresip could not be started, did not answer, or an awaited event did not come."""


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM it if the test process dies (Linux prctl)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _bindable(port: int, kind: int) -> bool:
    try:
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False


def free_sip_port() -> int:
    """A port P with UDP+TCP free on P and TCP free on P + 1 (baresip's TLS port)."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port < 65535 and _bindable(port, socket.SOCK_STREAM):
            if _bindable(port + 1, socket.SOCK_STREAM):
                return port
    raise BaresipError("no free port pair for baresip's SIP listener")


def free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def netstring(payload: bytes) -> bytes:
    return str(len(payload)).encode() + b":" + payload + b","


def parse_netstrings(buffer: bytearray) -> list[bytes]:
    """Remove and return every complete netstring at the front of `buffer`."""
    out: list[bytes] = []
    while True:
        colon = buffer.find(b":")
        if colon < 0:
            return out
        length_text = bytes(buffer[:colon])
        if not length_text.isdigit() or colon > 9:
            raise BaresipError(f"bad netstring length {length_text[:20]!r} from ctrl_tcp")
        length = int(length_text)
        end = colon + 1 + length
        if len(buffer) < end + 1:
            return out
        if buffer[end : end + 1] != b",":
            raise BaresipError("netstring from ctrl_tcp not terminated by ','")
        out.append(bytes(buffer[colon + 1 : end]))
        del buffer[: end + 1]


class Baresip:
    """One baresip process with one account; see the module docstring."""

    def __init__(
        self,
        workdir: Path,
        *,
        user: str,
        password: str,
        registrar: str,
        domain: str = "127.0.0.1",
        codecs: Sequence[str] = ("PCMU",),
        auto_answer: bool = False,
        tone_hz: float = 1000.0,
        tone_wav: Path | None = None,
        tone_seconds: float = 30.0,
        record_dir: Path | None = None,
        mediaenc: str | None = None,
        dtmf_mode: str = "rfc4733",
        ca_file: Path | None = None,
        certificate: Path | None = None,
        regint: int = 60,
        sip_trace: bool = False,
        binary: str = "baresip",
    ) -> None:
        unknown = [c for c in codecs if c.upper() not in CODECS]
        if not codecs or unknown:
            raise ValueError(f"codecs must be a non-empty subset of {sorted(CODECS)}: {unknown}")
        if mediaenc not in MEDIAENC:
            raise ValueError(f"mediaenc must be one of {MEDIAENC}, not {mediaenc!r}")
        if dtmf_mode not in DTMF_MODES:
            raise ValueError(f"baresip 1.0 only sends DTMF as {DTMF_MODES}, not {dtmf_mode!r}")
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.user = user
        self.password = password
        self.registrar = registrar
        self.domain = domain
        self.codecs = [c.upper() for c in codecs]
        self.auto_answer = auto_answer
        self.mediaenc = mediaenc
        self.ca_file = ca_file
        self.certificate = certificate
        self.regint = regint
        self.sip_trace = sip_trace
        self.binary = binary
        self.transport = self._transport_of(registrar)
        self.record_dir = record_dir or workdir / "recordings"
        self.record_dir.mkdir(parents=True, exist_ok=True)
        self.rate = CODECS[self.codecs[0]][1]
        if tone_wav is None:
            tone_wav = write_tone(
                workdir / f"tone-{tone_hz:g}Hz-{self.rate}.wav",
                tone_hz,
                seconds=tone_seconds,
                rate=self.rate,
            )
        else:
            with wave.open(str(tone_wav), "rb") as wav:
                if wav.getframerate() != self.rate:
                    raise ValueError(
                        f"{tone_wav} is {wav.getframerate()} Hz but baresip's aufile needs "
                        f"{self.rate} Hz for {self.codecs[0]}"
                    )
        self.tone_wav = tone_wav
        self.sip_port = free_sip_port()
        self.ctrl_port = free_tcp_port()
        self.config_dir = workdir / "config"
        self.log_path = workdir / "baresip.log"
        self.events: list[dict[str, Any]] = []
        self._responses: dict[str, dict[str, Any]] = {}
        self._cond = threading.Condition()
        self._cursors: dict[str, int] = {}
        self._tokens = itertools.count(1)
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._reader: threading.Thread | None = None
        self._write_config()

    # -- properties ---------------------------------------------------------------------------

    @property
    def aor(self) -> str:
        return f"sip:{self.user}@{self.domain}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_text(self) -> str:
        """baresip's stdout/stderr; with ``sip_trace=True`` it includes every SIP message."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> None:
        """Start baresip, connect to ctrl_tcp and wait until the account is registered."""
        if self.running:
            return
        deadline = time.monotonic() + timeout
        with self.log_path.open("ab") as logf:
            self._proc = subprocess.Popen(
                [self.binary, "-f", str(self.config_dir)] + (["-s"] if self.sip_trace else []),
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        try:
            self._connect(deadline)
            self._wait_registered(deadline)
        except BaresipError:
            self.stop()
            raise
        log.info("baresip pid %s ready: %s sip=%s", self.pid, self.aor, self.sip_port)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop by PID: SIGTERM (baresip un-registers first), SIGKILL after `timeout`."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    log.warning("baresip pid %s ignored SIGTERM; killing it", proc.pid)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout)
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        if self._reader is not None:
            self._reader.join(timeout)
            self._reader = None

    # -- call control -------------------------------------------------------------------------

    def command(self, command: str, params: str | None = None, timeout: float = 5.0) -> str:
        """Run a baresip command through ctrl_tcp; returns its output, raises if not ok."""
        if self._sock is None:
            raise BaresipError("baresip is not started")
        token = f"t{next(self._tokens)}"
        message: dict[str, Any] = {"command": command, "token": token}
        if params is not None:
            message["params"] = params
        self._sock.sendall(netstring(json.dumps(message).encode()))
        deadline = time.monotonic() + timeout
        with self._cond:
            while token not in self._responses:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._cond.wait(remaining):
                    if token in self._responses:
                        break
                    raise self._fail(f"no response to {command!r} within {timeout} s")
            response = self._responses.pop(token)
        if not response.get("ok"):
            raise BaresipError(f"baresip {command} {params or ''}: {response.get('data')!r}")
        return str(response.get("data", ""))

    def dial(self, uri: str) -> None:
        self.command("dial", uri)

    def answer(self) -> None:
        self.command("accept")

    def hangup(self) -> None:
        self.command("hangup")

    def hold(self) -> None:
        self.command("hold")

    def resume(self) -> None:
        self.command("resume")

    def send_dtmf(self, digits: str) -> None:
        """Send digits (0-9*#A-D) as RFC 4733 events on the current call, one at a time."""
        for digit in digits:
            self.command("sndcode", digit)

    # -- events ---------------------------------------------------------------------------

    def wait_event(
        self,
        event_type: str,
        timeout: float = 10.0,
        *,
        predicate: Callable[[dict[str, Any]], bool] | None = None,
    ) -> dict[str, Any]:
        """The next event of `event_type` (matching `predicate`) not returned before.

        Each type has its own cursor, so a second CALL_ESTABLISHED wait returns the second
        call's event even if it arrived earlier. Raises BaresipError on timeout.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                start = self._cursors.get(event_type, 0)
                for index in range(start, len(self.events)):
                    event = self.events[index]
                    if event.get("type") == event_type and (predicate is None or predicate(event)):
                        self._cursors[event_type] = index + 1
                        return event
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(min(remaining, 0.5))
                if not self.running and time.monotonic() > deadline:
                    break
        seen = [e.get("type") for e in self.events]
        raise self._fail(f"no {event_type} event within {timeout} s (events: {seen})")

    def wait_events(
        self, event_type: str, count: int, timeout: float = 10.0
    ) -> list[dict[str, Any]]:
        """The next `count` events of one type, within one overall timeout."""
        deadline = time.monotonic() + timeout
        return [
            self.wait_event(event_type, max(0.0, deadline - time.monotonic())) for _ in range(count)
        ]

    def event_types(self) -> list[str]:
        with self._cond:
            return [str(e.get("type")) for e in self.events]

    # -- recordings ---------------------------------------------------------------------------

    def recorded_wavs(self) -> list[Path]:
        """Every WAV sndfile wrote, oldest first."""
        return sorted(self.record_dir.glob("dump-*.wav"))

    def received_wavs(self) -> list[Path]:
        """Recordings of the audio baresip received (decoded), oldest first."""
        return [p for p in self.recorded_wavs() if p.name.endswith("-dec.wav")]

    def wait_for_a_fresh_recording_name(self, recordings: int, timeout: float = 5.0) -> None:
        """Return once `recordings` received WAVs exist and a call starting now gets a new name.

        sndfile names a call's files by the local-time second of its first audio frame, so a
        second call of this instance that starts within the same second would truncate and
        share the first call's file (a corrupt WAV). There is no event for "the clock ticked",
        so this waits for the file (polling) and then, at most, for the next second.
        """
        deadline = time.monotonic() + timeout
        while len(self.received_wavs()) < recordings:
            if time.monotonic() > deadline:
                raise self._fail(f"fewer than {recordings} received recordings within {timeout} s")
            time.sleep(0.02)
        while any(
            p.name.startswith(time.strftime("dump-%Y-%m-%d-%H-%M-%S-"))
            for p in self.recorded_wavs()
        ):
            if time.monotonic() > deadline:
                raise self._fail(f"no fresh recording name within {timeout} s")
            time.sleep(max(0.01, 1.0 - time.time() % 1.0))

    def sent_wavs(self) -> list[Path]:
        """Recordings of the audio baresip sent (before encoding), oldest first."""
        return [p for p in self.recorded_wavs() if p.name.endswith("-enc.wav")]

    # -- internals ------------------------------------------------------------------------

    @staticmethod
    def _transport_of(uri: str) -> str:
        match = re.search(r";transport=(\w+)", uri, re.IGNORECASE)
        transport = match.group(1).lower() if match else "udp"
        if transport not in ("udp", "tcp", "tls"):
            raise ValueError(f"unsupported transport {transport!r} in {uri!r}")
        return transport

    def _write_config(self) -> None:
        self.config_dir.mkdir(parents=True, exist_ok=True)
        tls_lines = []
        if self.ca_file is not None:
            tls_lines.append(f"sip_cafile\t\t{self.ca_file}")
        if self.certificate is not None:
            tls_lines.append(f"sip_certificate\t\t{self.certificate}")
        values = {
            "SIP_PORT": str(self.sip_port),
            "CTRL_PORT": str(self.ctrl_port),
            "TLS_LINES": "\n".join(tls_lines),
            "TONE_WAV": str(self.tone_wav),
            "RECORD_DIR": str(self.record_dir),
        }
        text = CONFIG_TEMPLATE.read_text()
        for key, value in values.items():
            text = text.replace(f"@@{key}@@", value)
        if "@@" in text:
            raise BaresipError(f"unfilled placeholder in {CONFIG_TEMPLATE}")
        (self.config_dir / "config").write_text(text)
        (self.config_dir / "accounts").write_text(self.account_line() + "\n")
        # An empty contacts file stops baresip from writing its example one.
        (self.config_dir / "contacts").write_text("")

    def account_line(self) -> str:
        aor_params = "" if self.transport == "udp" else f";transport={self.transport}"
        params = [
            f"auth_pass={self.password}",
            f'outbound="{self.registrar}"',
            f"regint={self.regint}",
            f"answermode={'auto' if self.auto_answer else 'manual'}",
            "audio_codecs=" + ",".join(CODECS[c][0] for c in self.codecs),
        ]
        if self.mediaenc:
            params.append(f"mediaenc={self.mediaenc}")
        return f"<sip:{self.user}@{self.domain}{aor_params}>;" + ";".join(params)

    def _connect(self, deadline: float) -> None:
        while True:
            self._check_alive()
            try:
                sock = socket.create_connection(("127.0.0.1", self.ctrl_port), timeout=0.5)
                break
            except OSError as exc:
                if time.monotonic() > deadline:
                    raise self._fail(
                        f"ctrl_tcp port {self.ctrl_port} not accepting: {exc}"
                    ) from exc
                time.sleep(0.02)
        sock.settimeout(None)
        self._sock = sock
        self._reader = threading.Thread(
            target=self._read_loop, args=(sock,), name=f"baresip-{self.user}", daemon=True
        )
        self._reader.start()

    def _read_loop(self, sock: socket.socket) -> None:
        buffer = bytearray()
        while True:
            try:
                data = sock.recv(65536)
            except OSError:
                data = b""
            if not data:
                break
            buffer += data
            try:
                payloads = parse_netstrings(buffer)
            except BaresipError:
                log.exception("baresip %s: ctrl_tcp framing lost", self.user)
                break
            with self._cond:
                for payload in payloads:
                    message = json.loads(payload)
                    if message.get("event"):
                        message["received_at"] = time.monotonic()
                        self.events.append(message)
                        log.debug("baresip %s event %s", self.user, message.get("type"))
                    elif message.get("response"):
                        self._responses[str(message.get("token"))] = message
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def _wait_registered(self, deadline: float) -> None:
        """REGISTER_OK from ctrl_tcp, or (if it came before we connected) baresip's log line."""
        while True:
            self._check_alive()
            with self._cond:
                types = [e.get("type") for e in self.events]
            if "REGISTER_OK" in types:
                return
            if "REGISTER_FAIL" in types:
                raise self._fail("registration failed")
            for match in _REGISTER_LINE.finditer(self.log_text()):
                if match.group(2) == "200":
                    return
                if match.group(2)[0] in "3456" and match.group(2) not in ("401", "407"):
                    raise self._fail(f"registration failed with {match.group(2)}")
            if time.monotonic() > deadline:
                raise self._fail("not registered in time")
            with self._cond:
                self._cond.wait(0.05)

    def _check_alive(self) -> None:
        if self._proc is None or self._proc.poll() is not None:
            code = None if self._proc is None else self._proc.returncode
            raise self._fail(f"exited with status {code}")

    def _fail(self, why: str) -> BaresipError:
        tail = "\n".join(self.log_text().splitlines()[-40:])
        return BaresipError(f"baresip {self.aor} (sip port {self.sip_port}): {why}; log:\n{tail}")


@pytest.fixture(name="make_baresip")
def make_baresip(
    tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., Baresip]]:
    """Factory: ``make_baresip(user, kamailio=..., transport="udp", **Baresip options)``.

    With `kamailio` (a tests.interop.kamailio.Kamailio) the password, registrar URI for
    `transport`, domain and TLS CA come from it; for TLS the session `pki` server certificate
    is given to baresip so the proxy can connect to it. Instances are started before being
    returned and stopped by PID when the test ends.
    """
    binary = require_tool("baresip")
    instances: list[Baresip] = []

    def factory(
        user: str,
        *,
        kamailio: Any = None,
        transport: str = "udp",
        start: bool = True,
        **kwargs: Any,
    ) -> Baresip:
        workdir = tmp_path / f"baresip-{user}-{len(instances)}"
        if kamailio is not None:
            kwargs.setdefault("password", kamailio.users[user])
            kwargs.setdefault("registrar", kamailio.uri(transport))
            kwargs.setdefault("domain", kamailio.domain)
            kwargs.setdefault("ca_file", kamailio.ca_cert)
            if transport == "tls" and "certificate" not in kwargs:
                kwargs["certificate"] = _combined_pem(workdir, kamailio.pki)
        instance = Baresip(workdir, user=user, binary=binary, **kwargs)
        instances.append(instance)
        if start:
            instance.start()
        return instance

    yield factory
    for instance in instances:
        instance.stop()


def _combined_pem(workdir: Path, pki: Any) -> Path:
    """baresip's sip_certificate wants certificate and private key in one file."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "sip-cert.pem"
    path.write_bytes(Path(pki.server_cert).read_bytes() + Path(pki.server_key).read_bytes())
    path.chmod(0o600)
    return path
