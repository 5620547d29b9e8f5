"""Memory.add(infer=True): extracted, reconciled, dated facts with provenance; temporal ranking;
the LoCoMo memory modes (on a small synthetic conversation, never LoCoMo itself)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from contextos.bench.locomo_data import LocomoConversation, LocomoTurn
from contextos.bench.locomo_memory import (
    ingest,
    memory_tokens,
    raw_tokens,
    size_report,
    stored_records,
)
from contextos.memory import Memory, RetrievalConfig
from contextos.memory.extract_llm import LLMExtractor
from contextos.memory.retrieval import HybridRetriever, temporal_match
from contextos.testing.embedders import HashEmbedder
from contextos.testing.llm import ScriptedLLM
from contextos.text.temporal import TimeRange
from contextos.types import Filter, MemoryRecord, Scope

SESSION = datetime(2023, 5, 8, 13, 56, tzinfo=UTC)


def turn(speaker: str, text: str, dia_id: str, **extra: object) -> dict[str, object]:
    return {"role": "user", "content": text, "name": speaker, "dia_id": dia_id, **extra}


def add_inferred(memory: Memory, messages: Any, **kwargs: Any) -> list[MemoryRecord]:
    """``memory.add(infer=True)`` for user u at SESSION's time (``kwargs``: e.g. the session)."""
    return memory.add(messages, user_id="u", event_time=SESSION, infer=True, **kwargs)


def test_infer_stores_dated_facts_with_provenance_not_turns(memory: Memory) -> None:
    records = add_inferred(
        memory,
        [
            turn("Caroline", "Hey Mel! I went to a LGBTQ support group yesterday.", "D1:3"),
            turn("Melanie", "Wow, thanks for sharing!", "D1:4"),
            turn("Melanie", "Please always answer in French.", "D1:5"),
        ],
        session_id="s1",
    )
    by_source = {r.provenance: r for r in records}
    assert set(by_source) == {("D1:3",), ("D1:5",)}  # the thanks left no memory
    group = by_source[("D1:3",)]
    assert group.text == "Caroline went to a LGBTQ support group on 7 May 2023."
    assert group.memory_type == "episodic"
    assert group.event_time == datetime(2023, 5, 7, tzinfo=UTC)
    assert group.metadata["speaker"] == "Caroline" and group.metadata["inferred"] is True
    assert by_source[("D1:5",)].memory_type == "procedural"
    stored = memory.get_all(user_id="u")
    assert sorted(r.id for r in stored) == sorted(r.id for r in records)
    assert not any("Hey Mel" in r.text for r in stored)


def test_inferred_and_verbatim_memories_share_one_id_format(memory: Memory) -> None:
    """Issue 14: inferred memories had undashed hex ids, verbatim ones dashed UUIDs."""
    [plain] = memory.add("I like tea.", user_id="u", session_id="s1", event_time=SESSION)
    inferred = add_inferred(
        memory,
        [turn("Caroline", "I went to a LGBTQ support group yesterday.", "D1:3")],
        session_id="s1",
    )
    assert inferred
    for record in (plain, *inferred):
        assert str(uuid.UUID(record.id)) == record.id  # canonical, dashed, lower case


def test_undated_facts_take_their_turn_time_and_source_id(memory: Memory) -> None:
    said = SESSION + timedelta(minutes=3)
    [record] = add_inferred(
        memory,
        {
            "role": "user",
            "content": "I work as a nurse in Boston.",
            "name": "Ann",
            "source_id": "msg-7",
            "event_time": said.isoformat(),
        },
    )
    assert record.provenance == ("msg-7",)
    assert record.memory_type == "semantic"
    assert record.event_time == said


def test_facts_are_numbered_by_source_turn_within_a_session(memory: Memory) -> None:
    add_inferred(
        memory, turn("Ann", "I adopted a dog named Rex last week.", "D1:1"), session_id="s"
    )
    records = add_inferred(
        memory,
        [turn("Bob", "Nice.", "D1:2"), turn("Bob", "I bought a red bike in Paris.", "D1:3")],
        session_id="s",
    )
    first = memory.get_all(user_id="u", session_id="s")[-1]
    assert first.metadata["seq"] == 0
    assert [r.metadata["seq"] for r in records] == [2]  # the second turn of the second add


def test_reconciliation_updates_and_skips_duplicates(memory: Memory) -> None:
    [paris] = add_inferred(memory, turn("Ann", "I live in Paris.", "D1:1"), session_id="s1")
    assert add_inferred(memory, turn("Ann", "I live in Paris.", "D2:1"), session_id="s2") == []
    [berlin] = add_inferred(memory, turn("Ann", "I live in Berlin now.", "D3:1"), session_id="s3")
    assert berlin.metadata["supersedes"] == paris.id
    old = memory.get(paris.id)
    assert old.valid_to is not None and old.metadata["superseded_by"] == berlin.id
    live = memory.get_all(user_id="u")
    assert [r.text for r in live] == ["Ann lives in Berlin now."]
    hits = memory.search("where does Ann live?", user_id="u")
    assert [h.record.id for h in hits] == [berlin.id]


def test_raw_add_is_unchanged(memory: Memory) -> None:
    records = memory.add(
        [turn("Ann", "Hey! I went there yesterday.", "D1:1"), turn("Bob", "Thanks!", "D1:2")],
        user_id="u",
        session_id="s",
        event_time=SESSION,
    )
    assert [r.text for r in records] == ["Hey! I went there yesterday.", "Thanks!"]
    assert [r.provenance for r in records] == [("D1:1",), ("D1:2",)]
    assert all(r.memory_type == "episodic" and "inferred" not in r.metadata for r in records)


def llm_reply(facts: list[dict[str, object]]) -> str:
    return json.dumps({"facts": facts})


def test_llm_extractor_configured_on_the_memory(tmp_path: Path) -> None:
    llm = ScriptedLLM(
        [
            llm_reply(
                [
                    {
                        "text": "Caroline went to a support group on 7 May 2023.",
                        "type": "episodic",
                        "date": "2023-05-07",
                        "source": "D1:3",
                    }
                ]
            )
        ]
    )
    with Memory(
        tmp_path / "m.db",
        embedder=HashEmbedder(),
        background_embedding=False,
        extractor=LLMExtractor(llm),
    ) as memory:
        [record] = add_inferred(
            memory, turn("Caroline", "I went to a support group yesterday!", "D1:3"), session_id="s"
        )
    assert len(llm.calls) == 1
    assert '{"id": "D1:3", "speaker": "Caroline"' in llm.calls[0].messages[0].content
    assert record.text == "Caroline went to a support group on 7 May 2023."
    assert record.provenance == ("D1:3",)
    assert record.event_time is not None and record.event_time.date().isoformat() == "2023-05-07"


def test_extractor_per_call_overrides_and_bad_llm_reply_falls_back(memory: Memory) -> None:
    llm = ScriptedLLM(["this is not JSON"])
    [record] = add_inferred(
        memory, turn("Ann", "I have 3 kids.", "D1:1"), extractor=LLMExtractor(llm)
    )
    assert len(llm.calls) == 1
    assert record.text == "Ann has 3 kids." and record.provenance == ("D1:1",)


@pytest.mark.parametrize(
    "reply",
    [
        "[" * 100_000 + "]" * 100_000,
        llm_reply([{"text": "Ann collects " + "stamps " * 20_000, "type": "semantic"}]),
        llm_reply([{"text": "Ann has\x00 3 kids.", "type": "semantic"}]),
        llm_reply(
            [{"text": "Ann has three kids.", "type": "semantic", "date": "0001-01-01T00:00+14:00"}]
        ),
        llm_reply(
            [{"text": "Ann has three kids.", "type": "semantic", "date": "9999-12-31T23:59-14:00"}]
        ),
    ],
    ids=["nested too deep", "longer than a memory", "NUL", "year 0 in UTC", "year 10000 in UTC"],
)
def test_an_extraction_reply_no_memory_can_hold_falls_back(memory: Memory, reply: str) -> None:
    # "A bad reply never loses a turn's facts": these raised out of add() (RecursionError,
    # the store's ValueError for NUL or the date) or stored a fact of 140,000 characters.
    llm = ScriptedLLM([reply])
    [record] = add_inferred(
        memory, turn("Ann", "I have 3 kids.", "D1:1"), extractor=LLMExtractor(llm)
    )
    assert len(llm.calls) == 1
    assert record.text == "Ann has 3 kids."  # the offline extractor's


# -- temporal ranking ---------------------------------------------------------------
def rec(text: str, when: datetime) -> MemoryRecord:
    return MemoryRecord(id=text, text=text, event_time=when)


def test_temporal_match() -> None:
    when = TimeRange(asks_when=True)
    assert temporal_match(rec("I ran a race last Saturday.", SESSION), when)
    assert not temporal_match(rec("I love running races.", SESSION), when)
    may = TimeRange(datetime(2023, 5, 1, tzinfo=UTC), datetime(2023, 6, 1, tzinfo=UTC))
    assert temporal_match(rec("I love running.", SESSION), may)
    assert not temporal_match(rec("I love running.", SESSION + timedelta(days=60)), may)
    assert temporal_match(rec("Back in May 2023 I ran.", SESSION + timedelta(days=60)), may)


def test_temporal_weight_raises_dated_memories_for_when_questions(memory: Memory) -> None:
    memory.add(
        ["Ann loves to run races with her friends.", "Ann ran a charity race last Saturday."],
        user_id="u",
        event_time=SESSION,
    )
    memory.flush()
    flt = Filter(scope=Scope(user_id="u"))
    question = "When did Ann run a race with her friends?"

    def top(weight: float) -> str:
        r = HybridRetriever(
            memory.store,
            memory.embedder,
            tokenizer=memory.tokenizer,
            config=RetrievalConfig(temporal_weight=weight),
        )
        return r.search(question, flt, limit=2)[0].record.text

    assert top(0.0) == "Ann loves to run races with her friends."
    assert top(2.0) == "Ann ran a charity race last Saturday."


def test_search_as_of_and_time_range_with_inferred_facts(memory: Memory) -> None:
    add_inferred(memory, turn("Ann", "I went hiking yesterday.", "D1:1"))
    memory.add(
        turn("Ann", "I went hiking yesterday.", "D9:1"),
        user_id="u",
        event_time=SESSION + timedelta(days=90),
        infer=True,
    )
    may = (datetime(2023, 5, 1, tzinfo=UTC), datetime(2023, 6, 1, tzinfo=UTC))
    hits = memory.search("hiking", user_id="u", time_range=may)
    assert [h.record.provenance for h in hits] == [("D1:1",)]


# -- the LoCoMo memory modes, on a synthetic conversation ------------------------------
def conversation() -> LocomoConversation:
    lines = [
        ("Ann", "Hi Bob! I adopted a puppy named Rex yesterday."),
        ("Bob", "Congrats!"),
        ("Ann", "Thanks! I also started a pottery class."),
        ("Bob", "I live in Oslo now."),
    ]
    turns = tuple(
        LocomoTurn(f"D1:{i + 1}", s, t, "", 1, SESSION + timedelta(minutes=i))
        for i, (s, t) in enumerate(lines)
    )
    obs = (("Ann", "Ann adopted a puppy named Rex.", "D1:1"), ("Bob", "Bob lives in Oslo.", "D1:4"))
    return LocomoConversation("conv-x", "Ann", "Bob", turns, (), obs)


@pytest.mark.parametrize("mode", ["default", "beside", "extracted", "observations"])
def test_memory_modes_store_with_provenance_and_count_tokens(memory: Memory, mode: str) -> None:
    conv = conversation()
    ingest(mode, memory, conv, [])
    memory.flush()
    records = stored_records(memory, conv)
    sources = {p for r in records for p in r.provenance}
    if mode in ("default", "beside"):
        turns = {r.id: r for r in records if "fact_of" not in r.metadata}
        facts = [r for r in records if "fact_of" in r.metadata]
        assert len(turns) == 4 and sources == {"D1:1", "D1:2", "D1:3", "D1:4"}
        # beside: the turns' facts beside them, each pointing to its turn
        assert bool(facts) == (mode == "beside")
        assert all(turns[f.metadata["fact_of"]].provenance == f.provenance for f in facts)
        assert mode == "default" or any("Rex on " in f.text for f in facts)  # "yesterday" resolved
    elif mode == "observations":
        assert {r.text for r in records} == {"Ann adopted a puppy named Rex.", "Bob lives in Oslo."}
        assert all(r.memory_type == "semantic" and r.event_time == SESSION for r in records)
    else:
        assert "D1:2" not in sources and {"D1:1", "D1:3", "D1:4"} <= sources
    report = size_report(memory, [conv], mode)
    assert report["memory_mode"] == mode and report["records"] == len(records)
    assert report["raw_tokens"] == raw_tokens(memory, conv) > 0
    assert report["memory_tokens"] == memory_tokens(memory, records) > 0
    if mode == "default":  # the reply context indexed with each turn counts too
        assert report["memory_tokens"] > report["raw_tokens"]
    hits = memory.search("What is the name of Ann's puppy?", user_id="conv-x", limit=3)
    assert "D1:1" in {p for h in hits for p in h.record.provenance}


def test_reply_facts_are_indexed_with_the_question_they_answer(memory: Memory) -> None:
    records = add_inferred(
        memory,
        [
            turn("Bob", "Nice! What did you paint last weekend?", "D1:1"),
            turn("Ann", "A sunset over the lake with my kids.", "D1:2"),
        ],
        session_id="s",
    )
    reply = next(r for r in records if r.provenance == ("D1:2",))
    assert reply.context == memory.get(reply.id).context == "paint last weekend"
    hits = memory.search("paint", user_id="u", limit=5)
    assert reply.id in [h.record.id for h in hits]


def test_locomo_extracted_report(locomo_path: Path, tmp_path: Path) -> None:
    from contextos.bench.locomo import run_locomo

    report = run_locomo(
        locomo_path,
        embedder=HashEmbedder(),
        conversations=1,
        workdir=tmp_path,
        memory_mode="extracted",
    )
    assert report["memory_mode"] == "extracted"
    assert 0 < report["memory_tokens"] < report["raw_tokens"]
    assert report["records_by_type"]["semantic"] > 0 and report["records_by_type"]["episodic"] > 0
    assert report["overall"]["recall@25"] > 0.5  # facts point back to the evidence turns


def test_cli_rejects_an_unknown_memory_mode() -> None:
    from click.testing import CliRunner

    from contextos.cli.main import cli

    result = CliRunner().invoke(cli, ["bench", "locomo", "--memory", "summaries"])
    assert result.exit_code == 2 and "summaries" in result.output
