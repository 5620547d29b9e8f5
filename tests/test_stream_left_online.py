"""Streams an app leaves, and streamed tool calls some servers index their own way (review
s40, streaming).

- A stream the app stopped reading, never read, or left to a web server's disconnect was
  reported only at the same wrapped client's next call or ``flush()``: a client wrapped per
  request is never called again, so the reply (whole, for a handler that stopped at the
  end marker), its usage and ``on_call`` were lost and the question never remembered. A
  script that exited, or ended its ``with Memory(...)`` block, holding such a stream lost
  it too. One reporter thread now reports what is left, and ``Memory.close()`` and the
  interpreter's exit report what is still open.
- OpenAI-compatible servers that stream every parallel tool call at ``index`` 0 (Ollama) or
  with no index (Gemini's OpenAI endpoint) had their calls logged as one, its arguments
  two JSON texts joined.
- An Anthropic ``tool_use`` whose input came whole in ``content_block_start`` was logged as
  ``{}``.

The real ``anthropic`` / ``openai`` SDK clients against the loopback fakes (scripted SSE
where the shape matters), real SQLite memory files, the shipped HashEmbedder; a real
subprocess for the exits.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

anthropic = pytest.importorskip("anthropic")
openai = pytest.importorskip("openai")

from contextos.engine.context import COMPLETE_KEY, REDO_KEY  # noqa: E402
from contextos.engine.session import Session  # noqa: E402
from contextos.memory import Memory  # noqa: E402
from contextos.providers import wrap  # noqa: E402
from contextos.providers.base import CallRecord  # noqa: E402
from contextos.providers.openai import reply_of  # noqa: E402
from contextos.store.sqlite import SQLiteStore  # noqa: E402
from contextos.testing.embedders import HashEmbedder  # noqa: E402
from contextos.testing.fake_anthropic import AnthropicUsage, message_start  # noqa: E402
from contextos.testing.fake_http import FakeHTTPServer, FakeResponse, SSEEvent  # noqa: E402
from contextos.testing.fake_openai import OpenAIUsage  # noqa: E402
from contextos.types import ToolCall  # noqa: E402
from sdk_support import fake_and_sdk  # noqa: E402

MODEL = "claude-sonnet-4"
GPT = "gpt-4.1-mini"
PROVIDERS = ["anthropic", "openai"]
ANSWER = "Lentil curry with rice."
LONG = "a long story " * 20
QUESTION = "I am vegetarian. What should I cook?"
WAIT_S = 20.0


@pytest.fixture(params=PROVIDERS)
def provider(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def fake(provider: str) -> Iterator[Any]:
    fake_server, _ = fake_and_sdk(provider)
    with fake_server(reply=lambda body: ANSWER) as server:
        yield server


@pytest.fixture
def sdk(provider: str, fake: Any) -> Iterator[Any]:
    """The SDK client, shared by every request, as a web app keeps one."""
    _, client_class = fake_and_sdk(provider)
    with client_class(base_url=fake.base_url, api_key="t", max_retries=0) as client:
        yield client


def _memory(path: Path, embedder: HashEmbedder | None = None) -> Memory:
    return Memory(path, embedder=embedder or HashEmbedder(), background_embedding=False)


def _stream(client: Any, provider: str, question: str) -> Any:
    messages = [{"role": "user", "content": question}]
    if provider == "anthropic":
        return client.messages.create(model=MODEL, max_tokens=64, messages=messages, stream=True)
    return client.chat.completions.create(model=GPT, messages=messages, stream=True)


def _text(provider: str, event: Any) -> str:
    if provider == "anthropic":
        return event.delta.text if event.type == "content_block_delta" else ""
    return (event.choices[0].delta.content or "") if event.choices else ""


def _at_end(provider: str, event: Any) -> bool:
    """The reply's end marker: ``message_stop``, or choice 0's ``finish_reason``."""
    if provider == "anthropic":
        return bool(event.type == "message_stop")
    return bool(event.choices and event.choices[0].finish_reason)


def _enqueue_long(provider: str, fake: Any) -> None:
    if provider == "anthropic":
        fake.enqueue_reply(LONG, AnthropicUsage(10, 40), stream=True)
    else:
        fake.enqueue_reply(LONG, OpenAIUsage(10, 40), stream=True)


def _commits_done() -> None:
    """Wait for the wrapped clients' background commits (each client has its own)."""
    for thread in threading.enumerate():
        if thread.name == "contextos-commit":
            thread.join(WAIT_S)


def _turns(memory: Memory, session: str = "s") -> list[tuple[str, str, Any]]:
    return [
        (t.message.role, t.message.content, t.message.metadata.get(COMPLETE_KEY))
        for t in Session(memory, session, user_id="ana").turns()
    ]


def _memories(memory: Memory) -> list[str]:
    return sorted(r.text for r in memory.get_all(user_id="ana"))


# -- a client wrapped per request, never called again -------------------------------------


def test_a_per_request_client_stopped_at_the_end_marker_logs_the_whole_reply(
    provider: str, fake: Any, sdk: Any, tmp_path: Path
) -> None:
    """A handler wraps a client per request, streams the answer, stops reading at the
    reply's end marker (the docs: such a caller "has a whole reply") and returns. With no
    later call, flush or close, the call is recorded (``on_call``, with its usage), the
    reply logged and remembered, and the next request sends it back to the model."""
    records: queue.Queue[CallRecord] = queue.Queue()
    with _memory(tmp_path / "m.db") as memory:

        def handle(question: str) -> str:
            client = wrap(sdk, memory=memory, session="s", user_id="ana", on_call=records.put)
            said = []
            for event in _stream(client, provider, question):
                said.append(_text(provider, event))
                if _at_end(provider, event):
                    break  # never closed: the handler returns, the client is dropped
            return "".join(said)

        assert handle(QUESTION) == ANSWER
        gc.collect()  # openai's stream holds itself: only the collector frees it
        record = records.get(timeout=WAIT_S)  # reported with no later call
        assert (record.stream, record.complete, record.reply.content) == (True, True, ANSWER)
        assert record.usage.input_tokens > 0 and record.usage.output_tokens > 0
        _commits_done()
        assert _turns(memory) == [("user", QUESTION, None), ("assistant", ANSWER, None)]
        assert _memories(memory) == sorted([QUESTION, ANSWER])

        handle("Something quicker?")  # the next request: a new client, the same session
        sent = fake.requests[-1].json()["messages"]
        assert [m["role"] for m in sent][-3:] == ["user", "assistant", "user"]
        assert ANSWER in json.dumps(sent[-2])


def test_a_stream_a_per_request_handler_never_reads_is_recorded(
    provider: str, fake: Any, sdk: Any, tmp_path: Path
) -> None:
    """The handler opens the stream and fails before its loop: the question is still
    remembered, and the call recorded, as incomplete."""
    records: queue.Queue[CallRecord] = queue.Queue()
    with _memory(tmp_path / "m.db") as memory:

        def handle(question: str) -> None:
            client = wrap(sdk, memory=memory, session="s", user_id="ana", on_call=records.put)
            _stream(client, provider, question)
            raise RuntimeError("the template failed to render")

        with pytest.raises(RuntimeError):
            handle(QUESTION)
        gc.collect()  # openai's stream holds itself: only the collector frees it
        record = records.get(timeout=WAIT_S)
        assert (record.stream, record.complete) == (True, False)
        _commits_done()
        assert _turns(memory) == [("user", QUESTION, None)]  # an empty fragment: not logged
        assert _memories(memory) == [QUESTION]


class _Body:
    """A web response body relaying a stream (a Starlette ``StreamingResponse``'s
    iterator): ``shape`` ``plain`` loops over it; ``with`` closes it in a ``with`` block,
    as the docs advise, from a generator that sits in a reference cycle (self ->
    generator -> frame -> self), so that a server dropping it leaves it to the collector,
    which closes the stream from inside the collection."""

    def __init__(self, stream: Any, provider: str, shape: str) -> None:
        self.stream, self.provider = stream, provider
        self.chunks = self._with() if shape == "with" else self._plain()

    def _plain(self) -> Iterator[str]:
        for event in self.stream:
            if text := _text(self.provider, event):
                yield text

    def _with(self) -> Iterator[str]:
        with self.stream:
            yield from self._plain()


@pytest.mark.parametrize("shape", ["plain", "with"])
def test_a_web_client_that_disconnects_has_its_question_remembered(
    provider: str, shape: str, fake: Any, sdk: Any, tmp_path: Path
) -> None:
    """A per-request client's answer is relayed to a browser that closes the tab after
    the first chunk: the server drops the body. The question ("I am vegetarian") is
    remembered, the fragment logged as incomplete, the call recorded."""
    records: queue.Queue[CallRecord] = queue.Queue()
    with _memory(tmp_path / "m.db") as memory:

        def handle(question: str) -> _Body:
            client = wrap(sdk, memory=memory, session="s", user_id="ana", on_call=records.put)
            _enqueue_long(provider, fake)
            return _Body(_stream(client, provider, question), provider, shape)

        body = handle(QUESTION)
        assert next(body.chunks)  # the browser got the first words, then left
        del body
        gc.collect()  # the body (and openai's stream) in a cycle: only the collector frees it
        record = records.get(timeout=WAIT_S)
        assert (record.stream, record.complete) == (True, False)
        _commits_done()
        ((_, question, _), (role, fragment, complete)) = _turns(memory)
        assert question == QUESTION and role == "assistant" and complete is False
        assert fragment and LONG.startswith(fragment)
        assert _memories(memory) == [QUESTION]


class _GatedStore(SQLiteStore):
    """A SQLite store that appends a turn holding a gate's word only once that gate is
    open: a commit slow to log its reply. ``entered[word]`` is set once an append waits."""

    def __init__(self, path: Path, *words: str) -> None:
        super().__init__(path)
        self.gates = {word: threading.Event() for word in words}
        self.entered = {word: threading.Event() for word in words}

    def append_turns(self, scope: Any, messages: Sequence[Any], *args: Any, **kw: Any) -> Any:
        for word, gate in self.gates.items():
            if any(word in str(m.content) for m in messages) and not gate.is_set():
                self.entered[word].set()
                assert gate.wait(WAIT_S)
        return super().append_turns(scope, messages, *args, **kw)

    def open_all(self) -> None:
        for gate in self.gates.values():
            gate.set()


def test_the_next_call_waits_for_the_reporters_record_of_a_left_stream(
    fake: Any, sdk: Any, provider: str, tmp_path: Path
) -> None:
    """A shared client, two streams opened side by side. The first is read to its end;
    its commit is slow. The app stops the second at its end marker and drops it: the
    reporter records it, and its commit waits behind the first. The app's next call
    (only the new question) waits for that record too -- the reporter took the stream
    before the call could report it itself -- and so its window holds both answers.
    Without that wait it was built once the first commit ended, before the second's
    reply was logged."""
    answers = iter(["answer one", "answer two", "answer three"])
    fake.reply = lambda body: next(answers)
    store = _GatedStore(tmp_path / "m.db", "answer one", "answer two")
    memory = Memory(store=store, embedder=HashEmbedder(), background_embedding=False)
    with memory, contextlib.closing(store):
        wrapped = wrap(sdk, memory=memory, session="s", user_id="ana")
        opened = [iter(_stream(wrapped, provider, q)) for q in ("first one", "second one")]
        try:
            for _ in opened[0]:  # to its end: its commit waits at the first gate
                pass
            _second_left_while_the_first_commits(wrapped, provider, store, opened)
        finally:
            store.open_all()
        sent = json.dumps(fake.requests[-1].json()["messages"])
        assert "answer one" in sent and "answer two" in sent
        wrapped.flush()


def _second_left_while_the_first_commits(
    wrapped: Any, provider: str, store: _GatedStore, opened: list[Iterator[Any]]
) -> None:
    """The body of the test above, with the first reply's commit held at its gate."""
    assert store.entered["answer one"].wait(WAIT_S)
    second = opened.pop()  # the only reference: dropped below
    for event in second:
        if _at_end(provider, event):
            break
    del second
    gc.collect()  # openai's stream holds itself: only the collector frees it
    for _ in range(200):  # the reporter has made its record, and waits behind the commit
        if len(wrapped.calls) == 2:
            break
        threading.Event().wait(0.05)
    assert len(wrapped.calls) == 2
    asked = threading.Thread(
        target=lambda: _stream(wrapped, provider, "third question").close(), daemon=True
    )
    asked.start()
    asked.join(0.3)  # into the call: it waits, for the record or behind the first commit
    store.gates["answer one"].set()  # the first commit ends; the second waits at its gate
    assert store.entered["answer two"].wait(WAIT_S)
    asked.join(1.0)  # had the call not waited for the record, it would be sent by now
    store.gates["answer two"].set()
    asked.join(WAIT_S)
    assert not asked.is_alive()


# -- a process that exits without flush -----------------------------------------------------

_CHILD = """
import sys
from contextos.memory import Memory
from contextos.providers import wrap
from contextos.testing.embedders import HashEmbedder

provider, base_url, db, how, question = sys.argv[1:]
if provider == "anthropic":
    import anthropic
    sdk = anthropic.Anthropic(base_url=base_url, api_key="t", max_retries=0)
else:
    import openai
    sdk = openai.OpenAI(base_url=base_url, api_key="t", max_retries=0)


def opened(client):
    messages = [{"role": "user", "content": question}]
    if provider == "anthropic":
        return client.messages.create(model="claude-sonnet-4", max_tokens=64,
                                      messages=messages, stream=True)
    return client.chat.completions.create(model="gpt-4.1-mini", messages=messages,
                                          stream=True)


def read_a_little(stream):
    for n, _ in enumerate(stream):
        if n == 4:
            if how == "interrupt":
                raise KeyboardInterrupt  # the user's Ctrl-C while the answer prints
            break


def run(memory):
    client = wrap(sdk, memory=memory, session="s", user_id="ana")
    global stream  # held to the end: a script's loop variable
    stream = opened(client)
    if how != "unread":
        read_a_little(stream)
    if how == "dropped":
        del stream


memory = Memory(db, embedder=HashEmbedder(), background_embedding=False)
if how == "with_block":
    with memory:
        run(memory)
    print("memory closed")
else:
    run(memory)
print("exiting")
"""


@pytest.mark.parametrize(
    ("provider", "how"),
    [
        ("anthropic", "held"),
        ("anthropic", "dropped"),
        ("anthropic", "unread"),
        ("anthropic", "with_block"),
        ("anthropic", "interrupt"),
        ("openai", "held"),
        ("openai", "with_block"),
    ],
    indirect=["provider"],
)
def test_a_script_that_exits_without_flush_keeps_the_question_and_the_fragment(
    provider: str, how: str, fake: Any, tmp_path: Path
) -> None:
    """A script breaks out of a stream (or never reads it, or is stopped by Ctrl-C) and
    ends: holding the stream, right after dropping it, or at the end of its ``with
    Memory(...)`` block, without ``flush()``. The question is remembered, and the fragment
    logged as incomplete, as when the app calls again."""
    _enqueue_long(provider, fake)
    db = tmp_path / "m.db"
    child = subprocess.run(
        [sys.executable, "-c", _CHILD, provider, fake.base_url, str(db), how, QUESTION],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    if how == "interrupt":
        assert child.returncode != 0 and "KeyboardInterrupt" in child.stderr
    else:
        assert child.returncode == 0, child.stderr
        assert "exiting" in child.stdout
    with _memory(db) as memory:
        turns = _turns(memory)
        assert _memories(memory) == [QUESTION]
    assert turns[0] == ("user", QUESTION, None)
    if how == "unread":
        assert turns[1:] == []  # nothing was read: an empty fragment is not logged
    else:
        ((role, fragment, complete),) = turns[1:]
        assert role == "assistant" and complete is False and LONG.startswith(fragment)


_FORKING = """
import atexit, gc, os, sys
import anthropic
from contextos.memory import Memory
from contextos.providers import wrap
from contextos.testing.embedders import HashEmbedder

url, db, billing, how = sys.argv[1:5]
parent = os.getpid()


def on_call(record):  # the app's usage meter
    with open(billing, "a") as f:
        f.write(f"{'parent' if os.getpid() == parent else 'child'} {record.usage.input_tokens}\\n")


def ask(client):
    return client.messages.create(
        model="claude-sonnet-4", max_tokens=64, stream=True,
        messages=[{"role": "user", "content": "Tell me a story"}],
    )


sdk = anthropic.Anthropic(base_url=url, api_key="t", max_retries=0)
with Memory(db, embedder=HashEmbedder(), background_embedding=False) as mem:
    client = wrap(sdk, memory=mem, session="s", user_id="ana", on_call=on_call)
    plain = wrap(sdk, on_call=on_call)  # no memory: the child may use it
    stream = ask(client)
    events = iter(stream)
    for _ in range(3):
        next(events)
    if os.fork() == 0:
        mine = iter(ask(plain))  # the child's own stream, left half read
        for _ in range(3):
            next(mine)
        if how == "flush":
            client.flush()  # must not report the parent's stream
            plain.flush()  # reports the child's own
            os._exit(0)
        if how == "os_exit":
            os._exit(0)
        if how == "atexit":
            atexit._run_exitfuncs()
            os._exit(0)
        if how == "drop":  # the child drops the parent's stream: the reporter has it
            del stream, events
            gc.collect()
        sys.exit(0)  # a child's ordinary exit: unwinds the with block, closes the Memory
    os.wait()
    for _ in events:
        pass
    client.flush()
"""

#: What the app's usage meter holds once the parent is done: the parent's call once, and
#: the child's own half-read stream (input tokens 7) wherever the child's exit settles it.
FORK_BILLING = {
    "atexit": ["child 7", "parent 10"],
    "sys_exit": ["child 7", "parent 10"],
    "drop": ["child 7", "parent 10"],
    "flush": ["child 7", "parent 10"],
    "os_exit": ["parent 10"],
}


@pytest.mark.parametrize("how", list(FORK_BILLING))
@pytest.mark.parametrize("provider", ["anthropic"], indirect=True)
def test_a_forked_child_leaves_the_parents_open_stream_to_the_parent(
    provider: str, how: str, fake: Any, tmp_path: Path
) -> None:
    """A child forked while the parent read a stream recorded that stream at its exit,
    at ``sys.exit()`` inside ``with Memory(...)`` (the Memory's close settles its
    streams), at ``flush()`` (its main thread looks like the parent's forking one), or
    once it dropped it: the app's on_call ran twice, the parent's input tokens counted
    twice, and the child tried to commit into a store it cannot use (two reviews). The
    stream the child itself opens, with a client wrapped before the fork, is still
    settled at its exit (or its flush)."""
    _enqueue_long(provider, fake)
    fake.enqueue_reply(LONG, AnthropicUsage(7, 40), stream=True)  # the child's stream
    billing = tmp_path / "billing.log"
    child = subprocess.run(
        [sys.executable, "-c", _FORKING, fake.base_url, str(tmp_path / "m.db"), str(billing), how],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert child.returncode == 0, child.stderr
    assert "Error" not in child.stderr, child.stderr  # the child committed nothing
    assert billing.read_text().split("\n")[:-1] == FORK_BILLING[how]


_FORKED_IDLE = """
import atexit, os, sys, threading
import anthropic
from contextos.providers import wrap

url, seen = sys.argv[1:3]
parent = os.getpid()


@atexit.register  # registered first: runs after the wrapper's exit hook
def threads_at_exit():
    if os.getpid() != parent:
        with open(seen, "w") as f:
            f.write(" ".join(t.name for t in threading.enumerate()))


client = wrap(anthropic.Anthropic(base_url=url, api_key="t", max_retries=0))
stream = client.messages.create(
    model="claude-sonnet-4", max_tokens=64, stream=True,
    messages=[{"role": "user", "content": "Tell me a story"}],
)
events = iter(stream)
next(events)
if os.fork() == 0:
    sys.exit(0)  # opened no stream of its own
os.wait()
for _ in events:
    pass
"""


@pytest.mark.parametrize("provider", ["anthropic"], indirect=True)
def test_a_forked_child_with_no_stream_of_its_own_starts_no_thread_at_exit(
    provider: str, fake: Any, tmp_path: Path
) -> None:
    """A child that opened no stream has nothing to settle at its exit: it starts no
    reporter thread there (Python 3.12 refuses one, and printed a traceback for every
    such child, a gunicorn worker with a client wrapped at import)."""
    _enqueue_long(provider, fake)
    seen = tmp_path / "threads.txt"
    child = subprocess.run(
        [sys.executable, "-c", _FORKED_IDLE, fake.base_url, str(seen)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert child.returncode == 0, child.stderr
    assert seen.read_text().split() == ["MainThread"]


# -- streamed tool calls, however the server indexes them -----------------------------------


def _chunk(delta: dict[str, Any], finish: str | None = None) -> SSEEvent:
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
    body = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": GPT}
    return SSEEvent(json.dumps({**body, "choices": [choice]}))


def _usage_chunk() -> SSEEvent:
    usage = {"prompt_tokens": 30, "completion_tokens": 12, "total_tokens": 42}
    body = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": GPT}
    return SSEEvent(json.dumps({**body, "choices": [], "usage": usage}))


def _call_delta(
    call_id: str | None, index: int | None, name: str | None, arguments: str
) -> dict[str, Any]:
    call: dict[str, Any] = {"function": {"arguments": arguments}}
    if call_id is not None:
        call |= {"id": call_id, "type": "function"}
        call["function"]["name"] = name
    if index is not None:
        call["index"] = index
    return {"role": "assistant", "content": None, "tool_calls": [call]}


PARIS, ROME = '{"city": "Paris"}', '{"city": "Rome"}'
CALLS = (ToolCall("call_1", "weather", PARIS), ToolCall("call_2", "weather", ROME))

#: The same two parallel calls, streamed as each server does.
SHAPES: dict[str, list[dict[str, Any]]] = {
    # OpenAI: an index per call, the id and name on its first delta only
    "openai": [
        _call_delta("call_1", 0, "weather", ""),
        _call_delta(None, 0, None, '{"city": '),
        _call_delta(None, 0, None, '"Paris"}'),
        _call_delta("call_2", 1, "weather", ""),
        _call_delta(None, 1, None, ROME),
    ],
    # Ollama: every call whole in one delta, all at index 0
    "ollama": [
        _call_delta("call_1", 0, "weather", PARIS),
        _call_delta("call_2", 0, "weather", ROME),
    ],
    # Ollama's later deltas of a call: index 0, no id
    "ollama_split": [
        _call_delta("call_1", 0, "weather", '{"city": '),
        _call_delta(None, 0, None, '"Paris"}'),
        _call_delta("call_2", 0, "weather", '{"city": '),
        _call_delta(None, 0, None, '"Rome"}'),
    ],
    # Gemini's OpenAI endpoint: no index at all
    "gemini": [
        _call_delta("call_1", None, "weather", '{"city": '),
        _call_delta(None, None, None, '"Paris"}'),
        _call_delta("call_2", None, "weather", ROME),
    ],
}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


@pytest.fixture
def scripted() -> Iterator[FakeHTTPServer]:
    with FakeHTTPServer() as server:
        yield server


@pytest.mark.parametrize("shape", list(SHAPES))
def test_parallel_tool_calls_are_logged_apart_however_the_server_indexes_them(
    shape: str, scripted: FakeHTTPServer, tmp_path: Path
) -> None:
    """The streamed reply is logged as the two calls the app received, as the same reply
    not streamed is (:func:`reply_of`); the app then sends only the two results, and the
    model is sent both calls, each answered."""
    answer_events = [_chunk({"content": "Sunny, then rain."}), _chunk({}, "stop")]
    scripted.enqueue(
        FakeResponse(
            events=[
                *[_chunk(d) for d in SHAPES[shape]],
                _chunk({}, "tool_calls"),
                _usage_chunk(),
                SSEEvent("[DONE]"),
            ]
        ),
        FakeResponse(events=[*answer_events, _usage_chunk(), SSEEvent("[DONE]")]),
    )
    base_url = scripted.origin + "/v1"
    with (
        _memory(tmp_path / "m.db") as memory,
        openai.OpenAI(base_url=base_url, api_key="t", max_retries=0) as sdk,
    ):
        wrapped = wrap(sdk, memory=memory, session="s", user_id="ana")
        question = [{"role": "user", "content": "Weather in Paris and Rome?"}]
        kwargs: dict[str, Any] = {"model": GPT, "tools": TOOLS, "stream": True}
        list(wrapped.chat.completions.create(messages=question, **kwargs))
        not_streamed = {"role": "assistant", "content": None, "tool_calls": _wire(CALLS)}
        assert reply_of({"choices": [{"message": not_streamed}]}).tool_calls == CALLS
        assert wrapped.calls[-1].reply.tool_calls == CALLS
        results = [
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
            {"role": "tool", "tool_call_id": "call_2", "content": "rain"},
        ]
        list(wrapped.chat.completions.create(messages=results, **kwargs))
        wrapped.flush()
        sent = scripted.requests[-1].json()["messages"]
        (assistant,) = [m for m in sent if m["role"] == "assistant"]
        assert [(c["id"], c["function"]["arguments"]) for c in assistant["tool_calls"]] == [
            ("call_1", PARIS),
            ("call_2", ROME),
        ]
        assert [(m["tool_call_id"], m["content"]) for m in sent if m["role"] == "tool"] == [
            ("call_1", "sunny"),
            ("call_2", "rain"),
        ]


def _wire(calls: Sequence[ToolCall]) -> list[dict[str, Any]]:
    return [
        {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
        for c in calls
    ]


# -- an Anthropic tool input sent in content_block_start -----------------------------------


def _event(data: dict[str, Any]) -> SSEEvent:
    return SSEEvent(json.dumps(data), data["type"])


def _tool_use_events(start_input: dict[str, Any], pieces: Sequence[str]) -> list[SSEEvent]:
    block = {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": start_input}
    deltas = [
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "input_json_delta", "partial_json": p},
        }
        for p in pieces
    ]
    end = {"stop_reason": "tool_use", "stop_sequence": None}
    return [
        _event(message_start("msg_1", MODEL, AnthropicUsage(5, 1))),
        _event({"type": "content_block_start", "index": 0, "content_block": block}),
        *[_event(d) for d in deltas],
        _event({"type": "content_block_stop", "index": 0}),
        _event({"type": "message_delta", "delta": end, "usage": {"output_tokens": 7}}),
        _event({"type": "message_stop"}),
    ]


def _text_events(text: str) -> list[SSEEvent]:
    return [
        _event(message_start("msg_2", MODEL, AnthropicUsage(5, 1))),
        _event(
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            }
        ),
        _event(
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": text},
            }
        ),
        _event({"type": "content_block_stop", "index": 0}),
        _event(
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn"},
                "usage": {"output_tokens": 3},
            }
        ),
        _event({"type": "message_stop"}),
    ]


@pytest.mark.parametrize(
    ("start_input", "pieces"),
    [
        ({"city": "Paris"}, []),  # a gateway: the input whole in content_block_start
        ({}, ['{"city": ', '"Paris"}']),  # the API: {} there, then the deltas
    ],
)
def test_an_anthropic_tool_input_is_logged_as_the_sdk_builds_it(
    start_input: dict[str, Any], pieces: list[str], scripted: FakeHTTPServer, tmp_path: Path
) -> None:
    """The logged call's input is the one ``get_final_message()`` gives the app, so the
    app's echo of it matches the log: no branch."""
    scripted.enqueue(
        FakeResponse(events=_tool_use_events(start_input, pieces)),
        FakeResponse(events=_text_events("Sunny.")),
    )
    tools = [{"name": "weather", "input_schema": {"type": "object"}}]
    with (
        _memory(tmp_path / "m.db") as memory,
        anthropic.Anthropic(base_url=scripted.origin, api_key="t", max_retries=0) as sdk,
    ):
        wrapped = wrap(sdk, memory=memory, session="s", user_id="ana")
        history: list[dict[str, Any]] = [{"role": "user", "content": "Weather in Paris?"}]
        with wrapped.messages.stream(
            model=MODEL, max_tokens=64, tools=tools, messages=history
        ) as stream:
            final = stream.get_final_message()
        assert final.content[0].input == {"city": "Paris"}
        (logged,) = wrapped.calls[-1].reply.tool_calls
        assert json.loads(logged.arguments) == {"city": "Paris"}
        result = {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"}
        history += [
            {"role": "assistant", "content": final.content},
            {"role": "user", "content": [result]},
        ]
        with wrapped.messages.stream(
            model=MODEL, max_tokens=64, tools=tools, messages=history
        ) as stream:
            stream.get_final_message()
        wrapped.flush()
        turns = wrapped.context.session.turns()
        assert [t.message.role for t in turns] == ["user", "assistant", "tool", "assistant"]
        assert not any(REDO_KEY in t.message.metadata for t in turns)
