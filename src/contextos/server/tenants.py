"""One :class:`~contextos.memory.Memory` per tenant, all over one shared store.

The server holds no state of its own beyond this cache: every Memory writes
through to the store (a SQLite file or a PostgreSQL shared by replicas), so a
replica can be killed and another one answers the same tenant identically.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import TYPE_CHECKING

from ..config import Settings
from ..embed import Embedder
from ..memory.embedding_worker import EmbeddingWorker
from ..store import Store, open_store
from .live_sessions import LiveSessions

if TYPE_CHECKING:
    from ..memory import Memory


#: How often a flush ``unless_down`` looks whether the embedder is down.
DOWN_POLL_S = 0.25


class TenantMemories:
    """Lazily built Memory objects keyed by tenant, sharing one store, one embedder and
    one embedding worker (a worker embeds pending records of every tenant).

    ``batch_size``: records the worker embeds per forward pass (``CONTEXTOS_EMBED_BATCH_SIZE``
    through ``serve`` and ``mcp``: the server ignored it, where ``Memory`` used it, a
    review)."""

    def __init__(
        self,
        store: Store,
        embedder: Embedder,
        *,
        max_cached: int = 1024,
        batch_size: int = Settings.embed_batch_size,
    ) -> None:
        self.store = store
        self.embedder = embedder
        self._max = max_cached
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, Memory] = OrderedDict()
        self.worker = EmbeddingWorker(store, embedder, batch_size=batch_size)
        self.worker.notify()  # embed whatever a crashed replica left pending
        #: The Sessions windows are built with, kept between requests.
        self.sessions = LiveSessions(store)

    @classmethod
    def open(
        cls, db: str, embedder: Embedder, *, batch_size: int = Settings.embed_batch_size
    ) -> TenantMemories:
        """Open the store at ``db`` (SQLite path or postgresql:// URL)."""
        return cls(open_store(db), embedder, batch_size=batch_size)

    def cached(self, tenant: str) -> Memory | None:
        """The Memory of ``tenant`` if it is built already (never blocks on I/O, so
        request handlers call it on the event loop and ``get`` only on a miss)."""
        with self._lock:
            memory = self._cache.get(tenant)
            if memory is not None:
                self._cache.move_to_end(tenant)
            return memory

    def get(self, tenant: str) -> Memory:
        """The Memory of ``tenant`` (built on first use)."""
        with self._lock:
            memory = self._cache.get(tenant)
            if memory is not None:
                self._cache.move_to_end(tenant)
                return memory
        memory = self._build(tenant)
        with self._lock:
            existing = self._cache.setdefault(tenant, memory)
            self._cache.move_to_end(tenant)
            if len(self._cache) > self._max:
                # An evicted Memory (or one that lost a build race) needs no release:
                # its pending records are durable rows the shared worker keeps
                # embedding, and flushing it here blocked the request's thread until
                # the store's whole queue was empty, other processes' claims included.
                self._cache.popitem(last=False)
        return existing

    def _build(self, tenant: str) -> Memory:
        from ..memory import Memory

        return Memory(store=self.store, tenant=tenant, embedder=self.embedder, worker=self.worker)

    def flush(self, timeout: float | None = None, *, unless_down: bool = False) -> bool:
        """Wait until every cached tenant's memories have their vectors, at most
        ``timeout`` seconds in all; False if it ran out (what is left stays pending,
        durable, for the next process).

        ``unless_down``: False as soon as the embedder is down (the worker waits out an
        outage), not at the timeout. Why: a server stopped during an embedding outage
        waited the whole shutdown drain, 30 s, for vectors no wait could bring, and an
        orchestrator that allows 30 s killed it (a review)."""
        with self._lock:
            memories = list(self._cache.values())
        deadline = None if timeout is None else time.monotonic() + timeout
        for memory in memories:
            while True:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                step = left
                if unless_down:
                    step = DOWN_POLL_S if left is None else min(left, DOWN_POLL_S)
                if memory.flush(step):
                    break
                ran_out = deadline is not None and time.monotonic() >= deadline
                # A read-only store, or a worker that stopped, answers False at once:
                # nothing to wait for (the drain spun its 30 s on a read-only file).
                final = self.store.read_only or not self.worker.running
                done = final or self.worker.waiting_out_outage
                if not unless_down or ran_out or done:
                    return False
        return True

    def close(self) -> None:
        """Stop the worker (after the batch in hand) and close the store. Nothing is
        flushed here: what is pending stays pending, durable, for the next process
        (the server's shutdown first waits a bounded time with :meth:`flush`)."""
        with self._lock:
            self._cache.clear()
        self.sessions.clear()
        self.worker.close()
        self.store.close()
