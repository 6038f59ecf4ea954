"""The outbox's dead letters, for ``python -m hub outbox dead|replay``.

The flusher sets a malformed record aside in its shard's ``outbox:dead`` (fields ``t`` and
``d`` as in the outbox, and ``entry``, the outbox entry it came from). Replaying one puts its
``t`` and ``d`` back in the outbox of that shard and deletes it from the dead letters, both in
one script, so it is written once however often it is replayed: a dead letter already replayed
is no longer there, and every MySQL write is an upsert by the record's id.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, NamedTuple, cast

from hub.storage.connections import SyncRedis
from hub.storage.keys import Keys
from hub.storage.scripts import source

REPLAY_LUA = source("replay")
PAGE = 500
PREVIEW = 72
_ENTRY_ID = re.compile(r"\d+-\d+")


class Target(NamedTuple):
    """A dead letter named on the command line: its id, in one shard or (None) any."""

    shard: int | None
    id: str


def targets(names: list[str], shards: int) -> list[Target]:
    """``ID`` or ``SHARD/ID`` arguments; ValueError names the first that is neither."""
    found = []
    for name in names:
        shard, _, entry_id = name.rpartition("/")
        in_range = shard.isascii() and shard.isdigit() and int(shard) < shards
        if not _ENTRY_ID.fullmatch(entry_id) or (shard and not in_range):
            raise ValueError(f"{name!r} is not a dead letter's id (ID or SHARD/ID, shards 0 to {shards - 1})")
        found.append(Target(int(shard) if shard else None, entry_id))
    return found


Page = list[tuple[str, dict[str, str]]]  # stream entries, as a client decoding replies reads them


def _pages(client: SyncRedis, key: str, last: str = "+") -> Iterator[Page]:
    start = "-"
    while True:
        page = cast(Page, client.xrange(key, start, last, count=PAGE))
        if not page:
            return
        yield page
        start = "(" + page[-1][0]


def listing(client: SyncRedis, keys: Keys) -> list[dict[str, Any]]:
    """Every shard's dead letters, oldest first within a shard."""
    return [
        {
            "shard": shard,
            "id": entry_id,
            "kind": fields.get("t", ""),
            "entry": fields.get("entry", ""),
            "data": fields.get("d", ""),
        }
        for shard, k in enumerate(keys.all)
        for page in _pages(client, k.outbox_dead)
        for entry_id, fields in page
    ]


def listing_text(letters: list[dict[str, Any]]) -> str:
    lines = [
        f"{d['id']}  shard {d['shard']}  {d['kind'] or '?':<10}  from {d['entry'] or '?'}  "
        f"{_preview(d['data'])}"
        for d in letters
    ]
    lines.append(
        f"{len(letters)} dead letters" + (" (python -m hub outbox replay ID… | --all)" if letters else "")
    )
    return "\n".join(lines)


def _preview(data: str) -> str:
    flat = "".join(ch if ch.isprintable() else " " for ch in data[: PREVIEW + 1])
    return flat if len(flat) <= PREVIEW else flat[: PREVIEW - 1] + "…"


def replay(client: SyncRedis, keys: Keys, wanted: list[Target]) -> list[tuple[int | None, str, str | None]]:
    """The dead letters named put back in their shard's outbox: (shard, id, new outbox entry id),
    the shard and new id None when it was in no dead letters (replayed already)."""
    script = client.register_script(REPLAY_LUA)
    done: list[tuple[int | None, str, str | None]] = []
    for target in wanted:
        shards = range(len(keys.all)) if target.shard is None else (target.shard,)
        found = [
            (shard, entry)
            for shard in shards
            if (entry := _replay_one(script, keys.all[shard], target.id)) is not None
        ]
        done.extend((shard, target.id, entry) for shard, entry in found)
        if not found:
            done.append((target.shard, target.id, None))
    return done


def replay_all(client: SyncRedis, keys: Keys) -> list[tuple[int | None, str, str | None]]:
    """Every dead letter there now put back (not those set aside again meanwhile: a malformed
    record replayed comes back as a new dead letter, which is not replayed in turn)."""
    script = client.register_script(REPLAY_LUA)
    done: list[tuple[int | None, str, str | None]] = []
    for shard, k in enumerate(keys.all):
        newest = cast(Page, client.xrevrange(k.outbox_dead, count=1))
        if not newest:
            continue
        for page in _pages(client, k.outbox_dead, newest[0][0]):
            done.extend((shard, entry_id, _replay_one(script, k, entry_id)) for entry_id, _ in page)
    return done


def _replay_one(script: Any, k: Keys, entry_id: str) -> str | None:
    entry = script(keys=[k.outbox_dead, k.outbox], args=[entry_id])
    return entry or None
