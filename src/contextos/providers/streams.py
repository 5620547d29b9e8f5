"""Watch an SDK stream without changing what the caller holds.

The wrapped call must hand back the SDK's own ``Stream`` object (callers
check its type, use it as a context manager, read ``.response``). Both SDKs
iterate through the stream's ``_iterator``; we swap that iterator for a
generator that shows each event to an accumulator, maps SDK errors to
contextos errors, and reports once when the stream ends -- read to the end
(``complete=True``) or closed early with ``close()`` or a ``with`` block
(``complete=False``, usage as far as it got). Should an SDK release drop
``_iterator``, the stream is wrapped in a thin proxy instead, so the wrapper
degrades rather than breaks.

A stream the caller abandons (``break`` out of the loop, no ``close()``) would
report only when the garbage collector finds it -- the SDK's ``Stream`` holds
itself through its own generator, a cycle refcounting cannot free -- so its
reply would land in the session log at some later, random point. The
:class:`OpenStreams` of a wrapped client therefore reports every stream still
open, as incomplete, when the same thread's next managed call starts or when it
flushes the client: by then the caller has moved on from it.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Generator, Iterator
from typing import Any

from .base import StreamAccumulator
from .errors import mapped_errors


def _observed(
    inner: Iterator[Any],
    acc: StreamAccumulator,
    done: Callable[[bool], None],
    provider: str,
    hide: Callable[[Any], bool] | None,
) -> Generator[Any, None, None]:
    complete = False
    try:
        with mapped_errors(provider):
            for event in inner:
                acc.feed(event)
                if hide is not None and hide(event):
                    continue
                yield event
        complete = True
    finally:
        done(complete)


def _once(func: Callable[[bool], None]) -> Callable[[bool], None]:
    called = False

    def wrapper(complete: bool) -> None:
        nonlocal called
        if not called:
            called = True
            func(complete)

    return wrapper


class OpenStreams:
    """The streams of one wrapped client that have not reported yet (thread-safe).

    Each is kept with the thread that opened it, and :meth:`finish` reports only
    the calling thread's: one client shared by threads may have another thread's
    stream still being read.
    """

    def __init__(self) -> None:
        self._open: dict[int, tuple[int, Callable[[bool], None]]] = {}
        self._ids = itertools.count()
        self._lock = threading.Lock()

    def track(self, done: Callable[[bool], None]) -> Callable[[bool], None]:
        """``done``, wrapped to leave this set when it is called (at most once)."""
        key = next(self._ids)

        def report(complete: bool) -> None:
            with self._lock:
                if self._open.pop(key, None) is None:
                    return  # reported already
            done(complete)

        with self._lock:
            self._open[key] = (threading.get_ident(), report)
        return report

    def finish(self) -> None:
        """Report every stream this thread opened and left open as incomplete, oldest first."""
        me = threading.get_ident()
        with self._lock:
            pending = [report for thread, report in self._open.values() if thread == me]
        for report in pending:
            report(False)


class _StreamProxy:
    """Fallback: iterate through the observer, delegate everything else."""

    def __init__(self, stream: Any, iterator: Iterator[Any]) -> None:
        self._stream = stream
        self._iterator = iterator

    def __iter__(self) -> Iterator[Any]:
        return self._iterator

    def __next__(self) -> Any:
        return next(self._iterator)

    def __enter__(self) -> _StreamProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stream.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def instrument(
    stream: Any,
    acc: StreamAccumulator,
    done: Callable[[bool], None],
    *,
    provider: str,
    hide: Callable[[Any], bool] | None = None,
    open_streams: OpenStreams | None = None,
) -> Any:
    """Return ``stream`` (or a proxy of it) with its events observed; see the module docstring.

    ``done`` is called once, when the stream ends, is closed, or (with
    ``open_streams``) is finished by :meth:`OpenStreams.finish`.
    """
    done = _once(done) if open_streams is None else open_streams.track(done)
    inner = getattr(stream, "_iterator", None)
    if isinstance(inner, Iterator) and hasattr(stream, "__dict__"):
        observed = _observed(inner, acc, done, provider, hide)
        sdk_close = stream.close

        def close() -> None:
            observed.close()  # reports an early close now, not at garbage collection
            done(False)  # (a stream closed before its first event)
            sdk_close()

        stream.__dict__["_iterator"] = observed
        stream.__dict__["close"] = close
        return stream
    return _StreamProxy(stream, _observed(iter(stream), acc, done, provider, hide))
