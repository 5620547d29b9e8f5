"""Crash safety: `contextos serve` killed with SIGKILL mid-stream loses no acknowledged write.

A write is acknowledged when the client got its 201. Writers stream adds and
session-turn appends from several threads; the server is killed at an
arbitrary moment with writes in flight, restarted on the same database, and
every acknowledged record and turn must be there, intact.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

from contextos.bench.serve import running_server  # noqa: E402
from contextos.server.keys import KeyStore  # noqa: E402
from pg_support import fresh_schema  # noqa: E402

SERVER_FLAGS = ("--embedder", "hash", "--rate", "0", "--log-level", "error")
WRITERS = 4


class Acked:
    """What the server acknowledged, recorded by the writer threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.records: dict[str, str] = {}  # id -> text
        self.turns: dict[str, list[str]] = {}  # session -> contents in ack order

    def count(self) -> int:
        with self.lock:
            return len(self.records) + sum(len(t) for t in self.turns.values())


def _writer(url: str, key: str, n: int, acked: Acked, stop: threading.Event) -> None:
    session = f"sess-{n}"
    with httpx.Client(
        base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=10
    ) as client:
        for i in range(100_000):
            if stop.is_set():
                return
            text = f"writer {n} record {i} {uuid.uuid4().hex}"
            try:
                if i % 2 == 0:
                    resp = client.post(
                        "/v1/memories", json={"messages": text, "user_id": f"user{n}"}
                    )
                else:
                    resp = client.post(
                        f"/v1/sessions/{session}/turns",
                        json={
                            "messages": [{"role": "user", "content": text}],
                            "user_id": f"user{n}",
                        },
                    )
            except httpx.TransportError:
                return  # the server is gone: this write was never acknowledged
            if resp.status_code != 201:
                continue
            with acked.lock:
                if i % 2 == 0:
                    acked.records[resp.json()["results"][0]["id"]] = text
                else:
                    acked.turns.setdefault(session, []).append(text)


def _stream_then_kill(db: str, key: str, *, min_acked: int = 150) -> Acked:
    acked, stop = Acked(), threading.Event()
    with running_server(db, *SERVER_FLAGS) as (url, proc):
        threads = [
            threading.Thread(target=_writer, args=(url, key, n, acked, stop))
            for n in range(WRITERS)
        ]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 20
        while acked.count() < min_acked and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)  # writes are in flight right now
        proc.wait(timeout=10)
        stop.set()
        for t in threads:
            t.join(timeout=20)
    assert proc.returncode == -signal.SIGKILL
    assert acked.count() >= min_acked
    return acked


def _verify(db: str, key: str, acked: Acked) -> None:
    with (
        running_server(db, *SERVER_FLAGS) as (url, _proc),
        httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30
        ) as client,
    ):
        missing = []
        for memory_id, text in acked.records.items():
            resp = client.get(f"/v1/memories/{memory_id}")
            if resp.status_code != 200 or resp.json()["text"] != text:
                missing.append((memory_id, resp.status_code))
        assert missing == []
        for session, texts in acked.turns.items():
            stored = client.get(f"/v1/sessions/{session}/turns", params={"limit": 1000}).json()[
                "results"
            ]
            contents = [t["content"] for t in stored]
            assert [t["seq"] for t in stored] == list(range(len(stored)))  # no gaps
            # Every acknowledged turn is there, in order (an unacknowledged last one may be too).
            assert contents[: len(texts)] == texts
            assert len(contents) - len(texts) <= 1


def _key(db: str) -> str:
    with KeyStore(db) as store:
        return store.create("crash").secret


def test_sqlite_kill_9_keeps_every_acknowledged_write(tmp_path: Path) -> None:
    db = str(tmp_path / "crash.db")
    key = _key(db)
    acked = _stream_then_kill(db, key)
    # The file is a consistent database straight after the crash (WAL replays on open).
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    conn.close()
    _verify(db, key, acked)


@pytest.fixture
def pg_db() -> Iterator[str]:
    with fresh_schema("crash") as (url, _schema):
        yield url


@pytest.mark.postgres
def test_postgres_kill_9_keeps_every_acknowledged_write(pg_db: str) -> None:
    key = _key(pg_db)
    acked = _stream_then_kill(pg_db, key)
    _verify(pg_db, key, acked)
