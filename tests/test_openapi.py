"""The OpenAPI description (``hub/openapi.py``, served at /api/v1/openapi.json): a valid 3.1
document that describes every route under /api/, and that the live server's answers hold to,
checked by schemathesis over real HTTP.

Not checked: that requests the document calls invalid are refused (schemathesis's
``negative_data_rejection``). The server is more lenient than the document by design: it ignores
unknown fields, accepts non-ASCII categories, trims what the document asks to be trimmed already.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import jsonschema_rs
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.specs.openapi.definitions import OPENAPI_31_VALIDATOR

from hub.transport.rest import PREFIX
from tests.conftest import Api, next_month, unique

OPENAPI = "/api/v1/openapi.json"
UNKNOWN = "01a20e30-0000-7000-8000-000000000000"
METHODS = ("get", "put", "post", "delete", "patch")
# Every response: no 5xx, a documented status and content type, a body and headers as described.
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
# And a request the document calls valid is not refused as `invalid`; but for createStream, whose
# scheduled_at must lie within a year from now, which no static schema can say.
ACCEPTANCE_EXEMPT = ("createStream",)
# Who sends each case: mostly the stream's streamer, so that cases reach the success paths.
ROLES = ("owner", "owner", "owner", "admin", "moderator", "viewer", "none", "expired")
POSITIVE_EXAMPLES = 20
NEGATIVE_EXAMPLES = 10
# The state-changing operations that take other operations' targets away run last.
LAST = ("clearChat", "endStream")


def operations(doc: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method.upper(), path): op
        for path, item in doc["paths"].items()
        for method, op in item.items()
        if method in METHODS
    }


def app_routes(app: Any) -> set[tuple[str, str]]:
    """Every (method, path) the app serves, but aiohttp's HEADs and CORS preflights."""
    return {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.method not in ("HEAD", "OPTIONS") and route.resource is not None
    }


async def test_the_document_is_valid_openapi_31_and_describes_every_route(server, http, base_url):
    async with http.get(base_url + OPENAPI) as resp:
        assert resp.status == 200 and resp.content_type == "application/json"
        doc = await resp.json()
    assert doc["openapi"].startswith("3.1")
    assert [e.message for e in OPENAPI_31_VALIDATOR.iter_errors(doc)] == []
    schemathesis.openapi.from_dict(doc, config=schemathesis.Config()).validate()
    dialect = {"$schema": "https://json-schema.org/draft/2020-12/schema"}
    for name, schema in doc["components"]["schemas"].items():
        assert jsonschema_rs.meta.is_valid({**dialect, **schema}), name
    described = set(operations(doc))
    served = app_routes(server.app)
    api_routes = {(method, path) for method, path in served if path.startswith("/api/")}
    assert {path for _, path in api_routes if path.startswith(PREFIX + "/")}, "no REST routes found"
    assert api_routes - described == set(), "routes under /api/ without a description"
    assert described - served == set(), "descriptions of routes the app does not serve"
    ids = [op["operationId"] for op in operations(doc).values()]
    assert len(ids) == len(set(ids))


async def test_operations_that_declare_a_token_refuse_requests_without_one(server, api):
    _, doc = await api.request("GET", OPENAPI)
    for (method, path), op in operations(doc).items():
        url = path.replace("{stream_id}", UNKNOWN).replace("{message_id}", UNKNOWN).replace("{user_id}", "u")
        status, body = await api.request(method, url, json={} if "requestBody" in op else None)
        if op["security"]:
            assert status == 401 and body["error"]["code"] == "unauthorized", (method, path)
        else:
            assert status != 401, (method, path)


async def test_a_thumbnail_url_with_a_broken_ipv6_host_is_invalid(api, token):
    status, body = await api.request(
        "POST",
        "create",
        token(unique("streamer"), "streamer"),
        json={"title": "t", "thumbnail_url": "http://["},
    )
    assert status == 400 and body["error"]["code"] == "invalid"


# -- the live server against the document ----------------------------------------------


@dataclass
class World:
    """Real streams in every state, their streamers' tokens and ids that name real things, so
    that generated cases reach the success paths and not only 404."""

    base_url: str
    mint: Callable[..., str]
    streamers: list[str] = field(default_factory=list)
    owner_of: dict[str, str] = field(default_factory=dict)  # stream id -> its streamer's token
    live: str = ""  # with messages of every type, a tip, moderators and sanctions
    scheduled: str = ""
    ended: str = ""
    to_end: str = ""  # LIVE, for endStream
    to_cancel: str = ""  # SCHEDULED, for cancelStream
    messages: list[str] = field(default_factory=list)
    sanctioned: list[str] = field(default_factory=list)
    moderators: list[str] = field(default_factory=list)
    tokens: dict[str, str] = field(default_factory=dict)  # role -> token

    def path_parameters(self, op_id: str) -> list[dict[str, str]]:
        """Path parameters naming real things for ``op_id`` (schemathesis adds random ones)."""
        live = self.live
        special = {
            "listUserStreams": [{"user_id": user} for user in self.streamers],
            "startStream": [{"stream_id": s} for s in (self.scheduled, live, self.ended)],
            "endStream": [{"stream_id": s} for s in (self.to_end, self.scheduled, self.ended)],
            "cancelStream": [{"stream_id": s} for s in (self.to_cancel, live, self.ended)],
            "deleteMessage": [{"stream_id": live, "message_id": m} for m in self.messages],
            "unbanUser": [{"stream_id": live, "user_id": u} for u in self.sanctioned],
            "removeModerator": [{"stream_id": live, "user_id": u} for u in self.moderators],
        }
        return special.get(op_id, [{"stream_id": s} for s in (live, live, self.scheduled, self.ended)])

    def token_for(self, op_id: str, role: str, stream_id: str | None) -> str | None:
        if role == "owner" and op_id == "createStream":
            return self.mint(unique("streamer"), "streamer")
        if role == "owner":
            return self.owner_of.get(stream_id or "", self.owner_of[self.live])
        return self.tokens.get(role)


async def make_streams(world: World, api: Any) -> None:
    names = [unique(n) for n in ("alice", "bob", "carol", "dave", "erin")]
    owners = [world.mint(name, "streamer") for name in names]
    world.streamers = names[:2]
    world.live = (await api.create_stream(owners[0], thumbnail_url="https://img.example/t.png"))["stream_id"]
    world.scheduled = (await api.create_stream(owners[1], scheduled_at=next_month()))["stream_id"]
    world.ended = (await api.create_stream(owners[2]))["stream_id"]
    world.to_end = (await api.create_stream(owners[3]))["stream_id"]
    world.to_cancel = (await api.create_stream(owners[4], scheduled_at=next_month()))["stream_id"]
    assert (await api.request("POST", f"{world.ended}/end", owners[2]))[0] == 200
    world.owner_of = dict(
        zip((world.live, world.scheduled, world.ended, world.to_end, world.to_cancel), owners, strict=True)
    )


async def moderate_live_stream(world: World, api: Any) -> None:
    """Moderators (one acts in the cases, two may be dropped) and two users to lift sanctions from."""
    sid, owner = world.live, world.owner_of[world.live]
    mod, world.moderators = unique("mod"), [unique("mod"), unique("mod")]
    for user in (mod, *world.moderators):
        assert (await api.request("POST", f"{sid}/moderators", owner, json={"user_id": user}))[0] == 200
    world.sanctioned = [unique("troll"), unique("troll")]
    assert (
        await api.request(
            "POST", f"{sid}/bans", owner, json={"user_id": world.sanctioned[0], "reason": "spam"}
        )
    )[0] == 200
    assert (
        await api.request(
            "POST", f"{sid}/timeouts", owner, json={"user_id": world.sanctioned[1], "seconds": 600}
        )
    )[0] == 200
    world.tokens = {
        "admin": world.mint(unique("admin"), "admin"),
        "moderator": world.mint(mod),
        "viewer": world.mint(unique("viewer")),
        "expired": world.mint(unique("late"), ttl=-120),
    }


async def chat_in_live_stream(world: World, api: Any, clients: Any) -> None:
    """A watching fan who tips and chats, and an alert: every kind of message, money above zero."""
    sid = world.live
    fan = await clients(world.base_url, world.mint(unique("fan")))
    assert (await fan.call("join_stream", {"stream_id": sid}))["success"]
    assert (await fan.call("send_tip", {"stream_id": sid, "amount": "1.30", "message": "gm"}))["success"]
    assert (await fan.call("send_message", {"stream_id": sid, "message": "hello"}))["success"]
    status, _ = await api.request(
        "POST",
        f"{sid}/alerts",
        world.owner_of[sid],
        json={"message": "long", "symbol": "btc", "side": "buy", "price": "0.00001234"},
    )
    assert status == 200
    status, chat = await api.request("GET", f"{sid}/chat")
    assert {m["message_type"] for m in chat["messages"]} == {"TIP", "TEXT", "ALERT"}
    world.messages = [m["message_id"] for m in chat["messages"]]


def run_operation(
    op: Any,
    world: World,
    mode: GenerationMode,
    examples: int,
    session: requests.Session,
    seen: collections.Counter[int],
) -> None:
    """Up to ``examples`` generated cases of one operation, each sent and checked."""
    op_id = op.definition.raw["operationId"]
    branches = [
        op.as_strategy(generation_mode=mode, path_parameters=p)
        for p in world.path_parameters(op_id)
        if set(p) == {param.name for param in op.path_parameters}
    ]
    cases = st.one_of(*branches, op.as_strategy(generation_mode=mode))
    checks = CHECKS
    if mode is GenerationMode.POSITIVE and op_id not in ACCEPTANCE_EXEMPT:
        checks = [*CHECKS, positive_data_acceptance]

    @given(case=cases, role=st.sampled_from(ROLES))
    @settings(
        max_examples=examples,
        derandomize=True,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def check(case: schemathesis.Case, role: str) -> None:
        headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
        bearer = world.token_for(op_id, role, (case.path_parameters or {}).get("stream_id"))
        if bearer is not None:
            headers["Authorization"] = f"Bearer {bearer}"
        case.headers = headers
        response = case.call(base_url=world.base_url, session=session, timeout=10)
        seen[response.status_code] += 1
        case.validate_response(response, checks=checks)

    check()


def run_schemathesis(world: World) -> dict[str, collections.Counter[int]]:
    """Every operation of the served document, positive then negative cases; what each answered."""
    schema = schemathesis.openapi.from_url(world.base_url + OPENAPI, config=schemathesis.Config())
    ops = [result.ok() for result in schema.get_all_operations()]
    ops.sort(
        key=lambda op: (
            LAST.index(op.definition.raw["operationId"]) + 1
            if op.definition.raw["operationId"] in LAST
            else 0
        )
    )
    statuses: dict[str, collections.Counter[int]] = {}
    with requests.Session() as session:
        for op in ops:
            seen = statuses.setdefault(op.definition.raw["operationId"], collections.Counter())
            run_operation(op, world, GenerationMode.POSITIVE, POSITIVE_EXAMPLES, session, seen)
            raw = op.definition.raw
            if "parameters" in raw or "requestBody" in raw:
                run_operation(op, world, GenerationMode.NEGATIVE, NEGATIVE_EXAMPLES, session, seen)
    return statuses


async def test_the_live_server_answers_as_the_document_says(server, base_url, api, token, clients):
    world = World(base_url, token)
    await make_streams(world, api)
    await moderate_live_stream(world, api)
    await chat_in_live_stream(world, api, clients)
    # Blocking HTTP from a thread, while this loop serves it.
    statuses = await asyncio.to_thread(run_schemathesis, world)
    missed = {op_id: dict(seen) for op_id, seen in statuses.items() if not any(200 <= s < 300 for s in seen)}
    assert missed == {}, "operations whose generated cases never succeeded"


def refuse_large_and_frequent_alerts(base_url: str, stream_id: str, streamer: str) -> list[int]:
    schema = schemathesis.openapi.from_url(base_url + OPENAPI, config=schemathesis.Config())
    op = schema.find_operation_by_label(f"POST {PREFIX}/{{stream_id}}/alerts")
    assert op is not None
    bodies = [{"message": "big", "padding": "x" * 20_000}] + [{"message": "go", "price": 1.5}] * 10
    statuses = []
    with requests.Session() as session:
        for body in bodies:
            case = op.Case(
                path_parameters={"stream_id": stream_id},
                body=body,
                headers={"Authorization": f"Bearer {streamer}"},
            )
            response = case.call(base_url=base_url, session=session, timeout=10)
            case.validate_response(response, checks=CHECKS)
            statuses.append(response.status_code)
            if response.status_code == 429:
                break
    return statuses


async def test_refusals_the_generated_cases_seldom_reach_hold_to_the_document(
    aiohttp_server, settings, http, token
):
    """413 and 429 (with Retry-After), on a worker whose streamers may post two alerts a period."""
    from hub.worker import create_app

    server = await aiohttp_server(create_app(replace(settings, chat_rate_privileged=2)))
    base_url = str(server.make_url("")).rstrip("/")
    streamer = token(unique("streamer"), "streamer")
    sid = (await Api(http, base_url).create_stream(streamer))["stream_id"]
    statuses = await asyncio.to_thread(refuse_large_and_frequent_alerts, base_url, sid, streamer)
    assert statuses[0] == 413 and 200 in statuses and statuses[-1] == 429
