"""A purge reaches every copy of the purged text in other records' context.

A reply in a session is indexed with the turn it answers ("replying to ..."); a
purge scrubs that quote. Shaped like real use, on a real SQLite file and a real
PostgreSQL schema: memories added without a session (the plain ``add`` of a list),
a pasted block that starts with a run of blanks, and rows written by an earlier
version, which quoted the previous message outside a session too and quoted the
raw turn, leading blanks included (put as that version wrote them).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest

from contextos import Scope
from contextos.errors import NotFound
from contextos.memory import Memory
from contextos.memory.ingest import build_records, to_messages, validate_options
from contextos.memory.render import FACT_OF
from contextos.store.erasure import scrub_context
from contextos.testing.embedders import HashEmbedder
from contextos.types import MemoryRecord

BOTH = pytest.mark.parametrize("kind", ["sqlite", "postgres"])

#: A pasted, indented block: more blanks before the text than the probe's slack.
INDENT = "\n" + " " * 120


@contextmanager
def open_memory(kind: str, tmp_path: Path) -> Iterator[Memory]:
    """A Memory on a real SQLite file or a fresh PostgreSQL schema."""
    if kind == "sqlite":
        with Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as m:
            yield m
        return
    from pg_support import postgres_store

    with postgres_store() as store:
        m = Memory(store=store, embedder=HashEmbedder(), background_embedding=False)
        try:
            yield m
        finally:
            m.close()


def _stored_anywhere(m: Memory, kind: str, tmp_path: Path, secret: str) -> bool:
    """Whether ``secret`` is in the SQLite file's bytes, or in a live PostgreSQL row."""
    if kind == "sqlite":
        files = [Path(f"{tmp_path / 'm.db'}{s}") for s in ("", "-wal", "-shm")]
        return any(secret.encode() in p.read_bytes() for p in files if p.exists())
    from pg_support import connect, pg_url

    schema = m.store.schema  # type: ignore[attr-defined]
    with connect(pg_url(), schema) as conn:
        tables = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s "
            "AND table_type = 'BASE TABLE'",
            (schema,),
        ).fetchall()
        return any(
            conn.execute(
                f'SELECT count(*) FROM {schema}."{table}" t WHERE t::text LIKE %s',
                (f"%{secret}%",),
            ).fetchone()[0]
            for (table,) in tables
        )


def _legacy_pair(
    m: Memory, said: str, reply: str, scope: Scope
) -> tuple[MemoryRecord, MemoryRecord]:
    """Two records of one ``add`` as an earlier version wrote them: the second quotes
    the first's raw text (leading blanks and all), with or without a session."""
    first, second = build_records(
        to_messages([said, {"role": "assistant", "content": reply}]), validate_options(scope)
    )
    second = replace(second, context=f"replying to {said[:300]}")
    m.store.put([first, second])
    return first, second


# -- memories added without a session -----------------------------------------------------


@BOTH
def test_a_list_added_without_a_session_quotes_nothing_and_purges_clean(
    kind: str, tmp_path: Path
) -> None:
    secret = "qzpinmarker4417"
    with open_memory(kind, tmp_path) as m:
        said, reply = m.add(
            [
                {"role": "user", "content": f"my bank PIN is {secret}"},
                {"role": "assistant", "content": "noted, I will remember"},
            ],
            user_id="ana",
        )
        assert reply.context == m.get(reply.id).context == ""  # no turn answered outside one
        m.delete(said.id, purge=True)
        assert secret not in m.get(reply.id).context
        assert all(secret not in h.record.context for h in m.search(secret, user_id="ana"))
        assert not _stored_anywhere(m, kind, tmp_path, secret)


@BOTH
def test_purge_scrubs_an_earlier_versions_quote_outside_a_session(
    kind: str, tmp_path: Path
) -> None:
    secret = "qzpinmarker4418"
    with open_memory(kind, tmp_path) as m:
        scope = Scope(m.tenant, user_id="ana")
        said, reply = _legacy_pair(m, f"my bank PIN is {secret}", "noted", scope)
        [other] = m.add("an unrelated note", user_id="ana")  # same scope, quotes nothing
        assert secret in m.get(reply.id).context
        m.delete(said.id, purge=True)
        kept = m.get(reply.id)
        assert kept.text == "noted" and kept.context == ""
        assert m.get(other.id).text == "an unrelated note"
        assert all(secret not in h.record.context for h in m.search(secret, user_id="ana"))
        assert not _stored_anywhere(m, kind, tmp_path, secret)


# -- a turn that starts with a run of blanks ----------------------------------------------


@BOTH
def test_a_reply_quotes_the_stripped_turn_and_purge_removes_it(kind: str, tmp_path: Path) -> None:
    secret = "qzdiagnosis4419"
    text = f"my diagnosis is {secret} " + "x" * 190  # stripped, longer than the probe
    with open_memory(kind, tmp_path) as m:
        said, reply = m.add(
            [
                {"role": "user", "content": INDENT + text},
                {"role": "assistant", "content": "I am sorry to hear that"},
            ],
            user_id="ana",
            session_id="s1",
        )
        assert reply.context == f"replying to {text[:300]}"
        m.delete(said.id, purge=True)
        assert m.get(reply.id).context == ""
        assert not _stored_anywhere(m, kind, tmp_path, secret)


@BOTH
def test_a_memory_deleted_without_purge_can_be_purged_later(kind: str, tmp_path: Path) -> None:
    """A plain delete keeps the text in history and in the reply's quote (an audit
    trail); a purge asked for afterwards (the user asks for erasure a week later) must
    still reach both. It answered "no memory" (404 over HTTP, exit 1 in the CLI), and
    only ``forget`` of the whole user could erase the text (a review)."""
    secret = "qzlatepurge7731"
    with open_memory(kind, tmp_path) as m:
        said, reply = m.add(
            [
                {"role": "user", "content": f"my ssn is 078-05-1120 {secret}"},
                {"role": "assistant", "content": "thanks, noted"},
            ],
            user_id="ana",
            session_id="s1",
        )
        loose = m.add(f"my pin is 4321 {secret}x", user_id="ana")[0]
        m.delete(said.id)
        m.delete_many([loose.id])
        assert any(e.old_text for e in m.history(said.id))  # the audit trail, as documented
        assert secret in m.get(reply.id).context

        m.delete(said.id, purge=True)  # no NotFound: the tenant had this memory
        assert m.delete_many([loose.id], purge=True) == []  # already gone: not deleted now

        for memory_id in (said.id, loose.id):
            events = m.history(memory_id)
            assert [e.event for e in events] == ["ADD", "DELETE"]
            assert all(e.old_text is None and e.new_text is None for e in events)
        assert m.get(reply.id).context == ""
        assert not _stored_anywhere(m, kind, tmp_path, secret)
        with pytest.raises(NotFound):
            m.delete(said.id, purge=True)  # nothing left of it now: as for any unknown id
        with pytest.raises(NotFound):
            m.delete("never-had-this-id", purge=True)


@BOTH
def test_purge_scrubs_an_earlier_versions_raw_quote_behind_blanks(
    kind: str, tmp_path: Path
) -> None:
    secret = "qzdiagnosis4420"
    text = f"my diagnosis is {secret} " + "x" * 190
    with open_memory(kind, tmp_path) as m:
        scope = Scope(m.tenant, user_id="ana", session_id="s1")
        said, reply = _legacy_pair(m, INDENT + text, "I am sorry to hear that", scope)
        assert secret in m.get(reply.id).context  # 121 blanks, then the text's first 179
        m.delete(said.id, purge=True)
        assert m.get(reply.id).context == ""
        assert not _stored_anywhere(m, kind, tmp_path, secret)


# -- the scrub itself ---------------------------------------------------------------------


def test_scrub_recognises_a_quote_by_the_quote() -> None:
    text = "a" * 50 + "\n\n   " + "b" * 400
    raw = "\t" * 150 + text
    # An earlier version's quote of the raw turn (blanks first), with a speaker.
    ctx = f"Bob | 08 May 2023 Monday | replying to Ana: {raw[:300]}"
    assert scrub_context(ctx, [text]) == "Bob | 08 May 2023 Monday"
    # A speaker whose name holds ": ", and a short turn quoted whole.
    assert scrub_context("replying to Dr: Who: hello  there", ["hello there"]) == ""
    # Another turn's quote that only starts like the erased text stays.
    assert scrub_context("Bob | replying to ok", ["ok thanks, bye"]) == "Bob | replying to ok"
    # A caption that mentions the mark is not the reply part.
    ctx = "image: replying to a sign | replying to my secret plan"
    assert scrub_context(ctx, ["my secret plan"]) == "image: replying to a sign"


@BOTH
def test_a_turns_facts_leave_no_text_when_the_turn_is_purged_after_a_plain_delete(
    kind: str, tmp_path: Path
) -> None:
    """The facts a ``turn_facts`` Memory stores beside a turn repeat its words. A plain
    delete of the turn deleted them too but kept their text in their own history; a
    purge of the turn asked for later could not tell which deleted records had been
    its facts, and left the text in the file for good (a review's open item)."""
    secret = "Qzfactlocker8812"
    with open_memory(kind, tmp_path) as m:
        said, _reply = m.add(
            [
                {"role": "user", "content": f"My locker code at the gym is {secret}."},
                {"role": "assistant", "content": "Got it."},
            ],
            user_id="ana",
            session_id="s1",
            facts=True,
        )
        facts = m.store.pointing_to(Scope(tenant=m.tenant), FACT_OF, [said.id])
        assert any(secret in f.text for f in facts)  # the case under test: facts repeat it

        m.delete(said.id)
        assert any(e.old_text for e in m.history(said.id))  # the turn's audit trail
        for fact in facts:  # the facts went with it, their text kept by the turn's history
            assert [e.event for e in m.history(fact.id)] == ["ADD", "DELETE"]
            assert all(e.old_text is None and e.new_text is None for e in m.history(fact.id))

        m.delete(said.id, purge=True)
        assert not _stored_anywhere(m, kind, tmp_path, secret)
