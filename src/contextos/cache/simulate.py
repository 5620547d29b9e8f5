"""The provider's prompt-cache rules applied offline, so a layout or policy can be priced.

:class:`CacheSimulator` replays a sequence of requests (chain-hashed wire
blocks, see :func:`cache_request`) and reports the usage the provider would
have returned: what was read from the cache, what was written, what was not.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from contextos.engine.window import LOOKBACK_BLOCKS, Window
from contextos.llm.models import ModelInfo
from contextos.llm.tokens import TOKENS_PER_REPLY
from contextos.types import Usage

from .render import (
    OPENAI_CACHE_STEP,
    OPENAI_TTL_SECONDS,
    TTL_SECONDS,
    WireFormat,
    final_parts,
    render,
    wire_blocks,
)

# -- simulation ------------------------------------------------------------------


@dataclass(frozen=True)
class CacheRequest:
    """A request as the simulator sees it: prefix hashes, tokens per block, breakpoints.

    ``parts`` is how many content blocks each block is on the wire (empty: one
    each). Anthropic's lookback counts content blocks, not messages: a turn with N
    parallel tool calls is 1 + N of them, so counting it as one overstated the
    reach and reported full reads the API would have missed.
    """

    hashes: tuple[str, ...]
    tokens: tuple[int, ...]
    breakpoints: tuple[tuple[int, str], ...]
    at: float
    output_tokens: int = 0
    tail_tokens: int = TOKENS_PER_REPLY  # the reply primer: never cached
    parts: tuple[int, ...] = ()


def cache_request(
    window: Window, model: ModelInfo, wire: WireFormat, *, at: float, output_tokens: int = 0
) -> CacheRequest:
    """Render ``window`` and chain-hash its wire blocks (hash i covers blocks 0..i)."""
    body = render(window, model, wire, keep_empty=True)  # one wire block per window block
    blocks = wire_blocks(body, wire, final_parts=final_parts(window))
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
        content_parts(body, window) if wire == "anthropic" else (),
    )


def content_parts(body: Mapping[str, Any], window: Window) -> tuple[int, ...]:
    """Content blocks per window block in an Anthropic ``body`` (see :class:`CacheRequest`):
    one per tool and system block, a turn's message its content list (zero when it has
    nothing to send), one per part of the final user message."""
    tail = final_parts(window)
    messages = list(body["messages"])
    turns = messages[:-1] if tail else messages
    return (
        (1,) * (len(body.get("tools", [])) + len(body.get("system", [])))
        + tuple(len(m["content"]) if isinstance(m["content"], list) else 1 for m in turns)
        + (1,) * tail
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
        pos = _prefix_sums(req.parts or (1,) * len(req.tokens))  # content-block positions
        bps = [(i, ttl) for i, ttl in req.breakpoints if prefix[i] >= self.min_tokens]
        read_end = -1
        for i, _ttl in bps:
            for j in range(i, -1, -1):
                if pos[i] - pos[j] > self.lookback:
                    break
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
