"""The type of the record an UPDATE writes (:func:`~contextos.memory.reconcile.replacing_type`):
a standing fact or rule holding a one-value attribute passes its type to its replacement,
whoever decided the UPDATE; an event (episodic) passes none on."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from contextos.memory import Memory
from contextos.memory.extract import Candidate
from contextos.memory.reconcile import LLMReconciler, reconcile
from contextos.store.base import Store
from contextos.testing.embedders import HashEmbedder
from contextos.testing.llm import ScriptedLLM
from contextos.types import Filter, MemoryRecord, Scope

SESSION = datetime(2026, 12, 6, 10, 0, tzinfo=UTC)


def infer(memory: Memory, text: str, **kwargs: object) -> list[MemoryRecord]:
    return memory.add(text, user_id="ana", infer=True, **kwargs)  # type: ignore[arg-type]


def everything(memory: Memory) -> dict[str, MemoryRecord]:
    """Ana's records, closed ones too, by text."""
    return {r.text: r for r in memory.get_all(user_id="ana", filters=Filter(include_invalid=True))}


def test_a_dated_move_keeps_the_home_semantic(memory: Memory) -> None:
    # The docs' example: the move is told with a date, so the extractor types it an event.
    [berlin] = infer(memory, "I live in Berlin.")
    [paris] = infer(memory, "I moved to Paris last week.")
    assert berlin.memory_type == "semantic"
    assert paris.text.startswith("User moved to Paris in the week of")
    assert paris.memory_type == "semantic"  # the home's type, not the statement's
    assert paris.event_time is not None and paris.event_time < paris.created_at  # still dated
    assert paris.metadata["supersedes"] == berlin.id
    closed = everything(memory)[berlin.text]
    assert closed.valid_to is not None and closed.memory_type == "semantic"
    semantic = Filter(memory_types=("semantic",))
    assert [r.text for r in memory.get_all(user_id="ana", filters=semantic)] == [paris.text]
    hits = memory.search("where does ana live", user_id="ana", memory_types=["semantic"])
    assert [h.record.text for h in hits] == [paris.text]
    assert memory.search("Paris", user_id="ana", memory_types=["episodic"]) == []


def test_an_older_statement_written_late_keeps_the_type_too(memory: Memory) -> None:
    # Both said at a given time: the move (dated the week before) is the older statement,
    # written closed, held until Berlin began. It is the same attribute's history.
    infer(memory, "I live in Berlin.", event_time=SESSION)
    [paris] = infer(memory, "I moved to Paris last week.", event_time=SESSION)
    assert paris.valid_to is not None and "superseded_by" in paris.metadata
    assert paris.memory_type == "semantic"
    [current] = memory.get_all(user_id="ana")
    assert current.text == "User lives in Berlin." and current.memory_type == "semantic"


@pytest.mark.parametrize(
    ("first", "second", "first_type", "second_type"),
    [
        # a state: its replacement keeps its type, dated or not
        ("I live in Berlin.", "I moved to Paris last week.", "semantic", "semantic"),
        ("I work at Google.", "I started working at Meta yesterday.", "semantic", "semantic"),
        # an event passes no type on: a state said later is a state, a later event an event
        ("I moved to Berlin in 2020.", "I live in Paris now.", "episodic", "semantic"),
        ("I moved to Berlin in 2020.", "I moved to Rome in 2022.", "episodic", "episodic"),
    ],
)
def test_the_offline_update_types_its_record_by_the_rule(
    memory: Memory, first: str, second: str, first_type: str, second_type: str
) -> None:
    [old] = infer(memory, first)
    [new] = infer(memory, second)
    assert old.memory_type == first_type
    assert new.metadata.get("supersedes") == old.id
    assert new.memory_type == second_type


def test_a_model_decided_update_follows_the_same_rule(tmp_path: Path) -> None:
    update = {"action": "UPDATE", "target": 0, "text": "User lives in Paris.", "reason": "moved"}
    llm = ScriptedLLM([json.dumps(update)])
    with Memory(
        tmp_path / "m.db",
        embedder=HashEmbedder(),
        background_embedding=False,
        reconciler=LLMReconciler(llm),
    ) as memory:
        [berlin] = infer(memory, "I live in Berlin.")  # nothing similar: the model is not asked
        [paris] = infer(memory, "I moved to Paris last week.")  # an event, as extracted
        assert (
            len(llm.calls) == 1
            and '{"index": 0, "memory": "User lives in Berlin."}'
            in llm.calls[0].messages[0].content
        )
        assert paris.text == "User lives in Paris."
        assert paris.metadata["supersedes"] == berlin.id
        assert paris.memory_type == "semantic"
        hits = memory.search("where does ana live", user_id="ana", memory_types=["semantic"])
        assert [h.record.text for h in hits] == ["User lives in Paris."]


SCOPE = Scope(tenant="t1", user_id="ana")


def fact(text: str, memory_type: str, when: datetime | None = None) -> Candidate:
    return Candidate(text, speaker="User", memory_type=memory_type, event_time=when)  # type: ignore[arg-type]


def test_a_rule_keeps_its_type_and_a_fact_of_no_attribute_takes_the_new_one(
    store: Store,
) -> None:
    [rule, hiking] = [
        o.record
        for o in reconcile(
            [
                fact("User: Always answer in French.", "procedural"),
                fact("Ann loves hiking in the Alps.", "semantic"),
            ],
            store,
            scope=SCOPE,
            now=SESSION,
        )
    ]
    assert rule is not None and hiking is not None
    later = datetime(2026, 12, 8, tzinfo=UTC)
    outcomes = reconcile(
        [
            fact("User: Answer in English from 8 December 2026 on.", "episodic", later),
            fact("Ann loves hiking in the Alps with her dog since 8 December.", "episodic", later),
        ],
        store,
        scope=SCOPE,
        now=later,
    )
    written = {o.decision.target_id: o.record for o in outcomes if o.decision.action == "UPDATE"}
    english, dog = written[rule.id], written[hiking.id]
    assert english is not None and english.memory_type == "procedural"  # the rule stays a rule
    # No one-value attribute in "loves hiking": the record is typed as told.
    assert dog is not None and dog.memory_type == "episodic"


def test_a_rule_a_model_merged_into_a_facts_update_stays_a_rule(tmp_path: Path) -> None:
    """Only a dated event takes the replaced record's type: a model that UPDATEs "I live
    in Berlin" with "always answer in German" (typed a rule) keeps it a rule, pinned in
    windows as one (it was written ``semantic``, a review)."""
    update = {
        "action": "UPDATE",
        "target": 0,
        "text": "Always answer in German.",
        "reason": "merged",
    }
    llm = ScriptedLLM([json.dumps(update)])
    with Memory(
        tmp_path / "m.db",
        embedder=HashEmbedder(),
        background_embedding=False,
        reconciler=LLMReconciler(llm),
    ) as memory:
        [berlin] = infer(memory, "I live in Berlin.")
        [rule] = infer(memory, "From now on always answer in German, since I live in Berlin.")
        assert len(llm.calls) == 1 and berlin.memory_type == "semantic"
        assert rule.metadata["supersedes"] == berlin.id
        assert rule.memory_type == "procedural"
