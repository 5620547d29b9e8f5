"""SQLite schema migrations, applied in order and recorded in ``PRAGMA user_version``.

Each migration is a SQL script applied in one transaction; add new ones at the end, never
edit an applied one. Times are stored as UTC epoch seconds (REAL).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

from contextos.store.tables import SESSION_META, SQLITE_TYPES, TURNS

V1_INITIAL = (
    """
        CREATE TABLE memories (
            rowid       INTEGER PRIMARY KEY,
            id          TEXT NOT NULL UNIQUE,
            tenant      TEXT NOT NULL,
            user_id     TEXT,
            agent_id    TEXT,
            session_id  TEXT,
            memory_type TEXT NOT NULL,
            text        TEXT NOT NULL,
            context     TEXT NOT NULL DEFAULT '',
            metadata    TEXT NOT NULL DEFAULT '{}',
            created_at  REAL NOT NULL,
            updated_at  REAL NOT NULL,
            event_time  REAL,
            valid_from  REAL,
            valid_to    REAL,
            provenance  TEXT NOT NULL DEFAULT '[]',
            hash        TEXT NOT NULL
        );
        CREATE INDEX memories_scope ON memories (tenant, user_id, agent_id, session_id);
        CREATE INDEX memories_hash ON memories (tenant, hash);
        CREATE INDEX memories_created ON memories (tenant, created_at);

        CREATE VIRTUAL TABLE memories_fts USING fts5(
            text, context, content='memories', content_rowid='rowid',
            tokenize='porter unicode61 remove_diacritics 2'
        );
        CREATE TRIGGER memories_ai AFTER INSERT ON memories BEGIN
            INSERT INTO memories_fts (rowid, text, context) VALUES (new.rowid, new.text, new.context);
        END;
        CREATE TRIGGER memories_ad AFTER DELETE ON memories BEGIN
            INSERT INTO memories_fts (memories_fts, rowid, text, context)
            VALUES ('delete', old.rowid, old.text, old.context);
        END;
        CREATE TRIGGER memories_au AFTER UPDATE OF text, context ON memories BEGIN
            INSERT INTO memories_fts (memories_fts, rowid, text, context)
            VALUES ('delete', old.rowid, old.text, old.context);
            INSERT INTO memories_fts (rowid, text, context) VALUES (new.rowid, new.text, new.context);
        END;

        -- vseq grows with every vector written, so other processes can load new ones incrementally.
        CREATE TABLE vectors (
            vseq      INTEGER PRIMARY KEY AUTOINCREMENT,
            mem_rowid INTEGER NOT NULL UNIQUE REFERENCES memories (rowid) ON DELETE CASCADE,
            model     TEXT NOT NULL,
            vec       BLOB NOT NULL
        );

        CREATE TABLE history (
            seq       INTEGER PRIMARY KEY,
            tenant    TEXT NOT NULL,
            user_id   TEXT,
            memory_id TEXT NOT NULL,
            event     TEXT NOT NULL,
            old_text  TEXT,
            new_text  TEXT,
            at        REAL NOT NULL,
            actor     TEXT NOT NULL
        );
        CREATE INDEX history_memory ON history (tenant, memory_id);
        CREATE INDEX history_user ON history (tenant, user_id);

"""
    + TURNS.create(SQLITE_TYPES)
    + """
        CREATE INDEX turns_user ON turns (tenant, user_id);

"""
    + SESSION_META.create(SQLITE_TYPES)
    + "\n"
)

#: Triggers on ``memories`` that more than one migration creates: written once here, so
#: that the migration re-creating them (V7) cannot drift from the one that made them.
#: The SQL of each migration is pinned by digest (tests/test_migrations_frozen.py).
_PENDING_TRIGGERS = """CREATE TRIGGER pending_on_insert AFTER INSERT ON memories BEGIN
    INSERT OR IGNORE INTO pending_vectors (mem_rowid) VALUES (new.rowid);
END;
CREATE TRIGGER pending_on_delete AFTER DELETE ON memories BEGIN
    DELETE FROM pending_vectors WHERE mem_rowid = old.rowid;
END;
"""
_INDEX_LOG_TRIGGERS = """CREATE TRIGGER index_log_delete AFTER DELETE ON memories BEGIN
    INSERT INTO index_log (mem_id) VALUES (old.id);
END;
CREATE TRIGGER index_log_update
AFTER UPDATE OF text, valid_from, valid_to, event_time ON memories BEGIN
    INSERT INTO index_log (mem_id) VALUES (new.id);
END;
"""
_QUARANTINE_RETRY_TRIGGER = """CREATE TRIGGER quarantine_retry AFTER UPDATE OF text ON memories
WHEN EXISTS (SELECT 1 FROM vector_quarantine WHERE mem_rowid = new.rowid) BEGIN
    DELETE FROM vector_quarantine WHERE mem_rowid = new.rowid;
    INSERT OR IGNORE INTO pending_vectors (mem_rowid) VALUES (new.rowid);
END;
"""
#: Every trigger on ``memories``, dropped before a migration creates them all again in
#: the order SQLite 3.40 needs (see V7).
_DROP_TRIGGERS = """DROP TRIGGER pending_on_insert;
DROP TRIGGER pending_on_delete;
DROP TRIGGER index_log_delete;
DROP TRIGGER index_log_update;
DROP TRIGGER quarantine_retry;
DROP TRIGGER memories_ai;
DROP TRIGGER memories_ad;
DROP TRIGGER memories_au;
"""
_FTS_TRIGGERS = """CREATE TRIGGER memories_ai AFTER INSERT ON memories BEGIN
    INSERT INTO memories_fts (rowid, text, context, scope_terms)
    VALUES (new.rowid, new.text, new.context, new.scope_terms);
END;
CREATE TRIGGER memories_ad AFTER DELETE ON memories BEGIN
    INSERT INTO memories_fts (memories_fts, rowid, text, context, scope_terms)
    VALUES ('delete', old.rowid, old.text, old.context, old.scope_terms);
END;
CREATE TRIGGER memories_au AFTER UPDATE OF text, context ON memories BEGIN
    INSERT INTO memories_fts (memories_fts, rowid, text, context, scope_terms)
    VALUES ('delete', old.rowid, old.text, old.context, old.scope_terms);
    INSERT INTO memories_fts (rowid, text, context, scope_terms)
    VALUES (new.rowid, new.text, new.context, new.scope_terms);
END;
"""

#: Records waiting for a vector, kept by triggers so the embedding worker finds them
#: without scanning every record (that scan grew to ~50 ms at 100k records and, holding
#: the store's lock, pushed add() p95 to 60 ms).
V2_PENDING_VECTORS = (
    """
CREATE TABLE pending_vectors (mem_rowid INTEGER PRIMARY KEY);
INSERT INTO pending_vectors (mem_rowid)
    SELECT m.rowid FROM memories m LEFT JOIN vectors v ON v.mem_rowid = m.rowid
    WHERE v.mem_rowid IS NULL;
"""
    + _PENDING_TRIGGERS
    + """CREATE TRIGGER pending_done AFTER INSERT ON vectors BEGIN
    DELETE FROM pending_vectors WHERE mem_rowid = new.mem_rowid;
END;
CREATE TRIGGER pending_again AFTER DELETE ON vectors
WHEN EXISTS (SELECT 1 FROM memories WHERE rowid = old.mem_rowid) BEGIN
    INSERT OR IGNORE INTO pending_vectors (mem_rowid) VALUES (old.mem_rowid);
END;
"""
)

#: What an in-process vector index must re-read, kept by triggers: every record deleted,
#: or whose text or times changed, since a given ``seq``. Another process's index reads
#: this log to drop stale vectors (before it, a delete in one process was never seen by
#: another, whose index then served a reused rowid under the deleted record's scope).
#: Records whose embedding failed are quarantined with the error, out of the queue, so
#: one bad row cannot stall the worker for every tenant; a text change retries them.
#: ``erasure_pending`` remembers a forget/purge whose WAL could not yet be truncated.
V3_INDEX_LOG_AND_QUARANTINE = (
    """
CREATE TABLE index_log (seq INTEGER PRIMARY KEY AUTOINCREMENT, mem_id TEXT NOT NULL);
"""
    + _INDEX_LOG_TRIGGERS
    + """CREATE TABLE vector_quarantine (
    mem_rowid INTEGER PRIMARY KEY REFERENCES memories (rowid) ON DELETE CASCADE,
    error     TEXT NOT NULL,
    at        REAL NOT NULL
);
"""
    + _QUARANTINE_RETRY_TRIGGER
    + """CREATE TABLE erasure_pending (id INTEGER PRIMARY KEY CHECK (id = 1), since REAL NOT NULL);
"""
)

#: A session's records by time. ``Memory.add`` in a session first reads the session's
#: latest record (``list(limit=1)`` on tenant + user + session); with only the tenant's
#: ``created_at`` index the planner walked every record of the tenant backwards until
#: one of that user's matched, all 100k of them for a user new to the session (one
#: add in five of ``bench scale``: add p95 20 ms at 100k). Here it reads one entry.
V4_SESSION_INDEX = """
CREATE INDEX memories_session ON memories (tenant, session_id, created_at);
"""

#: Scope terms in the full-text index. A keyword search ranked every row matching any
#: query word across all users of the file (30k rows for a 4-word question at 100k
#: records), then dropped the other users' rows: the largest cost of a search at 100k.
#: Each row now carries one term per part of its scope (``u``/``a``/``s`` + the hex of
#: tenant, 0x1f, id), and a scoped query intersects its words with the caller's terms
#: inside FTS5, so only the caller's rows are ranked. The column has weight 0 in
#: ``bm25``; it only adds its 3 terms to every row's length (a missing id gives a bare
#: ``u``/``a``/``s``: ``hex(NULL)`` is '' in SQLite; no query asks for those, as a filter
#: without that id adds no term).
V5_SCOPE_TERMS = (
    """
ALTER TABLE memories ADD COLUMN scope_terms TEXT GENERATED ALWAYS AS (
    coalesce('u' || hex(tenant || char(31) || user_id), '') || ' ' ||
    coalesce('a' || hex(tenant || char(31) || agent_id), '') || ' ' ||
    coalesce('s' || hex(tenant || char(31) || session_id), '')
) VIRTUAL;
DROP TRIGGER memories_ai;
DROP TRIGGER memories_ad;
DROP TRIGGER memories_au;
DROP TABLE memories_fts;
CREATE VIRTUAL TABLE memories_fts USING fts5(
    text, context, scope_terms, content='memories', content_rowid='rowid',
    tokenize='porter unicode61 remove_diacritics 2'
);
INSERT INTO memories_fts (memories_fts) VALUES ('rebuild');
"""
    + _FTS_TRIGGERS
)

#: Vectors by the model (and text recipe) that wrote them: on start the embedding worker
#: queues again those of another one (``requeue_stale_vectors``), an index lookup when
#: every vector is current.
V6_VECTOR_MODEL_INDEX = """
CREATE INDEX vectors_model ON vectors (model);
"""

#: Each record's count of tokens of its rendering, made when it was written, and what
#: counted it (tokenizer and rendering version, ``memory.record_tokens``): search reads
#: it instead of counting every hit again. NULL in older rows (counted when read).
#: The triggers on ``memories`` are created again after the ALTER, unchanged, the
#: full-text ones (which read the generated ``scope_terms``) first. Left as they were,
#: SQLite 3.40 reloading the schema after another connection changed it (the server's
#: key table, another process's migration) failed every INSERT, UPDATE and DELETE on
#: ``memories`` with "no such table: memories" (found by trial; other orders fail too).
V7_TOKEN_COUNT = (
    """
ALTER TABLE memories ADD COLUMN token_count INTEGER;
ALTER TABLE memories ADD COLUMN token_counter TEXT;
"""
    + _DROP_TRIGGERS
    + _FTS_TRIGGERS
    + _PENDING_TRIGGERS
    + _INDEX_LOG_TRIGGERS
    + _QUARANTINE_RETRY_TRIGGER
)

#: Claims on pending records, so that several processes on one file (``contextos serve
#: --workers 2``, a server and a CLI) embed each record once: a worker marks a batch as
#: its own until ``claimed_until`` (epoch seconds) in one short write transaction and
#: embeds it outside any lock; the others skip it. A claim whose holder died runs out
#: and the record is claimed again, so nothing is lost on a crash. 0 means unclaimed.
V8_PENDING_CLAIMS = """
ALTER TABLE pending_vectors ADD COLUMN claimed_by TEXT;
ALTER TABLE pending_vectors ADD COLUMN claimed_until REAL NOT NULL DEFAULT 0;
"""

#: Facts stored beside a conversation turn (``Memory(turn_facts=True)``) point to their
#: turn with ``metadata["fact_of"]`` (``memory.render.FACT_OF``); contextos before it
#: wrote ``metadata["source"]``, the key applications use for labels of their own
#: (``{"source": "chat"}``), so a store written then kept facts that search no longer
#: folded into their turn's hit, counted as turns, and survived their turn's update and
#: purge. This moves the key for exactly those facts: a ``source`` that is a string
#: naming another record of the same tenant and scope (user, agent, session; a fact is
#: its turn's record with new text, ``memory.infer.facts_beside``). An app's label is
#: never a record id (ids are UUIDs) and is left as it is. Malformed metadata (foreign
#: SQL) is skipped, not an error that would keep the store from opening.
#: Only ``metadata`` is set, so no trigger fires: the full-text ones watch text and
#: context, the index log text and times, the queue inserts, deletes and text. No vector
#: is queued again and none is needed: a fact's embedded text does not change (it is
#: not a turn, so it was and is embedded without expansion facts; ``memory.render``).
V9_FACT_OF = """
UPDATE memories
SET metadata = json_set(
    json_remove(metadata, '$.source'), '$.fact_of', json_extract(metadata, '$.source')
)
WHERE rowid IN (
    SELECT f.rowid
    FROM (
        SELECT rowid, tenant, user_id, agent_id, session_id,
               CASE WHEN json_valid(metadata) THEN metadata END AS meta
        FROM memories
    ) AS f
    JOIN memories AS t ON t.id = json_extract(f.meta, '$.source')
    WHERE json_type(f.meta, '$.source') = 'text' AND json_type(f.meta, '$.fact_of') IS NULL
    AND t.rowid != f.rowid AND t.tenant = f.tenant AND t.user_id IS f.user_id
    AND t.agent_id IS f.agent_id AND t.session_id IS f.session_id
);
"""

#: The in-process keyword index (``lexical_index``) follows changes through
#: ``index_log`` as the vector index does, and needs every change of what it indexes
#: there: a change of ``context`` (the log watched only text and times) and every
#: insert. (Finding new rows as ``rowid`` past the highest seen is not enough: SQLite
#: gives a new row max(rowid) + 1, so after deletes an insert can take a rowid that
#: was used, and freed, long before.) ``memories_vocab`` (FTS5's own table of how many
#: rows hold each term; no storage of its own) gave the keyword index BM25's row
#: counts in one lookup a word (no longer read since the statistics are the searched
#: scope's, kept in memory; left in place: it stores nothing). Every trigger on ``memories`` is created again in V7's
#: order (full-text ones first), the order SQLite 3.40 needs (see V7). The script can
#: run again on a file it already upgraded (no ALTER), as a test replaying V9 on a
#: newer file does.
V10_INDEX_LOG_INSERTS = (
    """
CREATE VIRTUAL TABLE IF NOT EXISTS memories_vocab USING fts5vocab(memories_fts, row);
DROP TRIGGER IF EXISTS index_log_insert;
"""
    + _DROP_TRIGGERS
    + _FTS_TRIGGERS
    + _PENDING_TRIGGERS
    + """CREATE TRIGGER index_log_delete AFTER DELETE ON memories BEGIN
    INSERT INTO index_log (mem_id) VALUES (old.id);
END;
CREATE TRIGGER index_log_update
AFTER UPDATE OF text, context, valid_from, valid_to, event_time ON memories BEGIN
    INSERT INTO index_log (mem_id) VALUES (new.id);
END;
CREATE TRIGGER index_log_insert AFTER INSERT ON memories BEGIN
    INSERT INTO index_log (mem_id) VALUES (new.id);
END;
"""
    + _QUARANTINE_RETRY_TRIGGER
)

#: V10 once shipped as another script (``index_log_rowids``: the rowid of each deleted
#: record, no trigger on insert) and was then rewritten under the same number, against
#: the rule of this module: a file made by that first V10 kept it, and a process that
#: stayed up never saw a row added after its keyword index loaded (its own adds
#: included) until it restarted. V11 runs today's V10 again (it is written to run
#: again) and drops the table the first one made, so every file ends alike.
V11_V10_AGAIN = V10_INDEX_LOG_INSERTS + "DROP TABLE IF EXISTS index_log_rowids;\n"

#: Ordered migrations: SQL scripts, each applied in one transaction.
#: The model (``render.vector_model``) whose embedding of a quarantined record failed:
#: another model tries it again (``requeue_stale_vectors``). Rows quarantined before
#: hold NULL and are tried once more by whatever model opens the file next.
V12_QUARANTINE_MODEL = "ALTER TABLE vector_quarantine ADD COLUMN model TEXT;\n"

#: Vectors by model and size (``length(vec)``: 4 bytes a dimension). The embedding worker
#: queues again vectors of another size than its embedder's too (``requeue_stale_vectors``):
#: an embedder whose size is a setting keeps its ``model_id`` when the size changes, and
#: the vectors of the old size were never searched again. Each part of that query is a
#: range of this index, so a store whose vectors are all current answers without reading
#: them. It replaces V6's index, on the model alone, which is a prefix of it. Written to
#: run again on a file it already upgraded (tests replay later migrations, as V9's says).
V13_VECTOR_SIZE_INDEX = """
CREATE INDEX IF NOT EXISTS vectors_model_size ON vectors (model, length(vec));
DROP INDEX IF EXISTS vectors_model;
"""

#: Each history event names its memory's session (``records.HISTORY_FIELDS``), so that a
#: ``forget`` of the session, or of its user, finds the history of a memory deleted
#: earlier without a purge: the assistant's reply in a user's chat names no user, and
#: after ``forget`` of the user its history still held the user's words (a review).
#: Rows written before hold NULL, and are not filled in: a memory still stored is erased
#: by its id, and one deleted from now on logs its DELETE with its session, which takes
#: the memory's whole history (``ErasedRows.history``); only a memory deleted before
#: (or by a process of the previous release) has no row that names its session (a purge
#: of its id erases it). Filling them in would have rewritten the rows of every stored
#: memory (PostgreSQL: 3.4 s per 133,000 rows, under the lock its ALTER TABLE holds on
#: ``history``, which every add waits for). ALTER ... ADD COLUMN changes no row;
#: ``history`` has no trigger (see V7).
V14_HISTORY_SESSION = """
ALTER TABLE history ADD COLUMN session_id TEXT;
CREATE INDEX history_session ON history (tenant, session_id);
"""

#: A user's, and an agent's, memories of one type, newest first: the read of a scope's
#: stored rules that every window makes (``engine.recall.scope_rules``: its current
#: ``procedural`` memories), and a listing of one type. Why: without them that read
#: walked the tenant's memories newest first until it had found the rules (15 ms a
#: window at 50,000 memories, growing with the tenant, an agent's window too); one
#: index on (tenant, type, time) read every rule of the tenant for one user's (8 ms at
#: 20,000 rules of 4,000 users, a review). With these each read is a seek. Written to
#: run again on a file it already upgraded.
V15_MEMORY_TYPE_INDEX = """
CREATE INDEX IF NOT EXISTS memories_type_user
    ON memories (tenant, memory_type, user_id, created_at);
CREATE INDEX IF NOT EXISTS memories_type_agent
    ON memories (tenant, memory_type, agent_id, created_at);
"""

#: V15 once shipped as another script (one index, ``memories_type`` on (tenant,
#: memory_type, created_at)) and was then rewritten under the same number, as V10 was
#: (see V11): a file made by that first V15 kept its index, and each window's read of a
#: user's rules walked every rule of the tenant (5.6 ms a window at 20,000 rules of
#: 4,000 users, against 0.09 ms with today's two; a review). V16 runs today's V15 again
#: (it is written to run again) and drops the first one's index, so every file ends
#: alike.
V16_V15_AGAIN = V15_MEMORY_TYPE_INDEX + "DROP INDEX IF EXISTS memories_type;\n"

#: The records V9 took for facts that are none: whose ``fact_of`` names a record that is
#: not their turn. A fact beside a turn is always its turn's record with new text
#: (``dataclasses.replace`` in ``memory.infer.facts_beside``, as in the release that
#: first wrote them under ``source``): it is in a session (only a session's turns take
#: facts) and shares its turn's tenant, user, agent, session and ``created_at`` to the
#: last digit. V9 asked only for the scope, so an app's memory whose ``source`` held the
#: id of another memory of the same user (a note derived from it) became a fact of it:
#: deleted with it, folded into its hit by search, and beyond the app's repair
#: (``fact_of`` is reserved). So a record outside a session, or one whose ``fact_of``
#: names a record of its tenant with another scope or ``created_at``, is none. Left as
#: they are: a record in a session whose ``fact_of`` names no record of its tenant
#: (there is no turn to test it against), and one that holds a ``source`` too (the app
#: set one again after V9: moving ``fact_of`` back would overwrite it; it stays a fact).
#: A ``fact_of`` an app stored itself, before contextos used the key, is judged alike.
#: Malformed metadata is skipped, as in V9.
_V17_NOT_FACTS = """FROM (
    SELECT rowid, tenant, user_id, agent_id, session_id, created_at,
           CASE WHEN json_valid(metadata) THEN metadata END AS meta
    FROM memories
) AS f
WHERE json_type(f.meta, '$.fact_of') = 'text' AND json_type(f.meta, '$.source') IS NULL
AND (f.session_id IS NULL OR EXISTS (
    SELECT 1 FROM memories AS t
    WHERE t.id = json_extract(f.meta, '$.fact_of') AND t.tenant = f.tenant
    AND (t.created_at != f.created_at OR t.user_id IS NOT f.user_id
         OR t.agent_id IS NOT f.agent_id OR t.session_id IS NOT f.session_id)
))"""

#: Puts back ``metadata["source"]`` on the records V9 took for facts and are none
#: (``_V17_NOT_FACTS``, which says how they are told apart), as V9 moved it, in reverse.
#: Only ``metadata`` is set, so no trigger fires (see V9). A vector is queued again
#: only where the record's embedded text changes: a session's message (``role``, not
#: written by ``add(infer=True)``) is a conversation turn again, embedded with its facts
#: (``memory.expansion``), where as a fact its vector was made bare; that vector serves
#: search until the new one is written, and a claim on it is ended (as an edit ends
#: one). A record without a vector is queued already, or quarantined (tried again as
#: ever). Written to run again: a second run finds nothing to move.
V17_SOURCE_AGAIN = f"""
INSERT INTO pending_vectors (mem_rowid)
SELECT f.rowid {_V17_NOT_FACTS}
AND f.session_id IS NOT NULL AND json_type(f.meta, '$.role') IS NOT NULL
AND json_type(f.meta, '$.inferred') IS NULL
AND EXISTS (SELECT 1 FROM vectors AS v WHERE v.mem_rowid = f.rowid)
ON CONFLICT (mem_rowid) DO UPDATE SET claimed_by = NULL, claimed_until = 0;
UPDATE memories
SET metadata = json_set(
    json_remove(metadata, '$.fact_of'), '$.source', json_extract(metadata, '$.fact_of')
)
WHERE rowid IN (SELECT f.rowid {_V17_NOT_FACTS});
"""

#: A user's memories newest first: the listing (``Memory.get_all``, its pages, an agent
#: owner's blocks and files, an export) of a user, of a user and an agent, and of an
#: agent's own memories of no user (``Filter.no_user``: ``user_id IS NULL``). Why: for
#: their ORDER BY the planner walked the tenant's ``memories_created`` index and tested
#: each record's scope, so one user's page read every newer record of every other
#: user: 13-21 ms a ``get_all`` of a user with old memories at 60,000 memories of 600
#: users, growing with the tenant, against 0.01-0.1 ms by this index
#: (``/work/notes/s58/plan/list_plan.py``). Its cost: about 0.05 ms an add (p50 0.83 ->
#: 0.87-0.90 ms, hash embedder, 10,000 memories). Written to run again.
V18_USER_TIME_INDEX = """
CREATE INDEX IF NOT EXISTS memories_user_time ON memories (tenant, user_id, created_at);
"""

MIGRATIONS: tuple[str, ...] = (
    V1_INITIAL,
    V2_PENDING_VECTORS,
    V3_INDEX_LOG_AND_QUARANTINE,
    V4_SESSION_INDEX,
    V5_SCOPE_TERMS,
    V6_VECTOR_MODEL_INDEX,
    V7_TOKEN_COUNT,
    V8_PENDING_CLAIMS,
    V9_FACT_OF,
    V10_INDEX_LOG_INSERTS,
    V11_V10_AGAIN,
    V12_QUARANTINE_MODEL,
    V13_VECTOR_SIZE_INDEX,
    V14_HISTORY_SESSION,
    V15_MEMORY_TYPE_INDEX,
    V16_V15_AGAIN,
    V17_SOURCE_AGAIN,
    V18_USER_TIME_INDEX,
)


#: The oldest schema version this code reads without migrating it: the migrations after
#: it only add indexes (V18), which no query needs. Why: a file this process may not
#: write, at version 17, was refused as "read-only and needs a schema upgrade" although
#: it had every table and column (a review, s58).
READABLE_FROM = 17


def newer_schema(version: int) -> Exception:
    """The error for a database a later contextos migrated (a rollback opening it)."""
    from contextos.errors import StoreError

    return StoreError(
        f"database schema version {version} is newer than this contextos "
        f"understands ({len(MIGRATIONS)}); upgrade contextos"
    )


def _statements(script: str) -> Iterator[str]:
    """Split a script into statements (trigger bodies included) with SQLite's own parser."""
    buf = ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            yield buf
            buf = ""
    if buf.strip():
        yield buf


def migrate(db: sqlite3.Connection) -> int:
    """Bring ``db`` to the newest schema; returns the version it ends at."""
    (version,) = db.execute("PRAGMA user_version").fetchone()
    if version == len(MIGRATIONS):
        return int(version)
    # Take the write lock first, then re-read: another process may have migrated meanwhile.
    db.execute("BEGIN IMMEDIATE")
    try:
        (version,) = db.execute("PRAGMA user_version").fetchone()
        if version > len(MIGRATIONS):
            raise newer_schema(version)
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            for statement in _statements(script):
                db.execute(statement)
            db.execute(f"PRAGMA user_version = {number}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return len(MIGRATIONS)
