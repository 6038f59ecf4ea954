"""Every Redis key and channel name the hub uses, built in one place.

docs/redis-keys.md, the key list, is written from this module; ``redis-cli`` users read it there.
"""

from __future__ import annotations

import binascii
import functools
import re
import zlib
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hub.settings import Settings

NAMESPACE = "/streaming"
STREAMER_STREAMS_KEPT = 100
# The keys a Lua script names itself, from what it learns inside (the sweeps read a lapsed
# lease's registry and stream ids from the due indexes; a member's score names the lease whose
# registry holds it; a stream's category is in its hash; a chat rate window's number comes from
# Redis's clock): ``Keys.lua_prelude`` writes their builders.
LUA_BUILT = (
    "stream",
    "conns",
    "viewers",
    "unique",
    "room",
    "live_category",
    "chat_rate_window",
    "user_conns",
    "address_conns",
    "lease_held",
)
# Stand-ins for the prefix and the id, to read a builder's template off its Python method.
_PREFIX_MARK, _ID_MARK = "\x00prefix\x00", "\x00id\x00"
OUTBOX_GROUP = "flushers"
SLOTS = 16384


def slot(tag: str) -> int:
    """Redis Cluster's slot of a key whose hash tag is ``tag`` (CRC16/XMODEM, mod 16384)."""
    return binascii.crc_hqx(tag.encode(), 0) % SLOTS


@functools.lru_cache(maxsize=8)
def shard_tags(shards: int) -> tuple[str, ...]:
    """One hash tag per shard, shard i's slot in the i-th of ``shards`` equal slot ranges, so
    that shards spread over a cluster's nodes as evenly as its slots do."""
    tags = []
    for i in range(shards):
        low, high = i * SLOTS // shards, (i + 1) * SLOTS // shards
        n = 0
        while not low <= slot(f"{i}.{n}") < high:
            n += 1
        tags.append(f"{i}.{n}")
    return tuple(tags)


@dataclass(frozen=True)
class Keys:
    """The hub's keys under ``prefix``, in ``shards`` shards.

    Everything a Lua script touches in one call lives in one shard, so that on Redis Cluster
    it is in one slot: a stream's keys and room channel share the hash tag of the stream's shard
    (``hub:{3.17}:stream:ID``) with that shard's outbox and live sets. A user's keys and rate
    state are in the user's shard, an address's in the address's; a stream's id is drawn in its
    streamer's shard, so a streamer's keys are in the shard of the streamer's streams. With one
    shard (one Redis), no tag: the names are the prefix's own."""

    prefix: str
    shards: int = 1

    @classmethod
    def of_settings(cls, settings: Settings) -> Keys:
        return cls(settings.redis_prefix, settings.redis_shards)

    @cached_property
    def all(self) -> tuple[Keys, ...]:
        """The keys of each shard."""
        if self.shards == 1:
            return (self,)
        return tuple(Keys(f"{self.prefix}{{{tag}}}:") for tag in shard_tags(self.shards))

    def shard_of(self, name: str) -> int:
        """The shard of a stream, user or address."""
        return 0 if self.shards == 1 else zlib.crc32(name.encode()) % self.shards

    def of(self, name: str) -> Keys:
        """The keys of the shard of a stream, user or address."""
        return self.all[self.shard_of(name)]

    @staticmethod
    def lua_prelude() -> str:
        """Lua builders of the ``LUA_BUILT`` keys, ``key_NAME(prefix[, id])``, written from the
        methods below (called with stand-ins), so that each name's template is written once."""
        return "".join(_lua_builder(name) for name in LUA_BUILT)

    # -- global ---------------------------------------------------------------
    @property
    def channel(self) -> str:
        """python-socketio's own pub/sub channel (the hub's room events use ``room``)."""
        return f"{self.prefix}socketio"

    @property
    def room_prefix(self) -> str:
        """Prefix of the per-stream channels (``room:{stream id}``)."""
        return f"{self.prefix}room:"

    def room(self, stream_id: str) -> str:
        """Pub/sub channel of one stream's room events, each ``skip_sid\\n`` then the Engine.IO
        texts of the events, one per line (``42/streaming,["chat_message",{...}]``), or an order
        to the workers: ``!close`` (the stream ended), ``!ban {"user_id", "reason"}``. Only
        workers with a socket in the stream's room subscribe to it."""
        return f"{self.prefix}room:{stream_id}"

    @property
    def outbox(self) -> str:
        """Redis Stream of records waiting for the flusher (consumer group ``flushers``), one
        per shard."""
        return f"{self.prefix}outbox"

    @property
    def outbox_dead(self) -> str:
        """Records the flusher could not decode, kept for an operator to read (one per shard)."""
        return f"{self.prefix}outbox:dead"

    @property
    def epoch(self) -> str:
        """String: the id of this Redis's (shard's) life, written when missing; ``ID`` while
        its heal is due, ``ID healed`` once done. A worker that finds it gone knows Redis lost
        its data and heals the streams MySQL holds as live (``hub.domain.recovery``)."""
        return f"{self.prefix}epoch"

    @property
    def epoch_heal(self) -> str:
        """String: the worker healing the shard now; expires 30 s after it was taken."""
        return f"{self.prefix}epoch:heal"

    @property
    def live(self) -> str:
        """Sorted set of LIVE stream ids scored by viewer count (one per shard)."""
        return f"{self.prefix}live"

    def live_category(self, category: str) -> str:
        return f"{self.prefix}live:cat:{category}"

    @property
    def live_idle(self) -> str:
        """Sorted set of LIVE stream ids scored by when the hub ends each for idleness (ms,
        ``HUB_LIVE_IDLE_END`` after its last activity; one per shard). A stream is out of it
        while a socket of its streamer watches it, and leaves it when it ends: at most one
        member per LIVE stream of the shard."""
        return f"{self.prefix}live:idle"

    @property
    def ended(self) -> str:
        """Sorted set of the stream ids ended in the last 10 minutes, scored by their end (ms;
        one per shard; trimmed at each end): a worker's lease renewal reads the ends since its
        last one, so that a worker that missed a room's close order forgets the stream anyway."""
        return f"{self.prefix}ended:recent"

    @property
    def viewer_events_due(self) -> str:
        """Sorted set of the stream ids whose coalesced viewer event is kept back, scored by
        when it is due (ms; one per shard). Left when the event is sent or the stream ends: at
        most one member per LIVE stream of the shard."""
        return f"{self.prefix}viewer_events:due"

    @property
    def workers(self) -> str:
        """Sorted set of web worker ids scored by their last heartbeat (ms)."""
        return f"{self.prefix}workers"

    def worker(self, worker_id: str) -> str:
        """Hash: one web worker's heartbeat (host, pid, started_ms, updated_ms, connections,
        watching, streams: JSON stream id -> its viewers' connections there); expires when the
        worker stops beating."""
        return f"{self.prefix}worker:{worker_id}"

    @property
    def leases(self) -> str:
        """Sorted set of presence leases, lease number -> expiry (ms), one per shard: one lease
        per live web worker, which renews it every ``HUB_PRESENCE_REFRESH`` for
        ``HUB_PRESENCE_TTL``, plus the lapsed ones (score 0 or a past expiry) the sweep has not
        emptied yet. No TTL; bounded by the live workers and the lapsed leases not yet swept."""
        return f"{self.prefix}leases"

    @property
    def lease_seq(self) -> str:
        """String: the counter (INCR) that numbers the shard's leases; one key per shard."""
        return f"{self.prefix}lease:seq"

    def lease_held(self, lease: int | str) -> str:
        """Set: what the lease holds in its shard, one entry per membership, ``kind``, the id's
        length, ``:``, the id, then the member (kinds ``c`` a stream's ``conns``, ``u`` a user's
        ``conns``, ``a`` an address's ``conns``): the length makes every entry one membership
        whatever the ids hold. No TTL; each entry goes with its membership (leave, release, end,
        ban) or with its lease's sweep, and the set with the last; at most the lease's worker's
        connections, twice (a stream and a user or address)."""
        return f"{self.prefix}lease:{lease}:held"

    # -- per stream -----------------------------------------------------------
    def stream(self, stream_id: str) -> str:
        """Hash: the stream record and its live counters (money in integer cents)."""
        return f"{self.prefix}stream:{stream_id}"

    def conns(self, stream_id: str) -> str:
        """Sorted set of connections watching, ``session|joined_ms|viewer``, scored by the number
        of the lease that holds each (``leases``); deleted when the stream ends."""
        return f"{self.prefix}stream:{stream_id}:conns"

    def viewers(self, stream_id: str) -> str:
        """Hash viewer -> number of connections; HLEN is the viewer count."""
        return f"{self.prefix}stream:{stream_id}:viewers"

    def unique(self, stream_id: str) -> str:
        """Set of every viewer seen since the stream went live."""
        return f"{self.prefix}stream:{stream_id}:unique"

    def recent(self, stream_id: str) -> str:
        """Sorted set of the newest chat messages (JSON texts, each starting with its
        ``message_id``), all scored 0 so that they sort by id; at most ``HUB_RECENT_SIZE`` (plus a
        tenth), the lowest ids trimmed first. The stream hash's ``recent_floor`` is the highest id
        ever trimmed: the set holds every kept message above it."""
        return f"{self.prefix}stream:{stream_id}:recent"

    def unflushed(self, stream_id: str) -> str:
        """Sorted set of the stream's accepted messages not yet written to MySQL (JSON texts,
        scored 0, by id); the flusher removes each once its batch has committed. Bounded by the
        outbox: empty, and so gone, when the flusher has caught up."""
        return f"{self.prefix}stream:{stream_id}:unflushed"

    def moderators(self, stream_id: str) -> str:
        """Set of the user ids the streamer named moderators."""
        return f"{self.prefix}stream:{stream_id}:mods"

    def sanctions(self, stream_id: str) -> str:
        """Hash user id -> ``ban`` or ``t:<until ms>`` (a timeout)."""
        return f"{self.prefix}stream:{stream_id}:sanctions"

    def deleted(self, stream_id: str) -> str:
        """Set of deleted message ids, hiding them from MySQL pages before the flusher marks them."""
        return f"{self.prefix}stream:{stream_id}:deleted"

    def modlog(self, stream_id: str) -> str:
        """List of the newest moderation actions (JSON), newest first."""
        return f"{self.prefix}stream:{stream_id}:modlog"

    def slow(self, stream_id: str, user_id: str) -> str:
        """String set for slow mode's interval after a user's message (expires by itself)."""
        return f"{self.prefix}stream:{stream_id}:slow:{user_id}"

    # -- per user -------------------------------------------------------------
    def streamer_live(self, user_id: str) -> str:
        """String: the id of this streamer's LIVE stream, if any."""
        return f"{self.prefix}user:{user_id}:live"

    def streamer_streams(self, user_id: str) -> str:
        """Sorted set of this streamer's newest stream ids (at most ``STREAMER_STREAMS_KEPT``), by
        creation time; expires ``HUB_ENDED_RETENTION`` after the last create (a live stream is
        also found through ``user:{id}:live``, the older ones in MySQL)."""
        return f"{self.prefix}user:{user_id}:streams"

    def streamer_scheduled(self, user_id: str) -> str:
        """Sorted set of this streamer's SCHEDULED stream ids, scored by when each expires unstarted
        (its time plus ``HUB_SCHEDULED_GRACE``, ms); at most ``HUB_SCHEDULED_MAX``; expires with
        the last of them."""
        return f"{self.prefix}user:{user_id}:scheduled"

    def moderation_rate(self, user_id: str) -> str:
        """Sorted set: the moderation actions the user took in the last ``HUB_MODERATION_PERIOD``."""
        return f"{self.prefix}rate:moderation:{user_id}"

    def create_rate(self, user_id: str) -> str:
        """Sorted set: the streams the user created in the last ``HUB_CREATE_PERIOD``."""
        return f"{self.prefix}rate:creates:{user_id}"

    def chat_rate_window(self, window: int) -> str:
        """Hash user -> ``n|t1,t2,…``: how many of the user's chat messages were accepted in the
        last period, and their times (ms, oldest first). One hash per rate period window, named
        by the window's number (``now_ms // period_ms``, from Redis's clock, so the scripts name
        it); each expires two periods after it was made."""
        return f"{self.prefix}rate:chatlog:{window}"

    def user_conns(self, user_id: str) -> str:
        """Sorted set of the user's open connections (socket ids), scored by the number of the
        lease that holds each. No TTL: each member goes with its release or its lease's sweep; at
        most ``HUB_USER_MAX_CONNS`` members."""
        return f"{self.prefix}user:{user_id}:conns"

    def address_conns(self, address: str) -> str:
        """Sorted set of the open Engine.IO sessions from one client address, scored by the number
        of the lease that holds each. No TTL: each member goes with its release or its lease's
        sweep; at most ``HUB_ADDRESS_MAX_CONNS`` members."""
        return f"{self.prefix}addr:{address}:conns"

    def conn_rate(self, address: str) -> str:
        """Sorted set: the new connections from one client address in the last period (members
        ``ms:n``, scored by time); expires a period after the last."""
        return f"{self.prefix}rate:conns:{address}"

    def join_rate(self, viewer: str) -> str:
        """Sorted set: the joins of one viewer (``u:USER`` or ``a:SOCKET``) in the last period."""
        return f"{self.prefix}rate:joins:{viewer}"

    def tip_rate(self, user_id: str) -> str:
        """Sorted set: the user's tips in the last period."""
        return f"{self.prefix}rate:tips:{user_id}"

    def tip_idempotency(self, user_id: str, client_tip_id: str) -> str:
        """String: the ack of the first tip sent with this ``client_tip_id``. The user id is
        length-prefixed, so no user id and tip id can make another pair's key."""
        return f"{self.prefix}tipid:{len(user_id)}:{user_id}:{client_tip_id}"


def _lua_builder(name: str) -> str:
    """``local function key_NAME(prefix, id) return prefix .. 'literal' .. id end`` for the
    method or property ``Keys.NAME`` (``id`` a string, or a number Lua writes as digits)."""
    keys = Keys(_PREFIX_MARK)
    takes_id = not isinstance(getattr(Keys, name), property)
    template = getattr(keys, name)(_ID_MARK) if takes_id else getattr(keys, name)
    terms = {_PREFIX_MARK: "prefix", _ID_MARK: "id"}
    parts = re.split(f"({re.escape(_PREFIX_MARK)}|{re.escape(_ID_MARK)})", template)
    lua = " .. ".join(terms.get(part) or _lua_string(part) for part in parts if part)
    return f"local function key_{name}({'prefix, id' if takes_id else 'prefix'}) return {lua} end\n"


def _lua_string(text: str) -> str:
    """A Lua string literal of ``text``, every byte but plain ASCII written as a decimal escape."""
    plain = {*"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:_-.{}|/ "}
    return "'" + "".join(chr(b) if chr(b) in plain else f"\\{b:03d}" for b in text.encode()) + "'"
