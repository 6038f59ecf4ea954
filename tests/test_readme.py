"""The README's "Try it by hand" run as written against a live worker, and every relative link of
README.md and docs/ resolved, anchors included, so neither can go stale unnoticed."""

from __future__ import annotations

import asyncio
import os
import re
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, SECRET, socket_io_client

README = ROOT / "README.md"
JS = ROOT / "tests" / "js"
LOCAL_BASE = "BASE=http://127.0.0.1:8080\n"
FENCE = re.compile(r"^```(\w+)\n(.*?)^```\n", re.S | re.M)


def try_it_by_hand() -> dict[str, list[str]]:
    """The fenced blocks of the README's "Try it by hand" section, by language, in order."""
    text = README.read_text()
    start = text.index("\n## Try it by hand\n")
    end = text.index("\n## ", start + 1)
    blocks: dict[str, list[str]] = {}
    for lang, body in FENCE.findall(text[start:end]):
        blocks.setdefault(lang, []).append(body)
    return blocks


async def run(argv: list[str], env: dict[str, str], stdin: str = "", cwd: Path = ROOT) -> str:
    """Run a program to its end without blocking the worker that serves it; its stdout."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), 60)
    assert proc.returncode == 0, f"{argv[0]} exited {proc.returncode}:\n{out.decode()}\n{err.decode()}"
    return out.decode()


@pytest.fixture
def shell_env(tmp_path: Path) -> dict[str, str]:
    """The environment the README's shell blocks run in: `make -s token` signs with the test's
    secret (the Makefile takes HUB_JWT_SECRET from the environment) and runs this interpreter,
    with a fresh stamp standing in for `make venv`, which this interpreter already satisfies."""
    stamp = tmp_path / "venv-stamp"
    stamp.touch()
    env = dict(os.environ, HUB_JWT_SECRET=SECRET)
    env["MAKEFLAGS"] = f"BIN={Path(sys.executable).parent} STAMP={stamp}"
    env.pop("BASE", None)
    return env


async def start(base_url: str, env: dict[str, str]) -> dict[str, str]:
    """The first shell block, BASE pointed at the test's worker: the stream created, live, listed."""
    first = try_it_by_hand()["sh"][0]
    assert LOCAL_BASE in first, "the first shell block sets BASE for the rest"
    script = "set -euo pipefail\n" + first.replace(LOCAL_BASE, f"BASE={base_url}\n")
    script += 'printf "\\n%s=%s" STREAMER "$STREAMER" VIEWER "$VIEWER" STREAM "$STREAM"\n'
    out = await run(["bash", "-c", script], env)
    found = dict(re.findall(r"^(STREAMER|VIEWER|STREAM)=(\S+)$", out, re.M))
    stream = found["STREAM"]
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}", stream), out
    assert f"stream {stream}\n" in out
    assert f'"stream_id":"{stream}","title":"Test Stream"' in out  # in the live list
    return dict(found, BASE=base_url)


async def finish(found: dict[str, str], env: dict[str, str]) -> str:
    last = try_it_by_hand()["sh"][-1]
    out = await run(["bash", "-c", "set -euo pipefail\n" + last], dict(env, **found))
    assert '{"status":"ENDED",' in out, out
    return out


async def test_try_it_by_hand_shell_and_python(server: Any, base_url: str, shell_env: dict[str, str]) -> None:
    (python,) = try_it_by_hand()["python"]
    found = await start(base_url, shell_env)
    stream = found["STREAM"]
    out = await run([sys.executable, "-"], dict(shell_env, **found), stdin=python)
    assert f"joined {stream} viewers: 1\n" in out
    assert "💬 Bob Hello!\n" in out  # the broadcast, heard before the tip
    assert out.index("💬 Bob Hello!") < out.index("tip 10.0 fee 0.5 USD\n")
    end = await finish(found, shell_env)
    assert "Bob: Hello!" in end  # the chat history
    assert '"message_count":2,"tip_count":1,"tips_total":10' in end


@pytest.fixture(scope="module", name="socket_io_client")
def socket_io_client_fixture() -> Path:
    """tests/js with socket.io-client installed; skipped where tests/test_js_client.py skips."""
    return socket_io_client()


async def test_try_it_by_hand_javascript(
    socket_io_client: Path, server: Any, base_url: str, shell_env: dict[str, str]
) -> None:
    (js,) = try_it_by_hand()["js"]
    found = await start(base_url, shell_env)
    script = JS / f".readme-{uuid.uuid4().hex[:8]}.mjs"  # beside tests/js's node_modules
    script.write_text(js)
    try:
        out = await run(["node", script.name], dict(shell_env, **found), cwd=JS)
    finally:
        script.unlink()
    assert f"joined {found['STREAM']} viewers: 1\n" in out
    assert "💬 Bob Hello from Node!\n" in out
    assert "tip 5 fee 0.25 USD\n" in out
    await finish(found, shell_env)


# -- links ----------------------------------------------------------------------------------

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def prose(path: Path) -> str:
    """The text outside code: fenced blocks and inline code hold no links."""
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def anchors(path: Path) -> set[str]:
    return {slug(h) for h in re.findall(r"^#+ (.+)$", prose(path), re.M)}


PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for target in LINK.findall(prose(page)):
        if re.match(r"[a-z]+:", target):
            continue
        file, _, anchor = target.partition("#")
        dest = (page.parent / file).resolve() if file else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {dest.relative_to(ROOT)}")
    assert not broken, broken


def test_every_docs_page_is_listed() -> None:
    listed = set(re.findall(r"\]\(([\w-]+\.md)\)", (ROOT / "docs" / "README.md").read_text()))
    pages = {p.name for p in (ROOT / "docs").glob("*.md")} - {"README.md"}
    assert pages == listed
