"""The search path's shortcuts (issue #12, CPU per search) give the results the long
way gave: ``Filter.matches`` with its skipped parts agrees with the stores' SQL on
every part of a filter, decoding a row without parsing empty JSON or clamping an
in-range time gives the same record, and ``fuse`` gives reciprocal-rank fusion's
scores, ranks and order."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from contextos.memory.retrieval import Candidate, RetrievalConfig, fuse
from contextos.store.base import Ranked, Store
from contextos.store.sqlite import SQLiteStore
from contextos.times import MAX_EPOCH, MIN_EPOCH, from_epoch, utc
from contextos.types import Filter, MemoryRecord, Scope

T0 = datetime(2024, 5, 1, tzinfo=UTC)


@contextmanager
def open_store(kind: str, tmp_path: Path) -> Iterator[Store]:
    """A real SQLite file or a fresh PostgreSQL schema (skipped without one)."""
    if kind == "sqlite":
        store = SQLiteStore(tmp_path / "m.db")
        try:
            yield store
        finally:
            store.close()
        return
    from pg_support import postgres_store

    with postgres_store() as pg:
        yield pg


BOTH = pytest.mark.parametrize("kind", ["sqlite", "postgres"])


def _records() -> list[MemoryRecord]:
    """Records that differ in every part a filter looks at."""
    out = []
    parts = itertools.product(
        ("ana", "eve"),
        ("bot", None),
        ("s1", None),
        ("episodic", "semantic"),
        (None, T0, T0 + timedelta(days=3)),  # event time
        (None, T0 + timedelta(days=2), datetime.now(UTC) - timedelta(days=1)),  # valid_to
    )
    for n, (user, agent, session, mtype, event, valid_to) in enumerate(parts):
        out.append(
            MemoryRecord(
                id=f"r{n:03d}",
                text=f"memory {n}",
                scope=Scope(tenant="t", user_id=user, agent_id=agent, session_id=session),
                memory_type=mtype,  # type: ignore[arg-type]
                metadata={"k": n % 5, "nest": {"b": "x" if n % 2 else "y"}} if n % 4 else {},
                created_at=T0 + timedelta(hours=n),
                event_time=event,
                valid_from=T0 + timedelta(days=1) if n % 5 == 0 else T0,
                valid_to=valid_to,
            )
        )
    return out


def _filters() -> list[Filter]:
    ana = Scope(tenant="t", user_id="ana")
    return [
        Filter(scope=ana),
        Filter(scope=Scope(tenant="t", agent_id="bot")),
        Filter(scope=Scope(tenant="t", session_id="s1")),
        Filter(scope=Scope(tenant="t", user_id="eve", agent_id="bot", session_id="s1")),
        Filter(scope=Scope(tenant="other", user_id="ana")),
        Filter(scope=ana, memory_types=("semantic",)),
        Filter(scope=ana, event_after=T0 + timedelta(days=1)),
        Filter(scope=ana, event_before=T0 + timedelta(days=1)),
        Filter(scope=ana, created_after=T0 + timedelta(hours=40)),
        Filter(scope=ana, created_before=T0 + timedelta(hours=40)),
        Filter(scope=ana, as_of=T0 + timedelta(hours=12)),  # before some valid_from
        Filter(scope=ana, as_of=T0 + timedelta(days=2, hours=1)),  # after a valid_to
        Filter(scope=ana, include_invalid=True),
        Filter(scope=ana, metadata={"k": 1}),
        Filter(scope=ana, metadata={"nest.b": "x", "k": 2}),
    ]


@BOTH
def test_filter_matches_agrees_with_the_stores_sql_on_every_part(kind: str, tmp_path: Path) -> None:
    # Search results are re-checked with Filter.matches after the store's SQL chose
    # them: a part of the filter matches skips wrongly would let records through
    # (or drop them) that SQL decides otherwise.
    records = _records()
    with open_store(kind, tmp_path) as store:
        store.put(records)
        stored = store.get_many("t", [r.id for r in records])
        assert len(stored) == len(records)
        for flt in _filters():
            now = datetime.now(UTC)
            by_sql = {r.id for r in store.list(flt, limit=1000)}
            by_python = {r.id for r in stored if flt.matches(r, now)}
            assert by_python == by_sql, flt
            assert by_sql or flt.scope.tenant == "other", flt  # each filter keeps some


def test_filter_matches_reads_naive_and_other_zone_times_as_instants() -> None:
    rec = MemoryRecord(
        id="r",
        text="x",
        scope=Scope(tenant="t", user_id="ana"),
        valid_to=datetime(2024, 5, 1, 12, tzinfo=timezone(timedelta(hours=2))),  # 10:00 UTC
    )
    flt = Filter(scope=Scope(tenant="t", user_id="ana"))
    assert flt.matches(rec, datetime(2024, 5, 1, 9, 59))  # naive: UTC
    assert not flt.matches(rec, datetime(2024, 5, 1, 10, 0))
    assert flt.matches(rec, datetime(2024, 5, 1, 11, 59, tzinfo=timezone(timedelta(hours=2))))


def test_from_epoch_fast_path_and_clamping_give_the_same_instants() -> None:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    for seconds in (0, 1, 1.5, -86_400.25, 1_714_521_600.123456, MIN_EPOCH, MAX_EPOCH - 1):
        assert from_epoch(seconds) == epoch + timedelta(seconds=float(seconds))
    last = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    assert from_epoch(MIN_EPOCH - 1e6) == datetime(1, 1, 1, tzinfo=UTC)
    assert from_epoch(MAX_EPOCH) == last  # the float rounds up to year 10000
    assert from_epoch(MAX_EPOCH + 1e12) == last
    assert from_epoch(float("inf")) == last
    assert from_epoch(None) is None


def test_utc_returns_utc_times_as_they_are_and_converts_the_rest() -> None:
    t = datetime(2024, 5, 1, 10, tzinfo=UTC)
    assert utc(t) is t
    other = datetime(2024, 5, 1, 12, tzinfo=timezone(timedelta(hours=2)))
    assert utc(other) == t and utc(other).tzinfo is UTC
    assert utc(datetime(2024, 5, 1, 10)) == t
    assert utc("2024-05-01T12:00:00+02:00") == t


@BOTH
def test_decoded_records_round_trip_and_own_their_metadata(kind: str, tmp_path: Path) -> None:
    records = [
        MemoryRecord(id="a", text="one", scope=Scope(tenant="t", user_id="ana")),
        MemoryRecord(id="b", text="two", scope=Scope(tenant="t", user_id="ana")),
        MemoryRecord(
            id="c",
            text="three",
            scope=Scope(tenant="t", user_id="ana", session_id="s"),
            metadata={"speaker": "Ana", "seq": 3, "nest": {"x": [1, 2]}},
            provenance=("a", "b"),
            created_at=T0,
            event_time=T0 + timedelta(seconds=1.25),
        ),
    ]
    with open_store(kind, tmp_path) as store:
        store.put(records)
        a, b, c = store.get_many("t", ["a", "b", "c"])
        # Empty metadata is built without parsing: still a new dict for every record,
        # so changing one record's never shows in another's.
        assert a.metadata == {} and b.metadata == {} and a.provenance == ()
        a.metadata["leak"] = 1  # type: ignore[index]
        assert store.get("t", "b").metadata == {}  # type: ignore[union-attr]
        assert store.get("t", "a").metadata == {}  # type: ignore[union-attr]
        assert c.metadata == {"speaker": "Ana", "seq": 3, "nest": {"x": [1, 2]}}
        assert c.provenance == ("a", "b")
        assert c.created_at == T0 and c.event_time == T0 + timedelta(seconds=1.25)


def _reference_fuse(
    lexical: list[Ranked], dense: list[Ranked], cfg: RetrievalConfig
) -> list[tuple[Any, ...]]:
    """Reciprocal-rank fusion written out the plain way."""
    ids = sorted({r.id for r in lexical} | {r.id for r in dense})
    rows = []
    for i in ids:
        lex = next((n for n, r in enumerate(lexical, 1) if r.id == i), None)
        den = next((n for n, r in enumerate(dense, 1) if r.id == i), None)
        score = (cfg.lexical_weight / (cfg.rrf_k + lex) if lex else 0.0) + (
            cfg.dense_weight / (cfg.rrf_k + den) if den else 0.0
        )
        cos = next((r.score for r in dense if r.id == i), None)
        rows.append((i, score, lex, den, cos))
    rows.sort(key=lambda row: (-row[1], -(row[4] if row[4] is not None else -2.0), row[0]))
    return rows


def test_fuse_gives_reciprocal_rank_scores_ranks_cosines_and_order() -> None:
    cfg = RetrievalConfig(rrf_k=20.0, lexical_weight=1.0, dense_weight=0.6)
    lexical = [Ranked("c", 9.0), Ranked("a", 7.0), Ranked("e", 1.0)]
    dense = [Ranked("a", 0.9), Ranked("d", 0.8), Ranked("c", 0.7), Ranked("b", 0.1)]
    got = fuse(lexical, dense, cfg)
    assert all(isinstance(c, Candidate) for c in got)
    want = _reference_fuse(lexical, dense, cfg)
    assert [(c.id, c.lexical_rank, c.dense_rank, c.cosine) for c in got] == [
        (i, lex, den, cos) for i, _, lex, den, cos in want
    ]
    assert [c.score for c in got] == pytest.approx([w[1] for w in want], rel=1e-12)
    assert [c.id for c in got] == ["a", "c", "e", "d", "b"]
    # equal scores (one retriever each at the same rank): the one with a cosine first
    tie = fuse([Ranked("y", 1.0)], [Ranked("x", 0.5)], RetrievalConfig(dense_weight=1.0))
    assert [c.id for c in tie] == ["x", "y"]
    assert fuse([], [], cfg) == []


@pytest.mark.parametrize(("first", "second"), [("a", "b"), ("b", "a")])
def test_exact_ties_are_broken_by_the_data_not_by_the_random_ids(first: str, second: str) -> None:
    # Ranks 1 and 2 fuse to the same score as ranks 2 and 1 (equal weights): the memory
    # closer to the query (higher cosine) goes first whatever its id, so one
    # conversation stored twice (new random ids) ranks the same both times.
    cfg = RetrievalConfig(rrf_k=10.0, lexical_weight=1.0, dense_weight=1.0)
    lexical = [Ranked(first, 5.0), Ranked(second, 4.0)]
    dense = [Ranked(second, 0.9), Ranked(first, 0.8)]
    got = fuse(lexical, dense, cfg)
    assert got[0].score == got[1].score
    assert [c.id for c in got] == [second, first]


def test_memory_search_applies_each_of_its_filter_arguments(tmp_path: Path) -> None:
    # Memory builds the request's Filter in one step from its keywords and ``filters``;
    # each keyword must still narrow the search (and the filter's own parts stay).
    from contextos import Memory
    from contextos.testing.embedders import HashEmbedder

    with Memory(tmp_path / "m.db", embedder=HashEmbedder()) as m:
        m.add("ana drinks green tea", user_id="ana", memory_type="semantic", event_time=T0)
        m.add("ana drinks black tea", user_id="ana", event_time=T0 + timedelta(days=30))
        m.add("ana drinks herbal tea", user_id="ana", metadata={"k": 1})
        m.flush()

        def texts(**kwargs: Any) -> set[str]:
            return {h.record.text for h in m.search("tea", user_id="ana", **kwargs)}

        assert len(texts()) == 3
        assert texts(memory_types=("semantic",)) == {"ana drinks green tea"}
        window = (T0 + timedelta(days=1), T0 + timedelta(days=60))
        assert texts(time_range=window) == {"ana drinks black tea"}
        assert texts(as_of=datetime(2000, 1, 1, tzinfo=UTC)) == set()  # none valid yet
        assert texts(filters=Filter(metadata={"k": 1})) == {"ana drinks herbal tea"}
        both = Filter(metadata={"k": 1}, memory_types=("semantic",))
        assert texts(filters=both) == set()
