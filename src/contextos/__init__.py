"""contextos: manage an LLM's context window the way an operating system manages memory.

The public API, in the order of one call:

- :class:`Memory` — long-term memory (add, search, get, get_all, update, delete,
  history, forget) on SQLite or PostgreSQL.
- :class:`Session` — a durable turn log with compaction and window assembly.
- :func:`wrap` — contextos inside the official Anthropic/OpenAI SDK clients.
- :func:`get_model`, :func:`count_tokens` — the model registry and offline counting.
"""

from __future__ import annotations

import importlib as _importlib
from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

if _TYPE_CHECKING:
    from contextos.engine.session import Session
    from contextos.engine.window import Window
    from contextos.llm.models import ModelInfo, Prices, get_model
    from contextos.llm.tokens import Tokenizer, count_tokens, default_tokenizer

    from .errors import (
        AuthError,
        BudgetError,
        ConfigError,
        Conflict,
        ContextosError,
        EmbedderOutputError,
        EmbedderSetupError,
        EmbedderUnavailable,
        MissingExtraError,
        NotFound,
        ProviderError,
        ProviderHTTPError,
        RateLimited,
        ReplyTruncated,
        ScopeError,
        StoreError,
    )
    from .memory import Memory, RetrievalConfig
    from .providers import wrap
    from .store import Store, open_store
    from .store.base import ErasurePending
    from .types import (
        Filter,
        HistoryEvent,
        Hit,
        MemoryRecord,
        Message,
        Scope,
        ToolCall,
        Turn,
        Usage,
    )

#: Where each public name lives. The package imports none of them up front (PEP 562):
#: ``import contextos`` took ~0.2 s (numpy, the memory core, the engine) before any
#: code of the caller ran, and a console script's Ctrl-C in that time printed a
#: traceback. ``from contextos import Memory`` imports what Memory needs, once.
_PUBLIC: dict[str, str] = {
    **dict.fromkeys(["Session"], "contextos.engine.session"),
    **dict.fromkeys(["Window"], "contextos.engine.window"),
    **dict.fromkeys(["ModelInfo", "Prices", "get_model"], "contextos.llm.models"),
    **dict.fromkeys(["Tokenizer", "count_tokens", "default_tokenizer"], "contextos.llm.tokens"),
    **dict.fromkeys(
        [
            "AuthError",
            "BudgetError",
            "ConfigError",
            "Conflict",
            "ContextosError",
            "EmbedderOutputError",
            "EmbedderSetupError",
            "EmbedderUnavailable",
            "MissingExtraError",
            "NotFound",
            "ProviderError",
            "ProviderHTTPError",
            "RateLimited",
            "ReplyTruncated",
            "ScopeError",
            "StoreError",
        ],
        "contextos.errors",
    ),
    **dict.fromkeys(["Memory", "RetrievalConfig"], "contextos.memory"),
    **dict.fromkeys(["wrap"], "contextos.providers"),
    **dict.fromkeys(["Store", "open_store"], "contextos.store"),
    **dict.fromkeys(["ErasurePending"], "contextos.store.base"),
    **dict.fromkeys(
        [
            "Filter",
            "HistoryEvent",
            "Hit",
            "MemoryRecord",
            "Message",
            "Scope",
            "ToolCall",
            "Turn",
            "Usage",
        ],
        "contextos.types",
    ),
}


def __getattr__(name: str) -> _Any:
    """A public name, imported from its module on first use (then kept here)."""
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'contextos' has no attribute {name!r}")
    value = getattr(_importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC})


__version__ = "0.1.0"

__all__ = [
    "AuthError",
    "BudgetError",
    "ConfigError",
    "Conflict",
    "ContextosError",
    "EmbedderOutputError",
    "EmbedderSetupError",
    "EmbedderUnavailable",
    "ErasurePending",
    "Filter",
    "HistoryEvent",
    "Hit",
    "Memory",
    "MemoryRecord",
    "Message",
    "MissingExtraError",
    "ModelInfo",
    "NotFound",
    "Prices",
    "ProviderError",
    "ProviderHTTPError",
    "RateLimited",
    "ReplyTruncated",
    "RetrievalConfig",
    "Scope",
    "ScopeError",
    "Session",
    "Store",
    "StoreError",
    "Tokenizer",
    "ToolCall",
    "Turn",
    "Usage",
    "Window",
    "__version__",
    "count_tokens",
    "default_tokenizer",
    "get_model",
    "open_store",
    "wrap",
]
