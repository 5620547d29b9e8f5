"""Each server operation once: a validated request model becomes one ``Memory`` call.

The HTTP routes and the MCP tools both call these, so the two protocols cannot
pass different arguments to the library for the same request. Nothing here
imports a web framework.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..memory.ingest import metadata_bytes
from ..store.pages import keyed_page
from ..store.records import within_bytes
from ..types import Filter, HistoryEvent, Hit, MemoryRecord, Scope, Turn
from .errors import InvalidRequest

if TYPE_CHECKING:
    from ..memory import Memory
    from ..store import Store
    from . import schemas as s


def add(mem: Memory, body: s.AddRequest) -> list[MemoryRecord]:
    """Store the request's messages (or one text) in its scope."""
    messages: Any = (
        body.messages if isinstance(body.messages, str) else [m.to_message() for m in body.messages]
    )
    return mem.add(
        messages,
        **body.scope(),
        metadata=body.metadata,
        event_time=body.event_time,
        memory_type=body.memory_type,
        infer=body.infer,
    )


def search(mem: Memory, body: s.SearchRequest) -> tuple[list[Hit], bool]:
    """Hybrid search in the request's scope, with its metadata and time filters: the
    hits, in rank order up to ``MAX_PAGE_BYTES`` of text and metadata (at least one),
    and whether any were left out for that.

    Why the bound: a list page had it and a search had none; 60 hits of long memories
    made a 24.6 MB answer, and eight such searches at once doubled a server's memory
    (a review)."""
    time_range = (
        None
        if body.event_after is None and body.event_before is None
        else (body.event_after, body.event_before)
    )
    hits = mem.search(
        body.query,
        **body.scope(),
        # Metadata equality filters; Memory adds the key's tenant and the scope.
        filters=Filter(metadata=body.metadata) if body.metadata else None,
        limit=body.limit,
        token_budget=body.token_budget,
        memory_types=tuple(body.memory_types) if body.memory_types else None,
        as_of=body.as_of,
        time_range=time_range,
        min_score=body.min_score,
    )
    from .schemas import MAX_PAGE_BYTES

    kept = within_bytes([(h, hit_bytes(h)) for h in hits], MAX_PAGE_BYTES)
    return kept, len(kept) < len(hits)


def hit_bytes(hit: Hit) -> int:
    """A hit's text and metadata in bytes, as a list page counts a memory's."""
    return len(hit.record.text.encode("utf-8", "surrogatepass")) + metadata_bytes(
        hit.record.metadata
    )


def list_page(
    mem: Memory,
    body: s.ListRequest,
    *,
    max_bytes: int | None = None,
    after_field: str = "query.after",
) -> tuple[list[MemoryRecord], int | None, str | None]:
    """One page of the scope's memories, newest first (``GET /v1/memories``, MCP
    ``list_memories``): the records, the ``offset`` of the next page and the key it
    starts after (None, None: this one reached the end). ``body.after``: the page after
    the memory whose key it is (the ``next_after`` of the page before), ``offset`` then
    counted from it. ``max_bytes``: the page's bound (default ``MAX_PAGE_BYTES``; MCP's
    is smaller); ``after_field``: how a bad ``after`` is named to the caller.

    Why a key: paged by offset while another client added and deleted, a walk of 20,000
    memories saw 35 twice and missed 3 that were never deleted (a review); a page after a
    key holds only memories after the last one shown (``Store.list_after``)."""
    scope = Scope(tenant=mem.tenant, **body.scope())
    scope.for_reading()
    flt = Filter(
        scope=scope,
        memory_types=tuple(body.memory_type or ()),
        include_invalid=body.validity == "all",
    )
    records, after = memory_page(
        mem.store,
        flt,
        after=body.after,
        offset=body.offset,
        limit=body.limit,
        max_bytes=max_bytes,
        after_field=after_field,
    )
    return records, None if after is None else body.offset + len(records), after


def memory_page(
    store: Store,
    flt: Filter,
    *,
    after: str | None,
    offset: int,
    limit: int,
    max_bytes: int | None = None,
    after_field: str = "query.after",
) -> tuple[list[MemoryRecord], str | None]:
    """A page of ``flt``'s memories after the key ``after`` (:func:`keyed_page`), at most
    ``max_bytes`` of them (default ``MAX_PAGE_BYTES``, ``GET /v1/memories``).

    A key the store did not make is malformed input: an ``InvalidRequest`` (422), not
    the store's ``ValueError``, which was a 400, the answer for a library error (a
    review). It names the argument as the caller sent it (``after_field``): over MCP
    there is no query string, and ``query.after`` named nothing the model had sent."""
    from .schemas import MAX_PAGE_BYTES

    try:
        return keyed_page(
            store,
            flt,
            after=after,
            offset=offset,
            limit=limit,
            max_bytes=MAX_PAGE_BYTES if max_bytes is None else max_bytes,
        )
    except ValueError:
        if after is None:
            raise
        raise InvalidRequest(
            f"{after_field}: not a key of this list (send the next_after of the page before)"
        ) from None


def turns_page(
    store: Store, scope: Scope, *, after_seq: int, limit: int
) -> tuple[list[Turn], int | None]:
    """A page of a session's turns with seq > ``after_seq``, at most ``MAX_PAGE_BYTES``
    of them (their content, tool calls and metadata), and the ``after_seq`` of the next
    page: None when this one reached the end of the log. A page shorter than ``limit``
    may have been cut by its bytes (a turn the library logged may be larger than any
    over HTTP), so the log's newest turn is read to know."""
    from .schemas import MAX_PAGE_BYTES

    turns = store.turns(scope, after_seq=after_seq, limit=limit, max_bytes=MAX_PAGE_BYTES)
    if not turns:
        return turns, None
    if len(turns) < limit:
        newest = store.turns(scope, limit=1, newest=True)
        if not newest or newest[0].seq <= turns[-1].seq:
            return turns, None
    return turns, turns[-1].seq


def update(mem: Memory, memory_id: str, body: s.UpdateRequest) -> MemoryRecord:
    """Change a memory's text and/or metadata, if given only while it still has the
    text (``expected_text``) or ``updated_at`` the caller read (else Conflict: 409)."""
    return mem.update(
        memory_id,
        text=body.text,
        metadata=body.metadata,
        expected_text=body.expected_text,
        expected_updated_at=body.expected_updated_at,
    )


def history_page(
    mem: Memory, memory_id: str, page: s.HistoryPageIn, *, max_bytes: int | None = None
) -> tuple[list[HistoryEvent], int | None]:
    """A page of a memory's changes, oldest first (``GET /v1/memories/{id}/history``,
    MCP ``memory_history``): the events numbered after ``page.after_seq`` (the first is
    0), at most ``page.limit`` of them and ``MAX_PAGE_BYTES`` of their texts (at least
    one), and the ``after_seq`` of the next page (None: this one reached the end).
    NotFound (404, as for get) when the tenant has neither the memory nor any history
    of it, so another tenant's id and an unknown id answer alike. A deleted memory's
    history stays readable: the store keeps it.

    Why pages: every event carries its old and new text whole, so a 100,000-character
    memory updated 60 times made a 36 MB answer, and eight such requests at once took
    a server from 227 to 468 MB (a review). A number is a stable key: a memory's
    history only grows at its end, and leaves whole (``forget``). The read is bounded
    too: events are read :data:`HISTORY_BATCH` at a time until the page is full (the
    whole history was read to cut a page from it, 36 MB for the one above).
    ``max_bytes``: the page's bound (default ``MAX_PAGE_BYTES``; MCP's is smaller)."""
    from .schemas import MAX_PAGE_BYTES

    bound = MAX_PAGE_BYTES if max_bytes is None else max_bytes
    start = page.after_seq + 1
    read: list[tuple[HistoryEvent, int]] = []
    size, ahead = 0, []
    while len(read) < page.limit and size <= bound:
        ahead = mem.history(memory_id, offset=start + len(read), limit=HISTORY_BATCH)
        read += [(e, event_bytes(e)) for e in ahead]
        size += sum(event_bytes(e) for e in ahead)
        if len(ahead) < HISTORY_BATCH:
            break
    kept: list[HistoryEvent] = within_bytes(read[: page.limit], bound)
    last = start + len(kept) - 1
    more = len(read) > len(kept) or (
        len(ahead) == HISTORY_BATCH and bool(mem.history(memory_id, offset=last + 1, limit=1))
    )
    return kept, last if kept and more else None


#: Events a history page reads from the store at a time (see :func:`history_page`).
HISTORY_BATCH = 8


def event_bytes(event: HistoryEvent) -> int:
    """A history event's texts in bytes, as a list page counts a memory's text."""
    return sum(
        len(text.encode("utf-8", "surrogatepass"))
        for text in (event.old_text, event.new_text)
        if text is not None
    )
