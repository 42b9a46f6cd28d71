"""The action API (RFC 5850 section 3 "URIs for actions"): authenticated JSON over HTTP.

aiohttp is the de-facto asyncio HTTP server: small, maintained and already an asyncio citizen, so
it shares the phone's single event loop instead of needing a thread. Bound to loopback by default;
every request needs the bearer token (compared in constant time). Bad input gets a 4xx with a
JSON body saying what is wrong; nothing a client sends can raise out of a handler.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Callable
from typing import Any, Protocol

from aiohttp import web

log = logging.getLogger(__name__)

StatusProvider = Callable[[], dict[str, Any]]
CALL_ACTIONS = (
    "answer",
    "hangup",
    "hold",
    "resume",
    "dtmf",
    "reject",
    "transfer",
    "conference",
    "drop",
    "swap",
    "leave",
)


class ActionError(Exception):
    """A request the phone understood but cannot carry out (unknown call, wrong state...)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Actions(Protocol):
    """What the phone can be asked to do; raises ActionError with an HTTP status."""

    def dial(self, number: str, account: str | None, hold: bool = True) -> dict[str, Any]: ...

    def call_action(self, call_id: str, action: str, body: dict[str, Any]) -> dict[str, Any]: ...


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _unauthorized(reason: str) -> web.Response:
    return web.json_response(
        {"error": reason}, status=401, headers={"WWW-Authenticate": 'Bearer realm="deskphone"'}
    )


async def _json_body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ActionError(400, f"body is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise ActionError(400, "body must be a JSON object")
    return body


def dial_target(body: dict[str, Any]) -> tuple[str, str | None]:
    """("number", "account") of a dial request body, or a 400 naming the bad field."""
    number = body.get("number")
    if not isinstance(number, str) or not number.strip():
        raise ActionError(400, 'body needs "number": a non-empty string')
    account = body.get("account")
    if account is not None and not isinstance(account, str):
        raise ActionError(400, '"account" must be a string')
    return number.strip(), account


def make_app(token: str, status: StatusProvider, actions: Actions | None = None) -> web.Application:
    """Build the aiohttp application."""
    expected = f"Bearer {token}".encode()

    @web.middleware
    async def auth(request: web.Request, handler: Any) -> web.StreamResponse:
        given = request.headers.get("Authorization", "")
        if not given:
            return _unauthorized("missing bearer token")
        if not hmac.compare_digest(given.encode(), expected):
            log.warning("action API: bad token from %s", request.remote)
            return _unauthorized("invalid bearer token")
        try:
            return await handler(request)
        except ActionError as e:
            return _error(e.status, e.message)

    async def get_status(_request: web.Request) -> web.Response:
        return web.json_response(status())

    async def post_dial(request: web.Request) -> web.Response:
        assert actions is not None
        body = await _json_body(request)
        number, account = dial_target(body)
        hold = body.get("hold", True)  # false: keep the talking call talking (conference set-up)
        if not isinstance(hold, bool):
            raise ActionError(400, '"hold" must be true or false')
        return web.json_response(actions.dial(number, account, hold=hold), status=201)

    async def post_call_action(request: web.Request) -> web.Response:
        assert actions is not None
        action = request.match_info["action"]
        if action not in CALL_ACTIONS:
            raise ActionError(
                404, f"unknown call action {action!r}; one of {', '.join(CALL_ACTIONS)}"
            )
        body = await _json_body(request)
        return web.json_response(actions.call_action(request.match_info["call_id"], action, body))

    app = web.Application(middlewares=[auth], client_max_size=64 * 1024)
    app.router.add_get("/api/status", get_status)
    if actions is not None:
        app.router.add_post("/api/dial", post_dial)
        app.router.add_post("/api/calls/{call_id}/{action}", post_call_action)
        from firmware.runtime.api_features import add_feature_routes  # BLF, DND... (issue 5)

        add_feature_routes(app, actions)
        from firmware.runtime.api_keys import add_key_routes  # keys + hook (it imports us)

        add_key_routes(app, actions)
    return app


class ApiServer:
    """Runs the action API on the phone's event loop."""

    def __init__(
        self,
        host: str,
        port: int,
        token: str,
        status: StatusProvider,
        actions: Actions | None = None,
    ) -> None:
        self._app = make_app(token, status, actions)
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
