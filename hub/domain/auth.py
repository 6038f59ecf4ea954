"""Identity from a JWT, and nothing else."""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import jwt

from hub.domain.payloads import clean_text
from hub.errors import HubError
from hub.settings import Settings


@dataclass(frozen=True)
class Identity:
    user_id: str
    name: str
    roles: frozenset[str] = field(default_factory=frozenset)
    expires_at: float = 0.0

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles

    @property
    def is_streamer(self) -> bool:
        return "streamer" in self.roles or self.is_admin


class Verifier:
    """Checks tokens against the configured key, algorithms, audience and issuer.

    A token verified once is remembered (the newest ``CACHE_SIZE``) until it expires, so a
    client that reconnects or opens another tab with the same token costs no second signature
    check; the expiry is still checked on every use."""

    CACHE_SIZE = 4096

    def __init__(self, settings: Settings) -> None:
        self._verified: OrderedDict[str, Identity] = OrderedDict()
        self._key = settings.jwt_public_key or settings.jwt_secret
        self._keys = dict(settings.jwt_public_keys)
        self._algorithms = settings.jwt_algorithms
        self._audience = settings.jwt_audience
        self._issuer = settings.jwt_issuer
        self._leeway = settings.jwt_leeway

    def verify(self, token: Any) -> Identity:
        if not isinstance(token, str) or not token:
            raise HubError("unauthorized")
        known = self._verified.get(token)
        if known is not None:
            if known.expires_at + self._leeway >= time.time():
                self._verified.move_to_end(token)
                return known
            del self._verified[token]
        identity = self._decode(token)
        self._verified[token] = identity
        if len(self._verified) > self.CACHE_SIZE:
            self._verified.popitem(last=False)
        return identity

    def _decode(self, token: str) -> Identity:
        try:
            claims = jwt.decode(
                token,
                self._key_for(token),
                algorithms=self._algorithms,
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": ["sub", "exp"], "verify_aud": self._audience is not None},
            )
        except jwt.PyJWTError as exc:
            raise HubError("unauthorized", "The token is invalid or expired.") from exc
        return identity_from_claims(claims)

    def _key_for(self, token: str) -> str:
        """The key named by the token's ``kid`` when several are configured, else the one key."""
        if self._keys:
            kid = jwt.get_unverified_header(token).get("kid")
            key = self._keys.get(kid) if isinstance(kid, str) else None
            if key is not None:
                return key
        if self._key is None:
            raise jwt.InvalidKeyError("no key for this token")
        return self._key


def identity_from_claims(claims: dict[str, Any]) -> Identity:
    sub = claims.get("sub")
    if not isinstance(sub, str) or not 0 < len(sub) <= 191:
        raise HubError("unauthorized", "The token's subject is not a valid user id.")
    name = claims.get("name")
    # As shown to others: no bidi overrides or invisible characters (payloads.clean_text), at
    # most 100 characters (cleaned again, so a cut sequence leaves no dangling joiner).
    name = clean_text(clean_text(name)[:100]) if isinstance(name, str) else ""
    roles = claims.get("roles") or []
    if not isinstance(roles, list):
        roles = []
    return Identity(
        user_id=sub,
        name=name or sub,
        roles=frozenset(r for r in roles if isinstance(r, str)),
        expires_at=float(claims.get("exp", 0)),
    )


def bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def mint(settings: Settings, user_id: str, name: str | None, roles: list[str], ttl: int) -> str:
    """A development token signed with the HS256 secret."""
    if not settings.jwt_secret:
        raise HubError("unauthorized", "HUB_JWT_SECRET is not set; no token can be signed.")
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": user_id,
        "name": name or user_id,
        "roles": roles,
        "iat": now,
        "exp": now + ttl,
    }
    if settings.jwt_audience:
        claims["aud"] = settings.jwt_audience
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    return jwt.encode(claims, settings.jwt_secret, algorithm="HS256")
