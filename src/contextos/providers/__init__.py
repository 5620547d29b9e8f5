"""Provider adapters: Anthropic and OpenAI (and OpenAI-compatible servers).

- :func:`wrap` puts contextos in the call path of an SDK client you already use.
- :class:`~contextos.providers.anthropic.AnthropicTokenCounter` counts exactly
  with Anthropic's ``count_tokens`` when a key is configured.
- :mod:`~contextos.providers.errors` maps SDK exceptions to contextos errors.

The SDKs are optional extras and are only imported when a client is wrapped
or a counter is built from a key.
"""

from __future__ import annotations

from contextos.engine.context import ContextSource, SessionContext

from .anthropic import AnthropicTokenCounter
from .base import CallRecord, ChatRequest, EditReport, Prepared
from .wrap import UsageLog, WrappedClient, wrap

__all__ = [
    "AnthropicTokenCounter",
    "CallRecord",
    "ChatRequest",
    "ContextSource",
    "EditReport",
    "Prepared",
    "SessionContext",
    "UsageLog",
    "WrappedClient",
    "wrap",
]
