"""The cached prefix does not depend on what changes per call (memories, the question).

A provider caches a byte prefix; the summary and the topic block sit in it, before
the whole history. Were they sized after the per-call memories or the question, a
call that retrieved more memories (or asked a longer question) would rewrite the
prefix, missing the cache on the whole history, and could drop the summary, losing
the earlier conversation from the model's view.
"""

from __future__ import annotations

import pytest

from contextos.cache import final_parts, render_anthropic, wire_blocks
from contextos.engine.session import Layout, Session, context_window
from contextos.engine.summarize import Summary, SummaryLine
from contextos.engine.window import message_item
from contextos.llm.models import get_model
from contextos.llm.tokens import default_tokenizer
from contextos.memory import Memory
from contextos.testing.embedders import HashEmbedder
from contextos.types import Hit, MemoryRecord, Message

SONNET = get_model("claude-sonnet-4-5")
TOK = default_tokenizer()


def prefix_bytes(window) -> list[bytes]:
    """The wire blocks before the per-call part (memories and question)."""
    body = render_anthropic(window, SONNET)
    blocks = wire_blocks(body, "anthropic", final_parts=final_parts(window))
    return blocks[: len(window.blocks) - final_parts(window)]


def test_more_memories_never_squeeze_the_summary_out_of_the_prefix(tmp_path):
    mem = Memory(str(tmp_path / "m.db"), embedder=HashEmbedder(), background_embedding=False)
    s = Session(mem.store, "chat-1", user_id="ana")
    for i in range(40):
        s.add(
            Message("user", f"On day {i} I visited Lisbon museum number {i} with Maria."),
            Message("assistant", f"Great, museum {i} in Lisbon sounds lovely."),
        )
    assert s.compact(budget=1200, strategy="summarize").plan is not None
    i = 100
    while s.history_tokens() < 950:  # the conversation goes on, below the next trigger
        s.add(Message("user", f"Also on day {i} we ate pastries."))
        i += 1
    for i in range(30):
        mem.add(
            [
                Message(
                    "user",
                    f"My cat Tom likes fish number {i} and sleeping by the window "
                    "in Porto, next to the old tram line that passes by the river.",
                )
            ],
            user_id="ana",
            session_id=f"old-{i}",
            infer=False,
        )
    q = (
        "I am planning a long weekend trip with my family and I want to bring a present "
        "for my pet; could you remind me what my cat likes to eat, where he likes to "
        "sleep, and anything else about him that I told you before? Thanks a lot."
    )
    windows = [
        s.window(SONNET, q, budget=1800, hits=mem.search(q, user_id="ana", limit=n))
        for n in (1, 30)
    ]
    for w in windows:
        assert "summary" in {b.segment for b in w.blocks}
        assert not [o for o in w.overflow if o.segment in ("summary", "turns")]
        assert w.total_tokens <= 1800
    few, many = windows
    assert prefix_bytes(few) == prefix_bytes(many)
    # The memories took what the prefix left (the budget was short), the rest is reported.
    assert many.segment_tokens()["memories"] > few.segment_tokens()["memories"]
    assert {o.segment for o in many.overflow} == {"memories"}
    mem.close()


def test_default_layout_serves_memories_after_the_whole_prefix():
    """Memories (any number of them) take only the room the prefix leaves."""
    summary = Summary(
        tuple(SummaryLine(f"fact {i} about Lisbon", i, f"s#{i}", 1.0, 8) for i in range(6))
    )
    turns = [
        message_item(
            f"turn:{i}",
            Message("user" if i % 2 == 0 else "assistant", f"turn {i} about trains " * 6),
            TOK,
        )
        for i in range(12)
    ]
    hits = [Hit(MemoryRecord(id=f"m{i}", text=f"memory {i} " * 3), 1.0) for i in range(80)]
    base = context_window(600, tokenizer=TOK, question="q?", summary=summary, turns=turns)
    full = context_window(
        600, tokenizer=TOK, question="q?", summary=summary, turns=turns, memories=hits
    )
    assert "summary" in {b.segment for b in full.blocks}
    assert prefix_bytes(base) == prefix_bytes(full)
    assert full.segment_tokens()["memories"] > 0
    assert full.total_tokens <= 600
    assert {o.segment for o in full.overflow} == {"memories"}  # the budget was short


@pytest.mark.parametrize("extra", [25, 40])
def test_a_longer_question_costs_old_turns_not_the_topic_block(extra):
    turns = [
        message_item(
            f"turn:{i}",
            Message(
                "user" if i % 2 == 0 else "assistant",
                f"turn {i}: we talked about trains and the weather in Porto " * 3,
            ),
            TOK,
        )
        for i in range(33)
    ]
    topic = [
        Hit(
            MemoryRecord(
                id=f"m{i}",
                text=f"Ana's cat Tom likes fish number {i} and sleeping by the window in Porto.",
            ),
            1.0,
        )
        for i in range(40)
    ]
    lay = Layout(topic_ceiling=0.25)

    def build(question: str):
        return context_window(
            3000,
            tokenizer=TOK,
            question=question,
            system="You are a helpful assistant for a travel company. " * 60,
            turns=turns,
            topic=topic,
            layout=lay,
            topic_header="Memories:",
        )

    short = build("What does Tom like?")
    long = build(
        "What does Tom like? " + "Please also consider all the context above carefully. " * extra
    )
    for w in (short, long):
        assert w.total_tokens <= 3000
    assert {o.segment for o in long.overflow} >= {"turns"}  # the budget was short

    def upto_turns(w) -> list[bytes]:
        n = sum(1 for b in w.blocks if b.kind in ("tools", "system"))
        return prefix_bytes(w)[:n]

    # System prompt, topic header and topic block: the same bytes whatever the question.
    assert upto_turns(short) == upto_turns(long)
    topic_of = [[b.key for b in w.blocks if b.segment == "topic"] for w in (short, long)]
    assert topic_of[0] == topic_of[1] and topic_of[0]
