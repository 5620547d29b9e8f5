"""contextos: manage an LLM's context window the way an operating system manages memory.

The public API, in the order of one call:

- :class:`Memory` — long-term memory (add, search, get, get_all, update, delete,
  history, forget) on SQLite or PostgreSQL.
- :class:`Session` — a durable turn log with compaction and window assembly.
- :func:`wrap` — contextos inside the official Anthropic/OpenAI SDK clients.
- :func:`get_model`, :func:`count_tokens` — the model registry and offline counting.
"""

from __future__ import annotations

from contextos.engine.session import Session
from contextos.engine.window import Window
from contextos.llm.models import ModelInfo, Prices, get_model
from contextos.llm.tokens import Tokenizer, count_tokens, default_tokenizer

from .errors import (
    AuthError,
    BudgetError,
    ConfigError,
    ContextosError,
    MissingExtraError,
    NotFound,
    ProviderError,
    ProviderHTTPError,
    RateLimited,
    ScopeError,
    StoreError,
)
from .memory import Memory, RetrievalConfig
from .providers import wrap
from .store import Store, open_store
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

__version__ = "0.1.0"

__all__ = [
    "AuthError",
    "BudgetError",
    "ConfigError",
    "ContextosError",
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
