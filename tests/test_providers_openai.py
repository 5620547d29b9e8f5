"""The OpenAI adapter: the real ``openai.OpenAI`` client against a loopback fake.

The same tests stand for any OpenAI-compatible server reached through
``base_url`` (vLLM, llama.cpp, Ollama...): the fake is one such server.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

openai = pytest.importorskip("openai")

from contextos.errors import AuthError, ProviderHTTPError, RateLimited  # noqa: E402
from contextos.providers import wrap  # noqa: E402
from contextos.testing.fake_http import FakeResponse  # noqa: E402
from contextos.testing.fake_openai import FakeOpenAI, OpenAIUsage  # noqa: E402
from contextos.types import Message, Scope  # noqa: E402

MODEL = "gpt-4.1-mini"
SYSTEM = " ".join(f"Rule {i}: answer precisely and cite the memory you used." for i in range(120))


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    """Caching from 256 tokens in 1-token steps, so short test prompts show cache hits."""
    with FakeOpenAI(min_cache_tokens=256, cache_increment=1) as server:
        yield server


def _client(fake_openai: FakeOpenAI, **kw: Any) -> Any:
    kw.setdefault("max_retries", 0)
    return openai.OpenAI(base_url=fake_openai.base_url, api_key="test", **kw)


def _ask(c: Any, text: str, *, model: str = MODEL, system: str | None = None, **kw: Any) -> Any:
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": text}
    ]
    return c.chat.completions.create(model=model, messages=messages, **kw)


def test_passthrough_sends_the_request_unchanged_and_records_usage(fake_openai, openai_client):
    bare = _ask(openai_client, "hello", system="be brief", temperature=0.2)
    wrapped = wrap(openai_client)
    got = _ask(wrapped, "hello", system="be brief", temperature=0.2)
    first, second = fake_openai.completions_requests()
    assert second.json() == first.json()
    assert isinstance(got, openai.types.chat.ChatCompletion)
    assert got.choices[0].message.content == bare.choices[0].message.content
    (call,) = list(wrapped.calls)
    assert call.provider == "openai" and call.request_id == got.id
    assert call.usage.input_tokens == got.usage.prompt_tokens
    assert call.usage.output_tokens == got.usage.completion_tokens
    assert call.reply == Message("assistant", got.choices[0].message.content)


def test_cached_tokens_are_normalised_like_anthropic(fake_openai, openai_client):
    fake_openai.enqueue_reply(
        "ok", OpenAIUsage(prompt_tokens=2000, completion_tokens=7, cached_tokens=1536)
    )
    wrapped = wrap(openai_client)
    response = _ask(wrapped, "hi")
    assert response.usage.prompt_tokens_details.cached_tokens == 1536
    usage = wrapped.calls[0].usage
    assert usage.input_tokens == 464 and usage.cache_read_input_tokens == 1536
    assert usage.output_tokens == 7 and usage.cache_creation_input_tokens == 0


def test_stream_usage_is_recorded_and_the_extra_chunk_hidden(fake_openai, openai_client):
    fake_openai.enqueue_reply("streamed words here", OpenAIUsage(900, 6, 512), stream=True)
    wrapped = wrap(openai_client)
    stream = _ask(wrapped, "go", stream=True)
    assert isinstance(stream, openai.Stream)
    chunks = list(stream)
    assert all(c.choices for c in chunks), "the caller did not ask for the usage chunk"
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == "streamed words here"
    sent = fake_openai.completions_requests()[0].json()
    assert sent["stream_options"] == {"include_usage": True}
    (call,) = list(wrapped.calls)
    assert call.complete and call.reply is not None and call.reply.content == text
    assert (call.usage.input_tokens, call.usage.cache_read_input_tokens) == (388, 512)


def test_stream_usage_chunk_is_kept_when_the_caller_asked(fake_openai, openai_client):
    wrapped = wrap(openai_client)
    chunks = list(_ask(wrapped, "go", stream=True, stream_options={"include_usage": True}))
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert wrapped.calls[0].usage.output_tokens == chunks[-1].usage.completion_tokens


def test_stream_usage_can_be_left_alone(fake_openai, openai_client):
    wrapped = wrap(openai_client, stream_usage=False)
    list(_ask(wrapped, "go", stream=True))
    assert "stream_options" not in fake_openai.completions_requests()[0].json()
    assert wrapped.calls[0].usage.output_tokens == 0  # the server never said


def test_401_becomes_auth_error(fake_openai):
    c = openai.OpenAI(base_url=fake_openai.base_url, api_key="invalid", max_retries=0)
    with pytest.raises(AuthError) as info:
        _ask(wrap(c), "hi")
    assert isinstance(info.value.__cause__, openai.AuthenticationError)
    c.close()


def test_429_becomes_rate_limited_after_the_sdk_retries(fake_openai):
    c = _client(fake_openai, max_retries=1)
    for _ in range(2):
        fake_openai.enqueue_error(429, "too many", retry_after=0.01)
    with pytest.raises(RateLimited) as info:
        _ask(wrap(c), "hi")
    assert info.value.retry_after == pytest.approx(0.01)
    assert len(fake_openai.completions_requests()) == 2  # the SDK's retry only
    c.close()


def test_500_becomes_provider_http_error(fake_openai, openai_client):
    fake_openai.enqueue_error(500, "server fell over")
    with pytest.raises(ProviderHTTPError) as info:
        _ask(wrap(openai_client), "hi")
    assert info.value.status == 500 and "server fell over" in info.value.body


def test_any_openai_compatible_server_and_model_name(fake_openai, openai_client, memory):
    wrapped = wrap(openai_client, memory=memory, session="local", user_id="ana")
    r = _ask(wrapped, "hi", model="llama-3.1-8b-local")
    assert r.choices[0].message.content
    assert fake_openai.completions_requests()[0].json()["model"] == "llama-3.1-8b-local"
    assert "prompt_cache_key" not in fake_openai.completions_requests()[0].json()


def test_session_prefix_is_stable_and_served_from_the_cache(fake_openai, openai_client, memory):
    memory.add("Ana lives in Lisbon", user_id="ana", session_id="older")
    wrapped = wrap(openai_client, memory=memory, session="s1", user_id="ana")
    for q in ["where do I live?", "and the weather there?", "thanks"]:
        _ask(wrapped, q, system=SYSTEM)
    bodies = [r.json() for r in fake_openai.completions_requests()]
    for before, after in zip(bodies, bodies[1:], strict=False):
        stable = before["messages"][:-1]
        assert after["messages"][: len(stable)] == stable
    assert bodies[0]["messages"][0] == {"role": "system", "content": SYSTEM}
    final = bodies[0]["messages"][-1]["content"]
    assert final[-1]["text"] == "where do I live?" and any("Lisbon" in p["text"] for p in final)
    cached = [c.usage.cache_read_input_tokens for c in wrapped.calls]
    assert cached[0] == 0 and all(c > 0 for c in cached[1:])
    wrapped.flush()
    turns = memory.store.turns(Scope(tenant=memory.tenant, user_id="ana", session_id="s1"))
    assert [t.message.role for t in turns] == ["user", "assistant"] * 3


def test_prompt_cache_key_when_asked_and_developer_role_kept(fake_openai, openai_client, memory):
    wrapped = wrap(openai_client, memory=memory, session="s1", user_id="ana", prompt_cache_key=True)
    wrapped.chat.completions.create(
        model=MODEL,
        messages=[{"role": "developer", "content": "be terse"}, {"role": "user", "content": "hi"}],
    )
    body = fake_openai.completions_requests()[0].json()
    assert body["prompt_cache_key"].startswith("ctxos-")
    assert body["messages"][0] == {"role": "developer", "content": "be terse"}


def test_malformed_stream_is_a_provider_error(fake_openai, openai_client):
    from contextos.errors import ProviderError
    from contextos.testing.fake_http import SSEEvent

    fake_openai.enqueue(FakeResponse(events=[SSEEvent('{"error": {"message": "boom"}}')]))
    with pytest.raises(ProviderError):
        list(_ask(wrap(openai_client), "go", stream=True))


def test_function_tools_go_through_the_window_strict_ones_verbatim(
    fake_openai, openai_client, memory
):
    plain = [
        {
            "type": "function",
            "function": {"name": "lookup", "description": "find", "parameters": {"type": "object"}},
        }
    ]
    strict = [
        {
            "type": "function",
            "function": {"name": "lookup", "parameters": {"type": "object"}, "strict": True},
        }
    ]
    wrapped = wrap(openai_client, memory=memory, session="s1", user_id="ana")
    _ask(wrapped, "one", tools=plain)
    _ask(wrapped, "two", tools=strict)
    first, second = (r.json() for r in fake_openai.completions_requests())
    assert first["tools"] == plain
    assert second["tools"] == strict


def test_openai_llm_and_settings(fake_openai, openai_client):
    from contextos.config import load_settings
    from contextos.llm.clients import OpenAILLM, llm_from_settings

    fake_openai.reply = lambda body: '{"ok": true}'
    llm = OpenAILLM(openai_client, model=MODEL)
    assert (
        llm.complete("be json", [Message("user", "hi")], json_schema={"type": "object"})
        == '{"ok": true}'
    )
    body = fake_openai.completions_requests()[0].json()
    assert body["messages"][0] == {"role": "system", "content": "be json"}
    assert body["response_format"]["json_schema"]["schema"] == {"type": "object"}
    assert llm_from_settings(load_settings(env={})) is None
    local = llm_from_settings(load_settings(env={"OPENAI_BASE_URL": fake_openai.base_url}))
    assert isinstance(local, OpenAILLM)
    assert local.complete("", [Message("user", "x")]) == '{"ok": true}'
    local.client.close()


def test_streamed_reply_is_logged_when_the_stream_ends(fake_openai, openai_client, memory):
    wrapped = wrap(openai_client, memory=memory, session="s1", user_id="ana")
    stream = _ask(wrapped, "stream it", stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream)
    wrapped.flush()
    turns = wrapped.context.session.turns()
    assert [t.message.content for t in turns] == ["stream it", text]
    assert turns[-1].message.metadata["usage"]["output_tokens"] > 0
