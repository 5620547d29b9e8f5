"""MCP test helpers: a real ``contextos mcp`` over stdio, and tool results read back."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

import contextos

CLI = [sys.executable, "-c", "from contextos.cli.main import main; main()"]
SRC = str(Path(contextos.__file__).resolve().parents[1])


async def stdio_call(
    db: Path,
    key: str,
    fn: Callable[[ClientSession], Awaitable[Any]],
    *,
    timeout: float = 60,
) -> Any:
    """``fn`` run against ``contextos mcp --db DB`` over stdio, acting with ``key``."""
    params = StdioServerParameters(
        command=CLI[0],
        args=[*CLI[1:], "mcp", "--db", str(db), "--embedder", "hash"],
        env={"CONTEXTOS_API_KEY": key, "PYTHONPATH": SRC},
    )
    with anyio.fail_after(timeout):
        async with stdio_client(params) as (read, write), ClientSession(read, write) as s:
            await s.initialize()
            return await fn(s)


def payload(result: Any) -> Any:
    """A tool's structured result (lists come wrapped as {"result": [...]})."""
    assert not result.is_error, result.content
    data = result.structured_content
    assert data is not None
    return data["result"] if set(data) == {"result"} else data


def error_text(result: Any) -> str:
    """The text of a tool error (the call must have failed)."""
    assert result.is_error, result.content
    return str(result.content[0].text)
