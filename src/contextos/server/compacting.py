"""Compact a session's history for one tenant: what the HTTP
``POST /v1/sessions/{id}/compact`` route and the MCP ``compact_session`` tool share.

It is :meth:`contextos.engine.session.Session.compact`, run on the Session the server
keeps for the window routes (:mod:`.live_sessions`), so the Session that builds the next
window is the one that compacted. Another kept Session of the log (another user or
agent id) learns of it too: every window reads the compaction state afresh
(``Session.state``), and a moved revision with the log epoch kept makes it go on
reading from the turns it holds (``Session.turns``). Offload archives into the tenant's
own Memory (:meth:`TenantMemories.get`), never another's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import Conflict, NotFound
from ..types import Scope

if TYPE_CHECKING:
    from ..engine.compaction import Strategy
    from ..llm.tokens import Tokenizer
    from .tenants import TenantMemories


@dataclass(frozen=True)
class CompactRequest:
    """What to compact; the tenant comes from the caller's key."""

    session_id: str
    budget: int
    strategy: Strategy = "summarize"
    force: bool = False
    user_id: str | None = None
    agent_id: str | None = None


def compact_session(
    tenants: TenantMemories, tenant: str, req: CompactRequest, tokenizer: Tokenizer
) -> dict[str, Any]:
    """Compact ``req.session_id`` of ``tenant``; the CLI's ``compact --json`` answer
    (:meth:`~contextos.engine.session.CompactionResult.to_json`).

    Raises:
        NotFound: the session has no turns (as the CLI's ``compact``); checked with one
            read of one turn, not the log.
        Conflict: another writer (a compaction, a pin, an erasure) changed the state
            while this one planned: nothing was done, and retrying is safe.
    """
    if not tenants.store.turns(Scope(tenant=tenant, session_id=req.session_id), limit=1):
        raise NotFound(f"no session {req.session_id!r} (or it has no turns yet)")
    memory = tenants.get(tenant) if req.strategy == "offload" else None
    with tenants.sessions.use(
        tenant, req.session_id, user_id=req.user_id, agent_id=req.agent_id, tokenizer=tokenizer
    ) as session:
        result = session.compact(req.budget, req.strategy, memory=memory, force=req.force)
    if result.raced:
        raise Conflict(
            f"session {req.session_id!r} was changed by another writer while it was "
            "compacted: nothing was done; compact again"
        )
    return result.to_json()


__all__ = ["CompactRequest", "compact_session"]
