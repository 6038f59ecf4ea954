"""Identity from a JWT, and nothing else."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import jwt
import orjson

from hub.domain.payloads import clean_text
from hub.errors import HubError
from hub.settings import Settings

log = logging.getLogger(__name__)


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


class UnknownKey(HubError):
    """The token names a ``kid`` the cached JWKS does not hold: fetching the set again may help."""

    def __init__(self) -> None:
        super().__init__("unauthorized", "The token is signed with an unknown key.")


class Jwks:
    """An identity provider's JSON Web Key Set (``HUB_JWT_JWKS_URL``), fetched with aiohttp.

    Only public signing keys whose algorithm is one the hub accepts are kept: an RSA or EC key
    (never an ``oct`` key, whose bytes would be an HMAC secret anyone who reads the set knows),
    with a ``kid``, not marked for encryption. The set is fetched at the first token, again when
    a token names a ``kid`` it lacks, and in the background once it is older than ``MAX_AGE`` (so
    a key the provider withdrew stops being accepted). Fetches are at most one per
    ``min_interval`` seconds, whatever the tokens say, and callers that miss at the same time
    wait for the same fetch: forged kids cannot make the hub hammer the provider. A failed fetch
    keeps the keys already known; it is logged once, and once more when the provider answers
    again."""

    MAX_AGE = 3600.0
    TIMEOUT = 5.0
    SIZE_LIMIT = 1024 * 1024

    def __init__(self, url: str, algorithms: list[str], min_interval: float) -> None:
        self.url = url
        self.algorithms = algorithms
        self.min_interval = min_interval
        self.keys: dict[str, jwt.PyJWK] = {}
        self.fetches = 0  # attempts, successful or not
        self._attempted: float | None = None  # time.monotonic() of the last attempt
        self._fetched: float | None = None  # of the last success
        self._fetching: asyncio.Task[None] | None = None
        self._failing = False

    def get(self, kid: str) -> jwt.PyJWK | None:
        """The key of ``kid`` if the set holds it; a set past ``MAX_AGE`` is renewed meanwhile."""
        if self._fetched is not None and time.monotonic() - self._fetched > self.MAX_AGE:
            self._start()
        return self.keys.get(kid)

    async def refresh(self) -> None:
        """Fetch the set again unless a fetch is under way (then wait for it) or the last one
        was less than ``min_interval`` ago (then return at once)."""
        fetching = self._start()
        if fetching is not None:
            # A caller that gives up (its client went away) does not cancel the others' fetch.
            await asyncio.shield(fetching)

    def _start(self) -> asyncio.Task[None] | None:
        if self._fetching is None:
            now = time.monotonic()
            if self._attempted is not None and now - self._attempted < self.min_interval:
                return None
            self._attempted = now
            self._fetching = asyncio.create_task(self._fetch())
        return self._fetching

    async def _fetch(self) -> None:
        self.fetches += 1
        try:
            keys = self._usable(await self._download())
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            if not self._failing:
                self._failing = True
                log.warning(
                    "JWKS %s cannot be fetched (%s); the %d keys known still verify tokens",
                    self.url,
                    exc,
                    len(self.keys),
                )
        else:
            if self._failing:
                self._failing = False
                log.info("JWKS %s fetched again", self.url)
            self.keys = keys
            self._fetched = time.monotonic()
        finally:
            self._fetching = None

    async def _download(self) -> Any:
        timeout = aiohttp.ClientTimeout(total=self.TIMEOUT)
        async with aiohttp.ClientSession(timeout=timeout) as session, session.get(self.url) as resp:
            resp.raise_for_status()
            body = await resp.content.read(self.SIZE_LIMIT + 1)
        if len(body) > self.SIZE_LIMIT:
            raise ValueError(f"the set is larger than {self.SIZE_LIMIT} bytes")
        return orjson.loads(body)  # orjson.JSONDecodeError is a ValueError

    def _usable(self, document: Any) -> dict[str, jwt.PyJWK]:
        entries = document.get("keys") if isinstance(document, dict) else None
        if not isinstance(entries, list):
            raise ValueError("no 'keys' list")
        keys: dict[str, jwt.PyJWK] = {}
        for entry in entries:
            if not isinstance(entry, dict) or entry.get("kty") not in ("RSA", "EC"):
                continue
            kid = entry.get("kid")
            if not isinstance(kid, str) or entry.get("use", "sig") != "sig" or "d" in entry:
                continue  # no kid, an encryption key, or a private key published by mistake
            try:
                key = jwt.PyJWK(entry)
            except jwt.PyJWTError:
                continue
            if key.algorithm_name in self.algorithms:
                keys[kid] = key
        if not keys and entries:
            raise ValueError("no RSA or EC signing key with a kid for " + "/".join(self.algorithms))
        return keys


class Verifier:
    """Checks tokens against the configured key, algorithms, audience and issuer.

    A token verified once is remembered (the newest ``CACHE_SIZE``) until it expires, so a
    client that reconnects or opens another tab with the same token costs no second signature
    check; the expiry is still checked on every use.

    ``verify`` uses what is known now; ``authenticate`` also fetches the provider's key set
    when the token names a key it lacks (``HUB_JWT_JWKS_URL``)."""

    CACHE_SIZE = 4096

    def __init__(self, settings: Settings) -> None:
        self._verified: OrderedDict[str, Identity] = OrderedDict()
        self._key = settings.jwt_public_key or settings.jwt_secret
        self._keys = dict(settings.jwt_public_keys)
        self.jwks = (
            Jwks(settings.jwt_jwks_url, settings.jwt_algorithms, settings.jwt_jwks_min_interval)
            if settings.jwt_jwks_url
            else None
        )
        self._algorithms = settings.jwt_algorithms
        self._audience = settings.jwt_audience
        self._issuer = settings.jwt_issuer
        self._leeway = settings.jwt_leeway

    async def authenticate(self, token: Any) -> Identity:
        """``verify``, after fetching the key set again if the token's key is not in it."""
        try:
            return self.verify(token)
        except UnknownKey:
            assert self.jwks is not None
            await self.jwks.refresh()
            return self.verify(token)

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
            key, algorithms = self._key_for(token)
            claims = jwt.decode(
                token,
                key,
                algorithms=algorithms,
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": ["sub", "exp"], "verify_aud": self._audience is not None},
            )
        except jwt.PyJWTError as exc:
            raise HubError("unauthorized", "The token is invalid or expired.") from exc
        return identity_from_claims(claims)

    def _key_for(self, token: str) -> tuple[Any, list[str]]:
        """The key named by the token's ``kid`` when several are configured, else the one key;
        and the algorithms it may sign with (a JWKS key: its own, one the hub accepts)."""
        if self.jwks is not None:
            kid = jwt.get_unverified_header(token).get("kid")
            if not isinstance(kid, str):
                raise jwt.InvalidKeyError("a token verified with a JWKS names its key (kid)")
            jwk = self.jwks.get(kid)
            if jwk is None:
                raise UnknownKey
            return jwk.key, [jwk.algorithm_name]
        if self._keys:
            kid = jwt.get_unverified_header(token).get("kid")
            key = self._keys.get(kid) if isinstance(kid, str) else None
            if key is not None:
                return key, self._algorithms
        if self._key is None:
            raise jwt.InvalidKeyError("no key for this token")
        return self._key, self._algorithms


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
