"""One session, two providers: an app that falls back from Anthropic to OpenAI (or back).

The two adapters log one tool exchange in two forms (Anthropic: parallel results as one
tool turn, its blocks kept; arguments canonical JSON. OpenAI: a turn per result;
arguments as the model wrote them), and a log may hold both. A review found the OpenAI
renderer sending one tool message for two calls, a failed-over retry of tool results
logged twice and refused, a faithfully converted whole conversation read as a branch
that deleted the user's memories, a second question of two overlapping calls never
remembered, and OpenAI-compatible tool-call ids sent to Anthropic unchanged. The real
``anthropic`` and ``openai`` SDK clients, wrapped, against the package's fake servers;
a real SQLite file; the hash embedder.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

anthropic = pytest.importorskip("anthropic")
openai = pytest.importorskip("openai")

from cli_support import run_cli  # noqa: E402
from contextos.cache import cached_prefix, render_openai  # noqa: E402
from contextos.engine.window import canonical_json  # noqa: E402
from contextos.errors import ProviderError  # noqa: E402
from contextos.llm.models import get_model  # noqa: E402
from contextos.memory import Memory  # noqa: E402
from contextos.providers import wrap  # noqa: E402
from contextos.testing.fake_anthropic import FakeAnthropic  # noqa: E402
from contextos.testing.fake_http import FakeResponse  # noqa: E402
from contextos.testing.fake_openai import FakeOpenAI  # noqa: E402

CLAUDE = "claude-sonnet-4-5"
GPT = "gpt-4o"
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}}
TOOLS_A = [{"name": "weather", "description": "w", "input_schema": SCHEMA}]
TOOLS_O = [
    {"type": "function", "function": {"name": "weather", "description": "w", "parameters": SCHEMA}}
]
QUESTION = {"role": "user", "content": "Weather in Lisbon and Porto?"}
TWO_CALLS = [
    {"type": "text", "text": "Checking both."},
    {"type": "tool_use", "id": "toolu_01", "name": "weather", "input": {"city": "Lisbon"}},
    {"type": "tool_use", "id": "toolu_02", "name": "weather", "input": {"city": "Porto"}},
]
RESULTS_A = {
    "role": "user",
    "content": [
        {"type": "tool_result", "tool_use_id": "toolu_01", "content": "Lisbon: 20C"},
        {"type": "tool_result", "tool_use_id": "toolu_02", "content": "Porto: 17C"},
    ],
}
RESULTS_O = [
    {"role": "tool", "tool_call_id": "toolu_01", "content": "Lisbon: 20C"},
    {"role": "tool", "tool_call_id": "toolu_02", "content": "Porto: 17C"},
]
ANTHROPIC_ID = re.compile(r"^[a-zA-Z0-9_-]+$")


def validate_openai(messages: list[dict[str, Any]]) -> list[str]:
    """Chat Completions' rule the real API enforces (FakeOpenAI does not): an assistant
    message with ``tool_calls`` is followed by one ``tool`` message per call id, and a
    tool message answers a call still open."""
    errors: list[str] = []
    open_ids: set[str] | None = None
    for i, m in enumerate(messages):
        role = m.get("role")
        if open_ids is not None and role != "tool":
            if open_ids:
                errors.append(f"[{i}] tool_call_ids without response: {sorted(open_ids)}")
            open_ids = None
        if role == "tool":
            if open_ids is None or m.get("tool_call_id") not in open_ids:
                errors.append(f"[{i}] tool message {m.get('tool_call_id')} answers no open call")
            else:
                open_ids.discard(m["tool_call_id"])
        if role == "assistant" and m.get("tool_calls"):
            open_ids = {tc["id"] for tc in m["tool_calls"]}
    if open_ids:
        errors.append(f"[end] tool_call_ids without response: {sorted(open_ids)}")
    return errors


def validate_anthropic(body: dict[str, Any]) -> list[str]:
    """The Messages API's ``tool_use`` id pattern (FakeAnthropic does not check it)."""
    return [
        f"[{i}] id {b.get('id') or b.get('tool_use_id')!r} invalid"
        for i, m in enumerate(body["messages"])
        for b in (m["content"] if isinstance(m["content"], list) else [])
        if b.get("type") in ("tool_use", "tool_result")
        and not ANTHROPIC_ID.match(b.get("id") or b.get("tool_use_id") or "")
    ]


def _tool_calls_response(calls: list[tuple[str, str]], text: str | None = None) -> FakeResponse:
    """A chat.completion whose reply is ``calls`` ((id, arguments) of ``weather``)."""
    message = {
        "role": "assistant",
        "content": text,
        "tool_calls": [
            {"id": i, "type": "function", "function": {"name": "weather", "arguments": a}}
            for i, a in calls
        ],
    }
    return FakeResponse(
        json_body={
            "id": "chatcmpl-tools",
            "object": "chat.completion",
            "created": 1,
            "model": GPT,
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": message}],
            "usage": {"prompt_tokens": 50, "completion_tokens": 5, "total_tokens": 55},
        }
    )


class Pair:
    """A wrapped Anthropic client and a wrapped OpenAI client on one session."""

    def __init__(self, memory: Memory, fa: FakeAnthropic, fo: FakeOpenAI) -> None:
        self.memory, self.fa, self.fo = memory, fa, fo
        ac = anthropic.Anthropic(base_url=fa.base_url, api_key="t", max_retries=0)
        oc = openai.OpenAI(base_url=fo.base_url, api_key="t", max_retries=0)
        self.a = wrap(ac, memory=memory, session="s", user_id="ana")
        self.o = wrap(oc, memory=memory, session="s", user_id="ana")

    def claude(self, messages: list[dict[str, Any]]) -> Any:
        reply = self.a.messages.create(
            model=CLAUDE, max_tokens=300, tools=TOOLS_A, messages=messages
        )
        self.a.flush()
        return reply

    def gpt(self, messages: list[dict[str, Any]]) -> Any:
        reply = self.o.chat.completions.create(
            model=GPT, max_tokens=300, tools=TOOLS_O, messages=messages
        )
        self.o.flush()
        return reply

    def log(self) -> list[tuple[str, str, dict[str, Any]]]:
        turns = self.a.context.session.turns()
        return [(t.message.role, t.message.content, dict(t.message.metadata)) for t in turns]

    def remembered(self) -> list[str]:
        return sorted(r.text for r in self.memory.get_all(user_id="ana", limit=100))

    def openai_sent(self) -> list[dict[str, Any]]:
        return list(self.fo.completions_requests()[-1].json()["messages"])

    def anthropic_sent(self) -> dict[str, Any]:
        return dict(self.fa.messages_requests()[-1].json())

    def close(self) -> None:
        """Close both SDK clients. Why: an SDK client holds a reference cycle, so one left
        open is closed by the garbage collector, at some later test, and its socket may be
        finalized before the client closes it (a ``ResourceWarning`` that failed that
        other test, at random)."""
        self.a.close()
        self.o.close()


@pytest.fixture
def pair(memory: Memory) -> Iterator[Pair]:
    with FakeAnthropic() as fa, FakeOpenAI() as fo:
        both = Pair(memory, fa, fo)
        try:
            yield both
        finally:
            both.close()


def _parallel_calls_then(text: str) -> Any:
    """A FakeAnthropic reply hook: the two calls first, then ``text``."""
    replies = iter([TWO_CALLS])
    return lambda body: next(replies, text)


# -- 1. a logged multi-result turn, sent to OpenAI --------------------------------------


def test_anthropic_parallel_results_go_to_openai_as_one_tool_message_each(pair: Pair) -> None:
    pair.fa.reply = _parallel_calls_then("Lisbon 20C, Porto 17C.")
    pair.claude([QUESTION])
    pair.claude([RESULTS_A])
    pair.gpt([{"role": "user", "content": "And tomorrow?"}])  # Anthropic is down
    sent = pair.openai_sent()
    assert validate_openai(sent) == []  # was: toolu_02 without response (a 400)
    tools = [(m["tool_call_id"], m["content"]) for m in sent if m["role"] == "tool"]
    assert tools == [("toolu_01", "Lisbon: 20C"), ("toolu_02", "Porto: 17C")]
    roles = ["user", "assistant", "tool", "assistant", "user", "assistant"]
    assert [r for r, _, _ in pair.log()] == roles  # the results one turn, as logged


def test_text_sent_beside_parallel_results_follows_them_to_openai(pair: Pair) -> None:
    pair.fa.reply = _parallel_calls_then("Lisbon 20C, Porto 17C.")
    pair.claude([QUESTION])
    note = {"type": "text", "text": "Porto is the one I care about."}
    pair.claude([{"role": "user", "content": [*RESULTS_A["content"], note]}])
    pair.gpt([{"role": "user", "content": "And tomorrow?"}])
    sent = pair.openai_sent()
    assert validate_openai(sent) == []
    assert [(m["role"], m["content"]) for m in sent[2:5]] == [
        ("tool", "Lisbon: 20C"),
        ("tool", "Porto: 17C"),
        ("user", "Porto is the one I care about."),  # said by the user: not lost
    ]


def test_explicit_openai_breakpoints_after_such_a_turn_mark_the_history_end(pair: Pair) -> None:
    pair.fa.reply = _parallel_calls_then("Lisbon 20C, Porto 17C.")
    pair.claude([QUESTION])
    pair.claude([RESULTS_A])
    system = {"role": "system", "content": "You are a weather bot. " * 600}  # cacheable
    pair.o.chat.completions.create(
        model=GPT,
        messages=[system, {"role": "user", "content": "And tomorrow?"}],
        prompt_cache_options={"mode": "explicit"},
    )
    sent = pair.openai_sent()
    marked = [i for i, m in enumerate(sent) if "prompt_cache_breakpoint" in json.dumps(m)]
    assert marked[-1] == len(sent) - 2  # the history's last turn, not a result before it
    assert validate_openai(sent) == []


def test_an_open_loops_question_keeps_its_image_after_such_a_turn(pair: Pair) -> None:
    pair.fa.reply = _parallel_calls_then("Lisbon 20C, Porto 17C.")
    pair.claude([QUESTION])
    pair.claude([RESULTS_A])
    png = (
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5"
        "ErkJggg=="
    )
    image = {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png}"}}
    question = {"role": "user", "content": [{"type": "text", "text": "Which city?"}, image]}
    pair.fo.enqueue(_tool_calls_response([("call_9", '{"city":"Faro"}')]))
    call = pair.gpt([question]).choices[0].message.model_dump(exclude_none=True)
    result = {"role": "tool", "tool_call_id": "call_9", "content": "Faro: 25C"}
    pair.gpt([question, call, result])  # a step of the loop: the question with its image
    sent = pair.openai_sent()
    assert sent[-3] == question  # its image, as given (was: lost, the rows one off)
    assert validate_openai(sent) == []


def test_the_cli_window_of_such_a_log_for_an_openai_model(pair: Pair, tmp_path: Path) -> None:
    pair.fa.reply = _parallel_calls_then("Lisbon 20C, Porto 17C.")
    pair.claude([QUESTION])
    pair.claude([RESULTS_A])
    db = tmp_path / "m.db"
    args = ("window", "--session", "s", "-u", "ana", "-m", GPT, "-q", "And tomorrow?")
    table = run_cli(*args, "--json", db=db)  # its cold cost simulates the OpenAI request
    assert table.returncode == 0, table.stderr
    body = run_cli(*args, "--format", "openai", db=db)
    assert body.returncode == 0, body.stderr
    assert validate_openai(json.loads(body.stdout)["messages"]) == []


def test_the_cached_prefix_of_such_a_window_for_openai_is_its_whole_history(pair: Pair) -> None:
    pair.fa.reply = _parallel_calls_then("Lisbon 20C, Porto 17C.")
    pair.claude([QUESTION])
    pair.claude([RESULTS_A])
    model = get_model(GPT)
    window = pair.a.context.session.window(model, "And tomorrow?")
    body = render_openai(window, model)
    last = canonical_json(body["messages"][-2]).encode()  # the history's last turn
    assert body["messages"][-2]["content"] == "Lisbon 20C, Porto 17C."
    assert cached_prefix(body, window, "openai").endswith(last)  # was: one message short


# -- 2. a tool loop that fails over --------------------------------------------------


def test_anthropic_tool_results_fail_over_to_openai_logged_once(pair: Pair) -> None:
    pair.fa.reply = lambda body: TWO_CALLS
    pair.claude([QUESTION])
    pair.fa.enqueue_error(529, "Overloaded", error_type="overloaded_error")
    with pytest.raises(ProviderError):
        pair.claude([RESULTS_A])  # logged its results, then the 529
    answer = pair.gpt(RESULTS_O)  # the same results, the OpenAI way: was a ValueError
    assert pair.o.calls[-1].new_messages == ()  # recognised as the retry: nothing logged
    assert validate_openai(pair.openai_sent()) == []
    assert [r for r, _, _ in pair.log()] == ["user", "assistant", "tool", "assistant"]
    assert pair.log()[-1][1] == answer.choices[0].message.content
    pair.gpt([{"role": "user", "content": "Thanks. Anything else?"}])
    assert validate_openai(pair.openai_sent()) == []


def test_openai_tool_results_fail_over_to_anthropic_logged_once(pair: Pair) -> None:
    pair.fo.enqueue(
        _tool_calls_response([("call_1", '{"city":"Lisbon"}'), ("call_2", '{"city":"Porto"}')])
    )
    pair.gpt([QUESTION])
    pair.fo.enqueue_error(500, "server error")
    results = [
        {"role": "tool", "tool_call_id": "call_1", "content": "Lisbon: 20C"},
        {"role": "tool", "tool_call_id": "call_2", "content": "Porto: 17C"},
    ]
    with pytest.raises(ProviderError):
        pair.gpt(results)  # logged a turn per result, then the 500
    joined = {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "call_1", "content": "Lisbon: 20C"},
            {"type": "tool_result", "tool_use_id": "call_2", "content": "Porto: 17C"},
        ],
    }
    pair.claude([joined])  # one user turn of both results: was a ValueError
    assert pair.a.calls[-1].new_messages == ()
    assert [r for r, _, _ in pair.log()] == ["user", "assistant", "tool", "tool", "assistant"]
    shape = [[b["type"] for b in m["content"]] for m in pair.anthropic_sent()["messages"]]
    assert shape == [["text"], ["tool_use", "tool_use"], ["tool_result", "tool_result"]]


def test_tool_results_that_answer_no_open_call_are_refused_before_they_are_logged(
    pair: Pair,
) -> None:
    pair.fa.reply = lambda body: TWO_CALLS
    pair.claude([QUESTION])
    pair.fa.reply = lambda body: "ok"
    pair.claude([RESULTS_A])
    pair.claude([{"role": "user", "content": "thanks"}])  # the conversation went on
    log, requests = pair.log(), len(pair.fo.completions_requests())
    with pytest.raises(ValueError, match="answers no tool call still open"):
        pair.gpt(RESULTS_O)  # too late
    assert pair.log() == log  # "before anything is sent": nothing logged either
    assert len(pair.fo.completions_requests()) == requests


def test_a_regenerate_of_the_answer_to_tool_results_is_not_refused(pair: Pair) -> None:
    pair.fa.reply = _parallel_calls_then("Lisbon 20C, Porto 17C.")
    calls = pair.claude([QUESTION])
    history = [QUESTION, {"role": "assistant", "content": [b.to_dict() for b in calls.content]}]
    pair.claude([*history, RESULTS_A])
    pair.gpt(_to_openai([*history, RESULTS_A]))  # the same request again, on the fallback
    log = pair.log()
    first = ["user", "assistant", "tool", "assistant"]
    assert [r for r, _, _ in log] == [*first, "tool", "tool", "assistant"]  # a branch
    assert [meta.get("redo_of") for _, _, meta in log[4:6]] == [2, None]  # results again
    assert validate_openai(pair.openai_sent()) == []


# -- 3. the whole conversation, converted, to the other provider ----------------------


def _to_openai(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """An Anthropic conversation as Chat Completions messages, converted faithfully."""
    out: list[dict[str, Any]] = []
    for m in history:
        content = m["content"]
        if isinstance(content, str):
            out.append(dict(m))
        elif m["role"] == "assistant":
            text = "".join(b["text"] for b in content if b["type"] == "text")
            calls = [
                {
                    "id": b["id"],
                    "type": "function",
                    "function": {"name": b["name"], "arguments": json.dumps(b["input"])},
                }
                for b in content
                if b["type"] == "tool_use"
            ]
            out.append({"role": "assistant", "content": text or None, "tool_calls": calls})
            if not calls:
                del out[-1]["tool_calls"]
        else:
            out += [
                {"role": "tool", "tool_call_id": b["tool_use_id"], "content": b["content"]}
                for b in content
            ]
    return out


def _to_anthropic(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A Chat Completions conversation as Anthropic messages, converted faithfully."""
    out: list[dict[str, Any]] = []
    for m in history:
        if m["role"] == "assistant":
            blocks = [{"type": "text", "text": m["content"]}] if m.get("content") else []
            blocks += [
                {
                    "type": "tool_use",
                    "id": c["id"],
                    "name": c["function"]["name"],
                    "input": json.loads(c["function"]["arguments"]),
                }
                for c in m.get("tool_calls") or []
            ]
            out.append({"role": "assistant", "content": blocks})
        elif m["role"] == "tool":
            result = {"type": "tool_result", "tool_use_id": m["tool_call_id"]}
            out.append({"role": "user", "content": [{**result, "content": m["content"]}]})
        else:
            out.append(dict(m))
    return out


def test_a_whole_anthropic_conversation_sent_to_openai_deletes_no_memory(pair: Pair) -> None:
    pair.fa.reply = _parallel_calls_then("Noted.")
    history: list[dict[str, Any]] = []
    for said in (QUESTION["content"], RESULTS_A["content"], "I am allergic to peanuts."):
        history.append({"role": "user", "content": said})
        reply = pair.claude(history)
        history.append({"role": "assistant", "content": [b.to_dict() for b in reply.content]})
    before = pair.remembered()
    assert "I am allergic to peanuts." in before
    history.append({"role": "user", "content": "Suggest a snack for me."})
    pair.gpt(_to_openai(history))  # Anthropic is down
    new = [m.content for m in pair.o.calls[-1].new_messages]
    assert new == ["Suggest a snack for me."]  # only the question: the rest is the log
    assert all("redo_of" not in meta for _, _, meta in pair.log())  # no branch
    assert set(before) <= set(pair.remembered())  # was: the allergy deleted
    assert "Suggest a snack for me." in pair.remembered()
    assert validate_openai(pair.openai_sent()) == []


@pytest.mark.parametrize("arguments", ['{"city":"Lisbon"}', '{ "city" : "Lisbon" }'])
def test_a_whole_openai_conversation_sent_to_anthropic_deletes_no_memory(
    pair: Pair, arguments: str
) -> None:
    history: list[dict[str, Any]] = []

    def ask(message: dict[str, Any]) -> None:
        history.append(message)
        reply = pair.gpt(history)
        history.append(reply.choices[0].message.model_dump(exclude_none=True))

    pair.fo.enqueue(_tool_calls_response([("call_1", arguments)]))  # as the model wrote them
    ask({"role": "user", "content": "Weather in Lisbon?"})
    ask({"role": "tool", "tool_call_id": "call_1", "content": "Lisbon: 20C"})
    ask({"role": "user", "content": "I am allergic to peanuts."})
    before = pair.remembered()
    history.append({"role": "user", "content": "Suggest a snack."})
    pair.claude(_to_anthropic(history))  # OpenAI is down; the input echoed canonically
    assert all("redo_of" not in meta for _, _, meta in pair.log())
    assert [r for r, _, _ in pair.log()].count("tool") == 1
    assert set(before) <= set(pair.remembered())


# -- 4. two calls of one session in flight together -----------------------------------


@pytest.mark.parametrize("kinds", ["ao", "aa", "oo"])
def test_overlapping_calls_remember_both_questions(memory: Memory, kinds: str) -> None:
    release = {"1": threading.Event(), "2": threading.Event()}
    arrived = {"1": threading.Event(), "2": threading.Event()}

    def held(body: dict[str, Any]) -> str:
        tag = "1" if "QUESTION-ONE" in json.dumps(body["messages"][-1]) else "2"
        arrived[tag].set()
        assert release[tag].wait(10)
        return f"answer to {tag}"

    with FakeAnthropic(reply=held) as fa, FakeOpenAI(reply=held) as fo:

        def call(kind: str, question: str) -> None:
            messages = [{"role": "user", "content": question}]
            if kind == "a":
                c = anthropic.Anthropic(base_url=fa.base_url, api_key="t", max_retries=0)
                with wrap(c, memory=memory, session="shared", user_id="ana") as w:
                    w.messages.create(model=CLAUDE, max_tokens=100, messages=messages)
            else:
                o = openai.OpenAI(base_url=fo.base_url, api_key="t", max_retries=0)
                with wrap(o, memory=memory, session="shared", user_id="ana") as w:
                    w.chat.completions.create(model=GPT, max_tokens=100, messages=messages)

        first = threading.Thread(target=call, args=(kinds[0], "QUESTION-ONE peanuts"))
        second = threading.Thread(target=call, args=(kinds[1], "QUESTION-TWO my sister is Rita"))
        first.start()
        assert arrived["1"].wait(10)
        second.start()
        assert arrived["2"].wait(10)  # both questions logged, neither answered
        release["1"].set()
        first.join(10)  # the first reply is logged after the second question
        release["2"].set()
        second.join(10)
    remembered = sorted(r.text for r in memory.get_all(user_id="ana", limit=100))
    assert remembered == [
        "QUESTION-ONE peanuts",
        "QUESTION-TWO my sister is Rita",  # was: missing
        "answer to 1",
        "answer to 2",
    ]


# -- 5. tool-call ids the Messages API refuses ----------------------------------------


def test_openai_compatible_tool_call_ids_go_to_anthropic_valid_and_paired(pair: Pair) -> None:
    ids = ["functions.weather:0", "functions:weather.0"]  # Kimi K2's; the two read alike
    pair.fo.enqueue(_tool_calls_response([(ids[0], '{"city": "Lisbon"}'), (ids[1], "{}")]))
    pair.gpt([{"role": "user", "content": "Weather?"}])
    pair.gpt([{"role": "tool", "tool_call_id": i, "content": f"{n}C"} for n, i in enumerate(ids)])
    pair.claude([{"role": "user", "content": "And tomorrow?"}])  # the fallback
    body = pair.anthropic_sent()
    assert validate_anthropic(body) == []
    blocks = [b for m in body["messages"] for b in m["content"]]
    uses = [b["id"] for b in blocks if b["type"] == "tool_use"]
    results = [(b["tool_use_id"], b["content"]) for b in blocks if b["type"] == "tool_result"]
    assert len(set(uses)) == 2  # no two calls made one
    assert results == [(uses[0], "0C"), (uses[1], "1C")]  # each result with its call
    pair.claude([{"role": "user", "content": "Thanks."}])
    again = [b for m in pair.anthropic_sent()["messages"] for b in m["content"]]
    assert [b["id"] for b in again if b["type"] == "tool_use"] == uses  # the same every call
    assert [t.message.tool_calls[0].id for t in pair.a.context.session.turns()[1:2]] == ids[:1]
