"""A retry sent while the call it retries is still running: the question keeps one answer.

An asyncio app calls a wrapped client in ``asyncio.to_thread``; ``wait_for`` gives up on
a slow answer, but cancelling the awaiting task cannot stop the call, which runs to its
end on its thread and commits. The user presses retry meanwhile: the retry was
recognised (the question logged once), but both replies were logged and remembered as
answers to the one question, and the next request sent the model both (a review). The
reply kept is the retry's, the one the user saw; the abandoned call's is logged as a cut
stream's is (not complete: left out of later windows, not remembered), whichever
commits first. Threads here stand for ``to_thread``'s. The real SDK clients against the
loopback fakes, a real SQLite memory file.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

anthropic = pytest.importorskip("anthropic")
openai = pytest.importorskip("openai")

from contextos.engine.session import Session  # noqa: E402
from contextos.errors import ContextosError  # noqa: E402
from contextos.memory import Memory  # noqa: E402
from contextos.providers import wrap  # noqa: E402
from contextos.testing.embedders import HashEmbedder  # noqa: E402
from sdk_support import fake_and_client  # noqa: E402

QUESTION = "SLOW: I am vegetarian, what should I cook tonight?"


class Replies:
    """The fake model's reply hook: numbered answers, each after its delay (seconds, by
    its number), so the retry starts while the first call runs and either commits
    first."""

    def __init__(self, delays: dict[int, float]) -> None:
        self.delays = delays
        self.count = 0
        self.lock = threading.Lock()
        self.first_started = threading.Event()

    def __call__(self, body: dict[str, Any]) -> str:
        with self.lock:
            self.count += 1
            n = self.count
        if n == 1:
            self.first_started.set()
        time.sleep(self.delays.get(n, 0.0))
        return f"Answer number {n}: lentil curry."


@contextmanager
def _chat(tmp_path: Path, provider: str, reply: Any) -> Iterator[tuple[Any, Memory, Any]]:
    """The fake model answering with ``reply``, a Memory on a SQLite file, and the SDK
    client pointed at the fake."""
    with (
        fake_and_client(provider, reply=reply) as (fake, sdk),
        Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as memory,
    ):
        yield fake, memory, sdk


def _ask(client: Any, provider: str, text: str) -> None:
    messages = [{"role": "user", "content": text}]
    if provider == "anthropic":
        client.messages.create(model="claude-haiku-4-5", max_tokens=50, messages=messages)
    else:
        client.chat.completions.create(model="gpt-4.1-mini", messages=messages)


def _sent_texts(fake: Any, provider: str) -> list[str]:
    """The texts of the last request's turns, as the fake model received them."""
    if provider == "anthropic":
        body = fake.messages_requests()[-1].json()
    else:
        body = fake.completions_requests()[-1].json()
    out = []
    for message in body["messages"]:
        content = message["content"]
        parts = [content] if isinstance(content, str) else [c.get("text", "") for c in content]
        out += [p for p in parts if p]
    return out


#: Each reply's delay by its number: the abandoned call's reply (1) comes before the
#: retry's (2), or after it.
ORDERS = {"abandoned-commits-first": {1: 0.8, 2: 1.6}, "retry-commits-first": {1: 1.6}}


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_a_retry_of_a_call_still_running_keeps_one_answer_the_retrys(
    tmp_path: Path, provider: str, order: str
) -> None:
    replies = Replies(ORDERS[order])
    with _chat(tmp_path, provider, replies) as (fake, memory, sdk):
        client = wrap(sdk, memory=memory, session="chat-1", user_id="ann")
        abandoned = threading.Thread(target=_ask, args=(client, provider, QUESTION))
        abandoned.start()  # the app's wait_for gives up on it; it runs on
        assert replies.first_started.wait(10)
        _ask(client, provider, QUESTION)  # the user's retry, answered (number 2)
        abandoned.join(30)
        client.flush()

        log = Session(memory, "chat-1").turns()
        said = [(t.message.role, t.message.content) for t in log]
        assert said.count(("user", QUESTION)) == 1, said
        whole = [
            t.message.content
            for t in log
            if t.message.role == "assistant" and t.message.metadata.get("complete") is not False
        ]
        assert whole == ["Answer number 2: lentil curry."], said

        remembered = [r.text for r in memory.get_all(user_id="ann")]
        assert remembered.count(QUESTION) == 1, remembered
        assert [t for t in remembered if t.startswith("Answer number")] == [
            "Answer number 2: lentil curry."
        ], remembered

        _ask(client, provider, "And for dessert?")
        sent = _sent_texts(fake, provider)
        assert [t for t in sent if t.startswith("Answer number")] == [
            "Answer number 2: lentil curry."
        ], sent


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_a_retry_through_another_client_leaves_one_answer(
    tmp_path: Path, provider: str, order: str
) -> None:
    # An app that wraps a client per request: the retry's client cannot mark the first
    # call given up. Whichever whole answer commits first is the question's one answer:
    # the other is not logged after it (the model was sent both), nor remembered.
    replies = Replies(ORDERS[order])
    with _chat(tmp_path, provider, replies) as (fake, memory, sdk):
        first = wrap(sdk, memory=memory, session="chat-1", user_id="ann")
        abandoned = threading.Thread(target=_ask, args=(first, provider, QUESTION))
        abandoned.start()
        assert replies.first_started.wait(10)
        second = wrap(sdk, memory=memory, session="chat-1", user_id="ann")
        _ask(second, provider, QUESTION)
        abandoned.join(30)
        first.flush()
        second.flush()

        kept = "Answer number 1" if order == "abandoned-commits-first" else "Answer number 2"
        log = Session(memory, "chat-1").turns()
        said = [(t.message.role, t.message.content) for t in log]
        assert said == [("user", QUESTION), ("assistant", f"{kept}: lentil curry.")]
        remembered = [r.text for r in memory.get_all(user_id="ann")]
        assert sorted(remembered) == sorted([QUESTION, f"{kept}: lentil curry."])


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_a_retry_that_fails_while_the_first_call_runs_leaves_the_question_remembered_once(
    tmp_path: Path, provider: str
) -> None:
    replies = Replies({1: 1.0})
    with _chat(tmp_path, provider, replies) as (fake, memory, sdk):
        client = wrap(sdk, memory=memory, session="chat-1", user_id="ann")
        abandoned = threading.Thread(target=_ask, args=(client, provider, QUESTION))
        abandoned.start()
        assert replies.first_started.wait(10)
        fake.enqueue_error(529 if provider == "anthropic" else 503, "overloaded")
        with pytest.raises(ContextosError):
            _ask(client, provider, QUESTION)  # the retry fails at once
        abandoned.join(30)
        client.flush()
        remembered = [r.text for r in memory.get_all(user_id="ann")]
        assert remembered.count(QUESTION) == 1, remembered


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_a_regenerate_stopped_then_regenerated_again_keeps_the_question_in_memory(
    tmp_path: Path, provider: str
) -> None:
    # A whole-history app: the user regenerates the last answer, stops its stream, and
    # regenerates again (the second is a retry of the first's question). The question
    # the regenerates say again keeps its memory; the replaced answers go.
    long_reply = "word " * 200
    with _chat(tmp_path, provider, lambda body: long_reply) as (fake, memory, sdk):
        client = wrap(sdk, memory=memory, session="chat-1", user_id="ann")

        def ask(messages: list[dict[str, str]], **kw: Any) -> Any:
            if provider == "anthropic":
                return client.messages.create(
                    model="claude-haiku-4-5", max_tokens=50, messages=messages, **kw
                )
            return client.chat.completions.create(model="gpt-4.1-mini", messages=messages, **kw)

        history = [{"role": "user", "content": "Hi, I'm Ann."}]
        ask(history)
        history += [
            {"role": "assistant", "content": long_reply},
            {"role": "user", "content": QUESTION},
        ]
        ask(history)
        client.flush()
        stream = ask(history, stream=True)  # regenerate, streamed; the user stops it
        for i, _ in enumerate(stream):
            if i == 3:
                break
        stream.close()
        client.flush()
        ask(history)  # and regenerates again
        client.flush()
        remembered = [r.text for r in memory.get_all(user_id="ann")]
        assert remembered.count(QUESTION) == 1, remembered
        assert "Hi, I'm Ann." in remembered
