"""PostgreSQL's keyword index holds the words the query side asks for.

The query side (``text.query``) cuts a query into runs of letters, digits and marks and
drops a short stopword list, the same for both stores. PostgreSQL's ``tsv`` was
``to_tsvector('english', text)``: its parser keeps an e-mail address, a host, a URL
path, a file name, a decimal and a version as one token (``ana@example.com``), and the
``english`` dictionary drops a longer stopword list ("not", "more", "after", "before",
"very", "through"). A keyword search for ``example``, ``pdf``, ``5.00``, ``1234`` or
``after`` found the memory on SQLite and nothing on PostgreSQL. Migration V8 rebuilds
``tsv`` (and ``ntok``, BM25's document length) from the text cut at
``schema.SEPARATOR_RANGES``, NFC-normalised, with a Snowball stemmer that has no
stopword list; these tests check the result on both stores, the migration of a
database written by the previous release (also by two processes at once), and that
every separator of the stored side is one for the query side.
"""

from __future__ import annotations

import threading
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from contextos.memory import Memory
from contextos.memory.retrieval import RetrievalConfig
from contextos.store.postgres.codec import tsquery_words
from contextos.store.postgres.schema import MIGRATIONS, SEPARATOR_RANGES, V8_KEYWORD_WORDS
from contextos.testing.embedders import HashEmbedder
from contextos.text.query import query_terms
from contextos.types import Filter, Scope
from pg_support import connect, fresh_schema, memory_on, pg_url

BOTH = pytest.mark.parametrize(
    "kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)

#: Memories and the queries that must find each (and only it): the reviewer's cases
#: (addresses, hosts, paths, file names, decimals, versions, phone numbers, the
#: stopwords only PostgreSQL's list held) and punctuation outside ASCII.
CASES: dict[str, tuple[str, ...]] = {
    "my email is ana@example.com": ("ana@example.com", "ana"),
    "see https://docs.example.org/guide/setup for the setup guide": (
        "docs.example.org",
        "docs",
        "guide",
    ),
    "the report is in quarterly_report.pdf on the share": (
        "quarterly_report.pdf",
        "quarterly",
        "pdf",
    ),
    "the price was 5.00 dollars": ("5.00", "00"),
    "we deployed version 2.4.1 yesterday": ("version 2.4.1", "deployed"),
    "call me at 555-1234": ("555-1234", "1234", "555"),
    "I will not eat any more sugar after dinner": ("not", "more", "after"),
    "she is very good at chess": ("very",),
    "we walked through the park before lunch": ("through", "before"),
    "python3 is installed on /usr/local/bin": ("/usr/local/bin", "usr", "local", "bin"),
    "on a vu l’été arriver — enfin…": ("été", "enfin"),
    "the café—bar «Zazie» opened": ("bar", "zazie"),
    "une e\u0301cole pre\u0300s d'ici": ("école", "près"),
}


@contextmanager
def open_memory(kind: str, tmp_path: Path) -> Iterator[Memory]:
    kwargs: dict[str, Any] = {
        "embedder": HashEmbedder(),
        "background_embedding": False,
        "retrieval": RetrievalConfig(mode="bm25"),
    }
    with memory_on(kind, tmp_path, **kwargs) as m:
        yield m


@BOTH
def test_keyword_search_finds_the_words_inside_addresses_paths_numbers_and_punctuation(
    kind: str, tmp_path: Path
) -> None:
    with open_memory(kind, tmp_path) as m:
        ids = {text: m.add(text, user_id="ana")[0].id for text in CASES}
        missed = []
        for text, queries in CASES.items():
            for query in queries:
                hits = [h.record.id for h in m.search(query, user_id="ana", limit=20)]
                if ids[text] not in hits:
                    missed.append((query, text))
        assert missed == []


def test_every_separator_of_the_stored_side_separates_words_on_the_query_side() -> None:
    # The stored side cuts a text at SEPARATOR_RANGES before PostgreSQL's parser reads
    # it; a character there that the query side kept inside a word would cut a word the
    # query asks for whole. Every ASCII character but letters and digits is one.
    seps = [chr(cp) for a, b in SEPARATOR_RANGES for cp in range(a, b + 1)]
    wrong = [c for c in seps if query_terms(f"alpha{c}omega") != ["alpha", "omega"]]
    assert wrong == []
    ascii_kept = {chr(cp) for cp in range(1, 128)} - set(seps)
    assert all(c.isascii() and c.isalnum() for c in ascii_kept)
    assert not any(unicodedata.category(c).startswith("M") for c in seps)
    # the query side's words go to PostgreSQL NFC-normalised, cut the same way
    assert tsquery_words(["e\u0301cole", "ana@example", "ana"]) == ["école", "ana", "example"]


# -- migration of a database the previous release wrote ---------------------------------

#: Migrations before V8: a schema at this version is what the previous release left.
V8 = MIGRATIONS.index(V8_KEYWORD_WORDS)
SCOPE = Scope(tenant="t", user_id="ana")


def _old_database(schema: str) -> None:
    """The schema as the release before V8 left it, with two memories written then."""
    with connect(pg_url(), schema) as con:
        con.execute(
            "CREATE TABLE schema_version ("
            "version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for number, script in enumerate(MIGRATIONS[:V8], start=1):
            con.execute(script)
            con.execute("INSERT INTO schema_version (version) VALUES (%s)", (number,))
        for mid, text in (("m1", "my email is ana@example.com"), ("m2", "I will not eat more")):
            con.execute(
                "INSERT INTO memories (tenant, id, user_id, memory_type, text, created_at, "
                "updated_at, hash) VALUES ('t', %s, 'ana', 'episodic', %s, now(), now(), %s)",
                (mid, text, mid),
            )
        # what the old column held: the address as one token, "not" dropped
        (found,) = con.execute(
            "SELECT count(*) FROM memories WHERE tsv @@ to_tsquery('english', 'example | not')"
        ).fetchone()
        assert found == 0


def _check_migrated(schema: str) -> None:
    from contextos.store.postgres import PostgresStore

    store = PostgresStore(pg_url(), schema=schema)
    try:
        flt = Filter(scope=SCOPE)
        assert [r.id for r in store.keyword_search(flt, "example", limit=5)] == ["m1"]
        assert [r.id for r in store.keyword_search(flt, "not", limit=5)] == ["m2"]
    finally:
        store.close()
    with connect(pg_url(), schema) as con:
        versions = [r[0] for r in con.execute("SELECT version FROM schema_version ORDER BY 1")]
        assert versions == list(range(1, len(MIGRATIONS) + 1))
        assert con.execute(
            "SELECT indexdef FROM pg_indexes WHERE schemaname = %s AND indexname = 'memories_tsv'",
            (schema,),
        ).fetchone() == (f"CREATE INDEX memories_tsv ON {schema}.memories USING gin (tsv)",)
        # ntok, BM25's document length: every word, stopwords included (my email is ana
        # example com: 6; I will not eat more: 5)
        assert con.execute("SELECT ntok FROM memories ORDER BY id").fetchall() == [(6,), (5,)]


@pytest.mark.postgres
def test_a_database_of_the_previous_release_is_migrated_and_finds_the_words() -> None:
    pytest.importorskip("psycopg")
    with fresh_schema("kwv8") as (_, schema):
        _old_database(schema)
        _check_migrated(schema)
        # Run again (a version row lost, as a test of an older migration does): the
        # same schema, no second dictionary or configuration.
        with connect(pg_url(), schema) as con:
            con.execute("DELETE FROM schema_version WHERE version > %s", (V8,))
        _check_migrated(schema)
        with connect(pg_url(), schema) as con:
            (configs,) = con.execute(
                "SELECT count(*) FROM pg_ts_config c JOIN pg_namespace n "
                "ON n.oid = c.cfgnamespace WHERE n.nspname = %s",
                (schema,),
            ).fetchone()
            assert configs == 1


@pytest.mark.postgres
def test_two_processes_opening_an_old_database_at_once_migrate_it_once() -> None:
    pytest.importorskip("psycopg")
    from contextos.store.postgres import PostgresStore

    with fresh_schema("kwv8race") as (_, schema):
        _old_database(schema)
        start = threading.Barrier(2)
        errors: list[BaseException] = []

        def open_store() -> None:
            try:
                start.wait(timeout=30)
                PostgresStore(pg_url(), schema=schema).close()
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=open_store) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert errors == []
        _check_migrated(schema)
