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
like the real API.

The ``reply`` hook returns the answer's text, or a list of content blocks (for
example ``tool_use`` blocks, to script an agent's tool calls; not streamed),
which go out as given, with the cache accounting above.

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
from dataclasses import dataclass
from typing import Any

from .fake_http import (
    FakeHTTPServer,
    FakeResponse,
    RecordedRequest,
    estimate_tokens,
    sse_json,
    text_pieces,
)

#: How far before a breakpoint the real API looks for an earlier cache hit.
LOOKBACK_BLOCKS = 20

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

    def wire(self, *, output_tokens: int | None = None) -> dict[str, Any]:
        return {
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


def _canonical(block: Any) -> str:
    if isinstance(block, dict):
        block = {k: v for k, v in block.items() if k != "cache_control"}
    return json.dumps(block, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


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
    return out


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


def _api_key(request: RecordedRequest) -> str:
    """The key sent as ``x-api-key`` or as an ``Authorization: Bearer`` token."""
    key = request.headers.get("x-api-key")
    if key is None:
        key = request.headers.get("authorization", "").removeprefix("Bearer").strip()
    return key


def _default_reply(body: dict[str, Any]) -> str:
    for message in reversed(body.get("messages") or []):
        if message.get("role") == "user":
            content = message.get("content")
            if not isinstance(content, str):
                content = " ".join(b.get("text", "") for b in content if isinstance(b, dict))
            return f"You said: {content[-200:]}"
    return "Hello."


class FakeAnthropic(FakeHTTPServer):
    """Loopback fake of the Anthropic API. See the module docstring."""

    def __init__(
        self,
        *,
        reply: Callable[[dict[str, Any]], str | list[dict[str, Any]]] = _default_reply,
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
        headers = {"request-id": f"req_fake_{next(self._ids)}"}
        if retry_after is not None:
            headers["retry-after"] = f"{retry_after:g}"
        body = {
            "type": "error",
            "error": {
                "type": error_type or _ERROR_TYPES.get(status, "api_error"),
                "message": message,
            },
        }
        self.enqueue(FakeResponse(status=status, json_body=body, headers=headers))

    def enqueue_reply(
        self,
        text: str,
        usage: AnthropicUsage,
        *,
        stream: bool = False,
        model: str = "claude-sonnet-4-6",
    ) -> None:
        """Answer the next request with ``text`` and exactly ``usage`` (a recorded response)."""
        self.enqueue(self._message_response(model, text, usage, stream=stream))

    # -- default behaviour ---------------------------------------------------
    def respond(self, request: RecordedRequest) -> FakeResponse:
        path = request.path.split("?")[0]
        if request.method != "POST" or path not in ("/v1/messages", "/v1/messages/count_tokens"):
            return FakeResponse(
                status=404,
                json_body={
                    "type": "error",
                    "error": {
                        "type": "not_found_error",
                        "message": f"no route {request.method} {path}",
                    },
                },
            )
        if _api_key(request) in ("", "invalid"):
            return FakeResponse(
                status=401,
                json_body={
                    "type": "error",
                    "error": {"type": "authentication_error", "message": "invalid x-api-key"},
                },
            )
        body = request.json()
        if path.endswith("count_tokens"):
            total = sum(estimate_tokens(text) for text, _ in _blocks(body))
            return FakeResponse(json_body={"input_tokens": total})
        uncached, w5, w1h, read = self.cache.account(body["model"], body)
        text = self.reply(body)
        if isinstance(text, list):  # content blocks (e.g. tool_use): a scripted agent turn
            usage = AnthropicUsage(uncached, estimate_tokens(json.dumps(text)), w5, w1h, read)
            return self._blocks_response(body["model"], text, usage)
        usage = AnthropicUsage(uncached, estimate_tokens(text), w5, w1h, read)
        return self._message_response(body["model"], text, usage, stream=bool(body.get("stream")))

    def _blocks_response(
        self, model: str, content: list[dict[str, Any]], usage: AnthropicUsage
    ) -> FakeResponse:
        """A non-streamed message whose content is the reply hook's blocks, as given."""
        msg_id = f"msg_fake_{next(self._ids):06d}"
        tool_use = any(b.get("type") == "tool_use" for b in content)
        return FakeResponse(
            json_body={
                "id": msg_id,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": content,
                "stop_reason": "tool_use" if tool_use else "end_turn",
                "stop_sequence": None,
                "usage": usage.wire(),
            },
            headers={"request-id": f"req_{msg_id}"},
        )

    def _message_response(
        self, model: str, text: str, usage: AnthropicUsage, *, stream: bool
    ) -> FakeResponse:
        msg_id = f"msg_fake_{next(self._ids):06d}"
        headers = {"request-id": f"req_{msg_id}"}
        if not stream:
            return FakeResponse(
                json_body={
                    "id": msg_id,
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [{"type": "text", "text": text}],
                    "stop_reason": "end_turn",
                    "stop_sequence": None,
                    "usage": usage.wire(),
                },
                headers=headers,
            )
        events = _stream_events(msg_id, model, text, usage, self.delta_usage == "cumulative")
        return FakeResponse(events=sse_json(events), headers=headers)


def _stream_events(
    msg_id: str, model: str, text: str, usage: AnthropicUsage, cumulative: bool
) -> Iterator[tuple[str, Any]]:
    """The event sequence of a streamed Messages response, as the real API sends it."""
    yield (
        "message_start",
        {
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
        },
    )
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
    final = usage.wire()
    final.pop("cache_creation")
    final.pop("service_tier")
    if not cumulative:
        final = {"output_tokens": usage.output_tokens}
    yield (
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": final,
        },
    )
    yield "message_stop", {"type": "message_stop"}
