"""``wrap(compaction="offload")``: the turns compaction archives come back by retrieval.

Offload stores each turn it rotates out of the history in long-term memory, in the
session's own scope. The wrapped client left every memory of its own session out of
the window ("its turns are in the history already"), so an offloaded turn was never
retrieved: the fact left the model's view for good. A memory of the session is left
out only while the history shows its turn (or, naming no turn, when it is an
exchange remembered after its call, which the log holds).

A real ``anthropic`` client against the loopback fake, a real SQLite file, the hash
embedder.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from contextos import wrap
from contextos.engine.context import MEMORY_HEADER, TOPIC_HEADER
from contextos.memory import Memory
from contextos.testing.fake_anthropic import FakeAnthropic

MODEL = "claude-haiku-4-5"
SECRET = "qzlockercode5521"


def _offloading(client: Any, memory: Memory, **options: Any) -> Any:
    """``client`` wrapped for Ana's session s1 with offload compaction, committing
    inline; nothing remembered unless ``remember=True`` is given."""
    options.setdefault("remember", False)
    return wrap(
        client,
        memory,
        session="s1",
        user_id="ana",
        compaction="offload",
        background_commit=False,
        **options,
    )


def _ask(client: Any, fake: FakeAnthropic, text: str) -> dict[str, Any]:
    """Ask ``text``; the request the fake received."""
    client.messages.create(model=MODEL, max_tokens=64, messages=[{"role": "user", "content": text}])
    client.flush()
    body: dict[str, Any] = fake.messages_requests()[-1].json()
    return body


def _offloaded(client: Any, fake: FakeAnthropic) -> None:
    """Tell the secret, then chat until compaction has rotated that turn out of the
    history (and archived it)."""
    _ask(client, fake, f"My gym locker code is {SECRET}, remember it.")
    session = client.context.session
    for n in range(200):
        if session.state().start_seq > 0:
            return
        _ask(client, fake, f"Filler {n}: today I walked {n} km along the river and saw ducks.")
    raise AssertionError("compaction never rotated the first turn out")


def _memories_sent(body: dict[str, Any]) -> str:
    """The text blocks of a request that follow a memory header (the topic block in the
    system prompt, the memories after the history), joined."""
    lists = [body.get("system") or []]
    lists += [m["content"] for m in body["messages"] if isinstance(m["content"], list)]
    sent = []
    for blocks in lists:
        texts = [b.get("text", "") for b in blocks]
        for header in (MEMORY_HEADER, TOPIC_HEADER):
            if header in texts:
                sent += texts[texts.index(header) + 1 :]
    return "\n".join(sent)


def _count(body: dict[str, Any], text: str) -> int:
    return json.dumps(body).count(text)


@pytest.mark.parametrize("placement", ["per_call", "topic"])
def test_an_offloaded_turn_is_retrieved_once_the_history_no_longer_shows_it(
    placement: str, memory: Memory, fake_anthropic: FakeAnthropic, anthropic_client: Any
) -> None:
    fake_anthropic.reply = lambda body: "Noted."
    # remember=False: the archive alone holds the turn
    wrapped = _offloading(anthropic_client, memory, budget=1500, memory_placement=placement)
    _offloaded(wrapped, fake_anthropic)
    [archived] = [r for r in memory.get_all(user_id="ana", limit=1000) if SECRET in r.text]
    assert archived.session_id == "s1" and archived.metadata["turn_seq"] == 0

    body = _ask(wrapped, fake_anthropic, "What is my gym locker code?")
    assert SECRET in _memories_sent(body)
    assert _count(body, SECRET) == 1  # from the archive; the history no longer has it


def test_a_turn_pinned_back_into_the_history_is_not_sent_again_from_the_archive(
    memory: Memory, fake_anthropic: FakeAnthropic, anthropic_client: Any
) -> None:
    fake_anthropic.reply = lambda body: "Noted."
    wrapped = _offloading(anthropic_client, memory, budget=1500)
    _offloaded(wrapped, fake_anthropic)
    wrapped.context.session.pin(0)  # the window shows a pinned turn, rotated or not

    body = _ask(wrapped, fake_anthropic, "What is my gym locker code?")
    assert _count(body, SECRET) == 1 and SECRET not in _memories_sent(body)


def test_an_exchange_remembered_from_the_history_is_not_sent_twice(
    memory: Memory, fake_anthropic: FakeAnthropic, anthropic_client: Any
) -> None:
    """The exchange each call remembers names no turn: the log holds it, so the window
    has it in the history, and the memory is left out."""
    fake_anthropic.reply = lambda body: "Noted."
    wrapped = wrap(anthropic_client, memory, session="s1", user_id="ana")
    _ask(wrapped, fake_anthropic, f"My gym locker code is {SECRET}, remember it.")
    assert any(SECRET in r.text for r in memory.get_all(user_id="ana", session_id="s1"))

    body = _ask(wrapped, fake_anthropic, "What is my gym locker code?")
    assert _count(body, SECRET) == 1 and SECRET not in _memories_sent(body)


TOOLS = [
    {
        "name": "read_file",
        "description": "read a file",
        "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}},
    }
]


def test_a_large_tool_result_is_offloaded_like_any_turn(
    memory: Memory, fake_anthropic: FakeAnthropic, anthropic_client: Any
) -> None:
    # A 70 KB tool result (a file read) is kept verbatim in its turn's metadata for
    # resending; archive() copied that metadata into the memory, past its 64 KiB limit:
    # the archive was refused, every compaction after it retried it, and calls raised.
    def reply(body: dict[str, Any]) -> Any:
        last = json.dumps(body["messages"][-1]["content"])
        if "read my config" in last and "tool_result" not in last:
            return [{"type": "tool_use", "id": "tu_1", "name": "read_file", "input": {"path": "a"}}]
        return "Noted."

    fake_anthropic.reply = reply
    client = _offloading(anthropic_client, memory, budget=60_000, remember=True)
    config = "line of the config file: key=value\n" * 2000
    msgs: list[dict[str, Any]] = [{"role": "user", "content": "Please read my config file."}]
    r = client.messages.create(model=MODEL, max_tokens=64, messages=msgs, tools=TOOLS)
    msgs += [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in r.content]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "tu_1", "content": config}],
        },
    ]
    client.messages.create(model=MODEL, max_tokens=64, messages=msgs, tools=TOOLS)
    session = client.context.session
    for n in range(60):
        if session.state().start_seq > 3:
            break
        said = f"Filler {n}: " + "today I walked along the river and saw ducks. " * 120
        client.messages.create(
            model=MODEL, max_tokens=64, tools=TOOLS, messages=[{"role": "user", "content": said}]
        )
    state = session.state()
    assert state.start_seq > 3 and not state.unarchived
    archived = [r for r in memory.get_all(user_id="ana", limit=1000) if "turn_seq" in r.metadata]
    assert {r.metadata["turn_seq"] for r in archived} >= {0, 1, 2, 3}
    assert any("key=value" in r.text for r in archived)


def test_an_app_key_too_large_for_a_memory_is_left_out_of_the_archive(memory: Memory) -> None:
    # The log keeps the whole turn; the archived memory keeps its text and reference.
    from contextos import Message, Session

    session = Session(memory.store, "s2", user_id="ana")
    session.add(Message("user", "Here is the contract.", metadata={"doc": "x" * 70_000}))
    for n in range(30):
        session.add(Message("assistant" if n % 2 else "user", f"Turn {n}: " + "words " * 40))
    done = session.compact(300, "offload", memory=memory, force=True)
    assert done is not None and not session.state().unarchived
    [first] = [r for r in memory.get_all(user_id="ana", limit=100) if r.metadata["turn_seq"] == 0]
    assert first.text == "Here is the contract." and "doc" not in first.metadata
    assert session.turn(0).message.metadata["doc"] == "x" * 70_000
