"""deskphone-flash installs the panel firmware over a raw REPL (acceptance 3, issue 8).

The board is emulated on a pty: MicroPython's raw-REPL protocol in front of a real MicroPython
(the WebAssembly port), so the flashed files are hashed, read back and imported by MicroPython.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator

import pytest

from board.frontpanel_config import PanelConfigError, PanelPins, render_panel_config
from tests.conftest import skip_or_fail
from tests.panel.raw_repl_board import NODE_DIR, RawReplBoard
from tools.flash.panel import FlashError, firmware_files, flash_panel

PINS = PanelPins(
    rows=(2, 3),
    cols=(4, 5),
    keymap={(0, 0): "DIGIT_1", (0, 1): "DIGIT_2", (1, 0): "HOLD", (1, 1): "TRANSFER"},
    leds={"MWI": 15, "LINE_1": 16},
    hook=6,
)


@pytest.fixture
def board() -> Iterator[RawReplBoard]:
    node = shutil.which("node")
    package = NODE_DIR / "node_modules" / "@micropython" / "micropython-webassembly-pyscript"
    if node is None or not package.is_dir():
        skip_or_fail("node and @micropython/micropython-webassembly-pyscript (scripts/test installs them)")
    b = RawReplBoard(node)
    yield b
    b.close()


def test_flash_writes_verifies_and_the_firmware_runs_on_micropython(board: RawReplBoard) -> None:
    report = flash_panel(board.path, PINS)
    files = firmware_files(PINS)
    assert set(report.files) == set(files) == {
        "/frontpanel/__init__.py", "/frontpanel/protocol.py", "/frontpanel/scanner.py",
        "/frontpanel/core.py", "/frontpanel/app.py", "/panel_config.py", "/main.py",
    }
    assert board.soft_reboots >= 1
    for path, data in files.items():
        assert report.files[path] == hashlib.sha256(data).hexdigest()
        out, err = board.run(f"print(open({path!r}, 'rb').read() == {data!r})")
        assert (out.strip(), err) == (b"True", ""), path
    # The flashed firmware imports and talks its protocol under MicroPython.
    out, err = board.run(
        "import panel_config\nfrom frontpanel.core import PanelCore\n"
        "c = PanelCore(list(panel_config.KEYMAP.values()), panel_config.LEDS.keys(), 0)\n"
        "print(c.hello().decode().split('*')[0])"
    )
    assert err == ""
    assert out.strip() == b"H|0|1|1.0.0|4|2"


def test_mismatched_read_back_is_an_error(board: RawReplBoard) -> None:
    """A board that stores something else than what was sent is caught by the sha256 check."""
    from mpremote.transport_serial import SerialTransport

    class Corrupting(SerialTransport):
        def fs_writefile(self, dest, data, chunk_size=256, progress_callback=None):  # type: ignore[no-untyped-def]
            super().fs_writefile(dest, data[:-1] + b"#", chunk_size, progress_callback)

    with pytest.raises(FlashError, match=r"/frontpanel/__init__.py reads back with sha256"):
        flash_panel(board.path, PINS, transport=lambda port, baud: Corrupting(port, baud))


def test_mip_without_a_network_path_fails_clearly(board: RawReplBoard) -> None:
    with pytest.raises(FlashError, match="mip could not install 'logging'"):
        flash_panel(board.path, PINS, mip_packages=["logging"])


def test_no_board_on_the_port(tmp_path) -> None:
    with pytest.raises(FlashError, match="cannot open"):
        flash_panel(str(tmp_path / "ttyACM9"), PINS)


def test_pin_map_is_validated_before_flashing() -> None:
    bad = PanelPins(rows=(2,), cols=(3,), keymap={(0, 0): "DIGIT_X"})
    with pytest.raises(PanelConfigError, match="'DIGIT_X' at row 0 col 0 is not a phone key"):
        render_panel_config(bad)
    clash = PanelPins(rows=(2,), cols=(2,), keymap={(0, 0): "DIGIT_1"})
    with pytest.raises(PanelConfigError, match="GPIO 2 is used twice"):
        render_panel_config(clash)
    source = render_panel_config(PINS)
    namespace: dict[str, object] = {}
    exec(source, namespace)
    assert namespace["KEYMAP"] == PINS.keymap and namespace["HOOK"] == 6


def test_deskphone_flash_panel_command(board: RawReplBoard, tmp_path, capsys) -> None:
    from tools.flash.cli import main

    profile = tmp_path / "panel.toml"
    profile.write_text(
        '[board]\nname = "p"\ndriver = "frontpanel"\n'
        f'[frontpanel]\nport = "{board.path}"\nrows = [2]\ncols = [3, 4]\n'
        'layout = [["DIGIT_1", "HOLD"]]\nhook = 5\n[frontpanel.leds]\nMWI = 6\n'
    )
    assert main(["panel", "--profile", str(profile)]) == 0
    out = capsys.readouterr().out
    assert "/panel_config.py sha256" in out and "7 files verified" in out
    config, err = board.run("import panel_config\nprint(panel_config.KEYMAP, panel_config.HOOK)")
    assert err == "" and config.strip() == b"{(0, 0): 'DIGIT_1', (0, 1): 'HOLD'} 5"
    assert main(["panel", "--profile", "sim"]) == 2
    assert "has no [frontpanel]" in capsys.readouterr().err
