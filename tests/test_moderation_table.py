"""The moderation table (``payloads.MODERATION``) is the one list of actions: the namespace's
events, REST routes and OpenAPI operations are made from it, and what names actions on its
own (the console, ``moderate.lua``) names only what it holds."""

from __future__ import annotations

import re

from hub.domain.payloads import MODERATION, MODERATION_ACTIONS
from hub.transport import openapi
from tests.conftest import ROOT

CONSOLE = ROOT / "hub" / "transport" / "console"
SCRIPT = ROOT / "hub" / "storage" / "lua" / "moderate.lua"


def test_the_console_moderates_with_actions_of_the_table_only():
    used = set()
    for path in CONSOLE.glob("*.js"):
        used |= set(re.findall(r'\bmoderate\("(\w+)"', path.read_text()))
    assert used and used <= set(MODERATION)


def test_the_moderation_script_makes_exactly_the_changes_the_table_names():
    made = set(re.findall(r"change == '(\w+)'", SCRIPT.read_text()))
    assert made == {action.change for action in MODERATION.values()}


def test_each_action_has_its_operation_at_its_route_and_its_record_in_the_schema():
    document = openapi.document("/p")
    for action in MODERATION.values():
        operation = document["paths"]["/p/{stream_id}" + action.route.path][action.route.method.lower()]
        assert operation["tags"] == ["moderation"] and operation["summary"] == action.route.summary
    schema = document["components"]["schemas"]["ModerationAction"]
    assert schema["properties"]["action"]["enum"] == list(MODERATION_ACTIONS)
    required = {
        rule["if"]["properties"]["action"]["const"]: rule["then"]["required"] for rule in schema["allOf"]
    }
    assert required == {a.name: list(a.recorded) for a in MODERATION.values() if a.recorded}
