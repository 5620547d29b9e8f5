"""The self-editing memory tools as MCP tool functions (registered by the MCP server).

Each function acts on the tenant the server resolves for the call (from the
API key, never from an argument) and on the user/agent/session given as
arguments, like the server's other tools. Ids and texts are validated as the
HTTP routes validate them (:mod:`contextos.agent.schemas`). A refused call
raises, so the MCP SDK reports it as a tool error with the text the wrappers'
loop shows (after the error's type, as every MCP tool error; its "Error: " left
to the SDK's own prefix); a store failure raises StoreError, which the server
reports without its detail (paths, hosts).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import quoted
from ..server.mcp_results import NO_TURNS
from ..server.schemas import parse
from .core_memory import CoreMemoryError
from .schemas import ToolCallIn, ToolScopeIn
from .tools import _NO_MATCH as NO_MATCH
from .tools import AgentTools, scoped_tools, search_answer


def mcp_functions(memory_of_caller: Callable[[], Any]) -> list[Callable[..., Any]]:
    """The five tools, bound to a function returning the caller's tenant Memory."""

    def run(
        name: str,
        args: dict[str, Any],
        user_id: str | None,
        agent_id: str | None,
        session_id: str | None = None,
    ) -> dict[str, Any]:
        call = parse(
            ToolCallIn, user_id=user_id, agent_id=agent_id, session_id=session_id, arguments=args
        )
        tools: AgentTools = scoped_tools(
            memory_of_caller(),
            user_id=call.user_id,
            agent_id=call.agent_id,
            session_id=call.session_id,
        )
        outcome = tools.execute(name, call.arguments)
        if outcome.is_error:  # "Error: ..." for the model; the MCP SDK says it is one
            raise CoreMemoryError(outcome.text.removeprefix("Error: "))
        return {"tool": name, "result": outcome.text}

    def core_memory_append(
        label: str, content: str, user_id: str | None = None, agent_id: str | None = None
    ) -> dict[str, Any]:
        """Add a line to a core memory block ('human' or 'persona') of a user/agent;
        core memory is pinned in the agent's context."""
        return run("core_memory_append", {"label": label, "content": content}, user_id, agent_id)

    def core_memory_replace(
        label: str,
        old_content: str,
        new_content: str,
        user_id: str | None = None,
        agent_id: str | None = None,
    ) -> dict[str, Any]:
        """Replace exact text in a core memory block (an empty new_content deletes it)."""
        args = {"label": label, "old_content": old_content, "new_content": new_content}
        return run("core_memory_replace", args, user_id, agent_id)

    def archival_memory_insert(
        content: str, user_id: str | None = None, agent_id: str | None = None
    ) -> dict[str, Any]:
        """Store a passage in archival (long-term) memory of a user/agent."""
        return run("archival_memory_insert", {"content": content}, user_id, agent_id)

    def archival_memory_search(
        query: str, user_id: str | None = None, agent_id: str | None = None
    ) -> dict[str, Any]:
        """Search a user's/agent's archival memory by meaning."""
        return run("archival_memory_search", {"query": query}, user_id, agent_id)

    def conversation_search(
        query: str, session_id: str, user_id: str | None = None, agent_id: str | None = None
    ) -> dict[str, Any]:
        """Search a session's full log (including turns compacted out of the window).
        A session's turns are logged over HTTP or by the application, not by these tools."""
        found = run("conversation_search", {"query": query}, user_id, agent_id, session_id)
        if found["result"] == search_answer([]) and not _has_turns(memory_of_caller(), session_id):
            hint = f"{NO_MATCH} Session {quoted(session_id)} has no turns: {NO_TURNS}."
            found["result"] = search_answer([hint])
        return found

    def core_memory_view(user_id: str | None = None, agent_id: str | None = None) -> dict[str, Any]:
        """The core memory blocks of a user/agent as the agent should pin them in its
        system prompt (MCP clients assemble their own context)."""
        scope = parse(ToolScopeIn, user_id=user_id, agent_id=agent_id)
        core = scoped_tools(memory_of_caller(), user_id=scope.user_id, agent_id=scope.agent_id).core
        return {"tool": "core_memory_view", "result": core.render()}

    return [
        core_memory_view,
        core_memory_append,
        core_memory_replace,
        archival_memory_insert,
        archival_memory_search,
        conversation_search,
    ]


def _has_turns(memory: Any, session_id: str) -> bool:
    """Whether the caller's session has a turn logged (one turn read)."""
    from ..types import Scope

    return bool(memory.store.turns(Scope(tenant=memory.tenant, session_id=session_id), limit=1))


__all__ = ["mcp_functions"]
