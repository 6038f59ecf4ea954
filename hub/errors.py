"""The contract's error codes (PROTOCOL.md §7) and the one exception that carries them."""

from __future__ import annotations

import math
from typing import Any

HTTP_STATUS = {
    "invalid": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "conflict": 409,
    "stream_not_live": 409,
    "not_joined": 409,
    "payload_too_large": 413,
    "rate_limited": 429,
    "banned": 403,
    "timed_out": 403,
    "slow_mode": 429,
    "unavailable": 503,
}

DEFAULT_MESSAGES = {
    "invalid": "The request is malformed.",
    "unauthorized": "A valid token is required.",
    "forbidden": "You are not allowed to do this.",
    "not_found": "No such stream.",
    "conflict": "The stream is not in a state that allows this.",
    "stream_not_live": "The stream is not live.",
    "not_joined": "Join the stream first.",
    "payload_too_large": "The payload is too large.",
    "rate_limited": "Too many requests; slow down.",
    "unavailable": "A backing service is unavailable; try again shortly.",
}


class HubError(Exception):
    """A refusal the client is told about: a contract code and a human message."""

    def __init__(self, code: str, message: str | None = None, retry_after: float | None = None):
        self.code = code
        self.message = message or DEFAULT_MESSAGES.get(code, code)
        self.retry_after = retry_after
        super().__init__(f"{code}: {self.message}")

    @property
    def status(self) -> int:
        return HTTP_STATUS.get(self.code, 400)

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.retry_after is not None:
            error["retry_after"] = self.retry_after_seconds
        return error

    @property
    def retry_after_seconds(self) -> int:
        return max(1, math.ceil(self.retry_after or 0))


class TokenExpired(HubError):
    """The connection's token expired during the session: refused, then disconnected."""

    def __init__(self) -> None:
        super().__init__("unauthorized", "The token has expired; connect again with a new one.")


def invalid(message: str) -> HubError:
    return HubError("invalid", message)
