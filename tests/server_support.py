"""Shared helpers for the server tests: an in-process app and keys for tenants."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")

from fastapi.testclient import TestClient  # noqa: E402

from contextos.server.app import ServerConfig, close_app, create_app  # noqa: E402
from contextos.server.ratelimit import RateLimit  # noqa: E402
from contextos.testing.embedders import HashEmbedder  # noqa: E402

ADMIN_KEY = "test-admin-key-0123456789"


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@contextmanager
def app_client(db: Path | str, **config: Any) -> Iterator[TestClient]:
    """A TestClient over a fresh app on ``db`` (HashEmbedder, admin key, no rate limit
    and no throttle on failed authentication unless the test sets them)."""
    config.setdefault("admin_key", ADMIN_KEY)
    config.setdefault("rate_limit", RateLimit(rate=0))
    config.setdefault("auth_failures", RateLimit(rate=0))
    app = create_app(ServerConfig(db=str(db), embedder="hash", **config), embedder=HashEmbedder())
    try:
        with TestClient(app) as client:
            yield client
    finally:
        close_app(app)


def issue_key(client: TestClient, tenant: str) -> str:
    resp = client.post("/v1/keys", json={"tenant": tenant}, headers=auth(ADMIN_KEY))
    assert resp.status_code == 201, resp.text
    return str(resp.json()["key"])


def assert_error(resp: Any, status: int, kind: str | None = None) -> dict[str, str]:
    """The response is the one JSON error shape with this status (and type)."""
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"type", "message"}
    assert body["error"]["message"]
    if kind is not None:
        assert body["error"]["type"] == kind
    return dict(body["error"])


#: Both stores: a SQLite file, and a PostgreSQL schema when the test server runs.
STORES = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@contextmanager
def database(kind: str, tmp: Path) -> Iterator[str]:
    """A fresh database of ``kind`` ("sqlite" or "postgres"): a file under ``tmp``, or a
    new PostgreSQL schema (dropped afterwards; skips when no test PostgreSQL runs)."""
    if kind == "sqlite":
        yield str(tmp / "server.db")
        return
    import uuid

    from pg_support import connect, pg_url, with_options

    url = pg_url()
    schema = f"srv_{uuid.uuid4().hex[:12]}"
    with connect(url) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield with_options(url, f"-c search_path={schema},public")
    finally:
        with connect(url) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
