"""The conversation: what a logged turn is for matching a request and for display.

A session's log keeps every turn ever logged, and is never rewritten. The conversation
is the part of it the model sees and the user goes on from: a reply whose stream was cut
is left out (:data:`COMPLETE_KEY`), and a turn that takes the place of an earlier one (a
regenerate, an edited message: :data:`REDO_KEY`) cuts that turn and those after it
(:func:`conversation`). Matching a request to the log compares what each message
:func:`said`, by a digest, against a :class:`TurnPrint`: a ~150-byte fingerprint of a
logged turn, so a long-lived Session need not hold old turns whole.

Separate from :mod:`.session` because none of it reads or writes a store: these are
plain functions and values over turns, which the Session, a wrapped call's matching
(:mod:`.context`), the CLI and the inspector share.
"""

from __future__ import annotations

import hashlib
import json
import sys
from bisect import bisect_left
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any, TypeVar, overload

from contextos.engine.window import TOOL_RESULTS_KEY
from contextos.llm.media_tokens import results_digest
from contextos.types import Message, ToolCall, Turn

#: Reply metadata key: False when the reply's stream was cut or abandoned (absent when
#: whole): the log keeps it as what the user saw, out of the conversation.
COMPLETE_KEY = "complete"
#: Turn metadata key: the seq of the turn this one takes the place of (the first new
#: message of a request that branches off the conversation: a regenerate, an edited
#: message); that turn and those after it leave the conversation.
REDO_KEY = "redo_of"


def answered_ids(message: Message) -> set[str]:
    """The call ids a tool-result turn answers: its own and, for an Anthropic turn that
    answered parallel calls, those of every ``tool_result`` block it was logged with."""
    ids = {message.tool_call_id} if message.tool_call_id else set()
    kept = message.metadata.get(TOOL_RESULTS_KEY)
    blocks = kept.get("blocks") if isinstance(kept, Mapping) else None
    for block in blocks if isinstance(blocks, list) else ():
        if isinstance(block, Mapping) and block.get("type") == "tool_result":
            ids.add(str(block.get("tool_use_id")))
    return ids


def in_conversation(message: Message) -> bool:
    """False for a logged reply whose stream was cut or abandoned (``"complete": False``
    in its metadata, set by a wrapped call's commit): the log keeps it as what the
    user saw, but it is not part of the conversation later calls match and send."""
    return message.metadata.get(COMPLETE_KEY) is not False


def redo_of(message: Message) -> int | None:
    """The seq of the turn ``message`` takes the place of (:data:`REDO_KEY`), if any."""
    redo = message.metadata.get(REDO_KEY)
    return redo if isinstance(redo, int) and not isinstance(redo, bool) else None


def said(message: Message) -> tuple[Any, ...]:
    """What a message says, as a request is matched to the log: role, text, tool call
    id and tool calls, their arguments as parsed JSON (:func:`_call_said`; not its name
    or metadata)."""
    calls = tuple(_call_said(c) for c in message.tool_calls)
    return (message.role, message.content, message.tool_call_id, calls)


def _call_said(call: ToolCall) -> tuple[str, str, str]:
    """A tool call as :func:`said` compares it: its arguments as canonical JSON (keys
    sorted), as given when they are not JSON (a cut stream's fragment).

    Why: the OpenAI adapter logs arguments as the model wrote them (``{"city":"Lisbon"}``),
    the Anthropic one as canonical JSON (``{"city": "Lisbon"}``), so an app that sent its
    conversation, converted faithfully, to the other provider parted from the log at the
    first tool call: a branch, which cut every later turn and deleted their memories
    ("I am allergic to peanuts"; a review)."""
    try:
        arguments = json.dumps(json.loads(call.arguments), sort_keys=True)
    except (ValueError, RecursionError):
        arguments = call.arguments
    return (call.id, call.name, arguments)


def logged_blocks(message: Message) -> list[Mapping[str, Any]] | None:
    """The content blocks a tool-result turn was logged with (:data:`TOOL_RESULTS_KEY`:
    Anthropic's form, one user turn of a ``tool_result`` block per call), while they are
    those of its text (a compaction stub is not); else None."""
    kept = message.metadata.get(TOOL_RESULTS_KEY)
    if not isinstance(kept, Mapping) or kept.get("of") != results_digest(message.content):
        return None
    blocks = kept.get("blocks")
    if not isinstance(blocks, list) or not blocks:
        return None
    return [b for b in blocks if isinstance(b, Mapping)]


#: What a result of only images or documents reads as (as the Anthropic adapter logs it).
_RESULT_PLACEHOLDERS = {"image": "[image]", "document": "[document]"}


def result_text(content: Any) -> str:
    """A ``tool_result`` block's content as one tool message's text: a string as it is;
    its text blocks one per line, else placeholders for its images and documents."""
    if isinstance(content, str):
        return content
    blocks = [b for b in content if isinstance(b, Mapping)] if isinstance(content, list) else []
    text = "\n".join(str(b.get("text") or "") for b in blocks if b.get("type") == "text")
    if text.strip():
        return text
    others = [_RESULT_PLACEHOLDERS.get(str(b.get("type")), "") for b in blocks]
    return " ".join(o for o in others if o) or text


def tool_results(message: Message) -> tuple[tuple[str, str], ...]:
    """(call id, text) of each tool result a tool-result turn holds, in order: one for a
    turn logged per result (OpenAI's form), one per ``tool_result`` block of a turn
    logged with its blocks (:func:`logged_blocks`: Anthropic's form, parallel results as
    one turn whose text is theirs joined); () for any other turn, and for a turn whose
    blocks hold more than results (text beside them): only that same turn says it.

    Why: the two adapters log one tool exchange in two forms, and one log may hold both
    (an app that falls back to the other provider). Matching a request to the log
    compares the results of a run of tool turns (``contextos.engine.context``), and the
    OpenAI renderer sends one tool message per result, as Chat Completions requires."""
    if message.role != "tool":
        return ()
    blocks = logged_blocks(message)
    if blocks is None:
        return ((message.tool_call_id or "", message.content),)
    if any(b.get("type") != "tool_result" for b in blocks):
        return ()
    return tuple((str(b.get("tool_use_id") or ""), result_text(b.get("content"))) for b in blocks)


def results_said(message: Message) -> tuple[bytes, ...]:
    """A 16-byte digest of each of :func:`tool_results` (() for a turn of no results)."""
    return tuple(
        hashlib.blake2b(repr(r).encode("utf-8", "surrogatepass"), digest_size=16).digest()
        for r in tool_results(message)
    )


def said_digest(message: Message) -> bytes:
    """A 16-byte digest of :func:`said`: two messages say the same thing exactly when
    their digests are equal (``repr`` escapes lone surrogates, so any text hashes)."""
    text = repr(said(message)).encode("utf-8", "surrogatepass")
    return hashlib.blake2b(text, digest_size=16).digest()


@dataclass(frozen=True, slots=True)
class TurnPrint:
    """A logged turn's fingerprint: what matching a request to the log and telling the
    conversation apart need (:func:`conversation`), in ~150 bytes whatever its size
    (and 16 more a result for a tool-result turn: ``results``).

    Why: a long-lived wrapped client matched each request against every turn it had
    ever read, and so held every turn whole (about 2.3 KB each, most of them long out
    of the window). ``said`` is :func:`said_digest`; ``ident`` a digest of what makes
    it this logged turn (its time, role and text: ``same_turn``'s fields with ``seq``).
    """

    seq: int
    role: str
    said: bytes
    ident: bytes
    complete: bool = True
    redo_of: int | None = None
    #: :func:`results_said` of a tool-result turn (() for any other).
    results: tuple[bytes, ...] = ()


def _seq(turn: Turn | TurnPrint) -> int:
    return turn.seq


def turn_print(turn: Turn) -> TurnPrint:
    """The :class:`TurnPrint` of a logged turn."""
    message = turn.message
    stamp = repr((turn.created_at.isoformat(), message.role, message.content))
    ident = hashlib.blake2b(stamp.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return TurnPrint(
        turn.seq,
        sys.intern(message.role),
        said_digest(message),
        ident,
        in_conversation(message),
        redo_of(message),
        results_said(message),
    )


def _extend_conversation(said: list[TurnPrint], prints: Sequence[TurnPrint]) -> list[TurnPrint]:
    """:func:`conversation` of the prints ``said`` is the conversation of, then ``prints``:
    ``said`` appended to, or, where a redo cuts it, a new list (so a
    :class:`ConversationView` of ``said`` never changes). :func:`conversation` is a
    fold: the conversation of more prints is that of the first ones, carried on."""
    for p in prints:
        if not p.complete:
            continue
        if p.redo_of is not None and said and said[-1].seq >= p.redo_of:
            said = said[: bisect_left(said, p.redo_of, key=_seq)]
        said.append(p)
    return said


class ConversationView(Sequence[TurnPrint]):
    """The first ``size`` prints of a list only ever appended to: an unchanging view of
    a conversation's prints that copies none
    (:meth:`~contextos.engine.session.Session.conversation_prints`). Indexing and slicing
    cost what they return, not the conversation's length."""

    __slots__ = ("_items", "_size")

    def __init__(self, items: list[TurnPrint], size: int) -> None:
        self._items, self._size = items, size

    def __len__(self) -> int:
        return self._size

    @overload
    def __getitem__(self, index: int) -> TurnPrint: ...

    @overload
    def __getitem__(self, index: slice) -> list[TurnPrint]: ...

    def __getitem__(self, index: int | slice) -> TurnPrint | list[TurnPrint]:
        if isinstance(index, slice):
            return [self._items[i] for i in range(*index.indices(self._size))]
        i = index + self._size if index < 0 else index
        if not 0 <= i < self._size:
            raise IndexError("conversation index out of range")
        return self._items[i]

    def __iter__(self) -> Iterator[TurnPrint]:
        return islice(self._items, self._size)


def _standing(turn: Turn | TurnPrint) -> tuple[bool, int | None]:
    """(in the conversation, the seq it takes the place of) for a turn or its print."""
    if isinstance(turn, TurnPrint):
        return turn.complete, turn.redo_of
    return in_conversation(turn.message), redo_of(turn.message)


T = TypeVar("T", Turn, TurnPrint)


def conversation(turns: Sequence[T]) -> list[T]:
    """The logged turns (or their prints) that make up the conversation, oldest first:
    those :func:`in_conversation`, where a turn marked :data:`REDO_KEY` takes the place
    of the turn it names and every one after it.

    Why: a regenerate re-sends a request the log holds answered, and the user then goes
    on from the new answer; an edited message or a dropped question parts from the log
    the same way (``contextos.engine.context.match_request``). The model must see the
    newest branch, not both, and compaction must count and summarize what the model
    sees. The log is never rewritten, so the old turns stay there (for audit) and are
    only left out here. Given the turns from some seq on, this is the conversation of
    the whole log from that seq on (a turn leaves by its seq).
    """
    out: list[T] = []
    for turn in turns:
        complete, redo = _standing(turn)
        if not complete:
            continue
        if redo is not None:
            while out and out[-1].seq >= redo:
                out.pop()
        out.append(turn)
    return out


__all__ = [
    "COMPLETE_KEY",
    "REDO_KEY",
    "ConversationView",
    "TurnPrint",
    "answered_ids",
    "conversation",
    "in_conversation",
    "logged_blocks",
    "redo_of",
    "result_text",
    "results_said",
    "said",
    "said_digest",
    "tool_results",
    "turn_print",
]
