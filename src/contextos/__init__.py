"""contextos: manage an LLM's context window the way an operating system manages memory."""

from __future__ import annotations

from .errors import (
    AuthError,
    BudgetError,
    ConfigError,
    ContextosError,
    NotFound,
    ProviderError,
    ProviderHTTPError,
    RateLimited,
    ScopeError,
    StoreError,
)
from .tokens import Tokenizer, count_tokens, default_tokenizer
from .types import Filter, Hit, MemoryRecord, Message, Scope, Turn, Usage

__all__ = [
    "AuthError",
    "BudgetError",
    "ConfigError",
    "ContextosError",
    "Filter",
    "Hit",
    "MemoryRecord",
    "Message",
    "NotFound",
    "ProviderError",
    "ProviderHTTPError",
    "RateLimited",
    "Scope",
    "ScopeError",
    "StoreError",
    "Tokenizer",
    "Turn",
    "Usage",
    "count_tokens",
    "default_tokenizer",
]
