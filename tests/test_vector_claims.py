"""Several processes on one store embed each pending record once (claims with a lease).

Two real processes, each with its own embedding worker, drain one SQLite file or one
PostgreSQL schema. Every process logs the texts its embedder was given, so the test sees
who embedded what: every record once, by either process, and every record ends with a
vector. A process SIGKILLed while it holds a claim loses nothing: once the lease runs
out the other process takes its records.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

from contextos.embed import Vectors
from contextos.errors import StoreError
from contextos.memory import Memory
from contextos.memory.embedding_worker import MAX_HOLD_LEASES, EmbeddingWorker, embed_pending
from contextos.server.tenants import TenantMemories
from contextos.store import Store, open_store
from contextos.store.base import Patch
from contextos.store.sqlite import SQLiteStore
from contextos.testing.embedders import HashEmbedder
from contextos.types import Filter, MemoryRecord, Scope
from pg_support import fresh_schema
from store_support import GatedEmbedder

RECORDS = 400
BATCH = 16
#: Short, so the crash test waits seconds, not the default half minute; longer than
#: the kill and the survivor's gate take (under a second: its process has started
#: already), so a takeover before the lease ran out would show.
LEASE_S = 3.0


class LoggingEmbedder(HashEmbedder):
    """The shipped deterministic embedder, writing each text it is given to a log file
    (one line per text: the time, a tab, the text) before embedding it. ``hang`` makes
    it never return, as a process stuck or killed in the middle of a batch."""

    def __init__(self, log: Path, *, delay: float = 0.0, hang: bool = False) -> None:
        super().__init__()
        self.log = log
        self.delay = delay
        self.hang = hang

    def embed(self, texts: Sequence[str]) -> Vectors:
        with self.log.open("a", encoding="utf-8") as f:
            now = time.time()
            f.writelines(f"{now:.3f}\t{t}\n" for t in texts)
        if self.hang:
            time.sleep(3600)
        time.sleep(self.delay)  # a forward pass takes time: the processes interleave
        return super().embed(texts)


def _drain(db: str, log: str, gate: str, delay: float, hang: bool) -> None:
    """A process's share: its own store handle and worker, started once the file
    ``gate`` exists (so processes begin together, after their imports), until
    nothing is pending. It writes ``<log>.ready`` once it waits at the gate."""
    store = open_store(db)
    embedder = LoggingEmbedder(Path(log), delay=delay, hang=hang)
    Path(f"{log}.ready").touch()
    while not Path(gate).exists():
        time.sleep(0.01)
    worker = EmbeddingWorker(store, embedder, batch_size=BATCH, linger=0.0, lease_s=LEASE_S)
    try:
        if not worker.flush(timeout=120):
            raise SystemExit(2)
    finally:
        worker.close()
        store.close()


def _fill(db: str, n: int = RECORDS) -> list[str]:
    store = open_store(db)
    texts = [f"claimed record {i} about topic{i % 37} and thing{i}" for i in range(n)]
    store.put(
        [
            MemoryRecord(id=f"m{i}", text=t, scope=Scope(tenant="t", user_id=f"u{i % 5}"))
            for i, t in enumerate(texts)
        ]
    )
    assert store.embedding_status().pending == n
    store.close()
    return texts


def _timed(path: Path) -> list[tuple[float, str]]:
    """(time, text) of every text the process at ``path`` was given to embed."""
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    return [(float(at), text) for at, text in (line.split("\t", 1) for line in lines)]


def _logged(path: Path) -> list[str]:
    return [text for _, text in _timed(path)]


def _start(
    db: str, log: Path, gate: Path, *, delay: float = 0.005, hang: bool = False
) -> multiprocessing.process.BaseProcess:
    ctx = multiprocessing.get_context("spawn")
    proc = ctx.Process(target=_drain, args=(db, str(log), str(gate), delay, hang))
    proc.start()
    return proc


def _open_gate(gate: Path, logs: Sequence[Path]) -> float:
    """Let the processes writing ``logs`` start, once each has imported and opened its
    store (a process that started early would otherwise drain the queue alone).
    Returns the time just before the gate opened."""
    deadline = time.monotonic() + 120
    while not all(Path(f"{log}.ready").exists() for log in logs):
        assert time.monotonic() < deadline, "a process did not start"
        time.sleep(0.01)
    opened = time.time()
    gate.touch()
    return opened


def _assert_all_vectors(db: str, texts: list[str]) -> None:
    store = open_store(db)
    try:
        assert store.embedding_status().pending == 0
        found = store.get_many("t", [f"m{i}" for i in range(RECORDS)])
        assert len(found) == RECORDS
        # Every record is found by its own vector.
        probe = HashEmbedder().embed([texts[7]])[0]
        from contextos.types import Filter

        hits = store.vector_search(Filter(scope=Scope(tenant="t", user_id="u2")), probe, limit=1)
        assert [h.id for h in hits] == ["m7"]
    finally:
        store.close()


def _two_processes_embed_each_record_once(db: str, tmp_path: Path) -> None:
    texts = _fill(db)
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    gate = tmp_path / "go"
    procs = [_start(db, log, gate) for log in logs]
    _open_gate(gate, logs)
    for proc in procs:
        proc.join(timeout=180)
        assert proc.exitcode == 0
    per_process = [_logged(log) for log in logs]
    counts = Counter(t for done in per_process for t in done)
    assert set(counts) == set(texts)
    assert [t for t, n in counts.items() if n > 1] == []  # embedded once, not once each
    assert all(len(done) > 0 for done in per_process), [len(d) for d in per_process]
    _assert_all_vectors(db, texts)


def _killed_holder_is_taken_over(db: str, tmp_path: Path) -> None:
    texts = _fill(db)
    dead_log, live_log = tmp_path / "dead.log", tmp_path / "live.log"
    dead_gate, live_gate = tmp_path / "go-dead", tmp_path / "go-live"
    doomed = _start(db, dead_log, dead_gate, hang=True)
    live = _start(db, live_log, live_gate, delay=0.0)
    # The claim is taken after the gate opens and logged some time later (on a loaded
    # host, tenths of a second): its lease runs out no earlier than the gate + LEASE_S,
    # and no later than the log + LEASE_S.
    not_before = _open_gate(dead_gate, [dead_log])
    deadline = time.monotonic() + 60
    while not _logged(dead_log):  # it holds its first claimed batch, mid-embedding
        assert time.monotonic() < deadline and doomed.is_alive()
        time.sleep(0.05)
    claimed_at = _timed(dead_log)[0][0]  # after the claim
    held = set(_logged(dead_log))
    assert len(held) == BATCH
    assert doomed.pid is not None
    os.kill(doomed.pid, signal.SIGKILL)
    doomed.join(timeout=30)
    _open_gate(live_gate, [live_log])
    live.join(timeout=180)
    assert live.exitcode == 0
    # The live process embedded everything, the dead one's batch included, but that
    # batch only once its claim had run out (the rest at once).
    done = _timed(live_log)
    assert Counter(text for _, text in done) == Counter(texts)
    taken_over = [at for at, text in done if text in held]
    assert min(taken_over) >= not_before + LEASE_S
    assert min(at for at, text in done if text not in held) < claimed_at + LEASE_S
    _assert_all_vectors(db, texts)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield str(tmp_path / "claims.db")
    else:
        pytest.importorskip("psycopg")
        with fresh_schema("claims") as (url, _schema):
            yield url


@pytest.mark.serial
def test_two_processes_embed_each_pending_record_once(db: str, tmp_path: Path) -> None:
    _two_processes_embed_each_record_once(db, tmp_path)


@pytest.mark.serial
def test_a_killed_process_s_claim_runs_out_and_another_embeds_its_records(
    db: str, tmp_path: Path
) -> None:
    _killed_holder_is_taken_over(db, tmp_path)


def ids(records: Sequence[MemoryRecord]) -> list[str]:
    return [r.id for r in records]


@pytest.mark.serial
def test_a_claim_hides_records_from_other_claimants_until_its_lease_runs_out(db: str) -> None:
    _fill(db, 5)
    store = open_store(db)
    try:
        assert ids(store.claim_vectors("a", limit=3, lease_s=1.0)) == ["m0", "m1", "m2"]
        assert ids(store.claim_vectors("b", limit=10, lease_s=1.0)) == ["m3", "m4"]
        assert store.claim_vectors("c", limit=10, lease_s=60.0) == []
        # A claimant gets its own claims again (a batch it failed to store).
        assert ids(store.claim_vectors("b", limit=10, lease_s=1.0)) == ["m3", "m4"]
        assert store.embedding_status().pending == 5  # claimed is still pending
        time.sleep(1.2)
        assert ids(store.claim_vectors("c", limit=10, lease_s=60.0)) == [f"m{i}" for i in range(5)]
        store.set_vectors("t", ["m0", "m1"], HashEmbedder().embed(["x", "y"]), "hash-bow")
        store.quarantine_vectors("t", ["m2"], "ValueError: bad")
        assert ids(store.pending_vectors(limit=10)) == ["m3", "m4"]
        assert store.claim_vectors("a", limit=10, lease_s=60.0) == []
        assert ids(store.claim_vectors("c", limit=10, lease_s=60.0)) == ["m3", "m4"]
    finally:
        store.close()


@pytest.mark.serial
def test_a_flush_without_a_worker_waits_for_records_another_process_claimed(db: str) -> None:
    """A CLI-like Memory (no background worker) on a store where another process holds
    claims (one that died in its forward pass): ``flush`` waits for them, takes them
    once the lease runs out, and says False while its timeout runs out first. It said
    True at once with every record still pending (a review)."""
    _fill(db, 6)
    other = open_store(db)
    try:
        assert len(other.claim_vectors("a-process-that-died", limit=10, lease_s=1.5)) == 6
    finally:
        other.close()
    with Memory(db, tenant="t", embedder=HashEmbedder(), background_embedding=False) as m:
        start = time.monotonic()
        assert m.flush(timeout=0.5) is False
        assert time.monotonic() - start >= 0.5
        assert m.embedding_status().pending == 6
        assert m.flush(others=False) is True  # nothing of its own to wait for
        assert m.flush(timeout=10) is True
        assert m.embedding_status().pending == 0


def _score(store: Store, text: str) -> float:
    """The cosine of ``m0``'s stored vector with ``text``'s (0.0 when it has none)."""
    flt = Filter(scope=Scope(tenant="t", user_id="u0"))
    hits = store.vector_search(flt, HashEmbedder().embed([text])[0], limit=5)
    return next((hit.score for hit in hits if hit.id == "m0"), 0.0)


class EditingEmbedder(HashEmbedder):
    """Embeds as the shipped HashEmbedder; on its first batch another store handle
    (another process, a user's edit) changes ``m0``'s text while the batch embeds."""

    def __init__(self, db: str, new_text: str) -> None:
        super().__init__()
        self.db = db
        self.new_text = new_text
        self.edited = False

    def embed(self, texts: Sequence[str]) -> Vectors:
        if not self.edited:
            self.edited = True
            other = open_store(self.db)
            try:
                other.update("t", "m0", Patch(text=self.new_text))
            finally:
                other.close()
        return super().embed(texts)


def test_a_text_change_while_claimed_is_embedded_again_with_the_new_text(db: str) -> None:
    old_text = _fill(db, 1)[0]
    new_text = "my car is a red bicycle with bells"
    store = open_store(db)
    try:
        embedder = EditingEmbedder(db, new_text)
        assert embed_pending(store, embedder, owner="w") == 1
        assert embedder.edited
        # The vector in hand described the old text: it was not stored, the record is
        # still pending, and the next batch embeds what the record now says.
        assert store.embedding_status().pending == 1
        assert _score(store, old_text) == 0.0
        assert embed_pending(store, embedder, owner="w") == 1
        assert store.embedding_status().pending == 0
        assert _score(store, new_text) > 0.99
        assert _score(store, old_text) < 0.5
    finally:
        store.close()


def test_a_holder_whose_lease_ran_out_writes_nothing(db: str) -> None:
    _fill(db, 1)
    store = open_store(db)
    try:
        assert ids(store.claim_vectors("late", limit=10, lease_s=0.3)) == ["m0"]
        time.sleep(0.5)
        assert ids(store.claim_vectors("next", limit=10, lease_s=60.0)) == ["m0"]
        new = HashEmbedder().embed(["the current text"])
        store.set_vectors("t", ["m0"], new, "hash-bow", owner="next")
        # The first holder's batch finishes late: its vector and its failure are dropped.
        store.set_vectors(
            "t", ["m0"], HashEmbedder().embed(["stale text"]), "hash-bow", owner="late"
        )
        store.quarantine_vectors("t", ["m0"], "TimeoutError: late", owner="late")
        status = store.embedding_status()
        assert (status.pending, list(status.quarantined)) == (0, [])
        assert _score(store, "the current text") > 0.99
    finally:
        store.close()


def _claims_while_embedding(
    db: str, lease_s: float, *, release_after: float, watch_s: float, until_taken: bool = False
) -> tuple[list[tuple[float, list[str]]], threading.Thread]:
    """One holder embeds ``m0..m2`` with ``lease_s`` leases and an embedder released
    after ``release_after`` s; another store handle (another process) tries to claim
    every 50 ms for ``watch_s`` s (``until_taken``: until its first claim that got
    records). Returns (seconds since the holder's claim, ids) of each claim that got
    records, and the holder's thread (joined)."""
    _fill(db, 3)
    holder_store, other = open_store(db), open_store(db)
    embedder = GatedEmbedder()
    holder = threading.Thread(
        target=embed_pending, args=(holder_store, embedder), kwargs={"lease_s": lease_s}
    )
    taken: list[tuple[float, list[str]]] = []
    try:
        holder.start()
        assert embedder.started.wait(timeout=30)
        start = time.monotonic()
        while (elapsed := time.monotonic() - start) < watch_s:
            if elapsed >= release_after:
                embedder.release.set()
            if got := ids(other.claim_vectors("other", limit=10, lease_s=60.0)):
                taken.append((elapsed, got))
                if until_taken:
                    break
            time.sleep(0.05)
        embedder.release.set()
        holder.join(timeout=30)
    finally:
        embedder.release.set()
        holder.join(timeout=30)
        holder_store.close()
        other.close()
    return taken, holder


@pytest.mark.serial
def test_a_live_holder_keeps_its_batch_past_its_lease(db: str) -> None:
    # Its embedding takes five leases; its claim is renewed meanwhile, so no other
    # process takes the batch (whose vectors would then void the holder's), and the
    # holder's vectors are stored.
    taken, _ = _claims_while_embedding(db, 0.3, release_after=1.5, watch_s=2.0)
    assert taken == []
    store = open_store(db)
    try:
        assert store.embedding_status().pending == 0
        assert _score(store, "claimed record 0 about topic0 and thing0") > 0.99
    finally:
        store.close()


@pytest.mark.serial
def test_a_hung_holder_loses_its_batch_after_the_longest_hold(db: str) -> None:
    # An embedder that never returns: renewals stop after MAX_HOLD_LEASES leases, and
    # another process takes the batch then, not before.
    lease_s = 0.2
    taken, _ = _claims_while_embedding(
        db, lease_s, release_after=5.0, watch_s=4.0, until_taken=True
    )
    assert taken, "the hung holder's batch was never released"
    at, got = taken[0]
    assert got == ["m0", "m1", "m2"]
    assert MAX_HOLD_LEASES * lease_s - 0.3 <= at <= MAX_HOLD_LEASES * lease_s + 1.0


@contextmanager
def _write_lock_held(db: str) -> Iterator[None]:
    """Another connection (another process: a forget, a purge, a big put) holds the
    SQLite write lock of ``db`` meanwhile."""
    con = sqlite3.connect(db, isolation_level=None)
    try:
        con.execute("BEGIN IMMEDIATE")
        yield
        con.execute("COMMIT")
    finally:
        con.close()


class BusyStoreEmbedder(HashEmbedder):
    """Embeds as the shipped HashEmbedder; during its first batch another connection
    (another process: a forget, a purge, a big put) takes the SQLite write lock and
    keeps it longer than the store's busy timeout."""

    def __init__(self, db: str, hold_s: float) -> None:
        super().__init__()
        self.db = db
        self.hold_s = hold_s
        self.holder: threading.Thread | None = None

    def embed(self, texts: Sequence[str]) -> Vectors:
        if self.holder is None:
            held = threading.Event()

            def hold() -> None:
                with _write_lock_held(self.db):
                    held.set()
                    time.sleep(self.hold_s)

            self.holder = threading.Thread(target=hold)
            self.holder.start()
            held.wait()
        return super().embed(texts)


@pytest.mark.serial
def test_a_busy_store_quarantines_no_record_and_the_batch_is_retried(tmp_path: Path) -> None:
    db = str(tmp_path / "busy.db")
    _fill(db, 3)
    store = SQLiteStore(db, busy_timeout_ms=200)
    try:
        embedder = BusyStoreEmbedder(db, hold_s=0.6)
        with pytest.raises(StoreError, match="busy"):
            embed_pending(store, embedder, owner="w")
        assert embedder.holder is not None
        embedder.holder.join()
        status = store.embedding_status()
        assert (status.pending, list(status.quarantined)) == (3, [])
        # Still this worker's claim: its next pass takes the same batch at once.
        assert embed_pending(store, embedder, owner="w") == 3
        assert store.embedding_status().pending == 0
        assert store.count_vectors() == 3
    finally:
        store.close()


def test_evicting_a_tenant_never_waits_for_another_process_s_claim(db: str) -> None:
    _fill(db, 1)
    other = open_store(db)  # another process, which claimed m0 and then hung or died
    assert ids(other.claim_vectors("dead", limit=10, lease_s=20.0)) == ["m0"]
    tenants = TenantMemories(open_store(db), HashEmbedder(), max_cached=1)
    try:
        tenants.get("a").add("a note of tenant a", user_id="ana")
        start = time.monotonic()
        tenants.get("b")  # evicts a on this request's thread
        tenants.get("a")  # evicts b
        assert time.monotonic() - start < 5
        # The server's shutdown flush stays bounded, and closing adds no wait of its own.
        start = time.monotonic()
        assert tenants.flush(0.3) is False
        tenants.close()
        assert time.monotonic() - start < 5
        assert other.embedding_status().pending >= 1  # m0 stays pending, durable
    finally:
        other.close()


def test_an_idle_worker_takes_over_a_dead_holder_s_records(db: str) -> None:
    texts = _fill(db, 2)
    other = open_store(db)
    assert ids(other.claim_vectors("dead", limit=10, lease_s=1.0)) == ["m0", "m1"]
    other.close()  # the holder dies; nothing notifies the survivor's worker
    store = open_store(db)
    worker = EmbeddingWorker(store, HashEmbedder(), linger=0.0, lease_s=1.0)
    try:
        deadline = time.monotonic() + 10
        while store.embedding_status().pending and time.monotonic() < deadline:
            time.sleep(0.1)
        assert store.embedding_status().pending == 0
        assert _score(store, texts[0]) > 0.99
    finally:
        worker.close()
        store.close()


def test_nothing_to_claim_takes_no_write_lock(tmp_path: Path) -> None:
    # An inline flush() with nothing pending, while another process holds the write
    # lock longer than the busy timeout, answers at once instead of failing "busy".
    db = str(tmp_path / "idle.db")
    _fill(db, 0)
    store = SQLiteStore(db, busy_timeout_ms=100)
    try:
        with _write_lock_held(db):
            assert embed_pending(store, HashEmbedder(), owner="w") == 0
    finally:
        store.close()


def test_queue_rows_without_a_record_are_never_claimed(tmp_path: Path) -> None:
    db = str(tmp_path / "orphans.db")
    _fill(db, 1)
    other = sqlite3.connect(db, isolation_level=None)  # foreign SQL leaves two orphans
    other.execute("INSERT INTO pending_vectors (mem_rowid) VALUES (-2), (-1)")
    other.close()
    store = SQLiteStore(db)
    try:
        assert embed_pending(store, HashEmbedder(), batch_size=2, owner="w") == 1
        assert store.embedding_status().pending == 0
        assert store.count_vectors() == 1
    finally:
        store.close()
