"""``Session(memory, "s").compact(strategy="offload")`` archives into the Memory the
Session was opened on. Why: it refused ("the offload strategy needs a memory to archive
into") unless given that same Memory again, as if the Session had none (a review,
session 44). The tenant check stays. A real SQLite file."""

from __future__ import annotations

from pathlib import Path

import pytest

from contextos.engine.session import Session
from contextos.errors import ScopeError
from contextos.memory import Memory
from contextos.testing.embedders import HashEmbedder
from contextos.types import Message

TEXT = "we planned the walrus expedition to the northern harbour with three boats " * 3


def _memory(db: Path, tenant: str = "acme") -> Memory:
    return Memory(db, tenant=tenant, embedder=HashEmbedder(), background_embedding=False)


def _log(session: Session) -> None:
    session.add(*[Message("user", f"turn {i}: {TEXT}") for i in range(30)])


def test_an_offload_archives_into_the_sessions_own_memory(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    with _memory(db) as m:
        s = Session(m, "s", user_id="ana")
        _log(s)
        done = s.compact(300, strategy="offload", force=True)
        assert done.plan is not None and done.archived > 0
        assert len(s.turns()) == 30  # the log keeps every turn
    with _memory(db) as again:  # archived durably, in the session's tenant
        stored = again.get_all(user_id="ana", limit=1000)
        assert len(stored) == done.archived
        assert {r.session_id for r in stored} == {"s"}
        hits = again.search("walrus expedition northern harbour", user_id="ana")
        assert hits and hits[0].record.text.startswith("turn ")


def test_an_offload_into_the_sessions_memory_of_another_tenant_is_refused(
    tmp_path: Path,
) -> None:
    with _memory(tmp_path / "m.db") as acme:
        s = Session(acme, "s", tenant="beta", user_id="ana")
        _log(s)
        with pytest.raises(ScopeError, match="tenant 'beta'.*tenant 'acme'"):
            s.compact(300, strategy="offload", force=True)
        assert acme.get_all(user_id="ana", limit=1000) == []


def test_a_session_on_a_bare_store_still_needs_a_memory_to_offload(tmp_path: Path) -> None:
    with _memory(tmp_path / "m.db") as m:
        s = Session(m.store, "s", tenant="acme", user_id="ana")
        _log(s)
        with pytest.raises(ValueError, match="needs a memory to archive into"):
            s.compact(300, strategy="offload", force=True)
        assert m.get_all(user_id="ana", limit=1000) == []
