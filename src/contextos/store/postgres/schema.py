"""PostgreSQL schema migrations, applied in order and recorded in ``schema_version``.

Each migration is a function of a cursor, run in its own transaction under an
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

from collections.abc import Callable
from typing import Any

from contextos.errors import StoreError

#: Arbitrary constant naming the advisory lock that serialises migrations and index builds.
LOCK_KEY = 0x636F6E74  # "cont"

#: The text search configuration behind ``memories.tsv`` (stemming + English stopwords).
TS_CONFIG = "english"


def _v1_initial(cur: Any) -> None:
    cur.execute(
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
                setweight(to_tsvector('{TS_CONFIG}'::regconfig, text), 'A') ||
                setweight(to_tsvector('{TS_CONFIG}'::regconfig, context), 'B')
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

        CREATE TABLE vectors (
            tenant    text NOT NULL,
            memory_id text NOT NULL,
            dim       integer NOT NULL,
            model     text NOT NULL,
            vec       vector NOT NULL,
            PRIMARY KEY (tenant, memory_id),
            FOREIGN KEY (tenant, memory_id) REFERENCES memories (tenant, id) ON DELETE CASCADE
        );

        CREATE TABLE pending_vectors (
            tenant    text NOT NULL,
            memory_id text NOT NULL,
            PRIMARY KEY (tenant, memory_id),
            FOREIGN KEY (tenant, memory_id) REFERENCES memories (tenant, id) ON DELETE CASCADE
        );

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

        CREATE TABLE turns (
            tenant       text NOT NULL,
            session_id   text NOT NULL,
            seq          integer NOT NULL,
            user_id      text,
            agent_id     text,
            role         text NOT NULL,
            content      text NOT NULL,
            name         text,
            tool_call_id text,
            tool_calls   jsonb NOT NULL DEFAULT '[]',
            metadata     jsonb NOT NULL DEFAULT '{{}}',
            tokens       integer NOT NULL,
            created_at   timestamptz NOT NULL,
            PRIMARY KEY (tenant, session_id, seq)
        );
        CREATE INDEX turns_user ON turns (tenant, user_id);

        CREATE TABLE session_meta (
            tenant     text NOT NULL,
            session_id text NOT NULL,
            user_id    text,
            agent_id   text,
            meta       jsonb NOT NULL DEFAULT '{{}}',
            updated_at timestamptz NOT NULL,
            PRIMARY KEY (tenant, session_id)
        );
        CREATE INDEX session_meta_user ON session_meta (tenant, user_id, agent_id);
        """
    )


def _v2_quarantine(cur: Any) -> None:
    """Records whose embedding failed, with the error, out of the queue (see SQLite's V3)."""
    cur.execute(
        """
        CREATE TABLE vector_quarantine (
            tenant    text NOT NULL,
            memory_id text NOT NULL,
            error     text NOT NULL,
            at        timestamptz NOT NULL,
            PRIMARY KEY (tenant, memory_id),
            FOREIGN KEY (tenant, memory_id) REFERENCES memories (tenant, id) ON DELETE CASCADE
        );
        """
    )


def _v3_session_index(cur: Any) -> None:
    """A session's records by time, for the latest-record read of every add in a
    session (see SQLite's V4): the scope index serves only tenant + user there."""
    cur.execute(
        "CREATE INDEX memories_session ON memories (tenant, session_id, created_at DESC, seq DESC)"
    )


def _v4_vector_model_index(cur: Any) -> None:
    """Vectors by the model and text recipe that wrote them (see SQLite's V6)."""
    cur.execute("CREATE INDEX vectors_model ON vectors (model)")


MIGRATIONS: tuple[Callable[[Any], None], ...] = (
    _v1_initial,
    _v2_quarantine,
    _v3_session_index,
    _v4_vector_model_index,
)


def migrate(conn: Any) -> int:
    """Bring the database behind ``conn`` (a psycopg connection) to the newest schema."""
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
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
        for number, step in enumerate(MIGRATIONS[version:], start=version + 1):
            step(cur)
            cur.execute("INSERT INTO schema_version (version) VALUES (%s)", (number,))
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
