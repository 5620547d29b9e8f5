"""The tool loop's own exchanges, put back where a re-sent conversation leaves them out.

``ToolLoop.create`` hands the app only the model's last response: the memory-tool calls
it ran before it, and their results, are logged in the session between the question and
that response, and the app never sees them. An app that sends its whole conversation
each turn (or its last N messages), as both SDKs' guides show, then sends the question
followed directly by the answer. Matched to the log, that read as a regenerate of the
tool-call turn: a branch, which cut the exchange out of the conversation (the model lost
its core-memory edit, which the pinned snapshot does not show before the next compaction
point) and logged the answer a second time (a review: three branches in eight turns).

:class:`HiddenExchanges` puts each such exchange back before the response it led to, as
the log holds it, so the request says what the log says. It reads them from the log,
not from what this process ran: a restarted process, or a client made again, finds them
too. (Kept in memory, a bound or a restart lost the older ones, and the next whole
conversation re-sent branched at the first of them, cutting every turn after it.)

Only an exchange of our tools is put back: a run of assistant turns whose every call is
one of ours, each followed by its results, between two messages the app sent one after
the other. An app that leaves out its own tool exchanges branches as before.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ..engine.conversation import TurnPrint, logged_blocks, said_digest
from ..engine.message_text import mended
from ..types import Message, Turn
from .tools import TOOL_NAMES

if TYPE_CHECKING:
    from ..engine.session import Session

#: Exchanges read from the log and made wire messages again that a
#: :class:`HiddenExchanges` keeps (an app that re-sends its whole conversation sends
#: every earlier one on each turn: kept, each is read once).
MAX_KEPT = 256
#: How far from the conversation's end the first message of a request that does not
#: start where the conversation starts (an app's last N messages) is looked for: this
#: many turns a message sent, and :data:`LOOKBACK_SLACK` more. Why so many: each
#: message may follow an exchange of up to ``MAX_STEPS - 1`` tool calls and results.
LOOKBACK_PER_MESSAGE = 16
LOOKBACK_SLACK = 64

_Key = tuple[tuple[int, bytes], ...]


class _Said:
    """A message of a request as the log's matching compares it (``said_digest``, and
    that of its text made valid, as a logged turn holds it), at its place in the list."""

    __slots__ = ("at", "digests")

    def __init__(self, at: int, message: Message) -> None:
        self.at = at
        self.digests = {said_digest(message)}
        bare = replace(message, metadata={})
        valid = mended(bare)
        if valid is not bare:  # a lone surrogate: the log holds the text made valid
            self.digests.add(said_digest(valid))

    def says(self, turn: TurnPrint) -> bool:
        return turn.said in self.digests


class HiddenExchanges:
    """Puts the loop's own tool exchanges back into the requests of one provider's wire
    format ("anthropic"/"openai"); see the module. Thread-safe."""

    def __init__(self, provider: str) -> None:
        self.provider = provider
        self._parse = _parser(provider)
        #: The exchanges made wire messages again, by their turns (seq and identity):
        #: None for a run that is not one of ours; the newest :data:`MAX_KEPT` kept.
        self._kept: OrderedDict[_Key, tuple[Any, ...] | None] = OrderedDict()
        self._lock = threading.Lock()

    def put_back(self, messages: list[Any], session: Session) -> list[Any]:
        """``messages`` (a request's, in wire form) with each of our exchanges the log
        holds between two of them put back in between; ``messages`` when none is."""
        sent = self._said(messages)
        if len(sent) < 2:
            return messages  # one message alone is never matched as a branch
        conversation = session.conversation_prints()
        gaps: list[tuple[int, tuple[Any, ...]]] = []
        for at, run in _gaps(sent, conversation):
            wire = self._wire(run, session)
            if wire is None:
                break  # not ours: the app left it out, and what follows is matched as before
            gaps.append((at, wire))
        if not gaps:
            return messages
        out = list(messages)
        for at, wire in reversed(gaps):
            out[at:at] = wire
        return out

    def _said(self, messages: Sequence[Any]) -> list[_Said]:
        """The messages as the wrapper reads them, each at the place of its first wire
        message ([] when the list is not all messages: the wrapper says what is wrong)."""
        if not all(isinstance(m, Mapping) for m in messages):
            return []
        if self.provider == "anthropic":  # consecutive assistant messages are one turn
            starts = [
                i
                for i, m in enumerate(messages)
                if not (i and m.get("role") == "assistant" == messages[i - 1].get("role"))
            ]
        else:  # the leading system and developer messages are the system prompt
            head = 0
            while head < len(messages) and messages[head].get("role") in ("system", "developer"):
                head += 1
            starts = list(range(head, len(messages)))
        parsed = self._parse(messages)
        if len(parsed) != len(starts):
            return []
        return [_Said(at, m) for at, m in zip(starts, parsed, strict=True)]

    def _wire(self, run: Sequence[TurnPrint], session: Session) -> tuple[Any, ...] | None:
        """The logged turns of ``run`` as wire messages, or None when they are not an
        exchange of our tools (or the log no longer holds them as printed)."""
        key: _Key = tuple((p.seq, p.ident) for p in run)
        with self._lock:
            if key in self._kept:
                self._kept.move_to_end(key)
                return self._kept[key]
        turns = _logged(session, [p.seq for p in run])
        wire = None if turns is None else self._rebuilt(turns, run)
        with self._lock:
            self._kept[key] = wire
            while len(self._kept) > MAX_KEPT:
                self._kept.popitem(last=False)
        return wire

    def _rebuilt(self, turns: Sequence[Turn], run: Sequence[TurnPrint]) -> tuple[Any, ...] | None:
        """``turns`` (an exchange: calls of our tools, their results) in wire form, each
        read back as saying what its logged turn says; else None."""
        out = []
        for turn, printed in zip(turns, run, strict=True):
            message = turn.message
            if message.role == "assistant":
                names = {c.name for c in message.tool_calls}
                if not names or not names <= TOOL_NAMES:
                    return None
                wire = _calls_wire(self.provider, message)
            elif message.role == "tool":
                wire = _results_wire(self.provider, message)
            else:
                return None
            if wire is None or not _Said(0, self._parse([wire])[0]).says(printed):
                return None
            out.append(wire)
        return tuple(out)


def _parser(provider: str) -> Callable[[Sequence[Any]], Sequence[Message]]:
    """The wrapper's reading of a request's messages in ``provider``'s wire format."""
    if provider == "anthropic":
        from ..providers.anthropic import parse
    else:
        from ..providers.openai import parse
    return lambda messages: parse({"messages": list(messages)}).messages


def _gaps(
    sent: Sequence[_Said], conversation: Sequence[TurnPrint]
) -> list[tuple[int, Sequence[TurnPrint]]]:
    """Where the conversation holds a run of tool turns between two messages sent one
    after the other: (the place of the second in the request, the run's prints), in
    order, as the request is read along the conversation from where it starts there (at
    the conversation's start, or near its end), the one that reads further."""
    best: tuple[int, list[tuple[int, Sequence[TurnPrint]]]] = (0, [])
    for start in _starts(sent, conversation):
        found = _walk(sent, conversation, start)
        if found[0] > best[0]:
            best = found
    return best[1]


def _starts(sent: Sequence[_Said], conversation: Sequence[TurnPrint]) -> list[int]:
    """Where in the conversation the request's first message may be: its first turn
    (an app that sends it whole), and the last turn near its end that says it (an app
    that sends its last N messages)."""
    if not conversation:
        return []
    out = [0] if sent[0].says(conversation[0]) else []
    back = len(conversation) - LOOKBACK_PER_MESSAGE * len(sent) - LOOKBACK_SLACK
    for j in range(len(conversation) - 1, max(back, 1) - 1, -1):
        if sent[0].says(conversation[j]):
            return [*out, j]
    return out


def _walk(
    sent: Sequence[_Said], conversation: Sequence[TurnPrint], j: int
) -> tuple[int, list[tuple[int, Sequence[TurnPrint]]]]:
    """(how many messages sent the conversation says from turn ``j`` on, stepping over
    runs of tool turns; those runs as :func:`_gaps` gives them)."""
    gaps: list[tuple[int, Sequence[TurnPrint]]] = []
    k = 0
    while k < len(sent) and j < len(conversation):
        if sent[k].says(conversation[j]):
            k, j = k + 1, j + 1
            continue
        end = _run_end(sent[k], conversation, j) if k else None
        if end is None:
            break  # the request parts from the conversation here: a branch, or new turns
        gaps.append((sent[k].at, conversation[j:end]))
        j = end
    return k, gaps


def _run_end(said: _Said, conversation: Sequence[TurnPrint], j: int) -> int | None:
    """The end of the run of tool exchanges (an assistant turn, then tool turns, again
    and again) from turn ``j``, at the first turn after one that says ``said``; None
    when there is none."""
    x = j
    while x + 1 < len(conversation) and conversation[x].role == "assistant":
        if conversation[x + 1].role != "tool":
            return None
        x += 1
        while x < len(conversation) and conversation[x].role == "tool":
            x += 1
        if x < len(conversation) and said.says(conversation[x]):
            return x
    return None


def _logged(session: Session, seqs: Sequence[int]) -> list[Turn] | None:
    """The logged turns numbered ``seqs`` (one read of their span), or None when the
    log no longer holds one of them (an erasure)."""
    found = session.store.turns(session.scope, after_seq=seqs[0] - 1, limit=seqs[-1] - seqs[0] + 1)
    by_seq = {t.seq: t for t in found}
    turns = [by_seq.get(s) for s in seqs]
    return None if any(t is None for t in turns) else [t for t in turns if t is not None]


def _calls_wire(provider: str, message: Message) -> dict[str, Any] | None:
    """A logged assistant turn of tool calls as the provider's wire message (None when a
    call's arguments are not JSON: a cut stream's fragment, never run)."""
    if provider == "openai":
        return {
            "role": "assistant",
            "content": message.content or None,
            "tool_calls": [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments},
                }
                for c in message.tool_calls
            ],
        }
    try:
        uses = [
            {"type": "tool_use", "id": c.id, "name": c.name, "input": json.loads(c.arguments)}
            for c in message.tool_calls
        ]
    except ValueError:
        return None
    text = [{"type": "text", "text": message.content}] if message.content else []
    return {"role": "assistant", "content": [*text, *uses]}


def _results_wire(provider: str, message: Message) -> dict[str, Any]:
    """A logged tool-result turn as the provider's wire message."""
    if provider == "openai":
        return {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.content}
    blocks = logged_blocks(message) or [
        {"type": "tool_result", "tool_use_id": message.tool_call_id, "content": message.content}
    ]
    return {"role": "user", "content": [dict(b) for b in blocks]}


__all__ = ["MAX_KEPT", "HiddenExchanges"]
