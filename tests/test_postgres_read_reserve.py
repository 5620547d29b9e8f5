"""Reads keep connections of their own while writes wait for a lock (a review, s43).

Reads and writes shared one pool: with ``turns`` locked elsewhere (``LOCK TABLE`` from
psql, a migration), a few tenants appending turns held every pooled connection for up
to ``lock_timeout`` each, and another tenant's search, which never reads ``turns``,
waited for a connection as long as the lock lasted (20 s for a 20 s lock)."""

from __future__ import annotations

import threading
import time

from contextos import Memory, Message, Session
from contextos.errors import StoreError
from contextos.testing.embedders import HashEmbedder
from pg_support import connect, pg_url, postgres_store

LOCK_S = 3.0


def test_a_search_is_answered_while_every_write_waits_for_a_locked_table() -> None:
    # lock_timeout past the lock: the writers wait for as long as it is held
    with postgres_store(options="-c lock_timeout=10000", max_connections=4) as store:
        reader = Memory(
            store=store, tenant="t2", embedder=HashEmbedder(), background_embedding=False
        )
        reader.add("Ana keeps bees on the roof.", user_id="ana")
        failed: list[BaseException] = []

        def append(n: int) -> None:
            session = Session(store, f"s{n}", tenant=f"t{n % 3}", user_id="u")
            try:
                session.add(Message("user", f"turn {n}"))
            except StoreError as exc:  # a write that found no connection in time
                failed.append(exc)

        with connect(pg_url(), store.schema) as locker:
            locker.autocommit = False
            locker.execute("LOCK TABLE turns IN ACCESS EXCLUSIVE MODE")
            writers = [threading.Thread(target=append, args=(n,)) for n in range(8)]
            for w in writers:
                w.start()
            time.sleep(0.5)  # every writer waits on the lock (or for a connection)
            started = time.monotonic()
            hits = reader.search("who keeps bees", user_id="ana")
            listed = reader.get_all(user_id="ana")
            took = time.monotonic() - started
            time.sleep(max(0.0, LOCK_S - (time.monotonic() - started)))
            locker.rollback()
        for w in writers:
            w.join(timeout=30)
        assert [h.record.text for h in hits] == ["Ana keeps bees on the roof."]
        assert len(listed) == 1
        assert took < 1.0, f"the reads waited {took:.1f} s for a connection"
        assert not failed, failed
        reader.close()
