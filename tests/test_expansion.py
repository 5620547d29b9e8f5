"""Document expansion: a session turn is embedded with its extracted facts, and its
stored vector carries its facts' own vectors (``memory.turn_vectors``).

Real SQLite files in tmp_path and the shipped HashEmbedder (a bag of hashed words,
so a cosine shows which words a vector was made from). The recall this buys on
LoCoMo with the real embedder is pinned in tests/test_retrieval_quality.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from contextos.memory import Memory, RetrievalConfig
from contextos.memory.expansion import MAX_TURN_FACTS, expansion_facts, is_conversation_turn
from contextos.memory.infer import facts_beside
from contextos.memory.render import embedding_text, render
from contextos.memory.turn_vectors import FACT_VECTOR_WEIGHT, embed_records, facts_of_turn
from contextos.testing.embedders import HashEmbedder
from contextos.types import MemoryRecord

WHEN = datetime(2023, 5, 8, 13, 56, tzinfo=UTC)
TURN = "Hi Bob! I adopted a puppy named Rex yesterday."
DENSE = RetrievalConfig(mode="dense")


def memory(path: Path, **kwargs: object) -> Memory:
    return Memory(
        path,
        embedder=HashEmbedder(),
        background_embedding=False,
        retrieval=DENSE,
        **kwargs,  # type: ignore[arg-type]
    )


def add_turn(m: Memory, text: str, dia: str = "D1:1") -> MemoryRecord:
    message = {"role": "user", "content": text, "name": "Ann", "dia_id": dia}
    return m.add(message, user_id="u", session_id="s", event_time=WHEN)[0]


def cosine(a: str, b: str) -> float:
    emb = HashEmbedder()
    va, vb = emb.embed([a, b])
    return float(np.dot(va, vb))


def stored_cosine(query: str, turn: MemoryRecord) -> float:
    """The cosine of ``query`` with the vector a turn is stored with, written out here:
    the unit direction of its text's vector plus FACT_VECTOR_WEIGHT times the sum of
    its facts' vectors."""
    emb = HashEmbedder()
    facts = [embedding_text(f) for f in facts_of_turn(turn)]
    vectors = emb.embed([embedding_text(turn), *facts])
    combined = vectors[0] + FACT_VECTOR_WEIGHT * vectors[1:].sum(axis=0)
    combined /= np.linalg.norm(combined)
    return float(np.dot(emb.embed([query])[0], combined))


def test_a_turn_is_embedded_with_its_dated_facts_and_stored_verbatim(tmp_path: Path) -> None:
    with memory(tmp_path / "m.db") as m:
        turn = add_turn(m, TURN)
        facts = expansion_facts(turn)
        assert any("Rex on 7 May 2023" in f for f in facts)  # "yesterday", resolved
        text = embedding_text(turn)
        assert text.startswith(f"Ann: {TURN}") and all(f in text for f in facts)
        m.flush()
        query = "Ann adopted a puppy named Rex on 7 May 2023"
        [hit] = m.search(query, user_id="u", limit=1)
        # What is stored, returned and rendered is the turn verbatim ...
        assert hit.record.text == TURN and "2023-05-08" in render(hit.record)
        assert "7 May" not in render(hit.record)
        # ... what was embedded is the turn and its facts, and the facts alone.
        assert hit.relevance == pytest.approx(stored_cosine(query, turn), abs=1e-5)
        assert hit.relevance is not None and abs(hit.relevance - cosine(query, text)) > 1e-3
        assert cosine(query, text) > cosine(query, f"Ann: {TURN}") + 0.1


def test_only_session_turns_are_expanded(tmp_path: Path) -> None:
    with memory(tmp_path / "m.db", turn_facts=True) as m:
        turn = add_turn(m, TURN)
        beside = [r for r in m.get_all(user_id="u") if "fact_of" in r.metadata]
        outside = m.add(TURN, user_id="u")[0]  # no session: a note, not a turn
        inferred = m.add(
            {"role": "user", "content": TURN, "name": "Ann"},
            user_id="v",  # another user: nothing stored to reconcile it with
            session_id="s2",
            event_time=WHEN,
            infer=True,
        )
        # add(infer=True) copies the caller's metadata onto its facts, "role" included
        inferred_with_role = m.add(
            {"role": "user", "content": TURN, "name": "Ann"},
            user_id="w",
            session_id="s3",
            event_time=WHEN,
            infer=True,
            metadata={"role": "user"},
        )
        assert is_conversation_turn(turn) and expansion_facts(turn)
        assert beside and inferred and inferred_with_role
        assert all(r.metadata.get("role") == "user" for r in inferred_with_role)
        for record in (*beside, outside, *inferred, *inferred_with_role):
            assert not is_conversation_turn(record)
            assert expansion_facts(record) == []


def test_an_edited_turn_is_embedded_from_its_new_facts(tmp_path: Path) -> None:
    with memory(tmp_path / "m.db") as m:
        turn = add_turn(m, TURN)
        m.flush()
        edited = m.update(turn.id, "I adopted a kitten named Tom yesterday.")
        m.flush()
        assert any("Tom on 7 May 2023" in f for f in expansion_facts(edited))
        query = "Ann adopted a kitten named Tom on 7 May 2023"
        [hit] = m.search(query, user_id="u", limit=1)
        assert hit.record.text == edited.text
        assert hit.relevance == pytest.approx(stored_cosine(query, edited), abs=1e-5)


def test_only_a_turn_with_facts_gets_its_facts_vectors(tmp_path: Path) -> None:
    emb = HashEmbedder()
    with memory(tmp_path / "m.db") as m:
        turn = add_turn(m, TURN)
        chat = add_turn(m, "Haha, sure!", dia="D1:2")  # no fact worth keeping
        note = m.add(TURN, user_id="u")[0]  # not a session turn
        assert facts_of_turn(turn) and not facts_of_turn(chat) and not facts_of_turn(note)
        vectors = embed_records(emb.embed, [turn, chat, note])
        plain = emb.embed([embedding_text(r) for r in (turn, chat, note)])
        np.testing.assert_allclose(vectors[1:], plain[1:], atol=1e-6)
        assert float(np.dot(vectors[0], plain[0])) < 0.99  # moved toward its facts
        assert np.linalg.norm(vectors[0]) == pytest.approx(1.0, abs=1e-5)
        # The weight 0 is the text's vector alone, in one embed call of the texts only.
        calls = emb.calls
        np.testing.assert_allclose(embed_records(emb.embed, [turn], fact_weight=0), plain[:1])
        assert emb.calls == calls + 1


def test_a_long_turn_costs_a_bounded_number_of_embeddings(tmp_path: Path) -> None:
    """The facts grow with the text; what is embedded for a turn does not: its text and
    its first MAX_TURN_FACTS facts (appended, and as vectors of their own)."""
    text = " ".join(
        f"I visited the museum of town {i} with my sister Ann last week." for i in range(300)
    )
    sizes: list[int] = []

    def embed(texts: Sequence[str]) -> np.ndarray:
        sizes.append(len(texts))
        return HashEmbedder().embed(texts)

    with memory(tmp_path / "m.db") as m:
        turn = add_turn(m, text)
        every = [f.text for f in facts_beside([turn])]
        assert len(every) > 10 * MAX_TURN_FACTS  # the extractor finds them all
        assert expansion_facts(turn) == every[:MAX_TURN_FACTS]
        assert [f.text for f in facts_of_turn(turn)] == every[:MAX_TURN_FACTS]
        assert embedding_text(turn).endswith(every[MAX_TURN_FACTS - 1])
        embed_records(embed, [turn])
        assert sizes == [1 + MAX_TURN_FACTS]
        (hit,) = m.search("museum of town 7", user_id="u")  # stored, found
        assert hit.record.id == turn.id


def test_an_embedder_returning_the_wrong_count_is_an_error(tmp_path: Path) -> None:
    with memory(tmp_path / "m.db") as m:
        turn = add_turn(m, TURN)
        with pytest.raises(ValueError, match="embedder returned shape"):
            embed_records(lambda texts: HashEmbedder().embed(texts)[:-1], [turn])
