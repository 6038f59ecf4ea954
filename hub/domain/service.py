"""The hub's actions as the transport calls them: ``Hub`` hands each to its topic's service.

One chat message reads: ``hub.transport.namespace`` → ``ChatService.chat``
(``hub.domain.chat``) → ``State.chat`` with a ``ChatItem`` → ``chat_batch.lua`` → the outbox,
which the flusher (``workers``) drains into MySQL. Tips go through ``TipService``, moderation
through ``ModerationService``, a stream's life through ``StreamService``, reading chat through
``HistoryService``, watching and connections through ``WatchService``.
"""

from __future__ import annotations

from typing import Any

from hub.domain.auth import Identity
from hub.domain.chat import ChatService
from hub.domain.history import HistoryService
from hub.domain.moderation import ModerationService
from hub.domain.payloads import Alert, Chat, CreateStream, Join, Moderation, Tip
from hub.domain.presence import Conn, Presence
from hub.domain.streams import StreamService
from hub.domain.tips import TipService
from hub.domain.watching import WatchService
from hub.settings import Settings
from hub.storage.mysql import History
from hub.storage.state import State


class Hub:
    """Every action of the contract, each handed to the service of its topic."""

    def __init__(self, settings: Settings, state: State, history: History, presence: Presence) -> None:
        self.history = history  # the worker's readiness check pings MySQL through it
        self.streams = StreamService(state, history)
        self.reading = HistoryService(state, history)
        self.watching = WatchService(settings, state, presence, self.reading)
        self.chats = ChatService(settings, state, presence)
        self.tips = TipService(settings, state, presence)
        self.moderation = ModerationService(settings, state, history)

    # -- watching and connections ---------------------------------------------------
    async def join(self, conn: Conn, payload: Join) -> dict[str, Any]:
        return await self.watching.join(conn, payload)

    async def leave(self, conn: Conn) -> dict[str, Any]:
        return await self.watching.leave(conn)

    async def admit_transport(self, address: str, eio_sid: str) -> None:
        await self.watching.admit_transport(address, eio_sid)

    async def release_transport(self, eio_sid: str) -> None:
        await self.watching.release_transport(eio_sid)

    async def admit(self, conn: Conn) -> None:
        await self.watching.admit(conn)

    async def disconnect(self, conn: Conn) -> None:
        await self.watching.disconnect(conn)

    # -- chat, tips, moderation -----------------------------------------------------
    async def chat(self, conn: Conn, payload: Chat) -> dict[str, Any]:
        return await self.chats.chat(conn, payload)

    async def alert(self, identity: Identity | None, payload: Alert) -> dict[str, Any]:
        return await self.chats.alert(identity, payload)

    async def tip(self, conn: Conn, payload: Tip) -> dict[str, Any]:
        return await self.tips.tip(conn, payload)

    async def moderate(self, identity: Identity | None, m: Moderation) -> dict[str, Any]:
        return await self.moderation.moderate(identity, m)

    async def moderation_log(self, identity: Identity, stream_id: str, limit: int) -> list[dict[str, Any]]:
        return await self.moderation.moderation_log(identity, stream_id, limit)

    # -- streams and reading --------------------------------------------------------
    async def create_stream(self, identity: Identity, payload: CreateStream) -> dict[str, Any]:
        return await self.streams.create_stream(identity, payload)

    async def start_stream(self, identity: Identity, stream_id: str) -> dict[str, Any]:
        return await self.streams.start_stream(identity, stream_id)

    async def cancel_stream(self, identity: Identity, stream_id: str) -> dict[str, Any]:
        return await self.streams.cancel_stream(identity, stream_id)

    async def end_stream(self, identity: Identity, stream_id: str) -> dict[str, Any]:
        return await self.streams.end_stream(identity, stream_id)

    async def get_stream(self, stream_id: str) -> dict[str, Any]:
        return await self.streams.get_stream(stream_id)

    async def stats(self, stream_id: str) -> dict[str, Any]:
        return await self.streams.stats(stream_id)

    async def live(self, category: str | None, limit: int, offset: int) -> list[dict[str, Any]]:
        return await self.streams.live(category, limit, offset)

    async def user_streams(self, user_id: str, status: str | None, limit: int) -> list[dict[str, Any]]:
        return await self.streams.user_streams(user_id, status, limit)

    async def chat_history(self, stream_id: str, before: str | None, limit: int) -> list[Any]:
        return await self.reading.chat_history(stream_id, before, limit)
