"""Table definitions written once and rendered as each store's ``CREATE TABLE``.

A session's log (``turns``) and its metadata row (``session_meta``) have the same
columns in SQLite and PostgreSQL; the dialects differ only in the SQL type of a
time (REAL epoch seconds / timestamptz) and of a JSON value (TEXT / jsonb). They
are defined here once, so the two stores cannot drift apart and the column order
that :mod:`contextos.store.records` inserts is the order the table was created with.

Rendering is frozen: a migration already applied to somebody's database must not
change, so ``tests/test_migrations_frozen.py`` pins the SQL of every migration in
both dialects, and an edit here that would alter an applied one fails there.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

#: A column's kind; each dialect maps it to its own SQL type.
Kind = Literal["text", "int", "time", "json", "vector"]

SQLITE_TYPES: Mapping[Kind, str] = {
    "text": "TEXT",
    "int": "INTEGER",
    "time": "REAL",
    "json": "TEXT",
}
POSTGRES_TYPES: Mapping[Kind, str] = {
    "text": "text",
    "int": "integer",
    "time": "timestamptz",
    "json": "jsonb",
    "vector": "vector",
}


@dataclass(frozen=True)
class Column:
    """One column: its name, its kind and what follows the type (``NOT NULL``, a default)."""

    name: str
    kind: Kind
    rule: str = ""


@dataclass(frozen=True)
class Table:
    """A table's columns in order, then its key and foreign-key clauses."""

    name: str
    columns: tuple[Column, ...]
    keys: tuple[str, ...] = ()

    def column_names(self) -> tuple[str, ...]:
        """The column names in creation order."""
        return tuple(c.name for c in self.columns)

    def columns_named(self, *names: str) -> tuple[Column, ...]:
        """The columns called ``names``, in that order: a table that repeats another's
        columns takes them from it instead of restating them."""
        by_name = {c.name: c for c in self.columns}
        return tuple(by_name[n] for n in names)

    def create(self, types: Mapping[Kind, str], *, indent: str = "        ") -> str:
        """``CREATE TABLE`` in the dialect of ``types``, the names aligned in one column."""
        width = max(len(c.name) for c in self.columns)
        lines = [
            f"{indent}    {c.name:<{width}} {types[c.kind]} {c.rule}".rstrip() for c in self.columns
        ]
        lines += [f"{indent}    {key}" for key in self.keys]
        return f"{indent}CREATE TABLE {self.name} (\n" + ",\n".join(lines) + f"\n{indent});"


TURNS = Table(
    "turns",
    (
        Column("tenant", "text", "NOT NULL"),
        Column("session_id", "text", "NOT NULL"),
        Column("seq", "int", "NOT NULL"),
        Column("user_id", "text"),
        Column("agent_id", "text"),
        Column("role", "text", "NOT NULL"),
        Column("content", "text", "NOT NULL"),
        Column("name", "text"),
        Column("tool_call_id", "text"),
        Column("tool_calls", "json", "NOT NULL DEFAULT '[]'"),
        Column("metadata", "json", "NOT NULL DEFAULT '{}'"),
        Column("tokens", "int", "NOT NULL"),
        Column("created_at", "time", "NOT NULL"),
    ),
    ("PRIMARY KEY (tenant, session_id, seq)",),
)

#: A session's row holds the scope of its turns, in the same columns.
SESSION_META = Table(
    "session_meta",
    (
        *TURNS.columns_named("tenant", "session_id", "user_id", "agent_id"),
        Column("meta", "json", "NOT NULL DEFAULT '{}'"),
        Column("updated_at", "time", "NOT NULL"),
    ),
    ("PRIMARY KEY (tenant, session_id)",),
)


def keyed_by_memory(name: str, *columns: Column) -> Table:
    """A PostgreSQL side table of one row per memory (its vector, its place in the
    embedding queue, its quarantine): keyed by (tenant, memory_id), and gone with the
    memory (``ON DELETE CASCADE``)."""
    return Table(
        name,
        (Column("tenant", "text", "NOT NULL"), Column("memory_id", "text", "NOT NULL"), *columns),
        (
            "PRIMARY KEY (tenant, memory_id)",
            "FOREIGN KEY (tenant, memory_id) REFERENCES memories (tenant, id) ON DELETE CASCADE",
        ),
    )
