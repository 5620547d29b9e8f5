"""PostgreSQL-specific behaviour beyond the shared store contract: migrations,
error conversion, the HNSW index under tenant filters, concurrent appends,
and that forget really removes rows. Runs against the server `make test` starts."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from contextos.errors import StoreError
from contextos.store.base import Patch
from contextos.types import Filter, MemoryRecord, Message, Scope, content_hash
from pg_support import at_once, connect, pg_url, postgres_store, with_options

pytestmark = pytest.mark.postgres
pytest.importorskip("psycopg")


@pytest.fixture
def store() -> Iterator[Any]:
    with postgres_store() as s:
        yield s


def _rec(
    i: int | str, text: str, tenant: str = "t", user: str | None = "u", **kw: Any
) -> MemoryRecord:
    return MemoryRecord(
        id=str(i), text=text, scope=Scope(tenant, user), hash=content_hash(text), **kw
    )


def _unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


# -- no server needed ------------------------------------------------------------------------


def test_unreachable_server_is_a_store_error_without_the_password() -> None:
    from contextos.store.postgres import PostgresStore

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(StoreError) as info:
        PostgresStore(f"postgresql://app:s3cret@127.0.0.1:{port}/db", connect_timeout=2)
    assert f"127.0.0.1:{port}/db" in str(info.value)
    assert "s3cret" not in str(info.value)


def test_schema_name_must_be_an_identifier() -> None:
    from contextos.store.postgres import PostgresStore

    with pytest.raises(ValueError):
        PostgresStore("postgresql://127.0.0.1:1/x", schema="x; DROP TABLE y")


# -- against the test server ---------------------------------------------------------------


@pytest.mark.postgres
def test_processes_starting_together_on_a_new_schema_all_open_it() -> None:
    # Replicas starting at once each create the schema: IF NOT EXISTS is not race-free,
    # and the later ones failed on pg_namespace's unique index.
    import uuid

    from contextos.store.postgres import PostgresStore

    url = pg_url()
    errors: list[BaseException] = []
    for _ in range(12):
        schema = f"t_race_{uuid.uuid4().hex[:12]}"
        errors += at_once(lambda schema=schema: PostgresStore(url, schema=schema).close())
        with connect(url) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    assert errors == []


def test_migrations_are_recorded_once_and_a_newer_schema_is_refused(store: Any) -> None:
    from contextos.store.postgres import PostgresStore
    from contextos.store.postgres.schema import MIGRATIONS

    url = pg_url()
    again = PostgresStore(url, schema=store.schema)  # reopening does not migrate twice
    again.close()
    with connect(url, store.schema) as conn:
        versions = [r[0] for r in conn.execute("SELECT version FROM schema_version ORDER BY 1")]
        assert versions == list(range(1, len(MIGRATIONS) + 1))
        conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (len(MIGRATIONS) + 1,))
    with pytest.raises(StoreError, match="newer"):
        PostgresStore(url, schema=store.schema)


def test_driver_errors_become_store_errors(store: Any) -> None:
    store.put([_rec(1, "hello world")])
    with connect(pg_url(), store.schema) as conn:
        conn.execute("DROP TABLE memories CASCADE")
    with pytest.raises(StoreError) as info:
        store.get("t", "1")
    assert type(info.value.__cause__).__module__.startswith("psycopg")


def test_tables_are_keyed_tenant_first(store: Any) -> None:
    with connect(pg_url(), store.schema) as conn:
        rows = conn.execute(
            "SELECT t.relname, a.attname FROM pg_index i "
            "JOIN pg_class t ON t.oid = i.indrelid JOIN pg_namespace n ON n.oid = t.relnamespace "
            "JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = i.indkey[0] "
            "WHERE i.indisprimary AND n.nspname = %s",
            (store.schema,),
        ).fetchall()
    firsts = dict(rows)
    assert firsts == {
        "memories": "tenant",
        "history": "tenant",
        "turns": "tenant",
        "session_meta": "tenant",
        "vectors": "tenant",
        "pending_vectors": "tenant",
        "vector_quarantine": "tenant",
        "schema_version": "version",
    }


def _two_tenants(store: Any, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Tenant b's 40 vectors hidden among 1,200 of tenant a; returns (b's vectors, query)."""
    rng = np.random.default_rng(seed)
    big, small = _unit(rng, 1200, dim), _unit(rng, 40, dim)
    store.put([_rec(f"a{i}", f"doc a{i}", tenant="a") for i in range(len(big))])
    store.put([_rec(f"b{i}", f"doc b{i}", tenant="b") for i in range(len(small))])
    store.set_vectors("a", [f"a{i}" for i in range(len(big))], big, "test")
    store.set_vectors("b", [f"b{i}" for i in range(len(small))], small, "test")
    return small, _unit(rng, 1, dim)[0]


def test_filtered_vector_search_is_exact_for_a_small_tenant(store: Any) -> None:
    small, query = _two_tenants(store, 16, seed=7)
    hits = store.vector_search(Filter(Scope("b")), query, limit=10)
    exact = np.argsort(-(small @ query))[:10]
    assert [h.id for h in hits] == [f"b{i}" for i in exact]
    assert [h.score for h in hits] == pytest.approx(
        [float(small[i] @ query) for i in exact], abs=1e-5
    )


def test_hnsw_scan_under_a_tenant_filter_does_not_come_back_short() -> None:
    """With only the HNSW index to use, a plain scan would see ~40 neighbours (ef_search),
    about one of them tenant b's; pgvector's iterative scan must keep going to fill 10."""
    forced = "-c enable_seqscan=off -c enable_bitmapscan=off -c hnsw.ef_search=40"
    with postgres_store(options=forced) as store:
        small, query = _two_tenants(store, 16, seed=11)
        with connect(pg_url(), store.schema) as conn:  # leave the planner only the HNSW index
            conn.execute("ALTER TABLE vectors DROP CONSTRAINT vectors_pkey")
            conn.execute("DROP INDEX memories_scope, memories_created, memories_hash")
        hits = store.vector_search(Filter(Scope("b")), query, limit=10)
        with connect(with_options(pg_url(), forced), store.schema) as conn:
            conn.execute("SET hnsw.iterative_scan = relaxed_order")
            plan = "\n".join(
                r[0]
                for r in conn.execute(
                    "EXPLAIN SELECT m.id FROM vectors v JOIN memories m ON m.tenant = v.tenant "
                    "AND m.id = v.memory_id WHERE v.dim = 16 AND v.tenant = 'b' AND m.tenant = 'b' "
                    "ORDER BY v.vec::vector(16) <=> %s::vector(16) LIMIT 10",
                    ("[" + ",".join(map(str, query.tolist())) + "]",),
                )
            )
    assert "vectors_hnsw_16" in plan
    assert len(hits) == 10 and all(h.id.startswith("b") for h in hits)
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)
    assert scores == pytest.approx([float(small[int(h.id[1:])] @ query) for h in hits], abs=1e-5)
    exact = {f"b{i}" for i in np.argsort(-(small @ query))[:10]}
    assert len(exact & {h.id for h in hits}) >= 8  # HNSW is approximate, but not by much


def test_a_small_scope_far_from_the_query_in_a_large_tenant_is_ranked_exactly() -> None:
    """pgvector's iterative scan stops after ``hnsw.max_scan_tuples`` index entries
    (20,000 by default; 100 here, so a thousand rows show it): a user whose vectors all
    lie far from the query, in a tenant whose other vectors lie near it, got no hit at
    all. A search short of its limit while its scope holds more vectors ranks them all."""
    # Sorting made dear, the planner takes the HNSW index as it does on a large table.
    settings = ("enable_sort=off", "hnsw.max_scan_tuples=100")
    rng = np.random.default_rng(3)
    dim = 16
    query = _unit(rng, 1, dim)[0]
    crowd = _unit(rng, 1000, dim)
    mine = -query + 0.05 * _unit(rng, 20, dim)
    mine /= np.linalg.norm(mine, axis=1, keepdims=True)
    with postgres_store(options=" ".join(f"-c {x}" for x in settings)) as store:
        store.put([_rec(f"c{i}", "a crowd's note", user="crowd") for i in range(len(crowd))])
        store.put([_rec(f"m{i}", "my note", user="me") for i in range(len(mine))])
        store.set_vectors("t", [f"c{i}" for i in range(len(crowd))], crowd, "test")
        store.set_vectors("t", [f"m{i}" for i in range(len(mine))], mine, "test")
        with connect(pg_url(), store.schema) as conn:
            for setting in (*settings, "hnsw.iterative_scan=relaxed_order"):
                conn.execute(f"SET {setting}")
            by_index = conn.execute(
                "SELECT m.id FROM vectors v JOIN memories m ON m.tenant = v.tenant "
                "AND m.id = v.memory_id WHERE v.dim = 16 AND v.tenant = 't' "
                "AND m.tenant = 't' AND m.user_id = 'me' "
                "ORDER BY v.vec::vector(16) <=> %s::vector(16) LIMIT 5",
                ("[" + ",".join(map(str, query.tolist())) + "]",),
            ).fetchall()
        hits = store.vector_search(Filter(Scope("t", "me")), query, limit=5)
        few = store.vector_search(Filter(Scope("t", "me")), query, limit=30)
    assert len(by_index) < 5  # the index scan alone comes back short
    exact = np.argsort(-(mine @ query))
    assert [h.id for h in hits] == [f"m{i}" for i in exact[:5]]
    assert [h.score for h in hits] == pytest.approx([float(mine[i] @ query) for i in exact[:5]])
    assert [h.id for h in few] == [f"m{i}" for i in exact]  # all 20 the scope holds


def test_vectors_of_two_sizes_live_side_by_side(store: Any) -> None:
    store.put([_rec(1, "one"), _rec(2, "two")])
    store.set_vectors("t", ["1"], np.array([[1, 0, 0]], dtype=np.float32), "small")
    store.set_vectors("t", ["2"], np.array([[0, 1, 0, 0, 0]], dtype=np.float32), "big")
    flt = Filter(Scope("t", "u"))
    assert [h.id for h in store.vector_search(flt, np.array([1, 0, 0], np.float32), limit=5)] == [
        "1"
    ]
    five = store.vector_search(flt, np.array([0, 1, 0, 0, 0], np.float32), limit=5)
    assert [h.id for h in five] == ["2"]


def test_concurrent_appends_to_one_session_get_distinct_contiguous_seqs(store: Any) -> None:
    scope = Scope("t", "u", session_id="s")
    errors: list[BaseException] = []

    def writer(k: int) -> None:
        try:
            for j in range(10):
                store.append_turns(scope, [Message("user", f"{k}-{j}")], [1])
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    turns = store.turns(scope)
    assert [t.seq for t in turns] == list(range(40))
    assert sorted(t.message.content for t in turns) == sorted(
        f"{k}-{j}" for k in range(4) for j in range(10)
    )


def test_forget_deletes_the_rows_of_that_user_only(store: Any) -> None:
    store.put(
        [
            _rec(1, "mine", user="u"),
            _rec(2, "theirs", user="v"),
            _rec(3, "other tenant", tenant="t2", user="u"),
        ]
    )
    store.update("t", "1", Patch(text="mine, edited"))
    for tenant in ("t", "t2"):
        store.append_turns(Scope(tenant, "u", session_id="s"), [Message("user", "hi")], [1])
    assert store.forget(Scope("t", "u")) == 1
    with connect(pg_url(), store.schema) as conn:
        for table in ("memories", "history", "turns", "session_meta"):
            rows = conn.execute(f"SELECT tenant, user_id FROM {table} ORDER BY 1, 2").fetchall()
            assert ("t", "u") not in rows, table
            assert ("t2", "u") in rows, table
    assert store.get("t", "2") is not None


def test_keyword_search_stems_and_weighs_text_over_context(store: Any) -> None:
    store.put(
        [
            _rec(1, "We went hiking", context="about trips"),
            _rec(2, "Lunch notes", context="we talked about hikes"),
        ]
    )
    hits = store.keyword_search(Filter(Scope("t", "u")), "hike", limit=5)
    assert [h.id for h in hits] == ["1", "2"]
    assert hits[0].score > hits[1].score > 0
    assert store.keyword_search(Filter(Scope("t", "u")), "the and of", limit=5) == []


def test_keyword_ranking_weighs_rare_words_over_common_ones(store: Any) -> None:
    """BM25, not ts_rank: a name in every memory counts for little next to a rare word."""
    store.put([_rec(i, f"Caroline said hello number {i}") for i in range(8)])
    store.put([_rec("rare", "We talked about adoption"), _rec("name", "Caroline Caroline waved")])
    hits = store.keyword_search(Filter(Scope("t", "u")), "Caroline adoption", limit=3)
    assert [h.id for h in hits[:2]] == ["rare", "name"]
    # a stopword of PostgreSQL's english list only: indexed and found, as on SQLite
    hits = store.keyword_search(Filter(Scope("t", "u")), "about", limit=3)
    assert [h.id for h in hits] == ["rare"]


def test_a_word_in_most_rows_ranks_as_on_sqlite(store: Any, tmp_path: Any) -> None:
    """FTS5's IDF, ln((N - n + 0.5) / (n + 0.5)) and 1e-6 where that is not positive,
    not ln(1 + ...): a name in 3 of 5 rows barely counts, so the row saying it four times
    ranks below a long row that holds the rare word once, on both stores."""
    from contextos.store.sqlite import SQLiteStore

    rows = {
        "name4": "caroline caroline caroline caroline said so",
        "long": "adoption " + " ".join(f"w{i}" for i in range(40)),
        "short": "adoption papers",
        "home": "caroline went home",
        "tea": "caroline likes tea",
    }
    rankings = []
    sqlite = SQLiteStore(tmp_path / "k.db")
    for backend in (sqlite, store):
        backend.put([_rec(key, text) for key, text in rows.items()])
        hits = backend.keyword_search(
            Filter(Scope("t", "u")), "what did caroline say about adoption", limit=10
        )
        rankings.append([h.id for h in hits])
    sqlite.close()
    assert rankings[0] == rankings[1]
    assert rankings[1] == ["short", "long", "name4", "home", "tea"]


def test_memory_search_finds_the_same_memories_on_both_stores(store: Any, tmp_path: Any) -> None:
    """The Memory facade over PostgreSQL answers like it does over SQLite: the same
    memories, with the same lexical and dense ranks (fusion ties may come in any order)."""
    from contextos.memory import Memory
    from contextos.store.sqlite import SQLiteStore
    from contextos.testing.embedders import HashEmbedder

    facts = [
        "Caroline went to the LGBTQ support group on Sunday",
        "Melanie painted a sunrise over the lake last year",
        "Caroline is researching adoption agencies",
        "Melanie ran a charity race for mental health",
        "Caroline wants to study counseling and psychology",
        "The cat knocked over a vase in the kitchen",
        "They went camping in the mountains in June",
    ]
    queries = ("adoption research", "what did Melanie paint?", "camping in the mountains")
    answers = []
    for backend in (SQLiteStore(tmp_path / "m.db"), store):
        memory = Memory(store=backend, tenant="acme", embedder=HashEmbedder())
        memory.add(facts, user_id="ana")
        memory.flush()
        answers.append(
            [
                sorted(
                    (-round(h.score, 6), h.record.text, h.lexical_rank, h.dense_rank)
                    for h in memory.search(q, user_id="ana", limit=3)
                )
                for q in queries
            ]
        )
        memory.close()  # closes the store too; closing twice is harmless
    assert answers[0] == answers[1]
    assert answers[1][0][0][1] == "Caroline is researching adoption agencies"


def test_closing_or_tagging_a_memory_leaves_its_vector_row_alone(store: Any) -> None:
    """Vectors have their own table: reconciliation's updates (validity, metadata) do not
    rewrite the vector (which would re-insert it into the HNSW index); a new text drops it."""
    from datetime import UTC, datetime

    store.put([_rec(1, "likes tea")])
    store.set_vectors("t", ["1"], np.array([[1, 0, 0]], dtype=np.float32), "m")

    def vector_version() -> Any:
        with connect(pg_url(), store.schema) as conn:
            row = conn.execute("SELECT xmin::text FROM vectors WHERE memory_id = '1'").fetchone()
        return row[0] if row else None

    before = vector_version()
    store.update("t", "1", Patch(metadata={"closed_by": "2"}, valid_to=datetime.now(UTC)))
    assert vector_version() == before is not None
    store.update("t", "1", Patch(text="likes coffee"))
    assert vector_version() is None
    assert [r.id for r in store.pending_vectors(limit=5)] == ["1"]
