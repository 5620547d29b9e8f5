"""Window assembly: budget, floors/ceilings/priorities, overflow, edge placement, breakpoints."""

from __future__ import annotations

from typing import Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contextos.engine.window import (
    Item,
    Segment,
    assemble,
    canonical_json,
    edge_order,
    message_item,
    plan_breakpoints,
    text_item,
    tool_item,
)
from contextos.errors import BudgetError
from contextos.llm.tokens import TOKENS_PER_REPLY, CharEstimateTokenizer
from contextos.types import Message

TOK = CharEstimateTokenizer()


def q(text: str = "What is the answer?") -> Segment:
    return Segment(
        "question", "question", (text_item("q", text, TOK),), priority=100, required=True
    )


def ranked(n: int, size: int = 10) -> tuple[Item, ...]:
    return tuple(Item(f"m{r}", f"memory {r}", size, rank=r) for r in range(1, n + 1))


item_st = st.builds(
    lambda k, t, r, p: Item(f"k{k}", "x" * t, t, rank=r, pinned=p),
    st.integers(0, 10_000),
    st.integers(1, 300),
    st.integers(0, 20),
    st.booleans(),
)
segment_st = st.builds(
    lambda name, kind, items, floor, ceiling, prio, keep: Segment(
        name,
        kind,
        tuple({i.key: i for i in items}.values()),
        floor=floor,
        ceiling=ceiling,
        priority=prio,
        keep=keep,
        placement="edges" if keep == "strongest" else "given",
    ),
    st.sampled_from(["a", "b", "c", "d"]),
    st.sampled_from(["system", "messages", "context"]),
    st.lists(item_st, max_size=15),
    st.integers(0, 200),
    st.one_of(st.none(), st.integers(0, 2000)),
    st.integers(0, 100),
    st.sampled_from(["first", "newest", "strongest"]),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(segment_st, max_size=4, unique_by=lambda s: s.name), st.integers(50, 5000))
def test_budget_is_never_exceeded_every_item_is_accounted_and_same_inputs_same_window(
    segments: list[Segment], budget: int
) -> None:
    try:
        w = assemble(segments, budget)
    except BudgetError:  # only when the floors (up to what each segment holds) cannot fit
        floors = sum(min(s.floor, sum(i.tokens for i in s.items)) for s in segments)
        assert floors > budget - TOKENS_PER_REPLY
        return
    assert w.total_tokens <= budget
    for seg in segments:
        u = next(x for x in w.usage if x.name == seg.name)
        assert u.ceiling is None or u.tokens <= u.ceiling
        placed = {b.key for b in w.blocks if b.segment == seg.name}
        dropped = {o.key for o in w.overflow if o.segment == seg.name}
        assert placed | dropped == {i.key for i in seg.items}  # nothing vanishes silently
        assert not placed & dropped
        # a floor is honoured when the segment's smallest prefix of items fits in it
        if seg.floor and seg.items and seg.keep == "strongest":
            smallest = min(i.tokens for i in seg.items)
            assert u.tokens > 0 or smallest > u.allowance
    again = assemble(list(segments), budget)  # the same inputs give the same window
    assert again == w
    assert again.render_text() == w.render_text()


def test_edge_order_puts_strongest_at_both_ends() -> None:
    items = ranked(7)
    placed = [i.rank for i in edge_order(items)]
    assert placed == [1, 3, 5, 7, 6, 4, 2]
    assert placed[0] == 1 and placed[-1] == 2 and placed[1] == 3 and placed[-2] == 4


@given(st.integers(1, 60).flatmap(lambda n: st.permutations(list(range(1, n + 1)))))
def test_ranks_one_and_two_always_land_on_the_edges(order: list[int]) -> None:
    n = len(order)
    items = tuple(Item(f"m{r}", "t", 5, rank=r) for r in order)  # given in any order
    seg = Segment("mem", "context", items, keep="strongest", placement="edges")
    w = assemble([seg, q()], 10_000)
    ranks = [int(b.key[1:]) for b in w.blocks if b.segment == "mem"]
    assert ranks[0] == 1
    if n > 1:
        assert ranks[-1] == 2


def test_weakest_sit_in_the_middle_and_weak_items_drop_first() -> None:
    seg = Segment("mem", "context", ranked(10), keep="strongest", placement="edges", ceiling=60)
    w = assemble([seg, q()], 1000)
    keys = [b.key for b in w.blocks if b.segment == "mem"]
    assert keys == ["m1", "m3", "m5", "m6", "m4", "m2"]
    assert {o.key for o in w.overflow} == {"m7", "m8", "m9", "m10"}
    assert all("ceiling" in o.reason for o in w.overflow)


def test_priority_decides_who_gets_a_short_budget_and_floor_is_reserved() -> None:
    low = Segment("low", "context", ranked(20), priority=1, keep="strongest", floor=50)
    high = Segment("high", "system", tuple(Item(f"h{i}", "h", 10) for i in range(20)), priority=50)
    w = assemble([high, low, q("x")], 200)
    tokens = w.segment_tokens()
    assert tokens["low"] == 50  # its floor, even though 'high' wanted everything
    assert tokens["high"] == 140  # what was left after the question and low's floor
    assert any("no budget left" in o.reason for o in w.overflow if o.segment == "high")


def test_question_last_and_required() -> None:
    turns = Segment(
        "turns", "messages", (message_item("t0", Message("user", "hi"), TOK),), keep="newest"
    )
    w = assemble([turns, q("the question")], 100)
    assert w.blocks[-1].kind == "question" and w.blocks[-1].text == "the question"
    with pytest.raises(BudgetError):
        assemble([turns, q("x" * 1000)], 100)


def test_floors_over_budget_raise() -> None:
    seg = Segment("a", "system", ranked(10), floor=90)
    with pytest.raises(BudgetError) as info:
        assemble([seg], 50)
    assert info.value.requested == 90


def test_newest_keeps_a_contiguous_suffix_and_pinned_items() -> None:
    items = tuple(Item(f"t{i}", "t", 10, pinned=(i == 0)) for i in range(10))
    seg = Segment("turns", "messages", items, keep="newest")
    w = assemble([seg], 10 * 4 + TOKENS_PER_REPLY)
    assert [b.key for b in w.blocks] == ["t0", "t7", "t8", "t9"]


def test_grouped_items_stay_together() -> None:
    call = Item("call", "c", 10, group="g1")
    result = Item("result", "r", 30, group="g1")
    last = Item("last", "l", 10)
    seg = Segment("turns", "messages", (call, result, last), keep="newest")
    w = assemble([seg], 10 + 35 + TOKENS_PER_REPLY)
    assert [b.key for b in w.blocks] == ["last"]  # the pair did not fit: both dropped
    assert {o.key for o in w.overflow} == {"call", "result"}


def test_restate_question_before_long_context() -> None:
    seg = Segment("mem", "context", ranked(5, size=100), keep="strongest", placement="edges")
    w = assemble([seg, q("Who?")], 2000, restate_question_over=200)
    assert w.blocks[0].text == "Who?" and w.blocks[-1].text == "Who?"
    short = assemble([seg, q("Who?")], 2000, restate_question_over=10_000)
    assert short.blocks[0].segment == "mem"


def test_tool_schemas_are_canonical() -> None:
    a = tool_item({"name": "f", "parameters": {"b": 1, "a": 2}}, TOK)
    b = tool_item({"parameters": {"a": 2, "b": 1}, "name": "f"}, TOK)
    assert a.text == b.text == canonical_json({"name": "f", "parameters": {"a": 2, "b": 1}})


def _bp_segments(n_turns: int, turn_tokens: int = 100) -> list[Segment]:
    return [
        Segment("system", "system", (Item("sys", "s", 1500),), cache_ttl="1h"),
        Segment("summary", "system", (Item("sum", "s", 300),), cache_ttl="5m"),
        Segment(
            "turns",
            "messages",
            tuple(Item(f"t{i}", "t", turn_tokens) for i in range(n_turns)),
            keep="newest",
            cache_ttl="5m",
            anchor_every=16,
        ),
        Segment("mem", "context", ranked(3), keep="strongest", cache_ttl="1h"),
        q(),
    ]


def test_breakpoints_rules() -> None:
    w = assemble(_bp_segments(40), 100_000, min_cache_tokens=1024)
    bps = w.breakpoints
    assert 1 <= len(bps) <= 4
    assert all(bp.prefix_tokens >= 1024 for bp in bps)
    ttls = [bp.ttl for bp in bps]
    assert ttls == sorted(ttls, key=lambda t: t != "1h")  # 1h ones first
    assert len(bps) == 4  # five were asked for (system, summary, stone, turns, mem)
    assert bps[0].segment == "system" and bps[0].ttl == "1h"
    # a stepping stone inside the turns keeps the turns' last breakpoint within 20 blocks
    # of another, so a provider that looks back 20 blocks finds the previous entry
    turn_bps = [bp.after for bp in bps if bp.segment == "turns"]
    assert len(turn_bps) == 2 and turn_bps[1] - turn_bps[0] <= 16


def test_breakpoints_below_minimum_are_dropped() -> None:
    segs = [Segment("system", "system", (Item("sys", "s", 100),), cache_ttl="1h"), q()]
    assert assemble(segs, 10_000, min_cache_tokens=1024).breakpoints == ()
    assert len(assemble(segs, 10_000, min_cache_tokens=0).breakpoints) == 1


@given(
    st.lists(
        st.tuples(st.integers(1, 400), st.sampled_from(["5m", "1h", None]), st.integers(0, 40)),
        min_size=1,
        max_size=9,
    ),
    st.integers(0, 3000),
)
def test_breakpoint_plan_properties(
    specs: list[tuple[int, Literal["5m", "1h"] | None, int]], minimum: int
) -> None:
    segments = [
        Segment(
            f"s{k}",
            "system",
            tuple(Item(f"s{k}i{j}", "x", tokens) for j in range(3)),
            cache_ttl=ttl,
            anchor_every=anchor,
        )
        for k, (tokens, ttl, anchor) in enumerate(specs)
    ]
    w = assemble(segments, 10_000_000, min_cache_tokens=minimum)
    bps = plan_breakpoints(w.blocks, segments, min_cache_tokens=minimum)
    assert len(bps) <= 4
    assert all(bp.prefix_tokens >= minimum for bp in bps)
    assert [bp.after for bp in bps] == sorted({bp.after for bp in bps})
    seen_5m = False
    for bp in bps:
        assert not (seen_5m and bp.ttl == "1h")
        seen_5m |= bp.ttl == "5m"
