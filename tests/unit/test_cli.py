"""The `deskphone` command line, run as a real process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def deskphone(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "firmware", *args],
        cwd=ROOT,
        text=True,
        capture_output=True,
        timeout=60,
    )


def test_bad_config_exits_2_naming_file_and_key(tmp_path: Path) -> None:
    cfg = tmp_path / "phone.toml"
    cfg.write_text(
        '[[accounts]]\nuser = "1001"\npassword = "x"\ndomain = "pbx"\nexpires = "x"\n'
        '[api]\ntoken = "0123456789abcdef"\n'
    )
    result = deskphone("run", "--config", str(cfg))
    assert result.returncode == 2
    assert f"{cfg}: accounts[0].expires: must be an integer" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_config_file_exits_2(tmp_path: Path) -> None:
    result = deskphone("run", "--config", str(tmp_path / "nope.toml"))
    assert result.returncode == 2
    assert "cannot read" in result.stderr


def test_sip_check_prints_one_json_line_per_file(tmp_path: Path) -> None:
    good = tmp_path / "invite.sip"
    good.write_bytes(
        b"INVITE sip:1002@pbx.example SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKabc\r\n"
        b"Max-Forwards: 70\r\nFrom: <sip:1001@pbx.example>;tag=f1\r\n"
        b"To: <sip:1002@pbx.example>\r\nCall-ID: c1\r\nCSeq: 7 INVITE\r\n"
        b"Content-Length: 4\r\n\r\nabcd"
    )
    bad = tmp_path / "bad.sip"
    bad.write_bytes(b"INVITE sip:1002@pbx.example SIP/7.0\r\n\r\n")
    result = deskphone("sip-check", str(good), str(bad))
    assert result.returncode == 1  # one file was rejected
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines[0]["file"] == str(good)
    assert lines[0]["kind"] == "request" and lines[0]["method"] == "INVITE"
    assert lines[0]["status"] is None
    assert lines[0]["cseq"] == {"number": 7, "method": "INVITE"}
    assert lines[0]["vias"] == [
        {"transport": "UDP", "sent_by": "192.0.2.1:5060", "branch": "z9hG4bKabc"}
    ]
    assert lines[0]["from"] == {"uri": "sip:1001@pbx.example", "tag": "f1"}
    assert lines[0]["to"] == {"uri": "sip:1002@pbx.example", "tag": None}
    assert lines[0]["body_length"] == 4 and lines[0]["header_count"] == 7
    assert lines[1]["file"] == str(bad) and "error" in lines[1]
    assert "version" in lines[1]["error"].lower()
