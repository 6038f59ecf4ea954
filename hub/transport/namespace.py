"""Socket.IO namespace ``/streaming``: event -> parse -> service -> ack.

Handlers stay thin; every refusal is a HubError turned into an error ack and an ``error``
event to that socket alone."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import orjson
import socketio
from redis.exceptions import RedisError

from hub import frames, logs, metrics
from hub.codec import iso_ms
from hub.domain import payloads
from hub.domain.auth import Identity, Verifier, bearer
from hub.domain.presence import Conn, Presence
from hub.domain.service import Hub
from hub.errors import HubError, TokenExpired
from hub.frames import NAMESPACE
from hub.settings import Settings
from hub.transport.addresses import client_address

log = logging.getLogger(__name__)

Ack = dict[str, Any]
Action = Callable[[Conn, Any], Awaitable[Ack]]


def _refused(exc: HubError) -> socketio.exceptions.ConnectionRefusedError:
    """A refused connection (``connect_error`` with the error body), counted."""
    metrics.error(exc.code, "connect")
    return socketio.exceptions.ConnectionRefusedError(exc.code, exc.body())


class StreamingNamespace(socketio.AsyncNamespace):
    """The ``/streaming`` namespace, registered on the hub's server (``HubServer``).

    A client event ``name`` runs the action ``actions[name]``: ``on_<name>(conn, data)``, or
    ``on_moderation`` for the events of ``payloads.MODERATION_ACTIONS``; its result is the ack.

    A socket's events, and its disconnect, are handled one at a time in the order they
    arrive, whatever the transport: over WebSocket they arrive one by one, but two long-polling
    POSTs in flight at once would otherwise run side by side. Each admitted socket has a turn
    (a lock) from its connect to its disconnect; the disconnect waits for the event in
    progress, and an event that was waiting behind it, or that comes after it, finds the
    socket gone."""

    def __init__(self, settings: Settings, verifier: Verifier, hub: Hub, presence: Presence) -> None:
        super().__init__(NAMESPACE)
        self.settings = settings
        self.verifier = verifier
        self.hub = hub
        self.presence = presence
        self.draining = False
        self._pending: set[asyncio.Task[None]] = set()
        self._turns: dict[str, asyncio.Lock] = {}  # sid -> its events' turn
        self._expiring: dict[str, asyncio.TimerHandle] = {}  # sid -> its token_expiring timer
        self.actions: dict[str, Action] = {
            "join_stream": self.on_join_stream,
            "leave_stream": self.on_leave_stream,
            "send_message": self.on_send_message,
            "send_tip": self.on_send_tip,
            "send_alert": self.on_send_alert,
            "refresh_token": self.on_refresh_token,
        }
        for event in payloads.MODERATION_ACTIONS:
            self.actions[event] = partial(self.on_moderation, event)
        self._received = {event: metrics.EVENTS.labels(event).inc for event in self.actions}

    def handles(self, event: str) -> bool:
        """Whether a client may send ``event`` (``HubServer`` refuses any other unread)."""
        return event in self.actions

    async def trigger_event(self, event: str, *args: Any) -> Any:
        """python-socketio's dispatch of the namespace's handlers: ``connect`` and
        ``disconnect`` to theirs, a client event to its action, in the socket's turn."""
        if event == "connect":
            return await self.on_connect(*args)
        if event == "disconnect":
            return await self.on_disconnect(args[0])
        return await self._in_turn(event, args[0], args[1:])

    # -- Engine.IO sessions, before any namespace -----------------------------------
    async def open_transport(self, eio_sid: str, environ: dict[str, Any]) -> dict[str, Any] | None:
        """An Engine.IO session opens: None when admitted, else the refusal, shaped as a refused
        namespace connection's (``{message: code, data: error}``, a client's connect_error)."""
        if self.draining:
            refusal = HubError("unavailable", "This worker is shutting down; connect again.")
        else:
            try:
                address = client_address(environ, self.settings.trusted_proxies)
                await self.hub.admit_transport(address, eio_sid)
                return None
            except HubError as exc:
                refusal = exc
            except (RedisError, OSError):
                refusal = HubError("unavailable")
        metrics.error(refusal.code, "connect")
        return {"message": refusal.code, "data": refusal.body()}

    async def close_transport(self, eio_sid: str) -> None:
        try:
            await self.hub.release_transport(eio_sid)
        except (RedisError, OSError) as exc:
            # The set's entry expires once its worker stops refreshing it.
            log.warning("release of session %s failed: %s", eio_sid, exc)

    # -- a socket's life ------------------------------------------------------------
    async def on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        if self.draining:
            raise _refused(HubError("unavailable", "This worker is shutting down; connect again."))
        token = auth.get("token") if isinstance(auth, dict) else None
        token = token or bearer(environ.get("HTTP_AUTHORIZATION"))
        identity = None
        if token is not None:
            try:
                identity = await self.verifier.authenticate(token)
            except HubError as exc:
                raise _refused(exc) from exc
        conn = Conn(sid, identity, client_address(environ, self.settings.trusted_proxies))
        try:
            await self.hub.admit(conn)
        except HubError as exc:
            raise _refused(exc) from exc
        except (RedisError, OSError) as exc:
            raise _refused(HubError("unavailable")) from exc
        if not self._transport_open(sid):
            # Closed while the admission waited on Redis: python-socketio calls no disconnect
            # handler for a socket still connecting, so its place is given back here.
            with contextlib.suppress(HubError, RedisError, OSError):
                await self.hub.disconnect(conn)
            raise _refused(HubError("unavailable", "The connection closed while connecting."))
        self.presence.add(conn)
        self._turns[sid] = asyncio.Lock()
        self._arm_expiry(sid, identity)

    def _transport_open(self, sid: str) -> bool:
        eio_sid = self.server.manager.eio_sid_from_sid(sid, NAMESPACE)
        eio_socket = self.server.eio.sockets.get(eio_sid) if eio_sid is not None else None
        return eio_socket is not None and not (eio_socket.closing or eio_socket.closed)

    async def on_disconnect(self, sid: str) -> None:
        turn = self._turns.get(sid)
        if turn is None:  # never admitted
            return
        try:
            async with turn:
                await self._leave_for_good(sid)
        finally:
            self._turns.pop(sid, None)
            self._arm_expiry(sid, None)

    async def _leave_for_good(self, sid: str) -> None:
        conn = self.presence.remove(sid)
        if conn is None:
            return
        try:
            await self.hub.disconnect(conn)
        except (HubError, RedisError, OSError) as exc:
            # The sweep removes this connection's presence once its expiry passes.
            log.warning("leave on disconnect failed for %s: %s", sid, exc)

    async def _in_turn(self, event: str, sid: str, args: tuple[Any, ...]) -> Ack:
        """The event's action once the socket's earlier events are done."""
        self._received[event]()
        turn = self._turns.get(sid)
        if turn is None:  # its disconnect is done: nothing to wait for, nothing to keep
            return await self._refuse(sid, event, HubError("unauthorized", "Not connected."))
        async with turn:
            conn = self.presence.conns.get(sid)
            context = logs.CONTEXT.set((event, sid, conn, args))
            try:
                return await self._act(event, sid, conn, args)
            finally:
                logs.CONTEXT.reset(context)

    async def _act(self, event: str, sid: str, conn: Conn | None, args: tuple[Any, ...]) -> Ack:
        """The action's ack, or its refusal: an error ack and an ``error`` event; an expired
        token's refusal is followed by a disconnect."""
        try:
            if conn is None:
                raise HubError("unauthorized", "Not connected.")
            return await self.actions[event](conn, args[0] if len(args) == 1 else list(args) or None)
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

    def _disconnect_soon(self, sid: str) -> None:
        """Disconnect after the refusal's ack has been queued (the task runs after it)."""
        task = asyncio.create_task(self.server.disconnect(sid, namespace=NAMESPACE, ignore_queue=True))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _refuse(self, sid: str, event: str, exc: HubError) -> Ack:
        metrics.error(exc.code, "socket")
        body = exc.body()
        self.server.send_event(sid, frames.event("error", orjson.dumps(dict(body, event=event))))
        return {"success": False, "error": body}

    # -- actions: (conn, data) -> ack ----------------------------------------------
    async def on_join_stream(self, conn: Conn, data: Any) -> Ack:
        payload = payloads.Join.parse(data)
        manager = self.server.manager
        was_in = payload.stream_id in manager.stream_rooms(conn.sid)
        # In the room, and subscribed to the stream's channel, before presence is written, so no
        # broadcast after the join is missed.
        await self.enter_room(conn.sid, payload.stream_id)
        try:
            await manager.bus.watch(payload.stream_id)
            joined = await self.hub.join(conn, payload)
        except BaseException:
            if not was_in:  # refused: the socket stays where it was
                await self.leave_room(conn.sid, payload.stream_id)
            raise
        await self._leave_rooms(conn.sid, but=payload.stream_id)  # one stream room at most
        metrics.JOINS.inc()
        encoded = orjson.dumps(joined)  # once, for the event and the ack
        self.server.send_event(conn.sid, frames.event("joined_stream", encoded))
        return orjson.Fragment(encoded)  # type: ignore[return-value]

    async def on_leave_stream(self, conn: Conn, _: Any) -> Ack:
        await self._leave_rooms(conn.sid)
        return await self.hub.leave(conn)

    async def _leave_rooms(self, sid: str, but: str | None = None) -> None:
        """Out of every stream room Socket.IO has the socket in (but ``but``), whatever this
        worker's presence says it watches."""
        for room in self.server.manager.stream_rooms(sid):
            if room != but:
                await self.leave_room(sid, room)

    async def on_send_message(self, conn: Conn, data: Any) -> Ack:
        return await self.hub.chat(conn, payloads.Chat.parse(data))

    async def on_send_tip(self, conn: Conn, data: Any) -> Ack:
        return await self.hub.tip(conn, payloads.Tip.parse(data, self.settings))

    async def on_send_alert(self, conn: Conn, data: Any) -> Ack:
        return await self.hub.alert(conn.identity, payloads.Alert.parse(data))

    async def on_moderation(self, event: str, conn: Conn, data: Any) -> Ack:
        """Any of the events of ``payloads.MODERATION_ACTIONS``."""
        return await self.hub.moderate(conn.identity, payloads.Moderation.parse(event, data))

    # -- long sessions: a new token without reconnecting ------------------------------
    EXPIRY_NOTICE = 60.0  # seconds before a token's expiry that token_expiring is sent

    async def on_refresh_token(self, conn: Conn, data: Any) -> Ack:
        """``{token}``: the socket's identity becomes the new token's, of the same user; a
        token that does not verify leaves the old identity in place."""
        token = data.get("token") if isinstance(data, dict) else None
        if not isinstance(token, str) or not token:
            raise HubError("invalid", "refresh_token takes {token}.")
        identity = await self.verifier.authenticate(token)
        if conn.identity is None or identity.user_id != conn.identity.user_id:
            raise HubError("forbidden", "The token is another user's; connect again with it to change user.")
        conn.identity = identity
        self._arm_expiry(conn.sid, identity)
        return {"success": True, "expires_at": iso_ms(int(identity.expires_at * 1000))}

    def _arm_expiry(self, sid: str, identity: Identity | None) -> None:
        """One timer per signed-in socket, set to fire once ``EXPIRY_NOTICE`` seconds before
        its token expires (at once if that is past), replaced by a refresh, cancelled at
        disconnect (``identity`` None); nothing runs for a socket in between."""
        timer = self._expiring.pop(sid, None)
        if timer is not None:
            timer.cancel()
        if identity is not None and identity.expires_at:
            delay = max(0.0, identity.expires_at - self.EXPIRY_NOTICE - time.time())
            loop = asyncio.get_running_loop()
            self._expiring[sid] = loop.call_later(delay, self._token_expiring, sid, identity.expires_at)

    def _token_expiring(self, sid: str, expires_at: float) -> None:
        self._expiring.pop(sid, None)
        payload = {
            "expires_at": iso_ms(int(expires_at * 1000)),
            "seconds_left": max(0, int(expires_at - time.time())),
        }
        task = asyncio.create_task(self.emit("token_expiring", payload, to=sid, ignore_queue=True))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    # -- orders from the room bus and the presence refresh --------------------------
    async def banned(self, stream_id: str, user_id: str, reason: str | None) -> None:
        """The user was banned from the stream: their sockets in its room here are told, leave
        it, and (those watching it) watch nothing (the ban script already removed their
        presence). The room's members are Socket.IO's own, not what presence says they watch."""
        for sid in self.server.manager.members(stream_id):
            conn = self.presence.conns.get(sid)
            if conn is None or conn.identity is None or conn.identity.user_id != user_id:
                continue
            if conn.stream_id == stream_id:
                self.presence.unwatch(conn)
            await self.leave_room(sid, stream_id)
            await self.emit("banned", {"stream_id": stream_id, "reason": reason}, to=sid, ignore_queue=True)

    async def stream_closed(self, stream_id: str) -> None:
        """The stream ended (from any worker): local watchers watch nothing now."""
        self.presence.forget_stream(stream_id)

    async def stream_gone(self, stream_id: str, conns: list[Conn]) -> None:
        """The refresh found the stream no longer live: take its watchers out of the room."""
        for conn in conns:
            await self.leave_room(conn.sid, stream_id)

    # -- the worker stops -----------------------------------------------------------
    async def drain(self, seconds: float) -> None:
        """Refuse new connections, remove this worker's presence at once, then close every
        connection, spread over ``seconds`` so clients reconnect elsewhere without a stampede.
        Closing the transport (not just the namespace) makes clients reconnect by themselves."""
        self.draining = True
        await self.presence.withdraw()
        sids = list(self.presence.conns)
        random.shuffle(sids)
        pause = seconds / len(sids) if sids else 0.0
        for sid in sids:
            eio_sid = self.server.manager.eio_sid_from_sid(sid, NAMESPACE)
            eio_socket = self.server.eio.sockets.get(eio_sid) if eio_sid is not None else None
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
