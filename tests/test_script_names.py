"""The chat, tip, moderation and chat-rate scripts name every KEYS and ARGV entry before they
start work, so their bodies read by name, never by position."""

from __future__ import annotations

import pytest

from tests.conftest import ROOT

LUA = ROOT / "hub" / "storage" / "lua"


@pytest.mark.parametrize("name", ["chat_batch", "chat_rate", "tip", "moderate"])
def test_keys_and_arguments_are_named_before_the_work_starts(name):
    lines = [line for line in (LUA / f"{name}.lua").read_text().splitlines() if not line.startswith("--")]
    start = next(i for i, line in enumerate(lines) if "now_ms()" in line or "redis.call(" in line)
    late = [line for line in lines[start:] if "ARGV[" in line or "KEYS[" in line]
    assert late == []
