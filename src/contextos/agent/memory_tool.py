"""Anthropic's memory tool (``memory_20250818``) backed by the contextos store.

    >>> import anthropic                                                    # doctest: +SKIP
    >>> from contextos import Memory
    >>> from contextos.agent import MemoryTool
    >>> tool = MemoryTool(Memory("memory.db"), user_id="ana")               # doctest: +SKIP
    >>> anthropic.Anthropic().beta.messages.tool_runner(                      # doctest: +SKIP
    ...     model="claude-sonnet-4-6", max_tokens=1024, tools=[tool],
    ...     messages=[{"role": "user", "content": "Remember I like coffee"}]).until_done()

The classes subclass the SDK's ``BetaAbstractMemoryTool`` (and its async
twin), so the SDK's tool runner dispatches to them; the commands themselves
are :class:`~contextos.agent.files.MemoryFiles`, shared by both. A refused
command raises the SDK's ``ToolError``: the runner sends its text back to the
model as a tool result with ``is_error: true``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import MissingExtraError
from .files import MemoryFiles
from .paths import MemoryFileError

if TYPE_CHECKING:
    from ..memory import Memory

try:
    from anthropic.lib.tools import (
        BetaAbstractMemoryTool,
        BetaAsyncAbstractMemoryTool,
        ToolError,
    )
    from anthropic.types.beta import (
        BetaCacheControlEphemeralParam,
        BetaMemoryTool20250818CreateCommand,
        BetaMemoryTool20250818DeleteCommand,
        BetaMemoryTool20250818InsertCommand,
        BetaMemoryTool20250818RenameCommand,
        BetaMemoryTool20250818StrReplaceCommand,
        BetaMemoryTool20250818ViewCommand,
    )
except ImportError as exc:  # pragma: no cover - the anthropic extra is missing
    raise MissingExtraError("anthropic", "anthropic") from exc

T = TypeVar("T")


def _run(fn: Callable[..., T], *args: Any) -> T:
    """Run one file command; its refusal becomes the SDK's ToolError (shown to the model)."""
    try:
        return fn(*args)
    except MemoryFileError as exc:
        raise ToolError(str(exc)) from exc


class MemoryTool(BetaAbstractMemoryTool):
    """The memory tool with its files in ``memory``, scoped to ``user_id``/``agent_id``.

    ``files`` is the :class:`MemoryFiles` behind it (read files, find a file's
    memory id for ``Memory.history``).
    """

    def __init__(
        self,
        memory: Memory,
        *,
        user_id: str | None = None,
        agent_id: str | None = None,
        cache_control: BetaCacheControlEphemeralParam | None = None,
    ) -> None:
        super().__init__(cache_control=cache_control)
        self.files = MemoryFiles(memory, user_id=user_id, agent_id=agent_id)

    def view(self, command: BetaMemoryTool20250818ViewCommand) -> str:
        return _run(self.files.view, command.path, command.view_range)

    def create(self, command: BetaMemoryTool20250818CreateCommand) -> str:
        return _run(self.files.create, command.path, command.file_text)

    def str_replace(self, command: BetaMemoryTool20250818StrReplaceCommand) -> str:
        return _run(self.files.str_replace, command.path, command.old_str, command.new_str)

    def insert(self, command: BetaMemoryTool20250818InsertCommand) -> str:
        return _run(self.files.insert, command.path, command.insert_line, command.insert_text)

    def delete(self, command: BetaMemoryTool20250818DeleteCommand) -> str:
        return _run(self.files.delete, command.path)

    def rename(self, command: BetaMemoryTool20250818RenameCommand) -> str:
        return _run(self.files.rename, command.old_path, command.new_path)

    def clear_all_memory(self) -> str:
        """Delete every file of this scope."""
        return _run(self.files.clear)


class AsyncMemoryTool(BetaAsyncAbstractMemoryTool):
    """:class:`MemoryTool` for ``AsyncAnthropic``: the same commands, run in a worker thread.

    Each command is the sync tool's, so the command-to-file mapping and its
    errors are written once.
    """

    def __init__(
        self,
        memory: Memory,
        *,
        user_id: str | None = None,
        agent_id: str | None = None,
        cache_control: BetaCacheControlEphemeralParam | None = None,
    ) -> None:
        super().__init__(cache_control=cache_control)
        self._sync = MemoryTool(memory, user_id=user_id, agent_id=agent_id)
        self.files = self._sync.files

    async def _call(self, fn: Callable[..., str], *args: Any) -> str:
        from anyio.to_thread import run_sync

        return await run_sync(fn, *args)

    async def view(self, command: BetaMemoryTool20250818ViewCommand) -> str:
        return await self._call(self._sync.view, command)

    async def create(self, command: BetaMemoryTool20250818CreateCommand) -> str:
        return await self._call(self._sync.create, command)

    async def str_replace(self, command: BetaMemoryTool20250818StrReplaceCommand) -> str:
        return await self._call(self._sync.str_replace, command)

    async def insert(self, command: BetaMemoryTool20250818InsertCommand) -> str:
        return await self._call(self._sync.insert, command)

    async def delete(self, command: BetaMemoryTool20250818DeleteCommand) -> str:
        return await self._call(self._sync.delete, command)

    async def rename(self, command: BetaMemoryTool20250818RenameCommand) -> str:
        return await self._call(self._sync.rename, command)

    async def clear_all_memory(self) -> str:
        """Delete every file of this scope."""
        return await self._call(self._sync.clear_all_memory)


__all__ = ["AsyncMemoryTool", "MemoryTool"]
