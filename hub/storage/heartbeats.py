"""The web workers' heartbeats in Redis, which ``python -m hub inspect`` reads."""

from __future__ import annotations

from redis.typing import EncodableT, FieldT

from hub.storage.connections import AsyncRedis
from hub.storage.keys import Keys

FORGOTTEN_AFTER_MS = 24 * 3600 * 1000


async def heartbeat(
    client: AsyncRedis, keys: Keys, worker_id: str, fields: dict[FieldT, EncodableT], ttl_ms: int
) -> None:
    """One web worker's heartbeat: its hash, expiring after ``ttl_ms`` unless beaten again, and
    its place in the workers' sorted set (entries of workers gone for a day are dropped)."""
    now = int(fields["updated_ms"])
    async with client.pipeline(transaction=False) as pipe:
        pipe.hset(keys.worker(worker_id), mapping=fields)
        pipe.pexpire(keys.worker(worker_id), ttl_ms)
        pipe.zadd(keys.workers, {worker_id: now})
        pipe.zremrangebyscore(keys.workers, 0, now - FORGOTTEN_AFTER_MS)
        await pipe.execute()
