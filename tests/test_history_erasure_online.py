"""History, update and listing as the s40 history review found them.

- ``forget(user)`` left the user's words in the history of the assistant's reply in her
  session (stored with an agent id, no user id) that had been deleted earlier without a
  purge (a regenerated answer): history rows named no session, and the erasure reached
  only rows naming the user or records still stored. History events now name their
  memory's session (SQLite V14, PostgreSQL V12), and a forget of the user or of the
  session takes the whole history of every memory a row of it places there. Proved as
  tests/test_forget_bytes.py proves an erasure: SQLite, no byte of the words in the file
  or its -wal; PostgreSQL, no row of any table holding them. A store written by the
  release before (its events name no session) is upgraded in place, and a memory of it
  deleted after the upgrade is found by its DELETE event.
- ``update`` wrote any ``seq`` / ``role`` given (``add`` refuses them): two turns of a
  session had the same number. Another value for a library key is now refused.
- ``Memory.get_all`` paged only by offset: under a concurrent add page 2 repeated page 1.
  It pages by key (``after`` / ``next_after``), the key the HTTP API and CLI use.

Real SQLite files and a real PostgreSQL (``source scripts/postgres.sh start``), a real
``contextos serve`` on loopback, the hash embedder.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cli_support import keyed_client
from contextos.errors import NotFound
from contextos.memory import Memory
from contextos.store.base import Store
from contextos.store.postgres.schema import MIGRATIONS as POSTGRES_MIGRATIONS
from contextos.store.postgres.schema import V12_HISTORY_SESSION
from contextos.store.sqlite import SQLiteStore
from contextos.store.sqlite.schema import MIGRATIONS as SQLITE_MIGRATIONS
from contextos.store.sqlite.schema import V14_HISTORY_SESSION
from contextos.testing.embedders import HashEmbedder
from migration_support import sqlite_sql
from pg_support import connect, fresh_schema, pg_url, rows_mentioning
from store_support import sqlite_file_at

#: Schema versions before the migration that gave history events a session.
BEFORE_SQLITE = SQLITE_MIGRATIONS.index(V14_HISTORY_SESSION)
BEFORE_POSTGRES = POSTGRES_MIGRATIONS.index(V12_HISTORY_SESSION)


def _marker(tag: str) -> str:
    # Distinct leading letters per marker, so FTS prefix compression cannot split one.
    return f"{tag}{secrets.token_hex(10)}"


@dataclass
class Backend:
    """One store's file or schema: opened again at will, searched for words left."""

    kind: str
    open: Callable[[], Store]
    sql: Callable[[str], list[tuple[Any, ...]]]  # on a connection of its own
    holding: Callable[[list[str]], list[str]]  # the words still stored anywhere

    def memory(self) -> Memory:
        return Memory(
            store=self.open(), tenant="acme", embedder=HashEmbedder(), background_embedding=False
        )

    def set_back(self) -> None:
        """The schema as the release before V14 (SQLite) / V12 (PostgreSQL) left it:
        history without its session column, rows written so naming no session."""
        self.sql("DROP INDEX history_session")
        self.sql("ALTER TABLE history DROP COLUMN session_id")
        self.sql("DROP INDEX memories_type_user")  # the later migration's (SQLite V15, PG V13)
        self.sql("DROP INDEX memories_type_agent")
        if self.kind == "sqlite":
            self.sql("DROP INDEX memories_user_time")  # SQLite V18's
            self.sql(f"PRAGMA user_version = {BEFORE_SQLITE}")
        else:
            self.sql(f"DELETE FROM schema_version WHERE version > {BEFORE_POSTGRES}")


def _file_bytes(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlite":
        path = tmp_path / "m.db"

        def in_file(words: list[str]) -> list[str]:
            blob = _file_bytes(path)
            return [w for w in words if w.encode() in blob or w[-12:].encode() in blob]

        yield Backend("sqlite", lambda: SQLiteStore(path), sqlite_sql(path), in_file)
        return
    pytest.importorskip("psycopg")
    from contextos.store.postgres import PostgresStore

    with fresh_schema("histerase") as (url, schema):

        def run(sql: str) -> list[tuple[Any, ...]]:
            with connect(pg_url(), schema) as con:
                cur = con.execute(sql)
                return list(cur.fetchall()) if cur.description else []

        def in_rows(words: list[str]) -> list[str]:
            return sorted({hit.split(": ", 1)[1] for hit in rows_mentioning(url, schema, words)})

        yield Backend("postgres", lambda: PostgresStore(url, schema=schema), run, in_rows)


def _history(m: Memory, memory_id: str) -> list[tuple[str, str | None, str | None]] | None:
    """A memory's history as (event, old text, new text), None when it has none left."""
    try:
        return [(e.event, e.old_text, e.new_text) for e in m.history(memory_id)]
    except NotFound:
        return None


# -- 1. forget reaches the history of memories deleted earlier -------------------------


def test_forget_of_a_user_erases_the_history_of_a_reply_deleted_earlier(
    backend: Backend,
) -> None:
    """The review's repro, and beside it a group chat whose deleted reply stays: the
    rows naming no user in a session another user takes part in are everyone's."""
    passport, group = _marker("pp"), _marker("gr")
    with backend.memory() as m:
        m.add(
            {"role": "user", "content": f"My passport is {passport}"},
            session_id="s1",
            user_id="ana",
        )
        [reply] = m.add(
            {"role": "assistant", "content": f"Saved: passport {passport}"},
            session_id="s1",
            agent_id="bot",
        )
        [edited] = m.add("Noted for you.", session_id="s1", agent_id="bot")
        m.update(edited.id, f"Noted: {passport}")
        m.add(f"ana in the group {group}", session_id="g1", user_id="ana")
        m.add("bob in the group", session_id="g1", user_id="bob")
        [to_all] = m.add(f"Reply to you all: {group}", session_id="g1", agent_id="bot")
        for memory_id in (reply.id, edited.id, to_all.id):
            m.delete(memory_id)  # a regenerated answer: its history keeps the text
        assert _history(m, reply.id) == [
            ("ADD", None, f"Saved: passport {passport}"),
            ("DELETE", f"Saved: passport {passport}", None),
        ]
        assert backend.holding([passport]) == [passport]

        assert m.forget("ana") == 2

        assert _history(m, reply.id) is None
        assert _history(m, edited.id) is None
        assert [e[0] for e in _history(m, to_all.id) or []] == ["ADD", "DELETE"]
        assert [r.text for r in m.get_all(session_id="g1")] == ["bob in the group"]
    assert backend.holding([passport]) == []
    assert backend.holding([group]) == [group]  # the group reply's history


def test_forget_of_a_user_whose_whole_chat_was_deleted_erases_its_history(
    backend: Backend,
) -> None:
    """The app deleted both messages of a chat (no purge), then the user's account: no
    live row named her in that session any more, and the reply's history stayed (the
    s40 upgrade review). A group chat whose other user is left only in history stays
    everyone's."""
    passport, group = _marker("pq"), _marker("gq")
    with backend.memory() as m:
        [asked] = m.add(f"my passport is {passport}", user_id="ana", session_id="c1")
        [reply] = m.add(f"Noted: your passport {passport}", agent_id="bot", session_id="c1")
        [mine] = m.add("ana in the group", user_id="ana", session_id="g1")
        [bobs] = m.add("bob in the group", user_id="bob", session_id="g1")
        [to_all] = m.add(f"Reply to you all: {group}", agent_id="bot", session_id="g1")
        for memory_id in (reply.id, asked.id, mine.id, bobs.id, to_all.id):
            m.delete(memory_id)

        m.forget("ana")

        assert _history(m, reply.id) is None
        assert _history(m, asked.id) is None
        assert [e[0] for e in _history(m, to_all.id) or []] == ["ADD", "DELETE"]
    assert backend.holding([passport]) == []
    assert backend.holding([group]) == [group]


def test_forget_of_a_session_erases_the_history_of_its_memories_deleted_earlier(
    backend: Backend,
) -> None:
    """Every memory of the session, whoever it names, deleted before the forget: the
    limitation the api docs admitted ("names no session: a session's forget cannot find
    it") is gone. Another session's deleted memory keeps its history."""
    words = [_marker(t) for t in ("ua", "ub", "uc")]
    other = _marker("zo")
    with backend.memory() as m:
        [mine] = m.add(f"ana said {words[0]}", session_id="s1", user_id="ana")
        [bots] = m.add(f"bot said {words[1]}", session_id="s1", agent_id="bot")
        [bare] = m.add("bare note", session_id="s1")
        m.update(bare.id, f"bare note {words[2]}")
        [kept] = m.add(f"elsewhere {other}", session_id="s2", agent_id="bot")
        for memory_id in (mine.id, bots.id, bare.id, kept.id):
            m.delete(memory_id)

        assert m.forget(session_id="s1") == 0  # none stored: only their history is left

        assert [_history(m, r.id) for r in (mine, bots, bare)] == [None, None, None]
        assert [e[0] for e in _history(m, kept.id) or []] == ["ADD", "DELETE"]
    assert backend.holding(words) == []
    assert backend.holding([other]) == [other]


# -- 2. a store the release before wrote ------------------------------------------------


def test_a_store_of_the_release_before_is_upgraded_and_its_old_history_found(
    backend: Backend,
) -> None:
    """Written by this code, then set back to the schema before the migration (events
    without a session, as that release wrote them), and opened again: the migration
    adds the column and fills in nothing. A reply stored then and deleted after the
    upgrade is found by its DELETE event, its ADD of before going with it. One deleted
    before the upgrade has no event naming its session (the documented limit): a
    purge of its id still erases it."""
    early, late = _marker("ea"), _marker("la")
    with backend.memory() as m:
        m.add("hello", session_id="s1", user_id="ana")
        [gone_before] = m.add(f"Reply {early}", session_id="s1", agent_id="bot")
        [live] = m.add(f"Reply {late}", session_id="s1", agent_id="bot")
        m.delete(gone_before.id)
    backend.set_back()

    with backend.memory() as m:
        m.delete(live.id)  # after the upgrade: its DELETE names s1
        assert m.forget("ana") == 1
        assert _history(m, live.id) is None
        assert [e[0] for e in _history(m, gone_before.id) or []] == ["ADD", "DELETE"]
        assert backend.holding([late]) == []
        m.delete(gone_before.id, purge=True)
        assert _history(m, gone_before.id) == [("ADD", None, None), ("DELETE", None, None)]
    assert backend.holding([early, late]) == []


def test_the_sqlite_file_set_back_has_the_schema_of_the_release_before(tmp_path: Path) -> None:
    """What the upgrade test sets back is what that release made: the same objects."""
    con = sqlite_file_at(tmp_path / "old.db", BEFORE_SQLITE)
    con.commit()
    con.close()
    SQLiteStore(tmp_path / "new.db").close()
    new = sqlite_sql(tmp_path / "new.db")
    new("DROP INDEX history_session")
    new("ALTER TABLE history DROP COLUMN session_id")
    new("DROP INDEX memories_type_user")  # V15's
    new("DROP INDEX memories_type_agent")
    new("DROP INDEX memories_user_time")  # V18's
    listing = "SELECT type, name, sql FROM sqlite_master ORDER BY 2"
    assert new(listing) == sqlite_sql(tmp_path / "old.db")(listing)


# -- 3. update refuses another value for a library key ---------------------------------


def test_update_refuses_another_value_for_a_library_key(tmp_path: Path) -> None:
    """The review's repro: ``seq`` and ``role`` copied from another turn. Each library
    key refused as ``add`` refuses it, and nothing written; the same values (metadata
    copied whole from the turn) pass, and the next turn is numbered after the last."""
    with Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as m:
        turns = m.add(
            ["Where should we eat?", "Try the noodle bar", "Open on Sunday?"], session_id="s1"
        )
        third = turns[2]
        assert third.metadata["seq"] == 2
        refused = [
            ({"seq": 0}, "'seq' is reserved in a session"),
            ({"seq": True}, "'seq'"),  # JSON true is no number
            ({"seq": 2.0}, "'seq'"),
            ({"role": "tool"}, "'role' is reserved"),
            ({"turn_facts": True}, "'turn_facts' is reserved in a session"),
            ({"utc_offset": 60}, "'utc_offset' is reserved"),
            ({"fact_of": turns[0].id}, "'fact_of' is reserved"),
        ]
        for metadata, message in refused:
            with pytest.raises(ValueError, match=message):
                m.update(third.id, metadata={**third.metadata, **metadata, "tag": "q"})
        assert m.get(third.id).metadata == third.metadata

        tagged = m.update(third.id, metadata={**third.metadata, "tag": "q"})
        assert tagged.metadata == {**third.metadata, "tag": "q"}
        assert m.update(third.id, metadata={"utc_offset": 0}).metadata["seq"] == 2

        [fourth] = m.add("Yes, until 10pm", session_id="s1")
        seqs = sorted(r.metadata["seq"] for r in m.get_all(session_id="s1"))
        assert seqs == [0, 1, 2, 3] and fourth.metadata["seq"] == 3

        # Outside a session, seq is the app's key, as add lets it be.
        [note] = m.add("a note", user_id="ana", metadata={"seq": 1})
        assert m.update(note.id, metadata={"seq": 9}).metadata["seq"] == 9
        with pytest.raises(ValueError, match="'role'"):
            m.update(note.id, metadata={"role": "assistant"})


# -- 4. get_all pages by key -----------------------------------------------------------


def test_get_all_pages_by_key_while_another_client_adds(backend: Backend) -> None:
    """The review's repro: page 2 by offset repeated five of page 1; by key it holds
    only what came after, and ``next_after`` is None on the last page."""
    with backend.memory() as m:
        added = m.add([f"memory {i}" for i in range(20)], user_id="ana")
        first = m.get_all(user_id="ana", limit=10)
        assert isinstance(first, list) and first.next_after is not None
        m.add([f"new {i}" for i in range(5)], user_id="ana")  # another client, meanwhile
        by_offset = m.get_all(user_id="ana", limit=10, offset=10)
        assert {r.id for r in by_offset} & {r.id for r in first}  # the bug, by offset
        second = m.get_all(user_id="ana", limit=10, after=first.next_after)
        assert not {r.id for r in second} & {r.id for r in first}
        assert {r.id for r in first} | {r.id for r in second} == {r.id for r in added}
        assert second.next_after is None  # the last page, though full
        assert m.get_all(user_id="ana", limit=3, after=first.next_after, offset=8) == second[8:]
        small = m.get_all(user_id="ana", limit=10, max_bytes=1)
        assert len(small) == 1 and small.next_after is not None
        for bad in ("nonsense", "1e999,5", ""):
            with pytest.raises(ValueError, match="not a key"):
                m.get_all(user_id="ana", after=bad)
        with pytest.raises(TypeError):
            m.get_all(user_id="ana", after=5)  # type: ignore[arg-type]


# -- 5. the same over HTTP -------------------------------------------------------------


def test_over_http_the_keys_interchange_and_refusals_and_erasure_hold(tmp_path: Path) -> None:
    """A real ``contextos serve`` on the file: a key from ``get_all`` pages
    ``GET /v1/memories`` and the other way round; ``PATCH`` with another ``seq`` is a
    400 that writes nothing; after ``forget`` the deleted reply's history is a 404."""
    db = tmp_path / "m.db"
    secret = _marker("se")
    with Memory(db, tenant="acme", embedder=HashEmbedder(), background_embedding=False) as m:
        m.add([f"memory {i}" for i in range(6)], user_id="ana")
        m.add(f"My pin is {secret}", session_id="s1", user_id="ana")
        [reply] = m.add(f"Got it: {secret}", session_id="s1", agent_id="bot")
        m.delete(reply.id)
        [turn] = m.add("a turn", session_id="s2", user_id="ana")
        page = m.get_all(user_id="ana", limit=3)
    with keyed_client(str(db), "--embedder", "hash") as http:
        listed = http.get("/v1/memories", params={"user_id": "ana", "limit": 3})
        assert [r["id"] for r in listed.json()["results"]] == [r.id for r in page]
        after = http.get(
            "/v1/memories", params={"user_id": "ana", "limit": 3, "after": page.next_after}
        ).json()
        with Memory(db, tenant="acme", embedder=HashEmbedder(), background_embedding=False) as m:
            again = m.get_all(user_id="ana", limit=3, after=page.next_after)
            assert [r["id"] for r in after["results"]] == [r.id for r in again]
            onward = m.get_all(user_id="ana", limit=3, after=after["next_after"])
            assert [r.id for r in onward] == [
                r["id"]
                for r in http.get(
                    "/v1/memories",
                    params={"user_id": "ana", "limit": 3, "after": after["next_after"]},
                ).json()["results"]
            ]

        patched = http.patch(f"/v1/memories/{turn.id}", json={"metadata": {"seq": 5}})
        assert patched.status_code == 400 and "'seq' is reserved" in patched.text
        assert http.get(f"/v1/memories/{turn.id}").json()["metadata"] == turn.metadata

        assert http.get(f"/v1/memories/{reply.id}/history").status_code == 200
        forgot = http.post("/v1/memories/forget", json={"user_id": "ana"})
        assert forgot.status_code == 200, forgot.text
        assert http.get(f"/v1/memories/{reply.id}/history").status_code == 404
    assert secret.encode() not in _file_bytes(db)
