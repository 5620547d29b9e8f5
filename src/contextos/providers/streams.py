"""Watch an SDK stream without changing what the caller holds.

The wrapped call must hand back the SDK's own ``Stream`` object (callers
check its type, use it as a context manager, read ``.response``). Both SDKs
iterate through the stream's ``_iterator``; we swap that iterator for a
generator that shows each event to an accumulator, maps SDK errors to
contextos errors, and reports once when the stream ends -- read to the end,
cut by an error, or closed with ``close()`` or a ``with`` block. Whether the
reply came whole is read from the protocol, not from how the iteration ended
(the accumulator's ``finished``: Anthropic's ``message_stop`` or a
``message_delta`` with its ``stop_reason``, OpenAI's ``finish_reason`` on
choice 0): a body cut without an error is not whole, and a caller that stops
reading at the end marker has the whole reply. Should an SDK release drop
``_iterator``, the stream is wrapped in a thin proxy instead, so the wrapper
degrades rather than breaks.

A stream the caller abandons (``break`` out of the loop, no ``close()``) is
closed when the caller drops it: by refcounting, since the instrumentation adds
no reference cycle (the ``close`` override holds the stream weakly), or by the
garbage collector when the SDK's stream holds itself through its own generator
(openai's ``Stream`` does). The collector may run on any thread, inside any
lock (the commit's own included). So that close only *enqueues* the stream (no
lock, no I/O); :meth:`OpenStreams.drain`, run at the client's next call and at
``flush()``, reports it. :meth:`OpenStreams.finish` also reports every stream
the caller left open when that caller's next managed call starts: by then it
has moved on from it, so its response is closed too (the caller may still hold
the object; its connection should not stay taken). "The caller" is whoever read
the stream last (or opened it, before its first event): a thread, or an asyncio
task on one -- a stream opened on one thread and read on another (a web
framework's threadpool), or read by one task while another calls, is still
being read. A reader whose thread has ended, or whose task is done, reads no
more: its streams are reported by any caller's next call and by ``flush()``.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import weakref
from collections import deque
from collections.abc import Callable, Generator, Iterator
from typing import Any

from .base import StreamAccumulator
from .errors import mapped_errors

Report = Callable[[], None]


def _nothing() -> None:
    """A :data:`Report` that does nothing (a stream with no response of its own to close)."""


def _current_task() -> asyncio.Task[Any] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:  # no event loop running in this thread
        return None


class Reader:
    """Who reads a stream: a thread, and the asyncio task running on it (if any).

    ``key`` says whether two readers are the same caller; :attr:`gone` whether this
    one can read no more (a stream it left is abandoned, whoever calls next). The
    thread is held, the task only weakly (a done task must not be kept alive).
    """

    __slots__ = ("key", "_task", "_thread")

    def __init__(self) -> None:
        task = _current_task()
        self.key = (threading.get_ident(), id(task) if task is not None else 0)
        self._thread = threading.current_thread()
        self._task = weakref.ref(task) if task is not None else None

    @property
    def gone(self) -> bool:
        """True once its thread has ended or its task is done (or collected)."""
        if not self._thread.is_alive():
            return True
        if self._task is None:
            return False
        task = self._task()
        return task is None or task.done()


def _reader(last: Reader | None = None) -> Reader:
    """Who is reading now; ``last`` itself when it is still the same caller (an event
    loop reads many events: one comparison each, no new object)."""
    if last is not None:
        task = _current_task()
        if last.key == (threading.get_ident(), id(task) if task is not None else 0):
            return last
    return Reader()


def _read_ahead(inner: Iterator[Any], acc: StreamAccumulator) -> Iterator[Any]:
    """``inner``'s events, each fed to ``acc`` before it is handed on.

    While the accumulator is ``holding`` (OpenAI: choice 0 just finished and its
    usage chunk, sent right after, has not come) the next event is read before
    the held one is handed on, so a caller that stops at ``finish_reason`` still
    gets the call's usage recorded.
    """
    held: list[Any] = []
    for event in inner:
        acc.feed(event)
        held.append(event)
        if not getattr(acc, "holding", False):
            out, held = held, []
            yield from out
    yield from held


def _observed(
    inner: Iterator[Any],
    acc: StreamAccumulator,
    done: Report,
    abandoned: Report,
    provider: str,
    hide: Callable[[Any], bool] | None,
    reader: list[Reader],
) -> Generator[Any, None, None]:
    """The caller's events; ``done`` when the stream ends or fails, ``abandoned`` when the
    generator is closed (``close()``, or the garbage collector: so only an enqueue).
    ``reader[0]`` is kept as whoever asked for the latest event."""
    try:
        with mapped_errors(provider):
            for event in _read_ahead(inner, acc):
                reader[0] = _reader(reader[0])
                if hide is None or not hide(event):
                    yield event
    except GeneratorExit:
        abandoned()
        raise
    except BaseException:
        done()
        raise
    done()


class OpenStreams:
    """The streams of one wrapped client that have not reported yet (thread-safe).

    Each is kept with its latest reader, and :meth:`finish` reports only the
    caller's: one client shared by threads or tasks may have another's stream
    still being read. Streams closed by the garbage collector wait in a
    lock-free queue for :meth:`drain`.
    """

    def __init__(self) -> None:
        self._open: dict[int, tuple[list[Reader], Report, Report]] = {}
        self._abandoned: deque[int] = deque()
        self._ids = itertools.count()
        self._lock = threading.Lock()

    def track(
        self, done: Report, release: Report | None = None
    ) -> tuple[Report, Report, list[Reader]]:
        """(report, abandon, reader) for a new stream: ``report`` calls ``done`` once and
        leaves this set; ``abandon`` only queues the stream for :meth:`drain` (safe
        anywhere); ``reader[0]``, its latest reader, starts as the caller opening it.
        ``release`` closes the stream's response; :meth:`finish` calls it after
        reporting a stream its caller left open."""
        key = next(self._ids)
        reader = [_reader()]

        def report() -> None:
            with self._lock:
                if self._open.pop(key, None) is None:
                    return  # reported already
            done()

        def abandon() -> None:
            self._abandoned.append(key)  # atomic: no lock, the collector may hold any

        with self._lock:
            self._open[key] = (reader, report, release or _nothing)
        return report, abandon, reader

    @property
    def abandoned(self) -> bool:
        """True while a stream waits in the queue for :meth:`drain`."""
        return bool(self._abandoned)

    def drain(self) -> None:
        """Report the streams the garbage collector (or a close) abandoned, oldest first."""
        while True:
            try:
                key = self._abandoned.popleft()
            except IndexError:  # empty (another thread may have taken the last one)
                return
            with self._lock:
                entry = self._open.get(key)
            if entry is not None:
                entry[1]()

    def finish(self) -> None:
        """:meth:`drain`, then report every stream the caller (this thread, or this
        asyncio task) read last, or opened and never read, and left open -- and every
        stream whose last reader is gone (its thread ended: a worker that ``break`` s out
        and returns) -- and close their responses: nobody will read them on."""
        self.drain()
        me = _reader().key
        with self._lock:
            pending = [
                (report, release)
                for reader, report, release in self._open.values()
                if reader[0].key == me or reader[0].gone
            ]
        for report, release in pending:
            report()
            release()


class _StreamProxy:
    """Fallback: iterate through the observer, delegate everything else."""

    def __init__(self, stream: Any, iterator: Generator[Any, None, None], done: Report) -> None:
        self._stream = stream
        self._iterator = iterator
        self._done = done

    def __iter__(self) -> Iterator[Any]:
        return self._iterator

    def __next__(self) -> Any:
        return next(self._iterator)

    def __enter__(self) -> _StreamProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._iterator.close()
        self._done()
        self._stream.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def instrument(
    stream: Any,
    acc: StreamAccumulator,
    done: Report,
    *,
    provider: str,
    open_streams: OpenStreams,
    hide: Callable[[Any], bool] | None = None,
) -> Any:
    """Return ``stream`` (or a proxy of it) with its events observed; see the module docstring.

    ``done`` is called once: when the stream ends or fails, when the caller closes it,
    or, for a stream left to the garbage collector or left open, at ``open_streams``'
    next :meth:`~OpenStreams.drain` or :meth:`~OpenStreams.finish`.
    """
    release = _closer(stream)
    report, abandon, reader = open_streams.track(done, release)
    inner = getattr(stream, "_iterator", None)
    if isinstance(inner, Iterator) and hasattr(stream, "__dict__"):
        observed = _observed(inner, acc, report, abandon, provider, hide, reader)
        # Strongly (a cycle the collector frees) only where a weak reference cannot be had.
        sdk_close = release or stream.close

        def close() -> None:
            observed.close()
            report()  # an explicit close reports now, not at the next call
            sdk_close()

        stream.__dict__["_iterator"] = observed
        stream.__dict__["close"] = close
        return stream
    observed = _observed(iter(stream), acc, report, abandon, provider, hide, reader)
    return _StreamProxy(stream, observed, report)


def _closer(stream: Any) -> Report | None:
    """The SDK's own ``close`` of ``stream`` (closes its response), holding it weakly;
    None when ``stream`` has no ``close`` or cannot be weakly referenced.

    Why weakly: this closure is put in the stream's own ``__dict__`` (the ``close``
    override) and kept by :class:`OpenStreams` until the stream reports; a strong
    reference (the bound method ``stream.close``) would make a cycle, or keep the
    stream alive from the open set, and a stream the caller drops would hold its HTTP
    connection until the garbage collector ran -- or for ever -- where the bare SDK
    frees it at once.
    """
    sdk_close = getattr(type(stream), "close", None)
    if sdk_close is None:
        return None
    try:
        ref = weakref.ref(stream)
    except TypeError:  # a class without __weakref__
        return None

    def close() -> None:
        target = ref()
        if target is not None:
            sdk_close(target)

    return close
