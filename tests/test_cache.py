"""Rendering, prefix stability on both wire formats, the cache simulator, usage accounting."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contextos.cache import (
    CacheLedger,
    CacheRequest,
    CacheSimulator,
    cache_request,
    cached_prefix,
    final_parts,
    render,
    render_anthropic,
    render_openai,
    report,
    usage_from_anthropic,
    usage_from_openai,
    wire_blocks,
)
from contextos.engine.compaction import HistoryState
from contextos.engine.session import Layout, context_window, turn_items
from contextos.engine.window import Item, Segment, assemble, text_item
from contextos.llm.models import get_model
from contextos.llm.tokens import CharEstimateTokenizer
from contextos.types import Hit, MemoryRecord, Message, ToolCall, Turn, Usage

TOK = CharEstimateTokenizer()
SONNET = get_model("claude-sonnet-4-5")
GPT = get_model("gpt-4.1")
TOOLS = [
    {
        "name": "lookup",
        "description": "Find a record.",
        "parameters": {"type": "object", "properties": {"id": {"type": "string"}}},
    }
]


def make_turn(seq: int, kind: int, text: str) -> list[Turn]:
    """One logged exchange: plain text, or an assistant tool call plus its result."""
    from datetime import UTC, datetime

    at = datetime(2024, 1, 1, tzinfo=UTC)
    if kind == 2:
        call = ToolCall(f"call_{seq}", "lookup", json.dumps({"id": text[:8]}))
        msgs = [
            Message("assistant", "", tool_calls=(call,)),
            Message("tool", f"result: {text}", tool_call_id=f"call_{seq}"),
        ]
    else:
        msgs = [Message("user" if kind == 0 else "assistant", text)]
    return [Turn("s", seq + k, m, TOK.count_messages([m]) - 3, at) for k, m in enumerate(msgs)]


def window_for(turns, question, memories=(), *, model=SONNET, state=None):
    hits = [Hit(MemoryRecord(f"m{i}", t), 1.0) for i, t in enumerate(memories)]
    return context_window(
        200_000,
        tokenizer=TOK,
        question=question,
        min_cache_tokens=model.min_cache_tokens,
        system="You are terse. " * 400,
        rules=("Cite sources.",),
        tools=TOOLS,
        turns=turn_items(turns, state or HistoryState(), TOK),
        memories=hits,
        layout=Layout(restate_question_over=50),
    )


conversation = st.lists(
    st.tuples(st.integers(0, 2), st.text(min_size=1, max_size=80)), min_size=1, max_size=30
)


@settings(max_examples=60, deadline=None)
@given(
    conversation,
    st.lists(st.text(min_size=1, max_size=60), max_size=6),
    st.lists(st.text(min_size=1, max_size=60), max_size=6),
    # A blank question is refused (an empty text block; tests/test_engine_edges.py).
    st.text(min_size=1, max_size=40).filter(str.strip),
)
@pytest.mark.parametrize("wire", ["anthropic", "openai"])
def test_appending_a_turn_keeps_the_cached_prefix_bytes(wire, convo, mem_a, mem_b, question):
    model = SONNET if wire == "anthropic" else GPT
    turns: list[Turn] = []
    for kind, text in convo:
        turns += make_turn(len(turns), kind, text)
    old = window_for(turns[:-1], question, mem_a, model=model)
    new = window_for(turns, question + "?", mem_b, model=model)
    old_prefix = cached_prefix(render(old, model, wire), old, wire)
    new_stream = b"".join(wire_blocks(render(new, model, wire), wire, final_parts=final_parts(new)))
    assert new_stream.startswith(old_prefix)
    if wire == "anthropic":
        assert old.breakpoints, "the 6k-token system prompt alone is cacheable"
        assert len(old_prefix) > 0


@pytest.mark.parametrize("wire", ["anthropic", "openai"])
def test_a_blank_first_turn_keeps_the_prefix_and_its_breakpoint(wire):
    """Found by the property above in CI: a blank first turn is left out of the
    Anthropic body, so the cached prefix must be counted without it; the breakpoint
    planned after it falls on the last system block (no turn precedes it), already
    marked 1h, whose mark stays."""
    model = SONNET if wire == "anthropic" else GPT
    turns = make_turn(0, 0, "\r") + make_turn(1, 0, "0")
    old = window_for(turns[:-1], "0", model=model)
    new = window_for(turns, "0?", model=model)
    old_body = render(old, model, wire)
    old_prefix = cached_prefix(old_body, old, wire)
    new_stream = b"".join(wire_blocks(render(new, model, wire), wire, final_parts=final_parts(new)))
    assert new_stream.startswith(old_prefix)
    if wire == "anthropic":
        assert b'"0"' not in old_prefix, "the question is never part of the cached prefix"
        rules = old_body["system"][-1]
        assert rules["text"] == "Cite sources." and rules["cache_control"]["ttl"] == "1h", (
            "the turn's breakpoint lands on the rules block, which keeps its longer TTL"
        )


@pytest.mark.parametrize("wire", ["anthropic", "openai"])
def test_a_compaction_does_change_the_prefix(wire):
    model = SONNET if wire == "anthropic" else GPT
    turns: list[Turn] = []
    for i in range(6):
        turns += make_turn(len(turns), i % 2, f"message number {i}")
    old = window_for(turns, "q")
    new = window_for(turns, "q", state=HistoryState(start_seq=2))
    old_prefix = cached_prefix(render(old, model, wire), old, wire)
    stream = b"".join(wire_blocks(render(new, model, wire), wire, final_parts=final_parts(new)))
    assert not stream.startswith(old_prefix)


def test_rendering_is_deterministic_and_shaped_like_the_apis():
    turns = make_turn(0, 0, "hello") + make_turn(1, 2, "abc") + make_turn(3, 1, "done")
    w = window_for(turns, "what now?", ["memory one", "memory two"])
    a1, a2 = render_anthropic(w, SONNET), render_anthropic(w, SONNET)
    assert json.dumps(a1) == json.dumps(a2)
    assert a1["tools"][0]["input_schema"]["type"] == "object"
    marks = [b for b in a1["system"] if "cache_control" in b]
    marks += [c for m in a1["messages"] for c in m["content"] if "cache_control" in c]
    assert 1 <= len(marks) <= 4
    assert a1["messages"][1]["content"][0]["type"] == "tool_use"
    assert a1["messages"][2]["content"][0]["type"] == "tool_result"
    assert a1["messages"][-1]["content"][-1]["text"] == "what now?"
    o = render_openai(w, GPT)
    assert o["prompt_cache_key"] == render_openai(w, GPT)["prompt_cache_key"]
    assert o["messages"][0]["role"] == "system"
    assert o["messages"][-1]["content"][-1]["text"] == "what now?"
    assert o["tools"][0]["function"]["name"] == "lookup"
    assert "cache_control" not in json.dumps(o)


def test_blocks_out_of_order_are_refused():
    segs = [
        Segment("q", "question", (text_item("q", "x", TOK),)),
        Segment("sys", "system", (text_item("s", "y", TOK),)),
    ]
    with pytest.raises(ValueError):
        render_anthropic(assemble(segs, 1000), SONNET)


# -- simulator ------------------------------------------------------------------


def req(blocks: list[tuple[str, int]], bps: list[tuple[int, str]], at: float) -> CacheRequest:
    import hashlib

    hashes, h = [], hashlib.sha256()
    for name, _ in blocks:
        h.update(name.encode())
        hashes.append(h.hexdigest())
    return CacheRequest(tuple(hashes), tuple(t for _, t in blocks), tuple(bps), at, 0, 0)


def test_second_identical_call_reads_the_prefix():
    sim = CacheSimulator("anthropic", min_tokens=1024)
    blocks = [("sys", 2000), ("t0", 100), ("q", 50)]
    first = sim.send(req(blocks, [(1, "5m")], 0))
    assert first.cache_creation_input_tokens == 2100 and first.cache_read_input_tokens == 0
    assert first.input_tokens == 50
    second = sim.send(req(blocks, [(1, "5m")], 60))
    assert second.cache_read_input_tokens == 2100 and second.cache_creation_input_tokens == 0


def test_ttl_expiry_and_one_hour_entries():
    sim = CacheSimulator("anthropic", min_tokens=1024)
    blocks = [("sys", 2000), ("t0", 100), ("q", 50)]
    sim.send(req(blocks, [(0, "1h"), (1, "5m")], 0))
    later = sim.send(req(blocks, [(0, "1h"), (1, "5m")], 600))  # 5m entry expired, 1h alive
    assert later.cache_read_input_tokens == 2000
    assert later.cache_creation_5m == 100 and later.cache_creation_1h == 0
    gone = sim.send(req(blocks, [(0, "1h"), (1, "5m")], 600 + 3601))
    assert gone.cache_read_input_tokens == 0


def test_lookback_is_twenty_blocks():
    sim = CacheSimulator("anthropic", min_tokens=0)
    base = [("sys", 2000)]
    sim.send(req(base + [("q", 10)], [(0, "5m")], 0))
    near = base + [(f"t{i}", 10) for i in range(20)]
    assert sim.send(req(near, [(20, "5m")], 1)).cache_read_input_tokens == 2000
    sim2 = CacheSimulator("anthropic", min_tokens=0)
    sim2.send(req(base + [("q", 10)], [(0, "5m")], 0))
    far = base + [(f"t{i}", 10) for i in range(21)]
    assert sim2.send(req(far, [(21, "5m")], 1)).cache_read_input_tokens == 0


def test_prefix_below_minimum_is_never_cached():
    sim = CacheSimulator("anthropic", min_tokens=1024)
    blocks = [("sys", 500), ("q", 50)]
    sim.send(req(blocks, [(0, "5m")], 0))
    again = sim.send(req(blocks, [(0, "5m")], 1))
    assert again.cache_read_input_tokens == 0 and again.cache_creation_input_tokens == 0


def test_openai_caches_prefixes_in_128_token_steps_from_1024():
    sim = CacheSimulator("openai", min_tokens=1024)
    blocks = [("sys", 1100), ("t0", 100), ("q", 30)]
    assert sim.send(req(blocks, [], 0)).cache_read_input_tokens == 0
    second = sim.send(req(blocks[:2] + [("q2", 30)], [], 10))
    assert second.cache_read_input_tokens == 1152  # 1200 rounded down to 128s
    assert second.input_tokens == 1230 - 1152
    small = CacheSimulator("openai", min_tokens=1024)
    small.send(req([("a", 900), ("q", 10)], [], 0))
    assert small.send(req([("a", 900), ("q", 10)], [], 1)).cache_read_input_tokens == 0


def test_simulated_session_reads_history_written_by_the_previous_call():
    sim = CacheSimulator("anthropic", min_tokens=SONNET.min_cache_tokens)
    turns: list[Turn] = []
    usages = []
    for i in range(12):
        turns += make_turn(len(turns), i % 2, f"turn {i} " * 20)
        w = window_for(turns, f"question {i}", [f"memory {i}"])
        usages.append(sim.send(cache_request(w, SONNET, "anthropic", at=30.0 * i)))
    assert all(u.cache_read_input_tokens > 0 for u in usages[1:])
    rep = report(usages, SONNET)
    assert rep.hit_ratio > 0.8 and rep.saved_usd > 0


# -- accounting -----------------------------------------------------------------


def test_usage_from_anthropic_payload():
    u = usage_from_anthropic(
        {
            "input_tokens": 50,
            "output_tokens": 10,
            "cache_creation_input_tokens": 300,
            "cache_read_input_tokens": 2000,
            "cache_creation": {"ephemeral_5m_input_tokens": 100, "ephemeral_1h_input_tokens": 200},
        }
    )
    assert u == Usage(50, 10, 300, 2000, 100, 200)


def test_report_never_counts_negative_5m_writes():
    # A usage built with 1-hour writes but no total (by hand, or read from a log written
    # before the parser summed the split) priced them as negative 5-minute writes.
    model = get_model("claude-sonnet-4")
    priced = report([Usage(10, 2, 0, 0, 0, 5000), Usage(10, 2, 700, 0, 700, 0)], model)
    assert (priced.cache_write_5m_tokens, priced.cache_write_1h_tokens) == (700, 5000)
    assert priced.cost_usd > report([Usage(10, 2, 700, 0, 700, 0)], model).cost_usd


def test_usage_from_openai_payloads():
    chat = usage_from_openai(
        {
            "prompt_tokens": 2000,
            "completion_tokens": 5,
            "prompt_tokens_details": {"cached_tokens": 1536},
        }
    )
    assert chat.input_tokens == 464 and chat.cache_read_input_tokens == 1536
    responses = usage_from_openai(
        {"input_tokens": 1500, "output_tokens": 7, "input_tokens_details": {"cached_tokens": 1024}}
    )
    assert responses.input_tokens == 476 and responses.output_tokens == 7


def test_usage_parsers_read_the_installed_sdks_types():
    from anthropic.types import CacheCreation
    from anthropic.types import Usage as AUsage
    from openai.types import CompletionUsage
    from openai.types.completion_usage import PromptTokensDetails
    from openai.types.responses import ResponseUsage
    from openai.types.responses.response_usage import InputTokensDetails, OutputTokensDetails

    split = AUsage(
        input_tokens=5,
        output_tokens=2,
        cache_creation_input_tokens=30,
        cache_read_input_tokens=70,
        cache_creation=CacheCreation(ephemeral_5m_input_tokens=10, ephemeral_1h_input_tokens=20),
    )
    assert usage_from_anthropic(split) == Usage(5, 2, 30, 70, 10, 20)
    # No TTL split: every write is a 5-minute one (the API's default TTL).
    plain = AUsage(input_tokens=5, output_tokens=2, cache_creation_input_tokens=30)
    assert usage_from_anthropic(plain) == Usage(5, 2, 30, 0, 30, 0)
    assert usage_from_anthropic(plain.model_dump()) == usage_from_anthropic(plain)
    chat = CompletionUsage(
        prompt_tokens=2000,
        completion_tokens=9,
        total_tokens=2009,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=1024, cache_write_tokens=512),
    )
    assert usage_from_openai(chat) == Usage(464, 9, 512, 1024)
    resp = ResponseUsage(
        input_tokens=3000,
        output_tokens=4,
        total_tokens=3004,
        input_tokens_details=InputTokensDetails(cached_tokens=2048, cache_write_tokens=256),
        output_tokens_details=OutputTokensDetails(reasoning_tokens=0),
    )
    assert usage_from_openai(resp) == Usage(696, 4, 256, 2048)
    assert usage_from_openai(resp.model_dump()) == usage_from_openai(resp)


def test_server_side_compaction_pass_is_counted():
    from anthropic.types.beta import BetaUsage
    from anthropic.types.beta.beta_compaction_iteration_usage import (
        BetaCompactionIterationUsage,
    )
    from anthropic.types.beta.beta_message_iteration_usage import BetaMessageIterationUsage

    usage = BetaUsage(
        input_tokens=100,
        output_tokens=20,
        cache_read_input_tokens=1000,
        iterations=[
            BetaCompactionIterationUsage(
                type="compaction",
                input_tokens=5000,
                output_tokens=300,
                cache_creation_input_tokens=0,
                cache_read_input_tokens=0,
            ),
            BetaMessageIterationUsage(
                type="message",
                input_tokens=100,
                output_tokens=20,
                cache_creation_input_tokens=0,
                cache_read_input_tokens=1000,
            ),
        ],
    )
    # The message iteration is the top-level usage; the compaction pass is extra.
    assert usage_from_anthropic(usage) == Usage(5100, 320, 0, 1000, 0, 0)
    assert usage_from_anthropic(usage.model_dump()) == usage_from_anthropic(usage)


def test_ledger_prices_per_session():
    ledger = CacheLedger()
    ledger.record("a", Usage(input_tokens=1_000_000))
    ledger.record("b", Usage(cache_read_input_tokens=1_000_000, cache_creation_input_tokens=0))
    ledger.record("b", Usage(cache_creation_input_tokens=1_000_000, cache_creation_1h=1_000_000))
    a, b = ledger.report(SONNET, "a"), ledger.report(SONNET, "b")
    assert a.cost_usd == pytest.approx(3.0) and a.hit_ratio == 0
    assert b.cost_usd == pytest.approx(0.3 + 6.0)  # read 0.1x, 1h write 2x
    assert b.hit_ratio == pytest.approx(0.5)
    assert b.cost_without_cache_usd == pytest.approx(6.0)
    assert ledger.report(SONNET).requests == 3
    assert ledger.sessions() == ["a", "b"]


def test_cache_request_matches_window_blocks():
    turns = make_turn(0, 0, "hi") + make_turn(1, 2, "x")
    w = window_for(turns, "q", ["m"])
    r = cache_request(w, SONNET, "anthropic", at=0)
    assert len(r.hashes) == len(w.blocks)
    assert sum(r.tokens) + r.tail_tokens == w.total_tokens
    assert Item  # re-exported type used by other tests
