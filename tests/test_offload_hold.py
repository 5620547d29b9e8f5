"""Two Sessions offloading one conversation: each rotated turn is archived once.

An offload's save lists the rotated turns and holds them (``HistoryState.archiver``,
a lease) while its ``memory.add`` stores them. Another Session (the CLI next to
``serve``) that appended turns and offloaded meanwhile built its state from the one
it read, hold included, and wrote its own claim over the live hold; its archive then
found the first one's turns not stored yet (they were being stored) and stored them
too. Every turn of the first batch was archived twice (a review: 32 of 32; 40 of
3,798 records over HTTP and the CLI).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from contextos.engine.session import Session
from contextos.memory import Memory
from contextos.testing.embedders import HashEmbedder
from contextos.types import Message


class OtherOffloadFirst:
    """A Memory as the first offload sees it when another Session offloads while it
    stores its turns: its first ``add`` runs ``meanwhile`` before it writes."""

    def __init__(self, memory: Memory, meanwhile: Callable[[], None]) -> None:
        self.memory, self.meanwhile = memory, meanwhile

    def __getattr__(self, name: str) -> Any:
        return getattr(self.memory, name)

    def add(self, *args: Any, **kwargs: Any) -> Any:
        meanwhile, self.meanwhile = self.meanwhile, lambda: None
        meanwhile()
        return self.memory.add(*args, **kwargs)


def _said(i: int) -> Message:
    return Message("user", f"turn {i}: I visited city number {i} on holiday.")


def test_an_offload_meanwhile_does_not_take_over_the_turns_being_stored(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    with (
        Memory(db, embedder=HashEmbedder(), background_embedding=False) as first,
        Memory(db, embedder=HashEmbedder(), background_embedding=False) as second,
    ):
        a = Session(first.store, "chat", user_id="ana")
        b = Session(second.store, "chat", user_id="ana")  # another process's
        for i in range(40):
            a.add(_said(i))
        results = {}

        def b_offloads() -> None:
            for i in range(40, 60):
                b.add(_said(i))
            results["b"] = b.compact(300, "offload", memory=second)

        results["a"] = a.compact(300, "offload", memory=OtherOffloadFirst(first, b_offloads))

        seqs = Counter(
            r.metadata.get("turn_seq") for r in first.get_all(session_id="chat", limit=1000)
        )
        assert [s for s, n in seqs.items() if n > 1] == []  # none stored twice
        state = a.state()
        assert not state.unarchived  # all confirmed: the first stored the second's too
        assert sorted(seqs) == list(range(state.start_seq))  # every rotated turn, once
        assert results["a"].archived + results["b"].archived == len(seqs)
