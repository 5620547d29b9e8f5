"""A search for an identifier (an order, ticket or invoice number) finds the memory that
holds it first, before and after that memory's vector is stored.

An embedding model barely tells one code from another ("INV-96456" from "INV-57541"),
so once the background worker had stored the vectors the dense ranking favoured
memories that merely looked alike, and the one holding the code fell to 2nd-8th: the
same search answered differently a few seconds after the add (a review: 8 of 20 codes
with MiniLM). A keyword hit holding an identifier the query names now gets the dense
term of its keyword rank when that is more than its own, which is what it got while its
vector was pending."""

from __future__ import annotations

from pathlib import Path

from contextos.memory import Memory
from contextos.memory.retrieval import identifiers
from contextos.testing.embedders import HashEmbedder

#: Memories that look like the one asked for: the same prefix, the same words. The
#: HashEmbedder (a bag of words) puts them nearer the query than the memory holding the
#: code, as MiniLM does.
LOOKALIKES = [f"INV invoice INV reference INV-{n}" for n in (57541, 13751, 80012, 44120)]
HOLDER = "The bank confirmed the parent meeting invoice for March, reference INV-96456."


def _memory(db: Path) -> Memory:
    return Memory(db, embedder=HashEmbedder(), background_embedding=False)


def test_the_memory_holding_the_code_is_first_once_embedded(tmp_path: Path) -> None:
    with _memory(tmp_path / "m.db") as m:
        m.add(LOOKALIKES, user_id="ana")
        [holder] = m.add(HOLDER, user_id="ana")
        for query in ("INV-96456", "where is invoice INV-96456?", "INV reference 96456"):
            hits = m.search(query, user_id="ana", limit=3)
            assert hits[0].record.id == holder.id, (query, [h.record.text for h in hits])
            assert hits[0].dense_rank is not None  # its vector is stored and ranked


def test_a_question_without_an_identifier_is_ranked_as_before(tmp_path: Path) -> None:
    """No identifier, no change: the lookalikes' shared words still win a question
    that names no code (and nothing extra is read)."""
    assert identifiers("which invoice reference did the bank confirm in 2023?") == set()
    with _memory(tmp_path / "m.db") as m:
        m.add(LOOKALIKES, user_id="ana")
        m.add(HOLDER, user_id="ana")
        hits = m.search("INV invoice reference", user_id="ana", limit=1)
        assert hits[0].record.text in LOOKALIKES


def test_what_reads_as_an_identifier() -> None:
    assert identifiers("order INV-96456 and ticket 51141") == {"inv-96456", "51141"}
    assert identifiers("A1B2C3, COVID-19 and v2.3.1") == {"a1b2c3", "covid-19", "v2.3.1"}
    # A year, a date, a time, a short code: read for their meaning, not as codes.
    assert identifiers("in 2023, on 7/5/2023 at 10am, my MP3, room 42") == set()
