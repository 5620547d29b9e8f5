"""Render a window as a provider's request body, keeping the cached prefix byte-stable.

Providers cache a *byte prefix* of the request, so the renderers here are
deterministic: tool schemas are canonical JSON, nothing volatile (timestamps,
ids) is rendered into the cached part, and the blocks come out in the window's
order (tools, system, history, then the per-call context and the question).

- Anthropic: ``cache_control`` on the blocks where the window planned its
  breakpoints (at most 4, each prefix at least the model's minimum, 1-hour
  TTLs before 5-minute ones). A breakpoint reads the longest earlier entry
  found at most 20 blocks back and writes the prefix up to itself.
- OpenAI: no markers; the stable prefix comes first and ``prompt_cache_key``
  routes calls of one session to the same cache. Prefixes from 1,024 tokens
  are cached in 128-token steps.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from typing import Any, Literal

from contextos.engine.conversation import result_text
from contextos.engine.message_text import lone_surrogate_at
from contextos.engine.window import TOOL_RESULTS_KEY as TOOL_RESULTS_KEY
from contextos.engine.window import Block, Window, canonical_json
from contextos.llm.media_tokens import results_digest
from contextos.llm.models import ModelInfo
from contextos.types import Message

WireFormat = Literal["anthropic", "openai"]
TTL_SECONDS = {"5m": 300.0, "1h": 3600.0}
#: OpenAI keeps an idle prefix 5-10 minutes; the simulator assumes the shorter end.
OPENAI_TTL_SECONDS = 300.0
OPENAI_CACHE_STEP = 128
_KIND_ORDER = {"tools": 0, "system": 1, "messages": 2, "context": 3, "question": 3}
#: The user message put first in an Anthropic request whose history opens on the
#: assistant (see :func:`open_on_user`).
OPENING_TEXT = "(continued)"


def _check_order(window: Window) -> None:
    ranks = [_KIND_ORDER[b.kind] for b in window.blocks]
    if ranks != sorted(ranks):
        raise ValueError("window blocks must be ordered tools, system, messages, context/question")


# -- Anthropic -----------------------------------------------------------------


def _anthropic_tool(text: str) -> dict[str, Any]:
    """A tool given without an input schema takes an empty object: the Messages API
    refuses ``{}`` (its input_schema needs ``"type": "object"``). A description the app
    left out stays out (:func:`_described`)."""
    schema = json.loads(text)
    given = schema.get("input_schema") or schema.get("parameters")
    return {
        "name": schema["name"],
        **_described(schema),
        "input_schema": given or {"type": "object", "properties": {}},
    }


def _described(schema: Mapping[str, Any]) -> dict[str, Any]:
    """``{"description": ...}`` when the tool schema has one, else ``{}``: both APIs take
    a tool without one, as the bare SDKs send it (a review: it went out as ``""``)."""
    return {"description": schema["description"]} if "description" in schema else {}


def tool_input(arguments: str) -> dict[str, Any] | None:
    """A logged tool call's arguments as a ``tool_use`` input, or None when they are not
    a JSON object (a fragment from a cut stream in a log written before such calls were
    left out): that call cannot be sent, and must not stop every later request. A lone
    surrogate in a string of it (half of an emoji's pair, escaped ``"\\ud83d"``) is sent
    as U+FFFD (:func:`mended_input`).

    Why strict: Python's parser takes ``NaN``, ``Infinity`` and ``1e999`` (as inf), which
    are not JSON, and raises RecursionError on arguments nested ~2,000 deep. A model
    wrote such arguments, the OpenAI wrapper logged them verbatim, and every later
    Anthropic request of the session failed: the SDK refused to send it, the HTTP window
    answered 500 or sent ``null`` in the value's place (a review)."""
    value = tool_object(arguments)
    return None if value is None else mended_input(value)


def tool_object(arguments: str) -> dict[str, Any] | None:
    """A logged tool call's arguments parsed as :func:`tool_input` parses them, a lone
    surrogate kept as it is (the value the logged call says), or None when they are not
    a JSON object."""
    try:
        value = json.loads(arguments or "{}", parse_constant=_not_json, parse_float=_finite)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def mended_input(value: dict[str, Any]) -> dict[str, Any] | None:
    """``value`` (a parsed ``tool_use`` input) with each lone surrogate in its strings
    (keys too) replaced by U+FFFD, as the wrapper mends a reply's text
    (:func:`contextos.engine.message_text.mended`); ``value`` itself when it holds none,
    None when it cannot be encoded at all (nested past the recursion limit).

    Why mended, not left out: the SDK cannot encode such a string, so the call was left
    out of every request, and its (error) result with it (:func:`unsendable_calls`). The
    tool loop's follow-up then carried only the question again, and the model, never
    reading "content is not valid Unicode", made the same call until the loop gave up
    (a review: eight requests)."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
        return value
    except UnicodeEncodeError:
        pass
    except (ValueError, RecursionError):
        return None
    try:
        mended = _surrogates_mended(value)
    except RecursionError:
        return None
    return mended if isinstance(mended, dict) else None


def _surrogates_mended(value: Any) -> Any:
    if isinstance(value, str):
        if lone_surrogate_at(value) is None:
            return value
        return value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    if isinstance(value, dict):
        return {_surrogates_mended(k): _surrogates_mended(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_surrogates_mended(v) for v in value]
    return value


def _not_json(name: str) -> Any:
    """Refuse ``NaN``, ``Infinity`` and ``-Infinity``: :func:`json.loads` takes them."""
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    """A JSON number as a float, refused when out of range (``1e999`` reads as inf)."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number out of range: {text[:20]}")
    return value


#: The digest naming the text a tool-result turn's blocks were logged with: one rule for
#: what is sent (here) and what is counted (:func:`contextos.llm.media_tokens.media_tokens`).
_digest = results_digest


def tool_results_meta(blocks: list[dict[str, Any]], text: str) -> dict[str, Any]:
    """The :data:`TOOL_RESULTS_KEY` metadata for a tool-result turn logged as ``text``.

    Why verbatim: the log holds one text per turn, but a user turn answering parallel
    tool calls holds one ``tool_result`` per call, and the API refuses a request where
    any ``tool_use`` has no ``tool_result`` right after it.
    """
    return {"of": _digest(text), "blocks": [_unmarked(b) for b in blocks]}


def _unmarked(block: dict[str, Any], depth: int = 0) -> dict[str, Any]:
    """``block`` without the app's ``cache_control`` markers, its own and those of the
    blocks nested in its content (an image or text block of a ``tool_result``).

    Why nested too: logged with them, every old result came back marked on every later
    call, one marker more each tool step, past the API's four (a review). No request
    nests blocks deeper than a few levels; past :data:`_MAX_DEPTH` they are kept as sent."""
    out = {k: v for k, v in block.items() if k != "cache_control"}
    inner = out.get("content")
    if isinstance(inner, list) and depth < _MAX_DEPTH:
        out["content"] = [_unmarked(b, depth + 1) if isinstance(b, dict) else b for b in inner]
    return out


_MAX_DEPTH = 8


def _tool_result_blocks(msg: Message) -> list[dict[str, Any]]:
    """A tool-result turn's blocks: as sent, when logged so and not cleared since; else
    one ``tool_result`` per id with the turn's (cleared: stub) text."""
    kept = msg.metadata.get(TOOL_RESULTS_KEY)
    if not isinstance(kept, dict) or not kept.get("blocks"):
        return [
            {"type": "tool_result", "tool_use_id": msg.tool_call_id or "", "content": msg.content}
        ]
    blocks = [dict(b) for b in kept["blocks"]]
    if kept.get("of") == _digest(msg.content):
        return blocks
    results = [b for b in blocks if b.get("type") == "tool_result"]  # compaction cleared it
    return [{**b, "content": msg.content} for b in results]


def unsendable_calls(window: Window) -> frozenset[str]:
    """The ids of the window's tool calls whose arguments are not a JSON object: Anthropic
    takes a ``tool_use`` input only as an object (:func:`tool_input`), so such a call is
    not sent, and neither are its results. (An object holding a lone surrogate is sent,
    mended: :func:`mended_input`.)

    Why the results too: a call is kept in a window while a result answers it (the
    engine's units are the same for both APIs, and OpenAI takes any arguments string,
    as the OpenAI wrapper logs what the model wrote). Its result alone was an orphan
    ``tool_result``, a request the Messages API refuses, on every call of the session
    until compaction rotated the turn out (a review: arguments ``["-la"]``)."""
    return frozenset(
        call.id
        for b in window.blocks
        if b.message is not None
        for call in b.message.tool_calls
        if tool_input(call.arguments) is None
    )


def _anthropic_turn(
    msg: Message, unsendable: frozenset[str] = frozenset()
) -> tuple[str, list[dict[str, Any]]]:
    """(role, content blocks) for one logged message; no text block when its text is
    blank, and no blocks when it has nothing else to send; no result of a call in
    ``unsendable`` (:func:`unsendable_calls`).

    Why blank, not empty: the API refuses a text block of whitespace alone ("text
    content blocks must contain non-whitespace text"). A model reply of "\\n\\n" was
    logged and sent back as one, and every later call of the session failed with a
    400 until compaction rotated that turn out."""
    if msg.role == "tool":
        results = _tool_result_blocks(msg)
        if unsendable:
            results = [r for r in results if r.get("tool_use_id") not in unsendable]
        return "user", [_result_for_anthropic(r) for r in results]
    role = "assistant" if msg.role == "assistant" else "user"
    blocks: list[dict[str, Any]] = []
    if msg.content.strip():
        blocks.append({"type": "text", "text": msg.content})
    for call in msg.tool_calls:
        given = tool_input(call.arguments)
        if given is not None:
            use = {"type": "tool_use", "id": anthropic_id(call.id), "name": call.name}
            blocks.append({**use, "input": given})
    return role, blocks


#: The ``tool_use`` ids the Messages API accepts.
_ANTHROPIC_ID = re.compile(r"[a-zA-Z0-9_-]+")


def anthropic_id(call_id: str) -> str:
    """``call_id`` as a ``tool_use`` id the Messages API accepts: as it is when it does;
    else with each character outside ``[a-zA-Z0-9_-]`` as ``_`` and a digest of the whole
    id after it, so two ids that read alike so (``a.b``, ``a:b``) stay two. The same id
    always maps alike, in the call and in its results.

    Why: OpenAI-compatible servers write ids the Messages API refuses
    (``functions.weather:0``, Moonshot's Kimi K2), and a session that fell back to
    Anthropic sent them on every call (a review), as :func:`_openai_name` keeps out
    names Chat Completions refuses. The log keeps the ids as they came."""
    if _ANTHROPIC_ID.fullmatch(call_id):
        return call_id
    digest = hashlib.blake2b(call_id.encode("utf-8", "surrogatepass"), digest_size=6).hexdigest()
    return f"{re.sub(r'[^a-zA-Z0-9_-]', '_', call_id[:64])}_{digest}"


def _result_for_anthropic(block: dict[str, Any]) -> dict[str, Any]:
    """A ``tool_result`` block with its call's id as the API accepts it (:func:`anthropic_id`)."""
    if block.get("type") != "tool_result":
        return block
    return {**block, "tool_use_id": anthropic_id(str(block.get("tool_use_id") or ""))}


def _last_sent(
    messages: list[dict[str, Any]], system: list[dict[str, Any]], tools: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The blocks the newest block sent so far is the last of: the newest message
    rendered with any content, else the system blocks, else the tools (none: ``[]``)."""
    content: list[dict[str, Any]] = next(
        (m["content"] for m in reversed(messages) if m["content"]), []
    )
    return content or system or tools


def open_on_user(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``messages`` with a short user message (:data:`OPENING_TEXT`) put first when the
    first one is the assistant's.

    Why: the Messages API refuses a request whose first message is not the user's
    ("first message must use the \"user\" role"). A placed history opens on the
    assistant when the user turn that opened it sent nothing (a blank message, left
    out) or when the log itself starts with the assistant (an app's greeting). Every
    call of such a session failed until its history moved on. Dropping the assistant's
    turn would lose what it said (a greeting that set the tone); the opening costs a
    few tokens and is the same bytes on every call, so the cached prefix holds."""
    if messages and messages[0]["role"] == "assistant":
        return [{"role": "user", "content": [{"type": "text", "text": OPENING_TEXT}]}, *messages]
    return messages


def _only_results(message: dict[str, Any]) -> bool:
    content = message["content"]
    return (
        message["role"] == "user"
        and bool(content)
        and all(isinstance(b, dict) and b.get("type") == "tool_result" for b in content)
    )


def results_together(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``messages`` with consecutive user messages of only ``tool_result`` blocks made one.

    Why: parallel tool calls answered one ``tool`` turn per call (as an OpenAI client
    logs them, or an app over HTTP) rendered as one user message per result, and the
    assistant's ``tool_use`` blocks were not all answered in the message right after
    them: a window with such an exchange was a request the API may refuse (the fake
    server does; a review saw 45% of random windows with parallel calls fail). The
    blocks, their order and their breakpoints are unchanged; one message carries them."""
    out: list[dict[str, Any]] = []
    for message in messages:
        if out and _only_results(message) and _only_results(out[-1]):
            out[-1] = {**out[-1], "content": [*out[-1]["content"], *message["content"]]}
        else:
            out.append(message)
    return out


def _mark_last(content: list[dict[str, Any]], mark: dict[str, Any]) -> None:
    """Put a breakpoint on the last block of ``content`` (nothing when it is empty).

    A breakpoint planned after a turn with nothing to send goes on the block sent
    before it (a turn, else the last system block or tool): the turn is dropped from
    the request, so the prefix it closes ends there. A block already marked keeps its
    mark: it was planned first, so its TTL is the longer (1h marks precede 5m ones)."""
    if content:
        content[-1].setdefault("cache_control", mark)


#: The most ``max_tokens`` a rendered request body gets unless the caller asks for more.
#: Why: the official SDKs refuse a non-streaming request they expect to outlast 10
#: minutes (the Python SDK above about 21,333 tokens), and a 1M-context model's output
#: reserve is 62,500: the body of :func:`render_anthropic`, ``contextos window --format
#: anthropic`` and the server's window route could not be sent as it was (a review).
SDK_MAX_TOKENS = 16_384


def default_max_tokens(model: ModelInfo) -> int:
    """The ``max_tokens`` of a request body rendered for ``model`` when the caller gives
    none: the model's output reserve, at most :data:`SDK_MAX_TOKENS`. The window's budget
    still holds, as it keeps the whole reserve free."""
    return min(model.default_output_reserve(), SDK_MAX_TOKENS)


def render_anthropic(
    window: Window,
    model: ModelInfo,
    *,
    max_tokens: int | None = None,
    keep_empty: bool = False,
) -> dict[str, Any]:
    """The Messages API request body, with ``cache_control`` where the window planned it.

    Each window block becomes one tool, one system block, one message (a
    turn, with its text and tool-use blocks) or one part of the final user
    message (retrieved context and the question). A turn with nothing to send
    (an empty or blank reply in the log) is left out, as the API refuses it; a
    breakpoint planned after it goes on the turn before it. Messages that would
    open on the assistant get a user message first (:func:`open_on_user`).
    ``max_tokens``: as given, else :func:`default_max_tokens`.

    ``keep_empty``: such a turn stays in place with an empty content list, and no
    opening is added, so messages map one to one to the window's turns; the caller
    fills it (a compaction block) or drops it, and opens on the user
    (:func:`contextos.providers.anthropic.render_body`).
    """
    _check_order(window)
    unsendable = unsendable_calls(window)
    marks = {bp.after: bp.ttl for bp in window.breakpoints}
    tools: list[dict[str, Any]] = []
    system: list[dict[str, Any]] = []
    messages: list[dict[str, Any]] = []
    final: list[dict[str, Any]] = []
    for i, b in enumerate(window.blocks):
        mark: dict[str, Any] | None = {"type": "ephemeral", "ttl": marks[i]} if i in marks else None
        if b.kind == "messages":
            content: list[dict[str, Any]] = [{"type": "text", "text": b.text}]
            role: str = b.role
            if b.message is not None:
                role, content = _anthropic_turn(b.message, unsendable)
            if mark:
                _mark_last(content or _last_sent(messages, system, tools), mark)
            messages.append({"role": role, "content": content})
            continue
        block: dict[str, Any] = (
            _anthropic_tool(b.text) if b.kind == "tools" else {"type": "text", "text": b.text}
        )
        if mark:
            block["cache_control"] = mark
        {"tools": tools, "system": system}.get(b.kind, final).append(block)
    if final:
        messages.append({"role": "user", "content": final})
    body: dict[str, Any] = {
        "model": model.name,
        "max_tokens": max_tokens or default_max_tokens(model),
    }
    if tools:
        body["tools"] = tools
    if system:
        body["system"] = system
    if not keep_empty:
        messages = open_on_user(results_together([m for m in messages if m["content"]]))
    body["messages"] = messages
    return body


# -- OpenAI --------------------------------------------------------------------


def _openai_tool(text: str) -> dict[str, Any]:
    """A Chat Completions function tool; ``description`` and ``parameters`` only when the
    schema has them. Why: ``"parameters": {}`` is a schema with no ``"type": "object"``
    root, which strict OpenAI-compatible servers refuse, where a function given with no
    ``parameters`` is one with an empty parameter list (the SDK's
    ``FunctionDefinition``), as the bare SDK sends it (a review)."""
    schema = json.loads(text)
    parameters = schema.get("parameters", schema.get("input_schema"))
    function = {"name": schema["name"], **_described(schema)}
    if parameters is not None:
        function["parameters"] = parameters
    return {"type": "function", "function": function}


#: Message metadata key: the wire role of a logged OpenAI instruction turn when it was
#: ``developer`` (the neutral role is ``system``), so it goes back as it came.
OPENAI_ROLE_KEY = "openai_role"


#: The participant names Chat Completions accepts (others are a 400).
_OPENAI_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _openai_name(msg: Message | None) -> str | None:
    """A turn's speaker as Chat Completions' ``name``, when the API accepts it. Why: a
    group chat's ``{"role": "user", "name": "alice"}`` turns were logged with their
    names and sent without them, so the model could not tell its users apart (a
    review). A name the API would refuse (a space, say, from a log written otherwise)
    stays out, as before."""
    name = msg.name if msg is not None and msg.role in ("user", "assistant", "system") else None
    return name if name is not None and _OPENAI_NAME.fullmatch(name) else None


def _openai_turns(msg: Message) -> list[dict[str, Any]]:
    """The Chat Completions messages of one logged turn: one, but for a turn of several
    tool results (:func:`_openai_results`)."""
    if msg.role == "tool":
        return _openai_results(msg)
    return [_openai_turn(msg)]


def _openai_results(msg: Message) -> list[dict[str, Any]]:
    """A tool-result turn as ``tool`` messages: one per result it holds, each with its own
    text (cleared: the stub), then a user message of any text sent beside them.

    Why: the Anthropic adapter logs parallel results as one turn (its blocks in
    :data:`TOOL_RESULTS_KEY`), and it went out as one tool message of their texts
    joined, answering the first call alone: Chat Completions refuses an assistant
    message whose every ``tool_call_id`` has no tool message after it, so every OpenAI
    call of a session that ever ran parallel tools on Anthropic failed (a review)."""
    if TOOL_RESULTS_KEY not in msg.metadata:  # logged a turn per result
        return [_openai_tool_message(msg)]
    blocks = _tool_result_blocks(msg)
    results = [b for b in blocks if b.get("type") == "tool_result"]
    if len(results) < 2:
        return [_openai_tool_message(msg)]
    out: list[dict[str, Any]] = [
        {
            "role": "tool",
            "tool_call_id": str(b.get("tool_use_id") or ""),
            "content": result_text(b.get("content", "")),
        }
        for b in results
    ]
    said = "\n".join(str(b.get("text") or "") for b in blocks if b.get("type") == "text")
    if said.strip():
        out.append({"role": "user", "content": said})
    return out


def _openai_tool_message(msg: Message) -> dict[str, Any]:
    """A tool-result turn as one ``tool`` message: its text, answering its own call."""
    return {"role": "tool", "tool_call_id": msg.tool_call_id or "", "content": msg.content}


def _openai_block(block: Block, per_turn: bool) -> list[dict[str, Any]]:
    """The messages of a history block (:func:`_openai_turns`; ``per_turn``: see
    :func:`render_openai`)."""
    if block.message is None:
        return [{"role": block.role, "content": block.text}]
    if per_turn and block.message.role == "tool":
        return [_openai_tool_message(block.message)]
    return _openai_turns(block.message)


def openai_messages_of(window: Window) -> list[int]:
    """How many messages each block of ``window`` is in :func:`render_openai`'s body
    before its final user message: one for a system block or a turn, one per result
    for a turn of several tool results (:func:`_openai_turns`), none for the others
    (tools, and the context and question parts of the final message). The topic
    block is one message (:func:`_joins_next`): its last block counts it."""
    blocks = window.blocks
    return [
        (len(_openai_turns(b.message)) if b.message is not None else 1)
        if b.kind == "messages"
        else int(b.kind == "system" and not _joins_next(blocks, i))
        for i, b in enumerate(blocks)
    ]


#: The segments of the topic memory block
#: (:func:`contextos.engine.session.context_window`): its header, then its memories.
TOPIC_SEGMENTS = frozenset({"topic_header", "topic"})


def _joins_next(blocks: tuple[Block, ...], i: int) -> bool:
    """Whether system block ``i`` goes into one OpenAI system message with the next.

    Why: the topic block's header and each of its memories were a system message of
    their own, so a remembered sentence ("New policy from the operator: ...") went out
    as an instruction like the app's, with nothing tying it to the header that says it
    is an old memory (a review). The block is one message: the header, then the
    memories, a line each."""
    return (
        blocks[i].segment in TOPIC_SEGMENTS
        and i + 1 < len(blocks)
        and blocks[i + 1].kind == "system"
        and blocks[i + 1].segment in TOPIC_SEGMENTS
    )


def _openai_turn(msg: Message) -> dict[str, Any]:
    role = msg.metadata.get(OPENAI_ROLE_KEY, msg.role) if msg.role == "system" else msg.role
    out: dict[str, Any] = {"role": role, "content": msg.content}
    if _openai_name(msg) is not None:
        out["name"] = msg.name
    if msg.tool_calls:
        out["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in msg.tool_calls
        ]
    return out


#: The segments a routing key is made of: the instructions, which change only when
#: the application changes them.
KEY_SEGMENTS = ("tools", "system", "rules")


def prompt_cache_key(window: Window) -> str:
    """A stable routing key: the hash of the tools, system prompt and rules.

    Only those: the rolling summary and the topic block are system blocks too, but
    they change at every compaction or refresh, and a key that changed with them sent
    the next call of the session, whose tools and system prompt were unchanged and
    cached, to a machine that had never seen them. A window with none of
    :data:`KEY_SEGMENTS` in its layout (one assembled with other segment names) is
    keyed by its tools and system blocks.
    """
    named = {u.name for u in window.usage} & set(KEY_SEGMENTS)
    stable = [
        b.text
        for b in window.blocks
        if (b.segment in named if named else b.kind in ("tools", "system"))
    ]
    return "ctxos-" + hashlib.sha256("\x1f".join(stable).encode()).hexdigest()[:24]


def render_openai(
    window: Window, model: ModelInfo, *, cache_key: str | None = None, per_turn: bool = False
) -> dict[str, Any]:
    """The Chat Completions request body: stable prefix first, ``prompt_cache_key`` set.

    A turn of several tool results is one ``tool`` message per result, and the topic
    block (its header and memories) one system message (:func:`openai_messages_of`).
    ``per_turn``: one message per turn and per system block all the same, a turn's
    results' text joined (a body to hash block by block, as
    :func:`~contextos.cache.simulate.cache_request` does; no request to send)."""
    _check_order(window)
    tools = [_openai_tool(b.text) for b in window.blocks if b.kind == "tools"]
    messages: list[dict[str, Any]] = []
    final: list[dict[str, Any]] = []
    asker: str | None = None
    joined = False  # the previous system block joins this one's message (the topic block)
    for i, b in enumerate(window.blocks):
        if b.kind == "system":
            if joined:
                messages[-1]["content"] += "\n" + b.text
            else:
                messages.append({"role": "system", "content": b.text})
            joined = not per_turn and _joins_next(window.blocks, i)
        elif b.kind == "messages":
            messages += _openai_block(b, per_turn)
        elif b.kind in ("context", "question"):
            final.append({"type": "text", "text": b.text})
            if b.kind == "question":
                asker = _openai_name(b.message)
    if final:
        messages.append({"role": "user", "content": final, **({"name": asker} if asker else {})})
    body: dict[str, Any] = {"model": model.name}
    if tools:
        body["tools"] = tools
    body["messages"] = messages
    body["prompt_cache_key"] = cache_key or prompt_cache_key(window)
    return body


def render(
    window: Window, model: ModelInfo, wire: WireFormat, *, keep_empty: bool = False
) -> dict[str, Any]:
    """Render for ``wire`` (``anthropic`` or ``openai``); ``keep_empty``: see
    :func:`render_anthropic` (for OpenAI: one message per turn, ``per_turn`` of
    :func:`render_openai`)."""
    if wire == "anthropic":
        return render_anthropic(window, model, keep_empty=keep_empty)
    if wire == "openai":
        return render_openai(window, model, per_turn=keep_empty)
    raise ValueError(f"unknown wire format {wire!r}")


# -- the byte stream a provider caches -------------------------------------------


def wire_blocks(body: Mapping[str, Any], wire: WireFormat, *, final_parts: int) -> list[bytes]:
    """The request as the cache sees it: one canonical byte string per window block.

    Cache markers are stripped (they move between calls but are not content).
    Tools, system blocks (Anthropic), then one entry per message, except the
    last message when it carries ``final_parts`` context/question parts: one
    entry per part.
    """
    out = [canonical_json(t) for t in body.get("tools", [])]
    if wire == "anthropic":
        out += [canonical_json(_strip(b)) for b in body.get("system", [])]
    messages = list(body["messages"])
    tail = messages.pop() if final_parts else None
    for m in messages:
        if isinstance(m.get("content"), list):
            m = {**m, "content": [_strip(b) for b in m["content"]]}
        out.append(canonical_json(m))
    if tail is not None:
        out += [canonical_json([tail["role"], _strip(part)]) for part in tail["content"]]
    return [s.encode("utf-8") for s in out]


def final_parts(window: Window) -> int:
    """How many blocks of ``window`` go into the final user message."""
    return sum(1 for b in window.blocks if b.kind in ("context", "question"))


def _strip(block: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in block.items() if k != "cache_control"}


def cached_prefix(body: Mapping[str, Any], window: Window, wire: WireFormat) -> bytes:
    """Bytes up to the window's last breakpoint (Anthropic) or before the context (OpenAI).

    ``body`` is ``window`` rendered for ``wire``. An Anthropic body rendered without
    ``keep_empty`` lacks the turns that had nothing to send, so the blocks before the
    end are counted without them; and it may open on a user message the window does
    not have (:func:`open_on_user`), before the first turn, counted when the end is
    past it. An OpenAI body's prefix is every message before the final one's parts (a
    turn may be several messages: :func:`openai_messages_of`)."""
    parts = final_parts(window)
    blocks = wire_blocks(body, wire, final_parts=parts)
    end = stable_end(window, wire) if wire == "anthropic" else len(blocks) - parts
    if wire == "anthropic" and not any(not m["content"] for m in body["messages"]):
        unsendable = unsendable_calls(window)
        left_out = [i for i, b in enumerate(window.blocks) if _sends_nothing(b, unsendable)]
        opened = len(blocks) + len(left_out) > len(window.blocks)
        end -= sum(1 for i in left_out if i < end)
        if opened and end > len(body.get("tools", [])) + len(body.get("system", [])):
            end += 1
    return b"".join(blocks[:end])


def _sends_nothing(block: Block, unsendable: frozenset[str]) -> bool:
    """Whether ``block`` is a logged turn :func:`render_anthropic` leaves out."""
    if block.kind != "messages" or block.message is None:
        return False
    return not _anthropic_turn(block.message, unsendable)[1]


def stable_end(window: Window, wire: WireFormat) -> int:
    """How many leading blocks are meant to be cached."""
    if wire == "anthropic":
        return window.breakpoints[-1].after + 1 if window.breakpoints else 0
    return sum(1 for b in window.blocks if b.kind not in ("context", "question"))
