"""Agent-facing memory: memory the model manages itself, on the contextos store.

- :class:`MemoryTool` / :class:`AsyncMemoryTool` — Anthropic's memory tool
  (``memory_20250818``) for the SDK's tool runner, files kept as memories
  (needs the ``anthropic`` extra; imported on first use).
- :class:`CoreMemory` — MemGPT/Letta-style labeled blocks (``persona``,
  ``human``) the model edits, pinned in the cached prefix through a
  :class:`CorePrefix` snapshot.
- :class:`AgentTools` — the five self-editing tools (core append/replace,
  archival insert/search, conversation search) and their executor, used by
  ``wrap(..., memory_tools=True)`` (:class:`ToolLoop`), MCP and HTTP.

See docs/agent.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .core_memory import CoreBlock, CoreMemory, CoreMemoryError, CorePrefix, compaction_point
from .files import MemoryFile, MemoryFiles
from .loop import ToolLoop
from .paths import MemoryFileError, PathRefused
from .tools import AgentTools, ToolOutcome, anthropic_schemas, openai_schemas, scoped_tools

if TYPE_CHECKING:
    from .memory_tool import AsyncMemoryTool, MemoryTool


def __getattr__(name: str) -> Any:
    """The memory-tool classes load the anthropic SDK, so only when asked for."""
    if name in ("MemoryTool", "AsyncMemoryTool"):
        from . import memory_tool

        return getattr(memory_tool, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AgentTools",
    "AsyncMemoryTool",
    "CoreBlock",
    "CoreMemory",
    "CoreMemoryError",
    "CorePrefix",
    "MemoryFile",
    "MemoryFileError",
    "MemoryFiles",
    "MemoryTool",
    "PathRefused",
    "ToolLoop",
    "ToolOutcome",
    "anthropic_schemas",
    "compaction_point",
    "openai_schemas",
    "scoped_tools",
]
