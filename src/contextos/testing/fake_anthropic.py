"""A local fake of Anthropic's Messages API for tests and benchmarks.

Speaks the wire format the real ``anthropic.Anthropic`` client expects:
``POST /v1/messages`` (JSON, or SSE with ``stream: true``: ``message_start``,
``content_block_start``, ``ping``, ``content_block_delta``...,
``content_block_stop``, ``message_delta`` with usage, ``message_stop``),
``POST /v1/messages/count_tokens``, and error bodies
(``{"type": "error", "error": {...}}``) with ``retry-after`` on 429.

It also simulates prompt caching so cache accounting can be tested end to
end: every ``cache_control`` breakpoint stores the hash of the prefix up to it
(tools, then system, then messages, ``cache_control`` itself excluded); a later
request reads the longest stored prefix found at one of its breakpoints or up
to 20 blocks before one, and writes the rest up to its last breakpoint, split
into the 5-minute and 1-hour buckets by each breakpoint's ``ttl``. Tokens are
counted as one per four characters of each block's canonical JSON, so numbers
are deterministic. Prefixes shorter than ``min_cache_tokens`` are not cached,
like the real API. A top-level ``cache_control`` (automatic caching) marks the
last block; more than four markers in all, or a 1-hour marker after a 5-minute one
(the API's rule for mixed TTLs: longer first), are refused with a 400, as the API does.

The ``reply`` hook returns the answer's text, or a list of content blocks (for
example ``tool_use`` blocks, to script an agent's tool calls), which go out as
given, with the cache accounting above; with ``stream: true`` the blocks are
streamed as the API streams them (``text_delta`` pieces, a ``tool_use``'s input as
``input_json_delta`` pieces of its JSON, ``thinking_delta`` then ``signature_delta``;
a block of another type whole in its ``content_block_start``).

Server-side context management (beta; field names as in anthropic 2.14's
``types/beta/``) is simulated on the request before the cache accounting, so
its effect on cache reads is the real one: content changes from the first
cleared block on, and the cached prefix past it is lost.

- ``context_management.edits`` needs its beta in ``anthropic-beta``
  (``context-management-2025-06-27``; ``compact-2026-01-12`` for compaction),
  or the request is refused with a 400 like the real API's.
- ``clear_tool_uses_20250919``: once ``trigger`` is reached (input tokens,
  default 100,000, or a number of tool uses), the results of all but the last
  ``keep`` tool uses (default 3) are replaced by :data:`CLEARED_RESULT`, except
  uses of ``exclude_tools``; ``clear_tool_inputs`` (true, or a list of tool
  names) also empties their inputs; nothing is cleared unless at least
  ``clear_at_least`` tokens would go.
- ``clear_thinking_20251015``: thinking blocks of all but the last ``keep``
  assistant turns that have any (default 1; ``"all"`` keeps them all).
- Each applied edit is reported in ``context_management.applied_edits``
  (``cleared_input_tokens``, ``cleared_tool_uses`` / ``cleared_thinking_turns``).
- ``compact_20260112``: once the input reaches ``trigger`` (default 150,000),
  the reply starts with a ``compaction`` block (a deterministic summary that
  quotes ``instructions``), and ``usage.iterations`` holds the summarising
  pass (type ``compaction``, not in the top-level counts) and the sampling
  (type ``message``, which is). With ``pause_after_compaction`` the reply is
  the block alone, ``stop_reason`` ``compaction``. A later request that
  carries the block is read from the block on (what came before it is
  dropped, as the API does); a block the fake did not issue, or one changed
  on the way back, is refused with a 400.

Every ``POST /v1/messages`` -- scripted responses included -- is first checked
for what the real API refuses whatever the model: an empty text block
(``text content blocks must be non-empty``) or an empty message (``all
messages must have non-empty content except for the optional final assistant
message``) or a first message that is not the user's is answered with a 400
``invalid_request_error``, so a test catches any path that sends one. So is a
``tools`` list that names a tool twice (``tools: Tool names must be unique.``), and a
``tool_use`` without its ``tool_result`` in the next message (parallel calls need
one result block each), and, with ``thinking`` enabled, a tool loop whose assistant
turn lost its leading thinking block.

Example::

    with FakeAnthropic() as fake:
        client = anthropic.Anthropic(base_url=fake.base_url, api_key="test")
        client.messages.create(model="claude-sonnet-4-6", max_tokens=64,
                               messages=[{"role": "user", "content": "hi"}])
        assert fake.messages_requests()[0].json()["messages"][0]["content"] == "hi"
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from .fake_http import (
    FakeHTTPServer,
    FakeResponse,
    RecordedRequest,
    canonical_json,
    echo_reply,
    error_headers,
    estimate_tokens,
    json_object,
    sse_json,
    text_pieces,
)

#: How far before a breakpoint the real API looks for an earlier cache hit.
LOOKBACK_BLOCKS = 20

#: The most ``cache_control`` markers a request may carry (the top-level automatic one included).
MAX_CACHE_MARKERS = 4

#: What a cleared tool result's content becomes.
CLEARED_RESULT = "[tool result cleared by context management]"

#: The beta each context-management edit needs (anthropic 2.14 ``types/anthropic_beta_param.py``).
EDIT_BETAS = {
    "clear_tool_uses_20250919": "context-management-2025-06-27",
    "clear_thinking_20251015": "context-management-2025-06-27",
    "compact_20260112": "compact-2026-01-12",
}

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


@dataclass(frozen=True)
class AnthropicUsage:
    """The usage numbers the fake reports for one response."""

    input_tokens: int
    output_tokens: int
    cache_creation_5m: int = 0
    cache_creation_1h: int = 0
    cache_read: int = 0
    #: ``usage.iterations`` entries (server-side compaction), sent as given when any.
    iterations: tuple[dict[str, Any], ...] = ()

    def wire(self, *, output_tokens: int | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "input_tokens": self.input_tokens,
            "cache_creation_input_tokens": self.cache_creation_5m + self.cache_creation_1h,
            "cache_read_input_tokens": self.cache_read,
            "cache_creation": {
                "ephemeral_5m_input_tokens": self.cache_creation_5m,
                "ephemeral_1h_input_tokens": self.cache_creation_1h,
            },
            "output_tokens": self.output_tokens if output_tokens is None else output_tokens,
            "service_tier": "standard",
        }
        if self.iterations:
            out["iterations"] = [dict(it) for it in self.iterations]
        return out

    def iteration(self, kind: str) -> dict[str, Any]:
        """These counts as one ``usage.iterations`` entry of ``kind``."""
        return {
            "type": kind,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_creation_input_tokens": self.cache_creation_5m + self.cache_creation_1h,
            "cache_read_input_tokens": self.cache_read,
        }


def _canonical(block: Any) -> str:
    """A block's cache key: its canonical JSON without its own ``cache_control`` marker."""
    if isinstance(block, dict):
        block = {k: v for k, v in block.items() if k != "cache_control"}
    return canonical_json(block)


def _blocks(body: dict[str, Any]) -> list[tuple[str, str | None]]:
    """The request as cacheable blocks in cache order: (canonical JSON, ttl or None)."""
    out: list[tuple[str, str | None]] = []

    def add(block: Any, role: str = "") -> None:
        cc = block.get("cache_control") if isinstance(block, dict) else None
        ttl = (cc.get("ttl") or "5m") if isinstance(cc, dict) else None
        out.append((role + _canonical(block), ttl))

    for tool in body.get("tools") or []:
        add(tool)
    system = body.get("system")
    for block in [{"type": "text", "text": system}] if isinstance(system, str) else system or []:
        add(block)
    for message in body.get("messages") or []:
        content = message.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content or []
        for block in blocks:
            add(block, role=message.get("role", "") + ":")
    auto = body.get("cache_control")  # automatic caching: a marker on the last block
    if isinstance(auto, dict) and out and out[-1][1] is None:
        out[-1] = (out[-1][0], auto.get("ttl") or "5m")
    return out


def _marker_ttls(body: dict[str, Any]) -> list[str]:
    """The TTL of each ``cache_control`` marker in prompt order, those on blocks nested in
    a ``tool_result`` or ``search_result`` included: the API counts them all."""
    ttls = [ttl for _, ttl in _blocks(body) if ttl]
    nested: list[str] = []
    for message in body.get("messages") or []:
        content = message.get("content")
        todo = [b for b in content if isinstance(b, dict)] if isinstance(content, list) else []
        while todo:
            block = todo.pop()
            inner = block.get("content")
            if block.get("type") in ("tool_result", "search_result") and isinstance(inner, list):
                for child in inner:
                    if isinstance(child, dict):
                        cc = child.get("cache_control")
                        if isinstance(cc, dict):
                            nested.append(cc.get("ttl") or "5m")
                        todo.append(child)
    return ttls + nested


class _PromptCache:
    """Prefix hashes written at breakpoints; the fake's stand-in for the provider cache."""

    def __init__(self, min_tokens: int) -> None:
        self.min_tokens = min_tokens
        self.keys: set[str] = set()

    def account(self, model: str, body: dict[str, Any]) -> tuple[int, int, int, int]:
        """(uncached input, cache write 5m, cache write 1h, cache read) for a request."""
        blocks = _blocks(body)
        tokens = [estimate_tokens(text) for text, _ in blocks]
        running = hashlib.sha256(model.encode())
        keys: list[str] = []
        for text, _ in blocks:
            running.update(text.encode())
            keys.append(running.copy().hexdigest())
        cum = list(itertools.accumulate(tokens))
        breakpoints = [i for i, (_, ttl) in enumerate(blocks) if ttl and cum[i] >= self.min_tokens]
        if not breakpoints:
            return sum(tokens), 0, 0, 0
        read_upto = self._longest_hit(keys, breakpoints)
        read = cum[read_upto] if read_upto >= 0 else 0
        write = {"5m": 0, "1h": 0}
        start = read_upto + 1
        for bp in breakpoints:
            if bp >= start:
                write[blocks[bp][1] or "5m"] += sum(tokens[start : bp + 1])
                start = bp + 1
            self.keys.add(keys[bp])
        return sum(tokens[breakpoints[-1] + 1 :]), write["5m"], write["1h"], read

    def _longest_hit(self, keys: list[str], breakpoints: list[int]) -> int:
        for bp in reversed(breakpoints):
            for j in range(bp, max(-1, bp - LOOKBACK_BLOCKS - 1), -1):
                if keys[j] in self.keys:
                    return j
        return -1


def _request_tokens(body: dict[str, Any]) -> int:
    return sum(estimate_tokens(text) for text, _ in _blocks(body))


def _content(message: dict[str, Any]) -> list[Any]:
    content = message.get("content")
    return [{"type": "text", "text": content}] if isinstance(content, str) else list(content or [])


def _value(spec: Any, default: int) -> int:
    return int(spec["value"]) if isinstance(spec, dict) and "value" in spec else default


class ContextManagementError(ValueError):
    """A request the real API would refuse (400 ``invalid_request_error``): a context
    management edit it cannot apply, or too many cache markers."""


def _clear_tool_uses(
    body: dict[str, Any], edit: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Apply one ``clear_tool_uses_20250919`` edit: (the request as edited, the applied edit)."""
    uses = [
        (block.get("id"), block.get("name"))
        for m in body.get("messages") or []
        if m.get("role") == "assistant"
        for block in _content(m)
        if isinstance(block, dict) and block.get("type") == "tool_use"
    ]
    trigger = edit.get("trigger") or {"type": "input_tokens", "value": 100_000}
    if trigger.get("type") == "tool_uses":
        if len(uses) < _value(trigger, 0):
            return body, None
    elif _request_tokens(body) < _value(trigger, 100_000):
        return body, None
    excluded = set(edit.get("exclude_tools") or ())
    candidates = [u for u in uses if u[1] not in excluded]
    keep = _value(edit.get("keep"), 3)
    clear = dict(candidates[: max(0, len(candidates) - keep)])
    inputs = edit.get("clear_tool_inputs") or False
    if not clear:
        return body, None
    edited = json.loads(json.dumps(body))
    for message in edited.get("messages") or []:
        content = _content(message)
        for block in content:
            if not isinstance(block, dict):
                continue
            if block.get("type") == "tool_result" and block.get("tool_use_id") in clear:
                block["content"] = CLEARED_RESULT
            if block.get("type") == "tool_use" and block.get("id") in clear:
                name = clear[block["id"]]
                if inputs is True or (isinstance(inputs, list) and name in inputs):
                    block["input"] = {}
        message["content"] = content
    cleared = _request_tokens(body) - _request_tokens(edited)
    if cleared <= 0 or cleared < _value(edit.get("clear_at_least"), 0):
        return body, None
    applied = {
        "type": "clear_tool_uses_20250919",
        "cleared_input_tokens": cleared,
        "cleared_tool_uses": len(clear),
    }
    return edited, applied


def _clear_thinking(
    body: dict[str, Any], edit: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Apply one ``clear_thinking_20251015`` edit."""
    keep = edit.get("keep") or {"type": "thinking_turns", "value": 1}
    if keep == "all" or (isinstance(keep, dict) and keep.get("type") == "all"):
        return body, None
    kinds = ("thinking", "redacted_thinking")
    edited = json.loads(json.dumps(body))
    turns = [
        m
        for m in edited.get("messages") or []
        if m.get("role") == "assistant"
        and any(isinstance(b, dict) and b.get("type") in kinds for b in _content(m))
    ]
    old = turns[: max(0, len(turns) - _value(keep, 1))]
    for message in old:
        message["content"] = [
            b for b in _content(message) if not (isinstance(b, dict) and b.get("type") in kinds)
        ]
    if not old:
        return body, None
    applied = {
        "type": "clear_thinking_20251015",
        "cleared_input_tokens": _request_tokens(body) - _request_tokens(edited),
        "cleared_thinking_turns": len(old),
    }
    return edited, applied


def _api_key(request: RecordedRequest) -> str:
    """The key sent as ``x-api-key`` or as an ``Authorization: Bearer`` token."""
    key = request.headers.get("x-api-key")
    if key is None:
        key = request.headers.get("authorization", "").removeprefix("Bearer").strip()
    return key


def _invalid_body(body: dict[str, Any] | None, *, counting: bool) -> str | None:
    """The API's refusal of a body that is not a request (not a JSON object, or a
    required field missing or of the wrong type), or None."""
    if body is None:
        return "the request body is not a JSON object"
    required: list[tuple[str, type]] = [("model", str), ("messages", list)]
    if not counting:
        required.append(("max_tokens", int))
    for name, kind in required:
        if not isinstance(body.get(name), kind):
            return f"{name}: Field required"
    return None


def _error(status: int, message: str, error_type: str | None = None) -> FakeResponse:
    """An Anthropic error response: ``{"type": "error", "error": {"type", "message"}}``."""
    kind = error_type or _ERROR_TYPES.get(status, "api_error")
    body = {"type": "error", "error": {"type": kind, "message": message}}
    return FakeResponse(status=status, json_body=body)


def empty_content(body: dict[str, Any]) -> str | None:
    """The real API's refusal of a request with an empty or blank (whitespace only)
    text block, or an empty message, or None."""
    system = body.get("system")
    for block in system if isinstance(system, list) else []:
        if isinstance(block, dict) and block.get("type") == "text" and not block.get("text"):
            return "system: text content blocks must be non-empty"
    messages = body.get("messages") or []
    for i, message in enumerate(messages):
        content = message.get("content") if isinstance(message, dict) else None
        final_assistant = i == len(messages) - 1 and message.get("role") == "assistant"
        if not content and not final_assistant:
            return (
                f"messages.{i}: all messages must have non-empty content except for "
                "the optional final assistant message"
            )
        for block in content if isinstance(content, list) else []:
            if not isinstance(block, dict) or block.get("type") != "text":
                continue
            text = block.get("text")
            if not text:
                return f"messages.{i}: text content blocks must be non-empty"
            if isinstance(text, str) and not text.strip():
                return f"messages.{i}: text content blocks must contain non-whitespace text"
    return None


def duplicate_tool_names(body: dict[str, Any]) -> str | None:
    """The real API's refusal of a request that names a tool twice in ``tools``
    (``tools: Tool names must be unique.``), or None."""
    tools = body.get("tools")
    listed = tools if isinstance(tools, list) else []
    names = [t["name"] for t in listed if isinstance(t, dict) and isinstance(t.get("name"), str)]
    return "tools: Tool names must be unique." if len(names) != len(set(names)) else None


def assistant_first(body: dict[str, Any]) -> str | None:
    """The real API's refusal of a request whose first message is not the user's
    (``messages: first message must use the "user" role``), or None."""
    messages = body.get("messages") or []
    first = messages[0] if messages else None
    if isinstance(first, dict) and first.get("role") != "user":
        return 'messages: first message must use the "user" role'
    return None


def _ids_of(content: Any, kind: str, key: str) -> list[str]:
    blocks = content if isinstance(content, list) else []
    return [str(b.get(key)) for b in blocks if isinstance(b, dict) and b.get("type") == kind]


def unanswered_tool_use(body: dict[str, Any]) -> str | None:
    """The real API's refusal of a ``tool_use`` whose ``tool_result`` is not in the very
    next message (parallel calls: one result block each), or None."""
    messages = body.get("messages") or []
    for i, message in enumerate(messages[:-1]):
        if not isinstance(message, dict) or message.get("role") != "assistant":
            continue
        answered = set(_ids_of(messages[i + 1].get("content"), "tool_result", "tool_use_id"))
        missing = [
            t for t in _ids_of(message.get("content"), "tool_use", "id") if t not in answered
        ]
        if missing:
            return (
                f"messages.{i + 1}: `tool_use` ids were found without `tool_result` blocks "
                f"immediately after: {', '.join(missing)}. Each `tool_use` block must have a "
                "corresponding `tool_result` block in the next message."
            )
    return None


def thinking_dropped(body: dict[str, Any]) -> str | None:
    """The real API's refusal, with ``thinking`` enabled, of a request whose last assistant
    turn calls tools whose results follow it (a tool loop in progress, whatever the user
    says after the results) and does not start with its thinking."""
    thinking = body.get("thinking")
    messages = body.get("messages") or []
    if not isinstance(thinking, dict) or thinking.get("type") != "enabled" or len(messages) < 2:
        return None
    last = max((i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=None)
    if last is None:
        return None
    calls = set(_ids_of(messages[last].get("content"), "tool_use", "id"))
    answered = {
        i
        for m in messages[last + 1 :]
        for i in _ids_of(m.get("content"), "tool_result", "tool_use_id")
    }
    if not calls & answered:
        return None
    content = messages[last].get("content")
    first = content[0].get("type") if isinstance(content, list) and content else "text"
    if first in ("thinking", "redacted_thinking"):
        return None
    return (
        f"messages.{last}.content.0.type: Expected `thinking` or "
        f"`redacted_thinking`, but found `{first}`. When `thinking` is enabled, a final "
        "`assistant` message must start with a thinking block."
    )


class FakeAnthropic(FakeHTTPServer):
    """Loopback fake of the Anthropic API. See the module docstring."""

    def __init__(
        self,
        *,
        reply: Callable[[dict[str, Any]], str | list[dict[str, Any]]] = echo_reply,
        min_cache_tokens: int = 0,
        delta_usage: str = "cumulative",
    ) -> None:
        super().__init__()
        self.reply = reply
        self.cache = _PromptCache(min_cache_tokens)
        #: ``cumulative``: ``message_delta`` repeats input and cache counts (current API);
        #: ``output_only``: it carries ``output_tokens`` alone (older API versions).
        self.delta_usage = delta_usage
        self._ids = itertools.count(1)
        #: The compaction blocks this fake issued, by their ``encrypted_content``.
        self.compactions: dict[str, dict[str, Any]] = {}

    @property
    def base_url(self) -> str:
        """What to pass as ``anthropic.Anthropic(base_url=...)``."""
        return self.origin

    def messages_requests(self) -> list[RecordedRequest]:
        """Recorded ``POST /v1/messages`` requests (count_tokens excluded)."""
        return self.requests_to("/v1/messages")

    # -- scripting -----------------------------------------------------------
    def enqueue_error(
        self,
        status: int,
        message: str = "fake error",
        *,
        retry_after: float | None = None,
        error_type: str | None = None,
    ) -> None:
        """Answer the next request with an API error body (and ``retry-after`` if given)."""
        headers = error_headers("request-id", f"req_fake_{next(self._ids)}", retry_after)
        self.enqueue(replace(_error(status, message, error_type), headers=headers))

    def enqueue_reply(
        self,
        text: str,
        usage: AnthropicUsage,
        *,
        stream: bool = False,
        model: str = "claude-sonnet-4-6",
        stop_reason: str = "end_turn",
    ) -> None:
        """Answer the next request with ``text`` and exactly ``usage`` (a recorded response);
        ``stop_reason="max_tokens"`` makes it a reply cut at the output limit."""
        self.enqueue(
            self._message_response(model, text, usage, stream=stream, stop_reason=stop_reason)
        )

    # -- default behaviour ---------------------------------------------------
    def _dispatch(self, request: RecordedRequest) -> FakeResponse:
        """Refuse an empty text block or message before any scripted answer (module
        docstring); the script waits for the next request."""
        if request.method == "POST" and request.path.split("?")[0] == "/v1/messages":
            try:
                body = request.json()
            except ValueError:
                body = None
            refusal = None
            if isinstance(body, dict):
                refusal = (
                    duplicate_tool_names(body)
                    or empty_content(body)
                    or assistant_first(body)
                    or unanswered_tool_use(body)
                    or thinking_dropped(body)
                )
            if refusal is not None:
                with self._lock:
                    self.requests.append(request)
                return _error(400, refusal)
        return super()._dispatch(request)

    def respond(self, request: RecordedRequest) -> FakeResponse:
        path = request.path.split("?")[0]
        if request.method != "POST" or path not in ("/v1/messages", "/v1/messages/count_tokens"):
            return _error(404, f"no route {request.method} {path}")
        if _api_key(request) in ("", "invalid"):
            return _error(401, "invalid x-api-key")
        body = json_object(request)
        invalid = _invalid_body(body, counting=path.endswith("count_tokens"))
        if invalid is not None or body is None:
            return _error(400, invalid or "")
        if path.endswith("count_tokens"):
            refusal = assistant_first(body)
            if refusal is not None:
                return _error(400, refusal)
            return FakeResponse(json_body={"input_tokens": _request_tokens(body)})
        try:
            marks = len(_marker_ttls(body))
            if marks > MAX_CACHE_MARKERS:
                raise ContextManagementError(
                    f"A maximum of {MAX_CACHE_MARKERS} blocks with cache_control may be "
                    f"provided. Found {marks}."
                )
            ttls = [ttl for _, ttl in _blocks(body) if ttl]  # the TTL order: top level
            if "1h" in ttls and "5m" in ttls[: len(ttls) - 1 - ttls[::-1].index("1h")]:
                # The API's rule for mixed TTLs: every 1h entry before any 5m one.
                raise ContextManagementError(
                    "a ttl='1h' cache_control block must not come after a ttl='5m' "
                    "cache_control block"
                )
            body, applied, compact = self._context_management(request, body)
        except ContextManagementError as exc:
            return _error(400, str(exc))
        stream = bool(body.get("stream"))
        if compact is not None:
            return self._compacting_response(body, compact, applied, stream=stream)
        uncached, w5, w1h, read = self.cache.account(body["model"], body)
        text = self.reply(body)
        if isinstance(text, list):  # content blocks (e.g. tool_use): a scripted agent turn
            usage = AnthropicUsage(uncached, estimate_tokens(json.dumps(text)), w5, w1h, read)
            return self._blocks_response(body["model"], text, usage, applied, stream=stream)
        usage = AnthropicUsage(uncached, estimate_tokens(text), w5, w1h, read)
        return self._message_response(body["model"], text, usage, stream=stream, applied=applied)

    # -- server-side context management ----------------------------------------
    def _context_management(
        self, request: RecordedRequest, body: dict[str, Any]
    ) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any] | None]:
        """(the request as the model sees it, applied edits, the compact edit if it fires)."""
        body = self._from_last_compaction(body)
        edits = (body.get("context_management") or {}).get("edits") or []
        betas = {b.strip() for b in request.headers.get("anthropic-beta", "").split(",")}
        applied: list[dict[str, Any]] = []
        compact: dict[str, Any] | None = None
        for edit in edits:
            kind = edit.get("type") if isinstance(edit, dict) else None
            if kind not in EDIT_BETAS:
                raise ContextManagementError(f"context_management.edits: unknown type {kind!r}")
            if EDIT_BETAS[kind] not in betas:
                raise ContextManagementError(
                    f"{kind} requires the anthropic-beta header {EDIT_BETAS[kind]!r}"
                )
            if kind == "clear_tool_uses_20250919":
                body, done = _clear_tool_uses(body, edit)
            elif kind == "clear_thinking_20251015":
                body, done = _clear_thinking(body, edit)
            else:
                trigger = _value(edit.get("trigger"), 150_000)
                compact = edit if _request_tokens(body) >= trigger else None
                done = None
            if done is not None:
                applied.append(done)
        return body, applied, compact

    def _from_last_compaction(self, body: dict[str, Any]) -> dict[str, Any]:
        """The request from its last ``compaction`` block on (the API ignores what is before)."""
        messages = list(body.get("messages") or [])
        for i in range(len(messages) - 1, -1, -1):
            content = _content(messages[i])
            at = [
                j
                for j, b in enumerate(content)
                if isinstance(b, dict) and b.get("type") == "compaction"
            ]
            if not at:
                continue
            block = content[at[-1]]
            issued = self.compactions.get(str(block.get("encrypted_content")))
            sent = {k: v for k, v in block.items() if k != "cache_control"}
            if issued is None or sent != issued:
                raise ContextManagementError("compaction block was not returned verbatim")
            first = {**messages[i], "content": content[at[-1] :]}
            return {**body, "messages": [first, *messages[i + 1 :]]}
        return body

    def _compacting_response(
        self,
        body: dict[str, Any],
        edit: dict[str, Any],
        applied: list[dict[str, Any]],
        *,
        stream: bool,
    ) -> FakeResponse:
        """Summarise the conversation into a compaction block, then (unless paused) answer."""
        messages = body.get("messages") or []
        said = [_canonical(_content(m)) for m in messages]
        summary = f"Summary of {len(messages)} earlier messages."
        if edit.get("instructions"):
            summary += f" Instructions followed: {edit['instructions']}"
        summary += " Digest " + hashlib.sha256("".join(said).encode()).hexdigest()[:12]
        secret = f"enc_{next(self._ids):06d}"
        block = {"type": "compaction", "content": summary, "encrypted_content": secret}
        self.compactions[secret] = dict(block)
        total = _request_tokens(body)
        summarising = AnthropicUsage(total, estimate_tokens(summary)).iteration("compaction")
        model = body["model"]
        if edit.get("pause_after_compaction"):
            usage = AnthropicUsage(0, 0, iterations=(summarising,))
            return self._compaction_reply(model, [block], usage, applied, "compaction", stream)
        last = [m for m in messages[-1:] if m.get("role") == "user"]
        after = {**body, "messages": [{"role": "assistant", "content": [block]}, *last]}
        uncached, w5, w1h, read = self.cache.account(model, after)
        text = self.reply(body)
        text = text if isinstance(text, str) else json.dumps(text)
        sampled = AnthropicUsage(uncached, estimate_tokens(text), w5, w1h, read)
        usage = AnthropicUsage(
            uncached,
            estimate_tokens(text),
            w5,
            w1h,
            read,
            iterations=(summarising, sampled.iteration("message")),
        )
        content = [block, {"type": "text", "text": text}]
        return self._compaction_reply(model, content, usage, applied, "end_turn", stream)

    def _compaction_reply(
        self,
        model: str,
        content: list[dict[str, Any]],
        usage: AnthropicUsage,
        applied: list[dict[str, Any]],
        stop_reason: str,
        stream: bool,
    ) -> FakeResponse:
        msg_id = f"msg_fake_{next(self._ids):06d}"
        headers = {"request-id": f"req_{msg_id}"}
        if not stream:
            body = _message_json(msg_id, model, content, stop_reason, usage.wire(), applied)
            return FakeResponse(json_body=body, headers=headers)
        events = _compaction_events(msg_id, model, content, usage, applied, stop_reason)
        return FakeResponse(events=sse_json(events), headers=headers)

    def _blocks_response(
        self,
        model: str,
        content: list[dict[str, Any]],
        usage: AnthropicUsage,
        applied: list[dict[str, Any]] | None = None,
        *,
        stream: bool = False,
    ) -> FakeResponse:
        """A message whose content is the reply hook's blocks, as given; streamed as
        :func:`_blocks_events` when the request asked for a stream.

        Why streamed: answered with a JSON body, a ``stream=True`` request got a body
        the SDK's stream cannot read, so a streamed tool-use turn could not be scripted
        by its blocks."""
        msg_id = f"msg_fake_{next(self._ids):06d}"
        headers = {"request-id": f"req_{msg_id}"}
        tool_use = any(b.get("type") == "tool_use" for b in content)
        stop = "tool_use" if tool_use else "end_turn"
        if not stream:
            return FakeResponse(
                json_body=_message_json(msg_id, model, content, stop, usage.wire(), applied),
                headers=headers,
            )
        cumulative = self.delta_usage == "cumulative"
        events = _blocks_events(msg_id, model, content, usage, cumulative, applied, stop)
        return FakeResponse(events=sse_json(events), headers=headers)

    def _message_response(
        self,
        model: str,
        text: str,
        usage: AnthropicUsage,
        *,
        stream: bool,
        applied: list[dict[str, Any]] | None = None,
        stop_reason: str = "end_turn",
    ) -> FakeResponse:
        msg_id = f"msg_fake_{next(self._ids):06d}"
        headers = {"request-id": f"req_{msg_id}"}
        if not stream:
            content = [{"type": "text", "text": text}]
            return FakeResponse(
                json_body=_message_json(msg_id, model, content, stop_reason, usage.wire(), applied),
                headers=headers,
            )
        events = _stream_events(
            msg_id, model, text, usage, self.delta_usage == "cumulative", applied, stop_reason
        )
        return FakeResponse(events=sse_json(events), headers=headers)


def _message_json(
    msg_id: str,
    model: str,
    content: list[dict[str, Any]],
    stop_reason: str,
    usage: dict[str, Any],
    applied: list[dict[str, Any]] | None,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": msg_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": usage,
    }
    if applied:
        out["context_management"] = {"applied_edits": applied}
    return out


def _compaction_events(
    msg_id: str,
    model: str,
    content: list[dict[str, Any]],
    usage: AnthropicUsage,
    applied: list[dict[str, Any]],
    stop_reason: str,
) -> Iterator[tuple[str, Any]]:
    """A streamed compacting reply: the block (its summary in one ``compaction_delta``),
    then the text, then ``message_delta`` with the iterations and applied edits."""
    start = _message_json(msg_id, model, [], stop_reason, usage.wire(output_tokens=1), None)
    start["stop_reason"] = None
    yield "message_start", {"type": "message_start", "message": start}
    for index, block in enumerate(content):
        if block["type"] == "compaction":
            opened = {"type": "compaction", "content": None}
            delta = {
                "type": "compaction_delta",
                "content": block["content"],
                "encrypted_content": block["encrypted_content"],
            }
        else:
            opened = {"type": "text", "text": ""}
            delta = {"type": "text_delta", "text": block["text"]}
        yield (
            "content_block_start",
            {"type": "content_block_start", "index": index, "content_block": opened},
        )
        yield "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
        yield "content_block_stop", {"type": "content_block_stop", "index": index}
    final = usage.wire()
    final.pop("cache_creation")
    final.pop("service_tier")
    event: dict[str, Any] = {
        "type": "message_delta",
        "delta": {"stop_reason": stop_reason, "stop_sequence": None},
        "usage": final,
    }
    if applied:
        event["context_management"] = {"applied_edits": applied}
    yield "message_delta", event
    yield "message_stop", {"type": "message_stop"}


def message_start(msg_id: str, model: str, usage: AnthropicUsage) -> dict[str, Any]:
    """The ``message_start`` event of a streamed reply (no content yet, one output token
    counted), as the real API sends it; tests that script a stream event by event (a
    cut, an error mid-stream) start with it."""
    return {
        "type": "message_start",
        "message": {
            "id": msg_id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage.wire(output_tokens=1),
        },
    }


def _stream_events(
    msg_id: str,
    model: str,
    text: str,
    usage: AnthropicUsage,
    cumulative: bool,
    applied: list[dict[str, Any]] | None = None,
    stop_reason: str = "end_turn",
) -> Iterator[tuple[str, Any]]:
    """The event sequence of a streamed Messages response, as the real API sends it."""
    yield "message_start", message_start(msg_id, model, usage)
    yield (
        "content_block_start",
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    )
    yield "ping", {"type": "ping"}
    for piece in text_pieces(text):
        yield (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": piece},
            },
        )
    yield "content_block_stop", {"type": "content_block_stop", "index": 0}
    yield from _stream_end(usage, cumulative, applied, stop_reason)


def _blocks_events(
    msg_id: str,
    model: str,
    content: list[dict[str, Any]],
    usage: AnthropicUsage,
    cumulative: bool,
    applied: list[dict[str, Any]] | None,
    stop_reason: str,
) -> Iterator[tuple[str, Any]]:
    """The events of a streamed reply holding ``content`` (the reply hook's blocks), each
    block opened empty and filled by its deltas as the API streams it (:func:`_opened`)."""
    yield "message_start", message_start(msg_id, model, usage)
    yield "ping", {"type": "ping"}
    for index, block in enumerate(content):
        opened, deltas = _opened(block)
        yield (
            "content_block_start",
            {"type": "content_block_start", "index": index, "content_block": opened},
        )
        for delta in deltas:
            yield (
                "content_block_delta",
                {"type": "content_block_delta", "index": index, "delta": delta},
            )
        yield "content_block_stop", {"type": "content_block_stop", "index": index}
    yield from _stream_end(usage, cumulative, applied, stop_reason)


#: Blocks whose ``input`` streams as ``input_json_delta`` pieces of its JSON.
_INPUT_BLOCKS = ("tool_use", "server_tool_use", "mcp_tool_use")


def _opened(block: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(the ``content_block_start`` block, its deltas) of ``block`` streamed."""
    kind = block.get("type")
    if kind == "text":
        opened = {**block, "text": ""}
        deltas = [{"type": "text_delta", "text": p} for p in text_pieces(block.get("text", ""))]
        if block.get("citations"):
            opened["citations"] = []
            deltas += [{"type": "citations_delta", "citation": c} for c in block["citations"]]
        return opened, deltas
    if kind in _INPUT_BLOCKS:
        raw = json.dumps(block.get("input") or {})
        pieces = text_pieces(raw, 7) if raw != "{}" else [""]
        return {**block, "input": {}}, [
            {"type": "input_json_delta", "partial_json": p} for p in pieces
        ]
    if kind == "thinking":
        opened = {**block, "thinking": "", "signature": ""}
        deltas = [
            {"type": "thinking_delta", "thinking": p}
            for p in text_pieces(block.get("thinking", ""))
        ]
        signed = {"type": "signature_delta", "signature": block.get("signature", "")}
        return opened, [*deltas, signed]
    return dict(block), []  # redacted_thinking, tool results...: whole at its start


def _stream_end(
    usage: AnthropicUsage,
    cumulative: bool,
    applied: list[dict[str, Any]] | None,
    stop_reason: str,
) -> Iterator[tuple[str, Any]]:
    """``message_delta`` (the stop reason, the usage) and ``message_stop``."""
    final = usage.wire()
    final.pop("cache_creation")
    final.pop("service_tier")
    if not cumulative:
        final = {"output_tokens": usage.output_tokens}
    delta: dict[str, Any] = {
        "type": "message_delta",
        "delta": {"stop_reason": stop_reason, "stop_sequence": None},
        "usage": final,
    }
    if applied:
        delta["context_management"] = {"applied_edits": applied}
    yield "message_delta", delta
    yield "message_stop", {"type": "message_stop"}
