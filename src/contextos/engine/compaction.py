"""Compaction: decide when and how a session's history shrinks, as pure functions.

Four strategies, from most faithful to cheapest in window tokens:

- ``truncate``: rotate the oldest turns out of the window (they stay in the log).
- ``clear_tool_results``: keep every tool call but replace its bulky, stale
  result by a stub that says how to get it back; truncate only if that is not
  enough.
- ``summarize``: keep the recent turns verbatim and fold the rotated ones into a
  rolling summary, incrementally (only the newly rotated turns are read).
- ``offload``: archive the rotated turns into episodic memory; the window
  retrieves them on demand (the caller does the archiving: this module only
  says which turns).

Why thresholds with hysteresis: every compaction rewrites the part of the
prompt that the provider has cached, so compacting a little on every call
would miss the cache every call. Compaction starts when the history passes
``trigger`` of its budget and then goes down to ``target``, a chunk big enough
that the cached prefix changes rarely. A tool call is never separated from its
result, pinned turns are never compacted, and the last ``keep_recent`` turns
always stay verbatim; when they alone keep the history over its budget, the rest
is compacted on its own thresholds (no rotation could fit the budget, so none is
made for nothing). A summarizer's result is checked before it is kept: its text
mended, its lines recounted and cut to the summary's ceiling.
"""

from __future__ import annotations

import functools
import math
from bisect import bisect_left
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypeVar

from contextos.engine.conversation import answered_ids
from contextos.engine.message_text import valid_text
from contextos.engine.summarize import Summarizer, Summary, SummaryLine, fitting_lines
from contextos.errors import BudgetError
from contextos.llm.tokens import TOKENS_PER_REPLY, Tokenizer, default_tokenizer
from contextos.types import Turn

Strategy = Literal["truncate", "clear_tool_results", "summarize", "offload"]
STRATEGIES: tuple[Strategy, ...] = ("truncate", "clear_tool_results", "summarize", "offload")

_N = TypeVar("_N", int, float)


@dataclass(frozen=True)
class Thresholds:
    """When to compact (``trigger``) and down to what (``target``), as shares of the budget."""

    trigger: float = 0.8
    target: float = 0.5
    keep_recent: int = 2
    summary_share: float = 0.2

    def __post_init__(self) -> None:
        if not 0 < self.target < self.trigger <= 1:
            raise ValueError("thresholds need 0 < target < trigger <= 1")
        if not 0 <= self.summary_share < self.target:
            raise ValueError("summary_share must be below target")


@dataclass(frozen=True)
class HistoryState:
    """What compaction has done to a session; stored as JSON beside the log.

    Turns with ``seq < start_seq`` are rotated out (except pinned ones, and ``kept``
    ones: turns a compaction stepped over while they were pinned, unpinned since,
    which stay in the window until a compaction rotates them; else an unpin made them
    vanish, in no summary and no archive).
    ``unarchived``: turns an offload rotated out and has not yet confirmed stored in
    long-term memory (the rotation is saved first, the archive confirmed after it; a
    crash in between leaves them here for the next offload to store). ``archiver``
    holds them while it stores them, until ``archiver_until`` (epoch seconds): two
    Sessions storing the same turns at once would store them twice.
    """

    start_seq: int = 0
    summary: Summary | None = None
    cleared: tuple[int, ...] = ()
    pinned: tuple[int, ...] = ()
    compactions: int = 0
    archived_to: int = -1
    unarchived: tuple[int, ...] = ()
    archiver: str = ""
    archiver_until: float = 0.0
    kept: tuple[int, ...] = ()

    @functools.cached_property
    def cleared_seqs(self) -> frozenset[int]:
        """``cleared`` as a set. Why: every plan and history count asks it of each turn,
        and a tuple made that the square of the log (0.5 s for a 12,000-turn log with
        6,000 cleared results)."""
        return frozenset(self.cleared)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "start_seq": self.start_seq,
            "cleared": list(self.cleared),
            "pinned": list(self.pinned),
            "compactions": self.compactions,
            "archived_to": self.archived_to,
            "unarchived": list(self.unarchived),
            "archiver": self.archiver,
            "archiver_until": self.archiver_until,
            "kept": list(self.kept),
            "summary": self.summary.to_json() if self.summary else None,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> HistoryState:
        """Inverse of :meth:`to_json` ({} gives a fresh state)."""
        summary = data.get("summary")
        return cls(
            int(data.get("start_seq", 0)),
            Summary.from_json(summary) if summary else None,
            tuple(int(x) for x in data.get("cleared", ())),
            tuple(int(x) for x in data.get("pinned", ())),
            int(data.get("compactions", 0)),
            int(data.get("archived_to", -1)),
            tuple(int(x) for x in data.get("unarchived", ())),
            str(data.get("archiver", "")),
            float(data.get("archiver_until", 0.0)),
            tuple(int(x) for x in data.get("kept", ())),
        )


@dataclass(frozen=True)
class Plan:
    """A compaction decision: turns to rotate out, tool results to stub."""

    strategy: Strategy
    rotate: tuple[int, ...] = ()
    clear: tuple[int, ...] = ()
    before_tokens: int = 0
    after_tokens: int = 0
    notes: tuple[str, ...] = field(default_factory=tuple)


def stub_text(turn: Turn) -> str:
    """What replaces a cleared tool result: what it was and how the model gets it back.

    Why these words: the stub is read by the model, which pointed to
    ``session.turn(N)`` and a CLI command could call neither (and the command left out
    the tenant: a review); the log keeps the result, and ``conversation_search`` (the
    memory tools) finds it there."""
    return (
        f"[tool result cleared to save context ({turn.tokens} tokens); the session log "
        f"keeps it as turn {turn.seq}: call the tool again, or find it with "
        f"conversation_search if you have that tool]"
    )


def pinned_seqs(turns: Sequence[Turn], state: HistoryState) -> set[int]:
    """Pinned turns plus the rest of their tool unit (a pinned result keeps its call)."""
    if not state.pinned:
        return set()
    pins = set(state.pinned)
    return {t.seq for u in tool_units(turns) if any(x.seq in pins for x in u) for t in u}


def visible_turns(turns: Sequence[Turn], state: HistoryState) -> list[Turn]:
    """Turns still in the window: not rotated out, or pinned (with their tool unit), or
    kept after an unpin. ``turns`` are in log order (by ``seq``, as every reader gives
    them): the rotated part is stepped over by bisection, so a window of a long log
    costs its visible turns, not the log (a scan of 40,000 turns took 10.6 ms of a
    12.8 ms window)."""
    start = bisect_left(turns, state.start_seq, key=_seq)
    stay = pinned_seqs(turns, state) | set(state.kept)
    below = []
    for seq in sorted(s for s in stay if s < state.start_seq):
        i = bisect_left(turns, seq, hi=start, key=_seq)
        if i < start and turns[i].seq == seq:
            below.append(turns[i])
    return [*below, *turns[start:]]


def _seq(turn: Turn) -> int:
    return turn.seq


def turn_cost(turn: Turn, state: HistoryState, tokenizer: Tokenizer) -> int:
    """Window tokens of a turn (a cleared tool result costs its stubs)."""
    return stub_tokens(turn, tokenizer) if turn.seq in state.cleared_seqs else turn.tokens


def stub_tokens(turn: Turn, tokenizer: Tokenizer) -> int:
    """Tokens of a tool result once cleared, as a window sends it: the message with its
    stub (:func:`stub_text`), and the stub again for each further call it answers.

    Why counted, not a constant: the stub names the session, so its size is the id's
    (34 tokens for ``chat-1``, 79 for ``user:chat-<uuid>``); priced at a fixed 40, a
    compaction reported a history of 3,989 tokens that windows sent as 7,615, more than
    before it, and never compacted again (a review). Why each call: a turn that
    answered parallel calls (an Anthropic turn, logged with its ``tool_result`` blocks)
    is sent cleared as one block per call, each with the stub
    (:func:`~contextos.cache.render._tool_result_blocks`); counted once, a cleared turn
    of 20 parallel results put a window 627 tokens over its budget.

    Kept per logged turn (its session, place, time and size, and the tokenizer): a
    wrapped client plans a compaction and builds a window on every call, and counting
    each cleared result's stub anew cost 0.3 s a call at 6,000 of them."""
    key: tuple[Any, ...] = (tokenizer, turn.session_id, turn.user_id, turn.agent_id)
    key += (turn.seq, turn.created_at, turn.tokens)
    try:
        return _STUB_COUNTS[key]
    except KeyError:
        pass
    except TypeError:  # a tokenizer that cannot be a key: counted each time
        return _count_stub(turn, tokenizer)
    if len(_STUB_COUNTS) >= STUB_COUNTS_KEPT:
        _STUB_COUNTS.clear()
    counted = _STUB_COUNTS[key] = _count_stub(turn, tokenizer)
    return counted


#: How many stub counts :func:`stub_tokens` keeps (about 200 bytes each).
STUB_COUNTS_KEPT = 65_536
_STUB_COUNTS: dict[tuple[Any, ...], int] = {}


def _count_stub(turn: Turn, tokenizer: Tokenizer) -> int:
    stubbed = replace(turn.message, content=stub_text(turn))
    tokens = tokenizer.count_messages([stubbed]) - TOKENS_PER_REPLY
    further = len(answered_ids(stubbed)) - 1
    return tokens + further * tokenizer.count(stubbed.content) if further > 0 else tokens


def history_tokens(
    turns: Sequence[Turn], state: HistoryState, tokenizer: Tokenizer | None = None
) -> int:
    """Tokens of the history as the window would show it: summary plus visible turns
    (cleared results counted with ``tokenizer``, default :func:`default_tokenizer`: the
    one the turns were counted with)."""
    tokenizer = tokenizer or default_tokenizer()
    summary = state.summary.tokens if state.summary else 0
    return summary + sum(turn_cost(t, state, tokenizer) for t in visible_turns(turns, state))


def needs_compaction(tokens: int, budget: int, thresholds: Thresholds) -> bool:
    """True when the history passed the trigger share of its budget."""
    return tokens > thresholds.trigger * budget


def tool_units(turns: Sequence[Turn]) -> list[tuple[Turn, ...]]:
    """Group turns so a tool call and its results are one unit.

    An assistant turn with tool calls owns the following ``tool`` turns that
    answer one of its call ids.
    """
    units: list[list[Turn]] = []
    open_ids: set[str] = set()
    for turn in turns:
        msg = turn.message
        if msg.role == "tool" and units and msg.tool_call_id in open_ids:
            units[-1].append(turn)
            continue
        units.append([turn])
        open_ids = {c.id for c in msg.tool_calls}
    return [tuple(u) for u in units]


def plan_compaction(
    turns: Sequence[Turn],
    state: HistoryState,
    budget: int,
    strategy: Strategy,
    thresholds: Thresholds | None = None,
    *,
    force: bool = False,
    tokenizer: Tokenizer | None = None,
) -> Plan | None:
    """Decide a compaction, or None when the history is under the trigger (or when
    everything that could go is protected: the recent or pinned turns; or when the
    recent turns alone keep the history over ``budget`` and the rest is under the
    trigger -- see ``_plan_rotate``).

    ``budget`` is the history's share of the window (summary plus turns). ``tokenizer``
    counts cleared results' stubs (:func:`stub_tokens`); default
    :func:`default_tokenizer`, it should be the one the turns were counted with.
    """
    tokenizer = tokenizer or default_tokenizer()
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose from {', '.join(STRATEGIES)}")
    th = thresholds or Thresholds()
    _check_budget(budget, strategy, th)
    before = history_tokens(turns, state, tokenizer)
    if not force and not needs_compaction(before, budget, th):
        return None
    goal = int(th.target * budget)
    visible = visible_turns(turns, state)
    protected = {t.seq for t in visible[-th.keep_recent :]} if th.keep_recent else set()
    pinned = pinned_seqs(turns, state)
    clear: list[int] = []
    tokens = before
    if strategy == "clear_tool_results":
        clear, tokens = _plan_clear(visible, state, protected | pinned, (tokens, goal), tokenizer)
    reserve = int(th.summary_share * budget) if strategy == "summarize" else 0
    if strategy == "summarize" and state.summary:
        tokens -= state.summary.tokens  # the new summary replaces it within ``reserve``
    trigger = goal if force else int(th.trigger * budget)
    rotate, tokens = _plan_rotate(
        visible,
        state,
        (protected, pinned, set(clear)),
        tokens,
        (goal - reserve, budget - reserve, trigger - reserve),
        tokenizer,
    )
    if not rotate and not clear:
        return None  # everything left is protected (recent or pinned)
    return Plan(strategy, tuple(rotate), tuple(clear), before, tokens + reserve)


def _plan_clear(
    visible: Sequence[Turn],
    state: HistoryState,
    protected: set[int],
    levels: tuple[int, int],
    tokenizer: Tokenizer,
) -> tuple[list[int], int]:
    """Tool results to stub, oldest first, until the goal (``levels``: the tokens now and
    the goal): never a ``protected`` one (recent, or pinned with its whole tool unit:
    pinning the call keeps its result), and never one no larger than its stub."""
    tokens, goal = levels
    clear: list[int] = []
    for turn in visible:
        if tokens <= goal:
            break
        if turn.message.role != "tool" or turn.seq in protected or turn.seq in state.cleared_seqs:
            continue
        saved = turn.tokens - stub_tokens(turn, tokenizer)
        if saved > 0:
            clear.append(turn.seq)
            tokens -= saved
    return clear, tokens


def opens_exchange(turn: Turn) -> bool:
    """Whether ``turn`` opens an exchange: a user turn (a tool result is not one). The
    exchange runs to the next such turn: the replies, tool calls and results after it."""
    return turn.message.role == "user"


def exchanges(units: Sequence[tuple[Turn, ...]]) -> list[list[tuple[Turn, ...]]]:
    """Tool ``units`` grouped by exchange: each group opens on a unit that
    :func:`opens_exchange` (the first group need not, when the turns open on a reply)."""
    groups: list[list[tuple[Turn, ...]]] = []
    for unit in units:
        if not groups or opens_exchange(unit[0]):
            groups.append([unit])
        else:
            groups[-1].append(unit)
    return groups


def _rotation_steps(
    visible: Sequence[Turn],
    state: HistoryState,
    seqs: tuple[set[int], set[int], set[int]],
    tokenizer: Tokenizer,
) -> tuple[list[tuple[list[int], int]], int]:
    """The rotation, oldest first, as steps each of which leaves a history that never
    opens mid-exchange; and ``tail``, the tokens of the recent units (the first one and
    after). A step is the seqs it rotates and their cost.

    An exchange's user turn goes only with the last of its exchange: a chat exchange (a
    question and its reply) goes whole, and when a rotation stops inside a longer one
    (an agent's task and its steps), its user turn stays (``kept``) before the steps
    left, so the history opens on the user's turn, never on a reply or a tool call
    without what asked for it. Pinned units are stepped over (their exchange's user turn
    stays with them); a recent unit ends the steps. The newest exchange may go on (an
    agent's next step), so its user turn stays whatever goes (with no recent turns to
    keep, what came after it would open the history). A pinned user turn stays by itself,
    so its exchange's units go one by one, as do those of a first exchange that opens on
    a reply (nothing before them to keep).
    """
    protected, pinned, cleared_now = seqs

    def cost(unit: tuple[Turn, ...]) -> int:
        return sum(
            stub_tokens(t, tokenizer) if t.seq in cleared_now else turn_cost(t, state, tokenizer)
            for t in unit
        )

    steps: list[tuple[list[int], int]] = []
    recent = False
    tail = 0
    groups = exchanges(tool_units(visible))
    for n, group in enumerate(groups, 1):
        head = group[0]
        opener = opens_exchange(head[0]) and not any(t.seq in pinned for t in head)
        if recent or (opener and any(t.seq in protected for t in head)):
            recent = True
            tail += sum(cost(u) for u in group)
            continue
        inner: list[tuple[Turn, ...]] = []
        whole = n < len(groups)  # the newest exchange may go on: its user turn stays
        for unit in group[1:] if opener else group:
            if recent or any(t.seq in protected for t in unit):
                recent, whole = True, False
                tail += cost(unit)
            elif any(t.seq in pinned for t in unit):
                whole = False
            else:
                inner.append(unit)
        if opener and whole:
            last = [inner.pop()] if inner else []
            steps += [([t.seq for t in u], cost(u)) for u in inner]
            steps.append(
                ([t.seq for u in (*last, head) for t in u], sum(cost(u) for u in (*last, head)))
            )
        else:
            steps += [([t.seq for t in u], cost(u)) for u in inner]
    return steps, tail


def _plan_rotate(
    visible: Sequence[Turn],
    state: HistoryState,
    seqs: tuple[set[int], set[int], set[int]],
    tokens: int,
    levels: tuple[int, int, int],
    tokenizer: Tokenizer,
) -> tuple[list[int], int]:
    """Rotate whole units, oldest first, until ``tokens <= goal``, stopping only where
    the history left opens on a user turn (:func:`_rotation_steps`).

    ``seqs``: the recent (protected), the pinned and the just-cleared turns; ``levels``:
    the goal, the budget and the trigger, in the tokens ``tokens`` counts. Pinned units
    are stepped over (they stay visible); a recent unit stops it. When no rotation can
    bring the history under the budget -- the recent turns alone are over it (an agent's
    newest tool result), or with the pinned ones -- the recent turns are set aside: the
    rest is compacted on its own, left alone under the trigger, else rotated down to the
    goal.

    Why: a rotated turn leaves every later window for good (summarized or archived at
    best), and rotating everything else (as it did) bought nothing there, the history
    still over its budget: an agent's task and constraints left its windows for good
    while a 30,000-token window held all 28,619 tokens. Why not rotate nothing then:
    pinned turns never age out, so pins over the budget would stop compaction for good,
    and an agent whose every step reads a big file would grow its history without end.

    Why by exchange: stopping at any unit once the goal was reached put the cut between
    a question and its reply whenever the token arithmetic fell there (a wrapped client
    at a 9,000-token budget), and every window until the next compaction opened on the
    assistant's reply: a reply to no question, and a request the Messages API expects
    to open on a user turn.
    """
    goal, limit, trigger = levels
    steps, tail = _rotation_steps(visible, state, seqs, tokenizer)
    if tokens - sum(cost for _, cost in steps) > limit:  # no rotation fits the budget
        if tokens - tail <= trigger:
            return [], tokens
        goal += tail
    rotate: list[int] = []
    for step_seqs, cost in steps:
        if tokens <= goal:
            break
        rotate += step_seqs
        tokens -= cost
    return sorted(rotate), tokens


def _check_budget(budget: int, strategy: Strategy, th: Thresholds) -> None:
    """Refuse a budget no compaction can keep to (:func:`budget_refusal`)."""
    refusal = budget_refusal(budget, strategy, th)
    if refusal is not None:
        raise refusal


def budget_refusal(
    budget: int, strategy: Strategy, thresholds: Thresholds | None = None
) -> BudgetError | None:
    """The error refusing a history ``budget`` that ``strategy`` cannot keep to, or None
    when it can: the one rule :func:`plan_compaction` refuses by, which a caller that
    picks the budget (a wrapped call's history room) asks before compacting.

    Why: a budget of 0 or less compacted every turn but the recent ones (a negative one
    failed deep in the summarizer, naming neither), and a summarize whose summary share
    rounds to almost nothing folded the turns into a summary with no line: they left
    every window, where the strategy promises their salient sentences (a review). A
    share too small for the summarizer's lines is refused when they come back
    (:func:`_checked_summary`)."""
    th = thresholds or Thresholds()
    if budget < 1:
        return BudgetError(
            "a history budget must be at least 1 token", requested=1, available=budget
        )
    if strategy == "summarize" and int(th.summary_share * budget) < 1:
        least = math.ceil(1 / th.summary_share) if th.summary_share else 1
        return BudgetError(
            f"the summary's share of this budget (summary_share {th.summary_share:g}) "
            f"is no token: give a budget of at least {least}, or compact with another "
            "strategy",
            requested=least,
            available=budget,
        )
    return None


def apply_compaction(
    plan: Plan,
    turns: Sequence[Turn],
    state: HistoryState,
    budget: int,
    *,
    summarizer: Summarizer | None = None,
    thresholds: Thresholds | None = None,
    tokenizer: Tokenizer | None = None,
) -> HistoryState:
    """The state after ``plan``. Summarizing reads only the rotated turns (O(new turns)).

    The summarizer's result is checked before it goes into the state: text mended, each
    line recounted with ``tokenizer`` (the session's; the default one when not given),
    and cut to its ceiling.

    Raises:
        ValueError: the summarize strategy without a summarizer, a summary none of
            whose lines (with text) fits its ceiling, or an empty summary that covers
            none of the rotated turns (see :func:`_checked_summary`).
        TypeError: the summarizer returned something other than a :class:`Summary`.
    """
    th = thresholds or Thresholds()
    cleared = tuple(sorted(set(state.cleared) | set(plan.clear)))
    if not plan.rotate:
        return replace(state, cleared=cleared, compactions=state.compactions + 1)
    start = max(max(plan.rotate) + 1, state.start_seq)
    rotated = set(plan.rotate)
    pins = pinned_seqs(turns, state)
    # A turn the rotation stepped over stays (an exchange's user turn, its steps partly
    # rotated: :func:`_rotation_steps`): kept, as a pinned turn is, until one rotates it.
    stepped = {t.seq for t in visible_turns(turns, state) if t.seq < start} - rotated - pins
    kept = tuple(sorted((set(state.kept) - rotated) | stepped))
    # Stubs of turns rotated out are forgotten: the list grew with the whole log.
    stay = pins | set(kept)
    cleared = tuple(c for c in cleared if c >= start or c in stay)
    summary = state.summary
    if plan.strategy == "summarize":
        if summarizer is None:
            raise ValueError("the summarize strategy needs a summarizer")
        ceiling = int(th.summary_share * budget)
        folded = [t for t in turns if t.seq in rotated]
        summary = _checked_summary(
            summarizer.summarize(folded, previous=summary, max_tokens=ceiling),
            ceiling,
            tokenizer or default_tokenizer(),
            folded,
        )
    unarchived = state.unarchived
    if plan.strategy == "offload":  # archived after the save, confirmed after that
        unarchived = tuple(sorted(set(unarchived) | set(plan.rotate)))
    return replace(
        state,
        start_seq=start,
        summary=summary,
        kept=kept,
        cleared=cleared,
        compactions=state.compactions + 1,
        unarchived=unarchived,
    )


def _checked_summary(
    summary: object, max_tokens: int, tokenizer: Tokenizer, folded: Sequence[Turn] = ()
) -> Summary:
    """A summarizer's result made fit to keep: each line's text mended and its tokens
    recounted with ``tokenizer``, blank lines dropped, then the lines ranked last dropped
    until it fits ``max_tokens``. ``folded``: the rotated turns it was given.

    Why: the result was saved as returned, and a summarizer is a seam (an LLM one may
    ignore the ceiling or miscount). A summary over the ceiling was saved, then left out
    of every window whole (over the ceiling of the window's summary segment), so every
    turn it had folded in vanished; tokens under-reported made compaction believe it
    fitted; NUL text made the store refuse the state; anything but a ``Summary`` failed
    on ``to_json``. Text is mended as a model's reply is
    (:func:`~contextos.engine.message_text.valid_text`): it is model output, not the
    caller's. Lines are ranked as the extractive fold ranks them, by salience per
    token, newest first on ties. A summary none of whose lines fits is refused rather
    than kept empty: the rotated turns would vanish with it, while a refused compaction
    leaves the state as it was. A blank line counts as no line: it recalls nothing, and
    a summarizer that wrote one per turn (an LLM one given an empty reply) was kept.

    An empty summary (no lines at all) is kept only when it covers the rotated turns
    (``covers_to`` at least the last one's seq), or when they hold no text: that is a
    summarizer judging that nothing in them is worth a line, as the offline
    :class:`~contextos.engine.summarize.ExtractiveSummarizer` does for greetings, fillers
    and tool output (its result always covers the turns it was given). A bare
    ``Summary()`` covers no turn (``covers_to`` -1): it is what a summarizer returns when
    it produced nothing (a model that answered empty), and it was kept, so turns with
    text left every window (a review, s36).

    Raises:
        TypeError: ``summary`` is not a :class:`Summary` of :class:`SummaryLine`.
        ValueError: it has lines, and none with text fits ``max_tokens``; or it has no
            line, does not cover the last of ``folded``, and they hold text.
    """
    if not isinstance(summary, Summary):
        raise TypeError(f"the summarizer returned {type(summary).__name__}, not a Summary")
    checked = [_checked_line(line, tokenizer) for line in summary.lines]
    lines = [line for line in checked if line.text.strip()]
    kept = fitting_lines(lines, max_tokens, one_per_turn=False)
    if checked and not kept:
        blank = len(checked) - len(lines)
        raise ValueError(
            f"the summarizer's summary has no line with text within its ceiling of "
            f"{max_tokens} tokens"
            + (f" ({blank} of its {len(checked)} lines are blank)" if blank else "")
        )
    last = max((t.seq for t in folded), default=-1)
    said = any(t.message.content.strip() for t in folded)
    if not checked and said and _number(summary.covers_to, int, "covers_to") < last:
        raise ValueError(
            f"the summarizer returned an empty summary that does not cover the "
            f"{len(folded)} rotated turns (covers_to {summary.covers_to}, the last one is "
            f"seq {last}): a summarizer with nothing worth keeping returns a Summary "
            "whose covers_to is the last turn's seq"
        )
    return Summary(
        tuple(line for i, line in enumerate(lines) if i in kept),
        _number(summary.covers_from, int, "covers_from"),
        _number(summary.covers_to, int, "covers_to"),
    )


def _checked_line(line: object, tokenizer: Tokenizer) -> SummaryLine:
    """One summary line with its texts mended, its numbers numbers, its tokens counted."""
    if not isinstance(line, SummaryLine) or not isinstance(line.text, str):
        raise TypeError(f"a summary line must be a SummaryLine with text, not {line!r:.80}")
    text = valid_text(line.text)
    return SummaryLine(
        text,
        _number(line.seq, int, "seq"),
        valid_text(str(line.ref)),
        _number(line.score, float, "score"),
        tokenizer.count(text) + 1,  # the newline, as the extractive summarizer counts it
    )


def _number(value: object, kind: type[_N], what: str) -> _N:
    """``value`` as ``kind``; a TypeError naming ``what`` when it is not a finite number
    (the state is JSON, which holds no NaN)."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return kind(value)
    raise TypeError(f"a summary's {what} must be a number, not {value!r:.40}")


def rotated_turns(plan: Plan, turns: Sequence[Turn]) -> list[Turn]:
    """The turns a plan rotates out (what ``offload`` archives), in order."""
    rotated = set(plan.rotate)
    return [t for t in turns if t.seq in rotated]


__all__ = [
    "STRATEGIES",
    "HistoryState",
    "Plan",
    "Strategy",
    "Thresholds",
    "apply_compaction",
    "budget_refusal",
    "history_tokens",
    "needs_compaction",
    "pinned_seqs",
    "plan_compaction",
    "rotated_turns",
    "stub_text",
    "stub_tokens",
    "tool_units",
    "turn_cost",
    "visible_turns",
]
