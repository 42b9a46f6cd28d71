"""A real Kamailio registrar/proxy on loopback for interop tests.

The `kamailio` session fixture (tests/interop/conftest.py) returns a started `Kamailio`:

* Transports on 127.0.0.1, each on its own free port: ``udp_addr``, ``tcp_addr``, ``tls_addr``
  (``(host, port)`` tuples), plus ``udp6_addr`` on ``[::1]`` when IPv6 loopback works (else
  None). ``uri("tls")`` gives e.g. ``"sip:127.0.0.1:40123;transport=tls"`` for an outbound
  proxy / registrar setting.
* ``domain`` is "127.0.0.1" (also the digest realm). Port-less URIs of it
  (``sip:1001@127.0.0.1``) count as local thanks to ``alias=`` lines.
* ``users``: dict user -> password, by default "1001".."1200" with passwords "pw1001".."pw1200";
  each test file uses its own range (see DEFAULT_USERS) so bindings never collide.
  ``aor(user)`` -> ``"sip:1001@127.0.0.1"``.
* Digest auth: REGISTER is challenged with 401 (``www_challenge``, qop=auth); other requests
  from our users with 407 (``proxy_challenge``) unless ``request_auth=False``. The auth user must
  equal the To (REGISTER) / From user, else 403. Kamailio 5.6 offers ONE algorithm per instance
  (``algorithm="MD5"`` default, or ``"SHA-256"``): the ``kamailio_sha256`` fixture is a second
  instance challenging with SHA-256.
* Registrar: usrloc in memory; ``min_expires`` (default 5 s), ``max_expires`` (3600 s),
  ``default_expires`` (60 s) so tests can use short registrations. An Expires below
  ``min_expires`` gets 423 Interval Too Brief with Min-Expires (``reject_brief_expires=False``
  makes Kamailio silently raise it instead).
* Proxy: requests to registered users are forwarded via ``lookup("location")`` with
  ``record_route``; unknown users get 404. OPTIONS to the proxy itself gets 200 with Allow,
  an unknown method to it 501, a malformed request 400 (``sanity_check``).
* TLS: server certificate from `certs.make_pki` (SANs 127.0.0.1, ::1, localhost); ``ca_cert``
  is the CA file a client must trust; client certificates are not required.
* ``contacts(aor)`` -> list of dicts from ``ul.lookup`` over the jsonrpcs datagram socket, keys as
  Kamailio names them: "Address", "Expires", "Q", "Call-ID", "CSeq", "User-Agent", "Received",
  "Socket", "Instance", "Reg-Id", ... (empty list when the AOR is not registered).
  ``rpc(method, *params)`` calls any other RPC command.
* ``stop()`` / ``start()`` / ``restart()`` reuse the same ports (the registrar-restart test);
  the location table is lost on restart, as with a real memory-only registrar.
* ``log_path`` is Kamailio's stderr; ``log_text()`` reads it. A failed start raises
  `KamailioError` with the log tail in the message.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import itertools
import json
import logging
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.interop.certs import TestPKI

log = logging.getLogger(__name__)

DATA_DIR = Path(__file__).resolve().parent / "data"
CFG_TEMPLATE = DATA_DIR / "kamailio.cfg.tmpl"
# Users are handed out by test file so tests sharing the session Kamailio never see each
# other's bindings: 1001-1010 registration, 1011-1020 harness, 1021-1034 calls, 1035-1040
# conference, 1041-1044 tones, 1045-1050 attended, 1051-1060 transfer, 1061-1080 desk features
# (BLF/MWI/DND/...), 1081-1100 board/UI/demo, 1101-1120 provisioning, 1121-1140 line
# appearances, 1141-1160 call-control security/focus/Join, 1161-1170 credential scope,
# 1171-1200 free.
DEFAULT_USERS = {str(n): f"pw{n}" for n in range(1001, 1201)}
ALGORITHMS = ("MD5", "SHA-256")
_SAFE_PASSWORD_CHARS = set(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.!~*()&=+$,;?/:@%#^[]{}|<> "
)


class KamailioError(RuntimeError):
    """Kamailio could not be started, stopped or queried."""


def ipv6_loopback_works() -> bool:
    """True if a UDP socket can be bound to [::1] (IPv6 may be disabled in containers)."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def _port_is_free(port: int, ipv6: bool) -> bool:
    checks = [
        (socket.AF_INET, socket.SOCK_DGRAM, "127.0.0.1"),
        (socket.AF_INET, socket.SOCK_STREAM, "127.0.0.1"),
    ]
    if ipv6:
        checks.append((socket.AF_INET6, socket.SOCK_DGRAM, "::1"))
    for family, kind, host in checks:
        try:
            with socket.socket(family, kind) as s:
                s.bind((host, port))
        except OSError:
            return False
    return True


def free_ports(count: int, *, ipv6: bool = False) -> list[int]:
    """`count` distinct ports free for UDP and TCP on 127.0.0.1 (and UDP on ::1 if ipv6).

    The kernel picks each candidate (bind to port 0); it is then checked for every family.
    """
    ports: list[int] = []
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in ports and _port_is_free(port, ipv6):
            ports.append(port)
            if len(ports) == count:
                return ports
    raise KamailioError(f"could not find {count} free loopback ports")


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM it if the test process dies (Linux prctl)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _sip_options(host: str, port: int, branch: str) -> bytes:
    local = "127.0.0.1" if ":" not in host else "[::1]"
    target = host if ":" not in host else f"[{host}]"
    return (
        f"OPTIONS sip:{target}:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {local}:9;branch=z9hG4bK{branch};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:probe@{local}>;tag={branch}\r\n"
        f"To: <sip:{target}:{port}>\r\n"
        f"Call-ID: {branch}@probe\r\n"
        "CSeq: 1 OPTIONS\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


class Kamailio:
    """One Kamailio process; see the module docstring for the API."""

    def __init__(
        self,
        workdir: Path,
        pki: TestPKI,
        *,
        algorithm: str = "MD5",
        users: dict[str, str] | None = None,
        min_expires: int = 5,
        max_expires: int = 3600,
        default_expires: int = 60,
        reject_brief_expires: bool = True,
        request_auth: bool = True,
        ipv6: bool | None = None,
        debug: int = 2,
        nonce_expire: int = 300,
        binary: str = "kamailio",
    ) -> None:
        if algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm must be one of {ALGORITHMS}, not {algorithm!r}")
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.pki = pki
        self.algorithm = algorithm
        self.users = dict(DEFAULT_USERS if users is None else users)
        for user, password in self.users.items():
            if not user.isalnum() or not set(password) <= _SAFE_PASSWORD_CHARS:
                raise ValueError(f"user {user!r}: user must be alphanumeric, password plain text")
        self.min_expires = min_expires
        self.max_expires = max_expires
        self.default_expires = default_expires
        self.reject_brief_expires = reject_brief_expires
        self.request_auth = request_auth
        self.ipv6 = ipv6_loopback_works() if ipv6 is None else ipv6
        self.debug = debug
        self.nonce_expire = nonce_expire
        self.binary = binary
        self.domain = "127.0.0.1"

        udp, tcp, tls = free_ports(3, ipv6=self.ipv6)
        self.udp_addr: tuple[str, int] = ("127.0.0.1", udp)
        self.tcp_addr: tuple[str, int] = ("127.0.0.1", tcp)
        self.tls_addr: tuple[str, int] = ("127.0.0.1", tls)
        self.udp6_addr: tuple[str, int] | None = ("::1", udp) if self.ipv6 else None

        self.cfg_path = workdir / "kamailio.cfg"
        self.tls_cfg_path = workdir / "tls.cfg"
        self.log_path = workdir / "kamailio.log"
        self.rpc_socket = workdir / "rpc.sock"
        self.ctl_socket = workdir / "ctl.sock"
        self._proc: subprocess.Popen[bytes] | None = None
        self._rpc_ids = itertools.count(1)
        self._write_config()
        atexit.register(self.stop)  # in case the session finalizer never runs

    # -- public helpers -------------------------------------------------------------------

    @property
    def ca_cert(self) -> Path:
        return self.pki.ca_cert

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def aor(self, user: str) -> str:
        return f"sip:{user}@{self.domain}"

    def addr(self, transport: str) -> tuple[str, int]:
        addrs = {"udp": self.udp_addr, "tcp": self.tcp_addr, "tls": self.tls_addr}
        if transport == "udp6":
            if self.udp6_addr is None:
                raise KamailioError("IPv6 loopback is not available on this machine")
            return self.udp6_addr
        return addrs[transport]

    def uri(self, transport: str = "udp") -> str:
        """SIP URI of the proxy for one transport (udp, tcp, tls, udp6)."""
        host, port = self.addr(transport)
        host = f"[{host}]" if ":" in host else host
        scheme_transport = "udp" if transport == "udp6" else transport
        return f"sip:{host}:{port};transport={scheme_transport}"

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, timeout: float = 20.0) -> None:
        """Start Kamailio in the foreground and wait until UDP, TCP, TLS and RPC answer."""
        if self.running:
            return
        with self.log_path.open("ab") as logf:
            logf.write(f"==== starting kamailio at {time.strftime('%H:%M:%S')} ====\n".encode())
            logf.flush()
            try:
                self._proc = subprocess.Popen(
                    [self.binary, "-DD", "-E", "-f", str(self.cfg_path), "-m", "64", "-M", "8"],
                    stdin=subprocess.DEVNULL,
                    stdout=logf,
                    stderr=logf,
                    cwd=self.workdir,
                    start_new_session=True,
                    preexec_fn=_die_with_parent,
                )
            except FileNotFoundError as exc:
                raise KamailioError(f"{self.binary} not found: {exc}") from exc
        try:
            self._wait_ready(timeout)
        except KamailioError:
            self.stop()
            raise
        log.info("kamailio pid %s ready: %s", self._proc.pid, self.describe())

    def stop(self, timeout: float = 10.0, grace: float = 2.0) -> None:
        """Stop by PID: SIGTERM, and SIGKILL to its process group after `grace` seconds.

        Kamailio's shutdown occasionally waits for a worker that is already gone; a test
        registrar keeps nothing worth a clean exit, so the grace period is short.
        """
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                log.info("kamailio pid %s still shutting down; killing its group", proc.pid)
        # Kamailio's worker processes share the group we created with start_new_session.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout)
        self._wait_ports_released(timeout)

    def restart(self, timeout: float = 20.0) -> None:
        self.stop()
        self.start(timeout)

    def describe(self) -> str:
        parts = [f"udp={self.udp_addr}", f"tcp={self.tcp_addr}", f"tls={self.tls_addr}"]
        if self.udp6_addr:
            parts.append(f"udp6={self.udp6_addr}")
        return " ".join(parts) + f" algorithm={self.algorithm}"

    # -- RPC ------------------------------------------------------------------------------

    def rpc(self, method: str, *params: Any, timeout: float = 5.0) -> Any:
        """Call a Kamailio RPC command over the jsonrpcs datagram socket; returns "result".

        Raises KamailioError(code, message) for a JSON-RPC error.
        """
        request_id = next(self._rpc_ids)
        request = {"jsonrpc": "2.0", "method": method, "params": list(params), "id": request_id}
        client_path = self.workdir / f"rpc-client-{os.getpid()}-{request_id}.sock"
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(str(client_path))
            try:
                sock.settimeout(timeout)
                sock.sendto(json.dumps(request).encode(), str(self.rpc_socket))
                data = sock.recv(1 << 20)
            except OSError as exc:
                raise KamailioError(f"RPC {method} failed: {exc}") from exc
            finally:
                client_path.unlink(missing_ok=True)
        reply = json.loads(data)
        if "error" in reply:
            err = reply["error"]
            raise KamailioError(f"RPC {method} error {err.get('code')}: {err.get('message')}")
        return reply.get("result")

    def contacts(self, aor: str) -> list[dict[str, Any]]:
        """The contacts registered for `aor` ("sip:1001@127.0.0.1" or "1001"); [] if none.

        Values Kamailio reports as "[not set]" (Received, Path, Instance...) become None.
        """
        # usrloc runs without use_domain, so the location table is keyed by the user part.
        user = aor.split(":", 1)[-1].split("@", 1)[0] if "@" in aor else aor
        try:
            result = self.rpc("ul.lookup", "location", user)
        except KamailioError as exc:
            if "not found" in str(exc).lower():
                return []
            raise
        contacts = (result or {}).get("Contacts") or []
        return [
            {k: (None if v == "[not set]" else v) for k, v in entry.get("Contact", entry).items()}
            for entry in contacts
        ]

    # -- internals ------------------------------------------------------------------------

    def _write_config(self) -> None:
        defines = []
        if self.ipv6:
            defines.append("#!define WITH_IPV6")
        if self.request_auth:
            defines.append("#!define WITH_REQUEST_AUTH")
        users = "\n".join(
            f'\t$sht(users=>{user}) = "{password}";' for user, password in self.users.items()
        )
        values = {
            "DEFINES": "\n".join(defines),
            "DEBUG": str(self.debug),
            "RUNDIR": str(self.workdir),
            "UDP_PORT": str(self.udp_addr[1]),
            "TCP_PORT": str(self.tcp_addr[1]),
            "TLS_PORT": str(self.tls_addr[1]),
            "EXTRA_ALIASES": "",
            "RPC_SOCKET": str(self.rpc_socket),
            "CTL_SOCKET": str(self.ctl_socket),
            "MIN_EXPIRES": str(self.min_expires),
            "MAX_EXPIRES": str(self.max_expires),
            "DEFAULT_EXPIRES": str(self.default_expires),
            "MIN_EXPIRES_MODE": "1" if self.reject_brief_expires else "0",
            "ALGORITHM": self.algorithm,
            "NONCE_EXPIRE": str(self.nonce_expire),
            "CHALLENGE_FLAGS": "1",
            "TLS_CFG": str(self.tls_cfg_path),
            "USERS": users,
        }
        text = CFG_TEMPLATE.read_text()
        for key, value in values.items():
            text = text.replace(f"@@{key}@@", value)
        if "@@" in text:
            raise KamailioError(f"unfilled placeholder in {CFG_TEMPLATE}")
        self.cfg_path.write_text(text)
        self.tls_cfg_path.write_text(
            "[server:default]\n"
            "method = TLSv1.2+\n"
            "verify_certificate = no\n"
            "require_certificate = no\n"
            f"private_key = {self.pki.server_key}\n"
            f"certificate = {self.pki.server_cert}\n"
            f"ca_list = {self.pki.ca_cert}\n"
            "\n[client:default]\n"
            "method = TLSv1.2+\n"
            "verify_certificate = no\n"
            "require_certificate = no\n"
        )

    def _fail(self, why: str) -> KamailioError:
        tail = "\n".join(self.log_text().splitlines()[-60:])
        return KamailioError(f"kamailio {why} ({self.describe()}); log {self.log_path}:\n{tail}")

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        targets = [self.udp_addr] + ([self.udp6_addr] if self.udp6_addr else [])
        for host, port in targets:
            self._wait_options(host, port, deadline)
        for host, port in (self.tcp_addr, self.tls_addr):
            self._wait_connect(host, port, deadline)
        while True:
            self._check_alive()
            try:
                self.rpc("core.version", timeout=0.5)
                return
            except KamailioError as exc:
                if time.monotonic() > deadline:
                    raise self._fail(f"RPC socket not answering: {exc}") from exc
                time.sleep(0.05)

    def _check_alive(self) -> None:
        if self._proc is None or self._proc.poll() is not None:
            code = None if self._proc is None else self._proc.returncode
            raise self._fail(f"exited during start-up with status {code}")

    def _wait_options(self, host: str, port: int, deadline: float) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.bind((host, 0))
            sock.settimeout(0.2)
            for attempt in itertools.count():
                self._check_alive()
                sock.sendto(_sip_options(host, port, f"ready{attempt}"), (host, port))
                try:
                    data = sock.recv(65535)
                    if data.startswith(b"SIP/2.0 "):
                        return
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise self._fail(f"no SIP answer on udp {host}:{port}")

    def _wait_connect(self, host: str, port: int, deadline: float) -> None:
        while True:
            self._check_alive()
            try:
                with socket.create_connection((host, port), timeout=0.5):
                    return
            except OSError as exc:
                if time.monotonic() > deadline:
                    raise self._fail(f"tcp {host}:{port} not accepting: {exc}") from exc
                time.sleep(0.05)

    def _wait_ports_released(self, timeout: float) -> None:
        """After stop, wait until Kamailio's sockets are gone so start() can bind them again."""
        deadline = time.monotonic() + timeout
        checks = [
            (socket.AF_INET, socket.SOCK_DGRAM, self.udp_addr),
            (socket.AF_INET, socket.SOCK_STREAM, self.tcp_addr),
            (socket.AF_INET, socket.SOCK_STREAM, self.tls_addr),
        ]
        if self.udp6_addr:
            checks.append((socket.AF_INET6, socket.SOCK_DGRAM, self.udp6_addr))
        while time.monotonic() < deadline:
            busy = []
            for family, kind, addr in checks:
                try:
                    with socket.socket(family, kind) as s:
                        # Kamailio itself binds with SO_REUSEADDR: TIME_WAIT does not block it.
                        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                        s.bind(addr)
                except OSError:
                    busy.append(addr)
            if not busy:
                return
            time.sleep(0.05)
        log.warning("kamailio ports still busy %.0f s after stop", timeout)
