"""A SIGTERM stops a benchmark whose SIGTERM exception Python swallowed.

``bench/sigterm.py`` raises the signal as KeyboardInterrupt wherever the main thread is;
in a fresh clone's suite (s56) that was a ``gc.callbacks`` hook, whose exceptions Python
ignores, and ``bench wrap`` ran on until it was killed. A real signal here."""

from __future__ import annotations

import signal
import threading
import time

import pytest


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_sigterm_whose_exception_was_swallowed_still_stops_a_benchmark_loop() -> None:
    """A SIGTERM's exception raised where Python swallows exceptions (here ``__del__``; in
    a fresh clone's suite a ``gc.callbacks`` hook) left ``bench wrap`` running on, every
    later SIGTERM ignored, until it was killed 90 s later. The benchmark's loop asks at
    each step (``stop_if_terminated``)."""
    import os

    from contextos.bench.sigterm import Terminated, sigterm_unwinds, stop_if_terminated

    if threading.current_thread() is not threading.main_thread():
        pytest.skip("a signal handler can only be set in the main thread")

    class Swallows:
        def __del__(self) -> None:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.2)  # the handler runs here, and its exception is swallowed

    with sigterm_unwinds() as terminated:
        stop_if_terminated()  # nothing came yet
        Swallows()  # collected at once
        assert terminated()
        with pytest.raises(Terminated):
            stop_if_terminated()
