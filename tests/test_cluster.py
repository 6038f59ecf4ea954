"""Redis Cluster: the URL form, the shards' hash tags, then two workers and a flusher on a real
three-node cluster.

The cluster is private (three primaries on free loopback ports, under the test's own folder,
created with ``redis-cli --cluster create``) and always stopped, whatever the test did.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from hub.settings import ClusterSettings, Settings, SettingsError
from hub.storage.connections import cluster_client, connect_redis
from hub.storage.keys import SLOTS, Keys, shard_tags, slot
from hub.transport.pubsub import ShardedSubscriber
from tests.conftest import Api, unique
from tests.faults import ClusterNodes, FlusherProcess, until
from tests.test_sentinel import hub_command
from workers.flusher import Flusher

# -- the URL and the shards -----------------------------------------------------------


def test_a_cluster_url_names_its_nodes_and_sets_sixteen_shards():
    s = Settings.from_env({"REDIS_URL": "redis+cluster://:p%40ss@10.0.0.1:7000,node-b:7001,[::1]:7002"})
    assert s.redis_cluster == ClusterSettings(
        nodes=(("10.0.0.1", 7000), ("node-b", 7001), ("::1", 7002)), username=None, password="p@ss"
    )
    assert s.redis_shards == 16
    assert (
        Settings.from_env({"REDIS_URL": "redis+cluster://h:7000/", "HUB_REDIS_SHARDS": "64"}).redis_shards
        == 64
    )
    assert Settings.from_env({}).redis_cluster is None and Settings.from_env({}).redis_shards == 1


@pytest.mark.parametrize(
    "url",
    [
        "redis+cluster://127.0.0.1:7000/1",  # a cluster has database 0 only
        "redis+cluster://127.0.0.1/",  # a node without its port
        "redis+cluster://127.0.0.1:7000,:7001",
        "redis+cluster://127.0.0.1:70000",
    ],
)
def test_a_bad_cluster_url_stops_the_process_naming_redis_url(url):
    with pytest.raises(SettingsError, match=r"^REDIS_URL: "):
        Settings.from_env({"REDIS_URL": url})


def test_braces_in_the_prefix_are_refused_they_would_make_a_hash_tag():
    with pytest.raises(SettingsError, match=r"^HUB_REDIS_PREFIX: "):
        Settings.from_env({"HUB_REDIS_PREFIX": "hub:{x}:"})


@pytest.mark.parametrize("shards", [1, 3, 16, 100])
def test_each_shard_has_a_tag_in_its_own_equal_range_of_slots(shards):
    tags = shard_tags(shards)
    assert len(set(tags)) == shards
    for i, tag in enumerate(tags):
        assert i * SLOTS // shards <= slot(tag) < (i + 1) * SLOTS // shards
    keys = Keys("hub:", shards)
    if shards == 1:
        assert keys.of("anything") is keys and keys.stream("s") == "hub:stream:s"  # one Redis: no tag
    else:
        k = keys.of("stream-id")
        tagged = [
            k.stream("stream-id"),
            k.conns("stream-id"),
            k.room("stream-id"),
            k.outbox,
            k.live,
            k.chat_rate_window(123),
            k.tip_idempotency("u", "t"),
        ]
        assert len({slot(key[key.index("{") + 1 : key.index("}")]) for key in tagged}) == 1


# -- a private cluster ----------------------------------------------------------------


@pytest.fixture
async def nodes(tmp_path: Path) -> AsyncIterator[ClusterNodes]:
    cluster = ClusterNodes(tmp_path / "cluster")
    try:
        await cluster.start()
        yield cluster
    finally:
        cluster.stop()


async def shard_subscribers(cluster: RedisCluster, channel: str) -> int:
    """Subscribers of a sharded channel, as the node that holds its slot counts them."""
    node = cluster.get_node_from_key(channel)
    client = aioredis.Redis(host=node.host, port=node.port, decode_responses=True)
    try:
        reply = await client.execute_command("PUBSUB", "SHARDNUMSUB", channel)
        return int(reply[1])
    finally:
        await client.aclose()


# -- the hub on the cluster -----------------------------------------------------------


async def test_two_workers_watch_chat_tip_and_flush_on_a_three_node_cluster(
    nodes, env, workers, http, connect, token, sql, tmp_path
):
    overrides = {
        "REDIS_URL": nodes.url,
        "HUB_REDIS_SHARDS": "16",
        "HUB_CHAT_RATE": "4",
        "HUB_CHAT_PERIOD": "60",
    }
    hub_env = {**env, **overrides}
    keys = Keys(env["HUB_REDIS_PREFIX"], 16)
    cluster = nodes.client()
    w1, w2 = await workers(2, **overrides)
    flusher = FlusherProcess(hub_env, tmp_path / "flusher.log")
    try:
        await flusher.ready()
        api1, api2 = Api(http, w1.url), Api(http, w2.url)

        # Streams of several streamers land in several shards, on every node.
        # (Streamers are drawn until every node holds a stream: 9 at least, and 3 of 40 random
        # ones all landing on two nodes is next to impossible.)
        made: list[tuple[str, str]] = []
        await cluster.initialize()
        holders: set[str] = set()
        while len(made) < 9 or (len(holders) < 3 and len(made) < 40):
            streamer = unique("streamer")
            sid = (await api1.create_stream(token(streamer, "streamer")))["stream_id"]
            made.append((streamer, sid))
            holders.add(cluster.get_node_from_key(keys.of(sid).stream(sid)).name)
        for streamer, sid in made:
            assert keys.shard_of(sid) == keys.shard_of(streamer)  # drawn in its streamer's shard
            assert await cluster.exists(keys.of(sid).stream(sid)) == 1
        assert len(holders) == 3, holders

        # Two viewers on two workers: presence, and chat crossing the workers both ways.
        streamer, sid = made[0]
        a_user, b_user = unique("viewer-a"), unique("viewer-b")
        a = await connect(w1.url, token(a_user, name="A"))
        b = await connect(w2.url, token(b_user, name="B"))
        assert (await a.call("join_stream", {"stream_id": sid}))["success"]
        assert (await b.call("join_stream", {"stream_id": sid}))["success"]
        await a.wait_for("viewer_joined", lambda e: e["user_id"] == b_user)

        async def viewers(n: int) -> bool:
            _, body = await api2.request("GET", sid)
            return body["stream"]["viewer_count"] == n

        await until(lambda: viewers(2), 10, "two viewers counted")
        channel = keys.of(sid).room(sid)
        assert await shard_subscribers(cluster, channel) == 2  # one sharded subscription per worker
        sent = {}
        for sender, receiver, text in ((a, b, "from worker 1"), (b, a, "from worker 2")):
            ack = await sender.call("send_message", {"stream_id": sid, "message": text})
            assert ack["success"], ack
            sent[text] = ack["message"]["message_id"]
            got = await receiver.wait_for(
                "chat_message", lambda m, i=ack: m["message_id"] == i["message"]["message_id"]
            )
            assert got["message"] == text

        # A tip from worker 2, seen on worker 1, counted in cents.
        tip = await b.call("send_tip", {"stream_id": sid, "amount": "12.34", "client_tip_id": "t-1"})
        assert tip["success"], tip
        await a.wait_for("tip_received", lambda t: t["tip_id"] == tip["tip"]["tip_id"])
        again = await b.call("send_tip", {"stream_id": sid, "amount": "12.34", "client_tip_id": "t-1"})
        assert again["tip"]["tip_id"] == tip["tip"]["tip_id"]  # the retry charges nothing twice
        _, stats = await api1.request("GET", f"{sid}/stats")
        assert stats["stats"]["tip_count"] == 1 and Decimal(str(stats["stats"]["tips_total"])) == Decimal(
            "12.34"
        )

        # The chat rate is one user's across streams of different shards: a user in two
        # streams whose shards differ from each other gets four messages in all, not four each.
        other = next(s for _, s in made[1:] if keys.shard_of(s) != keys.shard_of(sid))
        c_user = unique("viewer-c")
        c1, c2 = await connect(w1.url, token(c_user)), await connect(w2.url, token(c_user))
        assert (await c1.call("join_stream", {"stream_id": sid}))["success"]
        assert (await c2.call("join_stream", {"stream_id": other}))["success"]
        codes = []
        for n in range(6):
            ack = await (c1, c2)[n % 2].call(
                "send_message", {"stream_id": (sid, other)[n % 2], "message": f"c{n}"}
            )
            codes.append("ok" if ack["success"] else ack["error"]["code"])
        assert codes == ["ok"] * 4 + ["rate_limited"] * 2, codes

        # A moderator whose rate lives in another shard gets the privileged rate (100), looked
        # up in the stream's shard before the rate is counted in the moderator's.
        mod = next(u for u in (unique("mod") for _ in range(200)) if keys.shard_of(u) != keys.shard_of(sid))
        status, _ = await api1.request(
            "POST", f"{sid}/moderators", token(streamer, "streamer"), json={"user_id": mod}
        )
        assert status == 200
        m = await connect(w2.url, token(mod))
        assert (await m.call("join_stream", {"stream_id": sid}))["success"]
        for n in range(6):
            assert (await m.call("send_message", {"stream_id": sid, "message": f"mod {n}"}))["success"], n

        # A ban from worker 2 reaches c's socket on worker 1 (an order on the sharded channel).
        status, _ = await api2.request(
            "POST", f"{sid}/bans", token(streamer, "streamer"), json={"user_id": c_user, "reason": "spam"}
        )
        assert status == 200
        assert (await c1.wait_for("banned", lambda e: e["stream_id"] == sid))["reason"] == "spam"
        await b.wait_for("user_banned", lambda e: e["user_id"] == c_user)
        refused = await c1.call("join_stream", {"stream_id": sid})
        assert refused["error"]["code"] == "banned"

        # The live list merges every shard's live set, most viewers first.
        status, body = await api2.request("GET", "live?limit=100")
        listed = [s["stream_id"] for s in body["streams"]]
        assert status == 200 and set(listed) >= {s for _, s in made}
        assert listed.index(sid) < min(listed.index(s) for _, s in made[1:])

        # A viewer leaves; the streamer ends the stream: both workers' viewers are told.
        assert (await a.call("leave_stream"))["success"]
        await b.wait_for("viewer_left", lambda e: e["user_id"] == a_user)
        await until(lambda: viewers(2), 10, "b and the moderator counted after a's leave")
        status, ended = await api2.request("POST", f"{sid}/end", token(streamer, "streamer"))
        assert status == 200, ended
        await b.wait_for("stream_ended", lambda e: e["stream_id"] == sid)
        await m.wait_for("stream_ended", lambda e: e["stream_id"] == sid)

        # The flusher drains every shard's outbox into MySQL: each row once.
        async def flushed() -> bool:
            rows = sql("SELECT status FROM streams WHERE stream_id = %s", sid)
            return (
                bool(rows)
                and rows[0]["status"] == "ENDED"
                and len(sql("SELECT 1 FROM viewing_sessions WHERE stream_id = %s", sid)) == 4
            )  # a, b, c, m

        await until(flushed, 20, "the ended stream and its sessions in MySQL")
        texts = [
            r["message"]
            for r in sql(
                "SELECT message FROM chat_messages WHERE stream_id IN (%s, %s) AND message_type <> 'TIP'",
                sid,
                other,
            )
        ]
        assert sorted(texts) == sorted(
            ["c0", "c1", "c2", "c3", "from worker 1", "from worker 2", *(f"mod {n}" for n in range(6))]
        )
        bans = sql(
            "SELECT action, user_id FROM moderation_actions WHERE stream_id = %s AND action = 'ban_user'", sid
        )
        assert bans == [{"action": "ban_user", "user_id": c_user}]
        tips = sql("SELECT amount FROM tips WHERE stream_id = %s", sid)
        assert [t["amount"] for t in tips] == [Decimal("12.34")]
        row = sql("SELECT tips_total, message_count FROM streams WHERE stream_id = %s", sid)[0]
        assert row["tips_total"] == Decimal("12.34")

        async def outboxes_empty() -> bool:
            return sum([await cluster.xlen(k.outbox) for k in keys.all]) == 0

        await until(outboxes_empty, 20, "every shard's outbox drained")

        # Operators read the same state from the command line.
        shown = hub_command(hub_env, "inspect", "--json")
        assert shown.returncode == 0, shown.stderr
        overview = json.loads(shown.stdout)
        assert overview["live_total"] == len(made) - 1 and len(overview["workers"]) == 2
        assert overview["outbox"]["entries"] == 0
        shown = hub_command(hub_env, "inspect", other, "--json")
        assert shown.returncode == 0, shown.stderr
        one = json.loads(shown.stdout)
        assert one["keys"] == keys.of(other).stream(other) and one["viewer_count"] == 1
        assert [m["message"] for m in one["recent_messages"]] == ["c1", "c3"]
        checked = hub_command(hub_env, "check")
        assert checked.returncode == 0, checked.stdout + checked.stderr
    finally:
        flusher.stop()
        await cluster.aclose()


async def test_a_restarted_node_is_reconnected_and_resubscribed_by_both_workers(
    nodes, env, workers, http, connect, token
):
    # Chat is retried every 50 ms until it crosses: a rate that polling never reaches.
    overrides = {
        "REDIS_URL": nodes.url,
        "HUB_REDIS_SHARDS": "16",
        "HUB_PRESENCE_TTL": "10",
        "HUB_CHAT_RATE": "100000",
    }
    keys = Keys(env["HUB_REDIS_PREFIX"], 16)
    cluster = nodes.client()
    try:
        w1, w2 = await workers(2, **overrides)
        api = Api(http, w1.url)
        sid = (await api.create_stream(token(unique("streamer"), "streamer")))["stream_id"]
        a = await connect(w1.url, token(unique("a")))
        b = await connect(w2.url, token(unique("b")))
        for c in (a, b):
            assert (await c.call("join_stream", {"stream_id": sid}))["success"]
        await cluster.initialize()
        node = cluster.get_node_from_key(keys.of(sid).room(sid))
        assert await shard_subscribers(cluster, keys.of(sid).room(sid)) == 2

        await nodes.restart(node.port)  # the node that holds the stream, its channel and outbox

        # Calls during the outage may be refused (unavailable); then chat crosses both ways
        # again, on subscriptions the workers made anew on the restarted node.
        for sender, receiver in ((a, b), (b, a)):
            sent: set[str] = set()

            async def crossed(sender=sender, receiver=receiver, sent=sent) -> bool:
                ack = await sender.call("send_message", {"stream_id": sid, "message": "after the restart"})
                if ack["success"]:
                    sent.add(ack["message"]["message_id"])
                else:
                    assert ack["error"]["code"] == "unavailable", ack
                return any(m["message_id"] in sent for m in receiver.events["chat_message"])

            await until(crossed, 20, "chat crossing the workers after the node's restart")
        assert await shard_subscribers(cluster, keys.of(sid).room(sid)) == 2
        _, body = await api.request("GET", sid)
        assert body["stream"]["viewer_count"] == 2
    finally:
        await cluster.aclose()


# -- the cluster client and subscriber under load ------------------------------------


async def test_first_subscriptions_made_at_once_on_a_node_are_all_confirmed(nodes):
    """redis-py opens a PubSub's connection on its first command; overlapping first commands
    each opened one and only the last was read, so the others were never confirmed."""
    client = cluster_client(
        ClusterSettings(nodes=(("127.0.0.1", nodes.ports[0]),), username=None, password=None),
        decode_responses=False,
    )
    subscriber = ShardedSubscriber(client, None, None)
    channels = [f"hubtest:{{{i}}}:room:x" for i in range(24)]
    try:
        await asyncio.gather(*(subscriber.subscribe(c) for c in channels))
        confirmed: set[bytes] = set()

        async def all_confirmed() -> bool:
            message = await subscriber.get_message(timeout=0.2)
            if message is not None and message["type"] == "subscribe":
                confirmed.add(message["channel"])
            return len(confirmed) == len(channels)

        await until(all_confirmed, 10, "every subscription confirmed")
        for channel in channels:
            assert await shard_subscribers(client, channel) == 1
    finally:
        await subscriber.aclose()
        await client.aclose()


async def test_the_cluster_client_waits_for_a_free_connection_instead_of_failing(nodes):
    """redis-py's cluster client refuses a command when all of a node's connections are busy;
    the hub's waits for one, as its pool on one Redis does."""
    client = cluster_client(
        ClusterSettings(nodes=(("127.0.0.1", nodes.ports[0]),), username=None, password=None)
    )
    script = client.register_script("return redis.call('INCR', KEYS[1])")
    try:
        await client.initialize()  # as connect_redis does: redis-py's lazy one under load is not safe
        replies = await asyncio.gather(*(script(keys=["hubtest:{1}:n"]) for _ in range(300)))
        assert sorted(replies) == list(range(1, 301))
        async with client.pipeline(transaction=False) as pipe:
            for i in range(16):
                pipe.get(f"hubtest:{{{i}}}:n")
            assert (await pipe.execute())[1] == "300"
    finally:
        await client.aclose()


async def test_a_backlog_in_one_shard_fills_whole_batches(nodes, env, settings, rds):
    hub_settings = Settings.from_env(
        {**env, "REDIS_URL": nodes.url, "HUB_REDIS_SHARDS": "16", "HUB_FLUSH_BATCH": "500"}
    )
    client = await connect_redis(hub_settings, socket_timeout=5)
    try:
        flusher = Flusher(hub_settings, client, writer=None)  # type: ignore[arg-type]
        await flusher.ensure_group()
        hot = flusher.keys.all[5].outbox
        async with client.pipeline(transaction=False) as pipe:
            for n in range(1200):
                pipe.xadd(hot, {"t": "message", "d": str(n)})
            await pipe.execute()
        await client.xadd(flusher.keys.all[9].outbox, {"t": "message", "d": "other"})
        first = await flusher.read(None)
        assert len(first) == 500  # a whole batch, not one shard's sixteenth of it
        assert {entry_id.split("/")[0] for entry_id, _ in first} == {"5", "9"}
        second, third = await flusher.read(None), await flusher.read(None)
        assert [len(second), len(third)] == [500, 201]
        assert await flusher.read(None) == []
    finally:
        await client.aclose()
