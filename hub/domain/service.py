"""One function per action of the contract: checks, then one state change, then the answer."""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson

from hub.codec import dumps, iso_ms, loads, now_ms, uuid7, uuid7_ms
from hub.domain import records
from hub.domain.auth import Identity
from hub.domain.payloads import Alert, Chat, CreateStream, Join, Moderation, Tip
from hub.domain.presence import Conn, Presence
from hub.errors import HubError, TokenExpired
from hub.money import decimal_json, fee_cents, from_cents, money_json
from hub.settings import Settings
from hub.storage.keys import NAMESPACE, STREAMER_STREAMS_KEPT
from hub.storage.mysql import History
from hub.storage.state import MessageMissing, NoStream, Stale, State

log = logging.getLogger(__name__)

RECENT_ON_JOIN = 50
_SPLIT = b"\x00"  # where the moderators list goes in a moderators_changed broadcast (never in JSON)


def room_event(event: str, data_json: bytes) -> bytes:
    """A room event's Engine.IO text (``42/streaming,["event",{...}]``), encoded here once and
    written as is to every socket by every worker (``hub.transport.fanout``)."""
    return b"42" + _NAMESPACE_COMMA + b"[" + dumps(event) + b"," + data_json + b"]"


def room_message(*texts: bytes) -> bytes:
    """What goes on a stream's channel: no socket to skip, then one event per line."""
    return b"\n" + b"\n".join(texts)


_NAMESPACE_COMMA = NAMESPACE.encode() + b","


class Hub:
    def __init__(self, settings: Settings, state: State, history: History, presence: Presence):
        self.settings = settings
        self.state = state
        self.history = history
        self.presence = presence

    # -- watching -----------------------------------------------------------------
    async def join(self, conn: Conn, payload: Join) -> dict[str, Any]:
        if conn.identity is not None:
            self._current(conn.identity)  # a token that expired since the connect may not join
        again = conn.stream_id == payload.stream_id and conn.member is not None
        # Joining again keeps the same presence (no viewer events).
        member = conn.member if again and conn.member else f"{uuid7()}|{now_ms()}|{conn.viewer}"
        # The newest 50, or the newest of those after last_message_id up to the recent size;
        # one more to tell whether older ones were left out.
        limit = self.settings.recent_size if payload.last_message_id else RECENT_ON_JOIN
        count, h, recent = await self.state.join(
            payload.stream_id,
            member,
            conn.sid,
            conn.username,
            conn.viewer,
            limit + 1,
            payload.last_message_id,
        )
        if not again and conn.stream_id is not None:
            await self.leave(conn)  # only once the new stream has accepted the join
        self.presence.watch(conn, payload.stream_id, h["streamer_id"], member)
        messages = await self._messages(
            payload.stream_id,
            None,
            payload.last_message_id,
            limit + 1,
            held=recent,
            floor=h.get("recent_floor"),
        )
        return {
            "success": True,
            "stream": records.stream_from_hash(h, count),
            "viewer_count": count,
            "recent_messages": messages[:limit][::-1],
            "has_more": len(messages) > limit,
        }

    async def leave(self, conn: Conn) -> dict[str, Any]:
        stream_id, member = conn.stream_id, conn.member
        self.presence.unwatch(conn)
        if stream_id is not None and member is not None:
            await self.state.leave(stream_id, member)
        return {"success": True, "stream_id": stream_id}

    # -- chat and tips ------------------------------------------------------------
    def _speaker(self, conn: Conn, stream_id: str) -> Identity:
        if conn.identity is None:
            raise HubError("unauthorized", "Sign in to chat or tip.")
        identity = self._current(conn.identity)
        if conn.stream_id != stream_id:
            raise HubError("not_joined")
        return identity

    def _ended(self, conn: Conn) -> HubError:
        """Redis found the socket's stream no longer live: it ended, and its room was emptied
        then, whether or not this worker has heard of it yet; the socket watches nothing."""
        self.presence.unwatch(conn)
        return HubError("not_joined", "The stream has ended.")

    async def chat(self, conn: Conn, payload: Chat) -> dict[str, Any]:
        identity = self._speaker(conn, payload.stream_id)
        try:
            return await self._post(identity, payload.stream_id, payload.message, payload.message_type)
        except HubError as exc:
            if exc.code == "stream_not_live":
                raise self._ended(conn) from None
            raise

    async def alert(self, identity: Identity | None, payload: Alert) -> dict[str, Any]:
        """The streamer's trade alert: a chat message of type ALERT (the sender need not watch)."""
        identity = self._current(identity)
        alert = {"symbol": payload.symbol, "side": payload.side, "price": decimal_json(payload.price)}
        return await self._post(identity, payload.stream_id, payload.message, "ALERT", alert)

    async def _post(
        self,
        identity: Identity,
        stream_id: str,
        text: str,
        message_type: str,
        alert: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        message_id = uuid7()
        while True:
            message = {
                "message_id": message_id,
                "stream_id": stream_id,
                "user_id": identity.user_id,
                "username": identity.name,
                "message": text,
                "message_type": message_type,
                "tip_amount": None,
                "created_at": iso_ms(uuid7_ms(message_id)),
            }
            if alert is not None:
                message["alert"] = alert
            encoded = dumps(message)
            try:
                await self.state.chat(
                    stream_id,
                    identity.user_id,
                    identity.is_admin,
                    message_id,
                    encoded,
                    room_event("chat_message", encoded),
                    "alert" if alert is not None else "chat",
                )
            except Stale as exc:  # the chat was cleared after this id was made: a later id
                message_id = uuid7(after=exc.cleared)
                continue
            return {"success": True, "message": orjson.Fragment(encoded)}  # encoded once

    async def tip(self, conn: Conn, payload: Tip) -> dict[str, Any]:
        identity = self._speaker(conn, payload.stream_id)
        streamer = conn.streamer_id or ""
        if identity.user_id == streamer:
            raise HubError("forbidden", "You cannot tip your own stream.")
        if payload.to_user_id is not None and payload.to_user_id != streamer:
            raise HubError("invalid", "'to_user_id' must be the stream's streamer.")
        fee = fee_cents(payload.amount_cents, self.settings.platform_fee)
        tip_id, message_id = uuid7(), uuid7()
        created = iso_ms(uuid7_ms(tip_id))
        amount = money_json(payload.amount_cents)
        received = {
            "tip_id": tip_id,
            "stream_id": payload.stream_id,
            "from_user": identity.user_id,
            "from_username": identity.name,
            "to_user": streamer,
            "amount": amount,
            "platform_fee": money_json(fee),
            "currency": payload.currency,
            "message": payload.message,
            "created_at": created,
        }
        text = payload.message or f"Tipped {from_cents(payload.amount_cents)} {payload.currency}"
        record = {
            "tip_id": tip_id,
            "stream_id": payload.stream_id,
            "from_user_id": identity.user_id,
            "to_user_id": streamer,
            "amount_cents": payload.amount_cents,
            "fee_cents": fee,
            "currency": payload.currency,
            "message": payload.message,
            "client_tip_id": payload.client_tip_id,
            "created_at": created,
        }
        received_json = dumps(received)
        while True:
            message = {
                "message_id": message_id,
                "stream_id": payload.stream_id,
                "user_id": identity.user_id,
                "username": identity.name,
                "message": text,
                "message_type": "TIP",
                "tip_amount": amount,
                "created_at": created,
            }
            ack_json = dumps(
                {"success": True, "tip": orjson.Fragment(received_json), "message_id": message_id}
            )
            message_json = dumps(message)
            try:
                first = await self.state.tip(
                    payload.stream_id,
                    identity.user_id,
                    payload.client_tip_id,
                    payload.amount_cents,
                    fee,
                    message_id,
                    ack_json,
                    dumps(record),
                    message_json,
                    room_message(
                        room_event("tip_received", received_json), room_event("chat_message", message_json)
                    ),
                )
            except Stale as exc:
                message_id = uuid7(after=exc.cleared)
                continue
            except HubError as exc:
                if exc.code == "stream_not_live":
                    raise self._ended(conn) from None
                raise
            if first is not None:
                return dict(loads(first), duplicate=True)
            return orjson.Fragment(ack_json)  # type: ignore[return-value]  # encoded once

    # -- moderation ---------------------------------------------------------------
    def _current(self, identity: Identity | None) -> Identity:
        """A signed-in identity whose token has not expired since the connection was made."""
        if identity is None:
            raise HubError("unauthorized", "Sign in first.")
        if identity.expires_at and identity.expires_at + self.settings.jwt_leeway < time.time():
            raise TokenExpired
        return identity

    async def moderate(self, identity: Identity | None, m: Moderation) -> dict[str, Any]:
        """One action of PROTOCOL §8: checked, applied, recorded and broadcast in one script."""
        who = self._current(identity)
        action_id = uuid7()
        created_ms = uuid7_ms(action_id)
        record: dict[str, Any] = {
            "action_id": action_id,
            "action": m.action,
            "stream_id": m.stream_id,
            "by": who.user_id,
            "created_at": iso_ms(created_ms),
        }
        for name in ("user_id", "message_id", "seconds", "reason"):
            if getattr(m, name) not in (None, ""):
                record[name] = getattr(m, name)
        base = {"stream_id": m.stream_id}
        value, ban_order = "", b""
        if m.action == "delete_message":
            event, data = "message_deleted", dict(base, message_id=m.message_id, by=who.user_id)
        elif m.action == "timeout_user":
            assert m.seconds is not None
            ends = created_ms + m.seconds * 1000
            value, record["until"] = str(ends), iso_ms(ends)
            event, data = (
                "user_timed_out",
                dict(base, user_id=m.user_id, until=record["until"], by=who.user_id),
            )
        elif m.action == "ban_user":
            event, data = "user_banned", dict(base, user_id=m.user_id, by=who.user_id)
            ban_order = dumps({"user_id": m.user_id, "reason": m.reason})
        elif m.action == "unban_user":
            event, data = "user_unbanned", dict(base, user_id=m.user_id, by=who.user_id)
        elif m.action == "clear_chat":
            value = action_id  # every message with an older id is cleared
            event, data = "chat_cleared", dict(base, by=who.user_id)
        elif m.action == "set_slow_mode":
            value = str(m.seconds)
            event, data = "slow_mode", dict(base, seconds=m.seconds, by=who.user_id)
        else:  # add_moderator, remove_moderator: the script writes the list in
            event, data = "moderators_changed", None
        if data is None:
            pub, tail = room_message(
                room_event(event, b'{"stream_id":' + dumps(m.stream_id) + b',"moderators":' + _SPLIT + b"}")
            ).split(_SPLIT)
        else:
            pub, tail = room_message(room_event(event, dumps(data))), b""
        call = dict(
            target=m.user_id,
            message_id=m.message_id,
            value=value,
            record_json=dumps(record),
            pub_json=pub,
            pub_tail=tail,
            ban_order=ban_order,
        )
        try:
            try:
                moderators = await self.state.moderate(
                    m.stream_id, m.action, who.user_id, who.is_admin, **call
                )
            except MessageMissing:
                if not await self.history.has_message(m.stream_id, m.message_id):
                    raise HubError("not_found", "No such message.") from None
                moderators = await self.state.moderate(
                    m.stream_id, m.action, who.user_id, who.is_admin, found=True, **call
                )
        except NoStream:
            if await self.history.stream(m.stream_id) is not None:
                raise HubError("stream_not_live", "The stream has ended.") from None
            raise HubError("not_found") from None
        log.info("moderation: %s", m.action, extra={"stream_id": m.stream_id, "user_id": who.user_id})
        ack: dict[str, Any] = {"success": True, "action": record}
        if moderators is not None:
            ack["moderators"] = loads(moderators)
        return ack

    async def moderation_log(self, identity: Identity, stream_id: str, limit: int) -> list[dict[str, Any]]:
        """The stream's moderation actions, newest first: those still in Redis (maybe not
        flushed yet) merged with MySQL's. For the streamer, its moderators and admins."""
        streamer, moderator = await self.state.standing(stream_id, identity.user_id)
        if streamer is None:
            row = await self.history.stream(stream_id)
            if row is None:
                raise HubError("not_found")
            streamer = row["streamer_id"]
        if not (identity.user_id == streamer or identity.is_admin or moderator):
            raise HubError("forbidden", "Only the streamer, its moderators or an admin may read this.")
        merged = {
            r["action_id"]: records.action_from_row(r)
            for r in await self.history.moderation_actions(stream_id, limit)
        }
        for item in await self.state.moderation_log(stream_id):
            action = loads(item)
            merged[action["action_id"]] = action
        return sorted(merged.values(), key=lambda a: a["action_id"], reverse=True)[:limit]

    # -- streams ------------------------------------------------------------------
    async def create_stream(self, identity: Identity, payload: CreateStream) -> dict[str, Any]:
        if not identity.is_streamer:
            raise HubError("forbidden", "Only streamers may create streams.")
        stream_id, now = self.state.new_stream_id(identity.user_id), now_ms()
        status = "SCHEDULED" if payload.scheduled_at else "LIVE"
        fields = {
            "stream_id": stream_id,
            "streamer_id": identity.user_id,
            "streamer_name": identity.name,
            "title": payload.title,
            "description": payload.description,
            "thumbnail_url": payload.thumbnail_url or "",
            "status": status,
            "category": payload.category,
            "is_recording": "0",
            "recording_url": "",
            "scheduled_at": str(payload.scheduled_at or ""),
            "started_at": str(now) if status == "LIVE" else "",
            "ended_at": "",
            "duration_seconds": "",
            "peak_viewers": "0",
            "message_count": "0",
            "tip_count": "0",
            "tips_cents": "0",
            "fees_cents": "0",
            "created_at": str(now),
            "updated_at": str(now),
        }
        await self.state.create_stream(fields)
        log.info("stream created (%s)", status, extra={"stream_id": stream_id, "user_id": identity.user_id})
        return records.stream_from_hash(fields, 0)

    async def _owned(self, identity: Identity, stream_id: str) -> dict[str, str]:
        found = await self.state.stream(stream_id)
        if found is None:
            row = await self.history.stream(stream_id)
            if row is None:
                raise HubError("not_found")
            _may_act(identity, row["streamer_id"])  # someone else's ended stream: forbidden
            raise HubError("conflict", "The stream has ended.")
        h = found[0]
        _may_act(identity, h["streamer_id"])
        return h

    async def start_stream(self, identity: Identity, stream_id: str) -> dict[str, Any]:
        h = await self._owned(identity, stream_id)
        await self.state.start_stream(stream_id, h["streamer_id"])
        log.info("stream started", extra={"stream_id": stream_id, "user_id": identity.user_id})
        return await self.get_stream(stream_id)

    async def cancel_stream(self, identity: Identity, stream_id: str) -> dict[str, Any]:
        """A SCHEDULED stream ends without going live."""
        h = await self._owned(identity, stream_id)
        await self.state.cancel_stream(stream_id, h["streamer_id"])
        log.info("stream cancelled", extra={"stream_id": stream_id, "user_id": identity.user_id})
        return await self.get_stream(stream_id)

    async def end_stream(self, identity: Identity, stream_id: str) -> dict[str, Any]:
        h = await self._owned(identity, stream_id)
        try:
            await self.state.end_stream(stream_id, h["streamer_id"])
        except HubError as exc:
            if exc.code == "conflict":
                raise HubError("conflict", "The stream is not live.") from exc
            raise
        log.info("stream ended", extra={"stream_id": stream_id, "user_id": identity.user_id})
        stream = await self.get_stream(stream_id)
        stats = await self.stats(stream_id)
        return dict(stream, **{k: v for k, v in stats.items() if k not in stream})

    async def get_stream(self, stream_id: str) -> dict[str, Any]:
        found = await self.state.stream(stream_id)
        if found is not None:
            return records.stream_from_hash(found[0], found[1])
        row = await self.history.stream(stream_id)
        if row is None:
            raise HubError("not_found")
        return records.stream_from_row(row)

    async def stats(self, stream_id: str) -> dict[str, Any]:
        found = await self.state.stream(stream_id)
        if found is not None:
            h, count, unique = found
            return records.stats_from_hash(h, count, unique, now_ms())
        row = await self.history.stream(stream_id)
        if row is None:
            raise HubError("not_found")
        return records.stats_from_row(row)

    async def live(self, category: str | None, limit: int, offset: int) -> list[dict[str, Any]]:
        ids = await self.state.live_ids(category, offset, limit)
        pairs = await self.state.streams(ids)
        return [records.stream_from_hash(h, count) for h, count in pairs if h["status"] == "LIVE"]

    async def user_streams(self, user_id: str, status: str | None, limit: int) -> list[dict[str, Any]]:
        """Streams held in Redis (the newest, maybe not flushed yet) merged with MySQL's."""
        # The newest `limit` held in Redis (all those kept when filtering by status) and MySQL's
        # newest `limit`: the cost follows the limit, not how many streams the user ever had.
        ids = await self.state.streamer_stream_ids(user_id, STREAMER_STREAMS_KEPT if status else limit)
        pairs = await self.state.streams(ids)
        held = {h["stream_id"] for h, _ in pairs}
        await self.state.forget_streamer_streams(user_id, [i for i in ids if i not in held])
        merged = {h["stream_id"]: records.stream_from_hash(h, count) for h, count in pairs}
        for row in await self.history.streamer_streams(user_id, status, limit):
            merged.setdefault(row["stream_id"], records.stream_from_row(row))
        streams = [s for s in merged.values() if status is None or s["status"] == status]
        streams.sort(key=lambda s: s["created_at"] or "", reverse=True)
        return streams[:limit]

    async def chat_history(self, stream_id: str, before: str | None, limit: int) -> list[Any]:
        """The newest ``limit`` messages older than ``before``, oldest first."""
        return (await self._messages(stream_id, before, None, limit))[::-1]

    async def _messages(
        self,
        stream_id: str,
        before: str | None,
        after: str | None,
        limit: int,
        held: list[str] | None = None,
        floor: str | None = None,
    ) -> list[Any]:
        """The newest ``limit`` kept messages with ids between ``after`` and ``before``, newest
        first, exactly: those of the recent set (``held``: already read, with its ``floor``),
        whole when it has ``limit`` of them or was never trimmed; else merged with the
        unflushed ones and MySQL's. Redis is read before MySQL, and the flusher takes a message
        out of the unflushed set only once MySQL has it, so none falls between the two."""
        page = None
        if held is None:
            page = await self.state.chat_page(stream_id, before, after, limit)
            held, floor = page.recent, page.floor
            if not page.live_state:
                held = []
        if page is None or page.live_state:
            if floor is None or len(held) >= limit:  # the recent set holds all of them
                # The stored JSON goes out as it is (exact amounts and prices), never decoded.
                return [orjson.Fragment(item) for item in held[:limit]]
        if page is None:
            page = await self.state.chat_page(stream_id, before, after, limit, recent=False)
        hidden, cleared = page.deleted, page.cleared
        found: dict[str, Any] = {}
        for item in (*held, *page.unflushed):
            message_id = _message_id(item)
            if message_id not in hidden and (cleared is None or message_id > cleared):
                found[message_id] = orjson.Fragment(item)
        if not page.live_state and not found and await self.history.stream(stream_id) is None:
            raise HubError("not_found")
        # Deletions and a clear not flushed yet are hidden here; MySQL has the rest marked.
        since = max(after or "", cleared or "") or None
        for row in await self.history.messages_before(stream_id, before, limit + len(hidden), since):
            if row["message_id"] not in hidden:
                found.setdefault(row["message_id"], row)
        newest = sorted(found, reverse=True)[:limit]
        return [
            item if isinstance(item := found[m], orjson.Fragment) else records.message_from_row(item)
            for m in newest
        ]

    # -- connections --------------------------------------------------------------
    async def admit_transport(self, address: str, eio_sid: str) -> None:
        """An Engine.IO session opens: counted against its address's limits."""
        await self.state.admit_transport(address, eio_sid)
        self.presence.transports[eio_sid] = address

    async def release_transport(self, eio_sid: str) -> None:
        address = self.presence.transports.pop(eio_sid, None)
        if address is not None:
            await self.state.release(self.state.address_holder(address), eio_sid)

    async def admit(self, conn: Conn) -> None:
        """A connection to the namespace: a signed-in one counted against its user's limit."""
        if conn.identity is not None:
            await self.state.admit_user(conn.identity.user_id, conn.sid)

    async def disconnect(self, conn: Conn) -> None:
        if conn.stream_id is not None:
            await self.leave(conn)
        if conn.identity is not None:
            await self.state.release(self.state.user_holder(conn.identity.user_id), conn.sid)


_ID_AT = len('{"message_id":"')


def _message_id(item: str) -> str:
    """A buffered message's id, read off its JSON text (the hub writes ``message_id`` first)."""
    if item.startswith('{"message_id":"'):
        return item[_ID_AT : _ID_AT + 36]
    return str(loads(item)["message_id"])


def _may_act(identity: Identity, streamer_id: str) -> None:
    if streamer_id != identity.user_id and not identity.is_admin:
        raise HubError("forbidden", "Only the stream's streamer or an admin may do this.")
