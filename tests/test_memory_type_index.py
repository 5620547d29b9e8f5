"""The read of a scope's stored rules, made for every window, is an index look-up.

Why: ``engine.recall.scope_rules`` lists the scope's current ``procedural`` memories on
every wrapped call and server window; with no index on the type, SQLite walked the
tenant's memories newest first until it had found them (15 ms a window at 50,000
memories, growing with the tenant, an agent's window too). SQLite's V15 and
PostgreSQL's V13 add ``memories_type_user`` and ``memories_type_agent`` (tenant, type,
user or agent, time).
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from contextos.memory import Memory
from contextos.store.sqlite.codec import filter_sql
from contextos.testing.embedders import HashEmbedder
from contextos.types import Filter, Scope


def _plan(db: Path, scope: Scope) -> str:
    """SQLite's plan for the listing the store runs for ``scope``'s procedural memories
    (its own WHERE clause, its own order)."""
    where, params = filter_sql(Filter(scope=scope, memory_types=("procedural",)), time.time())
    sql = (
        f"SELECT m.rowid FROM memories m WHERE {where} "
        "ORDER BY m.created_at DESC, m.rowid DESC LIMIT 100"
    )
    with sqlite3.connect(db) as con:
        return " ".join(row[3] for row in con.execute(f"EXPLAIN QUERY PLAN {sql}", params))


@pytest.mark.parametrize(
    ("scope", "index"),
    [
        (Scope(tenant="default", user_id="ana"), "memories_type_user"),
        (Scope(tenant="default", agent_id="bot"), "memories_type_agent"),
    ],
    ids=["user", "agent"],
)
def test_a_scopes_rules_are_read_through_the_type_index(
    tmp_path: Path, scope: Scope, index: str
) -> None:
    db = tmp_path / "rules.db"
    with Memory(db, embedder=HashEmbedder(), background_embedding=False) as m:
        m.add([f"fact {i}" for i in range(300)], user_id="ana", memory_type="semantic")
        m.add("Always answer in French", user_id="ana", memory_type="procedural")
        m.add("Be brief", agent_id="bot", memory_type="procedural")
        rules = m.get_all(
            user_id=scope.user_id,
            agent_id=scope.agent_id,
            filters=Filter(memory_types=("procedural",)),
        )
    assert [r.memory_type for r in rules] == ["procedural"] * len(rules) and rules
    plan = _plan(db, scope)
    # A seek to the scope's rules: not a walk of the tenant's rules of every user
    # (an index on the tenant and type alone read them all: a review).
    assert f"USING INDEX {index} (tenant=? AND memory_type=? AND" in plan, plan
