"""An emulated MicroPython board on a pty: MicroPython's raw-REPL protocol in front of a real
MicroPython (the WebAssembly port under node, tests/panel/node/board.mjs).

The raw-REPL framing (Ctrl-A enter, Ctrl-D execute / soft reboot, "OK", output, 0x04, error
output, 0x04, ">") is what mpremote and our flasher speak to a Pico over USB; the code they send
runs in a real MicroPython with its own filesystem, so a flashed file can be read back, hashed and
imported exactly as on the panel.
"""

from __future__ import annotations

import base64
import json
import os
import select
import subprocess
import threading
import tty
from pathlib import Path

NODE_DIR = Path(__file__).resolve().parent / "node"
BANNER = b"MicroPython v1.27.0 (emulated panel board on a pty)\r\n>>> "
RAW_PROMPT = b"raw REPL; CTRL-B to exit\r\n>"


class RawReplBoard:
    def __init__(self, node: str) -> None:
        self.node = subprocess.Popen(
            [node, str(NODE_DIR / "board.mjs")],
            cwd=NODE_DIR,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.node.stdout is not None
        ready = json.loads(self.node.stdout.readline())
        assert ready == {"ready": True}
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.path = os.ttyname(self.slave)
        self.soft_reboots = 0
        self.executed: list[str] = []
        self._raw = False
        self._buf = b""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="raw repl board", daemon=True)
        self._thread.start()

    def run(self, code: str) -> tuple[bytes, str]:
        """Run code on the board's MicroPython directly (what a test checks afterwards)."""
        assert self.node.stdin is not None and self.node.stdout is not None
        self.node.stdin.write(json.dumps({"code": code}) + "\n")
        self.node.stdin.flush()
        reply = json.loads(self.node.stdout.readline())
        return base64.b64decode(reply["out"]), reply["err"]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.node.kill()
        self.node.wait()
        os.close(self.master)
        os.close(self.slave)

    def _write(self, data: bytes) -> None:
        os.write(self.master, data)

    def _serve(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.master], [], [], 0.02)
            if not ready:
                continue
            try:
                data = os.read(self.master, 4096)
            except OSError:
                return
            for byte in data:
                self._byte(bytes([byte]))

    def _byte(self, b: bytes) -> None:
        if not self._raw:
            if b == b"\x01":  # Ctrl-A: enter the raw REPL
                self._raw, self._buf = True, b""
                self._write(b"\r\n" + RAW_PROMPT)
            elif b == b"\x03":  # Ctrl-C: nothing is running
                self._write(b"\r\n>>> ")
            return
        if b == b"\x02":  # Ctrl-B: back to the friendly REPL
            self._raw = False
            self._write(b"\r\n" + BANNER)
        elif b == b"\x01":
            self._buf = b""
            self._write(b"\r\n" + RAW_PROMPT)
        elif b == b"\x03":
            self._buf = b""
        elif b == b"\x04":
            if not self._buf:  # Ctrl-D on an empty buffer: soft reboot
                self.soft_reboots += 1
                self._write(b"OK\r\nMPY: soft reboot\r\n" + RAW_PROMPT)
                return
            code, self._buf = self._buf.decode(), b""
            self.executed.append(code)
            self._write(b"OK")
            out, err = self.run(code)
            self._write(out.replace(b"\n", b"\r\n") + b"\x04" + err.encode() + b"\x04>")
        else:
            self._buf += b
            if self._buf == b"\x05A\x01":  # raw-paste request: understood, not supported
                self._buf = b""
                self._write(b"R\x00")
