"""The in-process vector index holds what a brute force over the same history holds.

Records new to the index are appended a block at a time (loading a file's vectors at
the first search of a process: 60,000 of them took 0.8 s one at a time). A batch can
also hold records already indexed, records that moved to another user, and the same
record twice; whatever the mix, a search must answer as an exact search over the last
vector of each live record would.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime

import numpy as np
import pytest

from contextos.store.sqlite.vector_index import IndexRow, VectorIndex
from contextos.types import Filter, Scope

DIM = 8
USERS = ("ana", "bob", None)
TYPES = ("episodic", "semantic", "procedural")
AGENTS = ("bot", None)
SESSIONS = ("s1", "s2", None)


#: Every user's own search, by type; an agent's and a session's across users; by event time.
FILTERS = [
    *(
        Filter(scope=Scope(tenant="t1", user_id=u), memory_types=types)
        for u in USERS
        for types in ((), ("semantic",), ("episodic", "procedural"))
    ),
    Filter(scope=Scope(tenant="t1", agent_id="bot")),
    Filter(scope=Scope(tenant="t1", user_id="ana", session_id="s1")),
    Filter(scope=Scope(tenant="t1", session_id="s2"), memory_types=("episodic",)),
    Filter(scope=Scope(tenant="t1", user_id="bob"), event_after=datetime.fromtimestamp(20, UTC)),
]


def unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.standard_normal(DIM).astype(np.float32)
    return (v / np.linalg.norm(v)).astype(np.float32)


def row(pick: random.Random, memory_id: str, t: float) -> IndexRow:
    """A record of a random user, agent, session and type, with or without an event time."""
    return IndexRow(
        memory_id,
        "t1",
        pick.choice(USERS),
        pick.choice(AGENTS),
        pick.choice(SESSIONS),
        pick.choice(TYPES),
        t,
        pick.choice([None, t - 30.0, t + 30.0]),
        None,
        None,
    )


def _event(r: IndexRow) -> float:
    """A record's event time, or when it was added where it has none (as the index reads it)."""
    return r.created_at if r.event_time is None else r.event_time


def brute(
    held: dict[str, tuple[IndexRow, np.ndarray, int]], query: np.ndarray, flt: Filter, limit: int
) -> list[tuple[str, float]]:
    hits = [
        (float(vec @ query), seq, r.id)
        for r, vec, seq in held.values()
        if flt.scope.user_id in (None, r.user_id)  # no user given: every user's
        and flt.scope.agent_id in (None, r.agent_id)
        and flt.scope.session_id in (None, r.session_id)
        and (not flt.memory_types or r.memory_type in flt.memory_types)
        and (flt.event_after is None or _event(r) >= flt.event_after.timestamp())
    ]
    hits.sort(key=lambda h: (-h[0], h[1]))
    return [(i, s) for s, _, i in hits[:limit]]


@pytest.mark.parametrize("seed", range(6))
def test_batched_upserts_search_as_an_exact_search_over_the_last_vectors(seed: int) -> None:
    rng = np.random.default_rng(seed)
    pick = random.Random(seed)
    index = VectorIndex(DIM)
    held: dict[str, tuple[IndexRow, np.ndarray, int]] = {}
    order = 0  # the order of writes (ties: none here, the vectors are continuous)
    ids = [f"m{i}" for i in range(120)]
    for step in range(40):
        if step % 5 == 4 and held:
            gone = pick.sample(sorted(held), k=min(len(held), pick.randint(1, 15)))
            index.remove(gone)
            for memory_id in gone:
                del held[memory_id]
            continue
        batch_ids = [pick.choice(ids) for _ in range(pick.randint(1, 40))]
        rows = [row(pick, i, float(step)) for i in batch_ids]
        vecs = np.stack([unit(rng) for _ in rows])
        index.upsert(rows, vecs)
        for r, vec in zip(rows, vecs, strict=True):
            before = held.get(r.id)
            # an update in place keeps its place among ties; a new or moved record goes last
            kept = before is not None and before[0].user_id == r.user_id
            held[r.id] = (r, vec, before[2] if kept and before is not None else order)
            order += 1
        for flt in FILTERS:
            query = unit(rng)
            got = index.search(query, flt, limit=7, now=1e12)
            want = brute(held, query, flt, 7)
            assert [i for i, _ in got] == [i for i, _ in want], (step, flt)
            assert np.allclose([s for _, s in got], [s for _, s in want], atol=1e-5)
    assert len(index) == len(held)
    assert index.missing("t1", ids) == set(ids) - set(held)


def test_a_batch_longer_than_its_vectors_is_refused() -> None:
    index = VectorIndex(DIM)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="2 rows for 1 vectors"):
        index.upsert(
            [row(random.Random(0), "a", 0.0), row(random.Random(1), "b", 0.0)],
            np.stack([unit(rng)]),
        )
    assert len(index) == 0
