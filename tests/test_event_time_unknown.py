"""A memory added without ``event_time`` is placed by when it was added in time filters.

``Memory.add`` stores ``event_time=None`` when none is given (the time is unknown, and a
memory with an event time renders its date into every window, so none is made up). Time
filters (``time_range``, ``Filter.event_after``/``event_before``) used to treat the
missing time as outside every range: a memory just added was dropped by
``time_range=(an hour ago, None)`` while the docs said its event time defaulted to now.
Now every time-range check reads ``event_time``, or ``created_at`` where it is None: the
SQL of both stores (``store.filters``), ``Filter.matches`` (which re-checks every search
result) and the SQLite store's in-process indexes (``vector_index.time_mask``, used by
the vector index and the keyword index alike). Each path is reached here: listing
(SQL), keyword search (SQLite's keyword index, PostgreSQL's SQL) and vector search
(SQLite's vector index, PostgreSQL's SQL), on both stores.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from contextos.memory import Memory
from contextos.memory.retrieval import RetrievalConfig
from contextos.testing.embedders import HashEmbedder
from contextos.types import Filter, MemoryRecord, Scope
from pg_support import memory_on

BOTH = pytest.mark.parametrize(
    "kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
MODES = pytest.mark.parametrize("mode", ["bm25", "dense"])
LONG_AGO = datetime(2020, 3, 1, tzinfo=UTC)


@contextmanager
def open_memory(kind: str, tmp_path: Path, **kwargs: Any) -> Iterator[Memory]:
    """A Memory (vectors written inline) on a SQLite file or a fresh PostgreSQL schema."""
    kwargs.setdefault("embedder", HashEmbedder())
    kwargs.setdefault("background_embedding", False)
    with memory_on(kind, tmp_path, **kwargs) as m:
        yield m


@BOTH
@MODES
def test_a_memory_added_without_event_time_is_found_by_a_range_around_when_it_was_added(
    kind: str, mode: str, tmp_path: Path
) -> None:
    with open_memory(kind, tmp_path, retrieval=RetrievalConfig(mode=mode)) as m:
        an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
        [today] = m.add("I moved to Lisbon", user_id="ana")
        in_an_hour = datetime.now(UTC) + timedelta(hours=1)
        [dated] = m.add("I moved to Lisbon from Porto", user_id="ana", event_time=LONG_AGO)
        assert m.get(today.id).event_time is None  # still unknown: no date is rendered

        def found(start: datetime | None, end: datetime | None) -> set[str]:
            hits = m.search("Lisbon", user_id="ana", time_range=(start, end), limit=10)
            return {h.record.id for h in hits}

        assert found(an_hour_ago, in_an_hour) == {today.id}
        assert found(an_hour_ago, None) == {today.id}
        assert found(None, in_an_hour) == {today.id, dated.id}
        # Placed at when it was added, not at the start of time: a range that ends
        # before it leaves it out, and the dated memory goes by its event time.
        assert found(None, an_hour_ago) == {dated.id}
        assert found(LONG_AGO, LONG_AGO + timedelta(days=1)) == {dated.id}


@BOTH
def test_listing_with_an_event_time_filter_places_an_undated_memory_at_its_creation(
    kind: str, tmp_path: Path
) -> None:
    with open_memory(kind, tmp_path) as m:
        an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
        [today] = m.add("a note without a date", user_id="ana")
        [dated] = m.add("a note from 2020", user_id="ana", event_time=LONG_AGO)
        scope = Scope(tenant=m.tenant, user_id="ana")

        def listed(flt: Filter) -> set[str]:
            return {r.id for r in m.get_all(user_id="ana", filters=flt)}

        assert listed(Filter(scope=scope, event_after=an_hour_ago)) == {today.id}
        assert listed(Filter(scope=scope, event_before=an_hour_ago)) == {dated.id}


def test_filter_matches_reads_created_at_when_event_time_is_unknown() -> None:
    added = datetime(2024, 5, 1, 12, tzinfo=UTC)
    scope = Scope(tenant="t", user_id="ana")
    undated = MemoryRecord(id="a", text="x", scope=scope, created_at=added)
    dated = MemoryRecord(id="b", text="x", scope=scope, created_at=added, event_time=LONG_AGO)
    now = datetime.now(UTC)
    around = Filter(scope=scope, event_after=added, event_before=added + timedelta(seconds=1))
    assert around.matches(undated, now)
    assert not around.matches(dated, now)
    assert not Filter(scope=scope, event_before=added).matches(undated, now)
    assert Filter(scope=scope, event_before=added).matches(dated, now)
