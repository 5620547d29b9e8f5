"""A purge of many memories blanks and logs every one of them, across its statements.

Why: a purge reads, blanks and logs the history of its memories 500 ids a statement
(``store.records.log_deletions``: one statement a memory took PostgreSQL 2.4 s for a
2,400-turn session, 7.8 s on a loaded CI machine). An id past a statement's edge whose
history kept its text, or an id logged twice or not at all, would be an erasure that
did not happen. Real SQLite files and a real PostgreSQL (the ``store`` fixture), the
hash embedder.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from contextos.memory import Memory
from contextos.store.base import Store
from contextos.testing.embedders import HashEmbedder

#: Ids a purge takes in one statement (``store.records``): the counts below sit on
#: either side of one and two statements' edges.
A_STATEMENT = 500


@pytest.fixture
def memory(store: Store) -> Iterator[Memory]:
    yield Memory(store=store, embedder=HashEmbedder(), background_embedding=False)


def _texts(tag: str, n: int) -> list[str]:
    return [f"{tag} note {i}: the locker code is {i * 7919 % 100003}" for i in range(n)]


@pytest.mark.parametrize("count", [A_STATEMENT, A_STATEMENT + 1, 2 * A_STATEMENT + 1])
def test_every_purged_memory_is_blanked_and_logged_once(memory: Memory, count: int) -> None:
    ids = [
        r.id
        for r in memory.add(
            [{"role": "user", "content": t} for t in _texts("ana", count)], user_id="ana"
        )
    ]
    assert len(set(ids)) == count
    # Memories changed before the purge have more than one event to blank: some at
    # either end of the list and around its 500th id.
    edited = {ids[0], ids[A_STATEMENT - 1], ids[-1], *ids[A_STATEMENT : A_STATEMENT + 1]}
    for memory_id in edited:
        memory.update(memory_id, f"edited {memory_id}")
    [kept] = memory.add("bob's locker code is 4242", user_id="bob")

    asked = [*ids, ids[3], ids[-1], "no-such-memory"]  # repeats and an unknown id
    assert sorted(memory.delete_many(asked, purge=True)) == sorted(ids)

    for memory_id in ids:
        events = memory.history(memory_id)
        assert [e.event for e in events].count("DELETE") == 1, (memory_id, events)
        assert events[-1].event == "DELETE", (memory_id, events)
        said = [t for e in events for t in (e.old_text, e.new_text) if t is not None]
        assert said == [], (memory_id, events)
        assert len(events) == (3 if memory_id in edited else 2), (memory_id, events)
    assert memory.search("locker code", user_id="ana") == []
    assert [(e.event, e.new_text) for e in memory.history(kept.id)] == [
        ("ADD", "bob's locker code is 4242")
    ]


def test_a_delete_without_purge_keeps_every_text_past_a_statement(memory: Memory) -> None:
    """The same many ids deleted without a purge: each history keeps its texts, so the
    blanking above is the purge's, not a side effect of logging many deletions."""
    texts = _texts("cy", A_STATEMENT + 1)
    ids = [r.id for r in memory.add([{"role": "user", "content": t} for t in texts], user_id="cy")]
    assert sorted(memory.delete_many(ids)) == sorted(ids)
    for memory_id, text in zip(ids, texts, strict=True):
        assert [(e.event, e.old_text, e.new_text) for e in memory.history(memory_id)] == [
            ("ADD", None, text),
            ("DELETE", text, None),
        ]
