"""Sessions on a real SQLite store: durability, resume, compaction state, offload, CLI."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from click.testing import CliRunner

from contextos.cache import render_anthropic
from contextos.engine.compaction import visible_turns
from contextos.engine.session import Layout, Session, context_window, search_scope, window_budget
from contextos.errors import NotFound
from contextos.llm.models import get_model
from contextos.llm.tokens import TOKENS_PER_MESSAGE, default_tokenizer
from contextos.memory import Memory
from contextos.memory.render import render
from contextos.store.sqlite import SQLiteStore
from contextos.testing.embedders import HashEmbedder
from contextos.testing.fake_anthropic import unanswered_tool_use
from contextos.types import Message, ToolCall

SONNET = get_model("claude-sonnet-4-5")


@pytest.fixture()
def db(tmp_path):
    return str(tmp_path / "s.db")


def chat(session: Session, n: int) -> None:
    for i in range(n):
        role = "user" if i % 2 == 0 else "assistant"
        session.add(
            Message(
                role,
                f"Message {i}: Ana flew to city number {i} on 3 May 2023.",
                metadata={"dia_id": f"D1:{i}"},
            )
        )


def test_turns_are_durable_and_resumable_from_another_store(db):
    s = Session(SQLiteStore(db), "chat", user_id="ana")
    added = s.add(Message("user", "hello"), Message("assistant", "hi there"))
    assert [t.seq for t in added] == [0, 1]
    assert all(t.tokens > 0 for t in added)
    s.store.close()
    resumed = Session(SQLiteStore(db), "chat", user_id="ana")  # e.g. another process
    assert [t.message.content for t in resumed.turns()] == ["hello", "hi there"]
    resumed.add(Message("user", "again"))
    assert [t.seq for t in resumed.turns()] == [0, 1, 2]
    assert resumed.turn(2).message.content == "again"
    with pytest.raises(NotFound):
        resumed.turn(9)


def test_tool_calls_round_trip_and_render(db):
    s = Session(SQLiteStore(db), "tools")
    call = ToolCall("call_1", "lookup", '{"id":"x"}')
    s.add(
        Message("user", "look it up"),
        Message("assistant", "", tool_calls=(call,)),
        Message("tool", "found x", tool_call_id="call_1"),
    )
    body = render_anthropic(s.window(SONNET, "and?"), SONNET)
    kinds = [c["type"] for m in body["messages"] for c in m["content"]]
    assert kinds == ["text", "tool_use", "tool_result", "text"]


CALL_A = ToolCall("toolu_A", "weather", '{"city": "Paris"}')
CALL_B = ToolCall("toolu_B", "weather", '{"city": "Rome"}')


def _sent(s: Session) -> list[tuple[str, list[str]]]:
    """The Anthropic request a window of ``s`` makes, as (role, block types); the fake's
    own check (the API's 400) must find every tool call answered."""
    body = render_anthropic(s.window(SONNET, "and?"), SONNET)
    assert unanswered_tool_use(body) is None
    return [(m["role"], [b["type"] for b in m["content"]]) for m in body["messages"]]


@pytest.mark.parametrize(
    ("logged", "sent"),
    [
        pytest.param(  # a plain message where the result was due (refused), then the result
            [
                Message("assistant", "", tool_calls=(CALL_A,)),
                Message("user", "never mind"),
                Message("tool", "sunny", tool_call_id="toolu_A"),
            ],
            [("assistant", ["tool_use"]), ("user", ["tool_result"]), ("user", ["text"])],
            id="late-result",
        ),
        pytest.param(  # never answered: the call is left out, and the turn with it
            [Message("assistant", "", tool_calls=(CALL_A,)), Message("user", "never mind")],
            [("user", ["text"])],
            id="no-result",
        ),
        pytest.param(  # the turn's text stays
            [Message("assistant", "Let me look.", tool_calls=(CALL_A, CALL_B))],
            [("assistant", ["text"])],
            id="text-kept",
        ),
        pytest.param(  # one of two parallel calls answered
            [
                Message("assistant", "", tool_calls=(CALL_A, CALL_B)),
                Message("tool", "rainy", tool_call_id="toolu_B"),
            ],
            [("assistant", ["tool_use"]), ("user", ["tool_result"])],
            id="one-of-two",
        ),
        pytest.param(  # a result logged twice (a retry, by an older version)
            [
                Message("assistant", "", tool_calls=(CALL_A,)),
                Message("tool", "sunny", tool_call_id="toolu_A"),
                Message("tool", "sunny", tool_call_id="toolu_A"),
            ],
            [("assistant", ["tool_use"]), ("user", ["tool_result"])],
            id="duplicate",
        ),
        pytest.param(  # a result after the call's reply answers nothing open
            [
                Message("assistant", "", tool_calls=(CALL_A,)),
                Message("user", "never mind"),
                Message("assistant", "ok"),
                Message("tool", "sunny", tool_call_id="toolu_A"),
            ],
            [("user", ["text"]), ("assistant", ["text"])],
            id="orphan",
        ),
        pytest.param(  # arguments not a JSON object: no tool_use, so no result either
            [
                Message("assistant", "", tool_calls=(ToolCall("c1", "ls", '["-la"]'),)),
                Message("tool", "a.txt b.txt", tool_call_id="c1"),
                Message("assistant", "There are two files."),
            ],
            [("assistant", ["text"])],
            id="arguments-not-an-object",
        ),
        pytest.param(  # the same beside a call that can be sent: that one and its result go
            [
                Message("assistant", "", tool_calls=(CALL_A, ToolCall("c1", "ls", "null"))),
                Message("tool", "sunny", tool_call_id="toolu_A"),
                Message("tool", "a.txt", tool_call_id="c1"),
            ],
            [("assistant", ["tool_use"]), ("user", ["tool_result"])],
            id="one-of-two-not-an-object",
        ),
    ],
)
def test_a_tool_call_is_sent_only_with_its_results_right_after_it(db, logged, sent):
    # A request the API refused (400) after its turns were logged stayed in the log, and
    # every later request of the session was refused with it.
    s = Session(SQLiteStore(db), "tools")
    s.add(Message("user", "weather in paris?"), *logged)
    assert _sent(s) == [("user", ["text"]), *sent, ("user", ["text"])]
    assert len(s.turns()) == len(logged) + 1  # the log itself is unchanged


def test_compaction_state_persists_and_window_shrinks(db):
    s = Session(SQLiteStore(db), "long", user_id="ana")
    chat(s, 40)
    before = s.history_tokens()
    result = s.compact(before * 2, "summarize")
    assert result.plan is None  # at 50% of its budget: under the 80% trigger
    result = s.compact(int(before / 0.9), "summarize")
    assert result.plan is not None and result.state.summary is not None
    again = Session(SQLiteStore(db), "long", user_id="ana")
    state = again.state()
    assert state == result.state
    assert again.history_tokens() < before
    w = again.window(SONNET, "where did Ana fly?")
    assert "summary" in {b.segment for b in w.blocks}
    refs = w.provenance()
    assert {"D1:0", "D1:39"} & refs  # summary lines and verbatim turns keep their dia ids
    assert w.total_tokens <= window_budget(SONNET)


def test_pinned_turn_survives_truncation(db):
    s = Session(SQLiteStore(db), "pins")
    chat(s, 30)
    s.pin(1)
    result = s.compact(100, "truncate", force=True)
    assert result.plan is not None and 1 not in result.plan.rotate
    keys = [b.key for b in s.window(SONNET, "q").blocks if b.segment == "turns"]
    # the pinned reply keeps its question before it: a window never opens on a reply
    assert keys[:2] == ["turn:0", "turn:1"] and "turn:2" not in keys
    s.pin(1, pinned=False)
    assert s.state().pinned == ()


def test_offload_archives_into_memory_and_retrieves(db, tmp_path):
    store = SQLiteStore(db)
    memory = Memory(str(tmp_path / "mem.db"), embedder=HashEmbedder(), background_embedding=False)
    try:
        s = Session(store, "off", user_id="ana")
        chat(s, 30)
        result = s.compact(300, "offload", memory=memory)
        assert result.plan is not None and result.archived == len(result.plan.rotate)
        hits = memory.search("city number 2", session_id="off", limit=5)
        assert hits and "D1:2" in hits[0].record.provenance
        w = s.window(SONNET, "Which city was number 2?", hits=hits)
        mem_blocks = [b for b in w.blocks if b.segment == "memories"]
        assert mem_blocks[0].provenance == hits[0].record.provenance  # rank 1 first
        assert "D1:2" in w.provenance()
    finally:
        memory.close()
        store.close()


def test_offload_needs_a_memory(db):
    s = Session(SQLiteStore(db), "x")
    chat(s, 30)
    with pytest.raises(ValueError):
        s.compact(100, "offload")


def test_bad_input(db):
    with pytest.raises(ValueError):
        Session(SQLiteStore(db), " ")
    with pytest.raises(TypeError):
        Session(SQLiteStore(db), "a").add("text")  # type: ignore[arg-type]


def test_cli_session_window_compact(db):
    from contextos.cli.main import cli

    runner = CliRunner()
    base = ["--db", db]
    for i in range(12):
        r = runner.invoke(
            cli,
            [
                *base,
                "session",
                "add",
                "c1",
                f"On day {i} Bo ran {i} km.",
                "--role",
                "user" if i % 2 == 0 else "assistant",
            ],
        )
        assert r.exit_code == 0, r.output
    shown = runner.invoke(cli, [*base, "--json", "session", "show", "c1"])
    assert len(json.loads(shown.output)["turns"]) == 12
    table = runner.invoke(cli, [*base, "window", "--session", "c1", "-q", "How far?"])
    assert table.exit_code == 0 and "turns" in table.output and "question" in table.output
    body = runner.invoke(
        cli, [*base, "window", "--session", "c1", "-q", "How far?", "--format", "anthropic"]
    )
    assert json.loads(body.output)["messages"][-1]["content"][-1]["text"] == "How far?"
    oai = runner.invoke(
        cli,
        [*base, "window", "--session", "c1", "-q", "x", "--format", "openai", "--model", "gpt-4.1"],
    )
    assert "prompt_cache_key" in json.loads(oai.output)
    comp = runner.invoke(
        cli,
        [
            *base,
            "--json",
            "compact",
            "--session",
            "c1",
            "--budget",
            "120",
            "--strategy",
            "truncate",
        ],
    )
    data = json.loads(comp.output)
    assert data["compacted"] and data["state"]["start_seq"] > 0
    again = runner.invoke(cli, [*base, "session", "show", "c1"])
    assert "(compacted)" in again.output


def test_cli_bench_assemble_is_fast():
    from contextos.cli.main import cli

    r = CliRunner().invoke(cli, ["--json", "bench", "assemble", "--repeat", "5"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data["turns"] == 100 and data["window_tokens"] > 100 * 10


def _memory_with_records(tmp_path) -> Memory:
    memory = Memory(str(tmp_path / "m.db"), embedder=HashEmbedder(), background_embedding=False)
    memory.add(
        Message("user", "I adopted a dog named Rex", name="Ana"),
        user_id="ana",
        metadata={"speaker": "Ana", "caption": "a puppy on a sofa"},
        event_time=datetime(2023, 5, 8, tzinfo=UTC),
    )
    memory.add("Ana's dog Rex likes the beach", user_id="ana")
    return memory


def test_search_counts_exactly_the_memory_text_the_window_sends(tmp_path):
    memory = _memory_with_records(tmp_path)
    tok = default_tokenizer()
    hits = memory.search("dog Rex", user_id="ana", token_budget=500)
    assert len(hits) == 2 and all(h.tokens > 0 for h in hits)
    w = context_window(1000, tokenizer=tok, question="What is the dog called?", memories=hits)
    blocks = {b.key: b for b in w.blocks if b.segment == "memories"}
    for hit in hits:
        block = blocks[f"memory:{hit.record.id}"]
        assert block.text == render(hit.record)
        assert block.tokens == hit.tokens + TOKENS_PER_MESSAGE  # search's count + one block
    dated = next(b.text for b in blocks.values() if "adopted" in b.text)
    assert dated == "[2023-05-08] Ana: I adopted a dog named Rex (image: a puppy on a sofa)"
    memory.close()


def test_the_same_memory_text_is_never_injected_twice(tmp_path):
    memory = Memory(str(tmp_path / "m.db"), embedder=HashEmbedder(), background_embedding=False)
    # Two records with one text (add would return the first again without dedupe=False;
    # the same text also arrives from different sessions, which are never merged).
    memory.add("I'm allergic to peanuts", user_id="ana", metadata={"note": "first"})
    memory.add("I'm allergic to peanuts", user_id="ana", metadata={"note": "2"}, dedupe=False)
    memory.add("I live in Lisbon", user_id="ana")
    hits = memory.search("peanuts allergy Lisbon", user_id="ana", limit=10)
    texts = [render(h.record) for h in hits]
    assert texts.count("I'm allergic to peanuts") == 2  # two records, one text
    tok = default_tokenizer()
    w = context_window(2000, tokenizer=tok, question="Any allergies?", memories=hits)
    placed = [b.text for b in w.blocks if b.key.startswith("memory:")]
    assert placed.count("I'm allergic to peanuts") == 1
    assert "I live in Lisbon" in placed
    # A memory in the cached topic block is not repeated after the history.
    peanuts = [h for h in hits if "peanuts" in h.record.text][:1]
    lay = Layout(topic_ceiling=0.2)
    w = context_window(
        2000, tokenizer=tok, question="Any allergies?", memories=hits, topic=peanuts, layout=lay
    )
    placed = [b.text for b in w.blocks if b.key.startswith("memory:")]
    assert sorted(placed) == ["I live in Lisbon", "I'm allergic to peanuts"]
    assert [b.segment for b in w.blocks if "peanuts" in b.text] == ["topic"]
    with pytest.raises(ValueError, match="topic_ceiling"):
        context_window(2000, tokenizer=tok, question="?", topic=peanuts)
    memory.close()


def test_search_scope_is_user_wide_unless_only_a_session_is_given():
    assert search_scope("ana", None, "s1") == {
        "user_id": "ana",
        "agent_id": None,
        "session_id": None,
    }
    assert search_scope(None, None, "s1")["session_id"] == "s1"
    assert search_scope(None, "bot", "s1")["session_id"] is None


def test_threads_sharing_a_session_read_each_turn_once(db):
    # A web app's request threads share one wrapped client, so one Session: each reads
    # the log while the others append to it. The cache must hold every turn once.
    import threading

    store = SQLiteStore(db)
    session = Session(store, "s", user_id="ana")
    writing = threading.Event()

    def writer() -> None:
        for j in range(60):
            session.add(Message("user", f"turn {j}"))
        writing.set()

    duplicated: list[list[int]] = []

    def reader() -> None:
        while not writing.is_set():
            seqs = [t.seq for t in session.turns()]
            if len(seqs) != len(set(seqs)):
                duplicated.append(seqs)

    threads = [threading.Thread(target=writer)] + [
        threading.Thread(target=reader) for _ in range(6)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert duplicated == []
    seqs = [t.seq for t in session.turns()]
    assert seqs == sorted(set(seqs)) == list(range(60))
    store.close()


def test_a_compaction_is_not_taken_for_an_erasure(db):
    # Compactions and pins move the session meta's revision, as an erasure does, but
    # only turns gone count as a restart (a wrapped client's topic block is rebuilt on
    # a restart: after every compaction it was).
    app = Session(SQLiteStore(db), "chat", user_id="ana")
    chat(app, 40)
    app.turns()
    other = Session(SQLiteStore(db), "chat", user_id="ana")
    assert other.compact(400, "summarize", force=True).plan is not None  # leaves 4 turns
    other.pin(39)
    assert len(app.turns()) == 40 and app.log_restarts == 0
    assert app.compact(200, "summarize", force=True).plan is not None
    assert len(app.turns()) == 40 and app.log_restarts == 0
    with Memory(db, embedder=HashEmbedder(), background_embedding=False) as m:
        m.forget("ana")
    assert app.turns() == [] and app.log_restarts == 1


class CountingStore(SQLiteStore):
    """A real SQLite store that counts the turns it hands a Session (its reads of the log)."""

    def __init__(self, path):
        super().__init__(path)
        self.turns_read = 0

    def turns(self, scope, **kwargs):
        found = super().turns(scope, **kwargs)
        self.turns_read += len(found)
        return found

    def turns_since(self, scope, last, *, revision):
        found = super().turns_since(scope, last, revision=revision)
        self.turns_read += len(found or [])
        return found


def test_a_compaction_elsewhere_costs_other_sessions_only_the_new_turns(db):
    # A server holding a Session per request, a wrapped client in another process: a
    # compaction or pin by one moved the revision, and every other Session read the
    # whole log again (10,020 rows, 80-120 ms at 10,000 turns) after each compaction.
    store = CountingStore(db)
    app = Session(store, "chat", user_id="ana")
    chat(app, 400)
    other = Session(SQLiteStore(db), "chat", user_id="ana")
    assert other.compact(300, "summarize", force=True).plan is not None
    app.turns()
    for k in range(3):
        other.add(*[Message("user", f"round {k}, more {j}") for j in range(10)])
        assert other.compact(300, "summarize", force=True).plan is not None
        other.pin(400 + 10 * k)
        store.turns_read = 0
        assert len(app.turns()) == 410 + 10 * k
        assert store.turns_read == 10  # the new turns, not the 400 before them
        assert app.state() == other.state()  # the compaction's state is seen
    assert app.log_restarts == 0
    window = app.window(SONNET, "where did Ana fly?", budget=2000)
    summary = other.state().summary
    assert summary is not None and any(b.key == "summary" for b in window.blocks)


@pytest.mark.parametrize("first_save", ["compact", "pin"])
def test_a_sessions_own_first_save_costs_it_no_reread_of_the_log(db, first_save):
    # A Session that read its log before any compaction held no log epoch, so after its
    # own first compaction (the server's kept Session, right after
    # POST /v1/sessions/{id}/compact) it read the whole log again: 0.5 s at 20,000 turns.
    store = CountingStore(db)
    app = Session(store, "chat", user_id="ana")
    chat(app, 400)
    app.turns()
    if first_save == "compact":
        assert app.compact(300, "summarize", force=True).plan is not None
    else:
        app.pin(10)
    store.turns_read = 0
    assert len(app.turns()) == 400
    assert store.turns_read == 0  # nothing new, and nothing read again
    app.add(Message("user", "one more"))
    assert len(app.turns()) == 401 and store.turns_read == 1
    # ... and an erasure after it is still seen (forget's reset drops the epoch)
    with Memory(db, embedder=HashEmbedder(), background_embedding=False) as m:
        m.forget("ana")
    assert app.turns() == [] and app.log_restarts == 1


def test_an_erasure_before_a_sessions_own_first_save_is_still_seen(db):
    # The epoch a Session's own save draws is taken for the turns it holds only when it
    # read them at the revision it saved on: here an erasure moved the revision between
    # the read and a pin (a pin does not read the log again), and the turns held
    # include erased ones.
    app = Session(SQLiteStore(db), "room", user_id="bob")
    ana = Session(SQLiteStore(db), "room", user_id="ana")
    for i in range(20):
        ana.add(Message("user", f"ana's secret number {i}"))
        app.add(Message("user", f"bob talks about the weather, turn {i}"))
    assert len(app.turns()) == 40
    with Memory(db, embedder=HashEmbedder(), background_embedding=False) as m:
        m.forget("ana")
    app.pin(39)  # bob's last turn, pinned without reading the log again
    said = [t.message.content for t in app.turns()]
    assert len(said) == 20 and not any("ana" in text for text in said)


def test_an_erasure_is_seen_after_a_later_compaction(db):
    # A reader keeps its turns while the log epoch it read is unchanged: forget's reset
    # drops the epoch, so a compaction after the erasure draws another, never the old.
    app = Session(SQLiteStore(db), "room", user_id="bob")
    ana = Session(SQLiteStore(db), "room", user_id="ana")
    bob = Session(SQLiteStore(db), "room", user_id="bob")
    for i in range(20):
        ana.add(Message("user", f"ana's secret number {i}"))
        bob.add(Message("user", f"bob talks about the weather, turn {i}"))
    assert bob.compact(300, "summarize", force=True).plan is not None
    assert len(app.turns()) == 40
    with Memory(db, embedder=HashEmbedder(), background_embedding=False) as m:
        m.forget("ana")
    bob.add(*[Message("user", f"bob again, turn {i}") for i in range(20)])
    assert bob.compact(300, "summarize", force=True).plan is not None
    said = [t.message.content for t in app.turns()]
    assert len(said) == 40 and not any("ana" in text for text in said)
    assert app.log_restarts == 1


@pytest.mark.parametrize("strategy", ["summarize", "offload"])
def test_a_turn_unpinned_after_a_compaction_stepped_over_it_stays_until_compacted(
    db, tmp_path, strategy
):
    # A compaction steps over a pinned turn (no summary line, no archive) and moves
    # start_seq past it; unpinning it later made it vanish from the window, in no
    # summary and no memory. It stays now, and the next compaction takes it.
    memory = Memory(db, embedder=HashEmbedder(), background_embedding=False)
    session = Session(memory.store, "s1", tenant=memory.tenant, user_id="ana")
    for i in range(10):
        session.add(Message("user", f"Fact {i}: my cousin Pedro{i} moved to Porto in {2000 + i}."))
    session.pin(3)
    archive = memory if strategy == "offload" else None
    first = session.compact(150, strategy, memory=archive, force=True)
    assert first.plan is not None and 3 not in first.plan.rotate
    session.pin(3, pinned=False)
    assert 3 in [t.seq for t in visible_turns(session.turns(), session.state())]
    for i in range(10, 20):
        session.add(Message("user", f"Fact {i}: my cousin Pedro{i} moved to Porto in {2000 + i}."))
    second = session.compact(150, strategy, memory=archive, force=True)
    assert second.plan is not None and 3 in second.plan.rotate  # summarized or archived
    if strategy == "offload":
        assert [r for r in memory.get_all(user_id="ana", limit=100) if "Pedro3 " in r.text]
    assert session.state().kept == ()
    memory.close()
