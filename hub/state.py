"""Live state in Redis: each state change is one Lua script, so it is one round trip and
atomic with its outbox record and its broadcast."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from hub import metrics
from hub.errors import HubError
from hub.keys import NAMESPACE, OUTBOX_GROUP, Keys
from hub.settings import Settings

SCRIPTS = ("admit", "touch", "join", "leave", "refresh", "reap", "chat_batch", "tip", "create", "start",
           "end", "moderate")
CHAT_BATCH_MAX = 256
MODLOG_SIZE = 200


def _load_scripts(client: aioredis.Redis, settings: Settings) -> dict[str, AsyncScript]:
    folder = resources.files("hub") / "lua"
    common = (f"local COALESCE_ABOVE = {settings.viewer_events_coalesce_above}\n"
              f"local COALESCE_MS = {int(settings.viewer_events_interval * 1000)}\n"
              + (folder / "common.lua").read_text())
    return {
        name: client.register_script(common + "\n" + (folder / f"{name}.lua").read_text())
        for name in SCRIPTS
    }


def _result(reply: list[Any]) -> list[Any]:
    """A script's reply, or the HubError it stands for."""
    status = reply[0]
    if status == "err":
        retry_ms = int(reply[2]) if len(reply) > 2 and reply[2] is not None else None
        message = str(reply[3]) if len(reply) > 3 else None
        raise HubError(str(reply[1]), message,
                       retry_after=None if retry_ms is None else retry_ms / 1000)
    return reply


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


class Stale(Exception):
    """A message id older than the stream's last chat clear; retry with an id after ``cleared``."""

    def __init__(self, cleared: str) -> None:
        super().__init__(cleared)
        self.cleared = cleared


async def outbox_lag(client: aioredis.Redis, keys: Keys) -> dict[str, Any]:
    """Outbox entries not yet written (read or not), pending ones, and the oldest one's age."""
    async with client.pipeline(transaction=False) as pipe:
        pipe.xlen(keys.outbox)
        pipe.xrange(keys.outbox, count=1)
        pipe.time()
        pipe.xpending(keys.outbox, OUTBOX_GROUP)
        length, first, now, pending = await pipe.execute(raise_on_error=False)
    return outbox_figures(length, first, pending, now[0] * 1000 + now[1] // 1000)


def outbox_figures(length: int, first: Any, pending: Any, now_ms: int) -> dict[str, Any]:
    """The replies of XLEN, XRANGE … COUNT 1 and XPENDING (either may be an error: no group
    yet) as the outbox's lag."""
    age = 0.0
    if first and not isinstance(first, Exception):
        oldest_ms = int(first[0][0].split("-")[0])
        age = max(0.0, (now_ms - oldest_ms) / 1000)
    pending_count = 0 if isinstance(pending, Exception) else int(pending["pending"])
    return {"entries": int(length), "pending": pending_count, "oldest_age_seconds": round(age, 3)}


async def heartbeat(client: aioredis.Redis, keys: Keys, worker_id: str, fields: dict[str, Any],
                    ttl_ms: int) -> None:
    """One web worker's heartbeat (``python -m hub inspect`` reads them): its hash, expiring
    after ``ttl_ms`` unless beaten again, and its place in the workers' sorted set (entries of
    workers gone for a day are dropped)."""
    now = int(fields["updated_ms"])
    async with client.pipeline(transaction=False) as pipe:
        pipe.hset(keys.worker(worker_id), mapping=fields)
        pipe.pexpire(keys.worker(worker_id), ttl_ms)
        pipe.zadd(keys.workers, {worker_id: now})
        pipe.zremrangebyscore(keys.workers, 0, now - 24 * 3600 * 1000)
        await pipe.execute()


async def persistence_warning(client: aioredis.Redis) -> str | None:
    """A warning when Redis would lose accepted, unflushed tips and messages in a crash."""
    try:
        config = await client.config_get("appendonly")
    except RedisError:
        return "cannot read Redis's persistence settings (CONFIG GET refused); make sure appendonly is on"
    if config.get("appendonly") != "yes":
        return ("Redis runs without append-only persistence: accepted tips and messages not yet "
                "flushed to MySQL are lost if Redis crashes (set appendonly yes, appendfsync everysec)")
    return None


class State:
    def __init__(self, client: aioredis.Redis, settings: Settings) -> None:
        self.redis = client
        self.settings = settings
        self.keys = Keys(settings.redis_prefix)
        self._scripts = _load_scripts(client, settings)
        self._chat = Batcher(self._chat_batch, CHAT_BATCH_MAX)
        self._base = [self.keys.prefix, self.keys.room_prefix, NAMESPACE]
        self._timers = {name: metrics.REDIS_SECONDS.labels(name).observe for name in self._scripts}

    async def _call(self, name: str, keys: list[str], args: list[Any]) -> Any:
        """One script call, its round trip timed for /metrics."""
        start = time.perf_counter()
        try:
            return await self._scripts[name](keys=keys, args=args)
        finally:
            self._timers[name](time.perf_counter() - start)

    async def _run(self, name: str, keys: list[str], args: list[Any]) -> list[Any]:
        return _result(await self._call(name, keys, args))

    # -- streams ------------------------------------------------------------------
    async def create_stream(self, fields: dict[str, str]) -> None:
        k, sid, user = self.keys, fields["stream_id"], fields["streamer_id"]
        flat = [x for pair in fields.items() for x in pair]
        await self._run(
            "create",
            [k.stream(sid), k.streamer_live(user), k.streamer_streams(user)],
            [k.prefix, sid, fields["status"], fields["created_at"], *flat],
        )

    async def start_stream(self, stream_id: str, streamer_id: str) -> None:
        k = self.keys
        await self._run("start", [k.stream(stream_id), k.streamer_live(streamer_id)],
                        [k.prefix, stream_id])

    async def end_stream(self, stream_id: str, streamer_id: str) -> int:
        k = self.keys
        reply = await self._run(
            "end",
            [k.stream(stream_id), k.streamer_live(streamer_id)],
            [*self._base, stream_id, self.settings.ended_retention],
        )
        return int(reply[1])

    async def stream(self, stream_id: str) -> tuple[dict[str, str], int, int] | None:
        """The stream hash, its viewer count and its unique viewers, or None."""
        k = self.keys
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(k.stream(stream_id))
            pipe.hlen(k.viewers(stream_id))
            pipe.scard(k.unique(stream_id))
            h, count, unique = await pipe.execute()
        if not h:
            return None
        return h, count, unique

    async def streams(self, ids: list[str]) -> list[tuple[dict[str, str], int]]:
        if not ids:
            return []
        k = self.keys
        async with self.redis.pipeline(transaction=False) as pipe:
            for sid in ids:
                pipe.hgetall(k.stream(sid))
                pipe.hlen(k.viewers(sid))
            replies = await pipe.execute()
        pairs = zip(replies[::2], replies[1::2], strict=True)
        return [(h, count) for h, count in pairs if h]

    async def live_ids(self, category: str | None, offset: int, limit: int) -> list[str]:
        key = self.keys.live_category(category) if category else self.keys.live
        return list(await self.redis.zrevrange(key, offset, offset + limit - 1))

    async def streamer_stream_ids(self, user_id: str) -> list[str]:
        return list(await self.redis.zrevrange(self.keys.streamer_streams(user_id), 0, -1))

    async def forget_streamer_streams(self, user_id: str, ids: list[str]) -> None:
        if ids:
            await self.redis.zrem(self.keys.streamer_streams(user_id), *ids)

    async def recent(self, stream_id: str) -> tuple[list[str], int, set[str], str | None]:
        """The recent buffer (JSON texts), the stream's message count (-1: no live state), the
        deleted message ids, and the id below which the chat was cleared (None: never)."""
        k = self.keys
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.lrange(k.recent(stream_id), 0, -1)
            pipe.hmget(k.stream(stream_id), "message_count", "cleared_before")
            pipe.smembers(k.deleted(stream_id))
            items, (count, cleared), deleted = await pipe.execute()
        return items, -1 if count is None else int(count), set(deleted), cleared

    async def moderation_log(self, stream_id: str) -> list[str]:
        """The newest moderation actions (JSON texts), newest first."""
        return list(await self.redis.lrange(self.keys.modlog(stream_id), 0, -1))

    async def standing(self, stream_id: str, user_id: str) -> tuple[str | None, bool]:
        """The stream's streamer (None: no live state) and whether the user is a moderator."""
        k = self.keys
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hget(k.stream(stream_id), "streamer_id")
            pipe.sismember(k.moderators(stream_id), user_id)
            streamer, moderator = await pipe.execute()
        return streamer, bool(moderator)

    # -- presence -----------------------------------------------------------------
    async def admit(self, address: str, sid: str, user_id: str | None) -> None:
        """A new connection: within the address's rate and the open connections allowed to the
        address and to the user."""
        k, s = self.keys, self.settings
        await self._run(
            "admit",
            [k.conn_rate(address), k.address_conns(address), k.user_conns(user_id or "-")],
            [s.conn_rate, s.conn_period * 1000, sid, s.address_max_conns, s.user_max_conns,
             self._ttl_ms, "1" if user_id else "0"],
        )

    def holders(self, address: str, user_id: str | None) -> list[str]:
        """The sets that count a connection: its address's, and its user's if signed in."""
        keys = [self.keys.address_conns(address)]
        if user_id is not None:
            keys.append(self.keys.user_conns(user_id))
        return keys

    async def release(self, address: str, user_id: str | None, sid: str) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in self.holders(address, user_id):
                pipe.zrem(key, sid)
            await pipe.execute()

    async def touch(self, pairs: list[tuple[str, str]]) -> None:
        """Extend connections, as (holder key, socket id) pairs, in the sets that count them."""
        if pairs:
            await self._run("touch", [], [self._ttl_ms, *(x for pair in pairs for x in pair)])

    async def join(
        self, stream_id: str, member: str, sid: str, username: str, viewer: str, wanted: int
    ) -> tuple[int, dict[str, str], list[str]]:
        """Start watching; returns the viewer count, the stream hash and the newest ``wanted``
        messages of the recent buffer (0: all of it)."""
        k, s = self.keys, self.settings
        reply = await self._run(
            "join",
            [k.stream(stream_id), k.conns(stream_id), k.recent(stream_id), k.join_rate(viewer),
             k.sanctions(stream_id)],
            [*self._base, stream_id, member, self._ttl_ms, sid, username, s.join_rate,
             s.join_period * 1000, wanted],
        )
        flat = reply[2]
        return int(reply[1]), dict(zip(flat[::2], flat[1::2], strict=True)), reply[3]

    async def leave(self, stream_id: str, member: str) -> None:
        await self._run("leave", [self.keys.conns(stream_id)], [*self._base, stream_id, member])

    async def refresh(self, stream_id: str, members: list[tuple[str, str, str]]) -> int:
        """Extend these connections' expiry; returns how many had to be re-asserted."""
        k = self.keys
        flat = [x for triple in members for x in triple]
        reply = await self._run(
            "refresh",
            [k.stream(stream_id), k.conns(stream_id), k.sanctions(stream_id)],
            [*self._base, stream_id, self._ttl_ms, *flat],
        )
        return int(reply[1])

    async def reap(self) -> int:
        reply = await self._run("reap", [self.keys.live], [*self._base, 1000])
        return int(reply[1])

    @property
    def _ttl_ms(self) -> int:
        return int(self.settings.presence_ttl * 1000)

    # -- chat and tips ------------------------------------------------------------
    async def chat(self, stream_id: str, user_id: str, is_admin: bool, message_id: str,
                   message_json: bytes, frame: bytes, kind: str = "chat") -> None:
        """Accept a chat message (or, with ``kind`` alert, the streamer's trade alert): queued
        for this event-loop tick's one batched script call. Raises the refusal, or Stale when
        the message id is older than the stream's last chat clear."""
        reply = await self._chat.submit((stream_id, user_id, "1" if is_admin else "0", kind, message_id,
                                         message_json, frame))
        status = reply[0]
        if status == "stale":
            raise Stale(reply[1])
        _result(reply)

    async def _chat_batch(self, items: list[tuple[Any, ...]]) -> list[list[Any]]:
        k, s = self.keys, self.settings
        return list(await self._call(
            "chat_batch", [k.outbox],
            [k.prefix, k.room_prefix, s.chat_rate, s.chat_rate_privileged, s.chat_period * 1000,
             s.recent_size, len(items), k.chat_rate_windows, *(x for item in items for x in item)]))

    async def tip(
        self, stream_id: str, user_id: str, client_tip_id: str | None, amount_cents: int,
        fee_cents: int, message_id: str, ack_json: bytes, tip_json: bytes, message_json: bytes,
        room_message: bytes,
    ) -> bytes | None:
        """Apply a tip; returns the first ack when this ``client_tip_id`` was seen before.
        Raises Stale like ``chat``."""
        k, s = self.keys, self.settings
        idem = k.tip_idempotency(user_id, client_tip_id or "-")
        reply = await self._run(
            "tip",
            [k.stream(stream_id), k.tip_rate(user_id), idem, k.recent(stream_id), k.outbox,
             k.room(stream_id), k.sanctions(stream_id)],
            [s.tip_rate, s.tip_period * 1000, s.recent_size, amount_cents, fee_cents,
             s.tip_idempotency_ttl, ack_json, tip_json, message_json, room_message,
             "1" if client_tip_id else "0", user_id, message_id],
        )
        if reply[0] == "stale":
            raise Stale(reply[1])
        return reply[1] if reply[0] == "dup" else None

    # -- moderation ---------------------------------------------------------------
    async def moderate(
        self, stream_id: str, action: str, actor: str, is_admin: bool, *, target: str = "",
        message_id: str = "", value: str = "", record_json: bytes, pub_json: bytes,
        pub_tail: bytes = b"", ban_order: bytes = b"", found: bool = False,
    ) -> str | None:
        """Apply one moderation action. Returns the moderators (JSON list) after a change of
        moderators; raises MessageMissing when a message to delete is not in the recent buffer."""
        k = self.keys
        reply = await self._run(
            "moderate",
            [k.stream(stream_id), k.moderators(stream_id), k.sanctions(stream_id),
             k.recent(stream_id), k.deleted(stream_id), k.conns(stream_id), k.outbox, k.room(stream_id),
             k.modlog(stream_id)],
            [*self._base, stream_id, action, actor, "1" if is_admin else "0", target, message_id,
             value, record_json, pub_json, pub_tail, ban_order, MODLOG_SIZE,
             "1" if found else "0"],
        )
        if reply[0] == "missing":
            raise MessageMissing
        if reply[0] == "no_stream":
            raise NoStream
        return reply[1] if len(reply) > 1 else None


class NoStream(Exception):
    """The stream has no live state in Redis (ended and expired, or never existed)."""


class MessageMissing(Exception):
    """The message to delete is not in the recent buffer; it may be in MySQL."""
