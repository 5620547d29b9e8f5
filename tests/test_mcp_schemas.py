"""The memory tools' advertised input schemas (``tools/list``) say what the tools
enforce: arguments valid under a tool's schema are accepted, and the arguments the
tools refuse (a review: extra keys in ``messages`` items, no ``content``, a window's
tool without a ``name``, ``limit``/``token_budget`` out of bounds, ...) are invalid
under it too, as under the HTTP API's OpenAPI.

A real ``contextos mcp`` subprocess over stdio on a SQLite file, driven by the
official MCP client; the schemas checked with ``jsonschema`` as the client lists them.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest

pytest.importorskip("mcp")
jsonschema = pytest.importorskip("jsonschema")

from mcp.client.session import ClientSession  # noqa: E402

from contextos.engine.session import Session  # noqa: E402
from contextos.server.keys import KeyStore  # noqa: E402
from contextos.server.mcp_server import TOOL_MODELS, MemoryTools  # noqa: E402
from contextos.store import open_store  # noqa: E402
from contextos.types import Message  # noqa: E402
from mcp_support import results, stdio_call  # noqa: E402

#: Arguments valid under each tool's advertised schema, at the edges of its bounds
#: (``{id}`` is a memory the test added). Each must be accepted.
VALID: dict[str, list[dict[str, Any]]] = {
    "add_memory": [
        {"messages": "plain text about tea", "user_id": "u"},
        {
            "messages": [
                {
                    "role": "assistant",
                    "content": "a full message",
                    "name": "bot",
                    "tool_call_id": None,
                    "metadata": {"caption": "x", "n": [1, 2]},
                },
                {"content": "content alone"},
            ],
            "agent_id": "a" * 256,
            "metadata": {"source": {"page": 3}},
            "event_time": "2024-05-02T10:00:00Z",
            "memory_type": "semantic",
            "infer": False,
        },
    ],
    "search_memory": [
        {"query": "tea", "user_id": "u", "limit": 1},
        {
            "query": "t" * 10_000,
            "user_id": "u",
            "limit": 100,
            "token_budget": 1_000_000,
            "metadata": {"source.page": 3, "kind": "note", "ok": True, "score": 1.5},
            "min_score": -1.0,
            "memory_types": ["episodic", "semantic", "procedural"],
            "as_of": "2024-05-02T10:00:00Z",
            "event_after": "2024-01-01T00:00:00Z",
            "event_before": "2025-01-01T00:00:00+02:00",
        },
    ],
    "list_memories": [
        {"user_id": "u", "limit": 1000, "offset": 10_000_000},
        {"user_id": "u", "limit": 1, "offset": 0},
        {"user_id": "u", "memory_types": ["semantic", "episodic"]},
        {"user_id": "u", "memory_type": ["procedural"]},  # its deprecated name
    ],
    "get_memory": [{"memory_id": "{id}"}],
    "update_memory": [
        {"memory_id": "{id}", "expected_text": "plain text about tea", "text": "tea, green"},
        {"memory_id": "{id}", "metadata": {"k": "v"}},
    ],
    "memory_history": [{"memory_id": "{id}"}],
    "assemble_window": [
        {"question": "tea?", "user_id": "u", "token_budget": 64, "limit": 1},
        {
            "question": "tea?",
            "user_id": "u",
            "session_id": "s",
            "token_budget": 200_000,  # the model's window bounds it too (BudgetError)
            "limit": 100,
            "model": "claude-sonnet-4-6",
            "system": "Be brief.",
            "rules": ["Cite memories."],
            "tools": [
                {"name": "get_weather", "description": "d", "input_schema": {"type": "object"}},
                {"name": "t-2", "parameters": {"type": "object"}, "strict": True},
            ],
            "format": "openai",
            "max_tokens": 4096,
        },
    ],
    "compact_session": [
        {"session_id": "s", "budget": 2_000_000, "user_id": "u"},
        {"session_id": "s", "budget": 1, "strategy": "truncate", "force": True},
    ],
    "delete_memory": [{"memory_id": "{id}", "purge": True}],
}

#: Arguments the tools refuse, each with why: every one must be invalid under the
#: tool's advertised schema too (the review's examples first).
REFUSED: list[tuple[str, str, dict[str, Any]]] = [
    (
        "add_memory",
        "message item with an extra key",
        {"messages": [{"role": "user", "content": "x", "timestamp": "t"}], "user_id": "u"},
    ),
    (
        "add_memory",
        "message item without content",
        {"messages": [{"role": "user"}], "user_id": "u"},
    ),
    (
        "add_memory",
        "role outside the four",
        {"messages": [{"role": "robot", "content": "x"}], "user_id": "u"},
    ),
    (
        "add_memory",
        "content as blocks",
        {"messages": [{"content": [{"type": "text", "text": "x"}]}], "user_id": "u"},
    ),
    ("add_memory", "no messages", {"user_id": "u"}),
    ("add_memory", "no message at all", {"messages": [], "user_id": "u"}),
    ("add_memory", "a text past 100,000 characters", {"messages": "x" * 100_001, "user_id": "u"}),
    ("add_memory", "memory_type unknown", {"messages": "x", "user_id": "u", "memory_type": "x"}),
    ("search_memory", "limit 101", {"query": "x", "user_id": "u", "limit": 101}),
    ("search_memory", "limit 0", {"query": "x", "user_id": "u", "limit": 0}),
    ("search_memory", "token_budget 0", {"query": "x", "user_id": "u", "token_budget": 0}),
    ("search_memory", "query over 10,000", {"query": "x" * 10_001, "user_id": "u"}),
    ("search_memory", "empty query", {"query": "", "user_id": "u"}),
    ("search_memory", "user_id over 256", {"query": "x", "user_id": "u" * 257}),
    ("search_memory", "min_score 1.5", {"query": "x", "user_id": "u", "min_score": 1.5}),
    (
        "search_memory",
        "memory type unknown",
        {"query": "x", "user_id": "u", "memory_types": ["episodic", "dream"]},
    ),
    (
        "search_memory",
        "four memory types",
        {"query": "x", "user_id": "u", "memory_types": ["episodic"] * 4},
    ),
    ("search_memory", "as_of a number", {"query": "x", "user_id": "u", "as_of": 1_700_000_000}),
    (
        "search_memory",
        "filter value an object",
        {"query": "x", "user_id": "u", "metadata": {"a": {"b": 1}}},
    ),
    (
        "search_memory",
        "filter value a list",
        {"query": "x", "user_id": "u", "metadata": {"a": [1]}},
    ),
    (
        "search_memory",
        "filter key not dotted",
        {"query": "x", "user_id": "u", "metadata": {"a b": 1}},
    ),
    ("list_memories", "limit 0", {"user_id": "u", "limit": 0}),
    ("list_memories", "limit 1001", {"user_id": "u", "limit": 1001}),
    ("list_memories", "offset past 10,000,000", {"user_id": "u", "offset": 10_000_001}),
    ("list_memories", "offset -1", {"user_id": "u", "offset": -1}),
    ("list_memories", "an unknown type", {"user_id": "u", "memory_types": ["evil"]}),
    ("get_memory", "id over 256", {"memory_id": "m" * 257}),
    ("get_memory", "empty id", {"memory_id": ""}),
    ("update_memory", "empty text", {"memory_id": "{id}", "text": ""}),
    ("memory_history", "id over 256", {"memory_id": "m" * 257}),
    ("delete_memory", "id over 256", {"memory_id": "m" * 257}),
    (
        "assemble_window",
        "tool without name",
        {"question": "x", "user_id": "u", "tools": [{"description": "d"}]},
    ),
    (
        "assemble_window",
        "tool name with a space",
        {"question": "x", "user_id": "u", "tools": [{"name": "a b"}]},
    ),
    ("assemble_window", "budget 63", {"question": "x", "user_id": "u", "token_budget": 63}),
    ("assemble_window", "limit 101", {"question": "x", "user_id": "u", "limit": 101}),
    ("assemble_window", "65 rules", {"question": "x", "user_id": "u", "rules": ["r"] * 65}),
    ("assemble_window", "model empty", {"question": "x", "user_id": "u", "model": ""}),
    ("assemble_window", "max_tokens 0", {"question": "x", "user_id": "u", "max_tokens": 0}),
    ("compact_session", "budget 0", {"session_id": "s", "budget": 0}),
    ("compact_session", "budget past 2,000,000", {"session_id": "s", "budget": 2_000_001}),
    ("compact_session", "no budget", {"session_id": "s"}),
]


def _with_id(arguments: dict[str, Any], memory_id: str) -> dict[str, Any]:
    return {k: memory_id if v == "{id}" else v for k, v in arguments.items()}


def test_every_memory_tool_advertises_its_http_models_schema() -> None:
    """Every memory tool has its HTTP models (a new tool without one would advertise
    its signature's looser types again)."""
    tools = MemoryTools(None, lambda: "t", None)  # type: ignore[arg-type]
    assert set(TOOL_MODELS) == {fn.__name__ for fn in tools.functions()}


def test_advertised_schemas_accept_what_the_tools_accept_and_refuse_what_they_refuse(
    tmp_path: Path,
) -> None:
    db = tmp_path / "mcp.db"
    with KeyStore(str(db)) as keys:
        key = keys.create("acme").secret
    store = open_store(db)  # a session to compact, logged as an agent's client would
    try:
        said = [Message(("user", "assistant")[i % 2], f"turn {i} about tea") for i in range(12)]
        Session(store, "s", tenant="acme", user_id="u").add(*said)
    finally:
        store.close()

    async def scenario(s: ClientSession) -> dict[str, Any]:
        schemas = {t.name: t.input_schema for t in (await s.list_tools()).tools}
        memory_id = results(
            await s.call_tool("add_memory", {"messages": "plain text about tea", "user_id": "u"})
        )[0]["id"]
        accepted: list[tuple[str, dict[str, Any], Any]] = []
        for tool in (*[t for t in VALID if t != "delete_memory"], "delete_memory"):
            for arguments in VALID[tool]:
                arguments = _with_id(arguments, memory_id)
                accepted.append((tool, arguments, await s.call_tool(tool, arguments)))
        refused = [
            (tool, why, args := _with_id(arguments, memory_id), await s.call_tool(tool, args))
            for tool, why, arguments in REFUSED
        ]
        return {"schemas": schemas, "accepted": accepted, "refused": refused}

    out = anyio.run(partial(stdio_call, timeout=120), db, key, scenario)
    validators = {
        name: jsonschema.Draft202012Validator(schema) for name, schema in out["schemas"].items()
    }
    for validator in validators.values():
        jsonschema.Draft202012Validator.check_schema(validator.schema)
    for tool, arguments, result in out["accepted"]:
        errors = [e.message[:200] for e in validators[tool].iter_errors(arguments)]
        assert not errors, (tool, errors)  # the example is valid under the schema...
        assert not result.is_error, (tool, result.content)  # ...and the tool takes it
    for tool, why, arguments, result in out["refused"]:
        assert result.is_error, (tool, why)  # the tool refuses it...
        assert not validators[tool].is_valid(arguments), (
            tool,
            why,
            result.content,
        )  # ...so must its schema
    covered = {tool for tool, _, _ in out["accepted"]}
    assert covered == set(TOOL_MODELS)
