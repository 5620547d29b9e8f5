"""Writes held up by another process's SQLite write lock: how long each waits, and that
reads stay answerable meanwhile.

A review found that writes queued behind another process's lock each waited the whole
busy timeout in turn (one after another on the store's in-process lock, then each its own
``BEGIN IMMEDIATE`` wait): the k-th was answered after k times the timeout. And in
``contextos serve`` the waiting writes took every thread of the pool all routes share,
so a plain ``GET /v1/memories`` waited for the whole lock hold. Now a write gives up
about one busy timeout after it reaches the store, however many writes of the process
wait with it, and the server's writes wait on threads of their own
(``server/write_threads.py``). Real files, another real process holding the lock, and
the real ``contextos serve`` on loopback.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from contextos.memory import Memory
from contextos.server.keys import KeyStore
from contextos.store.sqlite import SQLiteStore
from contextos.testing.embedders import HashEmbedder

pytest.importorskip("httpx")

from contextos.bench.serve import running_server  # noqa: E402

# They assert on time: run alone, after the rest (scripts/test.sh).
pytestmark = pytest.mark.serial

#: Another process: takes the file's write lock and holds it until its stdin closes.
HOLDER = (
    "import sqlite3, sys; c = sqlite3.connect(sys.argv[1], isolation_level=None); "
    "c.execute('BEGIN IMMEDIATE'); print('held', flush=True); sys.stdin.read(); "
    "c.execute('ROLLBACK')"
)


@contextmanager
def lock_held(db: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holds ``db``'s write lock inside (until it is told to let go:
    its stdin closed)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(db)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        assert proc.stdout.readline().strip() == "held"
        yield proc
    finally:
        let_go(proc)
        proc.wait(timeout=30)
        proc.stdout.close()


def let_go(holder: subprocess.Popen[str]) -> None:
    assert holder.stdin is not None
    if not holder.stdin.closed:
        holder.stdin.close()


def concurrently(
    n: int, call: Callable[[int], object], *, apart_s: float = 0.0
) -> list[tuple[float, str]]:
    """``call(i)`` on ``n`` threads, the i-th begun ``i * apart_s`` after the first:
    each one's seconds and outcome ("ok" or the exception's type), shortest first."""
    out: list[tuple[float, str]] = []
    start = threading.Barrier(n)

    def one(i: int) -> None:
        start.wait()
        time.sleep(i * apart_s)
        began = time.monotonic()
        try:
            call(i)
            outcome = "ok"
        except Exception as exc:  # noqa: BLE001 - the outcome is what is tested
            outcome = type(exc).__name__
        out.append((time.monotonic() - began, outcome))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return sorted(out)


BUSY_MS = 700


def test_each_queued_write_gives_up_one_busy_timeout_after_it_arrived(tmp_path: Path) -> None:
    """Six writes of one process, begun 0.15 s apart, behind another process's lock:
    each gives up about one busy timeout (0.7 s) after it began. Each had a timeout of
    its own: the sixth gave up after 4.2 s; and with only the wait for the in-process
    lock bounded, a write that got that lock late still waited a whole timeout more
    for the file's (1.3 s)."""
    db = tmp_path / "w.db"
    store = SQLiteStore(db, busy_timeout_ms=BUSY_MS)
    with Memory(store=store, embedder=HashEmbedder(), background_embedding=False) as memory:
        memory.add("before the lock", user_id="u")
        with lock_held(db):
            waits = concurrently(6, lambda i: memory.add(f"during {i}", user_id="u"), apart_s=0.15)
        assert [outcome for _, outcome in waits] == ["StoreError"] * 6, waits
        assert waits[-1][0] < BUSY_MS / 1000 + 0.4, waits  # each about 0.7 s
        assert waits[0][0] > BUSY_MS / 1000 - 0.2, waits  # none gave up early
        memory.add("after the lock", user_id="u")  # the lock gone, writes go on
        assert len(memory.get_all(user_id="u")) == 2


def test_queued_writes_still_wait_for_a_lock_let_go_in_time(tmp_path: Path) -> None:
    """The shared budget does not cut short a wait that ends in time: six writes behind
    a lock held for 0.5 s all succeed with a 5 s busy timeout."""
    db = tmp_path / "w.db"
    store = SQLiteStore(db, busy_timeout_ms=5000)
    with Memory(store=store, embedder=HashEmbedder(), background_embedding=False) as memory:
        memory.add("before the lock", user_id="u")
        with lock_held(db) as holder:
            threading.Timer(0.5, let_go, args=(holder,)).start()
            waits = concurrently(6, lambda i: memory.add(f"during {i}", user_id="u"))
        assert [outcome for _, outcome in waits] == ["ok"] * 6, waits
        assert len(memory.get_all(user_id="u")) == 7


def test_server_reads_answer_while_writes_wait_for_another_process(tmp_path: Path) -> None:
    """``contextos serve``: 45 adds wait for a lock another process holds (more than the
    40 threads of the pool every route shares); a list sent meanwhile is answered at
    once, and once the lock is let go every add is stored (201)."""
    db = tmp_path / "srv.db"
    with KeyStore(str(db)) as keys:
        key = keys.create("acme").secret
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    def call(url: str, body: bytes | None = None) -> int:
        req = urllib.request.Request(url, data=body, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                resp.read()
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            exc.read()
            return int(exc.code)

    with running_server(str(db), "--embedder", "hash") as (url, _proc):
        add = f"{url}/v1/memories"
        assert call(add, b'{"messages": "before", "user_id": "ana"}') == 201
        assert call(f"{add}?user_id=ana") == 200

        def write(i: int) -> int:
            return call(add, f'{{"messages": "during {i}", "user_id": "u{i}"}}'.encode())

        _reads_answer_while_writes_wait(db, write, lambda: call(f"{add}?user_id=ana"), ok=201)


def _reads_answer_while_writes_wait(
    db: Path, write: Callable[[int], int], read: Callable[[], int], *, ok: int, writes: int = 45
) -> None:
    """``writes`` calls of ``write(i)`` wait for a lock another process holds (more than
    the 40 threads of the pool every route or tool shares); ``read()`` sent meanwhile is
    answered at once (200), and once the lock is let go every write succeeds (``ok``)."""
    statuses: list[int] = []
    with lock_held(db) as holder:
        threads = [
            threading.Thread(target=lambda i=i: statuses.append(write(i))) for i in range(writes)
        ]
        for t in threads:
            t.start()
        time.sleep(1.5)  # every write has reached the server and waits for the lock
        # Let go in 3 s whatever happens: a read stuck behind the writes would otherwise
        # wait for their 10 s busy timeout.
        timer = threading.Timer(3.0, let_go, args=(holder,))
        timer.start()
        began = time.monotonic()
        read_status = read()
        read_s = time.monotonic() - began
        timer.cancel()
        let_go(holder)
        for t in threads:
            t.join(timeout=60)
    assert read_status == 200
    assert read_s < 1.0, f"a read waited {read_s:.1f} s behind the waiting writes"
    assert statuses == [ok] * writes, statuses


def test_agent_tool_writes_wait_on_write_threads_not_the_shared_pool(tmp_path: Path) -> None:
    """``POST /v1/agent/tools/archival_memory_insert`` (an agent's self-editing write)
    ran on the pool every route shares: 45 of them waiting for another process's lock
    held every thread, and a plain list waited for the whole hold."""
    db = tmp_path / "agent.db"
    with KeyStore(str(db)) as keys:
        key = keys.create("acme").secret
    headers = {"Authorization": f"Bearer {key}"}
    with (
        running_server(str(db), "--embedder", "hash") as (url, _proc),
        httpx.Client(base_url=url, headers=headers, timeout=60) as http,
    ):
        assert http.post("/v1/memories", json={"messages": "before", "user_id": "ana"}).is_success

        def insert(i: int) -> int:
            body = {"user_id": f"u{i}", "arguments": {"content": f"note {i}"}}
            with httpx.Client(base_url=url, headers=headers, timeout=60) as own:
                answer = own.post("/v1/agent/tools/archival_memory_insert", json=body)
            return answer.status_code if not answer.json().get("is_error") else 500

        def listed() -> int:
            return http.get("/v1/memories", params={"user_id": "ana"}).status_code

        _reads_answer_while_writes_wait(db, insert, listed, ok=200)


def test_mcp_tool_writes_wait_on_write_threads_not_the_shared_pool(tmp_path: Path) -> None:
    """``contextos mcp --transport streamable-http``: the SDK ran every tool on one shared
    pool, so 45 ``add_memory`` calls waiting for another process's lock held every
    thread, and a ``list_memories`` waited for the whole hold."""
    pytest.importorskip("mcp")
    from mcp_support import http_tool_call, mcp_over_http

    db = tmp_path / "mcp.db"
    with KeyStore(str(db)) as keys:
        key = keys.create("acme").secret
    with mcp_over_http(db) as url, httpx.Client(base_url=url, timeout=60) as http:
        assert (
            http_tool_call(http, key, "add_memory", {"messages": "before", "user_id": "ana"}) == 200
        )

        def add(i: int) -> int:
            with httpx.Client(base_url=url, timeout=60) as own:
                return http_tool_call(
                    own, key, "add_memory", {"messages": f"n {i}", "user_id": "u"}
                )

        def listed() -> int:
            return http_tool_call(http, key, "list_memories", {"user_id": "ana"})

        _reads_answer_while_writes_wait(db, add, listed, ok=200)


#: A process that adds one memory (default 10 s busy timeout) and reports how it ended.
ADDER = """
import sys, time
from contextos.memory import Memory
from contextos.store.sqlite import SQLiteStore
from contextos.testing.embedders import HashEmbedder
memory = Memory(store=SQLiteStore(sys.argv[1]), embedder=HashEmbedder(),
                background_embedding=False)
print("adding", flush=True)
try:
    memory.add("behind the lock", user_id="u")
    print("added", flush=True)
except KeyboardInterrupt:
    print("interrupted", flush=True)
memory.close()
"""


def test_ctrl_c_ends_a_write_waiting_for_another_process_at_once(tmp_path: Path) -> None:
    """A Ctrl-C (SIGINT) sent to a process whose write waits for another process's
    lock ends it within a fraction of a second. SQLite's busy handler sleeps in C
    where Python runs no signal handler, and one wait of the whole 10 s timeout left
    the Ctrl-C unseen until it ran out; now the wait is taken in 0.1 s slices."""
    import signal

    db = tmp_path / "c.db"
    with Memory(store=SQLiteStore(db), embedder=HashEmbedder(), background_embedding=False) as m:
        m.add("before the lock", user_id="u")
    with lock_held(db):
        proc = subprocess.Popen(
            [sys.executable, "-c", ADDER, str(db)], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "adding"
        time.sleep(1.0)  # the add waits for the lock
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
        ended_s = time.monotonic() - sent
    assert out.strip() == "interrupted", out
    assert ended_s < 1.5, f"the Ctrl-C was seen after {ended_s:.1f} s"
    with Memory(store=SQLiteStore(db), embedder=HashEmbedder(), background_embedding=False) as m:
        m.add("after the lock", user_id="u")
        assert sorted(r.text for r in m.get_all(user_id="u")) == [
            "after the lock",
            "before the lock",
        ]
