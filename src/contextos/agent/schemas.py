"""The inputs of the self-editing memory tools at the edge (HTTP routes and MCP tools).

The tools' ids and texts obey the rules of the memory routes
(:mod:`contextos.server.schemas`): ids of at most 256 characters with a
non-space one, no NUL or lone surrogate anywhere (PostgreSQL cannot store NUL;
a lone surrogate cannot be written as UTF-8), texts of at most 100,000
characters, and no field the body does not define (a ``tenant`` in the body is
refused, never read: the tenant is the key's). HTTP answers 422; MCP raises,
which the SDK reports as a tool error. Whether an argument is the right one
for the tool (a missing label, a number for a text) stays the tool's answer.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, Field

from ..server import schemas as s

#: Deepest nesting of lists and objects accepted in a tool's arguments.
MAX_ARGUMENT_DEPTH = 8


def _check_value(value: Any, depth: int) -> None:
    """Every string in ``value`` (keys too) is storable text of at most MAX_TEXT chars."""
    if depth > MAX_ARGUMENT_DEPTH:
        raise ValueError(f"arguments nest deeper than {MAX_ARGUMENT_DEPTH} levels")
    if isinstance(value, str):
        if len(value) > s.MAX_TEXT:
            raise ValueError(f"an argument is longer than {s.MAX_TEXT:,} characters")
        s.check_text(value)
    elif isinstance(value, list):
        for item in value:
            _check_value(item, depth + 1)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_value(str(key), depth + 1)
            _check_value(item, depth + 1)


def check_arguments(value: dict[str, Any]) -> dict[str, Any]:
    """A tool's arguments, refused when a text in them could not be stored or echoed."""
    _check_value(value, 0)
    return value


Arguments = Annotated[dict[str, Any], AfterValidator(check_arguments)]


class ToolScopeIn(s._Body):
    """Whose memory a tool acts on (the tenant comes from the API key)."""

    user_id: s.ScopeId | None = None
    agent_id: s.ScopeId | None = None
    session_id: s.ScopeId | None = None


class ToolCallIn(ToolScopeIn):
    """One tool call: the scope it acts in and the tool's arguments."""

    arguments: Arguments = Field(default_factory=dict)


__all__ = ["MAX_ARGUMENT_DEPTH", "Arguments", "ToolCallIn", "ToolScopeIn", "check_arguments"]
