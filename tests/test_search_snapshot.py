"""A search returns the memories as of one moment, never a mix of before and after a write.

The retriever reads the best keyword hits' records while the query is being embedded
(to resolve the times their texts name off the search's path), and the other
candidates after. Returned as read, a commit between the two reads showed part of its
change: beside an inferring add, "User lives in Prague." and "User lives in Dublin."
came back as both current (a review: 9 searches in 44,000); beside a forget, part of
an erased session came back from a search that returned after the forget did. Every
returned record now comes from one read after the query's vector is ready.

The write is made inside the query's embedding (a test double at the Embedder seam),
so it falls between the two reads every time."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from contextos.embed import Vectors
from contextos.memory import Memory
from contextos.testing.embedders import HashEmbedder


class WriteDuringQuery(HashEmbedder):
    """Runs ``during`` once, inside the next embedding of a text starting with ``?``
    (the test's queries): after the keyword search and its early reads (given time
    to finish), before the vector search and the final read."""

    def __init__(self) -> None:
        super().__init__()
        self.during: Callable[[], object] | None = None

    def embed(self, texts: Sequence[str]) -> Vectors:
        if self.during is not None and texts and texts[0].startswith("?"):
            during, self.during = self.during, None
            time.sleep(0.2)  # the search's own thread makes its early reads meanwhile
            during()
        return super().embed(texts)


@pytest.mark.parametrize("query", ["? zebra crossing", "? zebra crossing in May 2023"])
def test_a_forget_during_a_search_is_seen_whole_or_not_at_all(tmp_path: Path, query: str) -> None:
    embedder = WriteDuringQuery()
    with Memory(tmp_path / "m.db", embedder=embedder, background_embedding=False) as m:
        for i in range(30):
            m.add(f"zebra crossing note {i} from 7 May 2023", user_id="ana", session_id="s1")
        m.add("zebra crossing kept note", user_id="ana", session_id="s2")
        erased = {r.id for r in m.get_all(user_id="ana") if r.session_id == "s1"}
        assert len(erased) == 30
        embedder.during = lambda: m.forget(session_id="s1")
        hits = m.search(query, user_id="ana", limit=50)
        assert embedder.during is None  # the forget ran inside the search
        shown = {h.record.id for h in hits} & erased
        assert shown in (set(), erased), f"{len(shown)} of the 30 erased memories returned"


def test_many_records_are_read_in_one_snapshot(tmp_path: Path) -> None:
    """``get_many`` of more ids than one statement takes (500) reads them all in one
    read transaction: a commit that changes two of them together is seen in both or in
    neither, as PostgreSQL's one statement gives."""
    db = tmp_path / "m.db"
    with Memory(db, embedder=HashEmbedder(), background_embedding=False) as m:
        ids = [r.id for r in m.add([f"note {i} v0" for i in range(1200)], user_id="ana")]
        first, last = ids[0], ids[-1]
        m.update(first, text="pair v0")
        m.update(last, text="pair v0")
        stop = threading.Event()

        def writer() -> None:
            with sqlite3.connect(db, isolation_level=None, timeout=10) as other:
                version = 0
                while not stop.is_set():
                    version += 1
                    other.execute(
                        "UPDATE memories SET text = ? WHERE id IN (?, ?)",
                        (f"pair v{version}", first, last),
                    )

        thread = threading.Thread(target=writer)
        thread.start()
        try:
            torn = 0
            for _ in range(60):
                records = {r.id: r for r in m.store.get_many(m.tenant, ids)}
                torn += records[first].text != records[last].text
        finally:
            stop.set()
            thread.join()
        assert torn == 0, f"{torn} of 60 reads saw half of a commit"
