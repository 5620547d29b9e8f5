"""A local fake of OpenAI's Chat Completions API (and compatible servers), and the
basics of its Responses API (``POST /v1/responses``: JSON or SSE, cache usage with
the write TTL split, ``context_management`` compaction items).

Speaks what the real ``openai.OpenAI`` client expects at ``base_url``
(``http://127.0.0.1:PORT/v1``): ``POST /chat/completions`` as JSON or, with
``stream: true``, as ``chat.completion.chunk`` SSE events ending in
``data: [DONE]``; with ``stream_options.include_usage`` the last chunk has
empty ``choices`` and the usage, and earlier chunks carry ``"usage": null``.
Errors use OpenAI's body (``{"error": {"message", "type", "param", "code"}}``),
with ``retry-after`` on 429.

Prompt caching is simulated the way OpenAI describes it: automatic, on the
longest previously seen prefix (tools, then messages, at message boundaries)
of at least ``min_cache_tokens`` (1,024 by default), rounded down to a multiple
of ``cache_increment`` (128 by default), and reported as
``usage.prompt_tokens_details.cached_tokens``.
Tokens are one per four characters of each item's canonical JSON.

Explicit breakpoints (openai 3.57 ``PromptCacheOptions`` and the text part's
``prompt_cache_breakpoint``) are simulated too: a marked part writes the prefix
up to and including itself (the latest four with ``prompt_cache_options.mode``
``explicit``, the latest three otherwise), a later request reads the longest
written prefix it repeats, exactly (not rounded), and the tokens written past
what was read are reported as ``prompt_tokens_details.cache_write_tokens``.
``mode: explicit`` turns the implicit prefix cache off for that request's
writes. Markers are not content: they are left out of every prefix hash. A
malformed ``prompt_cache_options`` or breakpoint is refused with a 400.

The ``reply`` hook returns the answer's text, or a :data:`ToolCalls` mapping to script
an agent's tool calls: ``{"tool_calls": [{"name": "get_weather", "arguments": {"city":
"Porto"}}], "content": None}`` (``arguments`` a JSON object, or the raw text a model
sent; ``id`` optional). They go out as the API sends them: ``message.tool_calls`` with
``finish_reason: "tool_calls"``, streamed as ``delta.tool_calls`` pieces of each call's
arguments; through the Responses API as ``function_call`` output items.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

from .fake_http import (
    FakeHTTPServer,
    FakeResponse,
    RecordedRequest,
    SSEEvent,
    canonical_json,
    echo_reply,
    error_headers,
    estimate_tokens,
    json_object,
    text_pieces,
    without_key,
)

#: What the ``reply`` hook may return instead of text: the assistant message's
#: ``tool_calls`` (each ``name``, ``arguments`` and optionally ``id``) and ``content``.
ToolCalls = Mapping[str, Any]

#: OpenAI reports cache hits in increments of this many tokens.
CACHE_INCREMENT = 128

_ERROR_TYPES = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_error", None),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
    500: ("server_error", None),
}


@dataclass(frozen=True)
class OpenAIUsage:
    """Usage the fake reports: ``prompt_tokens`` includes ``cached_tokens``."""

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0
    cache_write_tokens: int = 0

    def wire(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "prompt_tokens_details": {
                "cached_tokens": self.cached_tokens,
                "cache_write_tokens": self.cache_write_tokens,
                "audio_tokens": 0,
            },
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }

    def responses_wire(self) -> dict[str, Any]:
        """The same usage as the Responses API reports it: ``input_tokens`` (cached
        included), and the cache writes with their TTL split (all 30m in this fake)."""
        return {
            "input_tokens": self.prompt_tokens,
            "input_tokens_details": {
                "cached_tokens": self.cached_tokens,
                "cache_write_tokens": self.cache_write_tokens,
                "cache_write_tokens_details": {
                    "ttl_30m_tokens": self.cache_write_tokens,
                    "ttl_12h_tokens": 0,
                },
            },
            "output_tokens": self.completion_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }


class CacheOptionsError(ValueError):
    """A ``prompt_cache_options`` or breakpoint the real API would refuse (400)."""


def _unmarked(item: Any) -> Any:
    """``item`` without ``prompt_cache_breakpoint`` markers (they are not content)."""
    return without_key(item, "prompt_cache_breakpoint")


def _parts(body: dict[str, Any]) -> list[tuple[str, bool]]:
    """The request as (canonical text, ends a breakpoint) units: each tool, each message
    (its fields, then each content part when the content is a list of parts)."""
    out: list[tuple[str, bool]] = [(canonical_json(t), False) for t in body.get("tools") or []]
    for message in body.get("messages") or []:
        content = message.get("content")
        head = canonical_json({k: v for k, v in message.items() if k != "content"})
        if not isinstance(content, list):
            out.append((head + canonical_json(content), False))
            continue
        out.append((head, False))
        for part in content:
            mark = part.get("prompt_cache_breakpoint") if isinstance(part, dict) else None
            if mark is not None and (
                not isinstance(mark, dict)
                or mark.get("mode") != "explicit"
                or mark.get("ttl", "30m") not in ("30m", "12h")
            ):
                raise CacheOptionsError(f"invalid prompt_cache_breakpoint {mark!r}")
            out.append((canonical_json(_unmarked(part)), mark is not None))
    return out


class _PrefixCache:
    """Prefix hashes of earlier requests: at message boundaries (implicit) and at
    explicit breakpoints."""

    def __init__(self, min_tokens: int, increment: int) -> None:
        self.min_tokens = min_tokens
        self.increment = increment
        self.keys: set[str] = set()
        self.explicit: set[str] = set()

    def account(self, body: dict[str, Any]) -> tuple[int, int, int]:
        """(prompt tokens, cached tokens, written tokens) for a request, remembering it."""
        options = body.get("prompt_cache_options")
        if options is not None and (
            not isinstance(options, dict)
            or set(options) - {"mode", "ttl"}
            or options.get("mode", "implicit") not in ("implicit", "explicit")
            or options.get("ttl", "30m") != "30m"
        ):
            raise CacheOptionsError(f"invalid prompt_cache_options {options!r}")
        mode = (options or {}).get("mode", "implicit")
        items = [*(body.get("tools") or []), *(body.get("messages") or [])]
        running = hashlib.sha256(str(body.get("model")).encode())
        total = 0
        cached = 0
        for item in items:
            text = canonical_json(_unmarked(item))
            running.update(text.encode())
            total += estimate_tokens(text)
            key = running.copy().hexdigest()
            if key in self.keys:
                cached = total
            if total >= self.min_tokens and mode == "implicit":
                self.keys.add(key)
        if cached < self.min_tokens:
            cached = 0
        cached -= cached % self.increment
        read, end = self._explicit(body, mode, total)
        cached = max(cached, read)
        return total, cached, max(0, end - cached)

    def _explicit(self, body: dict[str, Any], mode: str, total: int) -> tuple[int, int]:
        """(tokens read at an explicit breakpoint, end of the last one written)."""
        units = _parts(body)
        running = hashlib.sha256(str(body.get("model")).encode())
        cum = 0
        keys: list[tuple[str, int, bool]] = []
        for text, mark in units:
            running.update(text.encode())
            cum += estimate_tokens(text)
            keys.append((running.copy().hexdigest(), min(cum, total), mark))
        read = max((t for k, t, _ in keys if k in self.explicit), default=0)
        read = read if read >= self.min_tokens else 0
        marks = [(k, t) for k, t, mark in keys if mark][-(4 if mode == "explicit" else 3) :]
        marks = [(k, t) for k, t in marks if t >= self.min_tokens]
        for key, _ in marks:
            self.explicit.add(key)
        return read, marks[-1][1] if marks else 0


def _error(
    status: int,
    message: str,
    *,
    param: str | None = None,
    kind_code: tuple[str, str | None] | None = None,
) -> FakeResponse:
    """An OpenAI error response: ``{"error": {"message", "type", "param", "code"}}``, its
    type and code the status's (``_ERROR_TYPES``) unless ``kind_code`` says otherwise."""
    kind, code = kind_code or _ERROR_TYPES.get(status, ("server_error", None))
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return FakeResponse(status=status, json_body=body)


class FakeOpenAI(FakeHTTPServer):
    """Loopback fake of the OpenAI Chat Completions API. See the module docstring."""

    def __init__(
        self,
        *,
        reply: Callable[[dict[str, Any]], str | ToolCalls] = echo_reply,
        min_cache_tokens: int = 1024,
        cache_increment: int = CACHE_INCREMENT,
    ) -> None:
        super().__init__()
        self.reply = reply
        self.cache = _PrefixCache(min_cache_tokens, cache_increment)
        self._ids = itertools.count(1)

    @property
    def base_url(self) -> str:
        """What to pass as ``openai.OpenAI(base_url=...)``."""
        return self.origin + "/v1"

    def completions_requests(self) -> list[RecordedRequest]:
        """Recorded ``POST /v1/chat/completions`` requests."""
        return self.requests_to("/v1/chat/completions")

    # -- scripting -----------------------------------------------------------
    def enqueue_error(
        self, status: int, message: str = "fake error", *, retry_after: float | None = None
    ) -> None:
        """Answer the next request with an API error body (and ``retry-after`` if given)."""
        headers = error_headers("x-request-id", f"req_fake_{next(self._ids)}", retry_after)
        self.enqueue(replace(_error(status, message), headers=headers))

    def enqueue_reply(
        self,
        text: str,
        usage: OpenAIUsage,
        *,
        stream: bool = False,
        include_usage: bool = True,
        model: str = "gpt-4.1-mini",
        finish_reason: str = "stop",
        refusal: bool = False,
    ) -> None:
        """Answer the next request with ``text`` and exactly ``usage`` (a recorded response);
        ``finish_reason="length"`` makes it a reply cut at the output limit; with
        ``refusal``, ``text`` is the model's refusal (``message.refusal``, streamed as
        ``delta.refusal``; the content null)."""
        self.enqueue(
            self._completion(
                model,
                text,
                usage,
                stream=stream,
                include_usage=include_usage,
                finish_reason=finish_reason,
                refusal=refusal,
            )
        )

    # -- default behaviour ---------------------------------------------------
    def respond(self, request: RecordedRequest) -> FakeResponse:
        path = request.path.split("?")[0]
        if request.method != "POST" or path not in ("/v1/chat/completions", "/v1/responses"):
            no_route = f"no route {request.method} {path}"
            return _error(404, no_route, kind_code=("invalid_request_error", None))
        if request.headers.get("authorization", "") in ("", "Bearer", "Bearer invalid"):
            return _error(401, "Incorrect API key provided")
        body = json_object(request)
        if body is None:
            return _error(400, "the request body is not a JSON object")
        items = "input" if path == "/v1/responses" else "messages"
        for name, kind in (("model", str), (items, list | str if items == "input" else list)):
            if not isinstance(body.get(name), kind):
                return _error(400, f"Missing or invalid required parameter: '{name}'.", param=name)
        if path == "/v1/responses":
            return self._response(body)
        try:
            total, cached, written = self.cache.account(body)
        except CacheOptionsError as exc:
            return _error(400, str(exc), param="prompt_cache_options")
        try:
            text, calls = _answer(self.reply(body), self._ids)
        except ValueError as exc:
            return _error(
                500, f"the fake's reply hook returned {exc}", kind_code=("server_error", None)
            )
        usage = OpenAIUsage(total, estimate_tokens(text + canonical_json(calls)), cached, written)
        options = body.get("stream_options") or {}
        return self._completion(
            body["model"],
            text,
            usage,
            stream=bool(body.get("stream")),
            include_usage=bool(options.get("include_usage")),
            finish_reason="tool_calls" if calls else "stop",
            tool_calls=calls,
        )

    def responses_requests(self) -> list[RecordedRequest]:
        """Recorded ``POST /v1/responses`` requests."""
        return self.requests_to("/v1/responses")

    def _response(self, body: dict[str, Any]) -> FakeResponse:
        """A Responses API answer: input items from the last ``compaction`` item on (the
        server drops what it summarised), compaction once ``compact_threshold`` is
        reached, cache writes reported with their TTL split (all 30m here)."""
        given = body.get("input")
        items = (
            [{"role": "user", "content": given}] if isinstance(given, str) else list(given or [])
        )
        cut = [
            i
            for i, it in enumerate(items)
            if isinstance(it, dict) and it.get("type") == "compaction"
        ]
        if cut:
            items = items[cut[-1] :]
        if body.get("instructions"):
            items.insert(0, {"role": "developer", "content": body["instructions"]})
        try:
            total, cached, written = self.cache.account(
                {"model": body.get("model"), "tools": body.get("tools"), "messages": items}
            )
        except CacheOptionsError as exc:
            return _error(400, str(exc), param="prompt_cache_options")
        try:
            text, calls = _answer(
                self.reply({"messages": [i for i in items if "role" in i]}), self._ids
            )
        except ValueError as exc:
            return _error(
                500, f"the fake's reply hook returned {exc}", kind_code=("server_error", None)
            )
        rid = f"resp_fake{next(self._ids):06d}"
        output: list[dict[str, Any]] = []
        threshold = [
            c.get("compact_threshold")
            for c in body.get("context_management") or []
            if c.get("type") == "compaction"
        ]
        if threshold and total >= (threshold[0] or 0):
            secret = "enc_" + hashlib.sha256(canonical_json(items).encode()).hexdigest()[:16]
            output.append({"type": "compaction", "id": f"cmp_{rid}", "encrypted_content": secret})
        if text or not calls:
            output.append(
                {
                    "type": "message",
                    "id": f"msg_{rid}",
                    "role": "assistant",
                    "status": "completed",
                    "content": [{"type": "output_text", "text": text, "annotations": []}],
                }
            )
        output += [
            {
                "type": "function_call",
                "id": f"fc_{call['id']}",
                "call_id": call["id"],
                "name": call["function"]["name"],
                "arguments": call["function"]["arguments"],
                "status": "completed",
            }
            for call in calls
        ]
        spoken = estimate_tokens(text + canonical_json(calls))
        usage = OpenAIUsage(total, spoken, cached, written).responses_wire()
        response = {
            "id": rid,
            "object": "response",
            "created_at": 1_764_000_000,
            "model": body.get("model"),
            "status": "completed",
            "output": output,
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            "usage": usage,
        }
        if not body.get("stream"):
            return FakeResponse(json_body=response)
        created = {**response, "status": "in_progress", "output": [], "usage": None}
        events: list[tuple[str, dict[str, Any]]] = [
            ("response.created", {"type": "response.created", "response": created})
        ]
        for index, item in enumerate(output):
            events += _item_events(index, item)
        events.append(("response.completed", {"type": "response.completed", "response": response}))
        numbered = [(name, {**e, "sequence_number": n}) for n, (name, e) in enumerate(events)]
        return FakeResponse(
            events=[SSEEvent(data=json.dumps(e), event=name) for name, e in numbered]
        )

    def _completion(
        self,
        model: str,
        text: str,
        usage: OpenAIUsage,
        *,
        stream: bool,
        include_usage: bool,
        finish_reason: str = "stop",
        refusal: bool = False,
        tool_calls: list[dict[str, Any]] | None = None,
    ) -> FakeResponse:
        cid = f"chatcmpl-fake{next(self._ids):06d}"
        calls = tool_calls or []
        if not stream:
            return FakeResponse(
                json_body={
                    "id": cid,
                    "object": "chat.completion",
                    "created": 1_764_000_000,
                    "model": model,
                    "system_fingerprint": "fp_fake",
                    "choices": [
                        {
                            "index": 0,
                            "logprobs": None,
                            "finish_reason": finish_reason,
                            "message": {
                                "role": "assistant",
                                "content": None if refusal or (calls and not text) else text,
                                "refusal": text if refusal else None,
                                "annotations": [],
                                **({"tool_calls": calls} if calls else {}),
                            },
                        }
                    ],
                    "usage": usage.wire(),
                    "service_tier": "default",
                }
            )
        chunks = _chunks(cid, model, text, usage, include_usage, finish_reason, refusal, calls)
        events = [SSEEvent(data=json.dumps(c)) for c in chunks]
        return FakeResponse(events=[*events, SSEEvent(data="[DONE]")])


def _chunks(
    cid: str,
    model: str,
    text: str,
    usage: OpenAIUsage,
    include_usage: bool,
    finish_reason: str = "stop",
    refusal: bool = False,
    tool_calls: list[dict[str, Any]] | None = None,
) -> Iterator[dict[str, Any]]:
    """The ``chat.completion.chunk`` sequence of a streamed response: a tool call as the
    API streams one (its id, type and name first with empty arguments, then the
    arguments' text in pieces, each delta naming the call by its ``index``)."""
    extra: dict[str, Any] = {"usage": None} if include_usage else {}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": 1_764_000_000,
            "model": model,
            "system_fingerprint": "fp_fake",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            **extra,
        }

    if refusal:  # as the API streams one: no content, the refusal in pieces
        yield chunk({"role": "assistant", "content": None, "refusal": ""})
    else:
        yield chunk({"role": "assistant", "content": "", "refusal": None})
    for piece in text_pieces(text):
        yield chunk({"refusal" if refusal else "content": piece})
    for index, call in enumerate(tool_calls or []):
        opened = {**call, "function": {"name": call["function"]["name"], "arguments": ""}}
        yield chunk({"tool_calls": [{"index": index, **opened}]})
        for piece in text_pieces(call["function"]["arguments"]):
            yield chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
    yield chunk({}, finish_reason)
    if include_usage:
        yield {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": 1_764_000_000,
            "model": model,
            "system_fingerprint": "fp_fake",
            "choices": [],
            "usage": usage.wire(),
        }


def _answer(reply: str | ToolCalls, ids: Iterator[int]) -> tuple[str, list[dict[str, Any]]]:
    """The text and the wire-format ``tool_calls`` of what a ``reply`` hook returned
    (see :data:`ToolCalls`); a ValueError names what is malformed."""
    if isinstance(reply, str):
        return reply, []
    if not isinstance(reply, Mapping):
        raise ValueError(f"a {type(reply).__name__}, not text or a mapping of tool_calls")
    text = reply.get("content") or ""
    if not isinstance(text, str):
        raise ValueError("a content that is not text")
    calls = []
    for call in reply.get("tool_calls") or []:
        name, arguments = call.get("name"), call.get("arguments", {})
        if not isinstance(name, str) or not name:
            raise ValueError(f"a tool call without a name: {call!r}")
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments)
        call_id = call.get("id") or f"call_fake{next(ids):06d}"
        calls.append(
            {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
        )
    return text, calls


def _item_events(index: int, item: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The stream events of one Responses output item, in the order the SDK's
    ``responses.stream`` helper expects (item added, its text part, deltas, done)."""
    at = {"output_index": index}
    if item["type"] != "message":
        return [
            (
                "response.output_item.added",
                {"type": "response.output_item.added", "item": item, **at},
            ),
            (
                "response.output_item.done",
                {"type": "response.output_item.done", "item": item, **at},
            ),
        ]
    text = item["content"][0]["text"]
    part = {"type": "output_text", "text": "", "annotations": []}
    ids = {"item_id": item["id"], "content_index": 0, **at}
    opened = {**item, "status": "in_progress", "content": []}
    out: list[tuple[str, dict[str, Any]]] = [
        (
            "response.output_item.added",
            {"type": "response.output_item.added", "item": opened, **at},
        ),
        (
            "response.content_part.added",
            {"type": "response.content_part.added", "part": part, **ids},
        ),
    ]
    out += [
        (
            "response.output_text.delta",
            {"type": "response.output_text.delta", "delta": piece, "logprobs": [], **ids},
        )
        for piece in text_pieces(text)
    ]
    done_part = {**part, "text": text}
    out += [
        (
            "response.output_text.done",
            {"type": "response.output_text.done", "text": text, "logprobs": [], **ids},
        ),
        (
            "response.content_part.done",
            {"type": "response.content_part.done", "part": done_part, **ids},
        ),
        ("response.output_item.done", {"type": "response.output_item.done", "item": item, **at}),
    ]
    return out
