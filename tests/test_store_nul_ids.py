"""An id holding NUL (``\\x00``) reads as absent on every store, as an unknown id does.

No store keeps a NUL (every write of one is refused, naming the field: see
``test_store_agreement``), so an id holding one names nothing. SQLite answered so; on
PostgreSQL, which cannot even send NUL as a parameter, every read by such an id (``get``,
``delete``, ``history``, a scope's session or user in a filter, ``turns``,
``session_meta``, ``forget``...) failed with the driver's refusal instead: an error where a
server whose ids come from a client expects None, [], 0 or NotFound. The ``store`` fixture
runs each test on both stores.

On SQLite an id that is a stored one with a NUL added (``"s1\\x00"``) is worse: its
``json_each`` lists end a text at NUL, so ``delete``, ``delete_many`` and
``quarantine_vectors`` acted on the record ``s1`` (deleted it); the SQLite store now
applies the same rule to them.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from contextos.store.base import Patch, Store
from contextos.store.sqlite import SQLiteStore
from contextos.types import Filter, MemoryRecord, Message, Scope, Turn, content_hash

T = "t1"
SCOPE = Scope(tenant=T, user_id="u1", agent_id="a1", session_id="s1")
NUL_IDS = ["a\x00b", "\x00", "\x00s1"]
#: A stored id (``seed``'s record and session) with a NUL added at its end.
STORED_PLUS_NUL = "s1\x00"
UNKNOWN = "nobody-has-this-id"

Call = Callable[[Store, str, "Seeded"], Any]


class Seeded:
    """What ``seed`` wrote: one record (with a vector) and a session with one turn."""

    def __init__(self, record: MemoryRecord, turn: Turn) -> None:
        self.record = record
        self.turn = turn


def seed(store: Store) -> Seeded:
    r = MemoryRecord(
        id="s1",  # so that "s1\x00" is a stored id plus a NUL
        text="a plain memory",
        scope=SCOPE,
        created_at=datetime(2024, 5, 1, tzinfo=UTC),
        hash=content_hash("a plain memory"),
    )
    store.put([r])
    store.set_vectors(T, [r.id], VEC, "m")
    (turn,) = store.append_turns(SCOPE, [Message("user", "hello there")], [3])
    store.set_session_meta(SCOPE, {"summary": "hi"})
    return Seeded(r, turn)


def _in(x: str, **ids: str) -> Scope:
    return Scope(tenant=T, **{k: (x if v == "X" else v) for k, v in ids.items()})


VEC = np.array([[1, 0, 0, 0]], np.float32)  # unit, as Memory writes them

#: (name, call): each is called with a NUL id and with an unknown one, and must give the
#: same outcome (the same value, or the same exception type) for both.
CALLS: list[tuple[str, Call]] = [
    ("get", lambda s, x, d: s.get(T, x)),
    ("get by tenant", lambda s, x, d: s.get(x, d.record.id)),
    ("get_many", lambda s, x, d: s.get_many(T, [x])),
    ("get_many by tenant", lambda s, x, d: s.get_many(x, [d.record.id])),
    ("update", lambda s, x, d: s.update(T, x, Patch(metadata={"k": 1}))),
    ("update by tenant", lambda s, x, d: s.update(x, d.record.id, Patch(metadata={"k": 1}))),
    ("update counted", lambda s, x, d: s.update(T, x, Patch(text="new"), count=lambda r: None)),
    ("delete", lambda s, x, d: s.delete(T, x)),
    ("delete by tenant", lambda s, x, d: s.delete(x, d.record.id)),
    ("delete purge", lambda s, x, d: s.delete(T, x, purge=True)),
    ("delete_many", lambda s, x, d: s.delete_many(T, [x])),
    ("delete_many purge", lambda s, x, d: s.delete_many(T, [x], purge=True)),
    ("delete_many by tenant", lambda s, x, d: s.delete_many(x, [d.record.id])),
    ("find_by_hash user", lambda s, x, d: s.find_by_hash(_in(x, user_id="X"), d.record.hash)),
    ("find_by_hash hash", lambda s, x, d: s.find_by_hash(SCOPE, x)),
    ("history", lambda s, x, d: s.history(T, x)),
    ("history by tenant", lambda s, x, d: s.history(x, d.record.id)),
    ("forget", lambda s, x, d: s.forget(_in(x, user_id="X"))),
    ("forget by tenant", lambda s, x, d: s.forget(Scope(tenant=x, user_id="u1"))),
    ("set_vectors", lambda s, x, d: s.set_vectors(T, [x], VEC, "m")),
    ("set_vectors by tenant", lambda s, x, d: s.set_vectors(x, [d.record.id], VEC, "m")),
    ("set_vectors owner", lambda s, x, d: s.set_vectors(T, [d.record.id], VEC, "m", owner=x)),
    ("quarantine_vectors", lambda s, x, d: s.quarantine_vectors(T, [x], "e")),
    ("quarantine by tenant", lambda s, x, d: s.quarantine_vectors(x, [d.record.id], "e")),
    ("quarantine owner", lambda s, x, d: s.quarantine_vectors(T, [d.record.id], "e", owner=x)),
    ("embedding_status", lambda s, x, d: s.embedding_status(x)),
    (
        "without_vectors",
        lambda s, x, d: s.without_vectors(T, [x, d.record.id], dimensions=4) - {x},
    ),
    (
        "without_vectors by tenant",
        lambda s, x, d: s.without_vectors(x, [d.record.id], dimensions=4),
    ),
    ("extend_claim", lambda s, x, d: s.extend_claim(x, lease_s=10)),
    ("turns", lambda s, x, d: s.turns(_in(x, session_id="X"))),
    ("turns newest", lambda s, x, d: s.turns(_in(x, session_id="X"), limit=5, newest=True)),
    ("turns by tenant", lambda s, x, d: s.turns(Scope(tenant=x, session_id="s1"))),
    (
        "turns_since",
        lambda s, x, d: s.turns_since(_in(x, session_id="X"), d.turn, revision=None),
    ),
    ("session_meta", lambda s, x, d: s.session_meta(_in(x, session_id="X"))),
    ("session_meta_revision", lambda s, x, d: s.session_meta_revision(_in(x, session_id="X"))),
    ("sessions by user", lambda s, x, d: s.sessions(_in(x, user_id="X"))),
    ("sessions by agent", lambda s, x, d: s.sessions(_in(x, agent_id="X"))),
    ("sessions by tenant", lambda s, x, d: s.sessions(Scope(tenant=x))),
    ("swap_session_meta revision", lambda s, x, d: s.swap_session_meta(SCOPE, {}, revision=x)),
]
# Every read under a filter, for each id of its scope and a metadata value.
FILTERS: list[tuple[str, Callable[[str], Filter]]] = [
    ("tenant", lambda x: Filter(scope=Scope(tenant=x))),
    ("user", lambda x: Filter(scope=_in(x, user_id="X"))),
    ("agent", lambda x: Filter(scope=_in(x, agent_id="X"))),
    ("session", lambda x: Filter(scope=_in(x, user_id="u1", session_id="X"))),
    ("metadata", lambda x: Filter(scope=Scope(tenant=T), metadata={"k": x})),
]
for _what, _flt in FILTERS:
    CALLS += [
        (f"list {_what}", lambda s, x, d, f=_flt: s.list(f(x))),
        (f"count {_what}", lambda s, x, d, f=_flt: s.count(f(x))),
        (
            f"keyword_search {_what}",
            lambda s, x, d, f=_flt: s.keyword_search(f(x), "plain memory", limit=5),
        ),
        (
            f"vector_search {_what}",
            lambda s, x, d, f=_flt: s.vector_search(f(x), np.ones(4, np.float32), limit=5),
        ),
    ]


def outcome(call: Call, store: Store, x: str, seeded: Seeded) -> tuple[str, Any]:
    try:
        return ("returned", call(store, x, seeded))
    except Exception as exc:  # the outcome compared: its type, not its text
        return ("raised", type(exc).__name__)


def state(store: Store) -> tuple[Any, ...]:
    """All that ``seed`` wrote, as read back."""
    return (
        store.get(T, "s1"),
        store.history(T, "s1"),
        store.turns(SCOPE),
        store.session_meta(SCOPE),
        store.embedding_status(T),
    )


def differences(store: Store, nul_ids: list[str]) -> list[tuple[object, ...]]:
    """Each call of ``CALLS`` whose outcome for one of ``nul_ids`` is not its outcome for
    an unknown id, and any change to what ``seed`` wrote."""
    seeded = seed(store)
    before = state(store)
    differ: list[tuple[object, ...]] = []
    for name, call in CALLS:
        unknown = outcome(call, store, UNKNOWN, seeded)
        assert unknown[0] == "returned" or unknown[1] == "NotFound", (name, unknown)
        for x in nul_ids:
            got = outcome(call, store, x, seeded)
            if got != unknown:
                differ.append((name, x, got, unknown))
            if state(store) != before:
                differ.append((name, x, "changed what was stored"))
                break  # the rest would be compared with a changed store
    return differ


def test_every_read_by_an_id_holding_nul_answers_as_for_an_unknown_id(store: Store) -> None:
    assert differences(store, NUL_IDS) == []


@pytest.fixture(params=["sqlite", "postgres"])
def each_store(request: pytest.FixtureRequest, tmp_path: Any) -> Any:
    if request.param == "sqlite":
        s = SQLiteStore(tmp_path / "nul.db")
        yield s
        s.close()
        return
    from pg_support import postgres_store

    with postgres_store() as s:
        yield s


def test_a_stored_id_with_a_nul_added_does_not_reach_that_record(each_store: Store) -> None:
    assert differences(each_store, [STORED_PLUS_NUL]) == []


def test_in_a_list_of_ids_those_holding_nul_are_skipped_and_the_rest_served(
    store: Store,
) -> None:
    seeded = seed(store)
    other = MemoryRecord(
        id=str(uuid.uuid4()), text="another memory", scope=SCOPE, hash=content_hash("x")
    )
    store.put([other])
    rid = seeded.record.id
    assert [r.id for r in store.get_many(T, ["a\x00b", rid, "\x00"])] == [rid]
    # Vectors: the row of a NUL id is skipped, the others are stored as they pair.
    vecs = np.array([[1, 0, 0, 0], [0, 1, 0, 0]], np.float32)
    store.set_vectors(T, ["a\x00b", other.id], vecs, "m")
    hits = store.vector_search(Filter(scope=SCOPE), np.array([0, 1, 0, 0], np.float32), limit=1)
    assert [(h.id, round(h.score, 5)) for h in hits] == [(other.id, 1.0)]
    store.quarantine_vectors(T, ["\x00", rid], "failed")
    assert [q.id for q in store.embedding_status(T).quarantined] == [rid]
    assert store.delete_many(T, ["a\x00b", rid, "\x00"]) == [rid]
    assert store.get(T, rid) is None
    assert store.get(T, other.id) is not None


@pytest.mark.parametrize(
    "write",
    [
        lambda s, sc: s.append_turns(sc, [Message("user", "hi")], [1]),
        lambda s, sc: s.swap_session_meta(sc, {"summary": "x"}, revision=None),
        lambda s, sc: s.swap_session_meta(sc, {"summary": "x"}, revision="r"),
        lambda s, sc: s.set_session_meta(sc, {"summary": "x"}),
    ],
    ids=["append_turns", "swap_session_meta new", "swap_session_meta", "set_session_meta"],
)
def test_a_session_write_under_a_nul_id_is_refused_naming_it(
    store: Store, write: Callable[[Store, Scope], Any]
) -> None:
    for field, scope in [
        ("session_id", Scope(tenant=T, session_id="s\x001")),
        ("user_id", Scope(tenant=T, user_id="u\x00", session_id="s1")),
        ("tenant", Scope(tenant="t\x00", session_id="s1")),
    ]:
        with pytest.raises(ValueError, match=rf"^{field} contains a NUL character"):
            write(store, scope)
    assert store.sessions(Scope(tenant=T)) == []


def _pending(store: Store, memory_id: str) -> MemoryRecord:
    """A new record of ``SCOPE``, waiting for its vector."""
    r = MemoryRecord(id=memory_id, text="waits for a vector", scope=SCOPE, hash=content_hash("w"))
    store.put([r])
    return r


def test_a_claimant_named_with_nul_claims_nothing_and_leaves_claims_alone(store: Store) -> None:
    # SQLite answered; PostgreSQL, which cannot send the name, raised.
    r = _pending(store, "p1")
    assert [x.id for x in store.claim_vectors("w1", limit=5, lease_s=30)] == [r.id]
    assert store.claim_vectors("w\x00", limit=5, lease_s=30) == []
    assert store.extend_claim("w1", lease_s=30) == 1  # still w1's
    store.set_vectors(T, [r.id], VEC, "m", owner="w1")
    assert store.embedding_status(T).pending == 0


def test_a_claimant_named_with_nul_takes_no_free_record(store: Store) -> None:
    # SQLite claimed free records under a name no vector can be written for, so they
    # waited out the lease; PostgreSQL claimed nothing.
    r = _pending(store, "p1")
    assert store.claim_vectors("w\x00", limit=5, lease_s=30) == []
    assert [x.id for x in store.claim_vectors("w1", limit=5, lease_s=30)] == [r.id]


def test_requeue_for_a_model_named_with_nul_queues_every_vector_again(store: Store) -> None:
    # No stored vector is of that model (PostgreSQL cannot store its name): all are
    # another model's, as SQLite answers. PostgreSQL raised instead.
    seed(store)  # one vector, of model "m"
    assert store.requeue_stale_vectors("m\x00") == 1
    assert store.embedding_status(T).pending == 1
    assert store.requeue_stale_vectors("m\x00") == 0  # queued already


def test_a_quarantine_error_holding_nul_is_kept_and_its_record_leaves_the_queue(
    store: Store,
) -> None:
    # PostgreSQL refused the error, and the record stayed first in the queue for good.
    r = _pending(store, "p1")
    store.quarantine_vectors(T, [r.id], "bad input\x00 (binary body)")
    status = store.embedding_status(T)
    assert status.pending == 0 and [q.id for q in status.quarantined] == [r.id]
    # SQLite keeps the NUL; PostgreSQL, which cannot, writes it out.
    nul = "\x00" if isinstance(store, SQLiteStore) else "\\x00"
    assert status.quarantined[0].error == f"bad input{nul} (binary body)"
