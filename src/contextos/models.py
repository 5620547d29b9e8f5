"""Model registry: context window, output limit, cache minimum and prices.

Prices are US dollars per million tokens. ``cache_write_5m``/``cache_write_1h``
are Anthropic's cache-write prices for the two TTLs (OpenAI writes its cache
for free, so both equal the input price there); ``cache_read`` is the price of
a cached input token. ``min_cache_tokens`` is the shortest prefix the provider
will cache. Each entry names its source; check them when prices change.

Sources (read 2025-11):
- [A-PRICE] https://docs.anthropic.com/en/docs/about-claude/pricing
- [A-MODELS] https://docs.anthropic.com/en/docs/about-claude/models/overview
- [A-CACHE] https://docs.anthropic.com/en/docs/build-with-claude/prompt-caching
- [O-PRICE] https://platform.openai.com/docs/pricing
- [O-MODELS] https://platform.openai.com/docs/models
- [O-CACHE] https://platform.openai.com/docs/guides/prompt-caching
- open models: their model cards on huggingface.co (context length); self-hosted, so price 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .errors import ConfigError

Provider = Literal["anthropic", "openai", "open"]


@dataclass(frozen=True)
class Prices:
    """US dollars per million tokens."""

    input: float
    output: float
    cache_write_5m: float
    cache_write_1h: float
    cache_read: float


@dataclass(frozen=True)
class ModelInfo:
    """What contextos needs to know about a model to budget and price a request."""

    name: str
    provider: Provider
    context_window: int
    max_output_tokens: int
    min_cache_tokens: int
    prices: Prices
    tokenizer: str = "cl100k_base"  # what we count with offline (an estimate for non-OpenAI)

    def input_cost(self, tokens: int) -> float:
        """Dollars for ``tokens`` uncached input tokens."""
        return tokens * self.prices.input / 1_000_000

    def default_output_reserve(self) -> int:
        """Output tokens to keep free in the window when budgeting input."""
        return min(self.max_output_tokens, max(1024, self.context_window // 16))


def _anthropic(name: str, window: int, max_out: int, min_cache: int, inp: float, out: float) -> ModelInfo:
    # Anthropic: cache write 5m = 1.25x input, 1h = 2x input, read = 0.1x input [A-PRICE].
    return ModelInfo(
        name, "anthropic", window, max_out, min_cache,
        Prices(inp, out, round(inp * 1.25, 4), inp * 2, round(inp * 0.1, 4)),
    )


def _openai(name: str, window: int, max_out: int, inp: float, out: float, cached: float) -> ModelInfo:
    # OpenAI: automatic prefix caching from 1,024 tokens, no write surcharge [O-CACHE].
    return ModelInfo(name, "openai", window, max_out, 1024, Prices(inp, out, inp, inp, cached),
                     tokenizer="o200k_base")


def _open(name: str, window: int, max_out: int) -> ModelInfo:
    return ModelInfo(name, "open", window, max_out, 0, Prices(0.0, 0.0, 0.0, 0.0, 0.0))


_MODELS: tuple[ModelInfo, ...] = (
    # Claude 4.x: windows and output limits [A-MODELS]; prices [A-PRICE];
    # minimum cacheable prompt [A-CACHE]: 4,096 for Opus 4.5 and Haiku 4.5, 1,024 for Sonnet/Opus 4/4.1.
    _anthropic("claude-opus-4-5", 200_000, 64_000, 4096, 5.0, 25.0),
    _anthropic("claude-opus-4-1", 200_000, 32_000, 1024, 15.0, 75.0),
    _anthropic("claude-opus-4", 200_000, 32_000, 1024, 15.0, 75.0),
    _anthropic("claude-sonnet-4-5", 200_000, 64_000, 1024, 3.0, 15.0),
    _anthropic("claude-sonnet-4", 200_000, 64_000, 1024, 3.0, 15.0),
    _anthropic("claude-haiku-4-5", 200_000, 64_000, 4096, 1.0, 5.0),
    # GPT-4.1 family: 1,047,576-token window, 32,768 output [O-MODELS]; prices [O-PRICE].
    _openai("gpt-4.1", 1_047_576, 32_768, 2.0, 8.0, 0.5),
    _openai("gpt-4.1-mini", 1_047_576, 32_768, 0.4, 1.6, 0.1),
    _openai("gpt-4.1-nano", 1_047_576, 32_768, 0.1, 0.4, 0.025),
    # GPT-5 family: 400,000-token window, 128,000 output [O-MODELS]; prices [O-PRICE].
    _openai("gpt-5", 400_000, 128_000, 1.25, 10.0, 0.125),
    _openai("gpt-5-mini", 400_000, 128_000, 0.25, 2.0, 0.025),
    _openai("gpt-5-nano", 400_000, 128_000, 0.05, 0.4, 0.005),
    # Open models, self-hosted (price 0): context length from each model card.
    _open("llama-3.1-8b-instruct", 131_072, 8_192),
    _open("llama-3.3-70b-instruct", 131_072, 8_192),
    _open("qwen2.5-7b-instruct", 32_768, 8_192),
    _open("mistral-small-3.1", 131_072, 8_192),
)

MODELS: dict[str, ModelInfo] = {m.name: m for m in _MODELS}

#: Dated snapshot names and common aliases resolved to registry entries.
ALIASES: dict[str, str] = {
    "claude-sonnet-4-5-20250929": "claude-sonnet-4-5",
    "claude-haiku-4-5-20251001": "claude-haiku-4-5",
    "claude-opus-4-5-20251101": "claude-opus-4-5",
    "claude-opus-4-1-20250805": "claude-opus-4-1",
    "claude-sonnet-4-20250514": "claude-sonnet-4",
    "claude-opus-4-20250514": "claude-opus-4",
    "sonnet": "claude-sonnet-4-5",
    "opus": "claude-opus-4-5",
    "haiku": "claude-haiku-4-5",
}


def get_model(name: str) -> ModelInfo:
    """Look a model up by name or alias.

    Raises:
        ConfigError: the model is unknown; the message lists the known names.
    """
    key = ALIASES.get(name, name)
    try:
        return MODELS[key]
    except KeyError:
        known = ", ".join(sorted(MODELS))
        raise ConfigError(f"unknown model {name!r}; known models: {known}") from None
