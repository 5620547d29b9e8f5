"""A bounded cache of what is computed from a text, keyed by the text's digest.

Why: ``functools.lru_cache`` on a function of a memory's text keeps the text itself as
its key: up to 100,000 characters a memory, tens of thousands of entries (gigabytes
in the worst case), shared by every tenant of a server process, and still there after
``Memory.forget`` erased the memory. Keyed by a 16-byte BLAKE2b digest of the text
instead, an entry holds no text and costs the same for any length; hashing costs a
few microseconds per 1,000 characters, small beside what the cached work costs
(``memory.retrieval`` resolves a turn's time mentions in ~0.3 ms). Values must hold
no text either (see each use); the cache cannot check that.

A digest collision (two texts, one digest) would answer one text's result for the
other; at 128 bits that is not a practical concern for a cache.
"""

from __future__ import annotations

import hashlib
import os
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, Generic, NamedTuple, TypeVar

V = TypeVar("V")


class CacheInfo(NamedTuple):
    """Counts of a :class:`TextCache`, as ``functools.lru_cache`` reports them."""

    hits: int
    misses: int
    maxsize: int
    currsize: int


def text_digest(text: str) -> bytes:
    """The 16-byte BLAKE2b digest a :class:`TextCache` keys ``text`` by."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


#: Every cache of the process: a fork's child gives each a new lock (another thread may
#: have held it at the fork, and would never release it in the child).
_CACHES: weakref.WeakSet[TextCache[Any]] = weakref.WeakSet()


def _new_locks_after_fork() -> None:
    for cache in list(_CACHES):
        cache._lock = threading.Lock()


os.register_at_fork(after_in_child=_new_locks_after_fork)


class TextCache(Generic[V]):
    """Values computed from texts, least recently used evicted past ``maxsize`` entries
    or, with ``weigh``, past ``max_weight`` in all (a value's size grows with its text:
    the time mentions of a 100,000-character text can number thousands); thread-safe
    (two threads may compute the same value once each)."""

    def __init__(
        self,
        maxsize: int,
        *,
        weigh: Callable[[V], int] | None = None,
        max_weight: int | None = None,
    ) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        if (weigh is None) != (max_weight is None):
            raise ValueError("weigh and max_weight are given together")
        self.maxsize = maxsize
        self._weigh = weigh
        self._max_weight = max_weight
        self._lock = threading.Lock()
        _CACHES.add(self)
        self._entries: OrderedDict[tuple[bytes, Hashable], tuple[V, int]] = OrderedDict()
        self._weight = 0
        self._hits = 0
        self._misses = 0

    def get(self, text: str, extra: Hashable, compute: Callable[[], V]) -> V:
        """The value for ``text`` and ``extra`` (the function's other arguments, which
        must hold no memory text), from the cache or else ``compute()``."""
        key = (text_digest(text), extra)
        entry = self._find(key)
        if entry is not None:
            return entry[0]
        value = compute()
        self._keep(key, value)
        return value

    def _find(self, key: tuple[bytes, Hashable]) -> tuple[V, int] | None:
        """The kept (value, weight) for ``key``, made the most recent, or None; counted
        as a hit or a miss. A tuple, not the value: a value may itself be None."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self._misses += 1
                return None
            self._hits += 1
            self._entries.move_to_end(key)
            return entry

    def _keep(self, key: tuple[bytes, Hashable], value: V) -> None:
        weight = 0 if self._weigh is None else self._weigh(value)
        if self._max_weight is not None and weight > self._max_weight:
            return  # not kept: it alone would push out the rest
        with self._lock:
            old = self._entries.pop(key, None)
            self._weight += weight - (0 if old is None else old[1])
            self._entries[key] = (value, weight)
            while len(self._entries) > self.maxsize or (
                self._max_weight is not None and self._weight > self._max_weight
            ):
                _, (_, dropped) = self._entries.popitem(last=False)
                self._weight -= dropped

    def peek(self, text: str, extra: Hashable) -> V | None:
        """The kept value for ``text`` and ``extra``, or None (counted as ``get``
        counts): for a value computed elsewhere, then given to :meth:`put`."""
        entry = self._find((text_digest(text), extra))
        return None if entry is None else entry[0]

    def put(self, text: str, extra: Hashable, value: V) -> None:
        """Keep ``value`` for ``text`` and ``extra`` (see :meth:`get` for the bounds)."""
        self._keep((text_digest(text), extra), value)

    @property
    def weight(self) -> int:
        """The sum of the kept values' weights (0 without ``weigh``)."""
        with self._lock:
            return self._weight

    def cached_keys(self) -> list[tuple[bytes, Hashable]]:
        """What the cache is keyed by now: (digest, extra) pairs, least recent first."""
        with self._lock:
            return list(self._entries)

    def cache_info(self) -> CacheInfo:
        with self._lock:
            return CacheInfo(self._hits, self._misses, self.maxsize, len(self._entries))

    def cache_clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._weight = self._hits = self._misses = 0
