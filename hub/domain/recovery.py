"""Redis losing its data, noticed and healed.

Each shard holds an epoch marker (``Keys.epoch``): the id of Redis's current life there, which
a web worker writes when it finds none. A Redis that comes back without its data (no
append-only log, a new node, a flushed database) has lost the marker with everything else, so
a worker that finds it gone, or different from the one it saw last, knows that the shard's live
state may be gone and heals the shard:

- a stream MySQL holds as LIVE whose stream hash is gone is ended, with the figures MySQL's own
  rows give (``heal.lua``), and the viewers still connected are told ``stream_ended``;
- a stream MySQL holds as SCHEDULED whose hash is gone gets its hash back, to be started later
  (unless it is past its time plus ``HUB_SCHEDULED_GRACE``: then it had expired unstarted).

A stream whose hash exists is left alone, so a heal when nothing was lost changes nothing, and
workers healing at once heal each stream once. The marker reads ``ID`` while the shard's heal
is due and ``ID healed`` once a worker has done it; one worker at a time heals a shard (a lock).

What it costs: one GET per shard per worker before each presence refresh (one round trip); a
heal reads MySQL's unfinished streams once per shard and worker.
"""

from __future__ import annotations

import asyncio
import calendar
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, NamedTuple

import pymysql
from redis.exceptions import RedisError

from hub import frames
from hub.codec import dumps, uuid7
from hub.domain.presence import Presence
from hub.money import to_cents
from hub.settings import Settings
from hub.storage.connections import AsyncRedis
from hub.storage.keys import Keys
from hub.storage.mysql import History, TipSums
from hub.storage.scripts import load_script

log = logging.getLogger(__name__)

HEALED = " healed"
LOCK_MS = 30_000
RETRY_MAX = 2.0
IN_BATCH = 500
# The recent_floor of a healed stream: every message id is below it, so chat pages come from
# MySQL (and the unflushed set), never from the lost recent set.
NO_RECENT = "ffffffff-ffff-ffff-ffff-ffffffffffff"
# How far a healed stream's version jumps: past any record of it still in flight.
HEALED_VERSION_STEP = 1_000_000

Deliver = Callable[[str, list[bytes]], Awaitable[None]]


class Life(NamedTuple):
    """One shard's epoch marker: the id of Redis's life there, and whether its heal is done."""

    id: str
    healed: bool

    @classmethod
    def of(cls, value: str | None) -> Life:
        text = value or ""
        return cls(text.removesuffix(HEALED), text.endswith(HEALED))


class Healed(NamedTuple):
    """What heal.lua did to one stream: whether it wrote the hash (else another worker had, or
    there was nothing to restore), and the stream's status and duration (seconds) after it."""

    healed: bool
    status: str
    duration: int


class Figures(NamedTuple):
    """A stream's final figures, from MySQL's rows of it (money in cents)."""

    messages: int = 0
    tips: int = 0
    tips_cents: int = 0
    fees_cents: int = 0
    viewers: tuple[str, ...] = ()


def ended_messages(stream_id: str, duration: int) -> list[bytes]:
    """What end.lua publishes on a stream's channel: the event, then the order to empty the room."""
    data = dumps({"stream_id": stream_id, "duration": duration})
    return [frames.room_message(frames.event("stream_ended", data)), frames.CLOSE]


class Recovery:
    """One web worker's watch over the epoch markers. ``check`` before each presence refresh
    (``guard``), and ``watch`` at start and, after a failure, until Redis answers again."""

    def __init__(
        self,
        settings: Settings,
        client: AsyncRedis,
        history: History,
        presence: Presence,
        deliver: Deliver,
        worker_id: str,
    ) -> None:
        self.settings = settings
        self.redis = client
        self.history = history
        self.presence = presence
        self.deliver = deliver  # room messages to this worker's own sockets
        self.worker_id = worker_id
        self.keys = Keys.of_settings(settings)
        self._seen: list[str | None] = [None] * len(self.keys.all)
        self._checking = asyncio.Lock()
        self._failed = asyncio.Event()
        self._heal = load_script(client, settings, "heal")
        self._healed = load_script(client, settings, "healed")

    async def check(self) -> None:
        """Read every shard's marker; where it is new, tell this worker's watchers of the
        streams that ended; where its heal is due, heal the shard."""
        read: list[list[dict[str, Any]]] = []

        async def unfinished() -> list[dict[str, Any]]:  # read once, for every shard healed
            if not read:
                read.append(await self.history.unfinished_streams())
            return read[0]

        async with self._checking:
            for shard, life in enumerate(await self._lives()):
                if life.id != self._seen[shard]:
                    await self._tell_watchers(shard)
                    self._seen[shard] = life.id
                # Healed; or another worker is healing it: if that fails, a later check heals it.
                if not life.healed and await self._lock(shard):
                    await self._heal_shard(shard, life, unfinished)

    def guard(self, step: Callable[[], Awaitable[object]]) -> Callable[[], Awaitable[None]]:
        """``step`` after a check. The presence refresh needs one first: it would find the lost
        streams gone and take their watchers out of the room without a word. A failure wakes
        ``watch``."""

        async def guarded() -> None:
            try:
                await self.check()
                await step()
            except Exception:
                self._failed.set()
                raise

        return guarded

    async def watch(self) -> None:
        """Check at once, then each time a guarded step fails: again and again, backing off up
        to ``RETRY_MAX``, so the first check after Redis answers again comes within it."""
        delay = 0.0
        task = asyncio.current_task()
        while True:
            await asyncio.sleep(delay)
            try:
                await self.check()
                if task is not None and task.cancelling():
                    # redis-py may swallow a cancellation that came during the check: do not
                    # then wait for a failure that will never come.
                    raise asyncio.CancelledError
                self._failed.clear()
                await self._failed.wait()
                delay = 0.25
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError, pymysql.MySQLError) as exc:
                delay = min(max(delay * 2, 0.25), RETRY_MAX)
                log.warning("epoch check failed (%s); retrying in %.2fs", exc, delay)
            except Exception:
                delay = min(max(delay * 2, 0.25), RETRY_MAX)
                log.exception("epoch check failed; retrying in %.2fs", delay)
            if task is not None and task.cancelling():  # as in hub.domain.presence.every
                raise asyncio.CancelledError

    # -- the markers ------------------------------------------------------------------
    async def _lives(self) -> list[Life]:
        """Every shard's marker; a missing one is written first (a new life, its heal due)."""
        shards = self.keys.all
        async with self.redis.pipeline(transaction=False) as pipe:
            for k in shards:
                pipe.get(k.epoch)
            values: list[str | None] = await pipe.execute()
        missing = [i for i, value in enumerate(values) if value is None]
        if missing:
            async with self.redis.pipeline(transaction=False) as pipe:
                for i in missing:
                    pipe.set(shards[i].epoch, uuid7(), nx=True)
                    pipe.get(shards[i].epoch)
                replies = await pipe.execute()
            for i, value in zip(missing, replies[1::2], strict=True):
                values[i] = value
            log.warning(
                "Redis has no epoch marker in shard(s) %s: it may have lost its data; "
                "healing the streams MySQL holds as live",
                ", ".join(map(str, missing)),
            )
        return [Life.of(value) for value in values]

    async def _lock(self, shard: int) -> bool:
        """Whether this worker may heal the shard now (no other is at it)."""
        return bool(
            await self.redis.set(self.keys.all[shard].epoch_heal, self.worker_id, nx=True, px=LOCK_MS)
        )

    async def _heal_shard(
        self, shard: int, life: Life, unfinished: Callable[[], Awaitable[list[dict[str, Any]]]]
    ) -> None:
        """Heal the shard's streams among MySQL's unfinished ones, then mark its marker healed
        (unless Redis lost its data again meanwhile); release the lock either way."""
        k = self.keys.all[shard]
        done = ""
        try:
            rows = [r for r in await unfinished() if self.keys.shard_of(r["stream_id"]) == shard]
            gone = await self._gone(k, rows)
            await self._heal_streams(k, gone)
            done = life.id
        finally:
            await self._healed(keys=[k.epoch, k.epoch_heal], args=[done, self.worker_id])
        log.info(
            "shard %d healed: %d of its %d unfinished stream(s) in MySQL had lost their state",
            shard,
            len(gone),
            len(rows),
        )

    async def _tell_watchers(self, shard: int) -> None:
        """This worker's watched streams of the shard: those whose state is gone are healed now,
        without waiting for the shard's heal, and the watchers of each ended one are told."""
        k = self.keys.all[shard]
        ids = [sid for sid in self.presence.rooms if self.keys.shard_of(sid) == shard]
        if not ids:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for sid in ids:
                pipe.hmget(k.stream(sid), "status", "duration_seconds")
            states = await pipe.execute()
        ended = {
            sid: int(duration or 0)
            for sid, (status, duration) in zip(ids, states, strict=True)
            if status == "ENDED"
        }
        gone = [sid for sid, (status, _) in zip(ids, states, strict=True) if status is None]
        if gone:
            ended.update(await self._heal_streams(k, await self.history.unfinished_streams(gone)))
        for sid, duration in ended.items():
            if sid in self.presence.rooms:  # not emptied meanwhile by the room's own channel
                await self.deliver(sid, ended_messages(sid, duration))

    # -- the streams ------------------------------------------------------------------
    async def _gone(self, k: Keys, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The rows whose stream hash Redis does not hold."""
        if not rows:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for row in rows:
                pipe.exists(k.stream(row["stream_id"]))
            held = await pipe.execute()
        return [row for row, exists in zip(rows, held, strict=True) if not exists]

    async def _heal_streams(self, k: Keys, rows: list[dict[str, Any]]) -> dict[str, int]:
        """Heal these streams (MySQL's rows of streams whose hash is gone); returns the
        duration of each that is ended now, by this call or another."""
        figures = await self._figures([r["stream_id"] for r in rows if r["status"] == "LIVE"])
        ended: dict[str, int] = {}
        for row in rows:
            sid, status = row["stream_id"], row["status"]
            final = figures.get(sid, Figures()) if status == "LIVE" else None
            fields = _hash(row, final)
            viewers = final.viewers if final is not None else ()
            # A scheduled stream expires unstarted at its time plus the grace, as create.lua sets.
            expires = int(fields["scheduled_at"] or 0) + self.settings.scheduled_grace * 1000
            done = await self._heal_stream(k, row, status, expires, viewers, fields)
            if done.healed and done.status == "ENDED":
                log.warning(
                    "stream ended: its live state was lost with Redis's data",
                    extra={"stream_id": sid, "user_id": row["streamer_id"]},
                )
            if done.status == "ENDED":
                ended[sid] = done.duration
        return ended

    async def _heal_stream(
        self,
        k: Keys,
        row: dict[str, Any],
        status: str,
        expires: int,
        viewers: tuple[str, ...],
        fields: dict[str, str],
    ) -> Healed:
        """One stream's heal.lua call (its keys and arguments in the script's order)."""
        sid = row["stream_id"]
        _, healed, now_status, duration = await self._heal(
            keys=[
                k.stream(sid),
                k.unique(sid),
                k.outbox,
                k.streamer_scheduled(row["streamer_id"]),
                k.room(sid),
                k.viewer_events_due,
                k.live_idle,
            ],
            args=[
                sid,
                self.settings.ended_retention,
                status,
                expires,
                len(viewers),
                *viewers,
                *(x for pair in fields.items() for x in pair),
            ],
        )
        return Healed(bool(int(healed)), str(now_status or ""), int(duration or 0))

    async def _figures(self, ids: list[str]) -> dict[str, Figures]:
        """The final figures of these streams, from MySQL's rows: messages (deleted ones too,
        as the live counter counts them), tips and their fees, and the viewers known."""
        found: dict[str, Figures] = {}
        for at in range(0, len(ids), IN_BATCH):
            batch = ids[at : at + IN_BATCH]
            messages = await self.history.message_counts(batch)
            tips = await self.history.tip_sums(batch)
            viewers = await self.history.viewers(batch)
            for sid in batch:
                tip = tips.get(sid, TipSums())
                found[sid] = Figures(
                    messages=messages.get(sid, 0),
                    tips=tip.tips,
                    tips_cents=to_cents(tip.amount),
                    fees_cents=to_cents(tip.fees),
                    viewers=tuple(viewers.get(sid, ())),
                )
        return found


def _hash(row: dict[str, Any], final: Figures | None) -> dict[str, str]:
    """A stream's hash as create.lua writes it, from MySQL's row; with final figures (a LIVE
    stream to end), those, and a version above MySQL's so that the flusher takes the record."""
    h = {
        "stream_id": row["stream_id"],
        "streamer_id": row["streamer_id"],
        "streamer_name": row["streamer_name"] or "",
        "title": row["title"],
        "description": row["description"] or "",
        "thumbnail_url": row["thumbnail_url"] or "",
        "status": row["status"],
        "category": row["category"] or "",
        "is_recording": "1" if row["is_recording"] else "0",
        "recording_url": row["recording_url"] or "",
        "scheduled_at": _ms(row["scheduled_at"]),
        "started_at": _ms(row["started_at"]),
        "ended_at": "",
        "duration_seconds": "",
        "peak_viewers": str(row["peak_viewers"]),
        "message_count": str(row["message_count"]),
        "tip_count": str(row["tip_count"]),
        "tips_cents": str(to_cents(row["tips_total"])),
        "fees_cents": str(to_cents(row["platform_fees_total"])),
        "created_at": _ms(row["created_at"]),
        "updated_at": _ms(row["updated_at"]),
        "version": str(row["version"]),
    }
    if final is not None:
        # The peak lived in Redis: MySQL's may still say 0 while viewers were seen, and a peak
        # below one would contradict them. The version jumps past any record of the stream an
        # outbox batch read before the loss may still bring, so the end is never overwritten.
        peak = max(int(row["peak_viewers"] or 0), 1 if final.viewers else 0)
        h.update(
            message_count=str(final.messages),
            tip_count=str(final.tips),
            tips_cents=str(final.tips_cents),
            fees_cents=str(final.fees_cents),
            peak_viewers=str(peak),
            version=str(row["version"] + HEALED_VERSION_STEP),
            recent_floor=NO_RECENT,
        )
    return h


def _ms(value: datetime | None) -> str:
    """A MySQL DATETIME(3) (naive UTC) as epoch ms, the hash's form ('' for none)."""
    if value is None:
        return ""
    return str(calendar.timegm(value.utctimetuple()) * 1000 + value.microsecond // 1000)
