"""A chat loop's single step, for ``contextos chat``: send one message, see the window.

:class:`Chat` runs every turn through the same path as :func:`wrap` (session
log, memory retrieval, window assembly), against a real provider
(``anthropic``, ``openai`` or any OpenAI-compatible ``base_url``) or
``offline``: no model and no key; the window that would have been sent is
assembled and shown, and the answer is extractive -- the strongest retrieved
memory, quoted.

Long-term memory keeps the facts of what the user said, not the messages: each
user message goes through the extractor (``Memory.add(..., infer=True)``), so
"I'm allergic to peanuts" is remembered as a fact, and "what am I allergic to?"
or "hi" leave nothing behind. Every message is still in the session log.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from contextos.engine.context import MEMORY_HEADER, SessionContext
from contextos.engine.window import Window

from ..config import Settings
from ..types import Message, Usage
from .base import CallRecord, ChatRequest, Prepared
from .sdk import client_from_settings

if TYPE_CHECKING:
    from contextos.memory import Memory
from .wrapper import WrappedClient, failing, wrap

ChatProvider = Literal["offline", "anthropic", "openai"]
DEFAULT_MODELS = {
    "offline": "claude-haiku-4-5",
    "anthropic": "claude-haiku-4-5",
    "openai": "gpt-4.1-mini",
}


@dataclass(frozen=True)
class ChatTurn:
    """What one step produced: the reply, the window sent, usage, what memory held."""

    reply: str
    window: Window | None
    usage: Usage
    memories: tuple[str, ...]


def _memories_of(window: Window) -> tuple[str, ...]:
    return tuple(b.text for b in window.blocks if b.kind == "context" and b.text != MEMORY_HEADER)


class Chat:
    """One conversation: ``send(text)`` per user message. See the module docstring."""

    def __init__(
        self,
        memory: Memory,
        *,
        provider: ChatProvider = "offline",
        session_id: str = "chat",
        user_id: str = "me",
        model: str | None = None,
        system: str = "You are a helpful assistant with a long-term memory.",
        settings: Settings | None = None,
        base_url: str | None = None,
        client: Any = None,
        max_tokens: int = 1024,
    ) -> None:
        self.provider = provider
        self.model = model or DEFAULT_MODELS[provider]
        self.system = system
        self.max_tokens = max_tokens
        self.memory = memory
        # The session log keeps every turn; memory gets the facts of the user's
        # messages, remembered by the commit (so a forget during the call, seconds at
        # a provider, takes them too: a review found the erased message stored back).
        self.context = SessionContext(memory=memory, session=session_id, user_id=user_id)
        self.context.remember_replies = False
        self.context.infer = True
        self._client: WrappedClient | None = None
        self._watch = _Watch(self.context)
        if provider != "offline":
            raw = client or client_from_settings(provider, settings or memory.settings, base_url)
            self._client = wrap(raw, context=self._watch)

    def send(self, text: str) -> ChatTurn:
        """Send one user message; returns the reply and the window it was answered from."""
        if not text.strip():
            raise ValueError("say something")
        return self._offline(text) if self._client is None else self._call(text)

    def _call(self, text: str) -> ChatTurn:
        assert self._client is not None
        if self.provider == "anthropic":
            self._client.messages.create(
                model=self.model,
                max_tokens=self.max_tokens,
                system=self.system,
                messages=[{"role": "user", "content": text}],
            )
        else:
            self._client.chat.completions.create(
                model=self.model,
                max_tokens=self.max_tokens,
                messages=[
                    {"role": "system", "content": self.system},
                    {"role": "user", "content": text},
                ],
            )
        call = self._client.calls[-1]
        window = self._watch.last.window if self._watch.last else None
        return ChatTurn(
            call.reply.content if call.reply else "",
            window,
            call.usage,
            _memories_of(window) if window else (),
        )

    def close(self) -> None:
        """Wait for the last reply to be logged and remembered."""
        self.context.flush()

    def _offline(self, text: str) -> ChatTurn:
        request = ChatRequest(self.model, (self.system,), (Message("user", text),))
        prepared = self.context.prepare(request, reserve_tokens=self.max_tokens)
        # The question is logged (by prepare) and only the commit remembers it: a Ctrl-C
        # or SIGTERM here left it in the log unanswered and never remembered (a review:
        # 1 kill in 6). Remembered all the same, as a failed call's is.
        with failing(self.context, prepared):
            memories = _memories_of(prepared.window)
            reply = (
                f"From memory: {memories[0]}"
                if memories
                else "I don't have anything on that yet; I'll remember what you said."
            )
            usage = Usage(
                input_tokens=prepared.window.total_tokens,
                output_tokens=self.context.tokenizer.count(reply),
            )
            self.context.commit(
                prepared,
                CallRecord("offline", self.model, usage, Message("assistant", reply), False, 0.0),
            )
        return ChatTurn(reply, prepared.window, usage, memories)


class _Watch:
    """A ContextSource that remembers the last prepared window (for display)."""

    def __init__(self, inner: SessionContext) -> None:
        self.inner = inner
        self.last: Prepared | None = None

    def prepare(self, request: ChatRequest, *, reserve_tokens: int) -> Prepared:
        self.last = self.inner.prepare(request, reserve_tokens=reserve_tokens)
        return self.last

    def commit(self, prepared: Prepared, call: CallRecord) -> None:
        self.inner.commit(prepared, call)

    def failed(self, prepared: Prepared) -> None:
        """The call failed before any reply: the question is remembered all the same."""
        self.inner.failed(prepared)
