"""Which memories a session's window retrieves: the one rule of the wrapped client
(``SessionContext``), the server's window (``server.windowing.build_window``: ``POST
/v1/sessions/{id}/window``, MCP ``assemble_window``, the inspector's window) and
``contextos window``.

The memories of the scope are searched; those of the session itself apart from the
others, merged by score. A memory of the session is left out exactly while the window
shows its turn, verbatim or as a summary line (:func:`shown_turns`): an exchange a
wrapped client remembered names the turn it was said in (its turn mark, read by
:func:`~contextos.engine.session.hit_refs`), and comes back by retrieval once
compaction took that turn out of the history, under every strategy, as a turn
``offload`` archived does. An exchange remembered before turns were marked names no
turn: it stays out while a turn the window shows holds its words.

Why one function: three copies decided this three ways. The server's and the CLI's
windows searched the user's memories as a whole, so the exchanges the history showed
came back as memories and took the places of the user's facts (a review); the wrapped
client left every exchange of its own session out unless it offloaded, so a fact said
at turn 20 of a long chat never reached the model at turn 1,000 (a review); and only
the server's window kept other users' memories out of an agent's window.

The scope's stored rules (its current ``procedural`` memories: "Always answer in
French") are not retrieved by the question: :func:`scope_rules` reads them for every
window, pinned in its ``rules`` segment after the caller's own rules, and the search then
leaves them out (:func:`recall`'s ``pinned``). Why: a stored rule reached the model only
when the search ranked it for the question, so a rule applied to the questions that
shared its words and to no other (a review).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass

from contextos.engine.compaction import HistoryState, visible_turns
from contextos.engine.offload import TURN_SEQ_KEY
from contextos.engine.session import (
    LOGGED_SESSION_KEY,
    LOGGED_TURN_KEY,
    MemoryLike,
    Session,
    hit_refs,
    novel_hits,
    search_scope,
)
from contextos.engine.summarize import turn_ref
from contextos.engine.window import text_item
from contextos.llm.tokens import Tokenizer
from contextos.memory.ingest import MAX_TEXT_CHARS
from contextos.types import Filter, Hit, MemoryRecord, MemoryType, Scope, Turn, scope_ids

#: The most stored rules a window pins (:func:`scope_rules`), the oldest first.
MAX_RULES = 20
#: The share of the window's budget the stored rules may take, at most.
RULES_SHARE = 0.1
#: The current rules read for a window, the newest first: the pinned ones are the oldest
#: of them. A scope holding more has the oldest of its newest ``RULES_READ`` pinned.
RULES_READ = 100
#: The most pages of ``RULES_READ`` an agent's window with no user reads to find its own
#: rules among those of its users (:func:`scope_rules`).
RULES_PAGES = 10
#: The metadata ``source`` of an agent's core-memory blocks
#: (:data:`contextos.agent.core_memory.SOURCE`): procedural memories the tool loop pins
#: itself, as a snapshot (:class:`~contextos.agent.core_memory.CorePrefix`), so not here.
CORE_MEMORY_SOURCE = "core_memory"
#: What a window's search retrieves when every stored rule is pinned.
UNPINNED_TYPES: tuple[MemoryType, ...] = ("episodic", "semantic")


@dataclass(frozen=True)
class Shown:
    """The turns a session's window shows (:func:`shown_turns`): what its memories
    would only repeat."""

    #: Their references (:func:`~contextos.engine.summarize.turn_ref`): the turns shown
    #: verbatim and those the summary keeps a line of.
    refs: frozenset[str] = frozenset()
    #: The words of the turns shown verbatim (stripped).
    texts: frozenset[str] = frozenset()
    #: Those of them too long for one memory (remembered in pieces).
    long_texts: tuple[str, ...] = ()
    #: The session they are turns of (None: no session, nothing shown).
    session_id: str | None = None
    #: Their ``seq``: the turns shown verbatim and those the summary keeps a line of.
    seqs: frozenset[int] = frozenset()

    def shows(self, hit: Hit) -> bool:
        """Whether the window shows every turn ``hit`` is a memory of, so it would only
        repeat them: a memory of this session whose turn (its ``seq`` when it names one:
        an archived turn, a remembered exchange) or every reference is shown.

        Why the session and the ``seq``: a reference is the client's own ``dia_id`` when
        it gives one, unique only within a session, and not even there when the client
        copies one id onto every message. A memory of another session (or of none) whose
        ``dia_id`` was that of a turn shown here left every window of this session, and
        with one id copied onto every turn, no archived turn ever came back: offload gave
        nothing back (a review)."""
        if self.session_id is None or _session_of(hit.record) != self.session_id:
            return False
        seq = _turn_seq(hit.record)
        if seq is not None:
            return seq in self.seqs
        refs = hit_refs(hit)
        return bool(refs) and self.refs.issuperset(refs)

    def says(self, text: str) -> bool:
        """Whether a turn shown verbatim holds ``text``: is it, or holds it as one of
        the pieces a long turn is remembered in (looked for in those alone, so the
        question costs a lookup on a window of thousands of turns)."""
        words = text.strip()
        if not words:
            return False
        return words in self.texts or any(words in said for said in self.long_texts)


def shown_turns(turns: Sequence[Turn], state: HistoryState, session_id: str) -> Shown:
    """The turns a window of session ``session_id`` in ``state`` shows: every turn of ``turns``
    (:meth:`~contextos.engine.session.Session.window_turns` for ``state``) it does not
    rotate out, and those its summary keeps a line of.

    Every turn from the history's start on counts, also one a window leaves out to fit
    its budget (its memory would stand in for the turn the window chose not to place)
    and one an edit or a regenerate took back (its memory goes with the branch, when
    its reply is committed; until then it would bring back what the user took back).
    """
    visible = visible_turns(turns, state)
    refs = {turn_ref(t) for t in visible}
    seqs = {t.seq for t in visible}
    if state.summary is not None:
        refs.update(state.summary.provenance())
        seqs.update(line.seq for line in state.summary.lines)
    texts = frozenset(t.message.content.strip() for t in visible)
    long_texts = tuple(said for said in texts if len(said) > MAX_TEXT_CHARS)
    return Shown(frozenset(refs), texts, long_texts, session_id, frozenset(seqs))


def _session_of(record: MemoryRecord) -> str | None:
    """The session ``record`` is a memory of: its own, else the one of the logged turn a
    wrapped client remembered it from (:data:`~contextos.engine.session.LOGGED_SESSION_KEY`)."""
    logged = record.metadata.get(LOGGED_SESSION_KEY)
    return record.session_id or (logged if isinstance(logged, str) else None)


def _turn_seq(record: MemoryRecord) -> int | None:
    """The ``seq`` of the turn ``record`` is a memory of, when it names one: a turn offload
    archived (:data:`~contextos.engine.offload.TURN_SEQ_KEY`) or an exchange a wrapped
    client remembered (:data:`~contextos.engine.session.LOGGED_TURN_KEY`)."""
    for key in (TURN_SEQ_KEY, LOGGED_TURN_KEY):
        seq = record.metadata.get(key)
        if isinstance(seq, int) and not isinstance(seq, bool):
            return seq
    return None


@dataclass(frozen=True)
class Rules:
    """The stored rules a window pins (:func:`scope_rules`)."""

    #: Their texts, the oldest first, each once.
    texts: tuple[str, ...] = ()
    #: The ids of the memories they are (a search leaves them out).
    ids: frozenset[str] = frozenset()
    #: Whether they are every current procedural memory of the scope: the search then
    #: retrieves none (:data:`UNPINNED_TYPES`); else it may retrieve those left out (a
    #: rule past the bounds, an agent's core-memory block) by the question, as before.
    every: bool = True

    def holds(self, hit: Hit) -> bool:
        """Whether ``hit`` is one of these rules, or a memory of the same words: the
        window places it once, here."""
        return hit.record.id in self.ids or hit.record.text.strip() in self.texts

    def beside(self, given: Sequence[str]) -> tuple[str, ...]:
        """These rules but one ``given`` says already: what the window's ``rules``
        segment places after ``given`` (the caller's own: ``rules=``, a wrapped
        request's ``system[1:]``) while room is left (``stored_rules`` of
        :func:`~contextos.engine.session.context_window`)."""
        said = {rule.strip() for rule in given}
        return tuple(text for text in self.texts if text.strip() not in said)


def scope_rules(
    memory: MemoryLike,
    *,
    scope: Scope,
    session: Session | None,
    tokens: int,
    tokenizer: Tokenizer,
) -> Rules:
    """The current procedural memories of ``scope`` a window pins in its ``rules``
    segment: one read (the newest :data:`RULES_READ`; an agent's window with no user
    reads on past its users' rules, at most :data:`RULES_PAGES` pages), placed oldest
    first (a rule longer than ``tokens`` alone skipped), so a new
    rule appends and the cached prefix before it stays byte-identical; each text once;
    at most :data:`MAX_RULES` of them and ``tokens`` of the window's (its
    :data:`RULES_SHARE`), the newest left out past either. Owned as :func:`recall`
    searches: the user's or agent's across their sessions (:func:`search_scope`),
    and for an agent with no user, none naming another user (with a ``session``, a
    user who takes part in it is not another,
    :meth:`~contextos.engine.session.Session.participants_hits`). An agent's
    core-memory blocks are left to its tool loop (:data:`CORE_MEMORY_SOURCE`).

    A memory without ``get_all`` (a search-only stand-in) pins none.
    """
    read = getattr(memory, "get_all", None)
    if read is None:
        return Rules(every=False)
    ids = search_scope(scope.user_id, scope.agent_id, scope.session_id)
    rules = Filter(memory_types=("procedural",))
    page = read(filters=rules, limit=RULES_READ, **ids)
    records = _owned_rules(list(page), scope, session)
    pages = 1
    # An agent's window with no user keeps no other user's rules: it reads on past those
    # filed with the agent (its own were left unread behind 100 of its users', a review).
    while len(records) < RULES_READ and _next(page) is not None and pages < RULES_PAGES:
        page = read(filters=rules, limit=RULES_READ, after=_next(page), **ids)
        records += _owned_rules(list(page), scope, session)
        pages += 1
    every = _next(page) is None and len(records) <= RULES_READ
    records = records[:RULES_READ]
    texts: list[str] = []
    pinned: set[str] = set()
    used = 0
    for record in reversed(records):  # oldest first
        text = record.text.strip()
        if record.metadata.get("source") == CORE_MEMORY_SOURCE or not text:
            every = False
            continue
        if text in texts:  # a second copy: placed once, and the search leaves it out
            pinned.add(record.id)
            continue
        cost = text_item("rule", text, tokenizer).tokens
        if cost > tokens:  # never fits: it must not keep out the rules after it (a review)
            every = False
            continue
        if len(texts) >= MAX_RULES or used + cost > tokens:
            every = False
            break
        texts.append(text)
        pinned.add(record.id)
        used += cost
    return Rules(tuple(texts), frozenset(pinned), every)


def _next(page: object) -> str | None:
    """The key of the page after ``page`` (a ``MemoryPage``'s ``next_after``; None for
    the last page, or a stand-in's plain list)."""
    after = getattr(page, "next_after", None)
    return after if isinstance(after, str) else None


def _owned_rules(
    records: list[MemoryRecord], scope: Scope, session: Session | None
) -> list[MemoryRecord]:
    """``records`` less, for an agent with no user, those naming another user: with a
    ``session``, one who takes no part in it (``participants_hits``, the rule of the
    searched memories); without one, any user (a rule is said to every window)."""
    if scope.user_id is not None or scope.agent_id is None:
        return records
    if session is None:
        return [r for r in records if r.user_id is None]
    kept = {h.record.id for h in session.participants_hits([Hit(r, 0.0) for r in records])}
    return [r for r in records if r.id in kept]


def recall(
    memory: MemoryLike,
    query: str,
    *,
    scope: Scope,
    session: Session | None,
    shown: Shown,
    limit: int,
    tokens: int | None = None,
    pinned: Rules | None = None,
) -> list[Hit]:
    """The memories a window places for ``query``: the best ``limit`` of ``scope``'s
    (within ``tokens`` of them; None: no cap), less those the window shows already.

    ``pinned``: the stored rules the window pins (:func:`scope_rules`; None: none), not
    retrieved again: when they are every rule of the scope, the search asks for the
    other types alone (so no rule takes a memory's place in the page); else it leaves
    out these and any memory of the same words.

    ``scope``: the session's, or without a ``session``, the user's or agent's.
    ``shown``: the turns the window shows (:func:`shown_turns`; ``Shown()`` without a
    session).

    With a session beside a user or agent, the search leaves the session out
    (``Filter(exclude_session=...)``) and the session's memories are searched apart,
    each search a page of ``2 x limit``, then ranked together by score. Why apart: a
    page of the scope filtered after came back all exchanges of this session after
    about 8 calls on one topic, and the user's own facts ("allergic to peanuts")
    stopped reaching the model (a review). Left out: a memory whose every turn is
    ``shown`` (:func:`~contextos.engine.session.novel_hits`); one of the session that
    names no turn and whose words a turn shown holds (:func:`_said_again`); a second
    copy of one turn's words (:func:`_one_copy_a_turn`); and, for a session of an agent
    with no user, one naming a user who takes no part in the session
    (:meth:`~contextos.engine.session.Session.participants_hits`); without a session,
    one naming any user.

    Raises:
        ScopeError: ``scope`` names no user, agent or session (the search refuses it).
    """
    ids = search_scope(scope.user_id, scope.agent_id, scope.session_id)
    here = session.session_id if session is not None else None
    page = limit * 2
    types = UNPINNED_TYPES if pinned is not None and pinned.every else ()
    if here is None or ids["session_id"] is not None:  # the session is the whole scope
        every = Filter(memory_types=types) if types else None
        hits = memory.search(query, **ids, filters=every, limit=page, token_budget=tokens)
    else:
        others = Filter(exclude_session=here, memory_types=types)
        hits = memory.search(query, **ids, filters=others, limit=page, token_budget=tokens)
        own_ids = scope_ids(ids["user_id"], ids["agent_id"], here)
        mine = Filter(memory_types=types) if types else None
        own = memory.search(query, **own_ids, filters=mine, limit=page, token_budget=tokens)
        hits = sorted([*hits, *own], key=lambda h: -h.score)
    if pinned is not None:
        hits = [h for h in hits if not pinned.holds(h)]
    if session is not None:
        hits = [h for h in hits if not _said_again(h, session.session_id, shown)]
        hits = list(session.participants_hits(hits))
    elif scope.user_id is None and scope.agent_id is not None:
        # An agent's window with no user and no session: none naming a user, as its
        # pinned rules (:func:`_owned_rules`); a user's card number filed with the
        # agent reached every such window (a review).
        hits = [h for h in hits if h.record.user_id is None]
    hits = _one_copy_a_turn(hits)
    return novel_hits(hits, shown.shows, sys.maxsize if tokens is None else tokens)[:limit]


def _said_again(hit: Hit, session_id: str, shown: Shown) -> bool:
    """Whether ``hit`` is a memory of the session that names no turn and whose words a
    turn the window shows holds: an exchange a wrapped client remembered before it
    marked each with its turn (:func:`~contextos.engine.session.hit_refs`).

    Why by its words: a memory the app added to the session itself (``contextos add
    -s``, ``POST /v1/memories`` with a ``session_id``) names no turn either, and the
    log does not hold it."""
    return hit.record.session_id == session_id and not hit_refs(hit) and shown.says(hit.record.text)


def _one_copy_a_turn(hits: list[Hit]) -> list[Hit]:
    """``hits`` (best first) less a second memory of the same words of the same turn.

    Why: with ``offload`` and ``remember`` both on, a turn is in memory twice, the
    exchange remembered after its call and the copy compaction archived, and once
    compaction rotated it out, both came back and took two places for one sentence."""
    seen: set[tuple[tuple[str, ...], str]] = set()
    out = []
    for hit in hits:
        refs = hit_refs(hit)
        if refs and (refs, hit.record.text) in seen:
            continue
        seen.add((refs, hit.record.text))
        out.append(hit)
    return out


@dataclass(frozen=True)
class Recalled:
    """What a window of a session places from memory (:func:`session_recall`)."""

    #: The scope's stored rules its ``rules`` segment places after the caller's
    #: (:meth:`Rules.beside`).
    stored_rules: tuple[str, ...]
    #: The memories retrieved for its question.
    hits: list[Hit]


def session_recall(
    memory: MemoryLike,
    session: Session,
    query: str,
    *,
    limit: int,
    budget: int,
    rules: Sequence[str] = (),
) -> Recalled:
    """:func:`recall` for a window :meth:`~contextos.engine.session.Session.window`
    builds of ``session`` as it is now (its scope, the turns its stored state shows),
    of ``budget`` tokens (:func:`~contextos.engine.session.window_budget`), with the
    scope's stored rules that ``rules`` do not say (:func:`scope_rules`). What the server's window
    and ``contextos window`` place."""
    state = session.state()
    shown = shown_turns(session.window_turns(state), state, session.session_id)
    pinned = scope_rules(
        memory,
        scope=session.scope,
        session=session,
        tokens=int(RULES_SHARE * budget),
        tokenizer=session.tokenizer,
    )
    hits = recall(
        memory, query, scope=session.scope, session=session, shown=shown, limit=limit, pinned=pinned
    )
    return Recalled(pinned.beside(rules), hits)


__all__ = [
    "MAX_RULES",
    "RULES_SHARE",
    "Recalled",
    "Rules",
    "Shown",
    "recall",
    "scope_rules",
    "session_recall",
    "shown_turns",
]
