"""The Lua scripts' shared prelude: key builders generated from ``Keys``, refusals read back by one
decoder, each script's KEYS and ARGV named at its top, and no key name written in a script."""

import inspect
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
# The scripts given a list of keys or arguments of varying length, read in loops after their
# fixed ones are named (tests/test_script_names.py checks them).
VARIABLE_LENGTH = {"chat_batch", "chat_rate"}


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


def test_every_generated_key_builder_is_used_by_a_script() -> None:
    lua = "".join(scripts.source(entry.name.removesuffix(".lua")) for entry in scripts.FOLDER.iterdir())
    assert [name for name in LUA_BUILT if f"key_{name}(" not in lua] == []


def test_a_chat_rate_window_named_from_redis_clock_is_the_one_python_names(client: redis.Redis) -> None:
    """The window's number is a Lua number (``math.floor(now / period)``), not a string."""
    lua = "return key_chat_rate_window('hub:', math.floor(1764730000123 / 60000))"
    assert client.eval(Keys.lua_prelude() + lua, 0) == Keys("hub:").chat_rate_window(1764730000123 // 60000)
    assert Keys("hub:").chat_rate_window(29412166) == "hub:rate:chatlog:29412166"


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
        if entry.name.endswith(".lua") and name not in VARIABLE_LENGTH | {"common"}:
            yield name


@pytest.mark.parametrize("name", sorted(_own_scripts()))
def test_a_script_names_its_keys_and_arguments_at_its_top(name: str) -> None:
    header, body = _header_and_body(scripts.source(name))
    assert header, f"{name}.lua names no KEYS or ARGV"
    assert not [line for line in body if re.search(r"(KEYS|ARGV)\[", line)]


def _key_words() -> set[str]:
    """The words of every key and channel name ``Keys`` writes (``stream``, ``recent``, ``rate``,
    ``chatlog``, ``live``, …), read off its methods and properties called with stand-ins."""
    keys, names = Keys(""), []
    for name, member in vars(Keys).items():
        if isinstance(member, property):
            names.append(getattr(keys, name))
        elif inspect.isfunction(member) and not name.startswith("_") and name not in {"of", "shard_of"}:
            arity = len(inspect.signature(member).parameters) - 1
            names.append(member(keys, *["-"] * arity))
    return {word for name in names for word in re.findall(r"[a-z]+", name)}


KEY_WORDS = _key_words()
# A Lua string literal next to a concatenation (``..``), either side.
_CONCATENATED = re.compile(
    r"""\.\.\s*('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")|('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")\s*\.\."""
)


def key_literals(lua: str) -> list[str]:
    """The string literals of a Lua text, concatenated to something, that look like a piece of
    a key name: a word of one with a colon (``':recent'``, ``'rate:'``), or a word of one alone
    (``'live'``)."""
    found = []
    for line in lua.splitlines():
        code = re.sub(r"--.*$", "", line)
        for match in _CONCATENATED.finditer(code):
            literal = (match.group(1) or match.group(2))[1:-1]
            words = set(re.findall(r"[A-Za-z0-9_]+", literal))
            if (":" in literal and words & KEY_WORDS) or literal.strip(":") in KEY_WORDS:
                found.append(literal)
    return found


def test_the_key_literal_finder_tells_key_pieces_from_other_text() -> None:
    assert KEY_WORDS >= {"stream", "recent", "unflushed", "rate", "chatlog", "live", "cat", "room"}
    lua = """local a = base .. ':recent'
local b = 'stream:' .. id -- a comment's 'rate:' .. x
local c = prefix .. 'live'
local d = prefix .. "rate:chatlog:" .. window
local e = now .. ':' .. count
local f = 'u:' .. target
local g = life .. ' healed'
local h = '[{"message_id":"' .. id .. '"\\255'
local i = 'You have ' .. n .. ' scheduled streams; start or cancel one first.'
"""
    assert key_literals(lua) == [":recent", "stream:", "live", "rate:chatlog:"]


@pytest.mark.parametrize(
    "name", sorted(entry.name for entry in scripts.FOLDER.iterdir() if entry.name.endswith(".lua"))
)
def test_no_script_writes_a_key_name_only_the_generated_builders_do(name: str) -> None:
    """Every key name is written in hub.storage.keys: a script gets its keys in KEYS, or builds
    them with the ``key_*`` builders ``Keys.lua_prelude`` generates."""
    assert key_literals((scripts.FOLDER / name).read_text()) == []
