"""Exposed to the internet: tokens, origins and limits hold, and refusals change nothing."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import aiohttp
import jwt
import pytest
import socketio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from hub.domain.auth import Verifier
from hub.errors import HubError
from hub.settings import Settings
from tests.conftest import SECRET, Api, Client, RawSocket, eventually, unique


async def can_connect(url: str, token: str | None = None, source: str | None = None) -> bool:
    """Whether a new connection is admitted now (it is closed again at once)."""
    c = Client(source=source)
    try:
        await c.connect(url, token)
    except socketio.exceptions.ConnectionError:
        return False
    finally:
        await c.close()
    return True


def _settings(**env: str) -> Settings:
    return Settings.from_env({"HUB_JWT_SECRET": SECRET, "HUB_JWT_LEEWAY": "0", **env})


def _claims(**extra: object) -> dict[str, object]:
    return {"sub": "alice", "exp": int(time.time()) + 60, **extra}


@pytest.mark.parametrize(
    ("token", "env"),
    [
        (lambda: jwt.encode(_claims(), "k" * 40, "HS256"), {}),
        (lambda: jwt.encode(_claims(), None, "none"), {}),
        (lambda: jwt.encode(_claims(exp=int(time.time()) - 5), SECRET, "HS256"), {}),
        (lambda: jwt.encode({"sub": "alice"}, SECRET, "HS256"), {}),
        (lambda: jwt.encode({"exp": int(time.time()) + 60}, SECRET, "HS256"), {}),
        (lambda: jwt.encode(_claims(sub=42), SECRET, "HS256"), {}),
        (lambda: jwt.encode(_claims(sub=""), SECRET, "HS256"), {}),
        (lambda: jwt.encode(_claims(aud="other"), SECRET, "HS256"), {"HUB_JWT_AUDIENCE": "hub"}),
        (lambda: jwt.encode(_claims(), SECRET, "HS256"), {"HUB_JWT_AUDIENCE": "hub"}),
        (lambda: jwt.encode(_claims(iss="evil"), SECRET, "HS256"), {"HUB_JWT_ISSUER": "auth"}),
        (lambda: jwt.encode(_claims(), SECRET, "HS512"), {}),
        (lambda: "not.a.token", {}),
        (lambda: "", {}),
    ],
)
def test_forged_or_wrong_tokens_are_refused(token, env):
    with pytest.raises(HubError) as err:
        Verifier(_settings(**env)).verify(token())
    assert err.value.code == "unauthorized"


def test_audience_and_issuer_are_accepted_when_right():
    who = Verifier(_settings(HUB_JWT_AUDIENCE="hub", HUB_JWT_ISSUER="auth")).verify(
        jwt.encode(_claims(aud="hub", iss="auth", roles=["streamer"]), SECRET, "HS256")
    )
    assert who.user_id == "alice" and who.is_streamer


@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_public_key_tokens_and_algorithm_confusion(kind, tmp_path):
    if kind == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        alg = "RS256"
    else:
        key = ec.generate_private_key(ec.SECP256R1())
        alg = "ES256"
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    path = tmp_path / "key.pem"
    path.write_bytes(public)
    verifier = Verifier(Settings.from_env({"HUB_JWT_PUBLIC_KEY": str(path)}))
    assert verifier.verify(jwt.encode(_claims(), key, alg)).user_id == "alice"

    # the public key used as an HMAC secret: the classic confusion attack
    def b64(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    signing_input = (
        b64(b'{"alg":"HS256","typ":"JWT"}')
        + b"."
        + b64(b'{"sub":"mallory","exp":%d}' % (int(time.time()) + 60))
    )
    signature = b64(hmac.new(public, signing_input, hashlib.sha256).digest())
    with pytest.raises(HubError) as err:
        verifier.verify((signing_input + b"." + signature).decode())
    assert err.value.code == "unauthorized"


async def test_websocket_from_a_foreign_origin_is_refused(http, base_url):
    url = base_url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket"
    with pytest.raises(Exception) as err:
        async with http.ws_connect(url, headers={"Origin": "https://evil.example"}):
            pass
    assert "400" in str(err.value)
    async with http.get(
        base_url + "/socket.io/?EIO=4&transport=polling", headers={"Origin": "https://evil.example"}
    ) as resp:
        assert resp.status == 400
    async with http.get(base_url + "/socket.io/?EIO=4&transport=polling") as resp:
        assert resp.status == 200


async def test_rest_cors_answers_only_listed_origins(http, base_url):
    async with http.options(
        base_url + "/api/v1/streaming/live",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
    ) as resp:
        assert resp.status == 403 and "Access-Control-Allow-Origin" not in resp.headers
    async with http.get(
        base_url + "/api/v1/streaming/live", headers={"Origin": "https://evil.example"}
    ) as resp:
        assert "Access-Control-Allow-Origin" not in resp.headers


async def test_chat_rate_limit_holds_across_two_workers(workers, http, clients, token):
    w1, w2 = await workers(2)
    sid = (await Api(http, w1.url).create_stream(token(unique("streamer"), "streamer")))["stream_id"]
    user = unique("chatty")
    tabs = [await clients(w.url, token(user)) for w in (w1, w2)]
    for c in tabs:
        await c.call("join_stream", {"stream_id": sid})
    accepted = 0
    for n in range(30):  # alternating workers: still 20 in the window, not 40
        ack = await tabs[n % 2].call("send_message", {"stream_id": sid, "message": f"{n}"})
        if ack["success"]:
            accepted += 1
        else:
            assert ack["error"]["code"] == "rate_limited" and ack["error"]["retry_after"] >= 1
    assert accepted == 20
    status, body = await Api(http, w2.url).request("GET", f"{sid}/stats")
    assert body["stats"]["message_count"] == 20


def test_keys_selected_by_kid_for_rotation(tmp_path):
    old, new = (rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(2))
    for kid, key in (("2025", old), ("2026", new)):
        (tmp_path / f"{kid}.pem").write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
    verifier = Verifier(Settings.from_env({"HUB_JWT_PUBLIC_KEYS_DIR": str(tmp_path)}))
    for kid, key in (("2025", old), ("2026", new)):
        token = jwt.encode(_claims(), key, "RS256", headers={"kid": kid})
        assert verifier.verify(token).user_id == "alice"
    for headers in ({"kid": "2025"}, {"kid": "unknown"}, {}):
        with pytest.raises(HubError):  # signed by the new key but naming the old one, or no kid
            verifier.verify(jwt.encode(_claims(), new, "RS256", headers=headers))


async def test_connection_rate_per_address(workers, token, env):
    # Keys of its own (under the run's prefix): the spent budget of 127.0.0.2 lasts a minute and
    # would refuse the next test's clients from that address.
    (w1,) = await workers(
        1,
        HUB_CONN_RATE="3",
        HUB_CONN_PERIOD="60",
        HUB_REDIS_PREFIX=f"{env['HUB_REDIS_PREFIX']}{unique('connrate')}:",
    )
    made = []
    try:
        for _ in range(3):
            c = Client(source="127.0.0.2")
            made.append(c)
            await c.connect(w1.url)
        late = Client(source="127.0.0.2")
        made.append(late)
        with pytest.raises(socketio.exceptions.ConnectionError):
            await late.connect(w1.url, transport="polling")  # the handshake's body reaches it
        refusal = late.events["connect_error"][0]["data"]
        assert refusal["code"] == "rate_limited" and refusal["retry_after"] >= 1
        late_ws = Client(source="127.0.0.2")
        made.append(late_ws)
        with pytest.raises(socketio.exceptions.ConnectionError):
            await late_ws.connect(w1.url)  # refused at the WebSocket handshake
        other = Client(source="127.0.0.3")  # another address has its own budget
        made.append(other)
        await other.connect(w1.url)
    finally:
        for c in made:
            await c.close()


async def test_open_connections_per_user(workers, clients, token):
    (w1,) = await workers(1, HUB_USER_MAX_CONNS="2")
    user = unique("many-tabs")
    first = [await clients(w1.url, token(user)) for _ in range(2)]
    third = Client()
    with pytest.raises(socketio.exceptions.ConnectionError):
        await third.connect(w1.url, token(user))
    assert third.events["connect_error"][0]["data"]["code"] == "rate_limited"
    await third.close()
    await first[0].close()

    # the closed tab's slot is released on disconnect
    await eventually(
        lambda: can_connect(w1.url, token(user)), 10, "a slot free after a tab closed", every=0.5
    )


async def test_join_rate_per_viewer(workers, http, clients, token):
    (w1,) = await workers(1, HUB_JOIN_RATE="3", HUB_JOIN_PERIOD="60")
    api = Api(http, w1.url)
    streams = [
        (await api.create_stream(token(unique("streamer"), "streamer")))["stream_id"] for _ in range(2)
    ]
    c = await clients(w1.url, token(unique("hopper")))
    codes = []
    for n in range(5):
        ack = await c.call("join_stream", {"stream_id": streams[n % 2]})
        codes.append("ok" if ack["success"] else ack["error"]["code"])
    assert codes == ["ok", "ok", "ok", "rate_limited", "rate_limited"]
    assert (await c.call("send_message", {"stream_id": streams[0], "message": "still joined"}))["success"]


async def test_an_event_flood_is_handled_one_at_a_time_and_others_keep_pace(workers, http, clients, token):
    (w1,) = await workers(1)
    sid = (await Api(http, w1.url).create_stream(token(unique("streamer"), "streamer")))["stream_id"]
    calm = await clients(w1.url, token(unique("calm")))
    await calm.call("join_stream", {"stream_id": sid})
    ws = await http.ws_connect(w1.url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket")
    assert (await ws.receive_str()).startswith("0")
    await ws.send_str("40/streaming,")
    assert (await ws.receive_str()).startswith("40/streaming,")
    frame = f'42/streaming,["send_message",{{"stream_id":"{sid}","message":"flood"}}]'
    for _ in range(5000):  # no acks awaited, never read: the worker reads at its own pace
        await ws.send_str(frame)
    worst = 0.0
    for n in range(10):
        started = time.monotonic()
        ack = await calm.call("send_message", {"stream_id": sid, "message": f"calm {n}"})
        worst = max(worst, time.monotonic() - started)
        assert ack["success"]
    print(f"calm client's worst ack time during the flood: {worst * 1000:.1f} ms")
    assert worst < 2.0
    status, body = await Api(http, w1.url).request("GET", f"{sid}/stats")
    assert body["stats"]["message_count"] == 10  # the flood, never joined, changed nothing
    await ws.close()


async def test_open_connections_per_address(workers, token):
    (w1,) = await workers(1, HUB_ADDRESS_MAX_CONNS="2")
    made = [Client(source="127.0.0.4") for _ in range(3)]
    try:
        await made[0].connect(w1.url)
        await made[1].connect(w1.url, token(unique("someone")))
        with pytest.raises(socketio.exceptions.ConnectionError):
            await made[2].connect(w1.url, transport="polling")
        assert made[2].events["connect_error"][0]["data"]["code"] == "rate_limited"
        await made[0].close()

        await eventually(
            lambda: can_connect(w1.url, source="127.0.0.4"),
            10,
            "a slot free after a connection closed",
            every=0.5,
        )
    finally:
        for c in made:
            await c.close()


def test_a_remembered_token_is_checked_once_and_still_expires(settings, token):
    import time as clock

    from hub.domain.auth import Verifier
    from hub.errors import HubError

    verifier = Verifier(settings)
    brief = token(unique("brief"), ttl=1)
    first = verifier.verify(brief)
    assert verifier.verify(brief) is first  # remembered, not decoded again
    tampered = brief[:-2] + ("AA" if not brief.endswith("AA") else "BB")
    try:
        verifier.verify(tampered)
        raise AssertionError("a tampered copy of a remembered token was accepted")
    except HubError as exc:
        assert exc.code == "unauthorized"
    deadline = clock.monotonic() + 5
    while True:  # poll until the expiry passes: the remembered token is refused from then on
        try:
            verifier.verify(brief)
        except HubError as exc:
            assert exc.code == "unauthorized"
            break
        assert clock.monotonic() < deadline, "a remembered token outlived its expiry"
        clock.sleep(0.05)


async def test_sessions_without_the_namespace_count_per_address_and_are_closed(workers, http, settings):
    """Engine.IO sessions that never connect /streaming are counted at their handshake and
    closed after HUB_NAMESPACE_TIMEOUT: one address cannot hold hundreds of them."""
    (w1,) = await workers(1, HUB_ADDRESS_MAX_CONNS="3", HUB_NAMESPACE_TIMEOUT="1")
    source = aiohttp.TCPConnector(local_addr=("127.0.0.5", 0))
    async with aiohttp.ClientSession(connector=source) as bare:
        url = f"{w1.url}/socket.io/?EIO=4&transport=polling"
        sids = []
        for _ in range(3):
            async with bare.get(url) as resp:
                assert resp.status == 200
                sids.append(json.loads((await resp.text())[1:])["sid"])
        async with bare.get(url) as resp:
            assert resp.status == 401
            body = json.loads(await resp.text())
            assert body["data"]["code"] == "rate_limited", body

        async def closed() -> bool:
            async with bare.get(f"{url}&sid={sids[0]}") as resp:
                return resp.status == 400  # engine.io: unknown session

        await eventually(closed, 10, "a session without the namespace closed", every=0.2)

        async def admitted_again() -> bool:
            async with bare.get(url) as resp:
                return resp.status == 200

        await eventually(admitted_again, 10, "the address's sessions released", every=0.2)


async def test_forwarded_for_from_an_untrusted_peer_is_said_once(server, base_url, caplog):
    """Clients behind a proxy the hub does not trust share its limits: the log says so once."""
    import logging

    from hub.transport import addresses as sockets

    sockets._untrusted_forwarders.clear()
    made = []
    try:
        with caplog.at_level(logging.WARNING, logger="hub.transport.addresses"):
            for forwarded in ("203.0.113.1", "203.0.113.2"):
                c = Client()
                made.append(c)
                await c.sio.connect(
                    base_url,
                    namespaces=["/streaming"],
                    transports=["websocket"],
                    headers={"X-Forwarded-For": forwarded},
                )
        said = [r for r in caplog.records if "HUB_TRUSTED_PROXIES" in r.getMessage()]
        assert len(said) == 1 and "127.0.0.1" in said[0].getMessage()
    finally:
        for c in made:
            await c.close()


async def test_a_flood_of_unreadable_events_costs_a_worker_one_log_line(workers, token):
    """200 frames of 1.25 KB that python-socketio cannot read, from one anonymous socket, then
    the same from a signed-in one over long-polling: each answered, the worker's log (its real
    stderr, every logger's handler included) grows by a line or two, not by tracebacks."""
    (w1,) = await workers(1)
    before = w1.log_path.stat().st_size
    padding = "x" * 1200
    for transport, who in (("websocket", None), ("polling", token(unique("flooder")))):
        s = RawSocket(w1.url, transport)
        try:
            await s.open(who)
            for n in range(1, 201):
                await s.send(f'2/streaming,{n}["send_tip",{{"message":"{padding}","amount":1e309}}]')
            for n in range(1, 201):
                assert (await s.ack(n))["error"]["code"] == "invalid"
        finally:
            await s.close()
    grown = w1.log_path.read_bytes()[before:].decode()
    assert len(grown.splitlines()) <= 3 and len(grown) < 1000, grown[:2000]
