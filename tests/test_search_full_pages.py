"""A search returns ``limit`` hits whenever that many memories match.

With a turn's facts stored beside it (``Memory(turn_facts=True)``) a turn and its
facts are one hit (``by_source``), and the candidates were cut to the page's size by
id before they were grouped: 120 matching turns, ``limit=50`` gave 40 hits and
``limit=100`` gave 90 (a review). The retriever now reads deeper into its candidates
until the page is full or they run out."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from contextos.memory import Memory
from contextos.testing.embedders import HashEmbedder


@pytest.fixture(scope="module")
def memory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Memory]:
    db = tmp_path_factory.mktemp("pages") / "m.db"
    with Memory(db, embedder=HashEmbedder(), turn_facts=True, background_embedding=False) as m:
        _hikes(m)
        yield m


def _hikes(m: Memory) -> None:
    for i in range(120):
        m.add(
            [
                {
                    "role": "user",
                    "content": f"I went hiking in the Alps on May {i % 28 + 1} 2023 with my "
                    f"brother Tom and my dog Rex number {i}.",
                },
                {"role": "assistant", "content": f"That sounds lovely, hiking trip {i}."},
            ],
            user_id="ana",
            session_id=f"s{i % 10}",
        )


@pytest.mark.parametrize("limit", [10, 50, 100])
def test_a_page_of_turns_with_their_facts_is_full(memory: Memory, limit: int) -> None:
    records = memory.get_all(user_id="ana", limit=1000)
    assert sum("fact_of" in r.metadata for r in records) >= 100  # facts beside the turns
    hits = memory.search("hiking Alps brother", user_id="ana", limit=limit)
    assert len(hits) == limit
    assert len({h.record.id for h in hits}) == limit
