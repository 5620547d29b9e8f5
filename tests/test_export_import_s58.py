"""Export and import: the defects a late review of session 57 left (its items 3 and 6-10,
and the export review's item 10), each shown first by a test that failed.

Real SQLite files or ``:memory:`` stores, the test PostgreSQL where a test says so, the
CLI as a subprocess; a store of the ``Store`` protocol written by a user (the package's
seam) stands in where the test needs a store that refuses a batch or that was written
before ``list_snapshot`` existed.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from cli_support import run_cli
from contextos.agent.files import MemoryFiles
from contextos.agent.lock import owner_lock
from contextos.memory import Memory
from contextos.memory.transfer import (
    FORMAT,
    ImportLineError,
    ImportTruncatedError,
)
from contextos.store.sqlite import SQLiteStore
from contextos.testing.embedders import HashEmbedder
from contextos.types import MemoryRecord, Scope
from pg_support import pg_url, postgres_store

T = TypeVar("T")


def in_thread(action: Callable[[], T], timeout: float = 5.0) -> T:
    """``action()`` run on another thread; fails the test when it has not returned
    within ``timeout`` seconds (it was blocked), re-raises what it raised."""
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(("ok", action()))
        except BaseException as exc:  # handed to the test's thread
            out.append(("err", exc))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"blocked for more than {timeout} s"
    kind, value = out[0]
    if kind == "err":
        raise value
    return value  # type: ignore[no-any-return]


def line(i: int, **more: Any) -> dict[str, Any]:
    return {
        "id": f"m{i}",
        "text": f"memory number {i}",
        "user_id": "u",
        "created_at": "2024-01-01T00:00:00Z",
        **more,
    }


@pytest.fixture
def in_memory() -> Iterator[Memory]:
    """A ``:memory:`` store (its reads share the writer's connection, as a read-only
    file's do) holding six memories."""
    with Memory(":memory:", embedder=HashEmbedder(), background_embedding=False) as m:
        for i in range(6):
            m.add(f"memory {i}", user_id="ana")
        yield m


# -- late review item 3: a :memory: or read-only store's export held its locks -----------


def test_another_threads_search_is_not_blocked_by_a_suspended_export(in_memory: Memory) -> None:
    export = in_memory.export(batch_size=1)
    try:
        assert next(export)["format"] == FORMAT
        next(export)  # the first page read; the export is suspended in it
        hits = in_thread(lambda: in_memory.search("memory", user_id="ana"))
        assert hits
    finally:
        export.close()


def test_the_same_thread_writes_between_two_pages(in_memory: Memory) -> None:
    """A write between two pages failed ("cannot start a transaction within a
    transaction"). Such a store's pages are read each on its own (no one snapshot:
    docs/api.md), so the memory written meanwhile, newer than all, is in the export."""
    export = in_memory.export(batch_size=1)
    got = [next(export), next(export)]
    in_memory.add("written between two pages", user_id="ana")
    got += list(export)
    assert got[-1] == {"end": True, "count": 7}
    assert got[-2]["text"] == "written between two pages"


def test_an_export_read_on_two_threads_leaves_the_store_usable(in_memory: Memory) -> None:
    """A StreamingResponse reads each page on some worker thread: the first pages read
    on one thread and the rest on another raised "cannot release un-acquired lock", and
    every later read from another thread blocked for good."""
    export = in_memory.export(batch_size=1)
    first = in_thread(lambda: [next(export), next(export)])
    rest = list(export)
    assert len(first + rest) == 8 and rest[-1] == {"end": True, "count": 6}
    assert len(in_thread(lambda: in_memory.get_all(user_id="ana"))) == 6


# -- late review item 6: a batch the store refuses -----------------------------------------


class Refusing:
    """A user's store: a real SQLite store whose ``restore`` refuses (ValueError, as
    PostgreSQL's ``DataError`` comes) every batch holding the text "poison", and counts
    the batches it was given."""

    def __init__(self, path: Path) -> None:
        self.inner = SQLiteStore(path)
        self.batches: list[list[str]] = []

    def restore(
        self, records: list[MemoryRecord], *, actor: str = "import"
    ) -> dict[str, MemoryRecord | None]:
        self.batches.append([r.id for r in records])
        if any(r.text == "poison" for r in records):
            raise ValueError("the store cannot store this value")
        return self.inner.restore(records, actor=actor)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_a_refused_batch_names_its_line_stores_the_rest_before_it_and_is_not_retried(
    tmp_path: Path,
) -> None:
    """A ValueError from ``Store.restore`` was retried three times whatever it said, then
    raised bare: no line, no report, the good records of its batch rolled back. Now the
    batch is not retried; its records are stored one at a time up to the refused one,
    whose line is named (``ImportLineError``, ``.report`` counting what was stored)."""
    store = Refusing(tmp_path / "m.db")
    lines = [line(i) for i in range(6)]
    lines[3]["text"] = "poison"
    header = {"format": FORMAT, "version": 1}
    with Memory(store=store, embedder=HashEmbedder(), background_embedding=False) as m:  # type: ignore[arg-type]
        with pytest.raises(ImportLineError, match=r"^line 5: the store cannot store") as caught:
            m.import_records([header, *lines, {"end": True, "count": 6}], batch_size=10)
        assert caught.value.line == 5
        assert caught.value.report.added == 3
        assert sorted(r.id for r in m.get_all(user_id="u")) == ["m0", "m1", "m2"]
        whole = [b for b in store.batches if len(b) > 1]
        assert whole == [[f"m{i}" for i in range(6)]]  # tried once, not three times
        # A broken line after it: the refused line, earlier, is the one said, with what
        # was stored (the batch's failure replaced the broken line's error, without).
        later = [line(10), line(11, text="poison"), "{broken"]
        with pytest.raises(ImportLineError, match=r"^line 2: the store cannot") as caught:
            m.import_records(later, batch_size=10)
        assert caught.value.report.added == 1


def test_a_context_past_what_add_writes_is_refused_by_its_line(tmp_path: Path) -> None:
    with Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as m:
        with pytest.raises(ImportLineError, match=r"^line 1: 'context' is 300,000 char"):
            m.import_records([line(0, context="ab " * 100_000)])
        assert m.import_records([line(0, context="ab " * 1000)]).added == 1


# -- late review item 7: concatenated exports -----------------------------------------


def test_a_section_cut_short_before_a_second_header_is_reported(tmp_path: Path) -> None:
    """``cat nightly-cut.jsonl other.jsonl | contextos import -`` imported as a success:
    the second header reset the count, so the first part's missing end line went
    unnoticed. What was read before the second header is stored, then it is said."""
    with Memory(tmp_path / "a.db", embedder=HashEmbedder(), background_embedding=False) as a:
        for i in range(3):
            a.add(f"ana {i}", user_id="ana")
            a.add(f"bob {i}", user_id="bob")
        ana, bob = list(a.export(user_id="ana")), list(a.export(user_id="bob"))
    with Memory(tmp_path / "t.db", embedder=HashEmbedder(), background_embedding=False) as t:
        with pytest.raises(ImportTruncatedError, match=r"^line 4: .*no end line") as caught:
            t.import_records(ana[:3] + bob)
        assert caught.value.report.added == 2
        assert t.import_records(ana + bob).added == 4  # whole sections one after the other


# -- late review item 10: small ones ---------------------------------------------------


@pytest.mark.parametrize("version", [1.0, True, "1"])
def test_a_header_version_not_the_integer_1_is_refused(tmp_path: Path, version: object) -> None:
    header = {"format": FORMAT, "version": version}
    m = Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False)
    with m, pytest.raises(ImportLineError, match="^line 1: export format version"):
        m.import_records([header, line(0), {"end": True, "count": 1}])


class OldProtocol:
    """A user's store written before ``list_snapshot`` existed and while ``vacuum``
    returned None; it also records the page sizes asked of it."""

    def __init__(self, path: Path) -> None:
        self.inner = SQLiteStore(path)
        self.limits: list[int] = []

    def vacuum(self) -> None:
        self.inner.vacuum()

    def list_after(self, *args: Any, **kwargs: Any) -> Any:
        self.limits.append(kwargs["limit"])
        return self.inner.list_after(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        if name == "list_snapshot":
            raise AttributeError(name)
        return getattr(self.inner, name)


def test_a_store_of_the_old_protocol_exports_and_vacuums(tmp_path: Path) -> None:
    """``Memory.export`` raised AttributeError on a store without ``list_snapshot``, and
    ``contextos vacuum`` TypeError on one whose ``vacuum`` returns None. The export now
    pages with ``list_after`` (not one snapshot: docs/api.md); vacuum gives no notes."""
    store = OldProtocol(tmp_path / "m.db")
    with Memory(store=store, embedder=HashEmbedder(), background_embedding=False) as m:  # type: ignore[arg-type]
        ids = [m.add(f"memory {i}", user_id="u")[0].id for i in range(5)]
        lines = list(m.export(batch_size=2))
        assert [x["id"] for x in lines[1:-1]] == ids and lines[-1]["count"] == 5
        assert m.vacuum() == ()


def test_a_huge_batch_size_reads_bounded_pages(tmp_path: Path) -> None:
    """``export(batch_size=10_000_000)`` read every row's key and size at once (the
    sizing query's limit) before 8 MiB cut the page."""
    store = OldProtocol(tmp_path / "m.db")
    with Memory(store=store, embedder=HashEmbedder(), background_embedding=False) as m:  # type: ignore[arg-type]
        m.add("one memory", user_id="u")
        assert len(list(m.export(batch_size=10_000_000))) == 3
    assert store.limits and max(store.limits) <= 10_000


def test_the_cli_counts_what_it_added_and_names_conflicts_before_a_bad_line(
    tmp_path: Path,
) -> None:
    """A conflicting line 1, then a broken line 2: "1 record before it stored", with
    nothing stored and the conflict never named (export review s57, item 11)."""
    db = tmp_path / "m.db"
    first = line(0)
    assert run_cli("import", "-", db=db, stdin=json.dumps(first) + "\n").returncode == 0
    changed = json.dumps({**first, "text": "changed"})
    bad = run_cli("import", "-", db=db, stdin=changed + "\nnot json\n")
    assert bad.returncode == 2, bad.stderr
    assert "line 2: not JSON" in bad.stderr
    assert "0 added, 0 already stored, 1 conflict" in bad.stderr
    assert "left as stored: m0" in bad.stderr


# -- export review item 10: SQLite's times ---------------------------------------------


def test_times_sqlite_keeps_to_a_few_microseconds_are_no_conflict(tmp_path: Path) -> None:
    """SQLite keeps a time as epoch seconds in a double: past about 2255 and before about
    1685 a time's microseconds come back changed (a few), and a second import of the
    same file reported each such memory as a conflict."""
    times = {
        "created_at": "2600-07-01T12:34:56.654321Z",
        "event_time": "0001-01-01T00:00:00.000001Z",
        "valid_from": "9999-12-30T23:59:59.999999Z",
    }
    with Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as m:
        assert m.import_records([line(0, **times)]).added == 1
        again = m.import_records([line(0, **times)])
        assert (again.already, again.conflicts) == (1, 0)
        # A time that really differs is still a conflict.
        later = {**times, "created_at": "2600-07-01T12:34:56.655321Z"}
        assert m.import_records([line(0, **later)]).conflicts == 1


# -- late review item 8: PostgreSQL's restore lock -------------------------------------


def test_postgresql_restores_queue_past_lock_timeout_and_by_schema() -> None:
    """Restores of one tenant queue on an advisory lock, which was waited for under the
    store's ``lock_timeout`` (5 s): an import behind a batch lasting longer failed with
    a StoreError. Here the waiting handle's ``lock_timeout`` is 300 ms and the other's
    batch lasts 2.4 s (a trigger sleeps 0.8 s a row): it waits and finishes. The lock's
    key named no schema, so a store in another schema of the database waited too."""
    import psycopg

    from contextos.store.postgres import PostgresStore

    with postgres_store(options="-c lock_timeout=300") as short, postgres_store() as elsewhere:
        slow = PostgresStore(pg_url(), schema=short.schema)
        try:
            with psycopg.connect(pg_url(), autocommit=True) as admin:
                admin.execute(
                    f"CREATE FUNCTION {short.schema}.slow_insert() RETURNS trigger "
                    "LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(0.8); RETURN NULL; END $$"
                )
                admin.execute(
                    f"CREATE TRIGGER slow_insert AFTER INSERT ON {short.schema}.memories "
                    f"FOR EACH ROW EXECUTE FUNCTION {short.schema}.slow_insert()"
                )
            holder = Memory(store=slow, embedder=HashEmbedder(), background_embedding=False)
            waiter = Memory(store=short, embedder=HashEmbedder(), background_embedding=False)
            other = Memory(store=elsewhere, embedder=HashEmbedder(), background_embedding=False)
            held = threading.Thread(
                target=holder.import_records, args=([line(i) for i in (1, 2, 3)],)
            )
            held.start()
            try:
                time.sleep(0.4)
                start = time.monotonic()
                assert other.import_records([line(9)]).added == 1
                assert time.monotonic() - start < 1.2  # not queued behind another schema
                assert waiter.import_records([line(4)]).added == 1
            finally:
                held.join()
            assert len(holder.get_all(user_id="u")) == 4
            for m in (holder, waiter, other):
                m.close()
        finally:
            slow.close()


# -- session 58 diff review D1: a restored block or file beside the agent's live one ------


def _block(i: int, label: str, **more: Any) -> dict[str, Any]:
    return line(i, metadata={"source": "core_memory", "label": label}, **more)


def _memory_on(kind: str, tmp_path: Path, stack: contextlib.ExitStack) -> Memory:
    """A Memory on a fresh store of ``kind`` (SQLite file or PostgreSQL schema), both
    closed with ``stack``."""
    if kind == "postgresql":
        store: Any = stack.enter_context(postgres_store())
    else:
        store = SQLiteStore(tmp_path / "m.db")
        stack.callback(store.close)
    return stack.enter_context(
        Memory(store=store, embedder=HashEmbedder(), background_embedding=False)
    )


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_block_or_file_whose_label_or_path_is_held_live_is_a_conflict(
    kind: str, tmp_path: Path
) -> None:
    """The agent reads the oldest record of a block label or file path (a newer one may be
    forged), so an import must not store one beside a live record of exactly its scope:
    a conflict, like an id stored otherwise, the same on every store and batch size. The
    first of a label in the file holds it too; another scope's, or a closed one, is no
    conflict."""
    file = [
        _block(1, "persona"),  # held by the live block: a conflict
        _block(2, "human"),
        _block(3, "human"),  # held by m2, earlier in the file: a conflict
        _block(4, "persona", agent_id="bot"),  # the user's agent's block: another scope
        _block(5, "persona", valid_to="2024-06-01T00:00:00Z"),  # closed: never read
        line(6, metadata={"source": "memory_tool", "path": "/memories/a.md"}),  # held
    ]
    with contextlib.ExitStack() as stack:
        m = _memory_on(kind, tmp_path, stack)
        m.add("live", user_id="u", metadata={"source": "core_memory", "label": "persona"})
        m.add(
            "/memories/a.md\nx",
            user_id="u",
            metadata={"source": "memory_tool", "path": "/memories/a.md"},
        )
        for size, added, already in ((None, 3, 0), (1, 0, 3)):  # run again a line a batch
            report = m.import_records(file, batch_size=size)
            assert (report.added, report.already) == (added, already)
            assert sorted(report.conflict_ids) == ["m1", "m3", "m6"]
        for size in (1, 2, 500):  # a record refused by its id holds no label (review round 2)
            user = f"e{size}"

            def blk(i: int, label: str, user: str = user, **more: Any) -> dict[str, Any]:
                return _block(i, label, id=f"{user}.{i}", user_id=user, **more)

            m.import_records([blk(9, "persona")])
            xs = [blk(1, "x"), blk(2, "x"), blk(3, "x")]
            y = [blk(9, "y", text="changed"), blk(10, "y")]  # 9: its id stored otherwise
            report = m.import_records([*xs, *y], batch_size=size)
            assert (report.added, report.conflicts) == (2, 3), size
            assert sorted(report.conflict_ids) == [f"{user}.{i}" for i in (2, 3, 9)]
            labels = [(r.id, r.metadata["label"]) for r in m.get_all(user_id=user, limit=20)]
            assert sorted(labels) == [
                (f"{user}.1", "x"),
                (f"{user}.10", "y"),
                (f"{user}.9", "persona"),
            ]


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_an_import_waits_for_the_agent_holding_the_owner_lock(kind: str, tmp_path: Path) -> None:
    """The check for a live file and the restore run under the agent's owner lock: a
    file the agent writes while the import waits is seen, and the backup's older one is
    a conflict. Why: the check ran outside the lock, so a file created between the check
    and the restore stood beside the backup's, which the agent read and then erased its
    own with (review s58, round 2). The test holds the lock as the agent's writer does
    and writes the file as it would (the agent's tag)."""
    path, tag = "/memories/notes.md", {"source": "memory_tool", "path": "/memories/notes.md"}
    with contextlib.ExitStack() as stack:
        m = _memory_on(kind, tmp_path, stack)
        MemoryFiles(m, user_id="u").create(path, "old plan")
        backup = list(m.export(user_id="u"))
        MemoryFiles(m, user_id="u").delete(path)
        done: list[Any] = []
        importing = threading.Thread(target=lambda: done.append(m.import_records(backup)))
        with owner_lock(m.store, Scope(tenant=m.tenant, user_id="u"), "files"):
            importing.start()
            importing.join(0.5)
            assert importing.is_alive()  # waiting for the lock, nothing checked yet
            m.add(f"{path}\nNEW plan", user_id="u", metadata=tag)
        importing.join(10)
        assert (done[0].added, done[0].conflicts) == (0, 1)
        assert MemoryFiles(m, user_id="u").read(path) == "NEW plan"


class Listing:
    """A user's store: a real SQLite store that counts the walks through a filtered
    listing (``list_after`` with a metadata filter, from its first page) it was asked for."""

    def __init__(self, path: Path) -> None:
        self.inner = SQLiteStore(path)
        self.listings = 0

    def list_after(self, flt: Any, **kwargs: Any) -> Any:
        self.listings += bool(flt.metadata) and kwargs.get("after") is None  # a walk begun
        return self.inner.list_after(flt, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_the_live_check_lists_each_scope_and_source_once_a_batch(tmp_path: Path) -> None:
    """The check for a live block or file read every record of the owner once for each
    block or file of the file (the metadata filter has no index on SQLite: 29 s for 1,000
    files beside 50,000 records, review s58 round 2); now once a batch for each scope and
    source, whatever the number of files."""
    store = Listing(tmp_path / "m.db")
    files = [
        line(i, metadata={"source": "memory_tool", "path": f"/memories/{i}.md"}) for i in range(40)
    ]
    blocks = [_block(40 + i, label) for i, label in enumerate(("persona", "human"))]
    with Memory(store=store, embedder=HashEmbedder(), background_embedding=False) as m:  # type: ignore[arg-type]
        assert m.import_records([*files, *blocks, line(50, user_id="v")]).added == 43
        assert store.listings == 2  # u's files, u's blocks: one walk each
        store.listings = 0
        assert m.import_records([*files, *blocks], batch_size=21).already == 42
        assert store.listings == 3  # two batches: the files in both, the blocks in the second
