"""Embedding behind ``add``: records are durable and lexically searchable at once,
and a background thread embeds them in batches.

Why: embedding one turn at a time costs ~10 ms on two CPU cores and batches of
64 are several times cheaper per turn, so ``add`` only writes to SQLite and this
worker drains the store's queue of pending records in batches. Nothing is lost on a
crash: a record without a vector is simply pending, and the next process that opens
the store embeds it.

Several processes may share a store (``contextos serve --workers 2``, a server and a
CLI): each worker claims its batch (``Store.claim_vectors``) for a lease, so the others
skip it and every record is embedded once, not once per process. A claim whose holder
died runs out after the lease and another worker takes the records.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import uuid
import weakref
from collections import defaultdict
from collections.abc import Callable, Sequence

from ..embed import Embedder, EmbedderOutputError, Vectors, checked_vectors
from ..errors import ConfigError, EmbedderUnavailable
from ..os_threads import BACKGROUND_EMBEDDING, name_this_thread
from ..store.base import Store
from ..store.records import nul_written_out
from ..types import MemoryRecord
from .render import vector_model
from .turn_vectors import kept_or_embedded

log = logging.getLogger(__name__)

#: Seconds before the worker tries again after the store itself failed.
RETRY_S = 1.0

#: Seconds the worker waits before trying a down embedder again (``EmbedderUnavailable``),
#: doubled after each failed try up to ``OUTAGE_RETRY_MAX_S``: a remote API that answers
#: 503 for a few seconds is retried within seconds, one down for hours is asked once a
#: minute rather than hammered; an add does not cut the wait short.
OUTAGE_RETRY_S = 1.0
OUTAGE_RETRY_MAX_S = 60.0

#: Seconds a claimed batch stays another process's before it may be taken again. Long
#: beside a batch's embedding (64 MiniLM turns take well under a second) so a live
#: worker never loses its batch; it only delays the records of a worker that died.
CLAIM_LEASE_S = 30.0

#: Seconds ``close()`` waits for the batch in progress before leaving it to its daemon
#: thread (an embedder that hangs must not hang the caller's exit for ever).
CLOSE_TIMEOUT_S = 30.0

#: How many leases a live worker may keep one batch claimed by renewing it (see
#: ``ClaimKeeper``): 5 minutes at the default lease, far beyond any healthy batch;
#: past that its embedder is taken to hang, and other processes may take the batch.
MAX_HOLD_LEASES = 10

#: Seconds between looks at the queue while ``flush()`` waits for records another
#: process has claimed.
CLAIM_POLL_S = 0.05

#: Seconds between ``flush()``'s checks that the worker is still alive while it waits.
FLUSH_POLL_S = 0.25


def claim_owner() -> str:
    """A fresh name for one claimant (a worker, or one inline ``embed_pending`` run):
    unique across processes and hosts sharing a store."""
    return uuid.uuid4().hex


def requeue_stale(store: Store, embedder: Embedder) -> int:
    """Queue again the records whose vectors another model or an older ``embedding_text``
    wrote, or that are not of the embedder's ``dimensions``, so they are re-embedded like
    new ones (their old vectors serve until then). Why the size: an embedder whose size is
    a setting (a remote API's ``dimensions``, ``HashEmbedder(n)``) keeps its ``model_id``
    when it changes, and vectors of the old size were never searched again (a review)."""
    requeued = store.requeue_stale_vectors(_stored_model(embedder), dimensions=embedder.dimensions)
    if requeued:
        log.info("re-embedding %d memories whose vectors another model wrote", requeued)
    return requeued


def embed_pending(
    store: Store,
    embedder: Embedder,
    *,
    batch_size: int = 64,
    owner: str | None = None,
    lease_s: float = CLAIM_LEASE_S,
) -> int:
    """Claim one batch of pending records for ``owner`` and embed it; returns how many
    were claimed (0 when none is left that another process has not claimed).

    A batch the embedder fails on is retried record by record (``_embed_each``). A
    record that fails alone twice while the embedder embeds a probe text in between is
    bad: it is quarantined with its error (``Store.embedding_status`` lists it), so one
    bad row never stalls embedding for everyone else. When the probe fails too, the embedder
    is down (a remote API answering 503): nothing is quarantined, the claim is
    released and ``EmbedderUnavailable`` is raised; the records stay pending for a
    later try (the worker backs off). Quarantining them instead lost their vectors for
    good, since only a text change retries a quarantined record.

    A failure of the store itself (``StoreError``, e.g. "database is busy" while
    another process writes) is no fault of the records: it propagates, the records
    stay claimed by ``owner`` and pending, and the next claim by the same owner
    retries them at once. Vectors are written only for records ``owner`` still claims
    (``Store.set_vectors``): one whose text changed meanwhile is embedded again with
    its new text.
    """
    owner = owner or claim_owner()
    pending = store.claim_vectors(owner, limit=batch_size, lease_s=lease_s)
    if not pending:
        return 0
    try:
        with ClaimKeeper(store, owner, lease_s):
            try:
                vectors = _embed(embedder, pending)
            except Exception as exc:
                _embed_each(store, embedder, pending, owner, exc)
            else:
                _store(store, embedder, pending, vectors, owner)
    except EmbedderUnavailable:
        _release(store, owner)
        raise
    return len(pending)


#: What ``_embed_each`` embeds to tell a down embedder from a bad record: short plain
#: words any embedder takes.
PROBE_TEXT = "a short note"


class EmbedderCannotRun(EmbedderUnavailable):
    """The embedder failed on the probe text with a ``ConfigError`` (``error``): it cannot
    run in this process at all (its weights package or runtime is not installed, a
    setting is wrong), and no wait mends that.

    Why an ``EmbedderUnavailable``: to inline embedding (``Memory(background_embedding=
    False)``) it is one, as before: the write stands and its records stay pending. The
    background worker, which retried an outage for as long as it lasted, stops at this
    one instead (:meth:`EmbeddingWorker._give_up`): a missing weights package was retried
    every minute for good, and ``flush()`` (so ``contextos demo``) waited with it."""

    def __init__(self, error: ConfigError) -> None:
        super().__init__(f"the embedder cannot run: {error}")
        self.error = error


def _embed_each(
    store: Store,
    embedder: Embedder,
    records: list[MemoryRecord],
    owner: str,
    batch_error: Exception,
) -> None:
    """After the batch failed: embed and store each record alone, and quarantine one
    that fails alone twice while the embedder embeds ``PROBE_TEXT`` in between, or
    answers it with vectors the protocol refuses (``EmbedderOutputError``: a fault of
    the embedder's code, which no wait mends, so no outage to wait out).

    Why the probe: a record failing alone is either bad (a text the embedder rejects,
    a row it cannot render) or the embedder is down, and only the latter heals by
    itself. The probe is asked right after each failure, so an outage that starts in
    the middle of a batch quarantines none of the rest; an embedder that is down costs
    two calls per try (the batch, then the probe) rather than one per record. The
    second try of the record, once the probe answered, keeps a failure of the moment
    (a dropped connection, a 429 between two answers) from quarantining it.
    """
    for record in records:
        if len(records) == 1:
            error: Exception | None = batch_error  # the batch was this record alone
        else:
            error = _embed_alone(store, embedder, record, owner)
        if error is None:
            continue
        try:
            _embed_batch(embedder)([PROBE_TEXT])
        except EmbedderOutputError:
            pass  # not down: it answers, wrongly; the record is set aside below
        except ConfigError as probe_error:  # not down: unable to run here at all
            raise EmbedderCannotRun(probe_error) from error
        except Exception as probe_error:
            raise EmbedderUnavailable(
                f"the embedder failed on a probe text too: {_describe(probe_error)}"
            ) from error
        error = _embed_alone(store, embedder, record, owner)
        if error is not None:
            _quarantine(store, embedder, record, error, owner)


def _embed_alone(
    store: Store, embedder: Embedder, record: MemoryRecord, owner: str
) -> Exception | None:
    """Embed and store ``record`` on its own; the embedder's error if it failed (a
    store failure propagates: it is no fault of the record)."""
    try:
        vectors = _embed(embedder, [record])
    except Exception as exc:
        return exc
    _store(store, embedder, [record], vectors, owner)
    return None


def _release(store: Store, owner: str) -> None:
    """End ``owner``'s claim now, so the next try (this worker's, another process's, the
    next CLI command's) takes the records at once; a failure is harmless (the claim
    runs out after its lease)."""
    try:
        store.extend_claim(owner, lease_s=0.0)
    except Exception as exc:  # noqa: BLE001 - a busy or closed store: the lease ends it
        log.warning("could not release an embedding claim: %s", exc)


class ClaimKeeper:
    """While a batch is embedded, its claim is extended every third of a lease
    (``Store.extend_claim``), for at most ``MAX_HOLD_LEASES`` leases.

    Why: a batch that outlasts its lease (a remote embedder that rate-limits, a CPU
    starved by a busy server) would otherwise be taken by another process's worker,
    whose claim then voids this one's vectors; with both slow, no batch would ever be
    stored. A process that dies stops renewing, so its lease runs out; one whose
    embedder hangs stops renewing after ``MAX_HOLD_LEASES`` leases, so another process
    takes its records then. The renewals of every batch in the process are made by one
    thread (``_Renewals``): a batch only registers, so a fast one (nearly all) costs a
    dictionary entry, not a thread start (an inline ``add`` embeds one batch).
    """

    def __init__(self, store: Store, owner: str, lease_s: float) -> None:
        self._claim = _Claim(store, owner, lease_s)

    def __enter__(self) -> ClaimKeeper:
        _RENEWALS.hold(self._claim)
        return self

    def __exit__(self, *exc: object) -> None:
        _RENEWALS.release(self._claim)


class _Claim:
    """One batch's claim while it embeds: when it is next renewed, and how often it may be."""

    def __init__(self, store: Store, owner: str, lease_s: float) -> None:
        self.store, self.owner, self.lease_s = store, owner, lease_s
        self.due = 0.0
        self.left = 3 * (MAX_HOLD_LEASES - 1)


class _Renewals:
    """The process's one renewer of embedding claims (a daemon thread started on first
    use), waking at the next claim's due time."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._claims: set[_Claim] = set()
        self._thread: threading.Thread | None = None

    def hold(self, claim: _Claim) -> None:
        with self._cond:
            claim.due = time.monotonic() + claim.lease_s / 3
            self._claims.add(claim)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="contextos-claim-renewer", daemon=True
                )
                self._thread.start()
            self._cond.notify()

    def release(self, claim: _Claim) -> None:
        with self._cond:
            self._claims.discard(claim)

    def _run(self) -> None:
        while True:
            with self._cond:
                now = time.monotonic()
                due = [c for c in self._claims if c.due <= now]
                for claim in due:
                    claim.left -= 1
                    claim.due = now + claim.lease_s / 3
                    if claim.left <= 0:  # held too long: taken to hang, let it go
                        self._claims.discard(claim)
                if not due:
                    nearest = min((c.due for c in self._claims), default=None)
                    self._cond.wait(None if nearest is None else nearest - now)
                    continue
            for claim in due:  # outside the lock: a store call may wait on a busy file
                if claim.store.closed:  # under a batch that hangs: no claim is left to keep
                    self.release(claim)
                    continue
                try:
                    claim.store.extend_claim(claim.owner, lease_s=claim.lease_s)
                except Exception as exc:  # a busy or closed store: the next tick retries
                    log.warning("could not extend an embedding claim: %s", exc)


_RENEWALS = _Renewals()


def _renewals_after_fork() -> None:
    """A fork's child renews its own claims: the parent's renewer thread is not in it,
    and its lock may have been held when the process forked."""
    global _RENEWALS
    _RENEWALS = _Renewals()


os.register_at_fork(after_in_child=_renewals_after_fork)


def _embed(embedder: Embedder, records: list[MemoryRecord]) -> Vectors:
    """The records' vectors, checked; raises whatever the embedder raises."""
    # A turn's vector carries its facts' vectors too (``turn_vectors``); a vector a
    # search computed for a record while it waited is stored as it is (``KEPT``).
    return kept_or_embedded(_embed_batch(embedder), embedder, records)


def _embed_batch(embedder: Embedder) -> Callable[[Sequence[str]], Vectors]:
    """The embedder's batch call, its replies checked (``checked_vectors``: a reply of
    the wrong shape or with NaN raises ``EmbedderOutputError`` before it is used)."""
    # Embedders may keep a separate path for background batches (MiniLM keeps its query
    # model free for searches); the protocol's embed() is the fallback.
    embed_batch: Callable[[Sequence[str]], Vectors] = getattr(
        embedder, "embed_batch", embedder.embed
    )

    def checked(texts: Sequence[str]) -> Vectors:
        return checked_vectors(embedder, embed_batch(texts), len(texts))

    return checked


def _store(
    store: Store, embedder: Embedder, records: list[MemoryRecord], vectors: Vectors, owner: str
) -> None:
    by_tenant: dict[str, list[int]] = defaultdict(list)
    for pos, record in enumerate(records):
        by_tenant[record.tenant].append(pos)
    model = _stored_model(embedder)
    for tenant, rows in by_tenant.items():
        store.set_vectors(tenant, [records[i].id for i in rows], vectors[rows], model, owner=owner)


def _quarantine(
    store: Store, embedder: Embedder, record: MemoryRecord, exc: BaseException, owner: str
) -> None:
    """Set ``record`` aside with its error. An embedder that broke its protocol is said
    at ERROR, naming it: its code needs fixing, and each record it embeds is set aside."""
    if isinstance(exc, EmbedderOutputError):
        log.error(
            "embedding of memory %s failed, quarantined: the embedder broke its protocol "
            "(fix it; a change of the memory's text, or another model_id, tries it again): %s",
            record.id,
            exc,
        )
    else:
        log.warning("embedding of memory %s failed; quarantined: %s", record.id, exc)
    store.quarantine_vectors(
        record.tenant, [record.id], _describe(exc), owner=owner, model=_stored_model(embedder)
    )


def _describe(exc: BaseException) -> str:
    """``exc`` as a quarantined record's error: its type and message, each NUL written
    ``\\x00``, at most 500 characters. An upstream error may quote a binary body:
    PostgreSQL cannot store its NUL, and the refused quarantine left the record claimed
    at the head of the queue, which stopped background embedding for every tenant. Both
    stores keep the same text."""
    return nul_written_out(f"{type(exc).__name__}: {exc}")[:500]


def _stored_model(embedder: Embedder) -> str:
    """What the embedder's vectors are stored and compared as (``vector_model``), each
    NUL written ``\\x00``: PostgreSQL cannot store a model id holding one."""
    return nul_written_out(vector_model(embedder.model_id))


#: Workers still running: closed at interpreter exit (see ``_close_live_workers``).
_LIVE: weakref.WeakSet[EmbeddingWorker] = weakref.WeakSet()


@atexit.register
def _close_live_workers() -> None:
    """Stop every worker before the interpreter finalises: a daemon thread still inside
    onnxruntime when Python tears down aborts the process ("terminate called without an
    active exception", exit 134) in a script that never called ``Memory.close()``. The
    batch in progress finishes; records not reached stay pending for the next process."""
    for worker in list(_LIVE):
        worker.close()


class EmbeddingWorker:
    """A daemon thread that embeds pending records whenever it is woken."""

    def __init__(
        self,
        store: Store,
        embedder: Embedder,
        *,
        batch_size: int = 64,
        linger: float = 0.2,
        lease_s: float = CLAIM_LEASE_S,
        requeue_stale: bool = True,
        close_timeout: float = CLOSE_TIMEOUT_S,
    ) -> None:
        """``linger``: seconds to let records accumulate after a wake-up. An app adds
        one turn at a time; without lingering the worker embedded batches of one,
        at ~25 ms each on two cores (26 turns/s) instead of batches of dozens.
        ``lease_s``: how long a batch this worker claims stays its own (see
        ``CLAIM_LEASE_S``).
        ``requeue_stale``: False for a process that lives for one command (the CLI): it
        embeds what is pending and never queues again the vectors another model wrote,
        neither on its first pass nor once a lease. Why: a ``contextos search`` on an
        application's store re-embedded it with the CLI's model; the application's
        searches found nothing until it took its vectors back, re-embedding every
        memory (a review). Re-embedding stays with long-running processes.
        ``close_timeout``: how long :meth:`close` waits for the batch in progress
        (``CLOSE_TIMEOUT_S``)."""
        if lease_s <= 0:
            raise ValueError("lease_s must be positive")
        self._linger = linger
        self._close_timeout = close_timeout
        self._lease_s = lease_s
        #: This worker's name on its claims (one per worker, so its own failed batch
        #: is retried at once rather than after the lease).
        self.owner = claim_owner()
        self._store = store
        self._embedder = embedder
        self._batch_size = batch_size
        self._wake = threading.Event()
        self._idle = threading.Event()
        self._flushing = threading.Event()
        #: Passes over what is pending, begun and ended (``flush(others=False)`` waits
        #: for one begun after it was called).
        self._passes = threading.Condition()
        self._began = 0
        self._ended = 0
        self._stop = False
        self._closing = threading.Event()  # set by close(): ends an outage's wait
        self._error: BaseException | None = None
        #: Why the worker stopped for good (``_give_up``): every flush() raises it.
        self._fatal: ConfigError | None = None
        #: Seconds the last wait for a down embedder lasted (0 while it answers).
        self._outage_wait = 0.0
        #: Records embedded and seconds spent embedding them (for benchmarks).
        self.embedded = 0
        self.seconds = 0.0
        #: Vectors of another model or text recipe are queued again once, on the first
        #: pass (an upgrade or a switched embedder re-embeds in the background). Only
        #: here, and not in the CLI's worker (``requeue_stale=False``): inline embedding
        #: would make the next command re-embed a whole store before it answers; its
        #: searches use the old vectors meanwhile.
        self._requeue_stale = requeue_stale
        #: Whether it takes back, once a lease, vectors another model wrote since
        #: (:meth:`_others_vectors_found`).
        self._takes_back = requeue_stale
        #: Whether :meth:`_others_vectors_found` has said so in the log yet.
        self._warned_other_model = False
        #: When :meth:`_others_vectors_found` is next due (``_look_due``); the first pass
        #: queues such vectors again anyway.
        self._next_look = time.monotonic() + lease_s
        #: Set by :meth:`release`: one pass over what is pending, then the thread ends
        #: and calls ``_on_exit`` (``_exit_lock`` orders the two).
        self._released = False
        self._on_exit: Callable[[], None] | None = None
        self._exit_lock = threading.Lock()
        self._exited = False
        self._thread = threading.Thread(target=self._run, name="contextos-embed", daemon=True)
        _LIVE.add(self)
        try:
            self._thread.start()
        except BaseException:
            # Interrupted while the thread starts (Ctrl-C, a SIGTERM raised as
            # KeyboardInterrupt while a Memory opens): the thread may be running already,
            # and no one would get this worker to close it (s56).
            self.close()
            raise

    @property
    def store(self) -> Store:
        """The store it embeds the pending records of."""
        return self._store

    @property
    def running(self) -> bool:
        """Whether the worker's thread is still alive (it stops on :meth:`close`, or by
        itself once its store was closed or its embedder cannot run)."""
        return self._thread.is_alive()

    def notify(self) -> None:
        """New records were written: embed them soon."""
        self._idle.clear()
        self._wake.set()

    def flush(self, timeout: float | None = None, *, others: bool = True) -> bool:
        """Block until nothing is pending, records another process claimed included
        (they are waited for, or taken once their claim runs out), and records added
        while the embedder is down (waited for until it answers again); re-raises a
        worker failure it has not since got past (a pass that embedded everything
        after a failed one clears it). False on timeout, and at once when the worker has stopped
        (closed, or its store was closed): nothing would embed what is pending. A worker
        whose embedder cannot run (a ``ConfigError`` such as a weights package not
        installed) stopped too: each flush raises that error at once, rather than
        waiting as for an outage.

        ``others=False``: only until a pass begun after this call has embedded what it
        could claim, not for records another process holds (a live one embeds them; a
        dead one's claim runs out after its lease, up to ``CLAIM_LEASE_S``). What this
        process wrote before the call then has its vector unless another process took
        it. Why: a CLI command killed after its add left its claim, and every later
        command's search and add on the file waited out the lease, ~30 s (a review)."""
        if self._stop:
            self._raise_error()
            return False
        with self._passes:
            target = self._began + 1  # the next pass to begin
        self._flushing.set()
        self.notify()
        try:
            done = self._wait_idle(timeout) if others else self._wait_pass(target, timeout)
        finally:
            self._flushing.clear()
        self._raise_error()
        # Idle because the worker stopped (closed, or its store was) is not "done":
        # what was pending is still pending.
        return done and not self._stop

    def _wait_idle(self, timeout: float | None) -> bool:
        """Wait for the worker to go idle, in slices: a worker that stopped while this
        waited (``close()`` from another thread, its store closed just as this woke
        it) may never signal idle again, and a flush without a timeout would then
        wait forever."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = FLUSH_POLL_S if deadline is None else deadline - time.monotonic()
            if left <= 0:
                return self._idle.is_set()
            if self._idle.wait(min(left, FLUSH_POLL_S)):
                return True
            if not self._thread.is_alive():
                return False

    def _wait_pass(self, target: int, timeout: float | None) -> bool:
        """Wait until pass ``target`` has ended (in slices, as :meth:`_wait_idle`)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = FLUSH_POLL_S if deadline is None else deadline - time.monotonic()
            with self._passes:
                if self._ended >= target:
                    return True
                if left <= 0:
                    return False
                self._passes.wait(min(left, FLUSH_POLL_S))
            if not self._thread.is_alive():
                with self._passes:
                    return self._ended >= target

    def _raise_error(self) -> None:
        if self._fatal is not None:  # raised by every flush: it never passes
            raise self._fatal.with_traceback(None)
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def close(self) -> None:
        """Stop after the batch in progress, waiting for it up to ``close_timeout`` (30 s).
        A batch whose embedder hangs is left to its daemon thread: the exit does not wait
        for it a second time (``_close_live_workers``), which took another 30 s (a review)."""
        self._stop = True
        self._closing.set()
        self._flushing.set()  # cut a linger short: closing waits for nothing to gather
        self._wake.set()
        if self._thread.is_alive():  # not when its start was interrupted (see __init__)
            self._thread.join(timeout=self._close_timeout)
        _LIVE.discard(self)

    def release(self, then: Callable[[], None] | None = None) -> None:
        """Its owner is gone without :meth:`close` (a ``Memory`` dropped unclosed): embed
        what is pending now, without lingering, then let the thread end, and call
        ``then`` (closing the store the owner opened) on it once it has stopped, or here
        if it had stopped already. Returns at once.

        Why not :meth:`close`: that stops after the batch in progress, and a service
        that opens a Memory per request and drops it within the linger left every
        record pending (each next worker dropped as soon). What the pass does not reach
        (an embedder down, records another process claimed) stays pending, durable, for
        the next worker on the file (each embeds what is pending when it starts)."""
        with self._exit_lock:
            if not self._exited:
                self._on_exit = then
                self._released = True
                self._closing.set()  # an outage's wait ends (its records stay pending)
                self._flushing.set()  # no linger
                self._wake.set()
                return
        if then is not None:
            then()

    def _run(self) -> None:
        name_this_thread(BACKGROUND_EMBEDDING)
        try:
            self._loop()
        finally:
            with self._exit_lock:
                self._exited = True
                then, self._on_exit = self._on_exit, None
            self._idle.set()  # the thread ends: wake any flush() (it answers False)
            if then is not None:
                try:
                    then()
                except Exception as exc:  # noqa: BLE001 - the thread ends either way
                    log.warning("closing a dropped Memory's store failed: %s", exc)

    def _loop(self) -> None:
        while not self._stop:
            woken = self._wake.wait(self._lease_s)
            if self._store.closed:
                self._stop_for_closed_store()
                break
            # Not while stopping: a worker closed long after its last look re-queued the
            # vectors another embedder had just written, for nobody to embed.
            stopping = self._stop or self._released
            others = (
                not stopping
                and self._takes_back
                and self._look_due(woken)
                and self._others_vectors_found()
            )
            if not woken and not self._released and not others and not self._pending_somewhere():
                continue
            if not self._stop:
                # Linger, but not past a flush(): a CLI command that opens a Memory and
                # flushes at once otherwise waited out the whole linger (0.2 s).
                self._flushing.wait(self._linger)
            self._wake.clear()
            with self._passes:
                self._began += 1
            try:
                claimed_elsewhere = self._pass()
            finally:
                with self._passes:
                    self._ended += 1
                    self._passes.notify_all()
            if claimed_elsewhere is None or self._released:  # a dropped owner: one pass
                break
            if claimed_elsewhere:
                # Look again soon while flush() waits, else once the claims could have
                # run out (their holder died); an add or a flush() wakes it earlier.
                self._wake.wait(CLAIM_POLL_S if self._flushing.is_set() else self._lease_s)
                self._wake.set()
            elif not self._wake.is_set():
                self._idle.set()

    def _pass(self) -> bool | None:
        """Embed what is pending; whether records are still pending that another
        process claimed, and None when the thread must stop (its store was closed, or
        it was released and this pass failed: nobody is left to wait for a retry)."""
        try:
            claimed_elsewhere = self._embed_all()
        except EmbedderCannotRun as exc:
            self._give_up(exc.error)
            return None
        except EmbedderUnavailable as exc:
            if self._released:  # the next worker on the file tries again
                return None
            self._wait_out_outage(exc)  # wakes the loop for the next try
            return False
        except Exception as exc:  # the store failed (busy, closed): surfaced by flush()
            self._error = exc
            if self._store.closed:
                self._stop_for_closed_store()
                return None
            if self._released:
                log.warning("background embedding of a dropped Memory failed: %s", exc)
                return None
            log.warning("background embedding failed, retrying in %.0f s: %s", RETRY_S, exc)
            if not self._stop:
                retry = threading.Timer(RETRY_S, self.notify)
                retry.daemon = True
                retry.start()
            return False
        # A store failure this worker has since retried and got past is over: kept, a
        # later flush() raised it although nothing was left undone.
        self._error = None
        return claimed_elsewhere

    @property
    def waiting_out_outage(self) -> bool:
        """Whether the embedder was down at its last try (an outage: it failed on a probe
        text too) and nothing has been embedded since: what is pending waits for it to
        answer again, however long a ``flush()`` waits."""
        return self._outage_wait > 0

    def _wait_out_outage(self, exc: EmbedderUnavailable) -> None:
        """The embedder is down: wait (``OUTAGE_RETRY_S`` doubling up to
        ``OUTAGE_RETRY_MAX_S``), then try again. The records stay pending and the worker
        stays busy meanwhile, so ``flush()`` does not answer True for them (with a
        timeout it answers False); only ``close()`` cuts the wait short."""
        self._outage_wait = min(OUTAGE_RETRY_MAX_S, max(OUTAGE_RETRY_S, 2 * self._outage_wait))
        log.warning("embedder unavailable, retrying in %.0f s: %s", self._outage_wait, exc)
        self._closing.wait(self._outage_wait)
        self._wake.set()

    def _embed_all(self) -> bool:
        """Embed batches until nothing is left to claim; whether records are still
        pending (another process holds their claim)."""
        if self._requeue_stale:
            requeue_stale(self._store, self._embedder)
            self._requeue_stale = False
        while not self._stop:
            start = time.perf_counter()
            done = embed_pending(
                self._store,
                self._embedder,
                batch_size=self._batch_size,
                owner=self.owner,
                lease_s=self._lease_s,
            )
            if not done:
                break
            self._outage_wait = 0.0
            self.embedded += done
            self.seconds += time.perf_counter() - start
        return not self._stop and self._store.embedding_status().pending > 0

    def _give_up(self, error: ConfigError) -> None:
        """The embedder cannot run in this process (``EmbedderCannotRun``): stop, say so
        once, and have every ``flush()`` raise ``error`` at once. What was added stays
        stored, found by its words, and pending: the next process that can run the
        embedder (once the weights are installed, say) embeds it when it opens the store.

        Why stop rather than back off: a missing package does not come back by itself,
        and the retries (each a failed model load, every minute) went on for good while
        ``flush()`` waited with them."""
        self._fatal = error
        log.error(
            "background embedding stopped (what is added stays stored, found by its words, "
            "until a process that can run the embedder opens the store): %s",
            error,
        )
        self._stop = True
        _LIVE.discard(self)
        self._idle.set()

    def _stop_for_closed_store(self) -> None:
        """The store was closed under this worker (its owner closed the store, not the
        worker): every retry would fail the same way, forever, once a second. Stop, say
        so once, and let ``flush()`` answer at once (its records stay pending, durable,
        for the next process)."""
        if not self._stop:
            log.warning("background embedding stopped: its store was closed")
        self._stop = True
        _LIVE.discard(self)
        self._idle.set()

    def _look_due(self, woken: bool) -> bool:
        """Whether :meth:`_others_vectors_found` is due: after a lease without a wake-up,
        and once a lease has gone by since the last look, however often the worker is
        woken (the next look is then due a lease from now).

        Why not only when idle: a process that adds at least once a lease never looked,
        and searched another embedder's vectors with its own queries until it was
        restarted, although the docs promise they are taken back within a lease (a
        review)."""
        now = time.monotonic()
        if woken and now < self._next_look:
            return False
        self._next_look = now + self._lease_s
        return True

    def _others_vectors_found(self) -> bool:
        """Once a lease (``_look_due``): did another process write vectors of another
        model (or an older text recipe) since this worker's first pass? They are queued
        again, to be re-embedded with this worker's model, and the first time this is
        said in the log.

        Why: another process with another embedder (a CLI run with
        ``CONTEXTOS_EMBEDDER`` set otherwise) re-embedded a server's store with its own
        model; the server, whose worker re-queued other models' vectors only when it
        started, then searched vectors of that model with its own queries' (the same
        size: compared as if alike) and found nothing relevant until it was restarted
        (a review). Now its store is back on its model within a lease of the other
        process's writes. Two long-running processes with different embedders on one
        store re-embed each other's memories for ever: hence the warning."""
        try:
            requeued = requeue_stale(self._store, self._embedder)
        except Exception:  # noqa: BLE001 - a closing, busy or read-only store: later
            return False
        if requeued and not self._warned_other_model:
            self._warned_other_model = True
            log.warning(
                "another process wrote vectors of another embedder into this store while "
                "this one runs (%d memories); re-embedding them with %s. Give every process "
                "on one store the same embedder, or each re-embeds the other's memories",
                requeued,
                self._embedder.model_id,
            )
        return requeued > 0

    def _pending_somewhere(self) -> bool:
        """Idle for a lease: is anything pending? Another process may have claimed
        records and died since this worker went idle, and nothing else would wake it
        to take them over once their claim runs out. A count, no write."""
        try:
            return self._store.embedding_status().pending > 0
        except Exception:  # noqa: BLE001 - a closing or busy store: look again later
            return False
