"""Provider adapters: Anthropic and OpenAI (and OpenAI-compatible servers).

- :func:`wrap` puts contextos in the call path of an SDK client you already use.
- :class:`~contextos.providers.anthropic.AnthropicTokenCounter` counts exactly
  with Anthropic's ``count_tokens`` when a key is configured.
- :mod:`~contextos.providers.errors` maps SDK exceptions to contextos errors.

The SDKs are optional extras and are only imported when a client is wrapped
or a counter is built from a key.

The names below are imported on first use (PEP 562), as ``contextos``'s own are:
``contextos.engine.context`` imports ``providers.base``, and a package that imported
``engine.context`` up front made ``from contextos.engine.context import
SessionContext``, run first in a process, fail on the circular import.
"""

from __future__ import annotations

import importlib as _importlib
from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

if _TYPE_CHECKING:
    from contextos.engine.context import ContextSource, SessionContext

    from .anthropic import AnthropicTokenCounter
    from .base import CallRecord, ChatRequest, EditReport, Prepared
    from .wrapper import UsageLog, WrappedClient, wrap

#: Where each public name lives.
_PUBLIC: dict[str, str] = {
    **dict.fromkeys(["ContextSource", "SessionContext"], "contextos.engine.context"),
    "AnthropicTokenCounter": "contextos.providers.anthropic",
    **dict.fromkeys(
        ["CallRecord", "ChatRequest", "EditReport", "Prepared"], "contextos.providers.base"
    ),
    **dict.fromkeys(["UsageLog", "WrappedClient", "wrap"], "contextos.providers.wrapper"),
}


def __getattr__(name: str) -> _Any:
    """A public name, imported from its module on first use (then kept here)."""
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'contextos.providers' has no attribute {name!r}")
    value = getattr(_importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC})


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
