"""Whether Redis keeps what the hub accepted across a crash (said at start by web workers and
the flusher)."""

from __future__ import annotations

from redis.exceptions import RedisError

from hub.storage.connections import AsyncRedis


async def persistence_warning(client: AsyncRedis) -> str | None:
    """A warning when Redis would lose accepted, unflushed tips and messages in a crash."""
    try:
        config = await client.config_get("appendonly")
    except RedisError:
        return "cannot read Redis's persistence settings (CONFIG GET refused); make sure appendonly is on"
    if config.get("appendonly") != "yes":
        return (
            "Redis runs without append-only persistence: accepted tips and messages not yet "
            "flushed to MySQL are lost if Redis crashes (set appendonly yes, appendfsync everysec)"
        )
    return None
