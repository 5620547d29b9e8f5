"""Chat as people type it, through ``add(infer=True)``: lower-case sentences, sentences
that start with a capital outside ASCII, and one attribute said in two phrasings.

Why (a review, s49): a sentence was split off only before an ASCII capital or a digit,
so "I live in Porto. Óscar is my brother's name." and "i live in porto. my sister's
name is ana." were each one fact; a move then closed the brother with the old home, or
left the old home current beside the new. And "My sister's name is Ana" then "My
sister is called Rita" were two attributes, both current.
"""

from __future__ import annotations

import pytest

from contextos import Memory
from contextos.text.sentences import split_sentences, to_third_person


def _open(memory: Memory, user: str) -> list[str]:
    return sorted(r.text for r in memory.get_all(user_id=user) if r.valid_to is None)


@pytest.mark.parametrize(
    ("first", "change", "kept", "closed"),
    [
        (
            "I live in Porto. Óscar is my brother's name.",
            "I moved to Lisbon.",
            "Óscar is user's brother's name.",
            "Porto",
        ),
        (
            "I work at Google. Ángela is my daughter's name.",
            "I work at Microsoft.",
            "Ángela is user's daughter's name.",
            "Google",
        ),
        (
            "I live in Porto. Émilie is my wife.",
            "I moved to Lisbon.",
            "Émilie is user's wife.",
            "Porto",
        ),
        (
            "I live in Porto. Łukasz is my husband.",
            "I moved to Lisbon.",
            "Łukasz is user's husband.",
            "Porto",
        ),
        (
            "I live in Porto. Ирина is my sister.",
            "I moved to Lisbon.",
            "Ирина is user's sister.",
            "Porto",
        ),
        (
            "I live in Porto.\x07 My sister's name is Ana.",
            "I moved to Lisbon.",
            "User's sister's name is Ana.",
            "Porto",
        ),
    ],
)
def test_a_sentence_that_starts_with_a_capital_outside_ascii_is_a_fact_of_its_own(
    memory: Memory, first: str, change: str, kept: str, closed: str
) -> None:
    """The change closes the old fact and leaves the one told beside it current."""
    memory.add(first, user_id="u", infer=True)
    memory.add(change, user_id="u", infer=True)
    still = _open(memory, "u")
    assert kept in still
    assert not [t for t in still if closed in t], still
    assert len(still) == 2, still
    assert [h.record.text for h in memory.search(kept, user_id="u")][:1] == [kept]


def test_lower_case_chat_is_split_into_its_facts_and_a_move_closes_only_the_home(
    memory: Memory,
) -> None:
    memory.add("i live in porto. my sister's name is ana.", user_id="u", infer=True)
    assert _open(memory, "u") == ["User lives in porto.", "User's sister's name is ana."]
    memory.add("i moved to lisbon.", user_id="u", infer=True)
    assert _open(memory, "u") == ["User moved to lisbon.", "User's sister's name is ana."]


@pytest.mark.parametrize(
    ("said", "stored"),
    [
        ("i live in porto.", "User lives in porto."),
        ("so i think i moved to lisbon.", "User thinks user moved to lisbon."),
        ("i'm a nurse at the city hospital.", "User is a nurse at the city hospital."),
    ],
)
def test_a_lower_case_i_is_the_first_person(memory: Memory, said: str, stored: str) -> None:
    assert [r.text for r in memory.add(said, user_id="u", infer=True)] == [stored]


def test_a_lower_case_i_that_is_no_pronoun_is_left_as_written() -> None:
    """Polish and Catalan "i" is "and"; "i.e." is no "I"."""
    for said in ("Ana i Marek mieszkają w Krakowie.", "kot i pies", "Some fruit, i.e. apples."):
        assert to_third_person(said, "Ann") == said


@pytest.mark.parametrize(
    ("said", "sentences"),
    [
        ("I saw Dr. smith today. i liked him.", ["I saw Dr. smith today.", "i liked him."]),
        ("We need approx. five chairs.", ["We need approx. five chairs."]),
        (
            "I like fruit, e.g. the apples. my sister too.",
            ["I like fruit, e.g. the apples.", "my sister too."],
        ),
        ("It costs 3.5 euros. we paid.", ["It costs 3.5 euros.", "we paid."]),
        ('She said "hi." then she left.', ['She said "hi." then she left.']),
        ("wow! that is my dog.", ["wow!", "that is my dog."]),
        ("I had hurdles... but I won.", ["I had hurdles... but I won."]),
        ("I moved. 2 weeks ago.", ["I moved.", "2 weeks ago."]),
        ("porto.\nliving here now.", ["porto.", "living here now."]),
    ],
)
def test_a_lower_case_word_starts_a_sentence_only_where_it_opens_one(
    said: str, sentences: list[str]
) -> None:
    """Abbreviations and decimals keep their sentence whole; a pronoun, determiner or
    interjection after a period starts one; a line break always ends one."""
    assert [s for _, s in split_sentences(said)] == sentences


@pytest.mark.parametrize(
    ("first", "then"),
    [
        ("My sister's name is Ana.", "My sister is called Rita."),
        ("My sister is named Ana.", "My sister's name is Rita."),
        ("My dog's name is Rex.", "My dog is called Max."),
        ("My dog is known as Rex.", "My dog is named Max."),
        ("My sister is Ana.", "My sister's name is Rita."),
    ],
)
def test_a_name_said_in_two_phrasings_is_one_attribute(
    memory: Memory, first: str, then: str
) -> None:
    memory.add(first, user_id="u", infer=True)
    memory.add(then, user_id="u", infer=True)
    expected = [then.replace("My", "User's", 1)]
    assert _open(memory, "u") == expected
    assert [h.record.text for h in memory.search(first.split()[1], user_id="u")] == expected


def test_named_after_or_known_for_gives_no_name(memory: Memory) -> None:
    """ "named after", "known for" say no name: neither closes the name told before."""
    memory.add("My son's name is Leo.", user_id="u", infer=True)
    memory.add("My son is named after my dad.", user_id="u", infer=True)
    assert _open(memory, "u") == [
        "User's son is named after user's dad.",
        "User's son's name is Leo.",
    ]


@pytest.mark.parametrize(
    "then", ["My sister is called Ana.", "My sister is named Ana.", "My sister is Ana."]
)
def test_the_same_name_in_another_phrasing_is_a_restatement(memory: Memory, then: str) -> None:
    """The name is the value, not "called ana": said again, the first fact stays."""
    memory.add("My sister's name is Ana.", user_id="u", infer=True)
    memory.add(then, user_id="u", infer=True)
    assert [(r.text, r.valid_to) for r in memory.get_all(user_id="u")] == [
        ("User's sister's name is Ana.", None)
    ]
