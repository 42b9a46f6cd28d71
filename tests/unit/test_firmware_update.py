"""The phone's firmware updater against a loopback HTTP server: a manifest signed by another
key, a bundle that does not match its manifest, and a downgrade are refused before anything is
unpacked; a good one lands in the inactive slot as a trial."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware.provisioning.document import firmware_manifest, public_pem, sign_document
from firmware.provisioning.firmware_slots import FirmwareError, Slots
from firmware.runtime.firmware_update import install_update

SIGNING = Ed25519PrivateKey.generate()
Served = tuple[str, dict[str, bytes], Path, Slots]


def bundle(text: str) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        data = text.encode()
        info = tarfile.TarInfo("deskphone/firmware/__main__.py")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    files: dict[str, bytes] = {}

    async def get(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in files:
            return web.Response(status=404)
        return web.Response(body=files[name])

    app = web.Application()
    app.router.add_get("/firmware/{name}", get)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    pub = tmp_path / "signing.pub"
    pub.write_bytes(public_pem(SIGNING.public_key()))
    factory = tmp_path / "factory"
    (factory / "firmware").mkdir(parents=True)
    (factory / "firmware" / "__main__.py").write_text("v1")
    slots = Slots(tmp_path / "slots")
    slots.init_from_tree(factory, "1.0")
    yield f"http://127.0.0.1:{port}", files, pub, slots
    await runner.cleanup()


def publish(files: dict[str, bytes], version: str, data: bytes, key: Ed25519PrivateKey) -> None:
    files[f"{version}.tar.gz"] = data
    manifest = sign_document(firmware_manifest(version, data, 0), key)
    files[f"{version}.json"] = json.dumps(manifest).encode()


async def test_good_update_lands_in_the_inactive_slot_as_a_trial(served: Served) -> None:
    url, files, pub, slots = served
    publish(files, "1.1", bundle("v2"), SIGNING)
    async with aiohttp.ClientSession() as session:
        slot = await install_update(session, url, "1.1", pub, slots)
    assert slot == "b" and slots.active() == "b" and slots.trial() is not None
    assert (slots.root / "b" / "firmware" / "__main__.py").read_text() == "v2"


async def test_refusals_change_nothing(served: Served) -> None:
    url, files, pub, slots = served
    async with aiohttp.ClientSession() as session:
        publish(files, "1.1", bundle("v2"), Ed25519PrivateKey.generate())
        with pytest.raises(FirmwareError, match="manifest for 1.1 refused: signature does not"):
            await install_update(session, url, "1.1", pub, slots)
        publish(files, "1.2", bundle("v3"), SIGNING)
        good = files["1.2.tar.gz"]
        files["1.2.tar.gz"] = good[:-1] + bytes([good[-1] ^ 1])  # same size, one bit flipped
        with pytest.raises(FirmwareError, match="sha256 does not match the signed manifest"):
            await install_update(session, url, "1.2", pub, slots)
        files["1.2.tar.gz"] = good + b"tail"
        with pytest.raises(FirmwareError, match="larger than its manifest says"):
            await install_update(session, url, "1.2", pub, slots)
        publish(files, "0.9", bundle("old"), SIGNING)
        with pytest.raises(FirmwareError, match="older than the anti-rollback floor 1.0"):
            await install_update(session, url, "0.9", pub, slots)
        with pytest.raises(FirmwareError, match="server answered 404"):
            await install_update(session, url, "2.0", pub, slots)
    assert slots.active() == "a" and slots.trial() is None and not (slots.root / "b").exists()
