"""What an operator watches: the workers' and the flusher's /metrics, and structured logs."""

from __future__ import annotations

import json
import re
import uuid

import aiohttp
import socketio
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Api, Client, eventually, free_port, unique
from tests.faults import FlusherProcess


async def scrape(
    http: aiohttp.ClientSession, url: str
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a /metrics page: (name, sorted labels) -> value."""
    async with http.get(url) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = await resp.text()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_worker_metrics_count_joins_events_errors_and_fan_out(server, http, base_url, api, token):
    before = await scrape(http, f"{base_url}/metrics")
    stream_id = (await api.create_stream(token(unique("streamer"), "streamer")))["stream_id"]
    viewer = Client()
    refused = Client()
    try:
        await viewer.connect(base_url, token(unique("viewer")))
        assert (await viewer.call("join_stream", {"stream_id": stream_id}))["success"]
        assert (await viewer.call("send_message", {"stream_id": stream_id, "message": "hi"}))["success"]
        bad = await viewer.call("send_message", {"stream_id": stream_id, "message": ""})
        assert bad["error"]["code"] == "invalid"
        await viewer.wait_for("chat_message")
        try:
            await refused.connect(base_url, "not-a-token")
        except Exception:
            pass
        assert refused.events["connect_error"]
        status, _ = await api.request("GET", f"/api/v1/streaming/{uuid.uuid4()}")
        assert status == 404
        after = await scrape(http, f"{base_url}/metrics")
    finally:
        await viewer.close()
        await refused.close()

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("hub_joins_total") == 1
    assert delta("hub_events_total", event="join_stream") == 1
    assert delta("hub_events_total", event="send_message") == 2
    assert delta("hub_errors_total", code="invalid", via="socket") == 1
    assert delta("hub_errors_total", code="unauthorized", via="connect") == 1
    assert delta("hub_errors_total", code="not_found", via="rest") == 1
    assert delta("hub_redis_seconds_count", script="join") == 1
    assert delta("hub_redis_seconds_count", script="chat_batch") >= 1
    assert delta("hub_broadcast_sockets_count") >= 2  # viewer_joined (to nobody else) may not count
    assert value(after, "hub_connections") >= 1
    assert value(after, "hub_watching") >= 1 and value(after, "hub_streams_watched") >= 1
    assert ("hub_outbox_entries", ()) in after and ("hub_outbox_oldest_age_seconds", ()) in after


async def test_each_worker_in_a_process_serves_its_own_fan_out_counters(
    server, aiohttp_server, settings, http, base_url, api, token
):
    """The fan-out counters are the worker's own: a second worker made in the same process
    neither takes over the first one's figures nor shows them."""
    from hub.worker import create_app

    other = await aiohttp_server(create_app(settings))
    stream_id = (await api.create_stream(token(unique("streamer"), "streamer")))["stream_id"]
    viewer = Client()
    try:
        await viewer.connect(base_url, token(unique("viewer")))
        assert (await viewer.call("join_stream", {"stream_id": stream_id}))["success"]
        said = await viewer.call("send_message", {"stream_id": stream_id, "message": "counted here"})
        await viewer.wait_for("chat_message", lambda m: m["message_id"] == said["message"]["message_id"])
        here = await scrape(http, f"{base_url}/metrics")
        there = await scrape(http, str(other.make_url("/metrics")))
    finally:
        await viewer.close()
    assert value(here, "hub_deliveries_total") >= 1 and value(here, "hub_socket_writes_total") >= 1
    assert value(there, "hub_deliveries_total") == 0 and value(there, "hub_socket_writes_total") == 0


async def test_the_flusher_serves_its_own_metrics(env, http, server, base_url, api, token, tmp_path):
    port = free_port()
    flusher = FlusherProcess({**env, "HUB_FLUSHER_METRICS_PORT": str(port)}, tmp_path / "flusher.log")
    try:
        await flusher.ready()
        stream_id = (await api.create_stream(token(unique("streamer"), "streamer")))["stream_id"]
        viewer = Client()
        try:
            await viewer.connect(base_url, token(unique("viewer")))
            assert (await viewer.call("join_stream", {"stream_id": stream_id}))["success"]
            for i in range(3):
                assert (await viewer.call("send_message", {"stream_id": stream_id, "message": f"m{i}"}))[
                    "success"
                ]
        finally:
            await viewer.close()
        url = f"http://127.0.0.1:{port}/metrics"

        async def written() -> bool:
            samples = await scrape(http, url)
            return value(samples, "hub_flusher_rows_total", table="chat_messages") >= 3

        await eventually(written, what="the flusher's metrics count the messages written")
        samples = await scrape(http, url)
        assert value(samples, "hub_flusher_rows_total", table="streams") >= 1
        assert value(samples, "hub_flusher_batch_records_count") >= 1
        assert value(samples, "hub_flusher_batch_seconds_sum") > 0
        assert ("hub_outbox_entries", ()) in samples
        assert value(samples, "hub_flusher_mysql_errors_total", kind="connection") == 0
        assert not [k for k in samples if k[0] == "hub_connections"]  # the workers' figures stay theirs
    finally:
        flusher.stop()


async def test_json_logs_name_the_stream_and_user_and_never_the_message_or_token(workers, http, token):
    (w,) = await workers(1, HUB_LOG_FORMAT="json", HUB_LOG_LEVEL="INFO")
    streamer_id = unique("streamer")
    streamer_token = token(streamer_id, "streamer")
    api = Api(http, w.url)
    stream_id = (await api.create_stream(streamer_token))["stream_id"]
    body = f"secret-body-{uuid.uuid4().hex}"
    streamer = Client()
    try:
        await streamer.connect(w.url, streamer_token)
        assert (await streamer.call("join_stream", {"stream_id": stream_id}))["success"]
        assert (await streamer.call("send_message", {"stream_id": stream_id, "message": body}))["success"]
        assert (await streamer.call("set_slow_mode", {"stream_id": stream_id, "seconds": 5}))["success"]
        status, _ = await api.request("POST", f"/api/v1/streaming/{stream_id}/end", streamer_token)
        assert status == 200
    finally:
        await streamer.close()

    def lines() -> list[dict]:
        return [json.loads(line) for line in w.log_path.read_text().splitlines() if line.startswith("{")]

    async def logged() -> bool:
        return any(line["message"] == "stream ended" for line in lines())

    await eventually(logged, what="the end of the stream logged")
    found = {line["message"]: line for line in lines()}
    created = found["stream created (LIVE)"]
    assert created["stream_id"] == stream_id and created["user_id"] == streamer_id
    assert (
        created["level"] == "INFO"
        and created["logger"] == "hub.domain.streams"
        and created["ts"].endswith("Z")
    )
    assert created["request"] == "POST /api/v1/streaming/create"
    slow = found["moderation: set_slow_mode"]
    assert (slow["stream_id"], slow["user_id"], slow["event"]) == (stream_id, streamer_id, "set_slow_mode")
    assert slow["sid"]
    ended = found["stream ended"]
    assert ended["stream_id"] == stream_id and ended["request"] == "POST /api/v1/streaming/{stream_id}/end"
    text = w.log_path.read_text()
    assert body not in text and streamer_token not in text


async def test_admin_ui_is_off_unless_configured_then_behind_its_password(workers, base_url, token):
    async def admin_connects(url: str, auth: dict[str, str]) -> socketio.AsyncClient | None:
        client = socketio.AsyncClient(reconnection=False)
        try:
            await client.connect(
                url, namespaces=["/admin"], auth=auth, transports=["websocket"], wait_timeout=10
            )
        except socketio.exceptions.ConnectionError:
            await client.disconnect()
            return None
        return client

    assert await admin_connects(base_url, {"username": "ops", "password": "x" * 12}) is None  # off
    password = f"admin-{uuid.uuid4().hex}"
    (w,) = await workers(1, HUB_ADMIN_USERNAME="ops", HUB_ADMIN_PASSWORD=password)
    assert await admin_connects(w.url, {"username": "ops", "password": password + "x"}) is None
    stats: list[dict] = []
    config: list[dict] = []
    admin = socketio.AsyncClient(reconnection=False)
    admin.on("server_stats", lambda data: stats.append(data), namespace="/admin")
    admin.on("config", lambda data: config.append(data), namespace="/admin")
    viewer = Client()
    try:
        await admin.connect(
            w.url,
            namespaces=["/admin"],
            auth={"username": "ops", "password": password},
            transports=["websocket"],
            wait_timeout=10,
        )
        await viewer.connect(w.url, token(unique("viewer")))

        async def seen() -> bool:
            return bool(config) and any(s["clientsCount"] >= 2 for s in stats)

        await eventually(seen, what="the admin UI's stats count the viewer")
        assert "EMIT" not in config[0]["supportedFeatures"]  # read-only
        streaming = [n for n in stats[-1]["namespaces"] if n["name"] == "/streaming"]
        assert streaming and streaming[0]["socketsCount"] >= 1
    finally:
        await viewer.close()
        await admin.disconnect()


async def test_the_grafana_dashboard_reads_only_metrics_the_hub_exposes(http, base_url):
    from prometheus_client import generate_latest

    from hub import metrics
    from tests.conftest import ROOT

    dashboard = json.loads((ROOT / "deploy" / "grafana-dashboard.json").read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p.get("targets", []))
    used = set(re.findall(r"hub_[a-z_]+", exprs))
    async with http.get(f"{base_url}/metrics") as resp:
        text = await resp.text()
    text += generate_latest(metrics.FLUSHER).decode()
    families = {f.name for f in text_string_to_metric_families(text)}

    def exposed(name: str) -> bool:
        return name in families or re.sub(r"_(total|bucket|count|sum)$", "", name) in families

    assert used and not [name for name in sorted(used) if not exposed(name)]
