"""Anthropic Messages API adapter: parse, render with ``cache_control``, read usage.

Rendering is :func:`contextos.cache.render_anthropic` (one renderer for the
wrapper, the simulator and the benchmarks): ``cache_control`` on the blocks
where the window planned its breakpoints, a history that only grows so the
bytes before the newest turn never change. The caller's own question content
blocks (images, documents) are sent as given, with their ``cache_control``
markers, and every marker is counted: a request never carries more than the
API's four (ours are dropped first, earliest first; the SDK's "not given"
sentinels are no markers). The caller's tools and system prompt are placed by the
window, which puts its own (1-hour) markers on them; the caller's own marks on its
system blocks stay, and where it left blocks unmarked after them, none of ours goes
after those (``_callers_system_marks``). Every marker before a 1-hour one is made
1-hour too, since the API refuses a 5-minute breakpoint before a 1-hour one
(``_longer_first``). Consecutive assistant messages are one turn, as the API takes
them (``_api_turns``), and interleaved thinking goes back in the model's order
(:data:`LAYOUT_KEY`).

Usage is normalised to :class:`~contextos.types.Usage` as Anthropic reports it:
``input_tokens`` are the uncached ones; writes (split 5m/1h) and reads apart.

The Claude API's own context management (beta, ``client.beta.messages``) is
passed through and accounted; every field name below was checked against the
installed anthropic 2.14 types (``anthropic/types/beta/``):

- ``context_management.edits`` (``beta_context_management_config_param.py``)
  goes out exactly as the caller wrote it, together with its ``betas``.
  :func:`server_edits` reads which edit types a call asks for, so the context
  engine can stand back from what the server does: with
  ``clear_tool_uses_20250919`` contextos's own ``clear_tool_results``
  compaction is off for that call, and with ``compact_20260112`` all of
  contextos's compaction is (the server summarises). What the server applied
  (``context_management.applied_edits`` of the response,
  ``beta_context_management_response.py``: ``cleared_input_tokens`` and
  ``cleared_tool_uses`` / ``cleared_thinking_turns``) is returned by
  :func:`extra_of` and lands in the call record and the session log.
- A ``compaction`` block of a reply (``beta_compaction_block.py``: ``content``,
  ``encrypted_content``, ``signature``, ``tool_changes``; streamed as
  ``compaction_delta``) is kept verbatim in the reply's metadata under
  :data:`COMPACTION_KEY`, so the session log holds it, and it is sent back
  first in that assistant turn on every later call, as the API requires (the
  API then ignores what came before it), until a later one supersedes it: only
  the request's last block with a summary goes back, and the turn's count holds
  it (:func:`~contextos.llm.media_tokens.sent_compaction`). The summarising pass's usage
  (``usage.iterations`` entries of type ``compaction``) is added to the call's
  :class:`~contextos.types.Usage` by :func:`contextos.cache.usage_from_anthropic`.

:class:`AnthropicTokenCounter` counts exactly with ``messages.count_tokens``
when it has a client (an API key), and falls back to the offline cl100k
counter, labelled as an estimate, when it has none.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import replace
from itertools import accumulate
from typing import Any

from contextos.engine.context import model_info, prefill_of
from contextos.engine.window import TTL, Block, Breakpoint, Window
from contextos.llm.media_tokens import COMPACTION_KEY as COMPACTION_KEY  # message metadata key
from contextos.llm.media_tokens import THINKING_KEY as THINKING_KEY  # message metadata key
from contextos.llm.media_tokens import open_loop_start, sent_compaction
from contextos.llm.tokens import Tokenizer, default_tokenizer

from ..cache import field_of, render_anthropic, usage_from_anthropic
from ..cache.render import TOOL_RESULTS_KEY, open_on_user, results_together, tool_results_meta
from ..text.text_cache import TextCache
from ..types import Message, Role, ToolCall, Usage
from .base import PLACEHOLDER_KEY, WIRE_KEY, ChatRequest, Prepared, WireAdapter, own_content
from .errors import call_mapped
from .sdk import sdk_client

MAX_BREAKPOINTS = 4

JSON = dict[str, Any]

_THINKING = ("thinking", "redacted_thinking")


# -- parsing -------------------------------------------------------------------


#: What a user turn made only of non-text blocks is logged as (the log holds text only),
#: so it is neither an empty turn, which the API refuses, nor lost from the history.
_PLACEHOLDERS = {"image": "[image]", "document": "[document]"}


def _text_of(content: Any, role: str = "user") -> str:
    """A message's text, by the one rule both a reply and its echo go through."""
    return _read_text(content, role)[0]


def _read_text(content: Any, role: str) -> tuple[str, bool]:
    """(text, is-placeholders) of a message's content.

    An assistant's text blocks are joined with nothing: the API splits one
    answer into several blocks mid-sentence (citations), and its stream does
    not mark the seams. Other turns' blocks are separate parts, joined by a
    newline. A ``search_result`` block is read as its title, source and text. A turn
    with no text but images or documents is named by placeholders (``[image]``), and
    says so (:data:`PLACEHOLDER_KEY`).

    Total: a content that is neither a str nor a list of blocks, and a ``text`` that is
    no str, read as no text. Why: a reply is read by this rule (:func:`reply_of`), and a
    ``{"type": "text"}`` block with no text (or a number as its text) from a compatible
    server raised TypeError out of ``Memory.add``, past ``LLMExtractor``'s fallback for
    a reply it cannot read (a review, s41).
    """
    if isinstance(content, str):
        return content, False
    parts = []
    others = []
    for block in content if isinstance(content, (list, tuple)) else ():
        kind = field_of(block, "type")
        if kind == "text":
            text = field_of(block, "text")
            parts.append(text if isinstance(text, str) else "")
        elif kind == "tool_result":
            parts.append(_text_of(field_of(block, "content", "")))
        elif kind == "search_result":
            parts.append(_search_result_text(block))
        elif isinstance(kind, str) and kind in _PLACEHOLDERS:
            others.append(_PLACEHOLDERS[kind])
    text = ("" if role == "assistant" else "\n").join(parts)
    if text.strip() or not others:
        return text, False
    return " ".join(others), True


def _search_result_text(block: Any) -> str:
    """A ``search_result`` block as text: its title, its source, and its content's text.

    Why: read as nothing, a tool's search results (Anthropic's shape for RAG results)
    were logged as an empty turn, counted as a few tokens whatever their size, so a budget
    was passed three times over and compaction never began, and summaries saw nothing
    of what the tool found (a review). As text they are counted, as a text block is."""
    head = " ".join(str(field_of(block, k, "") or "") for k in ("title", "source")).strip()
    body = _text_of(field_of(block, "content", ""))
    return f"{head}\n{body}" if head and body else head or body


def tool_arguments(tool_input: Any) -> str:
    """A ``tool_use`` block's input as the log holds it: canonical JSON (keys sorted).

    The one place this is decided, for a non-streamed reply, a streamed one
    (whose input arrives as raw ``partial_json``) and the app's echo of either,
    so the same call compares equal wherever it came from.
    """
    return json.dumps(tool_input, sort_keys=True)


def _tool_calls(blocks: Iterable[Any]) -> tuple[ToolCall, ...]:
    """The ``tool_use`` blocks among ``blocks`` (wire dicts or SDK objects) as neutral
    tool calls, their input as canonical JSON so equal calls compare equal."""
    return tuple(
        ToolCall(
            str(field_of(b, "id")),
            str(field_of(b, "name")),
            tool_arguments(field_of(b, "input", {})),
        )
        for b in blocks
        if field_of(b, "type") == "tool_use"
    )


def _neutral(wire: Mapping[str, Any]) -> Message:
    content = wire.get("content")
    blocks = content if isinstance(content, list) else []
    calls = _tool_calls(blocks)
    results = [b for b in blocks if field_of(b, "type") == "tool_result"]
    meta: dict[str, Any] = {WIRE_KEY: ("anthropic", wire), **_verbatim(blocks)}
    if results and wire.get("role") == "user":
        text = _text_of(content)
        meta[TOOL_RESULTS_KEY] = tool_results_meta([_as_json(b) for b in blocks], text)
        if text.split() and set(text.split()) <= set(_PLACEHOLDERS.values()):
            # Results of only images or documents (a screenshot tool): no text to
            # remember, as for a user turn of them (an offload stored "[image]" memories).
            meta[PLACEHOLDER_KEY] = True
        return Message(
            "tool", text, tool_call_id=str(field_of(results[0], "tool_use_id")), metadata=meta
        )
    role: Role = "assistant" if wire.get("role") == "assistant" else "user"
    text, placeholder = _read_text(content, role)
    if placeholder:
        meta[PLACEHOLDER_KEY] = True
    return Message(role, text, tool_calls=calls, metadata=meta)


_CUSTOM_TOOL_KEYS = {"name", "description", "input_schema", "cache_control", "type"}


def neutral_tools(tools: Any) -> tuple[Mapping[str, Any], ...]:
    """Custom tools as neutral schemas; () when any is a server tool or has extra fields."""
    out = []
    for tool in tools or ():
        if (
            not isinstance(tool, Mapping)
            or set(tool) - _CUSTOM_TOOL_KEYS
            or tool.get("type", "custom") != "custom"
            or "input_schema" not in tool
        ):
            return ()
        # a description left out stays out, as the SDK sends it (a review: it went as "")
        out.append({k: tool[k] for k in ("name", "description", "input_schema") if k in tool})
    return tuple(out)


def _as_json(block: Any) -> JSON:
    """A content block as the JSON the API sent (SDK model or dict), unset fields left out."""
    if isinstance(block, Mapping):
        return copy.deepcopy(dict(block))
    to_dict = getattr(block, "to_dict", None)  # anthropic's BaseModel: exclude_unset by default
    if to_dict is not None:
        return dict(to_dict(mode="json"))
    return dict(block.model_dump(mode="json", exclude_unset=True))


def _verbatim(content: Any) -> dict[str, Any]:
    """The metadata keeping a turn's blocks that must go back to the API as they came:
    ``compaction`` (:data:`COMPACTION_KEY`) and signed thinking (:data:`THINKING_KEY`;
    the API refuses a tool loop whose assistant turn lost its thinking)."""
    meta: dict[str, Any] = {}
    compaction = compaction_blocks(content)
    if compaction:
        meta[COMPACTION_KEY] = compaction
    thinking = thinking_blocks(content)
    if thinking:
        meta[THINKING_KEY] = thinking
        layout = _interleaving(_layout_entry(b) for b in content)
        if layout is not None:
            meta[LAYOUT_KEY] = layout
    return meta


#: Message metadata key: where an assistant turn's thinking blocks sat among its text and
#: ``tool_use`` blocks, when one came after either (interleaved thinking, the
#: ``interleaved-thinking-2025-05-14`` beta): the turn's blocks in order, each
#: ``"thinking"``, ``"tool_use"`` or a text block's length in characters. Absent when the
#: thinking comes first, the order a turn is sent back in without it
#: (:func:`_in_given_order`).
LAYOUT_KEY = "anthropic_layout"


def _layout_entry(block: Any) -> str | int | None:
    """A content block's :data:`LAYOUT_KEY` entry (None: a block the log does not send
    back in its turn, a server tool's)."""
    kind = field_of(block, "type")
    if kind in _THINKING:
        return "thinking"
    if kind == "tool_use":
        return "tool_use"
    return len(field_of(block, "text", "") or "") if kind == "text" else None


def _interleaving(entries: Iterable[str | int | None]) -> list[str | int] | None:
    """The :data:`LAYOUT_KEY` of a turn whose blocks have these :func:`_layout_entry`
    entries; None when no thinking block follows a text or ``tool_use`` one."""
    layout = [e for e in entries if e is not None]
    first = next((n for n, e in enumerate(layout) if e != "thinking"), len(layout))
    return layout if "thinking" in layout[first:] else None


def thinking_blocks(content: Any) -> list[JSON]:
    """The ``thinking`` and ``redacted_thinking`` blocks of a message's content, as JSON."""
    if not isinstance(content, (list, tuple)):
        return []
    return [_as_json(b) for b in content if field_of(b, "type") in _THINKING]


def compaction_blocks(content: Any) -> list[JSON]:
    """The ``compaction`` blocks of a message's content, as JSON to send back verbatim."""
    if not isinstance(content, (list, tuple)):
        return []
    return [_as_json(b) for b in content if field_of(b, "type") == "compaction"]


def server_edits(kwargs: Mapping[str, Any]) -> tuple[str, ...]:
    """The ``context_management.edits`` types a call asks the server to apply.

    Read from the ``context_management`` argument of ``beta.messages.create``
    or from ``extra_body`` (how it reaches the non-beta method).

    Raises:
        ValueError: an edit without a string ``type``, or ``edits`` not a list.
    """
    config = kwargs.get("context_management")
    if config is None:
        config = field_of(kwargs.get("extra_body"), "context_management")
    edits = field_of(config, "edits") if config is not None else None
    if edits is None:
        return ()
    if isinstance(edits, (str, bytes, Mapping)):
        raise ValueError("context_management.edits must be a list of edits")
    kinds = []
    for edit in edits:
        kind = field_of(edit, "type")
        if not isinstance(kind, str):
            raise ValueError(f"each context_management edit needs a string 'type'; got {edit!r}")
        kinds.append(kind)
    return tuple(kinds)


def _api_turns(messages: Iterable[Any]) -> list[Mapping[str, Any]]:
    """``messages`` with each run of consecutive assistant messages made one, their
    blocks in order, as the Messages API takes them (it combines consecutive turns of
    one role into one turn).

    Why: an app that handles ``stop_reason: "pause_turn"`` sends the paused turn back,
    and may keep the continuation as an assistant message of its own, which the API
    accepts. contextos logs the two as one turn (the prefill with the reply that goes on
    from it), so the app's next request did not match the log there: it was taken for a
    branch, which deleted the memory of the model's answer and logged the exchange a
    second time (a review). Made one, the two say what the logged turn says."""
    out: list[Mapping[str, Any]] = []
    for message in messages:
        if out and field_of(message, "role") == "assistant" == out[-1].get("role"):
            content = [*_blocks_of(out[-1]), *_blocks_of(message)]
            out[-1] = {**out[-1], "content": content}
        else:
            out.append(message)
    return out


def _blocks_of(message: Mapping[str, Any]) -> list[Any]:
    """A message's content as a list of blocks (a string as its one text block)."""
    content = message.get("content")
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    return list(content or [])


def parse(kwargs: Mapping[str, Any]) -> ChatRequest:
    """The neutral form of ``messages.create`` keyword arguments."""
    system = kwargs.get("system")
    if isinstance(system, str):
        parts: tuple[str, ...] = (system,) if system else ()
    else:
        parts = tuple(
            field_of(b, "text", "") for b in system or [] if field_of(b, "type") == "text"
        )
    messages = tuple(_neutral(m) for m in _api_turns(kwargs.get("messages") or []))
    last = messages[-1] if messages else None
    if (
        last is not None
        and last.role == "user"
        and not last.tool_calls
        and not last.content.strip()
    ):
        # Refused before it is logged or sent, as ``context_window`` refuses a blank
        # question: it was logged, sent, and refused by the API (400) after a round trip.
        raise ValueError(
            "the last user message is blank (no text, or only whitespace): the Messages API "
            "refuses it; send text, or leave the message out"
        )
    return ChatRequest(
        model=str(kwargs.get("model", "")),
        system=parts,
        messages=messages,
        tools=neutral_tools(kwargs.get("tools")),
        stream=bool(kwargs.get("stream")),
        server_edits=server_edits(kwargs),
    )


# -- rendering -----------------------------------------------------------------


def render_body(prepared: Prepared, *, max_tokens: int | None = None) -> JSON:
    """The request body for a prepared window (:func:`contextos.cache.render_anthropic`),
    with the caller's question content blocks sent as they were given."""
    body = render_anthropic(prepared.window, prepared.model, max_tokens=max_tokens, keep_empty=True)
    _send_compactions_back(prepared.window, body["messages"])
    _send_own_blocks_back(prepared.window, body["messages"])
    # a turn with nothing to send (an empty reply in an older log): the API refuses it
    body["messages"] = open_on_user(results_together([m for m in body["messages"] if m["content"]]))
    own = own_content(prepared.question, "anthropic")
    if own is not None and body["messages"] and prepared.window.blocks[-1].kind == "question":
        final = body["messages"][-1]["content"]
        mark = final[-1].get("cache_control")
        final[-1:] = own
        if mark is not None:
            final[-1]["cache_control"] = mark
    _send_prefill_back(prepared.window, body["messages"])
    return body


def _send_prefill_back(window: Window, messages: list[JSON]) -> None:
    """The prefill a window ends with, sent as the caller's own blocks (in place) when it
    came as a list of blocks, as the question's are (:func:`render_body`).

    Why: with server tools the API may stop a long turn with ``stop_reason:
    "pause_turn"``, and the app sends that paused turn back, as it came, to let the
    server go on. Rendered from its text, the pending ``server_tool_use`` and the results
    of the searches already run were gone: the model went on from the text alone, and
    nothing failed (a review). Its thinking blocks are among the caller's own; the
    window counts the server tools' blocks (:func:`~contextos.llm.media_tokens.media_tokens`)."""
    blocks = own_content(prefill_of(window), "anthropic")
    if not blocks or not messages or messages[-1]["role"] != "assistant":
        return
    final = messages[-1]["content"]
    mark = final[-1].get("cache_control") if final else None
    final[:] = [_as_json(b) for b in blocks]  # SDK objects as their JSON: a mark can go on
    if mark is not None and field_of(final[-1], "type") not in _THINKING:
        final[-1]["cache_control"] = mark


def _send_own_blocks_back(window: Window, messages: list[JSON]) -> None:
    """Send each user turn of the history that carries the caller's wire form as the
    caller's own blocks (in place), its cache marker kept on the last of them.

    Only one such turn reaches a window: the question that opened the open tool loop,
    which a step of the loop sends with its images and documents
    (:func:`contextos.engine.context._loop_question_given`, which counts them); every
    logged turn holds its text alone. Window "messages" blocks map one to one, in
    order, to the rendered messages (:func:`contextos.cache.render_anthropic`)."""
    turns = [b for b in window.blocks if b.kind == "messages"]
    for block, message in zip(turns, messages, strict=False):
        own = own_content(block.message, "anthropic") if message["role"] == "user" else None
        if own is None:
            continue
        content = message["content"]
        mark = content[-1].get("cache_control") if content else None
        content[:] = own
        if mark is not None and own:
            content[-1]["cache_control"] = mark


def _send_compactions_back(window: Window, messages: list[JSON]) -> None:
    """Put the request's last ``compaction`` block, then each turn's thinking blocks, back
    first in its turn's content (in place). Thinking: with extended thinking, the API refuses a tool
    loop whose assistant turn comes back without its signed thinking blocks, and drops
    the thinking of earlier turns from the context; so a turn's thinking goes back only
    while its tool loop is open (:func:`~contextos.llm.media_tokens.open_loop_start`:
    the assistant turns after the last user turn that is not tool results, in a request
    without a question). The window keeps the blocks on those turns alone, and counts
    them (:func:`contextos.engine.session.context_window`); the same rule here keeps
    any other window from sending what it did not count.

    The API requires the block returned in a reply to come back, verbatim, in
    that assistant turn ("append the response to your messages"); it then
    ignores everything before it, earlier compaction blocks included, so only the
    last one with a summary goes (:func:`~contextos.llm.media_tokens.sent_compaction`,
    which the turn's count holds: :func:`~contextos.llm.media_tokens.compaction_tokens`).
    A turn that was only a compaction (the reply of ``pause_after_compaction``) renders
    with no content and is sent as the block alone, or not at all once superseded.
    Window "messages" blocks map one to one, in order, to the rendered messages
    (:func:`contextos.cache.render_anthropic`).
    """
    turns = [b for b in window.blocks if b.kind == "messages"]
    question = any(b.kind == "question" for b in window.blocks)
    loop = open_loop_start([b.role for b in turns], question=question)
    summary = sent_compaction([b.message for b in turns])
    for i, (block, message) in enumerate(zip(turns, messages, strict=False)):
        meta = block.message.metadata if block.message is not None else {}
        thinking = copy.deepcopy(list(meta.get(THINKING_KEY) or ())) if i >= loop else []
        compaction = [summary[1]] if summary is not None and summary[0] == i else []
        if not (compaction or thinking) or message["role"] != "assistant":
            continue
        content = message["content"]
        mark = content[-1].pop("cache_control", None) if content else None
        if thinking:
            content[:] = _in_given_order(content, thinking, meta.get(LAYOUT_KEY))
        content[:0] = copy.deepcopy(compaction)
        sendable = [b for b in content if b.get("type") not in _THINKING]
        if mark is not None and sendable:  # the API takes no mark on a thinking block
            sendable[-1]["cache_control"] = mark


def _in_given_order(content: list[JSON], thinking: list[JSON], layout: Any) -> list[JSON]:
    """An assistant turn's rendered blocks (its text, then its ``tool_use`` blocks) with
    its ``thinking`` blocks where the model gave them (:data:`LAYOUT_KEY`): the text cut
    back into the pieces it came in, blank ones left out (the API refuses them). Without
    a layout that fits the turn (none: the thinking came first), the thinking goes first.

    Why: with interleaved thinking a turn ``[thinking, text, thinking, tool_use]`` was
    sent back in the open tool loop as ``[thinking, thinking, text, tool_use]``, a
    reasoning order the model never produced, where the API asks for the turn's
    thinking unmodified (a review)."""
    texts = [b for b in content if b.get("type") == "text"]
    tools = [b for b in content if b.get("type") == "tool_use"]
    text = texts[0]["text"] if len(texts) == 1 else ""
    if not (
        isinstance(layout, list)
        and len(texts) + len(tools) == len(content)
        and len(texts) <= 1
        and layout.count("thinking") == len(thinking)
        and layout.count("tool_use") == len(tools)
        and sum(e for e in layout if type(e) is int) == len(text)
        and all(type(e) is int or e in ("thinking", "tool_use") for e in layout)
    ):
        return [*thinking, *content]
    given = {"thinking": iter(thinking), "tool_use": iter(tools)}
    out: list[JSON] = []
    at = 0
    for entry in layout:
        if isinstance(entry, str):
            out.append(next(given[entry]))
            continue
        piece, at = text[at : at + entry], at + entry
        if piece.strip():
            out.append({**texts[0], "text": piece})
    return out


def _given(mark: Any) -> bool:
    """Whether a ``cache_control`` value is a breakpoint: not None, nor one of the SDK's
    "not given" sentinels (``anthropic.omit``, ``NOT_GIVEN``; both falsy), which the SDK
    leaves out of the request it sends, nested in a block or as an argument.

    Why: ``cache_control=cc if auto else anthropic.omit`` (the SDK's idiom for an optional
    argument) counted as a top-level automatic breakpoint, and the caller's earliest own
    marker was dropped to keep the request within four (a review)."""
    return bool(mark)


def _marked(block: Any) -> bool:
    """Whether a rendered block carries a breakpoint (:func:`_given`)."""
    return isinstance(block, dict) and _given(block.get("cache_control"))


def _all_blocks(kwargs: Mapping[str, Any]) -> list[Any]:
    system = kwargs.get("system")
    out: list[Any] = list(kwargs.get("tools") or [])
    out += system if isinstance(system, list) else []
    for message in kwargs.get("messages") or []:
        content = message.get("content")
        out += content if isinstance(content, list) else []
    return out


def _enforce_limit(kwargs: dict[str, Any], keep: Collection[int] = frozenset()) -> None:
    """Drop the earliest rendered breakpoints until at most four remain (in place).

    The caller's ``tools`` are never touched (they are the caller's objects);
    their markers only count against the limit, and so does a top-level
    ``cache_control`` (automatic caching, ``types/message_create_params.py``:
    "applies a cache_control marker to the last cacheable block"), unless that
    block is marked already, and not when it is one of the SDK's "not given"
    sentinels (:func:`_given`). ``keep``: the ``id`` s of the blocks whose marks the
    caller placed on its system prompt, dropped only after every other.
    """
    blocks = _all_blocks(kwargs)
    marked = [b for b in blocks if _marked(b)]
    automatic = _given(kwargs.get("cache_control")) and not (blocks and _marked(blocks[-1]))
    excess = len(marked) + automatic - MAX_BREAKPOINTS
    tool_ids = {id(t) for t in kwargs.get("tools") or []}
    # the caller's marks on its system blocks go last (:func:`_callers_system_marks`)
    marked.sort(key=lambda b: id(b) in keep)
    for block in marked:
        if excess <= 0:
            break
        if id(block) not in tool_ids:
            del block["cache_control"]
            excess -= 1


def _ttl(mark: Any) -> TTL:
    """A ``cache_control`` marker's TTL: "1h", else the API's default "5m"."""
    return "1h" if field_of(mark, "ttl") == "1h" else "5m"


def _longer_first(kwargs: dict[str, Any], *, callers_tools: bool) -> None:
    """Make each marker before a 1-hour one (the caller's on its question, a top-level
    ``cache_control`` with ``ttl: "1h"``) a 1-hour one too (in place).

    Why: with mixed TTLs the API takes only longer ones first ("a 1-hour cache entry
    must appear before any 5-minute cache entries"). A caller's 1-hour marker on its
    question followed the window's 5-minute history marker, and every call after the
    first was a request the API refuses (a review). Made 1-hour, an earlier marker costs
    nothing more: the tokens before it are written to the caller's 1-hour entry anyway.
    ``callers_tools``: the tools are the caller's own objects (sent as given when the
    window holds none): they are not touched.
    """
    caller_tools = {id(t) for t in kwargs.get("tools") or []} if callers_tools else set()
    top = kwargs.get("cache_control")
    later = _given(top) and _ttl(top) == "1h"
    for block in reversed(_all_blocks(kwargs)):
        if not _marked(block):
            continue
        mark = block["cache_control"]
        if _ttl(mark) == "1h":
            later = True
        elif later and id(block) not in caller_tools:
            block["cache_control"] = {**mark, "ttl": "1h"}


def prefix_hash(kwargs: Mapping[str, Any]) -> str:
    """SHA-256 of the request up to its last ``cache_control`` block ('' when none).

    A value JSON cannot hold is hashed by its type's name: the SDK's "not given"
    sentinels (:func:`_given`), which the SDK leaves out of what it sends (a block
    marked ``anthropic.omit`` failed the call with a ``TypeError`` here)."""
    blocks = _all_blocks(kwargs)
    last = max((i for i, b in enumerate(blocks) if _marked(b)), default=-1)
    if last < 0:
        return ""
    digest = hashlib.sha256(str(kwargs.get("model", "")).encode())
    for block in blocks[: last + 1]:
        text = json.dumps(block, sort_keys=True, ensure_ascii=False, default=_type_name)
        digest.update(text.encode())
    return digest.hexdigest()


def _type_name(value: Any) -> str:
    """What :func:`prefix_hash` hashes for a value JSON cannot hold."""
    return f"<{type(value).__name__}>"


#: The segments of the window the caller's ``system`` text blocks become
#: (:func:`contextos.engine.session.context_window`): the first is the ``system``
#: segment's one block; each later one a ``rules`` block keyed ``rule:<n>``, counted from
#: the second. Instructions with the tools: their breakpoints collapse into one.
_INSTRUCTIONS = frozenset({"tools", "system", "rules"})


def _callers_block(block: Block, callers: int) -> int | None:
    """Which of the caller's ``callers`` system text blocks (by :func:`parse`'s count)
    ``block`` is; None when it is none of them (the summary, the topic memories, a turn,
    a stored rule the window pinned after them).

    Why the count: the scope's stored rules follow the caller's in the ``rules``
    segment, numbered on; read as the caller's unmarked blocks after its last marked
    one, they dropped the history's breakpoint from every call of a caller that marks
    its system prompt (a review)."""
    if block.kind != "system":
        return None
    if block.segment == "system":
        return 0
    number = block.key.removeprefix("rule:")
    if block.segment != "rules" or not number.isdigit() or int(number) + 1 >= callers:
        return None
    return int(number) + 1


def _caller_texts(system: Any) -> list[Any]:
    """The caller's system text blocks (none for a plain string system prompt)."""
    if not isinstance(system, (list, tuple)):
        return []
    return [b for b in system if field_of(b, "type") == "text"]


def _system_marks(window: Window, system: Any) -> dict[int, TTL]:
    """The caller's ``cache_control`` marks on its system text blocks, by the window
    block each became: {block index: TTL}. Blank blocks are not in the window
    (:func:`~contextos.engine.session.context_window`), nor their marks."""
    texts = _caller_texts(system)
    given = {n: field_of(b, "cache_control") for n, b in enumerate(texts)}
    marks = {n: _ttl(mark) for n, mark in given.items() if _given(mark)}
    placed = ((at, _callers_block(b, len(texts))) for at, b in enumerate(window.blocks))
    return {at: marks[n] for at, n in placed if n is not None and n in marks}


def _callers_system_marks(window: Window, marks: Mapping[int, TTL], callers: int) -> Window:
    """``window`` with the caller's marks on its ``callers`` system text blocks
    (``marks``: :func:`_system_marks`) among its breakpoints.

    The window's own instruction breakpoint (after the tools, system prompt and
    rules: the last of them, 1-hour) goes on the caller's last marked block, with the
    longer TTL of the two, and the caller's other marks stay where it put them. When
    system blocks of the caller follow that one unmarked, the caller has said where its
    stable prefix ends: what follows changes from call to call (the time, the user's
    name), as Anthropic's caching guide has it, so none of the window's own breakpoints
    goes after it (a breakpoint there would write the history on every call, at 1.25
    times its price, and never be read).

    Why: the caller's marks were dropped, and the window's system breakpoint went after
    the block the caller left unmarked, a timestamp: every call missed the cache and
    wrote the whole system prompt again at the 1-hour price, where the bare SDK read it
    from the cache (a review)."""
    if not marks:
        return window
    placed = {
        at: n for at, b in enumerate(window.blocks) if (n := _callers_block(b, callers)) is not None
    }
    end = max(marks)
    per_call = max(placed.values()) > placed[end]
    planned = [bp.ttl for bp in window.breakpoints if bp.segment in _INSTRUCTIONS]
    own = [
        bp
        for bp in window.breakpoints
        if bp.segment not in _INSTRUCTIONS and not (per_call and bp.after > end)
    ]
    prefix = list(accumulate(b.tokens for b in window.blocks))
    given = [
        Breakpoint(
            at,
            "1h" if "1h" in (ttl, *(planned if at == end else ())) else "5m",
            window.blocks[at].segment,
            prefix[at],
        )
        for at, ttl in sorted(marks.items())
    ]
    return replace(window, breakpoints=tuple(sorted([*given, *own], key=lambda bp: bp.after)))


def render(prepared: Prepared, kwargs: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    """``messages.create`` keyword arguments for the prepared window.

    The caller's other arguments (``max_tokens``, ``stop_sequences``...) are
    kept as given; ``system`` and ``messages`` come from the window, and so do
    ``tools`` when the window holds them (custom tools, rendered canonically).
    The caller's marks on its system blocks are kept (:func:`_callers_system_marks`).
    """
    system = kwargs.get("system")
    marks = _system_marks(prepared.window, system)
    window = _callers_system_marks(prepared.window, marks, len(_caller_texts(system)))
    body = render_body(replace(prepared, window=window), max_tokens=kwargs.get("max_tokens"))
    out = {k: v for k, v in kwargs.items() if k not in ("system", "messages")}
    if body.get("tools"):  # the caller's tools, placed (and cached) by the window
        out["tools"] = body["tools"]
    if body.get("system"):
        out["system"] = body["system"]
    out["messages"] = body["messages"]
    system_at = [at for at, b in enumerate(window.blocks) if b.kind == "system"]
    system = zip(system_at, body.get("system") or [], strict=True)  # one block each
    callers = {id(block) for at, block in system if at in marks}
    _enforce_limit(out, keep=callers)
    _longer_first(out, callers_tools=not body.get("tools"))
    return out, prefix_hash(out)


# -- responses -----------------------------------------------------------------


def reply_of(response: Any) -> Message:
    """The assistant message of a ``Message`` response (its text: :func:`_read_text`;
    a content that is no list of blocks has no tool calls nor blocks to keep)."""
    content = field_of(response, "content")
    blocks = content if isinstance(content, (list, tuple)) else []
    text = _text_of(content, "assistant")
    return Message("assistant", text, tool_calls=_tool_calls(blocks), metadata=_verbatim(blocks))


def extra_of(response: Any, usage: Any = None) -> dict[str, Any]:
    """What the server did to the context on this call, for the call record.

    ``applied_edits``: the response's ``context_management.applied_edits``
    (each with ``type``, ``cleared_input_tokens`` and ``cleared_tool_uses`` or
    ``cleared_thinking_turns``); ``compaction_usage``: the usage of the
    summarising pass(es) (``usage.iterations`` of type ``compaction``, already
    included in the call's Usage); ``stop_reason`` when it is ``compaction``
    (``pause_after_compaction``). Empty when the server did none of these.
    """
    out: dict[str, Any] = {}
    applied = field_of(field_of(response, "context_management"), "applied_edits") or []
    if applied:
        out["applied_edits"] = [_as_json(e) for e in applied]
    usage = field_of(response, "usage") if usage is None else usage
    passes = [
        _as_json(it)
        for it in field_of(usage, "iterations") or ()
        if field_of(it, "type") == "compaction"
    ]
    if passes:
        out["compaction_usage"] = passes
    if field_of(response, "stop_reason") == "compaction":
        out["stop_reason"] = "compaction"
    return out


def _index_of(event: Any) -> int:
    """A content block event's ``index``; -1 when it has none that reads as an int (null,
    a word), as when it has none at all.

    Why total: what a server streams there is unchecked, and the SDK passes it on. An
    ``"index": null`` raised ``TypeError`` out of the wrapper's accumulator: the app's
    loop died where the bare SDK's went on (a review, s47)."""
    index = field_of(event, "index", -1)
    try:
        return int(index)
    except (TypeError, ValueError, OverflowError):
        return -1


class AnthropicStreamAccumulator:
    """Reply text and usage from ``RawMessageStreamEvent`` s as they pass by."""

    def __init__(self) -> None:
        self._usage: dict[str, Any] = {}
        self._text: list[str] = []
        #: ``tool_use`` blocks by stream index: id, name, raw ``partial_json`` so far, and
        #: the input the block started with (see :meth:`reply`).
        self._tools: dict[int, tuple[str, str, list[str], Any]] = {}
        #: indexes of the blocks whose ``content_block_stop`` arrived
        self._stopped: set[int] = set()
        self._compactions: list[JSON] = []
        #: ``thinking`` / ``redacted_thinking`` blocks by stream index, as they build up
        self._thinking: dict[int, JSON] = {}
        #: the type of each text, ``tool_use`` and thinking block by stream index, and each
        #: text block's length so far: the reply's :data:`LAYOUT_KEY`
        self._kinds: dict[int, str] = {}
        self._text_lengths: dict[int, int] = {}
        self._context_management: Any = None
        self._stop_reason: Any = None
        self._stopped_message = False
        self.message_id: str | None = None

    @property
    def finished(self) -> bool:
        """The reply is whole: ``message_stop``, or the ``message_delta`` carrying the
        ``stop_reason`` (and the final usage) arrived. A body cut before them is not,
        however quietly it ended."""
        return self._stopped_message or self._stop_reason is not None

    def feed(self, event: Any) -> None:
        kind = field_of(event, "type")
        if kind == "message_start":
            message = field_of(event, "message")
            self.message_id = field_of(message, "id")
            self._merge(field_of(message, "usage"))
        elif kind == "content_block_start":
            self._block_start(_index_of(event), field_of(event, "content_block"))
        elif kind == "content_block_stop":
            self._stopped.add(_index_of(event))
        elif kind == "content_block_delta":
            delta = field_of(event, "delta")
            index = _index_of(event)
            tool = self._tools.get(index)
            if field_of(delta, "type") == "text_delta":
                text = field_of(delta, "text", "")
                text = text if isinstance(text, str) else ""  # as a reply's: _read_text
                self._text.append(text)
                self._text_lengths[index] = self._text_lengths.get(index, 0) + len(text)
            elif field_of(delta, "type") == "input_json_delta" and tool is not None:
                piece = field_of(delta, "partial_json", "")
                tool[2].append(piece if isinstance(piece, str) else "")  # as text: above
            elif field_of(delta, "type") == "compaction_delta" and self._compactions:
                self._compaction_delta(delta)
            else:
                self._thinking_delta(index, delta)
        elif kind == "message_delta":
            self._merge(field_of(event, "usage"))
            cm = field_of(event, "context_management")
            self._context_management = cm if cm is not None else self._context_management
            self._stop_reason = field_of(field_of(event, "delta"), "stop_reason")
        elif kind == "message_stop":
            self._stopped_message = True

    def _block_start(self, index: int, block: Any) -> None:
        """A new content block: tool calls, compaction and thinking are built up here."""
        kind = field_of(block, "type")
        if kind in ("text", "tool_use", *_THINKING):
            self._kinds[index] = kind
        if kind == "tool_use":
            index = index if index >= 0 else len(self._tools)
            self._tools[index] = (
                str(field_of(block, "id")),
                str(field_of(block, "name")),
                [],
                field_of(block, "input"),
            )
        elif kind == "compaction":
            self._compactions.append(_as_json(block))
        elif kind in _THINKING:
            self._thinking[index] = _as_json(block)

    def _thinking_delta(self, index: int, delta: Any) -> None:
        """``thinking_delta`` text and ``signature_delta`` onto the block they belong to."""
        block = self._thinking.get(index)
        kind = field_of(delta, "type")
        if block is None or kind not in ("thinking_delta", "signature_delta"):
            return
        name = "thinking" if kind == "thinking_delta" else "signature"
        block[name] = (block.get(name) or "") + str(field_of(delta, name, ""))

    def _compaction_delta(self, delta: Any) -> None:
        """``compaction_delta`` (``beta_compaction_content_block_delta.py``) carries the
        summary whole; the SDK's own accumulator (``lib/streaming/_beta_messages.py``)
        replaces the block's fields with it, and so does this."""
        block = self._compactions[-1]
        summary = field_of(delta, "content")
        if summary is not None:
            block["content"] = summary
        secret = field_of(delta, "encrypted_content")
        if secret is not None:
            block["encrypted_content"] = secret

    def _merge(self, raw: Any) -> None:
        """Later events carry cumulative counts: non-null fields replace earlier ones."""
        if raw is None:
            return
        for name in (
            "input_tokens",
            "output_tokens",
            "cache_creation_input_tokens",
            "cache_read_input_tokens",
            "cache_creation",
            "iterations",
        ):
            value = field_of(raw, name)
            if value is not None:
                self._usage[name] = value

    def usage(self) -> Usage:
        return usage_from_anthropic(self._usage)

    def reply(self) -> Message:
        """The reply so far: its text, and the tool calls whose input arrived whole.

        A ``tool_use`` block the stream was cut inside (no ``content_block_stop``,
        or input that does not parse) is left out: its input is a fragment, and
        sent back later it would be refused (or, as a half call, answered by no
        ``tool_result``). Whole inputs are logged canonically (:func:`tool_arguments`).

        A block whose input came whole in its ``content_block_start``, with no
        ``input_json_delta`` after, keeps that input, as the SDK's ``get_final_message()``
        does (the API sends ``{}`` there, a gateway may send the input): it was logged
        as ``{}``, and the app's echo of the call forked the log (a review).
        """
        calls = {}
        for index, (call_id, name, pieces, started) in sorted(self._tools.items()):
            streamed = "".join(pieces)
            try:
                tool_input = json.loads(streamed) if streamed else started
            except (ValueError, RecursionError):  # not JSON, or nested past the parser
                continue
            if not streamed and not isinstance(started, dict):
                tool_input = {}  # none at the start (or not an object): as before
            if index in self._stopped:
                calls[index] = ToolCall(call_id, name, tool_arguments(tool_input))
        meta: dict[str, Any] = {}
        if self._compactions:
            meta[COMPACTION_KEY] = copy.deepcopy(self._compactions)
        thinking = [
            copy.deepcopy(b) for i, b in sorted(self._thinking.items()) if i in self._stopped
        ]
        if thinking:  # whole blocks only: a cut one has no valid signature
            meta[THINKING_KEY] = thinking
            layout = _interleaving(self._layout_entry(i, calls) for i in sorted(self._kinds))
            if layout is not None:
                meta[LAYOUT_KEY] = layout
        return Message(
            "assistant", "".join(self._text), tool_calls=tuple(calls.values()), metadata=meta
        )

    def _layout_entry(self, index: int, calls: Mapping[int, ToolCall]) -> str | int | None:
        """The :data:`LAYOUT_KEY` entry of the block at ``index``, as :meth:`reply` keeps
        it (None: left out, a tool call or thinking block the stream was cut inside)."""
        kind = self._kinds[index]
        if kind == "text":
            return self._text_lengths.get(index, 0)
        if kind == "tool_use":
            return "tool_use" if index in calls else None
        return "thinking" if index in self._stopped else None

    def extra(self) -> dict[str, Any]:
        """:func:`extra_of` for the stream so far."""
        response = {
            "context_management": self._context_management,
            "stop_reason": self._stop_reason,
        }
        return extra_of(response, self._usage)


#: The :class:`~contextos.providers.base.ProviderAdapter` for ``anthropic.Anthropic``.
ADAPTER = WireAdapter(
    "anthropic", parse, render, usage_from_anthropic, reply_of, extra_of, AnthropicStreamAccumulator
)


# -- token counting --------------------------------------------------------------


class AnthropicTokenCounter:
    """A :class:`~contextos.llm.tokens.Tokenizer` backed by ``messages.count_tokens``.

    Exact (``exact = True``) when it has a client; otherwise it counts with the
    offline cl100k tokenizer and says so (``exact = False``, name ends in
    "(estimate)"). ``count(text)`` is the text's cost as one user message minus
    the per-request framing, measured once with a one-character message.
    Results are cached per text (by its digest, :class:`~contextos.text.text_cache.TextCache`:
    the cache holds no text, so none outlives ``Memory.forget``), so budgeting loops
    do not repeat API calls.

    Example:
        >>> counter = AnthropicTokenCounter(model="claude-haiku-4-5")  # no key: estimate
        >>> counter.exact, counter.count("hello world")
        (False, 2)
    """

    def __init__(
        self,
        client: Any = None,
        *,
        model: str = "claude-haiku-4-5",
        api_key: str | None = None,
        base_url: str | None = None,
        fallback: Tokenizer | None = None,
        cache_size: int = 4096,
    ) -> None:
        if client is None and api_key:
            client = sdk_client("anthropic", api_key, base_url)
        self._client = client
        self._fallback = fallback or default_tokenizer()
        self.model = model
        self.exact = client is not None
        #: Images and documents are counted by the API too (no offline estimate in the
        #: count: :meth:`count_messages`), when it has a client.
        self.media_exact = self.exact
        #: Each new text it counts is an API request (with a client): a Session does not
        #: count logged turns again with it (see ``Session(exact_history=...)``).
        self.remote = self.exact
        self.name = f"anthropic:{model}" if self.exact else f"{self._fallback.name} (estimate)"
        self._cache: TextCache[int] = TextCache(cache_size)
        self._framing: int | None = None
        self._opening: int | None = None

    @classmethod
    def from_settings(cls, settings: Any, *, model: str | None = None) -> AnthropicTokenCounter:
        """Exact when ``settings.anthropic_api_key`` is set, an estimate otherwise."""
        return cls(model=model or settings.model, api_key=settings.anthropic_api_key)

    def _api(self, messages: list[JSON], system: list[JSON] | None = None) -> int:
        kwargs: dict[str, Any] = {"model": self.model, "messages": messages}
        if system:
            kwargs["system"] = system
        result = call_mapped("anthropic", self._client.messages.count_tokens, **kwargs)
        return int(field_of(result, "input_tokens"))

    def count(self, text: str) -> int:
        if not self.exact:
            return self._fallback.count(text)
        if not text:
            return 0
        return self._cache.get(text, None, lambda: self._count(text))

    def _count(self, text: str) -> int:
        if self._framing is None:
            self._framing = self._api([{"role": "user", "content": "."}]) - 1
        return max(0, self._api([{"role": "user", "content": text}]) - self._framing)

    def count_messages(self, messages: Sequence[Message]) -> int:
        """The messages as they would be sent: logged turns as text, tool calls and
        kept tool-result blocks, the last ``compaction`` block with a summary; a user
        message carrying its wire form (a question) with its own content (images,
        documents); no thinking blocks, which a window
        counts apart, only for the open tool loop (the rule of
        :meth:`~contextos.llm.tokens.Tokenizer.count_messages`)."""
        if not self.exact:
            return self._fallback.count_messages(messages)
        ordered = [
            replace(m, metadata={k: v for k, v in m.metadata.items() if k != THINKING_KEY})
            for m in sorted(messages, key=lambda m: m.role != "system")
        ]
        blocks = tuple(
            Block(
                "system" if m.role == "system" else "history",
                "system" if m.role == "system" else "messages",
                str(i),
                m.role,
                m.content,
                0,
                None if m.role == "system" else m,
            )
            for i, m in enumerate(ordered)
        )
        window = Window(blocks, 0, (), (), ())
        body = render_anthropic(window, model_info(self.model), keep_empty=True)
        _send_compactions_back(window, body["messages"])
        _send_own_blocks_back(window, body["messages"])
        sent = [m for m in body["messages"] if m["content"]]
        opened = open_on_user(sent)  # the API counts no request that opens on the assistant
        count = self._api(opened or [{"role": "user", "content": "."}], body.get("system"))
        return count - self._opening_tokens() if len(opened) > len(sent) else count

    def _opening_tokens(self) -> int:
        """What the opening user message (:func:`~contextos.cache.render.open_on_user`)
        adds to a request: not part of the messages counted. A turn is counted alone
        (``Session.add``), so each assistant turn counted with it was stored that much
        too large, and windows left out turns they had room for (a review)."""
        if self._opening is None:
            reply = {"role": "assistant", "content": "."}
            alone = self._api([{"role": "user", "content": "."}])
            self._opening = self._api(open_on_user([reply])) - alone
        return self._opening
