"""The Store contract: every backend must pass every test here, identically.

The ``store`` fixture (conftest.py) runs each test against a real SQLite file
and, when ``make test`` started one, a real PostgreSQL with pgvector.
This module is the specification for writing a new backend.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from contextos.errors import Conflict, NotFound
from contextos.store.base import Patch, Store
from contextos.types import Filter, MemoryRecord, Message, Scope, ToolCall, content_hash

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def rec(
    text: str,
    *,
    user: str | None = "u1",
    tenant: str = "t1",
    agent: str | None = None,
    session: str | None = None,
    mtype: str = "episodic",
    event: datetime | None = None,
    meta: dict | None = None,
    context: str = "",
    created: datetime | None = None,
    valid_to: datetime | None = None,
) -> MemoryRecord:
    return MemoryRecord(
        id=str(uuid.uuid4()),
        text=text,
        scope=Scope(tenant=tenant, user_id=user, agent_id=agent, session_id=session),
        memory_type=mtype,
        metadata=meta or {},
        created_at=created or T0,
        event_time=event,
        valid_from=event,
        valid_to=valid_to,
        provenance=("D1:1", "D1:2"),
        context=context,
        hash=content_hash(text),
    )  # type: ignore[arg-type]


def unit(*values: float) -> np.ndarray:
    v = np.array(values, dtype=np.float32)
    return v / np.linalg.norm(v)


def scope_filter(user: str = "u1", tenant: str = "t1", **kw: object) -> Filter:
    return Filter(scope=Scope(tenant=tenant, user_id=user), **kw)  # type: ignore[arg-type]


# -- records -----------------------------------------------------------------


def test_put_get_round_trip_keeps_every_field(store: Store) -> None:
    r = rec(
        "Ana moved to Lisbon 🇵🇹 — نعم",
        agent="a1",
        session="s1",
        mtype="semantic",
        event=T0,
        meta={"k": "v", "n": 3, "nested": {"x": [1, 2]}},
        context="Ana | May",
    )
    store.put([r])
    got = store.get("t1", r.id)
    assert got is not None
    assert (got.text, got.scope, got.memory_type, dict(got.metadata)) == (
        r.text,
        r.scope,
        r.memory_type,
        dict(r.metadata),
    )
    assert got.event_time == T0 and got.valid_from == T0 and got.valid_to is None
    assert got.created_at == T0
    assert got.provenance == ("D1:1", "D1:2") and got.context == "Ana | May"
    assert got.hash == content_hash(r.text)


def test_get_is_tenant_scoped(store: Store) -> None:
    r = rec("secret of tenant one")
    store.put([r])
    assert store.get("t2", r.id) is None
    assert store.get_many("t2", [r.id]) == []


def test_put_is_atomic_and_rejects_duplicate_ids(store: Store) -> None:
    a = rec("first")
    store.put([a])
    b = rec("second")
    with pytest.raises(ValueError):
        store.put([b, a])
    assert store.get("t1", b.id) is None
    assert store.count(scope_filter()) == 1


def test_put_unchanged_writes_only_while_its_sources_are_as_read(store: Store) -> None:
    # A fact derived from others (merged by a reconciler) is written only while they
    # are still stored with the text it was derived from: not after their erasure,
    # nor after a rewrite, nor from another tenant's record of that id.
    source, other = rec("Ana lives in Paris."), rec("Ana plays chess.")
    store.put([source, other])
    as_read = {source.id: source.hash, other.id: other.hash}
    store.update("t1", other.id, Patch(text="Ana plays go."))
    refused = rec("Ana lived in Paris and plays chess.")
    with pytest.raises(Conflict):
        store.put([refused], unchanged=as_read)
    store.delete("t1", other.id)
    with pytest.raises(Conflict):
        store.put([refused], unchanged={other.id: other.hash})
    with pytest.raises(Conflict):
        store.put([rec("x", tenant="t2")], unchanged={source.id: source.hash})
    assert store.get("t1", refused.id) is None
    kept = rec("Ana lived in Paris.")
    store.put([kept], unchanged={source.id: source.hash})
    assert store.get("t1", kept.id) is not None


def test_get_many_keeps_order_and_skips_unknown(store: Store) -> None:
    rs = [rec(f"memory {i}") for i in range(5)]
    store.put(rs)
    ids = [rs[3].id, "nope", rs[0].id]
    assert [r.id for r in store.get_many("t1", ids)] == [rs[3].id, rs[0].id]


def test_update_logs_history_and_clears_vector(store: Store) -> None:
    r = rec("likes tea")
    store.put([r])
    store.set_vectors("t1", [r.id], unit(1, 0, 0, 0)[None, :], "m")
    assert store.pending_vectors(limit=10) == []
    new = store.update("t1", r.id, Patch(text="likes coffee", metadata={"src": "chat"}))
    assert new.text == "likes coffee" and dict(new.metadata) == {"src": "chat"}
    assert new.hash == content_hash("likes coffee")
    assert [p.id for p in store.pending_vectors(limit=10)] == [r.id]
    events = store.history("t1", r.id)
    assert [(e.event, e.old_text, e.new_text) for e in events] == [
        ("ADD", None, "likes tea"),
        ("UPDATE", "likes tea", "likes coffee"),
    ]


def test_history_reads_a_page_by_event_number(store: Store) -> None:
    # A server's history page reads a few events at a time, not the whole history.
    r = rec("v0")
    store.put([r])
    for v in range(1, 6):
        store.update("t1", r.id, Patch(text=f"v{v}"))
    whole = store.history("t1", r.id)
    assert [e.new_text for e in whole] == [f"v{v}" for v in range(6)]
    assert store.history("t1", r.id, offset=2, limit=3) == whole[2:5]
    assert store.history("t1", r.id, offset=4) == whole[4:]
    assert store.history("t1", r.id, limit=1) == whole[:1]
    assert store.history("t1", r.id, offset=6, limit=2) == []
    assert store.history("t2", r.id, limit=2) == []


def test_update_and_delete_unknown_or_foreign_raise_not_found(store: Store) -> None:
    r = rec("mine")
    store.put([r])
    with pytest.raises(NotFound):
        store.update("t1", "missing", Patch(text="x"))
    with pytest.raises(NotFound):
        store.update("t2", r.id, Patch(text="stolen"))
    with pytest.raises(NotFound):
        store.delete("t2", r.id)
    assert store.get("t1", r.id).text == "mine"  # type: ignore[union-attr]


def test_delete_removes_record_but_keeps_history(store: Store) -> None:
    r = rec("to be deleted")
    store.put([r])
    store.set_vectors("t1", [r.id], unit(1, 0, 0, 0)[None, :], "m")
    store.delete("t1", r.id)
    assert store.get("t1", r.id) is None
    assert [e.event for e in store.history("t1", r.id)] == ["ADD", "DELETE"]
    assert store.keyword_search(scope_filter(), "deleted", limit=5) == []
    assert store.vector_search(scope_filter(), unit(1, 0, 0, 0), limit=5) == []


def test_validity_interval_hides_closed_records_unless_asked(store: Store) -> None:
    old = rec("lives in Paris", event=T0)
    store.put([old])
    store.update("t1", old.id, Patch(valid_to=T0 + timedelta(days=30)))
    new = rec("lives in Berlin", event=T0 + timedelta(days=30))
    store.put([new])
    assert [r.text for r in store.list(scope_filter())] == ["lives in Berlin"]
    as_of_may = scope_filter(as_of=T0 + timedelta(days=3))
    assert [r.text for r in store.list(as_of_may)] == ["lives in Paris"]
    everything = store.list(scope_filter(include_invalid=True))
    assert {r.text for r in everything} == {"lives in Paris", "lives in Berlin"}
    assert [r.id for r in store.keyword_search(as_of_may, "lives", limit=5)] == [old.id]


def test_list_filters_and_paginates_newest_first(store: Store) -> None:
    rs = [
        rec(
            f"note {i}",
            created=T0 + timedelta(minutes=i),
            session="s1" if i % 2 else "s2",
            mtype="semantic" if i < 3 else "episodic",
            meta={"i": i, "even": i % 2 == 0},
            event=T0 + timedelta(days=i),
        )
        for i in range(6)
    ]
    store.put(rs)
    store.put([rec("other user", user="u2")])
    assert [r.text for r in store.list(scope_filter(), limit=2)] == ["note 5", "note 4"]
    assert [r.text for r in store.list(scope_filter(), limit=2, offset=2)] == ["note 3", "note 2"]
    sem = store.list(scope_filter(memory_types=("semantic",)))
    assert {r.text for r in sem} == {"note 0", "note 1", "note 2"}
    sess = store.list(Filter(scope=Scope(tenant="t1", user_id="u1", session_id="s1")))
    assert {r.text for r in sess} == {"note 1", "note 3", "note 5"}
    meta = store.list(scope_filter(metadata={"even": True}))
    assert {r.text for r in meta} == {"note 0", "note 2", "note 4"}
    window = store.list(
        scope_filter(event_after=T0 + timedelta(days=2), event_before=T0 + timedelta(days=4))
    )
    assert {r.text for r in window} == {"note 2", "note 3"}
    assert store.count(scope_filter()) == 6
    assert store.count(Filter(scope=Scope(tenant="t1"))) == 7
    assert store.count(Filter(scope=Scope(tenant="t2"))) == 0


def test_restore_inserts_as_given_and_returns_what_was_there(store: Store) -> None:
    """``restore`` (an import): ids, times, validity kept; an id already stored is
    returned with its stored record and left alone; the rest are indexed and queued."""
    closed = replace(
        rec("Ana lived in Berlin", created=T0, valid_to=T0 + timedelta(days=1)),
        updated_at=T0 + timedelta(days=1),
    )
    stored = rec("already here")
    store.put([stored])
    found = store.restore([closed, replace(stored, text="changed meanwhile")])
    assert set(found) == {stored.id} and found[stored.id] == store.get("t1", stored.id)
    assert store.get("t1", stored.id).text == "already here"  # type: ignore[union-attr]
    got = store.get("t1", closed.id)
    assert got == closed and got.updated_at == T0 + timedelta(days=1)
    assert [
        r.id for r in store.keyword_search(scope_filter(include_invalid=True), "Berlin", limit=3)
    ] == [closed.id]
    assert closed.id in {r.id for r in store.pending_vectors(limit=10)}
    assert store.restore([closed]) == {closed.id: got}


def test_list_after_oldest_first_pages_forward(store: Store) -> None:
    same = [rec(f"tied {i}", created=T0) for i in range(3)]  # one instant: written order
    store.put([rec("older", created=T0 - timedelta(minutes=1)), *same])
    first = store.list_after(scope_filter(), limit=2, oldest_first=True)
    rest = store.list_after(scope_filter(), after=first[-1][1], limit=10, oldest_first=True)
    assert [r.text for r, _ in first + rest] == ["older", "tied 0", "tied 1", "tied 2"]


# -- search --------------------------------------------------------------------


def test_keyword_search_ranks_and_scopes(store: Store) -> None:
    store.put(
        [
            rec("Melanie painted a sunrise over the lake"),
            rec("Caroline went to the support group"),
            rec("lake house weekend", user="u2"),
            rec("lake trip in tenant two", tenant="t2"),
        ]
    )
    hits = store.keyword_search(scope_filter(), "When did Melanie paint the lake?", limit=5)
    assert len(hits) == 1
    assert store.get("t1", hits[0].id).text.startswith("Melanie")  # type: ignore[union-attr]
    assert store.keyword_search(scope_filter(), "the of and", limit=5) == []


def test_keyword_search_uses_context_and_survives_query_syntax(store: Store) -> None:
    store.put([rec("I did it!", context="Caroline | image: a trophy on a shelf")])
    assert len(store.keyword_search(scope_filter(), "trophy", limit=5)) == 1
    for nasty in [
        '"unbalanced',
        "a AND OR NOT",
        "col:umn*",
        "(x",
        "'; DROP TABLE memories; --",
        "NEAR(a b)",
        "😀",
        "\x00",
    ]:
        store.keyword_search(scope_filter(), nasty, limit=5)  # must not raise
    assert store.count(scope_filter()) == 1


@pytest.mark.parametrize(("context_weight", "first"), [(0.5, "in text"), (2.0, "in context")])
def test_keyword_search_weighs_the_context_column(
    store: Store, context_weight: float, first: str
) -> None:
    """A word in the context counts ``context_weight`` times a word in the text, in both
    stores' BM25: two memories alike but for where "trophy" is."""
    in_text = rec("a trophy on the shelf", context="Ana | garden photo")
    in_context = rec("a garden photo on the shelf", context="Ana | trophy")
    store.put([in_text, in_context])
    hits = store.keyword_search(scope_filter(), "trophy", limit=5, context_weight=context_weight)
    names = {in_text.id: "in text", in_context.id: "in context"}
    assert [names[h.id] for h in hits][:1] == [first] and len(hits) == 2


def test_vector_search_orders_by_cosine_within_scope(store: Store) -> None:
    a, b, c = rec("a"), rec("b"), rec("c", user="u2")
    d = rec("d", tenant="t2")
    store.put([a, b, c])
    store.put([d])
    store.set_vectors(
        "t1",
        [a.id, b.id, c.id],
        np.stack([unit(1, 0, 0, 0), unit(1, 1, 0, 0), unit(1, 0, 0, 0)]),
        "m",
    )
    store.set_vectors("t2", [d.id], unit(1, 0, 0, 0)[None, :], "m")
    hits = store.vector_search(scope_filter(), unit(1, 0.1, 0, 0), limit=5)
    assert [h.id for h in hits] == [a.id, b.id]
    assert hits[0].score > hits[1].score
    assert hits[0].score == pytest.approx(float(unit(1, 0, 0, 0) @ unit(1, 0.1, 0, 0)), abs=1e-4)


def test_vector_search_applies_metadata_and_type_filters(store: Store) -> None:
    rs = [
        rec(
            f"m{i}",
            meta={"tag": "x" if i % 3 == 0 else "y"},
            mtype="semantic" if i % 2 else "episodic",
        )
        for i in range(12)
    ]
    store.put(rs)
    store.set_vectors(
        "t1", [r.id for r in rs], np.stack([unit(1, i / 10, 0, 0) for i in range(12)]), "m"
    )
    hits = store.vector_search(scope_filter(metadata={"tag": "x"}), unit(1, 0, 0, 0), limit=10)
    assert [h.id for h in hits] == [rs[0].id, rs[3].id, rs[6].id, rs[9].id]
    sem = store.vector_search(scope_filter(memory_types=("semantic",)), unit(1, 0, 0, 0), limit=3)
    assert [h.id for h in sem] == [rs[1].id, rs[3].id, rs[5].id]


def test_a_search_can_leave_one_session_out(store: Store) -> None:
    """``Filter(exclude_session=...)``, as a context window searches: the memories of
    its own session (the log holds them) are left out by every index and by SQL, so they
    cannot take the places of the others; a memory of no session stays."""
    rs = [
        rec(f"tea {i}", session="chat" if i < 6 else ("other" if i < 8 else None))
        for i in range(10)
    ]
    store.put(rs)
    store.set_vectors(
        "t1", [r.id for r in rs], np.stack([unit(1, i / 10, 0, 0) for i in range(10)]), "m"
    )
    flt = scope_filter(exclude_session="chat")
    kept = {r.id for r in rs[6:]}
    assert {h.id for h in store.vector_search(flt, unit(1, 0, 0, 0), limit=3)} <= kept
    assert len(store.vector_search(flt, unit(1, 0, 0, 0), limit=10)) == 4
    assert {h.id for h in store.keyword_search(flt, "tea", limit=10)} == kept
    assert {r.id for r in store.list(flt)} == kept
    assert [flt.matches(r, datetime.now(UTC)) for r in rs] == [False] * 6 + [True] * 4
    # A session no row has leaves everything; the rule for ids applies to it.
    assert len(store.list(scope_filter(exclude_session="nowhere"))) == 10
    with pytest.raises(ValueError):
        scope_filter(exclude_session=" ")


def test_a_metadata_key_in_any_script_can_be_filtered_on(store: Store) -> None:
    """A key such as ``città`` was stored and refused as a filter ("must be dotted
    identifiers", ASCII only) on every surface (a review). Letters of any script pass;
    anything that could leave the JSON path (quotes, spaces, a newline) still does not."""
    rome, tokyo = rec("Rome", meta={"città": "Roma"}), rec("Tokyo", meta={"名前": {"x": 1}})
    delhi = rec("Delhi", meta={"नाम": "दिल्ली", "user-id": 7})
    store.put([rome, tokyo, delhi])
    assert [r.id for r in store.list(scope_filter(metadata={"città": "Roma"}))] == [rome.id]
    assert [r.id for r in store.list(scope_filter(metadata={"名前.x": 1}))] == [tokyo.id]
    hindi = scope_filter(metadata={"नाम": "दिल्ली", "user-id": 7})
    assert [r.id for r in store.list(hindi)] == [delhi.id]
    for bad in ("città\n", "a b", "a'", "a..b", "$.a", "a[0]", 'a"b', "a\u202eb"):
        with pytest.raises(ValueError, match="dotted identifiers"):
            store.list(scope_filter(metadata={bad: 1}))


def test_set_vectors_ignores_unknown_and_foreign_ids(store: Store) -> None:
    r = rec("x")
    store.put([r])
    store.set_vectors("t2", [r.id], unit(1, 0, 0, 0)[None, :], "m")
    assert [p.id for p in store.pending_vectors(limit=5)] == [r.id]
    store.set_vectors("t1", ["unknown", r.id], np.stack([unit(0, 1, 0, 0), unit(1, 0, 0, 0)]), "m")
    assert store.pending_vectors(limit=5) == []


def test_set_vectors_refuses_ids_and_vectors_of_different_lengths(store: Store) -> None:
    r = rec("x")
    store.put([r])
    with pytest.raises(ValueError, match="differ in length"):
        store.set_vectors("t1", [r.id, "other"], unit(1, 0, 0, 0)[None, :], "m")
    store.set_vectors("t1", [], np.zeros((0, 4), dtype=np.float32), "m")  # nothing to write
    assert [p.id for p in store.pending_vectors(limit=5)] == [r.id]


# -- forget ----------------------------------------------------------------------


def test_forget_erases_one_user_everywhere(store: Store) -> None:
    mine = [rec("u1 secret one", session="s1"), rec("u1 secret two")]
    theirs = rec("u2 keeps this", user="u2")
    store.put([*mine, theirs])
    store.set_vectors("t1", [r.id for r in mine], np.stack([unit(1, 0, 0, 0)] * 2), "m")
    s1 = Scope(tenant="t1", user_id="u1", session_id="s1")
    store.append_turns(s1, [Message(role="user", content="u1 secret turn")], [5])
    store.set_session_meta(s1, {"summary": "u1 secret summary"})
    assert store.forget(Scope(tenant="t1", user_id="u1")) == 2
    assert store.list(scope_filter(include_invalid=True)) == []
    assert store.history("t1", mine[0].id) == []
    assert store.turns(s1) == [] and store.session_meta(s1) == {}
    assert store.keyword_search(scope_filter(), "secret", limit=5) == []
    assert store.vector_search(scope_filter(), unit(1, 0, 0, 0), limit=5) == []
    assert store.get("t1", theirs.id) is not None


def test_forget_reaches_a_session_the_user_has_only_metadata_in(store: Store) -> None:
    """The user's sessions come from memories, turns and session metadata alike: here
    only the metadata names the user, and the session's user-less turn goes with it."""
    store.set_session_meta(Scope(tenant="t1", user_id="u1", session_id="s2"), {"k": "v"})
    anonymous = Scope(tenant="t1", session_id="s2")
    store.append_turns(anonymous, [Message(role="assistant", content="about u1")], [3])
    other = Scope(tenant="t1", session_id="s3")  # a session no user of it is forgotten
    store.append_turns(other, [Message(role="assistant", content="stays")], [2])
    store.forget(Scope(tenant="t1", user_id="u1"))
    assert store.turns(anonymous) == []
    assert [t.message.content for t in store.turns(other)] == ["stays"]


def test_forget_needs_a_user(store: Store) -> None:
    with pytest.raises(ValueError):
        store.forget(Scope(tenant="t1"))


# -- session logs ------------------------------------------------------------------


def test_session_log_appends_in_order_with_tool_calls(store: Store) -> None:
    s = Scope(tenant="t1", user_id="u1", session_id="chat-1")
    call = ToolCall(id="call_1", name="weather", arguments='{"city":"Oslo"}')
    first = store.append_turns(
        s,
        [
            Message(role="user", content="weather in Oslo?"),
            Message(role="assistant", content="", tool_calls=(call,)),
        ],
        [5, 9],
    )
    second = store.append_turns(
        s, [Message(role="tool", content="-3C", tool_call_id="call_1", metadata={"k": 1})], [3]
    )
    assert [t.seq for t in first + second] == [0, 1, 2]
    turns = store.turns(s)
    assert [t.message.role for t in turns] == ["user", "assistant", "tool"]
    assert turns[1].message.tool_calls == (call,)
    assert turns[2].message.tool_call_id == "call_1" and dict(turns[2].message.metadata) == {"k": 1}
    assert [t.tokens for t in turns] == [5, 9, 3]
    assert [t.seq for t in store.turns(s, after_seq=0, limit=1)] == [1]
    other_tenant = Scope(tenant="t2", user_id="u1", session_id="chat-1")
    assert store.turns(other_tenant) == []


def test_session_meta_and_listing(store: Store) -> None:
    a = Scope(tenant="t1", user_id="u1", session_id="a")
    b = Scope(tenant="t1", user_id="u2", session_id="b")
    store.append_turns(a, [Message(role="user", content="hi")], [1])
    store.set_session_meta(b, {"summary": "s", "covers": [0, 4]})
    assert store.session_meta(b) == {"summary": "s", "covers": [0, 4]}
    assert store.session_meta(Scope(tenant="t2", session_id="b")) == {}
    assert set(store.sessions(Scope(tenant="t1"))) == {"a", "b"}
    assert store.sessions(Scope(tenant="t1", user_id="u1")) == ["a"]
    assert store.sessions(Scope(tenant="t2")) == []


def test_find_by_hash_matches_the_exact_scope_only(store: Store) -> None:
    a = rec("same words", user="u1")
    b = rec("same words", user="u1", session="s1")
    c = rec("same words", user="u2")
    d = rec("other words", user="u1")
    store.put([a, b, c, d])
    found = store.find_by_hash(Scope(tenant="t1", user_id="u1"), content_hash("same words"))
    assert [r.id for r in found] == [a.id]
    in_session = Scope(tenant="t1", user_id="u1", session_id="s1")
    assert [r.id for r in store.find_by_hash(in_session, content_hash("same words"))] == [b.id]
    assert store.find_by_hash(Scope(tenant="t2", user_id="u1"), content_hash("same words")) == []


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), [1.0, float("-inf")]])
def test_metadata_must_be_strict_json_on_every_store(store: Store, bad: object) -> None:
    # SQLite stored NaN (as JSON's non-standard NaN) and read it back; PostgreSQL's
    # jsonb refuses it and HTTP sent it as null: one rule for every store now.
    with pytest.raises(TypeError, match="JSON"):
        store.put([rec("a note", meta={"k": bad})])
    assert store.list(scope_filter()) == []


def test_session_meta_must_be_strict_json_on_every_store(store: Store) -> None:
    scope = Scope(tenant="t1", session_id="s1")
    with pytest.raises(TypeError, match="JSON"):
        store.set_session_meta(scope, {"summary_tokens": float("nan")})
    assert store.session_meta(scope) == {}


def test_embedding_status_counts_every_quarantined_record_and_lists_the_oldest(
    store: Store,
) -> None:
    from contextos.store.base import QUARANTINED_SHOWN

    mine = [rec(f"bad text {n}", tenant="t1") for n in range(QUARANTINED_SHOWN + 50)]
    theirs = [rec("another tenant's bad text", tenant="t2")]
    store.put(mine + theirs)
    for r in mine:  # one at a time: each its own time, oldest first
        store.quarantine_vectors("t1", [r.id], f"failed {r.text}")
    store.quarantine_vectors("t2", [theirs[0].id], "failed")
    status = store.embedding_status("t1")
    assert status.quarantined_total == QUARANTINED_SHOWN + 50
    assert [q.id for q in status.quarantined] == [r.id for r in mine[:QUARANTINED_SHOWN]]
    assert store.embedding_status().quarantined_total == QUARANTINED_SHOWN + 51
    assert store.embedding_status("t2").quarantined_total == 1
