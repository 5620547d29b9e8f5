"""A database this process may not write: reads answer, writes say why, nothing loops.

Real processes on a real SQLite file whose file (or folder) mode forbids writing. The
suite runs as root in CI, where modes do not bind: the processes then run under
``setpriv`` without the capabilities that let root write anywhere, as a user would.

A search used to fail with "attempt to write a readonly database" (the embedding
worker's first pass opened a write transaction to requeue stale vectors, and tried to
claim the pending record) and a long-running Memory logged that failure every second.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from cli_support import run_cli
from contextos.memory import Memory
from contextos.testing.embedders import HashEmbedder

_CAPS = "-dac_override,-dac_read_search,-fowner"

#: Run in a child as a user who may not write the file: open the Memory with its
#: background worker, search, flush, try a write, and stay up 2.5 s (its worker
#: retried every second).
_CHILD = """
import sys, time
from contextos.errors import StoreError
from contextos.memory import Memory
from contextos.testing.embedders import HashEmbedder
with Memory(sys.argv[1], embedder=HashEmbedder()) as m:
    print("hits", [h.record.text for h in m.search("green tea", user_id="ana")])
    print("flushed", m.flush(timeout=5))
    try:
        m.add("more", user_id="ana")
    except StoreError as exc:
        print("refused", exc)
    time.sleep(2.5)
"""


_CRASHING_WRITER = """
import os, sys, time
from contextos.memory import Memory
from contextos.testing.embedders import HashEmbedder
class Slow(HashEmbedder):
    def embed(self, texts):
        time.sleep(60)
        return super().embed(texts)
m = Memory(sys.argv[1], embedder=Slow())
m.add("I like green tea", user_id="ana")
os._exit(0)
"""


def _as_user(argv: list[str]) -> list[str]:
    """``argv`` as a process that file modes bind (root: without its capabilities)."""
    if os.geteuid() != 0:
        return argv
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: file modes cannot be made to bind")
    return ["setpriv", "--bounding-set", _CAPS, "--inh-caps", _CAPS, *argv]


@pytest.fixture(params=["file", "folder"])
def read_only_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    """A database with one memory still waiting for its vector, then made read-only
    by the mode of its file or of its folder."""
    folder = tmp_path / "ro"
    folder.mkdir()
    db = folder / "m.db"
    with Memory(db, embedder=HashEmbedder()) as m:
        m.add("I moved to Lisbon", user_id="ana")
        assert m.flush(timeout=30)
    # A process that dies before its worker embeds what it added.
    subprocess.run([sys.executable, "-c", _CRASHING_WRITER, str(db)], check=True, timeout=120)
    # Read without a checkpoint (a read-only connection leaves the WAL as it is): the
    # memory is still in the write-ahead log, as a crash leaves it.
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as raw:
        assert raw.execute("SELECT count(*) FROM pending_vectors").fetchone() == (1,)
    assert (folder / "m.db-wal").stat().st_size > 0
    locked = db if request.param == "file" else folder
    locked.chmod(0o444 if request.param == "file" else 0o555)
    try:
        yield db
    finally:
        locked.chmod(0o755 if request.param == "folder" else 0o644)


def test_a_long_running_memory_reads_and_refuses_writes_without_retrying(
    read_only_db: Path,
) -> None:
    proc = subprocess.run(
        _as_user([sys.executable, "-c", _CHILD, str(read_only_db)]),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("hits ['I like green tea'")
    assert lines[1] == "flushed False"  # one memory is pending, and nothing here can embed it
    assert lines[2].startswith("refused ") and "read-only" in lines[2]
    assert "failed" not in proc.stderr, proc.stderr


def test_the_cli_searches_a_read_only_database(read_only_db: Path) -> None:
    argv = _as_user([sys.executable, "-m", "contextos.cli", "--json", "search", "green tea"])
    proc = subprocess.run(
        [*argv, "-u", "ana"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "CONTEXTOS_EMBEDDER": "hash", "CONTEXTOS_DB": str(read_only_db)},
    )
    assert proc.returncode == 0, proc.stderr
    assert "I like green tea" in proc.stdout
    assert run_cli("list", "-u", "ana", db=read_only_db).returncode == 0


def _lisbon_db(tmp_path: Path) -> Path:
    """A database in a folder of its own holding one memory of ana's."""
    (tmp_path / "ro").mkdir()
    db = tmp_path / "ro" / "m.db"
    with Memory(db, embedder=HashEmbedder(), background_embedding=False) as m:
        m.add("I moved to Lisbon", user_id="ana")
    return db


def _list_in_read_only_folder(db: Path) -> subprocess.CompletedProcess[str]:
    """``contextos list -u ana`` of ``db``, its folder made read-only meanwhile."""
    db.parent.chmod(0o555)
    try:
        return subprocess.run(
            _as_user([sys.executable, "-m", "contextos.cli", "list", "-u", "ana"]),
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "CONTEXTOS_EMBEDDER": "hash", "CONTEXTOS_DB": str(db)},
        )
    finally:
        db.parent.chmod(0o755)


def test_a_read_only_database_a_later_version_migrated_says_to_upgrade(tmp_path: Path) -> None:
    """A rollback opening, read-only, a file a later contextos migrated: it said "is
    read-only and needs a schema upgrade" (it does not: this contextos is too old), as
    the writable open says "newer than this contextos understands" (a review)."""
    db = _lisbon_db(tmp_path)
    with closing(sqlite3.connect(db)) as raw:
        (version,) = raw.execute("PRAGMA user_version").fetchone()
        raw.execute(f"PRAGMA user_version = {version + 1}")
        raw.execute("PRAGMA journal_mode = DELETE")  # no -wal or -shm left
    proc = _list_in_read_only_folder(db)
    assert proc.returncode == 1, proc.stderr
    assert f"database schema version {version + 1} is newer than this contextos" in proc.stderr


def test_a_read_only_database_of_version_17_is_read_as_it_is(tmp_path: Path) -> None:
    """Schema 18 only adds an index (``memories_user_time``); a file at 17 this process
    may not write was refused as "read-only and needs a schema upgrade" (diff review
    s58). It is read as it is, and the documented way back from 18 (docs/server.md)
    leaves such a file."""
    db = _lisbon_db(tmp_path)
    with closing(sqlite3.connect(db)) as raw:
        raw.executescript("DROP INDEX memories_user_time; PRAGMA user_version = 17;")
        raw.execute("PRAGMA journal_mode = DELETE")  # no -wal or -shm left
    proc = _list_in_read_only_folder(db)
    assert proc.returncode == 0, proc.stderr
    assert "I moved to Lisbon" in proc.stdout


def test_serve_says_at_start_that_its_database_is_read_only(tmp_path: Path) -> None:
    """``contextos serve`` on a file it may not write started without a word; each add
    was the first sign, as a 503 "busy, retry" for ever (a review, after a restore left
    the file owned by another user). Now it says so at start, naming the file, and a
    write is a 500 fault, named in the log."""
    httpx = pytest.importorskip("httpx")
    from contextos.bench.serve import free_port, serve_command, wait_healthy
    from contextos.server.keys import KeyStore

    db = tmp_path / "m.db"
    with Memory(db, embedder=HashEmbedder()) as m:
        m.add("I like green tea", user_id="ana")
    with KeyStore(str(db)) as keys:
        key = keys.create("default").secret
    db.chmod(0o444)
    port = free_port()
    argv = _as_user(serve_command(str(db), port, "--embedder", "hash"))
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, proc, 60)
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}) as http:
            listed = http.get("/v1/memories", params={"user_id": "ana"})
            added = http.post("/v1/memories", json={"messages": "x", "user_id": "ana"})
    finally:
        proc.terminate()
        said = proc.communicate(timeout=30)[0]
        db.chmod(0o644)
    assert f"note: {db} is read-only to this process" in said, said
    assert listed.status_code == 200 and "green tea" in listed.text
    assert added.status_code == 500 and "retry-after" not in added.headers, added.text
    assert f"cannot write the database {db}: it was opened read-only" in said, said


def test_a_database_the_modes_forbid_is_refused_naming_the_permission(tmp_path: Path) -> None:
    """SQLite says "unable to open database file" for a file this process may not read
    and for a new one in a folder it may not write, and the default database in a
    read-only home read as "folder ... does not exist": none named the cause (a
    review, s57). Each now says which permission, on which path."""
    locked, home, unreadable = tmp_path / "locked", tmp_path / "home", tmp_path / "nr.db"
    with Memory(unreadable, embedder=HashEmbedder(), background_embedding=False) as m:
        m.add("I moved to Lisbon", user_id="ana")
    for folder in (locked, home):
        folder.mkdir(mode=0o555)
    unreadable.chmod(0)
    env = {k: v for k, v in os.environ.items() if k not in ("CONTEXTOS_DB", "XDG_DATA_HOME")}
    env |= {"CONTEXTOS_EMBEDDER": "hash", "HOME": str(home)}

    def error(*args: str) -> str:
        argv = _as_user([sys.executable, "-m", "contextos", *args])
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)
        assert proc.returncode == 1 and proc.stdout == "", proc.stderr
        return proc.stderr.splitlines()[-1]

    try:
        assert error("--db", str(locked / "new.db"), "add", "hi", "-u", "ana").endswith(
            f"(permission denied: folder '{locked}' is not writable by this process)"
        )
        assert error("--db", str(unreadable), "list", "-u", "ana").endswith(
            f"(permission denied: this process may not read '{unreadable}')"
        )
        default = error("add", "hi", "-u", "ana")
        assert "does not exist (permission denied: folder" in default
        assert default.endswith(f"'{home}' is not writable by this process)")
    finally:
        unreadable.chmod(0o600)
        for folder in (locked, home):
            folder.chmod(0o755)
