"""How far the flusher is behind: the outbox's lag over every shard (for /health, /metrics, the
flusher's own gauge and ``python -m hub inspect``)."""

from __future__ import annotations

from typing import Any

from hub.storage.connections import AsyncRedis
from hub.storage.keys import OUTBOX_GROUP, Keys


async def outbox_lag(client: AsyncRedis, keys: Keys) -> dict[str, Any]:
    """Outbox entries not yet written (read or not), pending ones, and the oldest one's age,
    over every shard's outbox."""
    async with client.pipeline(transaction=False) as pipe:
        for shard in keys.all:
            pipe.xlen(shard.outbox)
            pipe.xrange(shard.outbox, count=1)
            pipe.xpending(shard.outbox, OUTBOX_GROUP)
        replies = await pipe.execute(raise_on_error=False)
    now = await client.time()  # not in the pipeline: a cluster's pipelines take keyed commands only
    return outbox_figures(replies, now[0] * 1000 + now[1] // 1000)


def outbox_figures(replies: list[Any], now_ms: int) -> dict[str, Any]:
    """The replies of XLEN, XRANGE … COUNT 1 and XPENDING of each shard's outbox, in turn (an
    XPENDING may be an error: no group yet), as the outbox's lag."""
    entries = pending = 0
    oldest_ms: int | None = None
    for length, first, waiting in zip(replies[::3], replies[1::3], replies[2::3], strict=True):
        entries += int(length)
        if first and not isinstance(first, Exception):
            first_ms = int(first[0][0].split("-")[0])
            oldest_ms = first_ms if oldest_ms is None else min(oldest_ms, first_ms)
        if not isinstance(waiting, Exception):
            pending += int(waiting["pending"])
    age = 0.0 if oldest_ms is None else max(0.0, (now_ms - oldest_ms) / 1000)
    return {"entries": entries, "pending": pending, "oldest_age_seconds": round(age, 3)}
