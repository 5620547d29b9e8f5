"""``Session(Memory("app.db"), "s1")``, the Memory held nowhere else: the Session used
only its store, the collected Memory closed that store, and the first ``add`` failed
with "Cannot operate on a closed database" (a review). A real SQLite file."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

from contextos.engine.session import Session
from contextos.memory import Memory
from contextos.testing.embedders import HashEmbedder
from contextos.types import Message


def test_a_session_keeps_the_memory_it_was_given_open(tmp_path: Path) -> None:
    memory = Memory(tmp_path / "app.db", embedder=HashEmbedder(), background_embedding=False)
    session = Session(memory, "s1", user_id="ana")
    del memory
    gc.collect()
    [turn] = session.add(Message("user", "hello"))
    assert turn.seq == 0
    assert [t.message.content for t in session.turns()] == ["hello"]
    with pytest.warns(ResourceWarning, match="unclosed Memory"):  # closed with the Session
        del session
        gc.collect()
