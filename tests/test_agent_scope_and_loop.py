"""Review fixes of the agent's memory: archival memory read back from exactly its owner
scope (tools, wrap, HTTP); a response calling the app's tools and ours at once (our
results go beside the app's, nothing dropped); the step limit (no call run whose result
can never be sent); and a NUL in a memory file (the SDK's ToolError)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace as NS
from typing import Any

import anthropic
import openai
import pytest
from anthropic.lib.tools import ToolError

from agent_scripts import (
    _anthropic,
    anthropic_text,
    anthropic_tool_use,
    close_sdk_clients,  # noqa: F401 - autouse: closes the SDK clients
    openai_text,
    openai_tool_calls,
    opened,
    tool_results,
)
from contextos import Filter, Memory, wrap
from contextos.agent import AgentTools, MemoryTool, ToolLoop
from contextos.agent.core_memory import CoreMemory
from contextos.agent.files import MemoryFiles
from contextos.agent.loop import MAX_EXECUTED
from contextos.agent.memory_tool import FILE_CHANGED, STORE_UNAVAILABLE
from contextos.agent.paths import MemoryFileError
from contextos.agent.tools import scoped_tools
from contextos.engine.conversation import REDO_KEY
from contextos.errors import ProviderError, StoreError
from contextos.store.sqlite import SQLiteStore
from contextos.testing.embedders import HashEmbedder
from contextos.testing.fake_anthropic import FakeAnthropic
from contextos.testing.fake_http import FakeResponse
from contextos.testing.fake_openai import FakeOpenAI
from contextos.types import MemoryRecord, Message, ToolCall
from server_support import app_client, auth, issue_key

PIN = "Ana's bank PIN is 4321"
DIAGNOSIS = "Bob's diagnosis is diabetes"


def _store_passages(memory: Memory) -> None:
    for user, text in (("ana", PIN), ("bob", DIAGNOSIS)):
        out = scoped_tools(memory, user_id=user, agent_id="bot").execute(
            "archival_memory_insert", {"content": text}
        )
        assert not out.is_error, out.text


# -- 1. archival memory is read from exactly the owner scope ------------------------------


def test_archival_search_reads_exactly_the_owner_scope(memory: Memory) -> None:
    """Why: a search for agent "bot" returned the passages of ana+bot and bob+bot (a
    search by agent also finds every user's with that agent), and ana's those of ana+bot."""
    _store_passages(memory)
    query = {"query": "bank PIN diagnosis"}
    for owner in ({"agent_id": "bot"}, {"user_id": "ana"}, {"user_id": "bob"}):
        out = scoped_tools(memory, **owner).execute("archival_memory_search", query)
        assert out.text == "No archival memories matched.", owner
    both = scoped_tools(memory, user_id="ana", agent_id="bot")
    assert both.execute("archival_memory_search", query).text == f"1. {PIN}"
    # the owner's own passages are found even behind many of its sub-scopes' passages
    meta = {"source": "archival"}
    memory.add(
        [f"bank PIN note {i}" for i in range(60)], user_id="ana", agent_id="x", metadata=meta
    )
    ana = scoped_tools(memory, user_id="ana")
    ana.execute("archival_memory_insert", {"content": "ana's own bank PIN note"})
    assert ana.execute("archival_memory_search", {"query": "bank PIN note"}).text == (
        "1. ana's own bank PIN note"
    )


def test_an_agents_own_passage_is_found_behind_a_thousand_of_its_users(memory: Memory) -> None:
    """Why: a search for agent "bot" found every user's passages with that bot too, and
    kept the bot's own from the best 1,000: behind 1,100 of its users' passages about
    refunds, the bot's refund policy was "No archival memories matched." (a review). The
    passage names its exact owner, and the search filters on it. A passage stored
    before that tag (the same metadata, no owner) is still found."""
    bot = scoped_tools(memory, agent_id="bot")
    policy = "Refund policy: refunds within 30 days, receipt required."
    assert not bot.execute("archival_memory_insert", {"content": policy}).is_error
    meta = {"source": "archival"}
    for user in range(110):
        asked = [f"refund policy question {n} from user {user}: refund policy?" for n in range(10)]
        memory.add(asked, user_id=f"user{user}", agent_id="bot", metadata=meta)
    found = bot.execute("archival_memory_search", {"query": "refund policy"}).text
    assert found == f"1. {policy}"


def test_passages_stored_before_the_owner_tag_are_found_among_new_ones(
    tmp_path: Path,
) -> None:
    """Passages stored before the owner tag (``source`` only) were searched for only
    while the tagged hits were short of the top 5: once the bot had five new passages,
    an older one vanished from search however relevant, and inserting its text again
    gave back the untagged passage (a review). A process tags an owner's older passages
    before its first search, and an insert tags the twin it finds."""
    db = tmp_path / "m.db"
    older = "Refund policy for gift cards: store credit only."
    meta = {"source": "archival"}
    with Memory(db, embedder=HashEmbedder(), background_embedding=False) as before:
        before.add(older, agent_id="bot", metadata=meta, memory_type="semantic")
        before.add("Gift cards never expire.", agent_id="bot", metadata=meta)
        before.add("ana's gift card note", user_id="ana", agent_id="bot", metadata=meta)
    with Memory(db, embedder=HashEmbedder(), background_embedding=False) as memory:
        bot = scoped_tools(memory, agent_id="bot")
        again = bot.execute("archival_memory_insert", {"content": older}).text
        [kept] = [r for r in memory.get_all(agent_id="bot") if r.text == older]
        assert again == f"Stored in archival memory (id {kept.id})."
        assert kept.metadata["archival_owner"] == json.dumps([None, "bot"])  # tagged
        for fact in ("Office is in Porto.", "Support hours 9-17.", "CEO is Ana.", "Founded 2020."):
            assert not bot.execute("archival_memory_insert", {"content": fact}).is_error
        assert not bot.execute("archival_memory_insert", {"content": "Uses Postgres."}).is_error
        found = bot.execute("archival_memory_search", {"query": "refund policy gift cards"})
        lines = found.text.splitlines()
        assert lines[0] == f"1. {older}" and "2. Gift cards never expire." in lines, lines
        assert not any("ana's" in line for line in lines)


def test_archival_search_through_wrap_sees_only_its_owner(memory: Memory) -> None:
    _store_passages(memory)
    with FakeAnthropic() as fake:
        sdk = opened(anthropic.Anthropic(base_url=fake.base_url, api_key="test"))
        client = wrap(sdk, memory=memory, session="s1", agent_id="bot", memory_tools=True)
        fake.enqueue(
            anthropic_tool_use(("archival_memory_search", {"query": "bank PIN diagnosis"})),
            anthropic_text("nothing"),
        )
        client.messages.create(
            model="claude-sonnet-4-6",
            max_tokens=64,
            messages=[{"role": "user", "content": "what do you know?"}],
        )
        sent = tool_results(fake.messages_requests()[-1].json())
        assert sent == ["No archival memories matched."]
        client.flush()


def test_archival_search_over_http_sees_only_its_owner(tmp_path: Path) -> None:
    with app_client(tmp_path / "s.db") as client:
        key = issue_key(client, "acme")

        def call(name: str, **body: object) -> str:
            resp = client.post(f"/v1/agent/tools/{name}", json=body, headers=auth(key))
            assert resp.status_code == 200, resp.text
            return str(resp.json()["text"])

        for user, text in (("ana", PIN), ("bob", DIAGNOSIS)):
            call(
                "archival_memory_insert", user_id=user, agent_id="bot", arguments={"content": text}
            )
        args = {"query": "bank PIN diagnosis"}
        assert call("archival_memory_search", agent_id="bot", arguments=args) == (
            "No archival memories matched."
        )
        assert call("archival_memory_search", user_id="ana", agent_id="bot", arguments=args) == (
            f"1. {PIN}"
        )


# -- 2. the app's tool and ours in one response --------------------------------------------

WEATHER_A = {
    "name": "get_weather",
    "description": "weather",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}
WEATHER_O = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
EDIT = {"label": "human", "content": "Lives in Porto"}
RESULT = "Core memory block 'human' is now:\nLives in Porto"


def _mixed_anthropic() -> FakeResponse:
    return _anthropic(
        [
            {
                "type": "tool_use",
                "id": "toolu_w",
                "name": "get_weather",
                "input": {"city": "Porto"},
            },
            {"type": "tool_use", "id": "toolu_m", "name": "core_memory_append", "input": EDIT},
        ],
        "tool_use",
        20,
        100,
        0,
    )


def _with_memory_tools(sdk: Any, memory: Memory, session: str) -> Any:
    """``sdk`` wrapped with the memory tools for Ana, each call committed before it returns."""
    return wrap(
        sdk,
        memory=memory,
        session=session,
        user_id="ana",
        memory_tools=True,
        background_commit=False,
    )


def _ask(client: Any, provider: str, messages: list[Any]) -> str:
    """The answer's text of one ``create`` of a wrapped client of ``provider``."""
    if provider == "anthropic":
        out = client.messages.create(model="claude-sonnet-4-6", max_tokens=64, messages=messages)
        return str(out.content[0].text)
    out = client.chat.completions.create(model="gpt-4.1-mini", messages=messages)
    return str(out.choices[0].message.content)


def _no_branch(turns: list[Any]) -> None:
    assert not [t for t in turns if REDO_KEY in t.message.metadata]


def test_anthropic_mixed_tool_calls_run_ours_and_send_both_results(memory: Memory) -> None:
    """Why: the response went back to the app (one tool was its own), the app answered
    its tool, and our core_memory_append was dropped from the next request: never run,
    and the model never learned."""
    with FakeAnthropic() as fake:
        sdk = opened(anthropic.Anthropic(base_url=fake.base_url, api_key="test"))
        client = _with_memory_tools(sdk, memory, "s1")
        fake.enqueue(_mixed_anthropic(), anthropic_text("It is sunny in Porto."))
        ask: dict[str, Any] = {"model": "claude-sonnet-4-6", "max_tokens": 64}
        msgs: list[Any] = [{"role": "user", "content": "I live in Porto now. Weather?"}]
        r = client.messages.create(**ask, tools=[WEATHER_A], messages=msgs)
        assert [b.name for b in r.content] == ["get_weather", "core_memory_append"]
        # ours ran before the response came back to the app
        assert CoreMemory(memory, user_id="ana").get("human").value == "Lives in Porto"
        msgs += [
            {"role": "assistant", "content": r.content},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "toolu_w", "content": "sunny"}],
            },
        ]
        r = client.messages.create(**ask, tools=[WEATHER_A], messages=msgs)
        assert r.content[0].text == "It is sunny in Porto."
        body = fake.messages_requests()[-1].json()
        assistant, results = body["messages"][1], body["messages"][2]
        assert [b["id"] for b in assistant["content"]] == ["toolu_w", "toolu_m"]
        assert results["role"] == "user"
        assert results["content"] == [
            {"type": "tool_result", "tool_use_id": "toolu_w", "content": "sunny"},
            {"type": "tool_result", "tool_use_id": "toolu_m", "content": RESULT},
        ]
        turns = client.context.session.turns()
        assert [t.message.role for t in turns] == ["user", "assistant", "tool", "assistant"]
        assert turns[2].message.content == f"sunny\n{RESULT}"
        # the app re-sends its whole conversation (without our result): the same turn
        # again, no branch, and the request still answers every call
        fake.enqueue(anthropic_text("You're welcome."))
        msgs += [
            {"role": "assistant", "content": r.content},
            {"role": "user", "content": "thanks"},
        ]
        client.messages.create(**ask, tools=[WEATHER_A], messages=msgs)
        body = fake.messages_requests()[-1].json()
        assert body["messages"][2]["content"][1]["tool_use_id"] == "toolu_m"
        turns = client.context.session.turns()
        roles = [t.message.role for t in turns]
        assert roles == ["user", "assistant", "tool", "assistant", "user", "assistant"]
        _no_branch(turns)
        # ours ran once, however often its result was sent
        assert CoreMemory(memory, user_id="ana").get("human").value == "Lives in Porto"


def test_openai_mixed_tool_calls_run_ours_and_send_both_results(memory: Memory) -> None:
    with FakeOpenAI() as fake:
        sdk = opened(openai.OpenAI(base_url=fake.base_url, api_key="test"))
        client = _with_memory_tools(sdk, memory, "o1")
        fake.enqueue(
            openai_tool_calls(("get_weather", {"city": "Porto"}), ("core_memory_append", EDIT)),
            openai_text("It is sunny in Porto."),
        )
        ask: dict[str, Any] = {"model": "gpt-4.1-mini", "tools": [WEATHER_O]}
        msgs: list[Any] = [{"role": "user", "content": "I live in Porto now. Weather?"}]
        r = client.chat.completions.create(**ask, messages=msgs)
        calls = r.choices[0].message.tool_calls
        assert [c.function.name for c in calls] == ["get_weather", "core_memory_append"]
        assert CoreMemory(memory, user_id="ana").get("human").value == "Lives in Porto"
        # the app answers its own call, and a stand-in for ours: ours replaces it
        msgs += [
            r.choices[0].message,
            {"role": "tool", "tool_call_id": calls[0].id, "content": "sunny"},
            {"role": "tool", "tool_call_id": calls[1].id, "content": "unknown tool"},
        ]
        r2 = client.chat.completions.create(**ask, messages=msgs)
        assert r2.choices[0].message.content == "It is sunny in Porto."
        body = fake.completions_requests()[-1].json()
        at = [m["role"] for m in body["messages"]].index("assistant")
        tail = body["messages"][at : at + 3]
        assert [m["role"] for m in tail] == ["assistant", "tool", "tool"]
        assert [c["id"] for c in tail[0]["tool_calls"]] == [calls[0].id, calls[1].id]
        assert [(m["tool_call_id"], m["content"]) for m in tail[1:]] == [
            (calls[0].id, "sunny"),
            (calls[1].id, RESULT),
        ]
        turns = client.context.session.turns()
        roles = [t.message.role for t in turns]
        assert roles == ["user", "assistant", "tool", "tool", "assistant"]
        assert [t.message.content for t in turns[2:4]] == ["sunny", RESULT]
        # the whole conversation again (with the app's stand-in): same turns, no branch
        fake.enqueue(openai_text("You're welcome."))
        msgs += [r2.choices[0].message, {"role": "user", "content": "thanks"}]
        client.chat.completions.create(**ask, messages=msgs)
        body = fake.completions_requests()[-1].json()
        assert [m.get("content") for m in body["messages"] if m["role"] == "tool"] == [
            "sunny",
            RESULT,
        ]
        turns = client.context.session.turns()
        assert [t.message.role for t in turns][5:] == ["user", "assistant"]
        _no_branch(turns)


# -- 3. the step limit ---------------------------------------------------------------------


def test_step_limit_runs_no_call_whose_result_cannot_be_sent(memory: Memory) -> None:
    """Why: at the 8th request the model's calls were run (a core edit made) but their
    results were never sent: the model did not know, and the log ended on them."""
    with FakeAnthropic() as fake:
        sdk = opened(anthropic.Anthropic(base_url=fake.base_url, api_key="test"))
        client = _with_memory_tools(sdk, memory, "s1")
        fake.enqueue(
            *[
                anthropic_tool_use(("core_memory_append", {"label": "human", "content": f"f{i}"}))
                for i in range(9)
            ]
        )
        with pytest.raises(ProviderError, match="after 8 requests"):
            client.messages.create(
                model="claude-sonnet-4-6",
                max_tokens=64,
                messages=[{"role": "user", "content": "hi"}],
            )
        bodies = [r.json() for r in fake.messages_requests()]
        assert len(bodies) == 8
        value = CoreMemory(memory, user_id="ana").get("human").value
        # every edit made was reported to the model in a later request
        assert value.splitlines() == [f"f{i}" for i in range(7)]
        assert tool_results(bodies[-1])[-1].endswith(value)
        turns = client.context.session.turns()
        assert [t.message.role for t in turns][-2:] == ["tool", "assistant"]


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_a_retry_after_a_request_failed_mid_loop_resumes_it(memory: Memory, provider: str) -> None:
    """Why: the loop's second request (carrying our tool results) got a 529; the app
    retried its ``create()`` as it would any failed call, and the loop started over:
    the question was logged twice, after a stale tool exchange, and the tools ran again."""
    question = [{"role": "user", "content": "What should I cook?"}]
    append = ("core_memory_append", {"label": "human", "content": "Likes pasta."})
    with FakeAnthropic() if provider == "anthropic" else FakeOpenAI() as fake:
        if provider == "anthropic":
            sdk = opened(anthropic.Anthropic(base_url=fake.base_url, api_key="t", max_retries=0))
            fake.enqueue(anthropic_tool_use(append))
            fake.enqueue_error(529)
            fake.enqueue(anthropic_text("Cook pasta."))
        else:
            sdk = opened(openai.OpenAI(base_url=fake.base_url, api_key="t", max_retries=0))
            fake.enqueue(openai_tool_calls(append))
            fake.enqueue_error(503)
            fake.enqueue(openai_text("Cook pasta."))
        client = _with_memory_tools(sdk, memory, "s1")

        def ask() -> str:
            return _ask(client, provider, question)

        with pytest.raises(ProviderError):
            ask()
        assert ask() == "Cook pasta."
        bodies = [r.json() for r in fake.requests]
        assert len(bodies) == 3
        assert bodies[2]["messages"] == bodies[1]["messages"]  # the failed request, again
        assert CoreMemory(memory, user_id="ana").get("human").value == "Likes pasta."  # ran once
        turns = client.context.session.turns()
        assert [t.message.role for t in turns] == ["user", "assistant", "tool", "assistant"]
        assert turns[-1].message.content == "Cook pasta."
        _no_branch(turns)


class BusyOnSecondLock:
    """The store, as the loop's Memory sees it when the owner's core lock cannot be
    taken at the second edit (another editor holds it past the wait, or the store is
    busy): that take raises :class:`StoreError`, once. Everything else passes through."""

    def __init__(self, store: Any) -> None:
        self.store, self.takes = store, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def swap_session_meta(self, scope: Any, meta: Any, **kwargs: Any) -> bool:
        if "holder" in meta:
            self.takes += 1
            if self.takes == 2:
                raise StoreError("store busy: another editor holds the core lock")
        return bool(self.store.swap_session_meta(scope, meta, **kwargs))


def _busy_on_second_lock(memory: Memory) -> Memory:
    """A Memory on ``memory``'s store whose second core-lock take raises StoreError."""
    return Memory(
        store=BusyOnSecondLock(memory.store),  # type: ignore[arg-type]
        embedder=memory.embedder,
        background_embedding=False,
    )


#: Two core edits in one response: the second meets the busy store.
TWO_APPENDS = (
    ("core_memory_append", {"label": "human", "content": "Likes pasta."}),
    ("core_memory_append", {"label": "human", "content": "Vegetarian."}),
)


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_a_retry_after_a_tool_failed_mid_loop_runs_the_rest(memory: Memory, provider: str) -> None:
    """Why: the second of a response's tool calls met a busy store; ``create()`` raised
    and kept nothing, and the app's retry started over: the model was asked again, the
    question logged twice, a tool call left in the log without its result, and the
    first edit made again (a review). The retry runs the calls not run yet, then sends
    their results, as the first try would have."""
    question = [{"role": "user", "content": "I like pasta and I'm vegetarian."}]
    calls = TWO_APPENDS
    busy = _busy_on_second_lock(memory)
    with FakeAnthropic() if provider == "anthropic" else FakeOpenAI() as fake:
        if provider == "anthropic":
            sdk = opened(anthropic.Anthropic(base_url=fake.base_url, api_key="t", max_retries=0))
            fake.enqueue(anthropic_tool_use(*calls), anthropic_text("Noted."))
        else:
            sdk = opened(openai.OpenAI(base_url=fake.base_url, api_key="t", max_retries=0))
            fake.enqueue(openai_tool_calls(*calls), openai_text("Noted."))
        client = _with_memory_tools(sdk, busy, "s1")

        def ask() -> str:
            return _ask(client, provider, question)

        with pytest.raises(StoreError, match="busy"):
            ask()
        assert ask() == "Noted."
        assert len(fake.requests) == 2  # the model was not asked again
        value = CoreMemory(memory, user_id="ana").get("human").value
        assert value == "Likes pasta.\nVegetarian."  # each edit made once
        turns = client.context.session.turns()
        results = ["tool"] if provider == "anthropic" else ["tool", "tool"]  # one turn, 2 blocks
        assert [t.message.role for t in turns] == ["user", "assistant", *results, "assistant"]
        assert turns[-1].message.content == "Noted."
        _no_branch(turns)


def test_a_retry_after_a_tool_failed_in_a_mixed_response_runs_the_rest(memory: Memory) -> None:
    """The same, for a response that calls the app's tool too (its results go out with
    the app's): the retry asked the model again, the first edit was made twice and the
    question logged twice (a review of the first fix). It runs the rest, and gives the
    app the response it could not give before, without a request."""
    response = _anthropic(
        [
            {"type": "tool_use", "id": "toolu_a", "name": "core_memory_append",
             "input": {"label": "human", "content": "Likes pasta."}},
            {"type": "tool_use", "id": "toolu_b", "name": "core_memory_append",
             "input": {"label": "human", "content": "Vegetarian."}},
            {"type": "tool_use", "id": "toolu_w", "name": "get_weather",
             "input": {"city": "Porto"}},
        ],
        "tool_use", 20, 100, 0,
    )  # fmt: skip
    busy = _busy_on_second_lock(memory)
    ask: dict[str, Any] = {"model": "claude-sonnet-4-6", "max_tokens": 64, "tools": [WEATHER_A]}
    question: list[Any] = [{"role": "user", "content": "I like pasta, vegetarian. Weather?"}]
    with FakeAnthropic() as fake:
        sdk = opened(anthropic.Anthropic(base_url=fake.base_url, api_key="t", max_retries=0))
        client = _with_memory_tools(sdk, busy, "s1")
        fake.enqueue(response, anthropic_text("Sunny, and noted."))
        with pytest.raises(StoreError, match="busy"):
            client.messages.create(**ask, messages=question)
        r = client.messages.create(**ask, messages=question)
        assert [b.id for b in r.content] == ["toolu_a", "toolu_b", "toolu_w"]
        assert len(fake.requests) == 1  # the model was not asked again
        value = CoreMemory(memory, user_id="ana").get("human").value
        assert value == "Likes pasta.\nVegetarian."  # each edit made once
        weather = {"type": "tool_result", "tool_use_id": "toolu_w", "content": "sunny"}
        after = [
            *question,
            {"role": "assistant", "content": r.content},
            {"role": "user", "content": [weather]},
        ]
        assert client.messages.create(**ask, messages=after).content[0].text == "Sunny, and noted."
        sent = fake.messages_requests()[-1].json()["messages"][2]["content"]
        assert [b["tool_use_id"] for b in sent] == ["toolu_w", "toolu_a", "toolu_b"]
        turns = client.context.session.turns()
        assert [t.message.role for t in turns] == ["user", "assistant", "tool", "assistant"]
        _no_branch(turns)


def test_progress_kept_for_a_retry_runs_out(memory: Memory) -> None:
    """A failed ``create()``'s progress was kept for ever: the same messages sent long
    after (a new question in the same words, the app having given up) ran the old
    response's remaining tool calls and answered with its reply (a review). Past
    ``resume_within_s`` the loop starts over and asks the model."""
    calls = TWO_APPENDS
    busy = _busy_on_second_lock(memory)
    question = [{"role": "user", "content": "hi"}]
    with FakeAnthropic() as fake:
        sdk = opened(anthropic.Anthropic(base_url=fake.base_url, api_key="t", max_retries=0))
        loop = ToolLoop(AgentTools(CoreMemory(busy, user_id="ana")), "anthropic")
        loop.resume_within_s = 0.2
        client = wrap(
            sdk, memory=busy, session="s1", user_id="ana", memory_tools=loop,
            background_commit=False,
        )  # fmt: skip
        fake.enqueue(anthropic_tool_use(*calls), anthropic_text("Hello again."))
        with pytest.raises(StoreError, match="busy"):
            _ask(client, "anthropic", question)
        time.sleep(0.5)
        assert _ask(client, "anthropic", question) == "Hello again."
        assert len(fake.requests) == 2  # asked anew
        assert CoreMemory(memory, user_id="ana").get("human").value == "Likes pasta."


# -- 4. a NUL in a memory file -------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        {"command": "create", "path": "/memories/nul.md", "file_text": "a\x00b"},
        {"command": "str_replace", "path": "/memories/a.md", "old_str": "hi", "new_str": "h\x00"},
        {"command": "insert", "path": "/memories/a.md", "insert_line": 1, "insert_text": "x\x00"},
    ],
)
def test_nul_in_file_text_is_a_tool_error(memory: Memory, command: dict[str, Any]) -> None:
    """Why: a NUL in a file's content raised the store's ValueError, which the SDK's
    runner showed the model as ``ValueError('...')`` instead of the refusal text."""
    tool = MemoryTool(memory, user_id="ana")
    tool.call({"command": "create", "path": "/memories/a.md", "file_text": "hi\n"})
    with pytest.raises(ToolError, match="NUL"):
        tool.call(command)
    assert MemoryFiles(memory, user_id="ana").read("/memories/a.md") == "hi\n"
    with pytest.raises(MemoryFileError, match="NUL"):
        MemoryFiles(memory, user_id="ana").create("/memories/b.md", "\x00")


def test_nul_in_file_text_under_the_sdk_runner(memory: Memory) -> None:
    with FakeAnthropic() as fake:
        client = opened(anthropic.Anthropic(base_url=fake.base_url, api_key="test"))
        call = {"command": "create", "path": "/memories/nul.md", "file_text": "a\x00b"}
        fake.enqueue(anthropic_tool_use(("memory", call)), anthropic_text("done"))
        runner = client.beta.messages.tool_runner(
            model="claude-sonnet-4-6",
            max_tokens=64,
            messages=[{"role": "user", "content": "go"}],
            tools=[MemoryTool(memory, user_id="ana")],
        )
        runner.until_done()
        last = fake.messages_requests()[-1].json()["messages"][-1]["content"][-1]
        assert last["is_error"] is True
        assert "NUL" in json.dumps(last["content"]) and "ValueError" not in json.dumps(last)


class AfterListStore:
    """A real store that runs the next of ``after`` (a failure, another writer) right
    after a read of memory-tool files: at the Store seam, while a command runs."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.after: list[Callable[[], object]] = []

    def list(self, flt: Filter, **kw: Any) -> list[MemoryRecord]:
        page: list[MemoryRecord] = self._store.list(flt, **kw)
        self._then(flt)
        return page

    def list_after(self, flt: Filter, **kw: Any) -> list[tuple[MemoryRecord, str]]:
        # ``Memory.get_all`` reads its pages by key (one read a page).
        page: list[tuple[MemoryRecord, str]] = self._store.list_after(flt, **kw)
        self._then(flt)
        return page

    def _then(self, flt: Filter) -> None:
        if self.after and flt.metadata.get("source") == "memory_tool":
            self.after.pop(0)()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def test_store_failures_under_the_sdk_runner_are_fixed_tool_errors(tmp_path: Path) -> None:
    """Why: only a refusal became a ToolError; the SDK's runner sent any other exception
    to the model as its repr: a PostgreSQL error with the server's host and port, or a
    NotFound naming a memory id when another writer erased the file mid-command."""
    db = tmp_path / "m.db"
    store = AfterListStore(SQLiteStore(db))

    def down() -> None:
        raise StoreError(
            'PostgreSQL read failed: connection to server at "10.0.0.5", port 5432 failed'
        )

    with (
        Memory(store=store, embedder=HashEmbedder(), background_embedding=False) as memory,
        Memory(db, embedder=HashEmbedder(), background_embedding=False) as other,
        FakeAnthropic() as fake,
    ):
        tool = MemoryTool(memory, user_id="ana")
        tool.files.create("/memories/a.md", "step 1\n")
        file_id = tool.files.memory_id("/memories/a.md")
        store.after = [down, lambda: other.delete(file_id, purge=True)]
        client = opened(anthropic.Anthropic(base_url=fake.base_url, api_key="test"))
        edit = {"command": "str_replace", "path": "/memories/a.md", "old_str": "1", "new_str": "2"}
        fake.enqueue(
            anthropic_tool_use(("memory", {"command": "view", "path": "/memories"})),
            anthropic_tool_use(("memory", edit)),
            anthropic_text("done"),
        )
        client.beta.messages.tool_runner(
            model="claude-sonnet-4-6",
            max_tokens=64,
            messages=[{"role": "user", "content": "go"}],
            tools=[tool],
        ).until_done()
        assert store.after == []  # both ran, each inside its command
        results = [r.json()["messages"][-1]["content"][-1] for r in fake.messages_requests()[1:]]
        assert [(r["content"], r["is_error"]) for r in results] == [
            (STORE_UNAVAILABLE, True),
            (FILE_CHANGED, True),
        ]
        for leak in ("10.0.0.5", "5432", "Error(", file_id):
            assert leak not in json.dumps(results)


def test_the_tool_loop_keeps_a_bounded_record_of_the_calls_it_ran(memory: Memory) -> None:
    """Why: ``executed`` kept every tool call ever run (arguments up to 100,000
    characters each) for the life of a wrapped client."""
    loop = ToolLoop(AgentTools(CoreMemory(memory, user_id="ana")), "openai")

    def call(i: int) -> tuple[str, str]:
        return "conversation_search", json.dumps({"query": f"q{i} " + "x" * 1000})

    def send(request: dict[str, Any]) -> Any:
        last = request["messages"][-1]
        if last.get("role") == "tool":
            return NS(calls=())
        i = int(last["content"])
        name, args = call(i)
        function = NS(name=name, arguments=args)
        return NS(
            calls=(ToolCall(f"c{i}", name, args),),
            choices=[NS(message=NS(content=None, tool_calls=[NS(id=f"c{i}", function=function)]))],
        )

    def reply(response: Any) -> Message:
        return Message("assistant", "ok" if not response.calls else "", tool_calls=response.calls)

    runs = MAX_EXECUTED * 3
    for i in range(runs):
        loop.create(send, reply, model="m", messages=[{"role": "user", "content": str(i)}])
    assert len(loop.executed) == MAX_EXECUTED
    assert [args for _, args, _ in loop.executed] == [
        call(i)[1] for i in range(runs - MAX_EXECUTED, runs)
    ]
