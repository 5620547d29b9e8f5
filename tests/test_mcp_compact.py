"""`contextos mcp` compacts sessions (``compact_session``) and assembles windows with
instructions and a ready request (``assemble_window``), validated as over HTTP.

A real `contextos mcp` subprocess over stdio, driven by the official MCP client; the
session logged in the same SQLite file by the library, as an agent's wrapped client
would (MCP has no tool that logs turns).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest

pytest.importorskip("mcp")

from mcp.client.session import ClientSession  # noqa: E402

from contextos.engine.session import Session  # noqa: E402
from contextos.server.keys import KeyStore  # noqa: E402
from contextos.store import open_store  # noqa: E402
from contextos.types import Message  # noqa: E402
from mcp_support import error_text, payload, results, stdio_call  # noqa: E402

FACT = "the zeppelin hangar code is 4417"
SYSTEM = "You are the support assistant of a bicycle shop. " * 200


def _log(db: Path, tenant: str, session_id: str, turns: int) -> None:
    store = open_store(db)
    try:
        s = Session(store, session_id, tenant=tenant, user_id="ana")
        said = [
            Message(("user", "assistant")[i % 2], f"turn {i}: the garden, the weather, Rex")
            for i in range(turns)
        ]
        said[0] = Message("user", f"remember this: {FACT}")
        s.add(*said)
    finally:
        store.close()


def test_compact_session_and_an_instructed_window_over_stdio(tmp_path: Path) -> None:
    db = tmp_path / "mcp.db"
    with KeyStore(str(db)) as keys:
        acme, other = keys.create("acme").secret, keys.create("other").secret
    _log(db, "acme", "long", 300)
    _log(db, "acme", "s-off", 200)

    async def as_acme(s: ClientSession) -> dict[str, Any]:
        ask = {"question": "what about Rex?", "session_id": "long", "token_budget": 20_000}
        out: dict[str, Any] = {"before": payload(await s.call_tool("assemble_window", ask))}
        out["compacted"] = payload(
            await s.call_tool("compact_session", {"session_id": "long", "budget": 2000})
        )
        out["after"] = payload(await s.call_tool("assemble_window", ask))
        out["offload"] = payload(
            await s.call_tool(
                "compact_session",
                {"session_id": "s-off", "budget": 1500, "strategy": "offload", "user_id": "ana"},
            )
        )
        out["found"] = results(
            await s.call_tool("search_memory", {"query": "zeppelin hangar", "session_id": "s-off"})
        )
        out["errors"] = [
            error_text(await s.call_tool("compact_session", args))
            for args in (
                {"session_id": "long", "budget": 100, "strategy": "zip"},
                {"session_id": "long", "budget": 0},
                {"session_id": "nobody", "budget": 100},
                {"session_id": "long", "budget": 100, "tenant": "other"},
            )
        ]
        instructed = {**ask, "system": SYSTEM, "rules": ["be brief"], "format": "anthropic"}
        out["instructed"] = payload(await s.call_tool("assemble_window", instructed))
        openai = {**ask, "system": "be kind", "format": "openai", "model": "gpt-4o"}
        out["openai"] = payload(await s.call_tool("assemble_window", openai))
        out["no_name"] = error_text(
            await s.call_tool("assemble_window", {**ask, "tools": [{"description": "x"}]})
        )
        return out

    async def as_other(s: ClientSession) -> dict[str, Any]:
        return {
            "compact": error_text(
                await s.call_tool(
                    "compact_session", {"session_id": "long", "budget": 10, "force": True}
                )
            ),
            "found": results(
                await s.call_tool(
                    "search_memory", {"query": "zeppelin hangar", "session_id": "s-off"}
                )
            ),
        }

    mine = anyio.run(partial(stdio_call, timeout=120), db, acme, as_acme)
    theirs = anyio.run(partial(stdio_call, timeout=120), db, other, as_other)

    done = mine["compacted"]
    assert done["compacted"] is True and done["raced"] is False and done["plan"]["rotate"]
    assert mine["after"]["tokens"] < mine["before"]["tokens"] // 2
    assert [b["segment"] for b in mine["after"]["blocks"]][0] == "summary"
    assert mine["offload"]["archived"] > 0
    assert any(FACT in h["text"] for h in mine["found"])
    strategy, budget, unknown, smuggled = mine["errors"]
    # As over HTTP (the SDK's own argument check first names the tool).
    assert "ValueError: strategy: Input should be 'truncate'" in strategy
    assert "ValueError: budget: Input should be greater than or equal to 1" in budget
    assert "NotFound: no session 'nobody' (or it has no turns yet): no tool logs" in unknown
    assert "POST /v1/sessions/{session_id}/turns" in unknown
    assert "tenant" in smuggled
    request = mine["instructed"]["request"]
    assert [b["text"] for b in request["system"][:2]] == [SYSTEM, "be brief"]
    assert any("cache_control" in b for b in request["system"])
    assert mine["instructed"]["breakpoints"][0]["ttl"] == "1h"
    assert mine["openai"]["request"]["model"] == "gpt-4o"
    assert mine["openai"]["request"]["prompt_cache_key"].startswith("ctxos-")
    assert "ValueError: tools.0.name: Field required" in mine["no_name"]

    assert "NotFound: no session 'long' (or it has no turns yet): " in theirs["compact"]
    assert theirs["found"] == []
