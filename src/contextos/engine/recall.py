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
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass

from contextos.engine.compaction import HistoryState, visible_turns
from contextos.engine.session import MemoryLike, Session, hit_refs, novel_hits, search_scope
from contextos.engine.summarize import turn_ref
from contextos.memory.ingest import MAX_TEXT_CHARS
from contextos.types import Filter, Hit, Scope, Turn, scope_ids


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

    def says(self, text: str) -> bool:
        """Whether a turn shown verbatim holds ``text``: is it, or holds it as one of
        the pieces a long turn is remembered in (looked for in those alone, so the
        question costs a lookup on a window of thousands of turns)."""
        words = text.strip()
        if not words:
            return False
        return words in self.texts or any(words in said for said in self.long_texts)


def shown_turns(turns: Sequence[Turn], state: HistoryState) -> Shown:
    """The turns a window of the session in ``state`` shows: every turn of ``turns``
    (:meth:`~contextos.engine.session.Session.window_turns` for ``state``) it does not
    rotate out, and those its summary keeps a line of.

    Every turn from the history's start on counts, also one a window leaves out to fit
    its budget (its memory would stand in for the turn the window chose not to place)
    and one an edit or a regenerate took back (its memory goes with the branch, when
    its reply is committed; until then it would bring back what the user took back).
    """
    visible = visible_turns(turns, state)
    refs = {turn_ref(t) for t in visible}
    if state.summary is not None:
        refs.update(state.summary.provenance())
    texts = frozenset(t.message.content.strip() for t in visible)
    long_texts = tuple(said for said in texts if len(said) > MAX_TEXT_CHARS)
    return Shown(frozenset(refs), texts, long_texts)


def recall(
    memory: MemoryLike,
    query: str,
    *,
    scope: Scope,
    session: Session | None,
    shown: Shown,
    limit: int,
    tokens: int | None = None,
) -> list[Hit]:
    """The memories a window places for ``query``: the best ``limit`` of ``scope``'s
    (within ``tokens`` of them; None: no cap), less those the window shows already.

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
    (:meth:`~contextos.engine.session.Session.participants_hits`).

    Raises:
        ScopeError: ``scope`` names no user, agent or session (the search refuses it).
    """
    ids = search_scope(scope.user_id, scope.agent_id, scope.session_id)
    here = session.session_id if session is not None else None
    page = limit * 2
    if here is None or ids["session_id"] is not None:  # the session is the whole scope
        hits = memory.search(query, **ids, limit=page, token_budget=tokens)
    else:
        others = Filter(exclude_session=here)
        hits = memory.search(query, **ids, filters=others, limit=page, token_budget=tokens)
        own_ids = scope_ids(ids["user_id"], ids["agent_id"], here)
        own = memory.search(query, **own_ids, limit=page, token_budget=tokens)
        hits = sorted([*hits, *own], key=lambda h: -h.score)
    if session is not None:
        hits = [h for h in hits if not _said_again(h, session.session_id, shown)]
        hits = list(session.participants_hits(hits))
    hits = _one_copy_a_turn(hits)
    return novel_hits(hits, shown.refs, sys.maxsize if tokens is None else tokens)[:limit]


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


def session_recall(memory: MemoryLike, session: Session, query: str, *, limit: int) -> list[Hit]:
    """:func:`recall` for a window :meth:`~contextos.engine.session.Session.window`
    builds of ``session`` as it is now: its scope, the turns its stored state shows.
    What the server's window and ``contextos window`` place."""
    state = session.state()
    shown = shown_turns(session.window_turns(state), state)
    return recall(memory, query, scope=session.scope, session=session, shown=shown, limit=limit)


__all__ = ["Shown", "recall", "session_recall", "shown_turns"]
