"""Where SQLite and PostgreSQL used to answer one call differently; both stores now
follow one rule (the ``store`` fixture runs each test on both).

- NUL (``\\x00``) in anything stored: SQLite kept it, PostgreSQL refused it with an error
  that named no field. Every store refuses it now, naming the field.
- A zero vector (a text the hash embedder finds no word in): its cosine with anything
  was 0.0 on SQLite and NaN on PostgreSQL, and a NaN relevance fails every
  ``min_score``. It is 0.0 on both.
"""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from contextos.memory import Memory
from contextos.store.base import Patch, Store
from contextos.testing.embedders import HashEmbedder
from contextos.types import Filter, MemoryRecord, Message, Scope, content_hash

SCOPE = Scope(tenant="t1", user_id="u1", session_id="s1")
EVERY = Filter(scope=Scope(tenant="t1"), include_invalid=True)


def rec(text: str = "a plain memory", scope: Scope = SCOPE, **fields: Any) -> MemoryRecord:
    return MemoryRecord(
        id=str(uuid.uuid4()),
        text=text,
        scope=scope,
        created_at=datetime(2024, 5, 1, tzinfo=UTC),
        hash=content_hash(text),
        **fields,
    )


# -- NUL ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("field", "record"),
    [
        ("text", rec("a\x00b")),
        ("metadata", rec(metadata={"note": "a\x00b"})),
        ("metadata", rec(metadata={"a\x00b": 1})),
        ("metadata", rec(metadata={"tags": ["ok", {"deep": "a\x00b"}]})),
        ("provenance", rec(provenance=("D1:1", "D\x001"))),
        ("context", rec(context="replying to a\x00b")),
        ("user_id", rec(scope=Scope(tenant="t1", user_id="u\x001"))),
        ("session_id", rec(scope=Scope(tenant="t1", session_id="s\x001"))),
    ],
)
def test_a_record_holding_nul_is_refused_naming_the_field(
    store: Store, field: str, record: MemoryRecord
) -> None:
    with pytest.raises(ValueError, match=rf"^{field} contains a NUL character"):
        store.put([rec("written with it"), record])
    assert store.count(EVERY) == 0  # all or none


@pytest.mark.parametrize(
    ("field", "patch"),
    [("text", Patch(text="a\x00b")), ("metadata", Patch(metadata={"k": ["a\x00b"]}))],
)
def test_an_update_bringing_nul_is_refused_and_changes_nothing(
    store: Store, field: str, patch: Patch
) -> None:
    store.put([rec(metadata={"k": "v"})])
    [kept] = store.list(EVERY)
    with pytest.raises(ValueError, match=rf"^{field} contains a NUL character"):
        store.update("t1", kept.id, patch)
    assert store.list(EVERY) == [kept]
    assert [e.event for e in store.history("t1", kept.id)] == ["ADD"]


def test_session_logs_and_state_holding_nul_are_refused(store: Store) -> None:
    said = [Message("user", "fine"), Message("user", "a\x00b")]
    with pytest.raises(ValueError, match="^message content contains a NUL"):
        store.append_turns(SCOPE, said, [1, 1])
    tagged = Message("user", "fine", metadata={"k": "a\x00b"})
    with pytest.raises(ValueError, match="^message metadata contains a NUL"):
        store.append_turns(SCOPE, [tagged], [1])
    assert store.turns(SCOPE) == []
    with pytest.raises(ValueError, match="^session meta contains a NUL"):
        store.set_session_meta(SCOPE, {"summary": "a\x00b"})
    assert store.session_meta(SCOPE) == {}


def test_memory_add_and_update_refuse_nul_on_every_store(store: Store) -> None:
    memory = Memory(store=store, embedder=HashEmbedder(), background_embedding=False)
    with pytest.raises(ValueError, match="^text contains a NUL"):
        memory.add("a\x00b", user_id="u1")
    with pytest.raises(ValueError, match="^metadata contains a NUL"):
        memory.add({"role": "user", "content": "hi", "name": "A\x00"}, user_id="u1")
    [kept] = memory.add("a plain memory", user_id="u1")
    with pytest.raises(ValueError, match="^text contains a NUL"):
        memory.update(kept.id, "a\x00b")
    assert [r.text for r in memory.get_all(user_id="u1")] == ["a plain memory"]


# -- zero vectors -----------------------------------------------------------------------
def test_a_zero_vector_has_cosine_zero_with_anything(store: Store) -> None:
    same, zero, opposite = rec("same"), rec("zero"), rec("opposite")
    store.put([same, zero, opposite])
    rows = np.array([[1, 0, 0], [0, 0, 0], [-1, 0, 0]], dtype=np.float32)
    store.set_vectors("t1", [same.id, zero.id, opposite.id], rows, "test-model")
    flt = Filter(scope=SCOPE)
    hits = store.vector_search(flt, np.array([1, 0, 0], dtype=np.float32), limit=10)
    assert [(h.id, h.score) for h in hits] == [(same.id, 1.0), (zero.id, 0.0), (opposite.id, -1.0)]
    blank = store.vector_search(flt, np.zeros(3, dtype=np.float32), limit=10)
    assert sorted(h.score for h in blank) == [0.0, 0.0, 0.0]


def test_no_hit_has_a_nan_relevance(store: Store) -> None:
    memory = Memory(store=store, embedder=HashEmbedder(), background_embedding=False)
    memory.add(["cats and dogs", "... !!!"], user_id="u1")  # the second embeds to zeros
    for query, floor in (("cats", None), ("???", None), ("cats", 0.0)):
        hits = memory.search(query, user_id="u1", min_score=floor)
        assert all(h.relevance is not None and not math.isnan(h.relevance) for h in hits)
        assert {h.record.text: h.relevance for h in hits}.get("... !!!") == 0.0, query
