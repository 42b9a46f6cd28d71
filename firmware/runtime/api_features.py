"""Action API routes for the desk-phone features (issue 5).

* ``POST /api/blf/{KEY}``: press a BLF/park/speed-dial key (pickup when the line rings, call
  when idle, transfer the current call to it while in a call) -> what it did;
* ``POST /api/dnd`` ``{"enabled": true}``;
* ``POST /api/forward`` ``{"always": "1070"|null, "busy": ..., "no_answer": ...,
  "no_answer_after": 20}`` (only the fields given change);
* ``POST /api/park/{call_id}``: park the call (REFER to the park URI / code);
* ``POST /api/pickup`` ``{"extension": "1062"}`` (directed, by feature code) or ``{}`` (group);
* ``POST /api/dial/anonymous`` ``{"number": "1062"}``: an RFC 3323 anonymous call.

Registered by `api.make_app` behind its bearer-token middleware when the phone has
``desk`` features.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from firmware.runtime.api import ActionError, _json_body, dial_target


def add_feature_routes(app: web.Application, actions: Any) -> None:
    desk = getattr(actions, "desk", None)
    if desk is None:
        return

    async def post_blf(request: web.Request) -> web.Response:
        return web.json_response(desk.blf_press(request.match_info["key"]))

    async def post_dnd(request: web.Request) -> web.Response:
        body = await _json_body(request)
        enabled = body.get("enabled")
        if not isinstance(enabled, bool):
            raise ActionError(400, 'body needs "enabled": true or false')
        return web.json_response(desk.set_dnd(enabled))

    async def post_forward(request: web.Request) -> web.Response:
        body = await _json_body(request)
        unknown = sorted(set(body) - {"always", "busy", "no_answer", "no_answer_after"})
        if unknown:
            raise ActionError(400, f"unknown field {unknown[0]!r}")
        return web.json_response(desk.set_forward(body))

    async def post_park(request: web.Request) -> web.Response:
        return web.json_response(desk.park(request.match_info["call_id"]))

    async def post_pickup(request: web.Request) -> web.Response:
        body = await _json_body(request)
        ext = body.get("extension")
        if ext is not None and (not isinstance(ext, str) or not ext.isalnum()):
            raise ActionError(400, '"extension" must be letters and digits')
        return web.json_response(desk.pickup(ext), status=201)

    async def post_anonymous(request: web.Request) -> web.Response:
        number, account = dial_target(await _json_body(request))
        return web.json_response(desk.dial_anonymous(number, account), status=201)

    app.router.add_post("/api/blf/{key}", post_blf)
    app.router.add_post("/api/dnd", post_dnd)
    app.router.add_post("/api/forward", post_forward)
    app.router.add_post("/api/park/{call_id}", post_park)
    app.router.add_post("/api/pickup", post_pickup)
    app.router.add_post("/api/dial/anonymous", post_anonymous)
