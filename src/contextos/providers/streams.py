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
(openai's ``Stream`` does). A stream dropped before its first event has no
generator frame to close, so a ``weakref.finalize`` on it does the same. The
collector may run on any thread, inside any lock (the commit's own included). So
that close only *enqueues* the stream (no lock, no I/O); :meth:`OpenStreams.drain`,
run at the client's next call and at ``flush()``, reports it. The same holds for a
stream the app *closes* from inside the collector: its ``with`` block or ``finally:
stream.close()`` in an app generator that sits in a reference cycle and is dropped.
Such a close (the instrumented ``close``, the wrapper's helper ``__exit__``) still
closes the response, but while this thread runs a collection (a ``gc.callbacks``
hook marks it, :func:`collecting`) a report only enqueues, like an abandon.

:meth:`OpenStreams.finish` also reports a stream the caller left open when that
caller's next call starts (managed or pass-through): by then it has moved on from
it, so its response is closed too (the caller may still hold the object; its
connection should not stay taken). It does so only for a stream that one caller alone opened
and read -- a thread, an asyncio task on one, and the ``contextvars`` context it
runs in. Why the context: a thread pool that runs each job in a copy of its
submitter's context (anyio's, which Starlette runs sync endpoints and a
``StreamingResponse``'s iterator on; ``asyncio.to_thread``) hands the same worker
thread to one request's ``next()`` and, between two of them, to another request's
call; by thread alone that call looked like the stream's reader moving on, and
closed the stream mid-read. Each such job is a caller of its own, so a stream
read that way has several readers, and a stream read by anyone but its opener is
left to its end, ``close()`` or the garbage collector (neither a call nor
``flush()`` reports it): whoever calls next cannot tell whether it is still being
read. A caller that opened and alone read a stream and is gone (its thread ended,
its task is done) reads no more: its streams are reported by any caller's next
call and by ``flush()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import threading
import weakref
from collections import deque
from collections.abc import Callable, Generator, Iterator, Mapping
from contextvars import ContextVar
from typing import Any

from .base import StreamAccumulator
from .errors import mapped_errors

Report = Callable[[], None]


def _nothing() -> None:
    """A :data:`Report` that does nothing (a stream with no response of its own to close)."""


#: The threads running a garbage collection now (see :func:`collecting`).
_COLLECTING: set[int] = set()


def _collection_phase(phase: str, info: Mapping[str, int]) -> None:
    """``gc.callbacks`` hook: note which thread is inside a collection."""
    if phase == "start":
        _COLLECTING.add(threading.get_ident())
    else:
        _COLLECTING.discard(threading.get_ident())


gc.callbacks.append(_collection_phase)


def collecting() -> bool:
    """True while this thread runs a garbage collection (its finalisers included).

    Why: a stream closed there -- by the SDK's own cycle, or by an app generator's
    ``with`` block or ``finally: stream.close()`` finalised by the collector -- is closed
    wherever the collector happens to run: inside the wrapper's commit, with the
    committer's lock held by this thread or by one joining it. Reporting it there
    commits again and deadlocks the client for good; it may only be queued.
    """
    return threading.get_ident() in _COLLECTING


def _current_task() -> asyncio.Task[Any] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:  # no event loop running in this thread
        return None


#: Marks the ``contextvars`` context a caller runs in (see :func:`_context_mark`).
_CONTEXT_MARK: ContextVar[tuple[int, object] | None] = ContextVar(
    "contextos_stream_reader", default=None
)


def _context_mark() -> object:
    """An object that stands for the ``contextvars`` context running now.

    Why: a thread's own context, and an asyncio task's, last as long as the thread or
    task, so the mark set here at its first stream stays; a thread pool job run in a
    fresh copy of its submitter's context (anyio, ``asyncio.to_thread``) gets a mark
    of its own, so two jobs on one worker thread are two callers. A copy inherits the
    mark its submitter had set, so a mark names the thread it was made on, and a
    context that finds another thread's mark makes its own.
    """
    here = threading.get_ident()
    mark = _CONTEXT_MARK.get()
    if mark is None or mark[0] != here:
        mark = (here, object())
        _CONTEXT_MARK.set(mark)
    return mark


def _caller_key() -> tuple[int, int, int]:
    task = _current_task()
    return (threading.get_ident(), id(task) if task is not None else 0, id(_context_mark()))


class Reader:
    """Who reads a stream: a thread, the asyncio task running on it (if any), and the
    context it runs in (:func:`_context_mark`).

    ``key`` says whether two readers are the same caller; :attr:`gone` whether this
    one can read no more (a stream it alone read is abandoned, whoever calls next).
    The thread and the context's mark are held (the mark keeps its id unique), the
    task only weakly (a done task must not be kept alive).
    """

    __slots__ = ("key", "_mark", "_task", "_thread")

    def __init__(self) -> None:
        task = _current_task()
        self._mark = _context_mark()
        self.key = (threading.get_ident(), id(task) if task is not None else 0, id(self._mark))
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


class Readers:
    """Who read a stream: its latest reader (its opener before the first event), and
    whether anyone but the opener read it (``shared``: then no caller's next call may
    take it for left; see the module docstring)."""

    __slots__ = ("last", "shared")

    def __init__(self) -> None:
        self.last = Reader()
        self.shared = False

    def read(self) -> None:
        """Note who asks for the next event: one comparison when it is the same caller
        (an event loop reads many events), a new :class:`Reader` when not."""
        if self.last.key != _caller_key():
            self.last = Reader()
            self.shared = True  # the first reader to change is not the opener

    def left_by(self, key: tuple[int, int, int]) -> bool:
        """Whether the caller ``key`` has left this stream: it alone opened and read it,
        and it is calling again, or it is gone."""
        return not self.shared and (self.last.key == key or self.last.gone)


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
    readers: Readers,
) -> Generator[Any, None, None]:
    """The caller's events; ``done`` when the stream ends or fails, ``abandoned`` when the
    generator is closed (``close()``, or the garbage collector: so only an enqueue).
    ``readers`` notes whoever asks for each event."""
    try:
        with mapped_errors(provider):
            for event in _read_ahead(inner, acc):
                readers.read()
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

    Each is kept with its :class:`Readers`, and :meth:`finish` reports only those the
    caller left: one client shared by threads or tasks may have another's stream
    still being read. Streams closed by the garbage collector wait in a
    lock-free queue for :meth:`drain`.
    """

    def __init__(self) -> None:
        self._open: dict[int, tuple[Readers, Report, Report]] = {}
        self._abandoned: deque[int] = deque()
        self._ids = itertools.count()
        self._lock = threading.Lock()

    def track(self, done: Report, release: Report | None = None) -> tuple[Report, Report, Readers]:
        """(report, abandon, readers) for a new stream: ``report`` calls ``done`` once and
        leaves this set -- or, called from inside a garbage collection (:func:`collecting`),
        only queues it as ``abandon`` does; ``abandon`` only queues the stream for
        :meth:`drain` (safe anywhere); ``readers`` starts with the caller opening it.
        ``release`` closes the stream's response; :meth:`finish` calls it after
        reporting a stream its caller left open."""
        key = next(self._ids)
        readers = Readers()

        def report() -> None:
            if collecting():  # any lock may be held here: the next call or flush() reports
                abandon()
                return
            with self._lock:
                if self._open.pop(key, None) is None:
                    return  # reported already
            done()

        def abandon() -> None:
            self._abandoned.append(key)  # atomic: no lock, the collector may hold any

        with self._lock:
            self._open[key] = (readers, report, release or _nothing)
        return report, abandon, readers

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
        """:meth:`drain`, then report every stream the caller (this thread, asyncio task
        and context) alone opened and read, or opened and never read, and left open --
        and every such stream whose caller is gone (its thread ended: a worker that
        ``break`` s out and returns) -- and close their responses: nobody will read them
        on. A stream anyone else read is left alone (see the module docstring)."""
        self.drain()
        me = _caller_key()
        with self._lock:
            pending = [
                (report, release)
                for readers, report, release in self._open.values()
                if readers.left_by(me)
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
        _close_observer(self._iterator)
        self._done()
        self._stream.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _close_observer(observed: Generator[Any, None, None]) -> None:
    """Close the observing generator, unless another thread is inside it.

    Why: "stop generating" closes a stream from another thread (a UI handler, a
    disconnect callback) while the reader waits for the next event. Closing a running
    generator raises ``ValueError`` ("generator already executing"): the close failed,
    the SDK's own close after it never ran, the stream went on to its end and the
    stopped reply was logged as complete (a review). The caller's close then reports
    the reply as it stands and closes the response, which ends that read as it does
    with the bare SDK (the reader's next event raises)."""
    with contextlib.suppress(ValueError):
        observed.close()


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
    report, abandon, readers = open_streams.track(done, release)
    inner = getattr(stream, "_iterator", None)
    if isinstance(inner, Iterator) and hasattr(stream, "__dict__"):
        observed = _observed(inner, acc, report, abandon, provider, hide, readers)
        # Strongly (a cycle the collector frees) only where a weak reference cannot be had.
        sdk_close = release or stream.close

        def close() -> None:
            _close_observer(observed)
            report()  # an explicit close reports now (inside the collector: queues it)
            sdk_close()

        stream.__dict__["_iterator"] = observed
        stream.__dict__["close"] = close
        return _abandoned_when_dropped(stream, abandon)
    observed = _observed(iter(stream), acc, report, abandon, provider, hide, readers)
    return _abandoned_when_dropped(_StreamProxy(stream, observed, report), abandon)


def _abandoned_when_dropped(stream: Any, abandon: Report) -> Any:
    """``stream``, queued by ``abandon`` when it is freed.

    Why: the observing generator reports a stream dropped part-way (closing it runs its
    ``GeneratorExit`` handler), but a generator never started has no frame to run: a
    stream dropped before its first event (the app failed before reading it) was never
    recorded, and its entry stayed in :class:`OpenStreams` until ``flush()``. The
    callback holds no reference to the stream; a stream reported already is skipped by
    :meth:`OpenStreams.drain`.
    """
    with contextlib.suppress(TypeError):  # not weakly referable: reported at flush()
        weakref.finalize(stream, abandon).atexit = False
    return stream


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
