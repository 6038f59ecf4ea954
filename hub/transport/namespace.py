"""Socket.IO namespace ``/streaming``: event -> parse -> service -> ack.

Handlers stay thin; every refusal is a HubError turned into an error ack and an ``error``
event to that socket alone."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import socketio
from redis.exceptions import RedisError

from hub import logs, metrics
from hub.domain import payloads
from hub.domain.auth import Verifier, bearer
from hub.domain.presence import Conn, Presence
from hub.domain.service import Hub
from hub.errors import HubError, TokenExpired
from hub.settings import Settings
from hub.storage.keys import NAMESPACE
from hub.transport.addresses import client_address
from hub.transport.server import HubServer

log = logging.getLogger(__name__)


Action = Callable[[Conn, Any], Awaitable[dict[str, Any]]]


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
