"""`deskphone-provision serve`: the HTTPS config server for labs and small sites.

Every request needs a client certificate signed by the fleet CA (mTLS); its CN is the device id.
A device gets only its own document (``GET /devices/<id>.json``, 403 for any other), any
published firmware file, and may report its status (``POST /status/<id>``, its own id only).
Documents and firmware are the static tree written by `render`, so nginx or a CDN can serve the
same files (`nginx.py`); ETag/If-None-Match lets phones poll cheaply (304).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import ssl
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from tools.provision import pki
from tools.provision.fleet import Fleet, FleetError

log = logging.getLogger(__name__)

DEVICE_PATH_RE = re.compile(r"^[a-z0-9-]{1,63}$")
FIRMWARE_NAME_RE = re.compile(r"^[0-9A-Za-z.+_-]{1,64}\.(tar\.gz|json)$")
MAX_STATUS_BYTES = 64 * 1024
STATUS_TYPES: dict[str, tuple[type, ...]] = {
    "firmware": (str, type(None)),
    "serial": (int, type(None)),
    "registration": (str, list, dict, type(None)),
    "last_error": (str, type(None)),
    "config_source": (str, type(None)),
    "local_changes": (dict, type(None)),
}


def server_ssl_context(fleet: Fleet) -> ssl.SSLContext:
    """TLS 1.2+ server context that requires a client certificate from the fleet CA."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(fleet.ca_cert_path))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_cert_chain(str(fleet.server_cert_path), str(fleet.server_key_path))
    return ctx


def peer_cn(request: web.Request) -> str | None:
    """The verified client certificate's CN (the ssl module only hands over verified certs)."""
    transport = request.transport
    cert = transport.get_extra_info("peercert") if transport is not None else None
    if not cert:
        return None
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


def peer_fingerprint(request: web.Request) -> str | None:
    """sha256 (hex) of the client certificate, as recorded in the inventory at flashing."""
    transport = request.transport
    obj = transport.get_extra_info("ssl_object") if transport is not None else None
    der = obj.getpeercert(binary_form=True) if obj is not None else None
    return hashlib.sha256(der).hexdigest() if der else None


def _error(status: int, reason: str) -> web.Response:
    return web.json_response({"error": reason}, status=status)


def _etag(data: bytes) -> str:
    return '"' + hashlib.sha256(data).hexdigest()[:32] + '"'


def _file_response(request: web.Request, path: Path, content_type: str) -> web.StreamResponse:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return _error(404, f"{request.path} does not exist (not rendered yet?)")
    etag = _etag(data)
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    wanted = request.headers.get("If-None-Match", "")
    if etag in [t.strip() for t in wanted.split(",")] or wanted.strip() == "*":
        return web.Response(status=304, headers=headers)
    return web.Response(body=data, content_type=content_type, headers=headers)


class ConfigServer:
    """Routes over one fleet directory and one rendered tree."""

    def __init__(self, fleet: Fleet, tree: Path | None = None) -> None:
        self.fleet = fleet
        self.tree = tree or fleet.www

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_STATUS_BYTES)
        app.router.add_get("/devices/{name}", self.device_document)
        app.router.add_get("/firmware/{name}", self.firmware_file)
        app.router.add_post("/status/{device}", self.status_report)
        return app

    def _authorise(self, request: web.Request, device_id: str) -> web.Response | None:
        cn = peer_cn(request)
        if cn is None:
            return _error(403, "a client certificate from the fleet CA is required")
        if cn != device_id:
            log.warning("device %s asked for %s: refused", cn, request.path)
            return _error(403, f"certificate {cn} may not access device {device_id}")
        try:
            rec = self.fleet.device(device_id)
        except FleetError:
            return _error(403, f"device {device_id} is not in the fleet inventory")
        recorded = rec.get("cert_sha256")
        if recorded and peer_fingerprint(request) != recorded:
            # Re-flashing records a new certificate: the old card's one is refused from then on.
            log.warning("device %s presented a certificate that is not the recorded one", cn)
            return _error(403, f"certificate is not the one recorded for {device_id} (re-flashed?)")
        return None

    async def device_document(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if not name.endswith(".json") or not DEVICE_PATH_RE.match(name[:-5]):
            return _error(404, "no such document")
        device_id = name[:-5]
        refused = self._authorise(request, device_id)
        if refused is not None:
            return refused
        return _file_response(request, self.tree / "devices" / name, "application/json")

    async def firmware_file(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if not FIRMWARE_NAME_RE.match(name):
            return _error(404, "no such firmware file")
        cn = peer_cn(request)
        if cn is None:
            return _error(403, "a client certificate from the fleet CA is required")
        refused = self._authorise(request, cn)  # any device that is still in the inventory
        if refused is not None:
            return refused
        kind = "application/json" if name.endswith(".json") else "application/gzip"
        return _file_response(request, self.tree / "firmware" / name, kind)

    async def status_report(self, request: web.Request) -> web.Response:
        device_id = request.match_info["device"]
        if not DEVICE_PATH_RE.match(device_id):
            return _error(404, "no such device")
        refused = self._authorise(request, device_id)
        if refused is not None:
            return refused
        try:
            body: Any = json.loads(await request.read())
        except (ValueError, UnicodeDecodeError):
            return _error(400, "status body must be JSON")
        except web.HTTPRequestEntityTooLarge:
            return _error(413, f"status body larger than {MAX_STATUS_BYTES} bytes")
        if not isinstance(body, dict):
            return _error(400, "status body must be a JSON object")
        for key, kinds in STATUS_TYPES.items():
            value = body.get(key)
            if not isinstance(value, kinds) or (key == "serial" and isinstance(value, bool)):
                return _error(400, f"status key {key!r} has the wrong type")
        record = {k: body.get(k) for k in STATUS_TYPES if k != "local_changes"}
        record.update(received_at=time.time(), peer=request.remote)
        local = body.get("local_changes")
        if local is not None:
            try:
                self.fleet.set_local(device_id, local)
            except (FleetError, TypeError, ValueError) as e:
                return _error(400, f"local_changes: {e}")
        path = self.fleet.status_dir / f"{device_id}.json"
        pki.atomic_write(path, (json.dumps(record, sort_keys=True) + "\n").encode())
        log.info("status from %s: %s", device_id, record)
        return web.json_response({"stored": True}, status=200)


async def start(
    fleet: Fleet, host: str, port: int, tree: Path | None = None
) -> tuple[web.AppRunner, int]:
    """Start serving (HTTPS, mTLS); returns the runner and the bound port (``port`` 0 = any)."""
    runner = web.AppRunner(ConfigServer(fleet, tree).app(), access_log=log)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=server_ssl_context(fleet))
    await site.start()
    server = site._server  # aiohttp exposes the bound sockets only here
    sockets = getattr(server, "sockets", None) or []
    bound = sockets[0].getsockname()[1] if sockets else port
    log.info("config server on https://%s:%d (tree %s)", host, bound, tree or fleet.www)
    return runner, bound
