"""``memory_placement="topic"``: the cached topic block follows erasures and corrections.

The block is kept byte-identical between calls (that is what makes the prefix cached)
and refreshed only when due (start, compaction, cache expiry) or on drift. A memory the
app erased with ``delete(purge=True)``, or corrected with ``update``, was sent as it was
retrieved, call after call, for as long as the user kept chatting on the topic. Each
call now reads the block's memories again: a deleted, closed or changed one makes the
block due; an unchanged block stays as it is.

A real ``anthropic`` client against the loopback fake, a real Memory on each store
(SQLite file, PostgreSQL schema: the block's records are read back by id and compared
with those search returned), the hash embedder.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from contextos import Filter, Scope, wrap
from contextos.engine.context import TOPIC_HEADER
from contextos.memory import Memory
from contextos.store.base import Store
from contextos.testing.embedders import HashEmbedder
from contextos.testing.fake_anthropic import FakeAnthropic

MODEL = "claude-haiku-4-5"
SECRET = "qzbicyclered"
SHED = f"Ana keeps her {SECRET} bicycle in the garden shed."
CODE = "Ana's bicycle locker code is 4471."


@pytest.fixture
def memory(store: Store) -> Iterator[Memory]:
    m = Memory(store=store, embedder=HashEmbedder(), background_embedding=False)
    yield m
    m.close()


def _ask(client: Any, fake: FakeAnthropic, text: str) -> dict[str, Any]:
    client.messages.create(model=MODEL, max_tokens=64, messages=[{"role": "user", "content": text}])
    client.flush()
    body: dict[str, Any] = fake.messages_requests()[-1].json()
    return body


def _block(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The topic block's system blocks, as sent (header, memories, breakpoint)."""
    system = body.get("system") or []
    starts = [i for i, b in enumerate(system) if b["text"] == TOPIC_HEADER]
    assert starts, "no topic block was sent"
    return list(system[starts[0] :])


def test_an_erased_or_corrected_memory_leaves_the_block_at_the_next_call(
    memory: Memory, fake_anthropic: FakeAnthropic, anthropic_client: Any
) -> None:
    fake_anthropic.reply = lambda body: "OK."
    [shed] = memory.add(SHED, user_id="ana")
    [code] = memory.add(CODE, user_id="ana")
    wrapped = wrap(anthropic_client, memory, session="s1", user_id="ana", memory_placement="topic")
    first = _ask(wrapped, fake_anthropic, "Where is my bicycle kept?")
    assert SECRET in json.dumps(_block(first))

    memory.delete(shed.id, purge=True)
    for question in ["And the garden shed?", "Tell me about my bicycle."]:
        assert SECRET not in json.dumps(_ask(wrapped, fake_anthropic, question))

    memory.update(code.id, "Ana's bicycle locker code is 9999.")
    body = json.dumps(_ask(wrapped, fake_anthropic, "What's my bicycle locker code?"))
    assert "9999" in body and "4471" not in body


def test_a_memory_closed_by_a_correction_leaves_the_block(
    memory: Memory, fake_anthropic: FakeAnthropic, anthropic_client: Any
) -> None:
    """Reconciliation closes a fact a later one contradicts (``valid_to``) without
    deleting it: search no longer finds it, and the block no longer sends it."""
    fake_anthropic.reply = lambda body: "OK."
    memory.add("Ana lives in Lisbon.", user_id="ana", infer=True)
    wrapped = wrap(anthropic_client, memory, session="s1", user_id="ana", memory_placement="topic")
    assert "Lisbon" in json.dumps(_block(_ask(wrapped, fake_anthropic, "Where do I live?")))

    memory.add("Ana moved to Porto. Ana lives in Porto now.", user_id="ana", infer=True)
    every = memory.store.list(Filter(scope=Scope(user_id="ana"), include_invalid=True))
    [lisbon] = [r for r in every if "Lisbon" in r.text]
    assert lisbon.valid_to is not None  # closed, kept
    body = json.dumps(_ask(wrapped, fake_anthropic, "Where do I live?"))
    assert "Porto" in body and "Lisbon" not in body


def test_an_unchanged_block_stays_byte_identical_while_other_memories_change(
    memory: Memory, fake_anthropic: FakeAnthropic, anthropic_client: Any
) -> None:
    """Only a change of a memory in the block moves it: the cached prefix survives
    erasures and corrections of others, on either store, and a question that would lay
    the block out otherwise (no drift: the same memories fit it) does not rebuild it."""
    fake_anthropic.reply = lambda body: "OK."
    memory.add(SHED, user_id="ana")
    memory.add(CODE, user_id="ana")
    [other] = memory.add("Ana's sister Maria plays the violin in Lisbon.", user_id="ana")

    def wrapped_for(session: str, **options: Any) -> Any:
        return wrap(
            anthropic_client,
            memory,
            session=session,
            user_id="ana",
            memory_placement="topic",
            memory_limit=2,  # the block holds the two bicycle memories
            **options,
        )

    wrapped = wrapped_for("s1")
    block = _block(_ask(wrapped, fake_anthropic, "Where is my bicycle kept?"))
    assert SECRET in json.dumps(block) and "violin" not in json.dumps(block)
    question = "What's my bicycle locker code?"
    # A block built for the next question lays the same memories out otherwise.
    assert _block(_ask(wrapped_for("probe", remember=False), fake_anthropic, question)) != block

    memory.update(other.id, "Ana's sister Maria plays the cello in Lisbon.")
    assert _block(_ask(wrapped, fake_anthropic, question)) == block
    memory.delete(other.id, purge=True)
    assert _block(_ask(wrapped, fake_anthropic, "Is the bicycle locker code the same?")) == block
