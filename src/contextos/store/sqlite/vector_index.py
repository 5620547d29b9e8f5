"""An in-process exact vector index over vectors kept in SQLite.

Why not sqlite-vec: measured on the 2-core reference machine, its brute-force
KNN over 100k x 384 vectors took 56-69 ms, a numpy matrix product over the same
vectors 15 ms; and the pyenv Python here cannot load SQLite extensions without
ctypes tricks. So the vectors stay durable in the ``vectors`` table and this
index mirrors them in memory, with the scope columns as integer codes so that
tenant/user/agent/session/type/time filters are vectorised masks, not SQL.

Rows are keyed by the record's id (a UUID, never reused), not by SQLite's rowid:
a rowid freed by a delete in another process comes back for the next insert,
and an index keyed by rowid then attributed the new record (another user's) to
the old one's scope. The index grows by appending (amortised doubling); rows of
removed records are marked dead.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from contextos.types import Filter

_SCOPE_FIELDS = ("tenant", "user_id", "agent_id", "session_id", "memory_type")
_TIME_FIELDS = ("created_at", "event_time", "valid_from", "valid_to")


@dataclass(frozen=True)
class IndexRow:
    """What the index keeps about one record besides its vector."""

    id: str
    tenant: str
    user_id: str | None
    agent_id: str | None
    session_id: str | None
    memory_type: str
    created_at: float
    event_time: float | None
    valid_from: float | None
    valid_to: float | None


class VectorIndex:
    """Exact cosine search over unit vectors with vectorised scope/time masks."""

    def __init__(self, dimensions: int) -> None:
        self.dimensions = dimensions
        self._codes: dict[str | None, int] = {None: 0}
        self._size = 0
        self._pos: dict[str, int] = {}
        self._ids: list[str] = []
        cap = 1024
        self._vecs = np.zeros((cap, dimensions), dtype=np.float32)
        self._alive = np.zeros(cap, dtype=bool)
        self._scope = {f: np.zeros(cap, dtype=np.int32) for f in _SCOPE_FIELDS}
        self._times = {f: np.full(cap, np.nan, dtype=np.float64) for f in _TIME_FIELDS}

    def __len__(self) -> int:
        return int(self._alive[: self._size].sum())

    def _code(self, value: str | None) -> int:
        code = self._codes.get(value)
        if code is None:
            code = self._codes[value] = len(self._codes)
        return code

    def _grow(self, need: int) -> None:
        cap = len(self._alive)
        if need <= cap:
            return
        new_cap = max(need, cap * 2)
        self._vecs = np.resize(self._vecs, (new_cap, self.dimensions))
        self._alive = np.resize(self._alive, new_cap)
        self._alive[cap:] = False
        for f in _SCOPE_FIELDS:
            self._scope[f] = np.resize(self._scope[f], new_cap)
        for f in _TIME_FIELDS:
            self._times[f] = np.resize(self._times[f], new_cap)

    def upsert(self, rows: Iterable[IndexRow], vectors: npt.NDArray[np.float32]) -> None:
        """Add or replace vectors for records (vectors must be unit length)."""
        rows = list(rows)
        self._grow(self._size + len(rows))
        for row, vec in zip(rows, vectors, strict=True):
            pos = self._pos.get(row.id)
            if pos is None:
                pos = self._pos[row.id] = self._size
                self._ids.append(row.id)
                self._size += 1
            self._vecs[pos] = vec
            self._alive[pos] = True
            for f in _SCOPE_FIELDS:
                self._scope[f][pos] = self._code(getattr(row, f))
            for f in _TIME_FIELDS:
                value = getattr(row, f)
                self._times[f][pos] = math.nan if value is None else value

    def remove(self, ids: Iterable[str]) -> None:
        """Forget records (their rows stay allocated but dead)."""
        for memory_id in ids:
            pos = self._pos.pop(memory_id, None)
            if pos is not None:
                self._alive[pos] = False

    def _mask(self, flt: Filter, now: float) -> npt.NDArray[np.bool_]:
        n = self._size
        mask = self._alive[:n].copy()
        scope = flt.scope
        for f, value in (
            ("tenant", scope.tenant),
            ("user_id", scope.user_id),
            ("agent_id", scope.agent_id),
            ("session_id", scope.session_id),
        ):
            if value is not None:
                mask &= self._scope[f][:n] == self._codes.get(value, -1)
        if flt.memory_types:
            codes = [self._codes.get(t, -1) for t in flt.memory_types]
            mask &= np.isin(self._scope["memory_type"][:n], codes)
        mask &= _time_mask(self._times, n, flt, now)
        return mask

    def search(
        self, query: npt.NDArray[np.float32], flt: Filter, *, limit: int, now: float
    ) -> list[tuple[str, float]]:
        """Top ``limit`` (id, cosine) pairs among vectors that pass the filter's
        scope, type and time parts (the store re-checks the whole filter in SQL)."""
        n = self._size
        if n == 0 or limit <= 0:
            return []
        mask = self._mask(flt, now)
        idx = np.flatnonzero(mask)
        if idx.size == 0:
            return []
        scores = self._vecs[:n] @ query if idx.size == n else self._vecs[idx] @ query
        k = min(limit, scores.size)
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        chosen = top if idx.size == n else idx[top]
        return [(self._ids[p], float(s)) for p, s in zip(chosen, scores[top], strict=True)]


def _time_mask(
    times: dict[str, npt.NDArray[np.float64]], n: int, flt: Filter, now: float
) -> npt.NDArray[np.bool_]:
    from contextos.times import to_epoch

    mask = np.ones(n, dtype=bool)
    with np.errstate(invalid="ignore"):
        ev = times["event_time"][:n]
        if flt.event_after is not None:
            mask &= ev >= to_epoch(flt.event_after)
        if flt.event_before is not None:
            mask &= ev < to_epoch(flt.event_before)
        created = times["created_at"][:n]
        if flt.created_after is not None:
            mask &= created >= to_epoch(flt.created_after)
        if flt.created_before is not None:
            mask &= created < to_epoch(flt.created_before)
        if not flt.include_invalid:
            at = now if flt.as_of is None else to_epoch(flt.as_of)
            vt = times["valid_to"][:n]
            vf = times["valid_from"][:n]
            mask &= np.isnan(vt) | (vt > at)
            if flt.as_of is not None:
                mask &= np.isnan(vf) | (vf <= at)
    return mask
