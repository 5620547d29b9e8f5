"""An exact repeat returns the stored memory, also when it arrives at the same instant.

A double submit (two request threads of one app adding one text for one user at once)
stored the text twice on SQLite and nearly always on PostgreSQL, and search then
returned both copies (a review, session 34). Adds of one text in one scope now take
turns within a process. Both stores, a real Memory, real threads.
"""

from __future__ import annotations

import threading

from contextos.memory import Memory
from contextos.store.base import Store
from contextos.testing.embedders import HashEmbedder


def test_one_text_added_by_many_threads_at_once_is_stored_once(store: Store) -> None:
    memory = Memory(store=store, embedder=HashEmbedder(), background_embedding=False)

    def add(user_id: str, gate: threading.Barrier, ids: list[str]) -> None:
        gate.wait()
        ids.extend(r.id for r in memory.add("I am allergic to peanuts", user_id=user_id))

    for user in range(6):
        gate = threading.Barrier(12)
        ids: list[str] = []
        threads = [threading.Thread(target=add, args=(f"u{user}", gate, ids)) for _ in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        stored = memory.get_all(user_id=f"u{user}")
        assert [r.text for r in stored] == ["I am allergic to peanuts"], user
        assert set(ids) == {stored[0].id}  # every add handed back the stored one
    # Other texts and other users are not held up by it: each stored once, in parallel.
    both = memory.add(["tea", "coffee"], user_id="u0")
    assert {r.text for r in memory.get_all(user_id="u0")} == {r.text for r in both} | {
        "I am allergic to peanuts"
    }
