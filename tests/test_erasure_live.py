"""Erasure and updates seen by objects that live on while the application runs.

Shaped like real use: a wrapped SDK client (one long-lived ``Session``) keeps
calling while ``forget`` runs in the same process or through a second Memory on
the same file or schema (as the server or the CLI would); a session shared by
two users is compacted and then one of them is forgotten; a record's metadata
changes under the embedding worker. Both stores wherever the code is per store.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from contextos import Filter, Scope, wrap
from contextos.engine.session import CompactionResult, Session
from contextos.engine.summarize import ExtractiveSummarizer, Summary
from contextos.memory import Memory
from contextos.memory.embedding_worker import embed_pending
from contextos.memory.ingest import build_records, to_messages, validate_options
from contextos.memory.render import embedding_text
from contextos.memory.turn_vectors import embed_records
from contextos.store.base import Patch, Store
from contextos.testing.embedders import HashEmbedder
from contextos.testing.fake_anthropic import FakeAnthropic
from contextos.types import MemoryRecord, Message, Turn

BOTH = pytest.mark.parametrize("kind", ["sqlite", "postgres"])
MODEL = "claude-haiku-4-5"

#: A second handle on the same storage: ``with second() as other: ...``.
Second = Callable[[], AbstractContextManager[Memory]]


@contextmanager
def live_memory(kind: str, tmp_path: Path) -> Iterator[tuple[Memory, Second]]:
    """A Memory on a real SQLite file or a fresh PostgreSQL schema (vectors written
    inline), and a way to open a second, independent Memory on the same storage."""
    if kind == "sqlite":
        db = tmp_path / "m.db"

        def second_sqlite() -> AbstractContextManager[Memory]:
            return Memory(db, embedder=HashEmbedder(), background_embedding=False)

        with Memory(db, embedder=HashEmbedder(), background_embedding=False) as m:
            yield m, second_sqlite
        return
    from contextos.store.postgres import PostgresStore
    from pg_support import pg_url, postgres_store

    with postgres_store() as store:

        def second_pg() -> AbstractContextManager[Memory]:
            other = PostgresStore(pg_url(), schema=store.schema)
            return Memory(store=other, embedder=HashEmbedder(), background_embedding=False)

        m = Memory(store=store, embedder=HashEmbedder(), background_embedding=False)
        try:
            yield m, second_pg
        finally:
            m.close()


def _file_bytes(db: Path) -> bytes:
    return b"".join(
        p.read_bytes() for s in ("", "-wal", "-shm") if (p := Path(f"{db}{s}")).exists()
    )


def _rows_mentioning(memory: Memory, text: str) -> list[str]:
    """The tables of a PostgreSQL store with a row whose text holds ``text``."""
    from pg_support import connect, pg_url

    schema = memory.store.schema  # type: ignore[attr-defined]
    found = []
    with connect(pg_url(), schema) as conn:
        tables = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,)
        ).fetchall()
        for (table,) in tables:
            n = conn.execute(
                f"SELECT count(*) FROM {schema}.{table} t WHERE t::text LIKE %s", (f"%{text}%",)
            ).fetchone()[0]
            if n:
                found.append(table)
    return found


# -- 1. a long-lived Session after forget ---------------------------------------------------


def _ask(client: Any, text: str) -> None:
    client.messages.create(model=MODEL, max_tokens=64, messages=[{"role": "user", "content": text}])
    client.flush()  # the reply and the remembered exchange are written


def _last_body(fake: FakeAnthropic) -> str:
    return json.dumps(fake.messages_requests()[-1].json())


@BOTH
@pytest.mark.parametrize("by", ["this-memory", "second-memory"])
def test_a_wrapped_client_sends_no_erased_turn_and_sees_the_turns_after(
    kind: str, by: str, tmp_path: Path, fake_anthropic: FakeAnthropic, anthropic_client: Any
) -> None:
    secret = "qzpin4471"
    with live_memory(kind, tmp_path) as (memory, second):
        wrapped = wrap_client(anthropic_client, memory)
        _ask(wrapped, f"My PIN is {secret}, keep it secret.")
        _ask(wrapped, "What is the weather?")
        assert secret in _last_body(fake_anthropic)  # the history carries it before
        if by == "this-memory":
            assert memory.forget("ana") > 0
        else:
            with second() as other:  # the server, the CLI: another handle on the storage
                assert other.forget("ana") > 0
        _ask(wrapped, "Hello, I am a new conversation.")
        _ask(wrapped, "Second question after erasure.")
        body = _last_body(fake_anthropic)
        assert secret not in body
        assert "I am a new conversation" in body  # the turn logged after the erasure


def wrap_client(client: Any, memory: Memory, **options: Any) -> Any:
    """``client`` wrapped for Ana's session ``s1`` (one Session for all its calls)."""
    return wrap(client, memory, session="s1", user_id="ana", **options)


@BOTH
def test_a_shared_session_drops_the_forgotten_users_turns_between_the_kept_ones(
    kind: str, tmp_path: Path
) -> None:
    """Bob's long-lived Session: Ana's turns sit between his, and his last one stays, so
    the newest turn alone cannot tell that the log changed."""
    with live_memory(kind, tmp_path) as (memory, second):
        bob = Session(memory.store, "room", tenant=memory.tenant, user_id="bob")
        ana = Session(memory.store, "room", tenant=memory.tenant, user_id="ana")
        bob.add(Message("user", "bob opens the room"))
        ana.add(Message("user", "ana says qzshared77"), Message("user", "ana again qzshared77"))
        bob.add(Message("user", "bob speaks last"))
        assert len(bob.turns()) == 4
        with second() as other:
            other.forget("ana")
        assert [t.message.content for t in bob.turns()] == ["bob opens the room", "bob speaks last"]
        bob.add(Message("user", "bob after the erasure"))
        assert [t.message.content for t in bob.turns()][-1] == "bob after the erasure"


@BOTH
def test_a_log_refilled_to_the_same_length_is_read_again(kind: str, tmp_path: Path) -> None:
    """After the erasure as many turns are logged again: same seqs, same count; only the
    turn at the cached seq tells the log apart."""
    with live_memory(kind, tmp_path) as (memory, second):
        app = Session(memory.store, "chat", tenant=memory.tenant, user_id="ana")
        app.add(*[Message("user", f"secret {i} qzrefill") for i in range(3)])
        assert len(app.turns()) == 3
        with second() as other:
            other.forget("ana")
        app.add(*[Message("user", f"fresh {i}") for i in range(3)])
        assert [t.message.content for t in app.turns()] == ["fresh 0", "fresh 1", "fresh 2"]


class ActingSummarizer:
    """A summarizer (the seam where a model is called) that runs ``act`` first: an
    erasure or a pin lands while the compaction is in flight."""

    def __init__(self, act: Callable[[], object]) -> None:
        self.act = act
        self.inner = ExtractiveSummarizer()

    def summarize(
        self, turns: Sequence[Turn], *, previous: Summary | None, max_tokens: int
    ) -> Summary:
        self.act()
        return self.inner.summarize(turns, previous=previous, max_tokens=max_tokens)


def compact_while_forgetting(
    session: Session, second: Second, user: str, budget: int
) -> CompactionResult:
    """``session`` compacted (summarize, forced) while ``user`` is forgotten through a
    second Memory on the same storage, as the summarizer runs."""

    def forget() -> None:
        with second() as other:
            other.forget(user)

    return session.compact(budget, "summarize", summarizer=ActingSummarizer(forget), force=True)


@BOTH
def test_a_summary_made_during_an_erasure_is_dropped(kind: str, tmp_path: Path) -> None:
    secret = "qzslowsummary"
    with live_memory(kind, tmp_path) as (memory, second):
        app = Session(memory.store, "chat", tenant=memory.tenant, user_id="ana")
        for i in range(30):
            app.add(
                Message("user", f"my passport is {secret}{i} and I like long walks, turn {i}"),
                Message("assistant", f"noted, detail number {i}"),
            )

        done = compact_while_forgetting(app, second, "ana", 200)
        assert done.plan is None
        assert secret not in json.dumps(memory.store.session_meta(app.scope))
        assert app.turns() == []
        if kind == "sqlite":
            memory.close()
            assert secret.encode() not in _file_bytes(tmp_path / "m.db")
        else:
            assert _rows_mentioning(memory, secret) == []


@pytest.mark.parametrize("calls", [1, 2], ids=["log-never-read", "log-read"])
def test_the_topic_block_drops_memories_erased_with_the_session(
    calls: int, tmp_path: Path, fake_anthropic: FakeAnthropic, anthropic_client: Any
) -> None:
    """``memory_placement="topic"`` keeps memories across calls in the cached block; the
    session noticing the erasure of its log rebuilds the block (not per store). After
    one call the Session has logged turns but read none back (the question is logged
    after the log is read); after two it has read them."""
    secret = "qzbicyclered"
    with live_memory("sqlite", tmp_path) as (memory, second):
        memory.add(f"Ana keeps her {secret} bicycle in the garden shed.", user_id="ana")
        wrapped = wrap_client(anthropic_client, memory, memory_placement="topic")
        for question in [f"Where is my {secret} bicycle?", "And the garden shed?"][:calls]:
            _ask(wrapped, question)
        assert secret in _last_body(fake_anthropic)
        with second() as other:
            other.forget("ana")
        _ask(wrapped, "What did we talk about?")
        assert secret not in _last_body(fake_anthropic)


# -- 2. forget and the compaction state of a shared session ---------------------------------


@BOTH
def test_forget_clears_a_shared_sessions_summary(kind: str, tmp_path: Path) -> None:
    secret = "qzzebrastreet"
    with live_memory(kind, tmp_path) as (memory, _):
        bob = Session(memory.store, "support-1", tenant=memory.tenant, user_id="bob")
        bob.add(Message("user", "Hi, I am Bob the moderator of this room."))
        ana = Session(memory.store, "support-1", tenant=memory.tenant, user_id="ana")
        for i in range(40):
            ana.add(
                Message("user", f"I live at {secret} {i}, write it down."),
                Message("assistant", f"Noted, thank you for sharing that detail number {i}."),
            )
        done = ana.compact(300, "summarize", force=True)
        assert done.state.summary is not None
        assert secret in json.dumps(memory.store.session_meta(bob.scope))
        memory.forget("ana")
        assert secret not in json.dumps(memory.store.session_meta(bob.scope))
        assert [t.message.content for t in bob.turns()] == [
            "Hi, I am Bob the moderator of this room."
        ]
        if kind == "sqlite":
            memory.close()
            assert secret.encode() not in _file_bytes(tmp_path / "m.db")
            assert b"Bob the moderator" in _file_bytes(tmp_path / "m.db")
        else:
            assert _rows_mentioning(memory, secret) == []


# -- 3. a metadata-only update and the stored vector ----------------------------------------


def _turn_with_caption(store: Store) -> MemoryRecord:
    [record] = build_records(
        to_messages([_captioned("look at this")]),
        validate_options(Scope("default", user_id="ana", session_id="s1")),
    )
    store.put([record])
    return record


def _score(store: Store, record: MemoryRecord, embedder: HashEmbedder) -> float:
    """Cosine of ``record``'s stored vector with the vector made for ``record`` now."""
    want = embed_records(embedder.embed, [record])[0]
    flt = Filter(scope=Scope("default", user_id="ana"))
    [hit] = store.vector_search(flt, np.asarray(want, dtype=np.float32), limit=1)
    assert hit.id == record.id
    return hit.score


def _embed_all(store: Store, embedder: HashEmbedder) -> None:
    while embed_pending(store, embedder):
        pass


def _captioned(content: str) -> dict[str, str]:
    """Caroline's message, showing a photo of a red bicycle."""
    return {
        "role": "user",
        "content": content,
        "name": "Caroline",
        "caption": "a red bicycle by the lake",
    }


def _add_captioned_turn(memory: Memory, content: str, **kw: Any) -> list[MemoryRecord]:
    """Caroline's captioned turn in ana's session s1."""
    return memory.add([_captioned(content)], user_id="ana", session_id="s1", **kw)


def _new_speaker(record: MemoryRecord) -> dict[str, Any]:
    return {**record.metadata, "speaker": "Melanie", "caption": "a blue sailboat at sea"}


@BOTH
def test_a_metadata_only_update_is_embedded_again(kind: str, tmp_path: Path) -> None:
    embedder = HashEmbedder()
    with live_memory(kind, tmp_path) as (memory, _):
        [old] = _add_captioned_turn(memory, "look at this")
        memory.flush()
        assert _score(memory.store, old, embedder) > 0.999
        new = memory.update(old.id, metadata=_new_speaker(old))
        memory.flush()
        assert "Melanie" in embedding_text(new) and "sailboat" in embedding_text(new)
        assert _score(memory.store, new, embedder) > 0.999
        assert _score(memory.store, old, embedder) < 0.99  # the two texts embed apart


@pytest.mark.parametrize(
    "change", [{}, {"superseded_by": "another-id"}], ids=["same-metadata", "a-tag"]
)
def test_a_metadata_change_the_embedding_does_not_read_keeps_the_vector(
    store: Store, change: dict[str, str]
) -> None:
    embedder = HashEmbedder()
    record = _turn_with_caption(store)
    _embed_all(store, embedder)
    old = store.get("default", record.id)
    assert old is not None
    patch = Patch(metadata={**old.metadata, **change})
    store.update("default", record.id, patch, embeds=embedding_text)
    assert store.embedding_status("default").pending == 0
    assert _score(store, old, embedder) > 0.999


def test_a_worker_holding_the_claim_through_a_metadata_change_stores_nothing(
    store: Store,
) -> None:
    embedder = HashEmbedder()
    record = _turn_with_caption(store)
    [claimed] = store.claim_vectors("w1", limit=10, lease_s=60)
    stale = embed_records(embedder.embed, [claimed])  # made from the old speaker and caption
    patch = Patch(metadata=_new_speaker(claimed))
    new = store.update("default", record.id, patch, embeds=embedding_text)
    store.set_vectors("default", [record.id], stale, "hash", owner="w1")
    assert store.embedding_status("default").pending == 1  # skipped: the claim ended
    _embed_all(store, embedder)
    assert _score(store, new, embedder) > 0.999


def test_a_metadata_change_takes_a_record_out_of_quarantine(store: Store) -> None:
    record = _turn_with_caption(store)
    [claimed] = store.claim_vectors("w1", limit=10, lease_s=60)
    store.quarantine_vectors("default", [record.id], "the embedder refused it", owner="w1")
    status = store.embedding_status("default")
    assert status.pending == 0 and [q.id for q in status.quarantined] == [record.id]
    store.update("default", record.id, Patch(metadata=_new_speaker(claimed)), embeds=embedding_text)
    status = store.embedding_status("default")
    assert status.pending == 1 and status.quarantined == ()


@BOTH
def test_forget_keeps_the_compaction_state_of_a_session_it_took_no_turn_from(
    kind: str, tmp_path: Path
) -> None:
    with live_memory(kind, tmp_path) as (memory, _):
        bob = Session(memory.store, "room", tenant=memory.tenant, user_id="bob")
        for i in range(40):
            bob.add(Message("user", f"bob talks about the weather, turn {i}"))
        bob.pin(39)
        state = bob.compact(300, "summarize", force=True).state
        assert state.summary is not None
        kept = memory.store.session_meta(bob.scope)
        assert kept["history"] == state.to_json()
        memory.add("ana's note about the room", user_id="ana", session_id="room")
        memory.forget("ana")  # reaches the session (her memory), takes no turn from it
        assert memory.store.session_meta(bob.scope) == kept


@BOTH
def test_a_new_speaker_and_caption_re_derive_the_facts_beside_the_turn(
    kind: str, tmp_path: Path
) -> None:
    with live_memory(kind, tmp_path) as (memory, _):
        [turn] = _add_captioned_turn(memory, "look at this, I adopted a dog last week", facts=True)

        def facts() -> list[str]:
            return sorted(r.text for r in memory.get_all(user_id="ana") if r.id != turn.id)

        assert any("Caroline shared a photo of a red bicycle" in f for f in facts())
        memory.update(turn.id, metadata=_new_speaker(turn))
        assert any("Melanie shared a photo of a blue sailboat" in f for f in facts())
        assert not any("Caroline" in f or "bicycle" in f for f in facts())


def test_purges_and_forgets_under_concurrent_clients_report_success(tmp_path: Path) -> None:
    # Two handles on one SQLite file (a server and a CLI, or two replicas), a dozen
    # threads adding, searching and erasing: the WAL checkpoint that finishes an
    # erasure was tried once and, refused at once by another connection's
    # checkpoint, raised "busy, retry" for 5% of erasures that had committed (the
    # server answered 503; a retry then got 404).
    from concurrent.futures import ThreadPoolExecutor

    db = str(tmp_path / "busy.db")
    handles = [Memory(db, embedder=HashEmbedder()) for _ in range(2)]

    def erase(i: int) -> str:
        memory = handles[i % 2]
        added = memory.add(f"secret number {i}", user_id=f"u{i}")
        memory.search(f"secret {i}", user_id=f"u{i}")
        if i % 3:
            memory.delete(added[0].id, purge=True)
        else:
            memory.forget(f"u{i}")
        return added[0].id

    try:
        with ThreadPoolExecutor(12) as pool:
            erased = list(pool.map(erase, range(600)))  # raises what any erasure raised
        assert len(set(erased)) == 600
        assert handles[0].get_all(user_id="u1") == []
    finally:
        for memory in handles:
            memory.close()


@BOTH
def test_concurrent_adds_to_one_session_number_each_turn_once(kind: str, tmp_path: Path) -> None:
    # A turn is numbered after the session's newest one, read before the write: two
    # handles (a server and a CLI, two replicas) adding at once gave 100 turns 85
    # numbers, and the neighbour rerank took turns with one number for one turn.
    from concurrent.futures import ThreadPoolExecutor

    with live_memory(kind, tmp_path) as (memory, second), second() as other:
        handles = [memory, other]

        def say(i: int) -> None:
            handles[i % 2].add(f"turn number {i}", user_id="u", session_id="s")

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(say, range(60)))
        turns = memory.get_all(session_id="s", limit=1000)
        assert sorted(r.metadata["seq"] for r in turns) == list(range(60))


@BOTH
def test_an_add_racing_forget_keeps_no_quote_of_the_erased_turn(kind: str, tmp_path: Path) -> None:
    # A reply quotes the turn it answers ("replying to ..."), read before its write;
    # a forget of that turn's user committing in between scrubbed every quote but the
    # one written after it: the forgotten text came back from search (36 of 40
    # tries over two servers). The write now checks that the turn it read is still
    # the newest, in its own transaction, and reads again if not.
    import threading

    with live_memory(kind, tmp_path) as (memory, second), second() as other:
        for trial in range(25):
            session, secret = f"s{trial}", f"zq{trial}secretword"
            memory.add(f"my secret is {secret}", user_id="ana", session_id=session)
            start = threading.Barrier(2)

            def reply(session: str = session, start: threading.Barrier = start) -> None:
                start.wait()
                other.add("noted, I will keep it", session_id=session)

            replier = threading.Thread(target=reply)
            replier.start()
            start.wait()
            memory.forget("ana")
            replier.join()
            kept = memory.get_all(session_id=session, limit=100)
            assert all(secret not in f"{r.text} {r.context}" for r in kept), trial
            hits = memory.search(secret, session_id=session)
            assert all(h.lexical_rank is None for h in hits), trial  # no word of it is left
