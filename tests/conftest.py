"""Shared fixtures: real stores (SQLite in tmp_path; PostgreSQL when make test started one)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest

from contextos.memory import Memory
from contextos.store.base import Store
from contextos.store.sqlite import SQLiteStore
from contextos.testing.embedders import HashEmbedder

REPO = Path(__file__).resolve().parent.parent
LOCOMO = REPO.parent / "shared" / "data" / "locomo" / "locomo-dev.json"
LITM_DIR = REPO.parent / "shared" / "data" / "lost-in-the-middle"


def postgres_url() -> str | None:
    """The URL of the PostgreSQL that scripts/postgres.sh started, if any."""
    return os.environ.get("CONTEXTOS_TEST_PG_URL") or None


def postgres_skip_reason() -> str:
    from pg_support import skip_reason

    return "PostgreSQL unavailable: " + skip_reason()


@contextmanager
def _make_sqlite(tmp_path: Path) -> Iterator[Store]:
    s = SQLiteStore(tmp_path / "contract.db")
    try:
        yield s
    finally:
        s.close()


def _make_postgres(tmp_path: Path) -> AbstractContextManager[Store]:
    """A PostgresStore in a fresh schema, dropped after the test (skips with the reason
    when scripts/postgres.sh could not start a server)."""
    from pg_support import postgres_store

    return postgres_store()


@pytest.fixture
def memory(tmp_path: Path) -> Iterator[Memory]:
    """A Memory on a fresh SQLite file with the hash embedder, vectors written inline
    (no worker thread), closed after the test; a module that needs another defines its own."""
    with Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as m:
        yield m


STORE_FACTORIES: dict[str, Callable[[Path], AbstractContextManager[Store]]] = {
    "sqlite": _make_sqlite,
    "postgres": _make_postgres,
}


@pytest.fixture(params=sorted(STORE_FACTORIES))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """Every Store backend, fresh for each test."""
    with STORE_FACTORIES[request.param](tmp_path) as s:
        yield s


@pytest.fixture
def embedder() -> HashEmbedder:
    return HashEmbedder()


@pytest.fixture
def wrap_memory(memory: Memory) -> Iterator[Memory]:
    """``memory`` for wrapped-client tests: closed only after any wrapper's background
    commit has finished writing to it."""
    yield memory
    for thread in threading.enumerate():
        if thread.name == "contextos-commit":
            thread.join()


@pytest.fixture
def locomo_path() -> Path:
    if not LOCOMO.exists():
        pytest.skip(f"LoCoMo data not found at {LOCOMO}")
    return LOCOMO
