"""Sessions: a durable, append-only log of a conversation, and the window built from it.

Every turn (user, assistant, tool call, tool result) is appended to the
store with its token count before anything else happens, so a crash loses
nothing and another process can resume the session by its id. What compaction
did (rotated turns, the rolling summary, cleared tool results, pins) is kept as
JSON beside the log; the log itself is never rewritten.

:func:`context_window` builds every window in the default layout: tools, system prompt,
procedural rules, rolling summary (the cached, stable prefix), then the recent
turns (append-only, cached up to the last one), then what changes every call:
retrieved memories with the strongest at the edges, and the question last.

What a turn is to the conversation (:mod:`.conversation`), the rule for valid text
(:mod:`.message_text`) and archiving rotated turns in long-term memory (:mod:`.offload`)
are modules of their own: this one keeps the log, its compaction state, and the window.
"""

from __future__ import annotations

import math
import numbers
import threading
import uuid
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any, Literal, Protocol, Unpack

from contextos.config import default_tenant
from contextos.engine.compaction import (
    HistoryState,
    Plan,
    Strategy,
    Thresholds,
    apply_compaction,
    history_tokens,
    needs_compaction,
    pinned_seqs,
    plan_compaction,
    stub_text,
    stub_tokens,
    visible_turns,
)
from contextos.engine.conversation import (
    ConversationView,
    TurnPrint,
    _extend_conversation,
    _seq,
    answered_ids,
    conversation,
    turn_print,
)
from contextos.engine.message_text import check_text
from contextos.engine.offload import ARCHIVE_LEASE_S, archive_claim, finish_archive, hold_runs
from contextos.engine.summarize import (
    ExtractiveSummarizer,
    Summarizer,
    Summary,
    turn_ref,
)
from contextos.engine.window import (
    Item,
    Overflow,
    Segment,
    Window,
    assemble,
    message_item,
    newest_unit_tokens,
    text_item,
    tool_item,
)
from contextos.errors import BudgetError, NotFound, ScopeError, StoreError
from contextos.llm.media_tokens import (
    ESTIMATED_KEY,
    THINKING_KEY,
    media_tokens,
    open_loop_start,
    thinking_tokens,
)
from contextos.llm.models import ModelInfo, as_model
from contextos.llm.tokens import (
    TOKENS_PER_MESSAGE,
    TOKENS_PER_REPLY,
    Tokenizer,
    counted_with,
    default_tokenizer,
)
from contextos.memory.ingest import metadata_depth, wide_int
from contextos.memory.render import render as render_memory
from contextos.retry import wait_before_retry
from contextos.store.base import Store
from contextos.store.records import LOCK_SESSION_PREFIX, check_turn_content
from contextos.types import (
    Filter,
    Hit,
    MemoryRecord,
    Message,
    Scope,
    ScopeIds,
    Turn,
    scope_id,
    scope_ids,
    validate_tenant,
)

if TYPE_CHECKING:
    from contextos.memory.api import Memory
    from contextos.store.pages import MemoryPage

_META_KEY = "history"
#: Introduces the retrieved memories in the final user message: every window that places
#: per-call memories puts this line above them by default (:meth:`Session.window`, wrapped
#: calls, the server's window route), so an old memory never reads as the user's words.
MEMORY_HEADER = "Relevant memories from earlier conversations (may be outdated):"
#: The key, in a logged turn's stored metadata, of its count's stamp: ``{"with":
#: counted_with(tokenizer), "estimated": N}`` (``estimated``: the tokens of the count
#: that are an offline estimate of images and documents, when there are any;
#: :mod:`contextos.llm.media_tokens`). A Session reads it and takes it off
#: (:meth:`Session._counted`); a raw read of the store (``Store.turns``) shows it.
COUNTED_KEY = "contextos_tokens"
#: How many recounts of logged turns a process keeps (:class:`_Recounts`).
RECOUNTS_KEPT = 65_536


class _Recounts:
    """Counts of logged turns made again by a reader whose counter is not the one that
    stored them (another tokenizer, an older counting rule, a log from before counts
    were stamped), kept for the process, at most :data:`RECOUNTS_KEPT` (the oldest go
    first).

    Why: the log is append-only (a turn's stored count and stamp are never rewritten;
    the stores have no update of a turn), so a reader recounted such a log on every
    read, and a server that opens a fresh Session per request (the HTTP and MCP window
    routes) recounted a 4,000-turn log on every window request: 353 ms a request where
    the stored counts took 166 ms. A turn is keyed by its store (the object), session,
    seq, time and text, and the reader's stamp: a log is recounted once per process.
    """

    def __init__(self, limit: int = RECOUNTS_KEPT) -> None:
        self.limit = limit
        self._counts: dict[tuple[Any, ...], int] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple[Any, ...]) -> int | None:
        return self._counts.get(key)

    def put(self, key: tuple[Any, ...], count: int) -> None:
        with self._lock:
            self._counts[key] = count
            while len(self._counts) > self.limit:
                del self._counts[next(iter(self._counts))]

    def __len__(self) -> int:
        return len(self._counts)


_RECOUNTS = _Recounts()


def remote_counter(tokenizer: Tokenizer) -> bool:
    """Whether ``tokenizer`` counts through an API call per text (an exact counter such
    as :class:`~contextos.providers.anthropic.AnthropicTokenCounter` with a client: its
    ``remote`` attribute), so that counting a log again costs a request a turn."""
    return bool(getattr(tokenizer, "remote", False))


#: About how many bytes a turn's print holds (:class:`TurnPrint`), and what
#: :meth:`Session.held_size` counts a held turn beside its text.
PRINT_BYTES = 150

#: The session meta's key for its log epoch: a token drawn by the first write of the
#: state through a Session and carried by every later one (compactions, pins), which
#: ``forget``'s reset drops (:meth:`Store.forget` starts the meta over). While it is
#: unchanged no turn was erased, so a moved revision alone (a compaction or pin by
#: another Session) lets a reader keep the turns it read (:meth:`Session.turns`).
_EPOCH_KEY = "log_epoch"
#: Tries of a save while other writers change only other keys of the meta
#: (:meth:`Session._save`).
_SAVE_TRIES = 8

#: Segment priorities of the default layout (who is served first when the budget is
#: short). The question is required and served first; then the instructions; then the
#: cached prefix, the summary and topic block before the turns (both are sized by
#: their ceilings, so a longer question or history costs the oldest turns, never the
#: bytes in front of the whole history); the per-call memories last
#: (``Layout.memories_priority``), so they only fill what the prefix leaves.
QUESTION_PRIORITY = 100
SYSTEM_PRIORITY = 90
RULES_PRIORITY = 85
TOOLS_PRIORITY = 80
SUMMARY_PRIORITY = 70
TOPIC_PRIORITY = 65
TURNS_PRIORITY = 60

#: The window key (and segment name) of a prefill: the start of the reply, sent last
#: (:func:`context_window`).
PREFILL_KEY = "prefill"

#: What a Session holds of the log in memory (:class:`Session`'s ``hold``): ``log``
#: every turn it read; ``window`` the turns from the history's start on (what windows
#: and compactions read) and a :class:`TurnPrint` of every turn.
Hold = Literal["log", "window"]
HOLDS: tuple[Hold, ...] = ("log", "window")


@dataclass(frozen=True)
class Layout:
    """Shares of the budget for the standard layout (fractions of the budget)."""

    summary_ceiling: float = 0.25
    memories_floor: float = 0.0
    memories_ceiling: float = 0.5
    restate_question_over: int | None = 1000
    #: Content blocks between a stepping stone in the turns and the breakpoint after
    #: it (below the provider's 20-block lookback; 0: no stones). See
    #: :func:`contextos.engine.window.plan_breakpoints`.
    anchor_every: int = 16
    #: Share for the topic memory block inside the cached prefix (0: no such block).
    topic_ceiling: float = 0.0
    #: Priority of the per-call memories. Below every cached-prefix segment (the
    #: summary's :data:`SUMMARY_PRIORITY`, the topic block's, the turns') they only
    #: fill what the prefix leaves, so how many memories a call retrieves never moves
    #: the prefix bytes nor squeezes the summary out. A value above
    #: :data:`TURNS_PRIORITY` lets them do both.
    memories_priority: int = 25


#: How deep a logged turn's metadata may nest. Above a memory's limit
#: (:data:`~contextos.memory.ingest.MAX_METADATA_DEPTH`): a turn carries a provider's wire
#: blocks (a tool's arguments as the model wrote them); far below Python's stack, past
#: which a turn of 3,000 levels failed the log's text check with a RecursionError.
MAX_TURN_METADATA_DEPTH = 256


class MemoryLike(Protocol):
    """What the context engine needs from long-term memory (a :class:`contextos.memory.Memory`)."""

    def search(
        self,
        query: str,
        *,
        filters: Filter | None = None,
        limit: int = 10,
        token_budget: int | None = None,
        **scope: Unpack[ScopeIds],
    ) -> list[Hit]:
        """Best memories for ``query`` in a scope matching ``filters``, cut to ``limit``
        and ``token_budget`` (a window leaves its own session out with
        ``Filter(exclude_session=...)``)."""
        ...

    def add(
        self, messages: Any, *, infer: bool = False, **scope: Unpack[ScopeIds]
    ) -> Sequence[MemoryRecord]:
        """Store messages as memories in a scope (``infer``: the facts the extractor
        finds in them, reconciled with the stored ones, instead of the messages)."""
        ...

    def delete_many(self, memory_ids: Sequence[str], *, purge: bool = False) -> list[str]:
        """Delete memories in one go, skipping those already gone; the ids deleted
        (``purge``: their text leaves history and every copy too)."""
        ...

    def get_all(
        self,
        *,
        filters: Filter | None = None,
        limit: int = 100,
        offset: int = 0,
        after: str | None = None,
        **scope: Unpack[ScopeIds],
    ) -> MemoryPage:
        """Memories in a scope matching ``filters``, newest first, after the key ``after``
        (the ``next_after`` of the page before) or from ``offset`` on: a list with
        ``next_after``, None at the end."""
        ...


def search_scope(user_id: str | None, agent_id: str | None, session_id: str | None) -> ScopeIds:
    """Keyword arguments for ``Memory.search``: long-term memory spans sessions.

    Search the user's (or agent's) memories across all their sessions, and
    narrow to the session only when it is the sole scope given. The session id is
    checked by the one rule (``scope_id``) even when it is dropped: a blank one is
    refused, never silently ignored.
    """
    scope_id(session_id, "session_id")
    only_session = user_id is None and agent_id is None
    return scope_ids(user_id, agent_id, session_id if only_session else None)


def never_sent(session: Session, logged: Sequence[Turn]) -> list[str]:
    """Why each tool result among ``logged`` (just logged in ``session``) can never be
    in a window, one sentence per such turn; [] when every one can.

    A tool result is sent only right after the assistant turn that called it, while
    that call is open: both APIs refuse anything else, so a window leaves such a result
    out (:func:`sendable_units`), and later turns cannot change that. The CLI and the
    HTTP API cannot log an assistant's tool call, so a result logged through them alone
    was a turn no window would ever hold, and nothing said so. Reads the log only when
    ``logged`` holds a tool result."""
    results = [t for t in logged if t.message.role == "tool"]
    if not results:
        return []
    tail = _tail_from_reply(session, results[0].seq)
    kept = {t.seq for unit in sendable_units(visible_turns(tail, session.state())) for t in unit}
    out = []
    for turn in results:
        if turn.seq in kept:
            continue
        call_id = turn.message.tool_call_id
        why = (
            f"no assistant tool call with id {call_id!r} is open in session {session.session_id!r}"
            if call_id
            else "a tool result without a tool call id answers no call"
        )
        out.append(
            f"turn #{turn.seq} will never be in a window: {why} (the call must be logged "
            "first, by Session.add or a wrapped SDK call)"
        )
    return out


def as_sent(turns: Sequence[Turn], state: HistoryState) -> list[Turn]:
    """``turns`` without the visible ones no window sends: a tool result that answers
    no open call (:func:`sendable_units`; every result logged over HTTP or by the CLI,
    which cannot log the call). Compaction measures and rotates these.

    Why: it counted such a result at its full size, so a history whose window sent 333
    tokens looked over a 1,500-token budget (6,328), and every real turn was folded into
    a summary (a review). Left out of the plan, the result falls below the new start
    with the turns rotated around it; it stays in the log, as it was never sent."""
    visible = visible_turns(turns, state)
    sent = {t.seq for unit in sendable_units(visible) for t in unit}
    unsent = {t.seq for t in visible} - sent
    return [t for t in turns if t.seq not in unsent] if unsent else list(turns)


#: How far before a tool result :func:`never_sent` looks first for the assistant turn
#: that may have called it (then back page by page: :func:`_last_reply`).
_REPLY_LOOKBACK = 256
#: The turns of a page of that walk back: their (seq, role, content) only.
_REPLY_PAGE = 512


def _tail_from_reply(session: Session, seq: int) -> list[Turn]:
    """The log from the last assistant turn before ``seq`` on (from ``seq``'s look back
    if there is none): :func:`sendable_units` starts over at every assistant turn, so
    what it makes of the turns after one does not depend on the turns before it, and
    with none before ``seq``, no result there answers a call (a call is an assistant's:
    neither API takes one on another role). Why not read the whole log: every tool
    result appended over HTTP read and walked it, 1.3 s at 40,000 turns; then, with no
    assistant turn in the look back (a log of notes and results, as the HTTP API logs
    them: it cannot log a call), still 0.4 s at 30,000 turns (reviews)."""
    below = max(-1, seq - _REPLY_LOOKBACK - 1)
    tail = session.store.turns(session.scope, after_seq=below)
    for i in range(len(tail) - 1, -1, -1):
        if tail[i].seq < seq and tail[i].message.role == "assistant":
            return tail[i:]
    reply = _last_reply(session, below)
    return tail if reply is None else session.store.turns(session.scope, after_seq=reply - 1)


def _last_reply(session: Session, seq: int) -> int | None:
    """The seq of the last assistant turn at or before ``seq`` (None: there is none),
    found walking back a page of turns' roles at a time (``Store.turn_texts``, which
    decodes no tool calls or metadata) and stopping at the first one."""
    while seq >= 0:
        lo = max(-1, seq - _REPLY_PAGE)
        page = session.store.turn_texts(session.scope, after_seq=lo, limit=seq - lo)
        for at, role, _ in reversed(page):
            if at <= seq and role == "assistant":
                return at
        seq = lo
    return None


def sendable_units(turns: Sequence[Turn]) -> list[list[Turn]]:
    """``turns`` as a request may send them: each tool call with its results right after
    it, in units (a turn, or a call and its results).

    Why: both APIs refuse a request where a tool call has no result in the very next
    message, or a result answers no call of the message before it; a log may hold
    either. A request the API refused after its turns were logged (a plain message
    sent where a tool result was due, HTTP 400) stays in the log, and every later
    request of the session was refused with it. So results logged after such a turn,
    before the next assistant turn, go back right after their call; a call with no
    result is left out of its turn (the turn too, when nothing else is in it); a result
    that answers no open call (or one already answered) is left out. The log itself is
    unchanged.
    """
    units: list[list[Turn]] = []
    caller: list[Turn] | None = None  # the unit of the latest call, until the next reply
    owed: set[str] = set()
    for turn in turns:
        message = turn.message
        if message.role == "tool":
            ids = answered_ids(message)
            if caller is not None and ids and ids <= owed:
                caller.append(turn)
                owed -= ids
            continue
        if message.role == "assistant":
            caller, owed = None, set()
        units.append([turn])
        if message.tool_calls:
            caller, owed = units[-1], {c.id for c in message.tool_calls}
    return [kept for unit in units if (kept := _answered_calls(unit))]


def _answered_calls(unit: list[Turn]) -> list[Turn]:
    """``unit`` with the calls its results do not answer left out of its first turn."""
    head = unit[0].message
    if not head.tool_calls:
        return unit
    answered = set().union(*(answered_ids(t.message) for t in unit[1:]))
    calls = tuple(c for c in head.tool_calls if c.id in answered)
    if calls == head.tool_calls:
        return unit
    if not calls and not head.content:
        return unit[1:]
    return [replace(unit[0], message=replace(head, tool_calls=calls)), *unit[1:]]


def turn_items(
    turns: Sequence[Turn], state: HistoryState, tokenizer: Tokenizer
) -> tuple[Item, ...]:
    """Window items for the visible turns: cleared results as stubs, tool units grouped,
    every call with its results (:func:`sendable_units`)."""
    pinned = pinned_seqs(turns, state)
    cleared = state.cleared_seqs
    return tuple(
        item
        for unit in sendable_units(visible_turns(turns, state))
        for item in _unit_items(unit, pinned, cleared, tokenizer)
    )


def _turn_key(turn: Turn) -> str:
    """A turn's window key (its items' and its overflow entries')."""
    return f"turn:{turn.seq}"


def _unit_items(
    unit: Sequence[Turn], pinned: set[int], cleared: frozenset[int], tokenizer: Tokenizer
) -> list[Item]:
    """The window items of one sendable unit (:func:`turn_items`)."""
    group = f"unit:{unit[0].seq}" if len(unit) > 1 else ""
    items: list[Item] = []
    for t in unit:
        msg: Message = t.message
        tokens: int | None = t.tokens
        if t.seq in cleared:
            msg = replace(msg, content=stub_text(t))
            tokens = stub_tokens(t, tokenizer)
        items.append(
            message_item(
                _turn_key(t),
                msg,
                tokenizer,
                tokens=tokens,
                pinned=t.seq in pinned,
                group=group,
                provenance=(turn_ref(t),),
            )
        )
    return items


@dataclass(frozen=True)
class _Cut:
    """The turns a window's history cut before :func:`context_window` saw them
    (:func:`_history_items`): every sendable unit of the history, and which of them the
    window was given (the rest it could never place, and lists as left out after the
    fact: :meth:`complete`)."""

    units: Sequence[Sequence[Turn]]
    given: frozenset[int]
    pinned: set[int]
    cleared: frozenset[int]
    tokenizer: Tokenizer

    def complete(self, window: Window) -> Window | None:
        """``window`` (built from the given units) with the units not given listed in its
        overflow, in the history's order, with the reason of the segment's other entries,
        and counted in the turns' usage: the window the whole history makes. None when
        the window dropped no turn it was given (the cut was not proven: build it whole).
        """
        at = [n for n, o in enumerate(window.overflow) if o.segment == "turns"]
        if not at or at[-1] - at[0] + 1 != len(at):
            return None
        dropped = {o.key: o for o in window.overflow[at[0] : at[-1] + 1]}
        reason = window.overflow[at[0]].reason
        entries: list[Overflow] = []
        added = 0
        cleared = self.cleared
        for k, unit in enumerate(self.units):
            if k in self.given:
                entries += [dropped[key] for t in unit if (key := _turn_key(t)) in dropped]
                continue
            added += len(unit)
            if cleared and any(t.seq in cleared for t in unit):  # a stub costs its count
                items = _unit_items(unit, self.pinned, cleared, self.tokenizer)
                entries += [Overflow("turns", i.key, i.tokens, reason) for i in items]
            else:  # a turn's item costs its stored count
                entries += [Overflow("turns", _turn_key(t), t.tokens, reason) for t in unit]
        overflow = (*window.overflow[: at[0]], *entries, *window.overflow[at[-1] + 1 :])
        usage = tuple(
            replace(u, dropped=u.dropped + added) if u.name == "turns" else u for u in window.usage
        )
        return replace(window, overflow=overflow, usage=usage)


def _history_items(
    turns: Sequence[Turn],
    state: HistoryState,
    tokenizer: Tokenizer,
    budget: int,
) -> tuple[tuple[Item, ...], _Cut | None]:
    """:func:`turn_items` for a window of ``budget`` tokens, without the items of the
    older turns it can never place; and the :class:`_Cut` that lists those as left out
    (None when nothing was cut: the items are :func:`turn_items`' own).

    Why: a window placed a ~2,000-token budget's worth of turns but made an item of every
    turn of the history, and its assembly went over all of them: on a log that nothing
    compacts (the server's window route) 0.36 s a window at 10,000 turns and 4.6 s at
    80,000, for the same ~1,980 tokens placed.

    The history keeps its newest turns (``keep="newest"`` in
    :func:`~contextos.engine.window.assemble`): it places the pinned units first, each
    with the user turn that opened its exchange, then the others newest first, each with
    that turn, and stops at the first that does not fit its room, which is never more
    than ``budget``. So it is given the newest units whose own counts pass ``budget``
    (a lower bound of their cost in the window: thinking sent only adds), each pinned unit
    before them, and the user turn of each one's exchange; it stops inside the newest
    ones, and places from these what it places from the whole history, in the same
    order. The units not given are left out, in the same order and for the same reason
    (:meth:`_Cut.complete`), each at its count: the thinking of an open loop's older turns
    (a window without a question) is taken off whenever the loop does not fit
    (:func:`loop_thinking_to_fit`), and it never fits when turns are cut.
    """
    units = sendable_units(visible_turns(turns, state))
    pinned = pinned_seqs(turns, state)
    cleared = state.cleared_seqs

    def pins(unit: Sequence[Turn]) -> bool:
        return bool(pinned) and any(t.seq in pinned for t in unit)

    built: dict[int, list[Item]] = {}
    cost = 0
    cut = 0
    for k in range(len(units) - 1, 0, -1):
        if not pins(units[k]):
            built[k] = _unit_items(units[k], pinned, cleared, tokenizer)
            cost += sum(i.tokens for i in built[k])
        if cost > budget:
            cut = k
            break
    if cut == 0:
        return turn_items(turns, state, tokenizer), None
    given = set(range(cut, len(units)))
    opener: int | None = None  # the user turn of the exchange of each unit up to the cut
    for k in range(cut + 1):
        if units[k][0].message.role == "user":
            opener = k
        if k == cut or pins(units[k]):
            given.update((k,) if opener is None else (k, opener))
    items = tuple(
        item
        for k in sorted(given)
        for item in (built.get(k) or _unit_items(units[k], pinned, cleared, tokenizer))
    )
    return items, _Cut(units, frozenset(given), pinned, cleared, tokenizer)


def with_thinking_sent(
    turns: Sequence[Item], tokenizer: Tokenizer, *, question: bool
) -> tuple[Item, ...]:
    """``turns`` with the thinking blocks that go out counted, and the others taken off.

    A turn's thinking blocks (:data:`~contextos.llm.media_tokens.THINKING_KEY`) go back
    only while its tool loop is open (:func:`~contextos.llm.media_tokens.open_loop_start`:
    the assistant turns after the last user turn that is not tool results, in a request
    without a ``question``), as the Messages API needs for tool use with extended
    thinking (it drops earlier turns' thinking from the context). Those turns cost their
    thinking too (:func:`~contextos.llm.media_tokens.thinking_tokens`); every other turn
    loses the blocks, so what the window sends is what it counted. A logged turn's
    count holds no thinking (:meth:`Session.add`); compaction adds it as this does
    (:func:`with_thinking_counted`), and a loop whose thinking does not fit loses that
    of its older turns first (:func:`loop_thinking_to_fit`).
    """
    loop = open_loop_start([i.role for i in turns], question=question)
    out: list[Item] = []
    for n, item in enumerate(turns):
        msg = item.message
        if msg is None or not msg.metadata.get(THINKING_KEY):
            out.append(item)
        elif n >= loop and item.role == "assistant":
            out.append(replace(item, tokens=item.tokens + thinking_tokens(msg, tokenizer.count)))
        else:
            meta = {k: v for k, v in msg.metadata.items() if k != THINKING_KEY}
            out.append(replace(item, message=replace(msg, metadata=meta)))
    return tuple(out)


def loop_thinking_to_fit(
    turns: Sequence[Item], tokenizer: Tokenizer, room: int
) -> tuple[Item, ...] | None:
    """``turns`` (as :func:`with_thinking_sent` gives them, in a request without a
    question) with the thinking of the open tool loop's older assistant turns taken off,
    oldest first, until the loop (the user turn that opened it and every turn after)
    fits ``room`` tokens less the pinned turns before it; None when nothing is taken off
    (the loop fits, or no older turn of it has thinking).

    The newest assistant turn keeps its thinking: the API needs the thinking of the turn
    whose tool calls the results answer back with them (the only thinking a request
    must send back); that of the loop's earlier turns may be left out. Why: the loop's
    thinking (about 1,600 tokens a step in a long agent task) was counted whole, and
    the window, short of room, cut the oldest turns instead: the question that opened
    the loop first, every request after sent the steps without what asked for them.
    Thinking goes before any turn does: the steps and the question stay.
    """
    loop = open_loop_start([i.role for i in turns], question=False)
    start = max(loop - 1, 0)  # the loop's user turn, when the history holds it
    steps = [n for n in range(loop, len(turns)) if turns[n].role == "assistant"]
    older = [n for n in steps[:-1] if _thinking_of(turns[n])]
    need = sum(i.tokens for i in turns[start:]) + sum(i.tokens for i in turns[:start] if i.pinned)
    if not older or need <= room:
        return None
    out = list(turns)
    for n in older:
        item = out[n]
        assert item.message is not None  # it has thinking
        meta = {k: v for k, v in item.message.metadata.items() if k != THINKING_KEY}
        cost = thinking_tokens(item.message, tokenizer.count)
        out[n] = replace(
            item, tokens=item.tokens - cost, message=replace(item.message, metadata=meta)
        )
        need -= cost
        if need <= room:
            break
    return tuple(out)


def _thinking_of(item: Item) -> bool:
    """Whether a turn's item carries thinking blocks (sent with it)."""
    return item.message is not None and bool(item.message.metadata.get(THINKING_KEY))


def with_thinking_counted(turns: Sequence[Turn], tokenizer: Tokenizer) -> list[Turn]:
    """``turns`` (a history that a request without a question goes on from) with the
    open tool loop's assistant turns costed with their thinking, as
    :func:`with_thinking_sent` costs them in the window: what compaction reads when it
    makes room for such a request (``Session.compact(open_loop=True)``). A logged turn's
    count holds no thinking, so compaction saw less than the window would send, never
    ran, and the window cut the loop's oldest turns instead (its question first)."""
    loop = open_loop_start([t.message.role for t in turns], question=False)
    out = list(turns[:loop])
    for t in turns[loop:]:
        if t.message.role == "assistant" and t.message.metadata.get(THINKING_KEY):
            t = replace(t, tokens=t.tokens + thinking_tokens(t.message, tokenizer.count))
        out.append(t)
    return out


#: Metadata a remembered question or reply keeps of the logged turn it was said in:
#: the session and the turn's seq (``SessionContext._turn_mark``, which writes it).
LOGGED_SESSION_KEY = "log_session"
LOGGED_TURN_KEY = "log_turn"


def hit_refs(hit: Hit) -> tuple[str, ...]:
    """The turn references a memory carries: its provenance, else its ``dia_id``, else
    the logged turn a wrapped client remembered it from (its turn mark,
    :data:`LOGGED_SESSION_KEY` and :data:`LOGGED_TURN_KEY`), named as
    :func:`~contextos.engine.summarize.turn_ref` names that turn (``session#seq``).

    Why the mark: a remembered exchange named no turn, so a window could not tell
    whether its history still showed it, and left every one of its session out for
    good: a fact said at turn 20 of a long chat never came back once compaction took
    the turn out (a review). Read as a reference, :func:`novel_hits` leaves it out
    exactly while the history shows its turn."""
    rec = hit.record
    if rec.provenance:
        return rec.provenance
    meta = rec.metadata
    if meta.get("dia_id"):
        return (str(meta["dia_id"]),)
    session, seq = meta.get(LOGGED_SESSION_KEY), meta.get(LOGGED_TURN_KEY)
    if isinstance(session, str) and isinstance(seq, int) and not isinstance(seq, bool):
        return (f"{session}#{seq}",)
    return ()


def novel_hits(hits: Sequence[Hit], shown: Callable[[Hit], bool], token_budget: int) -> list[Hit]:
    """``hits`` (best first) less those ``shown`` says the window shows every source turn
    of (:meth:`contextos.engine.recall.Shown.shows`), cut to ``token_budget`` tokens
    (``Hit.tokens``; a shorter hit further down may still fit).

    Why: a memory archived from a turn that the history still shows (verbatim or
    as a summary line) tells the model nothing new; its room goes to the next one.
    """
    out: list[Hit] = []
    used = 0
    for hit in hits:
        if shown(hit):
            continue
        if used + hit.tokens > token_budget:
            continue
        used += hit.tokens
        out.append(hit)
    return out


def hit_items(
    hits: Sequence[Hit], tokenizer: Tokenizer, *, skip: Sequence[str] = ()
) -> tuple[Item, ...]:
    """Window items for search hits, ranked in the order given (best first).

    The text is :func:`contextos.memory.render.render` -- the one rendering
    that ``Memory.search(token_budget=...)`` counts -- so a memory costs in the
    window exactly what search counted, plus one block's framing. A text
    already placed (an exact repeat, or one of the ``skip`` texts) is never
    injected twice into one window.
    """
    items: list[Item] = []
    seen = set(skip)
    for hit in hits:
        rec = hit.record
        text = render_memory(rec)
        if text in seen:
            continue
        seen.add(text)
        refs = hit_refs(hit)
        items.append(
            text_item(
                f"memory:{rec.id}", text, tokenizer, rank=len(items) + 1, provenance=tuple(refs)
            )
        )
    return tuple(items)


def check_instructions(system: Any, rules: Any, tools: Any, stored_rules: Any = ()) -> None:
    """Refuse a ``system``, ``rules`` or ``tools`` argument of the wrong shape, naming
    what to pass: ``system`` one string, ``rules`` (and ``stored_rules``) a sequence of
    strings, ``tools`` a sequence of schema mappings.

    Why: a string is a sequence of strings, so ``rules="Be brief."`` went out as eight
    one-letter system blocks and the instruction was lost without an error, and a system
    prompt given as a list of content blocks or None failed with ``AttributeError`` (a
    review). Misuse of the API is Python's own ``TypeError`` (docs/api.md).

    Raises:
        TypeError: one of them is not of its type.
    """
    if not isinstance(system, str):
        raise TypeError(
            f"system must be one string, not {type(system).__name__}: pass "
            'system="" for none, or join a list of text blocks\' text into one string'
        )
    _check_rules(rules, "rules")
    _check_rules(stored_rules, "stored_rules")
    if isinstance(tools, str | bytes | Mapping) or not isinstance(tools, Sequence):
        raise TypeError(
            f"tools must be a sequence of tool schemas, not {type(tools).__name__}: "
            'pass tools=[{"name": ..., "description": ..., "input_schema": ...}]'
        )


def _check_rules(rules: Any, name: str) -> None:
    """Refuse ``rules`` (the argument ``name``) unless it is a sequence of strings."""
    if isinstance(rules, str | bytes) or not isinstance(rules, Sequence):
        raise TypeError(
            f"{name} must be a sequence of strings, not {type(rules).__name__}: "
            f"pass a list, {name}=[text], for one rule"
        )
    for rule in rules:
        if not isinstance(rule, str):
            raise TypeError(f"each rule must be a string, not {type(rule).__name__}")


def _rules_segment(
    rules: Sequence[str], stored_rules: Sequence[str], tokenizer: Tokenizer
) -> Segment:
    """The ``rules`` segment (:func:`context_window`): the caller's ``rules``, each a
    block keyed ``rule:<n>`` by its place among them (a blank one is left out), all
    required; then the ``stored_rules`` none of them says, numbered on."""
    given = [(i, r) for i, r in enumerate(rules) if r.strip()]
    said = {r.strip() for r in rules}
    stored = []
    for rule in stored_rules:  # each once (a Session on a Memory pins its own too)
        if rule.strip() and rule.strip() not in said:
            said.add(rule.strip())
            stored.append(rule)
    keyed = [*given, *enumerate(stored, start=len(rules))]
    return Segment(
        "rules",
        "system",
        tuple(text_item(f"rule:{i}", r, tokenizer, role="system") for i, r in keyed),
        priority=RULES_PRIORITY,
        cache_ttl="1h",
        required_first=len(given),
    )


def context_window(
    budget: int,
    *,
    tokenizer: Tokenizer,
    question: str | Message | None,
    min_cache_tokens: int = 0,
    system: str = "",
    rules: Sequence[str] = (),
    stored_rules: Sequence[str] = (),
    tools: Sequence[Mapping[str, Any]] = (),
    summary: Summary | None = None,
    turns: Sequence[Item] = (),
    memories: Sequence[Hit] = (),
    topic: Sequence[Hit] = (),
    layout: Layout | None = None,
    memory_header: str | None = None,
    topic_header: str | None = None,
    prefill: Message | None = None,
) -> Window:
    """The one context builder: the standard layout, assembled under ``budget``.

    Every window contextos sends or reports (a session's, a wrapped call's,
    the server's, the replay benchmark's) is built here, so the minimum
    cacheable length, the restated question and the memory rendering are the
    same everywhere. The segments, in layout order (see the module docstring):
    tools, system prompt, rules, summary, the ``topic`` memories (a cached block,
    under ``topic_header`` by the same both-or-neither rule as the per-call memories
    when a header is given), the turns, then the per-call ``memories`` (under
    ``memory_header``: the header and at least one memory, or neither, all reported
    left out, so a memory never goes without the header saying what it is; the
    memories' floor is the header's first; one already in ``topic`` is not repeated)
    and the question. A ``question`` given as a Message is sent as the caller's message;
    None leaves the question segment empty. ``prefill`` (an assistant message: the
    start of the reply, which the model continues) is sent last, after the turns, in a
    segment of its own outside the cached prefix: the next call sends the whole reply
    in its place, so a breakpoint on it would cache bytes no call sends again. It ends
    the request, so it takes no memories and no question.

    Blank instructions (an empty or whitespace-only system prompt, rule or header)
    are left out: each would be an empty text block, which the Messages API refuses
    ("text content blocks must be non-empty").

    The ``rules`` segment holds the caller's ``rules``, required as the system prompt
    and the tools are (all of them, or ``BudgetError``), then the scope's
    ``stored_rules`` (:meth:`contextos.engine.recall.Rules.beside`) while room is left.
    Why required: a window whose system prompt and question left no room for the
    caller's rule answered 200 with the rule only in ``left_out``, and a client sending
    the ready request as returned called the model without it (a review).

    Raises:
        TypeError: ``system``, ``rules`` or ``tools`` is not of its type
            (:func:`check_instructions`).
        ValueError: ``question`` is an empty or whitespace-only string (it would be
            such a block; pass None for a window without a question), a ``prefill``
            comes with a question or memories (they would follow it), or a tool schema
            has no name (:func:`~contextos.engine.window.tool_item`).
    """
    check_instructions(system, rules, tools, stored_rules)
    if isinstance(question, str) and not question.strip():
        raise ValueError(
            "the question is empty (or only whitespace): the API refuses an empty text "
            "block; pass question=None for a window without one"
        )
    if prefill is not None and (question is not None or memories):
        raise ValueError("a prefill ends the request: it takes no question and no memories")
    system = system if system.strip() else ""
    memory_header = memory_header if memory_header and memory_header.strip() else None
    topic_header = topic_header if topic_header and topic_header.strip() else None
    lay = layout or Layout()
    if topic and lay.topic_ceiling <= 0:
        raise ValueError("topic memories need a layout with topic_ceiling > 0")
    topic_items = hit_items(topic, tokenizer)
    memory_items = hit_items(memories, tokenizer, skip=[i.text for i in topic_items])
    memories_floor = int(lay.memories_floor * budget)
    header: list[Segment] = []
    if memory_header and memory_items:
        head = text_item("memories:header", memory_header, tokenizer)
        # The memories' floor is the header's first: memories go only under it.
        header_floor = min(memories_floor, head.tokens)
        memories_floor -= header_floor
        header = [
            Segment(
                "memory_header",
                "context",
                (head,),
                priority=lay.memories_priority,
                floor=header_floor,
            )
        ]
    topic_head: list[Segment] = []
    if topic_header and topic_items:
        topic_head = [
            Segment(
                "topic_header",
                "system",
                (text_item("topic:header", topic_header, tokenizer, role="system"),),
                priority=TOPIC_PRIORITY,
            )
        ]
    question_items: tuple[Item, ...] = ()
    if isinstance(question, Message):
        question_items = (message_item("question", question, tokenizer),)
    elif question is not None:
        question_items = (text_item("question", question, tokenizer),)
    summary_items: tuple[Item, ...] = ()
    if summary is not None and summary.lines:
        text = "Summary of the earlier conversation:\n" + summary.text
        summary_items = (
            text_item("summary", text, tokenizer, role="system", provenance=summary.provenance()),
        )
    sent = with_thinking_sent(turns, tokenizer, question=question is not None)
    segments = [
        Segment(
            "tools",
            "tools",
            tuple(tool_item(t, tokenizer) for t in tools),
            priority=TOOLS_PRIORITY,
            cache_ttl="1h",
            required=True,
        ),
        Segment(
            "system",
            "system",
            (text_item("system", system, tokenizer, role="system"),) if system else (),
            priority=SYSTEM_PRIORITY,
            cache_ttl="1h",
            required=True,
        ),
        _rules_segment(rules, stored_rules, tokenizer),
        Segment(
            "summary",
            "system",
            summary_items,
            priority=SUMMARY_PRIORITY,
            ceiling=int(lay.summary_ceiling * budget),
            cache_ttl="5m",
        ),
        *topic_head,
        Segment(
            "topic",
            "system",
            topic_items,
            priority=TOPIC_PRIORITY,
            keep="strongest",
            placement="edges",
            ceiling=int(lay.topic_ceiling * budget),
            cache_ttl="5m",
        ),
        Segment(
            "turns",
            "messages",
            sent,
            priority=TURNS_PRIORITY,
            keep="newest",
            cache_ttl="5m",
            anchor_every=lay.anchor_every,
        ),
        *(
            [
                Segment(
                    "prefill",
                    "messages",
                    (message_item(PREFILL_KEY, prefill, tokenizer),),
                    priority=QUESTION_PRIORITY,
                    required=True,
                )
            ]
            if prefill is not None
            else []
        ),
        *header,
        Segment(
            "memories",
            "context",
            memory_items,
            priority=lay.memories_priority,
            keep="strongest",
            placement="edges",
            floor=memories_floor,
            ceiling=int(lay.memories_ceiling * budget),
        ),
        Segment("question", "question", question_items, priority=QUESTION_PRIORITY, required=True),
    ]
    if question is None and prefill is None:  # the request is for the newest unit
        segments = _newest_floored(segments, budget)
    window = assemble(
        segments,
        budget,
        min_cache_tokens=min_cache_tokens,
        restate_question_over=lay.restate_question_over,
    )
    if question is None and any(o.segment == "turns" for o in window.overflow):
        # The open loop's thinking did not fit: its older turns' thinking goes first
        # (:func:`loop_thinking_to_fit`). The turns' allowance stays what it was: the
        # segments served before them are the same, and so is the turns' floor.
        room = next(u.allowance for u in window.usage if u.name == "turns")
        lean = loop_thinking_to_fit(sent, tokenizer, room)
        if lean is not None:
            segments = [replace(g, items=lean) if g.name == "turns" else g for g in segments]
            window = assemble(
                segments,
                budget,
                min_cache_tokens=min_cache_tokens,
                restate_question_over=lay.restate_question_over,
            )
    return _memories_under_header(
        window,
        segments,
        budget,
        min_cache_tokens=min_cache_tokens,
        restate_question_over=lay.restate_question_over,
    )


def _newest_floored(segments: Sequence[Segment], budget: int) -> list[Segment]:
    """``segments`` with the turns' floor set to their newest unit with the user turn that
    opened its exchange (:func:`~contextos.engine.window.newest_unit_tokens`), as far as
    the instructions, tools and other segments' floors leave room: a window without a
    question is for that unit (a step of a tool loop: the call and its results go
    together), so the summary and the topic block take what is left, not it.

    Why: served before the turns, a rolling summary left the newest tool step a few
    tokens short, and a call whose budget held that step was refused ("the newest tool
    turn does not fit the budget") or sent without it. Capped so the floor never takes
    room from the instructions or tools (served first, the system prompt and tools are
    required): where the unit does not fit beside them, the window leaves it out as
    before, and the caller's error says so with the numbers."""
    first = {g.name for g in segments if g.priority > SUMMARY_PRIORITY}
    ahead = sum(i.tokens for g in segments if g.name in first for i in g.items)
    others = [g for g in segments if g.name not in first and g.name != "turns"]
    floors = sum(min(g.floor, sum(i.tokens for i in g.items)) for g in others)
    room = budget - TOKENS_PER_REPLY - ahead - floors
    return [
        replace(g, floor=max(0, min(newest_unit_tokens(g.items), room))) if g.name == "turns" else g
        for g in segments
    ]


def _memories_under_header(
    window: Window,
    segments: Sequence[Segment],
    budget: int,
    *,
    min_cache_tokens: int,
    restate_question_over: int | None,
) -> Window:
    """``window`` when it places each memory header in ``segments`` (the per-call
    memories', the topic block's) with at least one of its memories, or neither; else
    the window assembled again without each header and its memories placed one without
    the other, all of them reported left out.

    Why one rule for both: the header alone introduces nothing, and a memory alone,
    placed just before the question with nothing saying it is an old, possibly outdated
    memory, reads as words the user just typed (a review: the header did not fit a few
    tokens of room, the memory "Cancel all my orders." did). A topic memory alone is
    worse: on OpenAI it went out as a system message of its own, read as the app's
    instruction (a review). The room goes to what else wants it; assembling again with
    more room can change what else is placed, so the rule is checked again until it
    holds."""
    present = {g.name for g in segments}
    pairs = [pair for pair in _UNDER_HEADER if pair[0] in present]
    first = {u.name: u for u in window.usage}
    emptied: set[str] = set()
    left_out: list[Overflow] = []
    while broken := _apart(window, pairs):
        dropped = {(o.segment, o.key): o for o in window.overflow if o.segment in broken}
        left_out += [
            dropped.get((g.name, i.key)) or Overflow(g.name, i.key, i.tokens, _WITHOUT[g.name])
            for g in segments
            if g.name in broken
            for i in g.items
        ]
        emptied |= broken
        bare = [replace(g, items=()) if g.name in emptied else g for g in segments]
        window = assemble(
            bare,
            budget,
            min_cache_tokens=min_cache_tokens,
            restate_question_over=restate_question_over,
        )
    if not emptied:
        return window
    usage = tuple(
        replace(first[u.name], tokens=0, items=0, dropped=len(g.items)) if u.name in emptied else u
        for u, g in zip(window.usage, segments, strict=True)
    )
    return replace(window, usage=usage, overflow=window.overflow + tuple(left_out))


def _apart(window: Window, pairs: Sequence[tuple[str, str]]) -> set[str]:
    """The segments of the first (header, memories) pair in ``pairs`` of which
    ``window`` places one without the other; empty when there is none. A pair placed
    not at all is already left out, each of its items in the overflow with the reason
    it did not fit. One pair at a time, in layout order: the room a topic block leaves
    can be enough for the per-call memories and their header."""
    placed = {b.segment for b in window.blocks}
    return next((set(pair) for pair in pairs if len(placed.intersection(pair)) == 1), set())


#: Each memory header and the segment of the memories it introduces, in layout order:
#: placed together (the header and at least one memory) or not at all.
_UNDER_HEADER = (("topic_header", "topic"), ("memory_header", "memories"))
#: Why a placed header or memory is left out when the other is not placed.
_WITHOUT = {
    "memory_header": "no memory fits: the header goes with one",
    "memories": "the memory header does not fit: a memory goes only under it",
    "topic_header": "no topic memory fits: the header goes with one",
    "topic": "the topic header does not fit: a memory goes only under it",
}


#: The smallest input budget a window is built under: the reply's primer and one
#: message of one token (its framing and its role), the least any request sends.
MIN_BUDGET = TOKENS_PER_REPLY + TOKENS_PER_MESSAGE + 2


def checked_budget(budget: object) -> int:
    """``budget`` as the input budget a window is built under: a finite number of tokens
    (not a bool; a fraction is dropped, as ``0.75 * window`` is meant) of at least
    :data:`MIN_BUDGET`.

    Why: a budget of 0, a negative one or one of a few tokens was taken, and every call
    was refused as if the instructions and tools did not fit, with none given; NaN
    failed deep in the window ("cannot convert float NaN to integer"), and a string
    with a bare ``TypeError`` from a comparison (a review). A float stays a budget:
    ``budget=128_000 * 0.75`` worked before these checks, and apps pass it (a review).
    ``wrap()`` checks its budget here when it is called, before anything is logged,
    and a window (:func:`window_budget`) when it is asked for.

    Raises:
        TypeError: ``budget`` is no number of tokens (a string, a bool, NaN, infinity).
        BudgetError: it is under :data:`MIN_BUDGET`.
    """
    finite = isinstance(budget, numbers.Integral) or (
        isinstance(budget, numbers.Real) and math.isfinite(budget)
    )
    if isinstance(budget, bool) or not finite:
        raise TypeError(
            f"a token budget must be a number of tokens, not {type(budget).__name__} {budget!r:.40}"
        )
    assert isinstance(budget, numbers.Real)
    whole = math.floor(float(budget))
    if whole < MIN_BUDGET:
        raise BudgetError(
            f"a token budget of {budget} holds no request: the smallest (the reply's "
            f"primer and a one-token message) takes {MIN_BUDGET}",
            requested=MIN_BUDGET,
            available=whole,
        )
    return whole


def window_budget(model: ModelInfo | str, budget: int | None = None) -> int:
    """The input budget: ``budget`` if given, else the window minus the reserved output
    (:meth:`~contextos.llm.models.ModelInfo.default_output_reserve`). ``model``: a
    ``ModelInfo`` or its name (:func:`~contextos.llm.models.as_model`).

    Raises:
        TypeError, BudgetError: ``budget`` is not a budget at all (:func:`checked_budget`).
        TypeError, ConfigError: ``model`` is neither a ``ModelInfo`` nor a known name.
        BudgetError: ``budget`` is over the model's context window less that reserve
            (:meth:`~contextos.llm.models.ModelInfo.check_budget`; a model the registry
            does not know takes any budget).
    """
    model = as_model(model)
    if budget is not None:
        budget = checked_budget(budget)
        model.check_budget(budget)
        return budget
    return model.largest_budget()


@dataclass(frozen=True)
class CompactionResult:
    """What ``Session.compact`` did: the plan (None when under the trigger, when only
    recent or pinned turns were left, or when it lost a race) and the new state."""

    plan: Plan | None
    state: HistoryState
    archived: int = 0
    #: True when a plan was made but dropped: another writer (a compaction, a pin, an
    #: erasure) changed the state between its read and the save. Calling again re-plans.
    raced: bool = False
    #: Why nothing was compacted (None when something was): :data:`UNDER_TRIGGER`,
    #: :data:`ONLY_PROTECTED` or :data:`RACED`. Why: "no plan" was read as "under the
    #: trigger" by the CLI, and a history twice its budget was called small (a review).
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        """What the compaction did, as JSON: ``contextos compact --json`` prints it, and
        ``POST /v1/sessions/{id}/compact`` and MCP ``compact_session`` answer it."""
        return {
            "compacted": self.plan is not None,
            "state": self.state.to_json(),
            "plan": asdict(self.plan) if self.plan else None,
            "archived": self.archived,
            "raced": self.raced,
            "reason": self.reason,
        }


#: :attr:`CompactionResult.reason` values.
UNDER_TRIGGER = "under_trigger"
ONLY_PROTECTED = "only_recent_or_pinned"
RACED = "raced"


#: How often ``pin`` reads and writes again when other writers keep changing the state.
_SAVE_TRIES = 50


def _unit_head(read: Sequence[Turn | TurnPrint], i: int) -> int:
    """The index of the turn that opens the tool unit of ``read[i]``: back over the tool
    results before it (the log's first turn at most)."""
    while i > 0 and _role(read[i]) == "tool":
        i -= 1
    return i


def _runs(seqs: Sequence[int]) -> list[list[int]]:
    """Ascending ``seqs`` in runs of consecutive numbers."""
    runs: list[list[int]] = []
    for seq in seqs:
        if runs and runs[-1][-1] == seq - 1:
            runs[-1].append(seq)
        else:
            runs.append([seq])
    return runs


def _role(turn: Turn | TurnPrint) -> str:
    """A turn's role, of the turn or of its print."""
    return turn.role if isinstance(turn, TurnPrint) else turn.message.role


class Session:
    """One conversation's durable log in a :class:`~contextos.store.base.Store`.

    ``store``: a Store, or a ``Memory`` (its store and, unless ``tenant`` is given, its
    tenant: the conversation is logged where its memories are).
    ``tenant``: by default ``CONTEXTOS_TENANT``, else "default", as ``Memory``'s (it was
    always "default", so with ``CONTEXTOS_TENANT`` set the README's example logged its
    turns where the CLI did not look).

    ``hold``: what the Session keeps of the log in memory between reads. ``log``
    (the default) keeps every turn it read, so :meth:`turns` costs only the new ones.
    ``window`` keeps the turns from the history's start on, the pinned and kept ones
    before it with the rest of their tool units (every turn a window or a compaction
    reads) and a :class:`TurnPrint` of every turn (what matching a request to the
    log needs); :meth:`turns` then reads the older turns from the store. A wrapped
    client's Session holds ``window``: in a process that stays up for days it kept
    every turn it ever read (about 2.3 KB a turn, nearly all of them long rotated out).

    ``exact_history``: with a remote counter (an API call per text: an
    ``AnthropicTokenCounter`` with a client), also count the logged turns another counter
    counted (one ``count_tokens`` request a turn, once per process). Off (the default),
    their stored counts stand in, as estimates (:attr:`estimated_counts`); the turns
    this Session logs, the question and the window's other parts are counted exactly.

    Example:
        >>> s = Session(store, "chat-1", user_id="ana")           # doctest: +SKIP
        >>> s.add(Message("user", "hi"))                          # doctest: +SKIP
        >>> s.window(get_model("sonnet"), "what did I say?")      # doctest: +SKIP
    """

    def __init__(
        self,
        store: Store | Memory,
        session_id: str,
        *,
        tenant: str | None = None,
        user_id: str | None = None,
        agent_id: str | None = None,
        tokenizer: Tokenizer | None = None,
        hold: Hold = "log",
        exact_history: bool = False,
    ) -> None:
        from contextos.memory.api import Memory  # here: the memory package imports this one

        #: The Memory given, kept while this Session lives: it owns the store, and a
        #: ``Session(Memory("app.db"), "s1")`` whose Memory was collected had its store
        #: closed under it (the first ``add`` failed: "Cannot operate on a closed
        #: database", a review).
        self._memory: Memory | None = store if isinstance(store, Memory) else None
        if isinstance(store, Memory):  # its store, and its tenant unless one is given
            tenant = store.tenant if tenant is None else tenant
            store = store.store
        elif not callable(getattr(store, "append_turns", None)):
            raise TypeError(f"a Session logs into a Store or a Memory, not {type(store).__name__}")
        if tenant is None:  # as Memory's: its turns and its memories in one tenant
            tenant = default_tenant()
        validate_tenant(tenant)
        self.scope = Scope(tenant=tenant, user_id=user_id, agent_id=agent_id, session_id=session_id)
        if self.scope.session_id is None:
            raise ScopeError("a Session needs a session_id")
        if self.scope.session_id.startswith(LOCK_SESSION_PREFIX):
            # Such ids hold an agent lock's state (``contextos.agent.lock``, which uses the
            # store directly): a conversation under one was never listed, and one equal
            # to an owner's lock id had its compaction state wiped by the lock's swaps.
            raise ScopeError(
                f"session ids starting with {LOCK_SESSION_PREFIX!r} are reserved for "
                "contextos's own use; choose another session id"
            )
        if hold not in HOLDS:
            raise ValueError(f"hold must be one of {HOLDS}, not {hold!r}")
        self.store = store
        self.tokenizer = tokenizer or default_tokenizer()
        #: The stamp of this Session's counts (:func:`~contextos.llm.tokens.counted_with`).
        self._counter = counted_with(self.tokenizer)
        #: Count logged turns another counter counted with this one's API too (see
        #: :meth:`_counted`); off, a remote counter keeps their stored counts.
        self.exact_history = exact_history
        #: The seqs of the turns read whose count is the stored one, another counter's
        #: estimate, kept in place of a recount by a remote counter (:meth:`_counted`).
        self._estimated: set[int] = set()
        self.hold: Hold = hold
        #: The turns read with ``seq >= _held_from``, whole, in log order.
        self._turns: list[Turn] = []
        #: Where ``_turns`` starts: every turn read before it is only a print, but for
        #: those in ``_older``.
        self._held_from = 0
        #: The pinned and kept turns before ``_held_from`` (with the rest of their tool
        #: units) that the last :meth:`window_turns` read, by seq: only those.
        self._older: dict[int, Turn] = {}
        #: A print of every turn read, in log order (``_turns``' included), but for the
        #: newest ``_unprinted`` of ``_turns``: :meth:`_printed` makes theirs when needed.
        self._prints: list[TurnPrint] = []
        #: How many of the newest turns held have no print in ``_prints`` yet. Why: a
        #: print costs ~5 µs a turn (two digests), and a Session that reads the log
        #: whole for one window (a fresh one per server request) needs none: 0.45 s of a
        #: window at 80,000 turns.
        self._unprinted = 0
        #: Whether :meth:`_said_now` made a conversation of the held turns, unprinted.
        self._said_once = False
        #: The conversation's prints (:func:`conversation` of ``_prints``), kept as they
        #: grow (:func:`_extend_conversation`): only appended to, or replaced.
        self._said: list[TurnPrint] = []
        #: The session meta's revision when ``_turns`` was read whole (``turns_since``).
        self._revision: str | None = None
        #: The meta's log epoch (:data:`_EPOCH_KEY`) when ``_turns`` was read whole.
        self._epoch: object = None
        #: One reader of the log at a time: threads sharing a Session (a web app's
        #: wrapped client) once both extended the cache with the same new turns.
        self._lock = threading.Lock()
        #: The newest turn ``add`` logged, until ``turns`` has seen it in the log.
        self._appended: Turn | None = None
        #: How many times ``turns`` found that the log lost turns this Session had read
        #: or logged (an erasure): a holder of other state built from the log (a
        #: wrapped client's topic block) drops it when this moves.
        self.log_restarts = 0

    @property
    def session_id(self) -> str:
        """The session's id."""
        return str(self.scope.session_id)

    @property
    def held_turns(self) -> int:
        """How many turns the Session holds whole in memory (see ``hold``)."""
        with self._lock:
            return len(self._turns) + len(self._older)

    # -- the log ----------------------------------------------------------------
    def add(
        self, *messages: Message, after: Turn | None = None, newest: int | None = None
    ) -> list[Turn]:
        """Append messages durably (with token counts); returns them numbered.

        ``after``: only while the log still holds that turn (``Store.append_turns``);
        else :class:`~contextos.errors.NotFound` is raised and nothing is logged.
        ``newest``: only while the log's last turn is numbered so (-1: none; see
        :attr:`last_read`); else :class:`~contextos.errors.Conflict`.

        Each count is stored with what made it (:data:`COUNTED_KEY` in the turn's stored
        metadata: :func:`~contextos.llm.tokens.counted_with`, and the part of it that
        is an estimate of images and documents): a Session counting with another
        tokenizer, or by another rule, counts the turn again when it reads it.
        """
        if not messages or not all(isinstance(m, Message) for m in messages):
            raise TypeError("add takes one or more Message values")
        for n, m in enumerate(messages):
            what = f"message {n}" if len(messages) > 1 else "message"
            if metadata_depth(m.metadata, MAX_TURN_METADATA_DEPTH) > MAX_TURN_METADATA_DEPTH:
                raise ValueError(
                    f"{what}'s metadata may nest at most {MAX_TURN_METADATA_DEPTH} levels deep"
                )
            wide = wide_int(m.metadata)  # the rule a memory's metadata keeps (check_metadata)
            if wide is not None:
                raise ValueError(f"{what}'s metadata integers must fit in 64 bits (got {wide})")
            check_turn_content(m, what)  # None (a reply of tool calls) failed in SQL
            check_text(m, what)
        tokens = [self.tokenizer.count_messages([m]) - TOKENS_PER_REPLY for m in messages]
        stored = [self._stamped(m) for m in messages]
        appended = self.store.append_turns(self.scope, stored, tokens, after=after, newest=newest)
        # the caller's messages, without the stamp
        logged = [replace(t, message=m) for t, m in zip(appended, messages, strict=True)]
        with self._lock:
            self._appended = logged[-1]
        return logged

    def _stamped(self, message: Message) -> Message:
        """``message`` as stored: its metadata with the count's stamp (:data:`COUNTED_KEY`)."""
        stamp: dict[str, Any] = {"with": self._counter}
        if not getattr(self.tokenizer, "media_exact", False):
            estimated = media_tokens(message, self.tokenizer.count)
            if estimated:
                stamp[ESTIMATED_KEY] = estimated
        return replace(message, metadata={**message.metadata, COUNTED_KEY: stamp})

    @property
    def estimated_counts(self) -> frozenset[int]:
        """The seqs of the turns read whose count is an estimate: the one stored by
        another counter, kept in place of a recount by this Session's remote counter
        (``exact_history`` off; :meth:`_counted`). Empty for an offline counter."""
        return frozenset(self._estimated)

    def _counted(self, turns: Sequence[Turn]) -> list[Turn]:
        """``turns`` as read from the store, with this Session's counts: a stored count
        is kept when this Session's tokenizer and counting rule made it (its stamp,
        :data:`COUNTED_KEY`), else the turn is counted again (a log written by another
        tokenizer, an older contextos, or before counts were stamped). The stamp is taken
        off the turn's metadata.

        A recount is kept for the process (:class:`_Recounts`): the log is append-only,
        so it is never written back, and without it every read of such a log (a fresh
        Session per server request) counted it all again. A remote counter (an API call
        per text, :func:`remote_counter`: ``AnthropicTokenCounter`` with a client) does
        not recount stored turns: the stored count stands in, an estimate, listed in
        :attr:`estimated_counts`, unless the Session was made with
        ``exact_history=True`` (then each such turn costs one ``count_tokens`` request,
        once per process). Turns this Session logs are counted exactly as they are
        logged either way. Why: opening a Session with the exact counter on a log
        written with the default tokenizer made one request per turn (402 for 400
        turns), again for every new Session.
        """
        out: list[Turn] = []
        keep_stored = remote_counter(self.tokenizer) and not self.exact_history
        for turn in turns:
            meta = turn.message.metadata
            stamp = meta.get(COUNTED_KEY)
            if stamp is not None:
                clean = {k: v for k, v in meta.items() if k != COUNTED_KEY}
                turn = replace(turn, message=replace(turn.message, metadata=clean))
            if isinstance(stamp, Mapping) and stamp.get("with") == self._counter:
                out.append(turn)
                continue
            if keep_stored:
                self._estimated.add(turn.seq)
                out.append(turn)
                continue
            message = turn.message
            key = (
                id(self.store),
                self.scope.tenant,
                self.scope.session_id,
                turn.seq,
                turn.created_at,
                hash((message.role, message.content)),
                self._counter,
            )
            count = _RECOUNTS.get(key)
            if count is None:
                count = self.tokenizer.count_messages([message]) - TOKENS_PER_REPLY
                _RECOUNTS.put(key, count)
            out.append(replace(turn, tokens=count))
        return out

    def turns(self) -> list[Turn]:
        """Every turn, oldest first.

        The turns read before are kept, and a call reads only what is new since,
        unless the log no longer holds them (``Store.turns_since``): an erasure by
        this process or another (``forget`` through a second Memory, the server, the
        CLI) removed some, and then the whole log is read again, so erased turns are
        never sent again and turns logged after the erasure are seen. Such an erasure,
        or one of a turn this Session logged and had not read yet, counts in
        ``log_restarts``. A compaction or pin by another Session moves the revision
        too but keeps the log epoch (:data:`_EPOCH_KEY`), and the read goes on from
        the turns held (the log is never rewritten): read whole, it cost every Session
        of the log (the compacting one too) about 10,000 rows and 80-120 ms at 10,000
        turns after each compaction, where the new turns cost well under 1 ms.

        With ``hold="window"`` the turns before those held are read from the store
        (one indexed read), and not kept.
        """
        with self._lock:
            for _ in range(_SAVE_TRIES):
                self._read_turns()
                if not self._prints or self._held_from <= self._prints[0].seq:
                    return list(self._turns)  # every turn read is held (the unprinted too)
                older = self._load(self._prints[0].seq)
                if older is not None:
                    return older + self._turns
                self._turns = []  # erased meanwhile: read the log whole again
        raise StoreError(f"session {self.session_id!r}: the log kept changing while read")

    def fingerprints(self) -> list[TurnPrint]:
        """A :class:`TurnPrint` of every turn, oldest first (read as :meth:`turns` reads)."""
        with self._lock:
            self._read_turns()
            return list(self._printed())

    @property
    def last_read(self) -> int:
        """The number of the last turn read from the log (-1: none): what a writer that
        decided from the turns read passes as ``add(newest=...)``."""
        with self._lock:
            return self._last_read()

    def _last_read(self) -> int:
        return self._turns[-1].seq if self._turns else self._held_from - 1

    def conversation_read(self) -> tuple[ConversationView, int]:
        """:meth:`conversation_prints` and :attr:`last_read` of one read (another thread
        sharing this Session could read further between the two)."""
        with self._lock:
            self._read_turns()
            self._printed()
            return ConversationView(self._said, len(self._said)), self._last_read()

    def conversation_prints(self) -> ConversationView:
        """The prints of the conversation (:func:`conversation` of :meth:`fingerprints`),
        oldest first, read as :meth:`turns` reads; a view that later reads leave as it is.

        Why: a wrapped client matched every request against
        ``conversation(fingerprints())``, which copied and walked every print of the log,
        twice a call: 2.5 ms a call at 1,000 turns, 34 ms at 80,000. The conversation is
        kept as the log is read (new turns carry it on; a redo cuts it, and a whole read
        of the log, after an erasure, makes it again), so a call costs its new turns.
        """
        with self._lock:
            self._read_turns()
            self._printed()
            return ConversationView(self._said, len(self._said))

    def window_turns(self, state: HistoryState | None = None) -> list[Turn]:
        """The turns a window or a compaction in ``state`` reads (default: the stored
        state), oldest first: every turn from the history's start on (from the turn that
        opens its tool unit in the conversation), and the pinned and kept turns before it
        with the rest of their tool units in the conversation (with ``hold="log"``, the
        same turns, out of every turn held).

        Given those turns, :func:`~contextos.engine.compaction.visible_turns` and
        :func:`turn_items` give what they give for the whole log, and
        :func:`conversation` keeps what it keeps of them in the whole log.

        Why not every turn from the oldest pinned or kept one on: an agent's open tool
        loop keeps its task's user turn (``kept``) while compaction rotates its steps
        out, and a Session that held everything from that turn on held every step of a
        loop of thousands (screenshots included: +0.38 MB a step), while the window
        sent about ten.
        """
        state = self.state() if state is None else state
        with self._lock:
            for _ in range(_SAVE_TRIES):
                self._read_turns()
                said = self._said_now()
                start = self._boundary(state, said)
                if start < self._held_from:
                    older = self._load(start)
                    if older is None:
                        self._turns = []  # erased meanwhile: read the log whole again
                        continue
                    self._turns[:0] = older
                    self._held_from = start
                below = self._below(state, start, said)
                if below is None:
                    self._turns = []
                    continue
                return below + self._turns[bisect_left(self._turns, start, key=_seq) :]
        raise StoreError(f"session {self.session_id!r}: the log kept changing while read")

    def conversation(self, state: HistoryState | None = None) -> list[Turn]:
        """:meth:`window_turns` as the user sees the conversation (:func:`conversation`):
        replaced answers (a regenerate, an edit) and cut replies left out."""
        return conversation(self.window_turns(state))

    def _read_turns(self) -> None:
        """Bring ``_turns`` up to the log, the new turns unprinted (the lock held)."""
        logged, self._appended = self._appended, None
        new, meta = self._read_new()
        lost = False
        if new is not None:
            new = self._counted(new)
            self._turns += new
            self._unprinted += len(new)
        else:  # the revision first: an erasure after it moves it, and is seen next time
            meta, self._revision = self.store.session_meta_revision(self.scope)
            self._epoch = meta.get(_EPOCH_KEY)
            held = self._printed()
            self._estimated.clear()  # the log read whole: as it is now
            self._turns = self._counted(self.store.turns(self.scope))
            self._prints, self._said, self._unprinted = [], [], len(self._turns)
            self._held_from = self._turns[0].seq if self._turns else 0
            self._older = {}
            lost = not self._still_holds(held)
        if meta is not None and self.hold == "window":
            self._trim(HistoryState.from_json(meta.get(_META_KEY) or {}))
        if lost or (logged is not None and not self._holds(logged)):
            self.log_restarts += 1  # turns it had read, or had logged, are gone

    def _read_new(self) -> tuple[list[Turn] | None, dict[str, Any] | None]:
        """The turns logged after the last one read, or None when the log must be read
        whole: nothing read yet, or turns may be gone (an erasure); and the meta when
        it was read (the revision moved).

        A moved revision with the log epoch unchanged was a compaction or a pin (an
        erasure's reset drops the epoch, and a writer that read the state before it
        loses its compare-and-set), so the read goes on from the new revision.
        """
        if not self._turns:
            return None, None
        last = self._turns[-1]
        new = self.store.turns_since(self.scope, last, revision=self._revision)
        if new is not None or self._epoch is None:
            return new, None
        meta, revision = self.store.session_meta_revision(self.scope)
        if meta.get(_EPOCH_KEY) != self._epoch:
            return None, None
        new = self.store.turns_since(self.scope, last, revision=revision)
        if new is not None:
            self._revision = revision
        return new, meta

    def _printed(self) -> list[TurnPrint]:
        """``_prints``, with those of the newest turns held that had none yet made (and
        the conversation's prints carried on with them): the lock held."""
        if self._unprinted:
            added = [turn_print(t) for t in self._turns[len(self._turns) - self._unprinted :]]
            self._unprinted = 0
            self._prints += added
            self._said = _extend_conversation(self._said, added)
        return self._prints

    def _said_now(self) -> Sequence[Turn | TurnPrint]:
        """The whole log's conversation (:func:`conversation`) as read, in log order: its
        prints (carried on as the log is read), or, the first time a Session that has
        printed none needs it, that of the turns held (all are held then). The lock held.

        Why not always the prints: a print costs ~5 µs a turn, and a Session made for one
        window (the server's, per request) needs the conversation once. Why not always
        the turns: a long-lived Session that only reads (``hold="log"``) then walked the
        whole log on every window (13.5 ms a call at 40,000 turns, where a bisection
        had cost 0.06 ms)."""
        if self._prints or self._said_once:
            self._printed()
            return self._said
        self._said_once = True
        return conversation(self._turns)

    def _boundary(self, state: HistoryState, said: Sequence[Turn | TurnPrint]) -> int:
        """The seq from which ``state``'s history is read whole: the first turn of the
        conversation ``said`` from its start on (turns an edit or a regenerate replaced
        may lie between), moved back to the turn that opens its tool unit there (a turn
        that is not a tool result), never past the newest turn. From there on, the
        conversation of the turns held is the whole log's."""
        if not said:
            return 0
        i = min(bisect_left(said, state.start_seq, key=_seq), len(said) - 1)
        return said[_unit_head(said, i)].seq

    def _below_seqs(
        self, state: HistoryState, start: int, said: Sequence[Turn | TurnPrint]
    ) -> list[int]:
        """The seqs of the pinned and kept turns before ``start`` with the rest of their
        tool units, found in the whole log's conversation ``said`` (a unit there may skip
        a replaced or cut turn of the log, which is not read): from the turn that opens
        the unit, over every tool result after it. A pinned or kept turn the conversation
        no longer holds (a later turn took its place) is in no window."""
        wanted: set[int] = set()
        for seq in sorted({s for s in (*state.pinned, *state.kept) if s < start}):
            i = bisect_left(said, seq, key=_seq)
            if i == len(said) or said[i].seq != seq:
                continue
            head, end = _unit_head(said, i), i + 1
            while end < len(said) and _role(said[end]) == "tool":
                end += 1
            wanted.update(t.seq for t in said[head:end])
        return sorted(wanted)

    def _below(
        self, state: HistoryState, start: int, said: Sequence[Turn | TurnPrint]
    ) -> list[Turn] | None:
        """The turns of :meth:`_below_seqs`, held or read from the store (and then kept in
        ``_older`` while windows read them); None when the log no longer holds them as
        they were printed (an erasure meanwhile). The lock held."""
        seqs = self._below_seqs(state, start, said)
        older = {s: t for s in seqs if s < self._held_from and (t := self._older.get(s))}
        missing = [s for s in seqs if s < self._held_from and s not in older]
        for run in _runs(missing):
            found = self._load_run(run)
            if found is None:
                return None
            older.update((t.seq, t) for t in found)
        self._older = older
        return [older[s] if s in older else self._held(s) for s in seqs]

    def _held(self, seq: int) -> Turn:
        """The turn numbered ``seq`` in ``_turns`` (it is there)."""
        return self._turns[bisect_left(self._turns, seq, key=_seq)]

    def _load_run(self, seqs: Sequence[int]) -> list[Turn] | None:
        """The turns numbered ``seqs`` (consecutive in the log) from the store; None when
        the log no longer holds them as they were printed."""
        prints = self._printed()
        lo = bisect_left(prints, seqs[0], key=_seq)
        want = prints[lo : lo + len(seqs)]
        found = self.store.turns(self.scope, after_seq=seqs[0] - 1, limit=len(seqs))
        if [(p.seq, p.ident) for p in map(turn_print, found)] != [(p.seq, p.ident) for p in want]:
            return None
        return self._counted(found)

    def held_size(self) -> int:
        """About how many bytes this Session holds: the text of the turns it keeps
        whole (four bytes a character at most) and ~150 bytes a turn of prints.

        Why: a holder of many Sessions (the server's ``LiveSessions``) bounds what they
        hold together; an uncompacted log is held whole, however little of it a window
        places."""
        with self._lock:
            whole = [*self._turns, *self._older.values()]
            text = sum(len(t.message.content) for t in whole)
            return 4 * text + PRINT_BYTES * (len(self._prints) + len(whole))

    def _trim(self, state: HistoryState) -> None:
        """Let go of the whole turns before ``state``'s boundary (their prints stay)."""
        self._printed()
        said = self._said_now()
        start = self._boundary(state, said)
        if start > self._held_from:
            cut = bisect_left(self._turns, start, key=_seq)
            keep = set(self._below_seqs(state, start, said))  # read by the next window
            self._older.update((t.seq, t) for t in self._turns[:cut] if t.seq in keep)
            del self._turns[:cut]
            self._held_from = start

    def _load(self, start: int) -> list[Turn] | None:
        """The turns from ``start`` up to those held, read from the store; None when the
        log no longer holds them as they were printed (an erasure meanwhile)."""
        self._printed()
        lo = bisect_left(self._prints, start, key=_seq)
        hi = bisect_left(self._prints, self._held_from, key=_seq)
        want = self._prints[lo:hi]
        if not want:
            return []
        found = self.store.turns(self.scope, after_seq=want[0].seq - 1, limit=len(want))
        if [(p.seq, p.ident) for p in map(turn_print, found)] != [(p.seq, p.ident) for p in want]:
            return None
        return self._counted(found)

    def _still_holds(self, held: Sequence[TurnPrint]) -> bool:
        """Whether the turns just read hold every turn of ``held`` (read before)."""
        if not held:
            return True
        now = {p.seq: p.ident for p in self._printed()}
        return all(now.get(p.seq) == p.ident for p in held)

    def _holds(self, turn: Turn) -> bool:
        """Whether the turns read hold ``turn`` (logged here before they were read)."""
        i = bisect_right(self._printed(), turn.seq, key=_seq) - 1
        if i < 0:
            return False
        p, mine = self._prints[i], turn_print(turn)
        return (p.seq, p.ident) == (mine.seq, mine.ident)

    def turn(self, seq: int) -> Turn:
        """One turn by position (cleared tool results come back whole from here)."""
        found: Sequence[Turn] = self._counted(
            self.store.turns(self.scope, after_seq=seq - 1, limit=1)
        )
        first: Turn | None = found[0] if found else None
        if first is None or first.seq != seq:
            raise NotFound(f"session {self.session_id!r} has no turn {seq}")
        return first

    def _logged(self, seqs: Sequence[int] | set[int]) -> dict[int, Turn]:
        """The turns numbered ``seqs`` the log holds now (one indexed read of their span,
        after any erasure under way: ``settled``)."""
        if not seqs:
            return {}
        lo, hi = min(seqs), max(seqs)
        found = self.store.turns(self.scope, after_seq=lo - 1, limit=hi - lo + 1, settled=True)
        wanted = set(seqs)
        return {t.seq: t for t in self._counted([t for t in found if t.seq in wanted])}

    def change_meta(
        self, key: str, change: Callable[[Mapping[str, Any]], Any], *, tries: int = 8
    ) -> bool:
        """Write ``change(meta)`` as the session meta's ``key`` (``meta``: the whole meta
        as it is now) only while the meta is as read, reading it again when another
        writer changed it meanwhile, up to ``tries`` times; False when ``change``
        returned None (write nothing) or every try was refused.

        Why here: the meta also holds the compaction state and the log's epoch, which
        a write of a key beside them must carry over (without the epoch, a long-lived
        Session took its own write for an erasure and read its whole log again).
        Used by :mod:`contextos.engine.owed` for the holds of wrapped calls' commits."""
        if key in (_META_KEY, _EPOCH_KEY):
            raise ValueError(f"the session meta key {key!r} is the session's own")
        for _ in range(tries):
            state, meta, revision = self._read_state()
            value = change(meta)
            if value is None:
                return False
            if self._save(state, meta, revision, {key: value}):
                return True
        return False

    # -- compaction state ----------------------------------------------------------
    def state(self) -> HistoryState:
        """What compaction has done so far (a fresh state for a new session)."""
        return self._read_state()[0]

    def _read_state(self) -> tuple[HistoryState, dict[str, Any], str | None]:
        """The state, the whole meta it is kept in, and the meta's revision."""
        meta, revision = self.store.session_meta_revision(self.scope)
        return HistoryState.from_json(meta.get(_META_KEY) or {}), meta, revision

    def _save(
        self,
        state: HistoryState,
        meta: Mapping[str, Any],
        revision: str | None,
        extra: Mapping[str, Any] | None = None,
    ) -> bool:
        """Write ``state`` (and the ``extra`` meta keys) back if the meta is still at
        ``revision`` (when it was read); False when another writer (a compaction or pin
        in another Session or process, an erasure's reset) changed it meanwhile: nothing
        is written then. The log epoch is carried over, or drawn when the meta has none
        (new, or reset).

        A writer that changed only other keys does not count: the write is made again
        on the meta as it is then, up to :data:`_SAVE_TRIES` times, while the state, the
        epoch and the ``extra`` keys are as read. Why: each wrapped call's commit writes
        its key (``engine/owed.py``) once it ends, and a compaction in another process
        (``contextos compact``, the server, a second worker) lost its swap to it and
        threw its summary (a model call) away: 10 of 11 in a review's run."""
        # An erasure's reset drops the epoch; without an epoch read, nothing tells a reset
        # from a state never saved: no second try then.
        written = (_META_KEY, _EPOCH_KEY, *(extra or {}))
        for _ in range(_SAVE_TRIES):
            epoch = meta.get(_EPOCH_KEY) or uuid.uuid4().hex
            new = {**meta, **(extra or {}), _META_KEY: state.to_json(), _EPOCH_KEY: epoch}
            if self.store.swap_session_meta(self.scope, new, revision=revision):
                if not meta.get(_EPOCH_KEY):
                    self._adopt_epoch(epoch, revision)
                return True
            now, now_revision = self.store.session_meta_revision(self.scope)
            if not meta.get(_EPOCH_KEY) or any(now.get(k) != meta.get(k) for k in written):
                return False  # another writer changed what this one writes
            meta, revision = now, now_revision
        return False

    def _adopt_epoch(self, epoch: str, revision: str | None) -> None:
        """Take ``epoch``, just drawn by this Session's own save at ``revision``, as the
        epoch of the turns it holds, when they were read at that same revision.

        Why: a Session that read its log before the first compaction held no epoch, so
        after its own first compaction (or pin) it could not tell that save from an
        erasure and read the log whole again: 0.5 s at 20,000 turns, for the server's
        kept Session right after ``POST /v1/sessions/{id}/compact``. Safe: the save
        succeeded on ``revision``, so the meta did not move from the read of the turns
        held until the save, and an erasure always moves it (``forget`` resets the meta
        under a new revision) and drops the epoch after."""
        with self._lock:
            if self._epoch is None and self._turns and self._revision == revision:
                self._epoch = epoch

    def pin(self, seq: int, pinned: bool = True) -> HistoryState:
        """Pin (or unpin) a turn: pinned turns are never compacted out of the window.

        A compare-and-set on the state, tried again on the fresh state when another
        writer changed it between the read and the write: a pin made while a compaction
        summarizes is kept (that compaction's save then fails and it re-plans later).
        """
        for attempt in range(_SAVE_TRIES):
            if attempt:
                wait_before_retry(attempt - 1)
            self.turn(seq)
            state, meta, revision = self._read_state()
            pins = set(state.pinned) | {seq} if pinned else set(state.pinned) - {seq}
            new = replace(state, pinned=tuple(sorted(pins)))
            if not pinned:  # a unit a compaction stepped over stays until one rotates it
                turns = self.window_turns(state)
                left = pinned_seqs(turns, state) - pinned_seqs(turns, new)
                below = {s for s in left if s < state.start_seq}
                new = replace(new, kept=tuple(sorted(set(state.kept) | below)))
            if self._save(new, meta, revision):
                return new
        raise StoreError(f"could not pin turn {seq}: session {self.session_id!r} kept changing")

    def history_tokens(self) -> int:
        """Tokens of summary plus visible turns, as the window would show them."""
        state = self.state()
        return history_tokens(as_sent(self.conversation(state), state), state, self.tokenizer)

    def _check_tenant_of(self, memory: MemoryLike | None) -> None:
        """Refuse a ``memory`` of another tenant than this Session's (``ScopeError``).

        Why: an offload archives the session's turns with ``memory.add``, into the
        memory's tenant: a session of tenant ``acme`` compacted with tenant ``beta``'s
        Memory filed acme's turns in beta, where beta's searches found them and acme's
        ``forget`` never reached them (a review). ``wrap()`` refused the same pairing."""
        theirs = getattr(memory, "tenant", None)
        if memory is not None and theirs is not None and theirs != self.scope.tenant:
            raise ScopeError(
                f"the Session is of tenant {self.scope.tenant!r} but the memory given is of "
                f"tenant {theirs!r}: compact with a Memory of the Session's tenant"
            )

    def compact(
        self,
        budget: int,
        strategy: Strategy = "summarize",
        *,
        thresholds: Thresholds | None = None,
        summarizer: Summarizer | None = None,
        memory: MemoryLike | None = None,
        force: bool = False,
        open_loop: bool = False,
    ) -> CompactionResult:
        """Compact the history to fit ``budget`` (its share of the window), if needed.

        ``offload`` archives rotated turns with ``memory.add`` (a
        :class:`contextos.memory.Memory`), keeping each turn's reference. Without
        ``memory``, into the Memory the Session was opened on (``Session(memory, ...)``);
        why: it asked for that Memory a second time, and its refusal read as if the
        Session had none (a review). Either is refused if of another tenant.

        ``open_loop``: the window this makes room for is a request without a new question
        (an agent's call after its tools ran), which sends the open tool loop's thinking
        blocks: the loop's assistant turns are costed with them
        (:func:`with_thinking_counted`), as the window counts them, so compaction runs
        before the window would have to cut the loop.

        Several Sessions (threads, processes: a wrapped client and ``contextos
        compact``) may compact one session at once, and the summarizer may be a slow
        model call, so no lock is held while it works. The state is written back with
        a compare-and-set on the revision read before the turns
        (``Store.swap_session_meta``); a compaction that lost the race to another
        compaction, a pin or an erasure (``forget`` draws a new revision) discards its
        result and returns no plan, and the next call plans again on the new state.
        Turns are archived only after the save succeeded, by its one winner: an
        archive before the save was repeated by every racer and by every retry of a
        compaction interrupted before its save. The save lists them as unarchived
        (``HistoryState.unarchived``) and a second compare-and-set confirms them once
        stored; a crash or failure in between leaves them listed, and the next offload
        stores them first, skipping any already stored (a turn is its session and
        seq, and the time it was logged: a caller's ``dia_id`` is only provenance, and
        may repeat), so a rotated turn is never lost and never stored twice. The turns
        this compaction's own save listed are stored without that look-up
        (:meth:`_finish_archive`), so an offload costs its new turns, not the archive.
        The result's state is the one stored once the turns are confirmed.
        """
        # The revision is read before the turns: an erasure after this read changes it,
        # so a state planned on turns that include erased ones can never be saved.
        if strategy == "offload":
            memory = memory if memory is not None else self._memory
        if strategy == "offload" and memory is None:
            raise ValueError(
                "the offload strategy needs a memory to archive into: pass memory=, "
                "or open the Session on a Memory"
            )
        self._check_tenant_of(memory)
        leftover = self._finish_archive(memory) if memory is not None else 0
        state, meta, revision = self._read_state()
        turns = as_sent(self.conversation(state), state)  # as a window sends them
        costed = with_thinking_counted(turns, self.tokenizer) if open_loop else turns
        plan = plan_compaction(
            costed, state, budget, strategy, thresholds, force=force, tokenizer=self.tokenizer
        )
        if plan is None:
            tokens = history_tokens(costed, state, self.tokenizer)
            over = needs_compaction(tokens, budget, thresholds or Thresholds())
            why = ONLY_PROTECTED if force or over else UNDER_TRIGGER
            return CompactionResult(None, state, leftover, reason=why)
        summarizer = summarizer or (
            ExtractiveSummarizer(self.tokenizer) if strategy == "summarize" else None
        )
        new = apply_compaction(
            plan,
            turns,
            state,
            budget,
            summarizer=summarizer,
            thresholds=thresholds,
            tokenizer=self.tokenizer,  # a summary's lines are recounted as windows count
        )
        claim = archive_claim()
        listed = frozenset(new.unarchived) - frozenset(state.unarchived)  # by this save
        # The store's clock, the one every host stamps and judges a hold by (a review: a
        # host ahead took over a live hold); read only where a hold is in play.
        now = self.store.clock() if state.archiver or new.unarchived else 0.0
        if hold_runs(state, now):
            # Another Session holds the listed turns and is storing them: its hold stays
            # and it stores these too (its confirming save fails on this one and tries
            # again). Taken over, its turns were found not stored yet and stored twice.
            # A hold whose process died is not kept (``hold_runs``): its turns and these
            # were stored by no one until the lease ran out.
            new = replace(new, archiver=state.archiver, archiver_until=state.archiver_until)
        elif new.unarchived:  # this compaction's winner stores them: held in the same save
            new = replace(new, archiver=claim, archiver_until=now + ARCHIVE_LEASE_S)
        if not self._save(new, meta, revision):
            # Stale: another compaction or a pin got there first, or an erasure ran
            # while this summarized (its state quotes erased turns; the next ``turns``
            # finds them gone and reads the log again).
            return CompactionResult(None, self.state(), raced=True, reason=RACED)
        if strategy == "offload" and memory is not None:
            archived = leftover + self._finish_archive(memory, claim, listed)
            return CompactionResult(plan, self.state(), archived)  # as confirmed
        return CompactionResult(plan, new, leftover)

    def _finish_archive(
        self,
        memory: MemoryLike,
        claim: str | None = None,
        listed: frozenset[int] = frozenset(),
    ) -> int:
        """Store and confirm the turns the state lists as unarchived
        (:func:`~contextos.engine.offload.finish_archive`, on this session's state and
        log); returns how many records were stored."""
        return finish_archive(
            memory,
            self.scope,
            read_state=self._read_state,
            save=self._save,
            logged=self._logged,
            tries=_SAVE_TRIES,
            claim=claim,
            listed=listed,
            clock=self.store.clock,
        )

    # -- the window ------------------------------------------------------------------
    def participants_hits(self, hits: Sequence[Hit]) -> Sequence[Hit]:
        """``hits`` less, when this Session names an agent and no user, those naming a
        user who takes no part in this session: no memory, turn or row of the session
        names them (``Store.sessions`` of that user and this session, the rule
        ``Memory.sessions`` lists by). The agent's own memories (naming no user) and
        the memories of this session stay; with a user, ``hits`` is kept as given.

        Why: a window asked with the agent's id alone (``POST /v1/sessions/{sid}/window``
        with ``{"agent_id": "bot"}``, MCP ``assemble_window``) searches the agent's
        whole scope (:func:`search_scope`), every user's memories of that agent, and
        placed another user's memories in this user's prompt (a review). A user's
        memories are looked up once per user named, only when one is."""
        if self.scope.user_id is not None or self.scope.agent_id is None:
            return hits
        here = self.session_id
        named = {
            h.record.user_id
            for h in hits
            if h.record.user_id is not None and h.record.session_id != here
        }
        taking_part = {
            user
            for user in named
            if self.store.sessions(Scope(tenant=self.scope.tenant, user_id=user, session_id=here))
        }
        return [
            h
            for h in hits
            if h.record.user_id is None
            or h.record.session_id == here
            or h.record.user_id in taking_part
        ]

    def window(
        self,
        model: ModelInfo | str,
        question: str | None,
        *,
        budget: int | None = None,
        system: str = "",
        rules: Sequence[str] = (),
        stored_rules: Sequence[str] = (),
        tools: Sequence[Mapping[str, Any]] = (),
        hits: Sequence[Hit] = (),
        layout: Layout | None = None,
        memory_header: str | None = MEMORY_HEADER,
    ) -> Window:
        """Assemble the window for ``question`` under the model's budget.

        ``question`` None: a call with no new question (an agent's call after its
        tools ran): no question block is placed. A blank question is refused with
        ``ValueError`` by :func:`context_window` (the API refuses an empty text block).

        :func:`context_window` is given only the turns the window can place, and the
        older ones are listed as left out after it (:func:`_history_items`): it is the
        window of the whole history, and past reading the log its cost follows what it
        places.

        ``hits``: the memories to place. A Session of an agent with no user places
        none that names a user who takes no part in this session
        (:meth:`participants_hits`).

        ``rules``: placed first in the ``rules`` segment, all of them or ``BudgetError``
        (:func:`context_window`). ``stored_rules``: the scope's stored rules, placed after
        them while room is left (:func:`~contextos.engine.recall.session_recall`'s, for a
        Session on a store alone). A Session opened on a Memory
        (``Session(memory, ...)``) pins the scope's stored rules after them, its current
        ``procedural`` memories (:func:`~contextos.engine.recall.scope_rules`, as every
        wrapped call and server window does), and leaves those out of ``hits``. Why: in
        the README's flow (``hits=memory.search(...)``) a stored "Always answer in
        French" reached the model only when that search ranked it for the question (a
        review). Only a Memory of the Session's tenant: one opened with another
        ``tenant=`` pins none (the Memory reads its own tenant, and pinned that
        tenant's rules for the same user: a review).

        ``memory_header``: the line above the placed memories, by default
        :data:`MEMORY_HEADER`, as on wrapped calls; the header goes with at least one
        memory or not at all (:func:`context_window`). None places the memories bare.
        Why a default: a window built here (the README's flow, ``contextos window``,
        the server's window route) sent its memories as plain text right before the
        question, where "Cancel all my orders." read as the user's words (a review).

        ``model``: a ``ModelInfo`` or its name, as ``get_model`` takes it.

        Raises:
            TypeError: ``system``, ``rules`` or ``tools`` is of the wrong type
                (:func:`check_instructions`), before the log is read.
        """
        check_instructions(system, rules, tools, stored_rules)
        model = as_model(model)
        total = window_budget(model, budget)
        state = self.state()
        turns = self.conversation(state)
        items, cut = _history_items(turns, state, self.tokenizer, total)
        hits = self.participants_hits(hits)
        if self._memory is not None and self._memory.tenant == self.scope.tenant:
            from contextos.engine.recall import RULES_SHARE, scope_rules

            pinned = scope_rules(
                self._memory,
                scope=self.scope,
                session=self,
                tokens=int(RULES_SHARE * total),
                tokenizer=self.tokenizer,
            )
            stored_rules = (*stored_rules, *pinned.beside(rules))
            hits = [h for h in hits if not pinned.holds(h)]

        def build(history: Sequence[Item]) -> Window:
            return context_window(
                total,
                tokenizer=self.tokenizer,
                question=question,
                min_cache_tokens=model.min_cache_tokens,
                system=system,
                rules=rules,
                stored_rules=stored_rules,
                tools=tools,
                summary=state.summary,
                turns=history,
                memories=hits,
                layout=layout,
                memory_header=memory_header,
            )

        window = build(items)
        if cut is None:
            return window
        whole = cut.complete(window)
        return whole if whole is not None else build(turn_items(turns, state, self.tokenizer))


__all__ = [
    "HOLDS",
    "LOGGED_SESSION_KEY",
    "LOGGED_TURN_KEY",
    "MEMORY_HEADER",
    "MIN_BUDGET",
    "CompactionResult",
    "Hold",
    "Layout",
    "Session",
    "MemoryLike",
    "check_instructions",
    "checked_budget",
    "context_window",
    "hit_items",
    "hit_refs",
    "loop_thinking_to_fit",
    "never_sent",
    "novel_hits",
    "search_scope",
    "sendable_units",
    "turn_items",
    "window_budget",
    "with_thinking_counted",
    "with_thinking_sent",
]
