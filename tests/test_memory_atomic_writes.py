"""A turn and what is made of it change together, and an erasure reaches every copy.

Real stores (a SQLite file in tmp_path and the test PostgreSQL, through the ``store``
fixture) and real processes: the crash tests run the write in a child process whose
store kills it (SIGKILL) as soon as the write it was asked for returns, i.e. right
after its commit, which is where a crash split the old one-transaction-each writes.

- A purge after an update: a reply quotes its turn as first said ("replying to ..."),
  so the purge must scrub every text the turn ever had, not only its current one.
- A turn's facts (``Memory(turn_facts=True)``) are deleted, and replaced by an
  update, in the turn's own transaction.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from contextos.errors import NotFound
from contextos.memory import Memory
from contextos.store.base import Store
from contextos.store.sqlite import SQLiteStore
from contextos.testing.embedders import HashEmbedder
from contextos.types import Filter, MemoryRecord, Scope

SECRET = "my card PIN is 4421 zebra"
CLOSED = datetime(2024, 1, 1, tzinfo=UTC)


@pytest.fixture
def memory(store: Store) -> Iterator[Memory]:
    """A memory with facts beside its session turns, on every Store backend (the store
    fixture closes the store)."""
    yield Memory(store=store, embedder=HashEmbedder(), background_embedding=False, turn_facts=True)


def everything_of(memory: Memory, user_id: str) -> list[MemoryRecord]:
    return memory.get_all(user_id=user_id, filters=Filter(include_invalid=True), limit=1000)


def file_bytes(store: Store) -> bytes:
    """The SQLite file and its write-ahead log, as a disk would show them."""
    assert isinstance(store, SQLiteStore)
    path = str(store.path)
    return b"".join(Path(path + s).read_bytes() for s in ("", "-wal") if Path(path + s).exists())


# -- purge after an update -------------------------------------------------------------


def test_a_purge_after_an_update_removes_the_first_text_from_the_reply(
    memory: Memory, store: Store
) -> None:
    # The reply's context quoted the turn as first said; the purge scrubbed copies of
    # the turn's current (updated) text only, so the PIN stayed in the reply, in search
    # and in the SQLite file.
    turn = memory.add({"role": "user", "content": SECRET}, user_id="ana", session_id="s")[0]
    reply = memory.add(
        {"role": "assistant", "content": "noted, thanks"}, user_id="ana", session_id="s"
    )[0]
    assert "4421 zebra" in memory.get(reply.id).context  # the quote this is about
    memory.update(turn.id, "my card PIN is private")
    memory.delete(turn.id, purge=True)

    assert "zebra" not in memory.get(reply.id).context
    assert lexical_hits(memory, "zebra 4421", "ana") == []
    assert all(e.old_text is None and e.new_text is None for e in memory.history(turn.id))
    if isinstance(store, SQLiteStore):
        assert b"zebra" not in file_bytes(store)


def test_forgetting_a_user_after_an_update_removes_the_first_text_from_others_replies(
    memory: Memory, store: Store
) -> None:
    # A shared session: Bob's record (his, so it stays) quotes Ana's turn as first said.
    turn = memory.add({"role": "user", "content": SECRET}, user_id="ana", session_id="s")[0]
    bobs = MemoryRecord(
        id="bob-reply",
        text="noted, thanks",
        scope=Scope(user_id="bob", session_id="s"),
        context=f"Bob | replying to Ana: {SECRET}",
    )
    store.put([bobs])
    memory.update(turn.id, "my card PIN is private")
    memory.forget("ana")
    assert memory.get(bobs.id).context == "Bob"
    assert lexical_hits(memory, "zebra 4421", "bob") == []


def lexical_hits(memory: Memory, query: str, user_id: str) -> list[str]:
    """Texts of the hits the words of ``query`` found (a dense search returns its
    nearest vectors whatever they say)."""
    hits = memory.search(query, user_id=user_id)
    return [h.record.text for h in hits if h.lexical_rank is not None]


# -- a turn's facts go with it ---------------------------------------------------------

#: The child: opens the store given on its command line (SQLite file, or PostgreSQL URL
#: and schema), wrapped so that the process is killed right after the first write of
#: the verb returns, and runs that verb.
DIE_AFTER_A_WRITE = """
import os, signal, sys
from contextos.memory import Memory
from contextos.testing.embedders import HashEmbedder

WRITES = ("delete", "delete_many", "update")


class DiesAfterAWrite:
    def __init__(self, store):
        self.store = store

    def __getattr__(self, name):
        attr = getattr(self.store, name)
        if name not in WRITES:
            return attr

        def then_die(*args, **kwargs):
            attr(*args, **kwargs)
            os.kill(os.getpid(), signal.SIGKILL)

        return then_die


kind, where, schema, verb, memory_id = sys.argv[1:6]
if kind == "sqlite":
    from contextos.store.sqlite import SQLiteStore
    store = SQLiteStore(where)
else:
    from contextos.store.postgres import PostgresStore
    store = PostgresStore(where, schema=schema)
memory = Memory(
    store=DiesAfterAWrite(store), embedder=HashEmbedder(), background_embedding=False,
    turn_facts=True,
)
if verb == "purge":
    memory.delete(memory_id, purge=True)
else:
    memory.update(memory_id, "Actually I never left Porto, I stayed there.")
"""


def run_and_kill(store: Store, verb: str, memory_id: str) -> None:
    """Run ``verb`` on ``memory_id`` in a child process killed after its first write."""
    if isinstance(store, SQLiteStore):
        where = ("sqlite", str(store.path), "-")
    else:
        from pg_support import pg_url

        where = ("postgres", pg_url(), str(store.schema))  # type: ignore[attr-defined]
    cmd = [sys.executable, "-c", DIE_AFTER_A_WRITE, *where, verb, memory_id]
    child = subprocess.run(cmd, timeout=120, capture_output=True, text=True)
    assert child.returncode == -9, child.stderr


def add_turn(memory: Memory, text: str) -> MemoryRecord:
    message = {"role": "user", "content": text, "name": "Ana"}
    return memory.add(message, user_id="ana", session_id="s1")[0]


def facts_of(memory: Memory, turn_id: str) -> list[MemoryRecord]:
    return [r for r in everything_of(memory, "ana") if r.metadata.get("fact_of") == turn_id]


def test_a_purge_killed_after_its_write_leaves_no_fact_of_the_turn(
    memory: Memory, store: Store
) -> None:
    # The turn was deleted in one transaction and each fact in its own: killed between,
    # the facts (which repeat the purged text) stayed searchable, their history kept
    # the text, and a second purge answered NotFound.
    turn = add_turn(memory, "My secret PIN is 4421 and I moved to Lisbon last May.")
    assert facts_of(memory, turn.id), "the turn has no fact: nothing to test"
    run_and_kill(store, "purge", turn.id)

    assert everything_of(memory, "ana") == []
    assert memory.search("secret PIN 4421 Lisbon", user_id="ana") == []


def test_an_update_killed_after_its_write_leaves_no_fact_of_the_old_text(
    memory: Memory, store: Store
) -> None:
    # The text was updated in one transaction, the old facts deleted and the new ones
    # put in others: killed after the first, the turn said Porto and its facts Lisbon.
    turn = add_turn(memory, "I moved to Lisbon last May.")
    assert any("Lisbon" in f.text for f in facts_of(memory, turn.id))
    run_and_kill(store, "update", turn.id)

    assert "Porto" in memory.get(turn.id).text
    assert not [f.text for f in facts_of(memory, turn.id) if "Lisbon" in f.text]
    assert memory.search("Lisbon", user_id="ana") == []


def test_purging_a_turn_already_deleted_takes_the_facts_left_behind(
    memory: Memory, store: Store
) -> None:
    # What the old, split purge left after a crash: the turn purged, its facts not.
    turn = add_turn(memory, "My secret PIN is 4421 and I moved to Lisbon last May.")
    left = facts_of(memory, turn.id)
    assert left
    store.delete(memory.tenant, turn.id, purge=True)
    memory.delete(turn.id, purge=True)  # used to raise NotFound: nothing could retry
    assert everything_of(memory, "ana") == []
    assert all(e.new_text is None and e.old_text is None for e in memory.history(left[0].id))
    with pytest.raises(NotFound):
        memory.delete(turn.id, purge=True)  # nothing left of it: as for any unknown id
    with pytest.raises(NotFound):
        memory.delete("no-such-id")


class CountsLists:
    """The store, counting ``list`` calls (the tenant-wide search for left-behind facts)."""

    def __init__(self, store: Store) -> None:
        self.store, self.lists = store, 0

    def __getattr__(self, name: str) -> object:
        if name == "list":
            self.lists += 1
        return getattr(self.store, name)


def test_purging_an_id_never_stored_reads_no_records(store: Store) -> None:
    """Why: a purge of an unknown id searched every record of the tenant for facts of
    it (a metadata scan), so any id sent again and again cost a scan each."""
    counted = CountsLists(store)
    memory = Memory(store=counted, embedder=HashEmbedder(), background_embedding=False)  # type: ignore[arg-type]
    add_turn(memory, "My secret PIN is 4421 and I moved to Lisbon last May.")
    before = counted.lists
    with pytest.raises(NotFound):
        memory.delete("no-such-id", purge=True)
    assert counted.lists == before


def test_an_update_of_a_turn_changed_meanwhile_derives_its_facts_from_the_new_row(
    memory: Memory, store: Store
) -> None:
    # Facts are made outside the write transaction; if another writer changed the turn
    # in between, they would describe a text it no longer has. The store refuses
    # (Conflict) and Memory.update reads the turn again.
    from contextos.errors import Conflict
    from contextos.store.base import Derived, Patch

    turn = add_turn(memory, "I moved to Lisbon last May.")
    stale = memory.get(turn.id)
    memory.update(turn.id, "I moved to Berlin last May.")
    with pytest.raises(Conflict):
        store.update(memory.tenant, turn.id, Patch(text="x y"), derived=Derived(based_on=stale))
    assert "Berlin" in memory.get(turn.id).text
    assert any("Berlin" in f.text for f in facts_of(memory, turn.id))
    assert not [f for f in facts_of(memory, turn.id) if "Lisbon" in f.text]


def test_deleting_a_turn_deletes_its_facts_and_scope_is_kept(memory: Memory) -> None:
    turn = add_turn(memory, "I moved to Lisbon last May.")
    other = memory.add(
        {"role": "user", "content": "I moved to Lisbon last May."}, user_id="bob", session_id="s2"
    )[0]
    memory.delete(turn.id)
    assert everything_of(memory, "ana") == []
    assert {r.metadata.get("fact_of", r.id) for r in everything_of(memory, "bob")} == {other.id}
    assert memory.history(turn.id)[-1].old_text  # a plain delete keeps the text in history


def test_delete_many_skips_ids_already_gone(store: Store) -> None:
    scope = Scope(user_id="u")
    records = [MemoryRecord(id=f"r{i}", text=f"note {i}", scope=scope) for i in range(3)]
    store.put(records)
    assert sorted(store.delete_many(scope.tenant, ["r0", "gone", "r2", "r0"])) == ["r0", "r2"]
    assert [r.id for r in store.list(Filter(scope=scope))] == ["r1"]
    assert store.delete_many(scope.tenant, []) == []


# -- delete_many -------------------------------------------------------------------------


def test_delete_many_purges_turns_with_their_facts_in_one_call(
    memory: Memory, store: Store
) -> None:
    # An offload that found its turns erased purged its copies one at a time, ~40 ms
    # each (a WAL truncation and a scrub per call): 436 s for 8,000 (a review).
    said = [SECRET, "I moved to Lisbon in May 2023 with my dog Rex", "noted, thanks"]
    turns = [
        memory.add({"role": "user", "content": text}, user_id="ana", session_id="s")[0]
        for text in said
    ]
    facts = [r for r in everything_of(memory, "ana") if r.id not in {t.id for t in turns}]
    assert facts, "the turns have facts stored beside them"
    kept = turns[2]
    deleted = memory.delete_many([turns[0].id, turns[1].id, "gone-already"], purge=True)
    assert deleted == [turns[0].id, turns[1].id]  # asked for, in order; facts not listed
    left = everything_of(memory, "ana")
    assert [r.id for r in left if "fact_of" not in r.metadata] == [kept.id]
    assert all(r.metadata.get("fact_of") == kept.id for r in left if "fact_of" in r.metadata)
    assert lexical_hits(memory, "zebra 4421", "ana") == []
    assert "zebra" not in memory.get(kept.id).context
    if isinstance(store, SQLiteStore):
        assert b"zebra" not in file_bytes(store)
    assert memory.delete_many([turns[0].id]) == []  # already gone: skipped, no NotFound
    with pytest.raises(TypeError):
        memory.delete_many(kept.id)


def test_delete_many_takes_the_facts_of_turns_in_several_sessions(memory: Memory) -> None:
    """The facts are looked up one read a scope: each session's turns take their own
    facts along, and a session not asked for keeps its turns and facts."""
    turns = {
        session: [
            memory.add({"role": "user", "content": text}, user_id="ana", session_id=session)[0]
            for text in (f"I moved to Lisbon in May 2023 ({session})", f"My dog is Rex ({session})")
        ]
        for session in ("s1", "s2", "s3")
    }
    asked = [t.id for s in ("s1", "s2") for t in turns[s]]
    assert memory.delete_many(asked, purge=True) == asked
    left = everything_of(memory, "ana")
    kept = {t.id for t in turns["s3"]}
    assert {r.id for r in left if "fact_of" not in r.metadata} == kept
    facts = [r for r in left if "fact_of" in r.metadata]
    assert facts and all(r.metadata["fact_of"] in kept for r in facts)


def test_pointing_to_finds_the_records_naming_ids_in_one_scope(store: Store) -> None:
    """``Store.pointing_to``: records of the scope, closed ones too, whose metadata value
    at ``key`` is a string among the ids; not a number of the same digits, not another
    scope's, not another key."""
    scope = Scope(tenant="t", user_id="u", session_id="s")
    other = Scope(tenant="t", user_id="u", session_id="s2")
    rows = [
        MemoryRecord(id="f1", text="a", scope=scope, metadata={"fact_of": "t1"}),
        MemoryRecord(id="f2", text="b", scope=scope, metadata={"fact_of": "t2"}, valid_to=CLOSED),
        MemoryRecord(id="f3", text="c", scope=scope, metadata={"fact_of": "t9"}),
        MemoryRecord(id="n1", text="d", scope=scope, metadata={"fact_of": 7}),
        MemoryRecord(id="k1", text="e", scope=scope, metadata={"source": "t1"}),
        MemoryRecord(id="o1", text="f", scope=other, metadata={"fact_of": "t1"}),
        MemoryRecord(id="d1", text="g", scope=scope, metadata={"a": {"b": "t1"}}),
        MemoryRecord(id="l1", text="h", scope=scope, metadata={"a": ["t1"], "fact_of": ["t1"]}),
    ]
    store.put(rows)
    found = store.pointing_to(scope, "fact_of", ["t1", "t2", "7"])
    assert sorted(r.id for r in found) == ["f1", "f2"]
    # one id (a containment probe on PostgreSQL) and several (one pass) agree
    for ids in (["t1"], ["t1", "t8"]):
        assert [r.id for r in store.pointing_to(scope, "a.b", ids)] == ["d1"]
        assert store.pointing_to(scope, "a.0", ids) == []  # a key, never an array element
        everywhere = store.pointing_to(Scope(tenant="t"), "fact_of", ids)
        assert sorted(r.id for r in everywhere) == ["f1", "o1"]
    assert store.pointing_to(scope, "fact_of", []) == []
    assert store.pointing_to(scope, "fact_of", ["t1\x00"]) == []
    with pytest.raises(ValueError):
        store.pointing_to(scope, "fact_of') OR 1=1 --", ["t1"])


class UpdatesFirst:
    """The store, as a ``Memory`` sees it when another writer updates a turn's text
    between the facts ``delete_many`` read and its delete: the first ``delete_many``
    runs ``meanwhile`` before it passes through. Everything else is the store's own."""

    def __init__(self, store: Store, meanwhile: Callable[[], None]) -> None:
        self.store, self.meanwhile = store, meanwhile

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def delete_many(self, *args: Any, **kwargs: Any) -> list[str]:
        meanwhile, self.meanwhile = self.meanwhile, lambda: None
        meanwhile()
        return list(self.store.delete_many(*args, **kwargs))


def test_delete_many_takes_the_facts_an_update_wrote_meanwhile(
    memory: Memory, store: Store
) -> None:
    """Another writer rewrote the turn after its facts were read: the delete took the
    facts it read (gone already) and left the new ones, which repeat the new text,
    beside no turn. They are read again after the delete and go too."""
    turn = add_turn(memory, "I moved to Lisbon last May.")
    other = Memory(
        store=store, embedder=HashEmbedder(), background_embedding=False, turn_facts=True
    )
    racing = Memory(
        store=UpdatesFirst(store, lambda: other.update(turn.id, "I moved to Porto in June.")),  # type: ignore[arg-type]
        embedder=HashEmbedder(),
        background_embedding=False,
        turn_facts=True,
    )
    assert racing.delete_many([turn.id], purge=True) == [turn.id]
    assert everything_of(memory, "ana") == []
    assert memory.search("Porto June", user_id="ana") == []


def test_delete_many_takes_a_generator_of_ids(memory: Memory) -> None:
    # The id check read the generator to its end, and the delete found nothing left to
    # delete: [] ("already gone") with every memory still stored (a review).
    for i in range(3):
        memory.add(f"note {i}", user_id="gen")
    ids = [r.id for r in memory.get_all(user_id="gen")]
    assert memory.delete_many((i for i in ids), purge=True) == ids
    assert memory.get_all(user_id="gen") == []


def test_one_add_of_many_repeats_keeps_one_of_each(memory: Memory) -> None:
    texts = [f"row {i % 50}" for i in range(400)]  # 50 texts, each eight times
    out = memory.add(texts, user_id="bulk")
    assert len(out) == 400 and len({r.id for r in out}) == 50
    assert len(memory.get_all(user_id="bulk", limit=1000)) == 50


def test_a_bad_row_in_a_long_list_is_named_and_nothing_is_stored(memory: Memory) -> None:
    rows: list[object] = [{"role": "user", "content": f"row {i}"} for i in range(50)]
    rows[25] = {"role": "user", "content": "x" * 100_001}
    with pytest.raises(ValueError, match=r"^message 25: a memory may hold at most 100,000"):
        memory.add(rows, user_id="bulk")  # type: ignore[arg-type]
    rows[25] = {"role": "user", "content": "ok", "metadata": {"fact_of": "t"}}
    with pytest.raises(ValueError, match=r"^message 25: metadata key 'fact_of' is reserved"):
        memory.add(rows, user_id="bulk")  # type: ignore[arg-type]
    assert memory.get_all(user_id="bulk") == []
