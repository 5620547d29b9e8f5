"""Scripted model turns for the agent tests: tool calls and answers, in each wire format.

The fakes' existing scripting hook (``enqueue`` a ``FakeResponse``) answers the
next request with exactly this body, so a test plays the model's side.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from typing import Any

import pytest

from contextos.testing.fake_http import FakeResponse

_ids = itertools.count(1)


def _anthropic(
    content: list[dict[str, Any]], stop: str, output_tokens: int, input_tokens: int, cache_read: int
) -> FakeResponse:
    """An Anthropic ``message`` body with ``content`` (numbered ids, fixed model)."""
    return FakeResponse(
        json_body={
            "id": f"msg_script_{next(_ids)}",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-6",
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": {
                "input_tokens": input_tokens,
                "output_tokens": output_tokens,
                "cache_read_input_tokens": cache_read,
                "cache_creation_input_tokens": 0,
            },
        }
    )


def anthropic_tool_use(
    *calls: tuple[str, dict[str, Any]], input_tokens: int = 100, cache_read: int = 0
) -> FakeResponse:
    """An Anthropic message whose content is ``tool_use`` blocks (name, input)."""
    n = next(_ids)
    blocks = [
        {"type": "tool_use", "id": f"toolu_{n}_{i}", "name": name, "input": args}
        for i, (name, args) in enumerate(calls)
    ]
    return _anthropic(blocks, "tool_use", 20, input_tokens, cache_read)


def anthropic_text(text: str, *, input_tokens: int = 100, cache_read: int = 0) -> FakeResponse:
    """An Anthropic message that answers with ``text`` (the end of a tool loop)."""
    return _anthropic([{"type": "text", "text": text}], "end_turn", 10, input_tokens, cache_read)


def _completion(message: dict[str, Any], finish: str, prompt_tokens: int) -> FakeResponse:
    n = next(_ids)
    return FakeResponse(
        json_body={
            "id": f"chatcmpl-script{n}",
            "object": "chat.completion",
            "created": 1_764_000_000,
            "model": "gpt-4.1-mini",
            "choices": [
                {"index": 0, "logprobs": None, "finish_reason": finish, "message": message}
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": 15,
                "total_tokens": prompt_tokens + 15,
            },
        }
    )


def openai_tool_calls(*calls: tuple[str, dict[str, Any]], prompt_tokens: int = 100) -> FakeResponse:
    """A chat completion whose message carries ``tool_calls`` (name, arguments)."""
    return openai_raw_tool_calls(
        *((name, json.dumps(args)) for name, args in calls), prompt_tokens=prompt_tokens
    )


def openai_raw_tool_calls(*calls: tuple[str, str], prompt_tokens: int = 100) -> FakeResponse:
    """A chat completion whose ``tool_calls`` carry arguments as the raw JSON text given
    (a model may send any text there, even JSON nested past Python's recursion limit)."""
    n = next(_ids)
    message = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": f"call_{n}_{i}",
                "type": "function",
                "function": {"name": name, "arguments": args},
            }
            for i, (name, args) in enumerate(calls)
        ],
    }
    return _completion(message, "tool_calls", prompt_tokens)


def openai_text(text: str, *, prompt_tokens: int = 100) -> FakeResponse:
    """A chat completion answering with ``text``."""
    return _completion({"role": "assistant", "content": text}, "stop", prompt_tokens)


def tool_results(body: dict[str, Any]) -> list[str]:
    """The tool results an Anthropic or OpenAI request body carries, in order."""
    out: list[str] = []
    for message in body.get("messages") or []:
        if message.get("role") == "tool":
            out.append(str(message.get("content")))
        content = message.get("content")
        if isinstance(content, list):
            for block in content:
                if isinstance(block, dict) and block.get("type") == "tool_result":
                    inner = block.get("content")
                    if isinstance(inner, list):
                        inner = "".join(b.get("text", "") for b in inner)
                    out.append(str(inner))
    return out


_OPEN: list[Any] = []


def opened(client: Any) -> Any:
    """Register an SDK client to be closed after the test (no stray sockets)."""
    _OPEN.append(client)
    return client


@pytest.fixture(autouse=True)
def close_sdk_clients() -> Iterator[None]:
    """Close every client a test registered with :func:`opened`."""
    yield
    while _OPEN:
        _OPEN.pop().close()
