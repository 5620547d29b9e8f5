"""Parallel tool calls answered one ``tool`` turn per call (as an OpenAI client logs
them, or an app over HTTP or the CLI), sent to Anthropic.

Each result went in a user message of its own, so the assistant's ``tool_use`` blocks
were not all answered in the message right after them: a request the API may refuse,
and the fake server (as the API's docs describe it) does. A review saw 45% of random
windows with parallel calls fail. Now consecutive result messages go as one; the real
``anthropic`` SDK sends each body to the fake server.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

anthropic = pytest.importorskip("anthropic")

from contextos.cache import render_anthropic  # noqa: E402
from contextos.engine.session import Session  # noqa: E402
from contextos.llm.models import get_model  # noqa: E402
from contextos.memory import Memory  # noqa: E402
from contextos.providers import wrap  # noqa: E402
from contextos.store.sqlite import SQLiteStore  # noqa: E402
from contextos.testing.fake_anthropic import FakeAnthropic  # noqa: E402
from contextos.types import Message, ToolCall  # noqa: E402

MODEL = get_model("claude-sonnet-4-6")
CITIES = ("Paris", "Rome", "Oslo")


def _parallel_exchange(session: Session, n: int, tag: str) -> None:
    calls = tuple(
        ToolCall(f"toolu_{tag}{i}", "weather", f'{{"city": "{c}"}}')
        for i, c in enumerate(CITIES[:n])
    )
    session.add(
        Message("user", f"weather in {', '.join(CITIES[:n])}? ({tag})"),
        Message("assistant", "", tool_calls=calls),
        *(
            Message("tool", f"{c}: {20 + i}C", tool_call_id=call.id, name="weather")
            for i, (c, call) in enumerate(zip(CITIES, calls, strict=False))
        ),
        Message("assistant", f"done ({tag})."),
    )


def _shape(body: dict[str, Any]) -> list[tuple[str, list[str]]]:
    return [(m["role"], [b["type"] for b in m["content"]]) for m in body["messages"]]


def test_results_of_parallel_calls_go_in_one_message(tmp_path: Path) -> None:
    session = Session(SQLiteStore(tmp_path / "m.db"), "par")
    _parallel_exchange(session, 2, "a")
    _parallel_exchange(session, 3, "b")
    body = render_anthropic(session.window(MODEL, "and tomorrow?", budget=4000), MODEL)
    assert _shape(body) == [
        ("user", ["text"]),
        ("assistant", ["tool_use", "tool_use"]),
        ("user", ["tool_result", "tool_result"]),
        ("assistant", ["text"]),
        ("user", ["text"]),
        ("assistant", ["tool_use", "tool_use", "tool_use"]),
        ("user", ["tool_result", "tool_result", "tool_result"]),
        ("assistant", ["text"]),
        ("user", ["text"]),
    ]
    results = [
        b["tool_use_id"] for m in body["messages"] for b in m["content"] if "tool_use_id" in b
    ]
    assert results == ["toolu_a0", "toolu_a1", "toolu_b0", "toolu_b1", "toolu_b2"]
    with FakeAnthropic() as fake:
        client = anthropic.Anthropic(base_url=fake.base_url, api_key="k", max_retries=0)
        client.messages.create(**{**body, "max_tokens": 64})  # a 400 before


def test_a_wrapped_call_on_such_a_log_goes_through(
    fake_anthropic: FakeAnthropic, anthropic_client: Any, memory: Memory
) -> None:
    """The log written by another client (OpenAI-style results), continued through the
    Anthropic wrapper: every call of the session was refused before."""
    session = Session(memory.store, "shared", user_id="ana", tenant=memory.tenant)
    _parallel_exchange(session, 2, "a")
    wrapped = wrap(anthropic_client, memory=memory, session="shared", user_id="ana")
    for question in ("and tomorrow?", "and the day after?"):
        wrapped.messages.create(
            model=MODEL.name, max_tokens=64, messages=[{"role": "user", "content": question}]
        )
    wrapped.flush()
    sent = fake_anthropic.messages_requests()[-1].json()
    assert ("user", ["tool_result", "tool_result"]) in _shape(sent)
