"""``Store.put``'s ``closes`` and several ``after`` checks, and ``unchanged`` refusing an
ended record, on every backend (the ``store`` fixture: SQLite, and PostgreSQL when
``make test`` started one).

A reconciler's UPDATE writes a new fact and ends the one it replaces. Ended in a second
transaction, unconditionally, two adds that replaced one fact at once both kept their
replacement; now the end is part of the put, and only of a record still open and as read.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from contextos.errors import Conflict
from contextos.store.base import Close, Newest, Patch, Store
from contextos.types import Filter, MemoryRecord, Scope, content_hash

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
LATER = datetime(2024, 6, 1, tzinfo=UTC)


def rec(
    text: str, *, session: str | None = None, meta: dict[str, Any] | None = None
) -> MemoryRecord:
    return MemoryRecord(
        id=str(uuid.uuid4()),
        text=text,
        scope=Scope(tenant="t1", user_id="u1", session_id=session),
        metadata=meta or {},
        created_at=T0,
        event_time=T0,
        hash=content_hash(text),
    )


def read(store: Store, memory_id: str) -> MemoryRecord:
    got = store.get("t1", memory_id)
    assert got is not None
    return got


def ending(store: Store, memory_id: str, replaced_by: str | None = None) -> Close:
    """The close of the record as stored now (linked to ``replaced_by``, as an UPDATE's)."""
    old = read(store, memory_id)
    meta = None if replaced_by is None else {**old.metadata, "superseded_by": replaced_by}
    return Close(old, Patch(valid_to=LATER, metadata=meta))


def test_put_closes_a_record_with_its_inserts(store: Store) -> None:
    paris = rec("Ana lives in Paris.", meta={"speaker": "Ana"})
    store.put([paris])
    berlin = rec("Ana lives in Berlin.")
    store.put([berlin], closes=[ending(store, paris.id, berlin.id)])
    closed = read(store, paris.id)
    assert closed.valid_to == LATER and closed.metadata["superseded_by"] == berlin.id
    assert closed.metadata["speaker"] == "Ana"
    assert read(store, berlin.id).valid_to is None
    assert [e.event for e in store.history("t1", paris.id)] == ["ADD", "UPDATE"]


def test_put_refuses_whole_when_a_record_it_closes_ended_or_changed(store: Store) -> None:
    paris = rec("Ana lives in Paris.")
    store.put([paris])
    first, second = ending(store, paris.id, "x"), ending(store, paris.id, "y")
    berlin, rome = rec("Ana lives in Berlin."), rec("Ana lives in Rome.")
    store.put([berlin], closes=[first])
    with pytest.raises(Conflict):  # ended by the other since read: both would stay true
        store.put([rome], closes=[second])
    assert store.get("t1", rome.id) is None
    assert read(store, paris.id).metadata["superseded_by"] == "x"

    lyon = rec("Ana lives in Lyon.")
    store.put([lyon])
    stale = ending(store, lyon.id)
    store.update("t1", lyon.id, Patch(text="Ana lives in Nice."))
    with pytest.raises(Conflict):  # rewritten since read: not ended for the old text
        store.put([], closes=[stale])
    tagged = ending(store, lyon.id)
    store.update("t1", lyon.id, Patch(metadata={"pinned": True}))
    with pytest.raises(Conflict):  # its metadata would be overwritten with the old
        store.put([], closes=[tagged])
    store.delete("t1", lyon.id)
    with pytest.raises(Conflict):
        store.put([], closes=[tagged])


def test_a_put_of_closes_alone_makes_its_checks(store: Store) -> None:
    # A DELETE writes no record: its put returned before any check.
    paris = rec("Ana lives in Paris.")
    store.put([paris])
    newest = Newest(Filter(scope=Scope("t1", "u1"), include_invalid=True), paris.id)
    store.put([rec("Ana plays chess.")])
    with pytest.raises(Conflict):
        store.put([], after=newest, closes=[ending(store, paris.id)])
    assert read(store, paris.id).valid_to is None
    store.put([], closes=[ending(store, paris.id)])
    assert read(store, paris.id).valid_to == LATER


def test_put_after_several_newest_records_checks_each(store: Store) -> None:
    user = Filter(scope=Scope("t1", "u1"), include_invalid=True)
    session = Filter(scope=Scope("t1", "u1", session_id="s1"), include_invalid=True)
    turn = rec("turn one", session="s1")
    store.put([turn])
    both = [Newest(user, turn.id), Newest(session, turn.id)]
    store.put([rec("turn two", session="s2")])  # the user's newest, not the session's
    with pytest.raises(Conflict):
        store.put([rec("a fact", session="s1")], after=both)
    assert store.count(Filter(scope=Scope("t1", "u1", session_id="s1"))) == 1


def test_put_unchanged_refuses_a_record_ended_since_read(store: Store) -> None:
    # Ending a record leaves its text (and hash) as they were.
    paris = rec("Ana lives in Paris.")
    store.put([paris])
    store.update("t1", paris.id, Patch(valid_to=LATER))
    with pytest.raises(Conflict):
        store.put([rec("Ana lived in Paris.")], unchanged={paris.id: paris.hash})
