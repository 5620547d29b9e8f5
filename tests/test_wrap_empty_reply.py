"""A model that answers with nothing (a complete reply with no text: an empty OpenAI
message, an Anthropic reply whose only text is empty) does not make the wrapper forget
what the user said.

Why: the question was said whole, as it is when a stream is cut (that question is
remembered), but a complete empty reply returned before anything was remembered, so
"I am vegetarian" was in the session's log and never in memory (a review). The
app's retry of the question remembers it no second time.

Real SDK clients against the loopback fakes, a real SQLite memory file.
"""

from __future__ import annotations

from typing import Any

import pytest

anthropic = pytest.importorskip("anthropic")
openai = pytest.importorskip("openai")

from contextos import Memory  # noqa: E402
from contextos.providers import wrap  # noqa: E402
from contextos.testing.fake_anthropic import AnthropicUsage, FakeAnthropic  # noqa: E402
from contextos.testing.fake_openai import OpenAIUsage  # noqa: E402

QUESTION = "I am vegetarian, please keep that in mind"


def _said(wrapped: Any, memory: Memory) -> list[str]:
    wrapped.flush()  # the call's commit runs after the reply is returned
    memory.flush()
    return [r.text for r in memory.get_all(user_id="ana")]


def _ask_anthropic(wrapped: Any, *, stream: bool) -> str:
    messages = [{"role": "user", "content": QUESTION}]
    if stream:
        asked = wrapped.messages.stream(model="claude-sonnet-4", max_tokens=64, messages=messages)
        with asked as s:
            return "".join(s.text_stream)
    reply = wrapped.messages.create(model="claude-sonnet-4", max_tokens=64, messages=messages)
    return "".join(getattr(block, "text", "") for block in reply.content)


def _ask_openai(wrapped: Any, *, stream: bool) -> str:
    messages = [{"role": "user", "content": QUESTION}]
    if stream:
        chunks = wrapped.chat.completions.create(
            model="gpt-4.1-mini", messages=messages, stream=True
        )
        return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    reply = wrapped.chat.completions.create(model="gpt-4.1-mini", messages=messages)
    return reply.choices[0].message.content or ""


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_an_empty_reply_keeps_the_question(
    request: pytest.FixtureRequest, memory: Memory, provider: str, stream: bool
) -> None:
    fake = request.getfixturevalue(f"fake_{provider}")
    client = request.getfixturevalue(f"{provider}_client")
    ask = _ask_anthropic if provider == "anthropic" else _ask_openai
    usage = AnthropicUsage if provider == "anthropic" else OpenAIUsage
    wrapped = wrap(client, memory=memory, session="s", user_id="ana")
    fake.enqueue_reply("", usage(12, 0), stream=stream)
    assert ask(wrapped, stream=stream) == ""
    assert _said(wrapped, memory) == [QUESTION]
    # the app asks again; the answer comes, and the question is in memory once
    fake.enqueue_reply("Noted: no meat.", usage(12, 5), stream=stream)
    assert ask(wrapped, stream=stream) == "Noted: no meat."
    assert sorted(_said(wrapped, memory)) == sorted([QUESTION, "Noted: no meat."])


@pytest.mark.parametrize("blank", [" \n", "", [{"type": "text", "text": "  "}], []])
def test_a_blank_anthropic_question_is_refused_before_it_is_logged_or_sent(
    fake_anthropic: FakeAnthropic, anthropic_client: Any, memory: Memory, blank: Any
) -> None:
    """The Messages API refuses a blank user message (400). The wrapper logged it and sent
    it first: a round trip for a refusal, and a blank turn in the log (a review).
    ``context_window`` refuses a blank question the same way."""
    wrapped = wrap(anthropic_client, memory=memory, session="s", user_id="ana")
    with pytest.raises(ValueError, match="the last user message is blank"):
        wrapped.messages.create(
            model="claude-sonnet-4", max_tokens=64, messages=[{"role": "user", "content": blank}]
        )
    assert fake_anthropic.messages_requests() == []
    wrapped.flush()
    assert wrapped.context.session.turns() == []
