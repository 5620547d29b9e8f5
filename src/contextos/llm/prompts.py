"""Versioned prompts for the LLM-backed steps: extraction and reconciliation.

A prompt is a value with a name and a version. Changing the wording means a
new version, so an old prompt stays reproducible and a result can say which
prompt made it: the reconciliation prompt's id is stored on each record it
decides (``metadata["decided_by"]``, e.g. ``reconcile@1``), and the extraction
prompt's id on each record made from its facts (``metadata["extracted_by"]``, e.g.
``extract@1``; ``offline`` for the rule-based extractor and its fallback).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Prompt:
    """A system prompt, a user template with ``{placeholders}`` and the reply's JSON schema."""

    name: str
    version: int
    system: str
    template: str
    schema: Mapping[str, Any] | None = field(default=None)

    @property
    def id(self) -> str:
        """``name@version``, recorded wherever the prompt's output is stored."""
        return f"{self.name}@{self.version}"

    def render(self, **values: str) -> str:
        """The user message with ``values`` filled in (a missing one raises KeyError)."""
        return self.template.format(**values)


RECONCILE_SCHEMA: Mapping[str, Any] = {
    "type": "object",
    "properties": {
        "action": {"type": "string", "enum": ["ADD", "UPDATE", "DELETE", "NOOP"]},
        "target": {"type": ["integer", "null"]},
        "text": {"type": ["string", "null"]},
        "reason": {"type": "string"},
    },
    "required": ["action"],
    "additionalProperties": False,
}

RECONCILE_V1 = Prompt(
    name="reconcile",
    version=1,
    system=(
        "You maintain a long-term memory of facts about people. Given one NEW fact and the "
        "most similar EXISTING memories, decide one action:\n"
        "- ADD: the new fact is new information.\n"
        "- UPDATE: the new fact changes or refines existing memory <target> (a different "
        "value for the same thing, or strictly more detail). Give the merged fact in 'text'.\n"
        "- DELETE: the new fact says existing memory <target> is no longer true.\n"
        "- NOOP: the new fact is already known (same meaning as an existing memory).\n"
        "Never drop information: when unsure between ADD and NOOP, choose ADD. "
        'Reply with one JSON object: {"action": ..., "target": <number or null>, '
        '"text": <string or null>, "reason": <short string>}.'
    ),
    template=(
        "NEW fact (said by {speaker}, {when}):\n{fact}\n\n"
        "EXISTING memories:\n{existing}\n\nYour JSON decision:"
    ),
    schema=RECONCILE_SCHEMA,
)

EXTRACT_SCHEMA: Mapping[str, Any] = {
    "type": "object",
    "properties": {
        "facts": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "text": {"type": "string"},
                    "type": {"type": "string", "enum": ["episodic", "semantic", "procedural"]},
                    "date": {"type": ["string", "null"]},
                    "source": {"type": ["string", "null"]},
                },
                "required": ["text", "type"],
            },
        }
    },
    "required": ["facts"],
}

EXTRACT_V1 = Prompt(
    name="extract",
    version=1,
    system=(
        "You extract durable memories from a conversation. Write each fact as one short "
        "third-person sentence naming its speaker. Replace relative times (yesterday, last "
        "week) with absolute dates computed from the session time. Keep names, places and "
        "numbers. Skip greetings, thanks and small talk. type: episodic for events with a "
        "time, semantic for facts and states, procedural for rules and preferences about how "
        "to respond. 'source' is the id of the turn the fact comes from. Reply with JSON: "
        '{"facts": [{"text": ..., "type": ..., "date": "YYYY-MM-DD" or null, '
        '"source": ...}]}.'
    ),
    template="Session time: {session_time}\n\nConversation:\n{conversation}\n\nYour JSON:",
    schema=EXTRACT_SCHEMA,
)

#: Every shipped prompt by id, so stored metadata can be traced back to wording.
PROMPTS: Mapping[str, Prompt] = {p.id: p for p in (RECONCILE_V1, EXTRACT_V1)}
