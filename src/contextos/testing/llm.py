"""ScriptedLLM: an ``LLM`` that replies from a script and records every call; and
:func:`turns_in`, the turns an extraction prompt sent, for a scripted model to read."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence

from ..errors import ProviderError
from ..llm.protocol import BaseLLM, LLMCall
from ..types import Message

Reply = str | Callable[[str, Sequence[Message]], str]

__all__ = ["LLMCall", "Reply", "ScriptedLLM", "turns_in"]

#: A turn line of an ``extract@1`` prompt: ``[id] speaker: text``.
_V1_LINE = re.compile(r"^\[([^\]]+)\] ([^:]+): (.*)$")


def turns_in(prompt: str) -> list[tuple[str, str, str]]:
    """(id, speaker, text) of each turn line of an extraction prompt: an ``extract@2``
    JSON object (``{"id", "speaker", "text"}``) or an ``extract@1`` ``[id] speaker: text``
    line; other lines are skipped. What a deterministic model double reads."""
    out: list[tuple[str, str, str]] = []
    for line in prompt.splitlines():
        if line.startswith('{"id": '):
            turn = json.loads(line)
            out.append((turn["id"], turn["speaker"], turn["text"]))
        elif (found := _V1_LINE.match(line)) is not None:
            out.append((found.group(1), found.group(2), found.group(3)))
    return out


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
