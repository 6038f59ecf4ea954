"""Reading chat: a page of a stream's messages, from Redis (recent and unflushed ones) and
MySQL, exactly and without gaps."""

from __future__ import annotations

from typing import Any

import orjson

from hub.codec import loads
from hub.domain import records
from hub.errors import HubError
from hub.storage.mysql import History
from hub.storage.state import State


class HistoryService:
    def __init__(self, state: State, history: History) -> None:
        self.state = state
        self.history = history

    async def chat_history(self, stream_id: str, before: str | None, limit: int) -> list[Any]:
        """The newest ``limit`` messages older than ``before``, oldest first."""
        return (await self.messages(stream_id, before, None, limit))[::-1]

    async def messages(
        self,
        stream_id: str,
        before: str | None,
        after: str | None,
        limit: int,
        held: list[str] | None = None,
        floor: str | None = None,
    ) -> list[Any]:
        """The newest ``limit`` kept messages with ids between ``after`` and ``before``, newest
        first, exactly: those of the recent set (``held``: already read, with its ``floor``),
        whole when it has ``limit`` of them or was never trimmed; else merged with the
        unflushed ones and MySQL's. Redis is read before MySQL, and the flusher takes a message
        out of the unflushed set only once MySQL has it, so none falls between the two."""
        page = None
        if held is None:
            page = await self.state.chat_page(stream_id, before, after, limit)
            held, floor = page.recent, page.floor
            if not page.live_state:
                held = []
        if page is None or page.live_state:
            if floor is None or len(held) >= limit:  # the recent set holds all of them
                # The stored JSON goes out as it is (exact amounts and prices), never decoded.
                return [orjson.Fragment(item) for item in held[:limit]]
        if page is None:
            page = await self.state.chat_page(stream_id, before, after, limit, recent=False)
        hidden, cleared = page.deleted, page.cleared
        found: dict[str, Any] = {}
        for item in (*held, *page.unflushed):
            message_id = _message_id(item)
            if message_id not in hidden and (cleared is None or message_id > cleared):
                found[message_id] = orjson.Fragment(item)
        if not page.live_state and not found and await self.history.stream(stream_id) is None:
            raise HubError("not_found")
        # Deletions and a clear not flushed yet are hidden here; MySQL has the rest marked.
        since = max(after or "", cleared or "") or None
        for row in await self.history.messages_before(stream_id, before, limit + len(hidden), since):
            if row["message_id"] not in hidden:
                found.setdefault(row["message_id"], row)
        newest = sorted(found, reverse=True)[:limit]
        return [
            item if isinstance(item := found[m], orjson.Fragment) else records.message_from_row(item)
            for m in newest
        ]


_ID_AT = len('{"message_id":"')


def _message_id(item: str) -> str:
    """A buffered message's id, read off its JSON text (the hub writes ``message_id`` first)."""
    if item.startswith('{"message_id":"'):
        return item[_ID_AT : _ID_AT + 36]
    return str(loads(item)["message_id"])
