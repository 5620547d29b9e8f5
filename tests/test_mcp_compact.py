"""`contextos mcp` compacts sessions (``compact_session``) and assembles windows with
instructions and a ready request (``assemble_window``), validated as over HTTP.

A real `contextos mcp` subprocess over stdio, driven by the official MCP client; the
session logged in the same SQLite file by the library, as an agent's wrapped client
would (MCP has no tool that logs turns).
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

pytest.importorskip("mcp")

from mcp.client.session import ClientSession  # noqa: E402
from mcp.client.stdio import StdioServerParameters, stdio_client  # noqa: E402

import contextos  # noqa: E402
from contextos.engine.session import Session  # noqa: E402
from contextos.server.keys import KeyStore  # noqa: E402
from contextos.store import open_store  # noqa: E402
from contextos.types import Message  # noqa: E402

CLI = [sys.executable, "-c", "from contextos.cli.main import main; main()"]
SRC = str(Path(contextos.__file__).resolve().parents[1])
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


async def _stdio(db: Path, key: str, fn: Callable[[ClientSession], Awaitable[Any]]) -> Any:
    params = StdioServerParameters(
        command=CLI[0],
        args=[*CLI[1:], "mcp", "--db", str(db), "--embedder", "hash"],
        env={"CONTEXTOS_API_KEY": key, "PYTHONPATH": SRC},
    )
    with anyio.fail_after(120):
        async with stdio_client(params) as (read, write), ClientSession(read, write) as s:
            await s.initialize()
            return await fn(s)


def _payload(result: Any) -> Any:
    assert not result.is_error, result.content
    data = result.structured_content
    return data["result"] if set(data) == {"result"} else data


def _error(result: Any) -> str:
    assert result.is_error, result.content
    return str(result.content[0].text)


def test_compact_session_and_an_instructed_window_over_stdio(tmp_path: Path) -> None:
    db = tmp_path / "mcp.db"
    with KeyStore(str(db)) as keys:
        acme, other = keys.create("acme").secret, keys.create("other").secret
    _log(db, "acme", "long", 300)
    _log(db, "acme", "s-off", 200)

    async def as_acme(s: ClientSession) -> dict[str, Any]:
        ask = {"question": "what about Rex?", "session_id": "long", "token_budget": 20_000}
        out: dict[str, Any] = {"before": _payload(await s.call_tool("assemble_window", ask))}
        out["compacted"] = _payload(
            await s.call_tool("compact_session", {"session_id": "long", "budget": 2000})
        )
        out["after"] = _payload(await s.call_tool("assemble_window", ask))
        out["offload"] = _payload(
            await s.call_tool(
                "compact_session",
                {"session_id": "s-off", "budget": 1500, "strategy": "offload", "user_id": "ana"},
            )
        )
        out["found"] = _payload(
            await s.call_tool("search_memory", {"query": "zeppelin hangar", "session_id": "s-off"})
        )
        out["errors"] = [
            _error(await s.call_tool("compact_session", args))
            for args in (
                {"session_id": "long", "budget": 100, "strategy": "zip"},
                {"session_id": "long", "budget": 0},
                {"session_id": "nobody", "budget": 100},
                {"session_id": "long", "budget": 100, "tenant": "other"},
            )
        ]
        instructed = {**ask, "system": SYSTEM, "rules": ["be brief"], "format": "anthropic"}
        out["instructed"] = _payload(await s.call_tool("assemble_window", instructed))
        openai = {**ask, "system": "be kind", "format": "openai", "model": "gpt-4o"}
        out["openai"] = _payload(await s.call_tool("assemble_window", openai))
        out["no_name"] = _error(
            await s.call_tool("assemble_window", {**ask, "tools": [{"description": "x"}]})
        )
        return out

    async def as_other(s: ClientSession) -> dict[str, Any]:
        return {
            "compact": _error(
                await s.call_tool(
                    "compact_session", {"session_id": "long", "budget": 10, "force": True}
                )
            ),
            "found": _payload(
                await s.call_tool(
                    "search_memory", {"query": "zeppelin hangar", "session_id": "s-off"}
                )
            ),
        }

    mine = anyio.run(_stdio, db, acme, as_acme)
    theirs = anyio.run(_stdio, db, other, as_other)

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
    assert unknown.endswith("NotFound: no session 'nobody' (or it has no turns yet)")
    assert "tenant" in smuggled
    request = mine["instructed"]["request"]
    assert [b["text"] for b in request["system"][:2]] == [SYSTEM, "be brief"]
    assert any("cache_control" in b for b in request["system"])
    assert mine["instructed"]["breakpoints"][0]["ttl"] == "1h"
    assert mine["openai"]["request"]["model"] == "gpt-4o"
    assert mine["openai"]["request"]["prompt_cache_key"].startswith("ctxos-")
    assert "ValueError: tools.0.name: Field required" in mine["no_name"]

    assert theirs["compact"].endswith("NotFound: no session 'long' (or it has no turns yet)")
    assert theirs["found"] == []
