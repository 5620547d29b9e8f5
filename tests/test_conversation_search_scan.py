"""``conversation_search`` reads a session's log a page at a time and keeps only its best.

The MCP tool and ``POST /v1/agent/tools/conversation_search`` make a Session per call,
and the tool asked it for ``Session.turns()``: the whole log read, decoded and counted
for five turns (a review measured 1.1 s and +120 MB a call at 20,000 turns). Now the
answer is the same as a search of the whole log, and the memory a call holds is about
one page of turns, not the log.
"""

from __future__ import annotations

import random
import re
import tracemalloc
from pathlib import Path

import pytest

from contextos import Memory
from contextos.agent.core_memory import CoreMemory
from contextos.agent.tools import SCAN_PAGE, AgentTools, search_answer
from contextos.engine.session import Session
from contextos.store.base import Store
from contextos.store.sqlite import SQLiteStore
from contextos.testing.embedders import HashEmbedder
from contextos.types import Message, Scope, Turn

WORDS = ["kite", "river", "lamp", "violin", "orchard", "pepper", "harbor", "quilt"]
WORDS += ["kites", "kite-river", "Café", "naïve.", "x_y", "(lamp)", "KITE", "2kite"]


def _expected(turns: list[Turn], query: str, limit: int) -> str:
    """The whole log searched at once, as the tool did before it read pages."""
    words = {w for w in re.findall(r"\w+", query.lower()) if len(w) > 1}
    scored = []
    for t in turns:
        found = words & set(re.findall(r"\w+", t.message.content.lower()))
        if found and t.message.role in ("user", "assistant"):
            scored.append((-len(found), -t.seq, t))
    best = sorted(scored)[:limit]
    return search_answer(
        [
            f"[turn {t.seq}] {t.message.role}: {t.message.content}"
            for _, _, t in sorted(best, key=lambda x: x[2].seq)
        ]
    )


@pytest.fixture
def memory(store: Store) -> Memory:
    """A Memory on each store backend (the ``store`` fixture closes it)."""
    return Memory(store=store, embedder=HashEmbedder(), background_embedding=False)


def test_the_answer_is_a_search_of_the_whole_log_across_pages(memory: Memory) -> None:
    rng = random.Random(5)
    session = Session(memory.store, "long", tenant=memory.tenant, user_id="ana")
    roles = ("user", "assistant", "system")  # a system turn is never an answer
    for _ in range(3):  # 3 pages and more, the matches spread over all of them
        session.add(
            *(
                Message(
                    roles[rng.randrange(3)] if rng.random() < 0.2 else ("user", "assistant")[i % 2],
                    " ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 3))) + " filler",
                )
                for i in range(SCAN_PAGE + 7)
            )
        )
    logged = memory.store.turns(Scope(tenant=memory.tenant, session_id="long"))
    assert len(logged) == 3 * (SCAN_PAGE + 7)
    tools = AgentTools(CoreMemory(memory, user_id="ana"), session=session)
    queries = ["kite river", "violin", "orchard pepper harbor", "quilt lamp kite", "absent"]
    for query in [*queries, "café x_y", "naïve kites", "kite (river)", "2kite x"]:
        answer = tools.execute("conversation_search", {"query": query})
        assert not answer.is_error
        assert answer.text == _expected(logged, query, tools.search_limit), query
    # the best match in the last page only is found
    session.add(Message("user", "kite river violin orchard pepper harbor quilt lamp"))
    answer = tools.execute("conversation_search", {"query": "kite river violin orchard"})
    assert f"[turn {len(logged)}] user: kite river violin" in answer.text


def test_a_search_holds_about_a_page_of_the_log_not_the_log(memory: Memory) -> None:
    session = Session(memory.store, "big", tenant=memory.tenant, user_id="ana")
    body = "lorem ipsum " * 1700  # ~20 KB a turn: the log is ~20 MB
    for j in range(8):
        session.add(*(Message("user", f"turn {j}-{i} {body}") for i in range(SCAN_PAGE)))
    log_bytes = 8 * SCAN_PAGE * len(body)
    tools = AgentTools(
        CoreMemory(memory, user_id="ana"),
        session=Session(memory.store, "big", tenant=memory.tenant, user_id="ana"),
    )
    tracemalloc.start()
    try:
        answer = tools.execute("conversation_search", {"query": "turn 7-3"})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert not answer.is_error and answer.text.count("[turn ") == tools.search_limit
    print(f"log {log_bytes / 1e6:.1f} MB, peak while searching {peak / 1e6:.1f} MB")
    assert peak < log_bytes / 3


def test_a_page_of_turn_texts_is_the_seq_role_and_content_of_the_turns(store: Store) -> None:
    """``Store.turn_texts``, what the search reads, holds what ``Store.turns`` holds of
    those turns, page for page, on both stores; a session never logged has none."""
    session = Session(store, "s", tenant="t", user_id="ana")
    session.add(
        *(
            Message(("user", "assistant", "tool")[i % 3], f"line {i} é\n\u2028 ☃", name=None)
            for i in range(10)
        )
    )
    scope = Scope(tenant="t", session_id="s")
    for after, limit in [(-1, None), (-1, 4), (3, 4), (8, 10), (9, 1)]:
        turns = store.turns(scope, after_seq=after, limit=limit)
        texts = store.turn_texts(scope, after_seq=after, limit=limit)
        assert [tuple(t) for t in texts] == [
            (t.seq, t.message.role, t.message.content) for t in turns
        ]
    assert store.turn_texts(Scope(tenant="t", session_id="other")) == []
    assert store.turn_texts(Scope(tenant="other", session_id="s")) == []


class TurnCountingStore(SQLiteStore):
    """A real SQLite store that counts the whole turns it decodes for a caller."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.turns_read = 0

    def turns(self, scope: Scope, **kwargs: object) -> list[Turn]:  # type: ignore[override]
        found = super().turns(scope, **kwargs)  # type: ignore[arg-type]
        self.turns_read += len(found)
        return found


def test_a_search_decodes_no_whole_turn(tmp_path: Path) -> None:
    """The search reads (seq, role, content) alone: building each turn's tool calls,
    metadata and time was about four fifths of its cost on a long log."""
    store = TurnCountingStore(tmp_path / "m.db")
    with Memory(store=store, embedder=HashEmbedder(), background_embedding=False) as memory:
        session = Session(store, "long", tenant=memory.tenant, user_id="ana")
        session.add(*(Message("user", f"turn {i} about {i % 7}") for i in range(3 * SCAN_PAGE)))
        tools = AgentTools(
            CoreMemory(memory, user_id="ana"),
            session=Session(store, "long", tenant=memory.tenant, user_id="ana"),
        )
        before = store.turns_read
        answer = tools.execute("conversation_search", {"query": "about 3"})
        assert answer.text.count("[turn ") == tools.search_limit
        assert store.turns_read == before
