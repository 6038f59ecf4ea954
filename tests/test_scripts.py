"""The Lua scripts' shared prelude: key builders generated from ``Keys``, refusals read back by one
decoder, and each script's KEYS and ARGV named at its top."""

import re
from collections.abc import Iterator

import pytest
import redis

from hub.errors import HubError
from hub.settings import Settings
from hub.storage import scripts
from hub.storage.keys import LUA_BUILT, Keys

AWKWARD_IDS = [
    "0190a4c2-7b1e-7c3d-8e9f-0123456789ab",
    "",
    "it's",
    'say "hi"',
    "back\\slash",
    "100%d %s",
    "line\nbreak",
    "]]==]",
    "naïve 🎥",
    "{tag}",
    "nul\x00byte",
]
# The scripts reworked separately: their KEYS/ARGV are not yet all named at the top.
NOT_YET_NAMED = {"chat_batch", "chat_rate", "moderate", "tip"}


@pytest.fixture
def client() -> Iterator[redis.Redis]:
    connection = redis.Redis(decode_responses=True)  # as the hub's clients
    try:
        yield connection
    finally:
        connection.close()


def _lua_text(value: str) -> str:
    return "'" + "".join(f"\\{b:03d}" for b in value.encode()) + "'"


@pytest.mark.parametrize("prefix", ["hub:", "test:run-1:", Keys("hub:", shards=3).all[1].prefix])
def test_lua_key_builders_name_the_keys_python_names(client: redis.Redis, prefix: str) -> None:
    keys = Keys(prefix)
    calls, expected = [], []
    for name in LUA_BUILT:
        if isinstance(getattr(Keys, name), property):
            calls.append(f"key_{name}({_lua_text(prefix)})")
            expected.append(getattr(keys, name))
            continue
        for stream_id in AWKWARD_IDS:
            calls.append(f"key_{name}({_lua_text(prefix)}, {_lua_text(stream_id)})")
            expected.append(getattr(keys, name)(stream_id))
    named = client.eval(Keys.lua_prelude() + "return {" + ", ".join(calls) + "}", 0)
    assert named == expected


def test_a_script_refusal_is_read_back_as_the_hub_error(client: redis.Redis) -> None:
    prelude = scripts.prelude(Settings.from_env({}))
    with_all = client.eval(prelude + "return fail('rate_limited', 1500, 'Slow down.')", 0)
    assert scripts.ScriptError.of(with_all) == scripts.ScriptError("rate_limited", 1500, "Slow down.")
    with pytest.raises(HubError) as caught:
        scripts.checked(with_all)
    assert (caught.value.code, caught.value.retry_after, caught.value.message) == (
        "rate_limited",
        1.5,
        "Slow down.",
    )
    bare = client.eval(prelude + "return fail('not_found')", 0)
    assert scripts.ScriptError.of(bare) == scripts.ScriptError("not_found", None, None)
    assert scripts.ScriptError.of(["ok", 3]) is None


def _header_and_body(text: str) -> tuple[list[str], list[str]]:
    """A script's lines up to its last ``local … = KEYS[n]/ARGV[n]`` line, and the rest."""
    lines = text.splitlines()
    reads = [i for i, line in enumerate(lines) if re.match(r"local .*= .*(KEYS|ARGV)\[", line)]
    end = reads[-1] + 1 if reads else 0
    return lines[:end], lines[end:]


def _own_scripts() -> Iterator[str]:
    for entry in scripts.FOLDER.iterdir():
        name = entry.name.removesuffix(".lua")
        if entry.name.endswith(".lua") and name not in NOT_YET_NAMED | {"common"}:
            yield name


@pytest.mark.parametrize("name", sorted(_own_scripts()))
def test_a_script_names_its_keys_and_arguments_at_its_top(name: str) -> None:
    header, body = _header_and_body(scripts.source(name))
    assert header, f"{name}.lua names no KEYS or ARGV"
    assert not [line for line in body if re.search(r"(KEYS|ARGV)\[", line)]
    assert not [
        line for line in body if re.search(r"\.\.\s*'(:|(stream|room|live|outbox|user|rate|addr)\b)", line)
    ], "key names are built by Keys (passed in KEYS, or key_* builders)"
