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
that close only *enqueues* the stream (no lock, no I/O), and the process's one
reporter thread (:class:`_Reporter`) reports it. The same holds for a stream the app
*closes* from inside the collector: its ``with`` block or ``finally: stream.close()``
in an app generator that sits in a reference cycle and is dropped. Such a close (the
instrumented ``close``, the wrapper's helper ``__exit__``) still closes the response,
but while this thread runs a collection (a ``gc.callbacks`` hook marks it,
:func:`collecting`) a report only enqueues, like an abandon.

Why a thread of its own: such streams were reported only at the same client's next
call or ``flush()``, and a client wrapped per request (a web handler whose browser
closed the tab, or that stopped at the reply's end marker) is never called again:
the reply, its usage and ``on_call`` were lost, and the question never remembered (a
review). The client's next call still reports what is queued for it first (or waits
for the reporter's report of it), so its window holds the reply; so do ``flush()``,
``Memory.close()`` (:meth:`OpenStreams.settle`, registered by the wrapper) and the
interpreter's exit (:func:`_settle_at_exit`), which also report the streams still
held open, as they stand: nothing can read them on, or log them, after.

A stream the caller still holds is reported as left, and its response closed (the
caller may still hold the object; its connection should not stay taken), only where
something needs it settled (:meth:`OpenStreams.before_call`, :meth:`OpenStreams.finish`):

- at a managed call (with a session or memory: its window needs the reply logged
  first), a managed stream its caller opened, *read part of*, and alone read. A
  stream opened and not yet read is not left: an app may open several streams and
  read them one after another or side by side (``zip``), as with the bare SDK (a
  review: the wrapper closed the first stream as the second opened, and its reader
  got the HTTP library's ``StreamClosed``).
- at a pass-through call (``wrap(client)`` without session or memory, and every
  Responses API call), none: such a call logs nothing and needs nothing logged, and
  a stream read on after it (a tool that calls the model inside the loop) must be
  recorded whole, as the app received it (a review: it was recorded as the fragment
  read before the call, with no usage, while the app read on to the end).
- at ``flush()``, every stream its caller opened and alone read or never read,
  managed or not: the app asked for everything to be settled.
- at ``Memory.close()`` (for the clients whose session it keeps) and the interpreter's
  exit, every stream (:meth:`OpenStreams.settle`): nothing can log it after.

Once reported so, the stream is *cut*: its reader gets the events its record holds,
then :class:`~contextos.errors.ProviderError` -- or the loop's end, when the reply had
come whole (its end marker arrived) -- never an event the record lacks (the SDK and
HTTP library had buffered more, which went on to the caller after the report).

"Caller" is a thread, an asyncio task on one, and the ``contextvars`` context it
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
its task is done) reads no more: its streams are reported by any caller's managed
call (those it read part of, whose replies that call needs logged) and by ``flush()``.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import gc
import itertools
import logging
import os
import queue
import socket
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Generator, Hashable, Iterator, Mapping
from contextvars import ContextVar
from typing import Any

from ..errors import ProviderError
from ..keyed_locks import KeyedSets
from .base import StreamAccumulator
from .errors import is_sdk_error, mapped_errors

Report = Callable[[], None]

#: Records a stream as it stands; calls its argument once the record is made and handed
#: to the commit (the app's callbacks may run after): what a caller waiting for that
#: report needs (:meth:`OpenStreams.drain`).
Done = Callable[[Report], None]

log = logging.getLogger(__name__)

#: How long the interpreter's exit waits for the streams left to be reported.
EXIT_WAIT_S = 10.0

#: The name of the wrapper's commit threads (``engine.context._Committer``): a caller on
#: one never waits for another thread's report (see :func:`_may_wait`).
COMMIT_THREAD = "contextos-commit"


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
    """Who read a stream: its latest reader (its opener before the first event), whether
    anyone but the opener read it (``shared``: then no caller's next call may take it
    for left; see the module docstring), whether anyone read it at all (``started``),
    and whether the wrapper cut it (``cut``: reported and its response closed while the
    app still held it). ``ended``: the reply came whole and its reader holds every event
    of it, outside the stream (the generator waits at the event last handed on): another
    client of its session may settle it (:meth:`OpenStreams.settle_for`)."""

    __slots__ = ("cut", "ended", "inside", "last", "shared", "started")

    def __init__(self) -> None:
        self.last = Reader()
        self.shared = False
        self.started = False
        self.cut = False
        self.ended = False
        #: the ident of the thread running the observing generator now (between a
        #: ``next()`` and the event it hands on: reading the socket, mostly), or None:
        #: a close on another thread shuts the socket down first (:func:`_waking_close`)
        self.inside: int | None = None

    def read(self) -> None:
        """Note who asks for the next event (and that someone did): one comparison when
        it is the same caller (an event loop reads many events), a new :class:`Reader`
        when not."""
        self.started = True
        if self.last.key != _caller_key():
            self.last = Reader()
            self.shared = True  # the first reader to change is not the opener

    def left_by(self, key: tuple[int, int, int]) -> bool:
        """Whether the caller ``key`` has left this stream: it alone opened and read it
        (or never read it), and it is calling again, or it is gone."""
        return not self.shared and (self.last.key == key or self.last.gone)

    def may_read(self, provider: str, finished: bool) -> bool:
        """True while the stream may be read on; False once the wrapper cut it after its
        reply had come whole (``finished``: the loop just ends, the app has the reply as
        recorded, as when a follow-up call is made in the loop at ``finish_reason``).

        Raises:
            ProviderError: the wrapper cut the stream before its reply was whole: what
                follows was never recorded.
        """
        if not self.cut:
            return True
        if finished:
            return False
        raise ProviderError(
            f"{provider}: this stream was recorded as left, and closed, when the "
            "client was flushed, its Memory closed, or the same caller made a managed "
            "call while reading it; read a stream to its end (or close it) first"
        )


def _read_ahead(
    inner: Iterator[Any], acc: StreamAccumulator, readers: Readers, provider: str
) -> Iterator[Any]:
    """``inner``'s events, each fed to ``acc`` before it is handed on, until the stream
    ends, fails or is cut (:meth:`Readers.may_read`).

    While the accumulator is ``holding`` (OpenAI chat: choice 0 just finished and its
    usage chunk, sent right after, has not come; Responses: an output item just
    closed) the next event is read before the held one is handed on, so a caller that
    stops at the end of the reply still gets the call's usage recorded. Should the
    read fail, the events held are handed on before the error: the caller gets every
    event its record was made of, as the bare SDK would have given them. A read that
    fails with a ``ValueError`` the SDK let through (an SSE data line that is not JSON:
    a proxy cut it, a server sent a non-JSON line) raises :class:`ProviderError`, the
    original in ``__cause__`` (:func:`_malformed`).
    """
    held: list[Any] = []
    while True:
        try:
            if not readers.may_read(provider, acc.finished):
                break
            event = next(inner)
        except StopIteration:
            break
        except Exception as exc:
            yield from held
            if readers.cut and acc.finished:
                return  # cut under this read once the reply was whole: the loop ends
            if isinstance(exc, ValueError) and not is_sdk_error(exc):
                raise _malformed(provider, exc) from exc
            raise
        acc.feed(event)
        held.append(event)
        if not getattr(acc, "holding", False):
            out, held = held, []
            yield from out
    yield from held


def _malformed(provider: str, exc: ValueError) -> ProviderError:
    """The error for an event the SDK could not decode (its ``sse.json()`` raised
    ``json.JSONDecodeError``; a body that is not UTF-8, ``UnicodeDecodeError``).

    Why: the SDKs let it through as it was, and ``mapped_errors`` maps only their own
    and their HTTP library's errors: the app's ``except ProviderError`` (its retry path)
    missed a stream a proxy had cut mid-line, where the docs promise ``ProviderError``
    for errors inside a stream (a review, s47). Only here, where the SDK's stream is
    read: a ``ValueError`` of the app's or of the wrapper's own goes on as it is."""
    return ProviderError(f"{provider}: malformed stream event ({type(exc).__name__}: {exc})")


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
    readers.inside = threading.get_ident()
    try:
        with mapped_errors(provider):
            for event in _read_ahead(inner, acc, readers, provider):
                readers.read()
                if hide is None or not hide(event):
                    readers.ended = acc.finished
                    readers.inside = None
                    yield event
                    readers.inside = threading.get_ident()
                    readers.ended = False
    except GeneratorExit:
        abandoned()
        raise
    except BaseException:
        done()
        raise
    finally:
        readers.inside = None
    done()


class _Entry:
    """One open stream in :class:`OpenStreams`: who read it, how to record it (``done``)
    and close its response, whether its record commits a reply a managed call needs
    logged, and who is reporting it (``by``, a thread's ident; ``reported`` is set once
    its record is made and handed to the commit)."""

    __slots__ = ("by", "commits", "done", "key", "readers", "release", "reported")

    def __init__(
        self, key: int, readers: Readers, done: Done, release: Report, commits: bool
    ) -> None:
        self.key = key
        self.readers = readers
        self.done = done
        self.release = release
        self.commits = commits
        self.by: int | None = None
        self.reported = threading.Event()


class OpenStreams:
    """The streams of one wrapped client that have not reported yet (thread-safe).

    Each is kept with its :class:`Readers`, and :meth:`before_call` and :meth:`finish`
    report only those the caller left: one client shared by threads or tasks may have
    another's stream still being read. Streams closed by the garbage collector wait in
    a lock-free queue for :meth:`drain`, and in the reporter's (:class:`_Reporter`),
    which reports them unless a call of this client came first.

    ``log``: the session log the client's managed streams commit to (the engine's
    ``LogKey``; None: none). While such a stream is open the set is listed under it
    (:data:`_BY_LOG`), so that another client's managed call of that log reports the
    streams whose replies its window needs (:meth:`settle_for`).
    """

    def __init__(self, log: Hashable | None = None) -> None:
        self.log = log
        #: the open streams that commit to ``log``: listed in :data:`_BY_LOG` while any
        self._committing = 0
        self._open: dict[int, _Entry] = {}
        self._abandoned: deque[int] = deque()
        self._ids = itertools.count()
        self._lock = threading.Lock()
        #: the reporter's failure to report a stream (an inline commit that failed), raised
        #: at this client's next :meth:`drain`, where that report used to run
        self._failed: Exception | None = None
        _LIVE_STREAMS.add(self)

    def track(
        self, done: Done, release: Report | None = None, *, commits: bool = False
    ) -> tuple[Report, Report, Readers]:
        """(report, abandon, readers) for a new stream: ``report`` records it once
        (:meth:`_report`: from inside a garbage collection it only queues it, as
        ``abandon`` does); ``abandon`` only queues the stream, for :meth:`drain` and the
        reporter (safe anywhere); ``readers`` starts with the caller opening it.
        ``release`` closes the stream's response; a stream reported as left is closed
        with it. ``commits``: its report logs a reply in a session (see
        :meth:`before_call`)."""
        _REPORTER.start()  # here, not in a finalizer: starting a thread takes locks
        entry = _Entry(next(self._ids), Readers(), done, release or _nothing, commits)

        def report() -> None:
            self._report(entry)

        def abandon() -> None:
            self._abandon(entry)

        with self._lock:
            self._open[entry.key] = entry
            if commits and self.log is not None:
                self._committing += 1
                if self._committing == 1:
                    _listed(self, True)
        return report, abandon, entry.readers

    def _abandon(self, entry: _Entry) -> None:
        """Queue ``entry`` for :meth:`drain` and for the reporter. No lock: the collector,
        which calls this, may hold any (a deque's append and a ``SimpleQueue``'s put are
        atomic and take none)."""
        self._abandoned.append(entry.key)
        _REPORTER.put(functools.partial(self._report_left, entry))

    def _report(self, entry: _Entry, timeout: float | None = None) -> None:
        """Record ``entry`` once, on the first caller's thread, and take it out of this set.

        A caller that finds another thread reporting it waits (up to ``timeout``) until
        that record is made and handed to the commit, where it may (:func:`_may_wait`):
        the reporter may take a stream the client's next call is about to report, and
        that call's window needs the reply logged first. From inside a garbage
        collection (:func:`collecting`) this only queues it (:meth:`_abandon`): any
        lock may be held there, the commit's own included, and a commit there would
        deadlock the client for good."""
        if collecting():
            self._abandon(entry)
            return
        me = threading.get_ident()
        with self._lock:
            if entry.key not in self._open:
                return  # reported already
            by = entry.by
            if by is None:
                entry.by = me
        if by is not None:
            if by != me and _may_wait():
                entry.reported.wait(timeout)
            return
        settled = functools.partial(self._settled, entry)
        try:
            entry.done(settled)
        finally:
            settled()

    def _settled(self, entry: _Entry) -> None:
        """``entry``'s record is made and handed to the commit: out of this set, and
        whoever waits for it goes on."""
        with self._lock:
            popped = self._open.pop(entry.key, None)
            if popped is not None and popped.commits and self.log is not None:
                self._committing -= 1
                if not self._committing:
                    _listed(self, False)
        entry.reported.set()

    def _report_left(self, entry: _Entry) -> None:
        """The reporter's report of a stream left (:class:`_Reporter`). Its failure (an
        inline commit's error) is logged, and raised at this client's next call or
        ``flush()``, where that report ran before the reporter did."""
        try:
            self._report(entry)
        except Exception as exc:
            self._keep_failure(exc)

    def _keep_failure(self, exc: Exception) -> None:
        """Keep a failure to report a stream for this client's next :meth:`drain`, and log
        it: whoever reported it (the reporter, another client's call) is not its caller."""
        with self._lock:
            self._failed = self._failed or exc
        log.warning(
            "recording a stream its caller left failed (raised again at the "
            "client's next call): %s",
            exc,
        )

    @property
    def abandoned(self) -> bool:
        """True while a stream waits in the queue for :meth:`drain`."""
        return bool(self._abandoned)

    @property
    def pending(self) -> bool:
        """True while any stream is open or waits in the queue (:meth:`settle` has work)."""
        return bool(self._open or self._abandoned)

    def forget_after_fork(self) -> None:
        """In a fork's child: drop the streams the parent had open or queued, its
        reporter's failure and its lock (another of its threads may have held it).

        Why: those streams are the parent's to record. The child kept them, so its
        ``Memory.close()`` (a ``sys.exit()`` inside ``with Memory(...)``), its
        ``flush()`` (its main thread has the forking thread's ident and context) and its
        exit reported them again: the app's ``on_call`` billed the parent's call twice,
        and the child committed into a store it cannot use (a review). A parent's
        stream the child reads, closes or drops is then not here: it reports nothing.
        The set itself stays tracked, so a stream the child opens with a client wrapped
        before the fork is still settled at the child's exit."""
        self._lock = threading.Lock()
        self._open.clear()
        self._abandoned.clear()
        self._failed = None
        self._committing = 0

    def drain(self) -> None:
        """Report the streams the garbage collector (or a close) abandoned, oldest first,
        or wait for the reporter's report of those it took first; then raise the
        reporter's failure to report one (:meth:`_report_left`)."""
        self._drain()
        with self._lock:
            failed, self._failed = self._failed, None
        if failed is not None:
            raise failed

    def _drain(self, timeout: float | None = None) -> bool:
        """:meth:`drain`, waiting ``timeout`` at most in all, raising no reporter's
        failure; True when any stream was queued."""
        deadline = _deadline(timeout)
        queued = False
        while True:
            try:
                key = self._abandoned.popleft()
            except IndexError:  # empty (another thread may have taken the last one)
                return queued
            queued = True
            with self._lock:
                entry = self._open.get(key)
            if entry is not None:
                self._report(entry, _left(deadline))

    def before_call(self, *, managed: bool) -> None:
        """:meth:`drain`; then, before a ``managed`` call, cut every stream whose reply
        that call needs logged: one that commits, that the caller (this thread, asyncio
        task and context) alone opened, has read part of and left open -- or whose only
        reader is gone.

        Why not the others: a stream not yet read is one the app opened beside another
        (it will read both); and a pass-through call needs nothing logged, so the app
        may read on after it (see the module docstring). Those are reported when they
        end, close or are dropped, or at :meth:`finish`."""
        self.drain()
        if not managed:
            return
        me = _caller_key()
        self._cut(lambda e: e.commits and e.readers.started and e.readers.left_by(me))
        _settle_log(self, me)

    def settle_for(self, me: tuple[int, int, int]) -> None:
        """Before a managed call of another client of this one's session log (the caller
        ``me``): report the streams whose replies that call's window needs, so that their
        commits are in flight, and waited for (``_Committer.wait_for_others``): those
        queued (dropped; the reporter may not have reached them), those being reported
        (waited for until handed to the commit), and, cut as :meth:`before_call` cuts,
        those ``me`` alone read part of and left -- or whose only reader is gone -- and
        those whose reply came whole that nobody is reading (:attr:`Readers.ended`).

        Why: that call's own :meth:`before_call` sees only its client's streams, and a
        client wrapped per request, or the other provider's, built its window without a
        reply streamed and dropped at its end marker (Anthropic's was still queued;
        OpenAI's, which holds itself, waited for a garbage collection), and the reply
        was logged after the next question (a review). A failed report is raised at
        this client's next call, not to ``me``."""
        with self._lock:
            queued = set(self._abandoned)
            picked = [
                (e, e.by is None and e.key not in queued)
                for e in self._open.values()
                if e.commits
                and (
                    e.by is not None
                    or e.key in queued
                    or e.readers.ended
                    or (e.readers.started and e.readers.left_by(me))
                )
            ]
        for entry, cut in picked:
            try:
                if cut:
                    self._cut_entry(entry)
                else:
                    self._report(entry)
            except Exception as exc:  # noqa: BLE001 - its own client's to raise
                self._keep_failure(exc)

    def finish(self) -> None:
        """``flush()``: :meth:`drain`, then cut every stream the caller alone opened and
        read (or never read) and left open -- and every such stream whose caller is gone
        (its thread ended: a worker that ``break`` s out and returns), managed or not. A
        stream anyone else read is left alone (see the module docstring)."""
        self.drain()
        me = _caller_key()
        self._cut(lambda e: e.readers.left_by(me))

    def settle(self, timeout: float | None = None) -> bool:
        """Report every stream still open, whoever holds or reads it, as it stands, and
        close its response (``Memory.close()``, the interpreter's exit: nothing can log
        it after); ``timeout``: the most to wait in all for reports another thread is
        making. True when there was any stream to report. Raises nothing: a failure is
        logged.

        Why every stream: a script that ``break`` s out of a stream and ends its ``with
        Memory(...)`` block still holds the stream; it was reported, if ever, once the
        store was closed (a review)."""
        deadline = _deadline(timeout)
        queued = self._drain(timeout)
        with self._lock:
            entries = list(self._open.values())
        for entry in entries:
            try:
                self._cut_entry(entry, _left(deadline))
            except Exception as exc:  # noqa: BLE001 - the next stream is still reported
                log.warning("recording a stream left open failed: %s", exc)
        return queued or bool(entries)

    def _cut(self, left: Callable[[_Entry], bool]) -> None:
        """Cut (:meth:`_cut_entry`) every open stream ``left`` picks that nobody is
        reporting, outside the lock (a report commits)."""
        with self._lock:
            pending = [e for e in self._open.values() if e.by is None and left(e)]
        for entry in pending:
            self._cut_entry(entry)

    def _cut_entry(self, entry: _Entry, timeout: float | None = None) -> None:
        """Report the stream as it stands, then close its response; its reader, if it
        reads on, gets :class:`ProviderError`, or the loop's end when its reply had come
        whole (:meth:`Readers.may_read`)."""
        self._report(entry, timeout)
        entry.readers.cut = True
        entry.release()


#: The clients' open stream sets with a stream open that commits, by the session log it
#: commits to (:attr:`OpenStreams.log`): what a managed call of that log settles first
#: (:func:`_settle_log`). One dict lookup when no other client of the log has one.
_BY_LOG: KeyedSets[OpenStreams] = KeyedSets()


def _listed(streams: OpenStreams, listed: bool) -> None:
    """List ``streams`` under its log (its first committing stream opened), or not (its
    last one reported)."""
    if listed:
        _BY_LOG.add(streams.log, streams)
    else:
        _BY_LOG.discard(streams.log, streams)


def _settle_log(mine: OpenStreams, me: tuple[int, int, int]) -> None:
    """Before a managed call of ``mine``'s client by ``me``: :meth:`OpenStreams.settle_for`
    on every other client's streams of the same session log.

    Not from inside a commit, nor on the reporter or a commit thread: a call a commit
    makes through another client of the session waits for no other client's commit
    (``_Committer.wait_for_others``), and one waiting there for another client's report,
    whose commit waits for this one, would hang both for good."""
    if mine.log is None:
        return
    others = _BY_LOG.others(mine.log, mine)
    if not others:
        return
    from ..engine.context import _in_commit  # loaded by now: the wrapper's source

    if _in_commit() or not _may_wait():
        return
    for other in others:
        other.settle_for(me)


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


def _left(deadline: float | None) -> float | None:
    """The seconds left until ``deadline`` (None: no limit)."""
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def _may_wait() -> bool:
    """Whether this thread may wait for another thread's report of a stream.

    Not the reporter: it only reports, and a stream another caller took first is that
    caller's. Not a commit thread: the report waited for hands its record to the
    commit, which first waits for the commit running on this very thread (one that
    calls the model through the same client, as a ``MemoryLike`` may): each would wait
    for the other for ever. Such a call needs no wait: its window waits for no commit
    of its own thread either."""
    thread = threading.current_thread()
    return thread is not _REPORTER.thread and thread.name != COMMIT_THREAD


class _Reporter:
    """One daemon thread per process that reports the streams left (dropped, or closed
    inside a collection: :meth:`OpenStreams._abandon`), handed over through a
    ``SimpleQueue`` (its ``put`` is reentrant: safe in a finalizer and inside the
    collector). It never waits for another thread's report (:func:`_may_wait`).

    Why: see the module docstring (a client wrapped per request is never called again)."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Report] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread unless it runs (from :meth:`OpenStreams.track`, never a
        finalizer), and the first time in the process hook the interpreter's exit."""
        if self.thread is None:
            with self._lock:
                if self.thread is None:
                    _hook_exit()
                    thread = threading.Thread(
                        target=self._run, name="contextos-streams", daemon=True
                    )
                    thread.start()
                    self.thread = thread

    def put(self, work: Report) -> None:
        """Have ``work`` run on the thread, after what was put before it."""
        self._queue.put(work)

    def wait(self, timeout: float | None) -> bool:
        """Wait (up to ``timeout`` seconds) until what was put so far has run; False
        when it had not by then."""
        if self.thread is None or self.thread is threading.current_thread():
            return False
        reached = threading.Event()
        self._queue.put(reached.set)
        return reached.wait(timeout)

    def _run(self) -> None:
        while True:
            _run_one(self._queue.get())  # holds nothing while waiting


def _run_one(work: Report) -> None:
    try:
        work()
    except Exception:  # the next stream is still reported
        log.exception("reporting a stream left failed")


_REPORTER = _Reporter()

#: Every client's streams, settled at the interpreter's exit (:func:`_settle_at_exit`).
_LIVE_STREAMS: weakref.WeakSet[OpenStreams] = weakref.WeakSet()

_exit_hooked = False


def _hook_exit() -> None:
    """Register :func:`_settle_at_exit`, once, after the commit's own exit hook
    (``contextos.engine.context._drain_at_exit``): hooks run last registered first,
    and that one waits for the commits this one starts."""
    global _exit_hooked
    if not _exit_hooked:
        from ..engine import context  # noqa: F401 - registers its exit hook first

        atexit.register(_settle_at_exit)
        _exit_hooked = True


def _settle_at_exit() -> None:
    """At the interpreter's exit, on the reporter's thread: report the streams left, and
    those still open (:meth:`OpenStreams.settle`), :data:`EXIT_WAIT_S` at most in all;
    the commits they start are waited for by the commit's exit hook, which runs next.

    Why: a script that exits (or is stopped by an uncaught Ctrl-C) while holding a
    stream it left, or right after dropping one, lost its reply and its question."""
    if not any(streams.pending for streams in list(_LIVE_STREAMS)):
        return  # nothing to settle: start no thread (Python 3.12 refuses one at exit)
    _REPORTER.start()  # a stream's track() started it; kept in case

    def settle_all() -> None:
        for streams in list(_LIVE_STREAMS):
            streams.settle()

    _REPORTER.put(settle_all)
    if not _REPORTER.wait(EXIT_WAIT_S):
        log.warning("streams left were still being recorded at exit, after %ss", EXIT_WAIT_S)


def _reporter_after_fork() -> None:
    """A fork's child has no reporter thread (only the forking one is copied), and its
    lock may have been held: a new one, started by the child's first stream. Each
    client's streams forget the parent's (:meth:`OpenStreams.forget_after_fork`): the
    child never reports a stream the parent opened, however it ends (``flush()``,
    ``Memory.close()``, its exit); they stay in :data:`_LIVE_STREAMS`, so the streams
    the child opens itself are settled at its exit."""
    global _REPORTER
    _REPORTER = _Reporter()
    _BY_LOG.clear_after_fork()
    for streams in list(_LIVE_STREAMS):
        streams.forget_after_fork()


os.register_at_fork(after_in_child=_reporter_after_fork)


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
    disconnect callback, an asyncio handler's ``finally`` after its task was cancelled
    while a worker thread still runs ``next()``) while the reader waits for the next
    event. Closing a running generator raises ``ValueError`` ("generator already
    executing"): the close failed, the SDK's own close after it never ran, the stream
    went on to its end and the stopped reply was logged as complete (a review). The
    caller's close then reports the reply as it stands and closes the response, whose
    socket is shut down first (:func:`_waking_close`): the reader's blocked read ends
    at once and it gets :class:`~contextos.errors.ProviderError`. Closing the socket
    alone did not wake it: the read waited for the model's next bytes, or, once the
    fd number was reused by another connection, until the SDK's read timeout (600 s
    by default; a review, s50: the default executor's threads stayed stuck and
    ``asyncio.run()`` never returned)."""
    with contextlib.suppress(ValueError):
        observed.close()


def _waking_close(response: Any, readers: Readers) -> None:
    """Make ``response.close()`` shut its socket down first while another thread is
    inside the stream's observing generator (:attr:`Readers.inside`), then close it as
    the HTTP library does; once closed, the response is left as it was.

    Why on the response, not only in the wrapper's ``close``: every close of a stream
    ends there -- the instrumented ``close`` (through the SDK's), the proxy's, the
    wrapper's cut (:meth:`OpenStreams._cut_entry`), and the SDKs' helpers, one of which
    (openai's ``ChatCompletionStream.close``) closes the response directly. A close
    on the reader's own thread (the SDK's ``finally`` at the stream's end, the HTTP
    library's at the body's end) and a close while nobody reads (the usual one) shut
    nothing down: the connection goes back to the pool as before.

    Only an HTTP/1 response whose socket the HTTP library exposes
    (``extensions["network_stream"].get_extra_info("socket")``) is watched: an HTTP/2
    connection carries other requests' streams, and a stand-in response (a test's
    mock) has none. The hook holds the response weakly (no cycle), and is removed
    once the response is closed."""
    cls_close = getattr(type(response), "close", None)
    extensions = getattr(response, "extensions", None)
    if (
        not callable(cls_close)
        or not isinstance(extensions, Mapping)
        or extensions.get("network_stream") is None
        or extensions.get("http_version", b"HTTP/1.1") not in (b"HTTP/1.1", b"HTTP/1.0")
        or not isinstance(getattr(response, "__dict__", None), dict)
    ):
        return
    try:
        ref = weakref.ref(response)
    except TypeError:
        return

    # Held while the socket is judged and shut down, and through every close that shuts
    # nothing down: so a reader's own close, which hands the connection back to the pool,
    # never runs between another thread's check and its shutdown (the next request on
    # that connection was cut; the diff's review). The close that shut the socket down
    # closes outside it: its reader may close through here meanwhile.
    # A forked child shares the parent's socket, and may have been forked while a
    # parent's thread held the lock: it closes without either.
    lock = threading.RLock()
    owner = os.getpid()

    def close() -> None:
        target = ref()
        if target is None:
            return
        if os.getpid() != owner:
            _closed(target, close)
            return
        with lock:
            inside = readers.inside
            wake = (
                inside is not None
                and inside != threading.get_ident()
                and not getattr(target, "is_closed", False)
            )
            if wake:
                _shut_down(target)
            else:
                _closed(target, close)
        if wake:
            _closed(target, close)

    response.__dict__["close"] = close


def _closed(response: Any, hook: Callable[[], None]) -> None:
    """Close ``response`` as its class does, then drop ``hook`` (its instance ``close``)
    once it is closed."""
    try:
        type(response).close(response)
    finally:
        if getattr(response, "is_closed", True) and response.__dict__.get("close") is hook:
            del response.__dict__["close"]


def _shut_down(response: Any) -> None:
    """Shut down (both ways) the socket ``response`` is read from, which wakes a read
    blocked on it in another thread (its ``recv`` returns: the body ends early and the
    HTTP library raises). Never raises: a socket already closed or gone is left be."""
    with contextlib.suppress(Exception):
        network = response.extensions["network_stream"]
        sock = network.get_extra_info("socket")
        if isinstance(sock, socket.socket):
            sock.shutdown(socket.SHUT_RDWR)


def instrument(
    stream: Any,
    acc: StreamAccumulator,
    done: Done,
    *,
    provider: str,
    open_streams: OpenStreams,
    hide: Callable[[Any], bool] | None = None,
    commits: bool = False,
) -> Any:
    """Return ``stream`` (or a proxy of it) with its events observed; see the module docstring.

    ``done`` is called once: when the stream ends or fails, when the caller closes it,
    for a stream left to the garbage collector on the reporter's thread (or at
    ``open_streams``' next :meth:`~OpenStreams.drain`, if that comes first), for one
    left open at :meth:`~OpenStreams.before_call` (``commits``: ``done`` logs the reply
    in a session) or :meth:`~OpenStreams.finish`, and for any still open at
    :meth:`~OpenStreams.settle`.
    """
    release = _closer(stream)
    report, abandon, readers = open_streams.track(done, release, commits=commits)
    _waking_close(getattr(stream, "response", None), readers)
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
        return _abandoned_when_dropped(stream, abandon, getattr(stream, "response", None))
    # Not the response: the caller iterates ``observed`` itself, and may drop the proxy
    # while it reads on (``for event in client...create(stream=True)``).
    observed = _observed(iter(stream), acc, report, abandon, provider, hide, readers)
    return _abandoned_when_dropped(_StreamProxy(stream, observed, report), abandon)


def _abandoned_when_dropped(stream: Any, abandon: Report, response: Any = None) -> Any:
    """``stream``, queued by ``abandon`` when it is freed, and its HTTP ``response``
    closed then (:func:`_dropped`).

    Why: the observing generator reports a stream dropped part-way (closing it runs its
    ``GeneratorExit`` handler), but a generator never started has no frame to run: a
    stream dropped before its first event (the app failed before reading it) was never
    recorded, and its entry stayed in :class:`OpenStreams` until ``flush()``. Nor did
    the SDK's generator run its ``finally`` that closes the response: the connection
    stayed checked out of the pool, and the server's socket open, for good (a review,
    s47; the bare SDK does the same, the docs said it was freed). The callback holds no
    reference to the stream (the response holds none to it either: no cycle); a stream
    reported already is skipped by :meth:`OpenStreams.drain`, a response closed already
    is left alone.
    """
    with contextlib.suppress(TypeError):  # not weakly referable: reported at flush()
        weakref.finalize(stream, _dropped, abandon, response).atexit = False
    return stream


def _dropped(abandon: Report, response: Any) -> None:
    """A stream's finalizer: close its ``response`` unless it is closed, then queue its
    report (``abandon``). The close runs at once, or, inside a garbage collection
    (:func:`collecting`), on the reporter's thread, ahead of the report: closing gives
    the connection back to the pool, under the pool's lock, which this very thread may
    hold where the collector runs. Not at the interpreter's shutdown (the SDK's own
    ``finally`` only marks it closed there: a close then can crash CPython 3.13)."""
    try:
        if response is None or getattr(response, "is_closed", False) or sys.is_finalizing():
            return
        if collecting():
            _REPORTER.put(functools.partial(_close_response, response))
        else:
            _close_response(response)
    finally:
        abandon()


def _close_response(response: Any) -> None:
    """Close a dropped stream's HTTP response; a failure is logged (a finalizer's would
    be printed to stderr, the reporter's would stop the report after it)."""
    try:
        response.close()
    except Exception as exc:  # noqa: BLE001 - the stream is gone; nothing else to do
        log.warning("closing the response of a stream dropped unread failed: %s", exc)


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
