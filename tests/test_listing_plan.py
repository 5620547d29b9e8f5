"""A listing reads its own scope, not the tenant (SQLite).

``Memory.get_all`` of a user, its pages and an agent owner's reads list newest first.
For that order SQLite's planner walked the tenant's creation-time index and tested each
record's scope, so a user whose memories are old read every newer memory of every
other user (13-21 ms at 60,000 memories of 600 users, growing with the tenant); and a
session of a big user must not walk that user's records either. The figures here are
the best of several reads, compared with the same listing of a scope whose records are
the newest (a whole page, which the walk finds at once), so the check holds on a loaded machine: the
walk costs tens of times more.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from contextos import Filter, Memory
from contextos.testing.embedders import HashEmbedder

#: Memories newer than the scope that is read, in 200 other scopes.
OTHERS = 20_000
#: The newest scope's memories: a whole page, so that a walk from the newest stops there.
NEWEST = [{"role": "user", "content": f"a new note {i}"} for i in range(100)]


def best_ms(read: Callable[[], object], rounds: int = 7) -> float:
    read()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        read()
        times.append(time.perf_counter() - start)
    return min(times) * 1000


def fill(memory: Memory, scope: Callable[[int], dict[str, str]]) -> None:
    for batch in range(OTHERS // 100):
        memory.add(
            [{"role": "user", "content": f"note {batch}-{i} of a chat"} for i in range(100)],
            dedupe=False,
            **scope(batch),
        )


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("plan") / "plan.db"
    many = Memory(str(path), tenant="many", embedder=HashEmbedder(), background_embedding=False)
    many.add("an old note of the quiet user", user_id="quiet", agent_id="bot")
    many.add("the bot's own old note", agent_id="bot")
    fill(many, lambda batch: {"user_id": f"u{batch}", "agent_id": "bot"})
    many.add(NEWEST, user_id="busy", agent_id="bot", dedupe=False)
    many.close()
    one = Memory(str(path), tenant="one", embedder=HashEmbedder(), background_embedding=False)
    one.add("said in the first session", user_id="big", session_id="first")
    fill(one, lambda batch: {"user_id": "big", "session_id": f"s{batch}"})
    one.add(NEWEST, user_id="big", session_id="last", dedupe=False)
    one.close()
    return path


def limit_of_newest(a: float) -> float:
    """What a read of an old scope may cost against the same read of the newest."""
    return 5 * a + 0.5


def test_a_users_listing_does_not_read_the_other_users_memories(store: Path) -> None:
    with Memory(str(store), tenant="many", embedder=HashEmbedder()) as m:
        assert [r.text for r in m.get_all(user_id="quiet")] == ["an old note of the quiet user"]
        newest = best_ms(lambda: m.get_all(user_id="busy", limit=1))
        oldest = best_ms(lambda: m.get_all(user_id="quiet", limit=1))
        both = best_ms(lambda: m.get_all(user_id="quiet", agent_id="bot", limit=1))
        own = best_ms(lambda: m.get_all(agent_id="bot", filters=Filter(no_user=True), limit=1))
    assert oldest < limit_of_newest(newest), (oldest, newest)
    assert both < limit_of_newest(newest), (both, newest)
    assert own < limit_of_newest(newest), (own, newest)


def test_a_sessions_listing_does_not_read_the_users_other_sessions(store: Path) -> None:
    with Memory(str(store), tenant="one", embedder=HashEmbedder()) as m:
        first = m.get_all(user_id="big", session_id="first")
        assert [r.text for r in first] == ["said in the first session"]
        newest = best_ms(lambda: m.get_all(user_id="big", session_id="last", limit=1))
        oldest = best_ms(lambda: m.get_all(user_id="big", session_id="first", limit=1))
    assert oldest < limit_of_newest(newest), (oldest, newest)
