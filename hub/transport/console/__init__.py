"""The web console: a stream list, a viewer page and a streamer's studio, served at ``/``.

Plain HTML, CSS and JavaScript modules from ``hub/transport/console/``, with the socket.io client taken
from its npm package (``hub/transport/console/vendor``), so the console works without reaching any other
site. The pages speak the public contract only (REST under ``/api/v1/streaming`` and the
``/streaming`` namespace); the hub adds two small routes for them: ``GET /console/config`` (the
fee rate and tip bounds, to show a tip's fee before it is sent) and, when
``HUB_CONSOLE_DEV_TOKENS`` is on (``make run``), ``POST /console/dev-token``.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from hub.domain.auth import mint
from hub.errors import HubError
from hub.transport import rest

FOLDER = Path(__file__).resolve().parent
PAGES = {"/": "index.html", "/watch": "watch.html", "/studio": "studio.html"}
# Scripts, styles and sockets from the hub only; thumbnails from anywhere (they are streamers' URLs).
SECURITY = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' https: http: data:; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
USER_ID = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
DEV_TOKEN_TTL = 12 * 3600


def setup_routes(app: web.Application) -> None:
    for path, name in PAGES.items():
        app.router.add_get(path, _page(FOLDER / name))
    app.router.add_get("/console/config", config)
    app.router.add_post("/console/dev-token", dev_token)
    app.router.add_static("/console/", FOLDER, append_version=False)

    async def headers(request: web.Request, response: web.StreamResponse) -> None:
        if request.path in PAGES or request.path.startswith("/console/"):
            response.headers.update(SECURITY)

    app.on_response_prepare.append(headers)


def _page(path: Path) -> Callable[[web.Request], Awaitable[web.FileResponse]]:
    async def page(_: web.Request) -> web.FileResponse:
        return web.FileResponse(path, headers={"Cache-Control": "no-cache"})

    return page


async def config(request: web.Request) -> web.Response:
    s = request.app[rest.SETTINGS]
    return rest.json_response(
        {
            "success": True,
            "platform_fee": str(s.platform_fee),
            "currency": s.currency,
            "tip_min": str(s.tip_min),
            "tip_max": str(s.tip_max),
            "dev_tokens": s.console_dev_tokens,
        }
    )


async def dev_token(request: web.Request) -> web.Response:
    """A token for local use: any user id, as a viewer or a streamer, signed with the
    development secret. Off (404) unless HUB_CONSOLE_DEV_TOKENS is set."""
    s = request.app[rest.SETTINGS]
    if not s.console_dev_tokens:
        raise HubError("not_found", "Development tokens are off (HUB_CONSOLE_DEV_TOKENS).")
    body = await rest.read_json(request)
    user_id = body.get("user_id") if isinstance(body, dict) else None
    role = body.get("role", "") if isinstance(body, dict) else None
    if not isinstance(user_id, str) or not USER_ID.fullmatch(user_id):
        raise HubError("invalid", "'user_id' must be 1–64 letters, digits or . _ @ -.")
    if role not in ("", "streamer"):
        raise HubError("invalid", "'role' must be empty (a viewer) or 'streamer'.")
    token = mint(s, user_id, user_id, [role] if role else [], DEV_TOKEN_TTL)
    return rest.json_response({"success": True, "token": token, "user_id": user_id})
