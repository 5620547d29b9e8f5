"""The self-editing memory tools over MCP (``contextos mcp`` as a real subprocess): an agent
updates the ``human`` block, later reads it back to answer, searches archival memory and
the conversation log; errors come back as tool errors; tenants stay apart."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest

pytest.importorskip("mcp")

from mcp.client.session import ClientSession  # noqa: E402

from contextos import Memory  # noqa: E402
from contextos.agent.tools import search_answer  # noqa: E402
from contextos.engine.session import Session  # noqa: E402
from contextos.testing.embedders import HashEmbedder  # noqa: E402
from contextos.types import Message  # noqa: E402
from mcp_support import payload, stdio_call  # noqa: E402
from test_mcp import _keys  # noqa: E402


def _text(result: Any) -> str:
    return "".join(getattr(c, "text", "") for c in result.content)


def test_self_editing_tools_over_mcp(tmp_path: Path) -> None:
    db = tmp_path / "mcp.db"
    key_a, key_b = _keys(db, "acme", "other")
    with Memory(db, tenant="acme", embedder=HashEmbedder(), background_embedding=False) as m:
        log = Session(m.store, "chat-7", tenant="acme", user_id="ana")
        log.add(Message("user", "My sister Lena visits in June."), Message("assistant", "Nice!"))

    async def first(s: ClientSession) -> dict[str, Any]:
        ana = {"user_id": "ana"}
        append = await s.call_tool(
            "core_memory_append", {"label": "human", "content": "Lives in Lisbon.", **ana}
        )
        replace = await s.call_tool(
            "core_memory_replace",
            {"label": "human", "old_content": "Lisbon", "new_content": "Porto", **ana},
        )
        bad = await s.call_tool("core_memory_append", {"label": "mood", "content": "x", **ana})
        missing = {"label": "human", "old_content": "Q" * 50_000, "new_content": "x", **ana}
        long = await s.call_tool("core_memory_replace", missing)
        await s.call_tool(
            "archival_memory_insert", {"content": "Ana's flight to Porto is on 3 June.", **ana}
        )
        return {
            "append": payload(append),
            "replace": payload(replace),
            "bad": (bad.is_error, _text(bad)),
            "long": (long.is_error, _text(long)),
        }

    async def later(s: ClientSession) -> dict[str, Any]:
        ana = {"user_id": "ana"}
        view = payload(await s.call_tool("core_memory_view", ana))
        found = payload(await s.call_tool("archival_memory_search", {"query": "flight", **ana}))
        conv = payload(
            await s.call_tool(
                "conversation_search", {"query": "sister", "session_id": "chat-7", **ana}
            )
        )
        return {"view": view, "found": found, "conv": conv}

    out1 = anyio.run(stdio_call, db, key_a, first)
    out2 = anyio.run(stdio_call, db, key_a, later)  # a new MCP session, a new process
    other = anyio.run(stdio_call, db, key_b, later)
    assert out1["append"]["result"] == "Core memory block 'human' is now:\nLives in Lisbon."
    assert out1["replace"]["result"].endswith("Lives in Porto.")
    assert out1["bad"][0] and "No core memory block 'mood'" in out1["bad"][1]
    # one "Error" (the SDK's), the type, the wrappers' text; a long argument quoted cut
    assert out1["bad"][1].startswith(
        "Error executing tool core_memory_append: CoreMemoryError: No core memory block"
    ), out1["bad"][1]
    assert out1["long"][0] and len(out1["long"][1]) < 1_300, len(out1["long"][1])
    assert "(50,000 characters)" in out1["long"][1]
    # the agent answers "where does Ana live?" from the block it pins
    assert "<human" in out2["view"]["result"] and "Lives in Porto." in out2["view"]["result"]
    assert "flight to Porto" in out2["found"]["result"]
    assert out2["conv"]["result"] == search_answer(
        ["[turn 0] user: My sister Lena visits in June."]
    )
    # another tenant's key sees none of it
    assert "Porto" not in json.dumps(other)
    # the session is none of its: it is told where a session's turns come from
    said = other["conv"]["result"]
    lines = said.splitlines()
    assert said == search_answer(lines[1:-1]), said  # one answer, between its markers
    assert lines[1].startswith("No earlier messages matched. Session 'chat-7' has no turns: ")
    assert "POST /v1/sessions/{session_id}/turns" in said
