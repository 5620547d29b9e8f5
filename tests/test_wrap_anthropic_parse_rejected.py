"""Anthropic ``messages.parse`` whose reply came back but the SDK rejected it.

The SDK's ``parse`` receives a normal, billed 200 message and then raises while
reading it into the output model: a reply cut at ``max_tokens`` (half a JSON object)
or JSON that fails the model (``pydantic.ValidationError``). The non-beta
``messages`` has no ``with_raw_response.parse``, so a wrapped client sent it as it
was and the SDK raised inside the send (a review): nothing in ``client.calls`` nor
``on_call``, the usage lost, the reply not logged. Now it goes in two steps as
OpenAI's ``parse`` and Anthropic's ``beta.messages.parse`` do: the call is recorded
and its reply logged, then the SDK's own reading raises as the bare SDK raises it.
The real ``anthropic`` client against the loopback fake, a real SQLite memory file.
"""

from __future__ import annotations

from typing import Any

import pytest

anthropic = pytest.importorskip("anthropic")
pydantic = pytest.importorskip("pydantic")

from contextos.errors import RateLimited  # noqa: E402
from contextos.memory import Memory  # noqa: E402
from contextos.providers import wrap  # noqa: E402
from contextos.providers.base import CallRecord  # noqa: E402
from contextos.testing.fake_anthropic import AnthropicUsage, FakeAnthropic  # noqa: E402

HAIKU = "claude-haiku-4-5"
ASK = [{"role": "user", "content": "I am vegetarian; a dish as JSON"}]


class Dish(pydantic.BaseModel):
    name: str
    vegetarian: bool


def _log(wrapped: Any) -> list[tuple[str, str]]:
    wrapped.flush()
    return [(t.message.role, t.message.content) for t in wrapped.context.session.turns()]


REJECTED = [
    ('{"name": "lentil da', "max_tokens"),
    ('{"name": "lentil dal", "vegetarian": "maybe"}', "end_turn"),
]


@pytest.mark.parametrize(("text", "stop"), REJECTED, ids=["cut", "invalid"])
def test_a_rejected_parse_is_recorded_logged_and_raised_as_the_sdk_raises_it(
    fake_anthropic: FakeAnthropic,
    anthropic_client: Any,
    memory: Memory,
    text: str,
    stop: str,
) -> None:
    fake_anthropic.enqueue_reply(text, AnthropicUsage(40, 16), stop_reason=stop)
    with pytest.raises(pydantic.ValidationError) as bare:
        anthropic_client.messages.parse(
            model=HAIKU, max_tokens=16, messages=ASK, output_format=Dish
        )

    seen: list[CallRecord] = []
    wrapped = wrap(anthropic_client, memory=memory, session="s", user_id="ana", on_call=seen.append)
    fake_anthropic.enqueue_reply(text, AnthropicUsage(40, 16), stop_reason=stop)
    with pytest.raises(pydantic.ValidationError) as info:
        wrapped.messages.parse(model=HAIKU, max_tokens=16, messages=ASK, output_format=Dish)
    assert type(info.value) is type(bare.value) and info.value.__cause__ is None
    assert str(info.value) == str(bare.value)
    assert [(c.usage.input_tokens, c.usage.output_tokens) for c in wrapped.calls] == [(40, 16)]
    assert seen == list(wrapped.calls) and wrapped.calls.total().output_tokens == 16
    assert _log(wrapped) == [("user", ASK[0]["content"]), ("assistant", text)]
    # The SDK's own parse did the sending (its schema went out as output_config), asked
    # for the raw response as the SDK's with_raw_response views ask.
    request = fake_anthropic.messages_requests()[-1]
    assert request.json()["output_config"]["format"]["type"] == "json_schema"
    assert request.headers["x-stainless-helper"] == "messages.parse"
    assert request.headers["x-stainless-raw-response"] == "raw"
    assert len(fake_anthropic.messages_requests()) == 2


def test_a_parse_that_goes_through_returns_the_sdks_parsed_message(
    fake_anthropic: FakeAnthropic, anthropic_client: Any, memory: Memory
) -> None:
    wrapped = wrap(anthropic_client, memory=memory, session="s", user_id="ana")
    fake_anthropic.enqueue_reply('{"name": "dal", "vegetarian": true}', AnthropicUsage(40, 9))
    done = wrapped.messages.parse(model=HAIKU, max_tokens=64, messages=ASK, output_format=Dish)
    assert isinstance(done, anthropic.types.ParsedMessage)
    assert done.parsed_output == Dish(name="dal", vegetarian=True)
    assert [c.request_id for c in wrapped.calls] == [done.id]
    assert _log(wrapped)[1:] == [("assistant", '{"name": "dal", "vegetarian": true}')]
    # A refused request is still the contextos error, the SDK's in __cause__.
    fake_anthropic.enqueue_error(429, retry_after=1)
    again = [{"role": "user", "content": "another dish"}]
    with pytest.raises(RateLimited) as info:
        wrapped.messages.parse(model=HAIKU, max_tokens=64, messages=again, output_format=Dish)
    assert isinstance(info.value.__cause__, anthropic.RateLimitError)
    assert len(wrapped.calls) == 1


def test_a_bare_wrap_records_a_rejected_parse_too(
    fake_anthropic: FakeAnthropic, anthropic_client: Any
) -> None:
    wrapped = wrap(anthropic_client)
    fake_anthropic.enqueue_reply(
        '{"name": "lentil da', AnthropicUsage(40, 16), stop_reason="max_tokens"
    )
    with pytest.raises(pydantic.ValidationError):
        wrapped.messages.parse(model=HAIKU, max_tokens=16, messages=ASK, output_format=Dish)
    assert [c.usage.output_tokens for c in wrapped.calls] == [16]
    assert wrapped.calls[0].reply is not None
    assert wrapped.calls[0].reply.content == '{"name": "lentil da'
