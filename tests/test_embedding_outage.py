"""A short embedder outage leaves records pending, never quarantined for good.

Why: an application with its own ``Embedder`` (a remote API answering 503 for a few
seconds) had every record added in that window quarantined, and only a text update
retried a quarantined record, so their vectors were lost for good while ``flush()``
answered True. One bad record among good ones must still be quarantined and must
not stall the others (the reason quarantine exists).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

from contextos.embed import Vectors
from contextos.memory import Memory
from contextos.memory.embedding_worker import PROBE_TEXT
from contextos.store import open_store
from contextos.testing.embedders import HashEmbedder
from server_support import database

BOTH = pytest.mark.parametrize("kind", ["sqlite", "postgres"])


class OutageEmbedder(HashEmbedder):
    """A remote embedding service: down (every call raises) while ``down`` is set, and,
    whether up or not, refuses any text holding ``poison`` (a truly bad record).
    ``down_after`` takes it down after that many more successful calls (an outage that
    starts in the middle of a batch); the calls numbered in ``fail_calls`` (from 1)
    fail alone (a dropped connection)."""

    def __init__(self, *, down: bool = False, poison: str | None = None) -> None:
        super().__init__()
        self.down = down
        self.poison = poison
        self.down_after: int | None = None
        self.fail_calls: set[int] = set()
        self.tries = 0
        self.probes = 0
        self._lock = threading.Lock()

    def embed(self, texts: Sequence[str]) -> Vectors:
        with self._lock:
            self.tries += 1
            self.probes += list(texts) == [PROBE_TEXT]
            if self.down_after is not None:
                if self.down_after == 0:
                    self.down, self.down_after = True, None
                else:
                    self.down_after -= 1
            if self.down or self.tries in self.fail_calls:
                raise ConnectionError("embedding service unavailable (503)")
        if self.poison is not None and any(self.poison in t for t in texts):
            raise ValueError(f"cannot embed a text containing {self.poison!r}")
        return super().embed(texts)


@contextmanager
def open_memory(
    kind: str, tmp_path: Path, embedder: OutageEmbedder, *, background: bool = True
) -> Iterator[Memory]:
    """A Memory with its own worker (or inline embedding) on a real SQLite file or a
    fresh PostgreSQL schema."""
    with database(kind, tmp_path) as db:
        m = Memory(store=open_store(db), embedder=embedder, background_embedding=background)
        try:
            yield m
        finally:
            m.close()  # closes its store too


def status_of(m: Memory) -> tuple[int, list[str]]:
    """How many records wait for a vector, and the ids of those quarantined."""
    status = m.embedding_status()
    return status.pending, [q.id for q in status.quarantined]


def dense_rank(m: Memory, query: str, text: str, user: str) -> int | None:
    ranks = {h.record.text: h.dense_rank for h in m.search(query, user_id=user, limit=20)}
    return ranks.get(text)


NOTES = [
    "I moved to Lisbon in 2021",
    "my sister Ines plays the cello",
    "we adopted a grey cat named Pimenta",
]


@BOTH
def test_records_added_during_an_outage_are_embedded_once_it_ends(
    kind: str, tmp_path: Path
) -> None:
    embedder = OutageEmbedder(down=True)
    with open_memory(kind, tmp_path, embedder) as m:
        for note in NOTES:
            m.add(note, user_id="ana")
        assert m.flush(timeout=1.5) is False  # nothing embedded yet: not done
        assert status_of(m) == (len(NOTES), [])
        embedder.down = False
        assert m.flush(timeout=60)
        assert status_of(m) == (0, [])
        # Found by meaning: each note's vector is there.
        assert dense_rank(m, "which city did she move to", NOTES[0], "ana") is not None
        assert dense_rank(m, "who plays the cello", NOTES[1], "ana") is not None
        assert dense_rank(m, "the cat named Pimenta", NOTES[2], "ana") is not None


@pytest.mark.serial
def test_an_outage_is_retried_with_a_growing_wait_not_on_every_add(tmp_path: Path) -> None:
    embedder = OutageEmbedder(down=True)
    with open_memory("sqlite", tmp_path, embedder) as m:
        start = time.monotonic()
        n = 0
        while time.monotonic() - start < 2.5:  # an app adding a note every 50 ms
            m.add(f"note number {n} about the garden", user_id="ana")
            n += 1
            time.sleep(0.05)
        # Tries at about 0 s, 1 s and 3 s (the wait doubles), two calls each (the
        # batch, then the probe): adds do not cut the wait short.
        assert embedder.tries <= 6, f"{embedder.tries} calls in 2.5 s of outage ({n} adds)"
        assert m.embedding_status().quarantined == ()
        embedder.down = False
        assert m.flush(timeout=60)
        assert m.embedding_status().pending == 0


@pytest.mark.serial
def test_close_during_an_outage_does_not_wait_for_the_retry(tmp_path: Path) -> None:
    embedder = OutageEmbedder(down=True)
    db = tmp_path / "m.db"
    m = Memory(db, embedder=embedder)
    m.add("a note while the service is down", user_id="ana")
    for _ in range(3):  # let the wait grow (1 s, 2 s, 4 s)
        assert m.flush(timeout=1.5) is False
    start = time.monotonic()
    m.close()
    assert time.monotonic() - start < 1.0
    with Memory(db, embedder=HashEmbedder(), background_embedding=False) as later:
        assert later.embedding_status().pending == 1  # left for the next process


@BOTH
def test_inline_embedding_keeps_records_pending_through_an_outage(
    kind: str, tmp_path: Path
) -> None:
    embedder = OutageEmbedder(down=True)
    with open_memory(kind, tmp_path, embedder, background=False) as m:
        m.add(NOTES[0], user_id="ana")  # no error: the record is stored, not embedded
        assert m.flush() is False
        assert m.embedding_status().pending == 1
        embedder.down = False
        # At once, not after the claim's lease: the failed try released it.
        assert m.flush() is True
        assert status_of(m) == (0, [])
        assert dense_rank(m, "which city did she move to", NOTES[0], "ana") is not None


@BOTH
def test_a_bad_record_among_good_ones_is_quarantined_after_an_outage(
    kind: str, tmp_path: Path
) -> None:
    embedder = OutageEmbedder(down=True, poison="POISON")
    with open_memory(kind, tmp_path, embedder) as m:
        [bad] = m.add("a POISON text", user_id="ana")
        good = [m.add(f"good memory {n} of tenant user", user_id=f"u{n}")[0] for n in range(8)]
        assert m.flush(timeout=1.5) is False
        assert m.embedding_status().quarantined == ()  # down: the bad one is not judged
        embedder.down = False
        assert m.flush(timeout=60)
        status = m.embedding_status()
        assert status.pending == 0
        assert [q.id for q in status.quarantined] == [bad.id]
        assert "POISON" in status.quarantined[0].error
        for n, rec in enumerate(good):
            assert m.search(rec.text, user_id=f"u{n}")[0].dense_rank == 1


def test_a_bad_record_alone_is_quarantined_at_its_first_try(tmp_path: Path) -> None:
    embedder = OutageEmbedder(poison="POISON")
    with open_memory("sqlite", tmp_path, embedder) as m:
        [bad] = m.add("a POISON text on its own", user_id="ana")
        assert m.flush(timeout=30)
        assert status_of(m) == (0, [bad.id])
        # The record, the probe that shows the embedder up, the record once more.
        assert embedder.tries == 3


@BOTH
def test_an_outage_that_starts_mid_batch_quarantines_none_of_the_rest(
    kind: str, tmp_path: Path
) -> None:
    embedder = OutageEmbedder(down=True, poison="POISON")
    with open_memory(kind, tmp_path, embedder, background=False) as m:
        [bad] = m.add("a POISON text", user_id="ana")
        good = [m.add(note, user_id="ana")[0] for note in NOTES]
        assert status_of(m) == (4, [])
        # Up for five calls: the batch (fails on the poison), the poison alone, the
        # probe (up), the poison again (bad: quarantined), the first good note; then
        # down again.
        embedder.down, embedder.down_after = False, 5
        assert m.flush() is False
        assert status_of(m) == (2, [bad.id])
        embedder.down = False
        assert m.flush() is True
        assert status_of(m) == (0, [bad.id])
        assert dense_rank(m, "who plays the cello", good[1].text, "ana") is not None


def test_a_failure_of_the_moment_quarantines_no_record(tmp_path: Path) -> None:
    embedder = OutageEmbedder(down=True)
    with open_memory("sqlite", tmp_path, embedder, background=False) as m:
        for note in NOTES:
            m.add(note, user_id="ana")
        # Up, but the connection drops twice: the batch and the first note alone fail;
        # the probe answers, and the note's second try embeds it.
        embedder.down, embedder.fail_calls = False, {embedder.tries + 1, embedder.tries + 2}
        assert m.flush() is True
        assert status_of(m) == (0, [])
        assert dense_rank(m, "which city did she move to", NOTES[0], "ana") is not None


class BinaryBodyEmbedder(HashEmbedder):
    """A remote embedder whose error for a text holding ``poison`` quotes the service's
    binary answer, NUL characters included."""

    def embed(self, texts: Sequence[str]) -> Vectors:
        if any("POISON" in t for t in texts):
            raise RuntimeError("upstream said: bad input\x00\x00 (binary body)")
        return super().embed(texts)


@BOTH
def test_an_error_quoting_nul_quarantines_its_record_and_embedding_goes_on(
    kind: str, tmp_path: Path
) -> None:
    # PostgreSQL cannot store NUL: quarantining the record with that error failed, the
    # record stayed claimed at the head of the queue with every record claimed beside
    # it, and no record of any tenant was embedded again.
    with database(kind, tmp_path) as db:
        a = Memory(store=open_store(db), tenant="a", embedder=BinaryBodyEmbedder())
        b = Memory(store=open_store(db), tenant="b", embedder=BinaryBodyEmbedder())
        try:
            a.add("before the poison", user_id="ana")
            [bad] = a.add("a POISON pill", user_id="ana")
            others = [b.add(f"other tenant note {n}", user_id="bo")[0] for n in range(10)]
            assert a.flush(timeout=20) and b.flush(timeout=20)
            assert status_of(b) == (0, [])
            assert status_of(a) == (0, [bad.id])
            # The same text on both stores, its NULs written out.
            error = a.embedding_status().quarantined[0].error
            assert error == "RuntimeError: upstream said: bad input\\x00\\x00 (binary body)"
            hits = b.search(others[3].text, user_id="bo")
            assert hits[0].record.id == others[3].id and hits[0].dense_rank == 1
        finally:
            a.close()
            b.close()


class NulModelEmbedder(HashEmbedder):
    model_id = "hash-bow\x00v2"


@BOTH
def test_an_embedder_whose_model_id_holds_nul_stores_its_vectors(kind: str, tmp_path: Path) -> None:
    # Its vectors are stored under the model id with the NUL written out: PostgreSQL
    # refused the name (the worker's requeue, then every vector write), so nothing was
    # ever embedded there.
    with (
        database(kind, tmp_path) as db,
        Memory(store=open_store(db), embedder=NulModelEmbedder()) as m,
    ):
        notes = [m.add(note, user_id="ana")[0] for note in NOTES]
        assert m.flush(timeout=20)
        assert status_of(m) == (0, [])
        hits = m.search(notes[1].text, user_id="ana")
        assert hits[0].record.id == notes[1].id and hits[0].dense_rank == 1
