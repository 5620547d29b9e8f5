"""``chat.completions.parse`` whose reply came back but the SDK rejected it.

The SDK's ``parse`` receives a normal, billed 200 completion and then raises while
reading it: ``finish_reason`` ``length`` (``openai.LengthFinishReasonError``),
``content_filter`` (``ContentFilterFinishReasonError``), or JSON that fails the
pydantic model (``pydantic.ValidationError``). Through a wrapped client such a call
was taken for a refused request (a review): nothing in ``client.calls`` nor
``on_call``, the reply not logged, and the finish-reason errors turned into a bare
``ProviderError``, so the SDK's ``except openai.LengthFinishReasonError as e:
e.completion`` missed. Now the call is recorded and its reply logged, as the
``stream(...)`` helper does with the same reply, and the SDK's own exception reaches
the app as the bare SDK raises it. The real ``openai`` client against the loopback
fake, a real SQLite memory file.
"""

from __future__ import annotations

from typing import Any

import pytest

openai = pytest.importorskip("openai")
pydantic = pytest.importorskip("pydantic")

from contextos.errors import RateLimited  # noqa: E402
from contextos.memory import Memory  # noqa: E402
from contextos.providers import wrap  # noqa: E402
from contextos.providers.base import CallRecord  # noqa: E402
from contextos.testing.fake_openai import FakeOpenAI, OpenAIUsage  # noqa: E402

GPT = "gpt-4.1-mini"
ASK = [{"role": "user", "content": "a soup recipe"}]


class Recipe(pydantic.BaseModel):
    name: str
    minutes: int


def _log(wrapped: Any) -> list[tuple[str, str]]:
    wrapped.flush()
    return [(t.message.role, t.message.content) for t in wrapped.context.session.turns()]


REJECTED = [
    ('{"name":"sou', "length", openai.LengthFinishReasonError),
    ('{"name":"sou', "content_filter", openai.ContentFilterFinishReasonError),
    ('{"name":"soup","minutes":"twenty"}', "stop", pydantic.ValidationError),
]


@pytest.mark.parametrize(("text", "finish", "error"), REJECTED)
def test_a_rejected_parse_is_recorded_logged_and_raised_as_the_sdk_raises_it(
    fake_openai: FakeOpenAI,
    openai_client: Any,
    memory: Memory,
    text: str,
    finish: str,
    error: type[Exception],
) -> None:
    seen: list[CallRecord] = []
    wrapped = wrap(openai_client, memory=memory, session="s", user_id="ana", on_call=seen.append)
    fake_openai.enqueue_reply(text, OpenAIUsage(900, 50), finish_reason=finish)
    with pytest.raises(error) as info:
        wrapped.chat.completions.parse(model=GPT, messages=ASK, response_format=Recipe)
    assert type(info.value) is error and info.value.__cause__ is None
    if finish != "stop":  # the SDK's documented handler reads the completion
        assert info.value.completion.usage.prompt_tokens == 900  # type: ignore[attr-defined]
    assert [(c.usage.input_tokens, c.usage.output_tokens) for c in wrapped.calls] == [(900, 50)]
    assert seen == list(wrapped.calls) and wrapped.calls.total().output_tokens == 50
    assert _log(wrapped) == [("user", "a soup recipe"), ("assistant", text)]
    assert len(fake_openai.completions_requests()) == 1

    # The stream helper, given the same reply, records and logs it the same way.
    fake_openai.enqueue_reply(text, OpenAIUsage(900, 50), stream=True, finish_reason=finish)
    again = [{"role": "user", "content": "another soup recipe"}]
    with (
        pytest.raises(error),
        wrapped.chat.completions.stream(model=GPT, messages=again, response_format=Recipe) as s,
    ):
        s.until_done()
    assert [(c.usage.input_tokens, c.usage.output_tokens) for c in wrapped.calls][1:] == [(900, 50)]
    assert _log(wrapped)[2:] == [("user", "another soup recipe"), ("assistant", text)]


def test_a_parse_that_goes_through_returns_the_sdks_parsed_completion(
    fake_openai: FakeOpenAI, openai_client: Any, memory: Memory
) -> None:
    wrapped = wrap(openai_client, memory=memory, session="s", user_id="ana")
    fake_openai.enqueue_reply('{"name":"soup","minutes":20}', OpenAIUsage(40, 9))
    done = wrapped.chat.completions.parse(model=GPT, messages=ASK, response_format=Recipe)
    assert isinstance(done, openai.types.chat.ParsedChatCompletion)
    assert done.choices[0].message.parsed == Recipe(name="soup", minutes=20)
    assert [c.request_id for c in wrapped.calls] == [done.id]
    sent = fake_openai.completions_requests()[-1].json()
    assert sent["response_format"]["json_schema"]["name"] == "Recipe"
    # A refused request is still the contextos error, the SDK's in __cause__.
    fake_openai.enqueue_error(429, retry_after=1)
    with pytest.raises(RateLimited) as info:
        wrapped.chat.completions.parse(model=GPT, messages=ASK, response_format=Recipe)
    assert isinstance(info.value.__cause__, openai.RateLimitError)
    assert len(wrapped.calls) == 1


def test_a_bare_wrap_records_a_rejected_parse_too(
    fake_openai: FakeOpenAI, openai_client: Any
) -> None:
    wrapped = wrap(openai_client)
    fake_openai.enqueue_reply('{"name":"sou', OpenAIUsage(900, 50), finish_reason="length")
    with pytest.raises(openai.LengthFinishReasonError):
        wrapped.chat.completions.parse(model=GPT, messages=ASK, response_format=Recipe)
    assert [c.usage.output_tokens for c in wrapped.calls] == [50]
    assert wrapped.calls[0].reply is not None and wrapped.calls[0].reply.content == '{"name":"sou'
