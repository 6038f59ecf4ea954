"""Calls of one event-loop tick gathered into one (the chat messages of a tick: one script call)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any


class Batcher:
    """Calls made during one event-loop tick, sent together in one call at the end of it.

    ``run`` takes the items and returns one reply per item; a failure of the call is every
    caller's failure. No call waits for a timer: the batch goes as soon as the loop is done
    with what was ready, so a lone message costs what it did alone."""

    def __init__(self, run: Callable[[list[Any]], Awaitable[list[Any]]], most: int) -> None:
        self._run = run
        self._most = most
        self._pending: list[tuple[Any, asyncio.Future[Any]]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.calls = 0

    async def submit(self, item: Any) -> Any:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._pending.append((item, future))
        if len(self._pending) == 1:
            loop.call_soon(self._flush)
        elif len(self._pending) >= self._most:
            self._flush()
        return await future

    def _flush(self) -> None:
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        task = asyncio.ensure_future(self._send(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[tuple[Any, asyncio.Future[Any]]]) -> None:
        self.calls += 1
        try:
            replies = await self._run([item for item, _ in batch])
        except BaseException as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        for (_, future), reply in zip(batch, replies, strict=True):
            if not future.done():
                future.set_result(reply)
