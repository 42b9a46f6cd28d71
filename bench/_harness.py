"""Shared helpers of the media benchmarks: two-phone calls of deskphone and of baresip, CPU
time from /proc, and RTP send times from the loopback interface.

The benches compare deskphone with baresip *in the same run* on the same machine, so a ratio
means something even on a busy 2-core box where absolute numbers do not. Every wait here is
bounded by a deadline; all traffic stays on 127.0.0.1. Run from the repo root with
PYTHONPATH=. (the scripts add the root themselves).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import socket
import struct
import sys
import tempfile
import threading
import time
import tomllib
import wave
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tomli_w

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.interop.baresip import Baresip  # noqa: E402
from tests.interop.certs import make_pki  # noqa: E402
from tests.interop.kamailio import Kamailio  # noqa: E402
from tests.interop.phone import PhoneProcess  # noqa: E402

log = logging.getLogger("bench")

CLK_TCK = os.sysconf("SC_CLK_TCK")
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
SCM_TIMESTAMPNS = SO_TIMESTAMPNS
SETUP_TIMEOUT = 20.0


def tool(name: str) -> str:
    """Path of a required executable (Debian keeps daemons in sbin)."""
    path = shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    if path is None:
        raise SystemExit(f"bench: {name} is not installed (see bench/README.md)")
    return path


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and all its threads so far (/proc/<pid>/stat)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()  # the command name may contain spaces
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def write_tone_wav(path: Path, hz: float, rate: int, seconds: float) -> Path:
    """A mono 16-bit tone WAV (what each phone "says" during a CPU or timing run)."""
    t = np.arange(int(rate * seconds)) / rate
    pcm = (0.3 * 32767 * np.sin(2 * np.pi * hz * t)).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return path


# -- the lab: a temp dir plus every process started in it ---------------------------------------


@dataclass
class Lab:
    """A temp directory and the processes started in it; `close()` stops them all by PID."""

    root: Path
    keep: bool = False
    phones: list[PhoneProcess] = field(default_factory=list)
    baresips: list[Baresip] = field(default_factory=list)
    kamailio: Kamailio | None = None
    cleanups: list[Callable[[], None]] = field(default_factory=list)

    def dir(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def proxy(self) -> Kamailio:
        """One Kamailio registrar/proxy for the baresip calls (started on first use)."""
        if self.kamailio is None:
            pki = make_pki(self.dir("pki"))
            self.kamailio = Kamailio(self.dir("kamailio"), pki, binary=tool("kamailio"))
            self.kamailio.start()
        return self.kamailio

    def close(self) -> None:
        for phone in self.phones:
            with contextlib.suppress(Exception):
                phone.terminate(5)
            phone.kill()
        for b in self.baresips:
            with contextlib.suppress(Exception):
                b.stop()
        if self.kamailio is not None:
            with contextlib.suppress(Exception):
                self.kamailio.stop()
        for cleanup in reversed(self.cleanups):
            with contextlib.suppress(Exception):
                cleanup()


@contextlib.contextmanager
def lab(keep: bool = False) -> Iterator[Lab]:
    root = Path(tempfile.mkdtemp(prefix="deskphone-bench-"))
    the_lab = Lab(root, keep)
    try:
        yield the_lab
    finally:
        the_lab.close()
        if keep:
            print(f"(kept work files in {root})")
        else:
            shutil.rmtree(root, ignore_errors=True)


# -- deskphone <-> deskphone, direct (no registrar) ---------------------------------------------


@dataclass
class PhoneCall:
    """A connected call between two processes; `pids` are what to measure."""

    kind: str
    pids: tuple[int, int]
    info: dict[str, Any]
    hangup: Callable[[], None]


def _phone(lab: Lab, name: str, audio: dict[str, Any], env: dict[str, str] | None) -> PhoneProcess:
    phone = PhoneProcess(lab.dir(name), [], audio=audio, env=env)
    # PhoneProcess logs at debug for tests; a benchmark measures the phone as deployed.
    doc = tomllib.loads(phone.config_path.read_text())
    doc["logging"] = {"level": "info"}
    phone.config_path.write_bytes(tomli_w.dumps(doc).encode())
    lab.phones.append(phone)
    return phone.start(SETUP_TIMEOUT)


def deskphone_call(
    lab: Lab,
    *,
    audio_a: dict[str, Any],
    audio_b: dict[str, Any],
    env_a: dict[str, str] | None = None,
    env_b: dict[str, str] | None = None,
) -> PhoneCall:
    """Phone A dials phone B's URI directly; B answers through its action API."""
    a = _phone(lab, f"deskphone-a{len(lab.phones)}", audio_a, env_a)
    b = _phone(lab, f"deskphone-b{len(lab.phones)}", audio_b, env_b)
    call = a.dial(f"sip:bench@127.0.0.1:{b.sip_port}")
    ringing = b.wait_call(lambda c: c["state"] == "ringing", SETUP_TIMEOUT, "B to ring")
    b.call_action(ringing["id"], "answer")
    up_a = a.wait_call(
        lambda c: c["id"] == call["id"] and c["state"] == "connected", SETUP_TIMEOUT, "connected"
    )
    up_b = b.wait_call(
        lambda c: c["id"] == ringing["id"] and c["state"] == "connected", SETUP_TIMEOUT, "B up"
    )
    assert a.proc is not None and b.proc is not None

    def hangup() -> None:
        a.call_action(call["id"], "hangup")
        b.wait_call(
            lambda c: c["id"] == ringing["id"] and c["state"] == "ended", 10, "B to see the BYE"
        )

    info = {"a": up_a, "b": up_b, "phones": (a, b), "call_ids": (call["id"], ringing["id"])}
    return PhoneCall("deskphone", (a.proc.pid, b.proc.pid), info, hangup)


# -- baresip <-> baresip, through Kamailio ------------------------------------------------------


def baresip_call(
    lab: Lab,
    *,
    mediaenc: str | None = None,
    config_edit: Callable[[str, str], str] | None = None,
    env: dict[str, str] | None = None,
    users: tuple[str, str] = ("1001", "1002"),
) -> PhoneCall:
    """baresip A dials baresip B (auto-answer) through Kamailio; PCMU, aufile tone sources.

    `config_edit(role, text)` rewrites the generated config of baresip "a" (the caller) or
    "b" (the callee), e.g. to use ALSA devices;
    `env` is added to baresip's environment (e.g. ALSA_CONFIG_PATH).
    """
    kam = lab.proxy()
    made: list[Baresip] = []
    for role, user, answer, hz in (("b", users[1], True, 440.0), ("a", users[0], False, 1e3)):
        b = Baresip(
            lab.dir(f"baresip-{user}-{len(lab.baresips)}"),
            user=user,
            password=kam.users[user],
            registrar=kam.uri("udp"),
            domain=kam.domain,
            codecs=["PCMU"],
            auto_answer=answer,
            tone_hz=hz,
            tone_seconds=600.0,
            mediaenc=mediaenc,
            binary=tool("baresip"),
        )
        if config_edit is not None:
            path = b.config_dir / "config"
            path.write_text(config_edit(role, path.read_text()))
        lab.baresips.append(b)
        with _environ(env or {}):
            b.start(SETUP_TIMEOUT)
        made.append(b)
    callee, caller = made
    caller.dial(kam.aor(users[1]))
    callee.wait_event("CALL_ESTABLISHED", SETUP_TIMEOUT)
    caller.wait_event("CALL_ESTABLISHED", SETUP_TIMEOUT)
    assert caller.pid is not None and callee.pid is not None

    def hangup() -> None:
        caller.hangup()
        callee.wait_event("CALL_CLOSED", 10)

    info = {"a": caller, "b": callee}
    return PhoneCall("baresip", (caller.pid, callee.pid), info, hangup)


_RTP_FROM = re.compile(r"incoming rtp for 'audio' established, receiving from [\d.]+:(\d+)")


def baresip_rtp_ports(call: PhoneCall, timeout: float = 5.0) -> dict[int, str]:
    """{source port: "baresip A"/"baresip B"} of the call's two RTP streams.

    Each baresip logs where its peer's RTP comes from; other software on the machine may be
    sending RTP on lo at the same time, so streams are picked by these ports.
    """
    deadline = time.monotonic() + timeout
    out: dict[int, str] = {}
    while time.monotonic() < deadline and len(out) < 2:
        out = {}
        for receiver, sender in (("b", "baresip A"), ("a", "baresip B")):
            m = _RTP_FROM.search(call.info[receiver].log_text())
            if m:
                out[int(m.group(1))] = sender
        time.sleep(0.05)
    return out


@contextlib.contextmanager
def _environ(extra: dict[str, str]) -> Iterator[None]:
    """Temporarily extend os.environ (Baresip.start inherits this process's environment)."""
    saved = {k: os.environ.get(k) for k in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# -- RTP send times, sniffed on lo ----------------------------------------------------------------


@dataclass(frozen=True)
class RtpPacket:
    time: float  # kernel receive timestamp on lo (CLOCK_REALTIME, seconds)
    src_port: int
    dst_port: int
    ssrc: int
    seq: int
    pt: int
    size: int


class RtpSniffer:
    """RTP packets on the loopback interface with kernel timestamps (AF_PACKET: root only).

    Kernel timestamps (SO_TIMESTAMPNS) are taken when the packet passes lo, i.e. right at the
    sender's sendto(): the sniffer thread's own scheduling delay does not enter the figures.
    """

    def __init__(self) -> None:
        self.packets: list[RtpPacket] = []
        self._stop = threading.Event()
        self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(0x0800))
        self._sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self._sock.bind(("lo", 0))
        self._sock.settimeout(0.2)
        self._thread = threading.Thread(target=self._run, name="rtp-sniffer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                frame, anc, _flags, addr = self._sock.recvmsg(2048, 64)
            except TimeoutError:
                continue
            except OSError:
                return
            if addr[2] == socket.PACKET_OUTGOING:
                continue  # lo shows each packet twice: outgoing and host
            stamp = time.time()
            for level, kind, data in anc:
                if level == socket.SOL_SOCKET and kind == SCM_TIMESTAMPNS:
                    sec, nsec = struct.unpack("qq", data[:16])
                    stamp = sec + nsec / 1e9
            packet = _rtp_of(frame[14:], stamp)
            if packet is not None:
                self.packets.append(packet)

    def close(self) -> list[RtpPacket]:
        self._stop.set()
        self._thread.join(2)
        self._sock.close()
        return self.packets


def _rtp_of(ip: bytes, stamp: float) -> RtpPacket | None:
    """The RTP header fields of an IPv4/UDP datagram that looks like audio RTP (v2, PT < 64)."""
    if len(ip) < 40 or ip[0] >> 4 != 4 or ip[9] != 17:
        return None
    ihl = (ip[0] & 0x0F) * 4
    src, dst = struct.unpack("!HH", ip[ihl : ihl + 4])
    rtp = ip[ihl + 8 :]
    if len(rtp) < 12 or rtp[0] >> 6 != 2:
        return None
    pt = rtp[1] & 0x7F
    if pt >= 64:  # RTCP (200..204 with the marker bit folded in) or not media
        return None
    seq, _ts, ssrc = struct.unpack("!HII", rtp[2:12])
    return RtpPacket(stamp, src, dst, ssrc, seq, pt, len(rtp))


def streams(packets: list[RtpPacket], pt: int = 0) -> dict[int, list[RtpPacket]]:
    """Packets of payload type `pt` grouped by source port, in arrival order."""
    out: dict[int, list[RtpPacket]] = {}
    for p in packets:
        if p.pt == pt:
            out.setdefault(p.src_port, []).append(p)
    return out


def interval_deviation(times: list[float] | np.ndarray, ptime_ms: float = 20.0) -> dict[str, float]:
    """|interval - ptime| in ms: p50, p99, max, over consecutive packets."""
    t = np.asarray(times, dtype=np.float64)
    if t.size < 3:
        return {"n": float(t.size), "p50": float("nan"), "p99": float("nan"), "max": float("nan")}
    dev = np.abs(np.diff(t) * 1000.0 - ptime_ms)
    p50, p99 = np.percentile(dev, [50, 99])
    return {"n": float(t.size), "p50": float(p50), "p99": float(p99), "max": float(dev.max())}


def ratio(ours: float, theirs: float) -> str:
    if not np.isfinite(ours) or not np.isfinite(theirs):
        return "n/a"
    if theirs <= 0:
        return "inf" if ours > 0 else "1.00"
    return f"{ours / theirs:.2f}"


def wait(seconds: float) -> None:
    """The measurement window itself (a benchmark's only sleep)."""
    time.sleep(seconds)
