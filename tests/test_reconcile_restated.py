"""A claim said again in other words is a NOOP; an UPDATE of an attribute ends every
other current fact that holds it, and a DELETE every other one that gives it the value
denied.

A review (notes/s31, bug 2) found "I am living in Lisbon." after "I live in Lisbon."
stored as a second current fact (same subject, attribute and value, but words too unlike
for a near duplicate); "I live in Berlin now." then closed only one of them, and search
returned both Berlin and Lisbon. The same review (notes/s31) saw "I no longer live in
Lisbon." close one of two such facts and leave the other current.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from contextos.memory import Memory
from contextos.memory.extract import Candidate
from contextos.memory.reconcile import Decision, HeuristicReconciler, apply, reconcile
from contextos.store.base import Store
from contextos.types import Filter, MemoryRecord, Scope, content_hash

SCOPE = Scope(tenant="t1", user_id="ann")
SAID = datetime(2023, 5, 8, tzinfo=UTC)
LATER = datetime(2024, 1, 1, tzinfo=UTC)


def cand(text: str) -> Candidate:
    return Candidate(text, "semantic", speaker="Ann", provenance=("D1:1",))


def rec(text: str, rid: str = "m1") -> MemoryRecord:
    return MemoryRecord(
        id=rid, text=text, scope=SCOPE, metadata={"speaker": "Ann"}, hash=content_hash(text)
    )


def added(store: Store, text: str, scope: Scope = SCOPE) -> MemoryRecord:
    """``text`` stored as a fact of ``scope`` (an ADD applied), said at ``SAID``."""
    record = apply(Decision("ADD", cand(text)), store, scope=scope, now=SAID)
    assert record is not None
    return record


def current(store: Store) -> list[str]:
    return sorted(r.text for r in store.list(Filter(scope=SCOPE)))


def test_the_same_claim_in_other_words_is_a_noop(memory: Memory) -> None:
    said: list[list[str]] = []
    for year, text in [
        (2021, "I live in Lisbon."),
        (2022, "I am living in Lisbon."),
        (2023, "I still live in Lisbon, Portugal."),
        (2024, "I live in Berlin now."),
    ]:
        when = datetime(year, 1, 1, tzinfo=UTC)
        said.append([r.text for r in memory.add(text, user_id="ann", infer=True, event_time=when)])
    assert said[1] == []  # restated: nothing new
    assert said[2] == ["User still lives in Lisbon, Portugal."]  # more detail: an UPDATE
    assert [r.text for r in memory.get_all(user_id="ann")] == ["User lives in Berlin now."]
    hits = memory.search(
        "where does ann live", user_id="ann", as_of=datetime(2025, 1, 1, tzinfo=UTC)
    )
    assert [h.record.text for h in hits] == ["User lives in Berlin now."]


def test_a_restatement_is_a_noop_only_when_it_says_nothing_more() -> None:
    decide = HeuristicReconciler().decide
    stored = rec("Ann lives in Lisbon.")
    for text in ("Ann is living in Lisbon.", "Ann moved to Lisbon.", "Ann resides in Lisbon!"):
        decision = decide(cand(text), [stored])
        assert (decision.action, decision.target_id) == ("NOOP", "m1"), text
    more = decide(cand("Ann lives in Lisbon with her husband Tom."), [stored])
    assert (more.action, more.target_id) == ("UPDATE", "m1")
    # Two notes that each begin with the claim are not the same fact.
    notes = decide(
        cand("Ann lives in Paris. Her notes: w1 w2 w3."), [rec("Ann lives in Paris. w7 w8")]
    )
    assert notes.action == "ADD"


def test_an_update_ends_every_other_current_fact_of_the_attribute(store: Store) -> None:
    # Two current places, as a store written before restatements were NOOPs holds them
    # (or one where a model added the second).
    lisbon = added(store, "Ann lives in Lisbon.")
    living = added(store, "Ann is living in Lisbon.")
    for other in ("Ann works at Acme.", "Ann's sister lives in Rome.", "Ann likes Lisbon."):
        added(store, other)
    outcomes = reconcile([cand("Ann lives in Berlin now.")], store, scope=SCOPE, now=LATER)
    actions = sorted((o.decision.action, o.decision.target_id) for o in outcomes)
    assert actions == sorted([("UPDATE", lisbon.id), ("DELETE", living.id)])
    berlin = outcomes[0].record
    assert berlin is not None and berlin.text == "Ann lives in Berlin now."
    assert current(store) == [
        "Ann likes Lisbon.",
        "Ann lives in Berlin now.",
        "Ann works at Acme.",
        "Ann's sister lives in Rome.",  # her sister's place, not hers
    ]
    for old in (lisbon, living):
        closed = store.get("t1", old.id)
        assert closed is not None and closed.valid_to == LATER
        assert closed.metadata["superseded_by"] == berlin.id


class AddsUnlessNow:
    """A decider that adds each fact, but for one that says "now": it updates the first
    fact it is shown (as a model may, leaving a second fact of the attribute open)."""

    def decide(self, candidate: Candidate, similar: Sequence[MemoryRecord]) -> Decision:
        live = [r for r in similar if r.valid_to is None]
        if "now" in candidate.text and live:
            return Decision("UPDATE", candidate, live[0].id, decided_by="test")
        return Decision("ADD", candidate, decided_by="test")


def test_an_update_ends_the_facts_of_the_attribute_planned_in_its_batch(store: Store) -> None:
    batch = [
        cand("Ann lives in Paris."),
        cand("Ann resides in Lyon."),
        cand("Ann lives in Oslo now."),
    ]
    outcomes = reconcile(batch, store, scope=SCOPE, now=SAID, reconciler=AddsUnlessNow())
    assert [o.decision.action for o in outcomes] == ["ADD", "ADD", "UPDATE", "DELETE"]
    oslo = outcomes[2].record
    assert oslo is not None and oslo.text == "Ann lives in Oslo now."
    assert current(store) == ["Ann lives in Oslo now."]
    every = store.list(Filter(scope=SCOPE, include_invalid=True))
    ended = {r.text: r for r in every if r.valid_to is not None}
    assert sorted(ended) == ["Ann lives in Paris.", "Ann resides in Lyon."]
    assert all(r.metadata["superseded_by"] == oslo.id for r in ended.values())


def test_a_delete_ends_every_other_current_fact_of_the_same_value(store: Store) -> None:
    lisbon = added(store, "Ann lives in Lisbon.")
    living = added(store, "Ann is living in Lisbon.")
    for other in ("Ann lives in Porto.", "Ann's sister lives in Lisbon.", "Ann likes Lisbon."):
        added(store, other)
    outcomes = reconcile([cand("Ann no longer lives in Lisbon.")], store, scope=SCOPE, now=LATER)
    actions = sorted((o.decision.action, o.decision.target_id) for o in outcomes)
    assert actions == sorted([("DELETE", lisbon.id), ("DELETE", living.id)])
    assert current(store) == [
        "Ann likes Lisbon.",
        "Ann lives in Porto.",  # another value of the attribute: not what was denied
        "Ann's sister lives in Lisbon.",  # her sister's place, not hers
    ]
    for old in (lisbon, living):
        closed = store.get("t1", old.id)
        assert closed is not None and closed.valid_to == LATER


def test_a_delete_in_a_long_running_memory_leaves_no_copy_of_the_claim(memory: Memory) -> None:
    """The review's shape: one open Memory, the claim said twice in other words by a model
    that added both (here: written before restatements were NOOPs), then denied."""
    owner = Scope(tenant=memory.tenant, user_id="ann")
    for text in ("User lives in Lisbon.", "User is living in Lisbon."):
        added(memory.store, text, owner)
    assert len(memory.get_all(user_id="ann")) == 2
    memory.add("I no longer live in Lisbon.", user_id="ann", infer=True, event_time=LATER)
    assert [r.text for r in memory.get_all(user_id="ann")] == []
    assert memory.search("where does ann live", user_id="ann") == []


def test_an_update_ends_a_holder_found_only_by_its_likeness_to_the_target(store: Store) -> None:
    """The fact a candidate replaces is found by the candidate's words; another fact of the
    attribute may share too few of them to be among the ``k`` shown, and is found by a
    search for facts like the replaced one (``Plan._closes_too``'s ``like_target``)."""
    lisbon = added(store, "Ann lives in Lisbon.")
    living = added(store, "Ann is living in Lisbon, Portugal, with two cats.")
    added(store, "Bob lives in Berlin now.")
    outcomes = reconcile([cand("Ann lives in Berlin now.")], store, scope=SCOPE, now=LATER, k=2)
    actions = sorted((o.decision.action, o.decision.target_id) for o in outcomes)
    assert actions == sorted([("UPDATE", lisbon.id), ("DELETE", living.id)])
    assert current(store) == ["Ann lives in Berlin now.", "Bob lives in Berlin now."]
