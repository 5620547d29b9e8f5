"""ScriptedLLM: an ``LLM`` that replies from a script and records every call."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..errors import ProviderError
from ..llm.protocol import BaseLLM, LLMCall
from ..types import Message

Reply = str | Callable[[str, Sequence[Message]], str]

__all__ = ["LLMCall", "Reply", "ScriptedLLM"]


class ScriptedLLM(BaseLLM):
    """Returns the scripted replies in order; a callable reply is called with (system, messages).

    Running out of replies raises :class:`~contextos.errors.ProviderError`, so a
    test that makes an unexpected extra call fails loudly.
    """

    def __init__(self, replies: Sequence[Reply]) -> None:
        self._replies = list(replies)
        self.calls: list[LLMCall] = []

    def reply(self, call: LLMCall) -> str:
        """The next scripted reply (a callable one is called with system and messages)."""
        self.calls.append(call)
        if len(self.calls) > len(self._replies):
            raise ProviderError(f"ScriptedLLM has only {len(self._replies)} scripted replies")
        reply = self._replies[len(self.calls) - 1]
        return reply(call.system, call.messages) if callable(reply) else reply

    @property
    def remaining(self) -> int:
        """Replies not used yet."""
        return max(0, len(self._replies) - len(self.calls))
