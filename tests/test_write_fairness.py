"""One tenant's writes cannot hold up another tenant's (``server/write_threads.py``).

A review found that every write route shared one pool of 40 write threads in arrival
order: tenant acme's import of 99 adds of ~900 KB each, within the default rate limit,
took every thread, and tenant beta's 2-byte add waited 10 s for one, was answered 503,
and after its ``Retry-After: 1`` waited again behind the threads queued on the store's
write lock (stored after 17 s). Now at most ``WRITES_PER_TENANT`` writes of one tenant
hold a write thread; beta's add waits for those only. And a write whose client
disconnected while it waited is not run: abandoned writes were run one after another,
each in turn, while the tenant's live writes waited. A real ``contextos serve`` on a
SQLite file, on loopback.
"""

from __future__ import annotations

import json
import random
import socket
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from contextos.bench.serve import running_server
from contextos.server.keys import KeyStore
from contextos.server.write_threads import WRITES_PER_TENANT

httpx = pytest.importorskip("httpx")

from test_store_write_waits import let_go, lock_held  # noqa: E402

# They assert on the order writes are answered in: run alone, after the rest.
pytestmark = pytest.mark.serial

#: Tenant acme's burst: more adds than the server has write threads (40), each large
#: enough to take a noticeable time to write (~200 KB of text in 10 messages).
BURST = 60
MESSAGES, MESSAGE_CHARS = 10, 20_000


def _keys(db: Path, *tenants: str) -> list[str]:
    with KeyStore(str(db)) as keys:
        return [keys.create(tenant).secret for tenant in tenants]


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _large_add(rng: random.Random, i: int) -> dict[str, object]:
    """An add of ~200 KB of words no other add repeats (nothing found as a duplicate)."""
    words = rng.randbytes(4 * MESSAGES * MESSAGE_CHARS // 9).hex(" ", 4)  # words of 8 letters
    messages = [
        {"role": "user", "content": words[j * MESSAGE_CHARS : (j + 1) * MESSAGE_CHARS]}
        for j in range(MESSAGES)
    ]
    return {"messages": messages, "user_id": f"importer-{i}"}


def test_another_tenants_add_waits_for_a_few_of_a_burst_of_large_adds(tmp_path: Path) -> None:
    """Acme sends 60 large adds at once (the default --rate and --burst admit them);
    once they are being written, beta sends one tiny add. Beta's add is answered after
    at most a few of acme's (the two acme has running, and a margin); in arrival order
    it waited for every acme add queued for a write thread ahead of it (~20)."""
    db = tmp_path / "fair.db"
    acme, beta = _keys(db, "acme", "beta")
    rng = random.Random(7)
    bodies = [_large_add(rng, i) for i in range(BURST)]
    answered: list[float] = []  # when each of acme's adds was answered
    with (
        running_server(str(db), "--embedder", "hash") as (url, _proc),
        httpx.Client(base_url=url, headers=_auth(beta), timeout=120) as b,
    ):
        assert b.post("/v1/memories", json={"messages": "warm", "user_id": "b"}).is_success

        def add(body: dict[str, object]) -> int:
            with httpx.Client(base_url=url, headers=_auth(acme), timeout=120) as a:
                status = int(a.post("/v1/memories", json=body).status_code)
            answered.append(time.monotonic())
            return status

        with ThreadPoolExecutor(BURST) as pool:
            statuses = pool.map(add, bodies)
            deadline = time.monotonic() + 60
            while len(answered) < 3 and time.monotonic() < deadline:
                time.sleep(0.01)  # acme's adds are being written, the rest queued
            sent = time.monotonic()
            tiny = b.post("/v1/memories", json={"messages": "hello", "user_id": "b"})
            done = time.monotonic()
            assert sorted(set(statuses)) in ([201], [201, 503])
    assert tiny.status_code == 201, tiny.text
    ahead = sum(sent < t < done for t in answered)
    print(f"beta's add: {done - sent:.2f} s, after {ahead} of acme's adds")
    assert ahead <= 8, f"beta's add waited for {ahead} of acme's ({done - sent:.1f} s)"


def _abandon(url: str, key: str, body: dict[str, object]) -> socket.socket:
    """Send one whole add on a raw socket and leave it open: the caller resets it (a
    client that timed out, or crashed, with its request already in the server)."""
    data = json.dumps(body).encode()
    host, port = url.removeprefix("http://").split(":")
    head = (
        f"POST /v1/memories HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
    )
    sock = socket.create_connection((host, int(port)))
    sock.sendall(head.encode() + data)
    return sock


def test_a_write_whose_client_left_while_it_waited_is_not_run(tmp_path: Path) -> None:
    """Another process holds the write lock; acme's first adds take all its write
    threads (``WRITES_PER_TENANT``) and wait for it, three more wait for those, and their
    clients reset their connections. Once the lock is let go the first are stored, the
    three are not: they were run, one after another, though nobody would read the
    answer."""
    db = tmp_path / "gone.db"
    (acme,) = _keys(db, "acme")
    with (
        running_server(str(db), "--embedder", "hash") as (url, _proc),
        httpx.Client(base_url=url, headers=_auth(acme), timeout=60) as a,
    ):
        assert a.post("/v1/memories", json={"messages": "before", "user_id": "u"}).is_success
        kept: list[int] = []

        def add(text: str) -> None:
            body = {"messages": text, "user_id": "u"}
            kept.append(a.post("/v1/memories", json=body).status_code)

        with lock_held(db) as holder:
            threads = [
                threading.Thread(target=add, args=(f"kept {i}",)) for i in range(WRITES_PER_TENANT)
            ]
            for t in threads:
                t.start()
            time.sleep(0.5)  # they wait for the lock, on all acme's write threads
            gone = [
                _abandon(url, acme, {"messages": f"gone {i}", "user_id": "u"}) for i in range(3)
            ]
            time.sleep(0.5)  # in the server, waiting for acme's write threads
            for sock in gone:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()
            time.sleep(0.5)  # the server sees them go
            let_go(holder)
            for t in threads:
                t.join(timeout=30)
        assert kept == [201] * WRITES_PER_TENANT
        time.sleep(0.5)  # an abandoned add, if run, is stored by now
        listed = a.get("/v1/memories", params={"user_id": "u"}).json()["results"]
    texts = sorted(record["text"] for record in listed)
    assert texts == ["before", *(f"kept {i}" for i in range(WRITES_PER_TENANT))], texts
