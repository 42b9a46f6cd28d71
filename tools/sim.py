"""`deskphone sim`: the phone on the simulated board, in a terminal (also over SSH).

One real `Phone` (SIP, media, the action API if configured) runs on the simulated board; this
screen draws its LCD in a box, the LED row and the hook/audio/ringer state, and maps keyboard
keys to phone keys. Without `--config` it is a direct (no PBX) phone on 127.0.0.1 that another
`deskphone sim --port N` can call by its directory number.

curses rather than textual: it is in the standard library (no extra dependency on a small
board), works on any terminal and over SSH, and a desk phone's screen is a few lines of text.
The drawing (`render`) and the key map (`phone_key`) are plain functions, tested headless; the
test also drives the real program in a pseudo-terminal.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import curses
import logging
import os
import sys
import tempfile
from typing import Any

from firmware.provisioning.config import ConfigError, PhoneConfig, load_config, parse_config

log = logging.getLogger("deskphone.sim")

# terminal key -> phone key (board/ports names); function keys are filled in from curses below
KEYS: dict[str, str] = {
    **{d: f"DIGIT_{d}" for d in "0123456789"},
    "*": "STAR",
    "#": "POUND",
    "\n": "OK",
    "\r": "OK",
    "\x1b": "CANCEL",
    "\x7f": "CANCEL",
    "\b": "CANCEL",
    "o": "HOLD",
    "t": "TRANSFER",
    "c": "CONF",
    "r": "REDIAL",
    "m": "MUTE",
    "s": "SPEAKER",
    "e": "HEADSET",
    "+": "VOL_UP",
    "-": "VOL_DOWN",
    "d": "DND",
    "v": "VOICEMAIL",
    "!": "LINE_1",
    "@": "LINE_2",
    "$": "LINE_3",
    "%": "LINE_4",
}
HOOK_KEYS = ("h", " ")  # toggle the handset
QUIT_KEYS = ("q", "\x04")
HELP = [
    "digits 0-9 * #   Enter=OK  Esc/Backspace=CANCEL  F1-F4=softkeys  arrows=UP/DOWN",
    "h/space=handset  s=SPEAKER  e=HEADSET  o=HOLD  t=TRANSFER  c=CONF  r=REDIAL",
    "m=MUTE  +/-=volume  d=DND  v=VOICEMAIL  ! @ $ %=LINE_1-4  q=quit",
]
LED_SHOW = ("LINE_1", "LINE_2", "LINE_3", "LINE_4", "MWI", "MUTE", "SPEAKER", "HEADSET", "DND")
LED_MARK = {"off": " ", "on": "#", "slow_flash": "~", "fast_flash": "!"}


def phone_key(key: int | str) -> str | None:
    """The phone key for a terminal key (curses gives str for text and int for special keys)."""
    if isinstance(key, str):
        return KEYS.get(key)
    special = {
        curses.KEY_UP: "UP",
        curses.KEY_DOWN: "DOWN",
        curses.KEY_ENTER: "OK",
        curses.KEY_BACKSPACE: "CANCEL",
        curses.KEY_F1: "SOFT_1",
        curses.KEY_F2: "SOFT_2",
        curses.KEY_F3: "SOFT_3",
        curses.KEY_F4: "SOFT_4",
    }
    return special.get(key)


def render(status: dict[str, Any], cols: int, title: str = "") -> list[str]:
    """The terminal picture of the phone: LCD box, softkey hints, LED row, state line."""
    lcd = status.get("lcd") or []
    ui = status.get("ui") or {}
    leds = status.get("leds") or {}
    out = [title] if title else []
    out.append("+" + "-" * cols + "+")
    out += [f"|{line[:cols]:<{cols}}|" for line in lcd]
    out.append("+" + "-" * cols + "+")
    out.append(" F1   F2   F3   F4")
    out.append(" ".join(f"{name}[{LED_MARK.get(leds.get(name, 'off'), '?')}]" for name in LED_SHOW))
    ring = "RING" if ui.get("ringer") else "quiet"
    out.append(
        f"handset {ui.get('hook', 'onhook')}  audio {ui.get('audio_path', 'none')}  "
        f"ringer {ring}  volume {ui.get('volume', '-')}{'  MUTED' if ui.get('muted') else ''}"
    )
    return out


def _default_config(name: str, port: int, directory: list[dict[str, str]]) -> PhoneConfig:
    state = tempfile.mkdtemp(prefix="deskphone-sim-")
    return parse_config(
        {
            "device": {"name": name, "state_dir": state},
            "sip": {"listen": [f"udp:127.0.0.1:{port}"]},
            "api": {"enabled": False},
            "board": {"profile": "sim"},
            "ui": {"directory": directory},
        },
        file="<deskphone sim>",
    )


class SimScreen:
    """Draws the phone and feeds it keys, on the phone's event loop."""

    def __init__(self, stdscr: Any, phone: Any, title: str) -> None:
        self.scr = stdscr
        self.phone = phone
        self.title = title
        self.done = asyncio.Event()

    def status(self) -> dict[str, Any]:
        ui = self.phone.ui
        status = dict(ui.status())
        board_status = getattr(ui.board, "status", None)
        if callable(board_status):
            status["lcd"] = board_status().get("lcd", status["lcd"])  # what the glass shows
        return status

    def draw(self, *_: Any) -> None:
        rows, width = self.scr.getmaxyx()
        cols = len(self.phone.ui.lcd[0]) if self.phone.ui.lcd else 20
        cols = max(cols, getattr(self.phone.ui.board, "size", (20, 4))[0])
        lines = render(self.status(), cols, self.title) + [""] + HELP
        self.scr.erase()
        for y, line in enumerate(lines[:rows]):
            with contextlib.suppress(curses.error):  # a terminal narrower than a line
                self.scr.addstr(y, 0, line[: max(0, width - 1)])
        self.scr.refresh()

    def on_input(self) -> None:
        while True:
            try:
                key = self.scr.get_wch()
            except curses.error:
                break  # no more input
            if key in QUIT_KEYS:
                self.done.set()
                return
            if key in HOOK_KEYS:
                self.phone.ui.hook(not self.phone.ui.ui.hook_off)
            elif (name := phone_key(key)) is not None:
                try:
                    self.phone.ui.press(name)
                except Exception as e:  # noqa: BLE001 - a refused key must not end the session
                    log.warning("key %s: %s", name, e)
        self.draw()


async def _main(stdscr: Any, config: PhoneConfig, title: str) -> int:
    from firmware.runtime.app import Phone

    curses.curs_set(0)
    stdscr.nodelay(True)
    stdscr.keypad(True)
    phone = Phone(config)
    await phone.start()
    assert phone.ui is not None
    screen = SimScreen(stdscr, phone, title)
    phone.ui.watchers.append(screen.draw)
    loop = asyncio.get_running_loop()
    loop.add_reader(sys.stdin.fileno(), screen.on_input)
    screen.draw()
    try:
        while not screen.done.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(screen.done.wait(), 1.0)
            screen.draw()  # clock, call duration, LEDs
    finally:
        loop.remove_reader(sys.stdin.fileno())
        await phone.stop()
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", help="phone.toml (default: a direct phone, no PBX)")
    parser.add_argument("--name", default="Sim", help="device name without --config")
    parser.add_argument("--port", type=int, default=5070, help="SIP UDP port without --config")
    parser.add_argument(
        "--peer",
        action="append",
        default=[],
        metavar="NAME=NUMBER=PORT",
        help="directory entry for another sim on this machine, e.g. Bob=2002=5071",
    )
    parser.add_argument("--log-file", help="write the phone's log here (the screen has no room)")


def run(args: argparse.Namespace) -> int:
    if args.log_file:
        logging.basicConfig(filename=args.log_file, level=logging.INFO)
    else:
        logging.getLogger().addHandler(logging.NullHandler())  # nothing may scribble on curses
    try:
        if args.config:
            config = load_config(args.config)
        else:
            directory = []
            for peer in args.peer:
                name, number, port = (peer.split("=") + ["", ""])[:3]
                if not (name and number and port.isdigit()):
                    print(
                        f"deskphone sim: --peer {peer!r} is not NAME=NUMBER=PORT", file=sys.stderr
                    )
                    return 2
                uri = f"sip:{name.lower()}@127.0.0.1:{port}"
                directory.append({"name": name, "number": number, "uri": uri})
            config = _default_config(args.name, args.port, directory)
    except ConfigError as e:
        print(f"deskphone sim: configuration error: {e}", file=sys.stderr)
        return 2
    os.environ.setdefault("ESCDELAY", "25")  # Esc is CANCEL: do not wait 1 s for a sequence
    title = f"{config.device.name} sip:{config.sip.listen[0].host}:{config.sip.listen[0].port}"
    try:
        return int(curses.wrapper(lambda scr: asyncio.run(_main(scr, config, title))))
    except OSError as e:
        print(f"deskphone sim: {e}", file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="deskphone sim", description=__doc__.split("\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
