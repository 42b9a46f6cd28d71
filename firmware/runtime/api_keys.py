"""Action API routes for the person at the desk: press keys and lift the handset by HTTP.

`POST /api/keys/{KEY}` presses a key (board/ports key names; `{"long": true}` for a long
press) and `POST /api/hook` `{"state": "offhook"|"onhook"}` moves the hook switch. Both go
through the same UI as the physical keys, so lab scripts and tests drive exactly what a person
would, and answer with the screen and LEDs afterwards. Registered by `api.make_app`, behind its
bearer-token middleware.
"""

from __future__ import annotations

from typing import Any, Protocol

from aiohttp import web

from board.ports import ALL_KEYS, HOOK
from firmware.runtime.api import ActionError, _json_body


class KeyActions(Protocol):
    def press_key(self, key: str, long: bool) -> dict[str, Any]: ...

    def set_hook(self, offhook: bool) -> dict[str, Any]: ...


def add_key_routes(app: web.Application, actions: Any) -> None:
    """Add the key and hook routes when ``actions`` can take them (a Phone with a UI)."""
    if not (hasattr(actions, "press_key") and hasattr(actions, "set_hook")):
        return

    async def post_key(request: web.Request) -> web.Response:
        key = request.match_info["key"]
        if key not in ALL_KEYS or key == HOOK:
            hint = " (use POST /api/hook for the hook switch)" if key == HOOK else ""
            raise ActionError(
                400, f"unknown key {key!r}{hint}; keys are e.g. DIGIT_5, STAR, HOLD, SOFT_1"
            )
        body = await _json_body(request)
        unknown = sorted(set(body) - {"long"})
        if unknown:
            raise ActionError(400, f'unknown field {unknown[0]!r}; only "long" is allowed')
        long = body.get("long", False)
        if not isinstance(long, bool):
            raise ActionError(400, '"long" must be true or false')
        return web.json_response(actions.press_key(key, long))

    async def post_hook(request: web.Request) -> web.Response:
        body = await _json_body(request)
        state = body.get("state")
        if state not in ("offhook", "onhook"):
            raise ActionError(400, 'body needs "state": "offhook" or "onhook"')
        return web.json_response(actions.set_hook(state == "offhook"))

    app.router.add_post("/api/keys/{key}", post_key)
    app.router.add_post("/api/hook", post_hook)
