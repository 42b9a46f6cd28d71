"""`deskphone-provision serve` over real TLS on loopback: mTLS, per-device authorisation by
certificate CN, ETag/If-None-Match, the status endpoint and `deskphone-provision status`."""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from multidict import CIMultiDict

from firmware.provisioning import document as d
from tests.unit.provision_helpers import FlashedFleet, make_fleet
from tools.flash.cli import main as flash_main
from tools.provision import pki, server
from tools.provision.cli import main as provision_main
from tools.provision.fleet import Fleet


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[FlashedFleet, str]]:
    ff = make_fleet(tmp_path)
    runner, port = await server.start(Fleet(ff.fleet), "127.0.0.1", 0)
    try:
        yield ff, f"https://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def _get(
    url: str, ctx: ssl.SSLContext, headers: dict[str, str] | None = None
) -> tuple[int, bytes, CIMultiDict[str]]:
    async with aiohttp.ClientSession() as s, s.get(url, ssl=ctx, headers=headers or {}) as r:
        return r.status, await r.read(), r.headers.copy()


async def test_device_gets_its_own_document_with_etag_and_can_decrypt_it(served) -> None:
    ff, base = served
    status, body, headers = await _get(f"{base}/devices/desk-1.json", ff.client_context("desk-1"))
    assert status == 200
    assert body == (ff.fleet / "www" / "devices" / "desk-1.json").read_bytes()
    # What the phone does with it: verify, then open the secrets with its own key.
    dev = ff.device_dir("desk-1")
    payload = d.verify_document(
        json.loads(body),
        d.load_ed25519_public((dev / "config-signing.pub").read_bytes()),
        device_id="desk-1",
        min_serial=1,
        now=time.time(),
    )
    secret_key = d.load_x25519_private((dev / "device-x25519.key").read_bytes())
    config = d.merge_secrets(payload["config"], payload["secrets"], secret_key, "desk-1")
    assert config["accounts"][0]["password"] == "pw-1001-secret"
    assert config["api"]["token"] == "fleet-api-token-0123456789"
    assert b"pw-1001-secret" not in body

    etag = headers["ETag"]
    status, body, _ = await _get(
        f"{base}/devices/desk-1.json", ff.client_context("desk-1"), {"If-None-Match": etag}
    )
    assert (status, body) == (304, b"")


async def test_another_devices_document_is_403(served) -> None:
    ff, base = served
    status, body, _ = await _get(f"{base}/devices/desk-2.json", ff.client_context("desk-1"))
    assert status == 403
    assert json.loads(body) == {"error": "certificate desk-1 may not access device desk-2"}


async def test_no_client_certificate_is_refused_in_the_handshake(served) -> None:
    ff, base = served
    with pytest.raises((aiohttp.ClientError, ssl.SSLError)):
        await _get(f"{base}/devices/desk-1.json", ff.client_context(None))


async def test_certificate_from_another_ca_is_refused(served, tmp_path: Path) -> None:
    ff, base = served
    rogue_key, rogue_ca = pki.make_ca("rogue")
    key = pki.new_key()
    cert = pki.device_cert(rogue_key, rogue_ca, "desk-1", key.public_key())
    (tmp_path / "r.crt").write_bytes(pki.cert_pem(cert))
    (tmp_path / "r.key").write_bytes(pki.key_pem(key))
    ctx = ff.client_context(None)
    ctx.load_cert_chain(str(tmp_path / "r.crt"), str(tmp_path / "r.key"))
    with pytest.raises((aiohttp.ClientError, ssl.SSLError)):
        await _get(f"{base}/devices/desk-1.json", ctx)


async def test_removed_device_loses_access(served) -> None:
    ff, base = served
    assert provision_main(["remove-device", str(ff.fleet), "desk-2"]) == 0
    status, body, _ = await _get(f"{base}/devices/desk-2.json", ff.client_context("desk-2"))
    assert status == 403 and b"not in the fleet inventory" in body
    status, body, _ = await _get(f"{base}/firmware/0.1.0.json", ff.client_context("desk-2"))
    assert status == 403 and b"not in the fleet inventory" in body


async def test_firmware_files_are_served_to_fleet_devices(served) -> None:
    ff, base = served
    status, body, _ = await _get(f"{base}/firmware/0.1.0.json", ff.client_context("desk-2"))
    assert status == 200
    manifest = d.verify_manifest(
        json.loads(body), d.load_ed25519_public((ff.fleet / "config-signing.pub").read_bytes())
    )
    status, data, _ = await _get(f"{base}/firmware/0.1.0.tar.gz", ff.client_context("desk-2"))
    assert status == 200
    d.check_firmware(manifest, data)
    status, _, _ = await _get(f"{base}/firmware/..%2Finventory.json", ff.client_context("desk-2"))
    assert status == 404


async def test_status_reports_are_stored_and_shown(served, capsys) -> None:
    ff, base = served
    report = {
        "firmware": "0.1.0",
        "serial": 1,
        "registration": "registered",
        "last_error": None,
        "local_changes": {"audio": {"tone_country": "DE"}},
    }
    async with aiohttp.ClientSession() as s:
        ctx = ff.client_context("desk-1")
        async with s.post(f"{base}/status/desk-1", json=report, ssl=ctx) as r:
            assert r.status == 200
        async with s.post(f"{base}/status/desk-2", json=report, ssl=ctx) as r:
            assert r.status == 403
        async with s.post(f"{base}/status/desk-1", json={"serial": "x"}, ssl=ctx) as r:
            assert r.status == 400
            assert await r.json() == {"error": "status key 'serial' has the wrong type"}
        bad_local = {"local_changes": {"accounts": [{"id": "line1", "password": "x"}]}}
        async with s.post(f"{base}/status/desk-1", json=bad_local, ssl=ctx) as r:
            assert r.status == 400 and "may not carry secrets" in (await r.json())["error"]
    capsys.readouterr()
    assert provision_main(["status", str(ff.fleet)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["device", "name", "firmware", "serial", "registration", "last_error"]
    assert out[1].split() == ["desk-1", "desk-1", "0.1.0", "1/1", "registered", "-"]
    assert out[2].split()[:2] == ["desk-2", "desk-2"] and out[2].endswith("no report")
    # The phone's local change became the device's local layer.
    local = (ff.fleet / "config" / "local" / "desk-1.toml").read_text()
    assert 'tone_country = "DE"' in local


async def test_reflashing_revokes_the_old_card(served, tmp_path: Path) -> None:
    ff, base = served
    old_ctx = ff.client_context("desk-1")
    new_boot = tmp_path / "boot-desk-1-again"
    new_boot.mkdir()
    args = [str(ff.fleet), "--id", "desk-1", "--url", "https://127.0.0.1:1", "--boot"]
    assert flash_main([*args, str(new_boot)]) == 0
    ff.boots["desk-1"] = new_boot
    status, body, _ = await _get(f"{base}/devices/desk-1.json", old_ctx)
    assert status == 403
    assert json.loads(body) == {
        "error": "certificate is not the one recorded for desk-1 (re-flashed?)"
    }
    status, _, _ = await _get(f"{base}/devices/desk-1.json", ff.client_context("desk-1"))
    assert status == 200
