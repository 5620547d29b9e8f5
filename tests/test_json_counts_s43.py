"""A count is never a boolean on any surface (a review, s43): HTTP and MCP read ``true``
as 1, where Python and the CLI refuse it, so ``"limit": true`` quietly answered one hit
and ``"token_budget": true`` none. A number as text (``"10"``, ``10.0``) stays a number,
as in a query string and the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from cli_support import keyed_server
from mcp_support import error_text, results, stdio_call

QUERY = {"query": "green tea", "user_id": "ana"}


@pytest.mark.parametrize(
    "field", [{"limit": True}, {"limit": False}, {"limit": 2.5}, {"token_budget": True}]
)
def test_http_search_refuses_a_count_that_is_not_a_json_integer(
    tmp_path: Path, field: dict[str, Any]
) -> None:
    with keyed_server(str(tmp_path / "h.db"), "--embedder", "hash") as (c, _key):
        c.post("/v1/memories", json={"messages": "Ana drinks green tea.", "user_id": "ana"})
        refused = c.post("/v1/memories/search", json={**QUERY, **field})
        assert refused.status_code == 422, refused.text
        assert "valid integer" in refused.text
        found = c.post("/v1/memories/search", json={**QUERY, "limit": "10", "token_budget": 500})
        assert found.status_code == 200 and len(found.json()["results"]) == 1


def test_mcp_tools_refuse_a_count_that_is_not_a_json_integer(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    with keyed_server(str(db), "--embedder", "hash") as (c, key):
        c.post("/v1/memories", json={"messages": "Ana drinks green tea.", "user_id": "ana"})

    async def calls(session: Any) -> dict[str, Any]:
        return {
            "search": await session.call_tool("search_memory", {**QUERY, "limit": True}),
            "list": await session.call_tool("list_memories", {"user_id": "ana", "offset": False}),
            "ok": await session.call_tool("search_memory", {**QUERY, "limit": 3}),
        }

    got = anyio.run(lambda: stdio_call(db, key, calls))
    assert "valid integer" in error_text(got["search"])
    assert "valid integer" in error_text(got["list"])
    assert len(results(got["ok"])) == 1


def test_a_compaction_budget_is_never_a_boolean(tmp_path: Path) -> None:
    """``{"budget": true}`` compacted the history to fit 1 token: every turn rotated out
    of the window (2,769 tokens to 239)."""
    db = tmp_path / "c.db"
    with keyed_server(str(db), "--embedder", "hash") as (c, key):
        turns = [{"role": "user", "content": f"turn {n}: " + "words " * 30} for n in range(6)]
        logged = c.post("/v1/sessions/s1/turns", json={"messages": turns, "user_id": "ana"})
        assert logged.status_code in (200, 201), logged.text
        refused = c.post("/v1/sessions/s1/compact", json={"budget": True, "user_id": "ana"})
        assert refused.status_code == 422 and "valid integer" in refused.text, refused.text

    async def compact(session: Any) -> Any:
        return await session.call_tool("compact_session", {"session_id": "s1", "budget": True})

    assert "valid integer" in error_text(anyio.run(lambda: stdio_call(db, key, compact)))
