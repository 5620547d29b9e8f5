"""Message text validity: the one rule for text a store can write and a provider accepts.

A Python string may hold a lone surrogate, which cannot be encoded as UTF-8 (no store
writes it, no provider accepts it), and NUL, which PostgreSQL cannot hold. What the
caller logs is refused, naming the field (:func:`check_text`); what a model replied is
mended instead (:func:`mended`, :func:`valid_text`), since the caller already has it.

Separate from :mod:`.session` because it is a pure rule on text that the session log,
the compaction's summary lines, the CLI and the HTTP API's validators all apply, and
none of them needs the log to do it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import Any

from contextos.types import Message


def _texts(value: Any, where: str) -> Iterator[tuple[str, str]]:
    """(where, text) for every string in a JSON-like value (mapping keys included)."""
    if isinstance(value, str):
        yield where, value
    elif isinstance(value, Mapping):
        for k, v in value.items():
            yield from _texts(k, f"{where} key")
            yield from _texts(v, f"{where}[{k!r}]")
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            yield from _texts(v, f"{where}[{i}]")


def lone_surrogate_at(text: str) -> int | None:
    """The index of the first character of ``text`` that is not valid Unicode (a lone
    surrogate), or None when there is none.

    Why: such a string cannot be encoded as UTF-8, so no store can write it and no
    provider accepts it. The one statement of the rule: :func:`check_text`
    (``Session.add``) and the HTTP API's validators
    (:func:`contextos.server.schemas.check_text`) each refuse with their own error.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        return e.start
    return None


def check_text(message: Message, what: str = "message") -> None:
    """Refuse a message holding text that is not valid Unicode (:func:`lone_surrogate_at`).

    Why: found at the store, such text surfaced as a raw ``UnicodeEncodeError``
    naming neither the message nor the field.

    Raises:
        ValueError: naming the field and the index of the first bad character.
    """
    _refuse_invalid(_message_texts(message), f"{what} ")


def check_unicode(value: Any, what: str) -> None:
    """:func:`check_text` for any string or JSON-like value (a query, metadata): a
    ValueError naming ``what`` and where in it the first lone surrogate is."""
    _refuse_invalid(_texts(value, what), "")


def _refuse_invalid(texts: Iterator[tuple[str, str]], prefix: str) -> None:
    for where, text in texts:
        at = lone_surrogate_at(text)
        if at is not None:
            raise ValueError(
                f"{prefix}{where} is not valid Unicode text "
                f"(lone surrogate {text[at]!r} at index {at})"
            )


def _message_texts(message: Message) -> Iterator[tuple[str, str]]:
    """(where, text) for every string of ``message`` a store writes."""
    fields: list[tuple[str, Any]] = [
        ("content", message.content),
        ("name", message.name),
        ("tool_call_id", message.tool_call_id),
        ("metadata", message.metadata),
    ]
    for i, call in enumerate(message.tool_calls):
        fields += [(f"tool_calls[{i}].{f}", getattr(call, f)) for f in ("id", "name", "arguments")]
    for field, value in fields:
        yield from _texts(value, field)


def valid_text(text: str) -> str:
    """``text`` with each lone surrogate and each NUL (``\\x00``) replaced by U+FFFD,
    and a surrogate pair given as two code points joined into its character (a server
    that split an emoji across two stream deltas sends both halves so).

    Why: a model's reply is what it is -- the caller already has it -- and it must be
    logged and remembered, not refused (:func:`check_text`, and the stores' refusal of
    NUL, which PostgreSQL cannot hold) on a commit the caller never sees, whose error
    then failed the session's next, unrelated call.
    """
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    if lone_surrogate_at(text) is None:
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def _valid(value: Any) -> Any:
    """A JSON-like value with every string in it (keys too) made :func:`valid_text`."""
    if isinstance(value, str):
        return valid_text(value)
    if isinstance(value, Mapping):
        return {_valid(k): _valid(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_valid(v) for v in value)
    return value


def mended(message: Message) -> Message:
    """``message`` with every text :func:`check_text` reads made :func:`valid_text`; the
    same object when it has nothing to mend."""
    if all(valid_text(text) is text for _, text in _message_texts(message)):
        return message
    return replace(
        message,
        content=valid_text(message.content),
        name=_valid(message.name),
        tool_call_id=_valid(message.tool_call_id),
        tool_calls=tuple(
            replace(
                c,
                id=valid_text(c.id),
                name=valid_text(c.name),
                arguments=valid_text(c.arguments),
            )
            for c in message.tool_calls
        ),
        metadata=_valid(message.metadata),
    )


__all__ = ["check_text", "lone_surrogate_at", "mended", "valid_text"]
