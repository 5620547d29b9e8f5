"""An app re-sends a request the session log already holds answered.

Its own front end retried after a gateway timeout, or the user pressed "regenerate":
the same full history goes out again, and the model answers anew. The real
``anthropic`` SDK client against the loopback fake (which numbers its answers, as a
sampled model's differ from one call to the next), a real SQLite memory file.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

anthropic = pytest.importorskip("anthropic")

from contextos.engine.context import REDO_KEY  # noqa: E402
from contextos.errors import ProviderError  # noqa: E402
from contextos.memory import Memory  # noqa: E402
from contextos.providers import wrap  # noqa: E402
from contextos.testing.fake_anthropic import FakeAnthropic  # noqa: E402
from contextos.testing.fake_http import echo_reply  # noqa: E402

MODEL = "claude-sonnet-4"


@pytest.fixture
def fake_anthropic() -> Iterator[FakeAnthropic]:
    """The fake, its answers numbered: a regenerated answer differs from the first."""
    numbers = itertools.count(1)

    def reply(body: Mapping[str, Any]) -> str:
        return f"answer {next(numbers)}. {echo_reply(body)}"

    with FakeAnthropic(reply=reply) as server:
        yield server


def _ask(wrapped: Any, history: list[dict[str, Any]]) -> str:
    reply = wrapped.messages.create(model=MODEL, max_tokens=64, messages=history)
    return str(reply.content[0].text)


def _log(wrapped: Any) -> list[tuple[str, str]]:
    wrapped.flush()
    return [(t.message.role, t.message.content) for t in wrapped.context.session.turns()]


def _answers_sent(fake: FakeAnthropic) -> list[str]:
    """The assistant turns the model got in the last request, in order."""
    sent = fake.messages_requests()[-1].json()["messages"]
    texts: list[str] = []
    for m in sent:
        if m["role"] == "assistant":
            content = m["content"]
            blocks = [content] if isinstance(content, str) else [b["text"] for b in content]
            texts.append(" ".join(blocks))
    return texts


def test_a_regenerated_answer_replaces_the_old_one_in_what_the_model_sees(
    fake_anthropic: FakeAnthropic, anthropic_client: Any, memory: Memory
) -> None:
    wrapped = wrap(anthropic_client, memory=memory, session="s", user_id="ana")
    history: list[dict[str, Any]] = [{"role": "user", "content": "hello"}]
    hello = _ask(wrapped, history)
    history += [
        {"role": "assistant", "content": hello},
        {"role": "user", "content": "book a table for two"},
    ]
    first = _ask(wrapped, history)
    second = _ask(wrapped, history)  # the user pressed "regenerate"
    assert _answers_sent(fake_anthropic) == [hello]  # no answer to the question re-sent
    third = _ask(wrapped, history)  # and again
    assert len({first, second, third}) == 3
    history += [
        {"role": "assistant", "content": third},
        {"role": "user", "content": "at eight"},
    ]
    _ask(wrapped, history)
    assert _answers_sent(fake_anthropic) == [hello, third]  # one answer: the newest
    log = _log(wrapped)  # the old answers stay in the log, out of the window
    assert [t for t in log if t[1] in (first, second)] == [
        ("assistant", first),
        ("assistant", second),
    ]
    assert log[-2] == ("user", "at eight")
    remembered = [r.text for r in memory.get_all(user_id="ana")]
    assert remembered.count("book a table for two") == 1  # the question once
    assert third in remembered  # and the answer the conversation went on from


def test_one_message_said_again_is_a_new_turn(
    fake_anthropic: FakeAnthropic, anthropic_client: Any, memory: Memory
) -> None:
    """An app that sends only the new turn may say the same thing twice."""
    wrapped = wrap(anthropic_client, memory=memory, session="s", user_id="ana")
    for _ in range(2):
        _ask(wrapped, [{"role": "user", "content": "yes"}])
    assert [r for r, _ in _log(wrapped)] == ["user", "assistant"] * 2


def _texts_sent(fake: FakeAnthropic) -> list[str]:
    """The text of every message of the last request, in order."""
    sent = fake.messages_requests()[-1].json()["messages"]
    return [
        m["content"] if isinstance(m["content"], str) else "".join(b["text"] for b in m["content"])
        for m in sent
    ]


@pytest.mark.parametrize("how", ["edited", "dropped"])
def test_a_conversation_that_parts_from_the_log_goes_on_from_where_it_parts(
    fake_anthropic: FakeAnthropic, anthropic_client: Any, memory: Memory, how: str
) -> None:
    # An app that keeps the history itself: the user edited their last message and sent
    # it again, or a call failed and the app dropped its question and asked another.
    # The whole conversation was logged (and sent) again, the first turn twice.
    wrapped = wrap(anthropic_client, memory=memory, session="s", user_id="ana")
    history: list[dict[str, Any]] = [{"role": "user", "content": "I live in Lyon."}]
    lyon = _ask(wrapped, history)
    history += [
        {"role": "assistant", "content": lyon},
        {"role": "user", "content": "I have a cat named Tom."},
    ]
    if how == "edited":
        _ask(wrapped, history)
    else:
        fake_anthropic.enqueue_error(500, "overloaded")
        with pytest.raises(ProviderError):
            _ask(wrapped, history)
    history[-1] = {"role": "user", "content": "I have a dog named Rex."}
    answer = _ask(wrapped, history)
    assert _texts_sent(fake_anthropic) == ["I live in Lyon.", lyon, "I have a dog named Rex."]
    history += [
        {"role": "assistant", "content": answer},
        {"role": "user", "content": "what is its name?"},
    ]
    _ask(wrapped, history)
    assert _texts_sent(fake_anthropic) == [
        "I live in Lyon.",
        lyon,
        "I have a dog named Rex.",
        answer,
        "what is its name?",
    ]
    log = [text for _, text in _log(wrapped)]
    assert log.count("I live in Lyon.") == 1 and log.count("I have a cat named Tom.") == 1
    remembered = [r.text for r in memory.get_all(user_id="ana")]
    assert "I have a dog named Rex." in remembered  # an edit is a new question


def _continues(body: Mapping[str, Any]) -> str:
    """The fake's model: it continues a prefill, and answers anything else "ok"."""
    return '"city": "Lyon"}' if body["messages"][-1]["role"] == "assistant" else "ok"


def test_a_prefill_is_sent_last_and_logged_with_the_reply_it_starts(memory: Memory) -> None:
    # The request ends with the start of the answer (Anthropic's prefill). It was logged
    # as a turn of its own, then the reply after it; the app's next call, holding the
    # two as one answer, matched nothing and the whole conversation was logged again.
    memory.add("Ana lives in Lyon, France.", user_id="ana")  # found for the question
    with FakeAnthropic(reply=_continues) as fake:
        client = anthropic.Anthropic(base_url=fake.base_url, api_key="t", max_retries=0)
        wrapped = wrap(client, memory=memory, session="s", user_id="ana")
        question = {"role": "user", "content": "Where does Ana live? Answer in JSON."}
        reply = wrapped.messages.create(
            model=MODEL, max_tokens=64, messages=[question, {"role": "assistant", "content": "{"}]
        )
        sent = fake.messages_requests()[-1].json()["messages"]
        assert [m["role"] for m in sent] == ["user", "assistant"]  # no memories after it
        answer = "{" + reply.content[0].text
        assert _log(wrapped) == [("user", question["content"]), ("assistant", answer)]
        wrapped.messages.create(  # "regenerate": the prefilled request again
            model=MODEL, max_tokens=64, messages=[question, {"role": "assistant", "content": "{"}]
        )
        assert _texts_sent(fake) == [question["content"], "{"]
        wrapped.flush()
        regenerated = wrapped.context.session.turns()[-1].message
        assert regenerated.content == answer and regenerated.metadata[REDO_KEY] == 1
        history = [question, {"role": "assistant", "content": answer}]
        _ask(wrapped, [*history, {"role": "user", "content": "thanks"}])
        assert _texts_sent(fake)[:2] == [question["content"], answer]
        assert _texts_sent(fake)[2].endswith("thanks")  # the question, after its memories
        log = [text for _, text in _log(wrapped)]
        assert log == [question["content"], answer, answer, "thanks", "ok"]
        client.close()
