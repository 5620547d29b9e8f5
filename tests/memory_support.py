"""Memories that fail as a store or an embedder in trouble makes them fail, for the tests
of what a caller does then (an offload's archive, its hold), and the opening of a child
process's memory on the storage a test made."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from contextos import Memory
from contextos.testing.embedders import HashEmbedder


class FailsOnce:
    """A Memory whose first ``add`` fails (the store busy, the embedder down); every
    other call, and every later ``add``, is the memory's own."""

    def __init__(self, memory: Memory) -> None:
        self.memory, self.failed = memory, False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.memory, name)

    def add(self, *args: Any, **kwargs: Any) -> Any:
        if not self.failed:
            self.failed = True
            raise RuntimeError("the store is busy")
        return self.memory.add(*args, **kwargs)


#: Source for a child process (``python -c``): opens ``memory`` on the storage named by
#: the variables ``kind`` ("sqlite" or "postgres"), ``where`` (a file, or a PostgreSQL URL)
#: and ``schema``, with the hash embedder and vectors written inline.
OPEN_MEMORY_IN_CHILD = """
from contextos.memory import Memory
from contextos.testing.embedders import HashEmbedder

if kind == "sqlite":
    memory = Memory(where, embedder=HashEmbedder(), background_embedding=False)
else:
    from contextos.store.postgres import PostgresStore

    store = PostgresStore(where, schema=schema)
    memory = Memory(store=store, embedder=HashEmbedder(), background_embedding=False)
"""


@contextmanager
def child_storage(kind: str, tmp_path: Path) -> Iterator[tuple[Memory, list[str]]]:
    """A Memory on a real SQLite file or a fresh PostgreSQL schema, and the arguments
    (``kind``, ``where``, ``schema``) that open the same storage in a child process
    (:data:`OPEN_MEMORY_IN_CHILD`)."""
    if kind == "sqlite":
        db = tmp_path / "m.db"
        with Memory(db, embedder=HashEmbedder(), background_embedding=False) as memory:
            yield memory, ["sqlite", str(db), ""]
        return
    from pg_support import pg_url, postgres_store

    with postgres_store() as store:
        memory = Memory(store=store, embedder=HashEmbedder(), background_embedding=False)
        try:
            yield memory, ["postgres", pg_url(), store.schema]
        finally:
            memory.close()
