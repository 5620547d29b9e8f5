"""The SQLite file changed under a process that has it open, or left unwritable.

- Removed or replaced (``rm``, ``mv``, ``cp new.db memory.db`` as a new file, its -wal or
  -shm deleted) while ``contextos serve`` or a long-lived ``Memory`` had it open: SQLite
  wrote on into the file it held, every add was acknowledged (201, "added") and was gone
  after a restart (a review). Now a write checks that the path still names the files it
  opened and fails with a ``StoreFault`` that says so (the server: 500, not 201).
- A read-only open of a read-only database (in a writable folder) leaves its -shm
  read-only; once the file was writable again every write failed with "database is
  busy or unwritable: attempt to write a readonly database", for good (a review). The
  error now names the file and what to do.

Real files; the server case runs the real ``contextos serve`` on loopback, the read-only
case the real CLI in processes without root's power to ignore file modes.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cli_support import cli_env, logged_server
from contextos.errors import StoreError, StoreFault
from contextos.memory import Memory
from contextos.store.sqlite import SQLiteStore
from contextos.testing.embedders import HashEmbedder
from contextos.types import Scope


@pytest.fixture
def memory(tmp_path: Path) -> Iterator[Memory]:
    with Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as m:
        m.add("before", user_id="u")
        yield m


def texts_in(db: Path) -> list[str]:
    """The memories' texts in the file at ``db`` now, read by a new connection."""
    con = sqlite3.connect(db)
    try:
        return sorted(r[0] for r in con.execute("SELECT text FROM memories"))
    finally:
        con.close()


def on_disk(db: Path) -> list[bytes | None]:
    """The bytes at ``db`` and its -wal now (None: no file)."""
    return [p.read_bytes() if (p := Path(f"{db}{e}")).exists() else None for e in ("", "-wal")]


def other_database(tmp_path: Path) -> Path:
    """Another database, with one memory of its own, closed."""
    other = tmp_path / "other" / "o.db"
    other.parent.mkdir()
    with Memory(other, embedder=HashEmbedder(), background_embedding=False) as m:
        m.add("the other database's", user_id="u")
    return other


def remove(db: Path) -> None:
    for end in ("", "-wal", "-shm"):
        Path(f"{db}{end}").unlink()


def remove_wal_and_shm(db: Path) -> None:
    for end in ("-wal", "-shm"):
        Path(f"{db}{end}").unlink()


def replace_by_copy(db: Path) -> None:
    """A backup copied in as a new file (``cp`` to a temporary name, then ``mv``)."""
    other = other_database(db.parent)
    shutil.copy(other, db.with_name("restore.tmp"))
    os.replace(db.with_name("restore.tmp"), db)


CHANGES: dict[str, tuple[Callable[[Path], None], str]] = {
    "rm": (remove, "m.db"),
    "mv": (lambda db: db.rename(db.with_name("moved.db")), "m.db"),
    "replaced": (replace_by_copy, "m.db"),
    "rm -wal -shm": (remove_wal_and_shm, "m.db-wal"),
    "rm -shm": (lambda db: Path(f"{db}-shm").unlink(), "m.db-shm"),
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_a_write_after_the_file_was_removed_or_replaced_fails(
    memory: Memory, tmp_path: Path, change: str
) -> None:
    do, named = CHANGES[change]
    db = tmp_path / "m.db"
    do(db)
    there = on_disk(db)
    with pytest.raises(StoreFault, match="removed or replaced") as err:
        memory.add("after", user_id="u")
    assert str(tmp_path / named) in str(err.value)
    assert "open the database again" in str(err.value)
    with pytest.raises(StoreFault, match="removed or replaced"):  # and the next one too
        memory.add("after, again", user_id="u")
    assert on_disk(db) == there  # nothing written to what the path names now
    assert [r.text for r in memory.get_all(user_id="u")] == ["before"]  # nothing written


def test_writes_go_on_once_the_file_is_back(memory: Memory, tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    db.rename(tmp_path / "away.db")
    with pytest.raises(StoreFault, match="removed or replaced"):
        memory.add("while away", user_id="u")
    (tmp_path / "away.db").rename(db)
    memory.add("back", user_id="u")
    memory.close()
    assert texts_in(db) == ["back", "before"]


def test_a_relative_path_and_another_working_directory_are_no_replacement(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The path is the one the store opened, not the same words read from wherever the
    process has moved since (SQLite made it absolute at open too)."""
    monkeypatch.chdir(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with Memory("rel.db", embedder=HashEmbedder(), background_embedding=False) as m:
        m.add("here", user_id="u")
        monkeypatch.chdir(elsewhere)
        m.add("after a chdir", user_id="u")
        assert len(m.get_all(user_id="u")) == 2
    assert not (elsewhere / "rel.db").exists()


def test_the_server_answers_an_error_not_201_after_the_file_was_removed(tmp_path: Path) -> None:
    """``contextos serve`` on a file then removed (a user resetting memory with ``rm``):
    an add is a 500 ``StoreFault``, not a 201 for a memory that no restart would find,
    and the server's log says why."""
    httpx = pytest.importorskip("httpx")
    from contextos.server.keys import KeyStore

    db = tmp_path / "srv.db"
    with KeyStore(str(db)) as keys:
        key = keys.create("acme").secret
    log = tmp_path / "serve.log"
    with logged_server(str(db), log) as (url, proc):
        headers = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=url, headers=headers, timeout=60) as http:
            body = {"messages": "before", "user_id": "ana"}
            assert http.post("/v1/memories", json=body).status_code == 201
            remove(db)
            resp = http.post("/v1/memories", json={"messages": "after", "user_id": "ana"})
            assert resp.status_code == 500, resp.text
            assert resp.json()["error"]["type"] == "StoreFault"
            assert str(db) not in resp.text  # paths go to the log only
        proc.terminate()
        proc.wait(timeout=30)
    assert "removed or replaced" in log.read_text(encoding="utf-8")


# -- a -wal or -shm left read-only ----------------------------------------------------------

#: Root ignores file modes: the processes of these tests run without that power.
NO_OVERRIDE = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner"]


def as_a_user() -> list[str]:
    """The prefix that runs a command under file modes as an ordinary user's process."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root, which ignores file modes, and no setpriv to drop that")
    return NO_OVERRIDE


def cli(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*as_a_user(), sys.executable, "-m", "contextos", "--db", str(db), *args],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=120,
    )


def test_a_read_only_shm_left_by_a_read_only_open_is_named_with_the_fix(
    tmp_path: Path,
) -> None:
    db = tmp_path / "m.db"
    assert cli(db, "add", "first fact", "-u", "ana").returncode == 0
    db.chmod(0o444)
    listed = cli(db, "list", "-u", "ana")  # a read-only open: supported
    assert listed.returncode == 0 and "first fact" in listed.stdout, listed.stderr
    shm = Path(f"{db}-shm")
    assert shm.exists() and not shm.stat().st_mode & 0o200  # SQLite gave it the file's mode
    db.chmod(0o644)

    refused = cli(db, "add", "second fact", "-u", "ana")
    assert refused.returncode == 1
    message = refused.stderr
    assert f"{shm} is read-only" in message, message
    assert "chmod u+w" in message and "busy" not in message, message

    shm.chmod(0o644)  # what the message says to do
    added = cli(db, "add", "second fact", "-u", "ana")
    assert added.returncode == 0, added.stderr
    assert "second fact" in cli(db, "list", "-u", "ana").stdout


def test_a_busy_database_is_still_called_busy(tmp_path: Path) -> None:
    """Only a read-only refusal with a file this process cannot write is named so: a lock
    held elsewhere stays a plain (busy) StoreError, not a StoreFault."""
    db = tmp_path / "b.db"
    store = SQLiteStore(db, busy_timeout_ms=100)
    try:
        holder = sqlite3.connect(db, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(StoreError, match="busy") as err:
                store.set_session_meta(Scope(tenant="t", session_id="s"), {"k": 1})
            assert not isinstance(err.value, StoreFault)
        finally:
            holder.execute("ROLLBACK")
            holder.close()
    finally:
        store.close()


# -- a damaged file -------------------------------------------------------------------------


def damaged_database(db: Path) -> None:
    """A database of 300 memories of user ana, closed, then four pages overwritten (as a
    backup put in place beside another file's -wal, or a disk fault, leaves it): from
    the one holding the row of the 150th memory, which a listing of ana's memories reads.
    Why there and not the file's middle: the middle moved to pages of an index the
    listing does not read once the schema gained two (V15)."""
    with Memory(db, embedder=HashEmbedder(), background_embedding=False) as m:
        for i in range(300):
            m.add(f"note {i} about gardening and the weather in town {i * 7}", user_id="ana")
    held = db.read_bytes().find(b"note 150 about gardening")
    assert held > 4096, "the row is on a page of its own, past the file's header"
    with db.open("r+b") as f:
        for page in range(held // 4096, held // 4096 + 4):
            f.seek(page * 4096 + 100)
            f.write(bytes(range(256)) * 11)


def test_a_damaged_file_is_a_fault_that_names_it_and_takes_no_more_writes(
    tmp_path: Path,
) -> None:
    """SQLite's "database disk image is malformed" was a plain StoreError ("busy, retry
    after a moment" over HTTP, for ever), and adds were still written into the file."""
    db = tmp_path / "m.db"
    damaged_database(db)
    with Memory(db, embedder=HashEmbedder(), background_embedding=False) as m:
        with pytest.raises(StoreFault, match="malformed") as err:
            m.get_all(user_id="ana", limit=1000)
        assert str(db) in str(err.value) and "backup" in str(err.value)
        before = db.read_bytes()
        with pytest.raises(StoreFault, match="damaged"):
            m.add("written after the damage was seen", user_id="bob")
        assert db.read_bytes() == before
        assert not Path(f"{db}-wal").exists() or b"written after" not in on_disk(db)[1]  # type: ignore[operator]


def test_the_server_answers_a_damaged_file_with_500_and_logs_one_traceback(
    tmp_path: Path,
) -> None:
    httpx = pytest.importorskip("httpx")
    from contextos.server.keys import KeyStore

    db = tmp_path / "srv.db"
    damaged_database(db)
    with KeyStore(str(db)) as keys:
        key = keys.create("default").secret
    log = tmp_path / "serve.log"
    with logged_server(str(db), log) as (url, proc):
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}) as http:
            for _ in range(3):
                resp = http.get("/v1/memories", params={"user_id": "ana", "limit": 1000})
                assert resp.status_code == 500, resp.text
                assert "retry-after" not in resp.headers  # waiting mends nothing
            resp = http.post("/v1/memories", json={"messages": "after", "user_id": "bob"})
            assert resp.status_code == 500 and resp.json()["error"]["type"] == "StoreFault"
        proc.terminate()
        proc.wait(timeout=30)
    said = log.read_text(encoding="utf-8")
    assert said.count(f"store fault: the database file {db} is damaged") == 4, said
    assert said.count("contextos.errors.StoreFault: ") == 1, said  # one traceback: the first
