"""The offline extractor on names, other languages and emoji, in the shapes a review of
session 34 found them (its i18n report, findings 1 and 5): ``Memory.add(infer=True)``
on a real SQLite file with the shipped HashEmbedder.

A word that looks like a month ("Jan", "June", Spanish "Mar", French "Sept") was read
as a date: rewritten into the stored fact as "in January 2024" and given that month as
the fact's time, the original word lost. A number that looks like a year ("2023 Euro")
dated the fact in that year. Emoji were deleted code point by code point, which left
the invisible joiners and variation selectors of a sequence in the fact and kept flags.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from contextos.memory import Memory
from contextos.testing.embedders import HashEmbedder
from contextos.text.temporal import question_time_cues
from contextos.types import MemoryRecord

#: When the turns below were said (a Tuesday).
SAID = datetime(2024, 10, 15, 12, 0, tzinfo=UTC)


@pytest.fixture
def memory(tmp_path: Path) -> Iterator[Memory]:
    with Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as m:
        yield m


def infer(memory: Memory, text: str, user: str = "ana") -> list[MemoryRecord]:
    """The facts ``add(infer=True)`` stores for one turn of Ana's, said at ``SAID``."""
    message = {"role": "user", "content": text, "name": "Ana"}
    return memory.add(message, user_id=user, infer=True, event_time=SAID)  # type: ignore[arg-type]


# -- a month's name that is not a date ---------------------------------------------

NOT_DATES = [
    # (what Ana said, words the stored fact must keep)
    ("Jan ist mein Bruder und wohnt in Hamburg", "Jan ist mein Bruder"),
    ("Fuimos a Mar del Plata con mis padres", "Fuimos a Mar del Plata"),
    ("Sept amis sont venus dîner chez moi", "Sept amis sont venus"),
    ("August ist mein Großvater und lebt in Wien", "August ist mein Großvater"),
    ("Mi hermana April vive en Valencia", "Mi hermana April vive"),
    ("God Jul och gott nytt år från Stockholm", "God Jul och gott"),
    ("Jan called me about the Hamburg flat", "Jan called"),
    ("My brother Jan lives in Hamburg", "brother Jan lives in Hamburg"),
    ("June is my best friend from Porto", "June is"),
    ("I got a birthday card from June", "from June"),
    ("I bought a painting by August Strindberg", "by August Strindberg"),
    ("I slept in June's room in Porto", "in June's room"),
    ("We had dinner in Mar-a-Lago with Tom", "in Mar-a-Lago"),
    ("I stayed in Jan Mayen with the research team", "in Jan Mayen"),
]


@pytest.mark.parametrize(("text", "kept"), NOT_DATES)
def test_a_name_or_a_word_of_another_language_stays_as_written(
    memory: Memory, text: str, kept: str
) -> None:
    """Was: "Jan ist mein Bruder" stored as "Ana: in January 2024 ist mein Bruder", dated
    1 January 2024; "Fuimos a Mar del Plata" as "Fuimos a in March 2024 del Plata"."""
    facts = infer(memory, text)
    assert facts, "no fact stored"
    assert any(kept in f.text for f in facts), [f.text for f in facts]
    for fact in facts:
        assert not re.search(r"\b20\d\d\b", fact.text), fact.text  # no year written in
        assert fact.event_time == SAID, (fact.text, fact.event_time)


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("Ich habe 2023 Euro für das Auto gespart", "2023 Euro"),
        ("I paid $2000 for the bike in Lisbon", "$2000"),
        ("Nous avons marché 2000 mètres jusqu'à Montmartre", "2000 mètres"),
        ("I ran 2000 metres at the Porto stadium", "2000 metres"),
        # a count, or a number that names a thing (a review: each was dated that year)
        ("I bought 1999 shares of ACME for my pension", "1999 shares"),
        ("My flat is number 2010 on Main street", "2010"),
        ("My pin code is 1987, do not tell anyone", "1987"),
    ],
)
def test_an_amount_is_not_a_year(memory: Memory, text: str, kept: str) -> None:
    """Was: "Ich habe 2023 Euro gespart" dated 1 January 2023."""
    facts = infer(memory, text)
    assert any(kept in f.text for f in facts), [f.text for f in facts]
    assert all(f.event_time == SAID for f in facts), [(f.text, f.event_time) for f in facts]


@pytest.mark.parametrize(
    ("text", "written", "when"),
    [
        # A month with a preposition, "last/next" or a word of time is still a date.
        ("I moved to Hamburg in June", "in June 2024", datetime(2024, 6, 1, tzinfo=UTC)),
        ("I visited Jan last August", "in August 2024", datetime(2024, 8, 1, tzinfo=UTC)),
        (
            "I have lived in Lisbon since Jan 2023",
            "since Jan 2023",
            datetime(2023, 1, 1, tzinfo=UTC),
        ),
        (
            "I finished the mural at the end of June",
            "at the end of June 2024",
            datetime(2024, 6, 1, tzinfo=UTC),
        ),
        ("I painted it in mid-March", "in mid-March 2024", datetime(2024, 3, 1, tzinfo=UTC)),
        (
            "I worked in Porto from June to August",
            "from June 2024 to August 2024",
            datetime(2024, 6, 1, tzinfo=UTC),
        ),
        (
            "I travelled between May and July",
            "between May 2024 and July 2024",
            datetime(2024, 5, 1, tzinfo=UTC),
        ),
    ],
)
def test_a_month_in_a_date_context_is_still_dated_and_written_out(
    memory: Memory, text: str, written: str, when: datetime
) -> None:
    """The dates the extractor read before are read the same; a month after a word of
    time gets its year without a preposition wedged in ("the end of in June 2024")."""
    [fact] = infer(memory, text)
    assert written in fact.text, fact.text
    assert fact.event_time == when, (fact.text, fact.event_time)


@pytest.mark.parametrize(
    "question",
    [
        "Wann hat Jan angerufen?",
        "¿Cuándo fuimos a Mar del Plata?",
        "What did June say about Porto?",
        "Who sent the card from June?",
    ],
)
def test_a_question_naming_a_person_or_place_has_no_time_cue(question: str) -> None:
    cue = question_time_cues(question, now=SAID)
    assert cue is None or (cue.start, cue.end) == (None, None), cue


# -- emoji ---------------------------------------------------------------------------

#: Anything of an emoji left in a fact: pictographs, regional indicators, skin tones,
#: joiners, variation selectors, keycap marks and tags.
_EMOJI_LEFT = re.compile(
    "[\U0001f000-\U0001faff\u2600-\u27bf\u2b50\u200d\ufe0e\ufe0f\u20e3\U000e0000-\U000e007f]"
)


#: The flag of Scotland: a black flag, then tag letters "gbsct" and CANCEL TAG.
SCOTLAND = "🏴\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f"


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("Meet 👩🏽\u200d💻 Ana at the Lisbon office", "Meet Ana at the Lisbon office"),
        ("I love my dog 🐕\u200d🦺 Rex so much", "dog Rex so much"),
        (
            "Family 👨\u200d👩\u200d👧\u200d👦 trip to Rome 🇮🇹 with Tom!",
            "Family trip to Rome with Tom!",
        ),
        ("We marched at Pride 🏳️\u200d🌈 in Lisbon", "Pride in Lisbon"),
        ("Visiting 🇯🇵 Tokyo with Tom", "Visiting Tokyo with Tom"),
        (f"Cheering for Scotland {SCOTLAND} in Glasgow", "Scotland in Glasgow"),
        ("I drink coffee☕️every morning in Porto", "coffee every morning"),
        ("I live at number 4️⃣ Rua Augusta", "number 4 Rua Augusta"),
        ("I ❤️ Paris and Lyon ⭐", "Paris and Lyon"),
    ],
)
def test_emoji_sequences_are_stripped_whole(memory: Memory, text: str, kept: str) -> None:
    """Was: "Meet 👩🏽‍💻 Ana" stored as "Meet\\u200d Ana", flags kept."""
    facts = infer(memory, text)
    assert any(kept in f.text for f in facts), [f.text for f in facts]
    for fact in facts:
        assert not _EMOJI_LEFT.search(fact.text), ascii(fact.text)
        assert "  " not in fact.text and fact.text == fact.text.strip(), ascii(fact.text)


def test_a_joiner_inside_a_word_of_an_indic_script_is_kept(memory: Memory) -> None:
    """Only an emoji's joiner goes: in Malayalam and Devanagari a ZERO WIDTH JOINER
    inside a word chooses how it is written, and is part of the word."""
    text = "എന്‍\u200dറെ വീട് കൊച്ചിയിലാണ്. मेरा क्\u200dष नाम है।"
    facts = infer(memory, text)
    stored = " ".join(f.text for f in facts)
    assert "എന്‍\u200dറെ" in stored and "क्\u200dष" in stored, ascii(stored)


def test_the_facts_stored_beside_a_turn_keep_the_name_and_lose_the_emoji(tmp_path: Path) -> None:
    """The same extractor writes the facts beside a session's turns
    (``Memory(turn_facts=True)``), which are embedded with the turn."""
    with Memory(
        tmp_path / "t.db", embedder=HashEmbedder(), background_embedding=False, turn_facts=True
    ) as memory:
        message = {"content": "My brother Jan 👨🏽\u200d🍳 cooks in Hamburg.", "name": "Ana"}
        memory.add(message, user_id="ana", session_id="s", event_time=SAID)  # type: ignore[arg-type]
        facts = [r for r in memory.get_all(user_id="ana") if "fact_of" in r.metadata]
        assert [f.text for f in facts] == ["Ana's brother Jan cooks in Hamburg."], [
            ascii(f.text) for f in facts
        ]
        assert facts[0].event_time == SAID
