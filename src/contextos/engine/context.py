"""The assembly step of a wrapped call: session log + memory -> a budgeted Window.

:func:`contextos.providers.wrap` depends only on the small
:class:`ContextSource` protocol (``prepare`` before the call, ``commit``
after), so the context engine can be swapped or injected in tests. The
default, :class:`SessionContext`, drives a :class:`~contextos.engine.session.Session`
and a :class:`~contextos.memory.Memory`:

1. Messages the caller sent that the session log already holds are
   recognised and not logged twice, by one rule (:func:`match_request`):
   callers may send only the new turn, or the whole conversation every time;
   a retry of a failed call (a question or tool results) logs nothing again;
   a whole conversation that parts from the log -- a regenerate, a front
   end's retry after a gateway timeout, an edited message, a failed question
   the app dropped -- is a branch: what follows the common start is logged,
   the first of it marked :data:`REDO_KEY`, and takes the place of the turns
   it parts from in the conversation (:func:`conversation`; the log keeps
   both). An Anthropic prefill (the request ends with an assistant message)
   is sent last and logged with the reply that continues it. New turns, the
   question included, are appended to the log *before* the call, so a crash
   loses nothing. A tool call goes out only with its results right after it
   (:func:`~contextos.engine.session.sendable_units`), so a refused request's
   turns never poison the session.
2. When the history passes its compaction trigger, the session compacts
   (``summarize`` by default; ``offload`` archives into memory).
3. The window is the session's standard layout
   (:func:`contextos.engine.session.context_window`): tools, system prompt,
   summary, recent turns -- the cached prefix, with breakpoints -- then the
   memories retrieved for the question (strongest at the edges) and the
   question last. With ``placement="topic"`` the memories are a
   :class:`~contextos.engine.topic.TopicBlock` inside the cached prefix
   (after the summary, before the history, with its own breakpoint where the
   planner allows) plus a small per-call delta after the history: the block
   stays byte-identical between calls until it is due (start, a compaction,
   the provider's cache expired since the last call), the topic measurably
   drifted, or one of its memories was deleted, closed or changed since. The
   block is in-process state: after a restart it is simply due, and the first
   call rebuilds it (one uncached call).
4. After the call the reply is logged, with the call's usage in its
   metadata, and the exchange is added to memory (``remember=True``) -- on a
   background thread by default (``background_commit``), so the caller does
   not wait for those durable writes; the next call, or ``flush()``, waits
   for them first. A reply whose stream was cut or abandoned is logged marked
   ``"complete": False``, not remembered, and left out of the conversation
   later calls match and send (so the app's retry is recognised); an empty
   reply is not logged; a reply's lone surrogates and NUL characters are logged
   as U+FFFD (see ``SessionContext._commit``). ``Memory.close`` and the
   interpreter's exit wait for a commit still running (``flush()`` is the
   explicit way, and raises its error). A commit whose session was erased during
   the call (``forget``: the turn the call followed is gone) logs and remembers
   nothing, and undoes what it wrote if the erasure lands while it writes.
"""

from __future__ import annotations

import atexit
import logging
import os
import random
import threading
import time
import weakref
from bisect import bisect_left
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any, Literal, Protocol, TypedDict

from contextos.cache.render import TTL_SECONDS
from contextos.engine.compaction import (
    STRATEGIES,
    HistoryState,
    Strategy,
    Thresholds,
    budget_refusal,
)
from contextos.engine.conversation import (
    COMPLETE_KEY,
    REDO_KEY,
    TurnPrint,
    conversation,
    redo_of,
    results_said,
    said_digest,
    turn_print,
)
from contextos.engine.conversation import (
    in_conversation as in_conversation,  # re-exported: the name wrapped calls used
)
from contextos.engine.message_text import mended
from contextos.engine.offload import text_pieces
from contextos.engine.owed import OWED_KEY, Commits, Owed, mark_of, marked
from contextos.engine.recall import RULES_SHARE, Rules, Shown, recall, scope_rules, shown_turns
from contextos.engine.session import (
    LOGGED_SESSION_KEY,
    LOGGED_TURN_KEY,
    PREFILL_KEY,
    Layout,
    MemoryLike,
    Session,
    checked_budget,
    context_window,
    sendable_units,
    turn_items,
)
from contextos.engine.session import (
    MEMORY_HEADER as MEMORY_HEADER,  # defined with the window; re-exported here
)
from contextos.engine.topic import TOPIC_SEARCH_OVER, TopicBlock, topic_layout, topic_memories
from contextos.engine.window import Item, Window, message_item, text_item, tool_item
from contextos.errors import (
    BudgetError,
    ConfigError,
    Conflict,
    NotFound,
    ProviderError,
    ScopeError,
)
from contextos.keyed_locks import KeyedSets
from contextos.llm.media_tokens import media_tokens, open_loop_start
from contextos.llm.models import ModelInfo, Prices, get_model
from contextos.llm.tokens import TOKENS_PER_REPLY, Tokenizer, default_tokenizer
from contextos.providers.base import (
    WIRE_KEY,
    CallRecord,
    ChatRequest,
    Prepared,
    is_placeholder,
)
from contextos.types import (
    Filter,
    Hit,
    MemoryRecord,
    Message,
    Scope,
    ScopeIds,
    Turn,
    Usage,
    scope_ids,
)

#: Introduces the topic memory block in the system prompt (``placement="topic"``).
TOPIC_HEADER = "Memories about the current topic from earlier conversations (may be outdated):"

#: Wire formats whose last assistant message is a prefill: the reply continues its text
#: (Anthropic's Messages API; Chat Completions answers such a message with a new one).
PREFILL_WIRES = frozenset({"anthropic"})

#: Window size assumed for models the registry does not know (OpenAI-compatible servers):
#: see :func:`model_info`.
UNKNOWN_MODEL_WINDOW = 128_000
#: Output limit assumed for such models.
UNKNOWN_MODEL_OUTPUT = 8192
#: Tries to log a request's new turns while other writers append to its session, and
#: the longest pause (seconds) after the first refusal (it grows with each try).
_APPEND_TRIES = 10
_APPEND_PAUSE_S = 0.005
#: Metadata a commit writes on the reply it logs (:func:`_as_logged`): a turn with these
#: was a call's reply, not a turn logged from an app's history.
_COMMITTED_KEYS = frozenset({"usage", "provider"})
#: Reply metadata a commit writes: the seq of the turn the call followed (its anchor:
#: its question, its last tool result), which this reply answers
#: (``SessionContext._answer_after``).
REPLY_TO_KEY = "reply_to"
#: Reply metadata a commit writes on the reply of a retry (True): a whole reply of the
#: call it retried, made by another client (which could not mark that call given up,
#: :meth:`SessionContext._supersede`) and reported after it, is not logged as a second
#: answer.
RETRY_REPLY_KEY = "retry_reply"

#: The most cut turns whose memories one branch deletes (one read a turn).
MAX_CUT_TURNS = 200

log = logging.getLogger(__name__)
#: The unknown model ids :func:`model_info` warned about (once each per process).
_WARNED_UNKNOWN: set[str] = set()
_WARNED_LOCK = threading.Lock()

Compaction = Literal["summarize", "truncate", "clear_tool_results", "offload"]
#: Where retrieved memories go: after the history, fresh every call (``per_call``),
#: or a cached topic block before the history plus a small delta after it (``topic``).
Placement = Literal["per_call", "topic"]
PLACEMENTS: tuple[Placement, ...] = ("per_call", "topic")


class ContextOptions(TypedDict, total=False):
    """The :class:`SessionContext` options :func:`contextos.wrap` takes as keywords.

    Why a TypedDict: ``wrap(client, memory=..., memory_limit=4)`` hands these to
    SessionContext unchanged, so their defaults live in one place (SessionContext's
    signature) and the type checker holds the names and types of both to this list.
    """

    memory_limit: int
    memory_tokens: int
    remember: bool
    budget: int | None
    compaction: Compaction | None
    history_share: float
    thresholds: Thresholds | None
    background_commit: bool


def _checked_share(share: float) -> float:
    """``history_share``: the window's share the history may take, over 0 and at most 1.
    Unchecked, 0 or a negative share compacted at every call and 2 let the history
    crowd out the question; a string failed inside the first call."""
    if isinstance(share, bool) or not isinstance(share, int | float) or not 0 < share <= 1:
        raise ValueError(f"history_share must be a number over 0 and at most 1, not {share!r}")
    return float(share)


class ContextSource(Protocol):
    """Builds the window before a call and records the outcome after it."""

    def prepare(self, request: ChatRequest, *, reserve_tokens: int) -> Prepared:
        """The window for ``request``, leaving ``reserve_tokens`` free (output, tools)."""
        ...

    def commit(self, prepared: Prepared, call: CallRecord) -> None:
        """Record the call's reply and usage (the session log, memory)."""
        ...


#: A source may also have ``failed(prepared)``: the wrapper calls it when the provider
#: refused the call before any reply (:meth:`SessionContext.failed`). Not part of the
#: protocol, so that sources written before it still fit.

#: Which session log a commit writes: its store (the object's id, as ``Session`` keys
#: its counts), tenant and session id. Two stores over one database file are two logs
#: here, as two processes are: a client cannot wait for the other's commit.
LogKey = tuple[int, str, str]


class _Committer:
    """Runs commits in order, each on its own thread, one at a time.

    Why: logging the reply and remembering the exchange are durable SQLite
    writes (fsync'd); the caller already has its answer and should not wait
    for them. The next ``prepare`` (or ``flush``) waits, so the log is always
    complete before the next window is built, and a failed write is raised
    there instead of being lost -- and logged when it fails, since a client
    wrapped per request, or whose call was still running at ``Memory.close``,
    has no next call (the reply and the memory were lost without a word). A
    lock makes it safe for one wrapped client shared by several threads: a
    commit's thread starts at once and first joins the one before it, so a
    commit starts once the one before it is done, and its submitter never waits.
    Why not wait in ``submit``: that is the caller's thread, an asyncio event
    loop's when an async handler closes a stream on a disconnect; the whole
    loop stalled while the previous commit waited on a write lock (2.4 s, a
    review).

    A commit may itself make a call through the same wrapped client (a
    ``MemoryLike`` whose ``add`` asks the model for something): that call's
    ``prepare`` waits for no commit of its own thread, and its commit runs right
    there, in its place in the order (inline, or on the commit thread). Why: the
    lock was held while a thread joined the commit thread, which then waited for
    that lock (a deadlock); the commit thread joined itself ("cannot join current
    thread"); and an inline commit (``background_commit=False``) took a lock it
    held already (a deadlock). No lock is held while a thread is joined now, and
    inline commits are serialised by a lock their own thread may take again.

    The thread is a daemon (a hung store must not hang the process at exit), so
    nothing would wait for the last commit of a script that ends, or of a Memory
    closed, right after its last call: :meth:`drain` does, at interpreter exit
    (:func:`_drain_at_exit`) and in ``Memory.close`` (:meth:`SessionContext.__init__`
    registers it there). ``flush()`` stays the explicit way, and raises a failed
    commit.

    Other wrapped clients of the same session log (``log``: the same store object,
    tenant and session id) in this process wait for its commit in flight too, before
    their windows are built (:meth:`wait_for_others`). Why: only the client's own next
    call waited, and an app that wraps a client per request, or sends a tool loop's
    steps to an Anthropic and an OpenAI client in turn, sending only the new turn, got
    a window without the last reply (two user turns in a row, silently) or had its
    tool results refused, their call not logged yet (a review: 4 to 11 runs in 20).
    """

    def __init__(self, background: bool, log: LogKey | None = None) -> None:
        self.background = background
        #: The session log its commits write (None: none, memory only).
        self.log = log
        #: Guards ``_thread``, ``_threads`` and ``_error``; never held while a thread is
        #: joined, nor while a commit runs.
        self._lock = threading.Lock()
        #: Notified, ``_lock`` held, as each commit thread is done. Why not
        #: ``Thread.join``: a Ctrl-C or SIGTERM raised in the main thread while it joined
        #: marked the thread done while it still ran (Python 3.11's bpo-45274 fix), so
        #: the next wait returned at once and ``Memory.close`` closed the store under
        #: the commit: the question in flight never remembered (a review).
        self._done = threading.Condition(self._lock)
        #: One inline commit at a time (``background`` False); its own thread may take it
        #: again (a commit that makes a call through the same client).
        self._inline = threading.RLock()
        #: The last commit thread started: it ends after all those before it.
        self._thread: threading.Thread | None = None
        #: The commit threads started and not yet done (running, or joining the one
        #: before): this committer is in :data:`_IN_FLIGHT` while there is one.
        self._threads: set[threading.Thread] = set()
        self._error: BaseException | None = None
        if background:
            _COMMITTERS.add(self)

    def submit(self, func: Callable[..., None], *args: Any) -> None:
        """Run ``func(*args)`` after the commit before it, without waiting for that one
        (its new thread joins it first). In the background, the previous commit's
        failure is kept for the next ``wait`` (a ``prepare``): the caller of this
        commit already has its answer and must get it."""
        if not self.background:
            with self._inline:
                self._raise()
                _as_commit(func, args)
            return
        with self._lock:
            nested = self._mine()  # made from inside a commit running here: its turn is now
            if not nested:
                thread = threading.Thread(
                    target=self._background,
                    args=(self._thread, func, args),
                    name="contextos-commit",
                    daemon=True,
                )
                self._started(thread, True)  # before it starts: it may end before start returns
                try:
                    thread.start()
                except BaseException:
                    self._started(thread, False)
                    raise
                self._thread = thread
        if nested:
            self._run(func, args)

    def _background(
        self, before: threading.Thread | None, func: Callable[..., None], args: tuple[Any, ...]
    ) -> None:
        """A commit thread's work: wait for the commit before it, run this one, then this
        thread is done (the committer idle again once it was the last)."""
        try:
            if before is not None:
                before.join()
            self._run(func, args)
        finally:
            with self._lock:
                self._started(threading.current_thread(), False)

    def _started(self, thread: threading.Thread, flying: bool) -> None:
        """Note, ``_lock`` held, that ``thread`` is about to start (``flying``) or is
        done; the committer is in :data:`_IN_FLIGHT` from its first to its last."""
        if flying:
            if not self._threads:
                _in_flight(self, True)
            self._threads.add(thread)
            return
        self._threads.discard(thread)
        self._done.notify_all()
        if not self._threads:
            _in_flight(self, False)

    def _mine(self) -> bool:
        """Whether this thread is one of this committer's commit threads (a call made
        from inside its commit), ``_lock`` held: such a thread waits for none of them,
        as the earlier ones are done and the later ones wait for it."""
        return threading.current_thread() in self._threads

    def _run(self, func: Callable[..., None], args: tuple[Any, ...]) -> None:
        try:
            _as_commit(func, args)
        except BaseException as exc:  # handed to the caller by wait(), and logged here
            with self._lock:
                self._error = self._error or exc
            self._report(exc)

    def _report(self, exc: BaseException) -> None:
        """Log a failed background commit, once, by ids only (never the user's text):
        it is raised at this client's next call or ``flush()``, but a client wrapped
        per request, or one whose last call ran past ``Memory.close``, has none."""
        if self.log is None:
            where = "a call without a session"
        else:
            where = f"session {self.log[2]!r} of tenant {self.log[1]!r}"
        log.warning(
            "logging the reply / remembering the exchange of %s failed (raised again at "
            "the client's next call or flush()): %s: %s",
            where,
            type(exc).__name__,
            exc,
        )

    def wait(self) -> None:
        """Wait for the commit in flight (none from the commit itself: see the class);
        raise the first failed one's error."""
        if not self.background:
            with self._inline:
                self._raise()
            return
        with self._lock:
            self._settle()
            self._raise()

    def drain(self, timeout: float | None = None) -> None:
        """Wait up to ``timeout`` seconds (None: for as long as it takes) for the commits
        in flight, raising nothing: a failure stays for the next :meth:`wait`. For
        shutdown, where there is no caller left to raise to, and for another client of
        the same log (:meth:`wait_for_others`), whose caller it is not."""
        with self._lock:
            thread = None if self._mine() else self._thread
            if thread is not None:  # the last started: it ends after those before it
                self._done.wait_for(lambda: thread not in self._threads, timeout)

    def wait_for_others(self) -> None:
        """Wait for the commits in flight now of the other committers in this process
        that write this one's log, as :meth:`wait` waits for its own: for the one in
        flight, not for those started meanwhile, and raising nothing (a failure is
        raised to its own client, at its next call or ``flush``).

        Not from inside a commit (:func:`_in_commit`): a call a commit makes through
        another wrapped client of the session (a ``MemoryLike`` whose ``add`` asks the
        model) waits for no other client's commit, as it waits for none of its own
        thread; one commit thread waiting for another that waited for it would hang
        both for good. One dict lookup when no other client's commit is in flight."""
        if self.log is None or _in_commit():
            return
        for other in _IN_FLIGHT.others(self.log, self):
            other.drain()

    def _settle(self) -> None:
        """Join the commits in flight now (the last one started, which ends after those
        before it), ``_lock`` held on entry and on return but not while joining; the
        thread is forgotten once done, unless another took its place meanwhile. None
        from one of this committer's commit threads (:meth:`_mine`): a call made from
        inside a commit."""
        thread = self._thread
        if thread is None or self._mine():
            return
        while thread in self._threads:
            self._done.wait()  # releases ``_lock`` while it waits (see ``_done``)
        if self._thread is thread:
            self._thread = None

    def _raise(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def forget_after_fork(self) -> None:
        """In a fork's child: drop the parent's commits in flight, their failure and the
        lock (another of the parent's threads may have held it at the fork).

        Why: the commits are waited for on ``_done``, notified by their threads as they
        end; a child has none of those threads (only the forking one is copied), so
        nothing ever notified it: ``Memory.close()`` (a ``sys.exit()`` inside ``with
        Memory(...)``) and the child's next wrapped call waited for good, instead of
        failing at once on the store opened before the fork, and its exit waited
        :data:`EXIT_WAIT_S` (a review). Those commits are the parent's to finish (its
        threads still run them there), as its streams are
        (``OpenStreams.forget_after_fork``)."""
        self._lock = threading.Lock()
        self._done = threading.Condition(self._lock)
        self._threads.clear()
        self._thread = None
        self._error = None


#: How long the interpreter's exit waits for each wrapped client's last commit.
EXIT_WAIT_S = 10.0

#: The background committers with a commit in flight, by the log it writes (running or
#: waiting for the one before it): what another client of that log waits for before its
#: window (:meth:`_Committer.wait_for_others`), and the interpreter's exit for all
#: (:func:`_drain_at_exit`). An entry goes when its last commit thread ends.
_IN_FLIGHT: KeyedSets[_Committer] = KeyedSets()

#: Every background committer alive, for a fork's child to reset
#: (:func:`_committers_after_fork`): any may have had its lock held at the fork, not
#: only those in :data:`_IN_FLIGHT`, whose own guard may have been held too.
_COMMITTERS: weakref.WeakSet[_Committer] = weakref.WeakSet()

#: This thread's commits running now (``depth``): a commit may call the model through a
#: wrapped client, whose commit then runs inside it (see :class:`_Committer`).
_HERE = threading.local()


def _in_flight(committer: _Committer, flying: bool) -> None:
    """Note that ``committer``'s first commit thread starts (``flying``), or its last
    has ended (see :meth:`_Committer._started`)."""
    if flying:
        _IN_FLIGHT.add(committer.log, committer)
    else:
        _IN_FLIGHT.discard(committer.log, committer)


def _as_commit(func: Callable[..., None], args: tuple[Any, ...]) -> None:
    """Run ``func(*args)`` as a commit of this thread (:func:`_in_commit`)."""
    _HERE.depth = getattr(_HERE, "depth", 0) + 1
    try:
        func(*args)
    finally:
        _HERE.depth -= 1


def _in_commit() -> bool:
    """Whether this thread is running a commit (on a commit thread, or inline)."""
    return bool(getattr(_HERE, "depth", 0))


def _log_of(session: Session | None) -> LogKey | None:
    """The :data:`LogKey` of ``session``'s log (None without a session)."""
    if session is None:
        return None
    return id(session.store), session.scope.tenant, session.session_id


@atexit.register
def _drain_at_exit() -> None:
    """Wait (up to :data:`EXIT_WAIT_S` each) for every wrapped client's last commit: a
    script that ends right after a call would otherwise lose its reply (the commit
    thread is a daemon, killed at exit). It runs before the threads it would wait on
    are gone, like the embedding worker's own exit hook
    (:func:`contextos.memory.embedding_worker._close_live_workers`)."""
    for committer in _IN_FLIGHT.all():
        committer.drain(EXIT_WAIT_S)


def _committers_after_fork() -> None:
    """A fork's child runs none of the parent's commit threads: each committer forgets
    them (:meth:`_Committer.forget_after_fork`), and none is in flight. Read from
    :data:`_COMMITTERS`, not :data:`_IN_FLIGHT`, whose guard a parent's thread may have
    held at the fork (a commit ending)."""
    for committer in list(_COMMITTERS):
        committer.forget_after_fork()
    _IN_FLIGHT.clear_after_fork()


os.register_at_fork(after_in_child=_committers_after_fork)


def model_info(name: str, *, window: int | None = None) -> ModelInfo:
    """The registry entry for ``name`` (:func:`~contextos.llm.models.get_model`: any case, a
    dated snapshot, a Bedrock or Vertex AI id), named as the caller named it.

    A model the registry does not know gets a stand-in: a ``window`` (default
    :data:`UNKNOWN_MODEL_WINDOW`, 128,000 tokens) and :data:`UNKNOWN_MODEL_OUTPUT` output
    tokens, priced at zero, no provider cache, counts estimates, ``registered`` False (an
    explicit budget is used as given). The first time in a process each such id is seen, a
    warning is logged (logger ``contextos.engine.context``) naming the window assumed and
    how to declare the model (:func:`~contextos.llm.models.register_model`, or an explicit
    budget).
    """
    try:
        info = get_model(name)
    except ConfigError:
        assumed = window or UNKNOWN_MODEL_WINDOW
        _warn_unknown(name, assumed)
        return ModelInfo(
            name,
            "open",
            assumed,
            UNKNOWN_MODEL_OUTPUT,
            0,
            Prices(0.0, 0.0, 0.0, 0.0, 0.0),
            tokenizer="unknown",
            registered=False,
        )
    if window is None:
        return replace(info, name=name)
    return replace(info, name=name, context_window=window)


def _warn_unknown(name: str, window: int) -> None:
    """Log once per process per model id that ``name`` is not in the registry."""
    with _WARNED_LOCK:
        if name in _WARNED_UNKNOWN:
            return
        _WARNED_UNKNOWN.add(name)
    log.warning(
        "model %r is not in contextos's model registry: assuming a %s-token context window "
        "and %s output tokens, priced at zero, with no prompt cache. Declare it with "
        "contextos.llm.models.register_model(ModelInfo(...)) to budget it by its real window, "
        "or give the wrapper an explicit budget= (used as given for an unknown model).",
        name,
        f"{window:,}",
        f"{UNKNOWN_MODEL_OUTPUT:,}",
    )


#: A logged message as a request is matched to it: the message, its turn, or the turn's
#: print.
Logged = Message | Turn | TurnPrint


def _role_said(b: Logged) -> tuple[str, bytes]:
    """A logged message's role and :func:`~contextos.engine.conversation.said_digest`."""
    if isinstance(b, TurnPrint):
        return b.role, b.said
    message = b.message if isinstance(b, Turn) else b
    return message.role, said_digest(message)


def _same(a: Message, b: Logged) -> bool:
    """Whether sent message ``a`` says logged message ``b`` (given whole or as a turn's
    :class:`~contextos.engine.conversation.TurnPrint`: compared by digest). A reply was logged
    :func:`~contextos.engine.message_text.mended`, and the app echoes it as it got it (its
    metadata, which may hold a large wire copy, is not compared, so not mended)."""
    role, logged = _role_said(b)
    if said_digest(a) == logged:
        return True
    return a.role == role and said_digest(mended(replace(a, metadata={}))) == logged


def _tool_output(message: Message) -> Message:
    """A tool result :func:`~contextos.engine.message_text.mended` (each NUL and lone
    surrogate as U+FFFD), any other message as given (the app's own text with one is
    refused). Why: a tool's output is no more the app's to clean than a model's reply (a
    binary file read, a command's output decoded with ``surrogateescape``), and the store
    refused it: the wrapped call raised ValueError where the bare SDK's went through (a
    review). The app's echo of it on later calls is recognised as a reply's is
    (:func:`_same`)."""
    return mended(message) if message.role == "tool" else message


def _answered(message: Logged) -> bool:
    """Whether a logged turn is a reply (the conversation waits on no answer after it)."""
    return _role(message) == "assistant"


def _role(b: Logged) -> str:
    """A logged message's role."""
    return b.role if isinstance(b, TurnPrint | Message) else b.message.role


def _results(b: Logged) -> tuple[bytes, ...]:
    """A logged message's results (:func:`~contextos.engine.conversation.results_said`)."""
    if isinstance(b, TurnPrint):
        return b.results
    return results_said(b if isinstance(b, Message) else b.message)


class _Sent:
    """A message sent as a match compares it: what it says (:func:`_same`) and its results
    (:func:`~contextos.engine.conversation.results_said`), each worked out once a
    request, when first asked (the mended digest only for a turn the first misses)."""

    __slots__ = ("message", "role", "_said", "_mended", "_results")

    def __init__(self, message: Message) -> None:
        self.message, self.role = message, message.role
        self._said: bytes | None = None
        self._mended: bytes | None = None
        self._results: tuple[bytes, ...] | None = None

    def says(self, logged: bytes) -> bool:
        """Whether a logged turn of digest ``logged`` says this message (:func:`_same`)."""
        if self._said is None:
            self._said = said_digest(self.message)
        if logged == self._said:
            return True
        if self._mended is None:
            self._mended = said_digest(mended(replace(self.message, metadata={})))
        return logged == self._mended

    @property
    def results(self) -> tuple[bytes, ...]:
        if self._results is None:
            self._results = results_said(self.message)
        return self._results


#: Positions in a request's messages and in the conversation's turns, as a match walks
#: them (on from their starts, or back from their ends).
_At = tuple[int, int]


def _step(sent: Sequence[_Sent], logged: Sequence[Logged], at: _At, way: int) -> _At | None:
    """The positions past the sent message and the logged turn at ``at`` (``way``: 1 on,
    -1 back) when they say the same thing (:func:`_same`); else past the runs of tool
    results there that hold the same results (:func:`_results_step`); else None."""
    i, j = at
    if sent[i].says(_role_said(logged[j])[1]):
        return i + way, j + way
    return _results_step(sent, logged, at, way)


def _results_step(sent: Sequence[_Sent], logged: Sequence[Logged], at: _At, way: int) -> _At | None:
    """The positions past the fewest tool messages sent and tool turns logged from ``at``
    on (``way`` 1) or back (-1) that hold the same results in the same order
    (:func:`~contextos.engine.conversation.tool_results`), or None.

    Why: the Anthropic adapter logs parallel tool results as one turn, the OpenAI one a
    turn per result, and an app that falls back to the other provider sends the same
    results in that provider's form. Compared turn for turn, the retry of the results
    a failed call logged was logged again, then refused ("answers no tool call still
    open"), and a whole conversation converted faithfully read as a branch at its first
    tool exchange, which deleted the memories of every turn after it (a review)."""
    (i, j), mine, theirs = at, b"", b""
    while True:
        if len(mine) <= len(theirs):
            if not 0 <= i < len(sent) or sent[i].role != "tool":
                return None
            got = b"".join(sent[i].results)
            mine, i = (mine + got if way > 0 else got + mine), i + way
        else:
            if not 0 <= j < len(logged) or _role(logged[j]) != "tool":
                return None
            got = b"".join(_results(logged[j]))
            theirs, j = (theirs + got if way > 0 else got + theirs), j + way
        if not got:
            return None  # a turn of more than results: only that same turn says it
        n = min(len(mine), len(theirs))
        if n and ((mine[:n] != theirs[:n]) if way > 0 else (mine[-n:] != theirs[-n:])):
            return None
        if len(mine) == len(theirs):
            return i, j


@dataclass(frozen=True)
class Match:
    """Where a request's messages meet the logged conversation (:func:`match_request`).

    The first ``known`` messages sent are logged already; the rest are new and follow
    the conversation's first ``at`` turns. ``at`` short of the conversation's length is
    a branch: the turns from ``at`` on leave the conversation (:data:`REDO_KEY`).
    """

    known: int
    at: int

    def retry(self, sent: Sequence[Message]) -> bool:
        """Nothing sent is new: a failed call sent again (its last turn is unanswered)."""
        return self.known == len(sent)


def match_request(sent: Sequence[Message], logged: Sequence[Logged]) -> Match:
    """Where ``sent`` (a request's messages) meets ``logged`` (the conversation): the one
    rule for what of a request is logged, whatever the app sends.

    - The log ends with the first messages sent (an app that sends only the new turn,
      or the whole conversation): what follows them is new. When every message sent
      is the log's end and that end is unanswered, it is a retry of a failed call --
      of a question or of tool results alike -- and nothing is new.
    - Else, two messages or more that start as the conversation starts (an app that
      keeps the history itself) branch where they part from it: the user edited a
      message, the app dropped a question whose call failed, or re-sent a request the
      log holds answered (a regenerate, a retry after a gateway timeout) -- its last
      message is then said again. What follows the common start is new, and replaces
      the logged turns after it in the conversation.
    - Else, two messages or more that start as a run of the conversation's turns further
      on, near its end (an app that sends its system prompt and its last N messages),
      branch where they part from that run, the same way: the app regenerated or edited
      its last turn, or kept another of ``n`` choices, and the log holds what it dropped
      after the run. Looked for only when neither rule above finds all the messages
      sent but the last.

    Tool results match in either provider's form: parallel results logged as one turn
    (Anthropic) or a turn each (OpenAI), sent either way (:func:`_results_step`); a
    message is compared by :func:`~contextos.engine.conversation.said` (tool-call
    arguments as parsed JSON). One message alone is never a branch: an app that sends
    only the new turn may well say "yes" twice. The longer match wins (a branch's
    counting its last message, said again, as new); a tie goes to the log's end, then
    to the conversation's start. ``logged`` may be the turns, or their prints
    (:class:`~contextos.engine.conversation.TurnPrint`): a long-lived client matches a
    whole conversation without holding its old turns. Only its end (the last
    :func:`_run_lookback` turns) and as many turns from its start as were sent are
    read, so a match costs the request, not the conversation's length (given a sequence
    that indexes and slices so: a list, a
    :class:`~contextos.engine.conversation.ConversationView`).
    """
    n = len(sent)
    said = [_Sent(m) for m in sent]
    known, tail = _end_overlap(said, logged)
    if tail == len(logged) or n < 2:
        return Match(known, len(logged))
    start, ends = 0, _run(said, logged, 0)
    if max(known, ends[-1][0]) < n - 1:  # neither rule finds all but its last message sent
        inner, inner_ends = _inner_run(said, logged)
        if inner_ends[-1][0] >= MIN_INNER_RUN and inner_ends[-1][0] > ends[-1][0]:
            start, ends = inner, inner_ends
    # all of it said before: its last message (or run of tool results) is said again
    run, turns = next(end for end in reversed(ends) if end[0] < n)
    if ends[-1][0] <= known or not run:
        return Match(known, len(logged))
    return Match(run, start + turns)


def _run(sent: Sequence[_Sent], logged: Sequence[Logged], start: int) -> list[_At]:
    """The leading ``sent`` messages the conversation says from turn ``start`` on, as the
    (messages, turns) counts after each step of the match (:func:`_step`), from (0, 0):
    the last is the whole run. Where no tool results are told apart by form, both counts
    are the same."""
    ends, at = [(0, 0)], (0, start)
    while at[0] < len(sent) and at[1] < len(logged):
        step = _step(sent, logged, at, 1)
        if step is None:
            break
        at = step
        ends.append((at[0], at[1] - start))
    return ends


#: The fewest messages a run further on in the conversation must match for the request
#: to branch there. Why not one: one message said again is a new turn (an app that
#: sends a fixed instruction and the new note, or its last two questions), and taken for
#: a branch, each call cut the turns after that message from the window and deleted
#: their memories (a review: "dentist on Tuesday" gone).
MIN_INNER_RUN = 2


#: Turns before a request's own length that :func:`_inner_run` looks back over, beyond
#: twice that length: the answers an app dropped after the run it sends (one for a
#: regenerate, two or three for a failed question given up).
RUN_LOOKBACK_SLACK = 8


def _run_lookback(sent: Sequence[_Sent]) -> int:
    """How many of the conversation's last turns a trimmed request's run may start in:
    its messages, the log's turns after the message it edits (at most as many again),
    and the slack."""
    return 2 * len(sent) + RUN_LOOKBACK_SLACK


def _inner_run(sent: Sequence[_Sent], logged: Sequence[Logged]) -> tuple[int, list[_At]]:
    """(start, :func:`_run`) of the longest run of the conversation's turns, not from its
    first turn and starting within its last :func:`_run_lookback` turns, that ``sent``
    starts with ((0, [(0, 0)]): none). A tie goes to the later run.

    Why: an app that trims its history (its system prompt and last N messages) and
    regenerates or edits its last turn sends messages the log holds in its middle: the
    log neither ends with them (the dropped answer follows) nor starts with them. All
    of it was logged again as new: the old turns a second time, two assistant turns in
    a row, the rejected answer kept, and every later call sent that conversation (a
    review: 13 messages where the app sent 5)."""
    first = max(1, len(logged) - _run_lookback(sent))
    results = sent[0].role == "tool"  # may open on a run of results in the other form
    best: tuple[int, list[_At]] = (0, [(0, 0)])
    for start in range(len(logged) - 1, first - 1, -1):  # latest first
        role, digest = _role_said(logged[start])
        if not (results and role == "tool") and not sent[0].says(digest):
            continue  # not even its first message: read no further
        ends = _run(sent, logged, start)
        if ends[-1][0] > best[1][-1][0]:
            best = (start, ends)
    return best


def _end_overlap(sent: Sequence[_Sent], logged: Sequence[Logged]) -> _At:
    """(k, m): the first ``k`` messages sent say what the log's last ``m`` turns say, for
    the largest ``k`` ((0, 0): none); all of them only when the log's last turn is
    unanswered (a retry): an answered exchange sent again is a new turn or a re-send,
    never nothing. ``k`` and ``m`` differ where the same tool results are in the other
    form (:func:`_results_step`)."""
    unanswered = bool(logged) and not _answered(logged[-1])
    for k in range(len(sent), 0, -1):
        if k == len(sent) and not unanswered:
            continue
        at: _At | None = (k - 1, len(logged) - 1)
        while at is not None and at[0] >= 0 and at[1] >= 0:
            at = _step(sent, logged, at, -1)
        if at is not None and at[0] < 0:
            return k, len(logged) - 1 - at[1]
    return 0, 0


#: Why a call whose newest turn no request may send is refused (``ValueError``).
UNSENDABLE_NEWEST = (
    "the newest turn cannot be sent: a tool result that answers no tool call still "
    "open in the conversation, or a tool call without its results (the API refuses "
    "both); send tool results right after the reply that made the calls"
)


def _check_newest_turn(
    window: Window, question: Message | None, history: Sequence[Item], newest_key: str | None
) -> None:
    """Refuse a call without a question whose newest turn (``newest_key``: a tool result)
    the window left out: it would ask the model about nothing -- an empty conversation,
    or one that stops before what the call is for. Over the budget, the same clear error
    as a question over the budget.

    Raises:
        BudgetError: the newest turn (with its tool unit) is not in the window; its
            numbers are those the window left it out by (:func:`_newest_shortfall`).
        ValueError: the newest turn cannot be sent at all
            (:func:`~contextos.engine.session.sendable_units`): a tool result that
            answers no tool call still open, or a tool call without its results.
    """
    if question is not None or newest_key is None:
        return
    if any(b.key == newest_key for b in window.blocks):
        return
    newest = next((i for i in history if i.key == newest_key), None)
    if newest is None:
        raise ValueError(UNSENDABLE_NEWEST)
    needs, has = _newest_shortfall(window, history, newest)
    raise BudgetError(
        f"the newest {newest.role} turn does not fit the budget", requested=needs, available=has
    )


def _newest_shortfall(window: Window, history: Sequence[Item], newest: Item) -> tuple[int, int]:
    """(the tokens the window needed to place ``newest``, the room its turns had left),
    as the window counted them when it left the turn out: the turn's tool unit and, when
    left out too, the user turn that opened its exchange (a window keeps a reply only
    with it), each as sent (the open loop's thinking included).

    Why: the error counted the unit alone, as logged, against the turns' whole
    allowance, and told the user "needs 664 tokens, has 667" of a unit the window had
    left out with its 13-token question (a review)."""
    unit = {i.key for i in history if i.group == newest.group} if newest.group else set()
    unit.add(newest.key)
    start = next(n for n, i in enumerate(history) if i.key in unit)
    opener = next((i.key for i in reversed(history[:start]) if i.role == "user"), None)
    needed = unit | {opener} if opener is not None else unit
    needs = sum(o.tokens for o in window.overflow if o.segment == "turns" and o.key in needed)
    turns = next((u for u in window.usage if u.name == "turns"), None)
    has = turns.allowance - turns.tokens if turns is not None else 0
    return needs, has


def _is_question(message: Message) -> bool:
    """Whether a request's last message is a question: a user's message, not tool results."""
    return message.role == "user" and not message.tool_calls


def _is_prefill(message: Message) -> bool:
    """Whether a request's last message is a prefill: an assistant message the model goes
    on from (its reply continues the text), in a wire format where it does so
    (:data:`PREFILL_WIRES`)."""
    wire = message.metadata.get(WIRE_KEY)
    return (
        message.role == "assistant"
        and not message.tool_calls
        and isinstance(wire, tuple)
        and wire[0] in PREFILL_WIRES
    )


def _loop_opener(messages: Sequence[Message]) -> Message | None:
    """The question that opened a request's open tool loop (its last user message that
    is not tool results), when it carries content of its own beyond its text (images,
    documents: :func:`~contextos.llm.media_tokens.media_tokens`); else None."""
    opener = next((m for m in reversed(messages) if _is_question(m)), None)
    if opener is None or not media_tokens(opener):
        return None
    return opener


def _loop_question_at(history: Sequence[Item]) -> int | None:
    """Where the history holds the user turn that opened its open tool loop (the
    question a request without one, a step of the loop, is for), or None."""
    at = open_loop_start([i.role for i in history], question=False) - 1
    message = history[at].message if at >= 0 else None
    return at if message is not None and message.role == "user" else None


def _memory_query(request: ChatRequest, question: Message | None, history: Sequence[Item]) -> str:
    """The text memories are searched for: the request's last user text, else its
    question's, else the open tool loop's question as the history holds it.

    Why the loop's question: an app that sends only new turns sends a step of a tool
    loop as its tool results alone. Within one process the topic block was built when
    the loop's question was asked, but a process (re)started inside the loop searched
    for nothing: its first call went out without the block, and the next question built
    it, a second uncached call (a review). Searched for the loop's question, that call
    is what a whole-history app's is (its request still holds the question)."""
    if text := request.last_user_text():
        return text
    asked = question
    if asked is None and (at := _loop_question_at(history)) is not None:
        asked = history[at].message
    return asked.content if asked is not None and not is_placeholder(asked) else ""


def _loop_question_given(
    history: tuple[Item, ...], messages: Sequence[Message], tokenizer: Tokenizer
) -> tuple[Item, ...]:
    """``history`` (a request without a question: a step of an open tool loop) with the
    question that opened the loop sent as the request gives it, images and documents
    included (its wire form, counted), when the history holds that question as logged.

    Why: a logged user turn is sent as its text (the log keeps no images). The question
    that opened a loop went out with its images, and every later step of the loop sent
    its text alone: an agent asked "what is wrong in this screenshot?" that called a tool
    before answering answered without the screenshot. The app resends that question on
    every step, so its own blocks go out again, as :func:`with_thinking_sent` sends the
    loop's thinking; once a new question closes the loop, the turn is text again."""
    opener = _loop_opener(messages)
    at = _loop_question_at(history)
    if opener is None or at is None:
        return history
    logged = history[at].message
    if logged is None or logged.content != opener.content:
        return history
    message = replace(logged, metadata={**logged.metadata, WIRE_KEY: opener.metadata[WIRE_KEY]})
    item = replace(history[at], message=message, tokens=message_item("", message, tokenizer).tokens)
    return (*history[:at], item, *history[at + 1 :])


def _as_logged(reply: Message, prepared: Prepared, call: CallRecord) -> Message:
    """``reply`` as a commit logs it: after its prefill's text (with the prefill's redo
    mark), mended (:func:`~contextos.engine.message_text.mended`), with the call's usage,
    model, provider, request id, what the provider's server did to the context, and
    ``"complete": False`` when its stream was cut or abandoned. Its text, as mended, is
    what is remembered."""
    prefill = prefill_of(prepared.window)
    if prefill is not None:
        redo = {k: v for k, v in prefill.metadata.items() if k == REDO_KEY}
        reply = replace(
            reply, content=prefill.content + reply.content, metadata={**reply.metadata, **redo}
        )
    reply = mended(reply)
    meta = {
        **reply.metadata,
        "usage": _usage_json(call.usage),
        "model": call.model,
        "provider": call.provider,
    }
    if call.request_id:
        meta["request_id"] = call.request_id
    if call.extra:  # what the provider's server did to the context (applied edits...)
        meta["server_context"] = dict(call.extra)
    if not call.complete:
        meta[COMPLETE_KEY] = False
    return replace(reply, metadata=meta)


def _said_before_prefill(prepared: Prepared) -> Message | None:
    """The user's message a request with a prefill logged last (the prefill itself is
    the start of the reply), to be remembered as a question is; None without a prefill.

    Why: a request that ends with the app's prefill (``"{"`` for a JSON answer) has no
    question (:func:`split_request`), and only a question is remembered: an app that
    always prefills never remembered a word its user said (a review)."""
    if prefill_of(prepared.window) is None or not prepared.logged:
        return None
    last = prepared.logged[-1]
    return last if last.role == "user" and not last.tool_calls else None


def prefill_of(window: Window) -> Message | None:
    """The prefill a window ends with (:func:`context_window`'s ``prefill``), if any."""
    last = window.blocks[-1] if window.blocks else None
    return last.message if last is not None and last.key == PREFILL_KEY else None


@dataclass(frozen=True)
class Parts:
    """A request's messages as :func:`split_request` places them.

    ``new``: those to log before the call (the first marked :data:`REDO_KEY` on a
    branch). ``question``: the user's message sent last (None when the call answers
    tool results or goes on from a prefill), logged once the window fits -- or already
    logged, on a retry. ``prefill``: the start of the reply, logged with it.
    ``retry``: nothing was new. ``resent``: the request said a logged turn again (a
    regenerate): memory holds that question already.
    """

    new: tuple[Message, ...]
    question: Message | None = None
    prefill: Message | None = None
    retry: bool = False
    resent: bool = False


def split_request(sent: Sequence[Message], turns: Sequence[Turn | TurnPrint]) -> Parts:
    """Place a request's messages against the logged conversation ``turns`` (whole or
    their prints; :func:`match_request`)."""
    match = match_request(sent, turns)
    new = list(sent[match.known :])
    resent = False
    if new and match.at < len(turns):  # a branch
        at = turns[match.at]
        resent = len(new) == 1 and _same(new[0], at if isinstance(at, TurnPrint) else at.message)
        new[0] = _redo(new[0], at)
    prefill = new.pop() if new and _is_prefill(new[-1]) else None
    question: Message | None = None
    if prefill is None and new and _is_question(new[-1]):
        question = new.pop()
    elif match.retry(sent) and _is_question(sent[-1]):
        question = sent[-1]  # logged already: the log's unanswered last turn
    return Parts(tuple(new), question, prefill, match.retry(sent), resent)


@dataclass
class _InFlight:
    """A prepared call of a :class:`SessionContext`, until its commit: the turn it
    followed (:attr:`_Split.anchor`), whether it retried that turn's call, and whether a
    retry of it came meanwhile (:meth:`SessionContext._supersede`)."""

    anchor: TurnPrint
    retry: bool = False
    superseded: bool = False
    #: The call's hold on what its commit owes to memory (:meth:`Commits.mark`; empty:
    #: nothing is owed), and the holds of dead calls its commit takes over.
    mark: Mapping[str, Any] = field(default_factory=dict)
    owed: tuple[Owed, ...] = ()


@dataclass(frozen=True)
class _Split:
    """A request as ``SessionContext`` places it: its :class:`Parts`, the history items,
    the window key of the conversation's newest turn (the one a call without a question
    is for), the messages logged so far (as the log holds them), and its anchor."""

    parts: Parts
    history: tuple[Item, ...]
    newest: str | None
    logged: tuple[Message, ...] = ()
    logged_seqs: tuple[int, ...] = ()  # the seq of each of ``logged``
    #: The newest turn the call follows, this call's own where it logged any: its commit
    #: logs and remembers nothing once the log lost it (``SessionContext._commit``).
    anchor: TurnPrint | None = None
    #: The compaction state the history was built in (None without a session): the
    #: window's summary is this state's, read once per call. Why: a summary read again
    #: after another process compacted went out beside the turns the history had kept
    #: from the old state, which it summarised (a review).
    state: HistoryState | None = None
    #: The turns the window shows (:func:`~contextos.engine.recall.shown_turns`), in
    #: ``state``: the memories of those are not retrieved.
    shown: Shown = Shown()
    #: The holds of earlier calls whose commits never ended (:meth:`Commits.find`).
    owed: tuple[Owed, ...] = ()


def _redo(message: Message, said: Turn | TurnPrint) -> Message:
    """``message``, the first new one of a request that branches off the conversation,
    marked as taking the place of ``said`` (and of every turn after it)."""
    return replace(message, metadata={**message.metadata, REDO_KEY: said.seq})


def _strip_wire(message: Message) -> Message:
    """``message`` as the log takes it from the app: without its wire form, nor a hold
    (``owed_by``) it may carry copied from another call's record: a hold is the log's
    own, put there by the call that logs the turn (:func:`~contextos.engine.owed.marked`)."""
    meta = {k: v for k, v in message.metadata.items() if k not in (WIRE_KEY, OWED_KEY)}
    return replace(message, metadata=meta)


def _usage_json(usage: Usage) -> dict[str, int]:
    return {k: int(getattr(usage, k)) for k in Usage.__dataclass_fields__}


def _checked_compaction(compaction: object) -> Strategy | None:
    """``compaction`` when it names a strategy (or is None: never compact).

    Why when the context is made (``wrap()``): an unknown name (``"none"``) was taken,
    and every call failed at its compaction ("unknown strategy"), after the call's new
    turns were logged (a review).

    Raises:
        ValueError: not one of :data:`~contextos.engine.compaction.STRATEGIES` nor None.
    """
    if compaction is None or (isinstance(compaction, str) and compaction in STRATEGIES):
        return compaction
    raise ValueError(
        f"compaction must be one of {', '.join(STRATEGIES)}, or None to never compact; "
        f"not {compaction!r:.60}"
    )


def _same_owner(session: Session, given: Mapping[str, str | None]) -> None:
    """Refuse a ``Session`` whose tenant, user or agent is not the one given beside it
    (``given``: the ids given, None for those not given; the memory's tenant counts).

    Why: the context reads and writes the memories of its session's scope, and the
    user and agent given beside a Session were dropped without a word: wrapped with
    ``user_id="bob"``, a Session of no user remembered bob's exchanges with no user (so
    ``forget(user_id="bob")`` erased none of them), and a Session of ana's sent ana's
    memories in bob's requests."""
    for what, asked in given.items():
        theirs = getattr(session.scope, what)
        if asked is not None and theirs != asked:
            raise ScopeError(
                f"the Session's {what} is {theirs!r} but {what}={asked!r} was given with it: "
                f"make the Session with {what}={asked!r}, or pass its id as session="
            )


def _memory_room(limit: int, tokens: int, placement: str) -> tuple[int, int]:
    """``memory_limit`` and ``memory_tokens``, checked where they are given. Why: a
    ``wrap(..., memory_limit=0)`` was taken and every call then failed deep in the
    search ("limit must be an integer between 1 and 1000"), nothing sent (a review).
    The topic block searches ``TOPIC_SEARCH_OVER`` times the limit."""
    from contextos.memory.api import MAX_LIMIT  # memory imports engine

    most = MAX_LIMIT // (TOPIC_SEARCH_OVER if placement == "topic" else 1)
    if type(limit) is not int or not 1 <= limit <= most:
        raise ValueError(f"memory_limit must be an integer between 1 and {most}, not {limit!r:.40}")
    if type(tokens) is not int or tokens < 1:
        raise ValueError(f"memory_tokens must be a positive integer, not {tokens!r:.40}")
    return limit, tokens


class SessionContext:
    """The default :class:`ContextSource`: a :class:`~contextos.engine.session.Session` plus Memory.

    ``session`` is a Session or a session id (then the log lives in
    ``memory``'s store); without one nothing is logged and the caller's
    messages are the history. ``memory`` may be None (no retrieval).
    ``tools`` (neutral schemas: name, description, input_schema/parameters)
    are placed in the window when the adapter could convert the caller's.

    ``placement``: ``per_call`` puts the retrieved memories after the history
    (``memory_tokens`` of them); ``topic`` keeps a topic block of up to
    ``memory_tokens`` tokens in the cached prefix and a delta of at most as
    many after the history (see the module docstring). The block is capped at
    the memory segment's tokens, not a share of the window: at a 200k window
    ``TOPIC_SHARE`` of the budget would be ~70k tokens of memories, all of
    them paid for (as cache writes) at every refresh. ``cache_ttl_s``: after
    this long without a call the provider's cache is gone, so the block is
    due (default: Anthropic's 5-minute TTL).
    """

    def __init__(
        self,
        *,
        memory: MemoryLike | None = None,
        session: Session | str | None = None,
        store: Any = None,
        tenant: str | None = None,
        user_id: str | None = None,
        agent_id: str | None = None,
        tokenizer: Tokenizer | None = None,
        memory_limit: int = 8,
        memory_tokens: int = 1024,
        remember: bool = True,
        budget: int | None = None,
        compaction: Compaction | None = "summarize",
        history_share: float = 0.6,
        thresholds: Thresholds | None = None,
        layout: Layout | None = None,
        background_commit: bool = True,
        placement: Placement = "per_call",
        cache_ttl_s: float = TTL_SECONDS["5m"],
        clock: Callable[[], float] = time.time,
    ) -> None:
        if placement not in PLACEMENTS:
            raise ValueError(f"placement must be one of {PLACEMENTS}, not {placement!r}")
        self.memory = memory
        self.tokenizer = tokenizer or getattr(memory, "tokenizer", None) or default_tokenizer()
        tenant = tenant or getattr(memory, "tenant", None)
        given = Scope(tenant=tenant or "default", user_id=user_id, agent_id=agent_id)
        if isinstance(session, Session):  # the ids checked by Scope's one rule first
            _same_owner(session, {"tenant": tenant, "user_id": user_id, "agent_id": agent_id})
        tenant = given.tenant
        self.session = self._session(session, store, tenant, user_id, agent_id)
        self._committer = _Committer(background_commit, _log_of(self.session))
        self._commits = Commits(self.session) if self.session is not None else None
        wait_on_close = getattr(memory, "wait_on_close", None)  # a Memory; not MemoryLike's
        if background_commit and wait_on_close is not None:
            wait_on_close(self._committer)  # its close waits for the last reply's commit
        #: Whose memories this context reads and writes: the session's scope, else the
        #: user/agent given.
        self.scope = self.session.scope if self.session is not None else given
        if memory is not None and not self.scope_ok:
            raise ScopeError(
                "memory needs a scope to read and write: pass user_id, agent_id or a session"
            )
        self.memory_limit, self.memory_tokens = _memory_room(memory_limit, memory_tokens, placement)
        self.remember = remember
        #: Also remember the assistant's replies (off for canned offline answers).
        self.remember_replies = True
        #: Remember the facts the extractor finds in what was said
        #: (``Memory.add(infer=True)``), not the messages (``contextos chat``), as the
        #: user's (and agent's) facts, not this session's: a window leaves out this
        #: session's memories (its log holds what was said), and a fact is for every
        #: later session. Done in the commit, so a ``forget`` during the call leaves no
        #: fact behind either.
        self.infer = False
        self.budget = checked_budget(budget) if budget is not None else None
        self.compaction: Strategy | None = _checked_compaction(compaction)
        self.history_share = _checked_share(history_share)
        if thresholds is not None and not isinstance(thresholds, Thresholds):
            raise TypeError(f"thresholds must be a Thresholds, not {type(thresholds).__name__}")
        self.thresholds = thresholds
        self.layout = layout or Layout()
        self.placement: Placement = placement
        self.cache_ttl_s = cache_ttl_s
        self.clock = clock
        #: The cached topic memory block (``placement="topic"`` with memory attached).
        self.topic: TopicBlock | None = None
        if placement == "topic" and memory is not None:
            embedder = getattr(memory, "embedder", None)
            if embedder is None or not callable(getattr(embedder, "embed", None)):
                raise ConfigError('placement="topic" needs a memory with an embedder')
            self.topic = TopicBlock(embedder)
        self._last_call: float | None = None
        #: Each prepared call's anchor (:attr:`_Split.anchor`) and whether a retry of it
        #: came meanwhile (:class:`_InFlight`), by ``id`` of its Prepared, for its commit:
        #: the turn whose loss tells that the session was erased meanwhile.
        self._anchors: dict[int, _InFlight] = {}
        #: Gives a call's system parts (``ChatRequest.system``) again once its compaction
        #: is done, before its window is built; None: as sent. For a part that shows what
        #: the compaction point decides (the tool loop's pinned core-memory snapshot,
        #: :class:`~contextos.agent.core_memory.CorePrefix`): rendered before the call,
        #: it moved one call after the compaction that rebuilt the prefix anyway, and the
        #: compacting call showed the model its edit nowhere (a review).
        self.system_after_compaction: Callable[[tuple[str, ...]], tuple[str, ...]] | None = None

    def _session(
        self,
        session: Session | str | None,
        store: Any,
        tenant: str,
        user_id: str | None,
        agent_id: str | None,
    ) -> Session | None:
        if session is None or isinstance(session, Session):
            return session
        if not isinstance(session, str):
            raise TypeError("session must be a contextos Session or a session id string")
        store = store if store is not None else getattr(self.memory, "store", None)
        if store is None:
            raise ValueError("a session id needs a store to log into: pass memory= or store=")
        return Session(
            store,
            session,
            tenant=tenant,
            user_id=user_id,
            agent_id=agent_id,
            tokenizer=self.tokenizer,
            hold="window",  # a long-lived client holds the window's turns, not the log
        )

    @property
    def log_key(self) -> LogKey | None:
        """The session log this context writes (None without a session): a wrapped
        client's streams are listed by it, so that another client's call of the log
        reports those whose replies its window needs before it waits for their commits
        (:func:`contextos.providers.streams._settle_log`)."""
        return self._committer.log

    @property
    def scope_ids(self) -> ScopeIds:
        """The memory scope as ``Memory``'s keywords: the session's, or the user/agent given."""
        return self.scope.ids()

    @property
    def _owner_ids(self) -> ScopeIds:
        """The user and agent of the scope, without the session (the scope itself when
        it names neither): whose facts :attr:`infer` remembers."""
        owner = scope_ids(self.scope.user_id, self.scope.agent_id)
        return owner if self.scope.user_id or self.scope.agent_id else self.scope_ids

    @property
    def scope_ok(self) -> bool:
        return self.scope.is_scoped()

    @property
    def _owes(self) -> bool:
        """Whether a call's commit remembers anything (:meth:`_remember`), so that what
        it logs is owed to memory until the commit ends (:mod:`.owed`)."""
        return self.remember and self.memory is not None and self.scope_ok

    @property
    def session_id(self) -> str | None:
        return self.session.session_id if self.session is not None else None

    # -- before the call ---------------------------------------------------------
    def prepare(self, request: ChatRequest, *, reserve_tokens: int) -> Prepared:
        # The previous reply is in the log before this window is built: another wrapped
        # client's of this session in this process (a client per request, the other
        # provider's), then this client's own (raising its failure).
        self._committer.wait_for_others()
        self.flush()
        model = model_info(request.model)
        budget = self.input_budget(model, reserve_tokens)
        now = self.clock()
        if self.topic is not None and (
            self._last_call is None or now - self._last_call > self.cache_ttl_s
        ):
            self.topic.due = True  # nothing of the prefix is cached anymore: refresh free
        self._last_call = now
        restarts = self.session.log_restarts if self.session is not None else 0
        pinned = self._rules(budget)
        mark = self._commits.mark() if self._commits is not None and self._owes else {}
        split = self._log_and_split(request, budget, pinned, mark)
        if self.system_after_compaction is not None:
            request = replace(request, system=self.system_after_compaction(request.system))
        question, history, prefill = split.parts.question, split.history, split.parts.prefill
        if question is None and prefill is None:  # a step of an open tool loop
            history = _loop_question_given(history, request.messages, self.tokenizer)
        if self.topic is not None and self.session and self.session.log_restarts != restarts:
            # The log changed under the session (an erasure): the block may hold
            # memories erased with it, so it is rebuilt from a fresh search.
            self.topic.hits, self.topic.due = [], True
        query = _memory_query(request, question, history)
        layout = self.layout
        topic: list[Hit] = []
        summary = split.state.summary if split.state is not None else None
        known = split.shown
        if self.topic is not None:
            layout, topic, hits = self._topic(self.topic, query, budget, known, pinned)
        else:
            hits = self._hits(query, known, pinned)
        if prefill is not None:
            hits = []  # they would follow the prefill, and the model would answer them
        window = context_window(
            budget,
            tokenizer=self.tokenizer,
            question=question,
            min_cache_tokens=model.min_cache_tokens,
            system=request.system[0] if request.system else "",
            rules=request.system[1:],
            stored_rules=pinned.beside(request.system[1:]),
            tools=request.tools,
            summary=summary,
            turns=history,
            memories=hits,
            topic=topic,
            layout=layout,
            memory_header=MEMORY_HEADER,
            topic_header=TOPIC_HEADER,
            prefill=prefill,
        )
        _check_newest_turn(window, question, history, split.newest)
        logged, seqs, anchor = split.logged, split.logged_seqs, split.anchor
        if question is not None and self.session is not None and not split.parts.retry:
            # durable before the call, once it fits
            owes = mark if not split.parts.resent else {}  # a re-sent one is not remembered
            [asked] = self.session.add(marked(_strip_wire(question), owes))
            logged, seqs = logged + (asked.message,), seqs + (asked.seq,)
            anchor = turn_print(asked)
        prepared = Prepared(
            window, model, question, logged, resent=split.parts.resent, logged_seqs=seqs
        )
        if anchor is not None:  # for its commit; dropped with the Prepared if none comes
            if split.parts.retry:
                self._supersede(anchor)
            self._anchors[id(prepared)] = _InFlight(
                anchor, retry=split.parts.retry, mark=mark, owed=split.owed
            )
            weakref.finalize(prepared, self._anchors.pop, id(prepared), None)
        return prepared

    def _supersede(self, anchor: TurnPrint) -> None:
        """Mark this client's calls still in flight on ``anchor`` as given up: a retry of
        them is being prepared. Their commits treat their replies as abandoned (a cut
        stream's: logged as not complete, not remembered, left out of later windows).

        Why: an asyncio app that stops waiting (``wait_for`` times out, the task is
        cancelled) cannot stop a call running in ``to_thread``; it runs to its end and
        commits. The user's retry was recognised and logged nothing again, but both
        replies were logged and remembered as answers to the one question, and the model
        was sent both (a review). The reply kept is the retry's: the one the user saw."""
        for call in list(self._anchors.values()):
            if call.anchor.seq == anchor.seq and call.anchor.ident == anchor.ident:
                call.superseded = True

    def input_budget(self, model: ModelInfo, reserve_tokens: int) -> int:
        """The window's budget for a call to ``model`` that keeps ``reserve_tokens`` free
        (its output and what is sent outside the window; 0: the model's
        :meth:`~contextos.llm.models.ModelInfo.default_output_reserve`).

        An explicit ``budget`` is the input budget, as given: the reserve is not taken
        from it, only checked against the model's window (a registered model refuses a
        budget over its window less the reserve; an unknown model's window is assumed, so
        its budget is used as given). Without one, the budget is the window less the
        reserve.

        Raises:
            BudgetError: ``budget`` is over the model's window less the reserve, or (no
                ``budget``) the reserve leaves no room in the window at all.
        """
        reserve = reserve_tokens or model.default_output_reserve()
        if self.budget is None:
            largest = model.largest_budget(reserve)
            if largest <= 0:  # else a compaction step's "give a budget of at least ..."
                # An unknown model's window is the stand-in's: said as assumed, with the
                # fixes that work (a review: stated as fact, it sent the user to ask for
                # fewer output tokens from a model that takes them).
                window, fix = (
                    (f"{model.name}'s context window is", "ask for fewer output tokens")
                    if model.registered
                    else (
                        f"{model.name} is not in contextos's model registry, so its context "
                        "window is assumed to be",
                        "declare the model with contextos.llm.models.register_model("
                        "ModelInfo(...)) to budget it by its real window, give an explicit "
                        "budget= (used as given for an unknown model), or ask for fewer "
                        "output tokens",
                    )
                )
                raise BudgetError(
                    f"{window} {model.context_window:,} tokens and "
                    f"{reserve:,} are reserved for the output (max_tokens), which leaves no "
                    f"room for the input: {fix}",
                    requested=reserve,
                    available=model.context_window,
                )
            return largest
        model.check_budget(self.budget, reserve)
        return self.budget

    def _log_and_split(
        self, request: ChatRequest, budget: int, pinned: Rules, mark: Mapping[str, Any]
    ) -> _Split:
        """Log what is new but the question and a prefill (:func:`split_request`), the
        turns its commit will remember carrying the call's hold ``mark``, then build the
        history: the conversation as the request continues it (beside the stored rules
        ``pinned``), and find the holds of earlier calls owed in it."""
        parts, added = self._log_new(request, budget, mark)
        new = parts.new
        if self.session is None:
            items = tuple(message_item(f"msg:{i}", m, self.tokenizer) for i, m in enumerate(new))
            return _Split(parts, items, items[-1].key if items else None)
        logged, logged_seqs = tuple(t.message for t in added), tuple(t.seq for t in added)
        # A call without a question (tool results) sends the open loop's thinking:
        # compaction costs it too (``open_loop``).
        open_loop = parts.question is None and parts.prefill is None
        room = self._history_room(request, parts, budget, pinned)
        self._compact(room, int(budget * self.history_share), request.server_edits, open_loop)
        state = self.session.state()  # the call's one read of it (:attr:`_Split.state`)
        prints = self._conversation()
        kept = len(prints)  # the conversation's first ``kept`` turns go in the history
        if parts.retry and parts.question is not None:
            kept -= 1  # the question is the log's last turn, and goes last
        pending = parts.question or parts.prefill  # not logged yet: its branch is cut here
        redo = pending.metadata.get(REDO_KEY) if pending is not None else None
        if isinstance(redo, int):  # the prints are in seq order
            kept = min(kept, bisect_left(prints, redo, key=attrgetter("seq")))
        # The window's turns, whole: the conversation from the history's start on, cut
        # where the prints were (a turn leaves the conversation by its seq).
        end = prints[kept - 1].seq if kept else -1
        read = self.session.window_turns(state)
        said = conversation(read)
        turns = [t for t in said if t.seq <= end]
        items = turn_items(turns, state, self.tokenizer)
        anchor = turn_print(added[-1]) if added else self._own_last(prints)
        newest = f"turn:{end}" if kept else None
        shown = shown_turns(read, state, self.session.session_id)
        owed = self._owed_in(said, mark)
        return _Split(parts, items, newest, logged, logged_seqs, anchor, state, shown, owed)

    def _owed_in(self, said: Sequence[Turn], mark: Mapping[str, Any]) -> tuple[Owed, ...]:
        """The holds of earlier calls owed in the conversation ``said`` (none when this
        context remembers nothing: what it would owe, it does not do either), of this
        context's user and agent only.

        Why only theirs: a commit remembers in its caller's scope (:meth:`_remember`), so
        in a session two users share, Ana's call took over Bob's killed commit and
        stored "Bob: my PIN hint is the dog's name." as Ana's memory, which Bob's
        scope, and his ``forget``, never found (a review). Bob's next call does it."""
        own = mark_of(mark)
        if self._commits is None or own is None or self.session is None:
            return ()
        scope = self.session.scope
        author = (scope.user_id, scope.agent_id)
        return self._commits.find(said, own[0], author)

    def _own_last(self, prints: Sequence[TurnPrint]) -> TurnPrint | None:
        """The log's last turn when this context's user logged it, else None: the anchor
        of a call that logs nothing new (a retry, an answer to the last turn). In a
        session two users share, the last turn may be the other's, and its erasure
        (``forget`` of that user) is no erasure of this call's question."""
        if not prints or self.session is None:
            return None
        try:
            last = self.session.turn(prints[-1].seq)
        except NotFound:
            return None
        if last.user_id != self.session.scope.user_id:
            return None
        return prints[-1]

    def _log_new(
        self, request: ChatRequest, budget: int, mark: Mapping[str, Any]
    ) -> tuple[Any, list[Turn]]:
        """Split ``request`` against the log (:func:`split_request`) and log what it
        holds that the log lacks (not its question or prefill), only while the log is
        as read: (the split, the turns logged). Those its commit remembers
        (:meth:`_said_beside`) carry the call's hold ``mark`` (:mod:`.owed`).

        Why only as read: an app that sends its whole history may send it through two
        wrapped clients of one session (a web request each, two workers). The second
        read the log before the first logged its reply, found the reply in the app's
        history, and logged it again after the first had: the model saw its answer
        twice and the log forked (a review: in 6 to 20 runs of 20). Another writer's
        turns in between make the split be made again from the log as it is then.

        Raises:
            BudgetError: the request answers a tool result whose turn can never fit the
                ``budget`` (refused before anything is logged).
            Conflict: other writers appended every time it tried."""
        for attempt in range(_APPEND_TRIES):
            conversation, read = self._read_conversation()
            parts = split_request(request.messages, conversation)
            new = parts.new
            if parts.question is None and parts.prefill is None and new:  # a tool result
                last = message_item("newest", new[-1], self.tokenizer)
                if last.tokens > budget - TOKENS_PER_REPLY:  # never fits
                    raise BudgetError(
                        f"the newest {last.role} turn does not fit the budget",
                        requested=last.tokens,
                        available=budget - TOKENS_PER_REPLY,
                    )
                self._check_results_sendable(conversation, new)
            if self.session is None or not new:
                return parts, []
            try:
                owes = [marked(_strip_wire(_tool_output(m)), self._owed_mark(m, mark)) for m in new]
                return parts, self.session.add(*owes, newest=read)
            except Conflict:
                if attempt == _APPEND_TRIES - 1:
                    raise
                # calls of one client shared by threads append meanwhile: let them
                time.sleep(random.uniform(0, _APPEND_PAUSE_S * (attempt + 1)))
        raise AssertionError("unreachable")

    def _owed_mark(self, message: Message, mark: Mapping[str, Any]) -> Mapping[str, Any]:
        """``mark`` for a message this call logs that its commit remembers (the roles
        :meth:`_said_beside` keeps), else none."""
        roles = ("user", "assistant") if self.remember_replies else ("user",)
        return mark if message.role in roles else {}

    def _check_results_sendable(
        self, conversation: Sequence[TurnPrint], new: Sequence[Message]
    ) -> None:
        """Refuse new tool results sent last that answer no tool call open after the
        conversation (:func:`~contextos.engine.session.sendable_units`; a branch's: up to
        the turn its first new message takes the place of), before they are logged.
        Reads the conversation's turns from its last reply on (one, mostly).

        Why before: such a call raised ``ValueError`` after its results were logged, and
        the log kept turns no request could send (a review: the same results logged
        twice, when the other provider's retry of them was not recognised).

        Raises:
            ValueError: :data:`UNSENDABLE_NEWEST`.
        """
        if self.session is None or new[-1].role != "tool":
            return
        redo = redo_of(new[0])
        if redo is not None:  # a branch (a regenerate of the answer to these results)
            conversation = conversation[: bisect_left(conversation, redo, key=attrgetter("seq"))]
        replies = (k for k in range(len(conversation) - 1, -1, -1) if _answered(conversation[k]))
        start = next(replies, len(conversation))
        try:
            tail = [self.session.turn(p.seq) for p in conversation[start:]]
        except NotFound:
            return  # erased meanwhile: the append finds out
        after = conversation[-1].seq + 1 if conversation else 0  # not logged: any seq
        now = datetime.now(UTC)
        sent = [Turn("", after + k, m, 0, now) for k, m in enumerate(new)]
        if sent[-1].seq not in {t.seq for unit in sendable_units([*tail, *sent]) for t in unit}:
            raise ValueError(UNSENDABLE_NEWEST)

    def _read_conversation(self) -> tuple[Sequence[TurnPrint], int]:
        """The conversation's prints and the number of the last turn read with them
        (-1: none), in one read: another thread sharing the Session could read further
        between two, and the append would be checked against turns the split never saw."""
        if self.session is None:
            return [], -1
        return self.session.conversation_read()

    def _conversation(self) -> Sequence[TurnPrint]:
        """The prints of the logged turns that are part of the conversation
        (:meth:`~contextos.engine.session.Session.conversation_prints`): matching a
        request to the log reads them, not the turns (the Session holds only the
        window's turns whole), and only as far as the request needs
        (:func:`match_request`), so a call costs what it sends, not the log."""
        if self.session is None:
            return []
        return self.session.conversation_prints()

    def _history_room(self, request: ChatRequest, parts: Any, budget: int, pinned: Rules) -> int:
        """The tokens the history (summary and turns) may take: ``history_share`` of the
        budget, and never more than the instructions (the stored rules ``pinned``
        too), the tools, the question, a topic block and the memories' floor leave it
        (the window serves those first). It may
        be less than compaction can keep to, or none at all (a question that fills the
        budget): :meth:`_compact` then leaves the log as it is for this call.

        Compacting against the share alone, a system prompt and tools of more than about
        half the budget left the turns less room than compaction aimed at: compaction
        never fired, and the window cut the oldest turn on every call instead, so the
        cached history slid forward and was missed on most calls."""
        tk = self.tokenizer
        fixed = TOKENS_PER_REPLY + sum(tool_item(t, tk).tokens for t in request.tools)
        fixed += sum(text_item("system", s, tk).tokens for s in request.system if s.strip())
        fixed += sum(text_item("rule", s, tk).tokens for s in pinned.texts)
        pending = parts.question or parts.prefill
        if pending is not None:
            asked = message_item("question", pending, tk).tokens
            # Said here, as the window would say it: compacting the history to the 1
            # token left failed first, with the summary's share named as the cause
            # ("give a budget of at least 5") of a 400-page PDF's refusal (a review).
            if fixed >= budget:
                raise BudgetError(
                    "the instructions and tools alone do not fit the budget: send fewer "
                    "or shorter ones, or give a larger budget",
                    requested=fixed,
                    available=budget,
                )
            if asked > budget - fixed:
                what = "question" if parts.question is not None else "prefill (the last turn)"
                raise BudgetError(
                    f"the {what} (its text, images and documents) does not fit beside the "
                    "instructions and tools: send less, or give a larger budget",
                    requested=asked,
                    available=budget - fixed,
                    segment="question" if parts.question is not None else "prefill",
                )
            fixed += asked
        else:  # a step of an open tool loop sends its question's images and documents
            opener = _loop_opener(request.messages)
            fixed += media_tokens(opener, tk.count) if opener is not None else 0
        fixed += int(self.layout.memories_floor * budget)
        if self.topic is not None:
            _, layout = topic_layout(budget, budget, 0.0, block_tokens=self.memory_tokens)
            fixed += int(layout.topic_ceiling * budget)
        return min(int(budget * self.history_share), budget - fixed)

    def _compact(
        self,
        history_budget: int,
        share: int,
        server_edits: Sequence[str] = (),
        open_loop: bool = False,
    ) -> None:
        """Compact the session log when it passes its trigger for ``history_budget``
        tokens (:meth:`_history_room`), the open tool loop's thinking counted when the
        window sends it (``open_loop``: :meth:`Session.compact`).

        When what the call sends besides the history (its question, instructions, a topic
        block's ceiling) leaves the history less than the strategy can compact to
        (:func:`~contextos.engine.compaction.budget_refusal`: under 5 tokens for
        ``summarize``), while its ``share`` of the budget would not, this call does not
        compact: its window leaves out the turns it cannot place (the log keeps them),
        and gives a topic block what is left. Why: a question that fitted beside the
        instructions was refused, the summary's share blamed ("give a budget of at
        least 5") whatever the budget, under the default ``summarize`` (a review; with
        ``placement="topic"`` whenever the question left less than the topic block's
        ceiling, up to 1,024 tokens). A budget whose share itself is too small is still
        refused, as it names the cause.

        Never twice over with the provider's server: when the call asks the
        server to clear tool results (``clear_tool_uses_20250919``), contextos's
        own ``clear_tool_results`` is off for that call, and when it asks the
        server to compact (``compact_20260112``), contextos does not compact at
        all -- the server's summary (the ``compaction`` block) replaces it.
        """
        if self.session is None or self.compaction is None:
            return
        if "compact_20260112" in server_edits:
            return
        if self.compaction == "clear_tool_results" and "clear_tool_uses_20250919" in server_edits:
            return
        memory = self.memory if self.compaction == "offload" else None
        strategy: Strategy = (
            self.compaction if memory is not None or self.compaction != "offload" else "truncate"
        )
        refusal = budget_refusal(history_budget, strategy, self.thresholds)
        if refusal is not None and history_budget < share:
            return  # no room this call: the window leaves out what it cannot place
        done = self.session.compact(
            history_budget,
            strategy,
            thresholds=self.thresholds,
            memory=memory,
            open_loop=open_loop,
        )
        if done.plan is not None and self.topic is not None:
            self.topic.due = True  # the prefix changes here anyway: refresh with it

    def _rules(self, budget: int) -> Rules:
        """The scope's stored rules this call's window of ``budget`` tokens pins after
        the request's own (:func:`~contextos.engine.recall.scope_rules`): read on every
        call, so a rule another process stored, closed or deleted is in the next
        request as it is; none without memory or a scope."""
        if self.memory is None or not self.scope_ok:
            return Rules()
        return scope_rules(
            self.memory,
            scope=self.scope,
            session=self.session,
            tokens=int(RULES_SHARE * budget),
            tokenizer=self.tokenizer,
        )

    def _hits(
        self,
        query: str,
        known: Shown,
        pinned: Rules,
        *,
        limit: int | None = None,
        tokens: int | None = None,
    ) -> list[Hit]:
        """The memories retrieved for ``query`` (:func:`~contextos.engine.recall.recall`,
        the rule every window of a session shares), less those the history already shows
        and the stored rules the window pins (``pinned``).

        ``known``: the turns the window shows, verbatim or summarised (:attr:`_Split.shown`).
        A memory of this session that names its turn (an exchange remembered after its
        call, a turn ``offload`` archived) is left out only while the window still shows
        that turn. Leaving out every memory of this session dropped such turns for good
        once compaction took them out of the history: retrieval never brought them back.
        """
        limit = self.memory_limit if limit is None else limit
        if self.memory is None or not query.strip() or not self.scope_ok:
            return []
        tokens = self.memory_tokens if tokens is None else tokens
        return recall(
            self.memory,
            query,
            scope=self.scope,
            session=self.session,
            shown=known,
            limit=limit,
            tokens=tokens,
            pinned=pinned,
        )

    def _topic(
        self, block: TopicBlock, query: str, budget: int, known: Shown, pinned: Rules
    ) -> tuple[Layout, list[Hit], list[Hit]]:
        """(layout, block, delta) for ``placement="topic"`` (see :mod:`contextos.engine.topic`).

        The block gets ``memory_tokens`` and ``memory_limit`` (what the
        per-call memories would have had), capped at ``TOPIC_SHARE`` of small
        budgets; the shared :func:`~contextos.engine.topic.topic_layout` sizes
        the rest. Twice as many are searched, so that memories the history
        already shows can be dropped and the block still filled.
        """
        _, layout = topic_layout(budget, budget, 0.0, block_tokens=self.memory_tokens)
        # Only the memory shares change: the history budget is history_share's, and
        # the summary keeps the caller's ceiling.
        layout = replace(
            self.layout,
            topic_ceiling=layout.topic_ceiling,
            memories_ceiling=layout.memories_ceiling,
            memories_floor=layout.memories_floor,
            memories_priority=layout.memories_priority,
        )
        block_tokens = int(layout.topic_ceiling * budget)
        self._check_block(block)
        fresh = self._hits(
            query,
            known,
            pinned,
            limit=self.memory_limit * TOPIC_SEARCH_OVER,
            tokens=block_tokens * TOPIC_SEARCH_OVER,
        )
        hits, delta, _ = topic_memories(
            block, query, fresh, known.shows, block_tokens, limit=self.memory_limit
        )
        return layout, hits, delta

    def _check_block(self, block: TopicBlock) -> None:
        """Read the topic block's memories again, and make the block due when one was
        deleted, closed or changed since it was retrieved (:meth:`TopicBlock.drop_changed`).

        Why: between refreshes the block is sent as it was retrieved, to keep the cached
        prefix; a memory the app erased (``delete(purge=True)``) or corrected (``update``)
        was sent as it was, call after call, for as long as the user kept chatting. One
        read of at most ``memory_limit`` ids a call; an unchanged block stays as it is.
        A memory without a store (a bare ``MemoryLike``) is not read again.
        """
        store = getattr(self.memory, "store", None)
        if not block.hits or store is None:
            return
        tenant = getattr(self.memory, "tenant", self.scope.tenant)
        block.drop_changed(store.get_many(tenant, [h.record.id for h in block.hits]))

    # -- after the call --------------------------------------------------------------
    def commit(self, prepared: Prepared, call: CallRecord) -> None:
        """Log the reply and remember the exchange (on a background thread by default)."""
        self._committer.submit(self._commit, prepared, call)

    def failed(self, prepared: Prepared) -> None:
        """The call of ``prepared`` failed before any reply came (the provider refused it,
        timed out, was overloaded): remember its question, as a cut stream's is.

        Why: the question is in the session's log (it was logged before the call) and the
        model is sent it on the next call, but no commit ran, so it never reached memory,
        and the user's next session never found "I am allergic to peanuts" said just
        before a 529 (a review). A stream cut after its first byte remembered it. Once
        only: the commit of a retry that answers it finds the question's turn
        remembered (:meth:`_question_of`) and leaves it out."""
        call = CallRecord("", "", Usage(), None, False, 0.0, complete=False)
        self._committer.submit(self._commit, prepared, call)

    def flush(self) -> None:
        """Wait for the last commit; re-raise its error if it failed."""
        self._committer.wait()

    def _commit(self, prepared: Prepared, call: CallRecord) -> None:
        """Do what earlier calls' commits owed and never did (:meth:`_recover`), then
        this call's (:meth:`_log_and_remember`), then settle this call's hold: its turns
        are owed no more (:mod:`.owed`). Not settled when it raised: the next call of
        another process, or after this one's lease, does it."""
        in_flight = self._anchors.pop(id(prepared), None)
        if in_flight is not None:
            self._recover(in_flight)
        reply_seq = self._log_and_remember(prepared, call, in_flight)
        if in_flight is not None:
            self._settle(in_flight, prepared, call, reply_seq)

    def _log_and_remember(
        self, prepared: Prepared, call: CallRecord, in_flight: _InFlight | None
    ) -> int | None:
        """Log the reply; remember the question, the reply when it came whole, and what
        the call logged beside its question (:meth:`_said_beside`); the seq the reply
        was logged at (None: not logged).

        A reply with nothing in it (no text, no tool call, no metadata such as a
        compaction block) is not logged: sent back, it would be an empty turn,
        which the API refuses; the question it followed is remembered. A reply
        whose stream was cut or abandoned (``call.complete`` False) is logged with
        ``"complete": False`` in its metadata -- it is what the user saw -- but it is
        no answer: it is not remembered, and later calls leave it out of the
        conversation (:func:`in_conversation`), so the app's retry of the question is
        recognised as a retry and the fragment is never sent back. The question is
        remembered all the same: it was said whole (a "stop" button, a closed tab
        lost "I am vegetarian" with the recipe cut after it; a review), and once only:
        a commit that finds a reply already logged after the question (a retry's, or
        the cut one's) leaves it out (:meth:`_answer_after`). A cut reply reported
        after its retry's whole answer is not logged. The reply to a
        re-sent request (``prepared.resent``) is logged after its re-sent question and
        remembered alone: memory holds the question from its first answer. A reply
        that goes on from a prefill is logged as one turn, the prefill's text first:
        that is the answer the app holds and sends back.

        The reply is logged and remembered as it came, whatever is in it: its lone
        surrogates and NUL characters become U+FFFD
        (:func:`~contextos.engine.message_text.mended`), and a text longer than a memory may
        hold is remembered in pieces. Refused at the log or the memory, it was lost,
        and the error failed the session's next call.

        A ``forget`` that erased the session while the model answered (the turn the call
        followed, :attr:`_Split.anchor`, is gone from the log) takes the call with it:
        nothing is logged or remembered. It used to log the reply as the first turn of
        the erased session and write the erased question back into memory, searchable.
        The reply is logged only while the log holds that turn, checked in the append's
        own transaction (``Store.append_turns(after=...)``); the log is read again after
        the memory writes, for an erasure that landed between the append and them
        (:meth:`_unwrite`).
        """
        anchor = in_flight.anchor if in_flight is not None else None
        if in_flight is not None and in_flight.superseded:
            call = replace(call, complete=False)  # given up for a retry: abandoned
        reply = call.reply
        if reply is not None and not (reply.content or reply.tool_calls or reply.metadata):
            # Nothing to log (a stream stopped before any text, a model that answered
            # nothing); the question is remembered all the same: a complete empty reply
            # returned here, and "I am vegetarian" never reached memory (a review).
            reply = None
        session = self.session
        if session is None:
            anchor = None  # no log: nothing to follow
        followed = self._logged_turn(anchor) if anchor is not None else None
        if anchor is not None and followed is None:
            return None  # the session was erased during the call: its answer goes with it
        # Before this reply is logged: whether a commit already answered the question.
        answer = (
            self._answer_after(anchor, logged_here=bool(prepared.logged))
            if anchor is not None
            else None
        )
        beside = self._said_beside(prepared)
        retried = in_flight is not None and in_flight.retry
        if (
            answer is not None
            and COMPLETE_KEY not in answer.metadata
            and (not call.complete or retried or answer.metadata.get(RETRY_REPLY_KEY))
        ):
            # A cut reply reported after its retry's whole answer (a request cancelled
            # while its stream's read was blocked): logged at the end, it read as the
            # answer's sequel (a review). Nor a whole reply of a retry and of the call
            # it retried, made by another client or process (which this client could
            # not mark given up, :meth:`_supersede`), after the other's whole answer:
            # the question has one answer, the first logged. What this call logged
            # beside it is this call's to remember.
            self._unwrite_if_erased(anchor, self._remember(*beside))
            return None
        answered = answer is not None
        reply_seq: int | None = None
        if reply is not None:
            reply = _as_logged(reply, prepared, call)
            if anchor is not None:
                marks = self._reply_marks(anchor, call, in_flight)
                reply = replace(reply, metadata={**reply.metadata, **marks})
            if session is not None:
                try:
                    reply_seq = self._log_reply(session, reply, followed, anchor)
                except NotFound:
                    return None  # erased since the read above: nothing was logged
        superseded = in_flight is not None and in_flight.superseded
        question, asked = (
            (None, None) if answered else self._question_of(prepared, anchor, superseded)
        )
        whole = reply if call.complete and self.remember_replies else None
        remembered = self._remember(*beside, (question, asked), (whole, reply_seq))
        if anchor is not None:
            self._forget_cut_branch(prepared, anchor, reply, reply_seq)
        self._unwrite_if_erased(anchor, remembered)
        return reply_seq

    def _reply_marks(
        self, anchor: TurnPrint, call: CallRecord, in_flight: _InFlight | None
    ) -> dict[str, Any]:
        """The metadata a commit writes on the reply it logs after ``anchor``: the turn
        it answers, whether it is a retry's, and the call's hold when it is owed."""
        marks: dict[str, Any] = {REPLY_TO_KEY: anchor.seq}
        if in_flight is not None and in_flight.retry:
            marks[RETRY_REPLY_KEY] = True
        if in_flight is not None and self._marks_reply(call, in_flight):
            marks.update(in_flight.mark)
        return marks

    def _marks_reply(self, call: CallRecord, in_flight: _InFlight | None) -> bool:
        """Whether the reply a commit logs carries the call's hold: it is remembered
        (whole, and replies are), so a commit killed between its append and its memory
        write owes it too."""
        return bool(in_flight is not None and in_flight.mark and call.complete) and (
            self.remember_replies
        )

    def _recover(self, in_flight: _InFlight) -> None:
        """Remember what the dead calls' commits owed (:attr:`_InFlight.owed`, found by
        this call's prepare): each hold taken over first (:meth:`Commits.take`: of two
        processes, one does it), then its turns still logged and not in memory yet (the
        dead commit may have written some), then settled. What an erasure took
        meanwhile is purged again, as a commit's own writes are.

        Why in this call's commit: it runs off the caller's path, and before this call's
        own, so a retried question the dead call owed is remembered once
        (:meth:`_question_of` finds it)."""
        commits = self._commits
        taker = mark_of(in_flight.mark)
        if commits is None or taker is None or not self._owes:
            return
        for owed in in_flight.owed:
            if not commits.take(owed, taker[0]):
                continue
            turns = [t for t in owed.turns if self._logged_turn(turn_print(t)) is not None]
            said = [(t.message, t.seq) for t in turns if not self._remembered(t.seq)]
            remembered = self._remember(*said)
            if any(self._logged_turn(turn_print(t)) is None for t in turns):
                self._unwrite(remembered)  # erased while they were written
            commits.settle(owed.holder, owed.turns[-1].seq)

    def _settle(
        self, in_flight: _InFlight, prepared: Prepared, call: CallRecord, reply_seq: int | None
    ) -> None:
        """Settle the call's hold once its commit ended, when it marked a turn: its
        newest marked turn's seq with it (the reply's, else the newest this call logged).
        Not for a session erased during the call (its meta stays as the erasure left it)."""
        if self._commits is None or (holder := mark_of(in_flight.mark)) is None:
            return
        owed = [
            s
            for m, s in zip(prepared.logged, prepared.logged_seqs, strict=True)
            if mark_of(m.metadata) is not None
        ]
        if reply_seq is not None and self._marks_reply(call, in_flight):
            owed.append(reply_seq)
        if owed and self._logged_turn(in_flight.anchor) is not None:
            self._commits.settle(holder[0], max(owed))

    def _unwrite_if_erased(
        self, anchor: TurnPrint | None, remembered: Sequence[MemoryRecord]
    ) -> None:
        """Take ``remembered`` back out of memory when the log lost the turn the call
        followed meanwhile (an erasure between the append and the memory writes)."""
        if anchor is not None and self._logged_turn(anchor) is None:
            self._unwrite(remembered)

    def _said_beside(self, prepared: Prepared) -> list[tuple[Message, int]]:
        """What this call logged beside its question, each with its seq, to be remembered
        by this commit: the user's messages, and the assistant's when replies are
        remembered (not tools' results, not system messages). A turn is logged
        once, by the call that first sent it, so this remembers it once.

        Why: only the question and the reply were remembered. An app that sends its
        whole history logs every message the log lacks: a resumed chat's earlier
        messages ("My locker code is 4471."), the answer it kept of ``n`` choices, a
        branch's turns said again after an edit or after two calls in flight (the
        branch deleted the memories of the turns it cut, and their new copies were
        never remembered: "My cat is called Tom." lost, a review). Under ``truncate``
        or ``summarize`` compaction those turns then left every later window too."""
        pairs = list(zip(prepared.logged, prepared.logged_seqs, strict=True))
        if pairs and (prepared.question is not None or _said_before_prefill(prepared)):
            pairs.pop()  # the question (or the message before a prefill): its own rule
        roles = ("user", "assistant") if self.remember_replies else ("user",)
        return [(m, seq) for m, seq in pairs if m.role in roles]

    def _remember(self, *said: tuple[Message | None, int | None]) -> Sequence[MemoryRecord]:
        """Add what was said (the question, the reply, each with the seq of its logged
        turn; None for either left out) to memory, each in pieces a memory may hold,
        marked with its turn (:meth:`_turn_mark`); the records written."""
        if not (self.remember and self.memory is not None and self.scope_ok):
            return ()
        kept = [
            (m, seq)
            for m, seq in said
            if m is not None and m.content.strip() and not is_placeholder(m)
        ]
        if not kept:
            return ()
        pieces = [
            Message(m.role, p, metadata=self._turn_mark(seq))
            for m, seq in kept
            for p in text_pieces(m.content)
        ]
        if self.infer:
            try:
                return self.memory.add(pieces, infer=True, **self._owner_ids)
            except ProviderError as exc:
                # Why: the extracting model failing here (a 429: it often shares the chat's
                # key) lost the exchange from memory for good, and failed the user's next,
                # unrelated message, which was then not logged (a review). Kept as said,
                # it is searchable; the model's facts of it are what is lost.
                log.warning(
                    "extracting facts from the exchange failed (%s); remembered as said", exc
                )
        return self.memory.add(pieces, **self.scope_ids)

    def _turn_mark(self, seq: int | None) -> dict[str, Any]:
        """The metadata that ties a memory to the logged turn it was said in (none
        without a session or a seq): how a branch's cut turns find their memories."""
        if self.session is None or seq is None:
            return {}
        return {LOGGED_SESSION_KEY: self.session.session_id, LOGGED_TURN_KEY: seq}

    def _forget_cut_branch(
        self, prepared: Prepared, anchor: TurnPrint, reply: Message | None, reply_seq: int | None
    ) -> None:
        """Delete the memories of the turns a branch cut (an edited message, a
        regenerated reply, a choice not taken): from the turn the branch's first turn
        took the place of (:data:`REDO_KEY`) up to that first turn. A regenerate says
        its question again: that one's memory stays, and when a later branch cuts the
        regenerate's question, the memory of the turn it said again goes with it.

        Why: the session's log and window took the new branch, but what the cut turns
        had added to memory stayed, and the user's next session was sent the edited
        "My cat is called Tom" beside the edit's "Felix" (a review). Memories of turns
        logged before their turns were marked (:meth:`_turn_mark`), and the facts an
        inferring Session extracted, are not found so."""
        if self.memory is None or self.session is None or not self.scope_ok:
            return
        branch = self._branch(prepared, anchor, reply, reply_seq)
        if branch is None:
            return
        redo, first = branch
        # A question said again keeps its first memory; a reply that goes on from the
        # logged reply sent back as its prefill (a ``pause_turn`` continued) is logged
        # whole as a new turn, whose memory holds the old one's text: the old one goes
        # (it stayed, a fragment beside the whole answer: a review).
        # A retry of a regenerate's question (its stream stopped, or a double click)
        # answers a question that says its redo turn again as well: that turn's memory
        # stays (it was deleted, the question gone from memory: a review).
        says_again = prepared.resent or self._said_again(first) == redo
        resent_question = says_again and prefill_of(prepared.window) is None
        start = redo + 1 if resent_question else redo
        seqs = set(range(start, min(first, start + MAX_CUT_TURNS)))
        seqs |= {said for seq in seqs if (said := self._said_again(seq)) is not None}
        cut: list[str] = []
        for seq in sorted(seqs):
            flt = Filter(metadata=self._turn_mark(seq))
            cut += [r.id for r in self.memory.get_all(filters=flt, limit=50, **self.scope_ids)]
        if cut:
            self.memory.delete_many(cut)

    def _branch(
        self, prepared: Prepared, anchor: TurnPrint, reply: Message | None, reply_seq: int | None
    ) -> tuple[int, int] | None:
        """(the seq a branch took the place of, the seq of its first turn) for this call,
        or None: the first turn it logged marked :data:`REDO_KEY` (its turns are the
        log's newest); else, on a retry, the question it answers (logged, marked, by the
        call that failed); else its reply, which goes on from a prefill that branched."""
        redo = next((r for m in prepared.logged if (r := redo_of(m)) is not None), None)
        if redo is not None:
            return redo, prepared.logged_seqs[0]
        if not prepared.logged and prepared.question is not None:
            asked = self._logged_turn(anchor)
            if asked is not None and (redo := redo_of(asked.message)) is not None:
                return redo, asked.seq
        if reply is not None and reply_seq is not None:
            redo = redo_of(reply)
            if redo is not None:
                return redo, reply_seq
        return None

    def _said_again(self, seq: int) -> int | None:
        """The seq of the turn the logged turn ``seq`` says again (a regenerate's
        question, whose memory is that turn's), or None."""
        assert self.session is not None
        try:
            turn = self.session.turn(seq)
            redo = redo_of(turn.message)
            if redo is None:
                return None
            earlier = self.session.turn(redo)
        except NotFound:
            return None
        return redo if said_digest(earlier.message) == said_digest(turn.message) else None

    def _question_of(
        self, prepared: Prepared, anchor: TurnPrint | None, superseded: bool = False
    ) -> tuple[Message | None, int | None]:
        """What a commit remembers of what the user said, and the seq of its logged
        turn: the question, or the message before the app's prefill
        (:func:`_said_before_prefill`); nothing for a re-sent request (memory holds it
        from its first answer) or a retried question already remembered, by its retry
        too when this call was given up for it (``superseded``: the retry that failed
        remembered it, a review)."""
        if prepared.resent:
            return None, None
        question = prepared.question or _said_before_prefill(prepared)
        asked = anchor.seq if anchor is not None and question is not None else None
        if question is not None and asked is not None and (superseded or not prepared.logged):
            # A retry of a question logged by an earlier call: remembered by that call
            # when it failed (:meth:`failed`), or by nothing when it came before this
            # rule (a log from an older version); its turn's mark tells which.
            question = None if self._remembered(asked) else question
        return question, asked

    def _remembered(self, seq: int) -> bool:
        """Whether memory holds what the logged turn ``seq`` said (a memory marked with
        it, :meth:`_turn_mark`): one read, made only for a retried question, or for a
        question an old release's reply follows (:meth:`_answer_after`)."""
        if self.memory is None or self.session is None:
            return False
        flt = Filter(metadata=self._turn_mark(seq))
        return bool(self.memory.get_all(filters=flt, limit=1, **self.scope_ids))

    def _answer_after(self, anchor: TurnPrint, *, logged_here: bool) -> Message | None:
        """The reply (whole or cut) a commit logged right after the turn a call followed,
        as the answer to that turn (:data:`REPLY_TO_KEY`), if any: that commit remembered
        the question, and this one does not again (a retry after a cut stream).
        ``logged_here``: this call logged that turn itself (``Prepared.logged``).

        Why the answer to that turn: two calls of one session in flight together (a
        fallback client called while the first call waits, a double submit) log Q1 and
        Q2, then the first reply, logged after Q2 as Q1's answer; taken for Q2's, Q2
        was never remembered (a review: "my sister is Rita" in the log, not in memory).

        A reply without the key was logged by a release before it (a rolling deploy runs
        both): it answers a turn this call did not log (a retry's question, logged and
        answered by an earlier attempt), and a turn this call logged only when memory
        already holds that turn (an old release's retry of it, which remembered it). Why:
        counted whenever it came, an old replica's Q1 answer logged after a new
        replica's Q2 was taken for Q2's, and Q2 was never remembered (a review)."""
        if self.session is None:
            return None
        try:
            after = self.session.turn(anchor.seq + 1).message
        except NotFound:
            return None
        if not (after.role == "assistant" and after.metadata.keys() >= _COMMITTED_KEYS):
            return None
        answers = after.metadata.get(REPLY_TO_KEY)
        if answers is None:  # logged by a release before the key
            return after if not logged_here or self._remembered(anchor.seq) else None
        return after if answers == anchor.seq else None

    def _log_reply(
        self, session: Session, reply: Message, followed: Turn | None, anchor: TurnPrint | None
    ) -> int | None:
        """Log ``reply`` after the turn the call followed: right after it while nothing
        followed it; else not at all when the turn after it is this reply (logged from
        the app's history by another client's call: :meth:`_log_new`), else at the end.
        The seq it was logged at (None: not logged here)."""
        if followed is None or anchor is None:
            return session.add(reply, after=followed)[0].seq
        try:
            return session.add(reply, after=followed, newest=followed.seq)[0].seq
        except Conflict:
            if not self._logged_after(anchor, reply):
                return session.add(reply, after=followed)[0].seq
            return None

    def _logged_after(self, anchor: TurnPrint, reply: Message) -> bool:
        """Whether the log already holds ``reply`` right after the turn the call followed.

        Why: an app that sends its whole history may send the next request on another
        wrapped client (one a web request, or another worker process) before this
        commit ran. That call logged this reply from the app's history, as the app's
        turn; logged here too, the model saw its answer twice and the next requests
        forked the log (Q1, R1, R1, Q2, Q2, ...; a review: 7 to 19 runs in 20).

        Only a turn logged from an app's history counts, not one a commit logged (it
        has the call's usage and provider): another call's reply of the same text
        ("OK.") to a question asked meanwhile, or a cut stream's fragment before a
        retried question's whole reply, is no copy of this reply (a review lost both)."""
        if self.session is None:
            return False
        try:
            after = self.session.turn(anchor.seq + 1)
        except NotFound:
            return False
        logged = after.message
        if logged.metadata.keys() >= _COMMITTED_KEYS:
            return False
        return logged.role == reply.role and said_digest(logged) == said_digest(reply)

    def _logged_turn(self, turn: TurnPrint) -> Turn | None:
        """The logged turn ``turn`` prints, while the session's log still holds it (one
        indexed read); None when it is gone. The log is append-only, so only an erasure
        (``forget``) removes a turn, and a seq it numbered again holds another turn
        (:func:`~contextos.engine.conversation.turn_print` tells them apart by when it
        was logged)."""
        if self.session is None:
            return None
        try:
            found = self.session.turn(turn.seq)
        except NotFound:
            return None
        return found if turn_print(found).ident == turn.ident else None

    def _unwrite(self, remembered: Sequence[MemoryRecord]) -> None:
        """Purge the memories a commit added after an erasure of its session landed
        between its append and its memory writes (the erasure took the turn the call
        followed, and the reply logged after it): only those, by id. Forgetting the user
        again would also take what the app wrote for them after the erasure, in other
        sessions too, and in a session two users share it forgot this user for the
        other's erasure (a review found both)."""
        if self.memory is not None and remembered:  # those the erasure took are skipped
            self.memory.delete_many([r.id for r in remembered], purge=True)
