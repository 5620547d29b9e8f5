"""Provider-backed implementations of the :class:`contextos.llm.LLM` seam.

Extraction, reconciliation and summarization call ``complete(system,
messages, json_schema=...)``; these classes answer it with a real model.
With a schema they ask for structured output the way each API offers it
(Anthropic ``output_config.format``, OpenAI ``response_format`` with
``json_schema``); callers still validate the reply, because an
OpenAI-compatible server may ignore the request. Usage of every call is kept
in ``.calls`` (a :class:`~contextos.providers.wrap.UsageLog`), errors are
contextos errors, and retries are the SDK's (``max_retries``).
"""

from __future__ import annotations

import time
from abc import abstractmethod
from collections.abc import Sequence
from typing import Any

from contextos.config import Settings
from contextos.providers.base import CallRecord
from contextos.providers.errors import call_mapped
from contextos.providers.sdk import client_from_settings
from contextos.providers.wrap import UsageLog
from contextos.types import Message, Usage

from .protocol import BaseLLM, LLMCall


def _turns(messages: Sequence[Message]) -> list[dict[str, Any]]:
    return [
        {"role": "assistant" if m.role == "assistant" else "user", "content": m.content}
        for m in messages
        if m.role != "system"
    ]


class _SdkLLM(BaseLLM):
    """What both SDK-backed models share: the client, the model, the output cap, the
    call log; each subclass says how a request goes on its wire and is read back."""

    provider: str

    def __init__(self, client: Any, *, model: str, max_tokens: int | None) -> None:
        self.client = client
        self.model = model
        self.max_tokens = max_tokens
        self.calls = UsageLog()

    def reply(self, call: LLMCall) -> str:
        started = time.perf_counter()
        reply, usage = self._send(call)
        elapsed = time.perf_counter() - started
        self.calls.append(CallRecord(self.provider, self.model, usage, reply, False, elapsed))
        return reply.content

    @abstractmethod
    def _send(self, call: LLMCall) -> tuple[Message, Usage]:
        """Send ``call`` on this provider's wire: the reply message and its token usage."""


class AnthropicLLM(_SdkLLM):
    """``LLM`` over ``anthropic.Anthropic().messages.create``."""

    provider = "anthropic"

    def __init__(
        self, client: Any, *, model: str = "claude-haiku-4-5", max_tokens: int = 2048
    ) -> None:
        super().__init__(client, model=model, max_tokens=max_tokens)

    def _send(self, call: LLMCall) -> tuple[Message, Usage]:
        kwargs: dict[str, Any] = {
            "model": self.model,
            "max_tokens": self.max_tokens,
            "messages": _turns(call.messages),
        }
        if call.system:
            kwargs["system"] = call.system
        if call.json_schema is not None:
            kwargs["output_config"] = {
                "format": {"type": "json_schema", "schema": dict(call.json_schema)}
            }
        from contextos.cache import usage_from_anthropic
        from contextos.providers.anthropic import reply_of

        response = call_mapped(self.provider, self.client.messages.create, **kwargs)
        return reply_of(response), usage_from_anthropic(response.usage)


class OpenAILLM(_SdkLLM):
    """``LLM`` over ``openai.OpenAI().chat.completions.create`` (any compatible server)."""

    provider = "openai"

    def __init__(
        self, client: Any, *, model: str = "gpt-4.1-mini", max_tokens: int | None = 2048
    ) -> None:
        super().__init__(client, model=model, max_tokens=max_tokens)

    def _send(self, call: LLMCall) -> tuple[Message, Usage]:
        system = [{"role": "system", "content": call.system}] if call.system else []
        kwargs: dict[str, Any] = {"model": self.model, "messages": system + _turns(call.messages)}
        if self.max_tokens is not None:
            kwargs["max_tokens"] = self.max_tokens
        if call.json_schema is not None:
            kwargs["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "reply", "schema": dict(call.json_schema)},
            }
        from contextos.cache import usage_from_openai
        from contextos.providers.openai import reply_of

        response = call_mapped(self.provider, self.client.chat.completions.create, **kwargs)
        return reply_of(response), usage_from_openai(response.usage)


def llm_from_settings(settings: Settings, *, model: str | None = None) -> Any:
    """An LLM for the configured key, or None when no provider is configured.

    Anthropic when ``ANTHROPIC_API_KEY`` is set, else OpenAI when
    ``OPENAI_API_KEY`` or ``OPENAI_BASE_URL`` is; None means "stay offline".
    """
    if settings.anthropic_api_key:
        client = client_from_settings("anthropic", settings)
        return AnthropicLLM(client, model=model or settings.model)
    if settings.openai_api_key or settings.openai_base_url:
        return OpenAILLM(client_from_settings("openai", settings), model=model or "gpt-4.1-mini")
    return None
