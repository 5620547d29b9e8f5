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
