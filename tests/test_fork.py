"""A Memory and ``os.fork()``, as a web server that imports the app before forking its
workers (gunicorn ``--preload``, a ``multiprocessing`` fork) uses them.

Found by a review: in a forked child every search waited forever (the query pool the
parent had started counted a thread the child did not have), even on a Memory the
child opened itself; and children that used a Memory opened before the fork wrote
through the parent's SQLite connections, so the parent's ``close()`` checkpointed the
WAL under them and acknowledged adds were lost without an error. Now the child opens
its own Memory and it works; one opened before the fork refuses every use with an
error that says so, and the parent's memory is untouched.
"""

from __future__ import annotations

import multiprocessing
import sqlite3
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from contextos.errors import StoreError
from contextos.memory import Memory
from contextos.testing.embedders import HashEmbedder

FORK = multiprocessing.get_context("fork")


def _in_child(target: Any, *args: Any) -> list[Any]:
    """Run ``target(queue, *args)`` in a forked child; what it put on the queue."""
    queue = FORK.Queue()
    child = FORK.Process(target=target, args=(queue, *args))
    child.start()
    child.join(30)
    if child.is_alive():
        child.kill()
        pytest.fail("the forked child did not finish in 30 s")
    out = []
    while not queue.empty():
        out.append(queue.get())
    assert child.exitcode == 0, out
    return out


def _own_memory(queue: Any, db: str) -> None:
    with Memory(db, embedder=HashEmbedder()) as memory:
        memory.add("the child likes plums", user_id="kid")
        memory.flush()
        queue.put([h.record.text for h in memory.search("plums", user_id="kid")])


def test_a_memory_opened_in_a_forked_child_searches(tmp_path: Path) -> None:
    with Memory(tmp_path / "parent.db", embedder=HashEmbedder()) as parent:
        parent.add("the parent likes figs", user_id="ana")
        parent.search("figs", user_id="ana")  # the parent's query pool has a thread now
        assert _in_child(_own_memory, str(tmp_path / "child.db")) == [["the child likes plums"]]


def _inherited(queue: Any, memory: Memory) -> None:
    for verb in (
        lambda: memory.add("written by the child", user_id="ana"),
        lambda: memory.search("figs", user_id="ana"),
        lambda: memory.get_all(user_id="ana"),
    ):
        try:
            verb()
            queue.put("no error")
        except StoreError as exc:
            queue.put(str(exc))
    memory.close()  # leaves the parent's connections alone
    queue.put("closed")


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_a_memory_opened_before_a_fork_refuses_the_child_and_keeps_the_parent(
    kind: str, tmp_path: Path
) -> None:
    with ExitStack() as stack:
        if kind == "sqlite":
            where: dict[str, Any] = {"path_or_url": tmp_path / "m.db"}
        else:
            from pg_support import postgres_store

            where = {"store": stack.enter_context(postgres_store())}
        memory = stack.enter_context(Memory(**where, embedder=HashEmbedder()))
        memory.add("the parent likes figs", user_id="ana")
        memory.flush()
        said = _in_child(_inherited, memory)
        assert said[-1] == "closed"
        for message in said[:-1]:
            assert "before this process was forked" in message, said
        # The parent goes on: nothing the child tried was written, and it still works.
        memory.add("the parent also likes dates", user_id="ana")
        memory.flush()
        texts = sorted(r.text for r in memory.get_all(user_id="ana"))
        assert texts == ["the parent also likes dates", "the parent likes figs"]
        assert memory.search("figs dates", user_id="ana", limit=1)
    if kind == "sqlite":
        with sqlite3.connect(tmp_path / "m.db") as db:
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def _open_same_file(queue: Any, db: str) -> None:
    try:
        with Memory(db, embedder=HashEmbedder()) as memory:
            memory.add("written by the child", user_id="kid")
            queue.put("opened")
    except StoreError as exc:
        queue.put(str(exc))


def test_a_child_may_not_open_a_file_its_parent_had_open_at_the_fork(tmp_path: Path) -> None:
    """SQLite's lock table of a file is per process, in C, and a fork's child inherits
    the parent's: a Memory the child opened on that file took no locks, and another
    process's close then deleted the -wal under the child's writes (a review lost the
    whole database, "file is not a database", to a `contextos status`). The open is
    refused with what to do; the parent and its file are untouched."""
    db = tmp_path / "m.db"
    with Memory(db, embedder=HashEmbedder()) as parent:
        parent.add("the parent likes figs", user_id="ana")
        (said,) = _in_child(_open_same_file, str(db))
        assert "was open in the process this one was forked from" in said, said
        assert "spawn" in said and "after forking" in said
        assert [r.text for r in parent.get_all(user_id="ana")] == ["the parent likes figs"]
    with sqlite3.connect(db) as raw:
        assert raw.execute("SELECT count(*) FROM memories").fetchone() == (1,)


def test_a_child_opens_a_file_its_parent_closed_before_the_fork(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    with Memory(db, embedder=HashEmbedder()) as parent:
        parent.add("the parent likes figs", user_id="ana")
    assert _in_child(_open_same_file, str(db)) == ["opened"]


def test_a_relative_path_and_a_later_chdir_do_not_escape_the_rule(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The file was recorded by the path as given: opened as "m.db", then the process
    # moved to another folder, and the child could open the parent's file again.
    monkeypatch.chdir(tmp_path)
    with Memory("m.db", embedder=HashEmbedder()) as parent:
        parent.add("the parent likes figs", user_id="ana")
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        monkeypatch.chdir(elsewhere)
        (said,) = _in_child(_open_same_file, str(tmp_path / "m.db"))
        assert "was open in the process this one was forked from" in said, said
