"""The action API (RFC 5850 section 3 "URIs for actions"): authenticated JSON over HTTP.

aiohttp is the de-facto asyncio HTTP server: small, maintained and already an asyncio citizen, so
it shares the phone's single event loop instead of needing a thread. Bound to loopback by default;
every request needs the bearer token (compared in constant time).
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)

StatusProvider = Callable[[], dict[str, Any]]


def _unauthorized(reason: str) -> web.Response:
    return web.json_response(
        {"error": reason}, status=401, headers={"WWW-Authenticate": 'Bearer realm="deskphone"'}
    )


def make_app(token: str, status: StatusProvider) -> web.Application:
    """Build the aiohttp application; routes are added here as features land."""
    expected = f"Bearer {token}".encode()

    @web.middleware
    async def auth(request: web.Request, handler: Any) -> web.StreamResponse:
        given = request.headers.get("Authorization", "")
        if not given:
            return _unauthorized("missing bearer token")
        if not hmac.compare_digest(given.encode(), expected):
            log.warning("action API: bad token from %s", request.remote)
            return _unauthorized("invalid bearer token")
        return await handler(request)

    async def get_status(_request: web.Request) -> web.Response:
        return web.json_response(status())

    app = web.Application(middlewares=[auth])
    app.router.add_get("/api/status", get_status)
    return app


class ApiServer:
    """Runs the action API on the phone's event loop."""

    def __init__(self, host: str, port: int, token: str, status: StatusProvider) -> None:
        self._app = make_app(token, status)
        self._host, self._port = host, port
        self._runner: web.AppRunner | None = None
        self.bound: tuple[str, int] | None = None

    async def start(self) -> None:
        self._runner = web.AppRunner(self._app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        server = site._server  # aiohttp exposes no public accessor for the bound port
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            addr = sockets[0].getsockname()
            self.bound = (addr[0], addr[1])
        log.info("action API listening on %s", self.bound)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
