"""Reconciliation: ADD / UPDATE / DELETE / NOOP decisions, and applying them to a real store."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

import pytest

from contextos.errors import NotFound, ProviderError
from contextos.llm.prompts import RECONCILE_SCHEMA, RECONCILE_V2
from contextos.memory.extract import Candidate, OfflineExtractor
from contextos.memory.reconcile import (
    Decision,
    HeuristicReconciler,
    LLMReconciler,
    Reconciler,
    apply,
    find_similar,
    reconcile,
)
from contextos.store.base import Store
from contextos.testing.embedders import HashEmbedder
from contextos.testing.llm import ScriptedLLM
from contextos.types import Filter, MemoryRecord, Message, Scope, content_hash

SCOPE = Scope(tenant="t1", user_id="ann")
SAID = datetime(2023, 5, 8, 13, 56, tzinfo=UTC)
LATER = datetime(2023, 6, 9, 10, 0, tzinfo=UTC)


def cand(text: str, speaker: str = "Ann", **kw: Any) -> Candidate:
    kw.setdefault("memory_type", "semantic")
    return Candidate(text, speaker=speaker, provenance=("D2:1",), **kw)


def rec(text: str, rid: str = "m1", speaker: str = "Ann", **kw: Any) -> MemoryRecord:
    meta = {"speaker": speaker}
    return MemoryRecord(
        id=rid, text=text, scope=SCOPE, metadata=meta, hash=content_hash(text), **kw
    )


# -- heuristic decider -------------------------------------------------------------------
HEURISTIC_CASES = [
    # new fact, stored fact, expected action, expected target
    ("Ann lives in Paris.", None, "ADD", None),
    ("Ann lives in Paris.", "Ann lives in Paris.", "NOOP", "m1"),
    ("ann lives in paris!", "Ann lives in Paris.", "NOOP", "m1"),
    ("Ann really loves hiking in the Alps.", "Ann loves hiking in the Alps.", "NOOP", "m1"),
    ("Ann lives in Berlin.", "Ann lives in Paris.", "UPDATE", "m1"),
    ("Ann moved to Berlin last month.", "Ann lives in Paris with her cat.", "UPDATE", "m1"),
    ("Ann works at Google now.", "Ann works at Meta.", "UPDATE", "m1"),
    ("Ann's favorite color is green.", "Ann's favorite color is blue.", "UPDATE", "m1"),
    ("Ann has 3 kids.", "Ann has 2 kids.", "UPDATE", "m1"),
    ("Ann no longer lives in Paris.", "Ann lives in Paris.", "DELETE", "m1"),
    ("Ann doesn't like sushi anymore.", "Ann likes sushi.", "DELETE", "m1"),
    ("Ann quit her job at Meta.", "Ann works at Meta.", "DELETE", "m1"),
    ("Ann likes sushi.", "Ann doesn't like sushi.", "UPDATE", "m1"),
    (
        "Ann loves hiking in the Alps with her dog Rex every summer.",
        "Ann loves hiking in the Alps.",
        "UPDATE",
        "m1",
    ),
    ("Bob lives in Berlin.", "Ann lives in Paris.", "ADD", None),
    ("Ann plays the violin.", "Ann lives in Paris.", "ADD", None),
    ("Ann hates sushi.", "Ann likes sushi.", "ADD", None),
    ("Ann is tall.", "Ann is a teacher.", "ADD", None),
    ("Ann's cat's name is Tom.", "Ann's dog's name is Max.", "ADD", None),
    ("Ann's dog's name is Rex.", "Ann's dog's name is Max.", "UPDATE", "m1"),
    ("Bob doesn't like sushi.", "Ann likes sushi.", "ADD", None),
    ("Ann lives in Paris.", "Ann likes Paris in spring.", "ADD", None),
]


@pytest.mark.parametrize(("new", "stored", "action", "target"), HEURISTIC_CASES)
def test_heuristic_decisions(new: str, stored: str | None, action: str, target: str | None) -> None:
    similar = [rec(stored)] if stored else []
    decision = HeuristicReconciler().decide(cand(new), similar)
    assert (decision.action, decision.target_id) == (action, target), decision.reason
    assert decision.candidate.text == new and decision.reason


def test_heuristic_picks_the_matching_record_among_several() -> None:
    similar = [rec("Ann plays tennis.", "a"), rec("Ann lives in Paris.", "b")]
    decision = HeuristicReconciler().decide(cand("Ann lives in Rome."), similar)
    assert (decision.action, decision.target_id) == ("UPDATE", "b")


def test_heuristic_ignores_records_whose_validity_is_closed() -> None:
    closed = rec("Ann lives in Paris.", valid_to=SAID)
    assert HeuristicReconciler().decide(cand("Ann lives in Paris."), [closed]).action == "ADD"


def test_decisions_validate_themselves() -> None:
    with pytest.raises(ValueError, match="needs the id"):
        Decision("UPDATE", cand("x"))
    with pytest.raises(ValueError, match="unknown action"):
        Decision("MERGE", cand("x"))  # type: ignore[arg-type]
    assert Decision("ADD", cand("x"), text="y").new_text == "y"
    assert isinstance(HeuristicReconciler(), Reconciler)


# -- LLM decider -------------------------------------------------------------------------
SIMILAR = [rec("Ann lives in Paris.", "m1"), rec("Ann works at Meta.", "m2")]


def reply(action: str, target: int | None = None, text: str | None = None) -> str:
    return json.dumps({"action": action, "target": target, "text": text, "reason": "because"})


@pytest.mark.parametrize(
    ("scripted", "action", "target", "text"),
    [
        (reply("ADD"), "ADD", None, None),
        (
            reply("UPDATE", 0, "Ann lives in Berlin since 2023."),
            "UPDATE",
            "m1",
            "Ann lives in Berlin since 2023.",
        ),
        (reply("DELETE", 1), "DELETE", "m2", None),
        (reply("NOOP", 0), "NOOP", "m1", None),
        ("```json\n" + reply("DELETE", 0) + "\n```", "DELETE", "m1", None),
    ],
)
def test_llm_decisions(scripted: str, action: str, target: str | None, text: str | None) -> None:
    llm = ScriptedLLM([scripted])
    decision = LLMReconciler(llm).decide(cand("Ann moved to Berlin."), SIMILAR)
    assert (decision.action, decision.target_id, decision.text) == (action, target, text)
    assert decision.decided_by == RECONCILE_V2.id
    [call] = llm.calls
    assert call.system == RECONCILE_V2.system
    assert call.json_schema == RECONCILE_SCHEMA
    prompt = call.messages[0].content
    assert "Ann moved to Berlin." in prompt
    assert '{"index": 0, "memory": "Ann lives in Paris."}' in prompt
    assert '{"index": 1, "memory": "Ann works at Meta."}' in prompt
    assert "m1" not in prompt  # the model sees indexes, never ids it could mangle


@pytest.mark.parametrize(
    "scripted",
    [
        "I think you should ADD it.",
        '{"action": "MERGE", "target": 0}',
        '{"action": "DELETE", "target": 7}',
        '{"action": "UPDATE"}',
        '{"action": "DELETE", "target": "0"}',
        '{"action": "ADD", "surprise": true}',
        "[]",
    ],
)
def test_malformed_replies_fall_back_by_default_or_become_a_logged_noop(
    scripted: str, caplog: pytest.LogCaptureFixture
) -> None:
    # A bad reply never loses the fact: by default the heuristic decides it.
    with caplog.at_level(logging.WARNING, logger="contextos.memory.reconcile"):
        fell_back = LLMReconciler(ScriptedLLM([scripted])).decide(cand("Ann x."), SIMILAR)
    assert (fell_back.action, fell_back.decided_by) == ("ADD", "heuristic")
    assert "invalid reconciliation reply" in caplog.text and "fallback decider" in caplog.text
    noop = LLMReconciler(ScriptedLLM([scripted]), on_invalid="noop")
    decision = noop.decide(cand("Ann x."), SIMILAR)
    assert decision.action == "NOOP" and decision.target_id is None
    assert decision.reason.startswith("invalid model reply")


@pytest.mark.parametrize(
    "text",
    ["Ann lives in " + "Rome " * 20_000, "Ann lives in\x00 Oslo."],
    ids=["longer than a memory may be", "NUL"],
)
def test_a_text_no_memory_can_hold_is_an_invalid_reply(text: str) -> None:
    # add() and update() refuse such a text; the model's went to the store, which kept
    # 100,000+ characters or raised out of add().
    for action in ("UPDATE", "ADD"):
        noop = LLMReconciler(ScriptedLLM([reply(action, 0, text)]), on_invalid="noop")
        decision = noop.decide(cand("Ann lives in Rome."), SIMILAR)
        assert decision.action == "NOOP" and decision.reason.startswith("invalid model reply")
        fallback = LLMReconciler(ScriptedLLM([reply(action, 0, text)]))  # the default
        decision = fallback.decide(cand("Ann lives in Rome."), SIMILAR)
        assert (decision.action, decision.text, decision.decided_by) == (
            "UPDATE",
            None,
            "heuristic",
        )


def test_a_blank_text_in_a_reply_leaves_the_candidates() -> None:
    decision = LLMReconciler(ScriptedLLM([reply("UPDATE", 0, "  ")])).decide(
        cand("Ann lives in Rome."), SIMILAR
    )
    assert (decision.action, decision.new_text) == ("UPDATE", "Ann lives in Rome.")


def test_malformed_reply_can_raise_or_fall_back() -> None:
    with pytest.raises(ProviderError, match="invalid reconciliation reply"):
        LLMReconciler(ScriptedLLM(["nope"]), on_invalid="raise").decide(cand("Ann x."), SIMILAR)
    fallback = LLMReconciler(ScriptedLLM(["nope"]), on_invalid="fallback")
    decision = fallback.decide(cand("Ann lives in Rome."), SIMILAR)
    assert (decision.action, decision.target_id, decision.decided_by) == (
        "UPDATE",
        "m1",
        "heuristic",
    )
    with pytest.raises(ValueError):
        LLMReconciler(ScriptedLLM([]), on_invalid="ignore")  # type: ignore[arg-type]


def test_no_similar_memories_means_add_without_a_model_call() -> None:
    llm = ScriptedLLM([])
    decision = LLMReconciler(llm).decide(cand("Ann lives in Rome."), [])
    assert decision.action == "ADD" and llm.calls == []
    closed = rec("Ann lives in Paris.", valid_to=SAID)
    assert LLMReconciler(llm).decide(cand("Ann lives in Rome."), [closed]).action == "ADD"
    assert llm.calls == []


def test_scripted_llm_fails_loudly_when_out_of_replies() -> None:
    llm = ScriptedLLM([reply("ADD")])
    LLMReconciler(llm).decide(cand("Ann x."), SIMILAR)
    with pytest.raises(ProviderError, match="only 1 scripted"):
        LLMReconciler(llm).decide(cand("Ann y."), SIMILAR)


# -- apply() on real stores: SQLite and PostgreSQL (the ``store`` fixture of conftest) ------
def active(store: Store) -> list[str]:
    return sorted(r.text for r in store.list(Filter(scope=SCOPE)))


def add(store: Store, text: str) -> MemoryRecord:
    record = apply(Decision("ADD", cand(text)), store, scope=SCOPE, now=SAID)
    assert record is not None
    return record


def test_apply_add_inserts_with_provenance(store: Store) -> None:
    c = cand(
        "Ann ran a race on 7 May 2023.",
        memory_type="episodic",
        event_time=datetime(2023, 5, 7, tzinfo=UTC),
        entities=("Ann",),
        confidence=0.8,
    )
    record = apply(Decision("ADD", c), store, scope=SCOPE, now=SAID, metadata={"session": "s1"})
    assert record is not None
    stored = store.get("t1", record.id)
    assert stored is not None
    assert stored.text == c.text and stored.memory_type == "episodic"
    assert stored.provenance == ("D2:1",)
    assert stored.event_time == datetime(2023, 5, 7, tzinfo=UTC)
    assert stored.valid_to is None and stored.hash == content_hash(c.text)
    assert stored.metadata["speaker"] == "Ann" and stored.metadata["session"] == "s1"
    assert [e.event for e in store.history("t1", record.id)] == ["ADD"]


def test_apply_update_closes_the_old_record_and_links_both(store: Store) -> None:
    old = add(store, "Ann lives in Paris.")
    decision = HeuristicReconciler().decide(cand("Ann lives in Berlin."), [old])
    new = apply(decision, store, scope=SCOPE, now=LATER)
    assert new is not None and new.text == "Ann lives in Berlin."
    closed = store.get("t1", old.id)
    assert closed is not None and closed.valid_to == LATER
    assert closed.metadata["superseded_by"] == new.id and closed.metadata["speaker"] == "Ann"
    assert new.metadata["supersedes"] == old.id
    assert active(store) == ["Ann lives in Berlin."]
    every = store.list(Filter(scope=SCOPE, include_invalid=True))
    assert sorted(r.text for r in every) == ["Ann lives in Berlin.", "Ann lives in Paris."]
    assert [e.event for e in store.history("t1", old.id)] == ["ADD", "UPDATE"]


def test_apply_delete_closes_validity_without_erasing(store: Store) -> None:
    old = add(store, "Ann lives in Paris.")
    decision = HeuristicReconciler().decide(cand("Ann no longer lives in Paris."), [old])
    closed = apply(decision, store, scope=SCOPE, now=LATER)
    assert closed is not None and closed.id == old.id and closed.valid_to == LATER
    assert store.get("t1", old.id) is not None
    assert active(store) == []
    assert [e.event for e in store.history("t1", old.id)] == ["ADD", "DELETE"]


def test_apply_noop_changes_nothing(store: Store) -> None:
    old = add(store, "Ann lives in Paris.")
    assert apply(Decision("NOOP", cand("Ann lives in Paris."), old.id), store, scope=SCOPE) is None
    assert store.count(Filter(scope=SCOPE, include_invalid=True)) == 1
    assert [e.event for e in store.history("t1", old.id)] == ["ADD"]


def test_apply_never_reaches_into_another_tenant_or_user(store: Store) -> None:
    old = add(store, "Ann lives in Paris.")
    other = Scope(tenant="t2", user_id="ann")
    for action in ("UPDATE", "DELETE"):
        with pytest.raises(NotFound):
            apply(Decision(action, cand("Ann lives in Rome."), old.id), store, scope=other)
        with pytest.raises(NotFound):
            bob = Scope(tenant="t1", user_id="bob")
            apply(Decision(action, cand("Ann lives in Rome."), old.id), store, scope=bob)
    assert store.count(Filter(scope=other, include_invalid=True)) == 0
    assert active(store) == ["Ann lives in Paris."]


def test_extract_reconcile_apply_end_to_end(store: Store) -> None:
    extractor, decider = OfflineExtractor(), HeuristicReconciler()

    def ingest(text: str, turn_id: str, when: datetime) -> list[str]:
        msg = Message("user", text, name="Ann", metadata={"dia_id": turn_id})
        actions: list[str] = []
        for c in extractor.extract([msg], session_time=when):
            decision = decider.decide(c, find_similar(store, SCOPE, c.text, k=5))
            apply(decision, store, scope=SCOPE, now=when)
            actions.append(decision.action)
        return actions

    assert ingest("Hi! I live in Paris. I love painting.", "D1:1", SAID) == ["ADD", "ADD"]
    assert ingest("I live in Paris.", "D1:9", SAID) == ["NOOP"]
    assert ingest("I moved to Berlin last week.", "D2:3", LATER) == ["UPDATE"]
    texts = active(store)
    assert texts == ["Ann loves painting.", "Ann moved to Berlin in the week of 29 May 2023."]
    berlin = next(r for r in store.list(Filter(scope=SCOPE)) if "Berlin" in r.text)
    assert berlin.provenance == ("D2:3",)


def test_reconcile_decides_and_applies_in_order(store: Store) -> None:
    batch = [cand("Ann lives in Paris."), cand("Ann lives in Paris!"), cand("Ann plays chess.")]
    outcomes = reconcile(batch, store, scope=SCOPE, now=SAID, metadata={"session": "s1"})
    assert [o.decision.action for o in outcomes] == ["ADD", "NOOP", "ADD"]
    paris = outcomes[0].record
    assert paris is not None
    assert outcomes[1].record is None and outcomes[1].decision.target_id == paris.id
    later = reconcile([cand("Ann lives in Rome.")], store, scope=SCOPE, now=LATER)
    assert [(o.decision.action, o.decision.target_id) for o in later] == [("UPDATE", paris.id)]
    assert active(store) == ["Ann lives in Rome.", "Ann plays chess."]
    assert all(r.metadata.get("session") in ("s1", None) for r in store.list(Filter(scope=SCOPE)))


def test_find_similar_merges_lexical_and_vector_hits(store: Store) -> None:
    embedder = HashEmbedder()
    records = [add(store, t) for t in ("Ann lives in Paris.", "Ann plays chess.", "Bob cooks.")]
    vectors = embedder.embed([r.text for r in records])
    store.set_vectors("t1", [r.id for r in records], vectors, embedder.model_id)
    lexical = find_similar(store, SCOPE, "Where does Ann live? Paris?", k=2)
    both = find_similar(store, SCOPE, "Where does Ann live? Paris?", k=2, embedder=embedder)
    assert lexical[0].text == "Ann lives in Paris."
    assert both[0].text == "Ann lives in Paris."
    assert len({r.id for r in both}) == len(both) <= 4
    assert find_similar(store, Scope(tenant="t2", user_id="ann"), "Paris", k=2) == []


def test_reconcile_writes_new_facts_in_one_batch_and_still_sees_them(store: Store) -> None:
    batch = [
        cand("Ann lives in Paris."),
        cand("Ann plays chess on Sundays."),
        cand("Ann lives in Lyon."),  # changes a fact of this very batch
        cand("Ann plays chess on Sundays!"),
    ]
    outcomes = reconcile(batch, store, scope=SCOPE, now=SAID)
    assert [o.decision.action for o in outcomes] == ["ADD", "ADD", "UPDATE", "NOOP"]
    assert outcomes[2].decision.target_id == outcomes[0].record.id  # type: ignore[union-attr]
    assert active(store) == ["Ann lives in Lyon.", "Ann plays chess on Sundays."]
    assert store.count(Filter(scope=SCOPE, include_invalid=True)) == 3


def test_reconcile_looks_across_the_users_sessions(store: Store) -> None:
    monday = Scope(tenant="t1", user_id="ann", session_id="s1")
    friday = Scope(tenant="t1", user_id="ann", session_id="s2")
    [first] = reconcile([cand("Ann lives in Paris.")], store, scope=monday, now=SAID)
    [later] = reconcile([cand("Ann lives in Rome.")], store, scope=friday, now=LATER)
    assert first.record is not None and later.decision.target_id == first.record.id
    assert later.record is not None and later.record.session_id == "s2"
    other = Scope(tenant="t1", user_id="bob", session_id="s1")
    [bob] = reconcile([cand("Ann lives in Rome.")], store, scope=other, now=LATER)
    assert bob.decision.action == "ADD"
