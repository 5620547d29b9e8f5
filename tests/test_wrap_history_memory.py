"""An app that sends its whole history has every message it said remembered once, not
only its last question and the reply.

Why (a review): a wrapped call remembered its question and its reply. Every other
message it logged (a resumed chat's earlier messages, a branch's turns sent again
after an edit or after two calls in flight) was logged, sent, and never remembered,
and a branch deleted the memories of the turns it cut. "My cat is called Tom." left
memory after two streams were read in the other order; "My locker code is 4471."
never reached it, and once compaction dropped its turn, no window held it.

Real SDK clients against the loopback fakes, a real SQLite memory file.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

anthropic = pytest.importorskip("anthropic")
openai = pytest.importorskip("openai")

from contextos import Memory  # noqa: E402
from contextos.providers import wrap  # noqa: E402
from contextos.testing.fake_anthropic import FakeAnthropic  # noqa: E402
from contextos.testing.fake_openai import FakeOpenAI  # noqa: E402

CLAUDE = "claude-sonnet-4"
GPT = "gpt-4.1-mini"


def _said(wrapped: Any, memory: Memory) -> Counter[str]:
    wrapped.flush()
    memory.flush()
    return Counter(r.text for r in memory.get_all(user_id="ana", limit=100))


def _user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def _assistant(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


def _ask(wrapped: Any, messages: list[dict[str, str]], *, stream: bool = False) -> Any:
    if hasattr(wrapped, "messages"):
        return wrapped.messages.create(
            model=CLAUDE, max_tokens=100, messages=messages, stream=stream
        )
    return wrapped.chat.completions.create(model=GPT, messages=messages, stream=stream)


def _text(reply: Any) -> str:
    if hasattr(reply, "content"):
        return str(reply.content[0].text)
    return str(reply.choices[0].message.content)


def _streamed(stream: Any) -> str:
    parts = []
    for event in stream:
        if getattr(event, "type", None) == "content_block_delta":
            parts.append(event.delta.text)
        elif getattr(event, "choices", None):
            parts.append(event.choices[0].delta.content or "")
    return "".join(parts)


@pytest.fixture(params=["anthropic", "openai"])
def wrapped(
    request: pytest.FixtureRequest,
    fake_anthropic: FakeAnthropic,
    fake_openai: FakeOpenAI,
    anthropic_client: Any,
    openai_client: Any,
    memory: Memory,
) -> Any:
    client = anthropic_client if request.param == "anthropic" else openai_client
    return wrap(client, memory=memory, session="s", user_id="ana")


def test_two_streams_read_in_the_other_order_keep_both_facts(wrapped: Any, memory: Memory):
    dog, cat = _user("My dog is called Rex."), _user("My cat is called Tom.")
    first = _ask(wrapped, [dog], stream=True)  # two streams opened before either is read
    second = _ask(wrapped, [dog, cat], stream=True)
    cat_reply, dog_reply = _streamed(second), _streamed(first)
    # the app's history in the order its screen shows, and the next question
    history = [dog, _assistant(dog_reply), cat, _assistant(cat_reply)]
    _ask(wrapped, [*history, _user("What are my pets called?")])
    said = _said(wrapped, memory)
    for text in (dog["content"], cat["content"], dog_reply, cat_reply):
        assert said[text] == 1, (text, said)
    assert said["What are my pets called?"] == 1


def test_a_resumed_chat_remembers_the_messages_before_its_question(wrapped: Any, memory: Memory):
    history = [
        _user("My locker code is 4471."),
        _assistant("Noted."),
        _user("My bike lock code is 9902."),
    ]
    reply = _text(_ask(wrapped, history))
    said = _said(wrapped, memory)
    assert said == Counter(
        {"My locker code is 4471.": 1, "Noted.": 1, "My bike lock code is 9902.": 1, reply: 1}
    )
    # sent again with the next question: nothing is remembered twice
    _ask(wrapped, [*history, _assistant(reply), _user("And my gym?")])
    assert max(_said(wrapped, memory).values()) == 1


def test_an_edit_further_back_remembers_the_edit_and_what_followed_once(
    wrapped: Any, memory: Memory
):
    history: list[dict[str, str]] = []
    for question in ["My dog is called Rex.", "My cat is called Tom.", "I live in Lisbon."]:
        history.append(_user(question))
        history.append(_assistant(_text(_ask(wrapped, history))))
    # the user edits the second message; the app sends the rest after it again
    edited = [
        *history[:2],
        _user("My cat is called Felix."),
        _assistant("Noted, Felix."),
        *history[4:6],
        _user("What are my pets called?"),
    ]
    _ask(wrapped, edited)
    said = _said(wrapped, memory)
    assert said["My cat is called Tom."] == 0
    assert said["My cat is called Felix."] == 1
    assert said["Noted, Felix."] == 1
    assert said["I live in Lisbon."] == 1
    assert said[history[5]["content"]] == 1
    assert said["My dog is called Rex."] == 1


def test_replies_in_the_history_are_not_remembered_when_replies_are_not(
    fake_anthropic: FakeAnthropic, anthropic_client: Any, memory: Memory
):
    wrapped = wrap(anthropic_client, memory=memory, session="s", user_id="ana")
    wrapped.context.remember_replies = False  # as `contextos chat` sets it
    _ask(wrapped, [_user("My locker code is 4471."), _assistant("Noted."), _user("Thanks.")])
    assert _said(wrapped, memory) == Counter({"My locker code is 4471.": 1, "Thanks.": 1})
