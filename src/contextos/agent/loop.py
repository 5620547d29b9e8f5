"""The tool loop behind ``wrap(client, ..., memory_tools=True)``.

Each ``create`` call gets the memory tools added to ``tools`` and the
core-memory snapshot added to the system prompt (where it is part of the
cached prefix), then: send, run every memory tool the model called, send the
results back, until the model answers (or calls a tool that is not ours: that
response is the caller's to handle). Every request goes through the wrapped
client's normal path, so each one is assembled, logged in the session and
recorded in ``client.calls`` with its usage.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..errors import ProviderError
from ..types import Message
from .core_memory import CorePrefix, compaction_point
from .tools import TOOL_NAMES, AgentTools, ToolOutcome, anthropic_schemas, openai_schemas

#: Most model calls one ``create`` may make before giving up on a looping model.
MAX_STEPS = 8


class ToolLoop:
    """Runs the memory tools for a wrapped client of ``provider`` ("anthropic"/"openai")."""

    def __init__(
        self,
        tools: AgentTools,
        provider: str,
        *,
        prefix: CorePrefix | None = None,
        max_steps: int = MAX_STEPS,
    ) -> None:
        if provider not in ("anthropic", "openai"):
            raise ValueError(f"no tool loop for provider {provider!r}")
        self.tools = tools
        self.provider = provider
        self.prefix = prefix or CorePrefix(tools.core)
        tools.prefix = self.prefix
        self.max_steps = max_steps
        #: Every tool call run, in order (name, arguments JSON, outcome).
        self.executed: list[tuple[str, str, ToolOutcome]] = []

    def create(
        self, send: Callable[[dict[str, Any]], Any], reply: Callable[[Any], Message], **kwargs: Any
    ) -> Any:
        """Send ``kwargs`` with the memory tools, running them until the model answers."""
        if kwargs.get("stream"):
            raise TypeError("memory_tools runs a tool loop; call create() without stream=True")
        request = self._with_memory(kwargs)
        messages = list(request["messages"])
        for _ in range(self.max_steps):
            response = send({**request, "messages": messages})
            calls = reply(response).tool_calls
            if not calls or any(c.name not in TOOL_NAMES for c in calls):
                return response
            outcomes = []
            for c in calls:
                outcome = self.tools.execute(c.name, c.arguments)
                self.executed.append((c.name, c.arguments, outcome))
                outcomes.append((c.id, outcome))
            messages += self._followup(response, outcomes)
        raise ProviderError(f"the model was still calling tools after {self.max_steps} requests")

    def _with_memory(self, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        core = self.prefix.text(compaction_point(self.tools.session))
        out = dict(kwargs)
        if self.provider == "anthropic":
            system = kwargs.get("system") or []
            blocks = [{"type": "text", "text": system}] if isinstance(system, str) else list(system)
            out["system"] = [*blocks, {"type": "text", "text": core}]
            out["tools"] = [*(kwargs.get("tools") or []), *anthropic_schemas()]
        else:
            messages = list(kwargs.get("messages") or [])
            head = 0
            while head < len(messages) and messages[head].get("role") in ("system", "developer"):
                head += 1
            role = messages[0]["role"] if head else "system"
            messages.insert(head, {"role": role, "content": core})
            out["messages"] = messages
            out["tools"] = [*(kwargs.get("tools") or []), *openai_schemas()]
        return out

    def _followup(self, response: Any, outcomes: list[tuple[str, ToolOutcome]]) -> list[Any]:
        """The assistant's tool-call message and the results, in the provider's wire form."""
        if self.provider == "anthropic":
            content = [b.model_dump(exclude_none=True) for b in response.content]
            results = [
                {"type": "tool_result", "tool_use_id": cid, "content": o.text}
                | ({"is_error": True} if o.is_error else {})
                for cid, o in outcomes
            ]
            return [
                {"role": "assistant", "content": content},
                {"role": "user", "content": results},
            ]
        message = response.choices[0].message
        calls = [
            {
                "id": c.id,
                "type": "function",
                "function": {"name": c.function.name, "arguments": c.function.arguments},
            }
            for c in message.tool_calls or []
        ]
        return [
            {"role": "assistant", "content": message.content, "tool_calls": calls},
            *({"role": "tool", "tool_call_id": cid, "content": o.text} for cid, o in outcomes),
        ]


def tool_loop_for_wrap(
    option: Any,
    provider: str,
    *,
    memory: Any,
    context: Any,
    user_id: str | None,
    agent_id: str | None,
) -> ToolLoop:
    """The loop ``wrap(memory_tools=...)`` asks for: True builds one, a ToolLoop is used as is."""
    if isinstance(option, ToolLoop):
        return option
    if option is not True:
        raise TypeError("memory_tools must be True, False or a contextos.agent.ToolLoop")
    if memory is None:
        raise TypeError("memory_tools=True needs memory= (core and archival memory live there)")
    from .core_memory import CoreMemory

    session = getattr(context, "session", None)
    core = CoreMemory(
        memory,
        user_id=user_id or getattr(context, "user_id", None),
        agent_id=agent_id or getattr(context, "agent_id", None),
    )
    return ToolLoop(AgentTools(core, session=session), provider)


__all__ = ["MAX_STEPS", "ToolLoop", "tool_loop_for_wrap"]
