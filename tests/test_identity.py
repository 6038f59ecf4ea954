"""Identity providers and long sessions: keys from a JWKS URL, ``refresh_token`` and
``token_expiring``.

The identity provider is an aiohttp app of the test's own on a loopback port, serving a JSON Web
Key Set of keys generated here with ``cryptography``; it counts the fetches it answers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import jwt
import pytest
import socketio
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from hub.codec import parse_iso
from hub.domain.auth import Verifier
from hub.errors import HubError
from hub.settings import Settings, SettingsError
from hub.storage.keys import NAMESPACE
from tests import test_console
from tests.conftest import Client, eventually, unique


class Provider:
    """An identity provider: signing keys by kid, its JWKS at ``url``, the fetches counted."""

    def __init__(self) -> None:
        self.keys: dict[str, Any] = {}  # kid -> private key
        self.published: list[dict[str, Any]] = []  # extra raw JWKs (an HMAC key, say)
        self.fetches = 0
        self.url = ""
        self._runner: web.AppRunner | None = None

    def add(self, kid: str, kind: str = "RSA") -> None:
        if kind == "RSA":
            self.keys[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        else:
            self.keys[kid] = ec.generate_private_key(ec.SECP256R1())

    def sign(self, kid: str, sub: str = "alice", ttl: int = 3600, **claims: Any) -> str:
        key = self.keys[kid]
        alg = "RS256" if isinstance(key, rsa.RSAPrivateKey) else "ES256"
        now = int(time.time())
        body = {"sub": sub, "exp": now + ttl, "iat": now, "jti": uuid.uuid4().hex, **claims}
        return jwt.encode(body, key, alg, headers={"kid": kid})

    def jwks(self) -> dict[str, Any]:
        keys = []
        for kid, key in self.keys.items():
            if isinstance(key, rsa.RSAPrivateKey):
                jwk = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
            else:
                jwk = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
            keys.append({**jwk, "kid": kid, "use": "sig"})
        return {"keys": keys + self.published}

    async def _serve(self, _: web.Request) -> web.Response:
        self.fetches += 1
        return web.json_response(self.jwks())

    async def start(self, port: int = 0) -> None:
        """Serve on ``port`` (a free one by default; the same one again after ``stop``)."""
        app = web.Application()
        app.router.add_get("/.well-known/jwks.json", self._serve)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/.well-known/jwks.json"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


@pytest.fixture
async def provider() -> AsyncIterator[Provider]:
    p = Provider()
    p.add("k1")
    await p.start()
    yield p
    await p.stop()


def jwks_settings(provider: Provider, interval: float = 60.0, **fields: Any) -> Settings:
    return dataclasses.replace(
        Settings(), jwt_jwks_url=provider.url, jwt_jwks_min_interval=interval, jwt_leeway=0, **fields
    )


def public_pem(provider: Provider) -> bytes:
    """The PEM of the provider's first key's public half."""
    return (
        provider.keys["k1"]
        .public_key()
        .public_bytes(
            encoding=serialization.Encoding.PEM,
            format=serialization.PublicFormat.SubjectPublicKeyInfo,
        )
    )


async def refused(verifier: Verifier, token: str) -> bool:
    try:
        await verifier.authenticate(token)
    except HubError as exc:
        assert exc.code == "unauthorized", exc
        return True
    return False


# -- keys from a JWKS URL ---------------------------------------------------------------


async def test_a_token_of_a_provider_key_works_and_the_set_is_fetched_once(provider):
    verifier = Verifier(jwks_settings(provider))
    for _ in range(5):
        who = await verifier.authenticate(provider.sign("k1", name="Alice"))
        assert who.user_id == "alice" and who.name == "Alice"
    assert provider.fetches == 1


async def test_rotation_to_a_new_key_takes_one_fetch(provider):
    verifier = Verifier(jwks_settings(provider, interval=0.3))
    assert (await verifier.authenticate(provider.sign("k1"))).user_id == "alice"
    provider.add("k2", "EC")
    del provider.keys["k1"]
    rotated = provider.sign("k2", sub="bob")
    # The first fetch was moments ago: the new kid is fetched once its interval has passed.
    await eventually(lambda: _accepted(verifier, rotated), what="the rotated key accepted")
    assert provider.fetches == 2
    assert (await verifier.authenticate(provider.sign("k2", sub="carol"))).user_id == "carol"
    assert provider.fetches == 2


async def _accepted(verifier: Verifier, token: str) -> bool:
    return not await refused(verifier, token)


async def test_forged_kids_are_refused_and_fetch_at_most_once_per_interval(provider):
    verifier = Verifier(jwks_settings(provider, interval=60.0))
    # Misses at the same moment share one fetch; the real token among them is accepted.
    forged = [_forge(provider) for _ in range(30)]
    results = await asyncio.gather(
        verifier.authenticate(provider.sign("k1")),
        *(refused(verifier, t) for t in forged),
        return_exceptions=False,
    )
    assert results[0].user_id == "alice" and all(results[1:])
    assert provider.fetches == 1
    for _ in range(3):  # later misses inside the interval fetch nothing
        assert all(await asyncio.gather(*(refused(verifier, _forge(provider)) for _ in range(30))))
    assert provider.fetches == 1
    assert (await verifier.authenticate(provider.sign("k1"))).user_id == "alice"


def _forge(provider: Provider) -> str:
    """A token signed by a key of the attacker's, naming a kid the provider never had."""
    now = int(time.time())
    return jwt.encode(
        {"sub": "mallory", "exp": now + 60}, ATTACKER, "ES256", headers={"kid": uuid.uuid4().hex}
    )


ATTACKER = ec.generate_private_key(ec.SECP256R1())


async def test_the_provider_down_keeps_cached_keys_and_is_logged_once_until_it_is_back(provider, caplog):
    caplog.set_level(logging.INFO, logger="hub.domain.auth")
    verifier = Verifier(jwks_settings(provider, interval=0.2))
    assert (await verifier.authenticate(provider.sign("k1"))).user_id == "alice"
    signer = provider.keys["k1"]
    await provider.stop()
    assert verifier.jwks is not None

    async def failed_three_times() -> bool:
        assert await refused(verifier, _forge(provider))
        return verifier.jwks is not None and verifier.jwks.fetches >= 4

    await eventually(failed_three_times, what="three failed fetches")
    provider.keys["k1"] = signer
    for _ in range(3):  # new tokens (not the remembered one) of the cached key still verify
        assert (await verifier.authenticate(provider.sign("k1", sub="dave"))).user_id == "dave"
    failures = [r for r in caplog.records if "cannot be fetched" in r.getMessage()]
    assert len(failures) == 1, [r.getMessage() for r in caplog.records]
    assert failures[0].levelno == logging.WARNING

    # The provider comes back, having rotated meanwhile: the next miss fetches, and says so once.
    provider.add("k2", "EC")
    await provider.start(port=int(provider.url.split(":")[2].split("/")[0]))
    rotated = provider.sign("k2", sub="erin")
    await eventually(lambda: _accepted(verifier, rotated), what="the provider's new key accepted")
    back = [r for r in caplog.records if "fetched again" in r.getMessage()]
    assert len(back) == 1 and len([r for r in caplog.records if "cannot be fetched" in r.getMessage()]) == 1


async def test_hmac_keys_from_the_set_and_algorithm_tricks_are_refused(provider):
    secret = "s" * 40
    provider.published.append(
        {"kty": "oct", "kid": "h", "k": jwt.utils.base64url_encode(secret.encode()).decode(), "alg": "HS256"}
    )
    verifier = Verifier(jwks_settings(provider))
    now = int(time.time())
    claims = {"sub": "mallory", "exp": now + 60}
    assert await refused(verifier, jwt.encode(claims, secret, "HS256", headers={"kid": "h"}))
    # The provider's public key as an HMAC secret, under the kid of that key.
    pem = public_pem(provider)
    unsigned = jwt.utils.base64url_encode(b'{"alg":"none","typ":"JWT","kid":"k1"}')
    body = jwt.utils.base64url_encode(b'{"sub":"mallory","exp":%d}' % (now + 60))
    forged = (unsigned + b"." + body + b".").decode()
    assert await refused(verifier, forged)
    header = jwt.utils.base64url_encode(b'{"alg":"HS256","typ":"JWT","kid":"k1"}')
    payload = jwt.utils.base64url_encode(b'{"sub":"mallory","exp":%d}' % (now + 60))
    signature = hmac.new(pem, header + b"." + payload, hashlib.sha256).digest()
    assert await refused(
        verifier, (header + b"." + payload + b"." + jwt.utils.base64url_encode(signature)).decode()
    )
    # A token without a kid is refused without a fetch.
    before = provider.fetches
    unnamed = jwt.encode(claims, provider.keys["k1"], "RS256")
    assert await refused(verifier, unnamed)
    assert provider.fetches == before
    assert (await verifier.authenticate(provider.sign("k1"))).user_id == "alice"


async def test_audience_and_issuer_are_checked_for_provider_tokens(provider):
    verifier = Verifier(jwks_settings(provider, jwt_audience="hub", jwt_issuer="https://idp.example/"))
    assert await refused(verifier, provider.sign("k1"))
    assert await refused(verifier, provider.sign("k1", aud="other", iss="https://idp.example/"))
    assert await refused(verifier, provider.sign("k1", aud="hub", iss="https://evil.example/"))
    who = await verifier.authenticate(provider.sign("k1", aud="hub", iss="https://idp.example/"))
    assert who.user_id == "alice"


def test_the_jwks_settings(provider):
    s = Settings.from_env({"HUB_JWT_JWKS_URL": "https://idp.example/.well-known/jwks.json"})
    assert s.jwt_jwks_url == "https://idp.example/.well-known/jwks.json"
    assert s.jwt_jwks_min_interval == 30.0 and s.jwt_algorithms == ["RS256", "ES256"]
    s = Settings.from_env({"HUB_JWT_JWKS_URL": provider.url, "HUB_JWT_JWKS_MIN_INTERVAL": "5"})
    assert s.jwt_jwks_min_interval == 5.0
    for env, name in (
        ({"HUB_JWT_JWKS_URL": "ftp://idp.example/jwks"}, "HUB_JWT_JWKS_URL"),
        ({"HUB_JWT_JWKS_URL": "not a url"}, "HUB_JWT_JWKS_URL"),
        ({"HUB_JWT_JWKS_URL": provider.url, "HUB_JWT_JWKS_MIN_INTERVAL": "0"}, "HUB_JWT_JWKS_MIN_INTERVAL"),
    ):
        with pytest.raises(SettingsError, match=name):
            Settings.from_env(env)
    pem = public_pem(provider)
    with pytest.raises(SettingsError, match="HUB_JWT_JWKS_URL"):
        Settings.from_env({"HUB_JWT_JWKS_URL": provider.url, "HUB_JWT_PUBLIC_KEY": pem.decode()})


async def test_a_worker_with_a_jwks_url_admits_provider_tokens_on_sockets_and_rest(
    provider, aiohttp_server, settings, http
):
    from hub.worker import create_app
    from tests.conftest import Api

    hub_settings = dataclasses.replace(settings, jwt_jwks_url=provider.url, jwt_jwks_min_interval=60.0)
    server = await aiohttp_server(create_app(hub_settings))
    url = str(server.make_url("")).rstrip("/")
    provider.add("k2", "EC")
    streamer = unique("streamer")
    created = await Api(http, url).create_stream(provider.sign("k2", sub=streamer, roles=["streamer"]))
    viewer = Client()
    try:
        await viewer.connect(url, provider.sign("k1", sub=unique("viewer")))
        ack = await viewer.call("join_stream", {"stream_id": created["stream_id"]})
        assert ack["success"], ack
        mallory = Client()
        with pytest.raises(socketio.exceptions.ConnectionError):
            await mallory.connect(url, _forge(provider))
        (refusal,) = mallory.events["connect_error"]
        assert refusal["message"] == "unauthorized" and refusal["data"]["code"] == "unauthorized"
        await mallory.close()
    finally:
        await viewer.close()
    assert provider.fetches == 1  # at the first token; the forged kid, inside the interval, fetched nothing


# -- refresh_token and token_expiring ---------------------------------------------------


@pytest.fixture
async def stream(api, token):
    streamer = unique("streamer")
    s = await api.create_stream(token(streamer, "streamer", name="Streamer"))
    return s["stream_id"]


def namespace(server: Any) -> Any:
    from hub.worker import WORKER

    return server.app[WORKER].namespace


async def test_refresh_token_swaps_the_identity_without_reconnecting(clients, base_url, token, stream):
    uid = unique("viewer")
    short = token(uid, name="Before", ttl=2)
    c = await clients(base_url, short)
    other = await clients(base_url, token(unique("other"), ttl=2))  # the same, never refreshed
    for client in (c, other):
        assert (await client.call("join_stream", {"stream_id": stream}))["success"]
    longer = token(uid, name="After", ttl=3600)
    ack = await c.call("refresh_token", {"token": longer})
    expires = jwt.decode(longer, options={"verify_signature": False})["exp"]
    assert ack == {"success": True, "expires_at": _iso(expires)}
    old_exp = jwt.decode(short, options={"verify_signature": False})["exp"]

    async def old_token_expired() -> bool:
        return time.time() > old_exp + 0.2

    await eventually(old_token_expired, what="the first token's expiry")
    sent = await c.call("send_message", {"stream_id": stream, "message": "still here"})
    assert sent["success"], sent
    assert sent["message"]["user_id"] == uid and sent["message"]["username"] == "After"
    stale = await other.call("send_message", {"stream_id": stream, "message": "too late"})
    assert stale["error"]["code"] == "unauthorized"


def _iso(exp: int) -> str:
    from hub.codec import iso_ms

    result = iso_ms(exp * 1000)
    assert result is not None
    return result


async def test_refresh_token_refusals_keep_the_old_identity(clients, base_url, token, settings, stream):
    uid = unique("viewer")
    c = await clients(base_url, token(uid, name="Kept"))
    assert (await c.call("join_stream", {"stream_id": stream}))["success"]
    wrong = jwt.encode({"sub": uid, "exp": int(time.time()) + 600}, "w" * 40, "HS256")
    cases = [
        ({"token": token(unique("someone-else"))}, "forbidden"),
        ({"token": "garbage"}, "unauthorized"),
        ({"token": wrong}, "unauthorized"),
        ({"token": token(uid, ttl=-5)}, "unauthorized"),
        ({}, "invalid"),
        ("a-token-not-in-an-object", "invalid"),
        ({"token": 42}, "invalid"),
    ]
    for payload, code in cases:
        ack = await c.call("refresh_token", payload)
        assert ack["success"] is False and ack["error"]["code"] == code, (payload, ack)
        error = await c.wait_for(
            "error", lambda e, code=code: e["event"] == "refresh_token" and e["code"] == code
        )
        assert error["message"]
    sent = await c.call("send_message", {"stream_id": stream, "message": "me still"})
    assert sent["success"] and sent["message"]["user_id"] == uid and sent["message"]["username"] == "Kept"
    anonymous = await clients(base_url)
    ack = await anonymous.call("refresh_token", {"token": token(uid)})
    assert ack["error"]["code"] == "forbidden"


async def test_token_expiring_comes_a_minute_before_and_a_refresh_rearms_it(clients, base_url, token, server):
    uid = unique("viewer")
    c = await clients(base_url, token(uid, ttl=62))
    notice = await c.wait_for("token_expiring")
    exp = parse_iso(notice["expires_at"]) / 1000
    assert 55 <= notice["seconds_left"] <= 60 and abs(exp - (time.time() + notice["seconds_left"])) < 3
    sid = c.sio.get_sid(NAMESPACE)
    ns = namespace(server)
    assert sid not in ns._expiring  # fired once, gone

    again = token(uid, ttl=61)
    ack = await c.call("refresh_token", {"token": again})
    assert ack["success"]
    second = await c.wait_for("token_expiring", lambda e: e["expires_at"] == ack["expires_at"])
    assert second["seconds_left"] <= 60 and len(c.events["token_expiring"]) == 2

    assert (await c.call("refresh_token", {"token": token(uid, ttl=7200)}))["success"]
    timer = ns._expiring[sid]
    assert 7200 - 60 - 5 < timer.when() - asyncio.get_running_loop().time() <= 7200 - 60
    anonymous = await clients(base_url)
    assert anonymous.sio.get_sid(NAMESPACE) not in ns._expiring
    await c.close()

    async def cancelled() -> bool:
        return sid not in ns._expiring

    await eventually(cancelled, what="the timer cancelled at disconnect")
    assert timer.cancelled()


async def test_signed_in_sockets_hold_one_timer_each_due_at_their_expiry(clients, base_url, token, server):
    ns = namespace(server)
    loop = asyncio.get_running_loop()
    made = [await clients(base_url, token(unique("idle"), ttl=3600 + 60 * i)) for i in range(10)]
    for i, c in enumerate(made):
        timer = ns._expiring[c.sio.get_sid(NAMESPACE)]
        assert isinstance(timer, asyncio.TimerHandle)
        assert abs(timer.when() - loop.time() - (3600 + 60 * i - 60)) < 5


# -- the console renews its token -------------------------------------------------------

browser = test_console.browser  # headless Chromium, as the console's own tests drive it


async def test_the_console_renews_its_token_when_told_it_expires(workers, http, token, browser):
    from playwright.async_api import expect

    from tests.conftest import Api

    (w,) = await workers(1, HUB_CONSOLE_DEV_TOKENS="1")
    made = await Api(http, w.url).create_stream(token(unique("streamer"), "streamer"))
    viewer = unique("viewer")
    short = token(viewer, name="Viewer Vic", ttl=62)  # token_expiring comes 2 s after connecting
    page = await (await browser.new_context()).new_page()
    problems: list[str] = []
    sockets: list[str] = []
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    page.on("websocket", lambda ws: sockets.append(ws.url))
    await page.goto(f"{w.url}/")
    await page.evaluate("(t) => localStorage.setItem('hub.transport.console.token', t)", short)
    await page.goto(f"{w.url}/watch?stream={made['stream_id']}")
    await expect(page.locator("#viewer-count")).to_have_text("1")

    async def renewed() -> bool:
        stored = await page.evaluate("() => localStorage.getItem('hub.transport.console.token')")
        return stored != short

    await eventually(renewed, what="the console's token renewed")
    stored = await page.evaluate("() => localStorage.getItem('hub.transport.console.token')")
    claims = jwt.decode(stored, options={"verify_signature": False})
    assert claims["sub"] == viewer and claims["exp"] > time.time() + 11 * 3600
    # The hub took it on the same connection: no second socket, and the chat works.
    await page.get_by_label("Message", exact=True).fill("renewed in place")
    await page.get_by_role("button", name="Send", exact=True).click()
    await expect(page.locator("#chat li", has_text="renewed in place")).to_be_visible()
    assert len(sockets) == 1 and problems == []


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_a_token_with_less_than_a_minute_left_is_told_after_the_connect(
    clients, base_url, token, transport
):
    c = await clients(base_url, token(unique("viewer"), ttl=30), transport)
    notice = await c.wait_for("token_expiring")
    assert 25 <= notice["seconds_left"] <= 30
