"""The memory-tool loop of ``wrap(..., memory_tools=True)``: the session-49 review's findings.

1. A forced ``tool_choice`` (Anthropic ``any`` / a named tool, OpenAI ``required`` / a
   named function) is relaxed to auto on every follow-up that carries our results, so
   the model answers instead of calling our tool again until the loop gives up.
2. After a ``create()`` cut between its requests (a 529/503 on the request carrying our
   result), the app's next question sent with the whole conversation (``[q1, q2]``) gets
   our exchange, which the log ends with, put back before ``q2``: no branch, no REDO.
3. An app tool named like one of ours is refused before anything is sent; the fake
   Anthropic server refuses a request that names a tool twice, as the API does.
4. (Anthropic) A ``tool_use`` input holding a lone surrogate is sent back mended, with
   its error result, so the model reads the error instead of being asked again.

Real ``anthropic`` and ``openai`` SDK clients against the loopback fakes, a real SQLite
file, the hash embedder.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent_scripts import (
    anthropic_text,
    anthropic_tool_use,
    openai_text,
    openai_tool_calls,
    opened,
    tool_results,
)
from contextos import Memory, Session, wrap
from contextos.agent import AgentTools, ToolLoop
from contextos.agent.core_memory import CoreMemory
from contextos.engine.conversation import REDO_KEY
from contextos.errors import ProviderHTTPError
from contextos.testing.embedders import HashEmbedder
from contextos.testing.fake_anthropic import FakeAnthropic
from contextos.testing.fake_http import FakeResponse, RecordedRequest
from contextos.testing.fake_openai import FakeOpenAI

anthropic = pytest.importorskip("anthropic")
openai = pytest.importorskip("openai")

FACT = "Allergic to peanuts."
APPEND = {"label": "human", "content": FACT}


@pytest.fixture
def memory(tmp_path: Path) -> Iterator[Memory]:
    """A real SQLite file under ``tmp_path``, closed after the test, failed or not."""
    memory = Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False)
    yield memory
    memory.close()


def _client(provider: str, fake: Any, memory: Memory, tools: Any = True) -> Any:
    if provider == "anthropic":
        sdk = opened(anthropic.Anthropic(base_url=fake.base_url, api_key="t", max_retries=0))
    else:
        sdk = opened(openai.OpenAI(base_url=fake.base_url, api_key="t", max_retries=0))
    return wrap(
        sdk,
        memory=memory,
        session="s1",
        user_id="ana",
        memory_tools=tools,
        background_commit=False,
    )


def _ask(client: Any, messages: list[Any], **kwargs: Any) -> Any:
    if client.provider == "anthropic":
        return client.messages.create(
            model="claude-sonnet-4-6", max_tokens=2048, messages=messages, **kwargs
        )
    return client.chat.completions.create(model="gpt-4.1-mini", messages=messages, **kwargs)


def _bodies(fake: Any) -> list[dict[str, Any]]:
    if isinstance(fake, FakeAnthropic):
        return [r.json() for r in fake.messages_requests()]
    return [r.json() for r in fake.completions_requests()]


def _human(memory: Memory) -> str:
    block = CoreMemory(memory, user_id="ana").get("human")
    return block.value if block is not None else ""


def _log(memory: Memory) -> list[Any]:
    return [t.message for t in Session(memory, "s1", user_id="ana").turns()]


# -- 1. a forced tool_choice ---------------------------------------------------------------


def _forced_anthropic(body: dict[str, Any]) -> str | list[dict[str, Any]]:
    """A model that follows ``tool_choice`` as the API does: forced, it calls a tool (the
    named one, or ours under ``any``); under auto it answers."""
    choice = body.get("tool_choice") or {}
    if choice.get("type") in ("tool", "any"):
        name = choice.get("name", "core_memory_append")
        return [{"type": "tool_use", "id": f"toolu_{len(body['messages'])}", "name": name,
                 "input": APPEND}]  # fmt: skip
    return "Noted."


class _ForcedOpenAI(FakeOpenAI):
    """The same model for Chat Completions: ``required`` or a named function forces a call."""

    calls = itertools.count(1)

    def respond(self, request: RecordedRequest) -> FakeResponse:
        if not request.path.endswith("/chat/completions"):
            return super().respond(request)
        choice = request.json().get("tool_choice")
        if choice == "required" or isinstance(choice, dict):
            name = choice["function"]["name"] if isinstance(choice, dict) else None
            return openai_tool_calls((name or "core_memory_append", APPEND))
        return openai_text("Noted.")


APP_TOOL = {
    "name": "lookup_order",
    "description": "Look an order up",
    "input_schema": {"type": "object", "properties": {"id": {"type": "string"}}},
}


@pytest.mark.parametrize(
    ("choice", "app_tools"),
    [
        ({"type": "tool", "name": "core_memory_append", "disable_parallel_tool_use": True}, []),
        ({"type": "any"}, []),
    ],
    ids=["named", "any"],
)
def test_forced_tool_choice_is_relaxed_after_our_results_anthropic(
    memory: Memory, choice: dict[str, Any], app_tools: list[Any]
) -> None:
    with FakeAnthropic(reply=_forced_anthropic) as fake:
        client = _client("anthropic", fake, memory)
        extra = {"tools": app_tools} if app_tools else {}
        question = {"role": "user", "content": "Remember: I am allergic to peanuts."}
        out = _ask(client, [question], tool_choice=choice, **extra)
        bodies = _bodies(fake)
    assert out.content[0].text == "Noted."
    assert len(bodies) == 2
    assert bodies[0]["tool_choice"] == choice  # the first request as the app gave it
    kept = {k: v for k, v in choice.items() if k == "disable_parallel_tool_use"}
    assert bodies[1]["tool_choice"] == {"type": "auto", **kept}
    assert _human(memory) == FACT  # the edit made once


OPENAI_APP_TOOL = {
    "type": "function",
    "function": {"name": "lookup_order", "parameters": {"type": "object", "properties": {}}},
}


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_any_tool_forced_with_one_app_tool_gets_the_app_its_call(
    memory: Memory, provider: str
) -> None:
    # An app that forces a call of a tool (structured output) must still get its call
    # after the model used ours first: the follow-up names the app's tool (relaxed to
    # auto, the model answered in prose: a review of the first fix).
    a = provider == "anthropic"
    with FakeAnthropic(reply=_forced_anthropic) if a else _ForcedOpenAI() as fake:
        client = _client(provider, fake, memory)
        question = {"role": "user", "content": "Remember: I am allergic to peanuts."}
        choice: Any = {"type": "any"} if a else "required"
        tools = [APP_TOOL if a else OPENAI_APP_TOOL]
        out = _ask(client, [question], tool_choice=choice, tools=tools)
        bodies = _bodies(fake)
    assert len(bodies) == 2
    assert bodies[0]["tool_choice"] == choice
    if a:
        assert bodies[1]["tool_choice"] == {"type": "tool", "name": "lookup_order"}
        assert [b.name for b in out.content if b.type == "tool_use"] == ["lookup_order"]
    else:
        assert bodies[1]["tool_choice"] == {
            "type": "function",
            "function": {"name": "lookup_order"},
        }
        calls = out.choices[0].message.tool_calls or []
        assert [c.function.name for c in calls] == ["lookup_order"]
    assert _human(memory) == FACT  # ours ran once, first


@pytest.mark.parametrize(
    "choice",
    [{"type": "function", "function": {"name": "core_memory_append"}}, "required"],
    ids=["named", "required"],
)
def test_forced_tool_choice_is_relaxed_after_our_results_openai(
    memory: Memory, choice: Any
) -> None:
    with _ForcedOpenAI() as fake:
        client = _client("openai", fake, memory)
        question = {"role": "user", "content": "Remember: I am allergic to peanuts."}
        out = _ask(client, [question], tool_choice=choice)
        bodies = _bodies(fake)
    assert out.choices[0].message.content == "Noted."
    assert len(bodies) == 2
    assert bodies[0]["tool_choice"] == choice
    assert bodies[1]["tool_choice"] == "auto"
    assert _human(memory) == FACT


# -- 2. a mid-loop failure, then the next question with the whole conversation -----------------


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_next_question_after_a_failed_loop_keeps_our_exchange(
    memory: Memory, provider: str
) -> None:
    a = provider == "anthropic"
    q1 = {"role": "user", "content": "I moved to Porto."}
    q2 = {"role": "user", "content": "Hello? Are you there?"}
    with FakeAnthropic() if a else FakeOpenAI() as fake:
        client = _client(provider, fake, memory)
        call = ("core_memory_append", {"label": "human", "content": "Lives in Porto."})
        fake.enqueue(anthropic_tool_use(call) if a else openai_tool_calls(call))
        fake.enqueue_error(529 if a else 503)
        with pytest.raises(ProviderHTTPError):
            _ask(client, [q1])
        fake.enqueue(anthropic_text("Yes.") if a else openai_text("Yes."))
        _ask(client, [q1, q2])  # the app keeps the unanswered question
        body = _bodies(fake)[-1]
    log = _log(memory)
    assert [m.role for m in log] == ["user", "assistant", "tool", "user", "assistant"]
    assert not any(REDO_KEY in m.metadata for m in log)  # no branch
    # The request carries the exchange between the two questions.
    assert tool_results(body) == ["Core memory block 'human' is now:\nLives in Porto."]
    text = json.dumps(body["messages"])
    assert text.index("I moved to Porto.") < text.index("Lives in Porto.") < text.index("Hello?")


@pytest.mark.parametrize("given", ["thinking", "extra_body"])
def test_with_thinking_the_next_question_is_sent_as_the_api_takes_it(
    memory: Memory, given: str
) -> None:
    """With extended thinking, the exchange is not put back before a new question: it would
    be the request's last assistant turn, which the API takes only with its thinking,
    and a window that ends with a question sends none (a review of the put-back: a 400
    on every next question). The fake refuses it as the API does. Thinking given in
    ``extra_body`` is thinking too (a review of that fix)."""
    q1 = {"role": "user", "content": "I moved to Porto."}
    q2 = {"role": "user", "content": "Hello? Are you there?"}
    enabled = {"type": "enabled", "budget_tokens": 1024}
    thinking: dict[str, Any] = (
        {"thinking": enabled} if given == "thinking" else {"extra_body": {"thinking": enabled}}
    )
    signed = {"type": "thinking", "thinking": "I should save this.", "signature": "sig-abc"}
    call = {
        "type": "tool_use",
        "id": "toolu_T1",
        "name": "core_memory_append",
        "input": {"label": "human", "content": "Lives in Porto."},
    }
    with FakeAnthropic() as fake:
        client = _client("anthropic", fake, memory)
        fake.enqueue(
            FakeResponse(
                json_body={
                    "id": "msg_1",
                    "type": "message",
                    "role": "assistant",
                    "model": "claude-sonnet-4-6",
                    "content": [signed, call],
                    "stop_reason": "tool_use",
                    "stop_sequence": None,
                    "usage": {"input_tokens": 10, "output_tokens": 5},
                }
            )
        )
        fake.enqueue_error(529)
        with pytest.raises(ProviderHTTPError):
            _ask(client, [q1], **thinking)
        answer = _ask(client, [q1, q2], **thinking)
        assert answer.content[0].type == "text"
    assert _human(memory) == "Lives in Porto."


def test_progress_dropped_unused_renders_the_snapshot_again(memory: Memory) -> None:
    """A failed loop's progress that no retry came for is dropped at the next
    ``create()``, and the edit it made reaches the pinned snapshot there (the app's
    next request left the exchange out: a branch)."""
    session = Session(memory, "s1", user_id="ana")
    loop = ToolLoop(
        AgentTools(CoreMemory(memory, user_id="ana"), session=session),
        "anthropic",
        resume_within_s=0.0,
    )
    with FakeAnthropic() as fake:
        client = _client("anthropic", fake, memory, tools=loop)
        fake.enqueue(
            anthropic_tool_use(
                ("core_memory_append", {"label": "human", "content": "Lives in Porto."})
            )
        )
        fake.enqueue_error(529)
        with pytest.raises(ProviderHTTPError):
            _ask(client, [{"role": "user", "content": "I moved to Porto."}])
        fake.enqueue(anthropic_text("Hi."))
        _ask(client, [{"role": "user", "content": "Hi there."}])
        system = json.dumps(_bodies(fake)[-1]["system"])
    assert "Lives in Porto." in system


def test_progress_dropped_that_made_no_edit_leaves_the_cached_prefix_alone(
    memory: Memory,
) -> None:
    """A failed loop that only searched, dropped unused: its snapshot is not rendered
    again (a write of the whole cached prefix), whatever earlier edits still wait for
    their compaction point (a review of the first fix: a full prefix write per failed
    search loop)."""
    session = Session(memory, "s1", user_id="ana")
    loop = ToolLoop(
        AgentTools(CoreMemory(memory, user_id="ana"), session=session),
        "anthropic",
        resume_within_s=0.0,
    )
    q1 = {"role": "user", "content": "I moved to Porto."}
    q2 = {"role": "user", "content": "What did I say about trains?"}
    with FakeAnthropic() as fake:
        client = _client("anthropic", fake, memory, tools=loop)
        edit = ("core_memory_append", {"label": "human", "content": "Lives in Porto."})
        fake.enqueue(anthropic_tool_use(edit))
        fake.enqueue(anthropic_text("Noted."))
        _ask(client, [q1])
        fake.enqueue(anthropic_tool_use(("archival_memory_search", {"query": "trains"})))
        fake.enqueue_error(529)
        with pytest.raises(ProviderHTTPError):
            _ask(client, [q2])
        before = _bodies(fake)[-1]["system"]
        fake.enqueue(anthropic_text("Hi."))
        _ask(client, [{"role": "user", "content": "Hi there."}])
        after = _bodies(fake)[-1]["system"]
    assert after == before


# -- 3. an app tool named like one of ours -------------------------------------------------


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_app_tool_named_like_ours_is_refused_before_sending(memory: Memory, provider: str) -> None:
    schema = {"type": "object", "properties": {"query": {"type": "string"}}}
    if provider == "anthropic":
        mine: dict[str, Any] = {"name": "conversation_search", "input_schema": schema}
    else:
        mine = {
            "type": "function",
            "function": {"name": "conversation_search", "parameters": schema},
        }
    with FakeAnthropic() if provider == "anthropic" else FakeOpenAI() as fake:
        client = _client(provider, fake, memory)
        with pytest.raises(TypeError, match="'conversation_search'"):
            _ask(client, [{"role": "user", "content": "Find my ticket"}], tools=[mine])
        assert _bodies(fake) == []
    assert _log(memory) == []


def test_fake_anthropic_refuses_duplicate_tool_names() -> None:
    tool = {"name": "lookup", "input_schema": {"type": "object", "properties": {}}}
    with FakeAnthropic() as fake:
        sdk = opened(anthropic.Anthropic(base_url=fake.base_url, api_key="t", max_retries=0))
        with pytest.raises(anthropic.BadRequestError) as raised:
            sdk.messages.create(
                model="claude-sonnet-4-6",
                max_tokens=16,
                messages=[{"role": "user", "content": "hi"}],
                tools=[tool, dict(tool)],  # type: ignore[list-item]
            )
        ok = sdk.messages.create(
            model="claude-sonnet-4-6",
            max_tokens=16,
            messages=[{"role": "user", "content": "hi"}],
            tools=[tool],  # type: ignore[list-item]
        )
    assert raised.value.status_code == 400
    error = raised.value.body["error"]  # type: ignore[index]
    assert error == {
        "type": "invalid_request_error",
        "message": "tools: Tool names must be unique.",
    }
    assert ok.content[0].type == "text"


# -- 4. a tool_use input holding a lone surrogate (Anthropic) -------------------------------


def _surrogate_model(body: dict[str, Any]) -> str | list[dict[str, Any]]:
    """Calls ``core_memory_append`` with half an emoji's pair; answers once it reads a
    ``tool_result`` (or anything after its answer)."""
    last = body["messages"][-1]["content"]
    if isinstance(last, list) and any(b.get("type") == "tool_result" for b in last):
        return "Saved."
    if "again" in json.dumps(last):
        return "Still here."
    bad = {"label": "human", "content": "Likes \ud83d"}
    return [{"type": "tool_use", "id": f"toolu_{len(body['messages'])}", "name":
             "core_memory_append", "input": bad}]  # fmt: skip


def test_lone_surrogate_input_is_sent_back_mended_anthropic(memory: Memory) -> None:
    with FakeAnthropic(reply=_surrogate_model) as fake:
        client = _client("anthropic", fake, memory)
        out = _ask(client, [{"role": "user", "content": "I like the pizza emoji"}])
        bodies = _bodies(fake)
    assert out.content[0].text == "Saved."
    assert len(bodies) == 2  # asked once again, not until the loop gave up
    follow = bodies[1]["messages"]
    uses = [b for m in follow for b in m["content"] if b.get("type") == "tool_use"]
    assert [u["input"] for u in uses] == [{"label": "human", "content": "Likes \ufffd"}]
    (result,) = tool_results(bodies[1])
    assert result.startswith("Error: content is not valid Unicode")


def test_lone_surrogate_exchange_is_put_back_into_a_resent_conversation(memory: Memory) -> None:
    question = {"role": "user", "content": "I like the pizza emoji"}
    with FakeAnthropic(reply=_surrogate_model) as fake:
        client = _client("anthropic", fake, memory)
        _ask(client, [question])
        whole = [question, {"role": "assistant", "content": "Saved."}]
        out = _ask(client, [*whole, {"role": "user", "content": "again"}])
        body = _bodies(fake)[-1]
    assert out.content[0].text == "Still here."
    log = _log(memory)
    assert [m.role for m in log] == ["user", "assistant", "tool", "assistant", "user", "assistant"]
    assert not any(REDO_KEY in m.metadata for m in log)
    assert len(tool_results(body)) == 1  # the exchange still in the window


APP_FUNCTIONS = [
    {"type": "function", "function": {"name": "lookup_order", "parameters": {}}},
    {"type": "custom", "custom": {"name": "run_sql"}},
]


def test_a_forced_choice_on_a_follow_up_names_the_apps_tools_in_their_own_kind() -> None:
    # A review of the second fix: one custom (free-form) tool was forced as a function,
    # and with several tools of the app's "required" stayed as given, so a model that
    # kept calling ours made the same edit seven times.
    from contextos.agent.loop import _relaxed

    ours = [{"type": "function", "function": {"name": "core_memory_append"}}]
    custom = {"tool_choice": "required", "tools": [APP_FUNCTIONS[1], *ours]}
    assert _relaxed(custom, "openai")["tool_choice"] == {
        "type": "custom",
        "custom": {"name": "run_sql"},
    }
    several = {"tool_choice": "required", "tools": [*APP_FUNCTIONS, *ours]}
    assert _relaxed(several, "openai")["tool_choice"] == {
        "type": "allowed_tools",
        "allowed_tools": {
            "mode": "required",
            "tools": [
                {"type": "function", "function": {"name": "lookup_order"}},
                {"type": "custom", "custom": {"name": "run_sql"}},
            ],
        },
    }
    tools = [APP_TOOL, {**APP_TOOL, "name": "cancel_order"}, {"name": "core_memory_append"}]
    anthropic_several = {"tool_choice": {"type": "any"}, "tools": tools}
    assert _relaxed(anthropic_several, "anthropic")["tool_choice"] == {"type": "auto"}
