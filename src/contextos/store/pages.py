"""A page of memories read by key: the one way the CLI's ``list``, the server's
``GET /v1/memories``, MCP ``list_memories``, the inspector and ``Memory.get_all`` page
through a scope.

Why keys: paged by offset while another client added and deleted, a walk of 20,000
memories saw 35 twice and missed 3 that were never deleted (a review); a page after a
key holds only memories after the last one shown (``Store.list_after``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from ..types import MemoryRecord

if TYPE_CHECKING:
    from ..types import Filter
    from .base import Store


class MemoryPage(list[MemoryRecord]):
    """A page of memories (``Memory.get_all``): a list, and ``next_after``, the key
    the next page starts after (None: this one reached the end), as
    ``GET /v1/memories`` answers it."""

    def __init__(self, records: Iterable[MemoryRecord] = (), next_after: str | None = None):
        super().__init__(records)
        self.next_after = next_after


def keyed_page(
    store: Store,
    flt: Filter,
    *,
    after: str | None,
    offset: int,
    limit: int,
    max_bytes: int | None = None,
) -> tuple[list[MemoryRecord], str | None]:
    """One page of ``flt``'s memories, newest first, after the key ``after`` (or from
    ``offset``), at most ``max_bytes`` of them (None: unbounded), and the key the next
    page starts after (None: this one reached the end). The memory after the page is
    looked for, a full page's too: a shorter page may have been cut by its bytes
    (PostgreSQL counts metadata as jsonb's text, and a page it cut looked uncut: a
    review), and a full one may have been the last (the CLI said "more follow" with
    none left). A key the store did not make is a ValueError."""
    if max_bytes is None:  # one read: the memory after the page comes with it
        rows = store.list_after(flt, after=after, offset=offset, limit=limit + 1)
        page = rows[:limit]
        return [r for r, _ in page], page[-1][1] if len(rows) > limit else None
    rows = store.list_after(flt, after=after, offset=offset, limit=limit, max_bytes=max_bytes)
    if not rows:
        return [], None
    last = rows[-1][1]
    more = store.list_after(flt, after=last, limit=1, max_bytes=1)
    return [r for r, _ in rows], last if more else None


def pages_after(
    page: Callable[[str | None], list[tuple[MemoryRecord, str]]],
) -> Iterator[list[tuple[MemoryRecord, str]]]:
    """Every page of a keyed list (``Store.list_after``'s pairs of record and key), each
    read by ``page`` after the last key of the page before, until one comes back empty:
    ``Store.list_snapshot``'s walk, the same on every store."""
    after: str | None = None
    while rows := page(after):
        yield rows
        after = rows[-1][1]
