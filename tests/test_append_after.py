"""``Store.append_turns(after=turn)``: an append that follows a turn only while the log
holds it, checked in the append's own transaction.

A wrapped call logs its reply after the question it answers. A ``forget`` that erased
the session between the call's check and its append left the reply in the log, the
first turn of the erased session. On PostgreSQL the erasure also deleted the turns
before it took the session's row, so an append that committed while it ran survived it;
it now locks the session rows first, as appends do.

Real SQLite files (two handles, as two processes) and a fresh PostgreSQL schema.
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from contextos.errors import NotFound
from contextos.types import Message, Scope
from pg_support import two_stores

BOTH = pytest.mark.parametrize("kind", ["sqlite", "postgres"])
ANA = Scope(user_id="ana", session_id="s1")


@BOTH
def test_an_append_after_a_turn_the_log_no_longer_holds_appends_nothing(
    kind: str, tmp_path: Path
) -> None:
    with two_stores(kind, tmp_path) as (store, other):
        [question] = store.append_turns(ANA, [Message("user", "My pin is 4471.")], [6])
        [reply] = store.append_turns(ANA, [Message("assistant", "Noted.")], [2], after=question)
        assert reply.seq == 1
        other.forget(Scope(user_id="ana"))
        with pytest.raises(NotFound, match="no longer holds turn 0"):
            store.append_turns(ANA, [Message("assistant", "Noted.")], [2], after=question)
        assert store.turns(ANA) == []
        # The same seq numbers another turn now (logged after the erasure): not the one
        # the append follows.
        store.append_turns(ANA, [Message("user", "My pin is 4471.")], [6])
        with pytest.raises(NotFound):
            store.append_turns(ANA, [Message("assistant", "Noted.")], [2], after=question)
        assert [t.seq for t in store.turns(ANA)] == [0]


def _race(store: Any, other: Any, scope: Scope, question: Any, lead: float) -> str:
    """A forget of the user on ``other`` and the reply's append after ``question`` on
    ``store``, released together, the append ``lead`` seconds after the forget (before
    it when negative): "appended" or "refused"."""
    start = threading.Barrier(2)
    outcome: list[str] = []

    def forget() -> None:
        start.wait()
        time.sleep(max(0.0, -lead))
        other.forget(Scope(user_id="ana"))

    def reply() -> None:
        start.wait()
        time.sleep(max(0.0, lead))
        try:
            store.append_turns(scope, [Message("assistant", "Noted.")], [2], after=question)
            outcome.append("appended")
        except NotFound:
            outcome.append("refused")

    threads = [threading.Thread(target=forget), threading.Thread(target=reply)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outcome[0]


@BOTH
def test_an_erasure_racing_an_append_after_its_turn_leaves_no_turn_of_the_session(
    kind: str, tmp_path: Path
) -> None:
    """Each round: a question logged, then at once a forget on one handle and the
    reply's append after the question on the other. Whichever commits first, the
    session ends empty: the reply was erased with the question, or never appended."""
    outcomes: list[str] = []
    with two_stores(kind, tmp_path) as (store, other):
        for n in range(60):
            scope = Scope(user_id="ana", session_id=f"s{n}")
            [question] = store.append_turns(scope, [Message("user", f"Question {n}")], [4])
            outcomes.append(_race(store, other, scope, question, ((n % 13) - 6) * 0.0003))
            assert store.turns(scope) == [], f"round {n}: {outcomes[-1]}"
    print(
        f"{kind}: the reply appended first {outcomes.count('appended')} times, refused "
        f"{outcomes.count('refused')} times"
    )
    assert len(outcomes) == 60


SHARED = ["shared-0", "shared-1", "shared-2", "shared-3"]


def _log_questions_and_replies(
    store: Any, user: str, seed: int, stop: float, failures: list[str]
) -> None:
    """Until ``stop``: a question, then a reply after it, in a shared session or the
    user's own."""
    rng = random.Random(seed)
    while time.monotonic() < stop:
        scope = Scope(user_id=user, session_id=rng.choice([*SHARED, f"own-{user}"]))
        try:
            [q] = store.append_turns(scope, [Message("user", f"q by {user}")], [3])
            time.sleep(rng.random() * 0.002)
            store.append_turns(scope, [Message("assistant", f"a by {user}")], [1], after=q)
        except NotFound:
            pass
        except Exception as exc:  # collected: the assertion shows them
            failures.append(f"append: {exc}")


def _forget_over_and_over(store: Any, user: str, stop: float, failures: list[str]) -> None:
    while time.monotonic() < stop:
        try:
            store.forget(Scope(user_id=user))
        except Exception as exc:
            failures.append(f"forget: {exc}")
        time.sleep(0.01)


def _orphan_replies(store: Any) -> list[tuple[str, int, str | None]]:
    """The replies left in a log with no question of their user before them."""
    orphans = []
    for sid in [*SHARED, "own-ana", "own-bob"]:
        turns = store.turns(Scope(session_id=sid))
        for t in turns:
            asked = {p.user_id for p in turns if p.seq < t.seq and p.message.role == "user"}
            if t.message.role == "assistant" and t.user_id not in asked:
                orphans.append((sid, t.seq, t.user_id))
    return orphans


def test_erasures_of_two_users_of_shared_sessions_racing_their_appends_leave_no_orphan() -> None:
    """PostgreSQL, for a few seconds: ana and bob each log questions and then replies after
    them (``after=``) in four shared sessions and one of their own, while each is
    forgotten over and over on other connections. Every erasure succeeds (two erasures
    of users sharing sessions deadlocked: ``forget`` locked session rows that the other
    one's erasure deleted and inserted again), and every reply left in a log follows a
    question of its user (a reply was logged after its question was erased)."""
    pytest.importorskip("psycopg")
    from contextos.store.postgres import PostgresStore
    from pg_support import pg_url, postgres_store

    failures: list[str] = []
    with postgres_store() as first:
        stores = [first] + [PostgresStore(pg_url(), schema=first.schema) for _ in range(3)]
        stop = time.monotonic() + 4
        threads = [
            threading.Thread(
                target=_log_questions_and_replies, args=(stores[0], "ana", 1, stop, failures)
            ),
            threading.Thread(
                target=_log_questions_and_replies, args=(stores[1], "bob", 2, stop, failures)
            ),
            threading.Thread(target=_forget_over_and_over, args=(stores[2], "ana", stop, failures)),
            threading.Thread(target=_forget_over_and_over, args=(stores[3], "bob", stop, failures)),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        orphans = _orphan_replies(first)
        for store in stores[1:]:
            store.close()
    assert failures == [] and orphans == []
