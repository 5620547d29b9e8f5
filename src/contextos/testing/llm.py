"""ScriptedLLM: an ``LLM`` that replies from a script and records every call."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ProviderError
from ..types import Message

Reply = str | Callable[[str, Sequence[Message]], str]


@dataclass(frozen=True)
class LLMCall:
    """One request the scripted model received."""

    system: str
    messages: tuple[Message, ...]
    json_schema: Mapping[str, Any] | None


class ScriptedLLM:
    """Returns the scripted replies in order; a callable reply is called with (system, messages).

    Running out of replies raises :class:`~contextos.errors.ProviderError`, so a
    test that makes an unexpected extra call fails loudly.
    """

    def __init__(self, replies: Sequence[Reply]) -> None:
        self._replies = list(replies)
        self.calls: list[LLMCall] = []

    def complete(
        self,
        system: str,
        messages: Sequence[Message],
        *,
        json_schema: Mapping[str, Any] | None = None,
    ) -> str:
        self.calls.append(LLMCall(system, tuple(messages), json_schema))
        if len(self.calls) > len(self._replies):
            raise ProviderError(f"ScriptedLLM has only {len(self._replies)} scripted replies")
        reply = self._replies[len(self.calls) - 1]
        return reply(system, messages) if callable(reply) else reply

    @property
    def remaining(self) -> int:
        """Replies not used yet."""
        return max(0, len(self._replies) - len(self.calls))
