"""SQLite ``forget``: its work follows what it erases and keeps, and a lock taken by
another writer while it finishes does not fail an erasure that committed.

Review s41 bigstore, finding 1: the reply-context scrub ran before the DELETE and
rewrote every record of the erased sessions, each tried against every erased text,
records the same transaction then deleted: forgetting a session of 8,000 turns took
9.5 s (four times as long per doubling), every tenant's writes waiting. Now the records
go first and the scrub reads only those that stay (the group chat's other users').
Counted by a trigger on the file: which records had their context rewritten.

Finding 2: the mark update after the rebuild (``VACUUM``) ran under the checkpoint's
100 ms busy timeout, and another process's write then failed the forget with
"database is locked" (HTTP 503) although its erasure had committed, and the retry
rewrote the whole file again. Made to happen every time: another connection takes
the write lock the moment the update starts and lets it go at the next try.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from contextos.store.sqlite import SQLiteStore
from contextos.types import MemoryRecord, Scope, content_hash

T = "acme"


def _record(memory_id: str, text: str, scope: Scope, context: str = "") -> MemoryRecord:
    return MemoryRecord(
        id=memory_id, text=text, scope=scope, context=context, hash=content_hash(text)
    )


def _chat(turns: int) -> list[MemoryRecord]:
    """Ana's one-to-one chat of ``turns`` turns, each quoting the one before (as a
    wrapped client stores them), and a group chat where Bob's reply quotes her."""
    said = [f"turn {i}: we talked about item {i} at length" for i in range(turns)]
    chat = Scope(T, "ana", session_id="chat")
    records = [
        _record(f"ana-{i}", text, chat, f"replying to {said[i - 1]}" if i else "")
        for i, text in enumerate(said)
    ]
    secret = "ana's locker code is 7781 heron"
    records += [
        _record("ana-g", secret, Scope(T, "ana", session_id="group")),
        _record(
            "bob-g",
            "noted",
            Scope(T, "bob", session_id="group"),
            f"Bob | replying to Ana: {secret}",
        ),
    ]
    return records


def _counting_rewrites(db: Path) -> None:
    """A table and trigger in the file logging the id of each record whose context
    an UPDATE rewrites (the scrub's only write)."""
    with sqlite3.connect(db) as raw:
        raw.execute("CREATE TABLE rewrites (id TEXT)")
        raw.execute(
            "CREATE TRIGGER count_rewrites AFTER UPDATE OF context ON memories "
            "BEGIN INSERT INTO rewrites (id) VALUES (new.id); END"
        )
    raw.close()


@pytest.mark.parametrize("turns", [50, 800])
def test_forget_rewrites_only_the_records_that_stay(tmp_path: Path, turns: int) -> None:
    db = tmp_path / "chat.db"
    SQLiteStore(db).close()  # the schema, then the trigger
    _counting_rewrites(db)
    store = SQLiteStore(db)
    try:
        store.put(_chat(turns))
        assert store.forget(Scope(T, user_id="ana")) == turns + 1
        bob = store.get(T, "bob-g")
        assert bob is not None and bob.context == "Bob"  # the survivor is still scrubbed
        assert store.get(T, "ana-1") is None
    finally:
        store.close()
    with sqlite3.connect(db) as raw:
        rewritten = [r[0] for r in raw.execute("SELECT id FROM rewrites")]
    raw.close()
    # Bob's reply only, however long ana's chat: none of the records the forget deletes
    # (before, every one of them: `turns` rewrites, each scrubbed against every text).
    assert rewritten == ["bob-g"]


def test_a_write_lock_after_the_rebuild_does_not_fail_the_forget(tmp_path: Path) -> None:
    db = tmp_path / "locked.db"
    store = SQLiteStore(db)
    other = sqlite3.connect(db, isolation_level=None, timeout=0)
    held: list[str] = []
    statements: list[str] = []

    def trace(sql: str) -> None:
        # On the store's connection, at each statement's start: another writer takes
        # the lock as the mark's update begins (after the VACUUM), and lets it go as
        # the next try reads the mark. Three times in a row: each try waits 100 ms for
        # it, and the forget tries again until the busy timeout.
        statements.append(sql)
        if sql.startswith("UPDATE erasure_pending") and len(held) < 3:
            other.execute("BEGIN IMMEDIATE")
            held.append(sql)
        elif sql.startswith("SELECT since FROM erasure_pending") and other.in_transaction:
            other.execute("ROLLBACK")

    try:
        store.put(_chat(40))
        store._db.set_trace_callback(trace)  # noqa: SLF001 - instrumenting
        assert store.forget(Scope(T, user_id="ana")) == 41  # no "database is locked"
        store._db.set_trace_callback(None)  # noqa: SLF001
        assert len(held) == 3 and not other.in_transaction  # the lock met, and let go
        # One rebuild for the one erasure: the retry only flipped the mark.
        assert sum(s.strip().upper() == "VACUUM" for s in statements) == 1
        (pending,) = other.execute("SELECT count(*) FROM erasure_pending").fetchone()
        assert pending == 0  # finished: the WAL truncated, nothing left to a later write
        assert other.execute("PRAGMA freelist_count").fetchone()[0] == 0
        assert store.get(T, "ana-1") is None
    finally:
        other.close()
        store.close()


@pytest.mark.parametrize("step", ["UPDATE erasure_pending", "DELETE FROM erasure_pending"])
def test_an_erasure_marked_meanwhile_keeps_its_rebuild(tmp_path: Path, step: str) -> None:
    # Another process's forget commits while this one finishes: after this one's VACUUM
    # (before it flips its mark), or after its checkpoint (before it clears the mark).
    # Its newer mark asks for a rebuild of its own; flipping or clearing that mark
    # with this one's would leave its erased rows in free space for good (should its
    # process die before it looks again).
    db = tmp_path / "meanwhile.db"
    store = SQLiteStore(db)
    other = sqlite3.connect(db, isolation_level=None, timeout=0)
    statements: list[str] = []
    newer: list[str] = []

    def trace(sql: str) -> None:
        statements.append(sql)
        if sql.startswith(step) and not newer:  # the other process's forget commits
            other.execute("UPDATE erasure_pending SET since = -12345.0")
            newer.append(sql)

    try:
        store.put(_chat(40))
        store._db.set_trace_callback(trace)  # noqa: SLF001 - instrumenting
        assert store.forget(Scope(T, user_id="ana")) == 41
        store._db.set_trace_callback(None)  # noqa: SLF001
        assert newer
        marks = [r[0] for r in other.execute("SELECT since FROM erasure_pending")]
        vacuums = sum(s.strip().upper() == "VACUUM" for s in statements)
        # Rebuilt again for the newer mark, or left owed (to its process, or the next
        # to open the file); never cleared without its rebuild.
        assert (vacuums, marks) in [(2, []), (1, [-12345.0])]
    finally:
        other.close()
        store.close()
    SQLiteStore(db).close()  # the next process to open the file makes it
    with sqlite3.connect(db) as raw:
        assert raw.execute("SELECT count(*) FROM erasure_pending").fetchone()[0] == 0
    raw.close()


def test_another_writer_between_the_rebuild_and_its_mark_does_not_rebuild_again(
    tmp_path: Path,
) -> None:
    # A second handle on the file (another process, as far as SQLite knows) writes
    # between the forget's VACUUM and its update of the mark: its try after that
    # write found the mark still set and rewrote the whole file a second time (1 of 3
    # forgets beside a process adding every 20 ms, at 100k memories: 0.5-1 s more
    # that every writer waited). The rebuild is the erasing process's while it runs.
    db = tmp_path / "two.db"
    erasing, writing = SQLiteStore(db), SQLiteStore(db)
    vacuums: list[str] = []
    wrote: list[bool] = []

    def count(name: str) -> Callable[[str], None]:
        def trace(sql: str) -> None:
            if sql.strip().upper() == "VACUUM":
                vacuums.append(name)
            if name == "erasing" and sql.startswith("UPDATE erasure_pending") and not wrote:
                writing.put([_record("carl-1", "carl likes tea", Scope(T, "carl"))])
                wrote.append(True)

        return trace

    try:
        erasing.put(_chat(40))
        erasing._db.set_trace_callback(count("erasing"))  # noqa: SLF001 - instrumenting
        writing._db.set_trace_callback(count("writing"))  # noqa: SLF001
        assert erasing.forget(Scope(T, user_id="ana")) == 41
        assert wrote and vacuums == ["erasing"]
        assert writing.get(T, "carl-1") is not None
    finally:
        writing.close()
        erasing.close()
