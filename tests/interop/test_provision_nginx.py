"""Acceptance 2: the rendered tree served by a real nginx with the generated mTLS config behaves
like `deskphone-provision serve`: identical bytes for the device's own document, another
device's document refused (403), no client certificate refused, ETag/If-None-Match (304)."""

from __future__ import annotations

import http.client
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require_tool
from tests.interop.nginx_server import run_nginx
from tests.interop.phone import free_port
from tests.unit.provision_helpers import FlashedFleet, make_fleet
from tools.flash.cli import main as flash_main
from tools.provision.cli import main as provision_main


@pytest.fixture
def nginx_tree(tmp_path: Path) -> Iterator[tuple[FlashedFleet, int]]:
    require_tool("nginx")
    ff = make_fleet(tmp_path)
    port = free_port()
    with run_nginx(ff.fleet, port, tmp_path):
        yield ff, port


def _get(
    port: int, ctx: ssl.SSLContext, path: str, headers: dict[str, str] | None = None
) -> tuple[int, bytes, http.client.HTTPMessage]:
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=5)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read(), resp.headers
    finally:
        conn.close()


def test_nginx_serves_the_same_tree_with_mtls(nginx_tree: tuple[FlashedFleet, int]) -> None:
    ff, port = nginx_tree
    own = ff.client_context("desk-1")
    status, body, headers = _get(port, own, "/devices/desk-1.json")
    assert status == 200
    assert body == (ff.fleet / "www" / "devices" / "desk-1.json").read_bytes()
    assert headers["Content-Type"] == "application/json"
    status, body, _ = _get(port, own, "/devices/desk-1.json", {"If-None-Match": headers["ETag"]})
    assert (status, body) == (304, b"")

    # Another device's document: refused by the CN check.
    status, _, _ = _get(port, own, "/devices/desk-2.json")
    assert status == 403
    status, body, _ = _get(port, ff.client_context("desk-2"), "/devices/desk-2.json")
    assert status == 200
    assert body == (ff.fleet / "www" / "devices" / "desk-2.json").read_bytes()

    # Firmware for any fleet device, byte for byte.
    status, body, _ = _get(port, ff.client_context("desk-2"), "/firmware/0.1.0.tar.gz")
    assert status == 200
    assert body == (ff.fleet / "www" / "firmware" / "0.1.0.tar.gz").read_bytes()
    # Nothing outside the tree's two directories.
    assert _get(port, own, "/inventory.json")[0] == 404
    assert _get(port, own, "/devices/../devices/desk-2.json")[0] in (400, 403)


def test_nginx_refuses_a_client_without_certificate(nginx_tree: tuple[FlashedFleet, int]) -> None:
    ff, port = nginx_tree
    # nginx completes the handshake and answers 400 "No required SSL certificate was sent".
    status, body, _ = _get(port, ff.client_context(None), "/devices/desk-1.json")
    assert status == 400
    assert b"No required SSL certificate" in body


def test_nginx_refuses_a_certificate_from_another_ca(
    nginx_tree: tuple[FlashedFleet, int], tmp_path: Path
) -> None:
    from tools.provision import pki

    ff, port = nginx_tree
    rogue_key, rogue_ca = pki.make_ca("rogue")
    key = pki.new_key()
    (tmp_path / "r.crt").write_bytes(
        pki.cert_pem(pki.device_cert(rogue_key, rogue_ca, "desk-1", key.public_key()))
    )
    (tmp_path / "r.key").write_bytes(pki.key_pem(key))
    ctx = ff.client_context(None)
    ctx.load_cert_chain(str(tmp_path / "r.crt"), str(tmp_path / "r.key"))
    status, body, _ = _get(port, ctx, "/devices/desk-1.json")
    assert status == 400
    assert b"SSL certificate error" in body


def test_nginx_refuses_an_old_card_and_a_removed_device(tmp_path: Path) -> None:
    require_tool("nginx")
    ff = make_fleet(tmp_path)
    old_ctx = ff.client_context("desk-1")
    new_boot = tmp_path / "boot-desk-1-again"
    new_boot.mkdir()
    args = [str(ff.fleet), "--id", "desk-1", "--url", "https://127.0.0.1:1", "--boot"]
    assert flash_main([*args, str(new_boot)]) == 0
    ff.boots["desk-1"] = new_boot
    assert provision_main(["remove-device", str(ff.fleet), "desk-2"]) == 0  # no render yet
    port = free_port()
    with run_nginx(ff.fleet, port, tmp_path):
        assert _get(port, old_ctx, "/devices/desk-1.json")[0] == 403
        assert _get(port, old_ctx, "/firmware/0.1.0.json")[0] == 403
        assert _get(port, ff.client_context("desk-1"), "/devices/desk-1.json")[0] == 200
        # desk-2's document is still in the tree, but desk-2 is no longer in the fleet.
        assert (ff.fleet / "www" / "devices" / "desk-2.json").exists()
        assert _get(port, ff.client_context("desk-2"), "/devices/desk-2.json")[0] == 403
