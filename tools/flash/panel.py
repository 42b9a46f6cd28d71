"""Install the front-panel firmware onto a MicroPython board over its serial port.

mpremote's SerialTransport speaks the raw REPL for us: it is MicroPython's own tool (PyPI
`mpremote`), maintained with the firmware, and handles raw-paste mode and the USB quirks of the
boards. We add what a fleet needs on top: a fixed file list, a sha256 check of every file as the
board itself reads it back, the pin map rendered from the board profile, and optional
micropython-lib packages installed with `mip` on the board.
"""

from __future__ import annotations

import hashlib
import logging
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from board.frontpanel_config import PanelPins, render_panel_config

log = logging.getLogger(__name__)

FIRMWARE_DIR = Path(__file__).resolve().parents[2] / "board" / "frontpanel"
# Library modules go into a package directory; main.py runs at boot from the root.
LIBRARY_FILES = ("__init__.py", "protocol.py", "scanner.py", "core.py", "app.py")


class FlashError(Exception):
    """Flashing failed; the message says which step and file."""


@dataclass
class FlashReport:
    port: str
    files: dict[str, str] = field(default_factory=dict)  # board path -> sha256 hex
    mip: list[str] = field(default_factory=list)


def firmware_files(pins: PanelPins) -> dict[str, bytes]:
    """Board path -> content, exactly what ends up on the panel's filesystem."""
    files = {f"/frontpanel/{name}": (FIRMWARE_DIR / name).read_bytes() for name in LIBRARY_FILES}
    files["/panel_config.py"] = render_panel_config(pins).encode()
    files["/main.py"] = (FIRMWARE_DIR / "main.py").read_bytes()
    return files


def _serial_transport(port: str, baudrate: int) -> Any:
    from mpremote.transport_serial import SerialTransport

    return SerialTransport(port, baudrate=baudrate)


def flash_panel(
    port: str,
    pins: PanelPins,
    *,
    baudrate: int = 115200,
    mip_packages: Iterable[str] = (),
    mip_index: str | None = None,
    transport: Callable[[str, int], Any] = _serial_transport,
) -> FlashReport:
    """Write the firmware, verify each file's sha256 on the board, then soft-reset it."""
    from mpremote.transport import TransportError, TransportExecError

    report = FlashReport(port)
    files = firmware_files(pins)
    try:
        board = transport(port, baudrate)
    except (TransportError, OSError) as e:
        raise FlashError(f"cannot open {port}: {e}") from e
    try:
        try:
            board.enter_raw_repl(soft_reset=True)
        except TransportError as e:
            raise FlashError(f"{port}: no MicroPython raw REPL answered ({e})") from e
        # mkdir-if-missing on the board itself: errno numbers differ between ports.
        board.exec("import os\ntry:\n os.mkdir('/frontpanel')\nexcept OSError:\n pass")
        for path, data in files.items():
            try:
                board.fs_writefile(path, data)
                on_board = board.fs_hashfile(path, "sha256")
            except (TransportError, TransportExecError, OSError) as e:
                raise FlashError(f"writing {path} failed: {e}") from e
            want = hashlib.sha256(data).digest()
            if on_board != want:
                raise FlashError(
                    f"{path} reads back with sha256 {on_board.hex()}, wrote {want.hex()}"
                )
            report.files[path] = want.hex()
            log.info("panel %s: %s written and verified (%d bytes)", port, path, len(data))
        for package in mip_packages:
            index = f", index={mip_index!r}" if mip_index else ""
            try:
                board.exec(f"import mip\nmip.install({package!r}{index})")
            except TransportExecError as e:
                raise FlashError(
                    f"mip could not install {package!r} on the panel (the board needs a network "
                    f"path to the package index): {e.error_output.strip().splitlines()[-1]}"
                ) from e
            report.mip.append(package)
        board.exit_raw_repl()
    finally:
        board.close()
    return report


def main(argv: list[str]) -> int:
    """`deskphone-flash panel --profile P [--port DEV] [--mip PKG]...`: flash a front panel."""
    import argparse

    from board.profile import ProfileError, load_profile

    parser = argparse.ArgumentParser(
        prog="deskphone-flash panel",
        description="Install the front-panel firmware onto a MicroPython board over its serial "
        "port, with the pin map from a board profile; every file is verified by sha256.",
    )
    parser.add_argument(
        "--profile", required=True, help="board profile (name or file) with [frontpanel]"
    )
    parser.add_argument("--port", help="the panel's serial device (default: the profile's port)")
    parser.add_argument("--baudrate", type=int, default=115200)
    parser.add_argument(
        "--mip",
        action="append",
        default=[],
        metavar="PACKAGE",
        help="micropython-lib package to install on the board with mip",
    )
    parser.add_argument("--mip-index", help="mip package index URL (default: micropython.org)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        profile = load_profile(args.profile)
    except ProfileError as e:
        print(f"deskphone-flash: {e}", file=sys.stderr)
        return 2
    if profile.frontpanel is None:
        print(
            f"deskphone-flash: {profile.file}: has no [frontpanel] (board.driver must be "
            '"frontpanel")',
            file=sys.stderr,
        )
        return 2
    port = args.port or profile.frontpanel.port
    try:
        report = flash_panel(
            port,
            profile.frontpanel.pins,
            baudrate=args.baudrate,
            mip_packages=args.mip,
            mip_index=args.mip_index,
        )
    except FlashError as e:
        print(f"deskphone-flash: {e}", file=sys.stderr)
        return 1
    for path, digest in report.files.items():
        print(f"{path} sha256 {digest}")
    print(f"front panel on {port} flashed ({len(report.files)} files verified)")
    return 0
