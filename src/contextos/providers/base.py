"""The Provider seam: what a wrapper needs from each LLM vendor's wire format.

A provider adapter does four things for :func:`contextos.providers.wrap`:
parse the SDK call's keyword arguments into a provider-neutral
:class:`ChatRequest`, render an assembled :class:`~contextos.engine.window.Window`
back into that SDK's keyword arguments (with cache breakpoints where the
vendor has them), and read the :class:`~contextos.types.Usage` and reply out
of a response or a stream. The adapters are pure; only the SDK client they
are handed touches the network.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from contextos.engine.window import Window
from contextos.llm.models import ModelInfo

from ..cache.accounting import field_of, read_share
from ..types import Message, Usage

#: Metadata key under which a caller's original wire message rides along a
#: neutral Message, so the adapter can send the caller's own bytes back.
WIRE_KEY = "wire"
#: Metadata key, True on a message that had no text, only parts such as images: its
#: content is placeholders (``[image]``) so the log holds no empty turn, but it is no
#: text to search memory with or to remember.
PLACEHOLDER_KEY = "placeholder"
#: The words an adapter writes for parts with no text (each adapter's ``_PLACEHOLDERS``
#: draws from these): a placeholder turn's whole content.
PLACEHOLDER_WORDS = frozenset({"[image]", "[document]", "[audio]", "[file]"})


def is_placeholder(message: Message) -> bool:
    """Whether ``message`` is the adapters' stand-in for parts with no text: marked
    (:data:`PLACEHOLDER_KEY` set to True) and its content nothing but placeholder words
    (:data:`PLACEHOLDER_WORDS`).

    Why both: turn metadata is the app's own over HTTP and ``Session.add``, so the mark
    alone can be sent from outside. An app's key of the same name (a chat UI's
    ``"placeholder": "Type a message..."``, or ``true``) made offload skip a turn of real
    text, which then left every window and every search, and made a wrapped loop's
    question search memory for nothing (reviews s57). Whoever sets the mark, it now
    counts only on a turn that says nothing but ``[image]`` and the like, which is what
    the mark means: no app's text is lost to it, and the app keeps its own key."""
    words = message.content.split()
    return (
        message.metadata.get(PLACEHOLDER_KEY) is True
        and bool(words)
        and set(words) <= PLACEHOLDER_WORDS
    )


def own_content(question: Message | None, provider: str) -> list[dict[str, Any]] | None:
    """The caller's own content parts for the question (images, documents), as given in
    ``provider``'s wire format (a copy), or None when it came as plain text or from the
    other provider."""
    wire = question.metadata.get(WIRE_KEY) if question is not None else None
    if wire is None or wire[0] != provider:
        return None
    content = wire[1].get("content")
    return copy.deepcopy(list(content)) if isinstance(content, list) else None


def as_wire(item: Any) -> Any:
    """``item`` as plain JSON when it is an SDK (pydantic) model, as the SDK would send it
    (API field names, ``None`` fields left out); anything else as given.

    Why: both SDKs accept their own response models where a request takes a dict
    (OpenAI's ``messages.append(completion.choices[0].message)``), and the parsers
    read dicts.
    """
    if isinstance(item, Mapping):
        return item
    dump = getattr(item, "model_dump", None)
    if dump is None:
        return item
    return dump(mode="json", by_alias=True, exclude_none=True)


@dataclass(frozen=True)
class ChatRequest:
    """A chat call in provider-neutral form, as the caller made it.

    ``messages`` mirror the caller's messages (text only, the original wire
    dict kept in ``metadata["wire"]``); ``system`` is the caller's system
    prompt as text parts; ``tools`` the caller's tool schemas in neutral form
    (name, description, input_schema or parameters) -- empty when any tool
    cannot be expressed that way (server tools, strict mode), in which case
    the caller's tools travel verbatim outside the window. ``server_edits``
    are the context-management edit types the call asks the provider's server
    to apply itself (Anthropic's ``context_management.edits``, e.g.
    ``clear_tool_uses_20250919``, ``compact_20260112``), so contextos does not
    do the same work client-side.
    """

    model: str
    system: tuple[str, ...] = ()
    messages: tuple[Message, ...] = ()
    tools: tuple[Mapping[str, Any], ...] = ()
    stream: bool = False
    server_edits: tuple[str, ...] = ()

    def last_user_text(self) -> str:
        """The text of the last user message ('' when there is none)."""
        for message in reversed(self.messages):
            if message.role == "user" and message.content.strip() and not is_placeholder(message):
                return message.content
        return ""


@dataclass(frozen=True)
class Prepared:
    """The assembly step's output: the window, the model it is for, what is new in it.

    ``question`` is the caller's final user message (with its wire form), sent
    last; ``logged`` the messages this call appended to the session log before
    sending, as the log holds them: the turns the log did not have yet and the
    question (none on a retry, or without a session). The wrapper hands them on
    as :attr:`CallRecord.new_messages` (:attr:`new_messages`).
    """

    window: Window
    model: ModelInfo
    question: Message | None = None
    logged: tuple[Message, ...] = ()
    #: The request said a logged turn again (a regenerate, an HTTP retry after a gateway
    #: timeout): the new reply is logged (after the turn, marked ``redo_of``), the
    #: question is not remembered again.
    resent: bool = False
    #: The seq of each turn of ``logged``, in its order (empty without a session).
    logged_seqs: tuple[int, ...] = ()

    @property
    def new_messages(self) -> tuple[Message, ...]:
        """``logged`` as the wrapper reports it (:attr:`CallRecord.new_messages`): without
        the hold its commit owes to memory (``engine/owed.py``), the log's bookkeeping,
        not the app's (a review: copied from ``new_messages`` into another session, a
        message took the hold along, and that session's next call "recovered" it)."""
        from contextos.engine.owed import unmarked

        return tuple(unmarked(m) for m in self.logged)


@dataclass(frozen=True)
class CallRecord:
    """One wrapped call, as recorded: what it cost and what came back.

    ``prefix_hash`` fingerprints the request bytes up to the last cache
    breakpoint, markers included (empty when the call had none): equal hashes
    on consecutive calls mean nothing up to it changed. It is no miss counter: in
    a conversation the last breakpoint moves with the newest turns, so the hash
    changes on nearly every call while most of the prefix is still read from the
    cache (a review: 140 distinct hashes in 140 calls, 0.90 of the prompt tokens
    read). The cache's own numbers are in ``usage`` (``cache_read_input_tokens``,
    ``cached_tokens``).
    ``extra`` holds what the provider's server did to the context on this call
    (Anthropic: ``applied_edits``, ``compaction_usage``, ``stop_reason``; OpenAI:
    ``cache_write_ttl``), as each adapter's ``extra`` reports it.
    ``new_messages`` are the messages this call appended to the session log
    before sending (``Prepared.logged``, without the hold its commit owes to memory:
    ``owed_by`` in the log's metadata); the reply, logged after it, is
    ``reply``. Call by call, ``new_messages`` then ``reply`` are the log.
    """

    provider: str
    model: str
    usage: Usage
    reply: Message | None
    stream: bool
    seconds: float
    prefix_hash: str = ""
    new_messages: tuple[Message, ...] = ()
    request_id: str | None = None
    complete: bool = True
    extra: Mapping[str, Any] = field(default_factory=dict)


class StreamAccumulator(Protocol):
    """Collects the reply text and usage from a provider's stream events."""

    def feed(self, event: Any) -> None:
        """Take one SDK stream event."""
        ...

    def usage(self) -> Usage:
        """Usage as known so far (complete once the stream ended)."""
        ...

    def reply(self) -> Message:
        """The assistant's reply as streamed so far."""
        ...

    @property
    def finished(self) -> bool:
        """True once the protocol's end of the reply arrived (the stream was whole)."""
        ...


class ProviderAdapter(Protocol):
    """Parses, renders and reads one vendor's chat wire format (pure)."""

    @property
    def name(self) -> str:
        """The provider's name in call records ("anthropic", "openai")."""
        ...

    def parse(self, kwargs: Mapping[str, Any]) -> ChatRequest:
        """The neutral request of an SDK call's keyword arguments."""
        ...

    def render(self, prepared: Prepared, kwargs: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
        """SDK keyword arguments for the prepared window (the caller's other arguments
        kept), and the fingerprint of the cached prefix."""
        ...

    def usage(self, response: Any) -> Usage:
        """Usage of a complete (non-streamed) response."""
        ...

    def reply(self, response: Any) -> Message:
        """The assistant message of a complete response."""
        ...

    def accumulator(self) -> StreamAccumulator:
        """A fresh accumulator for one stream."""
        ...


@dataclass(frozen=True)
class WireAdapter:
    """The :class:`ProviderAdapter` of one wire format, made of that format's pure functions.

    Why one class: the Messages, Chat Completions and Responses adapters differ only in
    which parser, renderer and readers they call, so each provider module names its
    functions here instead of writing the same delegating methods again.
    """

    name: str
    parse: Callable[[Mapping[str, Any]], ChatRequest]
    render: Callable[[Prepared, Mapping[str, Any]], tuple[dict[str, Any], str]]
    #: the wire ``usage`` object -> neutral usage
    read_usage: Callable[[Any], Usage]
    reply: Callable[[Any], Message]
    #: a complete response -> what the server did beyond the reply, for the call record
    extra: Callable[[Any], dict[str, Any]]
    accumulator: Callable[[], StreamAccumulator]

    def usage(self, response: Any) -> Usage:
        """Usage of a complete (non-streamed) response: its ``usage`` field, read."""
        return self.read_usage(field_of(response, "usage"))


@dataclass(frozen=True)
class EditReport:
    """What server-side context editing did over some calls, and the cache around it.

    Clearing content changes the request from the first cleared block on, so
    the cached prefix past that point is lost: a call that applied an edit
    reads less from the cache and writes more. ``read_share_with_edits`` and
    ``read_share_without`` put the two kinds of call side by side.
    """

    calls: int
    calls_with_edits: int
    cleared_input_tokens: int
    cleared_tool_uses: int
    cleared_thinking_turns: int
    compactions: int
    compaction_input_tokens: int
    compaction_output_tokens: int
    input_with_edits: int
    cache_read_with_edits: int
    cache_write_with_edits: int
    input_without: int
    cache_read_without: int

    @property
    def read_share_with_edits(self) -> float:
        """Share of input read from the cache on calls where the server applied an edit."""
        return read_share(self.cache_read_with_edits, self.input_with_edits)

    @property
    def read_share_without(self) -> float:
        """The same share on the other calls."""
        return read_share(self.cache_read_without, self.input_without)


def edit_report(calls: Sequence[CallRecord]) -> EditReport:
    """Sum the ``applied_edits`` and compaction passes recorded in ``calls``' ``extra``."""
    totals = dict.fromkeys(EditReport.__dataclass_fields__, 0)
    totals["calls"] = len(calls)
    for call in calls:
        edits = call.extra.get("applied_edits") or ()
        passes = call.extra.get("compaction_usage") or ()
        total_in = neutral_usage_total(call.usage)
        if edits:
            totals["calls_with_edits"] += 1
            totals["input_with_edits"] += total_in
            totals["cache_read_with_edits"] += call.usage.cache_read_input_tokens
            totals["cache_write_with_edits"] += call.usage.cache_creation_input_tokens
        else:
            totals["input_without"] += total_in
            totals["cache_read_without"] += call.usage.cache_read_input_tokens
        for edit in edits:
            totals["cleared_input_tokens"] += int(edit.get("cleared_input_tokens") or 0)
            totals["cleared_tool_uses"] += int(edit.get("cleared_tool_uses") or 0)
            totals["cleared_thinking_turns"] += int(edit.get("cleared_thinking_turns") or 0)
        totals["compactions"] += len(passes)
        for p in passes:  # all its input: uncached, written and read
            totals["compaction_input_tokens"] += sum(
                int(p.get(k) or 0)
                for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
            )
            totals["compaction_output_tokens"] += int(p.get("output_tokens") or 0)
    return EditReport(**totals)


def edit_report_from_log(messages: Sequence[Message]) -> EditReport:
    """:func:`edit_report` over a session log: the replies' logged ``usage`` and
    ``server_context`` metadata (written by the wrapper's commit), so the
    accounting survives the process that made the calls."""
    calls = [
        CallRecord(
            str(m.metadata.get("provider", "")),
            str(m.metadata.get("model", "")),
            Usage(**{k: int(v) for k, v in m.metadata["usage"].items()}),
            None,
            False,
            0.0,
            extra=dict(m.metadata.get("server_context") or {}),
        )
        for m in messages
        if m.role == "assistant" and isinstance(m.metadata.get("usage"), Mapping)
    ]
    return edit_report(calls)


def neutral_usage_total(usage: Usage) -> int:
    """All input tokens of a call, cached or not (``Usage.input_tokens`` excludes the cache)."""
    return usage.input_tokens + usage.cache_creation_input_tokens + usage.cache_read_input_tokens


def texts(messages: Sequence[Message]) -> list[str]:
    """The contents of ``messages`` (convenience for logs and tests)."""
    return [m.content for m in messages]
