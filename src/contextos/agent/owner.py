"""Who the agent's own memories belong to: a user and/or an agent, never one session.

Core memory blocks, the memory tool's files and archival memories all live in
such an owner scope. They are read back from *exactly* that scope: a search for
a user also finds the user's session and agent memories, but a user's blocks or
files are not an agent's, nor a session's.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

from ..errors import ScopeError
from ..types import Filter, MemoryRecord, Scope

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


def owner_filter(scope: Scope, metadata: Mapping[str, str]) -> Filter:
    """A filter on ``metadata`` for reading what ``scope`` owns: for an agent alone (no
    user), the records of no user only (``Filter.no_user``).

    Why: a read by agent also matches every record of that agent's users (their
    ``user+agent`` blocks, files and passages); read and then dropped here, an agent's
    own block cost a read of all of them (40 ms at 3,000 users against 2 ms for a
    user's, a review). :func:`owned` still keeps exactly ``scope`` (not its sessions',
    nor, for a user, their agents')."""
    return Filter(metadata=dict(metadata), no_user=scope.user_id is None)


#: Records read per page of :func:`owned_records`.
PAGE = 1000


def owned_records(memory: Memory, scope: Scope, source: str) -> Iterator[MemoryRecord]:
    """Every record of exactly ``scope`` whose metadata ``source`` is ``source``, each once.

    Why pages: a read by user or agent also returns their sessions' and agents'
    records (the owner's sub-scopes); with one page of 1000, enough of those hid
    the owner's own block, which then read as empty and was written again as a
    duplicate.

    Why pages by key (``get_all(after=)``), not by offset or by time: other writers
    (another agent of the user, a chat turn) add and delete records between two
    pages, and with the list newest first an add moved every record one place down
    (a record on a page's edge was read twice: a file counted as a duplicate of
    itself, and the edit purged it) and a delete one place up (a record was skipped:
    a file read as missing, a block as empty). Pages by creation time fell back to
    offsets inside a batch add of more than a page made in one instant; a page after
    a key holds only the records after the last one read, whatever was written or
    deleted since.
    """
    flt = owner_filter(scope, {"source": source})
    after: str | None = None
    while True:
        page = memory.get_all(**scope.ids(), filters=flt, limit=PAGE, after=after)
        yield from owned(page, scope)
        if page.next_after is None:
            return
        after = page.next_after


def oldest_first(records: Sequence[MemoryRecord]) -> list[MemoryRecord]:
    """``records`` oldest first (ties by id): the order that picks, among duplicates
    of one block or file (left by older versions' races), the same one every time.

    Why the oldest, not the last written: the tag that makes a record a block or a file
    is plain metadata that anyone who may add memories in the owner's scope can write
    (``add`` over HTTP, MCP ``add_memory``); read newest first, such a record replaced
    the agent's block or file, and the agent's next edit erased the real file (review
    s58). A backup restored beside the live block or file is kept out at import
    instead (``memory.transfer``: a conflict)."""

    def key(r: MemoryRecord) -> tuple[float, str]:
        return (r.created_at.timestamp() if r.created_at else float("inf"), r.id)

    return sorted(records, key=key)


__all__ = ["PAGE", "oldest_first", "owned", "owned_records", "owner_filter", "owner_scope"]
