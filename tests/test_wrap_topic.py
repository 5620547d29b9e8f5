"""``wrap(..., memory_placement="topic")``: the topic memory block on the wrap path.

A real ``anthropic.Anthropic`` client against the local fake server (which
does prompt-cache accounting), a real Memory on SQLite with the HashEmbedder,
and a scripted conversation over three topics whose facts live in memory
from earlier sessions.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

anthropic = pytest.importorskip("anthropic")

from contextos.engine.context import SessionContext  # noqa: E402
from contextos.errors import ConfigError  # noqa: E402
from contextos.memory import Memory  # noqa: E402
from contextos.providers import ChatRequest, wrap  # noqa: E402
from contextos.testing.embedders import HashEmbedder  # noqa: E402
from contextos.testing.fake_anthropic import FakeAnthropic  # noqa: E402
from contextos.testing.fake_openai import FakeOpenAI  # noqa: E402
from contextos.types import Message  # noqa: E402

#: A model whose minimum cacheable prefix (512) a small test window passes.
MODEL = "claude-opus-5"
SYSTEM = "You are a helpful assistant for Dana. " * 60
#: Room for about three of the facts: the block holds one topic at a time.
MEMORY_TOKENS = 80

#: Facts from earlier sessions, three topics; each has a unique evidence word.
FACTS = {
    "garden": [
        "Dana grows tomatoes in the garden and waters the garden tomatoes at dawn (zyxgarden1).",
        "Dana's garden has roses that need pruning every garden spring (zyxgarden2).",
        "Dana keeps garden compost beside the garden shed (zyxgarden3).",
    ],
    "car": [
        "Dana drives a blue car and the car needs new car tires soon (zyxcar1).",
        "Dana's car mechanic is called Ravi, he fixed the car brakes (zyxcar2).",
        "Dana parks the car in the car garage on Elm street (zyxcar3).",
    ],
    "piano": [
        "Dana plays piano and practises piano scales every piano evening (zyxpiano1).",
        "Dana's piano teacher is Mrs Olsen, piano lessons on Tuesday (zyxpiano2).",
        "Dana wants to play a Chopin piano nocturne on the piano (zyxpiano3).",
    ],
}
#: The scripted conversation: (question, the evidence word it needs).
SCRIPT = [
    ("When do I water the garden tomatoes?", "zyxgarden1"),
    ("What do the garden roses need in spring?", "zyxgarden2"),
    ("Where is my garden compost?", "zyxgarden3"),
    ("Tell me again about the garden tomatoes.", "zyxgarden1"),
    ("What does my car need soon, the car tires?", "zyxcar1"),
    ("Who fixed the car brakes?", "zyxcar2"),
    ("Where do I park the car?", "zyxcar3"),
    ("Which car tires again?", "zyxcar1"),
    ("When do I practise piano scales?", "zyxpiano1"),
    ("Who is my piano teacher?", "zyxpiano2"),
    ("Which piano nocturne do I want to play?", "zyxpiano3"),
    ("Piano scales in the evening, right?", "zyxpiano1"),
]


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(min_cache_tokens=512) as server:
        yield server


@pytest.fixture
def client(fake: FakeAnthropic) -> Iterator[Any]:
    c = anthropic.Anthropic(base_url=fake.base_url, api_key="test", max_retries=0)
    yield c
    c.close()


def _memory(path: Path) -> Memory:
    """A memory holding the facts, each topic from an earlier session of its own."""
    m = Memory(path, embedder=HashEmbedder(), background_embedding=False)
    for topic, facts in FACTS.items():
        m.add([Message("user", f) for f in facts], user_id="dana", session_id=f"old-{topic}")
    return m


@pytest.fixture
def memory(tmp_path: Path) -> Iterator[Memory]:
    m = _memory(tmp_path / "memory.db")
    yield m
    for thread in threading.enumerate():  # a wrapper's background commit still writing
        if thread.name == "contextos-commit":
            thread.join()
    m.close()


def _ask(c: Any, text: str) -> Any:
    return c.messages.create(
        model=MODEL,
        max_tokens=64,
        system=SYSTEM,
        messages=[{"role": "user", "content": text}],
    )


def _wrap(
    client: Any, memory: Memory, placement: str = "topic", memory_tokens: int = MEMORY_TOKENS
) -> Any:
    """``client`` wrapped for Dana's session ``s1``, memories placed per ``placement``."""
    return wrap(
        client,
        memory,
        session="s1",
        user_id="dana",
        memory_placement=placement,
        memory_tokens=memory_tokens,
    )


def _system_text(body: dict[str, Any]) -> list[str]:
    return [b["text"] for b in body.get("system", [])]


def _topic_request(fake: FakeAnthropic, n: int) -> tuple[list[Any], str]:
    """The system blocks of the ``n``-th request and the memories among them (joined)."""
    body = fake.messages_requests()[n].json()
    blocks = body["system"]
    return blocks, "\n".join(b["text"] for b in blocks if "zyx" in b["text"])


def _run(tmp_path: Path, placement: str, memory_tokens: int) -> tuple[float, float]:
    """(cache-read share of input tokens, share of questions with their evidence in the window).

    Each placement gets its own memory and server: the exchanges one run
    remembers must not be retrieved by the other.
    """
    memory = _memory(tmp_path / f"{placement}-{memory_tokens}.db")
    read = total = found = 0
    with (
        FakeAnthropic(min_cache_tokens=512) as fake,
        anthropic.Anthropic(base_url=fake.base_url, api_key="test", max_retries=0) as client,
    ):
        wrapped = _wrap(client, memory, placement=placement, memory_tokens=memory_tokens)
        for question, _ in SCRIPT:
            usage = _ask(wrapped, question).usage
            read += usage.cache_read_input_tokens
            total += (
                usage.input_tokens
                + usage.cache_read_input_tokens
                + usage.cache_creation_input_tokens
            )
            wrapped.flush()
        for (_, evidence), request in zip(SCRIPT, fake.messages_requests(), strict=True):
            found += evidence in request.body.decode()
    memory.close()
    return read / total, found / len(SCRIPT)


# -- the layout ------------------------------------------------------------------


def test_block_sits_in_the_cached_prefix_and_survives_byte_identically(client, memory, fake):
    wrapped = _wrap(client, memory)
    _ask(wrapped, "When do I water the garden tomatoes?")
    wrapped.flush()
    second = _ask(wrapped, "What do the garden roses need in spring?")
    wrapped.flush()
    first_blocks, first_topic = _topic_request(fake, 0)
    second_blocks, second_topic = _topic_request(fake, 1)
    assert "zyxgarden1" in first_topic and "zyxgarden2" in first_topic
    assert any(b["text"].startswith("Memories about the current topic") for b in first_blocks)
    # The block is a system block with its own breakpoint, byte-identical in call 2,
    # and call 2's prefix starts with call 1's up to that breakpoint.
    upto = max(i for i, b in enumerate(first_blocks) if "zyx" in b["text"])
    assert first_blocks[upto].get("cache_control")
    assert second_blocks[: upto + 1] == first_blocks[: upto + 1]
    assert second_topic == first_topic
    assert second.usage.cache_read_input_tokens > 0
    # The question is last, the memories are not repeated after the history.
    body = fake.messages_requests()[1].json()
    last = body["messages"][-1]
    text = last["content"] if isinstance(last["content"], str) else last["content"][-1]["text"]
    assert text.endswith("What do the garden roses need in spring?")
    assert "zyxgarden2" not in str(body["messages"])


def test_a_drifted_question_refreshes_the_block(client, memory, fake):
    wrapped = _wrap(client, memory)
    for question in (
        "When do I water the garden tomatoes?",
        "Piano scales, piano teacher, piano nocturne?",
    ):
        _ask(wrapped, question)
        wrapped.flush()
    _, first = _topic_request(fake, 0)
    _, second = _topic_request(fake, 1)
    assert "zyxgarden1" in first and "zyxpiano" not in first
    assert "zyxpiano1" in second and second != first


def test_a_restart_rebuilds_the_block_and_is_correct(client, memory, fake):
    first = _wrap(client, memory)
    _ask(first, "When do I water the garden tomatoes?")
    first.flush()
    again = _wrap(client, memory)
    assert again.context.topic.due and not again.context.topic.hits
    _ask(again, "What does my car need soon, the car tires?")
    again.flush()
    _, topic = _topic_request(fake, 1)
    assert "zyxcar1" in topic
    body = fake.messages_requests()[1].json()
    assert "water the garden tomatoes" in str(body["messages"])  # the logged history
    assert again.context.topic.hits and not again.context.topic.due


def _text(message: dict[str, Any]) -> str:
    content = message["content"]
    return content if isinstance(content, str) else "".join(p["text"] for p in content)


def test_openai_gets_the_block_in_its_system_prefix(memory):
    openai = pytest.importorskip("openai")
    with (
        FakeOpenAI() as server,
        openai.OpenAI(base_url=server.base_url, api_key="test", max_retries=0) as client,
    ):
        wrapped = _wrap(client, memory)
        for question in ("Where do I park the car?", "Who fixed the car brakes?"):
            wrapped.chat.completions.create(
                model="gpt-4o-mini",
                messages=[
                    {"role": "system", "content": SYSTEM},
                    {"role": "user", "content": question},
                ],
            )
            wrapped.flush()
        first, second = (r.json()["messages"] for r in server.completions_requests())
    assert "zyxcar3" in str(first[:-1]) and _text(first[-1]).endswith("park the car?")
    # The same block, in the same place, before the history: the prefix is stable.
    prefix = len(first) - 1
    assert second[:prefix] == first[:prefix] and "zyxcar3" in str(second[:prefix])
    assert _text(second[prefix]) == "Where do I park the car?"  # the history after the block
    assert _text(second[-1]).endswith("the car brakes?")


# -- the engine, directly ------------------------------------------------------------


def _request(text: str) -> ChatRequest:
    return ChatRequest(model=MODEL, system=(SYSTEM,), messages=(Message("user", text),))


def _context(memory: Memory, **options: Any) -> SessionContext:
    """An engine for Dana's session ``s1`` with the topic block, committing inline."""
    return SessionContext(
        memory=memory,
        session="s1",
        user_id="dana",
        placement="topic",
        background_commit=False,
        **options,
    )


def _segments(prepared: Any) -> dict[str, str]:
    out: dict[str, str] = {}
    for block in prepared.window.blocks:
        out[block.segment] = out.get(block.segment, "") + block.text
    return out


def test_delta_holds_what_the_block_lacks(memory):
    now = [0.0]
    ctx = _context(memory, memory_tokens=MEMORY_TOKENS, clock=lambda: now[0])
    ctx.topic.margin = 10.0  # never drift: the block stays on the garden
    ctx.prepare(_request("When do I water the garden tomatoes?"), reserve_tokens=64)
    garden = {h.record.id for h in ctx.topic.hits}
    now[0] += 10
    prepared = ctx.prepare(_request("Who fixed the car brakes?"), reserve_tokens=64)
    seg = _segments(prepared)
    assert {h.record.id for h in ctx.topic.hits} == garden  # not refreshed
    assert "zyxgarden1" in seg["topic"] and "zyxcar2" not in seg["topic"]
    assert "zyxcar2" in seg["memories"] and "zyxgarden" not in seg["memories"]
    assert list(seg)[-1] == "question"


def test_cache_expiry_and_compaction_make_the_block_due(memory):
    now = [0.0]
    ctx = _context(memory, memory_tokens=MEMORY_TOKENS, clock=lambda: now[0])
    ctx.topic.margin = 10.0
    ctx.prepare(_request("When do I water the garden tomatoes?"), reserve_tokens=64)
    now[0] += 60
    ctx.prepare(_request("Who fixed the car brakes?"), reserve_tokens=64)
    assert "zyxgarden1" in _segments(ctx.prepare(_request("car?"), reserve_tokens=64))["topic"]
    now[0] += 301  # the provider's 5-minute cache is gone: refresh for free
    seg = _segments(ctx.prepare(_request("Who fixed the car brakes?"), reserve_tokens=64))
    assert "zyxcar2" in seg["topic"]
    ctx.budget = 1400  # a small window: the history passes its trigger and compacts
    for i in range(12):
        ctx.session.add(Message("user", f"filler about nothing much {i} " * 20))
    now[0] += 1
    seg = _segments(ctx.prepare(_request("Where is my garden compost?"), reserve_tokens=64))
    assert ctx.session.state().summary is not None
    assert "zyxgarden3" in seg["topic"]  # refreshed with the compaction, no drift needed


def test_the_block_is_sized_like_the_memory_segment(memory):
    """memory_tokens and memory_limit bound the block, not a share of the 1M window."""
    ctx = _context(memory, memory_limit=2)
    prepared = ctx.prepare(_request("When do I water the garden tomatoes?"), reserve_tokens=64)
    assert len(ctx.topic.hits) == 2
    topic = [b for b in prepared.window.blocks if b.segment == "topic"]
    assert 0 < sum(b.tokens for b in topic) <= ctx.memory_tokens


def test_bad_placement_and_no_embedder_are_clear_errors(memory):
    with pytest.raises(ValueError, match="placement"):
        SessionContext(memory=memory, user_id="dana", placement="middle")  # type: ignore[arg-type]

    class NoEmbedder:
        def search(self, *a: Any, **k: Any) -> list[Any]:
            return []

        def add(self, *a: Any, **k: Any) -> list[Any]:
            return []

    with pytest.raises(ConfigError, match="embedder"):
        SessionContext(memory=NoEmbedder(), user_id="dana", placement="topic")


def test_wrap_refuses_a_bad_placement_even_without_memory(client):
    # A typo must fail where it is written, not later when memory is attached.
    with pytest.raises(ValueError, match="placement"):
        wrap(client, memory_placement="middle")


# -- the measurement ------------------------------------------------------------------


@pytest.mark.parametrize("memory_tokens", [MEMORY_TOKENS, 1024])
def test_topic_vs_per_call_on_the_wrap_path(tmp_path, capsys, memory_tokens):
    """The measurement behind the default: cache-read share and evidence, both placements.

    At ``MEMORY_TOKENS`` the block holds one topic and is rewritten at each topic
    change; at 1024 (the default) it holds 8 of the 9 facts (``memory_limit``),
    so it rarely changes, while the per-call layout pays for its memories
    uncached on every call.
    """
    per_call = _run(tmp_path, "per_call", memory_tokens)
    topic = _run(tmp_path, "topic", memory_tokens)
    with capsys.disabled():
        print(
            f"\nwrap placement, memory_tokens={memory_tokens}, {len(SCRIPT)} scripted calls "
            f"over 3 topics: per_call cache-read share {per_call[0]:.3f} evidence "
            f"{per_call[1]:.3f}; topic cache-read share {topic[0]:.3f} evidence {topic[1]:.3f}"
        )
    assert topic[1] >= per_call[1]
    if memory_tokens >= 1024:
        assert topic[0] > per_call[0]
