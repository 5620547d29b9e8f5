"""Provider-backed implementations of the :class:`contextos.llm.LLM` seam.

Extraction and reconciliation (:class:`~contextos.memory.extract_llm.LLMExtractor`,
:class:`~contextos.memory.reconcile.LLMReconciler`) call ``complete(system,
messages, json_schema=...)``; these classes answer it with a real model. (No LLM
summarizer is shipped: compaction summarizes with the offline extractive
summarizer.) With a schema they ask for structured output the way each API offers
it (Anthropic ``output_config.format``, OpenAI ``response_format`` with
``json_schema``); callers still validate the reply, because an OpenAI-compatible
server may ignore the request. A reply the model stopped at its output limit
raises :class:`~contextos.errors.ReplyTruncated`. Usage of every call is kept in
``.calls`` (a :class:`~contextos.providers.wrapper.UsageLog`), errors are contextos
errors, and retries are the SDK's (``max_retries``).
"""

from __future__ import annotations

import time
from abc import abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Self

from contextos.config import Settings
from contextos.errors import ProviderError, ReplyTruncated
from contextos.providers.base import CallRecord
from contextos.providers.errors import call_mapped
from contextos.providers.sdk import client_from_settings
from contextos.providers.wrapper import UsageLog
from contextos.types import Message, Usage

from .protocol import BaseLLM, LLMCall

#: Seconds the clients :func:`llm_from_settings` builds wait for a reply, per attempt
#: (the SDKs' own default is 600). Why 60: a reply at the clients' 2,048-token output
#: cap takes about 50 s at 40 tokens/s, slower than the hosted models these clients
#: default to; a provider that accepts the connection and never answers then blocks a
#: call for about 3 minutes (the SDK's 2 retries included) instead of 30. A slow
#: self-hosted server: pass ``timeout=`` (or build your own client, which keeps its own).
#: It is the SDKs' (httpx's) timeout: for connecting, and for each wait between bytes of
#: the answer, not for the whole answer, so a provider or proxy that trickles its body a
#: byte at a time is not cut off by it (a review saw 15 s with ``timeout=1``).
LLM_TIMEOUT_S = 60.0

#: The model of an :class:`OpenAILLM` when none is given (nor ``CONTEXTOS_MODEL``).
DEFAULT_OPENAI_MODEL = "gpt-4.1-mini"

#: The stop reasons that mean the reply was cut (Anthropic ``stop_reason``, OpenAI
#: ``finish_reason``): the output cap, or the context window filled while writing.
CUT_REASONS = frozenset({"max_tokens", "model_context_window_exceeded", "length"})


def _turns(messages: Sequence[Message]) -> list[dict[str, Any]]:
    return [
        {"role": "assistant" if m.role == "assistant" else "user", "content": m.content}
        for m in messages
        if m.role != "system"
    ]


def _reply_object(provider: str, api: str, response: Any) -> Any:
    """``response`` if it is the SDK's object for an ``api`` reply; else ProviderError.

    Why: the SDKs return a 200 body that is not a JSON object as it is, not as their
    reply object: an HTML page (a wrong ``base_url``, a proxy's or captive portal's page)
    as a str, JSON of another type as a list or a str. Read as a reply, it raised
    ``AttributeError: 'str' object has no attribute 'usage'`` out of ``Memory.add``,
    where every other failed call is a ProviderError, which the extractor and the
    reconciler raise as documented (a review, s36). The SDKs' reply objects always have
    a ``usage`` attribute (None when the body had none), so that is what is checked."""
    if not hasattr(response, "usage"):
        kind = "text" if isinstance(response, str) else f"a {type(response).__name__}"
        raise ProviderError(
            f"{provider}: the answer (HTTP 200) is {kind}, not a {api} object: check "
            "base_url (it may point at a web page or a proxy, not at the API)"
        )
    return response


def _no_answer(exc: ProviderError) -> bool:
    """Whether ``exc`` says no answer came at all: the SDK's ``APIConnectionError`` (its
    timeout included) is its cause."""
    cause = exc.__cause__
    return cause is not None and any(
        cls.__name__ == "APIConnectionError" for cls in type(cause).__mro__
    )


@contextmanager
def naming_server(base_url: object) -> Iterator[None]:
    """Inside the block, a ProviderError for a call that got no answer at all says which
    server was tried (``base_url``; None: left as it is).

    Why: ``OPENAI_BASE_URL=http://127.0.0.1:9/v1`` (a local server not started, a typo)
    gave ``openai: ConnectError: Connection error.``, which names neither the URL nor the
    setting to check (a review)."""
    try:
        yield
    except ProviderError as exc:
        if base_url is None or type(exc) is not ProviderError or not _no_answer(exc):
            raise
        raise ProviderError(
            f"{exc} (tried {base_url}: check OPENAI_BASE_URL or the base URL given)"
        ) from exc


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
        """The model's reply; ReplyTruncated when it stopped at its output limit.

        Why raise: a cut reply is often still valid JSON up to a point, or a shorter list
        (of facts, of decisions) that reads as a complete one; taken as an answer it loses
        what was cut without a word. The call is logged in ``.calls`` first: it was paid.
        """
        started = time.perf_counter()
        reply, usage, stop = self._send(call)
        elapsed = time.perf_counter() - started
        self.calls.append(CallRecord(self.provider, self.model, usage, reply, False, elapsed))
        if isinstance(stop, str) and stop in CUT_REASONS:  # a server may send anything
            raise ReplyTruncated(
                f"{self.provider} model {self.model} stopped its reply at its output limit "
                f"(stop reason {stop!r}, max_tokens {self.max_tokens}, "
                f"{usage.output_tokens} output tokens): the reply is cut"
            )
        return reply.content

    def close(self) -> None:
        """Close the SDK client (the one given, or the one :func:`llm_from_settings`
        built) and its connections. Also ``with llm_from_settings(...) as llm:``.

        Why: an SDK client holds its sockets in a reference cycle, so one never closed
        stays open until a garbage collection finds it, at some later point."""
        self.client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @abstractmethod
    def _send(self, call: LLMCall) -> tuple[Message, Usage, str | None]:
        """Send ``call`` on this provider's wire: the reply message, its token usage and
        why the model stopped (the provider's stop or finish reason)."""


class AnthropicLLM(_SdkLLM):
    """``LLM`` over ``anthropic.Anthropic().messages.create``."""

    provider = "anthropic"

    def __init__(
        self, client: Any, *, model: str = "claude-haiku-4-5", max_tokens: int = 2048
    ) -> None:
        super().__init__(client, model=model, max_tokens=max_tokens)

    def _send(self, call: LLMCall) -> tuple[Message, Usage, str | None]:
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
        response = _reply_object(self.provider, "Messages API", response)
        stop = getattr(response, "stop_reason", None)
        return reply_of(response), usage_from_anthropic(response.usage), stop


class OpenAILLM(_SdkLLM):
    """``LLM`` over ``openai.OpenAI().chat.completions.create`` (any compatible server)."""

    provider = "openai"

    def __init__(
        self, client: Any, *, model: str = DEFAULT_OPENAI_MODEL, max_tokens: int | None = 2048
    ) -> None:
        super().__init__(client, model=model, max_tokens=max_tokens)

    def _send(self, call: LLMCall) -> tuple[Message, Usage, str | None]:
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

        with naming_server(getattr(self.client, "base_url", None)):
            response = call_mapped(self.provider, self.client.chat.completions.create, **kwargs)
        response = _reply_object(self.provider, "Chat Completions", response)
        choices = getattr(response, "choices", None)
        first = choices[0] if isinstance(choices, list) and choices else None  # as reply_of
        stop = getattr(first, "finish_reason", None)
        return reply_of(response), usage_from_openai(response.usage), stop


def llm_from_settings(
    settings: Settings, *, model: str | None = None, timeout: float = LLM_TIMEOUT_S
) -> Any:
    """An LLM for the configured key, or None when no provider is configured.

    Anthropic when ``ANTHROPIC_API_KEY`` is set, else OpenAI when
    ``OPENAI_API_KEY`` or ``OPENAI_BASE_URL`` is; None means "stay offline". The model:
    ``model``, else ``CONTEXTOS_MODEL`` (``settings.model``), else the provider's default
    (:data:`DEFAULT_OPENAI_MODEL` for OpenAI: ``settings.model`` left at its default
    names an Anthropic model). Why OpenAI reads it too: ``OPENAI_BASE_URL`` at a local
    server with ``CONTEXTOS_MODEL=llama3`` sent ``gpt-4.1-mini`` to it (a review). The
    client waits ``timeout`` seconds for a reply to begin, and between its bytes, per
    attempt (:data:`LLM_TIMEOUT_S`; the SDK's 2 retries stay). An ``AnthropicLLM`` /
    ``OpenAILLM`` built on your own client keeps that client's timeout.
    """
    if settings.anthropic_api_key:
        client = client_from_settings("anthropic", settings).with_options(timeout=timeout)
        return AnthropicLLM(client, model=model or settings.model)
    if settings.openai_api_key or settings.openai_base_url:
        client = client_from_settings("openai", settings).with_options(timeout=timeout)
        chosen = settings.model if settings.model != Settings.model else DEFAULT_OPENAI_MODEL
        return OpenAILLM(client, model=model or chosen)
    return None
