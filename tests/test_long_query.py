"""A long query is searched by meaning for its end, where a message asks its question.

Why: MiniLM reads a text's first 256 word pieces, and a window searches with the whole
last user message. One that pasted a long text and asked about it at its end was
searched, by meaning, for the text's opening: "what is Ana allergic to?" after 264 words
of preamble had relevance -0.01 to "Ana is allergic to peanuts." (0.82 asked alone), so
any floor dropped the answer (a review of the relevance floor, session 51). The real
default embedder: the test is about what it reads.
"""

from __future__ import annotations

from pathlib import Path

from contextos import Memory
from contextos.memory.retrieval import QUERY_TAIL_CHARS, dense_text

PREAMBLE = (
    "Yesterday the team spent the afternoon on the roadmap, the hiring plan, the office "
    "furniture and the coffee machine. "
) * 20
QUESTION = "Quick question: what is Ana allergic to?"


def test_a_question_after_a_long_preamble_finds_its_answer_above_a_floor(tmp_path: Path) -> None:
    assert len(PREAMBLE) > QUERY_TAIL_CHARS  # past what the embedder reads of a text
    with Memory(tmp_path / "m.db", background_embedding=False) as m:
        m.add("Ana is allergic to peanuts.", user_id="ana")
        m.add("The quarterly report is due on Friday.", user_id="ana")
        alone = m.search(QUESTION, user_id="ana", min_score=0.3)
        asked_last = m.search(PREAMBLE + QUESTION, user_id="ana", min_score=0.3)
    assert [h.record.text for h in alone][:1] == ["Ana is allergic to peanuts."]
    assert [h.record.text for h in asked_last][:1] == ["Ana is allergic to peanuts."]
    assert asked_last[0].relevance is not None and asked_last[0].relevance > 0.5


def test_a_long_query_is_read_from_a_word_of_its_end() -> None:
    short = "what is Ana allergic to?"
    assert dense_text(short) == short
    text = dense_text(PREAMBLE + QUESTION)
    assert text.endswith(QUESTION) and len(text) <= QUERY_TAIL_CHARS
    assert (PREAMBLE + QUESTION).endswith(text) and " " + text in PREAMBLE + QUESTION
    cjk = "日本語" * 500
    assert dense_text(cjk) == cjk[-QUERY_TAIL_CHARS:]  # no spaces: cut where it falls
