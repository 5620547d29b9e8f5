"""Prompt caching: render a window for a provider, simulate its cache, account for usage.

Providers cache a *byte prefix* of the request, so the renderers here are
deterministic: tool schemas are canonical JSON, nothing volatile (timestamps,
ids) is rendered into the cached part, and the blocks come out in the window's
order (tools, system, history, then the per-call context and the question).

- Anthropic: ``cache_control`` on the blocks where the window planned its
  breakpoints (at most 4, each prefix at least the model's minimum, 1-hour
  TTLs before 5-minute ones). A breakpoint reads the longest earlier entry
  found at most 20 blocks back and writes the prefix up to itself.
- OpenAI: no markers; the stable prefix comes first and ``prompt_cache_key``
  routes calls of one session to the same cache. Prefixes from 1,024 tokens
  are cached in 128-token steps.

:class:`CacheSimulator` applies those rules to a sequence of requests so a
layout or compaction policy can be priced offline; :class:`CacheLedger` does
the same accounting from real responses' ``usage`` fields.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import astuple, dataclass
from typing import Any, Literal

from .models import ModelInfo
from .tokens import TOKENS_PER_REPLY
from .types import Message, Usage
from .window import LOOKBACK_BLOCKS, Window, canonical_json

WireFormat = Literal["anthropic", "openai"]
TTL_SECONDS = {"5m": 300.0, "1h": 3600.0}
#: OpenAI keeps an idle prefix 5-10 minutes; the simulator assumes the shorter end.
OPENAI_TTL_SECONDS = 300.0
OPENAI_CACHE_STEP = 128
_KIND_ORDER = {"tools": 0, "system": 1, "messages": 2, "context": 3, "question": 3}


def _check_order(window: Window) -> None:
    ranks = [_KIND_ORDER[b.kind] for b in window.blocks]
    if ranks != sorted(ranks):
        raise ValueError("window blocks must be ordered tools, system, messages, context/question")


# -- Anthropic -----------------------------------------------------------------


def _anthropic_tool(text: str) -> dict[str, Any]:
    schema = json.loads(text)
    out = {
        "name": schema["name"],
        "description": schema.get("description", ""),
        "input_schema": schema.get("input_schema", schema.get("parameters", {})),
    }
    return out


def _anthropic_turn(msg: Message) -> tuple[str, list[dict[str, Any]]]:
    """(role, content blocks) for one logged message."""
    if msg.role == "tool":
        return "user", [
            {"type": "tool_result", "tool_use_id": msg.tool_call_id or "", "content": msg.content}
        ]
    role = "assistant" if msg.role == "assistant" else "user"
    blocks: list[dict[str, Any]] = [{"type": "text", "text": msg.content}] if msg.content else []
    blocks += [
        {"type": "tool_use", "id": c.id, "name": c.name, "input": json.loads(c.arguments or "{}")}
        for c in msg.tool_calls
    ]
    return role, blocks or [{"type": "text", "text": ""}]


def render_anthropic(
    window: Window, model: ModelInfo, *, max_tokens: int | None = None
) -> dict[str, Any]:
    """The Messages API request body, with ``cache_control`` where the window planned it.

    Each window block becomes one tool, one system block, one message (a
    turn, with its text and tool-use blocks) or one part of the final user
    message (retrieved context and the question).
    """
    _check_order(window)
    marks = {bp.after: bp.ttl for bp in window.breakpoints}
    tools: list[dict[str, Any]] = []
    system: list[dict[str, Any]] = []
    messages: list[dict[str, Any]] = []
    final: list[dict[str, Any]] = []
    for i, b in enumerate(window.blocks):
        mark: dict[str, Any] | None = {"type": "ephemeral", "ttl": marks[i]} if i in marks else None
        if b.kind == "messages":
            content: list[dict[str, Any]] = [{"type": "text", "text": b.text}]
            role: str = b.role
            if b.message is not None:
                role, content = _anthropic_turn(b.message)
            if mark:
                content[-1]["cache_control"] = mark
            messages.append({"role": role, "content": content})
            continue
        block: dict[str, Any] = (
            _anthropic_tool(b.text) if b.kind == "tools" else {"type": "text", "text": b.text}
        )
        if mark:
            block["cache_control"] = mark
        {"tools": tools, "system": system}.get(b.kind, final).append(block)
    if final:
        messages.append({"role": "user", "content": final})
    body: dict[str, Any] = {
        "model": model.name,
        "max_tokens": max_tokens or model.default_output_reserve(),
    }
    if tools:
        body["tools"] = tools
    if system:
        body["system"] = system
    body["messages"] = messages
    return body


# -- OpenAI --------------------------------------------------------------------


def _openai_tool(text: str) -> dict[str, Any]:
    schema = json.loads(text)
    return {
        "type": "function",
        "function": {
            "name": schema["name"],
            "description": schema.get("description", ""),
            "parameters": schema.get("parameters", schema.get("input_schema", {})),
        },
    }


def _openai_turn(msg: Message) -> dict[str, Any]:
    if msg.role == "tool":
        return {"role": "tool", "tool_call_id": msg.tool_call_id or "", "content": msg.content}
    out: dict[str, Any] = {"role": msg.role, "content": msg.content}
    if msg.tool_calls:
        out["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in msg.tool_calls
        ]
    return out


def prompt_cache_key(window: Window) -> str:
    """A stable routing key: the hash of the tools and system blocks (the stable prefix)."""
    stable = [b.text for b in window.blocks if b.kind in ("tools", "system")]
    return "ctxos-" + hashlib.sha256("\x1f".join(stable).encode()).hexdigest()[:24]


def render_openai(
    window: Window, model: ModelInfo, *, cache_key: str | None = None
) -> dict[str, Any]:
    """The Chat Completions request body: stable prefix first, ``prompt_cache_key`` set."""
    _check_order(window)
    tools = [_openai_tool(b.text) for b in window.blocks if b.kind == "tools"]
    messages: list[dict[str, Any]] = []
    final: list[dict[str, Any]] = []
    for b in window.blocks:
        if b.kind == "system":
            messages.append({"role": "system", "content": b.text})
        elif b.kind == "messages":
            messages.append(
                _openai_turn(b.message)
                if b.message is not None
                else {"role": b.role, "content": b.text}
            )
        elif b.kind in ("context", "question"):
            final.append({"type": "text", "text": b.text})
    if final:
        messages.append({"role": "user", "content": final})
    body: dict[str, Any] = {"model": model.name}
    if tools:
        body["tools"] = tools
    body["messages"] = messages
    body["prompt_cache_key"] = cache_key or prompt_cache_key(window)
    return body


def render(window: Window, model: ModelInfo, wire: WireFormat) -> dict[str, Any]:
    """Render for ``wire`` (``anthropic`` or ``openai``)."""
    if wire == "anthropic":
        return render_anthropic(window, model)
    if wire == "openai":
        return render_openai(window, model)
    raise ValueError(f"unknown wire format {wire!r}")


# -- the byte stream a provider caches -------------------------------------------


def wire_blocks(body: Mapping[str, Any], wire: WireFormat, *, final_parts: int) -> list[bytes]:
    """The request as the cache sees it: one canonical byte string per window block.

    Cache markers are stripped (they move between calls but are not content).
    Tools, system blocks (Anthropic), then one entry per message, except the
    last message when it carries ``final_parts`` context/question parts: one
    entry per part.
    """
    out = [canonical_json(t) for t in body.get("tools", [])]
    if wire == "anthropic":
        out += [canonical_json(_strip(b)) for b in body.get("system", [])]
    messages = list(body["messages"])
    tail = messages.pop() if final_parts else None
    for m in messages:
        if isinstance(m.get("content"), list):
            m = {**m, "content": [_strip(b) for b in m["content"]]}
        out.append(canonical_json(m))
    if tail is not None:
        out += [canonical_json([tail["role"], _strip(part)]) for part in tail["content"]]
    return [s.encode("utf-8") for s in out]


def final_parts(window: Window) -> int:
    """How many blocks of ``window`` go into the final user message."""
    return sum(1 for b in window.blocks if b.kind in ("context", "question"))


def _strip(block: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in block.items() if k != "cache_control"}


def cached_prefix(body: Mapping[str, Any], window: Window, wire: WireFormat) -> bytes:
    """Bytes up to the window's last breakpoint (Anthropic) or before the context (OpenAI)."""
    blocks = wire_blocks(body, wire, final_parts=final_parts(window))
    end = stable_end(window, wire)
    return b"".join(blocks[:end])


def stable_end(window: Window, wire: WireFormat) -> int:
    """How many leading blocks are meant to be cached."""
    if wire == "anthropic":
        return window.breakpoints[-1].after + 1 if window.breakpoints else 0
    return sum(1 for b in window.blocks if b.kind not in ("context", "question"))


# -- simulation ------------------------------------------------------------------


@dataclass(frozen=True)
class CacheRequest:
    """A request as the simulator sees it: prefix hashes, tokens per block, breakpoints."""

    hashes: tuple[str, ...]
    tokens: tuple[int, ...]
    breakpoints: tuple[tuple[int, str], ...]
    at: float
    output_tokens: int = 0
    tail_tokens: int = TOKENS_PER_REPLY  # the reply primer: never cached


def cache_request(
    window: Window, model: ModelInfo, wire: WireFormat, *, at: float, output_tokens: int = 0
) -> CacheRequest:
    """Render ``window`` and chain-hash its wire blocks (hash i covers blocks 0..i)."""
    blocks = wire_blocks(render(window, model, wire), wire, final_parts=final_parts(window))
    if len(blocks) != len(window.blocks):
        raise ValueError("renderer produced a block count different from the window")
    hashes: list[str] = []
    h = hashlib.sha256()
    for raw in blocks:
        h.update(len(raw).to_bytes(8, "little") + raw)
        hashes.append(h.copy().hexdigest()[:32])
    bps = tuple((bp.after, bp.ttl) for bp in window.breakpoints) if wire == "anthropic" else ()
    return CacheRequest(
        tuple(hashes),
        tuple(b.tokens for b in window.blocks),
        bps,
        at,
        output_tokens,
        window.total_tokens - sum(b.tokens for b in window.blocks),
    )


class CacheSimulator:
    """Applies a provider's prompt-cache rules to a sequence of requests (offline)."""

    def __init__(
        self, wire: WireFormat, *, min_tokens: int, lookback: int = LOOKBACK_BLOCKS
    ) -> None:
        self.wire = wire
        self.min_tokens = min_tokens
        self.lookback = lookback
        self._entries: dict[str, float] = {}  # prefix hash -> expiry time
        self._ttl: dict[str, float] = {}

    def _alive(self, key: str, at: float) -> bool:
        return self._entries.get(key, -1.0) >= at

    def send(self, req: CacheRequest) -> Usage:
        """Usage the provider would report for ``req`` (and update the cache)."""
        if self.wire == "openai":
            return self._send_openai(req)
        return self._send_anthropic(req)

    def _send_anthropic(self, req: CacheRequest) -> Usage:
        prefix = _prefix_sums(req.tokens)
        bps = [(i, ttl) for i, ttl in req.breakpoints if prefix[i] >= self.min_tokens]
        read_end = -1
        for i, _ttl in bps:
            for j in range(i, max(-1, i - self.lookback - 1), -1):
                if self._alive(req.hashes[j], req.at):
                    read_end = max(read_end, j)
                    self._entries[req.hashes[j]] = req.at + self._ttl[req.hashes[j]]
                    break
        w5 = w1 = 0
        last = read_end
        for i, ttl in bps:
            if i > last:
                tokens = prefix[i] - (prefix[last] if last >= 0 else 0)
                w1, w5 = (w1 + tokens, w5) if ttl == "1h" else (w1, w5 + tokens)
                last = i
            self._entries[req.hashes[i]] = req.at + TTL_SECONDS[ttl]
            self._ttl[req.hashes[i]] = TTL_SECONDS[ttl]
        read = prefix[read_end] if read_end >= 0 else 0
        total = (prefix[-1] if prefix else 0) + req.tail_tokens
        return Usage(
            input_tokens=total - read - w5 - w1,
            output_tokens=req.output_tokens,
            cache_creation_input_tokens=w5 + w1,
            cache_read_input_tokens=read,
            cache_creation_5m=w5,
            cache_creation_1h=w1,
        )

    def _send_openai(self, req: CacheRequest) -> Usage:
        prefix = _prefix_sums(req.tokens)
        cached = 0
        for j in range(len(req.hashes) - 1, -1, -1):
            if self._alive(req.hashes[j], req.at):
                cached = prefix[j]
                break
        cached = (cached // OPENAI_CACHE_STEP) * OPENAI_CACHE_STEP if cached >= 1024 else 0
        if prefix and prefix[-1] >= self.min_tokens:
            for h in req.hashes:
                self._entries[h] = req.at + OPENAI_TTL_SECONDS
        total = (prefix[-1] if prefix else 0) + req.tail_tokens
        return Usage(
            input_tokens=total - cached,
            output_tokens=req.output_tokens,
            cache_read_input_tokens=cached,
        )


def _prefix_sums(tokens: Sequence[int]) -> list[int]:
    out: list[int] = []
    total = 0
    for t in tokens:
        total += t
        out.append(total)
    return out


# -- accounting ------------------------------------------------------------------


def field_of(obj: Any, name: str, default: Any = None) -> Any:
    """Attribute or key access, so SDK models and plain dicts read the same."""
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    return getattr(obj, name, default)


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else 0


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
    creation = _int(field_of(usage, "cache_creation_input_tokens"))
    split = field_of(usage, "cache_creation")
    five = _int(field_of(split, "ephemeral_5m_input_tokens")) if split is not None else creation
    hour = _int(field_of(split, "ephemeral_1h_input_tokens")) if split is not None else 0
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
        return self.cache_read_tokens / self.input_tokens if self.input_tokens else 0.0

    @property
    def saved_usd(self) -> float:
        """Money the cache saved (negative when writes cost more than reads saved)."""
        return self.cost_without_cache_usd - self.cost_usd


def report(usages: Sequence[Usage], model: ModelInfo) -> CacheReport:
    """Sum ``usages`` and price them (writes without a 5m/1h split count as 5m)."""
    p = model.prices
    unc = sum(u.input_tokens for u in usages)
    read = sum(u.cache_read_input_tokens for u in usages)
    w1 = sum(u.cache_creation_1h for u in usages)
    w5 = sum(u.cache_creation_input_tokens for u in usages) - w1
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


__all__ = [
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
