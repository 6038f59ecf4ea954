"""Prometheus metrics of the web workers and the flusher (prometheus-client's default registry).

Counters are incremented where the thing happens; what is cheaper to read than to count (open
connections, the outbox's length and age) is read when ``/metrics`` is scraped. Label values
come from fixed sets (event names the hub handles, error codes, script names, table names), so
no user input ever becomes a label. The counters the fan-out path keeps itself (deliveries,
socket writes, cut-offs, paced events, room messages) belong to each worker, in its own
registry (``hub.worker.FanoutCounters``), served on the same ``/metrics`` page.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# -- web workers ------------------------------------------------------------------------
CONNECTIONS = Gauge("hub_connections", "Socket.IO connections on this worker")
WATCHING = Gauge("hub_watching", "Connections on this worker that watch a stream (its viewers)")
STREAMS_WATCHED = Gauge("hub_streams_watched", "Streams with at least one viewer on this worker")
JOINS = Counter("hub_joins", "Streams joined (join_stream accepted) on this worker")
EVENTS = Counter("hub_events", "Socket.IO events received from clients, by event", ["event"])
ERRORS = Counter(
    "hub_errors", "Refusals sent to clients, by error code and where (socket, connect, rest)", ["code", "via"]
)
BROADCAST_SOCKETS = Histogram(
    "hub_broadcast_sockets",
    "Local sockets one room write went to (fan-out size per worker)",
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000),
)
REDIS_SECONDS = Histogram(
    "hub_redis_seconds",
    "Round trip of the hub's Redis scripts, by script (chat_batch is one per batch)",
    ["script"],
    buckets=(0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
OUTBOX_ENTRIES = Gauge("hub_outbox_entries", "Outbox entries not yet written to MySQL (read or not)")
OUTBOX_PENDING = Gauge("hub_outbox_pending", "Outbox entries read by a flusher and not yet acknowledged")
OUTBOX_AGE = Gauge("hub_outbox_oldest_age_seconds", "Age of the oldest outbox entry not yet written")

# -- the flusher (its own registry, served on its own port) -------------------------------
FLUSHER = CollectorRegistry()
FLUSH_BATCH_RECORDS = Histogram(
    "hub_flusher_batch_records",
    "Records in one batch written to MySQL",
    buckets=(1, 5, 10, 50, 100, 250, 500, 1000, 2000, 5000, 10000),
    registry=FLUSHER,
)
FLUSH_BATCH_SECONDS = Histogram(
    "hub_flusher_batch_seconds",
    "Time to write and commit one batch (retries included)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    registry=FLUSHER,
)
FLUSH_ROWS = Counter("hub_flusher_rows", "Rows written to MySQL, by table", ["table"], registry=FLUSHER)
FLUSH_DEAD = Counter(
    "hub_flusher_dead_letters", "Malformed outbox records moved to outbox:dead", registry=FLUSHER
)
MYSQL_ERRORS = Counter(
    "hub_flusher_mysql_errors",
    "Failed batch writes, each retried until it commits, by kind (workers.failures.KINDS: connection, "
    "schema, permission, read_only, deadlock, lock_timeout, too_many_connections, disk_full, data, other)",
    ["kind"],
    registry=FLUSHER,
)
FLUSH_STALLED = Gauge(
    "hub_flusher_stalled_seconds",
    "How long the batch being written has been failing (0: none failing)",
    registry=FLUSHER,
)
FLUSH_CONSUMERS_REMOVED = Counter(
    "hub_flusher_consumers_removed",
    "Idle outbox consumers with nothing pending removed from the group",
    registry=FLUSHER,
)
FLUSHER_OUTBOX_ENTRIES = Gauge(
    "hub_outbox_entries", "Outbox entries not yet written to MySQL", registry=FLUSHER
)
FLUSHER_OUTBOX_AGE = Gauge(
    "hub_outbox_oldest_age_seconds", "Age of the oldest outbox entry not yet written", registry=FLUSHER
)


def error(code: str, via: str) -> None:
    ERRORS.labels(code, via).inc()


def set_outbox(lag: dict[str, Any]) -> None:
    OUTBOX_ENTRIES.set(lag.get("entries", 0))
    OUTBOX_PENDING.set(lag.get("pending", 0))
    OUTBOX_AGE.set(lag.get("oldest_age_seconds", 0.0))
