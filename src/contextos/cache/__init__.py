"""Prompt caching: render a window for a provider, simulate its cache, account for usage.

- :mod:`.render`: request bodies whose cached prefix is byte-stable (Anthropic
  ``cache_control`` breakpoints, OpenAI prefix order and ``prompt_cache_key``);
- :mod:`.simulate`: the providers' cache rules applied offline (:class:`CacheSimulator`);
- :mod:`.accounting`: the usage parsers, :class:`CacheReport` and :class:`CacheLedger`.
"""

from .accounting import (
    CacheLedger,
    CacheReport,
    field_of,
    report,
    usage_from_anthropic,
    usage_from_openai,
)
from .render import (
    OPENAI_CACHE_STEP,
    OPENAI_TTL_SECONDS,
    TTL_SECONDS,
    WireFormat,
    cached_prefix,
    final_parts,
    prompt_cache_key,
    render,
    render_anthropic,
    render_openai,
    stable_end,
    wire_blocks,
)
from .simulate import CacheRequest, CacheSimulator, cache_request

__all__ = [
    "OPENAI_CACHE_STEP",
    "OPENAI_TTL_SECONDS",
    "TTL_SECONDS",
    "WireFormat",
    "CacheLedger",
    "CacheReport",
    "CacheRequest",
    "CacheSimulator",
    "cache_request",
    "cached_prefix",
    "field_of",
    "final_parts",
    "prompt_cache_key",
    "render",
    "render_anthropic",
    "render_openai",
    "report",
    "stable_end",
    "usage_from_anthropic",
    "usage_from_openai",
    "wire_blocks",
]
