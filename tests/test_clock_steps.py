"""A session written after the clock stepped back (or by a host whose clock is behind)
keeps its order: its turns are numbered after, and answer, the ones before.

Why (a review of clocks): SQLite's ``put`` stamped a session's next turn from this
host's clock, and the session's newest turn is newest by ``created_at``. After an NTP
step back of two minutes the next turns were numbered after, and quoted, a turn from
before the step (two turns numbered 2, a reply indexed as answering the wrong question).
PostgreSQL stamped them after the newest already (``store.base.stamped_after``, now
shared).

The other clock is honest here: the times a process with that clock wrote are written
into the real SQLite file (sqlite3) or the PostgreSQL schema (psycopg), and everything
else goes through the public API.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from contextos.memory import Memory
from contextos.testing.embedders import HashEmbedder
from contextos.types import Filter

BOTH = pytest.mark.parametrize(
    "kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)

#: How far the clock stepped back (seconds): the review's two minutes.
STEP_S = 120


@contextmanager
def _memory(kind: str, tmp_path: Path) -> Iterator[tuple[Memory, str | None]]:
    """A Memory on a real SQLite file or a fresh PostgreSQL schema, and the schema."""
    if kind == "sqlite":
        with Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as m:
            yield m, None
        return
    from pg_support import postgres_store

    with postgres_store() as store:
        m = Memory(store=store, embedder=HashEmbedder(), background_embedding=False)
        try:
            yield m, store.schema
        finally:
            m.close()


def _sql(kind: str, tmp_path: Path, schema: str | None, sqlite_sql: str, pg_sql: str) -> None:
    """Run one statement on the storage as another process would (its own connection)."""
    if kind == "sqlite":
        with sqlite3.connect(tmp_path / "m.db") as db:
            db.execute(sqlite_sql)
        return
    from pg_support import connect, pg_url

    with connect(pg_url(), schema) as conn:
        conn.execute(pg_sql)


@BOTH
def test_turns_after_a_step_back_are_numbered_after_and_answer_their_own_question(
    kind: str, tmp_path: Path
) -> None:
    with _memory(kind, tmp_path) as (m, schema):
        m.add("Where should we eat tonight?", session_id="s1", user_id="ana")
        m.add(
            [{"role": "assistant", "content": "Try the Thai place on 5th."}],
            session_id="s1",
            user_id="ana",
        )
        # Those two were written before this host's clock stepped back STEP_S seconds:
        # stamped STEP_S ahead of the clock as it reads now.
        _sql(
            kind,
            tmp_path,
            schema,
            f"UPDATE memories SET created_at = created_at + {STEP_S}, "
            f"updated_at = updated_at + {STEP_S} WHERE session_id = 's1'",
            f"UPDATE memories SET created_at = created_at + interval '{STEP_S} seconds', "
            f"updated_at = updated_at + interval '{STEP_S} seconds' WHERE session_id = 's1'",
        )
        m.add("What is my dentist's name?", session_id="s1", user_id="ana")
        m.add(
            [{"role": "assistant", "content": "Your dentist is Dr. Okafor."}],
            session_id="s1",
            user_id="ana",
        )
        newest_first = m.get_all(session_id="s1")
        assert [r.metadata.get("seq") for r in newest_first] == [3, 2, 1, 0]
        reply = newest_first[0]
        assert reply.text == "Your dentist is Dr. Okafor."
        assert "What is my dentist's name?" in reply.context
        assert "Thai place" not in reply.context
        created = [r.created_at for r in newest_first]
        assert created == sorted(created, reverse=True) and len(set(created)) == 4


@BOTH
def test_a_fact_closed_by_a_clock_ahead_is_not_current_to_a_reader_behind_it(
    kind: str, tmp_path: Path
) -> None:
    """A close stamps ``valid_to`` with the closing writer's clock: to a reader whose clock
    is behind it (another app server, a host stepped back), the replaced fact was current
    beside the fact that replaced it for as long as the clocks differed (a review: "lives
    in Berlin" listed and searched first beside "moved to Paris", three minutes on)."""
    with _memory(kind, tmp_path) as (m, schema):
        m.add("I live in Berlin.", user_id="ana", infer=True)
        m.add("I moved to Paris.", user_id="ana", infer=True)
        every = m.get_all(user_id="ana", filters=Filter(include_invalid=True))
        closed = [r for r in every if r.valid_to is not None]
        assert [r.text for r in closed] == ["User lives in Berlin."]
        # The close as a writer STEP_S ahead of this process wrote it.
        _sql(
            kind,
            tmp_path,
            schema,
            f"UPDATE memories SET valid_to = valid_to + {STEP_S}, "
            f"updated_at = updated_at + {STEP_S} WHERE id = '{closed[0].id}'",
            f"UPDATE memories SET valid_to = valid_to + interval '{STEP_S} seconds', "
            f"updated_at = updated_at + interval '{STEP_S} seconds' WHERE id = '{closed[0].id}'",
        )
        current = [r.text for r in m.get_all(user_id="ana")]
        found = [h.record.text for h in m.search("where does ana live", user_id="ana")]
        # An end still to come (a fact said to hold until a date) is still judged by the
        # clock: it holds until then.
        [ends] = m.add("Ana's gym pass", user_id="ana")
        _sql(
            kind,
            tmp_path,
            schema,
            f"UPDATE memories SET valid_to = {time.time() + 3600} WHERE id = '{ends.id}'",
            f"UPDATE memories SET valid_to = now() + interval '1 hour' WHERE id = '{ends.id}'",
        )
        holding = [r.text for r in m.get_all(user_id="ana")]
    assert "User lives in Berlin." not in current and "User moved to Paris." in current
    assert "User lives in Berlin." not in found
    assert "Ana's gym pass" in holding


@BOTH
def test_facts_closed_by_a_clock_ahead_leave_the_search_its_candidates(
    kind: str, tmp_path: Path
) -> None:
    """The search's in-process indexes (SQLite's vectors and keywords) judged a close by
    the reader's clock alone: facts closed by a writer ahead of it took every candidate
    place of the search and were dropped only when fetched, and the one current fact,
    ranked below them, was never found."""
    with _memory(kind, tmp_path) as (m, schema):
        crowd = [f"locker code {i}" for i in range(130)]  # more than the candidates (100)
        old = [r.id for text in crowd for r in m.add(text, user_id="ana")]
        [current] = m.add(
            "The new locker code sits on a yellow note inside the blue desk drawer by the "
            "window of the second floor office.",
            user_id="ana",
        )
        ids = ", ".join(f"'{i}'" for i in old)
        # Closed as a writer STEP_S ahead of this process closes them: valid_to is its
        # updated_at, both ahead of this clock.
        _sql(
            kind,
            tmp_path,
            schema,
            f"UPDATE memories SET valid_to = {time.time() + STEP_S}, "
            f"updated_at = {time.time() + STEP_S} WHERE id IN ({ids})",
            f"UPDATE memories SET valid_to = now() + interval '{STEP_S} seconds', "
            f"updated_at = now() + interval '{STEP_S} seconds' WHERE id IN ({ids})",
        )
        found = [h.record.id for h in m.search("locker code", user_id="ana", limit=5)]
    assert found == [current.id]
