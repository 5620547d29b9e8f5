"""The files contextos creates to hold memories are its owner's alone.

A review found the default database readable by every local account: the folder made
with ``mkdir()`` (0755 under umask 022) and the file, -wal and -shm made by SQLite (0644).
Now a folder contextos makes for the default store is 0700, a database file it makes is
0600 and SQLite gives the -wal and -shm that mode; a file or folder the operator made
keeps its mode, and the process's umask is never changed (it is the host application's).
The real CLI in subprocesses, a real server, ``Memory`` on real files, under umask 022.
"""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cli_support import run_cli
from contextos import Memory
from contextos.bench.serve import running_server
from contextos.testing.embedders import HashEmbedder

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(autouse=True)
def usual_umask() -> Iterator[None]:
    """Umask 022, the usual one, which the subprocesses inherit: under 077 every file
    would be private whatever contextos did."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def home_env(tmp_path: Path) -> dict[str, str]:
    """HOME and XDG_DATA_HOME in ``tmp_path``: the default database is
    ``tmp_path/data/contextos/memory.db``."""
    (tmp_path / "home").mkdir()
    return {"HOME": str(tmp_path / "home"), "XDG_DATA_HOME": str(tmp_path / "data")}


def test_the_default_database_and_its_folder_are_the_owners_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = home_env(tmp_path)
    added = run_cli("add", "Ana is allergic to peanuts.", "-u", "ana", env=env)
    assert added.returncode == 0, added.stderr
    folder = tmp_path / "data" / "contextos"
    assert mode(folder) == 0o700
    assert mode(folder / "memory.db") == 0o600
    # Memory() opens the same default file; its -wal and -shm while it is open.
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("CONTEXTOS_DB", raising=False)
    with Memory(embedder=HashEmbedder()) as memory:
        memory.add("Ana's diagnosis is private.", user_id="ana")
        files = sorted(p.name for p in folder.iterdir())
        assert files == ["memory.db", "memory.db-shm", "memory.db-wal"]
        assert {p.name: mode(p) for p in folder.iterdir()} == dict.fromkeys(files, 0o600)


def test_a_new_database_named_with_db_is_0600_and_its_wal_follows(tmp_path: Path) -> None:
    made_by_add = tmp_path / "notes.db"
    added = run_cli("--db", str(made_by_add), "add", "Ana keeps bees.", "-u", "ana")
    assert added.returncode == 0, added.stderr
    assert mode(made_by_add) == 0o600
    made_by_keys = tmp_path / "served.db"
    created = run_cli("keys", "create", "--db", str(made_by_keys), "--tenant", "acme")
    assert created.returncode == 0, created.stderr
    assert mode(made_by_keys) == 0o600
    secret = created.stdout.split()[0]
    with (
        running_server(str(made_by_keys), "--embedder", "hash") as (url, _proc),
        httpx.Client(base_url=url, headers={"Authorization": f"Bearer {secret}"}) as client,
    ):
        stored = client.post("/v1/memories", json={"messages": "Bob's SSN", "user_id": "bob"})
        assert stored.status_code == 201, stored.text
        for end in ("", "-wal", "-shm"):
            assert mode(Path(f"{made_by_keys}{end}")) == 0o600, end


def test_a_file_or_folder_the_operator_made_keeps_its_mode(tmp_path: Path) -> None:
    env = home_env(tmp_path)
    folder = tmp_path / "data" / "contextos"
    folder.mkdir(parents=True)
    folder.chmod(0o750)  # shared with a group, on purpose
    sqlite3.connect(folder / "memory.db").close()
    (folder / "memory.db").chmod(0o640)
    added = run_cli("add", "Ana keeps bees.", "-u", "ana", env=env)
    assert added.returncode == 0, added.stderr
    assert (mode(folder), mode(folder / "memory.db")) == (0o750, 0o640)
    with Memory(str(folder / "memory.db"), embedder=HashEmbedder()) as memory:
        memory.add("Bob keeps goats.", user_id="bob")
        assert mode(folder / "memory.db-wal") == 0o640


def test_opening_a_store_leaves_the_host_applications_umask_alone(tmp_path: Path) -> None:
    with Memory(str(tmp_path / "app.db"), embedder=HashEmbedder()) as memory:
        memory.add("Ana keeps bees.", user_id="ana")
        assert os.umask(0o022) == 0o022
        own = tmp_path / "report.txt"
        own.write_text("the host application's own file")
        assert mode(own) == 0o644
    assert mode(tmp_path / "app.db") == 0o600


def test_the_key_table_in_a_folder_it_makes(tmp_path: Path) -> None:
    """``KeyStore`` makes a missing folder (a server embedding it with its own path)."""
    from contextos.server.keys import KeyStore

    path = tmp_path / "state" / "keys.db"
    with KeyStore(str(path)) as keys:
        keys.create("acme")
    assert (mode(path.parent), mode(path)) == (0o700, 0o600)
