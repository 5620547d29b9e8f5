"""A call made while PostgreSQL is down is served once the server is back, not after the
pool's next reconnection try.

The pool tries to reconnect 1 s, 2 s, 4 s... after its last failure: a search begun
while the server was down waited out its 10 s and failed although the server had been
back for seconds (a review: back at 7.2 s, failed at 10.1 s). The outage is real: the
store reaches the test PostgreSQL through a loopback TCP proxy that goes down (every
connection cut, new ones refused) and comes back on the same port.
"""

from __future__ import annotations

import threading
import time

from contextos.memory import Memory
from contextos.testing.embedders import HashEmbedder
from tcp_proxy import proxied

# Seconds the server stays down while a search waits: past the pool's reconnection tries
# at about 1 s and 3 s, so its next one is at about 7 s.
DOWN_S = 3.6


def test_a_search_begun_during_an_outage_is_answered_soon_after_the_server_is_back() -> None:
    from pg_support import fresh_schema

    with fresh_schema("outage") as (url, _schema), proxied(url) as (through, proxy):
        with Memory(through, embedder=HashEmbedder()) as memory:
            memory.add("Ana keeps bees on the roof.", user_id="ana")
            assert memory.flush(timeout=30)
            proxy.down()
            answer: list[object] = []

            def search() -> None:
                try:
                    answer.append(memory.search("bees", user_id="ana"))
                except Exception as exc:  # the assertion below shows it
                    answer.append(exc)

            searching = threading.Thread(target=search)
            searching.start()
            time.sleep(DOWN_S)
            proxy.up()
            back = time.monotonic()
            searching.join(timeout=30)
            waited = time.monotonic() - back
        assert answer and not isinstance(answer[0], Exception), answer
        assert [h.record.text for h in answer[0]] == ["Ana keeps bees on the roof."]  # type: ignore[attr-defined]
        assert waited < 2.0, f"answered {waited:.1f} s after the server came back"


def test_a_call_waiting_for_a_busy_pool_keeps_its_place() -> None:
    # A server that answers, every connection busy: the call that asked first is served
    # first. (A first fix asked again every second, at the back of the queue: a later
    # call was served first and the earlier one timed out; a review.)
    from contextos.store.postgres.pool import checked_connection, open_pool
    from pg_support import pg_url

    pool = open_pool(pg_url(), {"autocommit": True}, max_size=1, timeout=5.0, name="fifo")
    began = time.monotonic()
    served: list[tuple[str, float]] = []

    def hold(name: str, after: float, for_s: float) -> None:
        time.sleep(after)
        try:
            with checked_connection(pool, 2):
                served.append((name, time.monotonic() - began))
                time.sleep(for_s)
        except Exception as exc:  # the assertion below shows it
            served.append((f"{name} failed: {exc}", time.monotonic() - began))

    try:
        calls = [("holder", 0.0, 1.5), ("first", 0.2, 0.1), ("later", 1.0, 3.0)]
        threads = [threading.Thread(target=hold, args=c) for c in calls]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=20)
    finally:
        pool.close()
    assert [name for name, _ in served] == ["holder", "first", "later"], served


def test_a_pool_dropped_unclosed_is_let_go_with_its_nudger() -> None:
    # The nudger holds its pool weakly: held strongly, a store dropped without close()
    # kept its pool, its threads and its server connections (a review: 10 dropped stores
    # left 51 threads and 10 connections).
    import gc
    import weakref

    from contextos.store.postgres.pool import open_pool
    from pg_support import pg_url

    pool = open_pool(pg_url(), {"autocommit": True}, max_size=1, timeout=5.0, name="dropped")
    gone = threading.Event()
    weakref.finalize(pool, gone.set)
    del pool
    gc.collect()
    assert gone.wait(5), "the pool was kept alive"
    deadline = time.monotonic() + 5
    while any(t.name == "dropped-nudge" for t in threading.enumerate()):
        assert time.monotonic() < deadline, "its nudger still runs"
        time.sleep(0.1)
