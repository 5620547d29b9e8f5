"""Anthropic's 20-block cache lookback counts content blocks, not messages.

An agent step with N parallel tool calls is three turns (the user's text, the
assistant's text and N ``tool_use`` blocks, one turn with N ``tool_result`` blocks)
but 2N + 2 content blocks. Planned in messages, the next call's breakpoints were
out of reach of the previous call's entry from N = 15 on: every step missed the
cache on the whole history, while the simulator (counting messages too) reported
full reads.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from contextos.cache import CacheRequest, CacheSimulator, cache_request, render_anthropic
from contextos.cache.render import TOOL_RESULTS_KEY, tool_results_meta
from contextos.engine.session import Session
from contextos.engine.window import LOOKBACK_BLOCKS, content_blocks
from contextos.llm.models import get_model
from contextos.store.sqlite import SQLiteStore
from contextos.testing.fake_anthropic import FakeAnthropic
from contextos.types import Message, ToolCall

SONNET = get_model("claude-sonnet-4-6")
SYSTEM = "You are a careful agent. " * 400  # ~2k tokens: every breakpoint qualifies


def agent_step(s: Session, k: int, n: int, *, ask: bool = True) -> None:
    """One step as a wrapped client logs it: the results of parallel calls in one turn;
    ``ask``: the user asks first (else the model goes on from the previous results)."""
    calls = tuple(ToolCall(f"c{k}_{j}", "lookup", json.dumps({"q": j})) for j in range(n))
    results = [
        {"type": "tool_result", "tool_use_id": c.id, "content": f"result {k}/{j} " * 30}
        for j, c in enumerate(calls)
    ]
    text = "\n".join(str(r["content"]) for r in results)
    asked = [Message("user", f"task {k}: look things up please " * 20)] if ask or not k else []
    s.add(
        *asked,
        Message("assistant", "Looking.", tool_calls=calls),
        Message(
            "tool",
            text,
            tool_call_id=calls[0].id,
            metadata={TOOL_RESULTS_KEY: tool_results_meta(results, text)},
        ),
    )


@contextmanager
def agent_against_the_fake(tmp_path: Path) -> Iterator[tuple[Session, CacheSimulator, Any]]:
    """A session, the cache simulator, and the real SDK client on the loopback fake."""
    anthropic = pytest.importorskip("anthropic")
    s = Session(SQLiteStore(str(tmp_path / "s.db")), "agent-1", user_id="ana")
    sim = CacheSimulator("anthropic", min_tokens=SONNET.min_cache_tokens)
    with (
        FakeAnthropic(min_cache_tokens=SONNET.min_cache_tokens) as fake,
        anthropic.Anthropic(base_url=fake.base_url, api_key="test", max_retries=0) as client,
    ):
        yield s, sim, client


def cached(usage: Any) -> int:
    """What a call left in the cache: the prefix it read plus the part it wrote."""
    return int(usage.cache_read_input_tokens) + int(usage.cache_creation_input_tokens)


@pytest.mark.parametrize(("n", "ask"), [(4, True), (15, True), (20, True), (8, False), (19, False)])
def test_each_agent_step_reads_what_the_previous_call_cached(tmp_path, n, ask):
    with agent_against_the_fake(tmp_path) as (s, sim, client):
        prev = None
        for k in range(4):
            agent_step(s, k, n, ask=ask)
            w = s.window(SONNET, "next?", system=SYSTEM, budget=150_000)
            # Planned in content blocks, as the wire has them: every turn between two
            # breakpoints ends within the lookback of the later one, so an entry there
            # (the previous call's) is found.
            turn_bps = [bp.after for bp in w.breakpoints if bp.segment == "turns"]
            for a, c in zip(turn_bps, turn_bps[1:], strict=False):
                for j in range(a, c):
                    gap = sum(content_blocks(x) for x in w.blocks[j + 1 : c + 1])
                    assert gap <= LOOKBACK_BLOCKS or j == a
            got = client.messages.create(**render_anthropic(w, SONNET, max_tokens=64)).usage
            est = sim.send(cache_request(w, SONNET, "anthropic", at=10.0 * k))
            if prev is not None:
                assert got.cache_read_input_tokens == cached(prev[0]) > 0
                assert est.cache_read_input_tokens == cached(prev[1]) > 0
            prev = (got, est)


def test_the_simulator_misses_where_the_api_does(tmp_path):
    """Three steps of 20 parallel calls between two calls (123 content blocks) are
    past the reach of every stone: the simulator reports the miss the API has."""
    with agent_against_the_fake(tmp_path) as (s, sim, client):
        seen = []
        for k in range(2):
            for step in range(3):
                agent_step(s, 3 * k + step, 20, ask=False)
            w = s.window(SONNET, "next?", system=SYSTEM, budget=150_000)
            got = client.messages.create(**render_anthropic(w, SONNET, max_tokens=64)).usage
            est = sim.send(cache_request(w, SONNET, "anthropic", at=10.0 * k))
            seen.append((got, est))
        (got0, est0), (got1, est1) = seen
        assert got1.cache_read_input_tokens < cached(got0)
        assert est1.cache_read_input_tokens < cached(est0)


def test_simulator_lookback_counts_content_blocks():
    def req(parts: tuple[int, ...], at: float) -> CacheRequest:
        names = ["sys"] + [f"t{i}" for i in range(len(parts) - 1)]
        hashes = tuple("/".join(names[: i + 1]) for i in range(len(names)))
        return CacheRequest(
            hashes, (2000,) + (10,) * (len(parts) - 1), ((len(parts) - 1, "5m"),), at, parts=parts
        )

    sim = CacheSimulator("anthropic", min_tokens=0)
    sim.send(req((1,), 0))
    # Two turns, 20 content blocks after the entry: within reach.
    assert sim.send(req((1, 1, 19), 1)).cache_read_input_tokens == 2000
    far = CacheSimulator("anthropic", min_tokens=0)
    far.send(req((1,), 0))
    # Two turns, 21 content blocks: out of reach, as the API counts it.
    assert far.send(req((1, 1, 20), 1)).cache_read_input_tokens == 0
