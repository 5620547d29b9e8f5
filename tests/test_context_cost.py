"""A wrapped client's per-call cost does not grow with the session log.

A server keeps one wrapped client up for days. Each call matched the request against
``conversation(fingerprints())``: a copy of every turn's print, walked twice a call
(2.5 ms a call at 1,000 turns, 34 ms at 80,000). The Session now keeps the
conversation's prints as it reads the log, and a request is matched against its end.

Counted, not timed: the function calls one ``prepare`` + ``commit`` makes (cProfile's
count), with the log at a few hundred turns and at thousands more, on a real SQLite
file; and the conversation kept as the log grows is the one computed from scratch.
"""

from __future__ import annotations

import cProfile
import pstats
import random
from pathlib import Path

from contextos.engine.context import SessionContext
from contextos.engine.conversation import COMPLETE_KEY, REDO_KEY, conversation
from contextos.engine.session import Session
from contextos.memory import Memory
from contextos.providers.base import CallRecord, ChatRequest
from contextos.store import open_store
from contextos.testing.embedders import HashEmbedder
from contextos.types import Message, Usage

MODEL = "claude-sonnet-4-5"


def _grow(log: Session, n: int) -> None:
    """``n`` turns logged by another writer of the session (another process's client)."""
    roles = ("user", "assistant")
    log.add(*[Message(roles[j % 2], f"bulk {j}: Rita and Lisbon in May 2023.") for j in range(n)])


def _call_counts(context: SessionContext, first: int, calls: int) -> list[int]:
    """The function calls each of ``calls`` one-new-turn calls makes, prepare to commit."""
    counts = []
    for k in range(first, first + calls):
        request = ChatRequest(
            model=MODEL,
            system=("Be brief.",),
            messages=(Message("user", f"Q{k}: In May 2023 I met Rita in Lisbon, {k}?"),),
        )
        profile = cProfile.Profile()
        profile.enable()
        prepared = context.prepare(request, reserve_tokens=1000)
        reply = Message("assistant", f"A{k}: noted.")
        context.commit(prepared, CallRecord("anthropic", MODEL, Usage(), reply, False, 0.1))
        profile.disable()
        counts.append(pstats.Stats(profile).total_calls)  # type: ignore[attr-defined]
    return counts


def test_a_calls_work_does_not_grow_with_the_log(tmp_path: Path) -> None:
    store = open_store(tmp_path / "m.db")
    context = SessionContext(
        store=store, session="long", user_id="ana", budget=8000, background_commit=False
    )
    other = Session(store, "long", user_id="ana")
    _grow(other, 300)
    _call_counts(context, 0, 1)  # reads the new turns and compacts
    short = _call_counts(context, 1, 4)
    _grow(other, 5000)
    _call_counts(context, 5, 1)
    long = _call_counts(context, 6, 4)
    assert len(other.fingerprints()) > 5000
    # Walking every print costs ~7 calls a turn: 35,000 more at this log.
    assert min(long) < 1.5 * max(short), (short, long)


def test_the_conversation_kept_is_the_one_computed_from_the_log(tmp_path: Path) -> None:
    # Regenerates and edits (a turn marked redo_of), cut replies, reads between any
    # two writes, and an erasure (the log read whole again): the conversation kept as
    # the log grows is conversation(fingerprints()) every time, and a view taken
    # before a redo stays as it was.
    rng = random.Random(7)
    with Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as memory:
        reader = Session(memory.store, "c", tenant=memory.tenant, user_id="ana", hold="window")
        bob = Session(memory.store, "c", tenant=memory.tenant, user_id="bob")
        ana = Session(memory.store, "c", tenant=memory.tenant, user_id="ana")
        views = []
        for i in range(400):
            writer = bob if rng.random() < 0.3 else ana
            seqs = [p.seq for p in reader.fingerprints()]
            meta: dict[str, object] = {}
            if seqs and rng.random() < 0.1:
                meta[REDO_KEY] = rng.choice(seqs[-12:])
            elif rng.random() < 0.05:
                meta[COMPLETE_KEY] = False
            writer.add(Message(("user", "assistant")[i % 2], f"turn {i}", metadata=meta))
            if i == 250:
                memory.forget("ana")
            if rng.random() < 0.5:
                kept = reader.conversation_prints()
                assert list(kept) == conversation(reader.fingerprints())
                views.append((kept, list(kept)))
        assert reader.log_restarts == 1
        for view, then in views:
            assert list(view) == then and len(view) == len(then)
            if then:
                assert view[-1] == then[-1] and view[-3:] == then[-3:] and view[0] == then[0]
