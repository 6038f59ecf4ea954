"""Socket.IO namespace ``/streaming``: event -> parse -> service -> ack.

Handlers stay thin; every refusal is a HubError turned into an error ack and an ``error``
event to that socket alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import random
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import Any

import engineio
import engineio.payload
import orjson
import socketio
from engineio.async_drivers import aiohttp as engineio_aiohttp
from redis.exceptions import RedisError

from hub import logs, metrics
from hub.codec import json_module
from hub.domain import payloads
from hub.domain.auth import Verifier, bearer
from hub.domain.presence import Conn, Presence
from hub.domain.service import Hub
from hub.errors import HubError, TokenExpired
from hub.settings import ClusterSettings, SentinelSettings, Settings, is_sentinel_url
from hub.storage.connections import cluster_client, master_client
from hub.storage.keys import NAMESPACE, Keys
from hub.transport.fanout import DirectWebSocket, Pacer, Run, Writer
from hub.transport.pubsub import ShardedSubscriber

log = logging.getLogger(__name__)

Action = Callable[[Conn, Any], Awaitable[dict[str, Any]]]


class HubRedisManager(socketio.AsyncRedisManager):
    """python-socketio's Redis manager with a listener that reconnects by itself and stops when
    told, extended with the hub's own channels on the same connection:

    one channel per stream (``room:{id}``, in the stream's shard), subscribed only while this
    worker has a socket in that stream's room. Its events are written to the sockets without
    being decoded (``HubServer.broadcast``); its orders go to the namespace: ``!close`` (the
    stream ended, the room is emptied) and ``!ban {"user_id", "reason"}`` (the user's sockets
    leave the room). On Redis Cluster every channel, python-socketio's own included, is a
    sharded one (``SSUBSCRIBE``/``SPUBLISH``, ``hub.transport.pubsub``)."""

    RETRY_MAX = 5.0

    def __init__(
        self,
        *args: Any,
        keys: Keys,
        on_close_room: Callable[[str], Awaitable[None]],
        on_banned: Callable[[str, str, str | None], Awaitable[None]],
        cluster: ClusterSettings | None = None,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        self.keys = keys
        self.cluster = cluster
        self._channel_bytes = self.channel.encode()
        self._on_close_room = on_close_room
        self._on_banned = on_banned
        self.closing = False
        self.watched: set[str] = set()
        self._confirmations: dict[bytes, asyncio.Future[None]] = {}
        self._streams_of: dict[str, set[str]] = {}
        self.room_messages = 0

    # -- room membership --------------------------------------------------------------
    # Every way into or out of a room (a join, a leave, a ban, a closed room, a disconnect)
    # comes through these two: a paced room's held events go out before its members change,
    # and each socket's stream rooms are indexed as they change.
    def basic_enter_room(
        self, sid: str, namespace: str, room: str | None, eio_sid: str | None = None
    ) -> None:
        self.server.pacer.release(room)
        super().basic_enter_room(sid, namespace, room, eio_sid=eio_sid)
        if namespace == NAMESPACE and room is not None and room != sid:
            self._streams_of.setdefault(sid, set()).add(room)

    def basic_leave_room(self, sid: str, namespace: str, room: str | None) -> None:
        self.server.pacer.release(room)
        super().basic_leave_room(sid, namespace, room)
        rooms = self._streams_of.get(sid) if namespace == NAMESPACE else None
        if rooms is not None:
            rooms.discard(room)  # type: ignore[arg-type]
            if not rooms:
                del self._streams_of[sid]

    def stream_rooms(self, sid: str) -> set[str]:
        """The stream rooms of ``/streaming`` the socket is in, as Socket.IO's own rooms say
        (python-socketio finds a socket's rooms by scanning every room)."""
        return set(self._streams_of.get(sid, ()))

    def members(self, room: str) -> list[str]:
        """The sids of this worker's sockets in a stream's room."""
        return list(self.rooms.get(NAMESPACE, {}).get(room, ()))

    # -- per-stream channels ----------------------------------------------------------
    async def watch(self, room: str) -> None:
        """Receive this stream's events from now on: returns once Redis has confirmed the
        subscription, so nothing published after it is missed."""
        channel = self.keys.of(room).room(room)
        if room in self.watched:
            pending = self._confirmations.get(channel.encode())
            if pending is not None:
                await asyncio.wait_for(asyncio.shield(pending), 5)
            return
        self.watched.add(room)
        if self.pubsub is None or not self.connected:
            return  # the listener subscribes to every watched room when it (re)connects
        confirmed = asyncio.get_running_loop().create_future()
        self._confirmations[channel.encode()] = confirmed
        try:
            await self.pubsub.subscribe(channel)
            await asyncio.wait_for(asyncio.shield(confirmed), 5)
        finally:
            if self._confirmations.get(channel.encode()) is confirmed:
                del self._confirmations[channel.encode()]

    async def unwatch_idle(self) -> None:
        """Stop receiving the streams this worker no longer has a socket watching."""
        rooms = self.rooms.get(NAMESPACE, {})
        idle = [room for room in self.watched if room not in rooms]
        if not idle:
            return
        self.watched.difference_update(idle)
        if self.pubsub is not None and self.connected:
            await self.pubsub.unsubscribe(*(self.keys.of(room).room(room) for room in idle))

    async def _room_messages(self, channel: bytes, items: list[bytes]) -> None:
        """One room's messages of one read, in order: runs of events for every socket are
        written together; an event that skips a socket, and an order, go on their own."""
        room = channel[channel.rindex(b":") + 1 :].decode()  # ``…room:{stream id}``
        texts: list[bytes] = []
        for data in items:
            self.room_messages += 1
            if data[:1] == b"\n":
                texts.extend(data[1:].split(b"\n"))
                continue
            if texts:
                self.server.broadcast(room, None, texts)
                texts = []
            if data[:1] == b"!":
                await self._order(room, data)
            else:
                skip, _, rest = data.partition(b"\n")
                self.server.broadcast(room, skip.decode(), rest.split(b"\n"))
        if texts:
            self.server.broadcast(room, None, texts)

    async def deliver(self, room: str, items: list[bytes]) -> None:
        """Room messages this worker made itself, handled as if they had come on the room's
        channel (``hub.domain.recovery`` tells its own watchers that a stream ended, whether or not
        this listener was subscribed when the stream's channel carried the news)."""
        await self._room_messages(self.keys.of(room).room(room).encode(), items)

    # -- the listener -----------------------------------------------------------------
    def _redis_connect(self) -> None:
        """python-socketio's, except behind sentinels: the hub's own master client, whose
        Sentinel is closed with it, so each reconnect of the listener asks the sentinels which
        server is the master now (after a failover, the promoted replica). On a cluster, a
        cluster client, and a subscriber with a connection per node."""
        if self.cluster is not None:
            self.redis = cluster_client(self.cluster, decode_responses=False)
            self.pubsub = ShardedSubscriber(self.redis, self.cluster.username, self.cluster.password)
            self.connected = True
            return
        if not is_sentinel_url(self.redis_url):
            super()._redis_connect()
            return
        self.redis = master_client(SentinelSettings.from_url(self.redis_url), **self.redis_options)
        self.pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        self.connected = True

    async def _publish(self, data: Any) -> Any:
        """python-socketio's, except on a cluster: SPUBLISH, to the node of its channel's slot."""
        if self.cluster is None:
            return await super()._publish(data)
        for retries_left in (1, 0):
            try:
                if not self.connected:
                    self._redis_connect()
                return await self.redis.spublish(self.channel, self.json.dumps(data))
            except Exception as exc:
                log.error("cannot publish to Redis (%s)%s", exc, ", retrying" if retries_left else "")
                self.connected = False
        return None

    async def _redis_listen_with_retries(self) -> AsyncIterator[dict[str, Any]]:
        """Subscribe, listen, and on any failure close the old connection and start over with
        capped backoff. A closing worker stops here even if redis-py turned the cancellation
        into a connection error."""
        retry = 0.25
        while not self.closing:
            try:
                await self._close_connections()
                self._redis_connect()
                self.pubsub.ignore_subscribe_messages = False  # confirmations end watch()
                await self.pubsub.subscribe(
                    self.channel, *(self.keys.of(room).room(room) for room in self.watched)
                )
                self.connected = True
                retry = 0.25
                while not self.closing:
                    # A bounded wait, so a stop is seen within a second even when the
                    # cancellation is lost inside the Redis client's blocking read.
                    message = await self.pubsub.get_message(timeout=1.0)
                    # Then everything already received, without waiting: the room events of
                    # one read go out together, one write per socket per room.
                    rooms: dict[bytes, list[bytes]] = {}
                    while message is not None:
                        kind, channel = message["type"], message["channel"]
                        if kind == "message":
                            if channel != self._channel_bytes:
                                rooms.setdefault(channel, []).append(message["data"])
                            else:
                                yield message
                        elif kind == "subscribe":
                            confirmed = self._confirmations.get(channel)
                            if confirmed is not None and not confirmed.done():
                                confirmed.set_result(None)
                        if len(rooms) > 256:
                            break
                        message = await self.pubsub.get_message(timeout=0)
                    for channel, items in rooms.items():
                        await self._room_messages(channel, items)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.connected = False
                if self.closing:
                    break
                log.warning("pub/sub listener lost Redis (%s); resubscribing in %.2fs", exc, retry)
                await asyncio.sleep(retry)
                retry = min(retry * 2, self.RETRY_MAX)

    async def _order(self, room: str, data: bytes) -> None:
        try:
            if data == b"!close":
                await socketio.AsyncManager.close_room(self, room, NAMESPACE)
                await self._on_close_room(room)
            elif data.startswith(b"!ban "):
                order = self.json.loads(data[5:])
                await self._on_banned(room, str(order["user_id"]), order.get("reason"))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("order %r on room %s failed", data[:40], room)

    async def _close_connections(self) -> None:
        pubsub, client = self.pubsub, self.redis
        self.pubsub = self.redis = None
        self.connected = False
        with contextlib.suppress(Exception):
            if pubsub is not None:
                await pubsub.aclose()
        with contextlib.suppress(Exception):
            if client is not None:
                await client.aclose()

    async def close(self) -> None:
        """Stop the listener and close its connections."""
        self.closing = True
        listener = getattr(self, "thread", None)
        if listener is not None:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(asyncio.shield(listener), 3)
        await self._close_connections()


Networks = tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]


_untrusted_forwarders: set[str] = set()  # warned of once per process


def client_address(environ: dict[str, Any], trusted: Networks) -> str:
    """The client's address, for the per-address limits: the TCP peer's, unless the peer is a
    trusted proxy (``HUB_TRUSTED_PROXIES``); then the rightmost X-Forwarded-For entry that is
    not itself a trusted proxy. Entries left of it were written by whoever sent the request
    and prove nothing. engine.io's aiohttp environ fixes REMOTE_ADDR at 127.0.0.1, so the peer
    comes from the aiohttp request itself."""
    request = environ.get("aiohttp.request")
    remote = getattr(request, "remote", None)
    peer = _ip(remote) if remote else None
    if peer is None:
        return str(remote) if remote else "unknown"
    if not trusted or not _within(peer, trusted):
        if not _untrusted_forwarders and "X-Forwarded-For" in request.headers:
            _untrusted_forwarders.add(str(peer))
            log.warning(
                "connections from %s carry X-Forwarded-For, but HUB_TRUSTED_PROXIES does not list "
                "it: the header is ignored, and every client behind it shares its per-address "
                "limits (said once)",
                peer,
            )
        return str(peer)
    hops = [
        hop.strip() for value in request.headers.getall("X-Forwarded-For", ()) for hop in value.split(",")
    ]
    for hop in reversed(hops):
        address = _ip(hop)
        if address is None:
            break  # a trusted proxy never writes this: stop at the last proxy known
        peer = address
        if not _within(address, trusted):
            break
    return str(peer)


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An address, IPv4-mapped IPv6 as plain IPv4 (one client, one rate-limit key); None if
    ``text`` is not one."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _within(address: ipaddress.IPv4Address | ipaddress.IPv6Address, networks: Networks) -> bool:
    return any(address in network for network in networks)


class Unreadable(ValueError):
    """A Socket.IO packet python-socketio cannot decode (see ``HubPacket.decode``)."""


class HubPacket(socketio.packet.Packet):
    """Socket.IO packets of the hub's server only, decoded with exact decimals.

    Setting ``json`` on this subclass (rather than passing ``json=`` to the server, which
    python-socketio assigns to the shared Packet class and to engine.io's) leaves every other
    Socket.IO user in the process, a test's client included, with its own JSON module."""

    json = json_module

    def decode(self, encoded_packet: Any) -> Any:
        """python-socketio's, raising Unreadable for a packet it cannot read: bad JSON, a number
        no double holds (``1e309``), NaN, a lone surrogate, nesting deeper than
        ``codec.MAX_DEPTH``, an id of more than 100 digits."""
        try:
            return super().decode(encoded_packet)
        except ValueError as exc:
            raise Unreadable(str(exc)) from exc


# -- Engine.IO text the hub refuses before python-engineio reads it -------------------------


def engineio_readable(text: str) -> bool:
    """Whether python-engineio can take this client text packet without harm: a packet type
    digit, then a Socket.IO packet (a digit first) or a payload with no JSON array or object in
    it. (python-engineio decodes any other payload as JSON, raising on text that starts with no
    digit and recursing without bound on nesting.) Binary (``b``…) is refused: the hub's
    protocol has no binary events."""
    if not text or not "0" <= text[0] <= "9":
        return False
    return len(text) == 1 or "0" <= text[1] <= "9" or ("[" not in text and "{" not in text)


class Junk(OSError):
    """A WebSocket frame python-engineio cannot take: an OSError, which its read loop takes for
    a lost connection, so the connection closes and the usual disconnect follows."""


class JunkBody(engineio.exceptions.EngineIOError):
    """A long-polling body python-engineio cannot take: it answers 400 and closes the session."""


class HubWebSocket(DirectWebSocket):
    """The hub's WebSocket transport: a frame that is no Engine.IO packet closes the connection
    (one log line) instead of escaping python-engineio's read loop as an exception, which left
    the connection half open and its namespace connected until its pings ran out."""

    async def wait(self) -> Any:
        data = await super().wait()
        if isinstance(data, str) and not engineio_readable(data):
            log.info("closed a WebSocket: a frame that is no Engine.IO packet")
            eio_socket = getattr(self.handler, "__self__", None)
            if eio_socket is not None and eio_socket.upgraded:
                # Closed here, not by the end of python-engineio's read loop: aiohttp cancels
                # the handler once this side has closed the connection, before the loop ends.
                await eio_socket.close(
                    wait=False, abort=True, reason=eio_socket.server.reason.TRANSPORT_ERROR
                )
            raise Junk
        return data


class WholeBody:
    """A long-polling POST's body for python-engineio, read whole (aiohttp's ``read(n)`` may
    return only the part received so far, cutting a large body short) and checked: within the
    transport limit, UTF-8, at most ``Payload.max_decode_packets`` packets, each one
    python-engineio can take. A body that fails closes the session (``close``) before
    python-engineio answers it 400."""

    def __init__(self, content: Any, too_long: bool, close: Callable[[], Awaitable[None]]) -> None:
        self._content = content
        self._too_long = too_long
        self._close = close

    async def read(self, length: int) -> bytes:
        if self._too_long:
            await self._refuse("a body over the transport limit")
            raise JunkBody
        try:
            body = await self._content.readexactly(length)
            packets = body.decode().split("\x1e") if body else []
        except (asyncio.IncompleteReadError, UnicodeDecodeError) as exc:
            await self._refuse("a body cut short or not UTF-8")
            raise JunkBody from exc
        if len(packets) > engineio.payload.Payload.max_decode_packets or not all(
            engineio_readable(packet) for packet in packets
        ):
            await self._refuse("a body that is no Engine.IO payload")
            raise JunkBody
        return body

    async def _refuse(self, why: str) -> None:
        log.info("closed a long-polling session: %s", why)
        # Closed here, with no wait for the client to fetch the close packet: python-engineio's
        # own close on JunkBody waits for that, and a client whose next poll comes once the
        # session is marked closed never fetches it, leaving the POST unanswered for good.
        await self._close()


class HubServer(socketio.AsyncServer):
    """python-socketio's server whose packets to a WebSocket are written straight to its
    transport (``hub.transport.fanout.Writer``), with a bounded send buffer per connection: a client that
    stops reading is cut off instead of holding an ever-growing buffer, and the other clients
    are never made to wait for it. Busy large rooms are paced (``hub.transport.fanout.Pacer``).

    Every packet a client sends gets an answer or closes its connection, and none makes the
    worker log more than one line: what cannot be read is refused ``invalid`` (an ack when it
    has an ack id, and an ``error`` event), what python-engineio cannot take closes the
    connection (``HubWebSocket``, ``WholeBody``); refusals are logged summarised per connection.

    A client address's limits are checked at the Engine.IO handshake, before any namespace
    (``gate``); a session that connects no namespace within ``namespace_timeout`` seconds is
    closed.

    Private hooks of python-socketio 5.18 / python-engineio 4.15, all here: ``eio._async``
    (the WebSocket class and the request translation), ``_handle_eio_connect``,
    ``_handle_eio_disconnect``, ``_handle_eio_message``, ``_handle_event``, ``_send_packet``,
    ``_send_eio_packet``."""

    # The largest message the transport reads (python-engineio's max_http_buffer_size): what a
    # Socket.IO client allows by default (maxHttpBufferSize, 1e6 bytes) and a little more, so an
    # event up to 1 MiB is answered payload_too_large by the hub rather than cut off.
    TRANSPORT_LIMIT = 1 << 20

    def __init__(
        self,
        *args: Any,
        send_queue_limit: int,
        send_buffer_limit: int,
        event_limit: int,
        fanout_interval: float = 0.0,
        fanout_pace_above: int = 0,
        namespace_timeout: float = 5.0,
        **kwargs: Any,
    ) -> None:
        # The transport limit is the hub's (PROTOCOL §7), whatever a caller passes; an event
        # limit (HUB_MAX_PAYLOAD) raised above it raises it too.
        kwargs["max_http_buffer_size"] = max(self.TRANSPORT_LIMIT, event_limit)
        super().__init__(*args, **kwargs)
        self.event_limit = event_limit
        self.eio._async = dict(
            self.eio._async, websocket=HubWebSocket, translate_request=self._translate_request
        )
        self.writer = Writer(self.eio, send_buffer_limit, send_queue_limit)
        self.pacer = Pacer(self._write_runs, self._room_size, fanout_interval, fanout_pace_above)
        self._fanout_size = metrics.BROADCAST_SOCKETS.observe
        self.refusals = logs.Repeats(log)
        self.namespace_timeout = namespace_timeout
        # Admits and releases Engine.IO sessions (the namespace, once it is made).
        self.gate: StreamingNamespace | None = None
        self._closing: set[asyncio.Task[None]] = set()

    async def _handle_eio_connect(self, eio_sid: str, environ: dict[str, Any]) -> Any:
        """A new Engine.IO session: refused at the handshake (HTTP 401 with the error body) when
        its client address is over its connection rate or holds too many sessions."""
        if self.gate is not None:
            refusal = await self.gate.open_transport(eio_sid, environ)
            if refusal is not None:
                return refusal
        await super()._handle_eio_connect(eio_sid, environ)
        asyncio.get_running_loop().call_later(self.namespace_timeout, self._namespace_due, eio_sid)
        return None

    def _namespace_due(self, eio_sid: str) -> None:
        """Close a session still connected to no namespace."""
        if eio_sid not in self.eio.sockets:
            return
        if any(self.manager.sid_from_eio_sid(eio_sid, ns) for ns in list(self.manager.get_namespaces())):
            return
        task = asyncio.ensure_future(self.eio.disconnect(eio_sid))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _handle_eio_disconnect(self, eio_sid: str, reason: Any) -> None:
        await super()._handle_eio_disconnect(eio_sid, reason)
        if self.gate is not None:
            await self.gate.close_transport(eio_sid)

    def _translate_request(self, request: Any) -> dict[str, Any]:
        """python-engineio's aiohttp request environ, with the body read whole and checked."""
        environ: dict[str, Any] = engineio_aiohttp.translate_request(request)
        too_long = (request.content_length or 0) > self.eio.max_http_buffer_size
        if too_long:
            # Refused by WholeBody, not by python-engineio's own length check, whose close
            # waits for the client to fetch the close packet (see WholeBody._refuse).
            environ["CONTENT_LENGTH"] = "0"
        close = partial(self._close_polling, request.query.get("sid"))
        environ["wsgi.input"] = WholeBody(request.content, too_long, close)
        return environ

    async def _close_polling(self, eio_sid: str | None) -> None:
        eio_socket = self.eio.sockets.get(eio_sid)
        if eio_socket is not None and not eio_socket.closing:
            await eio_socket.close(wait=False, reason=self.eio.reason.TRANSPORT_ERROR)

    def broadcast(self, room: str, skip_sid: str | None, texts: list[bytes]) -> None:
        """Encoded room events (Engine.IO texts) to this worker's sockets in ``room``."""
        self.pacer.events(room, skip_sid, texts)

    def _room_size(self, room: str) -> int:
        return len(self.manager.rooms.get(NAMESPACE, {}).get(room) or ())

    def _write_runs(self, room: str, runs: list[Run]) -> None:
        members = self.manager.rooms.get(NAMESPACE, {}).get(room)
        if members:
            self._fanout_size(len(members))
            self.writer.broadcast_runs(members, runs)

    # A packet's head: type, attachments, namespace, ack id, and the event name if it comes first.
    _HEAD = re.compile(r'([0-9])(?:\d{1,10}-)?(/[^,\[]{0,100},)?(\d{1,12})?(?:\["([^"\\]{1,64})")?')

    async def _handle_eio_message(self, eio_sid: str, data: Any) -> None:
        """Every Socket.IO packet from a client. An event larger than ``event_limit`` is
        answered ``payload_too_large`` without being decoded; one that cannot be read (or is
        binary, or of a type a client may not send) is answered ``invalid``; the connection
        stays open either way. (The transport closes a connection whose message exceeds its
        own, larger, limit.)"""
        if not isinstance(data, str):  # binary, or an Engine.IO message that was JSON
            await self._refuse(eio_sid, "", HubError("invalid", "Events are Socket.IO text packets."))
        elif len(data) * 4 > self.event_limit and len(data.encode(errors="replace")) > self.event_limit:
            await self._refuse(
                eio_sid,
                data,
                HubError("payload_too_large", f"Events may be at most {self.event_limit} bytes."),
            )
        elif data[:1] not in ("0", "1", "2", "3"):  # 4 is the server's; 5 and 6 are binary
            await self._refuse(eio_sid, data, HubError("invalid", "No such packet type here."))
        else:
            try:
                await super()._handle_eio_message(eio_sid, data)
            except Unreadable as exc:
                await self._refuse(
                    eio_sid,
                    data,
                    HubError("invalid", "The packet is not valid JSON the hub reads."),
                    str(exc),
                )

    async def _refuse(self, eio_sid: str, data: str, exc: HubError, why: str = "") -> None:
        """Answer a packet refused unread, from what its head shows: a CONNECT with
        ``connect_error``, anything else as ``_refuse_event`` does."""
        head = self._HEAD.match(data, 0, 200)
        if head is None:  # not even a packet type: an error event on the hub's namespace
            await self._refuse_event(eio_sid, NAMESPACE, None, None, exc, why)
            return
        namespace = (head.group(2) or "/,")[:-1]
        if head.group(1) == "0":
            self.refusals.note(eio_sid, f"refused a connect ({exc.code}{': ' + why[:80] if why else ''})")
            metrics.error(exc.code, "connect")
            await self._send_packet(
                eio_sid,
                self.packet_class(
                    socketio.packet.CONNECT_ERROR,
                    namespace=namespace,
                    data={"message": exc.code, "data": exc.body()},
                ),
            )
            return
        is_event = head.group(1) == "2"
        ack_id = int(head.group(3)) if is_event and head.group(3) is not None else None
        await self._refuse_event(eio_sid, namespace, ack_id, head.group(4) if is_event else None, exc, why)

    async def _refuse_event(
        self,
        eio_sid: str,
        namespace: str,
        ack_id: int | None,
        event: str | None,
        exc: HubError,
        why: str = "",
    ) -> None:
        """An ``error`` event ``{code, message, event}`` to a socket connected on ``namespace``
        and, with an ack id, the refusal as the ack; the refusal logged, summarised."""
        self.refusals.note(eio_sid, f"refused a packet ({exc.code}{': ' + why[:80] if why else ''})")
        metrics.error(exc.code, "socket")
        sid = self.manager.sid_from_eio_sid(eio_sid, namespace)
        if sid is None or not self.manager.is_connected(sid, namespace):
            return
        body = exc.body()
        await self.emit("error", dict(body, event=event), to=sid, namespace=namespace, ignore_queue=True)
        if ack_id is not None:
            await self._send_packet(
                eio_sid,
                self.packet_class(
                    socketio.packet.ACK,
                    namespace=namespace,
                    id=ack_id,
                    data=[{"success": False, "error": body}],
                ),
            )

    # Names python-socketio dispatches to the lifecycle handlers; a client may not send them.
    RESERVED_EVENTS = frozenset({"connect", "connect_error", "disconnect", "__disconnect_final"})

    async def _handle_event(self, eio_sid: str, namespace: str | None, id: int | None, data: Any) -> None:
        """An event whose data is no ``[name, ...]`` list, or whose name is no event of the
        hub's namespace (a lifecycle name included: a client event named "disconnect" must not
        run the disconnect handler), is refused ``invalid``."""
        namespace = namespace or "/"
        name = data[0] if isinstance(data, list) and data else None
        if (
            not isinstance(name, str)
            or name in self.RESERVED_EVENTS
            or (namespace == NAMESPACE and name not in self.handlers[NAMESPACE])
        ):
            shown = name if isinstance(name, str) and len(name) <= 64 else None
            await self._refuse_event(eio_sid, namespace, id, shown, HubError("invalid", "No such event."))
            return
        await super()._handle_event(eio_sid, namespace, id, data)

    async def _send_packet(self, eio_sid: str, pkt: Any) -> None:
        encoded = pkt.encode()
        if isinstance(encoded, list):  # binary attachments: Engine.IO's own path
            await super()._send_packet(eio_sid, pkt)
            return
        self.writer.send(eio_sid, b"4" + encoded.encode())

    async def _send_eio_packet(self, eio_sid: str, eio_pkt: Any) -> None:
        if eio_pkt.packet_type == engineio.packet.MESSAGE and isinstance(eio_pkt.data, str):
            self.writer.send(eio_sid, b"4" + eio_pkt.data.encode())
            return
        await self.eio.send_packet(eio_sid, eio_pkt)


def _refused(exc: HubError) -> socketio.exceptions.ConnectionRefusedError:
    """A refused connection (``connect_error`` with the error body), counted."""
    metrics.error(exc.code, "connect")
    return socketio.exceptions.ConnectionRefusedError(exc.code, exc.body())


class StreamingNamespace:
    """Wires the namespace's events to the hub service.

    A socket's events, and its disconnect, are handled one at a time in the order they
    arrive, whatever the transport: over WebSocket they arrive one by one, but two long-polling
    POSTs in flight at once would otherwise run side by side. The disconnect waits for the event
    in progress, and an event that was waiting behind it finds the socket gone."""

    def __init__(
        self,
        sio: socketio.AsyncServer,
        settings: Settings,
        verifier: Verifier,
        hub: Callable[[], Hub],
        presence: Callable[[], Presence],
    ) -> None:
        self.sio = sio
        self.settings = settings
        self.verifier = verifier
        self._hub = hub
        self._presence = presence
        self.draining = False
        self._pending: set[asyncio.Task[None]] = set()
        self._turns: dict[str, asyncio.Lock] = {}  # sid -> its events' turn
        sio.on("connect", self.connect, namespace=NAMESPACE)
        sio.on("disconnect", self.disconnect, namespace=NAMESPACE)
        actions: dict[str, Action] = {
            "join_stream": self.join,
            "leave_stream": self.leave,
            "send_message": self.chat,
            "send_tip": self.tip,
            "send_alert": self.alert,
        }
        for event in payloads.MODERATION_ACTIONS:
            actions[event] = self._moderation(event)
        for event, action in actions.items():
            sio.on(event, self._handler(event, action), namespace=NAMESPACE)
        if isinstance(sio, HubServer):
            sio.gate = self

    async def open_transport(self, eio_sid: str, environ: dict[str, Any]) -> dict[str, Any] | None:
        """An Engine.IO session opens: None when admitted, else the refusal, shaped as a refused
        namespace connection's (``{message: code, data: error}``, a client's connect_error)."""
        if self.draining:
            refusal = HubError("unavailable", "This worker is shutting down; connect again.")
        else:
            try:
                address = client_address(environ, self.settings.trusted_proxies)
                await self._hub().admit_transport(address, eio_sid)
                return None
            except HubError as exc:
                refusal = exc
            except (RedisError, OSError):
                refusal = HubError("unavailable")
        metrics.error(refusal.code, "connect")
        return {"message": refusal.code, "data": refusal.body()}

    async def close_transport(self, eio_sid: str) -> None:
        try:
            await self._hub().release_transport(eio_sid)
        except (RedisError, OSError) as exc:
            # The set's entry expires once its worker stops refreshing it.
            log.warning("release of session %s failed: %s", eio_sid, exc)

    async def connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        if self.draining:
            raise _refused(HubError("unavailable", "This worker is shutting down; connect again."))
        token = auth.get("token") if isinstance(auth, dict) else None
        token = token or bearer(environ.get("HTTP_AUTHORIZATION"))
        identity = None
        if token is not None:
            try:
                identity = self.verifier.verify(token)
            except HubError as exc:
                raise _refused(exc) from exc
        conn = Conn(sid, identity, client_address(environ, self.settings.trusted_proxies))
        try:
            await self._hub().admit(conn)
        except HubError as exc:
            raise _refused(exc) from exc
        except (RedisError, OSError) as exc:
            raise _refused(HubError("unavailable")) from exc
        self._presence().add(conn)

    def _turn(self, sid: str) -> asyncio.Lock:
        turn = self._turns.get(sid)
        if turn is None:
            turn = self._turns[sid] = asyncio.Lock()
        return turn

    async def disconnect(self, sid: str, *_: Any) -> None:
        try:
            async with self._turn(sid):
                await self._disconnect(sid)
        finally:
            self._turns.pop(sid, None)

    async def _disconnect(self, sid: str) -> None:
        conn = self._presence().remove(sid)
        if conn is None:
            return
        try:
            await self._hub().disconnect(conn)
        except (HubError, RedisError, OSError) as exc:
            # The sweep removes this connection's presence once its expiry passes.
            log.warning("leave on disconnect failed for %s: %s", sid, exc)

    def _handler(self, event: str, action: Action) -> Callable[..., Awaitable[dict[str, Any]]]:
        received = metrics.EVENTS.labels(event).inc

        async def handle(sid: str, *args: Any) -> dict[str, Any]:
            received()
            async with self._turn(sid):
                conn = self._presence().conns.get(sid)
                context = logs.CONTEXT.set((event, sid, conn, args))
                try:
                    return await run(sid, conn, args)
                finally:
                    logs.CONTEXT.reset(context)

        async def run(sid: str, conn: Conn | None, args: tuple[Any, ...]) -> dict[str, Any]:
            try:
                if conn is None:
                    raise HubError("unauthorized", "Not connected.")
                return await action(conn, args[0] if len(args) == 1 else list(args) or None)
            except TokenExpired as exc:
                refusal = await self._refuse(sid, event, exc)
                self._disconnect_soon(sid)
                return refusal
            except HubError as exc:
                return await self._refuse(sid, event, exc)
            except (RedisError, OSError) as exc:
                log.warning("%s failed: %s", event, exc)
                return await self._refuse(sid, event, HubError("unavailable"))
            except Exception:
                log.exception("%s failed", event)
                return await self._refuse(sid, event, HubError("unavailable", "Internal error."))

        return handle

    def _disconnect_soon(self, sid: str) -> None:
        """Disconnect after the refusal's ack has been queued (the task runs after it)."""
        task = asyncio.create_task(self.sio.disconnect(sid, namespace=NAMESPACE, ignore_queue=True))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _refuse(self, sid: str, event: str, exc: HubError) -> dict[str, Any]:
        metrics.error(exc.code, "socket")
        body = exc.body()
        await self.sio.emit("error", dict(body, event=event), to=sid, namespace=NAMESPACE, ignore_queue=True)
        return {"success": False, "error": body}

    # -- actions ------------------------------------------------------------------
    async def join(self, conn: Conn, data: Any) -> dict[str, Any]:
        payload = payloads.Join.parse(data)
        manager = self.sio.manager
        was_in = payload.stream_id in manager.stream_rooms(conn.sid)
        # In the room, and subscribed to the stream's channel, before presence is written, so no
        # broadcast after the join is missed.
        await self.sio.enter_room(conn.sid, payload.stream_id, namespace=NAMESPACE)
        try:
            await manager.watch(payload.stream_id)
            joined = await self._hub().join(conn, payload)
        except BaseException:
            if not was_in:  # refused: the socket stays where it was
                await self.sio.leave_room(conn.sid, payload.stream_id, namespace=NAMESPACE)
            raise
        await self._leave_rooms(conn.sid, but=payload.stream_id)  # one stream room at most
        metrics.JOINS.inc()
        encoded = orjson.Fragment(orjson.dumps(joined))  # once, for the event and the ack
        await self.sio.emit("joined_stream", encoded, to=conn.sid, namespace=NAMESPACE, ignore_queue=True)
        return encoded  # type: ignore[return-value]

    async def leave(self, conn: Conn, _: Any) -> dict[str, Any]:
        await self._leave_rooms(conn.sid)
        return await self._hub().leave(conn)

    async def _leave_rooms(self, sid: str, but: str | None = None) -> None:
        """Out of every stream room Socket.IO has the socket in (but ``but``), whatever this
        worker's presence says it watches."""
        for room in self.sio.manager.stream_rooms(sid):
            if room != but:
                await self.sio.leave_room(sid, room, namespace=NAMESPACE)

    async def chat(self, conn: Conn, data: Any) -> dict[str, Any]:
        return await self._hub().chat(conn, payloads.Chat.parse(data))

    async def tip(self, conn: Conn, data: Any) -> dict[str, Any]:
        return await self._hub().tip(conn, payloads.Tip.parse(data, self.settings))

    async def alert(self, conn: Conn, data: Any) -> dict[str, Any]:
        return await self._hub().alert(conn.identity, payloads.Alert.parse(data))

    def _moderation(self, event: str) -> Action:
        async def act(conn: Conn, data: Any) -> dict[str, Any]:
            return await self._hub().moderate(conn.identity, payloads.Moderation.parse(event, data))

        return act

    async def banned(self, stream_id: str, user_id: str, reason: str | None) -> None:
        """The user was banned from the stream: their sockets in its room here are told, leave
        it, and (those watching it) watch nothing (the ban script already removed their
        presence). The room's members are Socket.IO's own, not what presence says they watch."""
        presence = self._presence()
        for sid in self.sio.manager.members(stream_id):
            conn = presence.conns.get(sid)
            if conn is None or conn.identity is None or conn.identity.user_id != user_id:
                continue
            if conn.stream_id == stream_id:
                presence.unwatch(conn)
            await self.sio.leave_room(sid, stream_id, namespace=NAMESPACE)
            await self.sio.emit(
                "banned",
                {"stream_id": stream_id, "reason": reason},
                to=sid,
                namespace=NAMESPACE,
                ignore_queue=True,
            )

    async def drain(self, seconds: float) -> None:
        """Refuse new connections, remove this worker's presence at once, then close every
        connection, spread over ``seconds`` so clients reconnect elsewhere without a stampede.
        Closing the transport (not just the namespace) makes clients reconnect by themselves."""
        self.draining = True
        presence = self._presence()
        await presence.withdraw()
        sids = list(presence.conns)
        random.shuffle(sids)
        pause = seconds / len(sids) if sids else 0.0
        for sid in sids:
            eio_sid = self.sio.manager.eio_sid_from_sid(sid, NAMESPACE)
            eio_socket = self.sio.eio.sockets.get(eio_sid) if eio_sid is not None else None
            if eio_socket is not None:
                # No Engine.IO close packet: after one, python-engineio clients take the close
                # as meant and do not reconnect. A lost transport makes every client reconnect.
                with contextlib.suppress(Exception):
                    transport = getattr(eio_socket, "hub_transport", None)
                    if transport is not None:
                        transport.close()
                    else:
                        await eio_socket.close(wait=False, abort=True)
            await asyncio.sleep(pause)

    # -- room housekeeping --------------------------------------------------------
    async def stream_closed(self, stream_id: str) -> None:
        """The stream ended (from any worker): local watchers watch nothing now."""
        self._presence().forget_stream(stream_id)

    async def stream_gone(self, stream_id: str, conns: list[Conn]) -> None:
        """The refresh found the stream no longer live: take its watchers out of the room."""
        for conn in conns:
            await self.sio.leave_room(conn.sid, stream_id, namespace=NAMESPACE)
