"""The flusher: outbox batch -> MySQL in one transaction -> acknowledge and delete.

Entries are read with a consumer group. They are acknowledged and deleted only after the
transaction commits, so a flusher that dies mid-batch leaves them pending, and the next
flusher claims them once they have been idle for ``HUB_FLUSH_CLAIM_IDLE_MS``. Writes are
idempotent, so a batch written twice is written once.

With shards (``HUB_REDIS_SHARDS``) there is one outbox per shard. An entry's id is then
``SHARD/ID`` inside the flusher, so that entries of two shards never mix; each shard's entries
are acknowledged in a transaction of their own (on a cluster, one slot each). One Redis is read
with one blocking XREADGROUP over every outbox; a cluster, where a call names one slot's keys,
with one non-blocking XREADGROUP per shard, all at once, again after IDLE_POLL seconds while all
are empty (doubling up to IDLE_POLL_MAX while they stay empty).

Records are checked in Python before any SQL: only a malformed one is set aside, in the dead
letters of its shard (``outbox:dead``). Every error of MySQL is the database's, so a failed
batch is retried with capped backoff until it commits, counted by kind and logged once a minute
per kind; its entries stay pending meanwhile, in the outbox lag. Consumers of flushers gone
(idle, nothing pending) are removed once a minute. ``python -m hub outbox dead|replay`` lists
and replays the dead letters (docs/outbox.md).

``python -m workers.flusher [--burst]``; ``--burst`` stops when the outbox is empty.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from typing import Any, NamedTuple, cast

import orjson
import pymysql
from prometheus_client import start_http_server
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError, ResponseError

from hub import metrics
from hub.settings import Settings
from hub.startup import CannotListen
from hub.storage.connections import (
    AsyncRedis,
    StartupError,
    connect_mysql,
    connect_redis,
    run,
    settings_or_exit,
)
from hub.storage.keys import OUTBOX_GROUP, Keys
from hub.storage.mysql import Writer
from hub.storage.outbox import outbox_lag
from hub.storage.persistence import persistence_warning
from hub.storage.scripts import source
from workers.batch import BadRecord, Batch
from workers.failures import FailureLog, kind_of

log = logging.getLogger("workers.flusher")

Entry = tuple[str, dict[str, Any]]  # an outbox entry's id and fields
IDLE_POLL = 0.02
IDLE_POLL_MAX = 0.25
BACKOFF_MAX = 5.0
FORGET_CONSUMERS_LUA = source("forget_consumers")
# A consumer idle this many claim intervals with nothing pending belongs to a flusher gone.
CONSUMER_IDLE_CLAIMS = 10
FORGET_EVERY = 60.0


def expand(entries: list[Entry]) -> list[Entry]:
    """Entries as records: a ``messages`` entry (the chat messages of one batched chat script,
    each message's text a field of its own: ``1``, ``2``, …) becomes one ``message`` entry per
    record, with the same entry id, so that a malformed record is dead-lettered alone. (An
    entry of older workers holds them as one JSON list in ``d``.)"""
    records: list[Entry] = []
    for entry_id, fields in entries:
        if fields.get("t") == "messages":
            if "d" not in fields:
                records.extend(
                    (entry_id, {"t": "message", "d": text}) for name, text in fields.items() if name != "t"
                )
                continue
            try:
                items = orjson.loads(fields["d"])
            except orjson.JSONDecodeError:
                items = None
            if isinstance(items, list):
                records.extend((entry_id, {"t": "message", "d": item}) for item in items)
                continue
        records.append((entry_id, fields))
    return records


class Prepared(NamedTuple):
    """One read of the outbox, ready to write."""

    read: list[Entry]  # the entries as read, to acknowledge once written
    batch: Batch  # their records' rows
    bad: list[Entry]  # their malformed records, for the dead letters


class Flusher:
    def __init__(
        self, settings: Settings, client: AsyncRedis, writer: Writer, consumer: str | None = None
    ) -> None:
        self.settings = settings
        self.redis = client
        self.writer = writer
        self.keys = Keys.of_settings(settings)
        self.outboxes = [k.outbox for k in self.keys.all]
        self.cluster = settings.redis_cluster is not None
        # Per outbox and read: all of a batch from one outbox, a share of it from each of several.
        self._count = (
            settings.flush_batch
            if len(self.outboxes) == 1
            else max(50, settings.flush_batch // len(self.outboxes))
        )
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}"
        self.written = 0
        self._stopping = asyncio.Event()
        self._next_claim = 0.0
        self._next_observe = 0.0
        self._next_forget = 0.0
        self._idle = IDLE_POLL
        self._failures = FailureLog(log)

    def _unflushed(self, batch: Batch) -> dict[int, dict[str, list[str]]]:
        """The texts of the chat messages of a batch MySQL took, by shard and stream: members of
        their streams' unflushed sets. (A dead-lettered one is not in the batch: it stays
        readable from the unflushed set until replayed.)"""
        by_shard: dict[int, dict[str, list[str]]] = {}
        for stream_id, texts in batch.message_texts.items():
            by_shard.setdefault(self.keys.shard_of(stream_id), {})[stream_id] = texts
        return by_shard

    async def ensure_group(self) -> None:
        for outbox in self.outboxes:
            try:
                await self.redis.xgroup_create(outbox, OUTBOX_GROUP, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    def _tagged(self, shard: int, entries: list[Entry]) -> list[Entry]:
        if len(self.outboxes) == 1:
            return entries
        return [(f"{shard}/{entry_id}", fields) for entry_id, fields in entries]

    def _by_shard(self, ids: list[str]) -> dict[int, list[str]]:
        if len(self.outboxes) == 1:
            return {0: ids} if ids else {}
        shards: dict[int, list[str]] = {}
        for tagged in ids:
            shard, _, entry_id = tagged.partition("/")
            shards.setdefault(int(shard), []).append(entry_id)
        return shards

    async def read(self, block_ms: int | None) -> list[Entry]:
        """Entries left pending by a flusher that died, else new ones. Pending entries are
        looked for at most twice per claim interval, not before every batch.

        With shards, each outbox is first asked for its share of a batch; those that had that
        many are asked again for what the batch has room left for, so a backlog in one shard
        still fills whole batches. A cluster is polled while every outbox is empty: after
        IDLE_POLL seconds, then twice as long each time up to IDLE_POLL_MAX."""
        entries = await self._claim()
        if entries:
            return entries
        while True:
            entries = await self._fill(block_ms if not self.cluster else None)
            if entries or not self.cluster or block_ms is None or self._stopping.is_set():
                self._idle = IDLE_POLL
                return entries
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._idle)
            self._idle = min(self._idle * 2, IDLE_POLL_MAX)

    async def _fill(self, block_ms: int | None) -> list[Entry]:
        found: list[Entry] = []
        room, shards, count = self.settings.flush_batch, list(range(len(self.outboxes))), self._count
        while shards and room > 0:
            asked = min(count, room)
            replies = await self._read_shards(shards, asked, block_ms)
            block_ms = None  # only the first read waits
            full = []
            for shard, entries in replies:
                found.extend(self._tagged(shard, entries))
                room -= len(entries)
                if len(entries) >= asked:  # it may have more
                    full.append(shard)
            shards = full
            count = max(1, room // max(1, len(full)))
        return found

    async def _read_shards(
        self, shards: list[int], count: int, block_ms: int | None
    ) -> list[tuple[int, list[Entry]]]:
        """New entries of these shards' outboxes, at most ``count`` each: on one Redis in one
        XREADGROUP (waiting up to ``block_ms`` for any); on a cluster one XREADGROUP per shard,
        all at once, each sent to the node that holds it (redis-py would otherwise ask the
        server which keys an XREADGROUP names, twice per call)."""
        if not self.cluster:
            reply = cast(
                "list[tuple[str, list[Entry]]] | None",
                await self.redis.xreadgroup(
                    OUTBOX_GROUP,
                    self.consumer,
                    {self.outboxes[i]: ">" for i in shards},
                    count=count,
                    block=block_ms,
                ),
            )
            index = {outbox: i for i, outbox in enumerate(self.outboxes)}
            return [(index[outbox], entries) for outbox, entries in reply or ()]
        cluster = cast(RedisCluster, self.redis)
        replies = await asyncio.gather(
            *(
                cluster.execute_command(
                    "XREADGROUP",
                    "GROUP",
                    OUTBOX_GROUP,
                    self.consumer,
                    "COUNT",
                    count,
                    "STREAMS",
                    self.outboxes[i],
                    ">",
                    target_nodes=cluster.get_node_from_key(self.outboxes[i]),
                )
                for i in shards
            )
        )
        return [(i, reply[0][1]) for i, reply in zip(shards, replies, strict=True) if reply]

    async def _claim(self) -> list[Entry]:
        now = time.monotonic()
        if now < self._next_claim:
            return []
        found: list[Entry] = []
        for shard, outbox in enumerate(self.outboxes):
            claimed = await self.redis.xautoclaim(
                outbox,
                OUTBOX_GROUP,
                self.consumer,
                min_idle_time=self.settings.flush_claim_idle_ms,
                start_id="0-0",
                count=self._count,
            )
            gone: list[str] = claimed[2] if len(claimed) > 2 else []
            if gone:  # deleted while still pending: nothing left to write
                await self.redis.xack(outbox, OUTBOX_GROUP, *gone)
            found.extend(self._tagged(shard, claimed[1]))
        if not found:  # none left to claim: look again in half a claim interval
            self._next_claim = now + self.settings.flush_claim_idle_ms / 2000
        return found

    async def step(self, block_ms: int | None = 1000, ready: Prepared | None = None) -> int:
        """One batch: read and prepare (unless given), write, acknowledge. Returns how many
        entries were settled."""
        if ready is None:
            ready = self.prepare(await self.read(block_ms))
        read, batch, bad = ready
        if not read:
            return 0
        start = time.perf_counter()
        if not await self._write(batch):
            return 0  # stopped while MySQL failed: the entries stay pending, for the next flusher
        metrics.FLUSH_BATCH_SECONDS.observe(time.perf_counter() - start)
        metrics.FLUSH_BATCH_RECORDS.observe(len(batch))
        for table, rows in batch.tables().items():
            if rows:
                metrics.FLUSH_ROWS.labels(table).inc(rows)
        await self._settle([eid for eid, _ in read], bad, batch)
        if bad:
            metrics.FLUSH_DEAD.inc(len(bad))
        self.written += len(batch)
        return len(read)

    def prepare(self, read: list[Entry]) -> Prepared:
        """Entries as records, folded into a batch of rows, with its SQL built."""
        batch, bad = self._fold(expand(read))
        batch.statements()
        return Prepared(read, batch, bad)

    async def _read_ahead(self) -> Prepared:
        return self.prepare(await self.read(None))

    def _fold(self, entries: list[Entry]) -> tuple[Batch, list[Entry]]:
        batch, bad = Batch(), []
        for entry_id, fields in entries:
            try:
                batch.add(fields.get("t", ""), fields.get("d", ""))
            except BadRecord as exc:
                log.error("outbox entry %s cannot be written (%s); moved to the dead letters", entry_id, exc)
                bad.append((entry_id, fields))
        return batch, bad

    async def _write(self, batch: Batch) -> bool:
        """Write until it commits (True), or until the flusher is stopped while it fails (False:
        its entries stay pending, to be claimed). The records were checked in Python, so every
        error is the database's (even a refusal of a value: a gap in those checks, or a schema
        changed under them), waited out with capped backoff, never dead-lettered."""
        delay, failing = 0.5, 0.0
        while True:
            try:
                if len(batch):
                    await self.writer.write(batch)
                break
            except (pymysql.MySQLError, OSError) as exc:
                failing = failing or time.monotonic()
                self._failed(exc, len(batch), time.monotonic() - failing)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            if self._stopping.is_set():
                return False
            delay = min(delay * 2, BACKOFF_MAX)
            with contextlib.suppress(RedisError, OSError):
                await self._observe_outbox()  # the lag grows while the batch waits
        if failing:
            metrics.FLUSH_STALLED.set(0)
            log.info("MySQL write committed after failing for %.1fs", time.monotonic() - failing)
        return True

    def _failed(self, exc: BaseException, records: int, stalled: float) -> None:
        kind = kind_of(exc)
        metrics.MYSQL_ERRORS.labels(kind).inc()
        metrics.FLUSH_STALLED.set(stalled)
        self._failures.failed(kind, exc, records, stalled)

    async def _settle(self, ids: list[str], bad: list[Entry], batch: Batch) -> None:
        """Acknowledge and delete a batch's entries, the bad ones kept in the dead letters of
        their shard, and take the messages written out of their streams' unflushed sets: one
        transaction per shard."""
        dead: dict[int, list[Entry]] = {}
        for tagged, fields in bad:
            ((shard, (entry_id,)),) = self._by_shard([tagged]).items()
            dead.setdefault(shard, []).append((entry_id, fields))
        written = self._unflushed(batch)
        for shard, entry_ids in self._by_shard(ids).items():
            keys = self.keys.all[shard]
            async with self.redis.pipeline(transaction=True) as pipe:
                streams = written.get(shard)
                if streams:
                    for stream_id, texts in streams.items():
                        pipe.zrem(keys.unflushed(stream_id), *texts)
                for entry_id, fields in dead.get(shard, ()):
                    data = fields.get("d", "")
                    if not isinstance(data, str):  # one record of a multi-record entry
                        data = orjson.dumps(data).decode()
                    letter: dict[Any, Any] = {**fields, "d": data, "entry": entry_id}
                    pipe.xadd(keys.outbox_dead, letter)
                pipe.xack(keys.outbox, OUTBOX_GROUP, *entry_ids)
                pipe.xdel(keys.outbox, *entry_ids)
                await pipe.execute()

    async def _left(self) -> int:
        async with self.redis.pipeline(transaction=False) as pipe:
            for outbox in self.outboxes:
                pipe.xlen(outbox)
            return sum(await pipe.execute())

    async def drain(self) -> int:
        """Flush until the outbox is empty (tests, ``--burst``) or the flusher is stopped."""
        total = 0
        while not self._stopping.is_set():
            settled = await self.step(block_ms=None)
            total += settled
            if settled == 0 and await self._left() == 0:
                return total
            if settled == 0:
                # Entries pending for another consumer, not idle long enough to claim yet.
                await asyncio.sleep(0.05)
        return total

    def stop(self) -> None:
        self._stopping.set()

    async def _observe_outbox(self) -> None:
        """The outbox's length and oldest entry's age, for /metrics, at most once a second."""
        now = time.monotonic()
        if now < self._next_observe:
            return
        self._next_observe = now + 1.0
        lag = await outbox_lag(self.redis, self.keys)
        metrics.FLUSHER_OUTBOX_ENTRIES.set(lag["entries"])
        metrics.FLUSHER_OUTBOX_AGE.set(lag["oldest_age_seconds"])

    async def forget_idle_consumers(self) -> list[str]:
        """Remove from each outbox's group the consumers idle longer than
        CONSUMER_IDLE_CLAIMS claim intervals with nothing pending (flushers gone), never this
        flusher's own. Redis 7.2 counts idle time from a consumer's last read, 7.0 from its last
        read that returned entries: there a running flusher with nothing to read for that long
        may go too, which is harmless (Redis makes it anew when it next reads entries)."""
        idle_ms = CONSUMER_IDLE_CLAIMS * self.settings.flush_claim_idle_ms
        removed: list[str] = []
        for outbox in self.outboxes:
            names = await self.redis.eval(
                FORGET_CONSUMERS_LUA, 1, outbox, OUTBOX_GROUP, idle_ms, self.consumer
            )
            removed.extend(names)
        if removed:
            metrics.FLUSH_CONSUMERS_REMOVED.inc(len(removed))
            log.info(
                "removed %d idle outbox consumers with nothing pending: %s",
                len(removed),
                ", ".join(sorted(set(removed))),
            )
        return removed

    async def _housekeep(self) -> None:
        """The outbox's figures (at most once a second), idle consumers (once a minute)."""
        await self._observe_outbox()
        now = time.monotonic()
        if now >= self._next_forget:
            self._next_forget = now + FORGET_EVERY
            await self.forget_idle_consumers()

    async def run(self) -> None:
        """Until stopped: each batch written and settled before the next, while the next one is
        read from Redis (so MySQL is kept busy); a stop ends after the batches read."""
        delay = 0.5
        ahead: asyncio.Future[Prepared] | None = None
        while not self._stopping.is_set() or ahead is not None:
            try:
                if ahead is not None:
                    pending, ahead = ahead, None
                    ready = await pending
                elif self._stopping.is_set():
                    break
                else:
                    ready = self.prepare(await self.read(1000))
                if ready.read and not self._stopping.is_set():
                    # The next batch is read and its SQL built while MySQL writes this one.
                    ahead = asyncio.ensure_future(self._read_ahead())
                if ready.read:
                    await self.step(ready=ready)
                await self._housekeep()
                delay = 0.5
            except asyncio.CancelledError:
                if ahead is not None:
                    ahead.cancel()
                raise
            except (RedisError, OSError) as exc:
                log.warning("outbox read failed (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)
                with contextlib.suppress(RedisError, OSError):
                    await self.ensure_group()


def serve_metrics(settings: Settings) -> bool:
    """The flusher's /metrics on a port of its own (HUB_FLUSHER_METRICS_PORT; 0: none), taken
    before the flusher connects to anything. A port that cannot be listened on is one line and
    False: a flusher nobody can watch is not started (HUB_FLUSHER_METRICS_PORT=0 runs one
    without figures)."""
    host, port = settings.flusher_metrics_host, settings.flusher_metrics_port
    if not port:
        return True
    try:
        start_http_server(port, host, registry=metrics.FLUSHER)
    except OSError as exc:
        line = CannotListen(host, port, exc).line(
            "The flusher's metrics", lambda free: f"HUB_FLUSHER_METRICS_PORT={free} (0: none)"
        )
        print(f"❌ {line}", file=sys.stderr)
        return False
    print(f"✅ Flusher metrics on http://{host}:{port}/metrics", flush=True)
    return True


async def main_async(settings: Settings, burst: bool) -> int:
    if not serve_metrics(settings):
        return 1
    try:
        client = await connect_redis(settings, socket_timeout=10)
    except StartupError as exc:
        print(f"❌ {exc}", file=sys.stderr)
        return 1
    try:
        pool = await connect_mysql(settings, maxsize=2)
    except StartupError as exc:
        await client.aclose()
        print(f"❌ {exc}", file=sys.stderr)
        return 1
    warning = await persistence_warning(client)
    if warning:
        log.warning(warning)
    flusher = Flusher(settings, client, Writer(pool))
    await flusher.ensure_group()
    outboxes = (
        flusher.outboxes[0]
        if len(flusher.outboxes) == 1
        else f"{len(flusher.outboxes)} outboxes ({flusher.outboxes[0]}…)"
    )
    print(f"✅ Flusher {flusher.consumer} draining {outboxes} into {settings.mysql.database}", flush=True)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, flusher.stop)
    try:
        if burst:
            await flusher.drain()
        else:
            await flusher.run()
    finally:
        pool.close()
        await pool.wait_closed()
        await client.aclose()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers.flusher")
    parser.add_argument("--burst", action="store_true", help="stop when the outbox is empty")
    args = parser.parse_args(argv)
    settings = settings_or_exit()
    if isinstance(settings, int):
        return settings
    return run(main_async(settings, args.burst), settings.gc_thresholds)


if __name__ == "__main__":
    sys.exit(main())
