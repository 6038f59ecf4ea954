"""One settings object, built once from the environment at start and passed down.

Nothing else in the hub or the workers reads ``os.environ``.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TypeVar
from urllib.parse import ParseResult, unquote, urlparse


class SettingsError(ValueError):
    """A bad configuration value; the message is one line naming the variable."""


@dataclass(frozen=True)
class MySQLSettings:
    host: str
    port: int
    user: str
    password: str
    database: str
    url: str

    @classmethod
    def from_url(cls, url: str) -> MySQLSettings:
        parsed = urlparse(url)
        if parsed.scheme not in ("mysql", "mariadb") or not parsed.hostname:
            raise SettingsError(f"MYSQL_URL: expected mysql://user[:password]@host[:port]/db, got {url!r}")
        database = parsed.path.lstrip("/")
        if not database or not database.replace("_", "").isalnum():
            raise SettingsError(f"MYSQL_URL: database name must be letters, digits and _, got {database!r}")
        try:
            port = parsed.port or 3306
        except ValueError as exc:
            raise SettingsError(f"MYSQL_URL: bad port in {url!r}") from exc
        return cls(
            host=parsed.hostname,
            port=port,
            user=unquote(parsed.username or "root"),
            password=unquote(parsed.password or ""),
            database=database,
            url=url,
        )

    def with_database(self, database: str) -> MySQLSettings:
        url = self.url.rsplit("/", 1)[0] + "/" + database
        return MySQLSettings.from_url(url)


SENTINEL_SCHEME = "redis+sentinel"
SENTINEL_FORM = "redis+sentinel://[:password@]host:port[,host:port...]/db/service"


def is_sentinel_url(url: str) -> bool:
    return urlparse(url).scheme == SENTINEL_SCHEME


@dataclass(frozen=True)
class SentinelSettings:
    """``REDIS_URL=redis+sentinel://[:password@]host1:port1[,host2:port2...]/DB/SERVICE``: the
    sentinels to ask for SERVICE's master, and the database and password to use on it (the
    sentinels themselves are asked without one). python-socketio reads the same form."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int
    username: str | None
    password: str | None

    @classmethod
    def from_url(cls, url: str) -> SentinelSettings:
        parsed = urlparse(url)
        if parsed.scheme != SENTINEL_SCHEME:
            raise SettingsError(f"REDIS_URL: expected {SENTINEL_FORM}")
        sentinels = _addresses(parsed, SENTINEL_FORM, "sentinel")
        parts = parsed.path.split("/")
        if len(parts) != 3 or not parts[1].isdigit() or not parts[2]:
            raise SettingsError(
                f"REDIS_URL: expected {SENTINEL_FORM} (the database number and the "
                f"service name the sentinels monitor), got the path {parsed.path!r}"
            )
        return cls(sentinels, unquote(parts[2]), int(parts[1]), *_credentials(parsed))


def _addresses(parsed: ParseResult, form: str, what: str) -> tuple[tuple[str, int], ...]:
    """The comma-separated ``host:port`` list of a URL's network location."""
    found = []
    for part in parsed.netloc.rpartition("@")[2].split(","):
        host, _, port = part.rpartition(":")
        host = host.removeprefix("[").removesuffix("]")  # [::1]:26379
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise SettingsError(f"REDIS_URL: each {what} is host:port, got {part!r} ({form})")
        found.append((host, int(port)))
    return tuple(found)


def _credentials(parsed: ParseResult) -> tuple[str | None, str | None]:
    return (
        unquote(parsed.username) if parsed.username else None,
        unquote(parsed.password) if parsed.password else None,
    )


CLUSTER_SCHEME = "redis+cluster"
CLUSTER_FORM = "redis+cluster://[[user]:password@]host:port[,host:port...]"


def is_cluster_url(url: str) -> bool:
    return urlparse(url).scheme == CLUSTER_SCHEME


@dataclass(frozen=True)
class ClusterSettings:
    """``REDIS_URL=redis+cluster://[:password@]host1:port1[,host2:port2...]``: Redis Cluster
    nodes to learn the cluster's layout from (one that answers is enough; the others are asked
    when it does not), and the password of the nodes. A cluster has database 0 only."""

    nodes: tuple[tuple[str, int], ...]
    username: str | None
    password: str | None

    @classmethod
    def from_url(cls, url: str) -> ClusterSettings:
        parsed = urlparse(url)
        if parsed.scheme != CLUSTER_SCHEME:
            raise SettingsError(f"REDIS_URL: expected {CLUSTER_FORM}")
        nodes = _addresses(parsed, CLUSTER_FORM, "cluster node")
        if parsed.path not in ("", "/", "/0"):
            raise SettingsError(
                f"REDIS_URL: a cluster has database 0 only ({CLUSTER_FORM}), got the path {parsed.path!r}"
            )
        return cls(nodes, *_credentials(parsed))


@dataclass(frozen=True)
class Settings:
    redis_url: str = "redis://127.0.0.1:6379/0"
    mysql: MySQLSettings = field(
        default_factory=lambda: MySQLSettings.from_url("mysql://root@127.0.0.1:3306/hub")
    )
    redis_prefix: str = "hub:"
    # Shards of the live state (hub.storage.keys): 1 on one Redis; on a cluster, 16 unless set.
    redis_shards: int = 1
    jwt_secret: str | None = None
    jwt_public_key: str | None = None
    jwt_public_keys: tuple[tuple[str, str], ...] = ()
    # An identity provider's JSON Web Key Set (Auth0, Keycloak, Cognito, Firebase): fetched,
    # cached, fetched again for an unknown kid at most once per jwt_jwks_min_interval seconds.
    jwt_jwks_url: str | None = None
    jwt_jwks_min_interval: float = 30.0
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    jwt_leeway: int = 10
    cors_origins: tuple[str, ...] = ()
    platform_fee: Decimal = Decimal("0.05")
    tip_min: Decimal = Decimal("1.00")
    tip_max: Decimal = Decimal("10000.00")
    currency: str = "USD"
    chat_rate: int = 20
    chat_period: int = 30
    chat_rate_privileged: int = 100
    tip_rate: int = 10
    tip_period: int = 10
    conn_rate: int = 30
    conn_period: int = 10
    user_max_conns: int = 10
    address_max_conns: int = 100
    join_rate: int = 10
    join_period: int = 10
    presence_ttl: float = 15.0
    presence_refresh: float = 5.0
    reap_interval: float = 2.0
    # A LIVE stream with no socket of its streamer watching it and no activity for this long
    # (s) is ended by the hub; 0: never. An hour: far longer than a streamer's app takes to
    # reconnect, short enough that an abandoned stream leaves the live lists the same hour.
    live_idle_end: int = 3600
    recent_size: int = 200
    max_payload: int = 16 * 1024
    ended_retention: int = 24 * 3600
    scheduled_grace: int = 24 * 3600
    scheduled_max: int = 10
    create_rate: int = 20
    moderation_rate: int = 60
    namespace_timeout: float = 5.0
    # Engine.IO's heartbeat (python-engineio's and socket.io's defaults): the server pings every
    # ping_interval seconds and closes a connection whose pong has not come ping_timeout later.
    # Clients take both from the handshake; a longer interval costs an idle worker less (a
    # ping and a pong per connection and interval) but finds a vanished client later.
    ping_interval: float = 25.0
    ping_timeout: float = 20.0
    moderation_period: int = 60
    create_period: int = 3600
    tip_idempotency_ttl: int = 7 * 24 * 3600
    flush_batch: int = 2000
    flush_claim_idle_ms: int = 30_000
    log_level: str = "INFO"
    drain_seconds: float = 3.0
    send_queue_limit: int = 1000
    send_buffer_limit: int = 1024 * 1024
    viewer_events_coalesce_above: int = 100
    viewer_events_interval: float = 0.5
    fanout_pace_above: int = 100
    fanout_interval: float = 0.025
    log_format: str = "text"
    flusher_metrics_port: int = 9101
    flusher_metrics_host: str = "127.0.0.1"
    admin_username: str | None = None
    admin_password: str | None = None
    admin_mode: str = "production"
    # The web console's "get a development token" button (POST /console/dev-token): make run only.
    console_dev_tokens: bool = False
    # The cyclic garbage collector's thresholds (gc.set_threshold); None leaves Python's.
    gc_thresholds: tuple[int, int, int] | None = (50_000, 20, 100)
    shutdown_deadline: float = 15.0
    # Proxies whose X-Forwarded-For names the client (hub.transport.addresses); none by default.
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    @property
    def redis_sentinel(self) -> SentinelSettings | None:
        """Where to find the Redis master when REDIS_URL names sentinels; None for a plain URL."""
        return SentinelSettings.from_url(self.redis_url) if is_sentinel_url(self.redis_url) else None

    @property
    def redis_cluster(self) -> ClusterSettings | None:
        """The Redis Cluster nodes when REDIS_URL names a cluster; None otherwise."""
        return ClusterSettings.from_url(self.redis_url) if is_cluster_url(self.redis_url) else None

    @property
    def jwt_algorithms(self) -> list[str]:
        if self.jwt_public_key or self.jwt_public_keys or self.jwt_jwks_url:
            return ["RS256", "ES256"]
        return ["HS256"]

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        default = cls()
        redis_url = env.get("REDIS_URL", default.redis_url)
        if is_sentinel_url(redis_url):
            SentinelSettings.from_url(redis_url)  # a bad one stops the process here
        elif is_cluster_url(redis_url):
            ClusterSettings.from_url(redis_url)
        elif urlparse(redis_url).scheme not in ("redis", "rediss", "unix"):
            raise SettingsError(
                f"REDIS_URL: expected redis://host:port/db, {SENTINEL_FORM} or "
                f"{CLUSTER_FORM}, got {redis_url!r}"
            )
        mysql = MySQLSettings.from_url(env.get("MYSQL_URL", default.mysql.url))
        settings = cls(
            redis_url=redis_url,
            mysql=mysql,
            redis_prefix=env.get("HUB_REDIS_PREFIX", default.redis_prefix),
            redis_shards=_int(env, "HUB_REDIS_SHARDS", 16 if is_cluster_url(redis_url) else 1, 1, 1024),
            jwt_secret=env.get("HUB_JWT_SECRET") or None,
            jwt_public_key=_read_key(env.get("HUB_JWT_PUBLIC_KEY")),
            jwt_public_keys=_read_keys(env.get("HUB_JWT_PUBLIC_KEYS_DIR")),
            jwt_jwks_url=env.get("HUB_JWT_JWKS_URL", "").strip() or None,
            jwt_jwks_min_interval=_float(
                env, "HUB_JWT_JWKS_MIN_INTERVAL", default.jwt_jwks_min_interval, 1.0, 3600.0
            ),
            jwt_audience=env.get("HUB_JWT_AUDIENCE") or None,
            jwt_issuer=env.get("HUB_JWT_ISSUER") or None,
            jwt_leeway=_int(env, "HUB_JWT_LEEWAY", default.jwt_leeway, 0, 300),
            cors_origins=tuple(o.strip() for o in env.get("HUB_CORS_ORIGINS", "").split(",") if o.strip()),
            platform_fee=_decimal(env, "HUB_PLATFORM_FEE", default.platform_fee, Decimal(0), Decimal(1)),
            tip_min=_decimal(env, "HUB_TIP_MIN", default.tip_min, Decimal("0.01"), Decimal("9999999999.99")),
            tip_max=_decimal(env, "HUB_TIP_MAX", default.tip_max, Decimal("0.01"), Decimal("9999999999.99")),
            currency=env.get("HUB_CURRENCY", default.currency).strip().upper(),
            chat_rate=_int(env, "HUB_CHAT_RATE", default.chat_rate, 1, 100_000),
            chat_period=_int(env, "HUB_CHAT_PERIOD", default.chat_period, 1, 86_400),
            chat_rate_privileged=_int(
                env, "HUB_CHAT_RATE_PRIVILEGED", default.chat_rate_privileged, 1, 100_000
            ),
            tip_rate=_int(env, "HUB_TIP_RATE", default.tip_rate, 1, 100_000),
            tip_period=_int(env, "HUB_TIP_PERIOD", default.tip_period, 1, 86_400),
            conn_rate=_int(env, "HUB_CONN_RATE", default.conn_rate, 1, 1_000_000),
            conn_period=_int(env, "HUB_CONN_PERIOD", default.conn_period, 1, 86_400),
            user_max_conns=_int(env, "HUB_USER_MAX_CONNS", default.user_max_conns, 1, 100_000),
            address_max_conns=_int(env, "HUB_ADDRESS_MAX_CONNS", default.address_max_conns, 1, 10_000_000),
            join_rate=_int(env, "HUB_JOIN_RATE", default.join_rate, 1, 1_000_000),
            join_period=_int(env, "HUB_JOIN_PERIOD", default.join_period, 1, 86_400),
            presence_ttl=_float(env, "HUB_PRESENCE_TTL", default.presence_ttl, 1.0, 25.0),
            presence_refresh=_float(env, "HUB_PRESENCE_REFRESH", default.presence_refresh, 0.2, 10.0),
            reap_interval=_float(env, "HUB_REAP_INTERVAL", default.reap_interval, 0.2, 5.0),
            live_idle_end=_int(env, "HUB_LIVE_IDLE_END", default.live_idle_end, 0, 7 * 86_400),
            recent_size=_int(env, "HUB_RECENT_SIZE", default.recent_size, 50, 10_000),
            max_payload=_int(env, "HUB_MAX_PAYLOAD", default.max_payload, 1024, 16 * 1024 * 1024),
            ended_retention=_int(env, "HUB_ENDED_RETENTION", default.ended_retention, 60, 30 * 86_400),
            scheduled_grace=_int(env, "HUB_SCHEDULED_GRACE", default.scheduled_grace, 60, 30 * 86_400),
            scheduled_max=_int(env, "HUB_SCHEDULED_MAX", default.scheduled_max, 1, 1000),
            create_rate=_int(env, "HUB_CREATE_RATE", default.create_rate, 1, 100_000),
            create_period=_int(env, "HUB_CREATE_PERIOD", default.create_period, 1, 86_400),
            moderation_rate=_int(env, "HUB_MODERATION_RATE", default.moderation_rate, 1, 100_000),
            namespace_timeout=_float(env, "HUB_NAMESPACE_TIMEOUT", default.namespace_timeout, 0.5, 60.0),
            ping_interval=_float(env, "HUB_PING_INTERVAL", default.ping_interval, 1.0, 600.0),
            ping_timeout=_float(env, "HUB_PING_TIMEOUT", default.ping_timeout, 1.0, 600.0),
            moderation_period=_int(env, "HUB_MODERATION_PERIOD", default.moderation_period, 1, 86_400),
            flush_batch=_int(env, "HUB_FLUSH_BATCH", default.flush_batch, 1, 10_000),
            flush_claim_idle_ms=_int(
                env, "HUB_FLUSH_CLAIM_IDLE_MS", default.flush_claim_idle_ms, 100, 3_600_000
            ),
            log_level=env.get("HUB_LOG_LEVEL", default.log_level).upper(),
            send_queue_limit=_int(env, "HUB_SEND_QUEUE_LIMIT", default.send_queue_limit, 10, 1_000_000),
            viewer_events_coalesce_above=_int(
                env, "HUB_VIEWER_EVENTS_COALESCE_ABOVE", default.viewer_events_coalesce_above, 1, 100_000_000
            ),
            viewer_events_interval=_float(
                env, "HUB_VIEWER_EVENTS_INTERVAL", default.viewer_events_interval, 0.05, 10.0
            ),
            fanout_pace_above=_int(env, "HUB_FANOUT_PACE_ABOVE", default.fanout_pace_above, 0, 100_000_000),
            fanout_interval=_float(env, "HUB_FANOUT_INTERVAL", default.fanout_interval, 0.0, 1.0),
            gc_thresholds=_gc_thresholds(env, default.gc_thresholds),
            log_format=env.get("HUB_LOG_FORMAT", default.log_format).strip().lower(),
            flusher_metrics_port=_int(
                env, "HUB_FLUSHER_METRICS_PORT", default.flusher_metrics_port, 0, 65535
            ),
            flusher_metrics_host=env.get("HUB_FLUSHER_METRICS_HOST", default.flusher_metrics_host),
            admin_username=env.get("HUB_ADMIN_USERNAME") or None,
            admin_password=env.get("HUB_ADMIN_PASSWORD") or None,
            admin_mode=env.get("HUB_ADMIN_MODE", default.admin_mode).strip().lower(),
            console_dev_tokens=_flag(env, "HUB_CONSOLE_DEV_TOKENS"),
            send_buffer_limit=_int(env, "HUB_SEND_BUFFER_LIMIT", default.send_buffer_limit, 4096, 1 << 30),
            drain_seconds=_float(env, "HUB_DRAIN_SECONDS", default.drain_seconds, 0.0, 300.0),
            shutdown_deadline=_float(env, "HUB_SHUTDOWN_DEADLINE", default.shutdown_deadline, 1.0, 600.0),
            trusted_proxies=_networks(env, "HUB_TRUSTED_PROXIES"),
        )
        settings.check()
        return settings

    def check(self) -> None:
        if len(self.currency) != 3 or not self.currency.isalpha():
            raise SettingsError(f"HUB_CURRENCY: expected a 3-letter code, got {self.currency!r}")
        if self.tip_min > self.tip_max:
            raise SettingsError("HUB_TIP_MIN: must not exceed HUB_TIP_MAX")
        if self.platform_fee > 0 and self.tip_min * self.platform_fee < Decimal("0.005"):
            raise SettingsError(
                "HUB_TIP_MIN: too small for HUB_PLATFORM_FEE, the fee on the minimum tip would round to zero"
            )
        if self.presence_refresh * 2 > self.presence_ttl:
            raise SettingsError("HUB_PRESENCE_REFRESH: must be at most half of HUB_PRESENCE_TTL")
        if self.jwt_secret is not None and len(self.jwt_secret.encode()) < 32:
            raise SettingsError("HUB_JWT_SECRET: must be at least 32 bytes (HS256 needs a key that long)")
        if self.jwt_jwks_url is not None:
            parsed = urlparse(self.jwt_jwks_url)
            if parsed.scheme not in ("https", "http") or not parsed.hostname:
                raise SettingsError(
                    f"HUB_JWT_JWKS_URL: expected the provider's https:// JWKS URL, got {self.jwt_jwks_url!r}"
                )
            if self.jwt_public_key or self.jwt_public_keys:
                raise SettingsError(
                    "HUB_JWT_JWKS_URL: set it alone, without HUB_JWT_PUBLIC_KEY or HUB_JWT_PUBLIC_KEYS_DIR"
                )
        if self.log_level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise SettingsError(f"HUB_LOG_LEVEL: use DEBUG, INFO, WARNING or ERROR, not {self.log_level!r}")
        if self.drain_seconds >= self.shutdown_deadline:
            raise SettingsError("HUB_DRAIN_SECONDS: must be shorter than HUB_SHUTDOWN_DEADLINE")
        if any(o == "*" for o in self.cors_origins):
            raise SettingsError("HUB_CORS_ORIGINS: list the allowed origins; '*' is not accepted")
        if self.log_format not in ("text", "json"):
            raise SettingsError(f"HUB_LOG_FORMAT: use text or json, not {self.log_format!r}")
        if (self.admin_username is None) != (self.admin_password is None):
            raise SettingsError("HUB_ADMIN_USERNAME: set it together with HUB_ADMIN_PASSWORD, or neither")
        if self.admin_password is not None and len(self.admin_password) < 12:
            raise SettingsError("HUB_ADMIN_PASSWORD: must be at least 12 characters")
        if self.console_dev_tokens and not self.jwt_secret:
            raise SettingsError(
                "HUB_CONSOLE_DEV_TOKENS: development tokens are signed with HUB_JWT_SECRET; set it"
            )
        if "{" in self.redis_prefix or "}" in self.redis_prefix:
            raise SettingsError("HUB_REDIS_PREFIX: no braces; the hub puts each shard's hash tag after it")
        if self.admin_mode not in ("production", "development"):
            raise SettingsError(f"HUB_ADMIN_MODE: use production or development, not {self.admin_mode!r}")


def _read_key(value: str | None) -> str | None:
    if not value:
        return None
    if value.lstrip().startswith("-----BEGIN"):
        return value
    try:
        with open(value, encoding="ascii") as fh:
            return fh.read()
    except OSError as exc:
        raise SettingsError(f"HUB_JWT_PUBLIC_KEY: not a PEM key nor a readable file: {value!r}") from exc


def _read_keys(folder: str | None) -> tuple[tuple[str, str], ...]:
    """``<kid>.pem`` files of a folder: several public keys at once, for rotation."""
    if not folder:
        return ()
    try:
        keys = tuple(sorted((p.stem, p.read_text(encoding="ascii")) for p in Path(folder).glob("*.pem")))
    except OSError as exc:
        raise SettingsError(f"HUB_JWT_PUBLIC_KEYS_DIR: cannot read {folder!r}") from exc
    if not keys:
        raise SettingsError(f"HUB_JWT_PUBLIC_KEYS_DIR: no <kid>.pem files in {folder!r}")
    return keys


N = TypeVar("N", int, float, Decimal)


def _number(
    env: Mapping[str, str], name: str, default: N, low: N, high: N, parse: Callable[[str], N], kind: str
) -> N:
    """A number from the environment within [low, high]; the default when unset."""
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = parse(raw.strip())
    except (ValueError, InvalidOperation) as exc:
        raise SettingsError(f"{name}: expected {kind}, got {raw!r}") from exc
    try:
        within = low <= value <= high  # False for a float NaN
    except InvalidOperation:  # a Decimal NaN cannot be ordered
        within = False
    if not within:
        raise SettingsError(f"{name}: must be between {low} and {high}, got {raw!r}")
    return value


def _gc_thresholds(
    env: Mapping[str, str], default: tuple[int, int, int] | None
) -> tuple[int, int, int] | None:
    raw = env.get("HUB_GC_THRESHOLDS")
    if raw is None:
        return default
    if raw.strip().lower() in ("", "python", "default"):
        return None
    try:
        values = tuple(int(part) for part in raw.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or not 1 <= values[0] <= 10_000_000 or not all(1 <= v <= 10_000 for v in values[1:]):
        raise SettingsError(
            f"HUB_GC_THRESHOLDS: expected three whole numbers like 50000,20,100 "
            f"(or 'python' for Python's own), got {raw!r}"
        )
    return values


def _networks(env: Mapping[str, str], name: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """Comma-separated addresses or CIDR blocks; a bare address is a block of one. A block
    holding every address is refused: it would let any client name its own address."""
    networks = []
    for part in env.get(name, "").split(","):
        if not part.strip():
            continue
        try:
            network = ipaddress.ip_network(part.strip())
        except ValueError as exc:
            raise SettingsError(
                f"{name}: expected IP addresses or CIDR blocks like 10.0.0.0/8, got {part.strip()!r} ({exc})"
            ) from exc
        if network.prefixlen == 0:
            raise SettingsError(f"{name}: {part.strip()!r} trusts every address; list the proxies")
        networks.append(network)
    return tuple(networks)


def _flag(env: Mapping[str, str], name: str) -> bool:
    value = env.get(name, "").strip().lower()
    if value not in ("", "0", "1", "true", "false", "yes", "no"):
        raise SettingsError(f"{name}: use 1 or 0, not {value!r}")
    return value in ("1", "true", "yes")


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    return _number(env, name, default, low, high, int, "a whole number")


def _float(env: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    return _number(env, name, default, low, high, float, "a number of seconds")


def _decimal(env: Mapping[str, str], name: str, default: Decimal, low: Decimal, high: Decimal) -> Decimal:
    return _number(env, name, default, low, high, Decimal, "a decimal number")
