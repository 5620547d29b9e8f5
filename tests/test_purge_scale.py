"""Purging a whole session's turns costs in proportion to the session, not its square.

An offload that found its turns erased (a ``forget`` racing it) purges the archived
copies of a whole session with ``Memory.delete_many``. Each turn's facts were looked up
alone, one scan of the session's records each: 4,000 turns with their facts took 38 s
on SQLite (27 s without facts), during which the tenant's window slot was held and a
crash left the copies for good. A real SQLite file and PostgreSQL. At 2,400 turns the
purge took 5 ms a turn that way (and more the longer the session); it now takes about
0.4 ms, and the bound leaves a slower machine room.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from contextos.memory import Memory
from contextos.store.base import Store
from contextos.testing.embedders import HashEmbedder
from contextos.types import Filter, Scope

TURNS = 2400
#: seconds a turn (with its facts) may take to purge, at TURNS turns
PER_TURN = 0.0025


@pytest.fixture
def memory(store: Store) -> Iterator[Memory]:
    yield Memory(store=store, embedder=HashEmbedder(), background_embedding=False, turn_facts=True)


def purge_seconds(memory: Memory, session: str, turns: int) -> float:
    said = [
        {
            "role": "user" if i % 2 == 0 else "assistant",
            "content": f"turn {i}: I hiked in the Alps with my sister Maria and saw ibex {i}.",
        }
        for i in range(turns)
    ]
    for k in range(0, turns, 200):
        memory.add(said[k : k + 200], user_id="ana", session_id=session)
    scope = Scope(tenant=memory.tenant, user_id="ana", session_id=session)
    records = memory.store.list(Filter(scope=scope), limit=10 * turns)
    ids = [r.id for r in records if "fact_of" not in r.metadata]
    assert len(ids) == turns and len(records) > turns, "each turn has facts beside it"
    start = time.perf_counter()
    assert sorted(memory.delete_many(ids, purge=True)) == sorted(ids)
    seconds = time.perf_counter() - start
    assert memory.store.count(Filter(scope=scope, include_invalid=True)) == 0
    return seconds


def test_purging_a_session_grows_with_the_session_not_its_square(memory: Memory) -> None:
    purge_seconds(memory, "warm", 50)
    seconds = purge_seconds(memory, "long", TURNS)
    per_turn = seconds / TURNS
    assert per_turn < PER_TURN, f"{TURNS} turns purged in {seconds:.2f}s"
