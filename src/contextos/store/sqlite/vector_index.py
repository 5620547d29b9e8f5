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
the old one's scope.

Rows live in one block per (tenant, user): a search scoped to a user (every
``Memory.search`` with a user_id) scores that block's contiguous matrix only.
With one flat matrix it masked every row of every user and copied the user's
rows out before the product: 11 ms of CPU per search at 100k memories over 10
users, against ~1 ms for the block. Blocks grow by appending (amortised
doubling); a removed record's row is zeroed and marked dead, and a block whose rows
are mostly dead is compacted (an empty one is dropped). Why: a store that stays open
re-indexes a record on every change of its text or validity, and without compaction
a process up for days grew by a row (1.5 KB) per update and kept the vectors of
erased users in memory.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from contextos.types import Filter

_T = TypeVar("_T", bound=np.generic)

_SCOPE_FIELDS = ("agent_id", "session_id", "memory_type")
#: Rows of one user in a batch from which :meth:`VectorIndex.upsert` appends them as
#: slices; fewer are written one at a time.
_SLICED_ROWS = 8
TIME_FIELDS = ("created_at", "event_time", "valid_from", "valid_to", "updated_at")


@dataclass(slots=True)
class IndexRow:
    """What the index keeps about one record besides its vector.

    Not frozen: a frozen dataclass sets each field through ``object.__setattr__``, and
    the rows of a user of 60,000 memories cost ~90 ms to make so, ~13 ms with slots
    (each index load reads one per record; nothing changes one once made)."""

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
    #: When the record was last written: a ``valid_to`` no later than it was written by a
    #: close (``store.filters.open_clause``). Keyword-only, so the rows of the lexical
    #: index (:class:`~contextos.store.sqlite.lexical_index.LexRow`) keep their order.
    updated_at: float | None = field(default=None, kw_only=True)


class ScopeCodes:
    """Integer codes for the scope values (agent, session, memory type) of one block's
    rows, so that a scope filter is a vectorised comparison. ``None`` is code 0.

    Why per block, rebuilt when the block is compacted: one table for a whole index kept
    every agent, session and type value it had ever seen, so a server up for months, with
    sessions coming and going, grew by every session id (and kept erased users' ids)."""

    def __init__(self, values: Iterable[str | None] = ()) -> None:
        self._of: dict[str | None, int] = {None: 0}
        for value in values:
            self.code(value)

    def __len__(self) -> int:
        return len(self._of)

    def code(self, value: str | None) -> int:
        """The value's code, given one if it has none yet."""
        code = self._of.get(value)
        if code is None:
            code = self._of[value] = len(self._of)
        return code

    def find(self, value: str | None) -> int:
        """The value's code, or -1 (matches no row) when no row was given it."""
        return self._of.get(value, -1)

    def kept(
        self, columns: Sequence[npt.NDArray[np.int32]]
    ) -> tuple[ScopeCodes, list[npt.NDArray[np.int32]]]:
        """A table of only the values that ``columns`` (codes of this table) use, and
        the columns in its codes."""
        values = list(self._of)  # a value's code is its place: codes are handed out in order
        used = np.unique(np.concatenate([c.ravel() for c in columns])).tolist() if columns else []
        new = ScopeCodes(values[u] for u in used)
        recode = np.full(len(values), -1, dtype=np.int32)
        for u in used:
            recode[u] = new.find(values[u])
        return new, [recode[c] for c in columns]


class _Block:
    """The rows of one (tenant, user): vectors, scope codes, times, in insertion order."""

    def __init__(self, dimensions: int, tenant: str, user_id: str | None) -> None:
        # Room for one row: it doubles as rows come. A block per user is held for every
        # user of the file, and most users of a service have a few memories: 64 rows
        # of 384 floats reserved each made 20,000 one-memory users cost 1.4 GB.
        cap = 1
        self.tenant, self.user_id = tenant, user_id
        self.size = 0
        self.dead = 0  # rows of removed records among the first ``size``
        self.ids: list[str] = []
        self.seq = np.zeros(cap, dtype=np.int64)  # index-wide insertion order (ties)
        self.vecs = np.zeros((cap, dimensions), dtype=np.float32)
        self.alive = np.zeros(cap, dtype=bool)
        self.codes = ScopeCodes()
        self.scope = {f: np.zeros(cap, dtype=np.int32) for f in _SCOPE_FIELDS}  # codes
        self.times = {f: np.full(cap, np.nan, dtype=np.float64) for f in TIME_FIELDS}

    def reserve(self, rows: int) -> None:
        """Room for ``rows`` rows in all: the arrays double (at least) when full. New
        arrays, copied, not ``np.resize``: that tiles the old data over the new rows
        and took a third of loading 60,000 vectors."""
        cap = len(self.alive)
        if rows <= cap:
            return
        new_cap = max(2 * cap, 1 << (rows - 1).bit_length())
        self.vecs = _grown(self.vecs, new_cap)
        self.alive = _grown(self.alive, new_cap)
        self.seq = _grown(self.seq, new_cap)
        self.scope = {f: _grown(a, new_cap) for f, a in self.scope.items()}
        self.times = {f: _grown(a, new_cap, fill=math.nan) for f, a in self.times.items()}

    def append(self, memory_id: str, seq: int) -> int:
        self.reserve(self.size + 1)
        pos = self.size
        self.ids.append(memory_id)
        self.seq[pos] = seq
        self.size += 1
        return pos

    def kill(self, pos: int) -> None:
        """Mark a row dead and zero its vector (an erased memory leaves nothing here)."""
        if self.alive[pos]:
            self.alive[pos] = False
            self.vecs[pos] = 0.0
            self.dead += 1

    def compacted(self) -> _Block:
        """A new block holding only the live rows, in their order. A new object, not
        this one rearranged: a search on another thread may be reading this block's
        rows by position (the index is searched outside the store's lock)."""
        keep = np.flatnonzero(self.alive[: self.size])
        cap = 1 << max(int(keep.size) - 1, 0).bit_length()
        out = _Block(self.vecs.shape[1], self.tenant, self.user_id)
        out.vecs = _taken(self.vecs, keep, cap)
        out.seq = _taken(self.seq, keep, cap)
        out.alive = _taken(self.alive, keep, cap)
        out.codes, scope = self.codes.kept(
            [_taken(self.scope[f], keep, cap) for f in _SCOPE_FIELDS]
        )
        out.scope = dict(zip(_SCOPE_FIELDS, scope, strict=True))
        out.times = {f: _taken(self.times[f], keep, cap, fill=math.nan) for f in TIME_FIELDS}
        out.ids = [self.ids[i] for i in keep]
        out.size = int(keep.size)
        return out


def _grown(values: npt.NDArray[_T], cap: int, fill: float = 0) -> npt.NDArray[_T]:
    """``values`` at the front of a new array of ``cap`` rows, the rest ``fill``."""
    out = _filled((cap, *values.shape[1:]), fill, values.dtype)
    out[: len(values)] = values
    return out


def _taken(
    values: npt.NDArray[_T], keep: npt.NDArray[np.intp], cap: int, fill: float = 0
) -> npt.NDArray[_T]:
    """``values``' rows at ``keep``, moved to the front of a new array of ``cap`` rows."""
    out = _filled((cap, *values.shape[1:]), fill, values.dtype)
    out[: keep.size] = values[keep]
    return out


def _filled(shape: tuple[int, ...], fill: float, dtype: np.dtype[_T]) -> npt.NDArray[_T]:
    """A new array of ``fill``. Zeros come from ``np.zeros``: the system hands over zeroed
    pages as they are first written, so the room a doubled block has not used yet costs
    nothing; ``np.full`` wrote every byte of it (growing a block to 65,536 vectors of
    384 floats wrote ~200 MB, 0.15 s of loading a 60,000-memory user)."""
    if fill == 0:
        return np.zeros(shape, dtype=dtype)
    return np.full(shape, fill, dtype=dtype)


class VectorIndex:
    """Exact cosine search over unit vectors with vectorised scope/time masks."""

    def __init__(self, dimensions: int) -> None:
        self.dimensions = dimensions
        self._blocks: dict[str, dict[str | None, _Block]] = {}  # tenant -> user -> block
        self._pos: dict[str, tuple[_Block, int]] = {}
        self._seq = 0

    def __contains__(self, memory_id: object) -> bool:
        return memory_id in self._pos

    def __len__(self) -> int:
        return len(self._pos)

    def missing(self, tenant: str, ids: Iterable[str]) -> set[str]:
        """Those of ``ids`` with no vector held here for ``tenant`` (one dict lookup each)."""
        out = set()
        for memory_id in ids:
            found = self._pos.get(memory_id)
            if found is None or found[0].tenant != tenant:
                out.add(memory_id)
        return out

    def scores(
        self, tenant: str, ids: Iterable[str], query: npt.NDArray[np.float32]
    ) -> dict[str, float]:
        """The score ``search`` gives ``query`` against each of ``ids`` held here for
        ``tenant`` (its cosine; one dot product each); the others are left out."""
        out: dict[str, float] = {}
        for memory_id in ids:
            found = self._pos.get(memory_id)
            if found is not None and found[0].tenant == tenant and found[0].alive[found[1]]:
                out[memory_id] = float(found[0].vecs[found[1]] @ query)
        return out

    def upsert(self, rows: Iterable[IndexRow], vectors: npt.NDArray[np.float32]) -> None:
        """Add or replace vectors for records (vectors must be unit length).

        Records new to the index are appended a block at a time (one slice per array):
        one at a time, loading a file's 60,000 vectors took 0.8 s of a cold search's
        1.2 s. A record already held (or twice in ``rows``) is placed alone, in order.
        A batch of new records only (every load) is checked once, by set, not row by
        row, and a user's consecutive rows are copied as a slice (about a fifth off
        the appends of a 60,000-vector load)."""
        rows = list(rows)
        if len(rows) != len(vectors):
            raise ValueError(f"{len(rows)} rows for {len(vectors)} vectors")
        base = self._seq
        self._seq += len(rows)
        ids = [row.id for row in rows]
        if self._pos.keys().isdisjoint(ids) and len(set(ids)) == len(ids):
            # All new (a load, a batch of new memories): grouped without a check per row.
            fresh: dict[tuple[str, str | None], list[int]] = {}
            for i, row in enumerate(rows):
                fresh.setdefault((row.tenant, row.user_id), []).append(i)
            self._append_fresh(fresh, rows, vectors, base)
            return
        fresh = {}
        taken: set[str] = set()
        for i, row in enumerate(rows):
            if row.id in self._pos or row.id in taken:
                self._append_fresh(fresh, rows, vectors, base)
                fresh, taken = {}, set()
                self._upsert_one(row, vectors[i], base + i)
            else:
                fresh.setdefault((row.tenant, row.user_id), []).append(i)
                taken.add(row.id)
        self._append_fresh(fresh, rows, vectors, base)

    def _block(self, tenant: str, user_id: str | None) -> _Block:
        users = self._blocks.setdefault(tenant, {})
        block = users.get(user_id)
        if block is None:
            block = users[user_id] = _Block(self.dimensions, tenant, user_id)
        return block

    def _append_fresh(
        self,
        fresh: dict[tuple[str, str | None], list[int]],
        rows: list[IndexRow],
        vectors: npt.NDArray[np.float32],
        base: int,
    ) -> None:
        """Append the records at ``fresh``'s positions of ``rows`` (none held yet), a
        block's at once. Rows are written, then counted, then marked alive: a search
        on another thread reads a row only once it is counted and alive. A group of a
        few rows is written a row at a time: on a server's file the users' vectors
        interleave, and slicing a block's ten arrays for each one or two rows cost more
        than it saved (a review)."""
        for (tenant, user_id), at in fresh.items():
            if len(at) < _SLICED_ROWS:
                for i in at:
                    self._upsert_one(rows[i], vectors[i], base + i)
                continue
            block = self._block(tenant, user_id)
            start, end = block.size, block.size + len(at)
            block.reserve(end)
            whole = at[-1] - at[0] + 1 == len(at)  # consecutive rows: a slice, not a copy
            block.vecs[start:end] = vectors[at[0] : at[-1] + 1] if whole else vectors[at]
            block.seq[start:end] = np.asarray(at, dtype=np.int64) + base
            mine = [rows[i] for i in at]
            for f in _SCOPE_FIELDS:
                block.scope[f][start:end] = [block.codes.code(getattr(r, f)) for r in mine]
            for f in TIME_FIELDS:  # None is NaN in a float array
                block.times[f][start:end] = np.array([getattr(r, f) for r in mine], np.float64)
            ids = [r.id for r in mine]
            block.ids.extend(ids)
            block.size = end
            block.alive[start:end] = True
            self._pos.update({memory_id: (block, pos) for pos, memory_id in enumerate(ids, start)})

    def _upsert_one(self, row: IndexRow, vec: npt.NDArray[np.float32], seq: int) -> None:
        found = self._pos.get(row.id)
        block = self._block(row.tenant, row.user_id)
        if found is not None and found[0] is block:
            pos = found[1]
        else:
            if found is not None:  # the record moved scope: its old row dies
                found[0].kill(found[1])
                if 2 * found[0].dead > found[0].size:
                    self._compact(found[0])
            pos = block.append(row.id, seq)
            self._pos[row.id] = (block, pos)
        block.vecs[pos] = vec
        for f in _SCOPE_FIELDS:
            block.scope[f][pos] = block.codes.code(getattr(row, f))
        for f in TIME_FIELDS:
            value = getattr(row, f)
            block.times[f][pos] = math.nan if value is None else value
        block.alive[pos] = True  # last: a search on another thread reads it whole or not

    def remove(self, ids: Iterable[str]) -> None:
        """Forget records: their rows are zeroed and dead, and a block left mostly
        dead is compacted (dropped when nothing in it lives)."""
        touched: dict[int, _Block] = {}
        for memory_id in ids:
            found = self._pos.pop(memory_id, None)
            if found is not None:
                found[0].kill(found[1])
                touched[id(found[0])] = found[0]
        for block in touched.values():
            if 2 * block.dead > block.size:
                self._compact(block)

    def _compact(self, block: _Block) -> None:
        new = block.compacted()
        users = self._blocks[block.tenant]
        if new.size == 0:
            del users[block.user_id]
            if not users:
                del self._blocks[block.tenant]
            return
        users[block.user_id] = new
        for pos, memory_id in enumerate(new.ids):
            self._pos[memory_id] = (new, pos)

    def scope_values_held(self) -> int:
        """Scope values (agent, session, type ids) given codes, over every block: for
        tests of growth in a process that stays up."""
        return sum(len(b.codes) for users in self._blocks.values() for b in users.values())

    def bytes_held(self) -> int:
        """Bytes of the blocks' arrays (vectors, order, liveness, scope codes, times),
        rows reserved for growth included: for tests of memory per user."""
        return sum(
            b.vecs.nbytes
            + b.seq.nbytes
            + b.alive.nbytes
            + sum(a.nbytes for a in b.scope.values())
            + sum(a.nbytes for a in b.times.values())
            for users in self._blocks.values()
            for b in users.values()
        )

    def allocated_rows(self) -> int:
        """Rows held in memory, dead ones included (live ones: ``len(index)``)."""
        return sum(b.size for users in self._blocks.values() for b in users.values())

    def vectors(self) -> npt.NDArray[np.float32]:
        """Every live vector, in no particular order (benchmarks draw stand-ins from it)."""
        parts = [
            b.vecs[: b.size][b.alive[: b.size]]
            for users in self._blocks.values()
            for b in users.values()
        ]
        return np.concatenate(parts) if parts else np.zeros((0, self.dimensions), np.float32)

    def _blocks_for(self, flt: Filter) -> list[_Block]:
        """The blocks ``flt`` reads: its user's (with ``no_user``, the block of no
        user), else every user's of its tenant."""
        users = self._blocks.get(flt.scope.tenant, {})
        if flt.one_user():
            block = users.get(flt.scope.user_id)
            return [] if block is None else [block]
        return list(users.values())

    def _mask(self, block: _Block, flt: Filter, now: float) -> npt.NDArray[np.bool_]:
        n = block.size
        mask = block.alive[:n].copy()
        for f, value in (("agent_id", flt.scope.agent_id), ("session_id", flt.scope.session_id)):
            if value is not None:
                mask &= block.scope[f][:n] == block.codes.find(value)
        if flt.exclude_session is not None:
            mask &= block.scope["session_id"][:n] != block.codes.find(flt.exclude_session)
        if flt.memory_types:
            codes = [block.codes.find(t) for t in flt.memory_types]
            mask &= np.isin(block.scope["memory_type"][:n], codes)
        mask &= time_mask(block.times, n, flt, now)
        return mask

    def search(
        self, query: npt.NDArray[np.float32], flt: Filter, *, limit: int, now: float
    ) -> list[tuple[str, float]]:
        """Top ``limit`` (id, cosine) pairs among vectors that pass the filter's
        scope, type, time and validity parts (the store checks a metadata filter in SQL).
        Equal scores keep insertion order."""
        if limit <= 0:
            return []
        found: list[tuple[float, int, str]] = []
        for block in self._blocks_for(flt):
            n = block.size
            if n == 0:
                continue
            mask = self._mask(block, flt, now)
            idx = np.flatnonzero(mask)
            if idx.size == 0:
                continue
            # All rows pass (the usual user-scoped search): the block's own matrix, no copy.
            scores = block.vecs[:n] @ query if idx.size == n else block.vecs[idx] @ query
            k = min(limit, scores.size)
            top = np.argpartition(-scores, k - 1)[:k]
            rows = top if idx.size == n else idx[top]
            # A row removed while it was scored (the product runs without the GIL, and a
            # removal marks the row dead before zeroing its vector) is dropped: its score
            # may be part of its vector's.
            live = block.alive[rows]
            found.extend(
                (float(s), int(block.seq[r]), block.ids[r])
                for s, r, ok in zip(scores[top], rows, live, strict=True)
                if ok
            )
        found.sort(key=lambda hit: (-hit[0], hit[1]))
        return [(memory_id, score) for score, _, memory_id in found[:limit]]


def time_mask(
    times: dict[str, npt.NDArray[np.float64]], n: int, flt: Filter, now: float
) -> npt.NDArray[np.bool_]:
    """Which of the first ``n`` rows pass the filter's time and validity parts, as
    ``filter_sql`` would (both in-process indexes use it): an event-time bound reads a
    row's ``event_time``, or its ``created_at`` where the event time is NaN (unknown)."""
    from contextos.times import to_epoch

    mask = np.ones(n, dtype=bool)
    with np.errstate(invalid="ignore"):
        created = times["created_at"][:n]
        if flt.event_after is not None or flt.event_before is not None:
            # A row without an event time (NaN: unknown) is placed by when it was added.
            ev = times["event_time"][:n]
            ev = np.where(np.isnan(ev), created, ev)
            if flt.event_after is not None:
                mask &= ev >= to_epoch(flt.event_after)
            if flt.event_before is not None:
                mask &= ev < to_epoch(flt.event_before)
        if flt.created_after is not None:
            mask &= created >= to_epoch(flt.created_after)
        if flt.created_before is not None:
            mask &= created < to_epoch(flt.created_before)
        if not flt.include_invalid:
            at = now if flt.as_of is None else to_epoch(flt.as_of)
            vt = times["valid_to"][:n]
            vf = times["valid_from"][:n]
            mask &= np.isnan(vt) | (vt > at)
            if flt.as_of is None:  # a close is no end to come, whatever this clock says
                mask &= ~(vt <= times["updated_at"][:n])
            else:
                mask &= np.isnan(vf) | (vf <= at)
    return mask
