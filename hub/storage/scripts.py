"""The Lua scripts in ``hub/storage/lua``: what every script shares, prepended when it is loaded,
and the one reader of their refusals.

A script that uses the shared helpers is loaded after, in turn: the settings it reads
(``COALESCE_ABOVE``, ``COALESCE_MS``, ``LIVE_IDLE_MS``, ``PUBLISH``), the wire
format's Lua (``hub.frames.lua_prelude``), the key builders (``Keys.lua_prelude``) and
``common.lua``. So the wire format and the key names are written in Python only.
"""

from __future__ import annotations

from importlib import resources
from typing import Any, NamedTuple

from redis.commands.core import AsyncScript

from hub import frames
from hub.errors import HubError
from hub.settings import Settings
from hub.storage.connections import AsyncRedis
from hub.storage.keys import Keys

FOLDER = resources.files("hub.storage") / "lua"
# The State's scripts (hub.storage.state); recovery loads heal and healed itself.
SCRIPTS = (
    "admit",
    "release",
    "hold",
    "join",
    "leave",
    "renew",
    "refresh",
    "reap",
    "due",
    "idle_backfill",
    "chat_batch",
    "chat_rate",
    "limit",
    "tip",
    "create",
    "start",
    "cancel",
    "end",
    "moderate",
)


def source(name: str) -> str:
    """The text of ``NAME.lua`` alone: for a script that uses none of common.lua."""
    return (FOLDER / f"{name}.lua").read_text()


def prelude(settings: Settings) -> str:
    """What every script using common.lua is loaded after."""
    # On a cluster, room events go out on sharded pub/sub: to the subscribers of the node that
    # holds the stream's slot, not to every node.
    publish = "SPUBLISH" if settings.redis_cluster is not None else "PUBLISH"
    return (
        f"local COALESCE_ABOVE = {settings.viewer_events_coalesce_above}\n"
        f"local COALESCE_MS = {int(settings.viewer_events_interval * 1000)}\n"
        f"local LIVE_IDLE_MS = {settings.live_idle_end * 1000}\n"
        f"local PUBLISH = '{publish}'\n" + frames.lua_prelude() + Keys.lua_prelude() + source("common")
    )


def load_script(client: AsyncRedis, settings: Settings, name: str) -> AsyncScript:
    """The script ``NAME.lua`` with the prelude before it."""
    return client.register_script(prelude(settings) + "\n" + source(name))


def load_scripts(client: AsyncRedis, settings: Settings) -> dict[str, AsyncScript]:
    """Every script of ``SCRIPTS``, the prelude built once."""
    shared = prelude(settings) + "\n"
    return {name: client.register_script(shared + source(name)) for name in SCRIPTS}


class ScriptError(NamedTuple):
    """A script's refusal, as common.lua's ``fail`` writes it: ``{'err', code, retry_after_ms
    or false, message or nil}``."""

    code: str
    retry_after_ms: int | None
    message: str | None

    @classmethod
    def of(cls, reply: list[Any]) -> ScriptError | None:
        """The refusal a reply is, or None for any other reply."""
        if not reply or reply[0] != "err":
            return None
        retry_ms = reply[2] if len(reply) > 2 else None
        message = reply[3] if len(reply) > 3 else None
        return cls(str(reply[1]), None if retry_ms is None else int(retry_ms), message)

    def hub_error(self) -> HubError:
        retry = None if self.retry_after_ms is None else self.retry_after_ms / 1000
        return HubError(self.code, None if self.message is None else str(self.message), retry_after=retry)


def checked(reply: list[Any]) -> list[Any]:
    """A script's reply, unless it is a refusal: then the HubError it stands for."""
    refusal = ScriptError.of(reply)
    if refusal is not None:
        raise refusal.hub_error()
    return reply
