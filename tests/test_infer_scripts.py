"""Inferred facts in scripts other than Latin.

The word pattern the extractor and the reconciler compare by was ASCII: a Russian,
Greek or Chinese sentence had no words, so the offline extractor kept none of it
(``add(infer=True)`` returned ``[]``, the CLI said "nothing new to remember"), and with
a model writing the facts every fact of a user after the first was dropped as a "near
duplicate" of it (two empty word sets compared as equal). A review.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from contextos import Memory
from contextos.memory.extract_llm import LLMExtractor
from contextos.testing.embedders import HashEmbedder
from contextos.testing.llm import ScriptedLLM

FACTS = {
    "ru": ["Я живу в Москве.", "Я люблю зелёный чай.", "Моя сестра Анна работает врачом."],
    "el": ["Μένω στην Αθήνα.", "Μου αρέσει ο καφές.", "Η αδελφή μου είναι γιατρός."],
    "zh": ["我住在北京。", "我喜欢喝绿茶。", "我的妹妹是医生。"],
}


def _current(memory: Memory, user: str) -> list[str]:
    return sorted(r.text for r in memory.get_all(user_id=user) if r.valid_to is None)


@pytest.mark.parametrize("script", sorted(FACTS))
def test_the_offline_extractor_keeps_facts_in_any_script(tmp_path: Path, script: str) -> None:
    with Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as m:
        for said in FACTS[script]:
            assert m.add(said, user_id="u", infer=True), said
        current = _current(m, "u")
        assert len(current) == 3
        for said in FACTS[script]:
            assert any(said.rstrip("。.") in text for text in current), (said, current)
        assert m.add(FACTS[script][0], user_id="u", infer=True) == []  # said again: known


def test_facts_a_model_writes_in_cyrillic_are_not_taken_for_one_another(tmp_path: Path) -> None:
    said = ["Анна живёт в Москве.", "Анна любит зелёный чай.", "Анна работает врачом."]
    with Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as m:
        for text in said:
            reply = json.dumps({"facts": [{"text": text, "type": "semantic"}]})
            extractor = LLMExtractor(ScriptedLLM([reply]))
            message = {"role": "user", "name": "Анна", "content": text}
            assert m.add(message, user_id="anna", infer=True, extractor=extractor), text
        assert _current(m, "anna") == sorted(said)


def test_two_texts_with_no_words_to_compare_are_not_alike() -> None:
    """The reconciler calls a candidate a near duplicate of a stored fact at a word
    overlap of 0.8 or more; two empty word sets (emoji, or a script the word pattern
    missed) counted as 1.0, which dropped every Russian fact after the first."""
    from contextos.text.claims import jaccard, stem_tokens

    assert jaccard(stem_tokens("🍣 🍜"), stem_tokens("⚽ 🏀")) == 0.0
    assert jaccard(frozenset({"tea"}), frozenset({"tea"})) == 1.0


def test_a_fact_dated_by_a_model_comes_back_from_add_in_utc(tmp_path: Path) -> None:
    """``add`` returned the model's date naive while ``get`` gave it in UTC: comparing
    the returned time with an aware one raised TypeError (a review)."""
    from datetime import UTC, datetime

    fact = {"text": "Ann went to a support group.", "type": "episodic", "date": "2023-05-07"}
    extractor = LLMExtractor(ScriptedLLM([json.dumps({"facts": [fact]})]))
    message = {"role": "user", "name": "Ann", "content": "I went to a support group yesterday!"}
    with Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as m:
        (record,) = m.add(message, user_id="ann", infer=True, extractor=extractor)
        assert record.event_time == datetime(2023, 5, 7, tzinfo=UTC)
        assert record.event_time.tzinfo is not None
        assert m.get(record.id).event_time == record.event_time  # type: ignore[union-attr]


def test_a_sentence_the_third_person_makes_longer_is_kept_within_a_memorys_limit(
    tmp_path: Path,
) -> None:
    """A message within the limit whose one sentence the offline extractor rewrote
    longer ("I" -> "User") became a fact of 152,379 characters: stored, then refused
    by ``update`` with its own text (a review)."""
    from contextos.memory.ingest import MAX_TEXT_CHARS

    said = ("I think my cat and I " * 10_000)[: MAX_TEXT_CHARS - 1] + "."
    with Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as m:
        facts = m.add(said, user_id="u", infer=True)
        assert facts and all(len(f.text) <= MAX_TEXT_CHARS for f in facts)
        m.update(facts[0].id, facts[0].text)  # what is stored can be written again


def test_a_move_typed_in_decomposed_unicode_replaces_the_old_place(tmp_path: Path) -> None:
    """macOS input methods (and some clients) send "á" as "a" and a combining accent
    (NFD): the move to Bogotá left Paris current, and the same fact composed and
    decomposed was stored twice (a review)."""
    import unicodedata

    bogota = "I live in Bogotá."
    decomposed = unicodedata.normalize("NFD", bogota)
    assert decomposed != bogota
    with Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as m:
        m.add("I live in Paris.", user_id="a", infer=True)
        m.add(decomposed, user_id="a", infer=True)
        assert [unicodedata.normalize("NFC", t) for t in _current(m, "a")] == [
            "User lives in Bogotá."
        ]
        m.add(bogota, user_id="c", infer=True)
        assert m.add(decomposed, user_id="c", infer=True) == []  # the same fact
        assert len(_current(m, "c")) == 1
