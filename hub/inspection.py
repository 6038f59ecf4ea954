"""``python -m hub inspect [STREAM_ID] [--json] [--chat N]``: what is live, read from Redis.

Without a stream id: the live streams (by viewers), the web workers' heartbeats and the outbox's
lag. With one: that stream's figures, its viewers on each worker, its moderation state and its
recent chat. Everything comes from the keys docs/redis-keys.md lists, read-only, so it works while the
hub runs and shows what ``redis-cli`` would.
"""

from __future__ import annotations

import json
import time
from decimal import Decimal
from typing import Any, cast

import orjson

from hub.domain.records import stats_from_hash, stream_from_hash
from hub.money import decimal_json
from hub.storage.connections import SyncRedis
from hub.storage.keys import OUTBOX_GROUP, Keys
from hub.storage.outbox import outbox_figures


def overview(client: SyncRedis, keys: Keys, limit: int = 50) -> dict[str, Any]:
    now = _now_ms(client)
    with client.pipeline(transaction=False) as pipe:  # each shard's live set
        for shard in keys.all:
            pipe.zrevrange(shard.live, 0, limit - 1, withscores=True)
            pipe.zcard(shard.live)
        replies = pipe.execute()
    live = sorted((pair for reply in replies[::2] for pair in reply), key=lambda p: (-p[1], p[0]))[:limit]
    streams = []
    with client.pipeline(transaction=False) as pipe:
        for stream_id, _ in live:
            k = keys.of(stream_id)
            pipe.hgetall(k.stream(stream_id))
            pipe.hlen(k.viewers(stream_id))
            pipe.scard(k.unique(stream_id))
        replies_of = pipe.execute()
    for i, _ in enumerate(live):
        h, viewers, unique = replies_of[3 * i : 3 * i + 3]
        if h:
            streams.append(dict(stream_from_hash(h, viewers), **stats_from_hash(h, viewers, unique, now)))
    return {
        "live_streams": streams,
        "live_total": sum(replies[1::2]),
        "workers": workers(client, keys, now),
        "outbox": outbox(client, keys, now),
    }


def stream(client: SyncRedis, base: Keys, stream_id: str, chat: int = 10) -> dict[str, Any] | None:
    now = _now_ms(client)
    keys = base.of(stream_id)
    with client.pipeline(transaction=False) as pipe:
        pipe.hgetall(keys.stream(stream_id))
        pipe.hlen(keys.viewers(stream_id))
        pipe.scard(keys.unique(stream_id))
        pipe.zcard(keys.conns(stream_id))
        pipe.zrange(keys.recent(stream_id), -max(chat, 1), -1)
        pipe.smembers(keys.moderators(stream_id))
        pipe.hgetall(keys.sanctions(stream_id))
        h, viewers, unique, conns, recent, mods, sanctions = pipe.execute()
    if not h:
        return None
    per_worker = {w["worker_id"]: w["streams"].get(stream_id, 0) for w in workers(client, base, now)}
    messages = [_exact(item) for item in recent][-chat:] if chat > 0 else []
    return {
        **stream_from_hash(h, viewers),
        **stats_from_hash(h, viewers, unique, now),
        "connections": conns,
        "keys": keys.stream(stream_id),  # with shards, the shard's hash tag is in the name
        "connections_per_worker": {w: n for w, n in per_worker.items() if n},
        "slow_mode_seconds": int(h.get("slow_mode") or 0),
        "moderators": sorted(mods),
        "sanctions": {
            user: ("ban" if v == "ban" else f"timeout until {_iso(int(v[2:]))}")
            for user, v in sorted(sanctions.items())
        },
        "recent_messages": messages,
    }


def workers(client: SyncRedis, keys: Keys, now: int) -> list[dict[str, Any]]:
    """The web workers whose heartbeat has not expired, newest beat first."""
    ids = cast(list[str], client.zrevrange(keys.workers, 0, -1))
    with client.pipeline(transaction=False) as pipe:
        for worker_id in ids:
            pipe.hgetall(keys.worker(worker_id))
        beats = pipe.execute()
    found = []
    for worker_id, beat in zip(ids, beats, strict=True):
        if not beat:
            continue  # stopped, or gone longer than its expiry
        found.append(
            {
                "worker_id": worker_id,
                "host": beat.get("host"),
                "pid": int(beat.get("pid") or 0),
                "beat_age_seconds": round(max(0, now - int(beat["updated_ms"])) / 1000, 1),
                "uptime_seconds": max(0, now - int(beat["started_ms"])) // 1000,
                "connections": int(beat.get("connections") or 0),
                "watching": int(beat.get("watching") or 0),
                "streams": orjson.loads(beat.get("streams") or "{}"),
            }
        )
    return found


def outbox(client: SyncRedis, keys: Keys, now: int) -> dict[str, Any]:
    """The outbox's lag and dead letters, over every shard."""
    with client.pipeline(transaction=False) as pipe:
        for shard in keys.all:
            pipe.xlen(shard.outbox)
            pipe.xrange(shard.outbox, count=1)
            pipe.xpending(shard.outbox, OUTBOX_GROUP)
        for shard in keys.all:
            pipe.xlen(shard.outbox_dead)
        replies = pipe.execute(raise_on_error=False)
    lag = len(keys.all) * 3
    return dict(outbox_figures(replies[:lag], now), dead_letters=sum(int(n) for n in replies[lag:]))


def _exact(item: str) -> Any:
    """A recent chat message with its numbers as written (a tip's ``10.50``, an alert's
    ``0.00001234``): decimals, not binary floats."""
    return json.loads(item, parse_float=Decimal)


def dumps(found: dict[str, Any]) -> str:
    """What ``inspect --json`` prints: money and prices as the hub writes them."""
    return orjson.dumps(found, default=_decimal, option=orjson.OPT_INDENT_2).decode()


def _decimal(value: object) -> orjson.Fragment:
    if isinstance(value, Decimal):
        return cast(orjson.Fragment, decimal_json(value))
    raise TypeError(f"{type(value).__name__} is not JSON")


# -- text -----------------------------------------------------------------------------------


def overview_text(o: dict[str, Any]) -> str:
    lines = [f"Live streams: {o['live_total']}" + (" (by viewers)" if o["live_streams"] else "")]
    for s in o["live_streams"]:
        lines.append(
            f"  {s['stream_id']}  {s['viewer_count']:>6} viewers  "
            f"{s['message_count']:>7} messages  {s['tip_count']:>5} tips ({_money(s['tips_total'])})  "
            f"{_short(s['title'], 40)!r} by {s['streamer_id']}"
        )
    lines.append(f"Workers: {len(o['workers'])}")
    for w in o["workers"]:
        lines.append(
            f"  {w['worker_id']}  beat {w['beat_age_seconds']}s ago  "
            f"up {_duration(w['uptime_seconds'])}  {w['connections']} connections, "
            f"{w['watching']} watching {len(w['streams'])} streams"
        )
    b = o["outbox"]
    lines.append(
        f"Outbox: {b['entries']} entries ({b['pending']} read, not yet written), oldest "
        f"{b['oldest_age_seconds']} s; dead letters: {b['dead_letters']}"
    )
    return "\n".join(lines)


def stream_text(s: dict[str, Any]) -> str:
    lines = [
        f"Stream {s['stream_id']}  {s['status']}  {_short(s['title'], 60)!r}  ({s['category']})",
        f"  streamer {s['streamer_id']} ({s['streamer_name'] or '-'}); started {s['started_at'] or '-'}"
        f", ended {s['ended_at'] or '-'}, {s['duration_seconds'] or 0} s",
        f"  viewers {s['viewer_count']} (peak {s['peak_viewers']}, unique {s['unique_viewers']}), "
        f"connections {s['connections']}",
        f"  keys {s['keys']}…",
        f"  messages {s['message_count']}, tips {s['tip_count']} totalling {_money(s['tips_total'])} "
        f"(fees {_money(s['platform_fees_total'])})",
        f"  slow mode {s['slow_mode_seconds'] or 'off'}; moderators: {', '.join(s['moderators']) or '-'}; "
        f"sanctions: {', '.join(f'{u} {v}' for u, v in s['sanctions'].items()) or '-'}",
        "  connections per worker: "
        + (", ".join(f"{w} {n}" for w, n in s["connections_per_worker"].items()) or "-"),
        f"Recent chat ({len(s['recent_messages'])}):",
    ]
    for m in s["recent_messages"]:
        lines.append(
            f"  {m.get('created_at', '')}  {m.get('username') or m.get('user_id')}:{_kind(m)} "
            f"{_short(m.get('message', ''), 100)}"
        )
    return "\n".join(lines)


def _kind(m: dict[str, Any]) -> str:
    """A chat line's tag: ``[TIP 10.50]``, ``[ALERT BUY BTC-USD 64250.50]``; none for text."""
    kind = m.get("message_type")
    if kind == "TEXT":
        return ""
    if kind == "TIP":
        return f" [TIP {_money(m.get('tip_amount'))}]"
    alert = m.get("alert") or {}
    if kind == "ALERT" and alert:
        return f" [ALERT {alert.get('side')} {alert.get('symbol')} {_money(alert.get('price'))}]"
    return f" [{kind}]"


def _money(value: object) -> str:
    """An amount as the hub writes it: the exact decimal text, two decimals for money (an
    ``orjson.Fragment`` from the stream's figures, a ``Decimal`` from a chat message)."""
    if value is None:
        return "-"
    if isinstance(value, orjson.Fragment):
        return orjson.dumps(value).decode()
    if isinstance(value, Decimal):
        return format(value, "f")
    return str(value)


def _now_ms(client: SyncRedis) -> int:
    seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) // 1000


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))


def _duration(seconds: int) -> str:
    h, rest = divmod(seconds, 3600)
    return f"{h}h{rest // 60:02d}m" if h else f"{rest // 60}m{rest % 60:02d}s"


def _short(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"
