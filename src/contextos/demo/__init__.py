"""The ``contextos demo`` job: the whole pipeline on a conversation we wrote.

1. Every turn goes into a durable session log and into long-term memory as a
   raw episodic record; the offline extractor also stores facts (with dates
   resolved and provenance to the turn).
2. Questions are answered from memory by hybrid retrieval, within a token budget.
3. The session is compacted (recent turns verbatim, a rolling summary of the rest).
4. A window is assembled for a question: cached prefix, summary, memories at
   the edges, recent turns, question last; priced for Claude Sonnet with the
   prompt-cache simulator over a few calls.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from contextos.cache import CacheReport, CacheSimulator, cache_request, report
from contextos.demo.data import CAPTIONS, QUESTIONS, SESSIONS, SPEAKERS, SYSTEM_PROMPT, TOOLS
from contextos.engine.session import Session
from contextos.engine.window import Window
from contextos.errors import ConfigError, EmbedderUnavailable
from contextos.llm.models import ModelInfo, get_model
from contextos.memory import Memory
from contextos.types import Hit, MemoryRecord, Message, Role

USER = "maya"
RULES = ("Always remind Maya to stretch after runs.", "Answer in at most three sentences.")

#: The longest the demo waits for the sample conversation's vectors. They take a few
#: seconds (the model loads, and the first time its graph is built, about a second).
#: An embedder that cannot run at all ends the wait at once with its error (the
#: background worker stops on it); this bound is for one that keeps failing in a way
#: the worker retries as an outage (each try logged), so the demo never waits forever:
#: it waited for good on a missing weights package (a review).
FLUSH_S = 120.0


@dataclass
class DemoResult:
    """What the demo did, for printing (or for tests)."""

    turns: int = 0
    raw_records: list[MemoryRecord] = field(default_factory=list)
    facts: list[MemoryRecord] = field(default_factory=list)
    answers: list[tuple[str, list[Hit]]] = field(default_factory=list)
    history_tokens_before: int = 0
    history_tokens_after: int = 0
    compactions: int = 0
    window: Window | None = None
    cache: CacheReport | None = None
    model: ModelInfo | None = None


def _messages(session_no: int) -> list[Message]:
    start = datetime.fromisoformat(SESSIONS[session_no][0])
    out = []
    for k, (speaker, text) in enumerate(SESSIONS[session_no][1]):
        meta: dict[str, Any] = {
            "dia_id": f"S{session_no + 1}:{k + 1}",
            "event_time": (start + timedelta(minutes=k)).isoformat(),
        }
        if text in CAPTIONS:
            meta["caption"] = CAPTIONS[text]
        role: Role = "user" if speaker == SPEAKERS[0] else "assistant"
        out.append(Message(role=role, content=text, name=speaker, metadata=meta))
    return out


def ingest(memory: Memory, session: Session, result: DemoResult) -> None:
    """Log every turn, store it as a memory, and extract facts from it."""
    for n in range(len(SESSIONS)):
        messages = _messages(n)
        session.add(*messages)
        sid = f"demo-{n + 1}"
        result.raw_records += memory.add(messages, user_id=USER, session_id=sid)
        result.facts += memory.add(messages, user_id=USER, session_id=sid, infer=True)
        result.turns += len(messages)
    if not memory.flush(timeout=FLUSH_S):
        raise EmbedderUnavailable(
            f"the sample conversation had no vectors after {FLUSH_S:.0f} s: the embedder "
            "keeps failing (the warnings above say why); the demo stops here"
        )


def run_demo(
    db: str | Path,
    *,
    model_name: str = "claude-sonnet-4-6",
    progress: Callable[[str], None] | None = None,
) -> DemoResult:
    """Run the demo against a database file (created if missing).

    Raises:
        ConfigError: the database holds the demo already (its session log). Why: run
            again on it (``demo --keep PATH`` twice, to try another ``--model``), the
            sample was stored a second time: every turn came back twice in retrieval,
            and the report said "0 extracted facts" (they were deduplicated).
    """
    say = progress or (lambda _msg: None)
    model = get_model(model_name)  # unknown names fail here, before any work
    result = DemoResult(model=model)
    memory = Memory(db)
    try:
        session = Session(memory.store, "demo-chat", user_id=USER)
        if session.turns():
            raise ConfigError(
                f"the database {db} holds the demo already (its session 'demo-chat'); "
                "run it on a new database (a new --keep path), or delete this one"
            )
        say("ingesting the sample conversation (the embedding model loads on first use)")
        ingest(memory, session, result)
        for question in QUESTIONS:
            result.answers.append(
                (question, memory.search(question, user_id=USER, limit=3, token_budget=200))
            )
        say("compacting the session")
        result.history_tokens_before = session.history_tokens()
        compacted = session.compact(600, "summarize")
        result.compactions = 1 if compacted.plan is not None else 0
        result.history_tokens_after = session.history_tokens()
        result.window, result.cache = _window_and_cost(memory, session, model)
    finally:
        memory.close()
    return result


def _window_and_cost(
    memory: Memory, session: Session, model: ModelInfo
) -> tuple[Window, CacheReport]:
    """Assemble a window per question and price the sequence with the cache simulator."""
    sim = CacheSimulator("anthropic", min_tokens=model.min_cache_tokens)
    usages = []
    window = None
    for i, question in enumerate(QUESTIONS):
        hits = memory.search(question, user_id=USER, limit=8)
        window = session.window(
            model, question, budget=4000, system=SYSTEM_PROMPT, rules=RULES, tools=TOOLS, hits=hits
        )
        usages.append(
            sim.send(cache_request(window, model, "anthropic", at=60.0 * i, output_tokens=80))
        )
    assert window is not None
    return window, report(usages, model)
