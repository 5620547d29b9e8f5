"""Assemble a context window for a question, for one tenant: what the HTTP
``/v1/sessions/{id}/window`` route and the MCP ``assemble_window`` tool share.

With a session, it is :meth:`contextos.session.Session.window` (rolling
summary, recent turns, retrieved memories at the edges, question last);
without one, the same standard layout holding only memories and the question.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..models import get_model
from ..session import Session, hit_items, standard_segments
from ..tokens import Tokenizer
from ..window import Window, assemble
from .tenants import TenantMemories

DEFAULT_MODEL = "claude-sonnet-4-6"


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
    """Search the tenant's memories for the question and place them in a window."""
    mem = tenants.get(tenant)
    # Long-term memory spans sessions: search the user's/agent's memories, and narrow
    # to the session only when it is the sole scope given.
    only_session = req.user_id is None and req.agent_id is None
    hits = mem.search(
        req.question,
        user_id=req.user_id,
        agent_id=req.agent_id,
        session_id=req.session_id if only_session else None,
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
        return session.window(
            get_model(req.model), req.question, budget=req.token_budget, hits=hits
        )
    segments = standard_segments(
        req.token_budget,
        tokenizer=tokenizer,
        question=req.question,
        memories=hit_items(hits, tokenizer),
    )
    return assemble(segments, req.token_budget)


def window_dict(window: Window) -> dict[str, Any]:
    """A window as plain JSON: rendered text, blocks, what was left out and why."""
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
        "left_out": [
            {"segment": o.segment, "key": o.key, "tokens": o.tokens, "reason": o.reason}
            for o in window.overflow
        ],
    }
