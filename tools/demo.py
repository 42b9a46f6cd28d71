"""`deskphone demo`: three simulated desk phones on loopback, driven by their keys.

No hardware and no PBX: Alice, Bob and Carol are full `Phone`s in one process, each with the
simulated board, listening on its own loopback port and dialling the others directly (their
numbers are in each phone's directory with a peer-to-peer `sip:` URI). The script only presses
keys and lifts handsets - exactly what a person does - and checks what each person would see
(LCD text, LEDs, the ringer) and that audio really flowed (RTP counters; each phone plays a tone
file into its calls and records what it hears to `<out>/<name>.wav`). Every LCD change is printed
as it happens, with a short SIP ladder at the end, then a summary of the checks. Exit status 0
only when every check passed.

Flow: Alice lifts the handset and dials Bob; Bob's LCD shows her and rings, he lifts the handset;
they talk; Alice holds and resumes; Alice presses TRANSFER, dials Carol, Carol answers on the
speaker, Alice presses TRANSFER again (attended transfer: Bob and Carol now talk); Carol presses
CONF, dials Alice, Alice answers, Carol presses CONF (3-way conference at Carol); all hang up.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import socket
import struct
import sys
import tempfile
import time
import wave
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from board.charset import plain
from firmware.provisioning.config import parse_config

if TYPE_CHECKING:
    from firmware.runtime.app import Phone

log = logging.getLogger("deskphone.demo")

NUMBERS = {"Alice": "2001", "Bob": "2002", "Carol": "2003"}
TONES = {"Alice": 440.0, "Bob": 660.0, "Carol": 880.0}
STEP_TIMEOUT = 10.0  # seconds for any one expected change
TALK_TIME = 0.6  # seconds of audio per talking step (enough for ~30 RTP packets)


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tone_wav(path: Path, freq: float, seconds: float = 1.0, rate: int = 8000) -> None:
    """A mono 16-bit sine: what this phone 'says' into its calls (looped by the media engine)."""
    frames = b"".join(
        struct.pack("<h", int(8000 * math.sin(2 * math.pi * freq * n / rate)))
        for n in range(int(seconds * rate))
    )
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(frames)


def _loudest_tone(path: Path) -> float:
    """The strongest frequency in a recording (0 when it is missing or silent)."""
    import numpy as np

    try:
        with wave.open(str(path), "rb") as w:
            rate, data = w.getframerate(), w.readframes(w.getnframes())
            channels = w.getnchannels()
    except (OSError, EOFError, wave.Error):
        return 0.0
    samples = np.frombuffer(data, dtype="<i2").astype(np.float64)[::channels]
    if samples.size < 256 or float(np.abs(samples).max()) < 100:
        return 0.0
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
    return float(np.fft.rfftfreq(samples.size, 1 / rate)[int(spectrum[1:].argmax()) + 1])


@dataclass
class Check:
    what: str
    ok: bool
    detail: str = ""


@dataclass
class Pbx:
    """`--registrar`: register the three phones there and call through it."""

    registrar: str
    domain: str
    accounts: list[tuple[str, str]]  # (user, password) for Alice, Bob, Carol


@dataclass
class Demo:
    """The three phones, the printer and the checks."""

    out: Path
    echo: Callable[[str], None] = print
    pbx: Pbx | None = None
    numbers: dict[str, str] = field(default_factory=lambda: dict(NUMBERS))
    phones: dict[str, Phone] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    ladder: list[str] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    t0: float = field(default_factory=time.monotonic)

    # ----- set-up -------------------------------------------------------------------------
    async def start(self) -> None:
        ports = {name: _free_udp_port() for name in NUMBERS}
        state = Path(tempfile.mkdtemp(prefix="deskphone-demo-"))
        accounts: dict[str, list[dict[str, Any]]] = {name: [] for name in NUMBERS}
        if self.pbx is not None:
            for name, (user, password) in zip(NUMBERS, self.pbx.accounts, strict=True):
                self.numbers[name] = user
                accounts[name] = [
                    {
                        "user": user,
                        "password": password,
                        "domain": self.pbx.domain,
                        "registrar": self.pbx.registrar,
                        "display_name": name,
                    }
                ]
        for name in NUMBERS:
            tone = self.out / f"{name.lower()}-says.wav"
            _tone_wav(tone, TONES[name])
            directory = [
                {"name": other, "number": n}
                if self.pbx is not None
                else {
                    "name": other,
                    "number": n,
                    "uri": f"sip:{other.lower()}@127.0.0.1:{ports[other]}",
                }
                for other, n in self.numbers.items()
                if other != name
            ]
            config = parse_config(
                {
                    "device": {"name": name, "state_dir": str(state / name)},
                    "accounts": accounts[name],
                    "sip": {"listen": [f"udp:127.0.0.1:{ports[name]}"]},
                    "api": {"enabled": False},
                    "audio": {
                        "codecs": ["PCMU"],
                        "capture_file": str(tone),
                        "playback_file": str(self.out / f"{name.lower()}.wav"),
                    },
                    "board": {"profile": "sim"},
                    "ui": {"directory": directory, "inter_digit_timeout": 3.0},
                },
                file=f"<demo {name}>",
            )
            from firmware.runtime.app import Phone  # the phone stack, only when the demo runs

            phone = Phone(config)
            self.phones[name] = phone
            await phone.start()
            assert phone.ui is not None
            phone.ui.watchers.append(self._printer(name))
            self._trace(name, phone, ports)
        if self.pbx is not None:
            await self.until(
                f"all three phones registered at {self.pbx.registrar}",
                lambda: all(self.lcd(n)[1] == "Ready" for n in NUMBERS),
            )
        self.echo(
            f"demo: three phones on 127.0.0.1 ({', '.join(f'{n} :{p}' for n, p in ports.items())})"
        )

    def _printer(self, name: str) -> Callable[[list[str]], None]:
        def show(lines: list[str]) -> None:
            text = " | ".join(plain(line).rstrip() for line in lines)
            self.echo(f"{time.monotonic() - self.t0:6.2f}s  {name:<5} [{text}]")
            self.changed.set()

        return show

    def _trace(self, name: str, phone: Phone, ports: dict[str, int]) -> None:
        """Record each SIP message this phone sends, for the ladder."""
        who = {port: other for other, port in ports.items()}
        sender = phone.transports.send

        async def send(data: bytes, dest: Any) -> Any:
            first = data.split(b"\r\n", 1)[0].decode(errors="replace")
            if first:
                port = getattr(getattr(dest, "remote", dest), "port", 0)
                to = who.get(port, str(dest))
                label = first.split(" ")[0] if not first.startswith("SIP/") else first[8:]
                for line in data.split(b"\r\n"):
                    if line.lower().startswith((b"refer-to:", b"replaces:")):
                        label += "  " + line.decode(errors="replace")
                self.ladder.append(f"{name:>5} -> {to:<5} {label}")
            return await sender(data, dest)

        phone.transports.send = send  # type: ignore[method-assign]

    async def stop(self) -> None:
        # together: each waits (bounded) for its last transactions to finish
        await asyncio.gather(*(p.stop() for p in self.phones.values()), return_exceptions=True)

    # ----- driving and observing -------------------------------------------------------------
    def ui(self, name: str) -> Any:
        ui = self.phones[name].ui
        assert ui is not None
        return ui

    def say(self, text: str) -> None:
        self.echo(f"{time.monotonic() - self.t0:6.2f}s  ---- {text}")

    def keys(self, name: str, *keys: str) -> None:
        for key in keys:
            self.ui(name).press(key)

    def dial(self, name: str, number: str) -> None:
        self.keys(name, *(f"DIGIT_{d}" for d in number))

    def lcd(self, name: str) -> list[str]:
        return [plain(line) for line in self.ui(name).lcd]

    def calls(self, name: str) -> list[dict[str, Any]]:
        return [c for c in self.phones[name].status()["calls"] if c["state"] != "ended"]

    async def until(
        self, what: str, predicate: Callable[[], bool], timeout: float = STEP_TIMEOUT
    ) -> bool:
        """Wait (bounded) for a condition, woken by every LCD change; record it as a check."""
        deadline = time.monotonic() + timeout
        while not predicate():
            left = deadline - time.monotonic()
            if left <= 0:
                self.check(what, False, f"not within {timeout:.0f} s")
                return False
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), min(left, 0.1))
        self.check(what, True)
        return True

    def check(self, what: str, ok: bool, detail: str = "") -> None:
        self.checks.append(Check(what, ok, detail))
        if not ok:
            self.echo(f"        FAILED: {what} ({detail})")

    async def talk(self, *names: str) -> None:
        """Let audio flow, then check every named phone received RTP on each of its calls."""
        before = {n: self._received(n) for n in names}
        await asyncio.sleep(TALK_TIME)  # audio needs wall time to flow; this is the demo's pace
        for n in names:
            got = self._received(n) - before[n]
            self.check(
                f"{n} hears audio ({got} RTP packets)", got >= 10, "" if got >= 10 else "too few"
            )

    async def quiet(self, name: str) -> None:
        """While held, no audio reaches `name` (the holding phone sends no RTP)."""
        await asyncio.sleep(TALK_TIME / 3)  # packets already in flight when the hold began
        before = self._received(name)
        await asyncio.sleep(TALK_TIME)  # audio (or its absence) needs wall time
        got = self._received(name) - before
        self.check(f"{name} hears nothing while held ({got} RTP packets)", got <= 2, "audio leaks")

    def _received(self, name: str) -> int:
        total = 0
        for call in self.calls(name):
            media = call.get("media") or {}
            total += int(media.get("packets_received", 0) or 0)
        return total

    def state(self, name: str) -> list[str]:
        return sorted(c["state"] for c in self.calls(name))

    # ----- the script ------------------------------------------------------------------------
    async def run(self) -> bool:
        self.say("Alice lifts the handset and dials Bob (2002)")
        self.ui("Alice").hook(True)
        await self.until(
            "Alice's LCD shows the dial screen", lambda: self.lcd("Alice")[0] == "Dial:"
        )
        self.dial("Alice", self.numbers["Bob"])
        await self.until(
            "Bob's LCD shows Alice calling and his phone rings",
            lambda: self.lcd("Bob")[:2] == ["Incoming call", "Alice"] and self.ui("Bob").ringing,
        )
        await self.until(
            "Bob's line key flashes fast", lambda: self.ui("Bob").leds.get("LINE_1") == "fast_flash"
        )
        self.say("Bob lifts his handset")
        self.ui("Bob").hook(True)
        await self.until(
            "Alice and Bob are connected (each LCD names the other)",
            lambda: self.lcd("Alice")[0] == "Bob" and self.lcd("Bob")[0] == "Alice",
        )
        await self.talk("Alice", "Bob")

        self.say("Alice puts Bob on hold, then resumes")
        self.keys("Alice", "HOLD")
        await self.until(
            "Alice sees 'On hold', Bob sees he is held",
            lambda: self.lcd("Alice")[0] == "On hold" and self.lcd("Bob")[2] == "Held by Alice",
        )
        await self.quiet("Bob")  # also gives the hold re-INVITE time to complete everywhere
        self.keys("Alice", "HOLD")
        await self.until(
            "the call is resumed",
            lambda: self.lcd("Alice")[0] == "Bob" and self.lcd("Bob")[2] != "Held by Alice",
        )
        self.say("Alice presses HOLD twice in a row (the second waits for the first re-INVITE)")
        self.keys("Alice", "HOLD", "HOLD")
        await self.until(
            "the call ends up talking again, with no error on Alice's LCD",
            lambda: (
                self.state("Alice") == ["connected"]
                and self.state("Bob") == ["connected"]
                and not any(c.get("remote_held") for c in self.calls("Bob"))
                and self.ui("Alice").ui.notice is None
            ),
        )

        self.say("Alice presses TRANSFER and dials Carol (2003)")
        self.keys("Alice", "TRANSFER")
        await self.until(
            "Alice's LCD asks where to transfer", lambda: self.lcd("Alice")[0] == "Transfer to:"
        )
        self.dial("Alice", self.numbers["Carol"])
        await self.until(
            "Carol's phone rings with Alice",
            lambda: self.lcd("Carol")[:2] == ["Incoming call", "Alice"],
        )
        self.say("Carol answers on the speaker; Alice presses TRANSFER again")
        self.keys("Carol", "SPEAKER")
        await self.until("Alice talks to Carol", lambda: self.lcd("Alice")[0] == "Carol")
        self.keys("Alice", "TRANSFER")
        await self.until(
            "attended transfer: Bob talks to Carol, Alice is free",
            lambda: (
                self.state("Bob") == ["connected"]
                and self.state("Carol") == ["connected"]
                and self.state("Alice") == []
                and self.lcd("Bob")[0] == "Carol"
            ),
        )
        await self.talk("Bob", "Carol")
        self.ui("Alice").hook(False)

        self.say("Carol presses CONF and dials Alice (2001); Alice answers; Carol presses CONF")
        self.keys("Carol", "CONF")
        await self.until(
            "Carol's LCD asks whom to add", lambda: self.lcd("Carol")[0] == "Conference with:"
        )
        self.dial("Carol", self.numbers["Alice"])
        await self.until(
            "Alice's phone rings with Carol",
            lambda: self.lcd("Alice")[:2] == ["Incoming call", "Carol"],
        )
        self.keys("Alice", "SPEAKER")
        await self.until("Carol talks to Alice", lambda: self.lcd("Carol")[0] == "Alice")
        self.keys("Carol", "CONF")
        await self.until(
            "Carol's LCD shows a 3-way conference", lambda: self.lcd("Carol")[0] == "Conference (3)"
        )
        await self.talk("Alice", "Bob", "Carol")

        self.say("everyone hangs up")
        self.keys("Carol", "SPEAKER")
        self.ui("Bob").hook(False)
        self.keys("Alice", "SPEAKER")
        await self.until(
            "all phones idle",
            lambda: (
                all(not self.calls(n) for n in NUMBERS)
                and all(self.lcd(n)[0].startswith(n) for n in NUMBERS)
            ),
        )
        await self.until(
            "Bob's history lists the call from Alice as received",
            lambda: any(e.kind == "received" for e in self.ui("Bob").ui.history),
        )
        return all(c.ok for c in self.checks)

    def summary(self) -> str:
        lines = ["", "SIP ladder (first 40 messages):"]
        lines += [f"  {step}" for step in self.ladder[:40]]
        lines += [
            "",
            f"recordings: {', '.join(str(self.out / f'{n.lower()}.wav') for n in NUMBERS)}",
        ]
        lines.append("")
        lines.append("checks:")
        for c in self.checks:
            lines.append(
                f"  [{'ok' if c.ok else 'FAIL'}] {c.what}" + (f" - {c.detail}" if c.detail else "")
            )
        passed = sum(c.ok for c in self.checks)
        verdict = "PASSED" if passed == len(self.checks) else "FAILED"
        lines.append(f"demo {verdict}: {passed}/{len(self.checks)} checks")
        return "\n".join(lines)


async def run_demo(out: Path, echo: Callable[[str], None] = print, pbx: Pbx | None = None) -> bool:
    out.mkdir(parents=True, exist_ok=True)
    demo = Demo(out, echo, pbx)
    try:
        await demo.start()
        ok = await asyncio.wait_for(demo.run(), 60)
    except TimeoutError:
        demo.check("the demo finished in time", False, "over 60 s")
        ok = False
    finally:
        await demo.stop()
    for name in NUMBERS:
        heard = _loudest_tone(out / f"{name.lower()}.wav")
        others = {f for n, f in TONES.items() if n != name}
        demo.check(
            f"{name}'s recording holds another phone's tone ({heard:.0f} Hz)",
            any(abs(heard - f) < 15 for f in others),
        )
    ok = ok and all(c.ok for c in demo.checks)
    echo(demo.summary())
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="deskphone demo", description=__doc__.split("\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="demo-out", help="directory for the WAV recordings")
    parser.add_argument("--log-level", default="WARNING", help="log level of the phones")
    parser.add_argument(
        "--registrar", help="call through this PBX instead of directly (sip: URI of the registrar)"
    )
    parser.add_argument(
        "--domain", help="with --registrar: the accounts' domain (default: its host)"
    )
    parser.add_argument(
        "--account",
        action="append",
        default=[],
        metavar="USER:PASSWORD",
        help="with --registrar: three times, for Alice, Bob and Carol",
    )


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    pbx = None
    if args.registrar:
        accounts = [tuple(a.split(":", 1)) for a in args.account if ":" in a]
        if len(accounts) != 3 or len(args.account) != 3:
            print(
                "deskphone demo: --registrar needs three --account USER:PASSWORD", file=sys.stderr
            )
            return 2
        host = args.registrar.split(":", 1)[-1].split(";", 1)[0].rsplit(":", 1)[0]
        pbx = Pbx(args.registrar, args.domain or host.strip("[]"), accounts)  # type: ignore[arg-type]
    ok = asyncio.run(run_demo(Path(args.out), pbx=pbx))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
