"""What an offload stores, and what it reads to store each rotated turn exactly once.

Shaped like the bugs a reviewer found, on a real SQLite file:

- every rotated turn was looked up in long-term memory before it was stored, and the
  look-up of a turn not stored yet (every turn an offload rotates) read the whole
  session archive: an offload cost more per turn the longer the session lived;
- turns that shared a caller's ``dia_id`` were taken for one turn: all but the first
  offload's were never archived (treated as stored already);
- an offload that stored nothing returned a state still listing its turns as
  unarchived, while the stored state had them confirmed.

The memory given to ``compact`` is the ``MemoryLike`` seam: a real Memory, wrapped to
count its reads or to fail its writes where a test says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from contextos.engine.session import Session
from contextos.errors import StoreError
from contextos.memory import Memory
from contextos.providers import anthropic as anthropic_adapter
from contextos.providers import openai as openai_adapter
from contextos.providers.base import PLACEHOLDER_WORDS
from contextos.testing.embedders import HashEmbedder
from contextos.types import Hit, MemoryRecord, Message

LOREM = "we talked about the trip to Lisbon, the flights and the hotel near the river"


class _Counting:
    """A memory that counts its archive reads (``get_all``) and the records they return;
    ``fail_adds``: its ``add`` fails (a store that is down) instead of writing."""

    def __init__(self, memory: Memory, *, fail_adds: bool = False) -> None:
        self.memory = memory
        self.fail_adds = fail_adds
        self.reads = 0
        self.records_read = 0

    def search(self, query: str, **kwargs: Any) -> list[Hit]:
        return self.memory.search(query, **kwargs)

    def add(self, messages: Any, **scope: Any) -> Sequence[MemoryRecord]:
        if self.fail_adds:
            raise StoreError("the memory store is down")
        return self.memory.add(messages, **scope)

    def delete_many(self, memory_ids: Sequence[str], *, purge: bool = False) -> list[str]:
        return self.memory.delete_many(memory_ids, purge=purge)

    def get_all(self, **kwargs: Any) -> Sequence[MemoryRecord]:
        found = self.memory.get_all(**kwargs)
        self.reads += 1
        self.records_read += len(found)
        return found


def _memory(db: Path) -> Memory:
    return Memory(db, embedder=HashEmbedder(), background_embedding=False)


def _archived(memory: Memory, session_id: str, **scope: str) -> list[MemoryRecord]:
    return list(memory.get_all(session_id=session_id, limit=1000, **scope))


def _seqs(records: Sequence[MemoryRecord]) -> list[int]:
    return sorted(int(r.metadata["turn_seq"]) for r in records)


def _let_the_hold_run_out(session: Session) -> None:
    """What two minutes would do: a hold on the listed turns expires (the state edited
    through the store's public compare-and-set, as any writer would)."""
    store = session.store
    meta, revision = store.session_meta_revision(session.scope)
    history = {**meta["history"], "archiver_until": 0.0}
    assert store.swap_session_meta(session.scope, {**meta, "history": history}, revision=revision)


def test_an_offload_reads_no_archive_for_the_turns_it_rotates(tmp_path: Path) -> None:
    # A session that lives long: each offload looked every rotated turn up in the
    # archive, a read of the whole session archive per turn (2.7 ms a turn at 1,000
    # archived, 11 ms at 16,000). Counted, not timed: after the first offload of the
    # session, an offload reads the archive not at all, however large it has grown.
    with _memory(tmp_path / "m.db") as real:
        memory = _Counting(real)
        app = Session(real.store, "chat", tenant=real.tenant, user_id="ana")
        reads: list[int] = []
        rotated: list[int] = []
        for i in range(120):
            app.add(
                Message("user", f"question {i}: {LOREM}"),
                Message("assistant", f"answer {i}: {LOREM}"),
            )
            before = memory.reads
            done = app.compact(600, "offload", memory=memory)
            if done.plan is not None:
                reads.append(memory.reads - before)
                rotated += done.plan.rotate
        assert len(reads) > 10 and len(rotated) > 150
        assert reads[0] >= 1  # a new session: the archive is read once, and known after
        assert reads[1:] == [0] * (len(reads) - 1)
        stored = _seqs(_archived(real, "chat"))
        assert stored == sorted(rotated)  # every rotated turn once, none twice


def test_turns_rotated_again_after_a_forget_are_not_archived_twice(tmp_path: Path) -> None:
    # forget(ana) starts a shared room's state over: bob's turns, archived already,
    # are rotated again. They are looked up (the state no longer says what was stored),
    # and the offload that stored nothing returns the state it stored.
    with _memory(tmp_path / "m.db") as memory:
        bob = Session(memory.store, "room", tenant=memory.tenant, user_id="bob")
        ana = Session(memory.store, "room", tenant=memory.tenant, user_id="ana")
        for i in range(30):
            bob.add(Message("user", f"bob says {i}: {LOREM}"))
            ana.add(Message("user", f"ana says {i}: {LOREM}"))
        bob.compact(300, "offload", memory=memory, force=True)
        first = _seqs(_archived(memory, "room", user_id="bob"))
        assert first
        memory.forget("ana")
        assert bob.state().archived_to == -1  # started over
        results = [bob.compact(300, "offload", memory=memory, force=True) for _ in range(4)]
        again = _seqs(_archived(memory, "room", user_id="bob"))
        assert again == sorted(set(again))  # none twice
        assert set(first) <= set(again)
        nothing = next(r for r in results if r.plan is not None and r.archived == 0)
        assert set(nothing.plan.rotate) <= set(first)  # type: ignore[union-attr]
        for done in results:
            if done.plan is not None:
                assert not done.state.unarchived and not done.state.archiver
        assert results[-1].state == bob.state()


@pytest.mark.parametrize("earlier", [0, 1])
def test_leftovers_an_earlier_version_stored_are_not_stored_again(
    tmp_path: Path, earlier: int
) -> None:
    # A holder that failed left turns listed as unarchived, and an earlier version had
    # stored some of them already: its records name a turn by its dia_id (shared by
    # every turn here) and seq, and keep no time. Those are not stored again; the
    # others, which share their dia_id, are stored (once). ``earlier``: offloads the
    # session made before (none: its first; one: the leftovers are looked up one by one).
    with _memory(tmp_path / "m.db") as real:
        app = Session(real.store, "chat", tenant=real.tenant, user_id="ana")
        before: list[int] = []
        for n in range(earlier + 1):
            app.add(
                *[
                    Message(
                        ("user", "assistant")[i % 2],
                        f"turn {n}.{i}: {LOREM}",
                        metadata={"dia_id": "D"},
                    )
                    for i in range(30 if n == 0 else 16)
                ]
            )
            if n < earlier:
                done = app.compact(300, "offload", memory=real, force=True)
                assert done.plan is not None and done.archived == len(done.plan.rotate)
                before += done.plan.rotate
        failing = _Counting(real, fail_adds=True)
        with pytest.raises(StoreError):  # saved, listed, then the store failed
            app.compact(300, "offload", memory=failing, force=True)
        owed = app.state().unarchived
        assert 4 <= len(owed) <= (30 if earlier == 0 else 20)  # 20: looked up one by one
        old = owed[: len(owed) // 2]
        turns = {t.seq: t for t in app.turns()}
        for seq in old:  # written as the earlier version's archive wrote them
            meta = {"dia_id": "D", "turn_seq": seq, "source_id": "D"}
            real.add(
                [Message(turns[seq].message.role, turns[seq].message.content, metadata=meta)],
                user_id="ana",
                session_id="chat",
            )
        _let_the_hold_run_out(app)
        done = app.compact(300, "offload", memory=_Counting(real))
        assert done.archived == len(owed) - len(old)
        assert _seqs(_archived(real, "chat")) == sorted([*before, *owed])
        assert not done.state.unarchived and done.state == app.state()


def test_turns_sharing_a_dia_id_are_each_archived(tmp_path: Path) -> None:
    # A client that copies message metadata gives every turn the same dia_id: the
    # second offload took all of its turns for stored (the first's records had that
    # dia_id) and archived none; the dia_id stays their provenance.
    with _memory(tmp_path / "m.db") as memory:
        app = Session(memory.store, "c", tenant=memory.tenant, user_id="ana")
        rotated: list[int] = []
        for part in (range(40), range(40, 80)):
            for i in part:
                app.add(
                    Message(
                        "user",
                        f"In May 2023 I bought item {i} called Widget{i} in Lisbon.",
                        metadata={"dia_id": "msg"},
                    ),
                    Message("assistant", f"Noted Widget{i}.", metadata={"dia_id": "msg"}),
                )
            done = app.compact(600, "offload", memory=memory)
            assert done.plan is not None
            assert done.archived == len(done.plan.rotate)
            rotated += done.plan.rotate
        records = _archived(memory, "c")
        assert _seqs(records) == sorted(rotated)
        assert {r.metadata["source_id"] for r in records} == {"msg"}
        assert {r.provenance for r in records} == {("msg",)}
        hits = memory.search("Widget50", user_id="ana", limit=10)
        assert 100 in rotated and any("Widget50" in h.record.text for h in hits)


def test_only_a_turn_of_nothing_but_placeholders_is_taken_for_one(tmp_path: Path) -> None:
    """The adapters mark a turn of only images ``placeholder: True`` (its content
    ``[image]``) and offload stores no memory of it. An app's own ``placeholder: True``
    on a turn of real text, given to ``Session.add``, made offload drop that turn from
    every window and search (review s57): the mark counts only with such content."""
    with _memory(tmp_path / "m.db") as memory:
        app = Session(memory.store, "c", tenant=memory.tenant, user_id="ana")
        marked = {"placeholder": True}
        said = [
            Message("user", "My passport number is X9931KQ.", metadata=marked),
            Message("user", "[image] [document]", metadata=marked),
            Message("user", "[image]"),  # typed by the user: no mark, kept as said
            *[Message("user", f"question {i}: {LOREM}") for i in range(10)],
        ]
        for m in said:
            app.add(m, Message("assistant", f"Noted: {LOREM}"))
        done = app.compact(300, "offload", memory=memory, force=True)
        assert done.plan is not None and {0, 2, 4} <= set(done.plan.rotate)
        texts = [r.text for r in _archived(memory, "c")]
        assert "My passport number is X9931KQ." in texts
        assert "[image]" in texts and "[image] [document]" not in texts


def test_the_adapters_placeholders_are_the_words_the_mark_is_believed_on() -> None:
    said = {*anthropic_adapter._PLACEHOLDERS.values(), *openai_adapter._PLACEHOLDERS.values()}
    assert said == PLACEHOLDER_WORDS


@pytest.mark.parametrize("settled", [False, True])
def test_a_turn_logged_at_a_seq_an_erased_one_had_is_archived(
    tmp_path: Path, settled: bool
) -> None:
    # A seq is used again after an erasure. Here the erased turns were ana's, archived
    # by bob's Session that compacted the room; forget(ana) erased them and their copies.
    # The new turns at those seqs are other turns, and are archived: a turn is its seq
    # and the time it was logged. (Until session 39 the turns naming no user were erased
    # too, and their copies, filed under bob, outlived them; bob takes part in the room,
    # so those turns now stay: forget(ana) takes ana's own rows from a shared session.)
    with _memory(tmp_path / "m.db") as memory:
        bob = Session(memory.store, "room", tenant=memory.tenant, user_id="bob")
        anon = Session(memory.store, "room", tenant=memory.tenant)
        ana = Session(memory.store, "room", tenant=memory.tenant, user_id="ana")
        for who, n in ((bob, 10), (anon, 10), (ana, 10)):
            who.add(*[Message("user", f"{who.scope.user_id} said {i}: {LOREM}") for i in range(n)])
        bob.compact(300, "offload", memory=memory, force=True)
        stale = {int(r.metadata["turn_seq"]) for r in _archived(memory, "room")} - set(range(20))
        assert stale  # copies of ana's turns, filed under bob's compaction
        memory.forget("ana")
        assert [t.seq for t in bob.turns()] == list(range(20))
        rotated: set[int] = set()
        if settled:  # an offload after the reset read the archive (the seq from which
            # none is stored: past the stale copies); the new turns are looked up one by one
            first = bob.compact(300, "offload", memory=memory, force=True)
            assert first.plan is not None and max(first.plan.rotate) < 20
            rotated |= set(first.plan.rotate)
        bob.add(*[Message("user", f"bob again {i}: {LOREM}") for i in range(30)])
        for _ in range(3):
            done = bob.compact(300, "offload", memory=memory, force=True)
            rotated |= set(done.plan.rotate if done.plan is not None else ())
        texts = {r.text for r in _archived(memory, "room", user_id="bob")}
        logged = {t.seq: t.message.content for t in bob.turns()}
        assert stale & rotated
        assert all(logged[seq] in texts for seq in rotated)


def _nested(levels: int) -> dict[str, Any]:
    value: Any = "leaf"
    for _ in range(levels - 1):
        value = {"k": value}
    return {"doc": value}


def test_turns_whose_metadata_is_too_deep_for_a_memory_are_archived_without_it(
    tmp_path: Path,
) -> None:
    """A turn's metadata may nest deeper than a memory's (32 levels): an offload copied
    it into the archive, which Memory.add refused, on every compaction, and the turns
    that left the history were never archived."""
    with Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as m:
        s = Session(m.store, "s", user_id="u")
        for i in range(30):
            meta = {"app": _nested(40)} if i == 0 else {"app": _nested(3)} if i == 2 else {}
            role = "user" if i % 2 == 0 else "assistant"
            s.add(Message(role, f"turn {i}: " + "words about tea and cake " * 20, metadata=meta))
        result = s.compact(600, "offload", memory=m, force=True)
        assert result.archived > 0
        archived = {r.text.split(":")[0]: r for r in m.get_all(user_id="u", limit=1000)}
        assert "app" not in archived["turn 0"].metadata  # too deep: left in the log only
        assert archived["turn 2"].metadata["app"] == _nested(3)  # kept as ever
        assert s.turn(0).message.metadata["app"] == _nested(40)  # the log keeps it whole


def test_a_turn_whose_metadata_nests_past_the_limit_is_refused_with_a_clear_error(
    tmp_path: Path,
) -> None:
    from contextos.engine.session import MAX_TURN_METADATA_DEPTH

    with Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as m:
        s = Session(m.store, "s", user_id="u")
        s.add(Message("user", "deep but allowed", metadata=_nested(MAX_TURN_METADATA_DEPTH - 1)))
        with pytest.raises(ValueError, match="nest at most 256 levels"):
            s.add(Message("user", "too deep", metadata=_nested(3_000)))
        assert [t.message.content for t in s.turns()] == ["deep but allowed"]


class _DeletesBetweenPages(_Counting):
    """A memory where another writer deletes ``victim`` right after the first page of
    an archive read (at the ``MemoryLike`` seam, between two pages)."""

    def __init__(self, memory: Memory, victim: str) -> None:
        super().__init__(memory)
        self.victim: str | None = victim

    def get_all(self, **kwargs: Any) -> Sequence[MemoryRecord]:
        found = super().get_all(**kwargs)
        if self.victim is not None and kwargs.get("limit", 0) >= 1000:
            self.memory.delete(self.victim)
            self.victim = None
        return found


def test_a_delete_between_pages_of_the_archive_read_archives_no_turn_twice(
    tmp_path: Path,
) -> None:
    # The session's archive was read in pages by offset: another writer's delete of a
    # record on the first page moved the second page's first record onto the first,
    # and it was skipped: its turn read as never archived and was stored a second time.
    with _memory(tmp_path / "m.db") as memory:
        bob = Session(memory.store, "room", tenant=memory.tenant, user_id="bob")
        ana = Session(memory.store, "room", tenant=memory.tenant, user_id="ana")
        for i in range(1100):
            bob.add(Message("user", f"bob says {i}"))
        ana.add(Message("user", "ana says hello"))
        while bob.compact(200, "offload", memory=memory, force=True).archived:
            pass
        archived = _seqs(_archived_all(memory, "room"))
        assert len(archived) > 1000 and archived == sorted(set(archived))
        newest = memory.add("cy's note", user_id="cy", session_id="room")[0]
        memory.forget("ana")  # the room's state starts over: bob's turns rotate again
        wrapped = _DeletesBetweenPages(memory, newest.id)
        while bob.compact(200, "offload", memory=wrapped, force=True).archived:
            pass
        assert wrapped.victim is None  # the other writer did delete between the pages
        again = _seqs(_archived_all(memory, "room"))
        assert again == sorted(set(again))  # none twice


def _archived_all(memory: Memory, session_id: str) -> list[MemoryRecord]:
    """Every archived turn of the session (records with a turn_seq), by key."""
    out: list[MemoryRecord] = []
    after: str | None = None
    while True:
        page = memory.get_all(session_id=session_id, limit=1000, after=after)
        out += [r for r in page if "turn_seq" in r.metadata]
        if page.next_after is None:
            return out
        after = page.next_after
