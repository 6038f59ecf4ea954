"""REST routes under ``/api/v1/streaming``: request -> parse -> service -> JSON."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pymysql
from aiohttp import web
from redis.exceptions import RedisError

from hub import logs, metrics
from hub.codec import loads_exact
from hub.domain import payloads
from hub.domain.auth import Identity, Verifier, bearer
from hub.domain.service import Hub
from hub.errors import HubError
from hub.settings import Settings
from hub.transport import asyncapi, openapi

log = logging.getLogger(__name__)

PREFIX = "/api/v1/streaming"
HUB = web.AppKey("hub", Hub)  # the worker's service, set once it has started
SETTINGS = web.AppKey("settings", Settings)
VERIFIER = web.AppKey("verifier", Verifier)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(body: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def error_response(exc: HubError) -> web.Response:
    metrics.error(exc.code, "rest")
    response = json_response({"success": False, "error": exc.body()}, exc.status)
    if exc.retry_after is not None:
        response.headers["Retry-After"] = str(exc.retry_after_seconds)
    return response


@web.middleware
async def log_context(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The request's log lines name it, its stream and (once the token is read) its user."""
    route = request.match_info.route.resource
    token = logs.CONTEXT.set(
        {
            "request": f"{request.method} {route.canonical if route is not None else request.path}",
            "stream_id": request.match_info.get("stream_id"),
        }
    )
    try:
        return await handler(request)
    finally:
        logs.CONTEXT.reset(token)


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure becomes the contract's error body; nothing internal leaks out."""
    try:
        return await handler(request)
    except HubError as exc:
        return error_response(exc)
    except web.HTTPRequestEntityTooLarge:
        return error_response(HubError("payload_too_large"))
    except web.HTTPNotFound:
        return error_response(HubError("not_found", "No such resource."))
    except web.HTTPMethodNotAllowed:
        return json_response(
            {"success": False, "error": {"code": "invalid", "message": "Method not allowed."}}, 405
        )
    except (RedisError, pymysql.MySQLError, OSError) as exc:
        log.warning("%s %s failed: %s", request.method, request.path, exc)
        return error_response(HubError("unavailable"))
    except web.HTTPException:
        raise
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return json_response(
            {"success": False, "error": {"code": "internal", "message": "Internal error."}}, 500
        )


def cors(settings: Settings) -> Callable[..., Awaitable[web.StreamResponse]]:
    allowed = set(settings.cors_origins)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if request.method == "OPTIONS" and origin and "Access-Control-Request-Method" in request.headers:
            if origin not in allowed:
                return error_response(HubError("forbidden", "Origin not allowed."))
            response: web.StreamResponse = web.Response(status=204)
        else:
            response = await handler(request)
        if origin and origin in allowed:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Allow-Credentials"] = "true"
            response.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type"
            response.headers["Access-Control-Allow-Methods"] = "GET, POST, PUT, DELETE, OPTIONS"
            response.headers["Access-Control-Expose-Headers"] = "Retry-After"
            response.headers["Vary"] = "Origin"
        return response

    return middleware


async def read_json(request: web.Request) -> Any:
    body = await request.read()
    if not body.strip():
        return {}
    try:
        return loads_exact(body)
    except ValueError as exc:  # bad JSON, 1e309, NaN, a lone surrogate, nesting over 32 levels
        raise HubError("invalid", "The body is not valid JSON the hub reads.") from exc


async def identity(request: web.Request) -> Identity:
    token = bearer(request.headers.get("Authorization"))
    if token is None:
        raise HubError("unauthorized")
    found = await request.app[VERIFIER].authenticate(token)
    context = logs.CONTEXT.get()
    if isinstance(context, dict):  # the request's log lines name the user from now on
        context["user_id"] = found.user_id
    return found


def _hub(request: web.Request) -> Hub:
    return request.app[HUB]


def _stream_id(request: web.Request) -> str:
    return payloads.path_stream_id(request.match_info["stream_id"])


async def live(request: web.Request) -> web.Response:
    q = request.query
    category = payloads.clean_text(q.get("category", "")) or None
    limit = payloads.query_int(q, "limit", 50, 1, 100)
    offset = payloads.query_int(q, "offset", 0, 0, 1_000_000)
    streams = await _hub(request).live(category, limit, offset)
    return json_response({"success": True, "count": len(streams), "streams": streams})


async def create(request: web.Request) -> web.Response:
    who = await identity(request)
    payload = payloads.CreateStream.parse(await read_json(request))
    stream = await _hub(request).create_stream(who, payload)
    return json_response({"success": True, "stream": stream}, 201)


async def start(request: web.Request) -> web.Response:
    who = await identity(request)
    stream = await _hub(request).start_stream(who, _stream_id(request))
    return json_response({"success": True, "stream": stream})


async def end(request: web.Request) -> web.Response:
    who = await identity(request)
    stream = await _hub(request).end_stream(who, _stream_id(request))
    return json_response({"success": True, "stream": stream})


async def cancel(request: web.Request) -> web.Response:
    stream = await _hub(request).cancel_stream(await identity(request), _stream_id(request))
    return json_response({"success": True, "stream": stream})


async def get_stream(request: web.Request) -> web.Response:
    stream = await _hub(request).get_stream(_stream_id(request))
    return json_response({"success": True, "stream": stream})


async def stats(request: web.Request) -> web.Response:
    figures = await _hub(request).stats(_stream_id(request))
    return json_response({"success": True, "stats": figures})


async def chat(request: web.Request) -> web.Response:
    stream_id = _stream_id(request)
    limit = payloads.query_int(request.query, "limit", 50, 1, 200)
    before = payloads.query_message_id(request.query, "before")
    messages = await _hub(request).chat_history(stream_id, before, limit)
    return json_response({"success": True, "count": len(messages), "messages": messages})


async def user_streams(request: web.Request) -> web.Response:
    user_id = request.match_info["user_id"]
    status = payloads.query_status(request.query)
    limit = payloads.query_int(request.query, "limit", 50, 1, 100)
    streams = await _hub(request).user_streams(user_id, status, limit)
    return json_response({"success": True, "count": len(streams), "streams": streams})


def _moderation(action: str, *path_fields: str) -> Handler:
    """A §8 action as a REST call: the body's fields, with the path's ids over them."""

    async def handle(request: web.Request) -> web.Response:
        who = await identity(request)
        body = await read_json(request) if request.method in ("POST", "PUT") else {}
        if not isinstance(body, dict):
            raise HubError("invalid", "The body must be a JSON object.")
        data = dict(body, stream_id=_stream_id(request))
        for name in path_fields:
            data[name] = request.match_info[name]
        ack = await _hub(request).moderate(who, payloads.Moderation.parse(action, data))
        return json_response(ack)

    return handle


async def alert(request: web.Request) -> web.Response:
    who = await identity(request)
    body = await read_json(request)
    if not isinstance(body, dict):
        raise HubError("invalid", "The body must be a JSON object.")
    payload = payloads.Alert.parse(dict(body, stream_id=_stream_id(request)))
    return json_response(await _hub(request).alert(who, payload))


async def moderation_log(request: web.Request) -> web.Response:
    who = await identity(request)
    stream_id = _stream_id(request)
    limit = payloads.query_int(request.query, "limit", 50, 1, 200)
    actions = await _hub(request).moderation_log(who, stream_id, limit)
    return json_response({"success": True, "count": len(actions), "actions": actions})


async def openapi_document(request: web.Request) -> web.Response:
    """This API's OpenAPI 3.1 description (``hub/openapi.py``); no token needed."""
    return web.Response(body=openapi.encoded(PREFIX), content_type="application/json")


async def asyncapi_document(request: web.Request) -> web.Response:
    """The Socket.IO API's AsyncAPI 3.0 description (``hub/transport/asyncapi.py``); no token needed."""
    return web.Response(body=asyncapi.encoded(), content_type="application/json")


def setup_routes(app: web.Application) -> None:
    app.router.add_get(openapi.PATH, openapi_document)
    app.router.add_get(asyncapi.PATH, asyncapi_document)
    app.router.add_get(f"{PREFIX}/live", live)
    app.router.add_post(f"{PREFIX}/create", create)
    app.router.add_get(f"{PREFIX}/user/{{user_id}}/streams", user_streams)
    app.router.add_post(f"{PREFIX}/{{stream_id}}/start", start)
    app.router.add_post(f"{PREFIX}/{{stream_id}}/cancel", cancel)
    app.router.add_post(f"{PREFIX}/{{stream_id}}/end", end)
    app.router.add_get(f"{PREFIX}/{{stream_id}}/stats", stats)
    app.router.add_get(f"{PREFIX}/{{stream_id}}/chat", chat)
    app.router.add_get(f"{PREFIX}/{{stream_id}}", get_stream)
    stream = f"{PREFIX}/{{stream_id}}"
    for action in payloads.MODERATION.values():
        route = action.route
        app.router.add_route(route.method, stream + route.path, _moderation(action.name, *route.path_fields))
    app.router.add_post(f"{stream}/alerts", alert)
    app.router.add_get(f"{stream}/moderation", moderation_log)
