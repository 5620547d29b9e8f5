"""A user's embedder that hangs (a remote call with no timeout) costs ``close()`` its
30 s once, and nothing after.

Why: ``close()`` gave up on the worker after 30 s but left it among the live workers, so
the exit waited 30 s more for it (``_close_live_workers``); and the process's claim
renewer kept renewing the hung batch's claim on the closed store, logging a warning every
few seconds (a review).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from contextos import Memory
from contextos.embed import Vectors
from contextos.memory.embedding_worker import embed_pending
from contextos.store.sqlite import SQLiteStore
from contextos.testing.embedders import HashEmbedder
from store_support import GatedEmbedder

TEXTS = ["carol plays the violin", "alice likes green tea"]


class Down(HashEmbedder):
    """An embedding service that is down: what is added stays pending."""

    def embed(self, texts: Sequence[str]) -> Vectors:
        raise ConnectionError("embedding service unavailable (503)")


@pytest.mark.serial
def test_the_claim_of_a_hung_batch_is_not_renewed_once_its_store_is_closed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = SQLiteStore(tmp_path / "m.db")
    Memory(store=store, embedder=Down(), background_embedding=False).add(TEXTS, user_id="u")
    assert store.embedding_status().pending == len(TEXTS)
    hanging = GatedEmbedder()
    failed: list[BaseException] = []

    def embed() -> None:
        try:
            embed_pending(store, hanging, lease_s=0.3)  # renewed every 0.1 s
        except BaseException as exc:  # noqa: BLE001 - the closed store's, looked at below
            failed.append(exc)

    thread = threading.Thread(target=embed)
    thread.start()
    try:
        assert hanging.started.wait(10)
        time.sleep(0.3)  # renewed while the store is open
        store.close()
        time.sleep(0.6)  # six renewals' worth once it is closed
    finally:
        hanging.release.set()
        thread.join(10)
    renewals = [r for r in caplog.records if "could not extend an embedding claim" in r.message]
    assert renewals == []
    assert len(failed) == 1  # storing the vectors, after the store was closed


#: Seconds ``close()`` waits for the hung batch here (``close_timeout``; 30 s by
#: default): the exit waiting for it again would take as long, far past the bound.
CLOSE_S = 6.0

HUNG_SCRIPT = """
import sys, threading, time
from contextos import Memory
from contextos.memory.embedding_worker import EmbeddingWorker
from contextos.store import open_store
from contextos.testing.embedders import HashEmbedder

called = threading.Event()

class Hanging(HashEmbedder):
    def embed(self, texts):
        called.set()
        threading.Event().wait()  # a remote call with no timeout

store, embedder = open_store(sys.argv[1]), Hanging()
worker = EmbeddingWorker(store, embedder, close_timeout=float(sys.argv[2]))
m = Memory(store=store, embedder=embedder, worker=worker)
m.add("carol plays the violin", user_id="u")
assert called.wait(30)
started = time.monotonic()
worker.close()  # as Memory.close() closes the worker it owns, then its store
m.close()
print(started, time.monotonic(), flush=True)
"""


@pytest.mark.serial
@pytest.mark.timeout(120)
def test_the_exit_does_not_wait_again_for_a_worker_close_gave_up_on(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(HUNG_SCRIPT), str(tmp_path / "m.db"), str(CLOSE_S)],
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    exited = time.monotonic()
    assert done.returncode == 0, done.stderr
    started, closed = map(float, done.stdout.split()[-2:])
    assert closed - started >= CLOSE_S - 0.5  # close() gave up on the hung batch
    assert exited - closed < CLOSE_S - 2  # it waited CLOSE_S more before
    assert "could not extend an embedding claim" not in done.stderr
