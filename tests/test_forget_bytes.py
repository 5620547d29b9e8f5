"""forget(user) through the server: afterwards none of that user's text is left.

SQLite: no byte of it in the database file, its -wal or its -shm (the store
runs with secure_delete, merges the FTS index and checkpoints the WAL).
PostgreSQL: no row of any table mentions the user or their text.
"""

from __future__ import annotations

import re
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pg_support import connect, fresh_schema, pg_url, rows_mentioning
from server_support import app_client, auth, issue_key


def _marker(tag: str) -> str:
    # Distinct leading letters per marker, so FTS prefix compression cannot split one.
    return f"{tag}{secrets.token_hex(10)}"


def _fill(client: Any, key: str) -> tuple[list[str], list[str]]:
    """Write ana's and bob's data through every route that stores text."""
    h = auth(key)
    ana = [_marker(t) for t in ("qa", "qb", "qc", "qd", "qe", "qf", "qg")]
    bob = [_marker("zz")]
    ids = []
    for word in ana[:3]:
        r = client.post(
            "/v1/memories",
            headers=h,
            json={
                "messages": [{"role": "user", "content": f"ana says {word} about her health"}],
                "user_id": "ana",
                "session_id": "ana-s1",
                "metadata": {"note": ana[3]},
            },
        )
        assert r.status_code == 201
        ids += [x["id"] for x in r.json()["results"]]
    client.patch(f"/v1/memories/{ids[0]}", headers=h, json={"text": f"ana corrected {ana[4]}"})
    client.delete(f"/v1/memories/{ids[1]}", headers=h)
    client.post(
        "/v1/sessions/ana-s1/turns",
        headers=h,
        json={
            "messages": [
                {"role": "user", "content": f"turn {ana[5]}"},
                {"role": "assistant", "content": f"reply {ana[6]}"},
            ],
            "user_id": "ana",
        },
    )
    client.post(
        "/v1/memories", headers=h, json={"messages": f"bob keeps {bob[0]}", "user_id": "bob"}
    )
    client.app.state.tenants.flush()  # vectors and index in place before forgetting
    assert client.post(
        "/v1/memories/search", headers=h, json={"query": ana[2], "user_id": "ana"}
    ).json()["results"]
    return ana, bob


def _forget(client: Any, key: str) -> None:
    h = auth(key)
    resp = client.post("/v1/memories/forget", headers=h, json={"user_id": "ana"})
    assert resp.status_code == 200 and resp.json()["forgotten"] == 2
    assert client.get("/v1/memories", headers=h, params={"user_id": "ana"}).json() == {
        "results": [],
        "limit": 100,
        "offset": 0,
        "next_offset": None,
        "next_after": None,
    }
    assert client.get("/v1/sessions/ana-s1/turns", headers=h).json() == {
        "results": [],
        "next_after_seq": None,
    }


def _raw_bytes(db: Path) -> bytes:
    return b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))


#: A marker's tail: its last 12 characters, all hex (``_marker`` and the tests' own).
_TAIL = 12
_HEX_RUN = re.compile(rb"[0-9a-f]{%d,}" % _TAIL)


def _found(blob: bytes, markers: list[str]) -> list[str]:
    """Markers present in ``blob``, whole or by their tail (what prefix compression keeps).

    A whole marker holds its tail, so this is the markers whose tail is in ``blob``:
    every 12-byte window of each run of hex digits, looked up in a set. Searching the
    blob once per marker and form took seconds for the 3,000 markers of a 2 MB file."""
    tails = {m[-_TAIL:].encode(): m for m in markers}
    assert all(re.fullmatch(rb"[0-9a-f]+", t) for t in tails), "a tail that is not hex"
    seen = set()
    for run in _HEX_RUN.finditer(blob):
        text = run.group()
        seen.update(text[i : i + _TAIL] for i in range(len(text) - _TAIL + 1))
    return [m for m in markers if m[-_TAIL:].encode() in seen]


@pytest.fixture
def ram_dir(tmp_path: Path) -> Iterator[Path]:
    """A folder for a test's SQLite file: on tmpfs (/dev/shm) where there is one with
    room, else ``tmp_path``. The same SQLite file, WAL and checkpoints either way; only
    the fsyncs cost nothing on tmpfs. Why: every purge and forget ends with a
    TRUNCATE checkpoint, and its fsyncs on a loaded CI disk made the 2,100 purges
    below take ~45 s (~5 s on tmpfs)."""
    shm = Path("/dev/shm")
    try:
        roomy = shm.is_dir() and shutil.disk_usage(shm).free > 512 * 1024 * 1024
        folder = Path(tempfile.mkdtemp(prefix="ctxos-forget-", dir=shm)) if roomy else None
    except OSError:  # not writable here
        folder = None
    if folder is None:
        yield tmp_path
        return
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_sqlite_forget_leaves_no_byte_of_the_user(tmp_path: Path) -> None:
    db = tmp_path / "forget.db"
    with app_client(db) as client:
        key = issue_key(client, "acme")
        ana, bob = _fill(client, key)
        assert _found(_raw_bytes(db), ana) == ana  # the scan does see text before forget
        _forget(client, key)
        blob = _raw_bytes(db)  # server still running: file, -wal and -shm as they are now
        assert _found(blob, ana) == []
        assert _found(blob, bob) == bob
    assert _found(_raw_bytes(db), ana) == []


@pytest.fixture
def pg_schema() -> Iterator[tuple[str, str]]:
    with fresh_schema("forget") as url_and_schema:
        yield url_and_schema


@pytest.mark.postgres
def test_postgres_forget_leaves_no_row_of_the_user(
    tmp_path: Path, pg_schema: tuple[str, str]
) -> None:
    url, schema = pg_schema
    with app_client(url) as client:
        key = issue_key(client, "acme")
        ana, bob = _fill(client, key)
        assert len(rows_mentioning(pg_url(), schema, ana)) >= len(ana)
        _forget(client, key)
        assert rows_mentioning(pg_url(), schema, [*ana, "ana-s1"]) == []
        assert rows_mentioning(pg_url(), schema, bob) != []
        with connect(pg_url()) as conn:
            for (table,) in conn.execute(
                "SELECT table_name FROM information_schema.columns WHERE table_schema = %s "
                "AND column_name = 'user_id'",
                (schema,),
            ).fetchall():
                (n,) = conn.execute(
                    f"SELECT count(*) FROM {schema}.\"{table}\" WHERE user_id = 'ana'"
                ).fetchone()
                assert n == 0, table


def test_many_purges_leave_the_full_text_index_intact(ram_dir: Path) -> None:
    # An app that purges as it goes (delete(purge=True) after each exchange): the store
    # merged its FTS index after every purge with 'optimize', and on SQLite 3.40 the
    # index was corrupt after about a thousand of them ("database disk image is
    # malformed" on the next delete, and every search failing after).
    from contextos.memory import Memory
    from contextos.testing.embedders import HashEmbedder

    texts = [f"note number {i} about topic {i % 7} and colour {i % 11}" for i in range(400)]
    with Memory(ram_dir / "purge.db", embedder=HashEmbedder(), background_embedding=False) as m:
        for k in range(30):
            ids = [m.add(t, user_id="u")[0].id for t in texts[k % 3 :: 3][:90]]
            for memory_id in ids[:70]:
                m.delete(memory_id, purge=True)
        hits = m.search("topic 3 colour 5", user_id="u", limit=5)
        assert hits and all("topic" in h.record.text for h in hits)
    import sqlite3

    with sqlite3.connect(ram_dir / "purge.db") as db:  # FTS5's own integrity check
        db.execute("INSERT INTO memories_fts (memories_fts) VALUES ('integrity-check')")


def test_sqlite_forget_leaves_no_byte_in_the_free_space_of_live_pages(ram_dir: Path) -> None:
    # Thousands of three users' rows interleaved: b-tree page splits and rebalances copy
    # cells to other pages and leave the old copies in the free space of pages still in
    # use, which secure_delete never zeroes. Two forgets then left 1-4 of 1,500 erased
    # texts (with the memory and user ids) readable in memories and history leaf pages
    # (a review). forget now ends by rebuilding the file (VACUUM).
    from contextos.memory import Memory
    from contextos.testing.embedders import HashEmbedder

    db = ram_dir / "interleaved.db"
    texts: dict[str, list[str]] = {"ana": [], "bob": [], "carol": []}
    with Memory(db, embedder=HashEmbedder(), background_embedding=False) as m:
        for i in range(1500):
            for user, words in texts.items():  # rows of unequal sizes, as real ones are
                words.append(f"{user}{secrets.token_hex(8)}")
                m.add(f"{words[-1]} is a {'private ' * (user == 'ana')}fact #{i}", user_id=user)
        assert m.forget("bob") == 1500
        assert m.forget("ana") == 1500
        erased = texts["ana"] + texts["bob"]
        blob = _raw_bytes(db)  # still open: the file and its -wal as they are now
        assert _found(blob, erased) == []
        assert _found(blob, texts["carol"]) == texts["carol"]
    assert _found(_raw_bytes(db), erased) == []


def test_a_forget_that_died_before_its_rebuild_is_rebuilt_by_the_next_process(
    tmp_path: Path,
) -> None:
    # The rebuild is owed from the forget's commit (a negative erasure_pending.since): a
    # process killed between the commit and its VACUUM leaves it to the next one to open.
    import sqlite3

    from contextos.memory import Memory
    from contextos.testing.embedders import HashEmbedder

    db = tmp_path / "died.db"
    with Memory(db, embedder=HashEmbedder(), background_embedding=False) as m:
        m.add([f"note {i} " + "x" * 400 for i in range(300)], user_id="bob")
    with sqlite3.connect(db) as raw:  # the file as such a forget's commit leaves it
        # Rows in a run, so whole pages are freed: every other row freed a page or not
        # as the b-trees happened to split (it failed its own setup about 1 run in 8).
        raw.execute("DELETE FROM memories WHERE rowid > 100")
        raw.execute("INSERT INTO erasure_pending (id, since) VALUES (1, -1.0)")
    raw.close()
    with sqlite3.connect(db) as raw:
        assert raw.execute("PRAGMA freelist_count").fetchone()[0] > 0
    raw.close()
    Memory(db, embedder=HashEmbedder(), background_embedding=False).close()
    with sqlite3.connect(db) as raw:
        assert raw.execute("PRAGMA freelist_count").fetchone()[0] == 0  # rebuilt
        assert raw.execute("SELECT count(*) FROM erasure_pending").fetchone()[0] == 0
    raw.close()
