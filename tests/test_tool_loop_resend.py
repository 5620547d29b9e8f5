"""``wrap(..., memory_tools=True)`` with an app that re-sends its conversation, the core
edit's visibility when its tool exchange leaves the window, and the tools' argument errors
(a review, session 40).

The loop returns only the model's last response; the memory-tool calls and results before
it are logged but never reach the app. An app that re-sends its whole conversation (as
both SDKs' guides show) made the log branch at every such exchange: the exchange was cut,
the model lost its core edit, and the answer was logged twice."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from agent_scripts import (
    anthropic_text,
    anthropic_tool_use,
    close_sdk_clients,  # noqa: F401 - autouse: closes the SDK clients
    openai_raw_tool_calls,
    openai_text,
    openai_tool_calls,
    opened,
    tool_results,
)
from contextos import Memory, wrap
from contextos.agent import AgentTools, CoreMemory
from contextos.agent.hidden import MAX_KEPT_CHARS, HiddenExchanges
from contextos.engine.conversation import REDO_KEY
from contextos.engine.session import Session
from contextos.store.sqlite import SQLiteStore
from contextos.testing.fake_anthropic import FakeAnthropic
from contextos.testing.fake_http import FakeResponse
from contextos.testing.fake_openai import FakeOpenAI
from contextos.types import Message, ToolCall

FACT = "Allergic to peanuts."
PROVIDERS = ("anthropic", "openai")


def _fake(provider: str, **kwargs: Any) -> Any:
    return FakeAnthropic(**kwargs) if provider == "anthropic" else FakeOpenAI(**kwargs)


def _client(provider: str, fake: Any, memory: Memory, **kwargs: Any) -> Any:
    """A wrapped SDK client with the memory tools, session s1 of user ana."""
    sdk_class = anthropic.Anthropic if provider == "anthropic" else openai.OpenAI
    sdk = opened(sdk_class(base_url=fake.base_url, api_key="test", max_retries=0))
    kwargs.setdefault("session", "s1")
    return wrap(sdk, memory=memory, user_id="ana", memory_tools=True, **kwargs)


def _ask(provider: str, client: Any, messages: list[Any], **kwargs: Any) -> Any:
    if provider == "anthropic":
        return client.messages.create(
            model="claude-sonnet-4-6", max_tokens=64, messages=messages, **kwargs
        )
    return client.chat.completions.create(model="gpt-4.1-mini", messages=messages, **kwargs)


def _calls(provider: str, *calls: tuple[str, dict[str, Any]]) -> FakeResponse:
    return anthropic_tool_use(*calls) if provider == "anthropic" else openai_tool_calls(*calls)


def _answer(provider: str, text: str) -> FakeResponse:
    return anthropic_text(text) if provider == "anthropic" else openai_text(text)


def _as_appended(provider: str, response: Any) -> Any:
    """The reply as the SDK guides append it to the app's history (SDK objects)."""
    if provider == "anthropic":
        return {"role": "assistant", "content": response.content}
    return response.choices[0].message


def _bodies(provider: str, fake: Any) -> list[dict[str, Any]]:
    sent = fake.messages_requests() if provider == "anthropic" else fake.completions_requests()
    return [r.json() for r in sent]


def _log(client: Any) -> list[tuple[str, str]]:
    client.flush()
    return [(t.message.role, t.message.content) for t in client.context.session.turns()]


def _redos(client: Any) -> list[int]:
    client.flush()
    turns = client.context.session.turns()
    return [t.message.metadata[REDO_KEY] for t in turns if REDO_KEY in t.message.metadata]


RESULT = f"Core memory block 'human' is now:\n{FACT}"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_whole_conversation_resent_keeps_the_memory_tool_exchange(
    memory: Memory, provider: str
) -> None:
    """The review's repro: the next request carries the edit's call and result again, the
    log does not branch, and the answer is logged once. A regenerate of the last answer
    (the same messages again) still branches at its question, not at the exchange."""
    with _fake(provider) as fake:
        client = _client(provider, fake, memory)  # background commit, as by default
        fake.enqueue(
            _calls(provider, ("core_memory_append", {"label": "human", "content": FACT})),
            _answer(provider, "Noted, no peanuts."),
            _answer(provider, "Try a lentil curry."),
        )
        messages: list[Any] = [{"role": "user", "content": "I'm allergic to peanuts."}]
        messages.append(_as_appended(provider, _ask(provider, client, messages)))
        messages.append({"role": "user", "content": "What should I cook tonight?"})
        _ask(provider, client, messages)
        last = _bodies(provider, fake)[-1]
        assert RESULT in tool_results(last)
        assert "core_memory_append" in json.dumps(last["messages"])
        assert _log(client) == [
            ("user", "I'm allergic to peanuts."),
            ("assistant", ""),
            ("tool", RESULT),
            ("assistant", "Noted, no peanuts."),
            ("user", "What should I cook tonight?"),
            ("assistant", "Try a lentil curry."),
        ]
        assert _redos(client) == []
        fake.enqueue(_answer(provider, "Try a bean stew."))
        _ask(provider, client, messages)  # the user regenerates the last answer
        assert _log(client)[6:] == [
            ("user", "What should I cook tonight?"),  # logged again, in place of turn 4
            ("assistant", "Try a bean stew."),
        ]
        assert _redos(client) == [4]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_client_made_again_puts_back_the_exchanges_the_log_holds(
    memory: Memory, provider: str
) -> None:
    """The exchanges are read back from the log, not from what one client ran: after a
    restart (a new wrapped client on the same session) the whole conversation, with its
    system prompt and an exchange of two steps (two calls at once, then one), is still
    matched without a branch."""
    edit = ("core_memory_append", {"label": "human", "content": FACT})
    insert = ("archival_memory_insert", {"content": "Ana cooks on Fridays."})
    search = ("conversation_search", {"query": "peanuts"})
    system: dict[str, Any] = {"system": "Be brief."} if provider == "anthropic" else {}
    with _fake(provider) as fake:
        first = _client(provider, fake, memory, background_commit=False)
        fake.enqueue(
            _calls(provider, edit, insert),
            _calls(provider, search),
            _answer(provider, "Noted."),
            _answer(provider, "Hello again."),
        )
        messages: list[Any] = [{"role": "user", "content": "Peanuts make me ill."}]
        if provider == "openai":
            messages.insert(0, {"role": "system", "content": "Be brief."})
        messages.append(_as_appended(provider, _ask(provider, first, messages, **system)))
        messages.append({"role": "user", "content": "Hi!"})
        messages.append(_as_appended(provider, _ask(provider, first, messages, **system)))
        assert _redos(first) == []
        again = _client(provider, fake, memory, background_commit=False)
        fake.enqueue(_answer(provider, "Lentils, then."))
        messages.append({"role": "user", "content": "Dinner idea?"})
        _ask(provider, again, messages, **system)
        results = ["tool"] if provider == "anthropic" else ["tool", "tool"]  # one turn, or each
        assert [role for role, _ in _log(again)] == [
            "user",
            "assistant",
            *results,
            "assistant",
            "tool",
            "assistant",
            "user",
            "assistant",
            "user",
            "assistant",
        ]
        assert _redos(again) == []
        assert RESULT in tool_results(_bodies(provider, fake)[-1])


@pytest.mark.parametrize("provider", PROVIDERS)
def test_the_last_messages_resent_keep_the_exchange(memory: Memory, provider: str) -> None:
    """An app that sends its last N messages: before the fix, the question and the answer
    around the exchange were logged a second time (the request matched nowhere)."""
    with _fake(provider) as fake:
        client = _client(provider, fake, memory, background_commit=False)
        fake.enqueue(
            _answer(provider, "Hello."),
            _calls(provider, ("core_memory_append", {"label": "human", "content": FACT})),
            _answer(provider, "Noted."),
            _answer(provider, "Lentils."),
        )
        messages: list[Any] = [{"role": "user", "content": "Hi."}]
        messages.append(_as_appended(provider, _ask(provider, client, messages)))
        messages.append({"role": "user", "content": "Peanuts make me ill."})
        messages.append(_as_appended(provider, _ask(provider, client, messages[-1:])))
        messages.append({"role": "user", "content": "Dinner idea?"})
        _ask(provider, client, messages[-3:])
        assert _log(client) == [
            ("user", "Hi."),
            ("assistant", "Hello."),
            ("user", "Peanuts make me ill."),
            ("assistant", ""),
            ("tool", RESULT),
            ("assistant", "Noted."),
            ("user", "Dinner idea?"),
            ("assistant", "Lentils."),
        ]
        assert _redos(client) == []


WEATHER = {
    "name": "get_weather",
    "description": "Weather in a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def test_an_exchange_of_the_apps_own_tools_is_not_put_back(memory: Memory) -> None:
    """Only the loop's own exchanges are put back: an app that leaves its own tool call
    out of the history it re-sends branches there, as without memory tools."""
    with FakeAnthropic() as fake:
        client = _client("anthropic", fake, memory, background_commit=False)
        fake.enqueue(
            anthropic_tool_use(("get_weather", {"city": "Porto"})),
            anthropic_text("Sunny."),
            anthropic_text("Take a hat."),
        )
        messages: list[Any] = [{"role": "user", "content": "Weather in Porto?"}]
        r = _ask("anthropic", client, messages, tools=[WEATHER])
        call = r.content[0]
        with_call = [
            *messages,
            {"role": "assistant", "content": r.content},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sun"}],
            },
        ]
        r = _ask("anthropic", client, with_call, tools=[WEATHER])
        messages += [_as_appended("anthropic", r), {"role": "user", "content": "Hat?"}]
        _ask("anthropic", client, messages, tools=[WEATHER])
        assert _redos(client) == [1]  # the app's own exchange is the app's to send


def test_a_server_side_clearing_edit_keeps_the_core_edits(memory: Memory) -> None:
    """Anthropic's ``clear_tool_uses_20250919`` with ``clear_tool_inputs`` cleared the
    edit's call and result while the pinned snapshot waited for a compaction point: the
    model saw the edit nowhere. The core edits are added to its ``exclude_tools``."""
    script: list[Any] = []
    with FakeAnthropic(reply=lambda body: script.pop(0)) as fake:
        client = _client("anthropic", fake, memory, background_commit=False)
        managed = {
            "edits": [
                {
                    "type": "clear_tool_uses_20250919",
                    "trigger": {"type": "tool_uses", "value": 2},
                    "keep": {"type": "tool_uses", "value": 1},
                    "clear_tool_inputs": True,
                    "exclude_tools": ["web_search"],
                }
            ]
        }
        given = json.loads(json.dumps(managed))

        def ask(question: str) -> None:
            client.beta.messages.create(
                model="claude-sonnet-4-6",
                max_tokens=64,
                betas=["context-management-2025-06-27"],
                context_management=managed,
                messages=[{"role": "user", "content": question}],
            )

        edit = {"label": "human", "content": FACT}
        script += [[_use("toolu_a", "core_memory_append", edit)], "Noted."]
        ask("I'm allergic to peanuts.")
        for n, query in enumerate(("trip", "car")):
            script += [[_use(f"toolu_s{n}", "conversation_search", {"query": query})], "None."]
            ask(f"Did I mention a {query}?")
        script.append("Lentils.")
        ask("What should I cook tonight?")
        body = fake.messages_requests()[-1].json()
        [sent] = body["context_management"]["edits"]
        assert sent["exclude_tools"] == ["web_search", "core_memory_append", "core_memory_replace"]
        assert managed == given  # the caller's request is left as it was
        assert client.calls[-1].extra["applied_edits"][0]["cleared_tool_uses"] == 1
        assert RESULT in tool_results(body)  # the search's result went, the edit's stayed


def _use(call_id: str, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {"type": "tool_use", "id": call_id, "name": name, "input": arguments}


def test_a_session_that_never_compacts_shows_the_edit_in_the_snapshot(memory: Memory) -> None:
    """``compaction=None`` and a small budget: the window drops the edit's call and result
    and no compaction point ever re-renders the snapshot, so the model lost the edit for
    the rest of the session. The snapshot is rendered again once, at the next question."""
    seen: list[dict[str, Any]] = []
    script: list[Any] = []

    def reply(body: dict[str, Any]) -> Any:
        seen.append(body)
        return script.pop(0)

    with FakeAnthropic(reply=reply) as fake:
        client = _client(
            "anthropic", fake, memory, compaction=None, budget=1500, background_commit=False
        )
        edit = {"label": "human", "content": FACT}
        script += [[_use("toolu_a", "core_memory_append", edit)], "Noted."]
        _ask("anthropic", client, [{"role": "user", "content": "I'm allergic to peanuts."}])
        for i in range(8):
            script.append(f"Answer {i}: " + "blah " * 60)
            question = f"Tell me about topic {i}. " + "filler " * 250
            _ask("anthropic", client, [{"role": "user", "content": question}])
        snapshots = [body["system"][-1]["text"] for body in seen]
        assert FACT not in snapshots[1]  # within the loop the edit is in the history
        assert FACT in snapshots[-1]
        assert len(set(snapshots)) == 2  # rendered again once, not on every call
        assert "core_memory_append" not in json.dumps(seen[-1]["messages"])


@pytest.mark.parametrize(
    ("name", "arguments", "error"),
    [
        (
            "core_memory_append",
            '{"label": "human"}',
            "missing content. It takes label (string) and content (string)",
        ),
        (
            "archival_memory_insert",
            '{"content": "x", "user_id": "bob"}',
            "'user_id' is not one of its arguments. It takes content (string)",
        ),
        (
            "core_memory_append",
            '{"label": ["human"], "content": "x"}',
            "label must be a string, not an array. It takes label (string) and content (string)",
        ),
        (
            "core_memory_replace",
            '{"label": "human", "old_content": 3}',
            "missing new_content; old_content must be a string, not a number. It takes label "
            "(string), old_content (string) and new_content (string)",
        ),
        (
            "archival_memory_search",
            '{"query": ' + "9" * 5000 + "}",
            "they are not valid JSON; send an object with query (string)",
        ),
        (
            "archival_memory_insert",
            "{content: 'x'",
            "they are not valid JSON; send an object with content (string)",
        ),
        ("conversation_search", "[1, 2]", "send a JSON object with query (string)"),
    ],
)
def test_malformed_arguments_say_what_the_tool_takes(
    memory: Memory, name: str, arguments: str, error: str
) -> None:
    """The model read Python's words: "AgentTools._append() missing 1 required positional
    argument", "unhashable type: 'list'", a hint to call sys.set_int_max_str_digits."""
    with FakeOpenAI() as fake:
        client = _client("openai", fake, memory, background_commit=False)
        fake.enqueue(openai_raw_tool_calls((name, arguments)), openai_text("ok"))
        _ask("openai", client, [{"role": "user", "content": "go"}])
        result = tool_results(fake.completions_requests()[-1].json())[-1]
        assert result == f"Error: bad arguments for {name}: {error}"


class _BrokenCore(CoreMemory):
    """A core memory whose append has a bug (a TypeError of its own)."""

    def append(self, label: str, content: str) -> Any:
        return len(label) + content  # type: ignore[operator]


def test_a_bug_in_a_tool_is_not_reported_as_bad_arguments(memory: Memory) -> None:
    """Every TypeError was caught as "bad arguments", a real bug's too."""
    tools = AgentTools(_BrokenCore(memory, user_id="ana"))
    with pytest.raises(TypeError):
        tools.execute("core_memory_append", {"label": "human", "content": FACT})


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("repeated", ["reply", "question"])
def test_the_last_messages_opening_on_a_message_said_again_keep_every_exchange(
    memory: Memory, provider: str, repeated: str
) -> None:
    """An app that sends its last N messages, whose window opens on a message said again
    inside it: the model's "Noted." after each core edit (last 6), or the user's
    "Continue." (last 5). Tried from the latest turn that says it alone, the walk read one
    message, nothing was put back, and the log branched at every edit (a review: nine
    branches in twenty turns), the reply logged twice."""
    window, turns = (6, 7) if repeated == "reply" else (5, 6)
    with _fake(provider) as fake:
        client = _client(provider, fake, memory)  # background commit, as by default
        messages: list[Any] = []
        bodies: list[dict[str, Any]] = []
        for i in range(turns):
            edits = i % 2 == 0 if repeated == "reply" else i % 3 == 2
            reply = "Noted." if repeated == "reply" and edits else f"Answer {i}."
            if edits:
                fact = ("core_memory_append", {"label": "human", "content": f"Fact {i}."})
                fake.enqueue(_calls(provider, fact))
            fake.enqueue(_answer(provider, reply))
            question = f"Question {i}." if repeated == "reply" else "Continue."
            messages.append({"role": "user", "content": question})
            messages.append(_as_appended(provider, _ask(provider, client, messages[-window:])))
            bodies.append(_bodies(provider, fake)[-1])
        assert _redos(client) == []
        replies = [text for role, text in _log(client) if role == "assistant" and text]
        assert len(replies) == turns  # each logged once
        # the request whose window opened on a message said again, after an exchange
        opened_on, fact = (5, "Fact 4.") if repeated == "reply" else (4, "Fact 2.")
        assert any(fact in r for r in tool_results(bodies[opened_on]))


class _CountedStore:
    """A real store that counts reads of a session's turns (``turns``)."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.reads = 0

    def turns(self, *args: Any, **kwargs: Any) -> Any:
        self.reads += 1
        return self._store.turns(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def _logged_exchanges(session: Session, count: int, content: str = "") -> list[Any]:
    """Log ``count`` questions each answered after an ``archival_memory_insert``
    exchange; the app's whole conversation (OpenAI wire form), which leaves them out."""
    logged: list[Message] = []
    wire: list[Any] = []
    for i in range(count):
        arguments = json.dumps({"content": f"Note {i}. {content}"})
        logged += [
            Message("user", f"Question {i}."),
            Message(
                "assistant",
                "",
                tool_calls=(ToolCall(f"call_{i}", "archival_memory_insert", arguments),),
            ),
            Message("tool", "Saved.", tool_call_id=f"call_{i}"),
            Message("assistant", f"Saved {i}."),
        ]
        wire += [
            {"role": "user", "content": f"Question {i}."},
            {"role": "assistant", "content": f"Saved {i}."},
        ]
    session.add(*logged)
    return [*wire, {"role": "user", "content": "Next?"}]


def test_a_whole_conversation_of_many_exchanges_reads_them_once(tmp_path: Path) -> None:
    """Past 256 exchanges, the kept ones (least recently used out, walked in conversation
    order) all missed: each whole re-send read every exchange from the store again, one
    read each (a review: 270 reads a request). They are read in one read of their span,
    once."""
    store = _CountedStore(SQLiteStore(tmp_path / "m.db"))
    session = Session(store, "s1", user_id="ana")
    messages = _logged_exchanges(session, 300)
    hidden = HiddenExchanges("openai")
    session.conversation_prints()  # the session's own read of its log
    reads = []
    for _ in range(3):
        store.reads = 0
        out = hidden.put_back(messages, session)
        reads.append(store.reads)
        assert len(out) == len(messages) + 2 * 300
    assert reads == [1, 0, 0]


def test_exchanges_over_the_kept_size_keep_the_newest(tmp_path: Path) -> None:
    """Past :data:`MAX_KEPT_CHARS` of exchanges the oldest go: each whole re-send reads
    those again (one read), never the newest, and a request of the last messages reads
    none (dropped by order of use, the newest went at the third whole re-send)."""
    store = _CountedStore(SQLiteStore(tmp_path / "m.db"))
    session = Session(store, "s1", user_id="ana")
    count = 30
    big = "x" * (MAX_KEPT_CHARS // (count - 10))  # the kept hold about 20 of them
    messages = _logged_exchanges(session, count, big)
    hidden = HiddenExchanges("openai")
    session.conversation_prints()
    whole = []
    for _ in range(3):
        store.reads = 0
        out = hidden.put_back(messages, session)
        assert big in json.dumps(out[1:3]) and len(out) == len(messages) + 2 * count
        whole.append(store.reads)
    assert whole == [1, 1, 1]
    store.reads = 0
    out = hidden.put_back(messages[-5:], session)
    assert (store.reads, len(out)) == (0, 5 + 2 * 2)


def _weather_call_id(provider: str, response: Any) -> str:
    if provider == "anthropic":
        return str(next(b.id for b in response.content if b.name == "get_weather"))
    calls = response.choices[0].message.tool_calls
    return str(next(c.id for c in calls if c.function.name == "get_weather"))


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_client_made_again_puts_back_our_results_beside_the_apps(
    memory: Memory, provider: str
) -> None:
    """A response that called the app's tool and ours at once: our results were kept only
    by the client that ran them, so after a restart (a new wrapped client on the same
    session) the whole conversation re-sent said the app's result alone, and branched
    there (a review: the tool turn logged again, the reply twice). They are read back
    from the log."""
    weather = (
        WEATHER
        if provider == "anthropic"
        else {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather in a city.",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    )
    vegan = ("core_memory_append", {"label": "human", "content": "Vegan."})
    with _fake(provider) as fake:
        first = _client(provider, fake, memory)
        fake.enqueue(_calls(provider, vegan, ("get_weather", {"city": "Porto"})))
        messages: list[Any] = [{"role": "user", "content": "I'm vegan. Weather in Porto?"}]
        response = _ask(provider, first, messages, tools=[weather])
        messages.append(_as_appended(provider, response))
        cid = _weather_call_id(provider, response)
        if provider == "anthropic":
            result = {"type": "tool_result", "tool_use_id": cid, "content": "Sunny, 24C"}
            messages.append({"role": "user", "content": [result]})
        else:
            messages.append({"role": "tool", "tool_call_id": cid, "content": "Sunny, 24C"})
        fake.enqueue(_answer(provider, "Sunny in Porto."))
        messages.append(_as_appended(provider, _ask(provider, first, messages, tools=[weather])))
        first.flush()
        again = _client(provider, fake, memory)  # a restart
        for i in range(2):
            fake.enqueue(_answer(provider, f"Later answer {i}."))
            messages.append({"role": "user", "content": f"Later question {i}."})
            messages.append(
                _as_appended(provider, _ask(provider, again, messages, tools=[weather]))
            )
        assert _redos(again) == []
        replies = [text for role, text in _log(again) if role == "assistant" and text]
        assert replies == ["Sunny in Porto.", "Later answer 0.", "Later answer 1."]
        vegan_result = "Core memory block 'human' is now:\nVegan."
        assert tool_results(_bodies(provider, fake)[-1]) == ["Sunny, 24C", vegan_result]


def _snapshot(provider: str, body: dict[str, Any]) -> str:
    """The core-memory snapshot a request carries (a system part)."""
    if provider == "anthropic":
        texts = [str(b["text"]) for b in body["system"]]
    else:
        texts = [str(m["content"]) for m in body["messages"] if m["role"] == "system"]
    [snapshot] = [t for t in texts if t.startswith("<core_memory>")]
    return snapshot


@pytest.mark.parametrize("provider", PROVIDERS)
def test_the_snapshot_moves_in_the_request_that_compacts(memory: Memory, provider: str) -> None:
    """The pinned snapshot was rendered before the call, and the compaction happened in
    it: the compacting request, whose window had dropped the edit's call and result,
    showed the model the edit nowhere, and the next request rewrote the prefix a second
    time (a review: the system prompt changed at each compaction and the call after)."""
    with _fake(provider) as fake:
        client = _client(provider, fake, memory, budget=3000)  # compaction: summarize
        vegan = ("core_memory_append", {"label": "human", "content": "Vegan."})
        messages: list[Any] = []
        snapshots, compactions = [], []
        for i in range(14):
            sent = len(_bodies(provider, fake))
            if i == 1:
                fake.enqueue(_calls(provider, vegan), _answer(provider, "Saved."))
            else:
                fake.enqueue(_answer(provider, f"Answer {i}: " + "words " * 60))
            messages.append({"role": "user", "content": f"Question {i}: " + "detail " * 60})
            messages.append(_as_appended(provider, _ask(provider, client, messages)))
            snapshots.append(_snapshot(provider, _bodies(provider, fake)[sent]))
            compactions.append(client.context.session.state().compactions)
        compacted = [i for i in range(1, 14) if compactions[i] != compactions[i - 1]]
        changed = [i for i in range(1, 14) if snapshots[i] != snapshots[i - 1]]
        assert compacted and changed == compacted
        assert "Vegan." in snapshots[compacted[0]] and "Vegan." not in snapshots[compacted[0] - 1]
