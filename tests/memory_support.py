"""Memories that fail as a store or an embedder in trouble makes them fail, for the tests
of what a caller does then (an offload's archive, its hold)."""

from __future__ import annotations

from typing import Any

from contextos import Memory


class FailsOnce:
    """A Memory whose first ``add`` fails (the store busy, the embedder down); every
    other call, and every later ``add``, is the memory's own."""

    def __init__(self, memory: Memory) -> None:
        self.memory, self.failed = memory, False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.memory, name)

    def add(self, *args: Any, **kwargs: Any) -> Any:
        if not self.failed:
            self.failed = True
            raise RuntimeError("the store is busy")
        return self.memory.add(*args, **kwargs)
