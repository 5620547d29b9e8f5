"""What the offline extractor stores from natural chat (the s45 review of ``add(infer=True)``).

Five causes, each a test group: the user's own habits read as rules, and one of them
closing the answer-language rule (§5); instructions to the assistant dropped as
chit-chat or stored as facts (§4); recurrences pinned to one day (§2); questions stored
as facts with a broken verb (§6); a past in its own time frame, or a wish, dated the
day it was said (§8). Said on Wednesday 15 May 2024.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from contextos import Memory
from contextos.bench.extract_speed import load_locomo_sessions
from contextos.memory.extract import Candidate, OfflineExtractor
from contextos.testing.embedders import HashEmbedder
from contextos.text.claims import claim
from contextos.text.sentences import to_third_person
from contextos.types import Filter, Message, Scope

SAID = datetime(2024, 5, 15, 12, 0, tzinfo=UTC)
LOCOMO = (
    Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "locomo" / "locomo-dev.json"
)


def extract(text: str) -> list[Candidate]:
    turn = Message("user", text, name="Ann", metadata={"dia_id": "D1:1"})
    return OfflineExtractor().extract([turn], session_time=SAID)


def one(text: str) -> Candidate:
    [cand] = extract(text)
    return cand


def _memory(tmp_path: Path) -> Memory:
    return Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False)


# -- §5: the user's own habits are no rules ---------------------------------------------
@pytest.mark.parametrize(
    ("text", "stored"),
    [
        ("I talk in my sleep.", "Ann talks in Ann's sleep."),
        ("I write in my journal every night.", "Ann writes in Ann's journal every night."),
        ("I talk in French with my grandmother.", "Ann talks in French with Ann's grandmother."),
        (
            "I always answer in Spanish when my mom calls.",
            "Ann always answers in Spanish when Ann's mom calls.",
        ),
    ],
)
def test_a_habit_of_the_user_is_a_fact_not_a_rule(text: str, stored: str) -> None:
    cand = one(text)
    assert (cand.text, cand.memory_type, cand.event_time) == (stored, "semantic", None)


def test_the_users_habit_leaves_the_answer_language_rule_open(tmp_path: Path) -> None:
    with _memory(tmp_path) as m:
        [rule] = m.add(
            [{"role": "user", "content": "Always answer in English."}],
            user_id="u",
            infer=True,
            event_time=SAID,
        )
        assert rule.memory_type == "procedural"
        [habit] = m.add(
            [{"role": "user", "content": "I always answer in Spanish when my mom calls."}],
            user_id="u",
            infer=True,
            event_time=SAID.replace(hour=13),
        )
        assert habit.memory_type == "semantic"
        every = {
            r.text: r
            for r in m.store.list(
                Filter(scope=Scope(m.tenant, "u"), include_invalid=True), limit=10
            )
        }
        assert every[rule.text].valid_to is None  # the rule still holds
        assert sorted(r.text for r in m.get_all(user_id="u")) == sorted([rule.text, habit.text])
        # ... and a rule said to the assistant still replaces it
        [spanish] = m.add(
            [{"role": "user", "content": "Answer in Spanish from now on."}],
            user_id="u",
            infer=True,
            event_time=SAID.replace(hour=14),
        )
        assert sorted(r.text for r in m.get_all(user_id="u")) == sorted([spanish.text, habit.text])


@pytest.mark.parametrize(
    ("text", "value", "negated"),
    [
        ("Ann always answers in Spanish when Ann's mom calls.", None, None),
        ("Ann talks in French with Ann's grandmother.", None, None),
        ("Ann: Always answer in English.", "english", False),
        ("Ann: Never answer in French.", "french", True),
        ("Ann: From now on, reply only in German.", "german", False),
        ("Ann wants you to answer in Italian.", "italian", False),
    ],
)
def test_the_language_rule_is_read_only_where_it_is_asked_for(
    text: str, value: str | None, negated: bool | None
) -> None:
    held = claim(text, "Ann")
    if value is None:
        assert held is None or held.slot != "language"
    else:
        assert held is not None and (held.slot, held.value, held.negated) == (
            "language",
            value,
            negated,
        )


# -- §4: instructions to the assistant are rules ------------------------------------------
@pytest.mark.parametrize(
    ("text", "stored"),
    [
        ("Don't use emojis in your replies.", "Ann: Don't use emojis in your replies."),
        ("Be concise.", "Ann: Be concise."),
        ("Stop using French.", "Ann: Stop using French."),
        ("Never book me flights on Ryanair.", "Never book Ann flights on Ryanair."),
        ("Write code in Python.", "Ann: Write code in Python."),
        ("Talk to me like a pirate.", "Talk to Ann like a pirate."),
        ("Give me the answer in bullet points.", "Give Ann the answer in bullet points."),
        ("Please keep it short.", "Ann: Please keep it short."),
        ("And from now on, avoid jargon.", "Ann: And from now on, avoid jargon."),
    ],
)
def test_an_instruction_to_the_assistant_is_a_rule(text: str, stored: str) -> None:
    cand = one(text)
    assert (cand.text, cand.memory_type, cand.event_time) == (stored, "procedural", None)


@pytest.mark.parametrize(
    "text",
    [
        "Take care!",
        "Let me know how it goes.",
        "Check out this photo!",
        "Keep it up!",
        "Keep it simple!",
        "Have fun!",
        "Never give up!",
        "Don't give up on your dreams!",
        "Give me a call sometime.",
        "Tell me more about it!",
        "Talk to you soon!",
        "Be careful out there!",
        "Use your imagination!",
    ],
)
def test_what_friends_tell_each_other_is_no_rule(text: str) -> None:
    assert [c for c in extract(text) if c.memory_type == "procedural"] == []


@pytest.mark.skipif(not LOCOMO.is_file(), reason="LoCoMo dev split not present")
def test_a_chat_between_friends_makes_next_to_no_rules() -> None:
    ex = OfflineExtractor()
    rules = [
        c.text
        for s in load_locomo_sessions(LOCOMO)
        for c in ex.extract(s.messages, session_time=s.session_time)
        if c.memory_type == "procedural"
    ]
    # 2,760 turns; the one rule is "... writing down ... from now on" (a "from now on" plan)
    assert len(rules) <= 1, rules


def test_a_request_to_forget_is_not_stored() -> None:
    assert extract("Forget what I said about Tokyo.") == []
    assert extract("Please forget everything about my ex.") == []


def test_a_reminder_is_left_as_it_was() -> None:
    cand = one("Remind me to call mom tomorrow.")
    assert (cand.text, cand.memory_type) == ("Remind Ann to call mom on 16 May 2024.", "episodic")
    assert cand.event_time is not None and cand.event_time.date().isoformat() == "2024-05-16"


# -- §2: a recurrence is a habit, not a day -------------------------------------------------
@pytest.mark.parametrize(
    ("text", "stored"),
    [
        ("I go swimming every Friday.", "Ann goes swimming every Friday."),
        (
            "We have a team standup each Monday at 9am.",
            "Ann: We have a team standup each Monday at 9am.",
        ),
        ("Every June we went camping in the Alps.", "Ann: Every June we went camping in the Alps."),
        ("I had yoga on Fridays.", "Ann had yoga on Fridays."),
        (
            "I played tennis every other Friday with Marco.",
            "Ann played tennis every other Friday with Marco.",
        ),
    ],
)
def test_a_recurrence_is_a_habit_with_no_date(text: str, stored: str) -> None:
    cand = one(text)
    assert (cand.text, cand.memory_type, cand.event_time) == (stored, "semantic", None)


def test_a_day_named_once_is_still_an_event() -> None:
    cand = one("I went swimming on Friday.")
    assert cand.memory_type == "episodic"
    assert cand.event_time is not None and cand.event_time.date().isoformat() == "2024-05-10"


# -- §6: questions ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Should I buy a Tesla or a BMW?", "Should Ann buy a Tesla or a BMW?"),
        ("Why did I feel so tired?", "Why did Ann feel so tired?"),
        ("Can't I go too?", "Can't Ann go too?"),
        ("What can I say, I love turtles.", "What can Ann say, Ann loves turtles."),
        ("Not only did I win, I won it twice.", "Not only did Ann win, Ann won it twice."),
        ("I buy my bread here.", "Ann buys Ann's bread here."),
    ],
)
def test_a_verb_after_an_inverted_auxiliary_stays_bare(text: str, expected: str) -> None:
    assert to_third_person(text, "Ann") == expected


@pytest.mark.parametrize(
    "text",
    [
        "Should I buy a Tesla or a BMW?",
        "Do you think I should quit my job at Google?",
        "Why did I feel so tired yesterday?",
        "Did I tell you about the weather?",
        "Guess what I did last week?",
    ],
)
def test_a_question_is_no_fact(text: str) -> None:
    assert extract(text) == []


def test_a_question_that_tells_keeps_what_it_tells() -> None:
    cand = one("Did I tell you I got promoted last week?")
    assert (cand.text, cand.memory_type) == (
        "Ann got promoted in the week of 6 May 2024.",
        "episodic",
    )
    assert cand.event_time is not None and cand.event_time.date().isoformat() == "2024-05-06"


def test_a_statement_before_a_tagged_on_question_is_kept() -> None:
    cand = one("I finished another pottery project in Boston - want to see a pic?")
    assert cand.text == "Ann finished another pottery project in Boston."
    assert cand.memory_type == "episodic" and cand.event_time == SAID


# -- §8: a past in its own time frame, a wish -----------------------------------------------
@pytest.mark.parametrize(
    ("text", "stored"),
    [
        ("When I was 10, I lived in Kenya.", "When Ann was 10, Ann lived in Kenya."),
        ("As a kid, I played the violin.", "As a kid, Ann played the violin."),
        ("Growing up, I had three dogs.", "Growing up, Ann had three dogs."),
        ("I wish I had a dog.", "Ann wishes Ann had a dog."),
        ("If I had more time, I would paint.", "If Ann had more time, Ann would paint."),
    ],
)
def test_a_childhood_or_a_wish_is_no_event_of_the_day(text: str, stored: str) -> None:
    cand = one(text)
    assert (cand.text, cand.memory_type, cand.event_time) == (stored, "semantic", None)


def test_a_plain_past_is_still_an_event_of_the_day() -> None:
    cand = one("I lived in Kenya, and I wish I could go back.")
    assert (cand.memory_type, cand.event_time) == ("episodic", SAID)


# -- §9: "not ... anymore" ends the fact it denies -------------------------------------------
def _told(tmp_path: Path, first: str, then: str) -> tuple[dict[str, bool], str]:
    """Said one hour apart: each stored text and whether it still holds; the first's text."""
    with _memory(tmp_path) as m:
        [old] = m.add(
            [{"role": "user", "content": first}], user_id="u", infer=True, event_time=SAID
        )
        m.add(
            [{"role": "user", "content": then}],
            user_id="u",
            infer=True,
            event_time=SAID.replace(hour=13),
        )
        every = m.store.list(Filter(scope=Scope(m.tenant, "u"), include_invalid=True), limit=10)
        return {r.text: r.valid_to is None for r in every}, old.text


@pytest.mark.parametrize(
    ("first", "then"),
    [
        ("I drink coffee every morning.", "I don't drink coffee anymore."),
        ("I'm married to Tom.", "I'm not married to Tom anymore."),
        ("I play the cello in an orchestra.", "I no longer play the cello in an orchestra."),
        ("I play tennis on weekends.", "I no longer play tennis."),
        ("Marco plays tennis.", "Marco doesn't play tennis anymore."),
    ],
)
def test_a_fact_denied_as_no_longer_true_ends(tmp_path: Path, first: str, then: str) -> None:
    held, old = _told(tmp_path, first, then)
    assert held[old] is False


@pytest.mark.parametrize(
    ("first", "then"),
    [
        ("I play tennis every Friday.", "I don't play golf anymore."),
        # another's denial: not the user's fact (diff45b §6)
        ("I play tennis with Marco every Friday.", "Marco doesn't play tennis anymore."),
        ("Tom lives in Oslo.", "I don't live in Oslo anymore."),
        ("I live in Oslo.", "My sister doesn't live in Oslo anymore."),
        # a part of the fact denied: the rest still holds (diff45b §6)
        ("I play tennis and golf every weekend with my brother.", "I don't play golf anymore."),
        (
            "I drink coffee and green tea every morning before work.",
            "I don't drink coffee anymore.",
        ),
        ("I use Linux at work and a Mac at home.", "I don't use a Mac anymore."),
        ("I play tennis with Marco every Friday.", "I don't play tennis anymore."),
        ("I'm married to Tom.", "I'm not married anymore."),
        # a narrower denial ("at night") leaves the wider fact
        ("I drink coffee every morning.", "I don't drink coffee at night anymore."),
        # an event stays told
        ("I put my bike in the shed yesterday.", "I don't put my bike in the shed anymore."),
    ],
)
def test_a_denial_of_something_else_leaves_the_fact(tmp_path: Path, first: str, then: str) -> None:
    held, old = _told(tmp_path, first, then)
    assert held[old] is True
    assert all(held.values()), held  # and the denial is kept beside it


# -- diff45b §4: a request for this once, or advice, is no rule ------------------------------
@pytest.mark.parametrize(
    "text",
    [
        "Write a function in Python that reverses a string.",
        "Write a SQL query that lists all users who signed up in May.",
        "Write an email to my landlord in German about the broken heater.",
        "Give me a list of 10 French words for beginners.",
        "Use a table for this one.",
        "Answer in French this time.",
        "Give me your honest answer about my essay.",
        "Reply to Sarah's email in a formal tone.",
        "Never give up, the answers will come.",
        "Use the French press, the coffee tastes better.",
        "Please write a function in Python.",
        "Write it in German.",
    ],
)
def test_a_task_or_advice_is_no_rule(tmp_path: Path, text: str) -> None:
    with _memory(tmp_path) as m:
        added = m.add([{"role": "user", "content": text}], user_id="u", infer=True, event_time=SAID)
        assert [r.memory_type for r in added if r.memory_type == "procedural"] == []


@pytest.mark.parametrize(
    "text",
    [
        "Use bullet points.",
        "Use metric units.",
        "Write in British English.",
        "Never mention the weather in your replies.",
        "Format your answers as JSON.",
        "Reply in a formal tone.",
        "Don't give me long answers.",
        "Stop using Catalan.",
        "Answer in Vietnamese.",
    ],
)
def test_how_to_answer_from_now_on_is_a_rule(tmp_path: Path, text: str) -> None:
    with _memory(tmp_path) as m:
        added = m.add([{"role": "user", "content": text}], user_id="u", infer=True, event_time=SAID)
        assert [r.memory_type for r in added] == ["procedural"]


# -- diff45b §5: a question that tells a fact keeps it --------------------------------------
@pytest.mark.parametrize(
    ("text", "stored"),
    [
        ("Did I mention I'm moving to Berlin in July?", "Ann is moving to Berlin in July 2024."),
        ("Have I mentioned that my sister lives in Tokyo?", "Ann's sister lives in Tokyo."),
        ("Remember when I told you I was allergic to peanuts?", "Ann was allergic to peanuts."),
        ("Did I tell you about my new job at Apple?", "Ann's new job at Apple."),
        ("Did I tell you about my trip to Paris?", "Ann's trip to Paris."),
    ],
)
def test_a_question_that_tells_without_to_you_keeps_it(
    tmp_path: Path, text: str, stored: str
) -> None:
    with _memory(tmp_path) as m:
        turn = {"role": "user", "name": "Ann", "content": text}
        added = m.add([turn], user_id="u", infer=True, event_time=SAID)
        assert [r.text for r in added] == [stored]


# -- diff45b §7: one list of what opens an instruction ------------------------------------
@pytest.mark.parametrize("then", ["Pls answer in Spanish.", "In the future answer in Spanish."])
def test_a_rule_with_any_opener_replaces_the_rule(tmp_path: Path, then: str) -> None:
    with _memory(tmp_path) as m:
        m.add(
            [{"role": "user", "content": "Always answer in English."}],
            user_id="u",
            infer=True,
            event_time=SAID,
        )
        [new] = m.add(
            [{"role": "user", "content": then}],
            user_id="u",
            infer=True,
            event_time=SAID.replace(hour=13),
        )
        assert new.memory_type == "procedural"
        assert [r.text for r in m.get_all(user_id="u")] == [new.text]


# -- a rule's end: "stop answering in French" --------------------------------------------
@pytest.mark.parametrize(
    "stop", ["Please stop answering in French.", "Stop using French.", "Quit replying in French."]
)
def test_stop_answering_in_a_language_ends_the_rule(tmp_path: Path, stop: str) -> None:
    """Read as no claim, "Please stop answering in French" left "Always answer in French"
    current beside it, and every window pinned both (review s45 online F4)."""
    with _memory(tmp_path) as m:
        m.add("Always answer in French.", user_id="u", infer=True)
        m.add(stop, user_id="u", infer=True)
        assert not [r.text for r in m.get_all(user_id="u") if "answer in French" in r.text]


def test_the_users_own_past_habit_of_a_language_ends_no_rule(tmp_path: Path) -> None:
    with _memory(tmp_path) as m:
        m.add("Always answer in French.", user_id="u", infer=True)
        m.add("I stopped speaking French at home years ago.", user_id="u", infer=True)
        m.add("I quit speaking French when I moved.", user_id="u", infer=True)
        assert any("answer in French" in r.text for r in m.get_all(user_id="u"))
