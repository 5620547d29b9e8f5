"""Model registry: context window, output limit, cache minimum and prices.

Prices are US dollars per million tokens. ``cache_write_5m``/``cache_write_1h``
are Anthropic's cache-write prices for the two TTLs (OpenAI writes its cache
for free, so both equal the input price there); ``cache_read`` is the price of
a cached input token. ``min_cache_tokens`` is the shortest prefix the provider
will cache. Each entry names its source; check them when prices change.

Sources (read 2025-11, re-read 2026-11-25 where marked *):
- [A-PRICE]* https://platform.claude.com/docs/en/about-claude/pricing
  (Opus 4.5/4.6/4.7/4.8 $5/$25, cache 5m $6.25, 1h $10, read $0.50;
  Opus 4.1/4 $15/$75 "retired, except on Bedrock and Google Cloud")
- [A-MODELS] https://docs.anthropic.com/en/docs/about-claude/models/overview
- [A-OPUS48]* https://platform.claude.com/docs/en/models/opus-4-8/overview (1M, 128K, $5/$25)
  and https://platform.claude.com/docs/en/about-claude/models/whats-new-claude-4-8
  ("lower 1,024-token minimum cacheable prompt length")
- [A-OPUS5]* https://platform.claude.com/docs/en/models/opus-5/overview and its legacy version
  https://platform.claude.com/docs/models/opus-5/overview (read 2026-11-30 through the stored docs:
  Opus 5 1M/128K $5/$25, cache 5m $6.25, 1h $10, read $0.50; lineup: Fable 5.1 and Fable 5
  1M/128K $10/$50, Opus 5.5 1M/128K $4/$20, Sonnet 5.5 and Sonnet 5 1M/128K $2/$10)
- [A-OPUS46]* https://platform.claude.com/docs/en/models/opus-4-6/overview (1M, 128K, $5/$25)
- [A-SONNET46]* https://platform.claude.com/docs/en/models/sonnet-4-6/overview (1M, 128K, $3/$15)
- [A-OPUS45]* https://platform.claude.com/docs/pt-BR/models/opus-4-5/overview (200K, 64K, $5/$25)
- [A-SONNET45]* https://platform.claude.com/docs/zh-CN/models/sonnet-4-5/overview
  (deprecated, "retires on November 30, 2026")
- [B-OPUS47]* https://docs.aws.amazon.com/bedrock/latest/userguide/model-card-anthropic-claude-opus-4-7.md
  (1M window, 128K output; no Anthropic-hosted Opus 4.7 overview page was found)
- [A-CACHE] https://docs.anthropic.com/en/docs/build-with-claude/prompt-caching; its 2026 table
  ("4096 tokens for Claude Opus 4.6, Claude Opus 4.5 / 1024 tokens for Claude Sonnet 4.6, Claude
  Sonnet 4.5, Claude Opus 4.1, Claude Opus 4, Claude Sonnet 4 / 4096 tokens for Claude Haiku 4.5")
  is quoted verbatim in https://github.com/anthropics/anthropic-sdk-python/issues/1194 *
- [A-DEPR]* anthropic SDK 2.14.0 anthropic/_data/deprecated_models.py (Opus 4.5: January 22nd,
  2027; Sonnet 4.5: November 30th, 2026) and
  https://platform.claude.com/docs/en/about-claude/model-deprecations. Retirements of Opus 4 and
  Sonnet 4 (2026-06-15) as reported from Anthropic's release notes by
  https://raw.githubusercontent.com/ottto-ai/ai-provider-watch/main/data/events/2026-06-15-anthropic-sonnet-4-opus-4-retirement.json;
  Opus 4.1 (2026-08-05) from https://github.com/multidotdev/cli/releases/tag/v0.0.135 (third party).
- [A-DEPR3] https://platform.claude.com/docs/en/about-claude/model-deprecations (Claude Sonnet 3.5
  retired 2025-10-22; Sonnet 3.7 and Haiku 3.5 retired 2026-02-19). From that page as read
  2025-11, not re-read since (no network here): ASSUMPTION, tell the lead.
- [O-PRICE] https://platform.openai.com/docs/pricing
- [O-MODELS] https://platform.openai.com/docs/models
- [O-GPT51]* https://developers.openai.com/zh-Hans/api/docs/models/gpt-5.1
  (400,000 window, 128,000 output, $1.25 in / $0.125 cached / $10 out)
- [O-GPT56]* https://developers.openai.com/api/docs/models/gpt-5.6-sol and
  https://developers.openai.com/api/docs/models/gpt-5.6-luna (read 2026-11-30 through the stored
  docs: 1,050,000 window, 128,000 output; Sol $4 / $0.40 cached / $20, Luna $0.20 / $0.02 / $1.20;
  "cache writes are charged at 1.25x the uncached input price"; Terra $2.00 input in the
  comparison); Terra's $12 output: https://vercel.com/ai-gateway/models/gpt-5.6-terra.md and
  https://docs.venice.ai/zh/models/gpt-5-6-terra (third party). Prompts over 272K input tokens
  cost 2x input / 1.5x output: not modelled.
- [O-CACHE]* https://developers.openai.com/docs/guides/prompt-caching ("1024 tokens or longer")
- [O-DEPR]* openai SDK 3.57.0 openai/types/shared/chat_model.py docstring (gpt-4o, gpt-4o-mini,
  gpt-4.1, gpt-4.1-mini: shutdown 2027-01-14), citing
  https://developers.openai.com/api/docs/deprecations (announced shutdown dates).
- [O-LEGACY]* https://developers.openai.com/api/docs/models/gpt-4 (8,192 window, 8,192 output,
  $30/$60), .../gpt-4-turbo and .../gpt-4-turbo-preview (128,000, 4,096, $10/$30),
  .../gpt-3.5-turbo (16,385, 4,096, $0.50/$1.50; "shut down on October 23, 2026"); the
  2026-10-23 shutdown of gpt-4, gpt-4-turbo, gpt-4o-2024-05-13, o1, o3-mini and o4-mini as
  listed from the deprecations page by https://dev.to/importstatic (third party, 2026-10-15).
- open models: their model cards on huggingface.co (context length); self-hosted, so price 0.

ASSUMPTION (tell the lead): no official number was found for Opus 4.7's minimum cacheable
prompt. Third-party pages disagree (4,096: docs.litellm.ai prompt_caching, claudecodeguides.com,
clawdemy.org, startdebugging.net 2026-06 "verified against the prompt caching docs"; 2,048:
dev.to/creeta). We use 4,096, the larger: too high a minimum only skips a breakpoint that would
have cached, too low a one places a breakpoint that silently caches nothing.

Sonnet 4.6 (re-checked 2026-11-30): the official table as quoted in anthropic-sdk-python issue
1194, claudecodeguides.com's 2026 table and startdebugging.net (2026-06) give 1,024; docs.orq.ai's
proxy table gives 2,048, and that issue reports caching observed only from 2,048. We keep the
official 1,024 (the issue is an unconfirmed observation); ``cache_source`` says so.

Each entry's ``cache_source`` names where its ``min_cache_tokens`` comes from.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Literal

from contextos.errors import BudgetError, ConfigError

Provider = Literal["anthropic", "openai", "open"]

#: Where each minimum cacheable prompt length comes from (``ModelInfo.cache_source``).
A_CACHE = (
    "https://platform.claude.com/docs/en/build-with-claude/prompt-caching (table quoted in "
    "https://github.com/anthropics/anthropic-sdk-python/issues/1194)"
)
A_CACHE_SONNET46 = (
    A_CACHE + "; 2,048 per https://docs.orq.ai/docs/proxy/prompt-caching and observed in that "
    "issue, not adopted"
)
A_CACHE_OPUS48 = (
    "https://platform.claude.com/docs/en/about-claude/models/whats-new-claude-4-8 "
    "(lower 1,024-token minimum cacheable prompt length)"
)
A_CACHE_OPUS47 = (
    "ASSUMPTION, no first-party page found: 4,096 per https://claudecodeguides.com/"
    "claude-cache-minimum-token-requirements-2026/ and https://startdebugging.net/2026/06/"
    "prompt-caching-on-claude-sonnet-4-6-vs-claude-opus-4-7-when-it-pays-off/; 2,048 per "
    "https://dev.to/creeta/claudes-prompt-cache-fails-silently-below-1024-tokens-1ch1"
)
A_CACHE_5 = (
    "third party only: https://dev.to/creeta/claudes-prompt-cache-fails-silently-below-1024-"
    "tokens-1ch1 (512 for Opus 5 and Fable 5, 1,024 for Sonnet 5); no first-party table found"
)
A_CACHE_55 = (
    "ASSUMPTION, no source found for the 5.1/5.5 models: 4,096, the largest minimum of any "
    "Claude model (a too-high minimum only skips a breakpoint that would have cached)"
)
A_CACHE_3X = A_CACHE + " (as read 2025-11, for the retired Claude 3.x models)"
O_CACHE = "https://developers.openai.com/docs/guides/prompt-caching (1024 tokens or longer)"
O_NO_CACHE = (
    "no prompt caching for this model (https://developers.openai.com/docs/guides/prompt-caching "
    "lists gpt-4o and newer): a cached token is priced as an input token"
)


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
    #: The model's own tokenizer: a tiktoken encoding name for OpenAI models; for
    #: others a name with no offline implementation (their counts here are estimates).
    tokenizer: str = "cl100k_base"
    #: ISO date the provider retires (or retired) the model; None while it is not deprecated.
    deprecated: str | None = None
    #: Where ``min_cache_tokens`` comes from (URLs); '' for self-hosted models (no provider cache).
    cache_source: str = ""
    #: False for the stand-in :func:`contextos.engine.context.model_info` builds for a model
    #: the registry does not know: its window is assumed, so a budget is used as given.
    registered: bool = True

    def exact_with(self, tokenizer_name: str) -> bool:
        """Whether a count by ``tokenizer_name`` is this model's exact count.

        Only the model's own tokenizer is exact (or the provider's count
        endpoint, which is not a local tokenizer): cl100k is an estimate for
        Claude and for o200k models.
        """
        return tokenizer_name == self.tokenizer

    def input_cost(self, tokens: int) -> float:
        """Dollars for ``tokens`` uncached input tokens."""
        return tokens * self.prices.input / 1_000_000

    def default_output_reserve(self) -> int:
        """Output tokens to keep free in the window when budgeting input."""
        return min(self.max_output_tokens, max(1024, self.context_window // 16))

    def largest_budget(self, reserve: int | None = None) -> int:
        """The largest input budget the context window holds: the window less ``reserve``
        (the output reserved, and anything else sent outside the window; default:
        :meth:`default_output_reserve`)."""
        reserve = self.default_output_reserve() if reserve is None else reserve
        return self.context_window - reserve

    def check_budget(self, budget: int, reserve: int | None = None) -> None:
        """Refuse an input ``budget`` the model's context window cannot hold with
        ``reserve`` tokens kept free (see :meth:`largest_budget`). A model the registry
        does not know (``registered`` False) has an assumed window: its budget is used as
        given.

        Raises:
            BudgetError: ``budget`` is over :meth:`largest_budget`; the message names the
                model, its window, the reserve and the largest budget allowed.
        """
        if not self.registered:
            return
        reserve = self.default_output_reserve() if reserve is None else reserve
        largest = self.largest_budget(reserve)
        if budget > largest:
            raise BudgetError(
                f"budget of {budget:,} input tokens is over what {self.name} can take: its "
                f"context window is {self.context_window:,} tokens and {reserve:,} are reserved "
                f"for the output, so the largest budget allowed is {largest:,}",
                requested=budget,
                available=largest,
            )


def _anthropic(
    name: str,
    window: int,
    max_out: int,
    min_cache: int,
    inp: float,
    out: float,
    deprecated: str | None = None,
    cache_source: str = A_CACHE,
) -> ModelInfo:
    # Anthropic: cache write 5m = 1.25x input, 1h = 2x input, read = 0.1x input [A-PRICE].
    return ModelInfo(
        name,
        "anthropic",
        window,
        max_out,
        min_cache,
        Prices(inp, out, round(inp * 1.25, 4), inp * 2, round(inp * 0.1, 4)),
        # Claude's tokenizer is not published: exact counts come only from the API's
        # messages.count_tokens; every offline count is an estimate.
        tokenizer="claude (count_tokens API)",
        deprecated=deprecated,
        cache_source=cache_source,
    )


def _openai(
    name: str,
    window: int,
    max_out: int,
    inp: float,
    out: float,
    cached: float,
    deprecated: str | None = None,
    write: float | None = None,
    tokenizer: str = "o200k_base",
    cache_source: str = O_CACHE,
) -> ModelInfo:
    # OpenAI: automatic prefix caching from 1,024 tokens [O-CACHE]; no write surcharge
    # before GPT-5.6, writes at 1.25x the input price from it [O-GPT56] (``write``).
    write = inp if write is None else write
    return ModelInfo(
        name,
        "openai",
        window,
        max_out,
        1024,
        Prices(inp, out, write, write, cached),
        tokenizer=tokenizer,
        deprecated=deprecated,
        cache_source=cache_source,
    )


def _open(name: str, window: int, max_out: int, tokenizer: str) -> ModelInfo:
    # Their own tokenizers (Llama 3's, Qwen's, Mistral's Tekken) are not shipped and
    # nothing is downloaded: every count here (cl100k) is an estimate for them.
    return ModelInfo(
        name,
        "open",
        window,
        max_out,
        0,
        Prices(0.0, 0.0, 0.0, 0.0, 0.0),
        tokenizer=f"{tokenizer} (not shipped)",
    )


_MODELS: tuple[ModelInfo, ...] = (
    # Claude 5.x (the model ids of anthropic 2.14's types/model_param.py). Windows, output
    # limits and prices [A-OPUS5] (its lineup table); minimum cacheable prompt: A_CACHE_5 and
    # A_CACHE_55 above. Haiku 5.5 ("from $0.10 / $0.50", a price range) and the Mythos models
    # (no page found) are left out rather than guessed.
    _anthropic("claude-fable-5-1", 1_000_000, 128_000, 4096, 10.0, 50.0, cache_source=A_CACHE_55),
    _anthropic("claude-opus-5-5", 1_000_000, 128_000, 4096, 4.0, 20.0, cache_source=A_CACHE_55),
    _anthropic("claude-sonnet-5-5", 1_000_000, 128_000, 4096, 2.0, 10.0, cache_source=A_CACHE_55),
    _anthropic("claude-fable-5", 1_000_000, 128_000, 512, 10.0, 50.0, cache_source=A_CACHE_5),
    _anthropic("claude-opus-5", 1_000_000, 128_000, 512, 5.0, 25.0, cache_source=A_CACHE_5),
    _anthropic("claude-sonnet-5", 1_000_000, 128_000, 1024, 2.0, 10.0, cache_source=A_CACHE_5),
    # Claude 4.x. Windows and output limits [A-OPUS48] [A-OPUS46] [A-SONNET46] [A-OPUS45]
    # [B-OPUS47] [A-MODELS]; prices [A-PRICE]; minimum cacheable prompt [A-CACHE], Opus 4.8 from
    # [A-OPUS48], Opus 4.7 an ASSUMPTION (see the module docstring). Long-context (>200K) price
    # tiers are not modelled. Deprecation / retirement dates [A-DEPR].
    _anthropic("claude-opus-4-8", 1_000_000, 128_000, 1024, 5.0, 25.0, cache_source=A_CACHE_OPUS48),
    _anthropic("claude-opus-4-7", 1_000_000, 128_000, 4096, 5.0, 25.0, cache_source=A_CACHE_OPUS47),
    _anthropic("claude-opus-4-6", 1_000_000, 128_000, 4096, 5.0, 25.0),
    _anthropic(
        "claude-sonnet-4-6", 1_000_000, 128_000, 1024, 3.0, 15.0, cache_source=A_CACHE_SONNET46
    ),
    _anthropic("claude-haiku-4-5", 200_000, 64_000, 4096, 1.0, 5.0),
    _anthropic("claude-opus-4-5", 200_000, 64_000, 4096, 5.0, 25.0, deprecated="2027-01-22"),
    _anthropic("claude-sonnet-4-5", 200_000, 64_000, 1024, 3.0, 15.0, deprecated="2026-11-30"),
    # Retired on the Claude API (kept so old logs and sessions still price and budget).
    _anthropic("claude-opus-4-1", 200_000, 32_000, 1024, 15.0, 75.0, deprecated="2026-08-05"),
    _anthropic("claude-opus-4", 200_000, 32_000, 1024, 15.0, 75.0, deprecated="2026-06-15"),
    _anthropic("claude-sonnet-4", 200_000, 64_000, 1024, 3.0, 15.0, deprecated="2026-06-15"),
    # Claude 3.x: no longer served by the Claude API [A-DEPR3]; kept so logs and sessions
    # that name them still budget and price. Minimum cacheable prompt [A-CACHE] (1,024 for
    # Sonnet, 2,048 for Haiku); prices [A-PRICE].
    _anthropic(
        "claude-3-7-sonnet",
        200_000,
        64_000,
        1024,
        3.0,
        15.0,
        deprecated="2026-02-19",
        cache_source=A_CACHE_3X,
    ),
    _anthropic(
        "claude-3-5-sonnet",
        200_000,
        8_192,
        1024,
        3.0,
        15.0,
        deprecated="2025-10-22",
        cache_source=A_CACHE_3X,
    ),
    _anthropic(
        "claude-3-5-haiku",
        200_000,
        8_192,
        2048,
        0.8,
        4.0,
        deprecated="2026-02-19",
        cache_source=A_CACHE_3X,
    ),
    # Claude 3 Opus and Haiku: 200K window, 4,096 output, $15/$75 and $0.25/$1.25 [A-MODELS]
    # [A-PRICE] (as read 2025-11); minimum cacheable prompt [A-CACHE] (1,024 Opus, 2,048
    # Haiku). Retired 2026-01-05 (Opus 3, per Anthropic's "An update on our model deprecation
    # commitments for Claude Opus 3", 2026-02-25) and 2026-04-19/20 (Haiku 3; third-party
    # reports of the release notes disagree on the day: 2026-04-19 kept).
    _anthropic(
        "claude-3-opus",
        200_000,
        4_096,
        1024,
        15.0,
        75.0,
        deprecated="2026-01-05",
        cache_source=A_CACHE_3X,
    ),
    _anthropic(
        "claude-3-haiku",
        200_000,
        4_096,
        2048,
        0.25,
        1.25,
        deprecated="2026-04-19",
        cache_source=A_CACHE_3X,
    ),
    # GPT-4.1 family: 1,047,576-token window, 32,768 output [O-MODELS]; prices [O-PRICE]
    # (read 2025-11, not re-verified 2026-11-25); shutdown dates [O-DEPR].
    _openai("gpt-4.1", 1_047_576, 32_768, 2.0, 8.0, 0.5, deprecated="2027-01-14"),
    _openai("gpt-4.1-mini", 1_047_576, 32_768, 0.4, 1.6, 0.1, deprecated="2027-01-14"),
    _openai("gpt-4.1-nano", 1_047_576, 32_768, 0.1, 0.4, 0.025, deprecated="2026-10-23"),
    # GPT-4o family: 128,000-token window, 16,384 output [O-MODELS]; prices [O-PRICE]
    # (read 2025-11); shutdown 2027-01-14 [O-DEPR].
    _openai("gpt-4o", 128_000, 16_384, 2.5, 10.0, 1.25, deprecated="2027-01-14"),
    _openai("gpt-4o-mini", 128_000, 16_384, 0.15, 0.6, 0.075, deprecated="2027-01-14"),
    # GPT-5.6 family: 1,050,000-token window, 128,000 output; Sol and Luna prices and the
    # 1.25x cache-write price from their pages [O-GPT56] (Sol's is a promotional price "at
    # least until November 21, 2026": re-check); Terra's input from the comparison on Luna's
    # page, its output (and the 10% cached price, as for Sol and Luna) from third parties.
    _openai("gpt-5.6-sol", 1_050_000, 128_000, 4.0, 20.0, 0.4, write=5.0),
    _openai("gpt-5.6-terra", 1_050_000, 128_000, 2.0, 12.0, 0.2, write=2.5),
    _openai("gpt-5.6-luna", 1_050_000, 128_000, 0.2, 1.2, 0.02, write=0.25),
    # GPT-5 family: 400,000-token window, 128,000 output [O-MODELS]; prices [O-PRICE];
    # GPT-5.1 [O-GPT51]; shutdown dates [O-DEPR].
    _openai("gpt-5.1", 400_000, 128_000, 1.25, 10.0, 0.125, deprecated="2027-04-01"),
    _openai("gpt-5", 400_000, 128_000, 1.25, 10.0, 0.125, deprecated="2026-12-11"),
    _openai("gpt-5-mini", 400_000, 128_000, 0.25, 2.0, 0.025, deprecated="2026-12-11"),
    _openai("gpt-5-nano", 400_000, 128_000, 0.05, 0.4, 0.005, deprecated="2026-12-11"),
    # o-series reasoning models: 200,000-token window, 100,000 output [O-MODELS]; prices
    # [O-PRICE] (as read 2025-11); shutdown dates [O-LEGACY] (o3 with GPT-5 [O-DEPR]).
    _openai("o3", 200_000, 100_000, 2.0, 8.0, 0.5, deprecated="2026-12-11"),
    _openai("o4-mini", 200_000, 100_000, 1.1, 4.4, 0.275, deprecated="2026-10-23"),
    _openai("o3-mini", 200_000, 100_000, 1.1, 4.4, 0.55, deprecated="2026-10-23"),
    _openai("o1", 200_000, 100_000, 15.0, 60.0, 7.5, deprecated="2026-10-23"),
    # Legacy GPT-4 / GPT-3.5 [O-LEGACY]: counted by cl100k_base (their own tokenizer), no
    # prompt caching (a cached token is priced as input); shutdown 2026-10-23.
    # gpt-4o-2024-05-13 is its own entry: 4,096 output and $5/$15, unlike gpt-4o.
    _openai(
        "gpt-4o-2024-05-13",
        128_000,
        4_096,
        5.0,
        15.0,
        5.0,
        deprecated="2026-10-23",
        cache_source=O_NO_CACHE,
    ),
    _openai(
        "gpt-4-turbo",
        128_000,
        4_096,
        10.0,
        30.0,
        10.0,
        deprecated="2026-10-23",
        tokenizer="cl100k_base",
        cache_source=O_NO_CACHE,
    ),
    _openai(
        "gpt-4",
        8_192,
        8_192,
        30.0,
        60.0,
        30.0,
        deprecated="2026-10-23",
        tokenizer="cl100k_base",
        cache_source=O_NO_CACHE,
    ),
    _openai(
        "gpt-3.5-turbo",
        16_385,
        4_096,
        0.5,
        1.5,
        0.5,
        deprecated="2026-10-23",
        tokenizer="cl100k_base",
        cache_source=O_NO_CACHE,
    ),
    # Open models, self-hosted (price 0): context length from each model card.
    _open("llama-3.1-8b-instruct", 131_072, 8_192, "llama-3"),
    _open("llama-3.3-70b-instruct", 131_072, 8_192, "llama-3"),
    _open("qwen2.5-7b-instruct", 32_768, 8_192, "qwen2.5"),
    _open("mistral-small-3.1", 131_072, 8_192, "tekken"),
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
    "claude-3-7-sonnet-20250219": "claude-3-7-sonnet",
    "claude-3-7-sonnet-latest": "claude-3-7-sonnet",
    "claude-3-5-sonnet-20241022": "claude-3-5-sonnet",
    "claude-3-5-sonnet-20240620": "claude-3-5-sonnet",
    "claude-3-5-sonnet-latest": "claude-3-5-sonnet",
    "claude-3-5-haiku-20241022": "claude-3-5-haiku",
    "claude-3-5-haiku-latest": "claude-3-5-haiku",
    "claude-3-opus-latest": "claude-3-opus",
    # Anthropic's own aliases of the Claude 4 snapshots [A-MODELS].
    "claude-opus-4-0": "claude-opus-4",
    "claude-sonnet-4-0": "claude-sonnet-4",
    "gpt-4o-2024-11-20": "gpt-4o",
    "gpt-4o-2024-08-06": "gpt-4o",
    "gpt-4o-mini-2024-07-18": "gpt-4o-mini",
    "gpt-4.1-2025-04-14": "gpt-4.1",
    "gpt-4.1-mini-2025-04-14": "gpt-4.1-mini",
    "gpt-4.1-nano-2025-04-14": "gpt-4.1-nano",
    "gpt-5-2025-08-07": "gpt-5",
    "gpt-5-mini-2025-08-07": "gpt-5-mini",
    "gpt-5-nano-2025-08-07": "gpt-5-nano",
    "gpt-5.1-2025-11-13": "gpt-5.1",
    "gpt-5.6": "gpt-5.6-sol",  # "The gpt-5.6 alias routes requests to GPT-5.6 Sol" [O-GPT56]
    # Snapshots named -MMDD (no year: not a date suffix :func:`model_key` strips) and
    # previews [O-LEGACY]; older 4,096-token gpt-3.5-turbo snapshots are left out.
    "gpt-4-0613": "gpt-4",
    "gpt-4-0314": "gpt-4",
    "gpt-4-turbo-preview": "gpt-4-turbo",
    "gpt-4-0125-preview": "gpt-4-turbo",
    "gpt-4-1106-preview": "gpt-4-turbo",
    "gpt-3.5-turbo-0125": "gpt-3.5-turbo",
    "gpt-3.5-turbo-1106": "gpt-3.5-turbo",
    # Vertex AI names Claude 3.5 Sonnet's second version so (claude-3-5-sonnet-v2@20241022).
    "claude-3-5-sonnet-v2": "claude-3-5-sonnet",
    # Family aliases: the newest non-deprecated Claude 4.x of each tier in this registry
    # (:data:`FAMILY_ALIASES`).
    "sonnet": "claude-sonnet-4-6",
    "opus": "claude-opus-4-8",
    "haiku": "claude-haiku-4-5",
}

#: contextos's own shorthands in :data:`ALIASES`, which no provider takes as a model id: a
#: request body names the entry they resolve to (:func:`named_model`).
FAMILY_ALIASES = frozenset({"sonnet", "opus", "haiku"})


#: A date suffix of a snapshot id: OpenAI's ``-2024-08-06``, Anthropic's ``-20250929``,
#: Vertex AI's ``@20250929``.
_DATE_SUFFIX = re.compile(r"(?:-\d{4}-\d{2}-\d{2}|-\d{8}|@\d{8})$")
#: Amazon Bedrock's model id around the Anthropic name: an optional cross-region
#: inference profile (``us.``, ``eu.``, ``apac.``, ``global.``...), ``anthropic.``, and a
#: version suffix (``-v1:0``, ``-v2:0``, ``-v1``).
_BEDROCK_PREFIX = re.compile(r"^(?:[a-z][a-z-]*\.)?anthropic\.")
_BEDROCK_SUFFIX = re.compile(r"-v\d+(?::\d+)?$")


def model_key(name: str) -> str:
    """The registry key ``name`` resolves to (which may not be registered).

    The one normalisation of a model id, what :func:`get_model` looks up: surrounding
    whitespace and case are ignored; then a registered name or alias is itself; else a
    Bedrock form (``us.anthropic.claude-sonnet-4-5-20250929-v1:0``) loses its region and
    ``anthropic.`` prefix and its ``-vN:M`` suffix, and a dated snapshot
    (``gpt-4o-2024-11-20``, ``claude-3-haiku-20240307``, Vertex AI's
    ``claude-sonnet-4-5@20250929``) loses its date, so it resolves to its family's entry.
    A snapshot whose limits differ from its family's is registered under its own id
    (``gpt-4o-2024-05-13``, or one an app registers), which wins, in its Bedrock form too.

    Example:
        >>> model_key("anthropic.claude-sonnet-4-5-20250929-v1:0")
        'claude-sonnet-4-5'
        >>> model_key(" CLAUDE-SONNET-4-6 ")
        'claude-sonnet-4-6'
    """
    key = name.strip().lower()
    bare = _BEDROCK_SUFFIX.sub("", _BEDROCK_PREFIX.sub("", key)) if "anthropic." in key else key
    for candidate in dict.fromkeys((key, bare)):  # the most specific registered name wins
        resolved = ALIASES.get(candidate, candidate)
        if resolved in MODELS:
            return resolved
    bare = _DATE_SUFFIX.sub("", bare)
    return ALIASES.get(bare, bare)


def register_model(info: ModelInfo, *aliases: str) -> ModelInfo:
    """Add ``info`` to the registry (replacing an entry of the same name), with
    ``aliases``, for this process: a model the registry does not know (a fine-tune, a
    self-hosted model behind an OpenAI-compatible server) then gets its own window, output
    limit, prices and minimum cacheable prompt, and a budget over its window is refused
    as for any registered model. Names are matched as :func:`model_key` does (any case).

    A name that is a built-in alias (a dated snapshot such as
    ``claude-sonnet-4-5-20250929``, a ``-latest`` id, ``sonnet``/``opus``/``haiku``) is
    an alias no more: the registration is what it names. Why: aliases are read before
    the models, so the registration was never read, and ``wrap()`` budgeted a model
    registered with 32,000 tokens by its family's 200,000 (a review).

    Example:
        >>> register_model(ModelInfo("my-llama", "open", 32_768, 4_096, 0,
        ...                          Prices(0, 0, 0, 0, 0)))              # doctest: +SKIP
    """
    key = info.name.strip().lower()
    MODELS[key] = info
    ALIASES.pop(key, None)
    for alias in aliases:
        ALIASES[alias.strip().lower()] = key
    return info


def get_model(name: str) -> ModelInfo:
    """Look a model up by name or alias, as :func:`model_key` normalises it (any case, a
    dated snapshot, a Bedrock or Vertex AI id).

    Raises:
        ConfigError: the model is unknown; the message lists the known names.
        TypeError: ``name`` is not a string (``get_model(None)`` failed on ``.strip``).
    """
    if not isinstance(name, str):
        raise TypeError(f"get_model takes a model name (str), not {type(name).__name__}")
    info = MODELS.get(ALIASES.get(name, name)) or MODELS.get(model_key(name))
    if info is not None:
        return info
    known = ", ".join(sorted(MODELS))
    raise ConfigError(
        f"unknown model {name!r}; known models: {known} (or register it: "
        "contextos.llm.models.register_model)"
    )


def named_model(name: str) -> ModelInfo:
    """The registry's entry for ``name`` (:func:`get_model`: its window, limits and prices)
    named as a request body must name it: the id the caller gave, stripped (a dated
    snapshot, a Bedrock or Vertex AI id; lower-cased unless the registry holds it as
    given), or, for a :data:`FAMILY_ALIASES` shorthand, the entry it resolves to. The one
    rule of the ready bodies of ``contextos window`` and the HTTP and MCP windows.

    Why: those bodies named the registry's key, so ``gpt-4o-2024-11-20`` went out as
    ``gpt-4o``, another snapshot, and a Vertex id lost its date: the request called a
    model other than the one asked for, where a wrapped call sends the caller's id (a
    review).

    Raises:
        ConfigError, TypeError: as :func:`get_model`.
    """
    info = get_model(name)
    given = name.strip()
    short = given.lower()
    if given == info.name or (short in FAMILY_ALIASES and short in ALIASES):
        return info
    if given not in MODELS and given not in ALIASES:
        # Found only as normalised (any case): the providers' ids are lower-case, and
        # "GPT-4o" is "The model `GPT-4o` does not exist" (the registry's key went out
        # before, whatever the case given; a review).
        given = short
    return replace(info, name=given)


def as_model(model: ModelInfo | str) -> ModelInfo:
    """``model``, or the registry's entry for a model name (:func:`get_model`), as the
    CLI's ``-m NAME`` takes it.

    Why: ``session.window("claude-sonnet-4-6", ...)`` failed with ``AttributeError: 'str'
    object has no attribute 'largest_budget'`` (a review).

    Raises:
        TypeError: neither a ``ModelInfo`` nor a string.
        ConfigError: an unknown name (:func:`get_model`).
    """
    if isinstance(model, str):
        return get_model(model)
    if not isinstance(model, ModelInfo):
        raise TypeError(
            "model must be a ModelInfo or a model name: get_model(name), "
            f"not {type(model).__name__}"
        )
    return model
