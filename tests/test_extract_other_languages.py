"""The offline extractor on chat in other languages, in the shapes session 55's review
of non-English users found (``/work/notes/s55/review/i18n.md``, findings H1, H2, M4,
L1): ``Memory.add(infer=True)`` on a real SQLite file with the shipped HashEmbedder.

The extractor's rewrites are English rules. Spanish, French and Portuguese "me" and
Polish "my" (we) were rewritten as the speaker, naming the wrong person ("Mi jefe me
dijo ..." said by Lucía stored as "Mi jefe Lucía dijo ...": her boss named Lucía); an
English weekday or month in a Spanish or French sentence was dated by an English tense
the sentence does not have (a plan dated the Friday before it); greetings and thanks
in other languages were stored as facts. A year-less date told in the past was put in
the anchor's year, after the day it was said ("Dec 5 the concert was amazing", said in
May, dated the coming December).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from contextos.memory import Memory
from contextos.testing.embedders import HashEmbedder
from contextos.types import MemoryRecord

#: When the turns below were said: Wednesday 15 May 2024.
SAID = datetime(2024, 5, 15, 12, 0, tzinfo=UTC)


@pytest.fixture
def memory(tmp_path: Path) -> Iterator[Memory]:
    with Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as m:
        yield m


def infer(memory: Memory, text: str, speaker: str = "Lucía") -> list[MemoryRecord]:
    """The facts ``add(infer=True)`` stores for one turn of ``speaker``'s, said at SAID."""
    message = {"role": "user", "content": text, "name": speaker}
    return memory.add(message, user_id="u", infer=True, event_time=SAID)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "text",
    [
        "Mi jefe me dijo ayer que me van a ascender.",
        "El médico me dijo que tengo gripe.",
        "Mi madre me llamó ayer.",
        "My sister me dijo que está embarazada.",
        "Je me suis cassé le bras.",
        "Eu me formei em 2019.",
        "My mieszkamy w Krakowie.",
        "I gatti sono belli, ho detto.",
        "Mi Jefe Me Dijo Que No.",  # title case: no name in it
    ],
)
def test_a_pronoun_of_another_language_is_not_the_speaker(memory: Memory, text: str) -> None:
    (fact,) = infer(memory, text)
    assert fact.text == f"Lucía: {text}"  # as said, attributed by the prefix only


@pytest.mark.parametrize(
    ("text", "fact"),
    [
        ("I love my dog.", "Lucía loves Lucía's dog."),
        ("Just got my license!", "Just got Lucía's license!"),
        ("I told her que me gusta el té.", "Lucía told her que Lucía gusta el té."),
    ],
)
def test_an_english_sentence_is_still_told_in_the_third_person(
    memory: Memory, text: str, fact: str
) -> None:
    assert [f.text for f in infer(memory, text)] == [fact]


@pytest.mark.parametrize(
    "text",
    [
        "Tengo examen el Friday.",
        "My flight to Lima sale el Sunday.",
        "Voy a Lisboa in June.",
        "Je pars en vacances in June.",
        "Nos vemos on Monday, vale.",
    ],
)
def test_an_english_weekday_or_month_in_another_language_names_no_date(
    memory: Memory, text: str
) -> None:
    facts = infer(memory, text)
    assert facts, "the sentence is still a fact"
    for fact in facts:
        assert "2024" not in fact.text and "2023" not in fact.text, fact.text  # not rewritten
        assert fact.event_time is None or fact.event_time.date() == SAID.date()


@pytest.mark.parametrize(
    ("text", "day"),
    [
        ("My exam is on Friday.", date(2024, 5, 17)),  # a plan: ahead
        ("I went hiking on Saturday.", date(2024, 5, 11)),  # told in the past: behind
        ("Dec 5 the concert was amazing.", date(2023, 12, 5)),  # not the coming December
        ("On Dec 5 we went to a concert.", date(2023, 12, 5)),
        ("The concert on Dec 5 will be great.", date(2024, 12, 5)),
        ("My birthday is on Dec 5.", date(2024, 12, 5)),  # no past: the anchor's year
        ("I went to Paris on Dec 5.", date(2023, 12, 5)),
        ("We moved here on August 15.", date(2023, 8, 15)),
        # A past that tells a plan leaves it ahead.
        ("I booked flights for Dec 20.", date(2024, 12, 20)),
        ("They told me the wedding is on Sept 9.", date(2024, 9, 9)),
        ("I bought tickets for the show on Aug 2.", date(2024, 8, 2)),
        ("The kickoff was moved to Sept 10.", date(2024, 9, 10)),
    ],
)
def test_english_times_are_dated_by_their_tense(memory: Memory, text: str, day: date) -> None:
    (fact,) = infer(memory, text, speaker="Ana")
    assert fact.event_time is not None and fact.event_time.date() == day, fact.text


@pytest.mark.parametrize(
    "text", ["Hola!", "¡Gracias!", "Danke schön!", "Sí.", "Vale.", "Claro que sí.", "Merci!"]
)
def test_greetings_and_thanks_in_another_language_are_not_facts(memory: Memory, text: str) -> None:
    assert infer(memory, text) == []


@pytest.mark.parametrize(
    ("text", "day"),
    [
        ("El Paso on Friday!", date(2024, 5, 10)),  # no verb: the last one, as before
        ("Los Angeles on Monday.", date(2024, 5, 13)),
        ("Dinner con Ana on Friday.", date(2024, 5, 10)),
        ("Hay ride on Saturday.", date(2024, 5, 11)),
    ],
)
def test_a_name_or_word_shared_with_another_language_leaves_english_as_english(
    memory: Memory, text: str, day: date
) -> None:
    """A capitalised function word before a capitalised word is part of a name ("El
    Paso"), and English words that are also Spanish ones ("con", "hay") are no sign of
    Spanish: these are still dated, as English is (a review of this session's diff)."""
    (fact,) = infer(memory, text, speaker="Ana")
    assert fact.event_time is not None and fact.event_time.date() == day, fact.text
    assert day.strftime("%-d %B %Y") in fact.text


def test_a_fact_said_after_a_greeting_is_kept(memory: Memory) -> None:
    facts = infer(memory, "¡Hola! Vivo en Madrid con mi perro.")
    assert [f.text for f in facts] == ["Lucía: Vivo en Madrid con mi perro."]
