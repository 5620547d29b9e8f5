"""The assembly step of a wrapped call: session log + memory -> a budgeted Window.

:func:`contextos.providers.wrap` depends only on the small
:class:`ContextSource` protocol (``prepare`` before the call, ``commit``
after), so the context engine can be swapped or injected in tests. The
default, :class:`SessionContext`, drives a :class:`~contextos.engine.session.Session`
and a :class:`~contextos.memory.Memory`:

1. Messages the caller sent that the session log already holds are
   recognised and not logged twice (callers may send only the new turn, or
   the whole conversation every time; a retry of the last question is
   recognised too, and so is a re-send of a request the log holds answered
   -- a regenerate, a front end's retry after a gateway timeout -- of which
   nothing is logged again, its reply included: :func:`answered_prefix`).
   New turns, the question included, are appended to the log *before* the
   call, so a crash loses nothing.
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
   the provider's cache expired since the last call) or the topic measurably
   drifted. The block is in-process state: after a restart it is simply due,
   and the first call rebuilds it (one uncached call).
4. After the call the reply is logged, with the call's usage in its
   metadata, and the exchange is added to memory (``remember=True``) -- on a
   background thread by default (``background_commit``), so the caller does
   not wait for those durable writes; the next call, or ``flush()``, waits
   for them first. A reply whose stream was cut or abandoned is logged marked
   ``"complete": False``, not remembered, and left out of the conversation
   later calls match and send (so the app's retry is recognised); an empty
   reply is not logged (see ``SessionContext._commit``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, Literal, Protocol, TypedDict

from contextos.cache.render import TTL_SECONDS
from contextos.engine.compaction import Strategy, Thresholds
from contextos.engine.session import (
    Layout,
    MemoryLike,
    Session,
    context_window,
    search_scope,
    turn_items,
)
from contextos.engine.topic import TOPIC_SEARCH_OVER, TopicBlock, topic_layout, topic_memories
from contextos.engine.window import Item, Window, message_item
from contextos.errors import BudgetError, ConfigError, ScopeError
from contextos.llm.models import ModelInfo, Prices, get_model
from contextos.llm.tokens import TOKENS_PER_REPLY, Tokenizer, default_tokenizer
from contextos.providers.base import PLACEHOLDER_KEY, WIRE_KEY, CallRecord, ChatRequest, Prepared
from contextos.types import Hit, Message, Scope, ScopeIds, Turn, Usage

#: Introduces the retrieved memories in the final user message.
MEMORY_HEADER = "Relevant memories from earlier conversations (may be outdated):"
#: Introduces the topic memory block in the system prompt (``placement="topic"``).
TOPIC_HEADER = "Memories about the current topic from earlier conversations (may be outdated):"

#: Reply metadata key: False when the reply's stream was cut or abandoned (absent when whole).
COMPLETE_KEY = "complete"

#: Window size assumed for models the registry does not know (OpenAI-compatible servers).
UNKNOWN_MODEL_WINDOW = 128_000

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
    background_commit: bool


class ContextSource(Protocol):
    """Builds the window before a call and records the outcome after it."""

    def prepare(self, request: ChatRequest, *, reserve_tokens: int) -> Prepared:
        """The window for ``request``, leaving ``reserve_tokens`` free (output, tools)."""
        ...

    def commit(self, prepared: Prepared, call: CallRecord) -> None:
        """Record the call's reply and usage (the session log, memory)."""
        ...


class _Committer:
    """Runs commits in order, each on its own thread, one at a time.

    Why: logging the reply and remembering the exchange are durable SQLite
    writes (fsync'd); the caller already has its answer and should not wait
    for them. The next ``prepare`` (or ``flush``) waits, so the log is always
    complete before the next window is built, and a failed write is raised
    there instead of being lost. A lock makes it safe for one wrapped client
    shared by several threads: a commit is started and joined by one at a time.
    """

    def __init__(self, background: bool) -> None:
        self.background = background
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def submit(self, func: Callable[..., None], *args: Any) -> None:
        """Run ``func(*args)`` after the commit before it. In the background, the
        previous commit's failure is kept for the next ``wait`` (a ``prepare``):
        the caller of this commit already has its answer and must get it."""
        with self._lock:
            self._join()
            if not self.background:
                self._raise()
                func(*args)
                return

            def run() -> None:
                try:
                    func(*args)
                except BaseException as exc:  # handed to the caller by wait()
                    self._error = self._error or exc

            thread = threading.Thread(target=run, name="contextos-commit", daemon=True)
            thread.start()
            self._thread = thread

    def wait(self) -> None:
        """Wait for the commit in flight; raise the first failed one's error."""
        with self._lock:
            self._join()
            self._raise()

    def _join(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join()

    def _raise(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error


def model_info(name: str, *, window: int | None = None) -> ModelInfo:
    """The registry entry for ``name``, or a priced-at-zero stand-in for unknown models."""
    try:
        info = get_model(name)
    except ConfigError:
        return ModelInfo(
            name, "open", window or UNKNOWN_MODEL_WINDOW, 8192, 0, Prices(0.0, 0.0, 0.0, 0.0, 0.0)
        )
    if window is None:
        return replace(info, name=name)
    return replace(info, name=name, context_window=window)


def _same(a: Message, b: Message) -> bool:
    return (a.role, a.content, a.tool_call_id, a.tool_calls) == (
        b.role,
        b.content,
        b.tool_call_id,
        b.tool_calls,
    )


def split_new(sent: Sequence[Message], logged: Sequence[Message]) -> tuple[int, bool]:
    """(how many leading ``sent`` messages the log already ends with, is-a-retry).

    A retry is a request whose every message is already logged and whose last
    one is the log's unanswered last user message.
    """
    if sent and logged and sent[-1].role == "user" and len(sent) <= len(logged):
        tail = logged[len(logged) - len(sent) :]
        if all(_same(a, b) for a, b in zip(sent, tail, strict=True)):
            return len(sent), True
    for k in range(min(len(sent) - 1, len(logged)), 0, -1):
        if _same(sent[k - 1], logged[-1]) and all(
            _same(a, b) for a, b in zip(sent[:k], logged[-k:], strict=True)
        ):
            return k, False
    return 0, False


def answered_prefix(sent: Sequence[Message], logged: Sequence[Message]) -> bool:
    """True when ``sent`` -- two messages or more -- is how the logged conversation starts
    and the log holds what came after it: the app re-sent a request already answered
    (a regenerate, or its front end's retry after a gateway timeout). Nothing of it is
    new. One message alone is never taken for a re-send: an app that sends only the new
    turn may well say "yes" twice."""
    n = len(sent)
    return 2 <= n < len(logged) and all(_same(a, b) for a, b in zip(sent, logged, strict=False))


def _check_newest_turn(window: Window, question: Message | None, history: Sequence[Item]) -> None:
    """Refuse a call without a question whose newest turn (a tool result) the window left
    out: it would ask the model about nothing -- an empty conversation, or one that stops
    before what the call is for. The same clear error as a question over the budget.

    Raises:
        BudgetError: the newest turn (with its tool unit) is not in the window.
    """
    if question is not None or not history:
        return
    newest = history[-1]
    if any(b.key == newest.key for b in window.blocks):
        return
    unit = [i for i in history if i.group == newest.group] if newest.group else [newest]
    allowance = next((u.allowance for u in window.usage if u.name == "turns"), 0)
    raise BudgetError(
        f"the newest {newest.role} turn does not fit the budget",
        requested=sum(i.tokens for i in unit),
        available=allowance,
    )


def in_conversation(message: Message) -> bool:
    """False for a logged reply whose stream was cut or abandoned (``"complete": False``
    in its metadata, set by ``SessionContext``'s commit): the log keeps it as what the
    user saw, but it is not part of the conversation later calls match and send."""
    return message.metadata.get(COMPLETE_KEY) is not False


def _strip_wire(message: Message) -> Message:
    meta = {k: v for k, v in message.metadata.items() if k != WIRE_KEY}
    return replace(message, metadata=meta)


def _usage_json(usage: Usage) -> dict[str, int]:
    return {k: int(getattr(usage, k)) for k in Usage.__dataclass_fields__}


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
        self._committer = _Committer(background_commit)
        self.tokenizer = tokenizer or getattr(memory, "tokenizer", None) or default_tokenizer()
        tenant = tenant or getattr(memory, "tenant", None) or "default"
        given = Scope(tenant=tenant, user_id=user_id, agent_id=agent_id)  # the ids' one rule
        self.session = self._session(session, store, tenant, user_id, agent_id)
        #: Whose memories this context reads and writes: the session's scope, else the
        #: user/agent given.
        self.scope = self.session.scope if self.session is not None else given
        if memory is not None and not self.scope_ok:
            raise ScopeError(
                "memory needs a scope to read and write: pass user_id, agent_id or a session"
            )
        self.memory_limit = memory_limit
        self.memory_tokens = memory_tokens
        self.remember = remember
        #: Also remember the assistant's replies (off for canned offline answers).
        self.remember_replies = True
        self.budget = budget
        self.compaction: Strategy | None = compaction
        self.history_share = history_share
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
        )

    @property
    def scope_ids(self) -> ScopeIds:
        """The memory scope as ``Memory``'s keywords: the session's, or the user/agent given."""
        return self.scope.ids()

    @property
    def scope_ok(self) -> bool:
        return self.scope.is_scoped()

    @property
    def session_id(self) -> str | None:
        return self.session.session_id if self.session is not None else None

    # -- before the call ---------------------------------------------------------
    def prepare(self, request: ChatRequest, *, reserve_tokens: int) -> Prepared:
        self.flush()  # the previous reply is in the log before this window is built
        model = model_info(request.model)
        budget = (self.budget or model.context_window) - (
            reserve_tokens or model.default_output_reserve()
        )
        now = self.clock()
        if self.topic is not None and (
            self._last_call is None or now - self._last_call > self.cache_ttl_s
        ):
            self.topic.due = True  # nothing of the prefix is cached anymore: refresh free
        self._last_call = now
        restarts = self.session.log_restarts if self.session is not None else 0
        question, history, retry, resent, logged = self._log_and_split(request, budget)
        if self.topic is not None and self.session and self.session.log_restarts != restarts:
            # The log changed under the session (an erasure): the block may hold
            # memories erased with it, so it is rebuilt from a fresh search.
            self.topic.hits, self.topic.due = [], True
        query = request.last_user_text() or (
            question.content if question and not question.metadata.get(PLACEHOLDER_KEY) else ""
        )
        layout = self.layout
        topic: list[Hit] = []
        if self.topic is not None:
            layout, topic, hits = self._topic(self.topic, query, budget, history)
        else:
            hits = self._hits(query)
        window = context_window(
            budget,
            tokenizer=self.tokenizer,
            question=question,
            min_cache_tokens=model.min_cache_tokens,
            system=request.system[0] if request.system else "",
            rules=request.system[1:],
            tools=request.tools,
            summary=self._summary(),
            turns=history,
            memories=hits,
            topic=topic,
            layout=layout,
            memory_header=MEMORY_HEADER,
            topic_header=TOPIC_HEADER,
        )
        _check_newest_turn(window, question, history)
        if question is not None and self.session is not None and not (retry or resent):
            # durable before the call, once it fits
            logged += tuple(t.message for t in self.session.add(_strip_wire(question)))
        return Prepared(window, model, question, logged, resent=resent)

    def _log_and_split(
        self, request: ChatRequest, budget: int
    ) -> tuple[Message | None, tuple[Item, ...], bool, bool, tuple[Message, ...]]:
        """Log what is new but the question; return the question, history items,
        is-a-retry, is-a-re-send (:func:`answered_prefix`) and the messages logged (as
        the log holds them)."""
        sent = list(request.messages)
        turns = self._conversation()
        known, retry = split_new(sent, [t.message for t in turns]) if turns else (0, False)
        resent = not retry and answered_prefix(sent, [t.message for t in turns])
        new = [] if resent else sent[known:]
        question: Message | None = None
        if retry or (resent and sent[-1].role == "user" and not sent[-1].tool_calls):
            question = sent[-1]
        elif new and new[-1].role == "user" and not new[-1].tool_calls:
            question = new.pop()
        if question is None and new:  # the call answers its newest turn (a tool result)
            newest = message_item("newest", new[-1], self.tokenizer)
            if newest.tokens > budget - TOKENS_PER_REPLY:  # never fits: refused before logging
                raise BudgetError(
                    f"the newest {newest.role} turn does not fit the budget",
                    requested=newest.tokens,
                    available=budget - TOKENS_PER_REPLY,
                )
        if self.session is None:
            items = tuple(message_item(f"msg:{i}", m, self.tokenizer) for i, m in enumerate(new))
            return question, items, False, False, ()
        logged: tuple[Message, ...] = ()
        if new:
            logged = tuple(t.message for t in self.session.add(*[_strip_wire(m) for m in new]))
        self._compact(budget, request.server_edits)
        turns = self._conversation()
        if retry:
            turns = turns[:-1]
        elif resent:  # the conversation as it stood when the request was first sent
            turns = turns[: len(sent) - (question is not None)]
        items = turn_items(turns, self.session.state(), self.tokenizer)
        return question, items, retry, resent, logged

    def _conversation(self) -> list[Turn]:
        """The logged turns that are part of the conversation (:func:`in_conversation`)."""
        if self.session is None:
            return []
        return [t for t in self.session.turns() if in_conversation(t.message)]

    def _compact(self, budget: int, server_edits: Sequence[str] = ()) -> None:
        """Compact the session log when it passes its trigger.

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
        done = self.session.compact(
            int(budget * self.history_share), strategy, thresholds=self.thresholds, memory=memory
        )
        if done.plan is not None and self.topic is not None:
            self.topic.due = True  # the prefix changes here anyway: refresh with it

    def _summary(self) -> Any:
        return self.session.state().summary if self.session is not None else None

    def _hits(
        self, query: str, *, limit: int | None = None, tokens: int | None = None
    ) -> list[Hit]:
        limit = self.memory_limit if limit is None else limit
        if self.memory is None or not query.strip() or not self.scope_ok:
            return []
        hits = self.memory.search(
            query,
            **search_scope(**self.scope_ids),
            limit=limit * 2,
            token_budget=self.memory_tokens if tokens is None else tokens,
        )
        if self.session is not None:  # this session's own turns are in the history already
            hits = [h for h in hits if h.record.session_id != self.session_id]
        return list(hits[:limit])

    def _topic(
        self, block: TopicBlock, query: str, budget: int, history: Sequence[Item]
    ) -> tuple[Layout, list[Hit], list[Hit]]:
        """(layout, block, delta) for ``placement="topic"`` (see :mod:`contextos.engine.topic`).

        The block gets ``memory_tokens`` and ``memory_limit`` (what the
        per-call memories would have had), capped at ``TOPIC_SHARE`` of small
        budgets; the shared :func:`~contextos.engine.topic.topic_layout` sizes
        the rest. Twice as many are searched, so that memories the history
        already shows can be dropped and the block still filled.
        """
        summary = self._summary()
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
        fresh = self._hits(
            query,
            limit=self.memory_limit * TOPIC_SEARCH_OVER,
            tokens=block_tokens * TOPIC_SEARCH_OVER,
        )
        known = {p for it in history for p in it.provenance}
        if summary is not None:
            known |= set(summary.provenance())
        hits, delta, _ = topic_memories(
            block, query, fresh, known, block_tokens, limit=self.memory_limit
        )
        return layout, hits, delta

    # -- after the call --------------------------------------------------------------
    def commit(self, prepared: Prepared, call: CallRecord) -> None:
        """Log the reply and remember the exchange (on a background thread by default)."""
        self._committer.submit(self._commit, prepared, call)

    def flush(self) -> None:
        """Wait for the last commit; re-raise its error if it failed."""
        self._committer.wait()

    def _commit(self, prepared: Prepared, call: CallRecord) -> None:
        """Log the reply; remember the exchange when the reply came whole.

        A reply with nothing in it (no text, no tool call, no metadata such as a
        compaction block) is not logged: sent back, it would be an empty turn,
        which the API refuses. A reply whose stream was cut or abandoned
        (``call.complete`` False) is logged with ``"complete": False`` in its
        metadata -- it is what the user saw -- but it is no answer: it is not
        remembered, and later calls leave it out of the conversation
        (:func:`in_conversation`), so the app's retry of the question is
        recognised as a retry and the fragment is never sent back.
        """
        reply = call.reply
        if reply is None or not (reply.content or reply.tool_calls or reply.metadata):
            return
        if prepared.resent:  # the log holds this exchange, answered, already
            return
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
        if self.session is not None:
            self.session.add(replace(reply, metadata=meta))
        if not call.complete:
            return
        if self.remember and self.memory is not None and self.scope_ok:
            said = [
                m
                for m in (prepared.question, reply if self.remember_replies else None)
                if m is not None and m.content.strip() and not m.metadata.get(PLACEHOLDER_KEY)
            ]
            if said:
                self.memory.add([Message(m.role, m.content) for m in said], **self.scope_ids)
