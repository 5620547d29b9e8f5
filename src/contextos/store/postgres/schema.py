"""PostgreSQL schema migrations, applied in order and recorded in ``schema_version``.

Each migration is a SQL script, run in one transaction under an
advisory lock (so two processes starting at once do not both migrate). Add new
ones at the end; never edit an applied one.

Every table is keyed tenant-first, so a deployment that outgrows one server can
partition (or shard) by tenant without changing a query: every statement the
store runs filters on ``tenant``.

Vectors live in their own narrow table, ``vectors`` (untyped ``vector`` plus
its ``dim``), not in the memory row: updating a memory's metadata or validity
then never re-inserts its vector into the HNSW index, and scans of memories
(listing, BM25 statistics) do not drag 1.5 kB of floats along per row. Records
waiting for a vector are queued in ``pending_vectors``. The HNSW index is a
partial expression index per dimension (``vec::vector(384)`` where
``dim = 384``), created the first time a vector of that size is written,
because pgvector can only index a column of
fixed size and the store does not know the embedder's size up front.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from contextos.errors import StoreError
from contextos.store.tables import (
    POSTGRES_TYPES,
    SESSION_META,
    TURNS,
    Column,
    keyed_by_memory,
)
from contextos.text import query

#: Arbitrary constant naming the advisory lock that serialises migrations and index builds.
LOCK_KEY = 0x636F6E74  # "cont"

#: How long a migration waits for a lock on a table (``lock_timeout``) before it gives up
#: with a ``StoreError`` and changes nothing. While V8's ``ALTER TABLE`` waits for its
#: exclusive lock, every other query on ``memories``, of every process, queues behind it;
#: without a bound, one long reader (a report, a ``pg_dump``, a transaction left open)
#: stalled the whole store for as long as it ran. 5 s is far longer than any query the
#: store runs (milliseconds), so a lock held that long is a session outside it that will
#: not end soon, and it is as long as the other processes then stall before the
#: migration steps aside (the rewrite itself holds the lock for ~8 s per 100,000 rows).
MIGRATION_LOCK_TIMEOUT_S = 5.0

log = logging.getLogger(__name__)

#: The text search configuration behind ``memories.tsv`` and the queries (V8 creates
#: it in the store's schema): PostgreSQL's ``english`` with its Snowball stemmer
#: (``TS_DICTIONARY``) but no stopword list, so every word is indexed, as FTS5 does in
#: the SQLite store; the query side drops the stopwords both stores share
#: (``text.query.QUERY_STOPWORDS``). With ``english``'s longer list, a query for "not",
#: "more", "after" or "before" found nothing on PostgreSQL and the memory on SQLite.
TS_CONFIG = "contextos_english"
TS_DICTIONARY = "contextos_english_stem"

#: The configuration of V1's ``tsv`` (frozen: V1 is applied as written).
_V1_TS_CONFIG = "english"

#: The separators of V8 (frozen: V8 is applied as written): ``text.query``'s
#: ``SEPARATOR_RANGES`` before V10 added the emoji and pictographs outside U+1F300 to
#: U+1FAFF and the tags of subdivision flags.
_V8_SEPARATOR_RANGES: tuple[tuple[int, int], ...] = (
    (0x0001, 0x002F),
    (0x003A, 0x0040),
    (0x005B, 0x0060),
    (0x007B, 0x00A9),
    (0x00AB, 0x00B1),
    (0x00B4, 0x00B4),
    (0x00B6, 0x00B8),
    (0x00BB, 0x00BB),
    (0x00BF, 0x00BF),
    (0x00D7, 0x00D7),
    (0x00F7, 0x00F7),
    (0x2000, 0x206F),
    (0x20A0, 0x20CF),
    (0x2190, 0x23FF),
    (0x2500, 0x2775),
    (0x2794, 0x27BF),
    (0x2E00, 0x2E2E),
    (0x2E30, 0x2E7F),
    (0x3000, 0x3004),
    (0x3008, 0x3020),
    (0x3030, 0x3030),
    (0x3036, 0x3037),
    (0x303D, 0x303F),
    (0xFF01, 0xFF0F),
    (0xFF1A, 0xFF20),
    (0xFF3B, 0xFF40),
    (0xFF5B, 0xFF65),
    (0xFFE0, 0xFFEE),
    (0x1F300, 0x1FAFF),
)

#: Code point ranges (inclusive) that separate words before PostgreSQL's parser reads a
#: text (``text.query.SEPARATOR_RANGES``, where they are listed and why; each one a
#: separator for the query side too, tested). Why: PostgreSQL's parser keeps an e-mail
#: address, a host, a URL, a path, a file name, a decimal or a version as one token
#: (``ana@example.com``), while the query side asks for the words in it (``ana``,
#: ``example``, ``com``): a keyword search for ``example`` found nothing. Ranges rather
#: than ``[:alnum:]``: that class is locale-dependent (ASCII only in a ``C``-locale
#: database, where ``café`` lost its ``é``) and never holds combining marks, which the
#: query side keeps inside a word. V10 is written from these ranges (V8 from
#: ``_V8_SEPARATOR_RANGES``): changing them needs a new migration
#: (``tests/test_migrations_frozen.py`` pins both).
SEPARATOR_RANGES = query.SEPARATOR_RANGES

#: The separators as one regular-expression class, for both PostgreSQL and Python.
SEPARATOR_CLASS = query.SEPARATOR_CLASS


#: Tables of one row per memory: its vector and its place in the embedding queue
#: (V1), its quarantine after a failed embedding (V2).
VECTORS = keyed_by_memory(
    "vectors",
    Column("dim", "int", "NOT NULL"),
    Column("model", "text", "NOT NULL"),
    Column("vec", "vector", "NOT NULL"),
)
PENDING_VECTORS = keyed_by_memory("pending_vectors")
VECTOR_QUARANTINE = keyed_by_memory(
    "vector_quarantine", Column("error", "text", "NOT NULL"), Column("at", "time", "NOT NULL")
)

V1_INITIAL = (
    f"""
        CREATE TABLE memories (
            tenant      text NOT NULL,
            id          text NOT NULL,
            seq         bigint GENERATED ALWAYS AS IDENTITY,
            user_id     text,
            agent_id    text,
            session_id  text,
            memory_type text NOT NULL,
            text        text NOT NULL,
            context     text NOT NULL DEFAULT '',
            metadata    jsonb NOT NULL DEFAULT '{{}}',
            created_at  timestamptz NOT NULL,
            updated_at  timestamptz NOT NULL,
            event_time  timestamptz,
            valid_from  timestamptz,
            valid_to    timestamptz,
            provenance  jsonb NOT NULL DEFAULT '[]',
            hash        text NOT NULL,
            tsv tsvector GENERATED ALWAYS AS (
                setweight(to_tsvector('{_V1_TS_CONFIG}'::regconfig, text), 'A') ||
                setweight(to_tsvector('{_V1_TS_CONFIG}'::regconfig, context), 'B')
            ) STORED,
            -- words in text + context, stopwords included: BM25's document length
            ntok integer GENERATED ALWAYS AS (
                length(btrim(regexp_replace(text || ' ' || context, '[^[:alnum:]]+', ' ', 'g')))
                - length(replace(btrim(regexp_replace(
                    text || ' ' || context, '[^[:alnum:]]+', ' ', 'g')), ' ', '')) + 1
            ) STORED,
            PRIMARY KEY (tenant, id)
        );
        CREATE UNIQUE INDEX memories_seq ON memories (seq);
        CREATE INDEX memories_scope ON memories (tenant, user_id, agent_id, session_id);
        CREATE INDEX memories_created ON memories (tenant, created_at DESC, seq DESC);
        CREATE INDEX memories_hash ON memories (tenant, hash);
        CREATE INDEX memories_tsv ON memories USING gin (tsv);
        CREATE INDEX memories_metadata ON memories USING gin (metadata jsonb_path_ops);

"""
    + VECTORS.create(POSTGRES_TYPES)
    + """

"""
    + PENDING_VECTORS.create(POSTGRES_TYPES)
    + """

        CREATE TABLE history (
            tenant    text NOT NULL,
            seq       bigint GENERATED ALWAYS AS IDENTITY,
            user_id   text,
            memory_id text NOT NULL,
            event     text NOT NULL,
            old_text  text,
            new_text  text,
            at        timestamptz NOT NULL,
            actor     text NOT NULL,
            PRIMARY KEY (tenant, seq)
        );
        CREATE INDEX history_memory ON history (tenant, memory_id, seq);
        CREATE INDEX history_user ON history (tenant, user_id);

"""
    + TURNS.create(POSTGRES_TYPES)
    + """
        CREATE INDEX turns_user ON turns (tenant, user_id);

"""
    + SESSION_META.create(POSTGRES_TYPES)
    + """
        CREATE INDEX session_meta_user ON session_meta (tenant, user_id, agent_id);
        """
)


#: Records whose embedding failed, with the error, out of the queue (see SQLite's V3).
V2_QUARANTINE = "\n" + VECTOR_QUARANTINE.create(POSTGRES_TYPES) + "\n        "

#: A session's records by time, for the latest-record read of every add in a
#: session (see SQLite's V4): the scope index serves only tenant + user there.
V3_SESSION_INDEX = (
    "CREATE INDEX memories_session ON memories (tenant, session_id, created_at DESC, seq DESC)"
)

#: Vectors by the model and text recipe that wrote them (see SQLite's V6).
V4_VECTOR_MODEL_INDEX = "CREATE INDEX vectors_model ON vectors (model)"

#: Each record's count of tokens of its rendering and what counted it (see SQLite's V7).
V5_TOKEN_COUNT = (
    "ALTER TABLE memories ADD COLUMN token_count integer, ADD COLUMN token_counter text"
)

#: Claims on pending records (see SQLite's V8): a worker claims a batch until
#: ``claimed_until``, the database's clock, so every process compares leases on one clock.
V6_PENDING_CLAIMS = (
    "ALTER TABLE pending_vectors ADD COLUMN claimed_by text, "
    "ADD COLUMN claimed_until timestamptz NOT NULL DEFAULT '-infinity'"
)

#: Facts stored beside a turn point to it with ``metadata["fact_of"]``, not the
#: ``"source"`` older releases wrote; this moves the key for exactly those facts, a
#: ``source`` string naming another record of the same tenant and scope (see SQLite's
#: V9, which says why). Only ``metadata`` changes: ``tsv`` and ``ntok`` are generated
#: from text and context, and vectors live in their own table, so no vector is queued
#: again or re-inserted into an HNSW index (a fact's embedded text does not change).
V7_FACT_OF = """
UPDATE memories AS f
SET metadata = (f.metadata - 'source') || jsonb_build_object('fact_of', f.metadata -> 'source')
WHERE jsonb_typeof(f.metadata -> 'source') = 'string' AND NOT f.metadata ? 'fact_of'
AND EXISTS (
    SELECT 1 FROM memories AS t
    WHERE t.tenant = f.tenant AND t.id = f.metadata ->> 'source' AND t.id != f.id
    AND t.user_id IS NOT DISTINCT FROM f.user_id AND t.agent_id IS NOT DISTINCT FROM f.agent_id
    AND t.session_id IS NOT DISTINCT FROM f.session_id
)
"""


def _split(expr: str, ranges: tuple[tuple[int, int], ...] = _V8_SEPARATOR_RANGES) -> str:
    """SQL: ``expr`` with every run of separators (``ranges``) made one space."""
    pattern = query.char_class(ranges).replace("\\", "\\\\")
    return f"regexp_replace({expr}, E'{pattern}+', ' ', 'g')"


#: ``tsv`` and ``ntok`` again, from the text cut into words where the query side cuts it
#: (``SEPARATOR_RANGES``) and stemmed without a stopword list (``TS_CONFIG``); in a UTF-8
#: database the text is NFC-normalised first, as the query side normalises the query
#: (``e`` + U+0301 and ``é`` are one word). The columns are dropped and added again (a
#: generated column's expression cannot be altered before PostgreSQL 17), which rewrites
#: the table once under an exclusive lock, and the GIN index is built again. Every step
#: is written so that running it twice leaves the same schema; the dictionary and the
#: configuration are created in the store's own schema (``current_schema()``), never
#: taken from another schema on the search path.
V8_KEYWORD_WORDS = f"""
DO $migration$
DECLARE
    here constant oid := (SELECT oid FROM pg_namespace WHERE nspname = current_schema());
    cfg constant text := format('%I.{TS_CONFIG}', current_schema());
    dict constant text := format('%I.{TS_DICTIONARY}', current_schema());
    utf8 constant boolean := current_setting('server_encoding') = 'UTF8';
BEGIN
    ALTER TABLE memories DROP COLUMN IF EXISTS tsv, DROP COLUMN IF EXISTS ntok;
    IF NOT EXISTS (
        SELECT 1 FROM pg_ts_dict WHERE dictname = '{TS_DICTIONARY}' AND dictnamespace = here
    ) THEN
        EXECUTE format(
            'CREATE TEXT SEARCH DICTIONARY %s (TEMPLATE = pg_catalog.snowball, Language = english)',
            dict);
    END IF;
    IF NOT EXISTS (
        SELECT 1 FROM pg_ts_config WHERE cfgname = '{TS_CONFIG}' AND cfgnamespace = here
    ) THEN
        EXECUTE format('CREATE TEXT SEARCH CONFIGURATION %s (COPY = pg_catalog.english)', cfg);
        EXECUTE format(
            'ALTER TEXT SEARCH CONFIGURATION %s '
            'ALTER MAPPING REPLACE pg_catalog.english_stem WITH %s', cfg, dict);
    END IF;
    EXECUTE format($ddl$
        ALTER TABLE memories
        ADD COLUMN tsv tsvector GENERATED ALWAYS AS (
            setweight(to_tsvector(%1$L::regconfig, {_split("%2$s")}), 'A') ||
            setweight(to_tsvector(%1$L::regconfig, {_split("%3$s")}), 'B')
        ) STORED,
        -- words in text + context, stopwords included: BM25's document length
        ADD COLUMN ntok integer GENERATED ALWAYS AS (coalesce(array_length(
            string_to_array(btrim({_split("text || ' ' || context")}), ' '), 1), 1)
        ) STORED
        $ddl$,
        cfg,
        CASE WHEN utf8 THEN 'normalize(text, NFC)' ELSE 'text' END,
        CASE WHEN utf8 THEN 'normalize(context, NFC)' ELSE 'context' END);
    CREATE INDEX memories_tsv ON memories USING gin (tsv);
END
$migration$
"""

#: The model whose embedding of a quarantined record failed (see SQLite's V12).
V9_QUARANTINE_MODEL = "ALTER TABLE vector_quarantine ADD COLUMN IF NOT EXISTS model text"


def _chars(first: int, last: int) -> str:
    """SQL: the characters U+``first`` to U+``last`` as one text, made by ``chr`` when
    the script runs (so the script itself is ASCII, as a database in another encoding
    must be able to read it)."""
    return f"(SELECT string_agg(chr(c), '' ORDER BY c) FROM generate_series({first}, {last}) AS c)"


def _literal(text: str) -> str:
    """SQL: ``text`` as an expression that stays ASCII (``chr`` of each other character)."""
    if text.isascii():
        return "'" + text.replace("'", "''") + "'"
    return " || ".join(f"chr({ord(ch)})" for ch in text)


def _fold_sql() -> tuple[str, str]:
    """The ``format()`` template of the generated columns' expression in a UTF-8
    database (``%1$s``: the text; then the literals), and the SQL of those literals:
    ``text.query.keyword_text`` in SQL. The variation selectors and the keycap mark
    dropped; NFC; the full-width forms of ASCII made ASCII (``translate``, whose cost
    grows with the length of its character list, ~100 us a row here: run only on a
    text that holds one); "ß" and "ẞ" "ss", "ς" "σ"; every run of separators a space."""
    ignored = query.IGNORED_CLASS.replace("\\", "\\\\")
    first, last = query.FULLWIDTH_ASCII
    fullwidth = query.char_class((query.FULLWIDTH_ASCII,)).replace("\\", "\\\\")
    dropped = f"normalize(regexp_replace(%1$s, E'{ignored}+', '', 'g'), NFC)"
    expr = (
        f"CASE WHEN %1$s ~ E'{fullwidth}' THEN translate({dropped}, %2$L, %3$L) ELSE {dropped} END"
    )
    literals = [_chars(first, last), _chars(first - 0xFEE0, last - 0xFEE0)]
    for ch, folded in query.FOLDS.items():
        if not first <= ord(ch) <= last:
            n = len(literals) + 2
            expr = f"replace({expr}, %{n}$L, %{n + 1}$L)"
            literals += [_literal(ch), _literal(folded)]
    return _split(expr, SEPARATOR_RANGES), ", ".join(literals)


_FOLD, _FOLD_LITERALS = _fold_sql()

#: ``tsv`` and ``ntok`` again, from the text as ``text.query.keyword_text`` makes it (the
#: query side's rule): cut at the separators of V10 (``SEPARATOR_RANGES``: the emoji and
#: pictographs outside U+1F300 to U+1FAFF too, which PostgreSQL's parser in a ``C``
#: locale took for letters), and in a UTF-8 database also without the variation
#: selectors and the keycap mark (which stayed inside a word: "I ❤\ufe0fParis" held no
#: "paris" in a ``C`` locale) and folded: "ß" and "ẞ" are "ss", the final sigma "ς"
#: is "σ" (lower() makes "οδυσσέασ" of "ΟΔΥΣΣΈΑΣ", and "ΟΔΥΣΣΈΑΣ" did not find
#: "Οδυσσέας"), full-width ASCII is ASCII ("１２３４５" is "12345"). A database in
#: another encoding cannot normalise or fold (``normalize`` needs UTF-8): its text is
#: cut at the separators only, as V8 did, and its queries are not folded either
#: (``PostgresStore``). Like V8, this rewrites ``memories`` once under an exclusive lock
#: and builds the GIN index again; run twice, it leaves the same schema.
V10_KEYWORD_FOLDS = f"""
DO $migration$
DECLARE
    cfg constant text := format('%I.{TS_CONFIG}', current_schema());
    fold constant text := $fold${_FOLD}$fold$;
    txt text := $e${_split("text", SEPARATOR_RANGES)}$e$;
    ctx text := $e${_split("context", SEPARATOR_RANGES)}$e$;
    doc text := $e${_split("(text || ' ' || context)", SEPARATOR_RANGES)}$e$;
BEGIN
    IF current_setting('server_encoding') = 'UTF8' THEN
        txt := format(fold, 'text', {_FOLD_LITERALS});
        ctx := format(fold, 'context', {_FOLD_LITERALS});
        doc := format(fold, $e$(text || ' ' || context)$e$, {_FOLD_LITERALS});
    END IF;
    ALTER TABLE memories DROP COLUMN IF EXISTS tsv, DROP COLUMN IF EXISTS ntok;
    EXECUTE format($ddl$
        ALTER TABLE memories
        ADD COLUMN tsv tsvector GENERATED ALWAYS AS (
            setweight(to_tsvector(%1$L::regconfig, %2$s), 'A') ||
            setweight(to_tsvector(%1$L::regconfig, %3$s), 'B')
        ) STORED,
        -- words in text + context, stopwords included: BM25's document length
        ADD COLUMN ntok integer GENERATED ALWAYS AS (coalesce(array_length(
            string_to_array(btrim(%4$s), ' '), 1), 1)
        ) STORED
        $ddl$,
        cfg, txt, ctx, doc);
    CREATE INDEX memories_tsv ON memories USING gin (tsv);
END
$migration$
"""

#: Vectors by model and size (see SQLite's V13): the embedding worker queues again those
#: of another size than its embedder's too, each arm of its query a range of this index.
#: It replaces V4's index, on the model alone, which is a prefix of it. Written to run
#: again on a schema it already upgraded (tests replay the migrations after theirs).
V11_VECTOR_SIZE_INDEX = """
CREATE INDEX IF NOT EXISTS vectors_model_dim ON vectors (model, dim);
DROP INDEX IF EXISTS vectors_model;
"""

#: Each history event names its memory's session (see SQLite's V14, and why rows written
#: before are left NULL): a ``forget`` of the session, or of its user, finds the history
#: of a memory deleted earlier without a purge. A column without a default (a catalog
#: change) and an index (writes to ``history`` wait for its build: 0.4 s per 250,000
#: rows). Written to run again on a schema it already upgraded.
V12_HISTORY_SESSION = """
ALTER TABLE history ADD COLUMN IF NOT EXISTS session_id text;
CREATE INDEX IF NOT EXISTS history_session ON history (tenant, session_id);
"""

#: A user's, and an agent's, memories of one type, newest first: the read of a scope's
#: stored rules every window makes (see SQLite's V15). Their builds hold off writes to
#: ``memories`` (about as long as V12's index per row). Written to run again on a
#: schema it already upgraded.
V13_MEMORY_TYPE_INDEX = """
CREATE INDEX IF NOT EXISTS memories_type_user
    ON memories (tenant, memory_type, user_id, created_at DESC, seq DESC);
CREATE INDEX IF NOT EXISTS memories_type_agent
    ON memories (tenant, memory_type, agent_id, created_at DESC, seq DESC);
"""

#: V13 once shipped as another script (one index, ``memories_type`` on (tenant,
#: memory_type, created_at)) and was then rewritten under the same number (see SQLite's
#: V16): a schema made by that first V13 kept its index, and each window's read of a
#: user's rules walked every rule of the tenant. V14 runs today's V13 again (it is
#: written to run again) and drops the first one's index, by its name in the store's
#: own schema (``current_schema()``): a bare name is looked up along the search path,
#: and would drop the index of another store kept in ``public``.
V14_V13_AGAIN = (
    V13_MEMORY_TYPE_INDEX
    + """DO $migration$
BEGIN
    EXECUTE format('DROP INDEX IF EXISTS %I.memories_type', current_schema());
END
$migration$;
"""
)

#: The records V7 took for facts that are none (see SQLite's V17, which says why and
#: how they are told apart): a ``fact_of`` naming a record of the tenant that is not
#: the record's turn (another user, agent or session, or another ``created_at``: a
#: fact shares its turn's), or held by a record outside a session. Left as they are: a
#: record in a session whose ``fact_of`` names no record of the tenant, and one that
#: holds a ``source`` too (one the app set again after V7, which moving ``fact_of`` back
#: would overwrite: it stays a fact).
_V15_NOT_FACTS = """jsonb_typeof(f.metadata -> 'fact_of') = 'string'
AND NOT f.metadata ? 'source'
AND (f.session_id IS NULL OR EXISTS (
    SELECT 1 FROM memories AS t
    WHERE t.tenant = f.tenant AND t.id = f.metadata ->> 'fact_of'
    AND (t.created_at != f.created_at OR t.user_id IS DISTINCT FROM f.user_id
         OR t.agent_id IS DISTINCT FROM f.agent_id
         OR t.session_id IS DISTINCT FROM f.session_id)
))"""

#: Puts back ``metadata["source"]`` on the records V7 took for facts and are none
#: (``_V15_NOT_FACTS``), as V7 moved it, in reverse. Only ``metadata`` changes (``tsv``
#: and ``ntok`` are generated from text and context; no HNSW index is touched). A vector
#: is queued again only where the record's embedded text changes: a session's message
#: (``role``, not written by ``add(infer=True)``) is a conversation turn again, embedded
#: with its facts, where as a fact its vector was made bare (see SQLite's V17); it
#: serves search until the new one is written, and a claim on it is ended. Written to
#: run again: a second run finds nothing to move.
V15_SOURCE_AGAIN = f"""
INSERT INTO pending_vectors (tenant, memory_id)
SELECT f.tenant, f.id FROM memories AS f
WHERE {_V15_NOT_FACTS}
AND f.session_id IS NOT NULL AND f.metadata ? 'role' AND NOT f.metadata ? 'inferred'
AND EXISTS (SELECT 1 FROM vectors AS v WHERE v.tenant = f.tenant AND v.memory_id = f.id)
ON CONFLICT (tenant, memory_id) DO UPDATE
SET claimed_by = NULL, claimed_until = '-infinity';
UPDATE memories AS f
SET metadata = (f.metadata - 'fact_of') || jsonb_build_object('source', f.metadata -> 'fact_of')
WHERE {_V15_NOT_FACTS};
"""

#: Ordered migrations: SQL scripts, each run as one statement batch in the migration's
#: transaction.

MIGRATIONS: tuple[str, ...] = (
    V1_INITIAL,
    V2_QUARANTINE,
    V3_SESSION_INDEX,
    V4_VECTOR_MODEL_INDEX,
    V5_TOKEN_COUNT,
    V6_PENDING_CLAIMS,
    V7_FACT_OF,
    V8_KEYWORD_WORDS,
    V9_QUARANTINE_MODEL,
    V10_KEYWORD_FOLDS,
    V11_VECTOR_SIZE_INDEX,
    V12_HISTORY_SESSION,
    V13_MEMORY_TYPE_INDEX,
    V14_V13_AGAIN,
    V15_SOURCE_AGAIN,
)


#: Migrations (numbers) that rewrite ``memories`` (every row, under an exclusive lock,
#: ~8 s per 100,000 rows): logged at INFO when they run on an existing table.
REWRITES_MEMORIES = frozenset(
    {MIGRATIONS.index(V8_KEYWORD_WORDS) + 1, MIGRATIONS.index(V10_KEYWORD_FOLDS) + 1}
)


def migrate(conn: Any) -> int:
    """Bring the database behind ``conn`` (a psycopg connection) to the newest schema.

    A migration runs once and must finish, so it runs without the session's
    ``statement_timeout`` (one set in the URL's options or for the role cancelled V8's
    rewrite of a big table at every open, and the store could never be opened). The
    advisory lock is waited for without the session's ``lock_timeout`` either (waiting
    for another process's migration is waiting for what must finish; with a
    ``lock_timeout`` in the URL, a process opening the store while another migrated
    failed). After it, lock waits are bounded by ``MIGRATION_LOCK_TIMEOUT_S``: a
    migration stuck behind a long reader fails with a StoreError saying so, rather than
    queueing every other query behind its lock request for as long as that reader runs.
    """
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("SET LOCAL statement_timeout = 0")
        cur.execute("SET LOCAL lock_timeout = 0")
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
        cur.execute(f"SET LOCAL lock_timeout = {round(MIGRATION_LOCK_TIMEOUT_S * 1000)}")
        _ensure_vector_extension(cur)
        cur.execute(
            "CREATE TABLE IF NOT EXISTS schema_version ("
            "version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        cur.execute("SELECT coalesce(max(version), 0) FROM schema_version")
        (version,) = cur.fetchone()
        if version > len(MIGRATIONS):
            raise StoreError(
                f"database schema version {version} is newer than this contextos "
                f"understands ({len(MIGRATIONS)}); upgrade contextos"
            )
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            # a table created by V1 in this transaction is empty: nothing worth a word
            rewrites = number in REWRITES_MEMORIES and version > 0
            if rewrites:
                cur.execute("SELECT count(*) FROM memories")  # a tiny part of the rewrite
                (rows,) = cur.fetchone()
                log.info(
                    "PostgreSQL schema migration V%d is rewriting table memories (%s rows; "
                    "~8 s per 100,000) under an exclusive lock: other processes' queries "
                    "of it wait up to their lock_timeout (5 s unless set), then fail (503)",
                    number,
                    f"{rows:,}",
                )
            start = time.monotonic()
            try:
                cur.execute(script)
            except Exception as exc:
                if getattr(exc, "sqlstate", None) == "55P03":  # lock_not_available
                    raise StoreError(
                        f"PostgreSQL schema migration V{number} waited more than "
                        f"{MIGRATION_LOCK_TIMEOUT_S:g} s for a lock another session holds "
                        "on a contextos table (a long query, a pg_dump, a transaction left "
                        "open: see pg_stat_activity) and changed nothing; end that "
                        "session or wait for it, then open the store again"
                    ) from exc
                raise
            cur.execute("INSERT INTO schema_version (version) VALUES (%s)", (number,))
            if rewrites:
                log.info(
                    "PostgreSQL schema migration V%d rewrote table memories in %.1f s",
                    number,
                    time.monotonic() - start,
                )
    return len(MIGRATIONS)


def _ensure_vector_extension(cur: Any) -> None:
    cur.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'")
    if cur.fetchone() is not None:
        return
    cur.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'")
    if cur.fetchone() is None:
        raise StoreError(
            "the PostgreSQL server has no pgvector extension; install it "
            "(see docs/postgres.md) and run CREATE EXTENSION vector"
        )
    cur.execute("CREATE EXTENSION IF NOT EXISTS vector")


def ensure_hnsw_index(cur: Any, dim: int) -> None:
    """Create the cosine HNSW index for vectors of size ``dim`` if it is not there yet."""
    if not 0 < dim <= 2000:
        raise ValueError(f"pgvector indexes vectors of 1..2000 dimensions, got {dim}")
    cur.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
    cur.execute(
        f"CREATE INDEX IF NOT EXISTS vectors_hnsw_{dim} ON vectors USING hnsw "
        f"((vec::vector({dim})) vector_cosine_ops) WHERE dim = {dim}"
    )
