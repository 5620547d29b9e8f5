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

A response that called the app's tools and ours at once is the app's: it sends that
response and its own results, and the loop puts ours beside them. Those of ours are read
back from the log too (:meth:`HiddenExchanges.results_owed`), for the same reason: kept
only by the process that ran them, after a restart the next whole conversation re-sent
said the app's results alone, and branched there (a review).

A ``create()`` cut between two of the loop's requests (the one carrying our results
failed) leaves the log ending with the request's messages and our exchanges, no answer:
:meth:`HiddenExchanges.unfinished` reads them back, so the retry of a restarted process
sends the failed request again, as the same process's retry does. An app that does not
retry but sends its next question after the unanswered one (``[q1, q2]``) gets those
exchanges put back before the new question (:func:`_walk`).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, NamedTuple

from ..cache import field_of
from ..cache.render import tool_object
from ..engine.conversation import TurnPrint, logged_blocks, said_digest
from ..engine.message_text import mended
from ..times import utc
from ..types import Message, Turn
from .tools import TOOL_NAMES, ToolOutcome

if TYPE_CHECKING:
    from ..engine.session import Session

#: Characters (as JSON) of the exchanges read from the log and made wire messages again
#: that a :class:`HiddenExchanges` keeps, the newest: an app that re-sends its whole
#: conversation sends every earlier one on each turn, and kept, each is read once.
#: Why by size, newest kept: a bound of 256 exchanges, least recently used first out,
#: met a request's walk in conversation order, so past 256 exchanges every one missed,
#: each call read each exchange again (a review: 270 store reads a request); bounded so,
#: the few exchanges a trimmed request sends are the newest, and a whole conversation
#: misses only its oldest, once past some thousands of them.
MAX_KEPT_CHARS = 2_000_000
#: What a kept exchange costs besides its messages (its key), in the same characters.
KEPT_ENTRY_CHARS = 200
#: How far from the conversation's end the first message of a request that does not
#: start where the conversation starts (an app's last N messages) is looked for: this
#: many turns a message sent, and :data:`LOOKBACK_SLACK` more. Why so many: each
#: message may follow an exchange of up to ``MAX_STEPS - 1`` tool calls and results.
LOOKBACK_PER_MESSAGE = 16
LOOKBACK_SLACK = 64

_Key = tuple[tuple[int, bytes], ...]
#: A response's call ids and our results for it, (call id, outcome) each.
Owed = tuple[frozenset[str], tuple[tuple[str, ToolOutcome], ...]]


class Unfinished(NamedTuple):
    """The exchanges of our tools a cut ``create()`` left at the log's end
    (:meth:`HiddenExchanges.unfinished`)."""

    #: Each exchange's tool-call message and results, in wire form, oldest first.
    messages: tuple[Any, ...]
    #: The exchanges: the requests of the loop that were answered.
    steps: int
    #: When the last of them was logged (epoch seconds).
    logged_at: float


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
        #: The exchanges made wire messages again, by their turns (seq and identity),
        #: each with its cost in characters: None for a run that is not one of ours; the
        #: newest kept, :data:`MAX_KEPT_CHARS` in all (:attr:`_kept_chars`).
        self._kept: dict[_Key, tuple[tuple[Any, ...] | None, int]] = {}
        self._kept_chars = 0
        self._lock = threading.Lock()

    def put_back(self, messages: list[Any], session: Session, *, tail: bool = True) -> list[Any]:
        """``messages`` (a request's, in wire form) with each of our exchanges the log
        holds between two of them put back in between; ``messages`` when none is.
        ``tail``: also those the log ends with, before the last message (:func:`_walk`)."""
        sent = self._said(messages)
        if len(sent) < 2:
            return messages  # one message alone is never matched as a branch
        found = _gaps(sent, session.conversation_prints(), tail)
        gaps: list[tuple[int, tuple[Any, ...]]] = []
        wires = self._wires([run for _, run in found], session)
        for (at, _), wire in zip(found, wires, strict=True):
            if wire is None:
                break  # not ours: the app left it out, and what follows is matched as before
            gaps.append((at, wire))
        if not gaps:
            return messages
        out = list(messages)
        for at, wire in reversed(gaps):
            out[at:at] = wire
        return out

    def results_owed(
        self,
        messages: Sequence[Any],
        session: Session,
        held: Collection[frozenset[str]],
        flush: Callable[[], None] | None = None,
    ) -> list[Owed]:
        """Our results, as the log holds them, for each response in ``messages`` (a
        request's, in wire form) that called the app's tools and ours at once and whose
        call ids are not ``held``: every call id of the response, and ours as the tool
        turns logged after it hold them (all, some, or none: the log answered it without
        them, and never will). Nothing for a response the log holds no answer to yet (our
        results went nowhere else). ``flush``: waits for the log to end with the last
        reply, when one is to be read."""
        calling = [(_mixed_calls(self.provider, m), m) for m in messages if isinstance(m, Mapping)]
        wanted = [(ids, m) for ids, m in calling if ids and ids not in held]
        if not wanted:
            return []
        if flush is not None:
            flush()
        conversation = session.conversation_prints()
        found = [
            (ids, run)
            for ids, message in wanted
            if (run := _answered(_Said(0, self._parse([message])[0]), conversation))
        ]
        if not found:
            return []
        logged = _logged(session, [p.seq for _, run in found for p in run])
        out = []
        for ids, run in found:
            turns = [logged.get(p.seq) for p in run]
            held_turns = [t for t in turns if t is not None]
            if len(held_turns) == len(run):
                results = _our_results(held_turns[0].message, held_turns[1:])
                if results is not None and {c.id for c in held_turns[0].message.tool_calls} == ids:
                    out.append((ids, results))
        return out

    def unfinished(self, messages: Sequence[Any], session: Session) -> Unfinished | None:
        """The exchanges of our tools the log ends with, when it holds ``messages`` (a
        request's, in wire form, our earlier exchanges put back) just before them and no
        answer after: a ``create()`` of these messages cut between two of its requests.
        None when the log does not end so.

        Why: the loop kept such a ``create()``'s progress in memory only. Retried by a
        restarted process (a 529 on the request carrying our results, then the process
        exited), it started over: the question was logged again after the exchange, and
        the model, asked anew after its own edit, made it again (a review: the block
        held the fact twice)."""
        conversation = session.conversation_prints()
        starts = _tail_exchanges(conversation)
        if not starts:
            return None  # the common case: the log ends with an answer (or a question)
        sent = self._said(messages)
        split = next((s for s in reversed(starts) if _ends_with(sent, conversation, s)), None)
        if split is None:
            return None
        bounds = [s for s in starts if s >= split]
        ends = [*bounds[1:], len(conversation)]
        runs = [conversation[a:b] for a, b in zip(bounds, ends, strict=True)]
        wires = self._wires(runs, session)
        if any(wire is None for wire in wires):
            return None  # not only ours: the app's exchange, its retry is the app's
        last = _logged(session, [conversation[-1].seq]).get(conversation[-1].seq)
        if last is None:
            return None
        messages_out = tuple(m for wire in wires if wire is not None for m in wire)
        return Unfinished(messages_out, len(runs), utc(last.created_at).timestamp())

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

    def _wires(
        self, runs: Sequence[Sequence[TurnPrint]], session: Session
    ) -> list[tuple[Any, ...] | None]:
        """The logged turns of each of ``runs`` as wire messages, or None for a run that
        is not an exchange of our tools (or that the log no longer holds as printed):
        those kept, and the others read from the log in one read of their span."""
        keys: list[_Key] = [tuple((p.seq, p.ident) for p in run) for run in runs]
        with self._lock:
            out = {k: self._kept[k][0] for k in keys if k in self._kept}
        missing = [(k, run) for k, run in zip(keys, runs, strict=True) if k not in out]
        if missing:
            logged = _logged(session, [p.seq for _, run in missing for p in run])
            for key, run in missing:
                turns = [logged.get(p.seq) for p in run]
                held = [t for t in turns if t is not None]
                out[key] = self._rebuilt(held, run) if len(held) == len(run) else None
            self._keep({k: out[k] for k, _ in missing})
        return [out[k] for k in keys]

    def _keep(self, wires: Mapping[_Key, tuple[Any, ...] | None]) -> None:
        """Keep ``wires``, then drop the oldest kept (by their first turn) while the kept
        are over :data:`MAX_KEPT_CHARS`."""
        with self._lock:
            for key, wire in wires.items():
                if key not in self._kept:
                    size = len(json.dumps(wire, default=str)) if wire is not None else 0
                    self._kept[key] = (wire, KEPT_ENTRY_CHARS + size)
                    self._kept_chars += KEPT_ENTRY_CHARS + size
            if self._kept_chars <= MAX_KEPT_CHARS:
                return
            for key in sorted(self._kept, key=lambda k: k[0][0]):
                self._kept_chars -= self._kept.pop(key)[1]
                if self._kept_chars <= MAX_KEPT_CHARS:
                    return

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
    sent: Sequence[_Said], conversation: Sequence[TurnPrint], tail: bool = True
) -> list[tuple[int, Sequence[TurnPrint]]]:
    """Where the conversation holds a run of tool turns between two messages sent one
    after the other: (the place of the second in the request, the run's prints), in
    order, as the request is read along the conversation from where it starts there.

    From its first turn (an app that sends it whole) when that reads every message sent
    but the last, as the session's matching does (``match_request``); else from each
    turn near its end that says the first message sent (an app that sends its last N
    messages), the walk that reads furthest, a tie going to the later start (as
    ``match_request``'s run further on), unless the first turn reads as far.

    Why every such turn: an app's window often opens on a message said again inside it
    ("Noted." after each core edit, "Continue."). Tried from the latest alone, the walk
    stopped after one message, nothing was put back, and the log branched at every
    memory edit (a review: nine branches in twenty turns). (``match_request``'s own
    search cannot be called for this: it does not step over the runs left out.)
    """
    if not conversation:
        return []
    whole = _walk(sent, conversation, 0, tail) if sent[0].says(conversation[0]) else (0, [])
    if whole[0] >= len(sent) - 1:
        return whole[1]
    best: tuple[int, list[tuple[int, Sequence[TurnPrint]]]] = (0, [])
    for start in _starts(sent, conversation):
        if len(conversation) - start < best[0]:
            break  # a walk reads a turn a message at least: none from here reads as far
        found = _walk(sent, conversation, start, tail)
        if found[0] >= best[0]:
            best = found
    return best[1] if best[0] > whole[0] else whole[1]


def _starts(sent: Sequence[_Said], conversation: Sequence[TurnPrint]) -> list[int]:
    """The turns after the first, near the conversation's end (:data:`LOOKBACK_PER_MESSAGE`),
    that say the request's first message: where an app's last N messages may start,
    earliest first."""
    back = max(1, len(conversation) - LOOKBACK_PER_MESSAGE * len(sent) - LOOKBACK_SLACK)
    return [j for j in range(back, len(conversation)) if sent[0].says(conversation[j])]


def _walk(
    sent: Sequence[_Said], conversation: Sequence[TurnPrint], j: int, tail: bool = True
) -> tuple[int, list[tuple[int, Sequence[TurnPrint]]]]:
    """(how many messages sent the conversation says from turn ``j`` on, stepping over
    runs of tool turns; those runs as :func:`_gaps` gives them).

    A run of tool exchanges that ends the log, reached when only the last message sent
    is left, is a run too, put back before that message (which the log does not hold
    yet). Why: a ``create()`` whose request carrying our results failed leaves the log
    ending with our exchange, no answer. An app that then asks its next question with
    the whole conversation (the unanswered one kept) sent the first question followed
    directly by the new one: read as a branch, the new one was logged as a redo and the
    exchange left the window, the model's own core edit with it (a review). Not with
    ``tail`` off (Anthropic with extended thinking, :meth:`ToolLoop._with_hidden`): the
    put-back call would be the request's last assistant turn, which the API wants sent
    with its thinking, and a window that ends with a question sends none."""
    gaps: list[tuple[int, Sequence[TurnPrint]]] = []
    k = 0
    while k < len(sent) and j < len(conversation):
        if sent[k].says(conversation[j]):
            k, j = k + 1, j + 1
            continue
        end = _run_end(sent[k], conversation, j) if k else None
        last = tail and k and k == len(sent) - 1
        if end is None and last and j in _tail_exchanges(conversation):
            end = len(conversation)  # the log ends with a run of them, the last message is new
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


def _tail_exchanges(conversation: Sequence[TurnPrint]) -> list[int]:
    """Where each tool exchange (an assistant turn, then tool turns) of the run of them
    that ends the conversation starts, earliest first ([] when it ends otherwise)."""
    starts: list[int] = []
    end = len(conversation)
    while end > 0 and conversation[end - 1].role == "tool":
        at = end - 1
        while at > 0 and conversation[at - 1].role == "tool":
            at -= 1
        if at == 0 or conversation[at - 1].role != "assistant":
            break
        end = at - 1
        starts.insert(0, end)
    return starts


def _ends_with(sent: Sequence[_Said], conversation: Sequence[TurnPrint], end: int) -> bool:
    """Whether the turns just before turn ``end`` say the messages ``sent``, in order (a
    request of the whole conversation so far, or of its last N messages)."""
    at = end - len(sent)
    return bool(sent) and at >= 0 and all(s.says(conversation[at + i]) for i, s in enumerate(sent))


def _mixed_calls(provider: str, message: Mapping[str, Any]) -> frozenset[str]:
    """The call ids of an assistant wire message that calls our tools and others at
    once (none for any other message)."""
    if message.get("role") != "assistant":
        return frozenset()
    if provider == "anthropic":
        content = message.get("content")
        blocks = content if isinstance(content, list) else []
        calls = [
            (field_of(b, "id"), field_of(b, "name"))
            for b in blocks
            if field_of(b, "type") == "tool_use"  # a dict, or the SDK's block as returned
        ]
    else:
        listed = message.get("tool_calls")
        calls = [
            (c.get("id"), f.get("name") if isinstance(f := c.get("function"), Mapping) else None)
            for c in (listed if isinstance(listed, list) else [])
            if isinstance(c, Mapping)
        ]
    ours = {name in TOOL_NAMES for _, name in calls}
    return frozenset(str(cid) for cid, _ in calls) if ours == {True, False} else frozenset()


def _answered(said: _Said, conversation: Sequence[TurnPrint]) -> Sequence[TurnPrint]:
    """The log's latest assistant turn that says ``said`` and the tool turns after it
    (() when there is none, or nothing answers it yet)."""
    for x in range(len(conversation) - 2, -1, -1):
        if conversation[x].role == "assistant" and said.says(conversation[x]):
            end = x + 1
            while end < len(conversation) and conversation[end].role == "tool":
                end += 1
            return conversation[x:end] if end > x + 1 else ()
    return ()


def _our_results(
    calling: Message, answers: Sequence[Turn]
) -> tuple[tuple[str, ToolOutcome], ...] | None:
    """Our results for ``calling``'s calls of our tools, in its order, as the logged
    tool turns ``answers`` hold them (a turn per result, or one of ``tool_result``
    blocks); None when one is not text."""
    ours = {c.id: c.name for c in calling.tool_calls if c.name in TOOL_NAMES}
    found: dict[str, ToolOutcome] = {}
    for turn in answers:
        message = turn.message
        blocks = logged_blocks(message) or [
            {"tool_use_id": message.tool_call_id, "content": message.content}
        ]
        for block in blocks:
            cid = block.get("tool_use_id")
            if cid in ours:
                text = block.get("content")
                if not isinstance(text, str):
                    return None
                found[cid] = ToolOutcome(ours[cid], text, bool(block.get("is_error")))
    return tuple((cid, found[cid]) for cid in ours if cid in found)


def _logged(session: Session, seqs: Sequence[int]) -> dict[int, Turn]:
    """The logged turns numbered ``seqs`` (ascending) that the log still holds (an
    erasure removes some), by seq: one read of their span."""
    found = session.store.turns(session.scope, after_seq=seqs[0] - 1, limit=seqs[-1] - seqs[0] + 1)
    wanted = set(seqs)
    return {t.seq: t for t in found if t.seq in wanted}


def _calls_wire(provider: str, message: Message) -> dict[str, Any] | None:
    """A logged assistant turn of tool calls as the provider's wire message (None when a
    call's arguments are not a JSON object: a cut stream's fragment, never run).

    An Anthropic input holding a lone surrogate is given as the log holds it, so the
    wrapper reads the message as that logged turn; its rendering of the turn sends it
    mended (:func:`contextos.cache.render.tool_input`). Why: left out, the exchange
    was not put back, and a re-sent conversation branched there (a review)."""
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
    inputs = [tool_object(c.arguments) for c in message.tool_calls]  # the one parsing rule
    if any(value is None for value in inputs):
        return None
    uses = [
        {"type": "tool_use", "id": c.id, "name": c.name, "input": value}
        for c, value in zip(message.tool_calls, inputs, strict=True)
    ]
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


__all__ = ["KEPT_ENTRY_CHARS", "MAX_KEPT_CHARS", "HiddenExchanges", "Owed", "Unfinished"]
