"""A scope whose keyword search fails stops costing every other user's searches.

The SQLite store's keyword index is one for the whole file. When a search fails in it
(a row it cannot take), the index is dropped and the search tried once more on a new
index holding only that search's users; that failing too, the user gets a
``StoreFault``. Each such search used to drop the index again, so every other user's
next search read and tokenized all its rows again: with 20,000 records a neighbour's
search went from 0.6 ms to 670 ms. Now the failing scope is remembered, and its
searches fail fast without touching the index until something in it changes (or
``LEXICAL_FAILING_S`` pass). The row the index cannot take is simulated as in
``tests/test_lexical_hostile_words.py``: the tokenizer fails on any batch holding
"kaboom".
"""

from __future__ import annotations

import sqlite3
import statistics
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from contextos.errors import StoreFault
from contextos.store import sqlite as sqlite_store
from contextos.store.base import Patch
from contextos.store.sqlite import SQLiteStore
from contextos.store.sqlite.lexical_index import Tokenizer
from contextos.types import Filter, MemoryRecord, Scope

GUS_ROWS = 5_000
GUS = Filter(scope=Scope("t", "gus"))
MALLORY = Filter(scope=Scope("t", "mallory"))


class Tokenized:
    """How many rows of each user the keyword index tokenized."""

    def __init__(self) -> None:
        self.rows: dict[str | None, int] = {}

    def count(self, user: str | None) -> int:
        return self.rows.get(user, 0)


@pytest.fixture
def tokenized(monkeypatch: pytest.MonkeyPatch) -> Tokenized:
    """The tokenizer fails on any batch holding "kaboom" (as SQLite's decoding of a cut
    term did), and counts the rows it is given, by user."""
    seen = Tokenized()
    rows = Tokenizer.rows

    def failing(self: Tokenizer, batch: Any) -> Any:
        batch = list(batch)
        for r in batch:
            seen.rows[r.user_id] = seen.rows.get(r.user_id, 0) + 1
        if any("kaboom" in r.text for r in batch):
            raise sqlite3.OperationalError("Could not decode to UTF-8 column 'term'")
        return rows(self, batch)

    monkeypatch.setattr(Tokenizer, "rows", failing)
    return seen


def _record(mid: str, user: str, text: str) -> MemoryRecord:
    now = datetime.now(UTC)
    return MemoryRecord(
        id=mid, text=text, scope=Scope("t", user), created_at=now, updated_at=now, hash=mid
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    """Gus with many records, Mallory with a greeting and the row the index cannot take."""
    s = SQLiteStore(tmp_path / "storm.db")
    try:
        gus = [
            _record(f"g{i}", "gus", f"gus note {i} about peanuts and the lake plans {i % 91}")
            for i in range(GUS_ROWS)
        ]
        for i in range(0, len(gus), 1000):
            s.put(gus[i : i + 1000])
        s.put([_record("hi", "mallory", "hello there"), _record("k", "mallory", "kaboom")])
        yield s
    finally:
        s.close()


def _ms(search: Any) -> float:
    start = time.perf_counter()
    search()
    return (time.perf_counter() - start) * 1000


def _gus(s: SQLiteStore) -> None:
    assert len(s.keyword_search(GUS, "peanuts", limit=10)) == 10


def _mallory_fails(s: SQLiteStore) -> None:
    with pytest.raises(StoreFault, match="keyword search failed: Could not decode"):
        s.keyword_search(MALLORY, "hello", limit=10)


def test_a_failing_users_searches_leave_the_others_index_alone(
    store: SQLiteStore, tokenized: Tokenized
) -> None:
    _gus(store)  # the index holds gus now
    alone = [_ms(lambda: _gus(store)) for _ in range(15)]
    _mallory_fails(store)  # drops the index (once), tries again on a new one: fails
    tried = tokenized.count("mallory")
    after = tokenized.count("gus")
    mixed = []
    for _ in range(15):
        _mallory_fails(store)
        mixed.append(_ms(lambda: _gus(store)))
    # gus was read again once, after that first failure; then never again, and
    # mallory's searches failed without reading (or tokenizing) her rows
    assert tokenized.count("gus") - after == GUS_ROWS
    assert tokenized.count("mallory") == tried
    # gus's searches, after each of mallory's, as fast as alone (reading his 5,000
    # rows again each time made them hundreds of times slower)
    assert statistics.median(mixed) < 10 * statistics.median(alone), (alone, mixed)

    # a change in another scope: mallory's searches still fail fast
    store.put([_record("g-new", "gus", "gus bought more peanuts")])
    _mallory_fails(store)
    _gus(store)
    assert tokenized.count("gus") - after == GUS_ROWS + 1  # only the new record
    assert tokenized.count("mallory") == tried

    # the row is deleted: mallory's searches work again, gus's index stays
    store.delete("t", "k")
    assert [r.id for r in store.keyword_search(MALLORY, "hello", limit=10)] == ["hi"]
    _gus(store)
    assert tokenized.count("gus") - after == GUS_ROWS + 1


def test_a_change_of_the_failing_row_or_the_time_bound_lets_a_search_try_again(
    store: SQLiteStore, tokenized: Tokenized, monkeypatch: pytest.MonkeyPatch
) -> None:
    _mallory_fails(store)
    tried = tokenized.count("mallory")
    _mallory_fails(store)
    assert tokenized.count("mallory") == tried  # remembered: not tried again
    # the row edited in place (its id stays): the next search tries again, and works
    store.update("t", "k", Patch(text="no longer a problem"))
    assert [r.id for r in store.keyword_search(MALLORY, "hello", limit=10)] == ["hi"]
    # broken again: remembered again, until the time is up
    store.update("t", "k", Patch(text="kaboom again"))
    _mallory_fails(store)
    tried = tokenized.count("mallory")
    _mallory_fails(store)
    assert tokenized.count("mallory") == tried
    # remembered for no time: every search tries again
    monkeypatch.setattr(sqlite_store, "LEXICAL_FAILING_S", 0.0)
    store.update("t", "k", Patch(text="kaboom once more"))
    _mallory_fails(store)
    tried = tokenized.count("mallory")
    _mallory_fails(store)
    assert tokenized.count("mallory") > tried
