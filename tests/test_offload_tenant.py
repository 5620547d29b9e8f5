"""An offload archives into the memory it is given: one of another tenant than the
Session's is refused before anything is written (a review, session 39: a session of
tenant ``acme`` compacted with tenant ``beta``'s Memory filed acme's turns in beta,
where beta's searches found them and acme's ``forget`` never reached them)."""

from __future__ import annotations

from pathlib import Path

import pytest

from contextos.engine.session import Session
from contextos.errors import ScopeError
from contextos.memory import Memory
from contextos.testing.embedders import HashEmbedder
from contextos.types import Message

TEXT = "the quarterly plan for the harbour project needs three more reviewers " * 4


def _memory(db: Path, tenant: str) -> Memory:
    return Memory(db, tenant=tenant, embedder=HashEmbedder(), background_embedding=False)


def test_an_offload_into_another_tenants_memory_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    with _memory(db, "acme") as acme, _memory(db, "beta") as beta:
        session = Session(acme.store, "s", tenant="acme", user_id="ana")
        session.add(*[Message("user", f"turn {i}: {TEXT}") for i in range(30)])
        with pytest.raises(ScopeError, match="tenant 'acme'.*tenant 'beta'"):
            session.compact(300, "offload", memory=beta, force=True)
        assert beta.get_all(user_id="ana", limit=1000) == []
        assert len(session.turns()) == 30  # nothing compacted either
        done = session.compact(300, "offload", memory=acme, force=True)
        assert done.archived > 0
        assert len(acme.get_all(user_id="ana", limit=1000)) == done.archived
        assert beta.get_all(user_id="ana", limit=1000) == []
