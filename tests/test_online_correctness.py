"""Memory that stays right while the application runs (issue 10).

Every test here is shaped like real use: a Memory kept open while writes and
reads interleave, a second process on the same file, a poisoned row among good
ones, an erasure while a reader is open. Each failed on main before the fix.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from contextos import Filter, Scope, StoreError
from contextos.engine.session import Session
from contextos.errors import NotFound
from contextos.memory import Memory
from contextos.memory.ingest import build_records, to_messages, validate_options
from contextos.store.erasure import scrub_context
from contextos.store.sqlite import SQLiteStore
from contextos.testing.embedders import FailingEmbedder, HashEmbedder
from contextos.types import Message

REPO = Path(__file__).resolve().parents[1]


@contextmanager
def open_memory(kind: str, tmp_path: Path, **kwargs: Any) -> Iterator[Memory]:
    """A Memory on a real SQLite file or a fresh PostgreSQL schema."""
    embedder = kwargs.pop("embedder", None) or HashEmbedder()
    if kind == "sqlite":
        with Memory(tmp_path / "m.db", embedder=embedder, **kwargs) as m:
            yield m
        return
    from pg_support import postgres_store

    with postgres_store() as store:
        m = Memory(store=store, embedder=embedder, **kwargs)
        try:
            yield m
        finally:
            m.close()


BOTH = pytest.mark.parametrize("kind", ["sqlite", "postgres"])


def _dense_ranked(m: Memory, query: str, user: str) -> dict[str, int | None]:
    return {h.record.text: h.dense_rank for h in m.search(query, user_id=user, limit=20)}


# -- the vector index is never stale ------------------------------------------------------


@BOTH
def test_memories_added_while_the_process_runs_get_a_dense_rank(kind: str, tmp_path: Path) -> None:
    with open_memory(kind, tmp_path) as m:
        m.add("I moved to Lisbon in May", user_id="ana")
        m.flush()
        assert _dense_ranked(m, "where does she live", "ana")["I moved to Lisbon in May"]
        for n in range(5):  # write, embed, read, again: each new record must be seen
            text = f"My dog number {n} is called Pimenta"
            m.add(text, user_id="ana")
            m.flush()
            ranks = _dense_ranked(m, "what is the name of her pet", "ana")
            assert ranks.get(text) is not None, f"round {n}: {text!r} has no dense rank"


def test_an_update_in_this_process_is_seen_by_the_next_dense_search(tmp_path: Path) -> None:
    with open_memory("sqlite", tmp_path) as m:
        [rec] = m.add("alpha beta gamma", user_id="ana")
        m.flush()
        m.search("alpha", user_id="ana")  # loads the index
        m.update(rec.id, "delta epsilon zeta")
        m.flush()
        [hit] = [h for h in m.search("delta epsilon zeta", user_id="ana") if h.record.id == rec.id]
        assert hit.dense_rank == 1


_OTHER_PROCESS = """
import sys
from contextos.memory import Memory
from contextos.memory.ingest import build_records, to_messages, validate_options
from contextos.testing.embedders import HashEmbedder
path, newest = sys.argv[1], sys.argv[2]
with Memory(path, embedder=HashEmbedder()) as m:
    m.delete(newest)
    m.add("eve secret diary entry about her dog Pimenta", user_id="eve")
    m.flush()
with Memory(path, embedder=HashEmbedder(), tenant="acme") as other_tenant:
    other_tenant.add("acme ana diary entry about her dog Pimenta", user_id="ana")
    other_tenant.flush()
"""


def test_a_delete_and_reused_rowid_in_another_process_never_leaks(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    with Memory(db, embedder=HashEmbedder()) as m:
        for trial in range(5):
            texts = [f"ana note {trial} {n} about her dog Pimenta" for n in range(3)]
            records = [m.add(t, user_id="ana")[0] for t in texts]
            m.flush()
            m.search("dog Pimenta", user_id="ana")  # the index is loaded in this process
            subprocess.run(
                [sys.executable, "-c", _OTHER_PROCESS, str(db), records[-1].id],
                check=True,
                env=env,
                timeout=120,
            )
            hits = m.search("diary entry about her dog Pimenta", user_id="ana", limit=50)
            assert all(h.record.user_id == "ana" for h in hits), [h.record.text for h in hits]
            assert all(h.record.tenant == m.tenant for h in hits), [h.record.text for h in hits]
            assert records[-1].id not in {h.record.id for h in hits}
            assert all(h.record.text != "eve secret diary entry" for h in hits)
            eve = m.search("diary entry", user_id="eve")
            assert {h.record.user_id for h in eve} == {"eve"}


@BOTH
def test_two_memories_on_one_store_never_cross_users(kind: str, tmp_path: Path) -> None:
    with open_memory(kind, tmp_path) as first:
        second = Memory(store=first.store, embedder=HashEmbedder(), background_embedding=False)
        first.add("ana likes the blue bicycle", user_id="ana")
        first.flush()
        first.search("blue bicycle", user_id="ana")
        [ana_new] = second.add("ana rides the blue bicycle to work", user_id="ana")
        second.delete(ana_new.id)
        second.add("eve rides the blue bicycle at night", user_id="eve")
        second.flush()
        users = {h.record.user_id for h in first.search("blue bicycle", user_id="ana")}
        assert users == {"ana"}


# -- bad rows are contained ---------------------------------------------------------------

_POISON_TIMES = [
    datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1))),
    datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone(-timedelta(hours=23, minutes=59))),
]


@BOTH
@pytest.mark.parametrize("when", _POISON_TIMES, ids=["year-0", "year-10000"])
def test_times_outside_utc_years_1_to_9999_are_refused(
    kind: str, when: datetime, tmp_path: Path
) -> None:
    with open_memory(kind, tmp_path) as m:
        with pytest.raises(ValueError, match="outside years 1-9999"):
            m.add("hello", user_id="ana", event_time=when)
        with pytest.raises(ValueError, match="outside years 1-9999"):
            m.add({"content": "hello", "event_time": when.isoformat()}, user_id="ana")
        with pytest.raises(ValueError, match="outside years 1-9999"):
            m.search("hello", user_id="ana", as_of=when)
        with pytest.raises(ValueError, match="outside years 1-9999"):
            m.search("hello", user_id="ana", time_range=(when, None))
        m.add("still fine", user_id="ana", event_time=datetime(1, 1, 2, tzinfo=UTC))
        assert [r.text for r in m.get_all(user_id="ana")] == ["still fine"]


def test_a_row_poisoned_before_validation_does_not_stop_anyone(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    with Memory(db, embedder=HashEmbedder()) as m:
        [rec] = m.add("poisoned row", user_id="ana")
        m.flush()
    raw = sqlite3.connect(db)  # a row written by an older version, before times were checked
    raw.execute("UPDATE memories SET event_time = ? WHERE id = ?", (-62135600000.0, rec.id))
    raw.execute("DELETE FROM vectors")
    raw.execute("INSERT OR IGNORE INTO pending_vectors (mem_rowid) SELECT rowid FROM memories")
    raw.commit()
    raw.close()
    with Memory(db, embedder=HashEmbedder()) as m:
        assert m.get(rec.id).event_time == datetime(1, 1, 1, tzinfo=UTC)
        assert [r.id for r in m.get_all(user_id="ana")] == [rec.id]
        [other] = m.add("bob's plain memory", user_id="bob")
        assert m.flush(timeout=30)
        assert m.search("plain memory", user_id="bob")[0].dense_rank == 1
        assert m.search("poisoned", user_id="ana")[0].record.id == rec.id
        assert other.id


@BOTH
def test_a_record_that_cannot_be_embedded_is_quarantined_and_the_rest_continue(
    kind: str, tmp_path: Path
) -> None:
    with open_memory(kind, tmp_path, embedder=FailingEmbedder("POISON")) as m:
        [bad] = m.add("a POISON text", user_id="ana")
        good = [m.add(f"good memory {n} of tenant user", user_id=f"u{n}")[0] for n in range(20)]
        assert m.flush(timeout=60)
        for n, rec in enumerate(good):
            [hit] = m.search(rec.text, user_id=f"u{n}")
            assert hit.dense_rank == 1
        status = m.embedding_status()
        assert status.pending == 0
        assert [q.id for q in status.quarantined] == [bad.id]
        assert "POISON" in status.quarantined[0].error
        m.update(bad.id, "a cured text")  # a text change gives it another chance
        assert m.flush(timeout=60)
        assert m.embedding_status().quarantined == ()
        assert m.search("a cured text", user_id="ana")[0].dense_rank == 1


@BOTH
def test_a_record_quarantined_by_one_model_is_tried_again_by_another(
    kind: str, tmp_path: Path
) -> None:
    """Moving off an embedder that failed on a record is the natural fix, and it did
    nothing: the 198 other records were re-embedded by the new model, the 2 quarantined
    ones stayed quarantined under the old error, never found by meaning (a review). The
    model that failed is kept with the quarantine; opening with another retries it, and
    opening again with the same one does not."""
    with contextlib.ExitStack() as stack:
        if kind == "postgres":
            from contextos.store.postgres import PostgresStore
            from pg_support import pg_url, postgres_store

            schema = stack.enter_context(postgres_store()).schema

            def reopen(embedder: Any) -> Memory:
                return Memory(store=PostgresStore(pg_url(), schema=schema), embedder=embedder)
        else:

            def reopen(embedder: Any) -> Memory:
                return Memory(tmp_path / "m.db", embedder=embedder)

        with reopen(FailingEmbedder("POISON")) as failing:
            bad = [failing.add(f"a POISON text {n}", user_id="ana")[0] for n in range(2)]
            failing.add("a good text", user_id="ana")
            assert failing.flush(timeout=60)
            assert {q.id for q in failing.embedding_status().quarantined} == {r.id for r in bad}
        with reopen(FailingEmbedder("POISON")) as again:
            assert again.flush(timeout=60)
            assert {q.id for q in again.embedding_status().quarantined} == {r.id for r in bad}
        with reopen(HashEmbedder()) as fixed:
            assert fixed.flush(timeout=60)
            status = fixed.embedding_status()
            assert status.quarantined == () and status.pending == 0
            for n in range(2):
                [hit] = fixed.search(f"a POISON text {n}", user_id="ana", limit=1)
                assert hit.dense_rank == 1 and hit.relevance is not None


def test_a_record_quarantined_before_the_model_was_kept_is_tried_once_more(
    tmp_path: Path,
) -> None:
    """Rows quarantined by an older release hold no model (schema V12 added it): the next
    open tries them once, whatever its model, and a failure then keeps its model."""
    import sqlite3

    with Memory(tmp_path / "m.db", embedder=FailingEmbedder("POISON")) as m:
        [bad] = m.add("a POISON text", user_id="ana")
        assert m.flush(timeout=60)
    con = sqlite3.connect(tmp_path / "m.db")
    with con:
        con.execute("UPDATE vector_quarantine SET model = NULL")
    con.close()
    with Memory(tmp_path / "m.db", embedder=FailingEmbedder("POISON")) as m:
        assert m.flush(timeout=60)
        [kept] = m.embedding_status().quarantined
        assert kept.id == bad.id
    con = sqlite3.connect(tmp_path / "m.db")
    models = con.execute("SELECT model FROM vector_quarantine").fetchall()
    con.close()
    assert len(models) == 1 and models[0][0] and "hash-bow-failing" in models[0][0]


# -- erasure --------------------------------------------------------------------------------


def _file_bytes(db: Path) -> bytes:
    out = b""
    for suffix in ("", "-wal", "-shm"):
        path = Path(f"{db}{suffix}")
        if path.exists():
            out += path.read_bytes()
    return out


def _conversation(m: Memory, secret: str) -> None:
    """Ana talks in session s1; the assistant's reply names no user (only the session)."""
    m.add({"role": "user", "content": f"my code word is {secret}"}, user_id="ana", session_id="s1")
    m.add(
        {"role": "assistant", "content": "noted, I will remember it"},
        agent_id="helper",
        session_id="s1",
    )
    session = Session(m.store, "s1", tenant=m.tenant)  # a turn log appended without a user
    session.add(Message("user", f"turn log copy {secret}"))
    m.add("bob keeps bobsecretvalue42", user_id="bob", session_id="s2")
    m.flush()


def _sqlite_conversation(
    tmp_path: Path, secret: str, *, busy_timeout_ms: int = 10_000
) -> tuple[Memory, Path]:
    """A Memory on a SQLite file ``m.db`` in which :func:`_conversation` took place
    (the test closes it, or not, as the case it plays needs), and the file's path."""
    db = tmp_path / "m.db"
    m = Memory(store=SQLiteStore(db, busy_timeout_ms=busy_timeout_ms), embedder=HashEmbedder())
    _conversation(m, secret)
    return m, db


def test_forget_leaves_no_byte_of_the_user_in_file_wal_or_shm(tmp_path: Path) -> None:
    secret = "qzsecretmarker91"
    m, db = _sqlite_conversation(tmp_path, secret)
    with m:
        assert secret.encode() in _file_bytes(db)
        m.forget("ana")
        assert m.search(secret, session_id="s1") == []
        assert m.search("code word", agent_id="helper") == [] or all(
            secret not in h.record.context for h in m.search("code word", agent_id="helper")
        )
        assert m.store.turns(Scope(tenant=m.tenant, session_id="s1")) == []
        assert secret.encode() not in _file_bytes(db)
        assert b"bobsecretvalue42" in _file_bytes(db)  # bob is untouched


@BOTH
def test_another_users_record_that_quoted_the_user_survives_without_the_quote(
    kind: str, tmp_path: Path
) -> None:
    secret = "qzsecretmarker92"
    with open_memory(kind, tmp_path) as m:
        m.add(
            {"role": "user", "content": f"my code word is {secret}"}, user_id="ana", session_id="s1"
        )
        [reply] = build_records(
            to_messages([{"role": "user", "content": "noted", "name": "Carl"}]),
            validate_options(Scope(m.tenant, user_id="carl", session_id="s1")),
            previous=m.get_all(user_id="ana")[0],  # carl answers ana in a shared session
        )
        m.store.put([reply])
        assert secret in m.get(reply.id).context
        assert [h.record.id for h in m.search(secret, user_id="carl")] == [reply.id]
        m.forget("ana")
        kept = m.get(reply.id)
        assert kept.text == "noted" and secret not in kept.context
        # Not found by the erased words. (The worker may have embedded the reply by now,
        # and a dense search returns its nearest vectors whatever they hold: one such hit,
        # ranked by its vector alone, is not the secret found.)
        hits = m.search(secret, user_id="carl")
        assert [h.record.id for h in hits if h.lexical_rank is not None] == []
        assert all(secret not in h.record.context for h in hits)


def test_scrub_context_cuts_the_quoted_reply_and_stray_copies() -> None:
    ctx = "Carl | 08 May 2023 Monday | replying to Ana: my code word is qz | trailing"
    assert scrub_context(ctx, ["  my code word is qz"]) == "Carl | 08 May 2023 Monday"
    assert scrub_context("caption mentions qzsecret here", ["qzsecret"]) == "caption mentions  here"
    assert scrub_context("nothing to see", ["qzsecret", ""]) == "nothing to see"


def _reader(db: Path) -> sqlite3.Connection:
    """Another connection to ``db`` holding a read snapshot open, which blocks the
    checkpoint a forget needs until it ends (any thread may end it)."""
    reader = sqlite3.connect(db, check_same_thread=False)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM memories").fetchone()
    return reader


def _end(reader: sqlite3.Connection) -> None:
    """The reader's snapshot ends and it closes (from any thread)."""
    reader.rollback()
    reader.close()


def test_forget_with_an_open_reader_fails_loudly_then_completes(tmp_path: Path) -> None:
    secret = "qzsecretmarker93"
    m, db = _sqlite_conversation(tmp_path, secret, busy_timeout_ms=300)
    reader = _reader(db)
    with pytest.raises(StoreError, match="open reader"):
        m.forget("ana")
    assert m.get_all(user_id="ana") == []  # erased from every query already
    _end(reader)
    m.add("an unrelated later write", user_id="bob")  # any later write finishes the erasure
    assert secret.encode() not in _file_bytes(db)
    m.close()


_FORGET_THEN_DIE = """
import os, signal, sys
from contextos import StoreError
from contextos.memory import Memory
from contextos.store.sqlite import SQLiteStore
from contextos.testing.embedders import HashEmbedder
store = SQLiteStore(sys.argv[1], busy_timeout_ms=300)
m = Memory(store=store, embedder=HashEmbedder(), background_embedding=False)
try:
    m.forget("ana")
except StoreError:  # committed; the -wal truncation waits for the reader
    os.kill(os.getpid(), signal.SIGKILL)  # dies before its close could finish it
"""


def test_an_erasure_a_crash_left_unfinished_is_finished_by_the_next_process_to_open(
    tmp_path: Path,
) -> None:
    """A process that dies after an erasure's commit, before its WAL truncation, leaves
    the erased text in the -wal. The next process to open the file finishes the
    erasure, even one that only reads (a server serving searches): only a write did,
    so the bytes stayed for as long as nobody wrote (a review)."""
    secret = "qzsecretmarker95"
    m, db = _sqlite_conversation(tmp_path, secret)
    m.close()
    reader = _reader(db)
    died = subprocess.run([sys.executable, "-c", _FORGET_THEN_DIE, str(db)], timeout=120)
    assert died.returncode == -signal.SIGKILL
    reader.rollback()  # its snapshot ends; open, it keeps the last close from checkpointing
    try:
        assert secret.encode() in _file_bytes(db)  # committed, and still in the -wal
        with Memory(db, embedder=HashEmbedder(), background_embedding=False) as reads_only:
            assert reads_only.get_all(user_id="ana") == []
            assert secret.encode() not in _file_bytes(db)
    finally:
        reader.close()


def test_forget_waits_for_a_reader_that_closes_soon(tmp_path: Path) -> None:
    secret = "qzsecretmarker94"
    m, db = _sqlite_conversation(tmp_path, secret)
    with m:
        reader = _reader(db)  # closed from a timer thread
        closer = threading.Timer(0.5, _end, args=(reader,))
        closer.start()
        started = time.monotonic()
        assert m.forget("ana") == 2
        closer.join()
        assert time.monotonic() - started >= 0.4
        assert secret.encode() not in _file_bytes(db)


@pytest.mark.serial
def test_writes_go_on_while_an_erasure_waits_for_a_reader(tmp_path: Path) -> None:
    """A purge behind an open reader (a backup, a ``sqlite3`` shell) waits for it to end;
    meanwhile other handles on the file (other processes) and this process's other
    threads still write. Its checkpoint waited in SQLite's busy handler, which holds
    every writer of the file, and held the store's lock: every write, of every process,
    stalled for as long as the reader stayed (up to the 10 s busy timeout)."""
    secret = "qzsecretmarker98"
    m, db = _sqlite_conversation(tmp_path, secret)
    other = Memory(db, embedder=HashEmbedder(), background_embedding=False)
    with m, other:
        reader = _reader(db)
        closer = threading.Timer(2.0, _end, args=(reader,))
        closer.start()
        erasing = threading.Thread(target=m.forget, args=("ana",))
        erasing.start()
        time.sleep(0.3)  # the erasure is waiting for the reader now
        waits = []
        for i, writer in enumerate([other, m] * 5):
            started = time.monotonic()
            writer.add(f"a note written meanwhile {i}", user_id="bob")
            waits.append(time.monotonic() - started)
        assert erasing.is_alive()  # the writes were made while it waited
        erasing.join()
        closer.join()
        print(f"writes while the erasure waited: max {max(waits) * 1000:.0f} ms")
        assert max(waits) < 0.5
        assert secret.encode() not in _file_bytes(db)
        assert len(other.get_all(user_id="bob", limit=100)) == 11


@pytest.mark.serial
def test_vacuum_behind_an_open_reader_lets_writes_go_on_and_fails_loudly(
    tmp_path: Path,
) -> None:
    """``vacuum`` behind an open reader (a backup) ran one checkpoint under the whole
    busy timeout: every writer of the file stalled until it ran out, and then it said
    nothing (the CLI printed "vacuumed") while the old pages were still in the file,
    with the text of a forget the same reader had left unfinished. It must let writes
    go on, fail loudly, and leave the file to be finished by a later write."""
    secret = "qzsecretmarker97"
    m, db = _sqlite_conversation(tmp_path, secret, busy_timeout_ms=1500)
    other = Memory(db, embedder=HashEmbedder(), background_embedding=False)
    with m, other:
        reader = _reader(db)
        with pytest.raises(StoreError, match="open reader"):
            m.forget("ana")  # erased from every query; its old pages wait for the reader
        failures: list[BaseException] = []

        def vacuum() -> None:
            try:
                m.store.vacuum()
            except BaseException as exc:  # noqa: BLE001 - checked below
                failures.append(exc)

        vacuuming = threading.Thread(target=vacuum)
        vacuuming.start()
        time.sleep(0.3)  # the vacuum is waiting for the reader now
        waits = []
        for i in range(5):
            started = time.monotonic()
            other.add(f"a note written meanwhile {i}", user_id="bob")
            waits.append(time.monotonic() - started)
        assert vacuuming.is_alive()  # the writes were made while it waited
        vacuuming.join()
        assert max(waits) < 0.5, waits
        assert len(failures) == 1 and isinstance(failures[0], StoreError), failures
        assert "vacuumed, but an open reader" in str(failures[0])
        _end(reader)
        other.add("an unrelated later write", user_id="bob")  # finishes it, in any handle
        assert secret.encode() not in _file_bytes(db)
        m.store.vacuum()  # no reader now: it succeeds
        assert len(other.get_all(user_id="bob", limit=100)) == 7


#: Another process that logs turns as fast as it can, and one that reads in short
#: transactions back to back (20 ms each), until killed.
_BUSY_FILE = {
    "writes": """
import sys
from contextos.store.sqlite import SQLiteStore
from contextos.types import Message, Scope
store, scope, i = SQLiteStore(sys.argv[1]), Scope(user_id="bob", session_id="bobs"), 0
while True:
    store.append_turns(scope, [Message("user", f"bob line {i}")], [3])
    i += 1
""",
    "reads": """
import sqlite3, sys, time
reader = sqlite3.connect(sys.argv[1], isolation_level=None)
while True:
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM memories").fetchone()
    time.sleep(0.02)
    reader.execute("COMMIT")
""",
}


@pytest.mark.serial
def test_an_erasure_finishes_while_other_processes_write_and_read_without_pause(
    tmp_path: Path,
) -> None:
    """Under another process's steady writes and short reads, a ``forget`` finishes and
    leaves no byte: its checkpoint tries must hold writers off long enough for the
    readers of the moment to finish (a first version that let go at once found a new
    reader on every try, for 10 s, then reported the erasure unfinished)."""
    db = tmp_path / "m.db"
    with Memory(db, embedder=HashEmbedder(), background_embedding=False) as m:
        busy = [
            subprocess.Popen([sys.executable, "-c", code, str(db)]) for code in _BUSY_FILE.values()
        ]
        try:
            time.sleep(1.5)  # both running
            for n in range(3):
                secret = f"qzsecret{n}marker77"
                m.add({"role": "user", "content": f"my code word is {secret}"}, user_id=f"ana{n}")
                started = time.monotonic()
                assert m.forget(f"ana{n}") == 1
                print(f"forget {n} under load: {time.monotonic() - started:.2f} s")
                assert secret.encode() not in _file_bytes(db)
            assert all(p.poll() is None for p in busy)  # the load ran throughout
        finally:
            for p in busy:
                p.kill()
                p.wait()


def test_an_erasure_left_pending_is_finished_by_the_next_process(tmp_path: Path) -> None:
    secret = "qzsecretmarker95"
    m, db = _sqlite_conversation(tmp_path, secret, busy_timeout_ms=200)
    reader = _reader(db)
    with pytest.raises(StoreError):
        m.forget("ana")
    assert isinstance(m.store, SQLiteStore)
    m.store._db.close()  # a crash: no close(), no retry from this process
    _end(reader)
    with Memory(db, embedder=HashEmbedder()) as again:
        again.add("something else", user_id="bob")
    assert secret.encode() not in _file_bytes(db)


@BOTH
def test_delete_keeps_history_text_by_default_and_purge_removes_it(
    kind: str, tmp_path: Path
) -> None:
    with open_memory(kind, tmp_path) as m:
        [kept] = m.add("qzkeptmarker ordinary note", user_id="ana", session_id="s9")
        [gone] = m.add("qzpurgedmarker private note", user_id="ana", session_id="s9")
        [reply] = m.add({"role": "assistant", "content": "ok"}, user_id="ana", session_id="s9")
        m.delete(kept.id)
        assert [e.event for e in m.history(kept.id)] == ["ADD", "DELETE"]
        assert "qzkeptmarker" in (m.history(kept.id)[-1].old_text or "")
        m.delete(gone.id, purge=True)
        events = m.history(gone.id)
        assert [e.event for e in events] == ["ADD", "DELETE"]
        assert all(e.old_text is None and e.new_text is None for e in events)
        assert "qzpurgedmarker" not in m.get(reply.id).context
        assert m.search("qzpurgedmarker", user_id="ana") == []
        if kind == "sqlite":
            assert b"qzpurgedmarker" not in _file_bytes(tmp_path / "m.db")


@BOTH
def test_forget_reaches_untagged_turns_and_reply_contexts(kind: str, tmp_path: Path) -> None:
    secret = "qzsecretmarker96"
    with open_memory(kind, tmp_path) as m:
        _conversation(m, secret)
        assert m.forget("ana") == 2
        store = m.store
        assert store.turns(Scope(tenant=m.tenant, session_id="s1")) == []
        for rec in store.list(Filter(scope=Scope(tenant=m.tenant, session_id="s1")), limit=100):
            assert secret not in rec.text and secret not in rec.context
        assert [r.text for r in m.get_all(user_id="bob")] == ["bob keeps bobsecretvalue42"]


def test_postgres_forget_then_vacuum_leaves_no_row_and_no_byte(tmp_path: Path) -> None:
    from pg_support import connect, files_holding, pg_url, postgres_store

    secret = "qzsecretmarker97"
    with postgres_store() as store:
        m = Memory(store=store, embedder=HashEmbedder())
        _conversation(m, secret)
        m.forget("ana")
        schema = store.schema
        with connect(pg_url(), schema) as conn:
            for (table,) in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                (schema,),
            ).fetchall():
                n = conn.execute(
                    f"SELECT count(*) FROM {schema}.{table} t WHERE t::text LIKE %s",
                    (f"%{secret}%",),
                ).fetchone()[0]
                assert n == 0, f"{table} still mentions the user"
            _wait_for_older_snapshots(conn)
        store.vacuum()
        m.close()
        found = files_holding(schema, secret.encode())
        if found is None:
            pytest.skip("the test PostgreSQL's data directory is not visible here")
        assert found == [], f"bytes of the user remain in {found}"


def _wait_for_older_snapshots(conn: Any, timeout_s: float = 30.0) -> None:
    """Wait until no other client transaction of the database began before now (at most
    ``timeout_s``): in a parallel run another test's transaction may be open, and
    ``vacuum`` waits for such transactions only 5 s before it says the bytes they may
    read are left (docs/postgres.md)."""
    (now,) = conn.execute("SELECT txid_current() % 4294967296").fetchone()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        (older,) = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND backend_type = 'client backend' AND pid <> pg_backend_pid() "
            "AND (age(backend_xmin) > age(%(now)s::text::xid) "
            "OR age(backend_xid) > age(%(now)s::text::xid))",
            {"now": now},
        ).fetchone()
        if older == 0:
            return
        time.sleep(0.05)


# -- hostile input at the store -------------------------------------------------------------


@BOTH
@pytest.mark.parametrize("key", ["a..b", "a.", ".a", "a'b", "a b", ""])
def test_odd_metadata_filter_keys_are_a_value_error(kind: str, key: str, tmp_path: Path) -> None:
    with open_memory(kind, tmp_path) as m:
        m.add("hello", user_id="ana", metadata={"a": {"b": 1}})
        m.flush()
        # Refused when the filter is made, so no store answers it with nothing
        # (tests/test_api_argument_checks.py: also on a store with no hit).
        with pytest.raises(ValueError, match="metadata filter keys"):
            m.search("hello", user_id="ana", filters=Filter(metadata={key: 1}))
        with pytest.raises(ValueError, match="metadata filter keys"):
            m.get_all(user_id="ana", filters=Filter(metadata={key: 1}))


def test_nul_characters_on_postgres_are_a_value_error_without_server_details(
    tmp_path: Path,
) -> None:
    # A write holding NUL is refused, naming no server; a read by an id holding one
    # answers as for an unknown id, as on SQLite (tests/test_store_nul_ids.py).
    with open_memory("postgres", tmp_path) as m:
        for call in (
            lambda: m.add("a\x00b", user_id="ana"),
            lambda: m.add("hello", user_id="a\x00b"),
        ):
            with pytest.raises(ValueError) as info:
                call()
            assert "127.0.0.1" not in str(info.value) and "contextos_test" not in str(info.value)
        with pytest.raises(NotFound):
            m.get("a\x00b")
        assert m.get_all(user_id="\x00") == []
        assert m.search("x\x00y hello", user_id="ana") == []  # NUL in a query is no error


# -- every hit is re-checked against the whole filter ------------------------------------


def test_filter_matches_checks_every_part_of_the_filter() -> None:
    from contextos.types import MemoryRecord

    t = datetime(2024, 5, 1, tzinfo=UTC)
    rec = MemoryRecord(
        id="r1",
        text="x",
        scope=Scope(tenant="t", user_id="ana", agent_id="bot", session_id="s"),
        memory_type="semantic",
        metadata={"a": {"b": 1}, "k": "v"},
        created_at=t,
        event_time=t,
        valid_from=t,
        valid_to=t + timedelta(days=10),
    )
    now = t + timedelta(days=1)
    yes = Filter(scope=Scope(tenant="t", user_id="ana"))
    assert yes.matches(rec, now)
    for flt in (
        Filter(scope=Scope(tenant="other", user_id="ana")),
        Filter(scope=Scope(tenant="t", user_id="eve")),
        Filter(scope=Scope(tenant="t", agent_id="other")),
        Filter(scope=Scope(tenant="t", session_id="other")),
        Filter(scope=Scope(tenant="t", user_id="ana"), memory_types=("episodic",)),
        Filter(scope=Scope(tenant="t", user_id="ana"), event_after=t + timedelta(seconds=1)),
        Filter(scope=Scope(tenant="t", user_id="ana"), event_before=t),
        Filter(scope=Scope(tenant="t", user_id="ana"), created_after=now),
        Filter(scope=Scope(tenant="t", user_id="ana"), as_of=t - timedelta(days=1)),
        Filter(scope=Scope(tenant="t", user_id="ana"), metadata={"a.b": 2}),
        Filter(scope=Scope(tenant="t", user_id="ana"), metadata={"missing": 1}),
    ):
        assert not flt.matches(rec, now), flt
    assert not yes.matches(rec, t + timedelta(days=11))  # validity closed by then
    assert Filter(scope=yes.scope, include_invalid=True).matches(rec, t + timedelta(days=11))
    assert Filter(scope=yes.scope, metadata={"a.b": 1, "k": "v"}).matches(rec, now)


def test_validity_closed_by_another_connection_hides_the_record(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    with Memory(db, embedder=HashEmbedder()) as m:
        [rec] = m.add("ana lives in Porto", user_id="ana")
        m.flush()
        assert m.search("lives in Porto", user_id="ana")[0].dense_rank == 1
        other = SQLiteStore(db)  # e.g. a reconcile in another process supersedes it
        from contextos.store.base import Patch

        other.update(m.tenant, rec.id, Patch(valid_to=datetime.now(UTC) - timedelta(seconds=1)))
        other.close()
        assert m.search("lives in Porto", user_id="ana") == []


@pytest.mark.serial
def test_reads_do_not_queue_behind_a_write_waiting_for_another_process(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    m = Memory(store=SQLiteStore(db, busy_timeout_ms=3000), embedder=HashEmbedder())
    m.add("ana likes tea", user_id="ana")
    m.flush()
    holder = sqlite3.connect(db)
    holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    writer = threading.Thread(target=lambda: pytest.raises(StoreError, m.add, "x", user_id="b"))
    writer.start()
    time.sleep(0.3)  # the add now waits for the lock, holding the store's write side
    started = time.monotonic()
    assert [r.text for r in m.get_all(user_id="ana")] == ["ana likes tea"]
    assert m.search("tea", user_id="ana")[0].record.text == "ana likes tea"
    assert time.monotonic() - started < 1.5
    writer.join()
    holder.rollback()
    holder.close()
    m.close()


_NO_CLOSE = """
from contextos import Memory
m = Memory()
m.add("I'm allergic to peanuts", user_id="ana")
m.search("what is Ana allergic to?", user_id="ana")
m.add("I live in Lisbon", user_id="ana")
"""


@pytest.mark.slow
def test_a_script_that_never_closes_its_memory_exits_cleanly(tmp_path: Path) -> None:
    # Before: the embedding thread, still inside onnxruntime at interpreter exit, aborted
    # the process ("terminate called without an active exception", exit 134) about one
    # run in three with a cold model cache.
    for run in range(4):
        home = tmp_path / f"home{run}"
        home.mkdir()
        env = {**os.environ, "HOME": str(home), "PYTHONPATH": str(REPO / "src")}
        env.pop("XDG_DATA_HOME", None)
        env.pop("XDG_CACHE_HOME", None)
        env.pop("CONTEXTOS_CACHE_DIR", None)
        env.pop("CONTEXTOS_EMBEDDER", None)
        done = subprocess.run(
            [sys.executable, "-c", _NO_CLOSE], env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, (run, done.returncode, done.stderr[-500:])
