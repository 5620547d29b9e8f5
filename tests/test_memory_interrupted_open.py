"""A ``Memory`` interrupted while it opens leaves no embedding worker running.

Ctrl-C, or a SIGTERM that a benchmark raises as KeyboardInterrupt (bench/sigterm.py),
can land anywhere in ``Memory.__init__``. Landing after the worker's thread started, the
half-built Memory was never returned to be closed: its worker went on reading a store
whose temporary folder the benchmark then removed, and printed "disk I/O error" after
"terminated" (a fresh clone's suite, s56). A real signal here, at every point of the
open in turn."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from types import FrameType

import pytest

from contextos.memory import Memory
from contextos.testing.embedders import HashEmbedder

#: Whether the next SIGALRM interrupts: only while a Memory opens (one that lands after
#: it, once the timer is off, is not this test's).
_ARMED = [False]


def _interrupt(signum: int, frame: FrameType | None) -> None:
    if _ARMED[0]:
        _ARMED[0] = False
        raise KeyboardInterrupt


def _workers() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "contextos-embed" and t.is_alive()}


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs setitimer (POSIX)")
# A signal can also land in a weakref callback the collector runs meanwhile, which Python
# reports as "Exception ignored": a property of asynchronous signals, not of the open.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_an_open_interrupted_at_any_point_leaves_no_worker_running(tmp_path: Path) -> None:
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("a signal handler can only be set in the main thread")
    db = tmp_path / "m.db"
    Memory(db, embedder=HashEmbedder()).close()  # the schema made once
    began = time.perf_counter()
    Memory(db, embedder=HashEmbedder()).close()
    opening = time.perf_counter() - began
    previous = signal.signal(signal.SIGALRM, _interrupt)
    interrupted, left = 0, []
    try:
        for step in range(200):
            before = _workers()
            try:
                _ARMED[0] = True
                signal.setitimer(signal.ITIMER_REAL, max(opening * step / 200, 1e-6))
                memory = Memory(db, embedder=HashEmbedder())
                _ARMED[0] = False
            except KeyboardInterrupt:
                interrupted += 1
            else:
                memory.close()
            finally:
                _ARMED[0] = False
                signal.setitimer(signal.ITIMER_REAL, 0)
            time.sleep(0.005)  # a thread asked to stop has ended by now
            left += [t for t in _workers() - before if t.is_alive()]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert interrupted >= 20  # the signal did land inside the open
    assert not left, f"{len(left)} workers of interrupted opens still running"
    with Memory(db, embedder=HashEmbedder()) as memory:  # the file is whole
        memory.add("still here", user_id="ana")
        assert memory.get_all(user_id="ana")[0].text == "still here"
