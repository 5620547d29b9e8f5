"""Shared fixtures: real stores (SQLite in tmp_path; PostgreSQL when make test started one)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

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
    reason_file = REPO / ".pgdata.skip-reason"
    if reason_file.exists():
        return "PostgreSQL did not start: " + reason_file.read_text().strip()
    return "PostgreSQL not started (run the suite with `make test`, which starts it)"


def _make_sqlite(tmp_path: Path) -> Store:
    return SQLiteStore(tmp_path / "contract.db")


def _make_postgres(tmp_path: Path) -> Store:
    url = postgres_url()
    if url is None:
        pytest.skip(postgres_skip_reason())
    from contextos.store.postgres import PostgresStore

    store = PostgresStore(url)
    store.reset_for_tests()  # type: ignore[attr-defined]
    return store


STORE_FACTORIES = {"sqlite": _make_sqlite, "postgres": _make_postgres}


@pytest.fixture(params=sorted(STORE_FACTORIES))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """Every Store backend, fresh for each test."""
    s = STORE_FACTORIES[request.param](tmp_path)
    yield s
    s.close()


@pytest.fixture
def embedder() -> HashEmbedder:
    return HashEmbedder()


@pytest.fixture
def locomo_path() -> Path:
    if not LOCOMO.exists():
        pytest.skip(f"LoCoMo data not found at {LOCOMO}")
    return LOCOMO
