"""An append over HTTP that its client gave up on, retried safely (review s57).

A client's append timed out while another process held the SQLite file's write lock (a
backup, ``contextos vacuum``, a ``sqlite3`` shell); the write went on once the lock was
free and landed after its client had gone, and the retry landed too: the turn was logged
twice, and every later window showed it twice. ``newest`` (the seq the log's last turn
must have) makes the retry a compare-and-set: the second one is a 409 and changes
nothing.

A real uvicorn server on loopback, a real SQLite file, a real second connection holding
its write lock.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import httpx

from server_support import auth
from ui_support import live_server

SAID = [{"role": "user", "content": "Please pay invoice 42 now."}]


def test_a_retry_with_newest_after_a_timed_out_append_logs_the_turn_once(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    with live_server(db) as server:
        key = server.issue_key("acme")
        turns = "/v1/sessions/chat/turns"
        first = server.http.post(
            turns, json={"messages": [{"role": "user", "content": "hello"}]}, headers=auth(key)
        )
        assert first.status_code == 201, first.text
        body = {"messages": SAID, "newest": 0}
        holder = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
        holder.execute("BEGIN IMMEDIATE")  # another process's write, for 3 s
        threading.Timer(3.0, holder.rollback).start()
        try:
            server.http.post(turns, json=body, headers=auth(key), timeout=1.0)
            raise AssertionError("the append answered while the store was locked")
        except httpx.ReadTimeout:
            pass  # the client gives up; its write waits for the lock
        time.sleep(4.0)  # the lock is free: the first try has landed
        retry = server.http.post(turns, json=body, headers=auth(key))
        log = server.call("GET", turns, key)["results"]
        stale = server.http.post(turns, json={**body, "newest": True}, headers=auth(key))
        holder.close()
    assert retry.status_code == 409, retry.text
    assert "its last turn is 1, not 0" in retry.json()["error"]["message"]
    assert [t["content"] for t in log] == ["hello", SAID[0]["content"]]
    assert stale.status_code == 422, stale.text
