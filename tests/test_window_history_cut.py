"""``Session.window`` builds only the newest turns' items, and makes the window the whole
history makes.

A window placed a ~2,000-token budget's worth of turns but made an item of every turn of
the history and assembled all of them (0.36 s at 10,000 turns, 4.6 s at 80,000, on a log
nothing compacts: the server's window route). Now it is given the newest units whose
counts pass the budget, the pinned ones before them and the user turns that opened their
exchanges, and lists the rest as left out. The window must be the one the one context
builder (:func:`context_window`) makes from :func:`turn_items` of the whole history: the
same blocks, breakpoints, overflow entries (order, tokens, reason) and usage. Real
Sessions on a real SQLite file; the logs mix tool units (parallel calls, a result after a
user turn, calls without results, orphan results), pinned turns, compactions (summary,
cleared results, kept turns after an unpin), cut replies, regenerates and thinking.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from contextos.engine.conversation import COMPLETE_KEY, REDO_KEY
from contextos.engine.session import (
    MEMORY_HEADER,
    Session,
    _history_items,
    context_window,
    turn_items,
)
from contextos.engine.window import Window
from contextos.errors import BudgetError
from contextos.llm.media_tokens import THINKING_KEY
from contextos.llm.models import get_model
from contextos.llm.tokens import default_tokenizer
from contextos.memory import Memory
from contextos.store.sqlite import SQLiteStore
from contextos.testing.embedders import HashEmbedder
from contextos.types import Hit, Message, ToolCall

TOK = default_tokenizer()
#: Its cacheable minimum (1,024 tokens) is passed by the larger windows here: their cache
#: breakpoints are planned, and compared.
MODEL = get_model("claude-sonnet-4-6")
_ids = itertools.count()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SQLiteStore]:
    s = SQLiteStore(tmp_path_factory.mktemp("cut") / "cut.db")
    yield s
    s.close()


@pytest.fixture(scope="module")
def hits(tmp_path_factory: pytest.TempPathFactory) -> list[Hit]:
    db = tmp_path_factory.mktemp("hits") / "hits.db"
    with Memory(db, embedder=HashEmbedder(), background_embedding=False) as m:
        for text in ("Ana flew to Lisbon in May.", "Ana's cat is called Miso.", "Tea, no milk."):
            m.add(text, user_id="ana")
        return m.search("where did Ana fly?", user_id="ana", limit=3)


def _text(n: int, salt: int) -> str:
    return " ".join(f"w{salt}x{i}" for i in range(n))


def _thinking(n: int) -> dict[str, Any]:
    return {THINKING_KEY: [{"type": "thinking", "thinking": _text(n, 7), "signature": "s"}]}


class _Log:
    """Logs ``ops`` (see :data:`OPS`) into a new session, one method a kind of op."""

    def __init__(self, store: SQLiteStore) -> None:
        self.session = Session(store, f"s{next(_ids)}", user_id="ana", tokenizer=TOK)
        self.pending: list[Message] = []
        self.seqs: list[int] = []
        self.calls = itertools.count()

    def flush(self) -> None:
        if self.pending:
            self.seqs += [t.seq for t in self.session.add(*self.pending)]
            self.pending.clear()

    def user(self, n: int, size: int) -> None:
        self.pending.append(Message("user", _text(size, n)))

    def assistant(self, n: int, size: int, thinking: bool) -> None:
        meta = _thinking(size) if thinking else {}
        self.pending.append(Message("assistant", _text(size, n), metadata=meta))

    def call(self, n: int, width: int, sizes: list[int], interleave: bool, thinking: bool) -> None:
        """Parallel calls, those with a size answered (maybe after a user turn)."""
        ids = [f"c{next(self.calls)}" for _ in range(width)]
        calls = tuple(ToolCall(i, "lookup", '{"q": 1}') for i in ids)
        meta = _thinking(30) if thinking else {}
        self.pending.append(Message("assistant", "", tool_calls=calls, metadata=meta))
        if interleave:
            self.pending.append(Message("user", _text(3, n)))
        for i, size in zip(ids, sizes, strict=False):
            if size:
                self.pending.append(Message("tool", _text(size, n), tool_call_id=i))

    def orphan(self, n: int) -> None:
        self.pending.append(Message("tool", _text(5, n), tool_call_id="nobody"))

    def cut(self, n: int, size: int) -> None:
        """A reply whose stream was cut: out of the conversation."""
        meta = {COMPLETE_KEY: False}
        self.pending.append(Message("assistant", _text(size, n), metadata=meta))

    def redo(self, n: int, back: int, size: int) -> None:
        """A regenerate or an edit: takes the place of a logged turn and those after it."""
        self.flush()
        if self.seqs:
            meta = {REDO_KEY: self.seqs[-min(back, len(self.seqs))]}
            self.pending.append(Message("user", _text(size, n), metadata=meta))

    def pin(self, n: int, which: int) -> None:
        self.flush()
        if self.seqs:
            self.session.pin(self.seqs[which % len(self.seqs)])

    def unpin(self, n: int) -> None:
        self.flush()
        pinned = self.session.state().pinned
        if pinned:
            self.session.pin(pinned[0], pinned=False)

    def compact(self, n: int, strategy: Any, budget: int) -> None:
        self.flush()
        self.session.compact(budget, strategy, force=True)


def _build(store: SQLiteStore, ops: list[tuple[Any, ...]]) -> Session:
    """A session logged from ``ops``."""
    log = _Log(store)
    for n, (kind, *args) in enumerate(ops):
        getattr(log, kind)(n, *args)
    log.flush()
    return log.session


words = st.integers(1, 60)
OPS = st.one_of(
    st.tuples(st.just("user"), words),
    st.tuples(st.just("user"), words),
    st.tuples(st.just("assistant"), words, st.booleans()),
    st.tuples(st.just("assistant"), words, st.booleans()),
    st.tuples(
        st.just("call"),
        st.integers(1, 3),
        st.lists(st.sampled_from([0, 4, 40, 150]), min_size=1, max_size=3),
        st.booleans(),
        st.booleans(),
    ),
    st.tuples(st.just("orphan")),
    st.tuples(st.just("cut"), words),
    st.tuples(st.just("redo"), st.integers(1, 12), words),
    st.tuples(st.just("pin"), st.integers(0, 10_000)),
    st.tuples(st.just("unpin")),
    st.tuples(
        st.just("compact"),
        st.sampled_from(["truncate", "clear_tool_results", "summarize"]),
        st.integers(150, 1500),
    ),
)


def _outcome(build: Any) -> Window | tuple[str, str]:
    try:
        window: Window = build()
        return window
    except (BudgetError, ValueError) as exc:
        return (type(exc).__name__, str(exc))


def _whole(
    session: Session, question: str | None, budget: int, system: str, hits: list[Hit]
) -> Window | tuple[str, str]:
    """The window of the whole history: :func:`turn_items` of every turn, assembled by
    the one context builder, as ``Session.window`` built it before the cut (its
    memories under the default :data:`MEMORY_HEADER`)."""
    state = session.state()
    items = turn_items(session.conversation(state), state, TOK)
    return _outcome(
        lambda: context_window(
            budget,
            tokenizer=TOK,
            question=question,
            min_cache_tokens=MODEL.min_cache_tokens,
            system=system,
            summary=state.summary,
            turns=items,
            memories=hits,
            memory_header=MEMORY_HEADER,
        )
    )


def _same_window(
    session: Session,
    question: str | None,
    budget: int,
    *,
    system: str = "",
    hits: list[Hit] | None = None,
) -> bool:
    """Assert that a fresh Session's window is the window of the whole history (or
    fails alike); return whether the history was cut (not every item given)."""
    fresh = Session(session.store, session.session_id, user_id="ana", tokenizer=TOK)
    given = hits or []
    got = _outcome(lambda: fresh.window(MODEL, question, budget=budget, system=system, hits=given))
    assert got == _whole(session, question, budget, system, given)
    state = session.state()
    _, cut = _history_items(session.conversation(state), state, TOK, budget)
    return cut is not None


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    ops=st.lists(OPS, min_size=15, max_size=80),
    shares=st.lists(st.one_of(st.floats(0.0, 0.5), st.floats(0.5, 1.3)), min_size=1, max_size=4),
    question=st.sampled_from(["And where did she fly next?", None]),
    with_hits=st.booleans(),
    system=st.sampled_from(["", "Be brief. " * 40]),
)
def test_a_window_is_the_window_of_the_whole_history(
    store: SQLiteStore,
    hits: list[Hit],
    ops: list[tuple[Any, ...]],
    shares: list[float],
    question: str | None,
    with_hits: bool,
    system: str,
) -> None:
    # Budgets from one that places little to one that places every turn: a share of the
    # history's tokens, plus room for the question and the instructions.
    session = _build(store, ops)
    state = session.state()
    total = sum(i.tokens for i in turn_items(session.conversation(state), state, TOK))
    for budget in (150 + len(system) // 3 + int(share * total) for share in shares):
        given = hits if with_hits else None
        event(f"cut: {_same_window(session, question, budget, system=system, hits=given)}")


def _long_log(store: SQLiteStore, exchanges: int) -> Session:
    """A long agent log: questions, tool steps with parallel results, thinking, a pinned
    call far back, a regenerate, a cut reply, a compaction's summary and stubs."""
    ops: list[tuple[Any, ...]] = []
    for i in range(exchanges):
        ops.append(("user", 12 + i % 9))
        if i % 3 == 0:
            ops.append(("call", 2, [40, 4], i % 6 == 0, i % 2 == 0))
        if i % 7 == 0:
            ops.append(("cut", 9))
        ops.append(("assistant", 20 + i % 13, i % 4 == 0))
        if i == 5:
            ops.append(("pin", 14))
        if i == exchanges // 3:
            ops.append(("compact", "clear_tool_results", 4000))
        if i == exchanges // 2:
            ops.append(("redo", 3, 10))
    return _build(store, ops)


def test_budgets_around_the_cut_on_a_long_log(store: SQLiteStore, hits: list[Hit]) -> None:
    # Every budget from one that places a turn or two to one that places them all: the
    # cut is made for most of them (else this test proves nothing), and each window is
    # the whole history's.
    session = _long_log(store, 150)
    state = session.state()
    assert state.pinned and state.cleared  # the log has what the cut must keep apart
    total = sum(i.tokens for i in turn_items(session.conversation(state), state, TOK))
    cuts = 0
    budgets = [*range(150, 1200, 71), *range(1200, total + 400, 613)]
    for budget in budgets:
        for question in ("Where did she fly?", None):
            cuts += _same_window(session, question, budget)
    cuts += _same_window(session, "Where did she fly?", 900, hits=hits)
    assert cuts > len(budgets)
    assert session.window(MODEL, "Where did she fly?", budget=3000).breakpoints  # compared too


def test_a_long_log_gives_the_window_only_its_newest_turns(store: SQLiteStore) -> None:
    session = _long_log(store, 600)
    state = session.state()
    whole = turn_items(session.conversation(state), state, TOK)
    items, cut = _history_items(session.conversation(state), state, TOK, 2000)
    assert cut is not None and len(whole) > 1000
    assert len(items) < 80  # the newest ~2,000 tokens, the pinned unit and its user turn
    keys = [i.key for i in items]
    assert {f"turn:{seq}" for seq in state.pinned} <= set(keys) and items[0].role == "user"
    assert _same_window(session, "Where did she fly?", 2000)


def test_an_agent_loop_longer_than_the_budget_keeps_its_task(store: SQLiteStore) -> None:
    # One user task and 300 tool steps, half of them with thinking: the units given are
    # the newest steps and the task that opened them, not every step back to it; without
    # a question (the agent's own call) the older steps' thinking is left out and they
    # are listed at their counts, whether given or not.
    ops: list[tuple[Any, ...]] = [("user", 30)]
    ops += [("call", 1, [60], False, n % 2 == 0) for n in range(300)]
    session = _build(store, ops)
    state = session.state()
    turns = session.conversation(state)
    items, cut = _history_items(turns, state, TOK, 2000)
    assert cut is not None and len(items) < 60 and items[0].key == "turn:0"
    for budget in (400, 2000, 7000):
        assert _same_window(session, "And the next step?", budget)
        assert _same_window(session, None, budget)


def test_a_window_from_a_session_that_logged_and_read_before(tmp_path: Path) -> None:
    # The Session that logs the turns reads them as it goes (its prints made when it
    # first needs them): its windows are a fresh Session's.
    store = SQLiteStore(tmp_path / "s.db")
    session = Session(store, "live", user_id="ana", tokenizer=TOK)
    for i in range(200):
        session.add(Message("user", _text(10 + i % 7, i)), Message("assistant", _text(30, i)))
        if i % 40 == 39:
            assert _same_window(session, "What next?", 1500)
            mine = session.window(MODEL, "What next?", budget=1500)
            assert mine == session.__class__(store, "live", tokenizer=TOK).window(
                MODEL, "What next?", budget=1500
            )
            assert [p.seq for p in session.fingerprints()] == list(range(2 * i + 2))
    store.close()


def test_a_session_holding_the_window_prints_the_turns_it_lets_go(tmp_path: Path) -> None:
    # Read whole on a compacted log, a hold="window" Session lets go of the turns before
    # the history's start at once: their prints are made before, so that it still knows
    # every turn of the log (what matching a request to the log reads).
    store = SQLiteStore(tmp_path / "s.db")
    writer = Session(store, "c", tokenizer=TOK)
    for i in range(100):
        writer.add(Message("user", _text(12, i)), Message("assistant", _text(30, i)))
    assert writer.compact(1500, "truncate", force=True).state.start_seq > 100
    held = Session(store, "c", tokenizer=TOK, hold="window")
    window = held.window(MODEL, "What next?", budget=1200)
    assert held.held_turns < 100
    assert [p.seq for p in held.fingerprints()] == list(range(200))
    assert [p.seq for p in held.conversation_prints()] == list(range(200))
    assert window == Session(store, "c", tokenizer=TOK).window(MODEL, "What next?", budget=1200)
    store.close()
