"""The REST API as an OpenAPI 3.1 document, served at ``GET /api/v1/openapi.json``.

Built here rather than written by hand so that every limit (lengths, ranges, enums) comes from
``hub.domain.payloads``, the module that enforces it. ``tests/test_openapi.py`` checks that every route
the app registers is described and holds the live server's responses to this document.
"""

from __future__ import annotations

import functools
from typing import Any

import orjson

from hub.domain import payloads
from hub.errors import HTTP_STATUS

Schema = dict[str, Any]

PATH = "/api/v1/openapi.json"
ASYNCAPI_PATH = "/api/v1/asyncapi.json"  # the Socket.IO side (``hub.transport.asyncapi``)
JSON = "application/json"

# Control characters and the other characters ``str.strip`` removes: a user id must start and
# end with a character outside both.
_CONTROL = r"\x00-\x1f\x7f-\x9f"
_BLANK = r"\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
VISIBLE = f"[^{_BLANK}]"
# What ``payloads.clean_text`` removes from text besides those, on its own (format characters,
# bidi controls among them, separators, fillers, selectors, tags): a required text field must
# hold at least one character outside all of them. Characters beyond the BMP are written as
# themselves (a pattern has no escape for them); lone surrogates are no JSON the hub reads.
_INVISIBLE = (
    r"\u00ad\u034f\u0600-\u0605\u061c\u06dd\u070f\u0890-\u0891\u08e2\u115f-\u1160\u17b4-\u17b5"
    r"\u180b-\u180f\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\u3164"
    r"\ufe00-\ufe0f\ufeff\uffa0\ufff9-\ufffb"
    + "".join(
        chr(low) if low == high else f"{chr(low)}-{chr(high)}"
        for low, high in (
            (0x110BD, 0x110BD),
            (0x110CD, 0x110CD),
            (0x13430, 0x13438),
            (0x1BCA0, 0x1BCA3),
            (0x1D173, 0x1D17A),
            (0xE0001, 0xE0001),
            (0xE0020, 0xE007F),
            (0xE0100, 0xE01EF),
        )
    )
)
SHOWN = f"[^{_BLANK}{_INVISIBLE}]"
TIME_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$"
UUID_PATTERN = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"


def ref(name: str, kind: str = "schemas") -> Schema:
    return {"$ref": f"#/components/{kind}/{name}"}


def closed(required: list[str], properties: dict[str, Schema], **extra: Any) -> Schema:
    """An object with exactly these properties, the ``required`` ones always present."""
    return {
        "type": "object",
        "required": required,
        "properties": properties,
        "additionalProperties": False,
        **extra,
    }


def text(limit: int, *, required: bool, description: str = "") -> Schema:
    """A free text field: trimmed and stripped of control, bidi and invisible characters, then
    at most ``limit``."""
    schema: Schema = {"type": "string", "maxLength": limit}
    removed = "Control, bidi and invisible characters are removed (emoji sequences kept whole)"
    if required:
        schema["pattern"] = SHOWN
        schema["description"] = (
            f"{description} {removed} and the text trimmed; what remains must hold 1 to {limit} characters."
        ).strip()
    else:
        schema["type"] = ["string", "null"]
        schema["description"] = (
            f"{description} {removed} and the text trimmed (at most {limit} characters)."
        ).strip()
    return schema


def success(properties: dict[str, Schema]) -> Schema:
    return closed(["success", *properties], {"success": {"const": True}, **properties})


def json_response(description: str, schema: Schema, headers: Schema | None = None) -> Schema:
    response: Schema = {"description": description, "content": {JSON: {"schema": schema}}}
    if headers:
        response["headers"] = headers
    return response


# -- objects the API returns ----------------------------------------------------------


def _stream_properties() -> dict[str, Schema]:
    return {
        "stream_id": ref("Id"),
        "streamer_id": {"type": "string", "description": "The streamer's user id (the token's `sub`)."},
        "streamer_name": {"type": ["string", "null"]},
        "title": {"type": "string"},
        "description": {"type": "string"},
        "thumbnail_url": {"type": ["string", "null"]},
        "status": ref("Status"),
        "viewer_count": {
            "type": "integer",
            "minimum": 0,
            "description": "Distinct viewers now (0 unless LIVE).",
        },
        "peak_viewers": {"type": "integer", "minimum": 0},
        "started_at": ref("TimeOrNull"),
        "ended_at": ref("TimeOrNull"),
        "duration_seconds": {
            "type": ["integer", "null"],
            "minimum": 0,
            "description": "Set once the stream has ended.",
        },
        "category": {"type": "string"},
        "is_recording": {"type": "boolean"},
        "recording_url": {"type": ["string", "null"]},
        "scheduled_at": ref("TimeOrNull"),
        "created_at": ref("Time"),
        "updated_at": ref("Time"),
    }


def _stats_properties() -> dict[str, Schema]:
    return {
        "stream_id": ref("Id"),
        "status": ref("Status"),
        "viewer_count": {"type": "integer", "minimum": 0},
        "peak_viewers": {"type": "integer", "minimum": 0},
        "unique_viewers": {
            "type": "integer",
            "minimum": 0,
            "description": "Every viewer seen since the stream went live.",
        },
        "message_count": {
            "type": "integer",
            "minimum": 0,
            "description": "Every chat message, TIP and ALERT included.",
        },
        "tip_count": {"type": "integer", "minimum": 0},
        "tips_total": ref("Money"),
        "platform_fees_total": ref("Money"),
        "duration_seconds": {
            "type": ["integer", "null"],
            "minimum": 0,
            "description": "So far while LIVE; null while SCHEDULED.",
        },
    }


def _final_stream() -> Schema:
    stream = _stream_properties()
    extra = {k: v for k, v in _stats_properties().items() if k not in stream}
    return closed(
        [*stream, *extra],
        {**stream, **extra},
        description="The ended stream with its final figures (the stream object plus the "
        "stats fields it lacks).",
    )


def _message() -> Schema:
    return closed(
        [
            "message_id",
            "stream_id",
            "user_id",
            "username",
            "message",
            "message_type",
            "tip_amount",
            "created_at",
        ],
        {
            "message_id": ref("Id"),
            "stream_id": ref("Id"),
            "user_id": {"type": "string"},
            "username": {"type": ["string", "null"]},
            "message": {"type": "string"},
            "message_type": {"enum": ["TEXT", "EMOJI", "TIP", "ALERT"]},
            "tip_amount": {
                "anyOf": [ref("Money"), {"type": "null"}],
                "description": "The tip's amount on a TIP message, else null.",
            },
            "created_at": ref("Time"),
            "alert": ref("Alert"),
        },
        description="A chat message. `alert` is present on ALERT messages only.",
        allOf=[
            {
                "if": {"properties": {"message_type": {"const": "ALERT"}}},
                "then": {"required": ["alert"]},
                "else": {"not": {"required": ["alert"]}},
            },
            {
                "if": {"properties": {"message_type": {"const": "TIP"}}},
                "then": {"properties": {"tip_amount": {"type": "number"}}},
                "else": {"properties": {"tip_amount": {"type": "null"}}},
            },
        ],
    )


def _alert() -> Schema:
    return closed(
        ["symbol", "side", "price"],
        {
            "symbol": {"type": ["string", "null"], "pattern": f"^[A-Z0-9._:/-]{{1,{payloads.SYMBOL_MAX}}}$"},
            "side": {"enum": ["BUY", "SELL", None]},
            "price": {
                "type": ["number", "null"],
                "exclusiveMinimum": 0,
                "exclusiveMaximum": float(payloads.PRICE_MAX),
                "description": "The exact decimal the streamer sent, as a JSON number (which "
                "`/chat` may write in exponent form: `1e-7`).",
            },
        },
    )


def _moderation_action() -> Schema:
    needs = [
        {
            "if": {"properties": {"action": {"const": action.name}}},
            "then": {"required": list(action.recorded)},
        }
        for action in payloads.MODERATION.values()
        if action.recorded
    ]
    return closed(
        ["action_id", "action", "stream_id", "by", "created_at"],
        {
            "action_id": ref("Id"),
            "action": {
                "enum": list(payloads.MODERATION_ACTIONS),
                "description": "The Socket.IO event name of the action.",
            },
            "stream_id": ref("Id"),
            "by": {"type": "string", "description": "The acting user's id."},
            "created_at": ref("Time"),
            "user_id": {"type": "string", "description": "The user acted on."},
            "message_id": ref("Id"),
            "seconds": {
                "type": "integer",
                "minimum": 0,
                "description": "A timeout's length, or the slow-mode interval (0 = off).",
            },
            "reason": {"type": "string"},
            "until": {**ref("Time"), "description": "When a timeout ends."},
        },
        description="One moderation action, as recorded.",
        allOf=needs,
    )


def _error() -> Schema:
    return closed(
        ["success", "error"],
        {
            "success": {"const": False},
            "error": closed(
                ["code", "message"],
                {
                    "code": {"enum": [*HTTP_STATUS, "internal"]},
                    "message": {"type": "string", "minLength": 1, "description": "For humans; may change."},
                    "retry_after": {
                        "type": "integer",
                        "minimum": 1,
                        "description": "Seconds to wait, on `rate_limited` (also in `Retry-After`).",
                    },
                },
            ),
        },
        description="Every refusal under /api/v1/streaming.",
    )


def _schemas() -> dict[str, Schema]:
    return {
        "Id": {
            "type": "string",
            "format": "uuid",
            "pattern": UUID_PATTERN,
            "description": "A lower-case, time-ordered UUID.",
        },
        "Time": {
            "type": "string",
            "format": "date-time",
            "pattern": TIME_PATTERN,
            "description": "ISO 8601 in UTC, milliseconds and a `Z`.",
        },
        "TimeOrNull": {"type": ["string", "null"], "format": "date-time", "pattern": TIME_PATTERN},
        "Money": {
            "type": "number",
            "minimum": 0,
            "multipleOf": 0.01,
            "description": "An exact amount in the tip currency: a JSON number with at most two "
            "decimals (`10.50`, `0.00`; chat messages may read `1.3`). Read it as a "
            "decimal, not a binary float.",
        },
        "Status": {"enum": list(payloads.STATUSES)},
        "Stream": closed(list(_stream_properties()), _stream_properties()),
        "FinalStream": _final_stream(),
        "Stats": closed(list(_stats_properties()), _stats_properties()),
        "Message": _message(),
        "Alert": _alert(),
        "ModerationAction": _moderation_action(),
        "Error": _error(),
        "TargetUser": {
            "type": "string",
            "minLength": 1,
            "maxLength": payloads.USER_ID_MAX,
            "pattern": f"^{VISIBLE}(?:[^{_CONTROL}]*{VISIBLE})?$",
            "description": "A user id: no control characters, no surrounding spaces.",
        },
        **_request_schemas(),
    }


# -- request bodies -------------------------------------------------------------------


def _request_schemas() -> dict[str, Schema]:
    reason = text(payloads.REASON_MAX, required=False, description="Why, recorded with the action.")
    return {
        "CreateStream": {
            "type": "object",
            "required": ["title"],
            "description": "Fields naming a user (`streamer_id`, `user_id`, …) are ignored: the "
            "streamer is the token's subject.",
            "properties": {
                "title": text(payloads.TITLE_MAX, required=True),
                "description": text(payloads.DESCRIPTION_MAX, required=False),
                "category": {
                    "type": ["string", "null"],
                    "maxLength": payloads.CATEGORY_MAX,
                    "pattern": "^[A-Za-z0-9 ._-]*$",
                    "description": "Letters, digits, spaces and `- _ .` (non-ASCII letters "
                    "and digits are accepted too); trimmed.",
                },
                "thumbnail_url": {
                    "type": ["string", "null"],
                    "maxLength": payloads.URL_MAX,
                    "pattern": r"^[Hh][Tt][Tt][Pp][Ss]?://[A-Za-z0-9.:-]+(?:[/?#][!-~]*)?$",
                    "description": "An http(s) URL with a host.",
                },
                "scheduled_at": {
                    "type": ["string", "null"],
                    "format": "date-time",
                    "description": "ISO 8601 (a time without offset is UTC), at most a year "
                    "ahead. In the future: the stream is SCHEDULED; else it "
                    "is LIVE at once.",
                },
            },
        },
        "Timeout": {
            "type": "object",
            "required": ["user_id", "seconds"],
            "properties": {
                "user_id": ref("TargetUser"),
                "seconds": {"type": "integer", "minimum": 1, "maximum": payloads.TIMEOUT_MAX},
                "reason": reason,
            },
        },
        "Ban": {
            "type": "object",
            "required": ["user_id"],
            "properties": {"user_id": ref("TargetUser"), "reason": reason},
        },
        "SlowMode": {
            "type": "object",
            "required": ["seconds"],
            "properties": {
                "seconds": {
                    "type": "integer",
                    "minimum": 0,
                    "maximum": payloads.SLOW_MODE_MAX,
                    "description": "Seconds a viewer waits between two messages; 0 turns it off.",
                }
            },
        },
        "Moderator": {
            "type": "object",
            "required": ["user_id"],
            "properties": {"user_id": ref("TargetUser")},
        },
        "AlertRequest": {
            "type": "object",
            "required": ["message"],
            "properties": {
                "message": text(payloads.MESSAGE_MAX, required=True),
                "symbol": {
                    "type": ["string", "null"],
                    "pattern": f"^[A-Za-z0-9._:/-]{{1,{payloads.SYMBOL_MAX}}}$",
                    "description": "Upper-cased; surrounding spaces are trimmed.",
                },
                "side": {
                    "type": ["string", "null"],
                    "pattern": "^(?:[Bb][Uu][Yy]|[Ss][Ee][Ll][Ll])$",
                    "description": "BUY or SELL, in any case.",
                },
                "price": {
                    "anyOf": [
                        {"type": "null"},
                        {"type": "string", "pattern": price_pattern()},
                        *price_numbers(),
                    ],
                    "description": f"A positive JSON number or decimal string below 10^12, with at most "
                    f"{payloads.PRICE_DECIMALS} decimals and {payloads.PRICE_DIGITS} "
                    f"significant digits; kept exactly.",
                },
            },
        },
    }


def price_numbers() -> list[Schema]:
    """A positive price as a JSON number, one range per length of its integer part, each with the
    decimals the significant digits leave it: JSON Schema has no "significant digits", and one
    ``multipleOf`` of 10^-8 over the whole range let 16-digit prices such as 5837306337.460598
    pass."""
    digits, decimals = payloads.PRICE_DIGITS, payloads.PRICE_DECIMALS
    integers = len(str(int(payloads.PRICE_MAX))) - 1
    ranges: list[Schema] = [
        {
            "type": "number",
            "exclusiveMinimum": 0,
            "exclusiveMaximum": 1,
            "multipleOf": float(f"1e-{decimals}"),
        }
    ]
    for n in range(1, integers + 1):
        ranges.append(
            {
                "type": "number",
                "minimum": 10 ** (n - 1),
                "exclusiveMaximum": 10**n,
                "multipleOf": float(f"1e-{min(decimals, digits - n)}"),
            }
        )
    return ranges


def price_pattern() -> str:
    """Decimal text of a positive price: below 10^12, at most ``PRICE_DECIMALS`` decimals and
    ``PRICE_DIGITS`` significant digits (one alternative per length of the integer part)."""
    digits, decimals = payloads.PRICE_DIGITS, payloads.PRICE_DECIMALS
    integers = len(str(int(payloads.PRICE_MAX))) - 1
    whole = [
        f"[1-9][0-9]{{{n - 1}}}(?:\\.[0-9]{{1,{min(decimals, digits - n)}}})?" for n in range(1, integers + 1)
    ]
    fraction = f"0\\.[0-9]{{0,{decimals - 1}}}[1-9]"
    return f"^(?:{'|'.join([*whole, fraction])})$"


# -- responses --------------------------------------------------------------------------


def error_response(description: str, *codes: str, headers: Schema | None = None) -> Schema:
    """A refusal whose ``error.code`` is one of ``codes``."""
    error: Schema = {"properties": {"code": {"enum": list(codes)}}}
    if "rate_limited" in codes:
        error["required"] = ["code", "message", "retry_after"]
    schema = {"allOf": [ref("Error"), {"properties": {"error": error}}]}
    return json_response(description, schema, headers)


def _responses() -> dict[str, Schema]:
    retry = {
        "Retry-After": {
            "description": "Seconds to wait.",
            "required": True,
            "schema": {"type": "integer", "minimum": 1},
        }
    }
    return {
        "Invalid": error_response("Malformed JSON, wrong types or out-of-range values.", "invalid"),
        "Unauthorized": error_response("The bearer token is missing, bad or expired.", "unauthorized"),
        "Forbidden": error_response("Signed in but not allowed.", "forbidden"),
        "NotFound": error_response("No such stream (any id that is no UUID names none).", "not_found"),
        "Conflict": error_response("The stream is not in a state that allows this.", "conflict"),
        "NotLive": error_response("The stream has ended (or, for alerts, is not LIVE).", "stream_not_live"),
        "NotLiveOrConflict": error_response(
            "The stream has ended, or the target's state forbids it (already banned, no sanction "
            "to lift, banned user named moderator).",
            "stream_not_live",
            "conflict",
        ),
        "PayloadTooLarge": error_response(
            "The body is larger than HUB_MAX_PAYLOAD bytes.", "payload_too_large"
        ),
        "RateLimited": error_response(
            "Over a per-user rate (chat, moderation actions, stream creation): "
            "retry after the oldest accepted event leaves the window.",
            "rate_limited",
            headers=retry,
        ),
        "Unavailable": error_response("Redis or MySQL is unreachable; try again.", "unavailable"),
    }


STATUS_OF = {
    "Invalid": "400",
    "Unauthorized": "401",
    "Forbidden": "403",
    "NotFound": "404",
    "Conflict": "409",
    "NotLive": "409",
    "NotLiveOrConflict": "409",
    "PayloadTooLarge": "413",
    "RateLimited": "429",
    "Unavailable": "503",
}


def responses(ok: Schema, *errors: str, status: str = "200") -> Schema:
    """An operation's responses: ``ok`` and the named refusals, and 503 (any of them may need Redis)."""
    out: Schema = {status: ok}
    for name in (*errors, "Unavailable"):
        out[STATUS_OF[name]] = ref(name, "responses")
    return out


def ok(description: str, properties: dict[str, Schema]) -> Schema:
    return json_response(description, success(properties))


STREAM = {"stream": ref("Stream")}
COUNT = {"type": "integer", "minimum": 0}
STREAM_LIST: dict[str, Schema] = {"count": COUNT, "streams": {"type": "array", "items": ref("Stream")}}
MODERATED = {"action": ref("ModerationAction")}
MODERATORS = {
    **MODERATED,
    "moderators": {
        "type": "array",
        "items": {"type": "string"},
        "description": "The stream's moderators after the change.",
    },
}


def _limit(maximum: int, default: int) -> Schema:
    return {
        "name": "limit",
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "minimum": 1, "maximum": maximum, "default": default},
    }


# -- operations -------------------------------------------------------------------------


def operation(
    op_id: str,
    summary: str,
    tag: str,
    result: Schema,
    *,
    auth: bool = False,
    params: list[Schema] | None = None,
    body: Schema | None = None,
    body_required: bool = True,
) -> Schema:
    op: Schema = {"operationId": op_id, "summary": summary, "tags": [tag], "responses": result}
    op["security"] = [{"bearerAuth": []}] if auth else []
    if params:
        op["parameters"] = params
    if body is not None:
        op["requestBody"] = {"required": body_required, "content": {JSON: {"schema": body}}}
    return op


def _streams(p: str) -> dict[str, Schema]:
    stream_id = [ref("StreamId", "parameters")]
    return {
        f"{p}/live": {
            "get": operation(
                "listLiveStreams",
                "Live streams, most viewers first",
                "streams",
                responses(ok("Live streams.", STREAM_LIST), "Invalid"),
                params=[
                    {"name": "category", "in": "query", "required": False, "schema": {"type": "string"}},
                    _limit(100, 50),
                    {
                        "name": "offset",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "integer", "minimum": 0, "maximum": 1_000_000, "default": 0},
                    },
                ],
            )
        },
        f"{p}/create": {
            "post": operation(
                "createStream",
                "Create a stream (role `streamer`); LIVE at once unless scheduled",
                "streams",
                responses(
                    ok("The new stream.", STREAM),
                    "Invalid",
                    "Unauthorized",
                    "Forbidden",
                    "Conflict",
                    "PayloadTooLarge",
                    "RateLimited",
                    status="201",
                ),
                auth=True,
                body=ref("CreateStream"),
            )
        },
        f"{p}/user/{{user_id}}/streams": {
            "get": operation(
                "listUserStreams",
                "A streamer's streams, newest first",
                "streams",
                responses(ok("The streams.", STREAM_LIST), "Invalid"),
                params=[
                    {
                        "name": "user_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "minLength": 1},
                    },
                    {
                        "name": "status",
                        "in": "query",
                        "required": False,
                        "schema": {"enum": list(payloads.STATUSES)},
                        "description": "Matched in any case.",
                    },
                    _limit(100, 50),
                ],
            )
        },
        f"{p}/{{stream_id}}/start": {
            "post": operation(
                "startStream",
                "SCHEDULED → LIVE (its streamer or an admin)",
                "streams",
                responses(
                    ok("The stream, now LIVE.", STREAM), "Unauthorized", "Forbidden", "NotFound", "Conflict"
                ),
                auth=True,
                params=stream_id,
            )
        },
        f"{p}/{{stream_id}}/cancel": {
            "post": operation(
                "cancelStream",
                "SCHEDULED → ENDED without going live (its streamer or an admin)",
                "streams",
                responses(
                    ok("The stream, now ENDED.", STREAM), "Unauthorized", "Forbidden", "NotFound", "Conflict"
                ),
                auth=True,
                params=stream_id,
            )
        },
        f"{p}/{{stream_id}}/end": {
            "post": operation(
                "endStream",
                "End a LIVE stream (its streamer or an admin); emits `stream_ended`",
                "streams",
                responses(
                    ok("The ended stream with its final figures.", {"stream": ref("FinalStream")}),
                    "Unauthorized",
                    "Forbidden",
                    "NotFound",
                    "Conflict",
                ),
                auth=True,
                params=stream_id,
            )
        },
        f"{p}/{{stream_id}}": {
            "get": operation(
                "getStream",
                "A stream with its live viewer count",
                "streams",
                responses(ok("The stream.", STREAM), "NotFound"),
                params=stream_id,
            )
        },
        f"{p}/{{stream_id}}/stats": {
            "get": operation(
                "getStreamStats",
                "A stream's figures",
                "streams",
                responses(ok("The figures.", {"stats": ref("Stats")}), "NotFound"),
                params=stream_id,
            )
        },
        f"{p}/{{stream_id}}/chat": {
            "get": operation(
                "getChat",
                "The newest messages older than `before`, oldest first",
                "chat",
                responses(
                    ok(
                        "The page of messages (deleted and cleared ones left out).",
                        {"count": COUNT, "messages": {"type": "array", "items": ref("Message")}},
                    ),
                    "Invalid",
                    "NotFound",
                ),
                params=[
                    *stream_id,
                    _limit(200, 50),
                    {
                        "name": "before",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string", "format": "uuid"},
                        "description": "A message id: only older messages.",
                    },
                ],
            )
        },
    }


def _camel(name: str) -> str:
    """An action's operation id: its event name in camelCase (``ban_user`` -> ``banUser``)."""
    first, *rest = name.split("_")
    return first + "".join(word.capitalize() for word in rest)


def _moderation(p: str) -> dict[str, Schema]:
    """The moderation actions' operations, one per row of ``payloads.MODERATION`` at its REST
    route, then the alerts and the moderation log."""
    s = f"{p}/{{stream_id}}"
    stream_id = ref("StreamId", "parameters")
    common = ("Unauthorized", "Forbidden", "NotFound")
    path_params = {
        "user_id": ref("TargetUserId", "parameters"),
        "message_id": {
            "name": "message_id",
            "in": "path",
            "required": True,
            "schema": {"type": "string", "format": "uuid"},
        },
    }

    def act(action: payloads.ModerationAction) -> Schema:
        route = action.route
        errors: tuple[str, ...] = ("Invalid", *common, "NotLiveOrConflict" if action.conflicts else "NotLive")
        errors += ("RateLimited",)
        body: Schema | None = None
        if route.body is not None:
            body = ref(route.body)
        elif route.method == "POST":
            body = {"type": "object", "description": "Ignored."}
        if body is not None:
            errors += ("PayloadTooLarge",)
        return operation(
            _camel(action.name),
            route.summary,
            "moderation",
            responses(
                ok("The recorded action.", MODERATED if action.announced is not None else MODERATORS), *errors
            ),
            auth=True,
            params=[stream_id, *(path_params[name] for name in route.path_fields)],
            body=body,
            body_required=route.body is not None,
        )

    paths: dict[str, Schema] = {}
    for action in payloads.MODERATION.values():
        paths.setdefault(f"{s}{action.route.path}", {})[action.route.method.lower()] = act(action)
    return {
        **paths,
        f"{s}/alerts": {
            "post": operation(
                "sendAlert",
                "Post a trade alert: a chat message of type ALERT (the streamer only)",
                "moderation",
                responses(
                    ok("The ALERT message, also broadcast as `chat_message`.", {"message": ref("Message")}),
                    "Invalid",
                    *common,
                    "NotLive",
                    "PayloadTooLarge",
                    "RateLimited",
                ),
                auth=True,
                params=[stream_id],
                body=ref("AlertRequest"),
            )
        },
        f"{s}/moderation": {
            "get": operation(
                "getModerationLog",
                "The stream's moderation actions, newest first (streamer, moderators, admins)",
                "moderation",
                responses(
                    ok(
                        "The actions.",
                        {"count": COUNT, "actions": {"type": "array", "items": ref("ModerationAction")}},
                    ),
                    "Invalid",
                    *common,
                ),
                auth=True,
                params=[stream_id, _limit(200, 50)],
            )
        },
    }


def _operations_outside() -> dict[str, Schema]:
    up = {"enum": ["up", "down"]}
    readiness = closed(
        ["success", "checks"],
        {
            "success": {"type": "boolean"},
            "checks": closed(
                ["redis", "mysql", "pubsub"],
                {"redis": up, "mysql": up, "pubsub": up, "worker": {"const": "draining"}},
            ),
            "outbox": closed(
                ["entries", "pending", "oldest_age_seconds"],
                {
                    "entries": {"type": "integer", "minimum": 0},
                    "pending": {"type": "integer", "minimum": 0},
                    "oldest_age_seconds": {"type": "number", "minimum": 0},
                },
            ),
        },
    )
    return {
        "/healthz": {
            "get": operation(
                "healthz",
                "The process is up",
                "health",
                {"200": json_response("Up.", success({"status": {"const": "up"}}))},
            )
        },
        "/readyz": {
            "get": operation(
                "readyz",
                "Redis, MySQL and the pub/sub listener are up",
                "health",
                {
                    "200": json_response("Ready.", readiness),
                    "503": json_response("Not ready (or draining): which check is down.", readiness),
                },
            )
        },
        "/metrics": {
            "get": operation(
                "metrics",
                "Prometheus metrics",
                "health",
                {
                    "200": {
                        "description": "The Prometheus text format.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            )
        },
        PATH: {
            "get": operation(
                "openapi",
                "This document",
                "health",
                {
                    "200": json_response(
                        "The OpenAPI 3.1 document.",
                        {"type": "object", "required": ["openapi", "info", "paths"]},
                    )
                },
            )
        },
        ASYNCAPI_PATH: {
            "get": operation(
                "asyncapi",
                "The Socket.IO API (namespace /streaming) as AsyncAPI 3.0",
                "health",
                {
                    "200": json_response(
                        "The AsyncAPI 3.0 document.",
                        {"type": "object", "required": ["asyncapi", "info", "channels", "operations"]},
                    )
                },
            )
        },
    }


def document(prefix: str) -> Schema:
    """The whole OpenAPI document for the REST routes under ``prefix``."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Streaming hub REST API",
            "version": "1",
            "description": (
                "REST side of the streaming hub (the Socket.IO side is namespace `/streaming`). "
                "Success bodies carry `success: true`; every refusal under the prefix is "
                "`{success: false, error: {code, message}}` with the status of its code. A method a "
                "path does not list answers 405 with code `invalid`. Identity comes from the bearer "
                "JWT only: fields naming a user in a body are ignored."
            ),
        },
        "tags": [{"name": "streams"}, {"name": "chat"}, {"name": "moderation"}, {"name": "health"}],
        "paths": {**_streams(prefix), **_moderation(prefix), **_operations_outside()},
        "components": {
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "Claims: `sub` (user id), `name`, `roles` (`streamer`, `admin`), `exp`.",
                }
            },
            "parameters": {
                "StreamId": {
                    "name": "stream_id",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "format": "uuid"},
                    "description": "A stream id, in any case; anything else is answered 404.",
                },
                "TargetUserId": {
                    "name": "user_id",
                    "in": "path",
                    "required": True,
                    "schema": ref("TargetUser"),
                },
            },
            "schemas": _schemas(),
            "responses": _responses(),
        },
    }


@functools.cache
def encoded(prefix: str) -> bytes:
    return orjson.dumps(document(prefix))
