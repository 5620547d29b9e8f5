"""Who the agent's own memories belong to: a user and/or an agent, never one session.

Core memory blocks, the memory tool's files and archival memories all live in
such an owner scope. They are read back from *exactly* that scope: a search for
a user also finds the user's session and agent memories, but a user's blocks or
files are not an agent's, nor a session's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..errors import ScopeError
from ..types import MemoryRecord, Scope

if TYPE_CHECKING:
    from ..memory import Memory


def owner_scope(memory: Memory, user_id: str | None, agent_id: str | None) -> Scope:
    """The scope in ``memory``'s tenant that the agent's memories of this owner live in.

    Raises:
        ScopeError: neither a user nor an agent given, or an empty or blank id.
        TypeError: an id that is not a string.
    """
    scope = Scope(tenant=memory.tenant, user_id=user_id, agent_id=agent_id)
    if not scope.is_scoped():
        raise ScopeError("the agent's memories need a user_id or an agent_id to live under")
    return scope


def owned(records: Sequence[MemoryRecord], scope: Scope) -> list[MemoryRecord]:
    """The ``records`` of exactly ``scope`` (not its sessions', nor a wider owner's)."""
    return [r for r in records if r.scope.within_tenant() == scope.within_tenant()]


__all__ = ["owned", "owner_scope"]
