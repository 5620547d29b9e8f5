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
model as a tool result with ``is_error: true``. A command that failed (the store
down, the file erased meanwhile) raises one too, with a fixed text (:func:`_run`).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

from ..errors import (
    Conflict,
    ContextosError,
    EmbedderUnavailable,
    MissingExtraError,
    NotFound,
    StoreError,
)
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

log = logging.getLogger(__name__)
T = TypeVar("T")
P = ParamSpec("P")


#: What the model reads when the store (or the embedder) failed under a command: the
#: server's text for a 503. The failure's own text names hosts, ports and file paths.
STORE_UNAVAILABLE = "The memory store is busy or unavailable; retry after a moment."
#: What the model reads when a file changed or went away during a command (a write or
#: an erasure outside the tool, which the tool's lock does not keep out).
FILE_CHANGED = (
    "The memory files changed while this command ran (another writer or an erasure); "
    "view them again and retry."
)
#: What the model reads for any other failure of the library (its detail is logged).
COMMAND_FAILED = "The memory command failed; retry it, or view the files again."


def _run(fn: Callable[..., T], *args: Any) -> T:
    """Run one file command; every failure becomes the SDK's ToolError (shown to the model).

    Why all of them: the SDK's runner sends any other exception to the model as its
    ``repr``, and a store's error text names its host, port or file. A refusal keeps
    its text (it is written for the model); a failure gets a fixed text.
    """
    try:
        return fn(*args)
    except MemoryFileError as exc:
        raise ToolError(str(exc)) from exc
    except (StoreError, EmbedderUnavailable) as exc:
        log.warning("memory tool: store unavailable: %s", exc)
        raise ToolError(STORE_UNAVAILABLE) from exc
    except (NotFound, Conflict) as exc:
        raise ToolError(FILE_CHANGED) from exc
    except ContextosError as exc:
        log.error("memory tool: command failed", exc_info=exc)
        raise ToolError(COMMAND_FAILED) from exc


class _ScopedFiles:
    """The constructor both tools share: the :class:`MemoryFiles` of one scope.

    Why a mixin: the SDK has a sync and an async abstract tool with the same
    constructor; it is written here once, and the SDK's class comes next in the MRO.
    """

    def __init__(
        self,
        memory: Memory,
        *,
        user_id: str | None = None,
        agent_id: str | None = None,
        cache_control: BetaCacheControlEphemeralParam | None = None,
    ) -> None:
        # Both SDK base classes take ``cache_control``; ``object`` (mypy's view) does not.
        super().__init__(cache_control=cache_control)  # type: ignore[call-arg]
        self.files = MemoryFiles(memory, user_id=user_id, agent_id=agent_id)


class _FileCommands(_ScopedFiles):
    """Each SDK command as its file operation, written once: the sync tool is these
    methods, the async tool runs each of them in a worker thread."""

    def view(self: _ScopedFiles, command: BetaMemoryTool20250818ViewCommand) -> str:
        return _run(self.files.view, command.path, command.view_range)

    def create(self: _ScopedFiles, command: BetaMemoryTool20250818CreateCommand) -> str:
        return _run(self.files.create, command.path, command.file_text)

    def str_replace(self: _ScopedFiles, command: BetaMemoryTool20250818StrReplaceCommand) -> str:
        return _run(self.files.str_replace, command.path, command.old_str, command.new_str)

    def insert(self: _ScopedFiles, command: BetaMemoryTool20250818InsertCommand) -> str:
        return _run(self.files.insert, command.path, command.insert_line, command.insert_text)

    def delete(self: _ScopedFiles, command: BetaMemoryTool20250818DeleteCommand) -> str:
        return _run(self.files.delete, command.path)

    def rename(self: _ScopedFiles, command: BetaMemoryTool20250818RenameCommand) -> str:
        return _run(self.files.rename, command.old_path, command.new_path)

    def clear_all_memory(self: _ScopedFiles) -> str:
        """Delete every file of this scope."""
        return _run(self.files.clear)


class MemoryTool(_FileCommands, BetaAbstractMemoryTool):
    """The memory tool with its files in ``memory``, scoped to ``user_id``/``agent_id``.

    ``files`` is the :class:`MemoryFiles` behind it (read files, find a file's
    memory id for ``Memory.history``).
    """


def _in_thread(
    command: Callable[Concatenate[_ScopedFiles, P], str],
) -> Callable[Concatenate[_ScopedFiles, P], Coroutine[Any, Any, str]]:
    """A sync file command as the async tool's method: the same command, run in a worker
    thread (the store's I/O must not block the event loop)."""

    async def run(tool: _ScopedFiles, /, *args: P.args, **kwargs: P.kwargs) -> str:
        from anyio.to_thread import run_sync

        return await run_sync(functools.partial(command, tool, *args, **kwargs))

    return run


class AsyncMemoryTool(_ScopedFiles, BetaAsyncAbstractMemoryTool):
    """:class:`MemoryTool` for ``AsyncAnthropic``: the same commands, run in a worker thread."""

    view = _in_thread(_FileCommands.view)
    create = _in_thread(_FileCommands.create)
    str_replace = _in_thread(_FileCommands.str_replace)
    insert = _in_thread(_FileCommands.insert)
    delete = _in_thread(_FileCommands.delete)
    rename = _in_thread(_FileCommands.rename)
    clear_all_memory = _in_thread(_FileCommands.clear_all_memory)


__all__ = ["AsyncMemoryTool", "MemoryTool"]
