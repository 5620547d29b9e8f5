"""Upgrading a live app on one store (a review, upgrade39): a rolling deploy's old replica
answering beside a new one, a process restarted inside a tool loop, and a tool result the
budget cannot hold.

- An old release logs its reply without :data:`REPLY_TO_KEY`. Counted as the answer to
  whatever turn it follows, an old replica's answer to Q1 logged after a new replica's Q2
  made Q2's commit think Q2 was answered, and Q2 ("my sister is Rita") was never
  remembered. The old replica's turns are written here through the public ``Session`` and
  ``Memory`` APIs, as that release writes them, while the new call waits on the fake.
- ``memory_placement="topic"`` with an app that sends only new turns: the first call of a
  process restarted inside a tool loop is tool results alone; it searched memory for
  nothing, went out without the topic block, and the next question wrote the block again
  (two uncached calls where the docs promise one).
- A tool result the window left out with the question that opened its loop was refused
  with "needs 664 tokens, has 667": the numbers were the unit's alone.

The real SDK clients, wrapped, against the package's fake servers; real SQLite files; the
hash embedder.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

anthropic = pytest.importorskip("anthropic")

from contextos import Session  # noqa: E402
from contextos.engine.context import REPLY_TO_KEY  # noqa: E402
from contextos.engine.session import LOGGED_SESSION_KEY, LOGGED_TURN_KEY  # noqa: E402
from contextos.errors import BudgetError  # noqa: E402
from contextos.memory import Memory  # noqa: E402
from contextos.providers import wrap  # noqa: E402
from contextos.testing.embedders import HashEmbedder  # noqa: E402
from contextos.testing.fake_anthropic import FakeAnthropic  # noqa: E402
from contextos.types import Message  # noqa: E402

CLAUDE = "claude-sonnet-4-5"
SISTER = "My sister is Rita."


def _memory(path: Path) -> Memory:
    """A process's Memory on the app's SQLite file."""
    return Memory(path, embedder=HashEmbedder(), background_embedding=False)


def _ask(client: Any, messages: list[dict[str, Any]], **kw: Any) -> Any:
    return client.messages.create(model=CLAUDE, max_tokens=200, messages=messages, **kw)


def _texts(memory: Memory) -> list[str]:
    return sorted(r.text for r in memory.get_all(user_id="ana", limit=100))


# -- 1. a rolling deploy: an old replica's reply has no reply_to ----------------------


class OldReplica:
    """The old release's process on the same file: it logs and remembers as that release
    did (a reply's metadata as the new one writes it, without ``reply_to``)."""

    def __init__(self, path: Path, reply_meta: dict[str, Any]) -> None:
        self.memory = _memory(path)
        self.session = Session(self.memory, "conv1", user_id="ana")
        self.reply_meta = {k: v for k, v in reply_meta.items() if k != REPLY_TO_KEY}

    def ask(self, text: str) -> int:
        """Log a question before its call (as ``prepare`` does); its seq."""
        return self.session.add(Message("user", text))[0].seq

    def answer(self, text: str) -> None:
        """Log a reply once its call returns: right after the question while nothing
        followed it, else at the end (a commit's ``_log_reply``)."""
        self.session.add(Message("assistant", text, metadata=self.reply_meta))

    def remember(self, text: str, seq: int) -> None:
        """Remember what turn ``seq`` said, marked with it (a commit's ``_remember``)."""
        mark = {LOGGED_SESSION_KEY: "conv1", LOGGED_TURN_KEY: seq}
        self.memory.add([Message("user", text, metadata=mark)], user_id="ana", session_id="conv1")


@pytest.fixture
def deploy(tmp_path: Path) -> Iterator[tuple[FakeAnthropic, Any, Memory, OldReplica]]:
    """A new replica's wrapped client after one exchange, and an old replica on its file;
    the fake answers "Noted." unless a test hooks in."""
    path = tmp_path / "app.db"
    with (
        FakeAnthropic(reply=lambda body: "Noted.") as fake,
        _memory(path) as memory,
        anthropic.Anthropic(base_url=fake.base_url, api_key="t", max_retries=0) as sdk,
    ):
        new = wrap(sdk, memory=memory, session="conv1", user_id="ana", background_commit=False)
        _ask(new, [{"role": "user", "content": "Hello, I am Ana."}])
        old = OldReplica(path, new.context.session.turns()[-1].message.metadata)
        yield fake, new, memory, old
        old.memory.close()


def _while_asked(fake: FakeAnthropic, meanwhile: Callable[[], None]) -> None:
    """Run ``meanwhile`` once, while the fake answers the next request (the new call's
    question is logged, its commit not run yet)."""
    answer = fake.reply

    def reply(body: dict[str, Any]) -> Any:
        fake.reply = answer
        meanwhile()
        return answer(body)

    fake.reply = reply


def test_an_old_replicas_answer_logged_after_a_new_question_is_not_its_answer(deploy):
    fake, new, memory, old = deploy
    brother = old.ask("My brother is Tomas.")  # the old replica's call, in flight
    _while_asked(fake, lambda: old.answer("Tomas, noted."))
    _ask(new, [{"role": "user", "content": SISTER}])
    turns = new.context.session.turns()[2:]
    assert [t.message.content for t in turns] == [
        "My brother is Tomas.",
        SISTER,
        "Tomas, noted.",  # logged after Q2, without reply_to
        "Noted.",
    ]
    assert turns[0].seq == brother
    assert turns[3].message.metadata[REPLY_TO_KEY] == turns[1].seq
    assert _texts(memory).count(SISTER) == 1  # was: missing


def test_an_old_replicas_retry_that_answered_and_remembered_the_question_is_its_answer(deploy):
    fake, new, memory, old = deploy

    def old_retry() -> None:  # a double submit served by the old replica meanwhile
        asked = old.session.turns()[-1]
        assert asked.message.content == SISTER  # logged by the new call
        old.answer("Rita, noted.")
        old.remember(SISTER, asked.seq)

    _while_asked(fake, old_retry)
    _ask(new, [{"role": "user", "content": SISTER}])
    assert _texts(memory).count(SISTER) == 1  # remembered by the old retry, not again


# -- 2. topic placement: a process restarted inside a tool loop -----------------------

SYSTEM = "You are a helpful assistant for Ana. " * 60
FACTS = [
    "Ana's sister is Rita, who lives in Porto (zyxsister).",
    "Ana checks the weather in Lisbon and Porto every morning (zyxweather).",
    "Ana is allergic to peanuts (zyxpeanuts).",
]
WEATHER = [{"name": "weather", "description": "w", "input_schema": {"type": "object"}}]


def _agent(body: dict[str, Any]) -> Any:
    """Two weather calls for a weather question; a text answer otherwise."""
    content = body["messages"][-1]["content"]
    text = content if isinstance(content, str) else str(content[-1].get("text", ""))
    if "Weather" not in text:
        return "Sunny in both."
    return [
        {"type": "tool_use", "id": f"toolu_{n}", "name": "weather", "input": {"city": city}}
        for n, city in enumerate(("Lisbon", "Porto"))
    ]


def _topic_client(sdk: Any, memory: Memory) -> Any:
    """A process's wrapped client: topic placement, an app that sends only new turns."""
    return wrap(
        sdk,
        memory=memory,
        session="s1",
        user_id="ana",
        memory_placement="topic",
        background_commit=False,
    )


def _topic_block(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [b for b in body["system"] if "zyx" in b["text"]]


def test_a_process_restarted_inside_a_tool_loop_sends_the_topic_block_once(tmp_path):
    path = tmp_path / "app.db"
    with (
        FakeAnthropic(reply=_agent, min_cache_tokens=512) as fake,
        anthropic.Anthropic(base_url=fake.base_url, api_key="t", max_retries=0) as sdk,
    ):
        with _memory(path) as memory:
            memory.add([Message("user", f) for f in FACTS], user_id="ana", session_id="earlier")
            before = _topic_client(sdk, memory)
            asked = _ask(
                before,
                [{"role": "user", "content": "Weather in Lisbon and Porto?"}],
                system=SYSTEM,
                tools=WEATHER,
            )
        results = [
            {"type": "tool_result", "tool_use_id": b.id, "content": "sunny " * 50}
            for b in asked.content
        ]
        with _memory(path) as memory:  # the process restarted (a deploy)
            after = _topic_client(sdk, memory)
            step = _ask(after, [{"role": "user", "content": results}], system=SYSTEM, tools=WEATHER)
            then = _ask(
                after,
                [{"role": "user", "content": "And my sister's name?"}],
                system=SYSTEM,
                tools=WEATHER,
            )
        bodies = [r.json() for r in fake.messages_requests()]
    block = _topic_block(bodies[1])
    assert block and "zyxweather" in block[0]["text"]  # was: no block at all
    assert _topic_block(bodies[2]) == block  # built once, byte-identical
    # One uncached call: the next question reads the whole prefix the step wrote.
    assert then.usage.cache_read_input_tokens == (
        step.usage.cache_read_input_tokens + step.usage.cache_creation_input_tokens
    )


# -- 3. a tool result left out with its loop's question: the error's numbers ----------

FETCH = [{"name": "fetch", "description": "Fetch a page.", "input_schema": {"type": "object"}}]


def _needs_has(error: BudgetError) -> tuple[int, int]:
    found = re.search(r"needs ([\d,]+) tokens, has ([\d,]+)", str(error))
    assert found, str(error)
    return int(found[1].replace(",", "")), int(found[2].replace(",", ""))


def test_a_tool_result_left_out_with_its_question_names_what_the_window_needed(
    fake_anthropic, anthropic_client, memory
):
    calls = iter([[{"type": "tool_use", "id": "toolu_1", "name": "fetch", "input": {}}]])
    fake_anthropic.reply = lambda body: next(calls, "done")
    wrapped = wrap(anthropic_client, memory=memory, session="s", user_id="ana", budget=6000)
    # A long question (~2,700 tokens) opens the loop; the window keeps the tool unit
    # only with it.
    question = "Summarize the page x. " + " ".join(f"note{i}" for i in range(1000))
    history: list[dict[str, Any]] = [{"role": "user", "content": question}]
    reply = _ask(wrapped, history, tools=FETCH)
    history.append(
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in reply.content]}
    )

    def results(words: int) -> list[dict[str, Any]]:
        page = " ".join(f"word{i}" for i in range(words))
        result = {"type": "tool_result", "tool_use_id": "toolu_1", "content": page}
        return [*history, {"role": "user", "content": [result]}]

    with pytest.raises(BudgetError, match="newest tool turn does not fit") as info:
        _ask(wrapped, results(2000), tools=FETCH)  # the unit alone, ~4,400 tokens, would fit
    needs, has = _needs_has(info.value)
    assert (needs, has) == (info.value.requested, info.value.available)
    assert needs > has  # was: "needs 4,4xx tokens, has 5,967"
    assert len(fake_anthropic.messages_requests()) == 1  # nothing sent
    # A page the window holds with the question goes out, the question before it.
    assert _ask(wrapped, results(1500), tools=FETCH).content[0].text == "done"
    sent = fake_anthropic.messages_requests()[-1].json()["messages"]
    assert "note999" in str(sent[0]["content"]) and "word1499" in str(sent[-1]["content"])
    wrapped.flush()
