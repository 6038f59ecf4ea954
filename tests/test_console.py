"""The web console: its routes, then two pages in headless Chromium on two worker processes.

The browser is Debian's Chromium (``scripts/ensure-test-tools.sh``, run by ``make test``), driven
by Playwright with its executable path set. Screenshots of every page are written to
``test-artifacts/console/`` (``HUB_TEST_ARTIFACTS`` to put them elsewhere).
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.parse
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tests.conftest import ROOT, Api, unique

CHROMIUM = Path("/usr/bin/chromium")
VENDORED = ROOT / "hub" / "transport" / "console" / "vendor" / "socket.io.min.js"
ARTIFACTS = Path(os.environ.get("HUB_TEST_ARTIFACTS", ROOT / "test-artifacts")) / "console"
# The flags a root process needs in a container, and no calls to Google's services, which this
# machine's closed network would refuse.
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-sync",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-dev-shm-usage",
]


# -- the routes -----------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/watch", "/studio"])
async def test_pages_are_served_with_a_strict_content_security_policy(path, http, base_url):
    async with http.get(base_url + path) as resp:
        assert resp.status == 200 and resp.content_type == "text/html"
        policy = resp.headers["Content-Security-Policy"]
        assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert '<script src="/console/vendor/socket.io.min.js"></script>' in await resp.text()


async def test_assets_are_served_and_nothing_outside_the_console_folder(http, base_url):
    for name, kind in (
        ("console.js", "javascript"),
        ("console.css", "text/css"),
        ("vendor/socket.io.min.js", "javascript"),
    ):
        async with http.get(f"{base_url}/console/{name}") as resp:
            assert resp.status == 200 and kind in resp.content_type, name
    for path in ("/console/../app.py", "/console/%2e%2e/app.py", "/console/nothing.js"):
        async with http.get(base_url + path) as resp:
            assert resp.status == 404, path


async def test_the_console_config_shows_the_fee_rate_and_development_tokens_are_off(api, http, base_url):
    status, body = await api.request("GET", "/console/config")
    assert status == 200 and body == {
        "success": True,
        "platform_fee": "0.05",
        "currency": "USD",
        "tip_min": "1.00",
        "tip_max": "10000.00",
        "dev_tokens": False,
    }
    async with http.post(f"{base_url}/console/dev-token", json={"user_id": "mallory"}) as resp:
        assert resp.status == 404 and (await resp.json())["error"]["code"] == "not_found"


async def test_development_tokens_when_on_sign_anyone_and_refuse_bad_requests(workers, http):
    (w,) = await workers(1, HUB_CONSOLE_DEV_TOKENS="1")
    api = Api(http, w.url)
    for body in (
        {"user_id": ""},
        {"user_id": "a b"},
        {"user_id": "x" * 65},
        {"user_id": 5},
        {"user_id": "bob", "role": "admin"},
        {"role": "streamer"},
        [],
        "text",
    ):
        status, answer = await api.request("POST", "/console/dev-token", json=body)
        assert status == 400 and answer["error"]["code"] == "invalid", body
    for raw in (b"{not json", b"[" * 5000 + b"]" * 5000, b'{"user_id": 1e309}'):
        status, answer = await api.request("POST", "/console/dev-token", data=raw)
        assert status == 400 and answer["error"]["code"] == "invalid", raw[:20]
    streamer = unique("dev")
    status, answer = await api.request(
        "POST", "/console/dev-token", json={"user_id": streamer, "role": "streamer"}
    )
    assert status == 200
    made = await api.create_stream(answer["token"])
    assert made["streamer_id"] == streamer
    status, answer = await api.request("POST", "/console/dev-token", json={"user_id": unique("viewer")})
    status, refused = await api.request("POST", "create", answer["token"], json={"title": "no"})
    assert status == 403 and refused["error"]["code"] == "forbidden"  # a viewer's token: no streamer role


def test_the_served_socket_io_client_is_the_npm_package_the_js_tests_install():
    installed = ROOT / "tests" / "js" / "node_modules" / "socket.io-client" / "dist" / "socket.io.min.js"
    lock = json.loads((ROOT / "tests" / "js" / "package-lock.json").read_text())
    version = lock["packages"]["node_modules/socket.io-client"]["version"]
    assert VENDORED.read_text().startswith(f"/*!\n * Socket.IO v{version}\n")
    if installed.exists():  # after tests/test_js_client.py's npm install
        assert (
            hashlib.sha256(VENDORED.read_bytes()).digest() == hashlib.sha256(installed.read_bytes()).digest()
        )


# -- in a browser ---------------------------------------------------------------------


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    if not os.path.exists(CHROMIUM):  # noqa: ASYNC240 (one stat before the browser starts)
        if os.environ.get("CI"):
            pytest.fail("Debian's chromium is missing: make test installs it (scripts/ensure-test-tools.sh)")
        pytest.skip("Debian's chromium is not installed (scripts/ensure-test-tools.sh installs it)")
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        chromium = await p.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS, headless=True)
        try:
            yield chromium
        finally:
            await chromium.close()


async def unlabelled(page: Any) -> list[str]:
    """Form controls a screen reader could not name."""
    return await page.evaluate("""() => [...document.querySelectorAll('input, select, textarea, button')]
        .filter((e) => !e.closest('[hidden]') && !(e.labels && e.labels.length) && !e.getAttribute('aria-label')
                       && !(e.tagName === 'BUTTON' && e.textContent.trim()))
        .map((e) => e.outerHTML)""")


async def box(page: Any, selector: str) -> dict[str, float]:
    found = await page.locator(selector).bounding_box()
    assert found is not None, selector
    return dict(found)


async def test_a_streamer_and_a_viewer_on_two_workers_see_each_other_in_the_browser(
    workers, http, token, browser, env, connect
):
    from playwright.async_api import expect

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    # A prefix of its own: the lobby lists only this test's streams, not other tests' (whose
    # thumbnails name hosts that do not resolve here).
    prefix = f"{env['HUB_REDIS_PREFIX']}{unique('console')}:"
    w1, w2 = await workers(2, HUB_CONSOLE_DEV_TOKENS="1", HUB_REDIS_PREFIX=prefix)
    streamer, viewer = unique("streamer"), unique("viewer")
    title = f"Morning session {unique('t')}"
    studio = await (await browser.new_context(viewport={"width": 1280, "height": 900})).new_page()
    watch = await (await browser.new_context(viewport={"width": 1280, "height": 900})).new_page()
    problems: list[str] = []
    for page in (studio, watch):
        page.on("pageerror", lambda exc: problems.append(str(exc)))
        page.on("console", lambda msg: msg.type == "error" and problems.append(msg.text))
    # The studio's confirmations: each is answered as the test says beforehand (True: OK).
    answers: list[bool] = []
    asked: list[str] = []

    async def answer(dialog: Any) -> None:
        asked.append(dialog.message)
        await (dialog.accept() if answers.pop(0) else dialog.dismiss())

    studio.on("dialog", answer)
    token_requests: list[str] = []
    studio.on("request", lambda r: "/console/dev-token" in r.url and token_requests.append(r.url))

    # The streamer signs in with the development-token button on worker 1 and goes live. The id
    # field shows an example in lighter text; asked for a token without an id, the console says
    # what is missing and does not call the hub.
    await studio.goto(f"{w1.url}/studio")
    user_field = studio.get_by_label("User id")
    await expect(user_field).to_have_attribute("placeholder", "e.g. alice")
    await expect(user_field).to_have_value("")
    ink, hint = await user_field.evaluate(
        "(e) => [getComputedStyle(e).color, getComputedStyle(e, '::placeholder').color]"
    )
    assert ink != hint, (ink, hint)
    await studio.get_by_role("button", name="Get a development token").click()
    await expect(studio.get_by_text("Enter a user id first")).to_be_visible()
    await expect(user_field).to_be_focused()
    await user_field.fill("not an id")
    await studio.get_by_role("button", name="Get a development token").click()
    await expect(studio.get_by_text("A user id is 1–64 letters")).to_be_visible()
    assert token_requests == []
    await user_field.fill(streamer)
    await studio.get_by_label("as", exact=True).select_option("streamer")
    await studio.get_by_role("button", name="Get a development token").click()
    await expect(studio.get_by_text(f"Signed in as {streamer}")).to_be_visible()
    await studio.get_by_label("Title", exact=True).fill(title)
    await studio.get_by_label("Description", exact=True).fill("Opening range and the day's levels")
    await studio.get_by_label("Category", exact=True).fill("crypto")
    await studio.get_by_role("button", name="Go live").click()
    await expect(studio.locator("#dash-heading")).to_have_text(f"Live: {title}")
    assert await unlabelled(studio) == []

    # Anyone's stream list, on worker 1: the stream with its viewers (the streamer's studio so far).
    lobby = await (await browser.new_context(viewport={"width": 1280, "height": 800})).new_page()
    lobby.on("pageerror", lambda exc: problems.append(str(exc)))
    await lobby.goto(f"{w1.url}/")
    listed = lobby.locator(".card", has_text=title)
    await expect(listed).to_contain_text("1 watching")

    words = await lobby.evaluate("""async () => {
        const { plainWords } = await import('/console/console.js');
        return [plainWords({code: 'rate_limited', retry_after: 2.2}), plainWords({code: 'slow_mode', retry_after: 10}),
                plainWords({code: 'banned'}), plainWords({code: 'no_such_code'}), plainWords(undefined)];
    }""")
    assert words == [
        "You're going too fast. Try again in 3 s.",
        "Slow mode is on: you can write again in 10 s.",
        "You are banned from this stream.",
        "Something went wrong.",
        "The hub can't be reached right now. Try again in a moment.",
    ]
    # A price from the hub (a JSON number, at most 15 significant digits) or as typed, shown
    # exactly with at least two decimals, without an exponent.
    prices = await lobby.evaluate("""async () => {
        const { priceText } = await import('/console/console.js');
        return [64250.5, 64250.50, 3100, 0.00001234, 1e-8, 1.5e-7, 123456789012.345, 12345678.1234567,
                "64250.50", "0.10"].map(priceText);
    }""")
    assert prices == [
        "64250.50",
        "64250.50",
        "3100.00",
        "0.00001234",
        "0.00000001",
        "0.00000015",
        "123456789012.345",
        "12345678.1234567",
        "64250.50",
        "0.10",
    ]

    # The viewer, on worker 2, signs in by pasting a token, finds the stream in the list and opens it.
    await watch.goto(f"{w2.url}/")
    await watch.get_by_label("Token").fill(token(viewer, name="Viewer Vic"))
    await watch.get_by_role("button", name="Sign in").click()
    await expect(watch.get_by_text("Signed in as Viewer Vic")).to_be_visible()
    card = watch.locator(".card", has_text=title)
    await expect(card).to_contain_text("crypto")
    assert await unlabelled(watch) == []
    await watch.screenshot(path=str(ARTIFACTS / "streams.png"), full_page=True)
    await card.get_by_role("link", name=title).click()
    await expect(watch.locator("#title")).to_have_text(title)
    stream_id = urllib.parse.parse_qs(urllib.parse.urlsplit(watch.url).query)["stream"][0]
    await expect(watch.locator("#viewer-count")).to_have_text("2")  # the streamer's studio and the viewer
    await expect(studio.locator("#f-viewers")).to_have_text("2")
    await expect(listed).to_contain_text("2 watching")  # the list follows the count by itself
    assert await unlabelled(watch) == []

    # Chat and an emoji from worker 2 reach the studio on worker 1.
    await watch.get_by_label("Message", exact=True).fill("Good morning from the browser")
    await watch.get_by_role("button", name="Send", exact=True).click()
    await expect(studio.locator("#chat li", has_text="Good morning from the browser")).to_be_visible()
    await watch.get_by_role("button", name="Rocket").click()
    await expect(studio.locator("#chat li.emoji", has_text="🚀")).to_be_visible()

    # A tip: the fee shown before sending is the hub's (5 %, half up), then the studio's figures.
    await watch.get_by_label("$10").check()
    await expect(watch.locator("#tip-fee")).to_have_text("$0.50")
    await expect(watch.locator("#tip-share")).to_have_text("$9.50")
    await watch.get_by_label("Other amount").fill("12.50")
    await expect(watch.locator("#tip-fee")).to_have_text("$0.63")
    await expect(watch.locator("#tip-share")).to_have_text("$11.87")
    await watch.get_by_label("Message with your tip").fill("great call")
    await watch.get_by_role("button", name="Send tip").click()
    await expect(watch.locator("#tip-notice")).to_contain_text("You tipped $12.50 (fee $0.63)")
    await expect(watch.locator("#highlight")).to_contain_text("Viewer Vic tipped $12.50!")
    await expect(studio.locator("#chat li.tip", has_text="tipped $12.50: great call")).to_be_visible()
    await expect(studio.locator("#f-tips")).to_have_text("1")
    await expect(studio.locator("#f-total")).to_have_text("$12.50")
    await expect(studio.locator("#f-fees")).to_have_text("$0.63")

    # Clearing the chat asks first; cancelled, nothing is cleared (the alert below arrives after
    # where a clear would have been, and the tip is still there on both pages).
    answers.append(False)
    await studio.get_by_role("button", name="Clear the chat").click()
    assert len(asked) == 1 and asked[-1].startswith("Clear the chat for everyone?")

    # The streamer's trade alert, highlighted on the viewer's page with its symbol, side and
    # price, the price as typed (a decimal string, never a float: not 64250.5).
    assert token_requests == [f"{w1.url}/console/dev-token"]
    await studio.get_by_label("Alert message").fill("Taking profit here")
    await studio.get_by_label("Symbol", exact=True).fill("BTC")
    await studio.get_by_label("Side", exact=True).select_option("SELL")
    await studio.get_by_label("Price", exact=True).fill("64250.50")
    await studio.get_by_role("button", name="Post alert").click()
    await expect(
        watch.locator("#chat li.alert", has_text="SELL BTC @ 64250.50 — Taking profit here")
    ).to_be_visible()
    await expect(watch.locator("#highlight")).to_have_text(
        f"📣 {streamer}: SELL BTC @ 64250.50 — Taking profit here"
    )
    await expect(studio.locator("#chat li.alert")).to_contain_text("SELL BTC @ 64250.50")
    await expect(watch.locator("#chat li.tip")).to_have_count(1)
    await expect(studio.locator("#chat li.tip")).to_have_count(1)

    # Moderation from the studio: a deleted message disappears, a timeout is told in plain words.
    await studio.get_by_role("button", name="Delete Viewer Vic's message").first.click()
    await expect(watch.locator("#chat li", has_text="Good morning from the browser")).to_have_count(0)
    await studio.get_by_role("button", name="Time Viewer Vic out for 5 minutes").first.click()
    await watch.get_by_label("Message", exact=True).fill("can I still talk?")
    await watch.get_by_role("button", name="Send", exact=True).click()
    await expect(watch.locator("#chat-notice")).to_contain_text("You are timed out: you can write again in")
    # The timeout's Undo lifts it: the viewer writes again.
    await studio.get_by_role("button", name="Undo the timeout of Viewer Vic").click()
    await expect(studio.locator("#tools-notice")).to_contain_text("Viewer Vic's timeout is lifted")
    await expect(watch.locator("#chat-notice")).to_have_text("Your timeout was lifted: you can write again.")
    await watch.get_by_label("Message", exact=True).fill("back in the room")
    await watch.get_by_role("button", name="Send", exact=True).click()
    await expect(studio.locator("#chat li", has_text="back in the room")).to_be_visible()
    await expect(watch.locator("#chat-notice")).to_have_text("")

    # A ban asks first: cancelled, the user stays and writes; confirmed, the user is banned.
    troll = await connect(w2.url, token(unique("troll"), name="Troll Tom"))
    joined = await troll.call("join_stream", {"stream_id": stream_id})
    assert joined["success"], joined
    sent = await troll.call("send_message", {"stream_id": stream_id, "message": "buy my course"})
    assert sent["success"], sent
    ban = studio.get_by_role("button", name="Ban Troll Tom").first
    answers.append(False)
    await ban.click()
    assert asked[-1].startswith("Ban Troll Tom from this stream?")
    sent = await troll.call("send_message", {"stream_id": stream_id, "message": "still here"})
    assert sent["success"] and "banned" not in troll.events, sent
    await expect(studio.locator("#chat li", has_text="still here")).to_be_visible()
    answers.append(True)
    await ban.click()
    assert (await troll.wait_for("banned"))["stream_id"] == stream_id
    assert len(asked) == 3 and answers == []
    await expect(studio.locator("#tools-notice")).to_have_text("")

    await watch.screenshot(path=str(ARTIFACTS / "watch.png"), full_page=True)
    await studio.screenshot(path=str(ARTIFACTS / "studio.png"), full_page=True)

    # On a phone (375 × 667) the viewer page fits its width; the header with the sign-in folded
    # is two short rows, and a panel's heading sits close under the panel's top edge.
    phone = await (
        await browser.new_context(viewport={"width": 375, "height": 667}, is_mobile=True)
    ).new_page()
    phone.on("pageerror", lambda exc: problems.append(str(exc)))
    await phone.goto(watch.url)
    await expect(phone.locator("#title")).to_have_text(title)
    await expect(phone.locator("#chat li.tip")).to_contain_text("tipped $12.50")  # history on join
    await expect(phone.locator("#chat-notice")).to_contain_text("sign in to chat and tip")
    await expect(phone.get_by_role("button", name="Send tip")).to_be_disabled()
    assert await phone.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    await expect(phone.get_by_label("Token")).to_be_hidden()
    assert (await box(phone, "header.top"))["height"] <= 100
    for heading, panel in (("#chat-heading", "section.panel"), ("#about-heading", "aside.panel")):
        assert (await box(phone, heading))["y"] - (await box(phone, panel))["y"] <= 16, heading
    await phone.screenshot(path=str(ARTIFACTS / "watch-phone.png"), full_page=True)
    await phone.locator("summary", has_text="Sign in").click()  # unfolds the sign-in forms
    await expect(phone.get_by_label("Token")).to_be_visible()
    await phone.screenshot(path=str(ARTIFACTS / "watch-phone-sign-in.png"), full_page=True)

    # Clearing the chat, confirmed: both pages empty; what is written next stays.
    answers.append(True)
    await studio.get_by_role("button", name="Clear the chat").click()
    await expect(watch.locator("#chat li")).to_have_count(0)
    await expect(studio.locator("#chat li")).to_have_count(0)
    assert len(asked) == 4 and answers == []
    await studio.get_by_label("Alert message").fill("Closing the session")
    await studio.get_by_label("Symbol", exact=True).fill("ETH")
    await studio.get_by_label("Side", exact=True).select_option("BUY")
    await studio.get_by_label("Price", exact=True).fill("3100")
    await studio.get_by_role("button", name="Post alert").click()
    await expect(watch.locator("#chat li.alert")).to_contain_text("BUY ETH @ 3100.00 — Closing the session")
    await watch.get_by_label("Message", exact=True).fill("thanks, see you tomorrow")
    await watch.get_by_role("button", name="Send", exact=True).click()
    await expect(studio.locator("#chat li", has_text="thanks, see you tomorrow")).to_be_visible()

    # The streamer ends the stream: the final figures, and the viewer is told when it ended; what
    # can no longer be used (sending, emoji, tips) and what no longer holds (the count, the
    # highlight) go away, the chat stays.
    answers.append(True)
    await studio.get_by_role("button", name="End the stream").click()
    await expect(studio.locator("#final-heading")).to_have_text(f"Stream ended: {title}")
    await expect(studio.locator("#final-figures")).to_contain_text("$12.50")
    assert asked[-1] == "End the stream now?" and answers == []
    status, ended = await Api(http, w1.url).request("GET", stream_id)
    assert status == 200 and ended["stream"]["status"] == "ENDED"
    await expect(watch.locator("#banner")).to_contain_text("This stream ended on ")
    for gone in ("#tip-form", "#emoji", "#chat-form", "#watching", "#highlight"):
        await expect(watch.locator(gone)).to_be_hidden()
    await expect(watch.locator("#chat li", has_text="thanks, see you tomorrow")).to_be_visible()
    await studio.screenshot(path=str(ARTIFACTS / "studio-ended.png"), full_page=True)
    # The studio on a phone, signed in (the same browser's stored token): a compact header too.
    studio_phone = await studio.context.new_page()
    await studio_phone.set_viewport_size({"width": 375, "height": 667})
    await studio_phone.goto(f"{w1.url}/studio")
    await expect(studio_phone.locator("#go-live-heading")).to_be_visible()
    await studio_phone.screenshot(path=str(ARTIFACTS / "studio-phone.png"), full_page=True)
    assert (await box(studio_phone, "header.top"))["height"] <= 100
    heading, panel = await box(studio_phone, "#go-live-heading"), await box(studio_phone, "#go-live")
    assert heading["y"] - panel["y"] <= 16
    await expect(lobby.locator(".card", has_text=title)).to_have_count(0)

    # The ended stream in the streamer's list links to its page: the chat read again from REST
    # (what was written after the clear), and when it ended in the reader's own time (here a
    # British reader in Tokyo).
    ended_at = datetime.fromisoformat(ended["stream"]["ended_at"].replace("Z", "+00:00")).astimezone(
        ZoneInfo("Asia/Tokyo")
    )
    reader = await (
        await browser.new_context(
            viewport={"width": 1280, "height": 800}, locale="en-GB", timezone_id="Asia/Tokyo"
        )
    ).new_page()
    reader.on("pageerror", lambda exc: problems.append(str(exc)))
    await reader.goto(f"{w2.url}/")
    await reader.get_by_label("Streamer id").fill(streamer)
    await reader.get_by_role("button", name="Show ended streams").click()
    ended_card = reader.locator("#ended .card", has_text=title)
    await expect(ended_card).to_contain_text("peak 3 viewers")
    await ended_card.get_by_role("link", name=title).click()
    await expect(reader).to_have_url(f"{w2.url}/watch?stream={stream_id}")
    await expect(reader.locator("#title")).to_have_text(title)
    when = f"{ended_at.day} {ended_at:%b %Y}, {ended_at:%H:%M}"
    await expect(reader.locator("#banner")).to_contain_text(f"This stream ended on {when} after ")
    await expect(reader.get_by_role("heading", name="Chat replay", exact=True)).to_be_visible()
    await expect(reader.locator("#chat li.alert")).to_contain_text("BUY ETH @ 3100.00 — Closing the session")
    await expect(reader.locator("#chat li", has_text="thanks, see you tomorrow")).to_be_visible()
    await expect(reader.locator("#chat li")).to_have_count(2)  # the clear hid every earlier message
    for gone in ("#tip-form", "#emoji", "#chat-form", "#watching"):
        await expect(reader.locator(gone)).to_be_hidden()
    await reader.screenshot(path=str(ARTIFACTS / "watch-ended.png"), full_page=True)

    # A longer chat reads back page by page: the newest 200, then the earlier ones on demand.
    # (Its writer is on a third worker allowing 300 messages a period, to write them at once.)
    (w3,) = await workers(1, HUB_REDIS_PREFIX=prefix, HUB_CHAT_RATE="300")
    host_token = token(unique("host"), "streamer", name="Host Hana")
    long = (await Api(http, w3.url).create_stream(host_token, title="A long chat"))["stream_id"]
    talker = await connect(w3.url, token(unique("talker"), name="Talker Tim"))
    assert (await talker.call("join_stream", {"stream_id": long}))["success"]
    for i in range(1, 206):
        sent = await talker.call("send_message", {"stream_id": long, "message": f"line {i}"})
        assert sent["success"], (i, sent)
    status, _ = await Api(http, w3.url).request("POST", f"{long}/end", host_token)
    assert status == 200
    await reader.goto(f"{w2.url}/watch?stream={long}")
    lines = reader.locator("#chat li .text")
    await expect(lines).to_have_count(200)
    await expect(lines.first).to_have_text("line 6")
    await expect(lines.last).to_have_text("line 205")
    await reader.get_by_role("button", name="Show earlier messages").click()
    await expect(lines).to_have_count(205)
    await expect(lines.first).to_have_text("line 1")
    await expect(lines.nth(5)).to_have_text("line 6")
    await expect(lines.last).to_have_text("line 205")
    await expect(reader.get_by_role("button", name="Show earlier messages")).to_be_hidden()
    assert problems == []
