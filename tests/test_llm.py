"""The LLM seam's helpers: JSON replies and the schema check, and the scripted double."""

from __future__ import annotations

import pytest

from contextos.errors import ProviderError
from contextos.llm import LLM, parse_json_reply, schema_errors
from contextos.llm.prompts import (
    EXTRACT_SCHEMA,
    PROMPTS,
    RECONCILE_SCHEMA,
    RECONCILE_V1,
)
from contextos.testing.llm import ScriptedLLM
from contextos.types import Message


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ('{"a": 1}', {"a": 1}),
        ('  ```json\n{"a": [1, 2]}\n```  ', {"a": [1, 2]}),
        ("```\n[]\n```", []),
        ("null", None),
    ],
)
def test_parse_json_reply(reply: str, expected: object) -> None:
    assert parse_json_reply(reply) == expected


@pytest.mark.parametrize("reply", ["", "ADD", "```json\n{oops}\n```", '{"a": 1'])
def test_parse_json_reply_rejects_non_json(reply: str) -> None:
    with pytest.raises(ValueError, match="not JSON"):
        parse_json_reply(reply)


def test_parse_json_reply_rejects_json_nested_too_deep_as_not_json() -> None:
    # Python's parser raised RecursionError, which the callers' fallback for an invalid
    # reply (they catch ValueError) let through: add() failed and lost the turn's facts.
    with pytest.raises(ValueError, match="nested too deep"):
        parse_json_reply("[" * 100_000 + "]" * 100_000)


@pytest.mark.parametrize(
    ("value", "errors"),
    [
        ({"action": "ADD"}, []),
        ({"action": "UPDATE", "target": 0, "text": "x", "reason": "r"}, []),
        ({"action": "DELETE", "target": None}, []),
        ({}, ["$: missing 'action'"]),
        (
            {"action": "MERGE"},
            ["$.action: 'MERGE' is not one of ['ADD', 'UPDATE', 'DELETE', 'NOOP']"],
        ),
        ({"action": "ADD", "target": "0"}, ["$.target: expected ['integer', 'null'], got str"]),
        ({"action": "ADD", "target": True}, ["$.target: expected ['integer', 'null'], got bool"]),
        ({"action": "ADD", "x": 1}, ["$: unexpected 'x'"]),
        ([], ["$: expected object, got list"]),
    ],
)
def test_schema_errors_for_reconcile_replies(value: object, errors: list[str]) -> None:
    assert schema_errors(value, RECONCILE_SCHEMA) == errors


def test_schema_errors_walk_arrays() -> None:
    good = {"facts": [{"text": "Ann runs.", "type": "semantic", "date": None}]}
    assert schema_errors(good, EXTRACT_SCHEMA) == []
    bad = {"facts": [{"text": "x", "type": "rumour"}, {"type": "semantic"}]}
    assert schema_errors(bad, EXTRACT_SCHEMA) == [
        "$.facts[0].type: 'rumour' is not one of ['episodic', 'semantic', 'procedural']",
        "$.facts[1]: missing 'text'",
    ]


def test_prompts_are_versioned_and_render() -> None:
    assert set(PROMPTS) == {"reconcile@1", "extract@1", "reconcile@2", "extract@2"}
    text = RECONCILE_V1.render(speaker="Ann", when="7 May 2023", fact="f", existing="[0] e")
    assert "NEW fact (said by Ann, 7 May 2023):\nf" in text and "[0] e" in text
    with pytest.raises(KeyError):
        RECONCILE_V1.render(speaker="Ann")


def test_scripted_llm_replies_in_order_and_records_calls() -> None:
    llm = ScriptedLLM(["one", lambda system, messages: f"{system}:{messages[-1].content}"])
    assert isinstance(llm, LLM)
    assert llm.complete("s", [Message("user", "a")]) == "one"
    assert llm.complete("sys", [Message("user", "b")], json_schema={"type": "object"}) == "sys:b"
    assert [(c.system, c.json_schema) for c in llm.calls] == [
        ("s", None),
        ("sys", {"type": "object"}),
    ]
    assert llm.remaining == 0
    with pytest.raises(ProviderError):
        llm.complete("s", [])
