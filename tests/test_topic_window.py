"""The topic block in a window: the cached prefix is byte-identical between refreshes."""

from __future__ import annotations

from datetime import UTC, datetime

from contextos.cache import cached_prefix, final_parts, render, wire_blocks
from contextos.engine.compaction import HistoryState
from contextos.engine.session import Layout, context_window, novel_hits, turn_items
from contextos.engine.summarize import Summary, SummaryLine
from contextos.engine.topic import TopicBlock
from contextos.llm.models import get_model
from contextos.llm.tokens import default_tokenizer
from contextos.testing.embedders import HashEmbedder
from contextos.types import Hit, MemoryRecord, Message, Turn

TOK = default_tokenizer()
SONNET = get_model("claude-sonnet-4-6")
SYSTEM = "You are a friend who remembers what was said. " * 120  # over the cache minimum
LAYOUT = Layout(topic_ceiling=0.3, memories_ceiling=0.1, memories_priority=25)
DOGS = [f"Ana said her dog Rex ran to the park on day {i}" for i in range(8)]
GUITAR = [f"Bo said his guitar band played jazz songs on day {i}" for i in range(8)]


def hits(texts: list[str], prefix: str) -> list[Hit]:
    return [
        Hit(
            MemoryRecord(f"{prefix}{i}", t, metadata={"dia_id": f"{prefix}:{i}"}), score=1 / (i + 1)
        )
        for i, t in enumerate(texts)
    ]


def turn(seq: int, text: str) -> Turn:
    msg = Message("user" if seq % 2 == 0 else "assistant", text)
    return Turn("s", seq, msg, TOK.count_messages([msg]) - 3, datetime(2024, 1, 1, tzinfo=UTC))


def window(turns: list[Turn], question: str, block: list[Hit], delta: list[Hit], budget: int):
    return context_window(
        budget,
        tokenizer=TOK,
        question=question,
        min_cache_tokens=SONNET.min_cache_tokens,
        system=SYSTEM,
        turns=turn_items(turns, HistoryState(), TOK),
        memories=delta,
        topic=block,
        layout=LAYOUT,
    )


def stream(w) -> bytes:
    return b"".join(
        wire_blocks(render(w, SONNET, "anthropic"), "anthropic", final_parts=final_parts(w))
    )


def test_the_cached_prefix_is_byte_identical_until_the_block_refreshes():
    topic = TopicBlock(HashEmbedder(256), margin=0.5, delta_top=3)
    dogs, guitar = hits(DOGS, "d"), hits(GUITAR, "g")
    turns: list[Turn] = []
    prev = None
    questions = ["Where did Rex run?", "Did Rex like the park?", "Was Bo's jazz band good?"]
    fresh_per_call = [dogs[:5], dogs[3:8], [guitar[0], dogs[0], guitar[1]]]
    deltas = []
    for k, (q, fresh) in enumerate(zip(questions, fresh_per_call, strict=True)):
        block, delta, refreshed = topic.update(q, fresh)
        assert refreshed == (k == 0)
        deltas.append([h.record.id for h in delta])
        w = window(turns, q, block, delta, 8000)
        assert [b.segment for b in w.blocks].index("topic") < [b.segment for b in w.blocks].index(
            "question"
        )
        if prev is not None:
            # Same block, one more exchange in the history: the last call's cached
            # bytes are the start of this call, whatever the delta holds.
            assert stream(w).startswith(
                cached_prefix(render(prev, SONNET, "anthropic"), prev, "anthropic")
            )
        prev = w
        turns += [turn(len(turns), q), turn(len(turns) + 1, f"answer {k}")]
    assert deltas[1] and deltas[2]  # the delta changed per call; the prefix did not
    # A due refresh (a compaction, an expired cache) rewrites the prefix.
    topic.due = True
    block, _, refreshed = topic.update("Was Bo's jazz band good?", guitar[:5])
    assert refreshed
    w = window(turns, "Was Bo's jazz band good?", block, [], 8000)
    assert not stream(w).startswith(
        cached_prefix(render(prev, SONNET, "anthropic"), prev, "anthropic")
    )


def test_the_delta_only_fills_what_the_cached_prefix_leaves():
    """With the delta's priority below the summary's, a big delta never squeezes the prefix."""
    summary = Summary(
        tuple(
            SummaryLine(f"Ana said fact number {i} about her week.", i, f"s:{i}", 1.0, 12)
            for i in range(40)
        ),
        0,
        39,
    )
    turns = [turn(i, f"message {i} about the weekend plans") for i in range(20)]
    block = hits(DOGS, "d")[:4]

    def build(delta: list[Hit], budget: int):
        return context_window(
            budget,
            tokenizer=TOK,
            question="What about the band?",
            min_cache_tokens=SONNET.min_cache_tokens,
            system=SYSTEM[:2000],
            summary=summary,
            turns=turn_items(turns, HistoryState(), TOK),
            memories=delta,
            topic=block,
            layout=Layout(
                topic_ceiling=0.3, memories_ceiling=0.5, memories_priority=25, summary_ceiling=0.4
            ),
        )

    budget = build([], 4000).total_tokens + 40  # room for about two memories of the delta
    windows = [build(delta, budget) for delta in ([], hits(GUITAR, "g"))]
    quiet, busy = windows
    assert "summary" in {b.segment for b in busy.blocks}
    prefix = cached_prefix(render(quiet, SONNET, "anthropic"), quiet, "anthropic")
    assert prefix and stream(busy).startswith(prefix)
    assert busy.total_tokens <= budget
    assert 0 < busy.segment_tokens()["memories"] <= 40


def test_novel_hits_skip_what_the_history_shows_and_fill_the_room():
    found = hits(DOGS, "d")
    for h in found:
        assert h.tokens == 0
    sized = [Hit(h.record, h.score, tokens=10) for h in found]
    kept = novel_hits(sized, lambda h: h.record.id in {"d0", "d2"}, token_budget=30)
    assert [h.record.id for h in kept] == ["d1", "d3", "d4"]
