"""The Provider seam: what a wrapper needs from each LLM vendor's wire format.

A provider adapter does four things for :func:`contextos.providers.wrap`:
parse the SDK call's keyword arguments into a provider-neutral
:class:`ChatRequest`, render an assembled :class:`~contextos.engine.window.Window`
back into that SDK's keyword arguments (with cache breakpoints where the
vendor has them), and read the :class:`~contextos.types.Usage` and reply out
of a response or a stream. The adapters are pure; only the SDK client they
are handed touches the network.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from contextos.engine.window import Window
from contextos.llm.models import ModelInfo

from ..types import Message, Usage

#: Metadata key under which a caller's original wire message rides along a
#: neutral Message, so the adapter can send the caller's own bytes back.
WIRE_KEY = "wire"


@dataclass(frozen=True)
class ChatRequest:
    """A chat call in provider-neutral form, as the caller made it.

    ``messages`` mirror the caller's messages (text only, the original wire
    dict kept in ``metadata["wire"]``); ``system`` is the caller's system
    prompt as text parts; ``tools`` the caller's tool schemas in neutral form
    (name, description, input_schema or parameters) -- empty when any tool
    cannot be expressed that way (server tools, strict mode), in which case
    the caller's tools travel verbatim outside the window.
    """

    model: str
    system: tuple[str, ...] = ()
    messages: tuple[Message, ...] = ()
    tools: tuple[Mapping[str, Any], ...] = ()
    stream: bool = False

    def last_user_text(self) -> str:
        """The text of the last user message ('' when there is none)."""
        for message in reversed(self.messages):
            if message.role == "user" and message.content.strip():
                return message.content
        return ""


@dataclass(frozen=True)
class Prepared:
    """The assembly step's output: the window, the model it is for, what is new in it.

    ``question`` is the caller's final user message (with its wire form), sent
    last; ``logged`` the messages appended to the session log for this call.
    """

    window: Window
    model: ModelInfo
    question: Message | None = None
    logged: tuple[Message, ...] = ()


@dataclass(frozen=True)
class CallRecord:
    """One wrapped call, as recorded: what it cost and what came back.

    ``prefix_hash`` fingerprints the request bytes up to the last cache
    breakpoint (empty when the call had none): equal hashes on consecutive
    calls are what lets the provider serve the prefix from its cache.
    """

    provider: str
    model: str
    usage: Usage
    reply: Message | None
    stream: bool
    seconds: float
    prefix_hash: str = ""
    new_messages: tuple[Message, ...] = ()
    request_id: str | None = None
    complete: bool = True
    extra: Mapping[str, Any] = field(default_factory=dict)


class StreamAccumulator(Protocol):
    """Collects the reply text and usage from a provider's stream events."""

    def feed(self, event: Any) -> None:
        """Take one SDK stream event."""
        ...

    def usage(self) -> Usage:
        """Usage as known so far (complete once the stream ended)."""
        ...

    def reply(self) -> Message:
        """The assistant's reply as streamed so far."""
        ...


class ProviderAdapter(Protocol):
    """Parses, renders and reads one vendor's chat wire format (pure)."""

    name: str

    def parse(self, kwargs: Mapping[str, Any]) -> ChatRequest:
        """The neutral request of an SDK call's keyword arguments."""
        ...

    def render(self, prepared: Prepared, kwargs: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
        """SDK keyword arguments for the prepared window (the caller's other arguments
        kept), and the fingerprint of the cached prefix."""
        ...

    def usage(self, response: Any) -> Usage:
        """Usage of a complete (non-streamed) response."""
        ...

    def reply(self, response: Any) -> Message:
        """The assistant message of a complete response."""
        ...

    def accumulator(self) -> StreamAccumulator:
        """A fresh accumulator for one stream."""
        ...


def neutral_usage_total(usage: Usage) -> int:
    """All input tokens of a call, cached or not (``Usage.input_tokens`` excludes the cache)."""
    return usage.input_tokens + usage.cache_creation_input_tokens + usage.cache_read_input_tokens


def texts(messages: Sequence[Message]) -> list[str]:
    """The contents of ``messages`` (convenience for logs and tests)."""
    return [m.content for m in messages]
