"""The Anthropic adapter: the real ``anthropic.Anthropic`` client against a loopback fake.

No transport mocks: the SDK speaks HTTP to :class:`FakeAnthropic` on 127.0.0.1,
which records what it received and answers in the Messages API wire format.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

anthropic = pytest.importorskip("anthropic")

from contextos.errors import AuthError, ProviderError, ProviderHTTPError, RateLimited  # noqa: E402
from contextos.llm.tokens import default_tokenizer  # noqa: E402
from contextos.providers import AnthropicTokenCounter, wrap  # noqa: E402
from contextos.testing.fake_anthropic import (  # noqa: E402
    AnthropicUsage,
    FakeAnthropic,
    message_start,
)
from contextos.testing.fake_http import FakeResponse, SSEEvent, without_key  # noqa: E402
from contextos.types import Message, Scope  # noqa: E402

MODEL = "claude-sonnet-4"  # in the registry, minimum cacheable prompt 1,024 tokens
SYSTEM = " ".join(f"Rule {i}: answer precisely and cite the memory you used." for i in range(120))
EPHEMERAL_1H = {"type": "ephemeral", "ttl": "1h"}


def _unmarked(value: Any) -> Any:
    """``value`` without ``cache_control`` markers, for prefix comparisons."""
    return without_key(value, "cache_control")


def _client(fake_anthropic: FakeAnthropic, **kw: Any) -> Any:
    kw.setdefault("max_retries", 0)
    return anthropic.Anthropic(base_url=fake_anthropic.base_url, api_key="test", **kw)


def _ask(c: Any, text: str, **kw: Any) -> Any:
    return c.messages.create(
        model=MODEL, max_tokens=256, messages=[{"role": "user", "content": text}], **kw
    )


# -- pass-through ----------------------------------------------------------------


def test_passthrough_sends_the_request_unchanged_and_records_usage(
    fake_anthropic, anthropic_client
):
    bare = _ask(anthropic_client, "hello", system="be brief", stop_sequences=["END"])
    wrapped = wrap(anthropic_client)
    got = _ask(wrapped, "hello", system="be brief", stop_sequences=["END"])
    first, second = fake_anthropic.messages_requests()
    assert second.json() == first.json()
    assert isinstance(got, anthropic.types.Message)
    assert got.content[0].text == bare.content[0].text
    (call,) = list(wrapped.calls)
    assert call.provider == "anthropic" and call.model == MODEL and not call.stream
    assert call.usage.input_tokens == got.usage.input_tokens > 0
    assert call.usage.output_tokens == got.usage.output_tokens > 0
    assert call.reply == Message("assistant", got.content[0].text)
    assert call.request_id == got.id


def test_recorded_cache_usage_fields_are_normalised(fake_anthropic, anthropic_client):
    fake_anthropic.enqueue_reply(
        "cached answer",
        AnthropicUsage(
            input_tokens=12,
            output_tokens=5,
            cache_creation_5m=300,
            cache_creation_1h=2000,
            cache_read=4096,
        ),
    )
    wrapped = wrap(anthropic_client)
    response = _ask(wrapped, "hi")
    assert response.usage.cache_creation.ephemeral_1h_input_tokens == 2000
    usage = wrapped.calls[0].usage
    assert (usage.input_tokens, usage.output_tokens) == (12, 5)
    assert usage.cache_creation_input_tokens == 2300
    assert (usage.cache_creation_5m, usage.cache_creation_1h) == (300, 2000)
    assert usage.cache_read_input_tokens == 4096


def test_cache_writes_without_ttl_split_count_as_5m(fake_anthropic, anthropic_client):
    fake_anthropic.enqueue(
        FakeResponse(
            json_body={
                "id": "msg_old",
                "type": "message",
                "role": "assistant",
                "model": MODEL,
                "content": [{"type": "text", "text": "x"}],
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": {
                    "input_tokens": 3,
                    "output_tokens": 1,
                    "cache_creation_input_tokens": 700,
                    "cache_read_input_tokens": 0,
                },
            }
        )
    )
    wrapped = wrap(anthropic_client)
    _ask(wrapped, "hi")
    usage = wrapped.calls[0].usage
    assert (
        usage.cache_creation_input_tokens,
        usage.cache_creation_5m,
        usage.cache_creation_1h,
    ) == (700, 700, 0)


def test_a_ttl_split_without_its_total_is_summed_not_priced_negative(
    fake_anthropic, anthropic_client
):
    """A gateway that passes on the 5m/1h split but not ``cache_creation_input_tokens``:
    the total was read as 0 and the report priced the 1-hour writes against it as
    -5,000 5-minute writes."""
    from contextos.cache import report
    from contextos.llm.models import get_model

    usages = [
        {"cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 5000}},
        {"cache_creation": {"ephemeral_5m_input_tokens": 300, "ephemeral_1h_input_tokens": 200}},
    ]
    for i, split in enumerate(usages):
        usage = {"input_tokens": 10, "output_tokens": 2, **split}
        fake_anthropic.enqueue(
            FakeResponse(
                json_body={
                    "id": f"msg_gw{i}",
                    "type": "message",
                    "role": "assistant",
                    "model": MODEL,
                    "content": [{"type": "text", "text": "x"}],
                    "stop_reason": "end_turn",
                    "stop_sequence": None,
                    "usage": usage,
                }
            )
        )
    wrapped = wrap(anthropic_client)
    _ask(wrapped, "hi")
    _ask(wrapped, "hi again")
    got = [
        (u.cache_creation_input_tokens, u.cache_creation_5m, u.cache_creation_1h)
        for u in (c.usage for c in wrapped.calls)
    ]
    assert got == [(5000, 0, 5000), (500, 300, 200)]
    priced = report([c.usage for c in wrapped.calls], get_model(MODEL))
    assert (priced.cache_write_5m_tokens, priced.cache_write_1h_tokens) == (300, 5200)
    assert priced.input_tokens == 20 + 5500


# -- streaming -------------------------------------------------------------------


def test_stream_returns_the_sdk_stream_and_records_usage_at_the_end(
    fake_anthropic, anthropic_client
):
    fake_anthropic.enqueue_reply(
        "streamed reply text",
        AnthropicUsage(40, 9, cache_creation_5m=1500, cache_read=2048),
        stream=True,
    )
    wrapped = wrap(anthropic_client)
    stream = _ask(wrapped, "tell me", stream=True)
    assert isinstance(stream, anthropic.Stream)
    events = []
    for event in stream:
        events.append(event)
        if event.type != "message_stop":
            assert len(wrapped.calls) == 0  # nothing recorded before the stream ends
    kinds = [e.type for e in events]
    assert kinds[:2] == ["message_start", "content_block_start"]
    assert set(kinds[2:-3]) == {"content_block_delta"}
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    (call,) = list(wrapped.calls)
    assert call.stream and call.complete
    assert call.reply is not None and call.reply.content == "streamed reply text"
    assert (call.usage.input_tokens, call.usage.output_tokens) == (40, 9)
    assert call.usage.cache_creation_5m == 1500 and call.usage.cache_read_input_tokens == 2048
    assert fake_anthropic.messages_requests()[0].json()["stream"] is True


def test_stream_closed_early_records_partial_usage(fake_anthropic, anthropic_client):
    fake_anthropic.enqueue_reply("a long reply " * 20, AnthropicUsage(30, 60), stream=True)
    wrapped = wrap(anthropic_client)
    with _ask(wrapped, "go", stream=True) as stream:
        first = next(iter(stream))
        assert first.type == "message_start"
    (call,) = list(wrapped.calls)
    assert not call.complete
    assert call.usage.input_tokens == 30  # known from message_start


def test_error_event_inside_a_stream_becomes_a_provider_error(fake_anthropic, anthropic_client):
    start = message_start("msg_x", MODEL, AnthropicUsage(5, 1))
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    fake_anthropic.enqueue(
        FakeResponse(
            events=[
                SSEEvent(json.dumps(start), "message_start"),
                SSEEvent(json.dumps(error), "error"),
            ]
        )
    )
    wrapped = wrap(anthropic_client)
    stream = _ask(wrapped, "go", stream=True)
    with pytest.raises(ProviderError) as info:
        list(stream)
    assert isinstance(info.value.__cause__, anthropic.APIError)
    assert not wrapped.calls[0].complete


# -- errors ----------------------------------------------------------------------


def test_429_becomes_rate_limited_with_retry_after(fake_anthropic, anthropic_client):
    fake_anthropic.enqueue_error(429, "slow down", retry_after=7)
    with pytest.raises(RateLimited) as info:
        _ask(wrap(anthropic_client), "hi")
    assert info.value.retry_after == 7.0
    assert isinstance(info.value.__cause__, anthropic.RateLimitError)


def test_sdk_retries_429_itself_and_we_do_not_retry_again(fake_anthropic):
    c = _client(fake_anthropic, max_retries=2)
    for _ in range(3):
        fake_anthropic.enqueue(
            FakeResponse(
                status=429,
                headers={"retry-after-ms": "5"},
                json_body={
                    "type": "error",
                    "error": {"type": "rate_limit_error", "message": "busy"},
                },
            )
        )
    with pytest.raises(RateLimited) as info:
        _ask(wrap(c), "hi")
    assert len(fake_anthropic.messages_requests()) == 3  # one call + the SDK's two retries, no more
    assert info.value.retry_after == pytest.approx(0.005)
    c.close()


def test_sdk_retry_then_success_is_one_recorded_call(fake_anthropic):
    c = _client(fake_anthropic, max_retries=1)
    fake_anthropic.enqueue(
        FakeResponse(
            status=429,
            headers={"retry-after-ms": "5"},
            json_body={"type": "error", "error": {"type": "rate_limit_error", "message": "busy"}},
        )
    )
    wrapped = wrap(c)
    _ask(wrapped, "hi")
    assert len(fake_anthropic.messages_requests()) == 2 and len(wrapped.calls) == 1
    c.close()


@pytest.mark.parametrize("status", [400, 500, 529])
def test_other_statuses_become_provider_http_error(fake_anthropic, anthropic_client, status):
    fake_anthropic.enqueue_error(status, "it broke")
    with pytest.raises(ProviderHTTPError) as info:
        _ask(wrap(anthropic_client), "hi")
    assert info.value.status == status
    assert "it broke" in info.value.body
    assert isinstance(info.value.__cause__, anthropic.APIStatusError)
    kinds = {400: "invalid_request_error", 500: "api_error", 529: "overloaded_error"}
    assert info.value.__cause__.body["error"]["type"] == kinds[status]  # the API's type for it


def test_connection_refused_becomes_provider_error():
    server = FakeAnthropic().start()
    url = server.base_url
    server.stop()
    c = anthropic.Anthropic(base_url=url, api_key="test", max_retries=0, timeout=2)
    with pytest.raises(ProviderError) as info:
        _ask(wrap(c), "hi")
    assert isinstance(info.value.__cause__, anthropic.APIConnectionError)
    c.close()


# -- with memory and a session -----------------------------------------------------


def _session_calls(fake_anthropic, anthropic_client, memory, questions, **kw):
    wrapped = wrap(anthropic_client, memory=memory, session="s1", user_id="ana", **kw)
    for q in questions:
        wrapped.messages.create(
            model=MODEL, max_tokens=256, system=SYSTEM, messages=[{"role": "user", "content": q}]
        )
    wrapped.flush()
    return wrapped, [r.json() for r in fake_anthropic.messages_requests()]


def test_session_places_breakpoints_and_keeps_the_prefix_byte_stable(
    fake_anthropic, anthropic_client, memory
):
    wrapped, bodies = _session_calls(
        fake_anthropic,
        anthropic_client,
        memory,
        ["first question", "second one", "third", "fourth"],
    )
    for n, body in enumerate(bodies):
        marks = [b for b in body["system"] if "cache_control" in b]
        assert marks, "the system prompt ends in a breakpoint"
        history = body["messages"][:-1]
        if n:
            assert "cache_control" in history[-1]["content"][-1], "history ends in a breakpoint"
        blocks = [b for m in body["messages"] for b in m["content"]] + body["system"]
        assert sum("cache_control" in b for b in blocks) <= 4
    for before, after in zip(bodies, bodies[1:], strict=False):
        old = before["messages"][:-1]
        assert _unmarked(after["system"]) == without_key(before["system"], "cache_control")
        assert _unmarked(after["messages"][: len(old)]) == without_key(old, "cache_control")
    hashes = [c.prefix_hash for c in wrapped.calls]
    assert all(hashes) and len(set(hashes)) == len(hashes)  # the cached prefix grows
    reads = [c.usage.cache_read_input_tokens for c in wrapped.calls]
    assert reads[0] == 0 and all(r > 0 for r in reads[1:])
    assert reads == sorted(reads)


def test_session_log_holds_each_turn_once_with_usage(fake_anthropic, anthropic_client, memory):
    wrapped = wrap(anthropic_client, memory=memory, session="s1", user_id="ana")
    convo: list[dict[str, Any]] = []
    for q in ["one", "two", "three"]:  # the caller resends the whole conversation
        convo.append({"role": "user", "content": q})
        r = wrapped.messages.create(model=MODEL, max_tokens=64, messages=convo)
        convo.append({"role": "assistant", "content": r.content[0].text})
    wrapped.flush()
    turns = memory.store.turns(Scope(tenant=memory.tenant, user_id="ana", session_id="s1"))
    assert [t.message.role for t in turns] == ["user", "assistant"] * 3
    assert [t.message.content for t in turns[::2]] == ["one", "two", "three"]
    usage = turns[-1].message.metadata["usage"]
    assert usage["input_tokens"] == wrapped.calls[-1].usage.input_tokens
    assert turns[-1].message.metadata["model"] == MODEL
    sent = fake_anthropic.messages_requests()[-1].json()["messages"]
    texts = [b["text"] for m in sent for b in m["content"]]
    assert texts.count("one") == 1 and texts.count("two") == 1


def test_memories_go_next_to_the_question_not_into_the_cached_prefix(
    fake_anthropic, anthropic_client, memory
):
    memory.add("Ana is allergic to peanuts", user_id="ana", session_id="older")
    _session_calls(fake_anthropic, anthropic_client, memory, ["what am I allergic to?"])
    body = fake_anthropic.messages_requests()[0].json()
    final = body["messages"][-1]
    texts = [b["text"] for b in final["content"]]
    assert texts[-1] == "what am I allergic to?"
    assert any("peanuts" in t for t in texts[:-1])
    assert not any("peanuts" in b["text"] for b in body["system"])


def test_exchange_is_remembered_for_later_sessions(fake_anthropic, anthropic_client, memory):
    _session_calls(fake_anthropic, anthropic_client, memory, ["my sister is called Bea"])
    found = memory.search("sister Bea", user_id="ana")
    assert any("Bea" in h.record.text for h in found)


def test_question_content_blocks_are_sent_as_given(fake_anthropic, anthropic_client, memory):
    image = {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
    }
    wrapped = wrap(anthropic_client, memory=memory, session="s1", user_id="ana")
    wrapped.messages.create(
        model=MODEL,
        max_tokens=64,
        messages=[{"role": "user", "content": [image, {"type": "text", "text": "what is this?"}]}],
    )
    final = fake_anthropic.messages_requests()[0].json()["messages"][-1]["content"]
    assert final[-2] == image and final[-1]["text"] == "what is this?"


def test_custom_tools_are_placed_and_cached_by_the_window(fake_anthropic, anthropic_client, memory):
    tools = [
        {
            "name": f"t{i}",
            "description": "d",
            "input_schema": {"type": "object"},
            "cache_control": {"type": "ephemeral"},
        }
        for i in range(3)
    ]
    snapshot = json.loads(json.dumps(tools))
    _session_calls(fake_anthropic, anthropic_client, memory, ["a", "b"])
    wrapped = wrap(anthropic_client, memory=memory, session="s1", user_id="ana")
    for q in ["c", "d"]:
        wrapped.messages.create(
            model=MODEL,
            max_tokens=64,
            system=SYSTEM,
            tools=tools,
            messages=[{"role": "user", "content": q}],
        )
    first, second = (r.json() for r in fake_anthropic.messages_requests()[-2:])
    assert [t["name"] for t in second["tools"]] == ["t0", "t1", "t2"]
    assert _unmarked(second["tools"]) == without_key(first["tools"], "cache_control")  # byte-stable
    # tools come first in the cache order: the 1-hour breakpoint after the system covers them
    assert second["system"][-1]["cache_control"] == {"type": "ephemeral", "ttl": "1h"}
    blocks = (
        second["tools"] + second["system"] + [b for m in second["messages"] for b in m["content"]]
    )
    assert sum("cache_control" in b for b in blocks) <= 4
    assert tools == snapshot


def test_server_tools_travel_verbatim_and_breakpoints_stay_within_four(
    fake_anthropic, anthropic_client, memory
):
    tools = [
        {
            "type": f"web_search_2025030{i}",
            "name": f"web_search_{i}",
            "cache_control": {"type": "ephemeral"},
        }
        for i in range(3)
    ]
    snapshot = json.loads(json.dumps(tools))
    _session_calls(fake_anthropic, anthropic_client, memory, ["a", "b", "c"])
    wrapped = wrap(anthropic_client, memory=memory, session="s1", user_id="ana")
    wrapped.messages.create(
        model=MODEL,
        max_tokens=64,
        system=SYSTEM,
        tools=tools,
        messages=[{"role": "user", "content": "d"}],
    )
    body = fake_anthropic.messages_requests()[-1].json()
    assert body["tools"] == snapshot
    blocks = body["tools"] + body["system"] + [b for m in body["messages"] for b in m["content"]]
    assert sum("cache_control" in b for b in blocks) == 4
    assert tools == snapshot


# -- token counting --------------------------------------------------------------


def test_token_counter_is_exact_through_count_tokens(fake_anthropic, anthropic_client):
    counter = AnthropicTokenCounter(anthropic_client, model=MODEL)
    assert counter.exact and counter.name == f"anthropic:{MODEL}"
    msgs = [Message("system", "be brief"), Message("user", "hello there, how are you?")]
    total = counter.count_messages(msgs)
    sent = fake_anthropic.requests_to("/v1/messages/count_tokens")[-1].json()
    assert sent["system"] == [{"type": "text", "text": "be brief"}]
    assert sent["messages"][0]["content"][0]["text"] == "hello there, how are you?"
    expected = anthropic_client.messages.count_tokens(
        model=MODEL, system=sent["system"], messages=sent["messages"]
    ).input_tokens
    assert total == expected
    before = len(fake_anthropic.requests)
    n = counter.count("some text to count")
    assert n > 0 and counter.count("some text to count") == n
    assert len(fake_anthropic.requests) - before == 2  # framing once + the text once; then cached


def test_token_counter_with_a_key_builds_its_own_client(fake_anthropic):
    counter = AnthropicTokenCounter(model=MODEL, api_key="test", base_url=fake_anthropic.base_url)
    assert counter.exact and counter.count_messages([Message("user", "hi")]) > 0
    counter._client.close()


def test_token_counter_without_a_key_is_a_labelled_estimate():
    counter = AnthropicTokenCounter(model=MODEL)
    assert not counter.exact and "estimate" in counter.name
    assert counter.count("hello world") == default_tokenizer().count("hello world")
    msgs = [Message("user", "hi")]
    assert counter.count_messages(msgs) == default_tokenizer().count_messages(msgs)


def test_token_counter_maps_auth_errors(fake_anthropic):
    c = anthropic.Anthropic(base_url=fake_anthropic.base_url, api_key="invalid", max_retries=0)
    with pytest.raises(AuthError):
        AnthropicTokenCounter(c, model=MODEL).count("x")
    c.close()


# -- the messages.stream() helper and the LLM seam ---------------------------------


def test_stream_helper_is_wrapped_too(fake_anthropic, anthropic_client, memory):
    memory.add("Ana plays the cello", user_id="ana", session_id="older")
    wrapped = wrap(anthropic_client, memory=memory, session="s1", user_id="ana")
    with wrapped.messages.stream(
        model=MODEL,
        max_tokens=64,
        system=SYSTEM,
        messages=[{"role": "user", "content": "what do I play?"}],
    ) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == final.content[0].text
    body = fake_anthropic.messages_requests()[0].json()
    assert body["stream"] is True
    assert any("cello" in b["text"] for b in body["messages"][-1]["content"])
    (call,) = list(wrapped.calls)
    assert call.complete and call.reply is not None and call.reply.content == text
    assert call.usage.output_tokens == final.usage.output_tokens
    wrapped.flush()
    turns = wrapped.context.session.turns()
    assert [t.message.content for t in turns] == ["what do I play?", text]


def test_stream_helper_errors_are_mapped(fake_anthropic, anthropic_client):
    fake_anthropic.enqueue_error(401, "bad key")
    with (
        pytest.raises(AuthError),
        wrap(anthropic_client).messages.stream(
            model=MODEL, max_tokens=8, messages=[{"role": "user", "content": "x"}]
        ),
    ):
        pass


def test_anthropic_llm_asks_for_structured_output(fake_anthropic, anthropic_client):
    from contextos.llm.clients import AnthropicLLM

    fake_anthropic.reply = lambda body: '{"action": "ADD"}'
    llm = AnthropicLLM(anthropic_client, model=MODEL, max_tokens=100)
    schema = {"type": "object", "properties": {"action": {"enum": ["ADD", "NOOP"]}}}
    out = llm.complete("decide", [Message("user", "Ana likes tea")], json_schema=schema)
    assert out == '{"action": "ADD"}'
    body = fake_anthropic.messages_requests()[0].json()
    assert body["system"] == "decide"
    assert body["output_config"] == {"format": {"type": "json_schema", "schema": schema}}
    assert llm.calls[0].usage.output_tokens > 0


def test_stream_usage_when_message_delta_only_carries_output_tokens():
    with FakeAnthropic(delta_usage="output_only") as server:
        c = _client(server)
        server.enqueue_reply(
            "short", AnthropicUsage(21, 7, cache_creation_1h=900, cache_read=300), stream=True
        )
        wrapped = wrap(c)
        list(_ask(wrapped, "go", stream=True))
        usage = wrapped.calls[0].usage
        assert (usage.input_tokens, usage.output_tokens) == (21, 7)
        assert (usage.cache_creation_1h, usage.cache_read_input_tokens) == (900, 300)
        c.close()


@pytest.mark.parametrize(
    ("model", "minimum"), [("claude-haiku-4-5", 4096), ("claude-sonnet-4-6", 1024)]
)
def test_no_breakpoint_is_planned_below_the_models_minimum(
    fake_anthropic, anthropic_client, memory, model, minimum
):
    """The registry's minimum cacheable prompt decides: a prefix under it gets no
    ``cache_control`` at all (it would cache nothing), one over it does."""
    from contextos.llm.models import get_model

    assert get_model(model).min_cache_tokens == minimum
    tokens = default_tokenizer()

    def rules(n: int) -> str:
        return " ".join(f"Rule {i}: answer precisely." for i in range(n))

    under = next(n for n in range(10, 5000, 10) if tokens.count(rules(n)) > minimum - 300)
    over = next(n for n in range(under, 9000, 10) if tokens.count(rules(n)) > minimum + 300)
    for n, expect in ((under, False), (over, True)):
        fake_anthropic.clear()
        wrapped = wrap(anthropic_client, memory=memory, session=f"min-{model}-{n}", user_id="ana")
        wrapped.messages.create(
            model=model,
            max_tokens=64,
            system=rules(n),
            messages=[{"role": "user", "content": "hello"}],
        )
        wrapped.flush()
        sent = json.dumps(fake_anthropic.messages_requests()[-1].json())
        assert ("cache_control" in sent) is expect, (model, n)


def test_automatic_caching_counts_against_the_four_markers(
    fake_anthropic, anthropic_client, memory
):
    """A top-level ``cache_control`` (automatic caching) marks the last block: with the
    window's breakpoints and a caller's own marker it would make five, which the API
    refuses; contextos drops its own earliest one instead."""
    wrapped = wrap(anthropic_client, memory=memory, session="auto", user_id="ana")
    history: list[dict[str, Any]] = []
    for i in range(40):
        history += [
            {"role": "user", "content": f"question {i} " + "words " * 60},
            {"role": "assistant", "content": f"answer {i} " + "more " * 60},
        ]
    question = [
        {"type": "text", "text": "reference " * 50, "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "last?"},
    ]
    reply = wrapped.messages.create(
        model=MODEL,
        max_tokens=64,
        system=SYSTEM,
        cache_control={"type": "ephemeral"},
        messages=[*history, {"role": "user", "content": question}],
    )
    wrapped.flush()
    sent = fake_anthropic.messages_requests()[-1].json()
    assert sent["cache_control"] == {"type": "ephemeral"}
    assert json.dumps(sent).count('"cache_control"') == 4  # three markers and the automatic one
    assert sent["messages"][-1]["content"][-1] == {"type": "text", "text": "last?"}
    assert reply.usage.cache_creation_input_tokens > 0


def _ttls(body: dict[str, Any]) -> list[str]:
    """The TTLs of a request's markers in cache order (tools, system, messages)."""
    system = body.get("system")
    blocks = [*body.get("tools", []), *(system if isinstance(system, list) else [])]
    blocks += [b for m in body["messages"] for b in m["content"] if isinstance(m["content"], list)]
    marks = [b["cache_control"] for b in blocks if isinstance(b, dict) and "cache_control" in b]
    if isinstance(body.get("cache_control"), dict):
        marks.append(body["cache_control"])
    return [m.get("ttl", "5m") for m in marks]


def test_the_fake_refuses_a_one_hour_marker_after_a_five_minute_one(
    fake_anthropic, anthropic_client
):
    with pytest.raises(anthropic.BadRequestError, match="ttl='1h'"):
        anthropic_client.messages.create(
            model=MODEL,
            max_tokens=16,
            system=[{"type": "text", "text": "rules", "cache_control": {"type": "ephemeral"}}],
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "q", "cache_control": EPHEMERAL_1H},
                    ],
                }
            ],
        )


@pytest.mark.parametrize("where", ["question", "automatic"])
def test_a_callers_one_hour_marker_keeps_every_earlier_marker_one_hour(
    fake_anthropic, anthropic_client, memory, where
):
    """The caller marks its question (or the whole request: automatic caching) for an
    hour. The window's history marker was a 5-minute one before it from the second call
    on, which the API refuses (longer TTLs first; a review): each call must go through,
    every marker before the caller's 1-hour one must be 1-hour too, and the caller's mark
    stays on its question."""
    wrapped = wrap(anthropic_client, memory=memory, session="ttl", user_id="ana")
    for n in range(4):
        question = {"type": "text", "text": f"question {n} " + "context " * 50}
        extra: dict[str, Any] = {}
        if where == "question":
            question["cache_control"] = EPHEMERAL_1H
        else:
            extra["cache_control"] = EPHEMERAL_1H
        wrapped.messages.create(
            model=MODEL,
            max_tokens=64,
            system=SYSTEM,
            messages=[{"role": "user", "content": [question]}],
            **extra,
        )
    wrapped.flush()
    bodies = [r.json() for r in fake_anthropic.messages_requests()]
    assert len(bodies) == 4 and len(wrapped.calls) == 4
    for body in bodies:
        ttls = _ttls(body)
        assert ttls and set(ttls) == {"1h"}, ttls
    last = bodies[-1]["messages"][-1]["content"][-1]
    if where == "question":
        assert last["cache_control"] == EPHEMERAL_1H and last["text"].startswith("question 3")
