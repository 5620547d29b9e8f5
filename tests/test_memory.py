"""The Memory API: verbs, scoping, validation, durability and embedding behind add."""

from __future__ import annotations

import multiprocessing
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from contextos import Filter, NotFound, Scope, ScopeError, StoreError
from contextos.errors import ConfigError
from contextos.memory import Memory
from contextos.store.sqlite import SQLiteStore
from contextos.testing.embedders import HashEmbedder


@pytest.fixture
def memory(tmp_path: Path) -> Memory:
    m = Memory(tmp_path / "m.db", embedder=HashEmbedder())
    yield m
    m.close()


def test_add_then_search_finds_it_lexically_at_once(tmp_path: Path) -> None:
    m = Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=True)
    try:
        m.add("I'm allergic to peanuts", user_id="ana")
        hits = m.search("peanuts allergy", user_id="ana")  # before any flush
        assert [h.record.text for h in hits] == ["I'm allergic to peanuts"]
    finally:
        m.close()


def test_search_uses_vectors_after_flush(memory: Memory) -> None:
    memory.add(["my kid loves blue", "we went hiking"], user_id="ana")
    assert memory.flush(timeout=30)
    hits = memory.search("loves blue kid", user_id="ana", limit=1)
    assert hits[0].record.text == "my kid loves blue"
    assert hits[0].dense_rank == 1 and hits[0].lexical_rank == 1


def test_search_is_scoped_and_unscoped_search_is_refused(memory: Memory) -> None:
    memory.add("ana's secret recipe", user_id="ana")
    memory.add("bob's secret recipe", user_id="bob")
    memory.flush()
    assert {h.record.user_id for h in memory.search("secret recipe", user_id="bob")} == {"bob"}
    with pytest.raises(ScopeError):
        memory.search("secret recipe")
    with pytest.raises(ScopeError):
        memory.add("no owner")


def test_tenants_do_not_see_each_other(tmp_path: Path) -> None:
    a = Memory(tmp_path / "m.db", tenant="acme", embedder=HashEmbedder())
    b = Memory(tmp_path / "m.db", tenant="globex", embedder=HashEmbedder())
    try:
        rec = a.add("acme roadmap", user_id="u")[0]
        a.flush()
        assert b.search("acme roadmap", user_id="u") == []
        with pytest.raises(NotFound):
            b.get(rec.id)
        with pytest.raises(NotFound):
            b.delete(rec.id)
        # a filter naming another tenant is ignored: the tenant is the Memory's own
        assert b.get_all(filters=Filter(), user_id="u") == []
    finally:
        a.close()
        b.close()


def test_get_update_delete_history(memory: Memory) -> None:
    rec = memory.add("lives in Paris", user_id="ana", metadata={"src": "chat"})[0]
    assert memory.get(rec.id).metadata["src"] == "chat"
    memory.update(rec.id, "lives in Berlin")
    assert memory.get(rec.id).text == "lives in Berlin"
    memory.delete(rec.id)
    with pytest.raises(NotFound):
        memory.get(rec.id)
    assert [(e.event, e.new_text) for e in memory.history(rec.id)] == [
        ("ADD", "lives in Paris"),
        ("UPDATE", "lives in Berlin"),
        ("DELETE", None),
    ]


def test_get_all_paginates_newest_first(memory: Memory) -> None:
    for i in range(5):
        memory.add(f"note {i}", user_id="ana")
    page1 = memory.get_all(user_id="ana", limit=2)
    page2 = memory.get_all(user_id="ana", limit=2, offset=2)
    assert [r.text for r in page1 + page2] == ["note 4", "note 3", "note 2", "note 1"]


def test_messages_keep_speaker_date_caption_and_provenance(memory: Memory) -> None:
    when = datetime(2023, 5, 8, 13, 56, tzinfo=UTC)
    recs = memory.add(
        [
            {
                "role": "user",
                "content": "Look what I made!",
                "name": "Mel",
                "dia_id": "D1:1",
                "blip_caption": "a photo of a clay bowl",
            },
            {"role": "assistant", "content": "Beautiful!", "name": "Caro", "dia_id": "D1:2"},
        ],
        user_id="u",
        session_id="s1",
        event_time=when,
    )
    assert recs[0].provenance == ("D1:1",) and recs[0].event_time == when
    assert "clay bowl" in recs[0].context and "Mel" in recs[0].context
    assert "Look what I made" in recs[1].context  # the reply is indexed with what it answers
    assert [r.metadata["seq"] for r in recs] == [0, 1]
    nxt = memory.add(
        {"role": "user", "content": "Thanks", "name": "Mel"}, user_id="u", session_id="s1"
    )[0]
    assert nxt.metadata["seq"] == 2 and "Beautiful" in nxt.context
    memory.flush()
    hits = memory.search("clay bowl", user_id="u", limit=1)
    assert hits[0].record.id == recs[0].id


def test_token_budget_cuts_by_tokens_not_count(memory: Memory) -> None:
    memory.add(["cats " * 200, "cats are small", "cats purr"], user_id="u")
    memory.flush()
    hits = memory.search("cats", user_id="u", limit=10, token_budget=20)
    assert hits and sum(h.tokens for h in hits) <= 20
    assert all(h.tokens < 200 for h in hits)


def test_time_filters_and_as_of(memory: Memory) -> None:
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    memory.add("went skiing", user_id="u", event_time=t0)
    memory.add("went surfing", user_id="u", event_time=t0 + timedelta(days=180))
    memory.flush()
    hits = memory.search("went", user_id="u", time_range=(t0 + timedelta(days=90), None))
    assert [h.record.text for h in hits] == ["went surfing"]
    old = memory.search("went", user_id="u", as_of=t0 + timedelta(days=1))
    assert [h.record.text for h in old] == ["went skiing"]


@pytest.mark.parametrize(
    "bad", ["", "   ", [], [{"role": "user"}], [42], b"bytes", {"role": "wizard", "content": "x"}]
)
def test_add_rejects_malformed_input(memory: Memory, bad: object) -> None:
    with pytest.raises((TypeError, ValueError)):
        memory.add(bad, user_id="u")  # type: ignore[arg-type]


def test_add_rejects_oversized_text_and_bad_options(memory: Memory) -> None:
    with pytest.raises(ValueError, match="at most"):
        memory.add("x" * 100_001, user_id="u")
    with pytest.raises(TypeError):
        memory.add("ok", user_id="u", metadata=["not", "a", "dict"])  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        memory.add("ok", user_id="u", metadata={"obj": object()})
    with pytest.raises(ValueError):
        memory.add("ok", user_id="u", memory_type="dream")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        memory.add("ok", user_id=5)  # type: ignore[arg-type]
    assert memory.get_all(user_id="u") == []


@pytest.mark.parametrize(
    "kwargs", [{"limit": 0}, {"limit": 5000}, {"limit": "3"}, {"token_budget": 0}]
)
def test_search_rejects_bad_arguments(memory: Memory, kwargs: dict) -> None:
    with pytest.raises(ValueError):
        memory.search("q", user_id="u", **kwargs)


def test_search_rejects_empty_query(memory: Memory) -> None:
    with pytest.raises(ValueError):
        memory.search("  ", user_id="u")


def test_corrupt_database_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="cannot open database"):
        Memory(bad, embedder=HashEmbedder())


def test_a_missing_folder_is_refused_not_created(tmp_path: Path) -> None:
    # A mistyped path used to create folders and an empty database silently (issue 14).
    with pytest.raises(StoreError, match="does not exist"):
        Memory(tmp_path / "a" / "b" / "m.db", embedder=HashEmbedder())
    assert not (tmp_path / "a").exists()
    with pytest.raises(ConfigError, match="directory"):  # as Memory("data/") (review s57)
        Memory(tmp_path, embedder=HashEmbedder())


def test_pending_embeddings_resume_after_a_crash(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    crashed = Memory(db, embedder=HashEmbedder(), background_embedding=False)
    # write records without ever embedding them, as a process killed before its worker ran
    from contextos.memory.ingest import build_records, to_messages, validate_options

    opts = validate_options(Scope(user_id="u"))
    crashed.store.put(build_records(to_messages(["orphan one", "orphan two"]), opts))
    crashed.store.close()
    store = SQLiteStore(db)
    assert len(store.pending_vectors(limit=10)) == 2
    store.close()
    resumed = Memory(db, embedder=HashEmbedder())
    assert resumed.flush(timeout=30)
    assert resumed.store.pending_vectors(limit=10) == []
    resumed.close()


def _writer(db: str, worker: int, n: int) -> None:
    m = Memory(db, embedder=HashEmbedder(), background_embedding=False)
    for i in range(n):
        m.add(f"worker {worker} note {i}", user_id="shared")
    m.close()


def test_two_processes_writing_at_once_lose_nothing(tmp_path: Path) -> None:
    db = str(tmp_path / "m.db")
    Memory(db, embedder=HashEmbedder()).close()  # create the schema first
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(db, w, 60)) for w in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    m = Memory(db, embedder=HashEmbedder())
    texts = {r.text for r in m.get_all(user_id="shared", limit=1000)}
    assert len(texts) == 120
    m.flush()
    assert (
        m.search("worker 1 note 59", user_id="shared", limit=1)[0].record.text == "worker 1 note 59"
    )
    m.close()


def test_forget_leaves_no_text_in_the_file(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    m = Memory(db, embedder=HashEmbedder())
    secret = "zanzibarquokka rendezvous"
    for i in range(30):
        m.add(f"{secret} number {i}", user_id="leaver", session_id="s")
    m.add("someone else stays", user_id="stayer")
    m.flush()
    assert m.forget("leaver") == 30
    m.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("m.db"))
    assert b"zanzibarquokka" not in raw and b"rendezvous" not in raw
    assert b"someone else stays" in raw
    con = sqlite3.connect(db)
    assert con.execute("select count(*) from memories").fetchone()[0] == 1
    con.close()


def test_a_shared_worker_serves_several_tenants(tmp_path: Path) -> None:
    from contextos.memory.embedding_worker import EmbeddingWorker

    store = SQLiteStore(tmp_path / "m.db")
    embedder = HashEmbedder()
    worker = EmbeddingWorker(store, embedder)
    a = Memory(store=store, tenant="a", embedder=embedder, worker=worker)
    b = Memory(store=store, tenant="b", embedder=embedder, worker=worker)
    a.add("alpha note", user_id="u")
    b.add("beta note", user_id="u")
    assert a.flush(timeout=30)
    assert store.pending_vectors(limit=10) == []
    b.add("gamma note", user_id="u")
    assert b.flush(timeout=30)
    assert store.pending_vectors(limit=10) == []
    worker.close()
    store.close()


def test_a_version_1_database_is_migrated_with_its_pending_vectors(tmp_path: Path) -> None:
    from contextos.store.sqlite.schema import V1_INITIAL, _statements

    db = tmp_path / "old.db"
    con = sqlite3.connect(db)
    for statement in _statements(V1_INITIAL):
        con.execute(statement)
    con.execute("PRAGMA user_version = 1")
    con.execute(
        "INSERT INTO memories (id, tenant, user_id, memory_type, text, created_at, "
        "updated_at, hash) VALUES ('m1', 'default', 'u', 'episodic', 'old note', 0, 0, 'h')"
    )
    con.commit()
    con.close()
    m = Memory(db, embedder=HashEmbedder())
    assert m.flush(timeout=30)
    assert m.store.pending_vectors(limit=5) == []
    assert m.search("old note", user_id="u")[0].dense_rank == 1
    m.update("m1", "new note")
    assert [r.id for r in m.store.pending_vectors(limit=5)] in ([], ["m1"])
    m.close()


def test_replacing_a_turns_metadata_keeps_its_place_in_the_session(memory: Memory) -> None:
    # Metadata is replaced whole; a tag added that way dropped the turn's number and
    # role, and the session's next turn started again at 0.
    turns = memory.add(
        [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"}],
        user_id="u",
        session_id="s",
    )
    tagged = memory.update(turns[1].id, metadata={"tag": "greeting"})
    assert tagged.metadata == {"tag": "greeting", "seq": 1, "role": "assistant"}
    after = memory.add("how are you?", user_id="u", session_id="s")
    assert after[0].metadata["seq"] == 2
    # Named, they must say what they say: another number is refused, as add refuses it
    # (the session's numbering then repeated: review s40 history, finding 5).
    with pytest.raises(ValueError, match="'seq' is reserved in a session"):
        memory.update(turns[0].id, metadata={"seq": 7})
    assert memory.update(turns[0].id, metadata={"seq": 0}).metadata["seq"] == 0
