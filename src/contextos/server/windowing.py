"""Assemble a context window for a question, for one tenant: what the HTTP
``/v1/sessions/{id}/window`` route and the MCP ``assemble_window`` tool share.

With a session, it is :meth:`contextos.engine.session.Session.window` (rolling
summary, recent turns, retrieved memories at the edges, question last);
without one, the same builder (:func:`contextos.engine.session.context_window`)
holding only memories and the question.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from contextos.engine.session import Session, context_window, search_scope, window_budget
from contextos.engine.window import Overflow, Window
from contextos.llm.models import get_model
from contextos.llm.tokens import Tokenizer

from .schemas import MAX_LEFT_OUT
from .tenants import TenantMemories

DEFAULT_MODEL = "claude-sonnet-4-6"

#: How many windows of one tenant are built at once (:class:`WindowSlots`).
WINDOWS_PER_TENANT = 1

T = TypeVar("T")


class WindowSlots:
    """Builds windows on threads of their own, at most ``per_tenant`` of one tenant at
    once; the others wait, without a thread, until one is done.

    Why: a window reads the session's log since its last compaction whole (every turn
    of it is placed or listed as left out, and nothing over HTTP or MCP compacts), so on
    a long log it costs CPU in proportion (about 0.3 s at 20,000 turns, 2 to 4 s at
    80,000). Built in the thread pool that every route shares (40 threads), 40 windows
    that one tenant sent at once on a 20,000-turn log held every thread and the
    interpreter lock for 44 s: another tenant's ``GET /v1/memories`` went from 50 ms to
    p50 700 ms, max 4 to 6 s. Now one tenant's windows queue behind each other only, and
    never hold more than ``per_tenant`` threads.
    """

    def __init__(self, per_tenant: int = WINDOWS_PER_TENANT) -> None:
        if per_tenant < 1:
            raise ValueError("per_tenant must be at least 1")
        self.per_tenant = per_tenant
        self._limiters: dict[str, anyio.CapacityLimiter] = {}
        self._lock = threading.Lock()

    def _limiter(self, tenant: str) -> anyio.CapacityLimiter:
        with self._lock:
            limiter = self._limiters.get(tenant)
            if limiter is None:
                limiter = self._limiters[tenant] = anyio.CapacityLimiter(self.per_tenant)
            return limiter

    async def run(self, tenant: str, build: Callable[[], T]) -> T:
        """``build()`` on a worker thread, once one of ``tenant``'s slots is free."""
        return await anyio.to_thread.run_sync(build, limiter=self._limiter(tenant))


@dataclass(frozen=True)
class WindowRequest:
    """What to build a window for; the tenant comes from the caller's key."""

    question: str
    user_id: str | None = None
    agent_id: str | None = None
    session_id: str | None = None
    token_budget: int = 2000
    limit: int = 20
    model: str = DEFAULT_MODEL


def build_window(
    tenants: TenantMemories, tenant: str, req: WindowRequest, tokenizer: Tokenizer
) -> Window:
    """Search the tenant's memories for the question and place them in a window.

    Raises:
        ConfigError: an unknown model.
        BudgetError: ``token_budget`` is over the model's context window less its
            default output reserve (:func:`~contextos.engine.session.window_budget`),
            refused before any search.
    """
    model = get_model(req.model)
    budget = window_budget(model, req.token_budget)
    mem = tenants.get(tenant)
    hits = mem.search(
        req.question,
        **search_scope(req.user_id, req.agent_id, req.session_id),
        limit=req.limit,
    )
    if req.session_id is not None:
        session = Session(
            tenants.store,
            req.session_id,
            tenant=tenant,
            user_id=req.user_id,
            agent_id=req.agent_id,
            tokenizer=tokenizer,
        )
        return session.window(model, req.question, budget=budget, hits=hits)
    return context_window(
        budget,
        tokenizer=tokenizer,
        question=req.question,
        min_cache_tokens=model.min_cache_tokens,
        memories=hits,
    )


def left_out_dict(overflow: Sequence[Overflow], per_segment: int = MAX_LEFT_OUT) -> dict[str, Any]:
    """What a window left out, bounded: of each segment the last ``per_segment`` items
    (in the turns, the newest turns left out: those just before the placed ones), in
    the window's order; the rest counted per segment with their tokens, so the answer's
    size does not grow with the log."""
    if per_segment < 0:
        raise ValueError("per_segment must be at least 0")
    total = Counter(o.segment for o in overflow)
    seen: Counter[str] = Counter()
    listed: list[dict[str, Any]] = []
    rest: dict[str, dict[str, Any]] = {}
    for o in overflow:
        seen[o.segment] += 1
        if total[o.segment] - seen[o.segment] < per_segment:
            listed.append(
                {"segment": o.segment, "key": o.key, "tokens": o.tokens, "reason": o.reason}
            )
            continue
        counted = rest.setdefault(o.segment, {"segment": o.segment, "count": 0, "tokens": 0})
        counted["count"] += 1
        counted["tokens"] += o.tokens
    return {
        "left_out": listed,
        "left_out_count": len(overflow),
        "left_out_not_listed": list(rest.values()),
    }


def window_dict(window: Window) -> dict[str, Any]:
    """A window as plain JSON: rendered text, blocks, what was left out and why
    (listed up to :data:`MAX_LEFT_OUT` items a segment, see
    :func:`left_out_dict`)."""
    return {
        "text": window.render_text(),
        "tokens": window.total_tokens,
        "budget": window.budget,
        "memory_ids": [
            b.key.removeprefix("memory:") for b in window.blocks if b.key.startswith("memory:")
        ],
        "blocks": [
            {"segment": b.segment, "role": b.role, "text": b.text, "tokens": b.tokens}
            for b in window.blocks
        ],
        **left_out_dict(window.overflow),
    }
