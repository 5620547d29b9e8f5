"""OpenAI Chat Completions adapter (and any OpenAI-compatible server via ``base_url``).

OpenAI caches prompt prefixes automatically, so rendering is about keeping
the prefix byte-stable: :func:`contextos.cache.render_openai` puts the system
prompt and the append-only history first and the per-call memories and the
question last. ``prompt_cache_key`` (which routes one session's calls to the
same cache) is sent only when asked for, because some OpenAI-compatible
servers reject parameters they do not know.

Explicit cache breakpoints (openai 3.57, ``types/chat/completion_create_params.py``
``PromptCacheOptions`` {``mode``: ``implicit`` | ``explicit``, ``ttl``: ``30m``},
"supported for gpt-5.6 and later models", and the per-part
``prompt_cache_breakpoint`` {``mode``: ``explicit``, ``ttl``: ``30m`` | ``12h``} of
``types/chat/chat_completion_content_part_text_param.py``): when a call carries
``prompt_cache_options`` (or the wrapper was given default ones), the options
go out as given and contextos marks the text part that ends each cache
breakpoint the window planned -- the same plan, above the model's minimum, as
Anthropic's ``cache_control`` -- at most the latest four with ``mode:
explicit`` and three with ``implicit`` (which adds OpenAI's own implicit one),
as the SDK documents. Without options nothing is marked: older models and
OpenAI-compatible servers may reject unknown fields. ``prompt_cache_retention``
(deprecated in favour of ``prompt_cache_options.ttl``) is passed through untouched.

Usage is normalised like Anthropic's: ``input_tokens`` excludes cached and
written tokens (OpenAI's ``prompt_tokens`` includes them), ``cache_read_input_tokens``
is ``prompt_tokens_details.cached_tokens`` and ``cache_creation_input_tokens``
its ``cache_write_tokens`` (:func:`contextos.cache.usage_from_openai`). The
write TTL split (30m / 12h) exists only in the Responses API's usage; the
adapter's :func:`write_ttl_extra` reports it as ``cache_write_ttl`` when
present (:func:`contextos.cache.accounting.openai_write_ttls`).

The question's own ``image_url`` and ``file`` parts are sent as given and counted
in the window by their estimated cost (:mod:`contextos.llm.media_tokens`: the
tile rule, PDF pages); tool messages and logged turns are sent as text.

Streams only report usage when ``stream_options.include_usage`` is set; the
wrapper sets it, and when the caller had not asked for it, it hides the extra
usage-only chunk (empty ``choices``) so the caller's loop sees what it expects.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

from ..cache import field_of, prompt_cache_key, render_openai, stable_end, usage_from_openai
from ..cache.accounting import openai_write_ttls
from ..cache.render import OPENAI_ROLE_KEY, openai_messages_of
from ..engine.window import Window
from ..types import Message, Role, ToolCall, Usage
from .base import PLACEHOLDER_KEY, WIRE_KEY, ChatRequest, Prepared, WireAdapter, own_content

JSON = dict[str, Any]
_SYSTEM_ROLES = ("system", "developer")
#: The neutral role of each wire role: an instruction mid-conversation (a system or
#: developer message after the first turn) stays an instruction, never a user turn.
_ROLES: dict[str, Role] = {
    "user": "user",
    "assistant": "assistant",
    "tool": "tool",
    "system": "system",
    "developer": "system",
}

#: Explicit breakpoints a request may write: four with ``mode: explicit``, the latest
#: three beside the implicit one otherwise (``PromptCacheOptions.mode`` docstring).
MAX_EXPLICIT_BREAKPOINTS = {"explicit": 4, "implicit": 3}


# -- parsing -------------------------------------------------------------------


#: What a turn made only of non-text parts is logged as (the log holds text only), so
#: it is neither an empty turn nor lost from the history.
_PLACEHOLDERS = {"image_url": "[image]", "input_audio": "[audio]", "file": "[file]"}
#: The parts whose text is the turn's text, and the field that holds it: an assistant
#: message's content may hold ``refusal`` parts beside ``text`` ones (the SDK's
#: ``ChatCompletionContentPartRefusalParam``).
_TEXT_FIELDS = {"text": "text", "refusal": "refusal"}


def _text_of(content: Any) -> str:
    return _read_text(content)[0]


def _read_text(content: Any) -> tuple[str, bool]:
    """(text, is-placeholders): the text and refusal parts, one per line; placeholders
    (``[image]``) when it has none, and says so (:data:`PLACEHOLDER_KEY`). Total: a
    content of any other type (a number, an object) and a part's text that is no str
    read as no text.

    Why refusal parts: read as no text, an assistant turn given as ``[{"type":
    "refusal", ...}]`` was logged empty and sent on every later call as ``content: ""``,
    so the model never saw that it had refused (a review, s36), as the top-level
    ``refusal`` field already is read (:func:`_neutral`). Why total: a reply is read by
    this rule too (:func:`reply_of`), and what a server sends there is unchecked."""
    if isinstance(content, str):
        return content, False
    parts = _parts_of(content)
    text = "\n".join(
        _str(field_of(p, key))
        for p in parts
        if (key := _TEXT_FIELDS.get(_kind(p) or "")) is not None
    )
    others = [_PLACEHOLDERS[k] for p in parts if (k := _kind(p) or "") in _PLACEHOLDERS]
    if text.strip() or not others:
        return text, False
    return " ".join(others), True


def _parts_of(content: Any) -> list[Any]:
    """The parts of a content that is no str: its items when it is a list (or another
    iterable of parts, as the SDK's types allow); none for None, or a value of another
    type (a number, an object), which holds no part."""
    if isinstance(content, Iterable) and not isinstance(content, (str, bytes, Mapping)):
        return list(content)
    return []


def _kind(part: Any) -> str | None:
    """A part's ``type`` when it is a str (None for a part without one, or no part)."""
    kind = field_of(part, "type")
    return kind if isinstance(kind, str) else None


def _str(value: Any) -> str:
    """``value`` when it is a str, else '': a text field a server filled with null or
    a number holds no text."""
    return value if isinstance(value, str) else ""


def arguments_text(arguments: Any) -> str:
    """A tool call's ``function.arguments`` as the log holds it: a str as it came (the
    model may write invalid JSON, and the app sends back what it got); an object or a
    list as compact JSON, keys sorted; a number or a bool as its JSON; anything else
    (None, a value JSON cannot hold) as ''. Total: what a server sends there is
    unchecked, and the SDK passes it on as it came.

    The one place this is decided, for a reply (:func:`reply_of`), a streamed one
    (:class:`OpenAIStreamAccumulator`, which joins the pieces), the app's echo of either
    (:func:`_neutral`) and a Responses API call, so an echoed call matches the logged one.

    Why: OpenAI-compatible servers (llama.cpp's llama-server, TGI) send the arguments as a
    JSON object. Streamed, the pieces were joined with ``+=``: the app's loop got a bare
    ``TypeError`` at that chunk and the call was logged with no tool call; not streamed,
    ``str()`` logged a Python repr (``{'a': 1}``) and sent it back to the model (a
    review, s47)."""
    if isinstance(arguments, str):
        return arguments
    if isinstance(arguments, Mapping):
        value: Any = dict(arguments)
    elif isinstance(arguments, (list, tuple)):
        value = list(arguments)
    elif isinstance(arguments, (int, float)):  # bool too
        value = arguments
    else:
        return ""
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError):  # keys that cannot be sorted, a value JSON cannot hold
        return ""


def _neutral(wire: Mapping[str, Any]) -> Message:
    role = wire.get("role", "user")
    calls = tuple(
        ToolCall(
            str(field_of(c, "id")),
            str(field_of(field_of(c, "function"), "name")),
            arguments_text(field_of(field_of(c, "function"), "arguments")),
        )
        for c in wire.get("tool_calls") or []
    )
    text, placeholder = _read_text(wire.get("content"))
    if not text and isinstance(refusal := wire.get("refusal"), str):
        text, placeholder = refusal, False  # as reply_of reads the reply it echoes
    if not text and (audio := wire.get("audio")):
        text, placeholder = _audio_reply(audio)
    meta: dict[str, Any] = {WIRE_KEY: ("openai", wire)}
    if placeholder:
        meta[PLACEHOLDER_KEY] = True
    if role == "developer":  # logged as a system turn, sent back as the caller's role
        meta[OPENAI_ROLE_KEY] = role
    return Message(
        _ROLES.get(role, "user"),
        text,
        name=wire.get("name"),
        tool_call_id=wire.get("tool_call_id"),
        tool_calls=calls,
        metadata=meta,
    )


def _audio_reply(audio: Any) -> tuple[str, bool]:
    """(text, is-placeholder) of an assistant turn that is an audio reply
    (``{"role": "assistant", "audio": {"id": ...}}``): its ``transcript`` when the
    message carries one (the SDK's reply message appended as it is), else ``[audio]``
    as a placeholder (:data:`PLACEHOLDER_KEY`).

    Why: read as no text, it was logged as an empty turn and sent on every later call
    as ``content: ""`` (a review, s36). Why not send the audio id back from the log:
    OpenAI keeps a reply's audio only until its ``expires_at`` (about an hour), and a
    logged turn is sent on every later call, long after; the text is always accepted.
    """
    transcript = field_of(audio, "transcript")
    if isinstance(transcript, str) and transcript.strip():
        return transcript, False
    return _PLACEHOLDERS["input_audio"], True


def neutral_tools(tools: Any) -> tuple[Mapping[str, Any], ...]:
    """Function tools as neutral schemas; () when any has fields we would drop (``strict``)
    or is not a mapping (an SDK model: it travels verbatim, the SDK serialises it).

    A ``description`` or ``parameters`` the app left out stays out. Why: filled in as
    ``""`` and ``{}``, a tool of no arguments went out as ``"parameters": {}``, a schema
    with no ``"type": "object"`` root that strict OpenAI-compatible servers refuse, where
    the bare SDK sends ``{"name": ...}`` and the API reads an empty parameter list (a
    review). A tool that has both is the same canonical JSON as before, so its cached
    prefix holds."""
    out = []
    for tool in tools or ():
        if not isinstance(tool, Mapping):
            return ()
        fn = tool.get("function")
        if (
            tool.get("type") != "function"
            or not isinstance(fn, Mapping)
            or set(tool) != {"type", "function"}
            or set(fn) - {"name", "description", "parameters"}
        ):
            return ()
        out.append({k: fn[k] for k in ("name", "description", "parameters") if k in fn})
    return tuple(out)


def parse(kwargs: Mapping[str, Any]) -> ChatRequest:
    """The neutral form of ``chat.completions.create`` keyword arguments.

    Leading system/developer messages are the system prompt; the rest are turns.
    The call's own ``prompt_cache_options`` are checked here, before anything is logged:
    refused only at :func:`render`, they left the question logged (sent again before
    every later question) and never remembered.
    """
    messages = list(kwargs.get("messages") or [])
    _refuse_legacy_functions(kwargs, messages)
    if kwargs.get("prompt_cache_options"):  # as render reads them
        check_cache_options(kwargs["prompt_cache_options"])
    head = 0
    while head < len(messages) and messages[head].get("role") in _SYSTEM_ROLES:
        head += 1
    return ChatRequest(
        model=str(kwargs.get("model", "")),
        system=tuple(_text_of(m.get("content")) for m in messages[:head]),
        messages=tuple(_neutral(m) for m in messages[head:]),
        tools=neutral_tools(kwargs.get("tools")),
        stream=bool(kwargs.get("stream")),
    )


# -- rendering -----------------------------------------------------------------


def _refuse_legacy_functions(kwargs: Mapping[str, Any], messages: list[Any]) -> None:
    """A ValueError for the legacy ``functions`` API on a managed client (wrapped with a
    session or a memory). Why: its ``function_call`` reply was logged as an empty
    assistant turn and its ``role: "function"`` result as the user speaking ("12:00"),
    so the model, sent that back, saw no call (a review). Tool calls (``tools=``) are
    what the window manages. ``functions`` or ``function_call`` left at None, empty or
    the SDK's ``NOT_GIVEN`` (which is falsy) is not a use of it."""
    legacy = bool(kwargs.get("functions")) or bool(kwargs.get("function_call"))
    for m in messages:
        legacy = legacy or field_of(m, "role") == "function" or bool(field_of(m, "function_call"))
    if legacy:
        raise ValueError(
            "a client wrapped with a session or memory manages tool calls made with tools= "
            "(tool_calls, role 'tool'); the legacy functions API (functions=, "
            "function_call, role 'function') cannot be logged and sent back: use tools=, "
            "or the SDK client itself (client.unwrapped)"
        )


def _leading(kwargs: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The request's leading system and developer messages (:func:`parse`'s ``system``)."""
    messages = list(kwargs.get("messages") or [])
    head = 0
    while head < len(messages) and messages[head].get("role") in _SYSTEM_ROLES:
        head += 1
    return messages[:head]


def _given_at(key: str) -> int | None:
    """Which leading message a window's system block came from, by its key: the system
    prompt (``system``) is the first, rule ``rule:i`` the ``i + 1``-th
    (:func:`~contextos.engine.session.context_window`); None for the blocks contextos
    adds (the summary, the topic memories)."""
    if key == "system":
        return 0
    if key.startswith("rule:") and key[5:].isdigit():
        return int(key[5:]) + 1
    return None


def _instructions_as_given(window: Window, messages: list[JSON], kwargs: Mapping[str, Any]) -> None:
    """Give the rendered system blocks (in place) the role and ``name`` of the leading
    message each came from; the blocks contextos adds take the first one's role.

    Why: every leading message went out with the first one's role and no name, so a
    platform ``system`` message stacked on an app ``developer`` one (or tagged with
    ``name``) was sent as another request than the app's (a review), where the bare SDK
    sends each as given. Later instructions keep their own role already
    (:data:`~contextos.cache.render.OPENAI_ROLE_KEY`)."""
    given = _leading(kwargs)
    first = "developer" if given and given[0].get("role") == "developer" else "system"
    row = 0  # the topic block is one message (openai_messages_of), not one a block
    for block, count in zip(window.blocks, openai_messages_of(window), strict=True):
        row += count
        if block.kind != "system" or not count or row > len(messages):
            continue
        message = messages[row - 1]
        at = _given_at(block.key)
        source = given[at] if at is not None and at < len(given) else None
        message["role"] = source.get("role", first) if source is not None else first
        name = source.get("name") if source is not None else None
        if isinstance(name, str):
            message["name"] = name


def check_cache_options(options: Any) -> Mapping[str, Any]:
    """``prompt_cache_options`` as the SDK types them, or a ValueError saying what is wrong."""
    if not isinstance(options, Mapping):
        raise ValueError(f"prompt_cache_options must be a mapping; got {type(options).__name__}")
    unknown = set(options) - {"mode", "ttl"}
    if unknown:
        raise ValueError(f"prompt_cache_options: unknown keys {sorted(unknown)}; known: mode, ttl")
    if options.get("mode", "implicit") not in MAX_EXPLICIT_BREAKPOINTS:
        raise ValueError("prompt_cache_options.mode must be 'implicit' or 'explicit'")
    return options


def _mark_breakpoints(window: Window, messages: list[JSON], limit: int) -> None:
    """Put ``prompt_cache_breakpoint`` on the text part ending each planned breakpoint.

    Window blocks map to messages as :func:`contextos.cache.render_openai` lays
    them out: a system or history block's messages (:func:`openai_messages_of`: its
    last one is marked), one part of the final user message per context/question
    block; tool schemas have no part to mark.
    """
    where: dict[int, tuple[int, int | None]] = {}
    row = part = 0
    for i, count in enumerate(openai_messages_of(window)):
        if count:
            row += count
            where[i] = (row - 1, None)
    for i, block in enumerate(window.blocks):
        if block.kind in ("context", "question"):
            where[i] = (row, part)
            part += 1
    marked = 0
    for bp in sorted(window.breakpoints, key=lambda b: -b.after):
        if marked == limit:
            break
        if bp.after in where and _mark(messages, *where[bp.after]):
            marked += 1


def _as_parts(messages: list[JSON]) -> None:
    """Each message's text as one text part, on every call with breakpoints.

    Why: a breakpoint is marked on a text part, and only the marked message was turned
    into parts, so on the next call (the breakpoint moved on) the same turn went back
    to a plain string: the bytes before the previous breakpoint changed, and with
    explicit breakpoints every call wrote the history's cache again and read none of
    it (found by a review: reads stuck at the system prompt, writes growing each call).
    """
    for message in messages:
        content = message.get("content")
        if isinstance(content, str) and content:
            message["content"] = [{"type": "text", "text": content}]


def _mark(messages: list[JSON], row: int, part: int | None) -> bool:
    if row >= len(messages):
        return False
    message = messages[row]
    content = message.get("content")
    if isinstance(content, str):
        if not content:
            return False  # an assistant turn with only tool calls: no text part to mark
        content = message["content"] = [{"type": "text", "text": content}]
    if not isinstance(content, list) or not content:
        return False
    target = content[-1] if part is None else (content[part] if part < len(content) else None)
    if not isinstance(target, dict) or target.get("type") != "text":
        return False
    target["prompt_cache_breakpoint"] = {"mode": "explicit"}
    return True


def render(
    prepared: Prepared,
    kwargs: Mapping[str, Any],
    *,
    cache_key: bool | str = False,
    cache_options: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], str]:
    """``chat.completions.create`` keyword arguments for the prepared window.

    The caller's other arguments are kept; ``messages`` come from the window.
    ``cache_key``: True sends :func:`contextos.cache.prompt_cache_key`, a string
    sends that string, False sends none. ``prompt_cache_options`` (the call's
    own, else ``cache_options``) switch on explicit breakpoints (module docstring).

    Raises:
        ValueError: malformed ``prompt_cache_options``.
    """
    body = render_openai(prepared.window, prepared.model)
    messages = body["messages"]
    _instructions_as_given(prepared.window, messages, kwargs)
    own = own_content(prepared.question, "openai")
    if own is not None and messages and prepared.window.blocks[-1].kind == "question":
        messages[-1]["content"][-1:] = own
    _send_own_parts_back(prepared.window, messages)
    out = {k: v for k, v in kwargs.items() if k != "messages"}
    if body.get("tools"):  # the caller's tools, in the window's canonical form
        out["tools"] = body["tools"]
    out["messages"] = messages
    options = kwargs.get("prompt_cache_options") or cache_options
    if options is not None:
        out["prompt_cache_options"] = dict(check_cache_options(options))
        limit = MAX_EXPLICIT_BREAKPOINTS[options.get("mode", "implicit")]
        _as_parts(messages)
        _mark_breakpoints(prepared.window, messages, limit)
    if cache_key:
        out["prompt_cache_key"] = (
            cache_key if isinstance(cache_key, str) else prompt_cache_key(prepared.window)
        )
    return out, _prefix_hash(out, stable_end(prepared.window, "openai"), prepared)


def _send_own_parts_back(window: Window, messages: list[JSON]) -> None:
    """Send each user turn of the history that carries the caller's wire form as the
    caller's own content parts (in place): the question that opened the open tool loop,
    which a step of the loop sends with its images and files
    (:func:`contextos.engine.context._loop_question_given`, which counts them). The
    window's system and "messages" blocks map, in order, to the rendered messages
    (:func:`contextos.cache.render_openai`): a user turn to one."""
    row = 0
    for block, count in zip(window.blocks, openai_messages_of(window), strict=True):
        row += count
        message = messages[row - 1] if count == 1 and row <= len(messages) else None
        if block.kind != "messages" or message is None or message.get("role") != "user":
            continue
        own = own_content(block.message, "openai")
        if own is not None:
            message["content"] = own


def _prefix_hash(kwargs: Mapping[str, Any], stable_blocks: int, prepared: Prepared) -> str:
    """SHA-256 of tools and the messages before the per-call context ('' when none)."""
    has_final = any(b.kind in ("context", "question") for b in prepared.window.blocks)
    messages = list(kwargs["messages"][:-1] if has_final else kwargs["messages"])
    if not stable_blocks or not messages:
        return ""
    digest = hashlib.sha256(str(kwargs.get("model", "")).encode())
    for item in [*(kwargs.get("tools") or []), *messages]:
        digest.update(json.dumps(item, sort_keys=True, ensure_ascii=False).encode())
    return digest.hexdigest()


# -- responses -----------------------------------------------------------------


def reply_of(response: Any) -> Message:
    """The first choice's assistant message of a ``ChatCompletion``; a refusal
    (``message.refusal``, the content null) is its text.

    Why the refusal as text: read as no content, the reply was an empty turn: nothing
    was logged for it, and the app's copy of it, sent back with its history, was logged
    and sent on every later call as an empty assistant message, where the bare SDK
    sends the refusal (a review). The model then never saw that it had refused.

    The content is read by the rule its echo is (:func:`_read_text`): a list of parts
    (``[{"type": "text", "text": ...}]``, as Mistral's reasoning models and some proxies
    send it, the SDK passing it on unchecked) is its text parts' text, other parts left
    out; a value of another type is no text. Why: kept as it came, the list was the
    reply's "text": ``LLMExtractor`` raised AttributeError out of ``Memory.add``, past
    its fallback, and the wrapper's next call raised TypeError (a review, s41)."""
    choices = field_of(response, "choices")
    if not isinstance(choices, list) or not choices:
        return Message("assistant", "")
    message = field_of(choices[0], "message")
    calls = tuple(
        ToolCall(
            str(field_of(c, "id")),
            str(field_of(field_of(c, "function"), "name")),
            arguments_text(field_of(field_of(c, "function"), "arguments")),
        )
        for c in _parts_of(field_of(message, "tool_calls"))
    )
    text = _text_of(field_of(message, "content")) or _str(field_of(message, "refusal"))
    return Message("assistant", text, tool_calls=calls)


class _StreamedCall:
    """One tool call being streamed: its id, ``index`` (None where the server sends
    none), name and arguments so far."""

    __slots__ = ("arguments", "id", "index", "name")

    def __init__(self, call_id: str, index: int | None) -> None:
        self.id = call_id
        self.index = index
        self.name = ""
        self.arguments = ""


class OpenAIStreamAccumulator:
    """Reply text, tool calls and usage from ``ChatCompletionChunk`` s."""

    def __init__(self) -> None:
        self._text: list[str] = []
        self._refusal: list[str] = []
        #: the tool calls, in the order they began (:meth:`_call_of`); logged by index
        self._tools: list[_StreamedCall] = []
        self._usage: Any = None
        self._finished = False
        self._after_finish = 0  # chunks fed after choice 0's finish_reason
        self.message_id: str | None = None

    @property
    def finished(self) -> bool:
        """Choice 0's ``finish_reason`` arrived: the reply is whole (a body cut before it
        is not, however quietly it ended)."""
        return self._finished

    @property
    def holding(self) -> bool:
        """Choice 0 just finished and no usage came yet: the usage chunk follows at once,
        so the wrapper reads one more chunk before handing the finish on (a caller that
        stops at ``finish_reason`` would otherwise leave the call with no usage)."""
        return self._finished and self._usage is None and not self._after_finish

    def feed(self, chunk: Any) -> None:
        self._after_finish += self._finished
        self.message_id = self.message_id or field_of(chunk, "id")
        if field_of(chunk, "usage") is not None:
            self._usage = field_of(chunk, "usage")
        for choice in field_of(chunk, "choices") or []:
            if field_of(choice, "index", 0) != 0:
                continue
            self._finished = self._finished or field_of(choice, "finish_reason") is not None
            delta = field_of(choice, "delta")
            self._text.append(_text_of(field_of(delta, "content")))  # parts too: see reply_of
            self._refusal.append(_str(field_of(delta, "refusal")))
            for call in field_of(delta, "tool_calls") or []:
                slot = self._call_of(field_of(call, "id") or "", field_of(call, "index"))
                fn = field_of(call, "function")
                slot.name = field_of(fn, "name") or slot.name
                slot.arguments += arguments_text(field_of(fn, "arguments"))

    def _call_of(self, call_id: str, index: int | None) -> _StreamedCall:
        """The call a ``tool_calls`` delta continues, or a new one: by its ``id`` when it
        has one, else the newest call at its ``index``, else (no index) the newest call.

        Why not by ``index`` alone: OpenAI gives each parallel call its own index and
        sends the id on its first delta only, but Ollama streams every parallel call at
        index 0, each with its own id, and Gemini's OpenAI endpoint sends no index at
        all; keyed by index, two calls were logged as one, under the second id, with
        both argument strings joined into invalid JSON (a review)."""
        if call_id:
            for slot in reversed(self._tools):
                if slot.id == call_id:
                    return slot
        at = [s for s in self._tools if index is None or s.index == index]
        newest = at[-1] if at else None
        if newest is not None and (not call_id or not newest.id):
            newest.id = newest.id or call_id  # a call whose id came after its first delta
            return newest
        slot = _StreamedCall(call_id, index)
        self._tools.append(slot)
        return slot

    @property
    def has_usage(self) -> bool:
        return self._usage is not None

    def usage(self) -> Usage:
        return usage_from_openai(self._usage)

    def reply(self) -> Message:
        """The reply so far. Before the choice's ``finish_reason`` arrived, a tool call
        whose arguments are not yet whole JSON is left out: the stream was cut inside it.
        (Arguments are otherwise kept verbatim: the model may write invalid JSON, and the
        app sends back what it got.)"""
        in_order = sorted(self._tools, key=lambda c: c.index or 0)  # stable: as they began
        calls = tuple(
            ToolCall(c.id, c.name, c.arguments)
            for c in in_order
            if self._finished or _is_json(c.arguments)
        )
        text = "".join(self._text) or "".join(self._refusal)  # a refusal: see reply_of
        return Message("assistant", text, tool_calls=calls)


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except (ValueError, RecursionError):  # not JSON, or nested past the parser
        return False
    return True


def is_usage_only(chunk: Any) -> bool:
    """True for the final ``include_usage`` chunk (no choices, a usage)."""
    return not (field_of(chunk, "choices") or []) and field_of(chunk, "usage") is not None


def chat_adapter(
    *, cache_key: bool | str = False, cache_options: Mapping[str, Any] | None = None
) -> WireAdapter:
    """The :class:`~contextos.providers.base.ProviderAdapter` for ``openai.OpenAI``'s
    Chat Completions, rendering with the wrapper's prompt-cache key and options."""
    options = None if cache_options is None else check_cache_options(cache_options)
    rendering = functools.partial(render, cache_key=cache_key, cache_options=options)
    return WireAdapter(
        "openai",
        parse,
        rendering,
        usage_from_openai,
        reply_of,
        write_ttl_extra,
        OpenAIStreamAccumulator,
    )


def write_ttl_extra(response: Any) -> dict[str, Any]:
    """``cache_write_ttl`` ({"30m": n, "12h": m}) when the usage reports the split."""
    split = openai_write_ttls(field_of(response, "usage"))
    return {"cache_write_ttl": split} if split else {}


# -- the Responses API: pass-through, recorded -------------------------------------


def responses_reply(response: Any) -> Message:
    """The assistant message of a Responses API ``Response``: its ``output_text``
    parts (or, with none, its ``refusal`` parts) and ``function_call`` items
    (``types/responses/response_output_item.py``).

    Why the refusal: a message item whose content is ``[{"type": "refusal", ...}]``
    was recorded as an empty reply (a review), where Chat records a refusal as the
    reply's text (:func:`reply_of`)."""
    text: list[str] = []
    refusal: list[str] = []
    calls: list[ToolCall] = []
    for item in field_of(response, "output") or []:
        kind = field_of(item, "type")
        if kind == "message":
            for part in field_of(item, "content") or []:
                if field_of(part, "type") == "output_text":
                    text.append(field_of(part, "text") or "")
                elif field_of(part, "type") == "refusal":
                    refusal.append(field_of(part, "refusal") or "")
        elif kind == "function_call":
            calls.append(_responses_call(item))
    return Message("assistant", "".join(text) or "".join(refusal), tool_calls=tuple(calls))


def _responses_call(item: Any) -> ToolCall:
    """The :class:`ToolCall` of a ``function_call`` output item."""
    return ToolCall(
        str(field_of(item, "call_id")),
        str(field_of(item, "name")),
        arguments_text(field_of(item, "arguments")),
    )


def responses_extra(response: Any) -> dict[str, Any]:
    """``cache_write_ttl`` (see :func:`openai_write_ttls`) and ``compaction_items``: the
    ``compaction`` output items (``types/responses/response_compaction_item.py``: ``id``,
    ``encrypted_content``) a ``context_management`` compaction produced."""
    out: dict[str, Any] = {}
    split = openai_write_ttls(field_of(response, "usage"))
    if split:
        out["cache_write_ttl"] = split
    items = [
        {k: field_of(item, k) for k in ("type", "id", "encrypted_content")}
        for item in field_of(response, "output") or []
        if field_of(item, "type") == "compaction"
    ]
    if items:
        out["compaction_items"] = items
    return out


#: The events that close an output item (its text, refusal, arguments, content part,
#: the item itself). After the last item's, ``response.completed`` follows at once.
_RESPONSES_CLOSING = frozenset(
    {
        "response.output_text.done",
        "response.refusal.done",
        "response.function_call_arguments.done",
        "response.content_part.done",
        "response.output_item.done",
    }
)
#: The events that carry the whole ``Response`` (its usage, its output): the failed
#: one too, whose usage was dropped (a review; a failed response may be billed).
_RESPONSES_CARRY = (
    "response.created",
    "response.completed",
    "response.incomplete",
    "response.failed",
)


class ResponsesStreamAccumulator:
    """Text (or refusal), tool calls, usage and compaction from Responses API stream
    events."""

    def __init__(self) -> None:
        self._text: list[str] = []
        self._refusal: list[str] = []
        self._calls: list[ToolCall] = []
        self._response: Any = None
        self._finished = False
        self._closing = False
        self.message_id: str | None = None

    @property
    def finished(self) -> bool:
        """``response.completed`` or ``response.incomplete`` arrived."""
        return self._finished

    @property
    def holding(self) -> bool:
        """An output item just closed and the response has not ended: the wrapper reads
        the next event before handing the closing ones on.

        Why: the usage comes only in ``response.completed``, which follows the last
        item's ``response.output_item.done`` at once; a caller that stops at
        ``response.output_text.done`` has the whole answer, but the call was recorded
        with no usage (a review), where a Chat stream reads its usage chunk ahead. The
        hold ends at the next event whatever it is (the next item's ``added``), so no
        text is ever held back."""
        return self._closing

    def feed(self, event: Any) -> None:
        kind = field_of(event, "type")
        self._closing = kind in _RESPONSES_CLOSING
        self._finished = self._finished or kind in ("response.completed", "response.incomplete")
        if kind == "response.output_text.delta":
            self._text.append(field_of(event, "delta") or "")
        elif kind == "response.refusal.delta":
            self._refusal.append(field_of(event, "delta") or "")
        elif kind == "response.output_item.done":
            item = field_of(event, "item")
            if field_of(item, "type") == "function_call":
                self._calls.append(_responses_call(item))
        elif kind in _RESPONSES_CARRY:
            self._response = field_of(event, "response")
            self.message_id = self.message_id or field_of(self._response, "id")

    def usage(self) -> Usage:
        return usage_from_openai(field_of(self._response, "usage"))

    def reply(self) -> Message:
        """The response's own output once an end event brought it; before that (a stream
        cut or left), the text deltas (or refusal deltas) and the function calls whose
        ``response.output_item.done`` arrived: those are whole, as Chat keeps a cut
        stream's calls whose arguments parse."""
        if self._response is not None and field_of(self._response, "output"):
            return responses_reply(self._response)
        text = "".join(self._text) or "".join(self._refusal)
        return Message("assistant", text, tool_calls=tuple(self._calls))

    def extra(self) -> dict[str, Any]:
        return responses_extra(self._response)


def _responses_request(kwargs: Mapping[str, Any]) -> ChatRequest:
    return ChatRequest(model=str(kwargs.get("model", "")), stream=bool(kwargs.get("stream")))


def _as_given(prepared: Prepared, kwargs: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    return dict(kwargs), ""


#: ``client.responses.create`` as a pass-through: the request goes out as given (the
#: window is not managed for this API), and its usage, reply, cache-write TTL split and
#: compaction items are recorded with the client's other calls.
#:
#: The installed openai 3.57 has Responses-API compaction:
#: ``context_management=[{"type": "compaction", "compact_threshold": N}]``
#: (``types/responses/response_create_params.py``), ``compaction`` output items,
#: and ``client.responses.compact(...)`` (reached unwrapped, through the SDK).
RESPONSES_ADAPTER = WireAdapter(
    "openai",
    _responses_request,
    _as_given,
    usage_from_openai,
    responses_reply,
    responses_extra,
    ResponsesStreamAccumulator,
)
