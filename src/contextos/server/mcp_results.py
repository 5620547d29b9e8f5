"""What an MCP tool answers: one compact JSON object, sized for a model to read.

Why: a tool's answer goes into a model's context whole. With default arguments
``search_memory`` answered 1.6 MB and ``list_memories`` 1.9 MB (ten or fifty long
memories: the HTTP pages' 4 MiB bound, 400,000 tokens), where Claude Code refuses a
result over 25,000 tokens and other hosts cut it or pay for it; the JSON was printed
with an indent of two, a third more characters for a short memory; and a list came
back as one content block per item, an empty one as no block at all, which a model
reads as a failure (a review). Here every tool answers one object (``{"results":
[...], ...}`` for lists), written compactly, and the memories in a search, a list or
an add's answer are shown shortened past :data:`TEXT_CHARS` (``truncated`` says so;
``get_memory`` reads one whole), within :data:`RESULT_CHARS` per answer.
"""

from __future__ import annotations

from typing import Any

import pydantic_core

#: The most characters of a memory's text shown in a search hit, a list entry or an
#: add's answer over MCP; a longer text is cut there and the entry marked ``truncated``.
TEXT_CHARS = 2_000
#: Metadata whose JSON is longer than this many characters is left out of such an
#: entry (marked ``truncated``); ``get_memory`` shows it.
METADATA_CHARS = 2_000
#: The most characters of entries one search answer holds, and the most bytes of text
#: and metadata one ``list_memories`` or ``memory_history`` page holds (about 10,000
#: tokens; at least one entry is always there).
RESULT_CHARS = 40_000


def shown(item: dict[str, Any]) -> dict[str, Any]:
    """``item`` (a memory's or a hit's dict) as a model is shown it: its text cut to
    :data:`TEXT_CHARS` (``text_chars`` then says how long it is), its metadata left out
    past :data:`METADATA_CHARS`, and ``truncated`` naming what was cut (absent when
    nothing was)."""
    out = dict(item)
    cut: list[str] = []
    text = out.get("text")
    if isinstance(text, str) and len(text) > TEXT_CHARS:
        out["text"], out["text_chars"] = text[:TEXT_CHARS], len(text)
        cut.append("text")
    if out.get("metadata") and len(_json(out["metadata"])) > METADATA_CHARS:
        del out["metadata"]
        cut.append("metadata")
    if cut:
        out["truncated"] = cut
    return out


def listed(items: list[dict[str, Any]], *, cut: bool = False) -> dict[str, Any]:
    """``{"results": [...], "cut": ...}`` of ``items`` (search hits, in rank order), each
    :func:`shown`, as many as fit in :data:`RESULT_CHARS` (at least one); ``cut``: some
    were already left out (the HTTP pages' bound). A ``note`` says what was shortened
    or left out and how to read the rest."""
    entries = [shown(item) for item in items]
    kept: list[dict[str, Any]] = []
    used = 0
    for entry in entries:
        used += len(_json(entry))
        if kept and used > RESULT_CHARS:
            break
        kept.append(entry)
    left = len(entries) - len(kept)
    out: dict[str, Any] = {"results": kept, "cut": cut or left > 0}
    notes = [_TRUNCATED] if any("truncated" in e for e in kept) else []
    if out["cut"]:
        more = f"{left} more hits" if left else "more hits"
        notes.append(
            f"{more} matched but were left out to keep this answer within "
            f"{RESULT_CHARS:,} characters: narrow the query or its filters to see others."
        )
    if notes:
        out["note"] = " ".join(notes)
    return out


def page(answer: dict[str, Any]) -> dict[str, Any]:
    """A page answer (``{"results": [...], "next_after": ...}``) with each result
    :func:`shown` and a ``note`` when one was shortened."""
    results = [shown(item) for item in answer["results"]]
    out = {**answer, "results": results}
    if any("truncated" in e for e in results):
        out["note"] = _TRUNCATED
    return out


#: The ``note`` of an answer with a shortened entry.
_TRUNCATED = (
    f"Entries marked truncated are shortened (text to {TEXT_CHARS:,} characters, "
    "large metadata left out): get_memory with the entry's id reads it whole."
)


#: What ``compact_session`` and ``conversation_search`` add for a session with no turns.
#: Why: ``add_memory`` with a ``session_id`` logs no turns, so a session only MCP had
#: written was "not found" with nothing said of where turns come from (a review).
NO_TURNS = (
    "no tool logs a session's turns over MCP (add_memory stores memories, not turns): "
    "an application logs them over HTTP (POST /v1/sessions/{session_id}/turns), "
    "through a wrapped provider client, or with the Python API (Session)"
)


def tool_result(value: Any) -> Any:
    """``value`` (what a tool returned) as the SDK's ``CallToolResult``: one text
    block of compact JSON and the same object as structured content, where ``value``
    is a dict and the SDK is mcp 2.x; else ``value`` itself (the SDK writes it with an
    indent of two)."""
    if not isinstance(value, dict):
        return value
    try:
        import mcp_types as types
    except ImportError:  # pragma: no cover - mcp 1.x
        return value
    text = _json(value)
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=text)], structured_content=value
    )


def _json(value: Any) -> str:
    """``value`` as compact JSON text, non-ASCII characters as they are."""
    return pydantic_core.to_json(value, fallback=str).decode()


__all__ = ["METADATA_CHARS", "NO_TURNS", "RESULT_CHARS", "TEXT_CHARS", "listed", "page", "shown"]
