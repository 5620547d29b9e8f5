"""Cache accounting from real responses: one usage parser per provider, reports, a ledger.

Both providers' SDKs (and their raw JSON) are read through :func:`field_of`,
so objects and dicts are handled alike. :class:`CacheLedger` records each
response's :class:`~contextos.types.Usage` per session; :func:`report` prices
a list of them with a model's prices.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import astuple, dataclass
from typing import Any

from contextos.llm.models import ModelInfo
from contextos.types import Usage

# -- accounting ------------------------------------------------------------------


def field_of(obj: Any, name: str, default: Any = None) -> Any:
    """Attribute or key access, so SDK models and plain dicts read the same."""
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    return getattr(obj, name, default)


def _int(value: Any) -> int:
    """A token count: an int, or a whole-number float (JSON decoders and proxies may
    give ``10.0``, which once counted as 0); anything else (None, a bool, a fraction,
    NaN) counts 0."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return 0


def usage_from_anthropic(usage: Any) -> Usage:
    """A :class:`Usage` from an Anthropic ``usage`` (SDK object or dict).

    Field names as in anthropic 2.14's ``types/usage.py``: ``input_tokens``
    (uncached), ``cache_creation_input_tokens``, ``cache_read_input_tokens``
    and the TTL split ``cache_creation.ephemeral_5m_input_tokens`` /
    ``ephemeral_1h_input_tokens``. Without the split every write is a
    5-minute one (the API's default TTL).

    Server-side compaction (the beta ``compact_20260112`` edit) reports its
    summarising pass as a ``compaction`` entry of ``usage.iterations``
    (``types/beta/beta_compaction_iteration_usage.py``), whose tokens "are not
    included in the top-level usage fields": they are added here, so a
    session's cost counts them.
    """
    if usage is None:
        return Usage()
    top = _anthropic_fields(usage)
    for it in field_of(usage, "iterations") or ():
        if field_of(it, "type") == "compaction":
            extra = _anthropic_fields(it)
            top = Usage(*(a + b for a, b in zip(astuple(top), astuple(extra), strict=True)))
    return top


def _anthropic_fields(usage: Any) -> Usage:
    """The usage fields of one ``usage`` (or ``iterations`` entry). Either the write
    total or its TTL split may be missing (a proxy or gateway that passes on part of
    the usage): without the split every write is a 5-minute one; without the total it
    is the split's sum (it was 0, and the report priced the 1-hour writes against it
    as negative 5-minute ones)."""
    total = field_of(usage, "cache_creation_input_tokens")
    split = field_of(usage, "cache_creation")
    raw = [
        field_of(split, k) if split is not None else None
        for k in ("ephemeral_5m_input_tokens", "ephemeral_1h_input_tokens")
    ]
    if all(v is None for v in raw):  # no split given (absent, or an empty ``{}``)
        five, hour = _int(total), 0  # every write is a 5-minute one, the API's default
    else:
        five, hour = _int(raw[0]), _int(raw[1])
    creation = five + hour if total is None else _int(total)
    return Usage(
        input_tokens=_int(field_of(usage, "input_tokens")),
        output_tokens=_int(field_of(usage, "output_tokens")),
        cache_creation_input_tokens=creation,
        cache_read_input_tokens=_int(field_of(usage, "cache_read_input_tokens")),
        cache_creation_5m=five,
        cache_creation_1h=hour,
    )


def usage_from_openai(usage: Any) -> Usage:
    """A :class:`Usage` from an OpenAI ``usage`` (Chat Completions or Responses; object or dict).

    Field names as in openai 3.57's ``types/completion_usage.py``
    (``prompt_tokens``, ``completion_tokens``, ``prompt_tokens_details.cached_tokens``
    / ``cache_write_tokens``) and ``types/responses/response_usage.py``
    (``input_tokens``, ``output_tokens``, ``input_tokens_details.cached_tokens``
    / ``cache_write_tokens``). OpenAI's prompt count includes cached and written
    tokens; here ``input_tokens`` means the uncached, unwritten part, as in
    Anthropic's usage, so both add up the same way. OpenAI's write TTLs (30m,
    12h) have no 5m/1h counterpart, so writes are reported without a split.
    """
    if usage is None:
        return Usage()
    prompt = field_of(usage, "prompt_tokens")
    if prompt is None:
        prompt = field_of(usage, "input_tokens")
    details = field_of(usage, "prompt_tokens_details")
    if details is None:
        details = field_of(usage, "input_tokens_details")
    cached = _int(field_of(details, "cached_tokens"))
    written = _int(field_of(details, "cache_write_tokens"))
    output = field_of(usage, "completion_tokens")
    if output is None:
        output = field_of(usage, "output_tokens")
    return Usage(
        input_tokens=max(0, _int(prompt) - cached - written),
        output_tokens=_int(output),
        cache_creation_input_tokens=written,
        cache_read_input_tokens=cached,
    )


def openai_write_ttls(usage: Any) -> dict[str, int]:
    """OpenAI's cache writes by TTL: ``{"30m": n, "12h": m}``, or {} when not reported.

    Only the Responses API reports the split
    (``input_tokens_details.cache_write_tokens_details.ttl_30m_tokens`` /
    ``ttl_12h_tokens``, openai 3.57 ``types/responses/response_usage.py``);
    Chat Completions' ``prompt_tokens_details`` has ``cache_write_tokens`` only
    (``types/completion_usage.py``). The total is in :func:`usage_from_openai`.
    """
    details = field_of(usage, "input_tokens_details") if usage is not None else None
    split = field_of(details, "cache_write_tokens_details") if details is not None else None
    if split is None:
        return {}
    return {
        "30m": _int(field_of(split, "ttl_30m_tokens")),
        "12h": _int(field_of(split, "ttl_12h_tokens")),
    }


def read_share(cache_read_tokens: int, input_tokens: int) -> float:
    """Share of input tokens read from the cache (0 when there was no input): the one
    definition the ledger, the edit report and the inspector use."""
    return cache_read_tokens / input_tokens if input_tokens else 0.0


@dataclass(frozen=True)
class CacheReport:
    """Cache accounting over some requests, priced with one model's prices."""

    requests: int
    input_tokens: int
    uncached_tokens: int
    cache_read_tokens: int
    cache_write_5m_tokens: int
    cache_write_1h_tokens: int
    output_tokens: int
    cost_usd: float
    cost_without_cache_usd: float

    @property
    def hit_ratio(self) -> float:
        """Share of input tokens read from the cache."""
        return read_share(self.cache_read_tokens, self.input_tokens)

    @property
    def saved_usd(self) -> float:
        """Money the cache saved (negative when writes cost more than reads saved)."""
        return self.cost_without_cache_usd - self.cost_usd


def report(usages: Sequence[Usage], model: ModelInfo) -> CacheReport:
    """Sum ``usages`` and price them (writes without a 5m/1h split count as 5m; a usage
    whose 1-hour writes exceed its write total has no 5-minute ones, never fewer)."""
    p = model.prices
    unc = sum(u.input_tokens for u in usages)
    read = sum(u.cache_read_input_tokens for u in usages)
    w1 = sum(u.cache_creation_1h for u in usages)
    w5 = sum(max(0, u.cache_creation_input_tokens - u.cache_creation_1h) for u in usages)
    out = sum(u.output_tokens for u in usages)
    total_in = unc + read + w5 + w1
    cost = (
        unc * p.input
        + read * p.cache_read
        + w5 * p.cache_write_5m
        + w1 * p.cache_write_1h
        + out * p.output
    ) / 1e6
    plain = (total_in * p.input + out * p.output) / 1e6
    return CacheReport(len(usages), total_in, unc, read, w5, w1, out, cost, plain)


class CacheLedger:
    """Per-session record of real responses' usage, for hit ratio and money saved."""

    def __init__(self) -> None:
        self._usage: dict[str, list[Usage]] = {}

    def record(self, session_id: str, usage: Usage) -> None:
        """Add one response's usage to ``session_id``."""
        self._usage.setdefault(session_id, []).append(usage)

    def sessions(self) -> list[str]:
        """Session ids seen, in first-seen order."""
        return list(self._usage)

    def report(self, model: ModelInfo, session_id: str | None = None) -> CacheReport:
        """Accounting for one session, or for all when ``session_id`` is None."""
        if session_id is None:
            return report([u for us in self._usage.values() for u in us], model)
        return report(self._usage.get(session_id, []), model)
