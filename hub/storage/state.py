"""Live state in Redis: each state change is one Lua script, so it is one round trip and
atomic with its outbox record and its broadcast. Each method names the keys its script touches
(KEYS) and what else it is told (ARGV), in the order of the script's own header."""

from __future__ import annotations

import asyncio
import time
from typing import Any, NamedTuple, cast

from hub import metrics
from hub.codec import uuid7
from hub.errors import HubError
from hub.frames import Around
from hub.settings import Settings
from hub.storage.batcher import Batcher
from hub.storage.connections import AsyncRedis
from hub.storage.keys import STREAMER_STREAMS_KEPT, Keys
from hub.storage.scripts import checked, load_scripts

CHAT_BATCH_MAX = 256
MODLOG_SIZE = 200
# The sweep's bounds: entries of a lapsed lease's registry per call (a call under 2 ms), calls
# per shard per HUB_REAP_INTERVAL: 5,000 entries (a connection has up to three: its stream, its
# user, its address), so that one surviving worker sweeps a dead one's 10,000 connections
# within 15 s of its lease lapsing, as viewers must leave within 30 s.
REAP_CHUNK = 25
REAP_CALLS = 200
# The sweep of what is due reads at most this many streams of each index per call: a call
# with both full sends 10 viewer events and claims 10 streams in about 0.5 ms of Redis time on a
# busy 2-core machine (bench workload ``sweep``: 25 of each took 1.3 ms at the median and up to
# 4.7 ms), under the 2 ms a call may take. It claims an idle stream for DUE_CLAIM_MS while its
# worker ends it: another worker takes it up after that only if it is still live.
DUE_MOST = 10
# How long the shard's recently ended streams keep an end for the lease renewals to read: far
# longer than a lease lasts, so that a worker whose lease holds has read every end since its
# last renewal (a worker whose lease lapsed re-asserts stream by stream instead).
ENDED_KEPT_MS = 600_000
DUE_CLAIM_MS = 60_000
# Live streams read per call when a starting worker gives the ones without an idle end theirs.
IDLE_BACKFILL_CHUNK = 200


def _message_prefix(message_id: str) -> bytes:
    """How a message's JSON text starts: sorted sets of such texts are in id order."""
    return b'{"message_id":"' + message_id.encode()


class ChatPage(NamedTuple):
    """Redis's part of a chat page (texts newest first) and what tells whether it is whole."""

    recent: list[str]  # from the recent set: every kept message above ``floor`` is there
    unflushed: list[str]  # accepted, not yet in MySQL (deleted or cleared ones included)
    live_state: bool  # the stream hash exists (else only MySQL and ``unflushed`` know)
    floor: str | None  # the highest id ever trimmed from the recent set (None: never)
    cleared: str | None  # every id up to this one was cleared
    deleted: set[str]  # deleted ids MySQL may not have marked yet


class Stale(Exception):
    """A message id older than the stream's last chat clear; retry with an id after ``cleared``."""

    def __init__(self, cleared: str) -> None:
        super().__init__(cleared)
        self.cleared = cleared


class ChatItem(NamedTuple):
    """One chat message (or streamer's trade alert) for the batched chat script."""

    stream_id: str
    user_id: str
    is_admin: bool
    is_alert: bool  # the streamer's trade alert: refused from anyone else
    message_id: str
    message_json: bytes  # as the recent and unflushed sets and the outbox hold it
    frame: bytes  # the Engine.IO text of its chat_message event, for the room


class TipRecord(NamedTuple):
    """One tip for ``tip.lua``: its money, its TIP chat message and what it answers and tells."""

    stream_id: str
    user_id: str
    client_tip_id: str | None  # the client's idempotency key
    amount_cents: int
    fee_cents: int
    message_id: str  # the TIP chat message's
    ack_json: bytes  # the sender's ack, kept to answer a retry with the same client_tip_id
    tip_json: bytes  # the outbox's tip record
    message_json: bytes  # the TIP chat message
    room_message: bytes  # tip_received and chat_message, for the room


class ModerationRecord(NamedTuple):
    """One moderation action for ``moderate.lua``, its rules taken from the action's row of
    ``hub.domain.payloads.MODERATION``."""

    stream_id: str
    actor: str
    is_admin: bool
    change: str  # what the script changes (``ModerationAction.change``)
    owner_only: bool  # only the streamer or an admin may act
    on_self: bool  # the actor may be its own target
    target: str  # the user acted on, or ''
    message_id: str  # the message to delete, or ''
    value: str  # a timeout's end (ms), the clear's watermark id or the slow-mode seconds
    record_json: bytes  # for the outbox and the stream's moderation log
    broadcast: Around  # the room message, with a hole for the moderators after a change of them
    ban_order: bytes  # the ``!ban`` order to the workers, or b''


class Outcome(NamedTuple):
    """A chat, tip or moderation script's reply (a refusal is raised as its HubError): its
    status, 'ok', 'stale', 'dup', 'missing' or 'no_stream', and the one value it may carry
    (the clear watermark, the first ack, the moderators)."""

    status: str
    value: Any


def _outcome(reply: list[Any]) -> Outcome:
    """Where those replies are read by position, once: a refusal raised, the rest named."""
    checked(reply)
    return Outcome(reply[0], reply[1] if len(reply) > 1 else None)


def _flag(value: bool) -> str:
    """A yes or no as the scripts read it."""
    return "1" if value else "0"


class Due(NamedTuple):
    """What one call of ``due.lua`` did and found in a shard."""

    viewer_events: int  # kept viewer events sent
    idle: list[tuple[str, str]]  # (stream id, streamer id) of the idle streams claimed to end
    more: bool  # an index had more due than one call reads: call again


class Joined(NamedTuple):
    """What ``State.join`` finds: the viewers now, the stream hash and its newest messages
    (JSON texts, newest first)."""

    viewers: int
    stream: dict[str, str]
    recent: list[str]


class Holding(NamedTuple):
    """A connection counted in an address's or a user's set: kind ``a`` (the Engine.IO session
    of an address) or ``u`` (the socket of a user), the address or user id, the session or socket."""

    kind: str
    id: str
    member: str

    def key(self, k: Keys) -> str:
        return k.address_conns(self.id) if self.kind == "a" else k.user_conns(self.id)


class Renewal(NamedTuple):
    """``State.renew`` in one shard: whether the lease is new (what this worker holds there must
    be re-asserted under it), and the shard's streams that ended since the renewal before."""

    shard: int
    fresh: bool
    ended: list[str]


def reap_keys(k: Keys) -> list[str]:
    """reap.lua's keys in shard ``k``: its leases, and what a connection that stops watching
    touches (the live set, the outbox, the viewer events due, the idle index)."""
    return [k.leases, k.live, k.outbox, k.viewer_events_due, k.live_idle]


class State:
    def __init__(self, client: AsyncRedis, settings: Settings) -> None:
        self.redis = client
        self.settings = settings
        # On a cluster a script may touch only the keys of one slot: one shard per call.
        self.keys = Keys.of_settings(settings)
        # This worker's lease in each shard, and how many times one was taken (hub.domain.presence).
        self.leases = [""] * len(self.keys.all)
        self.renewed_ms = [""] * len(self.keys.all)  # Redis's time at each shard's last renewal
        self.lease_changes = 0
        self._scripts = load_scripts(client, settings)
        self._chat = Batcher(self._chat_batch, CHAT_BATCH_MAX)
        self._timers = {name: metrics.REDIS_SECONDS.labels(name).observe for name in self._scripts}

    async def _call(self, name: str, keys: list[str], args: list[Any]) -> Any:
        """One script call, its round trip timed for /metrics."""
        start = time.perf_counter()
        try:
            return await self._scripts[name](keys=keys, args=args)
        finally:
            self._timers[name](time.perf_counter() - start)

    async def _run(self, name: str, keys: list[str], args: list[Any]) -> list[Any]:
        """One script call whose refusal is raised (``HubError``)."""
        return checked(await self._call(name, keys, args))

    # -- streams ------------------------------------------------------------------
    def new_stream_id(self, streamer_id: str) -> str:
        """A new stream's id (a UUIDv7), drawn until it falls in its streamer's shard, so that
        creating, starting and ending it touch one shard (on average as many draws as shards)."""
        shard = self.keys.shard_of(streamer_id)
        while True:
            stream_id = uuid7()
            if self.keys.shard_of(stream_id) == shard:
                return stream_id

    async def create_stream(self, fields: dict[str, str]) -> None:
        """A new stream, within the streamer's create rate and, when SCHEDULED, the scheduled
        streams a streamer may hold; a scheduled stream expires unstarted at its time plus
        ``HUB_SCHEDULED_GRACE``."""
        sid, user, s = fields["stream_id"], fields["streamer_id"], self.settings
        k = self.keys.of(sid)
        if k is not self.keys.of(user):
            raise ValueError("a stream's id is drawn in its streamer's shard (hub.domain.streams)")
        expires = int(fields["scheduled_at"]) + s.scheduled_grace * 1000 if fields["scheduled_at"] else 0
        await self._run(
            "create",
            keys=[
                k.stream(sid),
                k.unique(sid),
                k.streamer_live(user),
                k.streamer_streams(user),
                k.streamer_scheduled(user),
                k.create_rate(user),
                k.live,
                k.outbox,
                k.live_idle,
            ],
            args=[
                k.prefix,
                sid,
                fields["status"],
                fields["created_at"],
                s.create_rate,
                s.create_period * 1000,
                s.scheduled_max,
                expires,
                STREAMER_STREAMS_KEPT,
                s.ended_retention,
                *(x for pair in fields.items() for x in pair),
            ],
        )

    async def start_stream(self, stream_id: str, streamer_id: str) -> None:
        k = self.keys.of(stream_id)
        await self._run(
            "start",
            keys=[
                k.stream(stream_id),
                k.unique(stream_id),
                k.streamer_live(streamer_id),
                k.streamer_scheduled(streamer_id),
                k.live,
                k.outbox,
                k.live_idle,
            ],
            args=[k.prefix, stream_id],
        )

    async def cancel_stream(self, stream_id: str, streamer_id: str) -> None:
        k = self.keys.of(stream_id)
        await self._run(
            "cancel",
            keys=[k.stream(stream_id), k.unique(stream_id), k.streamer_scheduled(streamer_id), k.outbox],
            args=[stream_id, self.settings.ended_retention],
        )

    async def end_stream(self, stream_id: str, streamer_id: str) -> int:
        """End a LIVE stream; returns its duration in seconds."""
        k = self.keys.of(stream_id)
        _, duration = await self._run(
            "end",
            keys=[
                k.stream(stream_id),
                k.conns(stream_id),
                k.viewers(stream_id),
                k.unique(stream_id),
                k.recent(stream_id),
                k.moderators(stream_id),
                k.sanctions(stream_id),
                k.deleted(stream_id),
                k.modlog(stream_id),
                k.streamer_live(streamer_id),
                k.live,
                k.outbox,
                k.room(stream_id),
                k.viewer_events_due,
                k.live_idle,
                k.ended,
            ],
            args=[k.prefix, stream_id, self.settings.ended_retention, ENDED_KEPT_MS],
        )
        return int(duration)

    async def stream(self, stream_id: str) -> tuple[dict[str, str], int, int] | None:
        """The stream hash, its viewer count and its unique viewers, or None."""
        k = self.keys.of(stream_id)
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
        async with self.redis.pipeline(transaction=False) as pipe:
            for sid in ids:
                k = self.keys.of(sid)
                pipe.hgetall(k.stream(sid))
                pipe.hlen(k.viewers(sid))
            replies = await pipe.execute()
        pairs = zip(replies[::2], replies[1::2], strict=True)
        return [(h, count) for h, count in pairs if h]

    async def live_ids(self, category: str | None, offset: int, limit: int) -> list[str]:
        """Live stream ids by viewers, most first; with shards, the top ``offset + limit`` of
        each shard's live set, merged."""

        def key(k: Keys) -> str:
            return k.live_category(category) if category else k.live

        if len(self.keys.all) == 1:
            return cast(list[str], await self.redis.zrevrange(key(self.keys), offset, offset + limit - 1))
        async with self.redis.pipeline(transaction=False) as pipe:
            for shard in self.keys.all:
                pipe.zrevrange(key(shard), 0, offset + limit - 1, withscores=True)
            replies = await pipe.execute()
        merged = sorted((pair for reply in replies for pair in reply), key=lambda p: (-p[1], p[0]))
        return [sid for sid, _ in merged[offset : offset + limit]]

    async def streamer_stream_ids(self, user_id: str, limit: int) -> list[str]:
        """The streamer's newest ``limit`` stream ids held in Redis, and its live stream's."""
        k = self.keys.of(user_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zrevrange(k.streamer_streams(user_id), 0, limit - 1)
            pipe.get(k.streamer_live(user_id))
            ids, live = await pipe.execute()
        return list(ids) if live is None or live in ids else [live, *ids]

    async def forget_streamer_streams(self, user_id: str, ids: list[str]) -> None:
        if ids:
            await self.redis.zrem(self.keys.of(user_id).streamer_streams(user_id), *ids)

    async def chat_page(
        self, stream_id: str, before: str | None, after: str | None, limit: int, recent: bool = True
    ) -> ChatPage:
        """What Redis holds of a chat page: the newest ``limit`` messages with ids between
        ``after`` and ``before`` (both excluded) of the recent set (unless ``recent`` is false:
        the caller has them) and of the unflushed set, newest first, with what a reader needs
        to know whether MySQL must complete them."""
        k = self.keys.of(stream_id)
        high = b"+" if before is None else b"(" + _message_prefix(before)
        low = b"-" if after is None else b"[" + _message_prefix(after) + b'"\xff'
        async with self.redis.pipeline(transaction=False) as pipe:
            if recent:
                pipe.zrevrangebylex(k.recent(stream_id), high, low, 0, limit)
            pipe.zrevrangebylex(k.unflushed(stream_id), high, low, 0, limit)
            pipe.hmget(k.stream(stream_id), "status", "recent_floor", "cleared_before")
            pipe.smembers(k.deleted(stream_id))
            replies = await pipe.execute()
        held = replies.pop(0) if recent else []
        unflushed, (status, floor, cleared), deleted = replies
        return ChatPage(held, unflushed, status is not None, floor, cleared, set(deleted))

    async def moderation_log(self, stream_id: str) -> list[str]:
        """The newest moderation actions (JSON texts), newest first."""
        return cast(list[str], await self.redis.lrange(self.keys.of(stream_id).modlog(stream_id), 0, -1))

    async def standing(self, stream_id: str, user_id: str) -> tuple[str | None, bool]:
        """The stream's streamer (None: no live state) and whether the user is a moderator."""
        k = self.keys.of(stream_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hget(k.stream(stream_id), "streamer_id")
            pipe.sismember(k.moderators(stream_id), user_id)
            streamer, moderator = await pipe.execute()
        return streamer, bool(moderator)

    # -- presence -----------------------------------------------------------------
    # Under leases (hub.domain.presence): what this worker writes is held under its lease in the
    # shard, ``leases[shard]`` ('' until ``renew`` takes one).

    def _lease(self, name: str) -> tuple[Keys, str]:
        """The keys of the shard of a stream, user or address, and this worker's lease there."""
        shard = self.keys.shard_of(name)
        return self.keys.all[shard], self.leases[shard]

    async def admit_transport(self, address: str, eio_sid: str) -> None:
        """A new Engine.IO session (at its handshake, before any namespace): within its client
        address's connection rate and the open sessions the address may hold."""
        s, (k, lease) = self.settings, self._lease(address)
        await self._run(
            "admit",
            keys=[k.address_conns(address), k.leases, k.lease_held(lease), k.conn_rate(address)],
            args=[
                *(k.prefix, "a", address, eio_sid, lease, s.address_max_conns, self._ttl_ms),
                *("1", s.conn_rate, s.conn_period * 1000),
            ],
        )

    async def admit_user(self, user_id: str, sid: str) -> None:
        """A signed-in connection to the namespace: within the open connections of its user."""
        s, (k, lease) = self.settings, self._lease(user_id)
        await self._run(
            "admit",
            keys=[k.user_conns(user_id), k.leases, k.lease_held(lease)],
            args=[k.prefix, "u", user_id, sid, lease, s.user_max_conns, self._ttl_ms, "0", 0, 0],
        )

    async def release(self, held: Holding) -> None:
        """A connection closes: out of the set that counts it."""
        k = self.keys.of(held.id)
        await self._run("release", keys=[held.key(k)], args=[k.prefix, held.kind, held.id, held.member])

    async def hold(self, shard: int, holdings: list[Holding]) -> None:
        """Re-assert these open connections, all of the shard, under this worker's lease there."""
        if not holdings:
            return
        k, lease = self.keys.all[shard], self.leases[shard]
        await self._run(
            "hold",
            keys=[k.leases, k.lease_held(lease), *(h.key(k) for h in holdings)],
            args=[k.prefix, lease, *(x for h in holdings for x in (h.kind, h.id, h.member))],
        )

    async def join(
        self,
        stream_id: str,
        member: str,
        sid: str,
        username: str,
        viewer: str,
        wanted: int,
        after: str | None = None,
    ) -> Joined:
        """Start watching; returns the viewer count, the stream hash and the newest ``wanted``
        messages of the recent set (with ``after``, of those with a higher id), newest first."""
        (k, lease), s = self._lease(stream_id), self.settings
        here = self._here(viewer, stream_id)
        if not here:
            await self._limit(self.keys.of(viewer).join_rate(viewer), s.join_rate, s.join_period * 1000)
        # The join rate's key is in the stream's shard even when the rate was counted elsewhere
        # (then unused): a cluster routes a call by its keys, all of one slot.
        _, viewers, flat, recent = await self._run(
            "join",
            keys=[
                k.stream(stream_id),
                k.conns(stream_id),
                k.viewers(stream_id),
                k.unique(stream_id),
                k.recent(stream_id),
                k.join_rate(viewer),
                k.sanctions(stream_id),
                k.live,
                k.outbox,
                k.room(stream_id),
                k.leases,
                k.lease_held(lease),
                k.viewer_events_due,
                k.live_idle,
            ],
            args=[
                k.prefix,
                stream_id,
                member,
                lease,
                sid,
                username,
                s.join_rate,
                s.join_period * 1000,
                wanted,
                "1" if here else "0",
                after or "",
            ],
        )
        return Joined(int(viewers), dict(zip(flat[::2], flat[1::2], strict=True)), recent)

    async def leave(self, stream_id: str, member: str) -> None:
        k = self.keys.of(stream_id)
        await self._run(
            "leave",
            keys=[
                k.stream(stream_id),
                k.conns(stream_id),
                k.viewers(stream_id),
                k.live,
                k.outbox,
                k.room(stream_id),
                k.viewer_events_due,
                k.live_idle,
            ],
            args=[k.prefix, stream_id, member],
        )

    async def refresh(self, stream_id: str, members: list[tuple[str, str, str]]) -> int:
        """Re-assert these connections under this worker's lease, as (member, socket id,
        username); returns how many had been swept and watch again."""
        k, lease = self._lease(stream_id)
        _, reasserted = await self._run(
            "refresh",
            keys=[
                k.stream(stream_id),
                k.conns(stream_id),
                k.viewers(stream_id),
                k.unique(stream_id),
                k.sanctions(stream_id),
                k.live,
                k.outbox,
                k.room(stream_id),
                k.leases,
                k.lease_held(lease),
                k.viewer_events_due,
                k.live_idle,
            ],
            args=[k.prefix, stream_id, lease, *(x for triple in members for x in triple)],
        )
        return int(reasserted)

    async def renew(self) -> list[Renewal]:
        """Renew this worker's lease in every shard (one call each, all at once), or take a new
        one where it lapsed or there is none yet; with the streams of each shard that ended
        since the last renewal there."""

        async def one(shard: int) -> Renewal:
            k = self.keys.all[shard]
            _, lease, renewed, ended, now = await self._run(
                "renew",
                keys=[k.leases, k.lease_seq, k.ended],
                args=[self.leases[shard], self._ttl_ms, self.renewed_ms[shard]],
            )
            self.renewed_ms[shard] = str(now)
            fresh = renewed != "1"
            if fresh:
                self.leases[shard] = str(lease)
                self.lease_changes += 1
            return Renewal(shard, fresh, list(ended))

        return list(await asyncio.gather(*(one(shard) for shard in range(len(self.keys.all)))))

    async def reap(self) -> int:
        """Sweep the lapsed leases of every shard, a bounded chunk per call, calling again while
        there is more, up to ``REAP_CALLS`` calls per shard; returns how many connections
        stopped watching."""

        async def shard(k: Keys) -> int:
            swept = 0
            for _ in range(REAP_CALLS):
                _, n, more = await self._run("reap", keys=reap_keys(k), args=[k.prefix, REAP_CHUNK, ""])
                swept += int(n)
                if more != "1":
                    break
            return swept

        return sum(await asyncio.gather(*(shard(k) for k in self.keys.all)))

    async def drop_leases(self) -> None:
        """This worker stops: its leases go, and what they still hold, now (not after the sweep)."""
        for shard, k in enumerate(self.keys.all):
            lease, self.leases[shard] = self.leases[shard], ""
            more = "1" if lease else "0"
            while more == "1":
                _, _, more = await self._run("reap", keys=reap_keys(k), args=[k.prefix, REAP_CHUNK, lease])

    # -- the sweep of what has come due ---------------------------------------------
    async def due(self, k: Keys) -> Due:
        """One call of ``due.lua`` in one shard: the kept viewer events whose interval has
        passed are sent, and the streams idle for ``HUB_LIVE_IDLE_END`` claimed for the caller
        to end; at most ``DUE_MOST`` of each."""
        _, sent, flat, more = await self._run(
            "due", keys=[k.viewer_events_due, k.live_idle], args=[k.prefix, DUE_MOST, DUE_CLAIM_MS]
        )
        return Due(int(sent), list(zip(flat[::2], flat[1::2], strict=True)), bool(more))

    async def idle_backfill(self) -> int:
        """Give every LIVE stream without an idle end its end (``idle_backfill.lua``, a chunk of
        each shard's live set a call); returns how many were given one. Once per worker start,
        while HUB_LIVE_IDLE_END is on."""
        added = 0
        for k in self.keys.all:
            first, more = 0, "1"
            while more == "1":
                _, n, more = await self._run(
                    "idle_backfill",
                    keys=[k.live, k.live_idle],
                    args=[k.prefix, first, IDLE_BACKFILL_CHUNK],
                )
                added += int(n)
                first += IDLE_BACKFILL_CHUNK
        return added

    @property
    def _ttl_ms(self) -> int:
        return int(self.settings.presence_ttl * 1000)

    # -- chat and tips ------------------------------------------------------------
    async def chat(self, item: ChatItem) -> None:
        """Accept a chat message (or the streamer's trade alert): queued for this event-loop
        tick's one batched script call. Raises the refusal, or Stale when the message id is
        older than the stream's last chat clear."""
        outcome = _outcome(await self._chat.submit(item))
        if outcome.status == "stale":
            raise Stale(outcome.value)

    def _here(self, user: str, stream_id: str) -> bool:
        """Whether a user's rate state is in the stream's shard (always, with one shard), so
        the stream's script counts it; if not, it is counted first in the user's shard."""
        return self._one_shard or self.keys.shard_of(user) == self.keys.shard_of(stream_id)

    @property
    def _one_shard(self) -> bool:
        return self.keys.shards == 1

    async def _chat_batch(self, items: list[ChatItem]) -> list[list[Any]]:
        """The tick's messages in one script call per shard of their streams (one on one Redis),
        after the rate of senders whose rate state is in another shard (``_chat_rates``)."""
        if self._one_shard:
            return await self._chat_shard(self.keys, items)
        replies: list[list[Any]] = [[] for _ in items]
        refused = await self._chat_rates(items)
        shards: dict[int, list[int]] = {}
        for i, item in enumerate(items):
            if i in refused:
                replies[i] = refused[i]
            else:
                shards.setdefault(self.keys.shard_of(item.stream_id), []).append(i)
        results = await asyncio.gather(
            *(self._chat_shard(self.keys.all[shard], [items[i] for i in at]) for shard, at in shards.items())
        )
        for at, result in zip(shards.values(), results, strict=True):
            for i, reply in zip(at, result, strict=True):
                replies[i] = reply
        return replies

    async def _chat_rates(self, items: list[ChatItem]) -> dict[int, list[Any]]:
        """The chat rate of the batch's senders whose rate state is not in the stream's shard,
        counted in their own shards before the messages go to their streams: admins and the
        stream's moderators at the privileged rate (a streamer's streams are in the streamer's
        shard, so a streamer is never among them). Returns the refusals by message index."""
        away = [i for i, item in enumerate(items) if not self._here(item.user_id, item.stream_id)]
        if not away:
            return {}
        s = self.settings
        async with self.redis.pipeline(transaction=False) as pipe:
            for i in away:
                pipe.sismember(
                    self.keys.of(items[i].stream_id).moderators(items[i].stream_id), items[i].user_id
                )
            moderator = await pipe.execute()
        shards: dict[int, list[tuple[int, int]]] = {}
        for i, is_mod in zip(away, moderator, strict=True):
            privileged = is_mod or items[i].is_admin
            limit = s.chat_rate_privileged if privileged else s.chat_rate
            shards.setdefault(self.keys.shard_of(items[i].user_id), []).append((i, limit))
        results = await asyncio.gather(
            *(
                self._call(
                    "chat_rate",
                    [self.keys.all[shard].prefix],
                    [s.chat_period * 1000, *(x for i, limit in pairs for x in (items[i].user_id, limit))],
                )
                for shard, pairs in shards.items()
            )
        )
        return {
            i: reply
            for pairs, result in zip(shards.values(), results, strict=True)
            for (i, _), reply in zip(pairs, result, strict=True)
            if reply[0] != "ok"
        }

    async def _limit(self, key: str, limit: int, period_ms: int) -> None:
        """One rate limit counted on its own (a join's or a tip's, in the user's shard)."""
        await self._run("limit", [key], [limit, period_ms])

    async def _chat_shard(self, k: Keys, items: list[ChatItem]) -> list[list[Any]]:
        """One shard's messages of the tick in one ``chat_batch`` call: the keys of each of their
        streams once, then each sender's slow-mode key; each message names its stream by its
        place among them."""
        s = self.settings
        streams: dict[str, int] = {}
        for item in items:
            streams.setdefault(item.stream_id, len(streams) + 1)
        keys = [k.outbox, k.live_idle]
        for sid in streams:
            keys += (
                k.stream(sid),
                k.moderators(sid),
                k.sanctions(sid),
                k.recent(sid),
                k.unflushed(sid),
                k.room(sid),
            )
        keys += (k.slow(item.stream_id, item.user_id) for item in items)
        args: list[Any] = [
            k.prefix,
            s.chat_rate,
            s.chat_rate_privileged,
            s.chat_period * 1000,
            s.recent_size,
            len(streams),
            len(items),
            *streams,
        ]
        for item in items:
            args += (
                streams[item.stream_id],
                item.user_id,
                _flag(item.is_admin),
                _flag(item.is_alert),
                item.message_id,
                item.message_json,
                item.frame,
                _flag(self._here(item.user_id, item.stream_id)),
            )
        return list(await self._call("chat_batch", keys, args))

    async def tip(self, tip: TipRecord) -> str | bytes | None:
        """Apply a tip; returns the first ack when its ``client_tip_id`` was seen before.
        Raises Stale like ``chat``."""
        k, s = self.keys.of(tip.stream_id), self.settings
        idem = k.tip_idempotency(tip.user_id, tip.client_tip_id or "-")
        here = self._here(tip.user_id, tip.stream_id)  # if not, the rate key is unused, as in ``join``
        if not here:
            try:
                await self._limit(
                    self.keys.of(tip.user_id).tip_rate(tip.user_id), s.tip_rate, s.tip_period * 1000
                )
            except HubError:
                first = await self.redis.get(idem) if tip.client_tip_id else None
                if first is not None:
                    return first  # a retry of an accepted tip is answered, not counted
                raise
        outcome = _outcome(
            await self._call(
                "tip",
                [
                    k.stream(tip.stream_id),
                    k.tip_rate(tip.user_id),
                    idem,
                    k.recent(tip.stream_id),
                    k.unflushed(tip.stream_id),
                    k.sanctions(tip.stream_id),
                    k.outbox,
                    k.room(tip.stream_id),
                    k.live_idle,
                ],
                [
                    s.tip_rate,
                    s.tip_period * 1000,
                    s.recent_size,
                    s.tip_idempotency_ttl,
                    tip.user_id,
                    tip.message_id,
                    tip.amount_cents,
                    tip.fee_cents,
                    _flag(tip.client_tip_id is not None),
                    _flag(here),
                    tip.ack_json,
                    tip.tip_json,
                    tip.message_json,
                    tip.room_message,
                    tip.stream_id,
                ],
            )
        )
        if outcome.status == "stale":
            raise Stale(outcome.value)
        return outcome.value if outcome.status == "dup" else None

    # -- moderation ---------------------------------------------------------------
    async def moderate(self, m: ModerationRecord, found: bool = False) -> str | None:
        """Apply one moderation action. Returns the moderators (JSON list) after a change of
        moderators; raises MessageMissing when a message to delete is not in the recent buffer
        (call again with ``found`` once MySQL has it), NoStream without live state."""
        k, s = self.keys.of(m.stream_id), self.settings
        here = self._here(m.actor, m.stream_id)
        if not here and not found:  # counted once, not again when called back with found
            await self._limit(
                self.keys.of(m.actor).moderation_rate(m.actor), s.moderation_rate, s.moderation_period * 1000
            )
        outcome = _outcome(
            await self._call(
                "moderate",
                [
                    k.stream(m.stream_id),
                    k.moderators(m.stream_id),
                    k.sanctions(m.stream_id),
                    k.recent(m.stream_id),
                    k.unflushed(m.stream_id),
                    k.deleted(m.stream_id),
                    k.conns(m.stream_id),
                    k.viewers(m.stream_id),
                    k.room(m.stream_id),
                    k.modlog(m.stream_id),
                    k.moderation_rate(m.actor),
                    k.live,
                    k.outbox,
                    k.viewer_events_due,
                    k.live_idle,
                ],
                [
                    k.prefix,
                    m.stream_id,
                    m.change,
                    _flag(m.owner_only),
                    _flag(m.on_self),
                    m.actor,
                    _flag(m.is_admin),
                    m.target,
                    m.message_id,
                    m.value,
                    m.record_json,
                    m.broadcast.head,
                    m.broadcast.tail,
                    m.ban_order,
                    MODLOG_SIZE,
                    _flag(found),
                    s.moderation_rate,
                    s.moderation_period * 1000,
                    _flag(here and not found),
                ],
            )
        )
        if outcome.status == "missing":
            raise MessageMissing
        if outcome.status == "no_stream":
            raise NoStream
        return outcome.value or None


class NoStream(Exception):
    """The stream has no live state in Redis (ended and expired, or never existed)."""


class MessageMissing(Exception):
    """The message to delete is not in the recent buffer; it may be in MySQL."""
