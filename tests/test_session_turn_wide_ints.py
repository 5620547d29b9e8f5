"""A turn's metadata keeps the 64-bit integer rule a memory's metadata keeps
(``wide_int``, the rule of ``check_metadata``). Why: ``Session.add`` logged
``{"order_id": 2**70}``, which HTTP refuses on the same route (a 422), and then every
``offload`` compaction of that session failed on ``Memory.add``, every call of a wrapped
client compacting with ``offload`` with it (a review, session 44). A real SQLite file."""

from __future__ import annotations

from pathlib import Path

import pytest

from contextos.engine.session import Session
from contextos.memory import Memory
from contextos.testing.embedders import HashEmbedder
from contextos.types import Message

TEXT = "we talked about the order for the harbour cranes and the cables they need " * 3


def _memory(db: Path) -> Memory:
    return Memory(db, embedder=HashEmbedder(), background_embedding=False)


def test_a_turn_with_an_integer_past_64_bits_is_refused_and_nothing_is_logged(
    tmp_path: Path,
) -> None:
    with _memory(tmp_path / "m.db") as m:
        s = Session(m, "s", user_id="u")
        s.add(Message("user", "first"))
        wide = r"^message 1's metadata integers must fit in 64 bits \(got 1180591620717411303424\)"
        with pytest.raises(ValueError, match=wide):
            s.add(Message("user", "fine"), Message("user", "wide", metadata={"order_id": 2**70}))
        with pytest.raises(ValueError, match=r"^message's metadata integers must fit in 64 bits"):
            s.add(Message("user", "nested", metadata={"order": {"ids": [1, -(2**63) - 1]}}))
        assert [t.message.content for t in s.turns()] == ["first"]
        assert [t.message.content for t in Session(m, "s", user_id="u").turns()] == ["first"]


def test_the_64_bit_bounds_are_logged_and_offloaded(tmp_path: Path) -> None:
    with _memory(tmp_path / "m.db") as m:
        s = Session(m, "s", user_id="u")
        s.add(Message("user", f"turn 0: {TEXT}", metadata={"order_id": 2**63 - 1}))
        s.add(Message("user", f"turn 1: {TEXT}", metadata={"order_id": -(2**63), "ok": True}))
        s.add(*[Message("user", f"turn {i}: {TEXT}") for i in range(2, 30)])
        done = s.compact(300, "offload", memory=m, force=True)
        assert done.plan is not None and done.archived > 0
        archived = {r.text.split(":")[0]: r for r in m.get_all(user_id="u", limit=1000)}
        assert archived["turn 0"].metadata["order_id"] == 2**63 - 1
        assert archived["turn 1"].metadata["order_id"] == -(2**63)
