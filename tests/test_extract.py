"""The offline extractor: attributed facts, resolved dates, no chit-chat, merged duplicates."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contextos.bench.extract_speed import load_locomo_sessions
from contextos.errors import ProviderError
from contextos.llm.prompts import EXTRACT_SCHEMA, EXTRACT_V2
from contextos.memory.extract import Candidate, Extractor, OfflineExtractor, merge_duplicates
from contextos.memory.extract_llm import LLMExtractor
from contextos.memory.render import CAPTION_KEYS, render
from contextos.testing.embedders import HashEmbedder
from contextos.testing.llm import ScriptedLLM
from contextos.types import MemoryRecord, Message

SESSION = datetime(2023, 5, 8, 13, 56)
LOCOMO = (
    Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "locomo" / "locomo-dev.json"
)


def say(speaker: str, text: str, turn_id: str = "D1:1", **metadata: object) -> Message:
    return Message("user", text, name=speaker, metadata={"dia_id": turn_id, **metadata})


def extract(*turns: Message, **kwargs: object) -> list[Candidate]:
    return OfflineExtractor(**kwargs).extract(list(turns), session_time=SESSION)  # type: ignore[arg-type]


def test_fact_is_attributed_dated_and_traced() -> None:
    turn = say(
        "Caroline", "I went to a LGBTQ support group yesterday and it was so powerful.", "D1:3"
    )
    [cand] = extract(turn)
    assert cand.text.startswith("Caroline went to a LGBTQ support group on 7 May 2023")
    assert cand.memory_type == "episodic"
    assert cand.event_time == datetime(2023, 5, 7)
    assert cand.provenance == ("D1:3",)
    assert cand.speaker == "Caroline"
    assert "LGBTQ" in cand.entities
    assert 0 < cand.confidence <= 1


@pytest.mark.parametrize(
    "text",
    [
        "Hey Mel! Good to see you! How have you been?",
        "Thanks!",
        "Wow, that's great!",
        "That sounds like so much fun, Caroline!",
        "You're so kind.",
        "Totally agree, Mel.",
        "Bye! Talk to you soon!",
        "What's up with you? Anything new?",
    ],
)
def test_chit_chat_is_dropped(text: str) -> None:
    assert extract(say("Caroline", text), say("Melanie", "ok", "D1:2")) == []


def test_chit_chat_is_stripped_and_the_fact_kept() -> None:
    [cand] = extract(
        say("Caroline", "Wow, that's cool, Mel! I adopted a dog named Max last week."),
        participants=["Melanie"],
    )
    assert cand.text == "Caroline adopted a dog named Max in the week of 1 May 2023."
    assert "Max" in cand.entities
    assert cand.event_time == datetime(2023, 5, 1)


def test_numbers_and_entities_are_kept() -> None:
    [cand] = extract(say("Nate", "I have 3 kids and we spent $500 on the trip to Paris."))
    assert cand.text == "Nate has 3 kids and we spent $500 on the trip to Paris."
    assert {"3", "$500", "Paris", "Nate"} <= set(cand.entities)
    assert cand.memory_type == "semantic"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I'm keen on counseling.", "Caroline is keen on counseling."),
        ("I really love my dog.", "Caroline loves Caroline's dog."),
        ("I just adopted Max 🐶!", "Caroline just adopted Max!"),
        ("I really went hiking yesterday.", "Caroline went hiking on 7 May 2023."),
        ("Yesterday I really went hiking.", "On 7 May 2023 Caroline went hiking."),
        (
            "I go swimming with the kids every week.",
            "Caroline goes swimming with the kids every week.",
        ),
        (
            "The support group made me feel accepted.",
            "The support group made Caroline feel accepted.",
        ),
        ("Painting is a great way to relax.", "Caroline: Painting is a great way to relax."),
        # an adverb between "I" and the verb is not the verb ("Caroline noes longer live")
        ("I no longer live in Paris.", "Caroline no longer lives in Paris."),
        ("I rarely eat meat at home.", "Caroline rarely eats meat at home."),
        ("I currently work at a bakery.", "Caroline currently works at a bakery."),
        ("I reply to every letter from Mel.", "Caroline replies to every letter from Mel."),
    ],
)
def test_first_person_becomes_the_speaker(text: str, expected: str) -> None:
    [cand] = extract(say("Caroline", text))
    assert cand.text == expected


@pytest.mark.parametrize(
    ("text", "memory_type"),
    [
        ("Please always answer in French.", "procedural"),
        ("I prefer short answers with bullet points.", "procedural"),
        ("From now on, use metric units.", "procedural"),
        ("Call me Sam from now on.", "procedural"),
        ("I love hiking in the mountains.", "semantic"),
        ("I just signed up for a pottery class.", "episodic"),
        ("We're thinking about going camping next month.", "episodic"),
    ],
)
def test_memory_types(text: str, memory_type: str) -> None:
    [cand] = extract(say("Ann", text))
    assert cand.memory_type == memory_type


def test_past_event_without_a_date_gets_the_session_time() -> None:
    [cand] = extract(say("Melanie", "I just signed up for a pottery class."))
    assert cand.event_time == SESSION


def test_image_caption_becomes_a_fact() -> None:
    turn = say(
        "Caroline",
        "Look at this!",
        "D1:5",
        blip_caption="a photo of a dog walking past a wall with a painting",
    )
    [cand] = extract(turn)
    assert cand.text == "Caroline shared a photo of a dog walking past a wall with a painting."
    assert cand.memory_type == "episodic"
    assert cand.provenance == ("D1:5",)
    assert cand.event_time == SESSION
    assert extract(turn, captions=False) == []


def test_an_inline_caption_marker_becomes_a_caption_fact() -> None:
    turn = say("Bob", "Look at this! [shares a photo: a photo of a red bike]", "D3:4")
    assert [c.text for c in extract(turn)] == ["Bob shared a photo of a red bike."]


def test_a_per_turn_time_in_metadata_anchors_that_turn() -> None:
    turn = say("Bob", "I fixed my bike yesterday.", event_time="2023-06-02T10:00:00+00:00")
    [cand] = extract(turn)
    assert cand.event_time is not None and cand.event_time.date().isoformat() == "2023-06-01"


def test_near_duplicates_of_one_speaker_merge_with_both_sources() -> None:
    found = extract(
        say("Ann", "I love hiking in the mountains with my dog.", "D1:1"),
        say("Ann", "I really love hiking in the mountains with my dog!", "D1:5"),
        say("Bob", "I love hiking in the mountains with my dog.", "D1:6"),
    )
    assert len(found) == 2
    ann = next(c for c in found if c.speaker == "Ann")
    assert ann.provenance == ("D1:1", "D1:5")
    assert ann.text == "Ann loves hiking in the mountains with Ann's dog."


def test_embedding_similarity_merges_what_words_alone_do_not() -> None:
    turns = (
        say("Ann", "I love hiking in the mountains with my dog Rex and my sister.", "D1:1"),
        say("Ann", "I love hiking in the mountains with my dog Rex and my sister Jo.", "D1:2"),
    )
    assert len(extract(*turns, lexical_threshold=1.0)) == 2
    embedder = HashEmbedder(dimensions=256)
    merged = extract(*turns, lexical_threshold=1.0, embedder=embedder, embed_threshold=0.9)
    assert len(merged) == 1
    assert merged[0].provenance == ("D1:1", "D1:2")
    assert embedder.calls == 1


def test_merge_duplicates_keeps_distinct_facts() -> None:
    a = Candidate("Ann lives in Paris.", "semantic", speaker="Ann", provenance=("1",))
    b = Candidate("Ann works at a bakery.", "semantic", speaker="Ann", provenance=("2",))
    assert merge_duplicates([a, b]) == [a, b]
    assert merge_duplicates([a, a]) == [a]


def _merged_by_comparing_all(candidates: list[Candidate], threshold: float) -> list[Candidate]:
    """The reference: each candidate compared with every kept one before it, merged
    into the one it overlaps most (the first of equals), words keyed as the extractor
    keys them (``_tokens``: a speaker's content words)."""
    from contextos.memory.extract import _merge, _tokens

    kept: list[Candidate] = []
    sets: list[frozenset[str]] = []
    for cand in candidates:
        toks = _tokens(cand)
        best, best_score = None, threshold
        for i, other in enumerate(sets):
            n = len(toks & other)
            score = n / (len(toks) + len(other) - n) if toks else 0.0
            if toks and score >= best_score and (best is None or score > best_score):
                best, best_score = i, score
        if best is None:
            kept.append(cand)
            sets.append(toks)
        else:
            kept[best] = _merge(kept[best], cand)
            sets[best] = sets[best] | toks
    return kept


_WORDS = ["hiking", "dog", "mountains", "violin", "paris", "bakery", "sister", "tea", "rex"]


@settings(max_examples=500, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["Ann", "Bob"]),
            st.lists(st.sampled_from(_WORDS), min_size=0, max_size=8),
            st.booleans(),  # a word of its own (rare words lead the prefixes)
        ),
        max_size=40,
    ),
    st.sampled_from([0.5, 0.6, 0.7, 0.75, 0.8, 0.9, 1.0]),
)
def test_merging_compares_only_prefixes_and_finds_what_comparing_all_finds(
    said: list[tuple[str, list[str], bool]], threshold: float
) -> None:
    """The filters (prefix, length, position) drop no pair over the threshold: the
    same merges, in the same kept ones, as comparing each candidate with all before it."""
    candidates = [
        Candidate(
            " ".join(words + ([f"own{n}"] if own else [])) + ".",
            "semantic",
            speaker=who,
            provenance=(str(n),),
        )
        for n, (who, words, own) in enumerate(said)
    ]
    assert merge_duplicates(candidates, threshold) == _merged_by_comparing_all(
        candidates, threshold
    )


def test_merging_many_candidates_that_share_common_words_is_not_quadratic() -> None:
    """Every candidate held the same common words, so an index of all words listed all
    candidates under each: 8,000 took 14 s and 10^5 never finished. 40,000 distinct
    facts sharing common words now take about a second here; the bound leaves room for
    a loaded host (quadratic would be minutes)."""
    import time

    candidates = [
        Candidate(
            f"Ann adopted pet{n} yesterday morning near lake{n % 997} park{n}.",
            "episodic",
            speaker="Ann",
            provenance=(str(n),),
        )
        for n in range(40_000)
    ]
    # Templated lines: one rare word each, four common ones (the prefix alone listed
    # every line under "adopted": 8,000 took 14 s).
    templated = [
        Candidate(f"Ana adopted a cat named Tom{n} yesterday.", "episodic", speaker="Ana")
        for n in range(40_000)
    ]
    for batch in (candidates, templated):
        started = time.process_time()
        merged = merge_duplicates(batch)
        assert time.process_time() - started < 10.0
        assert len(merged) == 40_000  # distinct facts: nothing merged


def test_merging_by_embedding_in_blocks_merges_as_the_whole_matrix() -> None:
    """The similarity matrix is taken a block of rows at a time (2,100 candidates: two
    blocks, the second holding the first of some near-duplicates); the merges are
    those the whole matrix gives."""
    import numpy as np

    from contextos.memory.extract import _merge, merge_by_embedding

    texts = [f"hiking with Rex {n if n < 2_000 else n - 80}" for n in range(2_100)]
    candidates = [
        Candidate(t, "semantic", speaker="Ann" if n % 3 else "Bob", provenance=(str(n),))
        for n, t in enumerate(texts)
    ]
    embedder = HashEmbedder(dimensions=64)
    vectors = embedder.embed(texts)
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -1.0)
    parent = list(range(len(candidates)))
    for i, j in zip(*np.nonzero(np.triu(sims) >= 0.9), strict=True):
        if candidates[i].speaker == candidates[j].speaker and parent[j] == j:
            parent[j] = parent[i]
    expected: dict[int, Candidate] = {}
    for i, cand in enumerate(candidates):
        root = parent[i]
        expected[root] = _merge(expected[root], cand) if root in expected else cand
    merged = merge_by_embedding(candidates, embedder, 0.9)
    assert merged == [expected[k] for k in sorted(expected)]
    assert len(merged) < len(candidates)


def test_session_time_can_come_from_the_message() -> None:
    turn = say("Ann", "I ran a marathon last Sunday.", session_time="1:56 pm on 8 May, 2023")
    [cand] = OfflineExtractor().extract([turn], session_time=None)
    assert cand.event_time == datetime(2023, 5, 7)
    assert "on 7 May 2023" in cand.text


def test_without_a_session_time_relative_words_stay() -> None:
    [cand] = OfflineExtractor().extract([say("Ann", "I ran a marathon yesterday.")])
    assert cand.text == "Ann ran a marathon yesterday."


def test_speaker_falls_back_to_metadata_then_role() -> None:
    meta = Message("user", "I live in Lisbon.", metadata={"speaker": "Rui", "id": "m1"})
    anon = Message("user", "I live in Oslo.", metadata={"message_id": "m2"})
    found = OfflineExtractor().extract([meta, anon])
    assert [(c.speaker, c.text, c.provenance) for c in found] == [
        ("Rui", "Rui lives in Lisbon.", ("m1",)),
        ("user", "User lives in Oslo.", ("m2",)),
    ]


def test_role_names_are_not_taken_for_vocatives() -> None:
    turns = [
        Message("user", "I find the new planner very, useful!"),
        say("Al", "I love Alaska, Al!"),
    ]
    assert [c.text for c in OfflineExtractor().extract(turns)] == [
        "User finds the new planner very, useful!",
        "Al loves Alaska!",
    ]


def test_system_and_tool_messages_are_ignored() -> None:
    turns = [
        Message("system", "Always answer in French."),
        Message("tool", "Paris has 2 million people.", tool_call_id="t1"),
    ]
    assert OfflineExtractor().extract(turns) == []


def test_the_models_own_replies_are_not_facts_but_named_speakers_are() -> None:
    turns = [
        Message("user", "I'm allergic to peanuts."),
        Message("assistant", "Noted! I'll keep that in mind for your recipes."),
        Message("assistant", "I live in Oslo with my cat.", name="Bob"),
    ]
    assert [c.text for c in OfflineExtractor().extract(turns)] == [
        "User is allergic to peanuts.",
        "Bob lives in Oslo with Bob's cat.",
    ]


def test_streaming_one_turn_matches_the_batch() -> None:
    turn = say("Ann", "I moved to Berlin last month. It is great.")
    ex = OfflineExtractor()
    assert ex.extract_turn(turn, session_time=SESSION) == ex.extract([turn], session_time=SESSION)


def test_candidates_are_frozen_values_and_the_protocol_holds() -> None:
    [cand] = extract(say("Ann", "I moved to Berlin last month."))
    with pytest.raises(dataclasses.FrozenInstanceError):
        cand.text = "x"  # type: ignore[misc]
    assert isinstance(OfflineExtractor(), Extractor)


def test_min_confidence_drops_unattributed_opinions() -> None:
    turns = (say("Ann", "Painting is a great way to relax."), say("Ann", "I paint every day.", "2"))
    assert len(extract(*turns)) == 2
    [kept] = extract(*turns, min_confidence=0.6)
    assert kept.text == "Ann paints every day."


def test_bad_thresholds_are_refused() -> None:
    with pytest.raises(ValueError):
        OfflineExtractor(lexical_threshold=0)
    with pytest.raises(ValueError):
        OfflineExtractor(embed_threshold=1.5)


@pytest.mark.skipif(not LOCOMO.is_file(), reason="LoCoMo dev split not present")
def test_locomo_first_sessions_smoke() -> None:
    sessions = load_locomo_sessions(LOCOMO)[:3]
    ex = OfflineExtractor()
    for session in sessions:
        ids = {m.metadata["dia_id"] for m in session.messages}
        found = ex.extract(session.messages, session_time=session.session_time)
        assert found
        assert all(c.provenance and set(c.provenance) <= ids for c in found)
        assert not any(c.text.lower().startswith(("hey", "hi ", "thanks")) for c in found)
    first = ex.extract(sessions[0].messages, session_time=sessions[0].session_time)
    assert any("7 May 2023" in c.text and c.provenance == ("D1:3",) for c in first)
    json.dumps([dataclasses.asdict(c) for c in first], default=str)


# -- LLM-backed extraction -------------------------------------------------------------------
def test_llm_extractor_builds_candidates_from_the_reply() -> None:
    reply = json.dumps(
        {
            "facts": [
                {
                    "text": "Caroline went to a LGBTQ support group on 7 May 2023.",
                    "type": "episodic",
                    "date": "2023-05-07",
                    "source": "D1:3",
                },
                {
                    "text": "Melanie paints sunrises.",
                    "type": "semantic",
                    "date": None,
                    "source": "D9:9",
                },
            ]
        }
    )
    llm = ScriptedLLM([reply])
    turns = [
        say(
            "Caroline",
            "I went to a LGBTQ support group yesterday.",
            "D1:3",
            blip_caption="a photo of a flag",
        ),
        say("Melanie", "I paint sunrises.", "D1:4"),
    ]
    first, second = LLMExtractor(llm).extract(turns, session_time=SESSION)
    assert first.event_time == datetime(2023, 5, 7, tzinfo=UTC) and first.provenance == ("D1:3",)
    assert first.speaker == "Caroline" and "LGBTQ" in first.entities
    assert second.provenance == ("D1:3", "D1:4")  # unknown source: every turn sent
    [call] = llm.calls
    assert call.system == EXTRACT_V2.system and call.json_schema == EXTRACT_SCHEMA
    sent = call.messages[0].content
    assert "2023-05-08 13:56" in sent
    assert '{"id": "D1:3", "speaker": "Caroline", "text": "I went' in sent
    assert "[shares a photo: a photo of a flag]" in sent


@pytest.mark.parametrize("key", CAPTION_KEYS)
def test_every_caption_key_is_read_alike_by_rendering_and_both_extractors(key: str) -> None:
    turn = say("Caroline", "Look at this!", "D1:5", **{key: " a photo of a flag "})
    record = MemoryRecord("m1", "Look at this!", metadata=turn.metadata)
    assert render(record) == "Look at this! (image: a photo of a flag)"
    assert [c.text for c in extract(turn)] == ["Caroline shared a photo of a flag."]
    llm = ScriptedLLM([json.dumps({"facts": []})])
    LLMExtractor(llm).extract([turn], session_time=SESSION)
    assert "[shares a photo: a photo of a flag]" in llm.calls[0].messages[0].content


@pytest.mark.parametrize("bad", ["no JSON here", '{"facts": [{"text": "x"}]}', '{"facts": 3}'])
def test_llm_extractor_falls_back_offline_on_a_bad_reply(
    bad: str, caplog: pytest.LogCaptureFixture
) -> None:
    turns = [say("Ann", "I moved to Berlin last month.")]
    got = LLMExtractor(ScriptedLLM([bad])).extract(turns, session_time=SESSION)
    assert got == OfflineExtractor().extract(turns, session_time=SESSION)
    assert "invalid extraction reply" in caplog.text
    with pytest.raises(ProviderError):
        LLMExtractor(ScriptedLLM([bad]), on_invalid="raise").extract(turns)
    assert LLMExtractor(ScriptedLLM([])).extract([]) == []


@given(text=st.text(max_size=300), speaker=st.text(min_size=1, max_size=12))
@settings(max_examples=150, deadline=None)
def test_any_text_extracts_without_error(text: str, speaker: str) -> None:
    turn = Message("user", text, name=speaker, metadata={"dia_id": "D1:1", "caption": text[:20]})
    for cand in OfflineExtractor().extract([turn], session_time=SESSION):
        assert cand.text.strip() and cand.provenance == ("D1:1",) and cand.speaker == speaker
        assert 0 <= cand.confidence <= 1


def test_long_multiline_turns_are_handled() -> None:
    text = "\n".join(f"I visited city number {i} last week." for i in range(300))
    found = extract(say("Ann", text + "\n```python\nprint('hi')\n```"))
    assert 1 <= len(found) <= 301
    assert all(c.provenance == ("D1:1",) for c in found)


def test_a_turn_id_cannot_forge_a_log_record(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The INFO line about a turn sent in parts wrote the caller's turn id (its
    ``dia_id``) as given: a newline in it started a second, forged log record (a
    review). It is written as ``repr`` writes it."""
    from contextos.memory import Memory

    forged = "D1\n2026-01-01 00:00:00 CRITICAL contextos.server: FORGED admin key rotated"
    extractor = LLMExtractor(ScriptedLLM([json.dumps({"facts": []})] * 50), chunk_tokens=60)
    message = Message(role="user", content="word " * 200, metadata={"dia_id": forged})
    with (
        caplog.at_level("INFO", logger="contextos"),
        Memory(tmp_path / "m.db", embedder=HashEmbedder(), extractor=extractor) as memory,
    ):
        memory.add([message], user_id="ana", infer=True)
    lines = [r.getMessage() for r in caplog.records if "sent in" in r.getMessage()]
    assert lines, [r.getMessage() for r in caplog.records]
    assert all("\n" not in line and "\\n2026" in line for line in lines)
