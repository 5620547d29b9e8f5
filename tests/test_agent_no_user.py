"""``Filter(no_user=True)``: the records of no user (an agent's own, not its users').

An agent-only owner (``agent_id`` alone) of core blocks and memory-tool files read its
records through a scope that also matched every user's ``user+agent`` records, and
kept its own in Python: its commands read every user's blocks (40 ms against 2 ms at
3,000 users, a review, s57). Each store now leaves the users' records out where it
reads: in SQL (SQLite and PostgreSQL), in the SQLite store's vector and keyword
indexes, and in ``Filter.matches``. Checked on both stores with their real parts.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from contextos import Memory
from contextos.agent.core_memory import CoreMemory
from contextos.agent.files import MemoryFiles
from contextos.memory.reconcile import INFERRED, find_similar
from contextos.store.base import Store
from contextos.store.sqlite import SQLiteStore
from contextos.testing.embedders import HashEmbedder
from contextos.types import Filter, MemoryRecord, Scope, content_hash

USERS = 12


def _fill(memory: Memory) -> dict[str, str]:
    """Records of the agent ``bot`` alone, of ``bot`` in a session, of users with
    ``bot``, of a user alone and of another agent, each naming "tea"; their ids by name."""
    ids: dict[str, str] = {}

    def add(name: str, **scope: Any) -> None:
        text = f"{name} likes tea" + " and tea" * (3 if "user_id" in scope else 0)
        ids[name] = memory.add(text, dedupe=False, **scope)[0].id

    add("own", agent_id="bot")
    add("own-session", agent_id="bot", session_id="s1")
    for u in range(USERS):
        add(f"user{u}", user_id=f"user{u}", agent_id="bot")
    add("user-alone", user_id="user0")
    add("other-agent", agent_id="other")
    return ids


def _names(ids: dict[str, str], found: list[str]) -> set[str]:
    by_id = {v: k for k, v in ids.items()}
    return {by_id[i] for i in found}


@pytest.fixture
def filled(store: Store) -> Iterator[tuple[Memory, dict[str, str]]]:
    with Memory(store=store, embedder=HashEmbedder(), background_embedding=False) as memory:
        yield memory, _fill(memory)


NO_USER = {"own", "own-session"}


def test_a_list_and_a_count_of_no_user_leave_the_users_out(
    filled: tuple[Memory, dict[str, str]],
) -> None:
    """The SQL of each store: a list and a count by agent with ``no_user``."""
    memory, ids = filled
    flt = Filter(scope=Scope(tenant=memory.tenant, agent_id="bot"), no_user=True)
    rows = memory.store.list_after(flt, limit=100)
    assert _names(ids, [r.id for r, _ in rows]) == NO_USER
    assert memory.store.count(flt) == len(NO_USER)
    page = memory.get_all(agent_id="bot", filters=Filter(no_user=True))
    assert _names(ids, [r.id for r in page]) == NO_USER
    # Without it, the agent's scope holds its users' records too (unchanged).
    assert len(memory.get_all(agent_id="bot")) == len(NO_USER) + USERS


def test_both_searches_of_no_user_rank_only_records_of_no_user(
    filled: tuple[Memory, dict[str, str]],
) -> None:
    """Each ranking on its own (SQLite's in-process vector and keyword indexes,
    PostgreSQL's SQL), then ``Memory.search``: the users' records score higher (more
    "tea") and are still never ranked, and the agent's own are found at any limit."""
    memory, ids = filled
    store = memory.store
    vector = HashEmbedder().embed(["likes tea and tea and tea"])[0]
    # Without it the searches reach the users (SQLite's indexes then hold every
    # user's block, which the searches below must leave out).
    wide = Filter(scope=Scope(tenant=memory.tenant, agent_id="bot"))
    assert len(store.keyword_search(wide, "tea", limit=50)) == len(NO_USER) + USERS
    assert len(store.vector_search(wide, vector, limit=50)) == len(NO_USER) + USERS
    flt = Filter(scope=Scope(tenant=memory.tenant, agent_id="bot"), no_user=True)
    for limit in (1, 50):
        by_words = [r.id for r in store.keyword_search(flt, "tea", limit=limit)]
        by_vector = [r.id for r in store.vector_search(flt, vector, limit=limit)]
        assert len(by_words) == len(by_vector) == min(limit, len(NO_USER))
        assert _names(ids, by_words) <= NO_USER
        assert _names(ids, by_vector) <= NO_USER
    hits = memory.search("tea", agent_id="bot", filters=Filter(no_user=True), limit=50)
    assert _names(ids, [h.record.id for h in hits]) == NO_USER


def test_no_user_with_a_session_or_a_type_narrows_as_usual(
    filled: tuple[Memory, dict[str, str]],
) -> None:
    memory, ids = filled
    page = memory.get_all(agent_id="bot", session_id="s1", filters=Filter(no_user=True))
    assert _names(ids, [r.id for r in page]) == {"own-session"}
    hits = memory.search("tea", session_id="s1", filters=Filter(no_user=True))
    assert _names(ids, [h.record.id for h in hits]) == {"own-session"}


def _record(user_id: str | None) -> MemoryRecord:
    at = datetime(2025, 1, 1, tzinfo=UTC)
    return MemoryRecord(
        id="r",
        text="t",
        scope=Scope(user_id=user_id, agent_id="bot"),
        memory_type="semantic",
        created_at=at,
        updated_at=at,
    )


def test_filter_matches_only_records_of_no_user() -> None:
    """The check the retriever makes of every hit (a stale index's too)."""
    now = datetime(2025, 1, 2, tzinfo=UTC)
    flt = Filter(scope=Scope(agent_id="bot"), no_user=True)
    assert flt.matches(_record(None), now)
    assert not flt.matches(_record("ana"), now)
    assert Filter(scope=Scope(agent_id="bot")).matches(_record("ana"), now)


def test_no_user_beside_a_user_or_not_a_bool_is_refused(memory: Memory) -> None:
    with pytest.raises(ValueError, match="no user"):
        Filter(scope=Scope(user_id="ana"), no_user=True)
    with pytest.raises(ValueError, match="no user"):
        memory.get_all(user_id="ana", filters=Filter(no_user=True))
    with pytest.raises(ValueError, match="no user"):
        memory.search("tea", user_id="ana", filters=Filter(no_user=True))
    with pytest.raises(TypeError, match="no_user"):
        Filter(no_user="yes")  # type: ignore[arg-type]


# -- the agent tools ------------------------------------------------------------------


def _owners(memory: Memory) -> None:
    """Blocks and files of the agent alone and of users with it."""
    CoreMemory(memory, agent_id="bot").set("persona", "I am the bot.")
    MemoryFiles(memory, agent_id="bot").create("/memories/bot.md", "the bot's note")
    for u in range(USERS):
        CoreMemory(memory, user_id=f"user{u}", agent_id="bot").set("human", f"I am user{u}.")
        MemoryFiles(memory, user_id=f"user{u}", agent_id="bot").create(
            "/memories/bot.md", f"user{u}'s note"
        )


def test_an_agent_only_owner_sees_exactly_its_own_blocks_and_files(store: Store) -> None:
    with Memory(store=store, embedder=HashEmbedder(), background_embedding=False) as memory:
        _owners(memory)
        bot = CoreMemory(memory, agent_id="bot")
        assert {b.label: b.value for b in bot.blocks() if b.value} == {"persona": "I am the bot."}
        assert bot.get("human").value == ""
        files = MemoryFiles(memory, agent_id="bot")
        assert [(f.path, f.content) for f in files.files()] == [
            ("/memories/bot.md", "the bot's note")
        ]
        # A user-scoped owner is unchanged: its own block and file, not the bot's.
        ana = CoreMemory(memory, user_id="user3", agent_id="bot")
        assert ana.get("human").value == "I am user3."
        assert ana.get("persona").value == ""
        assert MemoryFiles(memory, user_id="user3", agent_id="bot").read("/memories/bot.md") == (
            "user3's note"
        )


class CountingStore(SQLiteStore):
    """A real SQLite store that counts the records its lists hand back."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.listed = 0

    def list_after(self, flt: Filter, **kwargs: Any) -> list[tuple[MemoryRecord, str]]:  # type: ignore[override]
        found = super().list_after(flt, **kwargs)
        self.listed += len(found)
        return found


def test_an_agent_only_owner_reads_none_of_its_users_records(tmp_path: Path) -> None:
    """The shape of the cost: the agent's own block and file are read, not its users'
    (before, a read of each was one row per user: 40 ms at 3,000 users)."""
    store = CountingStore(tmp_path / "m.db")
    with Memory(store=store, embedder=HashEmbedder(), background_embedding=False) as memory:
        _owners(memory)
        store.listed = 0
        assert CoreMemory(memory, agent_id="bot").get("persona").value == "I am the bot."
        assert store.listed == 1
        store.listed = 0
        assert MemoryFiles(memory, agent_id="bot").read("/memories/bot.md") == "the bot's note"
        assert store.listed == 1


def test_a_keyword_search_of_no_user_reads_only_the_block_of_no_user(tmp_path: Path) -> None:
    """SQLite's keyword index reads a user's rows whole at their first search: one of
    no user reads the rows of no user, not every user's of the tenant."""
    path = tmp_path / "m.db"
    with Memory(path, embedder=HashEmbedder(), background_embedding=False) as memory:
        ids = _fill(memory)
    store = SQLiteStore(path)
    try:
        flt = Filter(scope=Scope(agent_id="bot"), no_user=True)
        assert _names(ids, [r.id for r in store.keyword_search(flt, "tea", limit=50)]) == NO_USER
        index = store._lexical  # noqa: SLF001 - what is read into memory is the point here
        assert index is not None and index.blocks_held() == 1
    finally:
        store.close()


def _fact(text: str, user_id: str | None) -> MemoryRecord:
    at = datetime(2025, 1, 1, tzinfo=UTC)
    return MemoryRecord(
        id=str(uuid.uuid4()),
        text=text,
        scope=Scope(tenant="t1", user_id=user_id, agent_id="bot"),
        memory_type="semantic",
        metadata={INFERRED: True},
        created_at=at,
        updated_at=at,
        hash=content_hash(text),
    )


def test_an_agents_own_fact_is_found_behind_a_thousand_of_its_users(store: Store) -> None:
    """What an agent-only add is reconciled with: its own fact, however many of its
    users' facts rank above it (searched wide and kept after, the search stopped at
    1,000 of them and the candidate was added beside the agent's own fact)."""
    own = _fact("The bot's office moved to Paris near the river last spring.", None)
    store.put([_fact("Paris Paris Paris.", f"user{u}") for u in range(1001)] + [own])
    scope = Scope(tenant="t1", agent_id="bot")
    assert [r.id for r in find_similar(store, scope, "Paris", k=1)] == [own.id]
