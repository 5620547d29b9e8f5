"""An embedder that remembers its vectors on disk, for benchmark sweeps.

Why: a tuning sweep over the LoCoMo dev split re-ingests 2,760 turns and asks
999 questions per run; embedding them again costs minutes on two cores while
the vectors never change. ``CachedEmbedder`` wraps the real embedder and keeps
every vector in a SQLite file (``bench-out/`` by default, which git ignores),
keyed by the model id and the exact text, so the second run embeds nothing and
returns bit-identical vectors. It is for benchmarks only: the library never
uses it.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..embed import Embedder, Vectors
from ..errors import ConfigError

DEFAULT_CACHE_DIR = Path("bench-out")


class CachedEmbedder:
    """``inner`` with a disk cache of its vectors (see the module docstring)."""

    def __init__(self, inner: Embedder, path: str | Path | None = None) -> None:
        self.inner = inner
        self.model_id = inner.model_id
        self.dimensions = inner.dimensions
        if path is None:
            safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in inner.model_id)
            path = DEFAULT_CACHE_DIR / f"embeddings-{safe}.sqlite"
        self.path = Path(path)
        self._lock = threading.Lock()
        # A cache that cannot be opened is one line naming it ("[Errno 17] File exists:
        # 'bench-out'" said neither that it was the cache nor where).
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False)
            self._db.execute("CREATE TABLE IF NOT EXISTS vectors (key TEXT PRIMARY KEY, v BLOB)")
            self._db.commit()
        except (OSError, sqlite3.Error) as exc:
            why: object = exc
            if isinstance(exc, OSError) and exc.strerror:
                why = f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
            raise ConfigError(f"cannot open the embedding cache {self.path}: {why}") from None
        #: Texts served from the cache and texts the inner embedder had to embed.
        self.hits = 0
        self.misses = 0

    def _key(self, text: str) -> str:
        return hashlib.sha256(f"{self.model_id}\0{text}".encode()).hexdigest()

    def embed(self, texts: Sequence[str]) -> Vectors:
        return self._embed(texts, batch=False)

    def embed_batch(self, texts: Sequence[str]) -> Vectors:
        """The background worker's entry point (the inner one's batch model if it has one)."""
        return self._embed(texts, batch=True)

    def _embed(self, texts: Sequence[str], *, batch: bool) -> Vectors:
        keys = [self._key(t) for t in texts]
        found: dict[str, np.ndarray] = {}
        with self._lock:
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                marks = ",".join("?" * len(chunk))
                for key, blob in self._db.execute(
                    f"SELECT key, v FROM vectors WHERE key IN ({marks})", chunk
                ):
                    found[key] = np.frombuffer(blob, dtype=np.float32)
        missing = sorted({i for i, k in enumerate(keys) if k not in found})
        if missing:
            fn = getattr(self.inner, "embed_batch", self.inner.embed) if batch else self.inner.embed
            fresh = fn([texts[i] for i in missing])
            with self._lock:
                self._db.executemany(
                    "INSERT OR REPLACE INTO vectors (key, v) VALUES (?, ?)",
                    [
                        (keys[i], np.asarray(v, dtype=np.float32).tobytes())
                        for i, v in zip(missing, fresh, strict=True)
                    ],
                )
                self._db.commit()
            for i, v in zip(missing, fresh, strict=True):
                found[keys[i]] = np.asarray(v, dtype=np.float32)
        self.hits += len(texts) - len(missing)
        self.misses += len(missing)
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        return np.stack([found[k] for k in keys]).astype(np.float32, copy=False)

    def close(self) -> None:
        with self._lock:
            self._db.close()
