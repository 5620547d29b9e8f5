"""The LLM extractor reads each turn as the offline one does: its relative dates from the
turn's own time, its facts credited to the speaker of the turn they come from; and a name
that merely starts with the speaker's ("Anna" for Ann) is another person's (a review, s41).

The model is a deterministic double that does what ``extract@1`` asks: it dates
"yesterday" from the request's "Session time" line, and names the source turn."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta

from contextos.memory import Memory
from contextos.memory.extract_llm import LLMExtractor
from contextos.memory.render import render
from contextos.testing.llm import ScriptedLLM, turns_in
from contextos.text.claims import starts_with_name, subject_of
from contextos.types import Filter, MemoryRecord, Message, Scope


def _session_day(prompt: str) -> date:
    """The day of the request's "Session time" (a time, or a day alone)."""
    found = re.search(r"^Session time: (\d{4}-\d\d-\d\d)", prompt, re.M)
    assert found, prompt
    return date.fromisoformat(found.group(1))


def dating_model(system: str, messages: Sequence[Message]) -> str:
    """A fact for each turn that went somewhere "yesterday", dated from the session time."""
    prompt = messages[0].content
    day = _session_day(prompt) - timedelta(days=1)
    facts = [
        {
            "text": f"{speaker} went to {place} on {day:%d %B %Y}",
            "type": "episodic",
            "date": day.isoformat(),
            "source": tid,
        }
        for tid, speaker, text in turns_in(prompt)
        for place in re.findall(r"went to (?:the |a )?(\w+) yesterday", text)
    ]
    return json.dumps({"facts": facts})


def living_model(system: str, messages: Sequence[Message]) -> str:
    """ "<speaker> lives in <city>" for each turn saying where its speaker lives."""
    facts = [
        {"text": f"{speaker} lives in {city}", "type": "semantic", "source": tid}
        for tid, speaker, text in turns_in(messages[0].content)
        for city in re.findall(r"live in (\w+)", text)
    ]
    return json.dumps({"facts": facts})


def _all(memory: Memory, user: str) -> list[MemoryRecord]:
    scope = Scope(memory.tenant, user_id=user)
    return memory.store.list(Filter(scope=scope, include_invalid=True), limit=50)


# -- 2: relative dates against each turn's time ---------------------------------------------


def test_llm_facts_are_dated_from_each_turns_own_time(memory: Memory) -> None:
    """An imported conversation: each message carries when it was said, the add none.
    The model was told the add's time (now), so "yesterday" became the day before today,
    after the fact's own ``valid_from``. Now each request's session time is its turns'."""
    said = [datetime(2023, 5, 8, 13, 56), datetime(2023, 5, 8, 18, 2), datetime(2023, 6, 1, 9)]
    messages = [
        {
            "role": "user",
            "name": "Caroline",
            "dia_id": f"D1:{i}",
            "content": f"I went to the {place} yesterday!",
            "metadata": {"event_time": when.isoformat()},
        }
        for i, (place, when) in enumerate(zip(["museum", "beach", "zoo"], said, strict=True))
    ]
    llm = ScriptedLLM([dating_model] * 5)
    out = memory.add(messages, user_id="caroline", infer=True, extractor=LLMExtractor(llm))
    by_turn = {r.provenance: r for r in out}
    for i, when in enumerate(said):
        fact = by_turn[(f"D1:{i}",)]
        day_before = datetime.combine(when.date() - timedelta(days=1), datetime.min.time(), UTC)
        assert fact.event_time == day_before, fact.text
        assert fact.valid_from is not None and fact.valid_from <= when.replace(tzinfo=UTC)
    # One request per day: the two turns of 8 May share one (their day, as they differ in
    # time); the one of 1 June has its own, at its time.
    heads = [call.messages[0].content.splitlines()[0] for call in llm.calls]
    assert heads == ["Session time: 2023-05-08", "Session time: 2023-06-01 09:00+00:00"]


def test_turns_of_one_time_keep_the_one_request_and_its_time(memory: Memory) -> None:
    """Turns said at one time (a LoCoMo session, a chat exchange) are one request, as
    before, headed by that time: the call's, where the turns carry none."""
    messages = [
        {
            "role": "user",
            "name": "Ann",
            "dia_id": "D1:1",
            "content": "I went to the zoo yesterday.",
        },
        {"role": "user", "name": "Bo", "dia_id": "D1:2", "content": "I went to a gym yesterday."},
    ]
    llm = ScriptedLLM([dating_model] * 3)
    extractor = LLMExtractor(llm)
    add_time = datetime(2023, 5, 8, 13, 56, tzinfo=UTC)
    out = memory.add(messages, user_id="u", event_time=add_time, infer=True, extractor=extractor)
    assert {r.event_time for r in out} == {datetime(2023, 5, 7, tzinfo=UTC)}
    [call] = llm.calls
    assert call.messages[0].content.startswith("Session time: 2023-05-08 13:56+00:00\n")


def test_direct_extract_reads_a_turns_session_time_over_the_calls() -> None:
    """``extract`` itself (no Memory): a turn's own time in its metadata, as the offline
    extractor reads it (LoCoMo's ``session_time`` string too), else the call's."""
    turns = [
        Message("user", "I went to the zoo yesterday.", name="Ann", metadata={"dia_id": "a"}),
        Message(
            "user",
            "I went to the park yesterday.",
            name="Ann",
            metadata={"dia_id": "b", "session_time": "1:56 pm on 8 May, 2023"},
        ),
    ]
    llm = ScriptedLLM([dating_model] * 3)
    got = LLMExtractor(llm).extract(turns, session_time=datetime(2024, 2, 10, 8, 0, tzinfo=UTC))
    assert [(c.provenance, c.event_time and c.event_time.date()) for c in got] == [
        (("a",), date(2024, 2, 9)),
        (("b",), date(2023, 5, 7)),
    ]
    assert len(llm.calls) == 2


# -- 3: a fact's speaker is its source turn's, a name is a whole name -------------------------


def test_llm_fact_of_anna_is_not_anns_and_closes_nothing_of_hers(memory: Memory) -> None:
    """Ann and Anna in one conversation: Anna's "Anna lives in Rome" was credited to Ann
    (a prefix of it) and closed Ann's "lives in Paris"."""
    extractor = LLMExtractor(ScriptedLLM([living_model] * 4))
    kw: dict[str, object] = {"user_id": "chat", "session_id": "s1", "infer": True}
    say = [{"role": "user", "name": "Ann", "dia_id": "D1:1", "content": "I live in Paris."}]
    memory.add(say, extractor=extractor, **kw)  # type: ignore[arg-type]
    memory.add(
        [
            {"role": "user", "name": "Ann", "dia_id": "D2:1", "content": "Hi Anna, how are you?"},
            {"role": "user", "name": "Anna", "dia_id": "D2:2", "content": "I live in Rome now."},
        ],
        extractor=extractor,
        **kw,  # type: ignore[arg-type]
    )
    facts = {r.text: r for r in _all(memory, "chat")}
    assert set(facts) == {"Ann lives in Paris", "Anna lives in Rome"}
    assert facts["Anna lives in Rome"].metadata["speaker"] == "Anna"
    assert all(r.valid_to is None for r in facts.values())  # Ann's is open still


def test_llm_fact_speaker_is_its_source_turns_else_a_whole_name_first() -> None:
    """The source turn names the speaker, whatever the text starts with ("She ..."); a
    fact of no known source is credited to the speaker it names first, a whole name (the
    longest: "Ann Lee", not Ann)."""
    turns = [
        Message("user", "x", name="Ann", metadata={"dia_id": "t1"}),
        Message("user", "y", name="Anna", metadata={"dia_id": "t2"}),
        Message("user", "z", name="Ann Lee", metadata={"dia_id": "t3"}),
    ]
    facts = [
        {"text": "She lives in Rome.", "type": "semantic", "source": "t2"},
        {"text": "Anna lives in Oslo.", "type": "semantic", "source": "nowhere"},
        {"text": "Ann lives in Lima.", "type": "semantic", "source": None},
        {"text": "Annabel lives in Kyiv.", "type": "semantic", "source": "nowhere"},
        {"text": "Ann's dog lives in Baku.", "type": "semantic", "source": "nowhere"},
        {"text": "Ann Lee lives in Bern.", "type": "semantic", "source": "nowhere"},
    ]
    llm = ScriptedLLM([json.dumps({"facts": facts})])
    got = LLMExtractor(llm).extract(turns, session_time=datetime(2023, 5, 8, tzinfo=UTC))
    assert [c.speaker for c in got] == ["Anna", "Anna", "Ann", None, "Ann", "Ann Lee"]


def test_subject_of_takes_a_name_that_starts_with_the_speakers_for_another() -> None:
    assert subject_of("Anna lives in Rome.", "Ann") == "anna"
    assert subject_of("  Ann lives in Paris.", "Ann") == "ann"
    assert subject_of("Ann: lives in Paris.", "Ann") == "ann"
    assert subject_of("Ann's sister lives in Rome.", "Ann") == "ann's"
    assert subject_of("Ann-Marie lives in Rome.", "Ann") == "ann-marie"
    assert subject_of("Ann2 lives in Rome.", "Ann") == "ann2"
    assert subject_of("Łukasz lives in Rome.", "Łuk") == "łukasz"
    assert subject_of("Ann", "Ann") == "ann"


def test_subject_of_reads_a_name_whose_accent_is_written_apart() -> None:
    """A "Zoe" + U+0308 (NFD) is Zoë, the subject "Zoë" written whole is: not "zoe"."""
    decomposed = "Zoe\u0308 lives in Rome."
    assert subject_of(decomposed) == subject_of("Zo\u00eb lives in Rome.") == "zo\u00eb"
    assert subject_of("Zoe lives in Rome.") == "zoe"
    assert subject_of("Rene\u0301e Lee lives in Rome.") == "ren\u00e9e lee"


def test_starts_with_name_is_a_whole_name() -> None:
    assert starts_with_name("Ann lives here", "Ann") and starts_with_name("Ann", "Ann")
    assert starts_with_name("Ann- I mean Bo", "Ann") and starts_with_name("Ann.", "Ann")
    assert not starts_with_name("Anna lives here", "Ann")
    assert not starts_with_name("Ann_b said", "Ann") and not starts_with_name("Anné", "Ann")
    assert not starts_with_name("Zoe\u0308 said", "Zoe")  # Zoë, its accent a combining mark
    assert not starts_with_name("Ann lives here", "") and not starts_with_name("Bo", "Ann")


def test_offline_anns_word_on_where_anna_lives_leaves_her_own_open(memory: Memory) -> None:
    """No model: Ann says she lives in Paris, then that Anna lives in Rome."""
    for text in ("I live in Paris.", "Anna lives in Rome."):
        memory.add([{"role": "user", "name": "Ann", "content": text}], user_id="ann", infer=True)
    facts = {r.text: r for r in _all(memory, "ann")}
    assert set(facts) == {"Ann lives in Paris.", "Anna lives in Rome."}
    assert all(r.valid_to is None for r in facts.values())


def test_render_names_the_speaker_before_another_persons_name() -> None:
    """A fact said by Ann that starts with "Anna" was shown without "Ann:", as hers."""
    said_by_ann = {"speaker": "Ann"}
    assert render(MemoryRecord("m1", "Anna lives in Rome.", metadata=said_by_ann)) == (
        "Ann: Anna lives in Rome."
    )
    assert render(MemoryRecord("m2", "Ann lives in Paris.", metadata=said_by_ann)) == (
        "Ann lives in Paris."
    )
