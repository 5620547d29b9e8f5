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
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, NamedTuple, TypeVar

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


class TextCache(Generic[V]):
    """Values computed from texts, least recently used evicted past ``maxsize``;
    thread-safe (two threads may compute the same value once each)."""

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self.maxsize = maxsize
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[bytes, Hashable], V] = OrderedDict()
        self._hits = 0
        self._misses = 0

    def get(self, text: str, extra: Hashable, compute: Callable[[], V]) -> V:
        """The value for ``text`` and ``extra`` (the function's other arguments, which
        must hold no memory text), from the cache or else ``compute()``."""
        key = (text_digest(text), extra)
        with self._lock:
            if key in self._entries:
                self._hits += 1
                self._entries.move_to_end(key)
                return self._entries[key]
            self._misses += 1
        value = compute()
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self.maxsize:
                self._entries.popitem(last=False)
        return value

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
            self._hits = self._misses = 0
