"""Who may act: the checks every topic service makes of the caller before it acts."""

from __future__ import annotations

import time

from hub.domain.auth import Identity
from hub.domain.presence import Conn, Presence
from hub.errors import HubError, TokenExpired
from hub.settings import Settings


def current(identity: Identity | None, settings: Settings) -> Identity:
    """A signed-in identity whose token has not expired since the connection was made."""
    if identity is None:
        raise HubError("unauthorized", "Sign in first.")
    if identity.expires_at and identity.expires_at + settings.jwt_leeway < time.time():
        raise TokenExpired
    return identity


def speaker(conn: Conn, stream_id: str, settings: Settings) -> Identity:
    """The identity of a socket that chats or tips in ``stream_id``: signed in, current, and
    watching that stream."""
    if conn.identity is None:
        raise HubError("unauthorized", "Sign in to chat or tip.")
    identity = current(conn.identity, settings)
    if conn.stream_id != stream_id:
        raise HubError("not_joined")
    return identity


def ended(presence: Presence, conn: Conn) -> HubError:
    """Redis found the socket's stream no longer live: it ended, and its room was emptied
    then, whether or not this worker has heard of it yet; the socket watches nothing."""
    presence.unwatch(conn)
    return HubError("not_joined", "The stream has ended.")


def may_act(identity: Identity, streamer_id: str) -> None:
    """Only the stream's streamer or an admin may manage a stream."""
    if streamer_id != identity.user_id and not identity.is_admin:
        raise HubError("forbidden", "Only the stream's streamer or an admin may do this.")
