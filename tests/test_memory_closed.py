"""A Memory used after ``close()`` (from the thread that closed it, or from others still
mid-call) fails with the library's StoreError on every verb. A review saw searches and
forgets fail with sqlite3's own ProgrammingError instead (outside ``ContextosError``,
so an app's handler for the library's errors missed them)."""

from __future__ import annotations

from pathlib import Path

import pytest

from contextos.errors import StoreError
from contextos.memory import Memory
from contextos.testing.embedders import HashEmbedder


def test_every_verb_after_close_is_a_store_error(tmp_path: Path) -> None:
    memory = Memory(tmp_path / "c.db", embedder=HashEmbedder())
    memory.add("alpha beta", user_id="a")
    memory.flush()
    assert memory.search("alpha", user_id="a")  # the in-process indexes are loaded
    memory.close()
    memory.close()  # twice is fine
    for verb in (
        lambda: memory.add("x y", user_id="a"),
        lambda: memory.search("alpha", user_id="a"),
        lambda: memory.get_all(user_id="a"),
        lambda: memory.forget("a"),
    ):
        with pytest.raises(StoreError, match="closed database"):
            verb()
    assert memory.flush(timeout=1) is False  # documented: nothing would embed
