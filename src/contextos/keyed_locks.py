"""A lock per key, for as long as some thread holds or waits for it.

Why not a fixed set of stripes (``locks[hash(key) % n]``): two keys that share a
stripe wait for each other. For short critical sections that costs little, but an
inferring add holds its user's lock across the reconciler's model calls (seconds),
so two users on one stripe of 64 added one after the other. Here each key has its
own lock, made on first use and dropped when its last holder leaves, so memory
follows the keys in use, not every key ever seen.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable, Iterator
from contextlib import contextmanager
from typing import Generic, TypeVar

T = TypeVar("T")


class KeyedLocks:
    """``with locks.held(key):`` runs one thread at a time per key."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[Hashable, tuple[threading.Lock, int]] = {}

    @contextmanager
    def held(self, key: Hashable) -> Iterator[None]:
        with self._guard:
            lock, users = self._locks.get(key, (None, 0))
            if lock is None:
                lock = threading.Lock()
            self._locks[key] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._guard:
                lock, users = self._locks[key]
                if users == 1:
                    del self._locks[key]
                else:
                    self._locks[key] = (lock, users - 1)

    def __len__(self) -> int:
        """Keys held or waited for now (for tests of growth)."""
        return len(self._locks)


class KeyedSets(Generic[T]):
    """Sets of items by key, each key dropped with its last item: who is doing something
    to one key (a session log) right now, safe across threads.

    Why a class: the commits in flight and the open streams of each session log were
    each kept in a dict of sets with its own lock and the same add/discard code."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._sets: dict[Hashable, set[T]] = {}

    def add(self, key: Hashable, item: T) -> None:
        with self._guard:
            self._sets.setdefault(key, set()).add(item)

    def discard(self, key: Hashable, item: T) -> None:
        with self._guard:
            found = self._sets.get(key)
            if found is not None:
                found.discard(item)
                if not found:
                    del self._sets[key]

    def others(self, key: Hashable, item: T) -> list[T]:
        """The items of ``key`` but ``item`` (one dict lookup when there are none)."""
        with self._guard:
            return [other for other in self._sets.get(key, ()) if other is not item]

    def all(self) -> list[T]:
        """Every item of every key."""
        with self._guard:
            return [item for items in self._sets.values() for item in items]

    def clear_after_fork(self) -> None:
        """In a fork's child: no item (they were the parent's), and a new guard (another
        of the parent's threads may have held it)."""
        self._guard = threading.Lock()
        self._sets.clear()
