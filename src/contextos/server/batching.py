"""Micro-batching of embeddings across concurrent requests.

Under load, many request threads each want one query embedded at the same
moment. The server funnels every ``embed`` call through one thread that takes
whatever is queued (up to ``max_batch`` texts) and embeds it, each text alone
(see ``_each_alone``: a shared forward pass of the int8 graph moves each vector
with its neighbours'), so no request pays for a thread of its own. An idle
server pays nothing extra: a lone request is embedded at once.

Small calls (a search query) are served ahead of large ones, alternating so
neither side starves: a user waiting on a search should not queue behind 64
documents. The background worker does not queue at all: it calls
:meth:`BatchingEmbedder.embed_batch`, which runs on the worker's own thread
(the MiniLM embedder's onnxruntime session serves several threads at once), so
the second core embeds new memories while this thread embeds queries.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from ..embed import Embedder, Vectors
from ..os_threads import QUERY_EMBEDDING, name_this_thread

#: Calls with at most this many texts count as interactive (a query).
SMALL = 4


@dataclass
class _Slot:
    texts: Sequence[str]
    future: Future[Vectors] = field(default_factory=Future)


class BatchingEmbedder:
    """An Embedder that merges concurrent calls into batches for ``inner``."""

    def __init__(self, inner: Embedder, *, max_batch: int = 64) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self.inner = inner
        self.model_id = inner.model_id
        self.dimensions = inner.dimensions
        #: ``inner``'s query vectors (``HybridRetriever._query_vector``), if it keeps them.
        self.query_cache = getattr(inner, "query_cache", None)
        self.max_batch = max_batch
        self._queue: deque[_Slot] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._big_turn = False
        self._thread = threading.Thread(target=self._run, name="contextos-batch-embed", daemon=True)
        self._thread.start()

    def embed(self, texts: Sequence[str]) -> Vectors:
        """Embed ``texts`` (possibly together with other threads' texts)."""
        return self.submit(texts).result()

    def submit(self, texts: Sequence[str]) -> Future[Vectors]:
        """Queue ``texts`` and return at once; the future holds their vectors.

        The retriever calls this (when its embedder has it) instead of handing
        ``embed`` to a thread of its own: the request thread queues its query, runs
        the keyword search meanwhile, then waits, and no extra thread hop is paid
        per search (under 50 clients those hops were a quarter of the GIL's time)."""
        slot = _Slot(list(texts))
        if not slot.texts:
            slot.future.set_result(np.zeros((0, self.dimensions), dtype=np.float32))
            return slot.future
        with self._cond:
            if self._closed:
                raise RuntimeError("the embedder is closed")
            self._queue.append(slot)
            self._cond.notify()
        return slot.future

    def embed_batch(self, texts: Sequence[str]) -> Vectors:
        """Background embedding on the caller's thread, beside the query thread.

        Why not through the queue: a batch of 64 new memories held the batching
        thread for the length of its forward passes, so queries arriving meanwhile
        waited for it. ``inner`` must allow calls from several threads (MiniLM and
        the hash embedder do)."""
        inner_batch = getattr(self.inner, "embed_batch", self.inner.embed)
        vectors: Vectors = inner_batch(texts)
        return vectors

    def _each_alone(self, texts: Sequence[str]) -> Vectors:
        """``texts`` embedded one per call, so each vector is the one its text gets alone.

        Why not in one call: the int8 graph quantizes activations with one scale per
        forward pass, so a query embedded in a pass with others got a vector that
        moved (cosine down to 0.998) with the queries asked beside it: the same search
        ranked differently on an idle and on a loaded server. One at a time costs
        ~0.07 ms of CPU a query (0.605 against 0.534 ms in passes of 12); the queue
        still saves each request a thread of its own."""
        if len(texts) == 1:
            return self.inner.embed(texts)
        return np.concatenate([self.inner.embed([text]) for text in texts])

    def close(self) -> None:
        """Stop the batching thread after the queued work is done."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=30)

    def _take(self) -> list[_Slot] | None:
        with self._cond:
            while not self._queue and not self._closed:
                self._cond.wait()
            if not self._queue:
                return None
            small = [slot for slot in self._queue if len(slot.texts) <= SMALL]
            if small and not (self._big_turn and len(small) < len(self._queue)):
                batch: list[_Slot] = []
                size = 0
                for slot in small:
                    if batch and size + len(slot.texts) > self.max_batch:
                        break
                    batch.append(slot)
                    size += len(slot.texts)
                self._big_turn = True
            else:
                batch = [next(slot for slot in self._queue if len(slot.texts) > SMALL)]
                self._big_turn = False
            for slot in batch:
                self._queue.remove(slot)
            return batch

    def _run(self) -> None:
        name_this_thread(QUERY_EMBEDDING)
        while (batch := self._take()) is not None:
            texts = [t for slot in batch for t in slot.texts]
            try:
                # Queries alone (see ``_each_alone``); a large call stays one call.
                small = len(batch[0].texts) <= SMALL
                vectors = self._each_alone(texts) if small else self.inner.embed(texts)
            except BaseException as exc:  # handed to every waiting caller, who re-raises
                for slot in batch:
                    slot.future.set_exception(exc)
                continue
            start = 0
            for slot in batch:
                slot.future.set_result(vectors[start : start + len(slot.texts)])
                start += len(slot.texts)
