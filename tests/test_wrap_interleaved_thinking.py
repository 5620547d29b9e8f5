"""Interleaved thinking goes back in the order the model gave it.

With the ``interleaved-thinking-2025-05-14`` beta the model thinks between its blocks:
``[thinking, text, thinking, tool_use]``. On the tool loop's next step the wrapper sent
that turn back as ``[thinking, thinking, text, tool_use]``: every thinking block first,
the text rebuilt from the log after them, a reasoning order the model never produced,
where the API asks for the open loop's thinking back unmodified (a review). The real
``anthropic`` SDK (``create`` and the ``beta.messages.stream`` helper) against the
loopback fake, bare and wrapped, a real SQLite memory file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from contextos.memory import Memory
from contextos.testing.embedders import HashEmbedder

anthropic = pytest.importorskip("anthropic")

from contextos.providers import wrap  # noqa: E402
from contextos.testing.fake_anthropic import FakeAnthropic  # noqa: E402

MODEL = "claude-sonnet-4-5"
TOOLS = [
    {
        "name": "calc",
        "description": "A calculator.",
        "input_schema": {"type": "object", "properties": {"expr": {"type": "string"}}},
    }
]
ARGS: dict[str, Any] = {
    "model": MODEL,
    "max_tokens": 4000,
    "thinking": {"type": "enabled", "budget_tokens": 2000},
    "tools": TOOLS,
    "betas": ["interleaved-thinking-2025-05-14"],
}


def _thinking(text: str, n: int) -> dict[str, Any]:
    return {"type": "thinking", "thinking": text, "signature": f"sig{n}"}


def _call(n: int) -> dict[str, Any]:
    return {"type": "tool_use", "id": f"toolu_{n}", "name": "calc", "input": {"expr": f"{n}+{n}"}}


#: The model's turns, one a step: thinking between text blocks and before a tool call.
STEPS: list[list[dict[str, Any]]] = [
    [
        _thinking("First thought.", 1),
        {"type": "text", "text": "Checking."},
        _thinking("Interleaved second thought.", 2),
        _call(1),
    ],
    [
        _thinking("The result is in.", 3),
        {"type": "text", "text": "One more "},
        _thinking("Between the text blocks.", 4),
        {"type": "text", "text": "check, then done."},
        _call(2),
        _thinking("After the call.", 5),
    ],
]


def _reply(body: dict[str, Any]) -> Any:
    """The step the request is at (one tool result per step), then the answer."""
    step = sum(1 for m in body["messages"] if m["role"] == "assistant")
    return STEPS[step] if step < len(STEPS) else "The answer is 2."


def _shape(content: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(b["type"], b.get("thinking") or b.get("text") or b.get("name") or "") for b in content]


def _result(n: int) -> dict[str, Any]:
    content = [{"type": "tool_result", "tool_use_id": f"toolu_{n}", "content": str(2 * n)}]
    return {"role": "user", "content": content}


def _loop(client: Any, fake: FakeAnthropic, *, stream: bool) -> list[list[tuple[str, str]]]:
    """Run the loop to its answer; each step's assistant turns as they were sent."""
    history: list[dict[str, Any]] = [{"role": "user", "content": "What is 1+1? Use the tool."}]
    sent = []
    for n in range(1, len(STEPS) + 2):
        if stream:
            with client.beta.messages.stream(messages=history, **ARGS) as events:
                reply = events.get_final_message()
        else:
            reply = client.beta.messages.create(messages=history, **ARGS)
        body = fake.messages_requests()[-1].json()
        sent.append([_shape(m["content"]) for m in body["messages"] if m["role"] == "assistant"])
        if n <= len(STEPS):
            history += [{"role": "assistant", "content": reply.content}, _result(n)]
    return sent


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
def test_the_open_loops_turns_go_back_in_the_models_order(tmp_path: Path, stream: bool) -> None:
    with (
        FakeAnthropic(reply=_reply) as fake,
        anthropic.Anthropic(base_url=fake.base_url, api_key="t", max_retries=0) as raw,
    ):
        bare = _loop(raw, fake, stream=stream)
        with Memory(tmp_path / "m.db", embedder=HashEmbedder()) as memory:
            wrapped = wrap(raw, memory=memory, session="s", user_id="ana")
            assert _loop(wrapped, fake, stream=stream) == bare
            wrapped.flush()
    # the model's order, text pieces and all (a blank one would be refused: none here)
    assert bare[-1] == [_shape(turn) for turn in STEPS]


def test_a_new_client_sends_the_logged_order_back(tmp_path: Path) -> None:
    """The order is in the session log: a client made after the reply (a restarted
    worker) sends the open loop's turn back as the model gave it."""
    with (
        FakeAnthropic(reply=_reply) as fake,
        anthropic.Anthropic(base_url=fake.base_url, api_key="t", max_retries=0) as raw,
    ):
        question = {"role": "user", "content": "What is 1+1? Use the tool."}
        with Memory(tmp_path / "m.db", embedder=HashEmbedder()) as memory:
            first = wrap(raw, memory=memory, session="s", user_id="ana")
            reply = first.beta.messages.create(messages=[question], **ARGS)
            first.flush()
        with Memory(tmp_path / "m.db", embedder=HashEmbedder()) as memory:
            later = wrap(raw, memory=memory, session="s", user_id="ana")
            turn = {"role": "assistant", "content": reply.content}
            later.beta.messages.create(messages=[question, turn, _result(1)], **ARGS)
            later.flush()
        body = fake.messages_requests()[-1].json()
    assert _shape(body["messages"][1]["content"]) == _shape(STEPS[0])


def test_a_blank_text_block_between_thoughts_is_left_out(tmp_path: Path) -> None:
    """A text block of whitespace alone between two thinking blocks is not sent back:
    the API refuses such a block (as the fake does), and the thinking keeps its order."""
    turn = [_thinking("First.", 1), {"type": "text", "text": "Look:"}, _thinking("Then.", 2)]
    turn += [{"type": "text", "text": "\n\n"}, _thinking("Last.", 3), _call(1)]
    with (
        FakeAnthropic(reply=lambda body: turn if len(body["messages"]) == 1 else "2.") as fake,
        anthropic.Anthropic(base_url=fake.base_url, api_key="t", max_retries=0) as raw,
        Memory(tmp_path / "m.db", embedder=HashEmbedder()) as memory,
    ):
        wrapped = wrap(raw, memory=memory, session="s", user_id="ana")
        question = {"role": "user", "content": "What is 1+1? Use the tool."}
        reply = wrapped.beta.messages.create(messages=[question], **ARGS)
        history = [question, {"role": "assistant", "content": reply.content}, _result(1)]
        assert wrapped.beta.messages.create(messages=history, **ARGS).content[0].text == "2."
        wrapped.flush()
        body = fake.messages_requests()[-1].json()
    assert _shape(body["messages"][1]["content"]) == _shape([*turn[:3], *turn[4:]])
