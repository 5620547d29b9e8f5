"""Shared helpers for the server tests: an in-process app and keys for tenants."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")

from fastapi.testclient import TestClient  # noqa: E402

from contextos.embed import Embedder  # noqa: E402
from contextos.server.app import ServerConfig, close_app, create_app  # noqa: E402
from contextos.server.ratelimit import RateLimit  # noqa: E402
from contextos.testing.embedders import HashEmbedder  # noqa: E402

ADMIN_KEY = "test-admin-key-0123456789"

#: An app client and the authorization headers of one tenant's key.
Tenant = tuple[TestClient, dict[str, str]]


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@contextmanager
def app_client(
    db: Path | str, *, embedder: Embedder | None = None, **config: Any
) -> Iterator[TestClient]:
    """A TestClient over a fresh app on ``db`` (``embedder``, a HashEmbedder by default;
    admin key, no rate limit and no throttle on failed authentication unless the test
    sets them)."""
    config.setdefault("admin_key", ADMIN_KEY)
    config.setdefault("rate_limit", RateLimit(rate=0))
    config.setdefault("auth_failures", RateLimit(rate=0))
    app = create_app(
        ServerConfig(db=str(db), embedder="hash", **config), embedder=embedder or HashEmbedder()
    )
    try:
        with TestClient(app) as client:
            yield client
    finally:
        close_app(app)


def chat(*texts: str) -> list[dict[str, str]]:
    """The wire form of a conversation: ``texts`` alternate user, assistant, user, ..."""
    return [{"role": ("user", "assistant")[i % 2], "content": text} for i, text in enumerate(texts)]


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


def assert_rpc_refusal(resp: Any, status: int, kind: str) -> str:
    """The response is a refusal of the gate or the body limit under ``/mcp``: this HTTP
    status, and a JSON-RPC error (code -32000, no id: the body was not read) whose
    message starts with the refusal's type, which an MCP client shows; its message."""
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"jsonrpc", "id", "error"} and body["id"] is None
    assert body["jsonrpc"] == "2.0" and body["error"]["code"] == -32000
    message = str(body["error"]["message"])
    assert message.startswith(f"{kind}: ") and len(message) > len(kind) + 2
    return message


#: Both stores: a SQLite file, and a PostgreSQL schema when the test server runs.
STORES = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@contextmanager
def database(kind: str, tmp: Path, *, pg_options: str = "") -> Iterator[str]:
    """A fresh database of ``kind`` ("sqlite" or "postgres"): a file under ``tmp``, or a
    new PostgreSQL schema (dropped afterwards; skips when no test PostgreSQL runs),
    its sessions started with ``pg_options`` (e.g. ``-c lock_timeout=500``)."""
    if kind == "sqlite":
        yield str(tmp / "server.db")
        return
    from pg_support import fresh_schema

    with fresh_schema("srv", pg_options) as (url, _schema):
        yield url


LOCKER = (
    "import sqlite3, sys; c = sqlite3.connect(sys.argv[1], isolation_level=None); "
    "c.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); sys.stdin.read()"
)


@contextmanager
def store_locked(db: str) -> Iterator[None]:
    """Another process holds ``db``'s lock while inside: a SQLite write lock
    (``BEGIN EXCLUSIVE``), or PostgreSQL's ACCESS EXCLUSIVE lock on the memories table
    (pair with ``pg_options="-c lock_timeout=..."`` so the server gives up quickly)."""
    if "://" in db:
        import psycopg

        conn = psycopg.connect(db)  # the URL's options carry the schema's search_path
        try:
            conn.execute("LOCK TABLE memories IN ACCESS EXCLUSIVE MODE")
            yield
        finally:
            conn.rollback()
            conn.close()
        return
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-c", LOCKER, db], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        assert proc.stdout.readline().strip() == "locked"
        yield
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()
