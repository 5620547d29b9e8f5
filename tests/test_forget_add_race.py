"""An erasure while another process adds a memory it would reach: the memory is erased
whole or kept whole, with its history, never kept without it.

Review s41 pgfleet, finding 1: in READ COMMITTED each statement of ``forget`` reads the
tables as they are when that statement starts. An add (memory and ADD event, one
transaction) that committed after the DELETE of the memories had read them, and before
the DELETE of the history read it, kept its memory and lost its history: a live memory
whose ``GET /v1/memories/{id}/history`` answered ``[]``.

Made to happen every time, not by luck: a session outside the store holds a row lock on
a memory the erasure deletes, so the erasure's DELETE of the memories waits on it (its
snapshot already taken); the add commits while it waits; then the lock goes. (SQLite
runs one write at a time: an add is wholly before or after the erasure.)

The fix leaves out the history of memories still there; a store that reads the history
before it deletes the records (SQLite) must still read the erased records' earlier texts,
to scrub their quotes: the last test.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from contextos.store.base import Patch, Store
from contextos.types import MemoryRecord, Scope, content_hash
from pg_support import connect, pg_url, two_handles

T = "acme"
#: Seconds to wait for the erasure to reach the held lock (a bound on a hang, not a
#: measure: it waits only for the statements before the DELETE).
WAIT_S = 30.0


def _record(memory_id: str, text: str, scope: Scope, context: str = "") -> MemoryRecord:
    return MemoryRecord(
        id=memory_id, text=text, scope=scope, context=context, hash=content_hash(text)
    )


def _wait_until_blocked(watcher: Any, holder_pid: int, statement: str) -> None:
    """Return once a session waits on ``holder_pid``'s lock running ``statement``."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        waiting = watcher.execute(
            "SELECT query FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))",
            (holder_pid,),
        ).fetchall()
        if any(r[0].lstrip().startswith(statement) for r in waiting):
            return
        time.sleep(0.01)
    pytest.fail(f"no session waited on the held lock running {statement!r}")


def _add_while_erasing(
    store: Any, erase: Callable[[], int], held: MemoryRecord, added: MemoryRecord
) -> int:
    """Run ``erase`` (on another handle) until its DELETE of the memories waits on a
    lock of ``held``'s row, commit ``added`` on ``store`` then, release the lock; the
    erasure's answer."""
    holder = connect(pg_url(), store.schema)
    watcher = connect(pg_url(), store.schema)
    answer: list[int] = []
    failed: list[BaseException] = []

    def run() -> None:
        try:
            answer.append(erase())
        except BaseException as exc:  # re-raised in the test's thread
            failed.append(exc)

    erasing = threading.Thread(target=run)
    try:
        holder.execute("BEGIN")
        holder.execute(
            "SELECT 1 FROM memories WHERE tenant = %s AND id = %s FOR UPDATE", (T, held.id)
        )
        (pid,) = holder.execute("SELECT pg_backend_pid()").fetchone()
        erasing.start()
        _wait_until_blocked(watcher, pid, "DELETE FROM memories")
        store.put([added])  # committed: the erasure's DELETE read the table before it
    finally:
        holder.execute("ROLLBACK")
        erasing.join(timeout=30)
        holder.close()
        watcher.close()
    if failed:
        raise failed[0]
    assert not erasing.is_alive()
    return answer[0]


def _live(store: Any) -> set[str]:
    with connect(pg_url(), store.schema) as conn:
        rows = conn.execute("SELECT id FROM memories WHERE tenant = %s", (T,)).fetchall()
    return {r[0] for r in rows}


ANA, IN_S1 = Scope(T, "ana"), Scope(T, "ana", session_id="s1")

#: (old record's scope, added record's scope, the erasure on a handle).
CASES: dict[str, tuple[Scope, Scope, Callable[[Any], int]]] = {
    "user": (ANA, ANA, lambda s: s.forget(Scope(T, user_id="ana"))),
    # A reply naming no user, in the user's own session: reached by the session's arm.
    "user's session": (IN_S1, Scope(T, session_id="s1"), lambda s: s.forget(ANA)),
    "session": (IN_S1, IN_S1, lambda s: s.forget(Scope(T, session_id="s1"))),
    "tenant": (IN_S1, ANA, lambda s: s.forget_tenant(T)),
}


@pytest.mark.postgres
@pytest.mark.parametrize("case", list(CASES))
def test_a_memory_added_while_the_erasure_runs_keeps_its_history(case: str) -> None:
    pytest.importorskip("psycopg")
    old_scope, new_scope, erase = CASES[case]
    old = _record("m-old", "ana's passport is X1234", old_scope)
    new = _record("m-new", "ana moved to Oslo", new_scope)
    with two_handles() as (store, other):
        store.put([old])
        assert _add_while_erasing(store, lambda: erase(other), old, new) == 1
        # The add committed after the erasure read the memories: it comes after the
        # erasure, memory and ADD event both kept.
        assert _live(store) == {new.id}
        assert [e.event for e in store.history(T, new.id)] == ["ADD"]
        assert [e.new_text for e in store.history(T, new.id)] == [new.text]
        # The erased memory went with its history.
        assert store.history(T, old.id) == []


def test_forget_scrubs_the_earlier_texts_of_the_memories_it_erases(store: Store) -> None:
    # Bob's reply in their shared session (his: it stays) quotes Ana's memory as first
    # said, a text that only its history holds now (no turn of a session log has it).
    said = "my card PIN is 4421 zebra"
    ana = _record("ana-1", said, Scope(T, "ana", session_id="s"))
    bob = _record(
        "bob-1", "noted, thanks", Scope(T, "bob", session_id="s"), f"Bob | replying to Ana: {said}"
    )
    store.put([ana, bob])
    store.update(T, ana.id, Patch(text="my card PIN is private"))
    assert store.forget(Scope(T, user_id="ana")) == 1
    kept = store.get(T, bob.id)
    assert kept is not None and kept.context == "Bob"
    assert store.history(T, ana.id) == []
