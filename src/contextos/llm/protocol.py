"""The ``LLM`` seam: a system prompt and messages in, text out.

Extraction and reconciliation can use a language model when one is configured
(:class:`~contextos.memory.extract_llm.LLMExtractor`,
:class:`~contextos.memory.reconcile.LLMReconciler`). They depend only on this
protocol, so provider adapters (Anthropic, OpenAI) and the scripted test double
in :mod:`contextos.testing.llm` are interchangeable, and the offline defaults
need no model at all. Summarization does not use it: compaction summarizes with
the offline extractive summarizer, and no LLM summarizer is shipped.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from contextos.types import Message


@runtime_checkable
class LLM(Protocol):
    """A text-completion model behind one method."""

    def complete(
        self,
        system: str,
        messages: Sequence[Message],
        *,
        json_schema: Mapping[str, Any] | None = None,
    ) -> str:
        """The model's reply to ``messages`` under ``system``.

        With ``json_schema`` the reply is asked to be one JSON document of that
        shape (providers that support structured output enforce it); callers
        still validate it, because not every provider can.
        """
        ...


@dataclass(frozen=True)
class LLMCall:
    """One request to an ``LLM``: the arguments of ``complete`` as one value."""

    system: str
    messages: tuple[Message, ...]
    json_schema: Mapping[str, Any] | None


class BaseLLM(ABC):
    """An ``LLM`` written as :meth:`reply` to one :class:`LLMCall`.

    Why: the shipped models (the SDK clients, the scripted test double) then take
    the seam's arguments in one place, already as one immutable value they can
    log or replay, instead of each repeating ``complete``'s signature.
    """

    def complete(
        self,
        system: str,
        messages: Sequence[Message],
        *,
        json_schema: Mapping[str, Any] | None = None,
    ) -> str:
        """``LLM.complete``: the reply to this request."""
        return self.reply(LLMCall(system, tuple(messages), json_schema))

    @abstractmethod
    def reply(self, call: LLMCall) -> str:
        """The model's reply to ``call`` (see :meth:`LLM.complete`)."""


def parse_json_reply(reply: str) -> Any:
    """The JSON document in a model reply, tolerating a Markdown code fence around it.

    Raises ValueError when the reply holds no parseable JSON, nested too deep
    included (Python's parser raised RecursionError, which no caller's fallback for
    an invalid reply caught), and when it is not a str at all: an ``LLM`` of the
    caller's own may return anything, and a list or None raised AttributeError out of
    ``Memory.add(infer=True)``, past the fallback every invalid reply gets (a review).

    Example:
        >>> parse_json_reply('```json\\n{"action": "ADD"}\\n```')
        {'action': 'ADD'}
    """
    if not isinstance(reply, str):
        raise ValueError(f"reply is a {type(reply).__name__}, not text")
    text = reply.strip()
    if text.startswith("```"):
        text = text.split("\n", 1)[1] if "\n" in text else ""
        text = text.rsplit("```", 1)[0]
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ValueError(f"reply is not JSON: {exc}") from None
    except RecursionError:
        raise ValueError("reply is JSON nested too deep to read") from None


_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}


def _type_ok(value: Any, kinds: str | Sequence[str]) -> bool:
    names = [kinds] if isinstance(kinds, str) else list(kinds)
    for name in names:
        if isinstance(value, bool) and name in ("integer", "number"):
            continue  # JSON true is not a number
        if isinstance(value, _JSON_TYPES[name]):
            return True
    return False


def schema_errors(value: Any, schema: Mapping[str, Any], path: str = "$") -> list[str]:
    """What is wrong with ``value`` under a JSON schema (empty when it is valid).

    Covers the subset contextos's prompts use: type, enum, properties, required,
    additionalProperties: false, items. Enough to reject a model's malformed
    reply without a jsonschema dependency.

    Example:
        >>> schema_errors({"action": "MAYBE"}, {"properties": {"action": {"enum": ["ADD"]}}})
        ["$.action: 'MAYBE' is not one of ['ADD']"]
    """
    if "type" in schema and not _type_ok(value, schema["type"]):
        return [f"{path}: expected {schema['type']}, got {type(value).__name__}"]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{path}: {value!r} is not one of {list(schema['enum'])}"]
    errors: list[str] = []
    if isinstance(value, dict):
        props: Mapping[str, Any] = schema.get("properties", {})
        required = schema.get("required", ())
        errors += [f"{path}: missing {key!r}" for key in required if key not in value]
        if schema.get("additionalProperties") is False:
            errors += [f"{path}: unexpected {key!r}" for key in value if key not in props]
        for key, sub in props.items():
            if key in value:
                errors += schema_errors(value[key], sub, f"{path}.{key}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            errors += schema_errors(item, schema["items"], f"{path}[{i}]")
    return errors
