"""Keyword search across scripts and emoji: both stores cut and fold a text alike.

The review of session 34 (i18n findings 2, 4 and 6) found the stores apart, or both
short of what a user types:

- an emoji written against a word: SQLite's FTS5 (unicode61 knows Unicode 6.1, where
  "🙂", "🥰" and "🤖" are letters) indexed "pizza🙂" as one word, and the variation
  selector U+FE0F after "❤" or "☕" (a mark) stayed inside the next word on SQLite, on
  the query side and in PostgreSQL's ``C`` locale: "pizza" and "Paris" found nothing;
- a Greek word ending in the final sigma, typed in capitals, on PostgreSQL: lower()
  makes "οδυσσέασ" of "ΟΔΥΣΣΈΑΣ" but keeps the stored "οδυσσέας";
- "Straße" against "Strasse"/"STRASSE", and full-width "１２３４５"/"Ｔｏｋｙｏ" against
  "12345"/"Tokyo", on both stores.

One rule now (``text.query``): the variation selectors and the keycap mark are dropped,
emoji and pictographs separate words (``SEPARATOR_RANGES``), and each store folds "ß"
to "ss", "ς" to "σ" and full-width ASCII to ASCII in the stored words and the query's
(PostgreSQL in a UTF-8 database). SQLite applies it where FTS5 reads a text
(``lexical_index.fts_text``), PostgreSQL in its generated ``tsv`` (migration V10).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from contextos.store.base import Store
from contextos.store.postgres.schema import MIGRATIONS, TS_CONFIG, V10_KEYWORD_FOLDS
from contextos.store.sqlite import SQLiteStore
from contextos.store.sqlite.lexical_index import LexRow, Tokenizer
from contextos.store.sqlite.schema import MIGRATIONS as SQLITE_MIGRATIONS
from contextos.text.query import (
    FOLDS,
    IGNORED_RANGES,
    SEPARATOR_RANGES,
    keyword_text,
    query_terms,
    search_words,
)
from contextos.types import Filter, MemoryRecord, Scope, content_hash
from pg_support import connect, fresh_schema, pg_url

SCOPE = Scope(tenant="t", user_id="ana")

#: A memory with an emoji against a word, and a word of it that must find it.
EMOJI: list[tuple[str, str]] = [
    ("Thanks for the pizza🙂", "pizza"),
    ("My robot🤖 is called Max", "robot"),
    ("Love you mom🥰", "mom"),
    ("Meet me at the café☕\ufe0ftomorrow", "tomorrow"),
    ("I ❤\ufe0fParis so much", "Paris"),
    ("best✌\ufe0ffriend ever", "friend"),
    ("Greetings from Rome🇮🇹", "Rome"),
    ("🙂naïve question", "naïve"),
    ("Zoë👩🏽\u200d💻coder", "coder"),
    ("⭐great show", "great"),
    ("the Apple™watch", "watch"),
    ("room 4\ufe0f\u20e3 upstairs", "4"),
]

#: A memory and a query that must find it though written otherwise: "ß" and "ss", the
#: final sigma and "σ" (what lower() makes of a capital "Σ"), full-width and ASCII.
FOLDED: list[tuple[str, str]] = [
    ("Ich wohne in der Straße 5", "STRASSE"),
    ("Ich wohne in der Straße 5", "strasse"),
    ("Ich wohne in der STRASSE 5", "straße"),
    ("Die GROẞE Halle", "grosse"),
    ("Ο Οδυσσέας ταξίδευε", "Οδυσσέασ"),
    ("Πίνω καφέσ κάθε πρωί", "καφές"),
    ("Order number １２３４５", "12345"),
    ("Order number 12345", "１２３４５"),
    ("Ｔｏｋｙｏ is big", "Tokyo"),
    ("Tokyo is big", "ＴＯＫＹＯ"),
    ("mail ａｎａ＠ｅｘａｍｐｌｅ．ｃｏｍ today", "example"),
]


def _rec(memory_id: str, text: str) -> MemoryRecord:
    return MemoryRecord(
        id=memory_id,
        text=text,
        scope=SCOPE,
        hash=content_hash(text),
        created_at=datetime.now(UTC),
    )


def _missed(store: Store, cases: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The (text, query) pairs whose keyword search misses the text; each text is
    stored once, the first before the user's keyword index is read (so the others
    reach it as changes, the first when it is loaded)."""
    texts = list(dict.fromkeys(text for text, _ in cases))
    ids = {text: f"m{i}" for i, text in enumerate(texts)}
    flt = Filter(scope=SCOPE)
    store.put([_rec(ids[texts[0]], texts[0])])
    store.keyword_search(flt, "anything", limit=1)
    store.put([_rec(ids[t], t) for t in texts[1:]])
    missed = []
    for text, query in cases:
        if ids[text] not in [h.id for h in store.keyword_search(flt, query, limit=20)]:
            missed.append((query, text))
    return missed


def test_a_word_written_against_an_emoji_is_found(store: Store) -> None:
    assert _missed(store, EMOJI) == []


#: Texts whose one word has an emoji against it, each asked for as written.
GLUED = [
    "pizza🙂",
    "❤\ufe0fParis",
    "☕\ufe0ftomorrow",
    "mom🥰",
    "Rome🇮🇹",
    "⭐great",
    "4\ufe0f\u20e3",
]


def test_a_text_copied_whole_into_the_query_finds_itself(store: Store) -> None:
    # the query side cuts and drops as the index does: "❤️Paris" asks for "Paris"
    assert _missed(store, [(text, text) for text in GLUED]) == []


def test_sharp_s_final_sigma_and_full_width_are_folded_alike(store: Store) -> None:
    assert _missed(store, FOLDED) == []


# -- the rule itself (text.query) --------------------------------------------------


def test_the_query_side_drops_the_selectors_and_the_keycap_mark() -> None:
    assert search_words("I ❤\ufe0fParis") == ["I", "Paris"]
    assert search_words("☕\ufe0ftomorrow ☕\ufe0etoday") == ["tomorrow", "today"]
    assert search_words("room 4\ufe0f\u20e3") == ["room", "4"]
    # after a letter a selector is that letter's glyph: the word stays whole
    assert search_words("葛\U000e0100飾区") == ["葛飾区"]
    for first, last in IGNORED_RANGES:
        for cp in (first, last):
            assert query_terms(f"alpha{chr(cp)}omega") == ["alphaomega"], hex(cp)
            assert keyword_text(f"alpha{chr(cp)}omega") == "alphaomega", hex(cp)


def test_every_separator_separates_on_both_sides_and_folds_are_letters() -> None:
    for first, last in SEPARATOR_RANGES:
        for cp in range(first, last + 1):
            c = chr(cp)
            assert query_terms(f"alpha{c}omega") == ["alpha", "omega"], hex(cp)
            assert keyword_text(f"alpha{c}omega").split() == ["alpha", "omega"], hex(cp)
    # a fold never cuts a word nor joins two: letters and digits to letters and digits,
    # punctuation to ASCII punctuation (a separator either way)
    for c, folded in FOLDS.items():
        assert c.isalnum() == folded.isalnum(), hex(ord(c))
    assert keyword_text("Straße ΟΔΥΣΣΈΑΣ Οδυσσέας") == "Strasse ΟΔΥΣΣΈΑΣ Οδυσσέασ"
    assert keyword_text("Order １２３４５ Ｔｏｋｙｏ!") == "Order 12345 Tokyo "
    assert keyword_text("Straße", fold=False) == "Straße"


def test_the_sqlite_index_holds_exactly_the_words_a_query_asks_for() -> None:
    """Each word of a text (``search_words``) is one term of the SQLite index, and the
    text's terms are its words' terms (as tests/test_lexical_hostile_words.py checks
    for marks): an emoji or a selector left in a word made a term no query asked for."""
    tokenizer = Tokenizer()
    try:
        for text, _ in EMOJI + FOLDED:
            per_word = [tokenizer.word(w) for w in search_words(text)]
            assert all(len(terms) == 1 for terms in per_word), (text, per_word)
            vocab = set(tokenizer.rows([_row(text)]).vocab)
            assert vocab == {t for (t,) in per_word}, text
    finally:
        tokenizer.close()


def _row(text: str) -> LexRow:
    return LexRow(
        id="r",
        tenant="t",
        user_id="u",
        agent_id=None,
        session_id=None,
        memory_type="episodic",
        created_at=0.0,
        event_time=None,
        valid_from=None,
        valid_to=None,
        rowid=1,
        text=text,
        context="",
        scope_terms="",
    )


# -- SQLite: a file written before needs no migration ---------------------------------


def test_a_sqlite_file_written_before_is_searched_by_the_rule_at_once(tmp_path: Path) -> None:
    """The keyword index is built in memory from the records' text when a process first
    searches a user: nothing in the file holds its words, so the file keeps its schema
    version and its old records are found. (The file's own FTS5 table, kept by
    triggers and searched by nothing, still holds the old cut: "pizza🙂" as one word.)"""
    path = tmp_path / "old.db"
    store = SQLiteStore(path)
    store.put([_rec("m1", "Thanks for the pizza🙂"), _rec("m2", "I ❤\ufe0fParis")])
    store.close()
    import sqlite3

    raw = sqlite3.connect(path)
    try:
        (version,) = raw.execute("PRAGMA user_version").fetchone()
        (old_cut,) = raw.execute(
            "SELECT count(*) FROM memories_fts WHERE memories_fts MATCH 'pizza'"
        ).fetchone()
    finally:
        raw.close()
    assert version == len(SQLITE_MIGRATIONS)
    assert old_cut == 0
    reopened = SQLiteStore(path)
    try:
        flt = Filter(scope=SCOPE)
        assert [h.id for h in reopened.keyword_search(flt, "pizza", limit=5)] == ["m1"]
        assert [h.id for h in reopened.keyword_search(flt, "paris", limit=5)] == ["m2"]
    finally:
        reopened.close()


# -- PostgreSQL: the generated column, the migration, the encodings ---------------------

TRICKY = [
    "Thanks for the pizza🙂 and the ☕\ufe0fcoffee",
    "I ❤\ufe0fParis, 1\ufe0f\u20e3 time",
    "🏴\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007fScotland ⭐great",
    "Die GROẞE Straße, ΟΔΥΣΣΈΑΣ und Οδυσσέας",
    "ａｎａ＠ｅｘａｍｐｌｅ．ｃｏｍ １２３４５ Ｔｏｋｙｏ",
    "une e\u0301cole, Ａ\u0301 et 葛\U000e0100飾区",
    "plain ascii: ana@example.com 5.00 x_y",
]


@pytest.mark.postgres
def test_postgres_indexes_a_text_as_keyword_text_prepares_it() -> None:
    """The generated ``tsv`` and ``ntok`` (SQL, V10) agree with ``keyword_text``
    (Python, SQLite's index and the query side) on texts that hold every part of the
    rule."""
    pytest.importorskip("psycopg")
    from contextos.store.postgres import PostgresStore

    with fresh_schema("kwfold") as (_, schema):
        PostgresStore(pg_url(), schema=schema).close()
        with connect(pg_url(), schema) as con:
            for i, text in enumerate(TRICKY):
                con.execute(
                    "INSERT INTO memories (tenant, id, user_id, memory_type, text, context, "
                    "created_at, updated_at, hash) VALUES ('t', %s, 'ana', 'episodic', %s, "
                    "%s, now(), now(), %s)",
                    (f"m{i}", text, text[::-1], f"h{i}"),
                )
            for i, text in enumerate(TRICKY):
                row = con.execute(
                    f"SELECT tsv = setweight(to_tsvector('{TS_CONFIG}', %s), 'A') || "
                    f"setweight(to_tsvector('{TS_CONFIG}', %s), 'B'), ntok "
                    "FROM memories WHERE id = %s",
                    (keyword_text(text), keyword_text(text[::-1]), f"m{i}"),
                ).fetchone()
                words = keyword_text(text + " " + text[::-1]).split()
                assert row == (True, len(words)), text


def _before_v10(schema: str, rows: list[tuple[str, str]]) -> None:
    """The schema as the release before V10 left it, with ``rows`` (id, text) of ana."""
    v10 = MIGRATIONS.index(V10_KEYWORD_FOLDS)
    with connect(pg_url(), schema) as con:
        con.execute(
            "CREATE TABLE schema_version ("
            "version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for number, script in enumerate(MIGRATIONS[:v10], start=1):
            con.execute(script)
            con.execute("INSERT INTO schema_version (version) VALUES (%s)", (number,))
        for memory_id, text in rows:
            con.execute(
                "INSERT INTO memories (tenant, id, user_id, memory_type, text, created_at, "
                "updated_at, hash) VALUES ('t', %s, 'ana', 'episodic', %s, now(), now(), %s)",
                (memory_id, text, memory_id),
            )
        # what V8's column held: the selector inside the word, "ß" and "ς" as written
        (found,) = con.execute(
            f"SELECT count(*) FROM memories WHERE tsv @@ to_tsquery('{TS_CONFIG}', "
            "'paris | strasse | 12345')"
        ).fetchone()
        assert found == 0


@pytest.mark.postgres
def test_a_postgres_database_of_the_release_before_is_migrated_and_finds_the_words() -> None:
    pytest.importorskip("psycopg")
    from contextos.store.postgres import PostgresStore

    rows = [("m1", "I ❤\ufe0fParis"), ("m2", "Ich wohne in der Straße 5"), ("m3", "Nr. １２３４５")]
    with fresh_schema("kwv10") as (_, schema):
        _before_v10(schema, rows)
        for _ in range(2):  # run again (a version row lost): the same schema
            store = PostgresStore(pg_url(), schema=schema)
            try:
                flt = Filter(scope=SCOPE)
                for query, want in (("Paris", "m1"), ("STRASSE", "m2"), ("12345", "m3")):
                    assert [h.id for h in store.keyword_search(flt, query, limit=5)] == [want]
            finally:
                store.close()
            with connect(pg_url(), schema) as con:
                versions = [r[0] for r in con.execute("SELECT version FROM schema_version")]
                assert sorted(versions) == list(range(1, len(MIGRATIONS) + 1))
                assert con.execute(
                    "SELECT indexdef FROM pg_indexes WHERE schemaname = %s "
                    "AND indexname = 'memories_tsv'",
                    (schema,),
                ).fetchone() == (f"CREATE INDEX memories_tsv ON {schema}.memories USING gin (tsv)",)
                con.execute("DELETE FROM schema_version WHERE version = %s", (len(MIGRATIONS),))


@contextmanager
def _database(**options: str) -> Iterator[str]:
    """A new database of the test server, with ``options`` (``CREATE DATABASE``'s:
    encoding, lc_ctype, ...) and pgvector; its URL; dropped afterwards. Skips when the
    server cannot create it (a locale it lacks)."""
    pytest.importorskip("psycopg")
    import psycopg

    url = pg_url()
    name = f"kw_{uuid.uuid4().hex[:12]}"
    settings = " ".join(f"{k} '{v}'" for k, v in options.items())
    with connect(url) as con:
        try:
            con.execute(f"CREATE DATABASE {name} TEMPLATE template0 {settings}")
        except psycopg.Error as exc:
            pytest.skip(f"the test server cannot create a database with {options}: {exc}")
    try:
        other = url.rsplit("/", 1)[0] + "/" + name
        with connect(other) as con:
            con.execute("CREATE EXTENSION IF NOT EXISTS vector")
        yield other
    finally:
        with connect(url) as con:
            con.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _searched(url: str, cases: list[tuple[str, str]]) -> list[tuple[str, str]]:
    from contextos.store.postgres import PostgresStore

    store: Any = PostgresStore(url)
    try:
        return _missed(store, cases)
    finally:
        store.close()


@pytest.mark.postgres
def test_a_capitalised_greek_word_finds_its_final_sigma_in_a_utf8_locale(tmp_path: Path) -> None:
    """In a UTF-8 locale PostgreSQL folds Greek case, but lower() makes a capital "Σ"
    "σ" and keeps a stored "ς": "ΟΔΥΣΣΈΑΣ" found no "Οδυσσέας" there, where SQLite
    (unicode61 folds "ς" to "σ") did. Both stores find these now."""
    cases = [
        ("Ο Οδυσσέας ταξίδευε", "ΟΔΥΣΣΈΑΣ"),
        ("ΟΔΥΣΣΈΑΣ ΤΑΞΊΔΕΥΕ", "Οδυσσέας"),
        ("Πίνω καφές κάθε πρωί", "ΚΑΦΈΣ"),
        ("Ο Νίκος είναι φίλος μου", "ΝΊΚΟΣ"),
    ]
    sqlite = SQLiteStore(tmp_path / "g.db")
    try:
        assert _missed(sqlite, cases) == []
    finally:
        sqlite.close()
    with _database(encoding="UTF8", lc_collate="C.UTF-8", lc_ctype="C.UTF-8") as url:
        assert _searched(url, cases) == []


@pytest.mark.postgres
def test_a_database_that_is_not_utf8_folds_neither_side() -> None:
    """PostgreSQL cannot fold the stored words of a LATIN1 database (``normalize``
    needs UTF-8), so the query's words are not folded there either: "Straße" still
    finds "Straße" (folded, the query asked for "strasse", which that index lacks)."""
    cases = [("Ich wohne in der Straße 5", "Straße"), ("mein Fuß", "FUß")]
    with _database(encoding="LATIN1", lc_collate="C", lc_ctype="C") as url:
        assert _searched(url, cases) == []
