"""OpenAI's explicit prompt-cache breakpoints and cache-write usage through ``wrap``.

The real ``openai.OpenAI`` client against :class:`FakeOpenAI`, which simulates
``prompt_cache_options`` and per-part ``prompt_cache_breakpoint`` (openai 3.57's
``types/chat/completion_create_params.py`` and
``types/chat/chat_completion_content_part_text_param.py``).
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

openai = pytest.importorskip("openai")

from contextos.cache import usage_from_openai  # noqa: E402
from contextos.cache.accounting import openai_write_ttls  # noqa: E402
from contextos.engine.context import SessionContext  # noqa: E402
from contextos.engine.window import Breakpoint  # noqa: E402
from contextos.errors import ProviderHTTPError  # noqa: E402
from contextos.memory import Memory  # noqa: E402
from contextos.providers import openai as adapter  # noqa: E402
from contextos.providers import wrap  # noqa: E402
from contextos.providers.base import ChatRequest  # noqa: E402
from contextos.types import Message  # noqa: E402

MODEL = "gpt-5.6-sol"  # prompt_cache_options: "supported for gpt-5.6 and later models"
SYSTEM = " ".join(f"Rule {i}: answer precisely and cite the memory you used." for i in range(160))
MARK = "prompt_cache_breakpoint"


def _chat(wrapped: Any, turns: int, **kw: Any) -> None:
    for i in range(turns):
        wrapped.chat.completions.create(
            model=MODEL,
            messages=[
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": f"question {i}: " + "detail " * 40},
            ],
            **kw,
        )
        wrapped.flush()


def _marked(body: dict[str, Any]) -> list[tuple[int, str]]:
    """(message index, role) of every marked part."""
    return [
        (i, m["role"])
        for i, m in enumerate(body["messages"])
        if isinstance(m["content"], list)
        for part in m["content"]
        if MARK in part
    ]


def _explicit(openai_client: Any, memory: Memory) -> Any:
    """A session-managed client asking for explicit breakpoints on every call."""
    options = {"mode": "explicit"}
    return wrap(
        openai_client, memory=memory, session="s", user_id="ana", prompt_cache_options=options
    )


def test_explicit_breakpoints_are_marked_where_planned_and_read_back(
    fake_openai, openai_client, memory
):
    wrapped = _explicit(openai_client, memory)
    _chat(wrapped, 4)
    bodies = [r.json() for r in fake_openai.completions_requests()]
    assert all(b["prompt_cache_options"] == {"mode": "explicit"} for b in bodies)
    assert _marked(bodies[0])[0] == (0, "system")  # the 1h breakpoint after the system prompt
    assert all(1 <= len(_marked(b)) <= 4 for b in bodies)
    assert any(role != "system" for b in bodies[1:] for _, role in _marked(b))  # history too
    first, *later = list(wrapped.calls)
    assert first.usage.cache_creation_input_tokens > 1024  # written at the breakpoints
    assert first.usage.cache_read_input_tokens == 0
    assert all(c.usage.cache_read_input_tokens > 1024 for c in later)  # read back, exactly
    # explicit mode has no implicit cache: every read came from a planned breakpoint
    report = wrapped.calls.total()
    assert report.cache_read_input_tokens > report.input_tokens


def test_implicit_mode_marks_at_most_three_and_the_calls_options_win(
    fake_openai, openai_client, memory
):
    wrapped = _explicit(openai_client, memory)
    _chat(wrapped, 3, prompt_cache_options={"mode": "implicit", "ttl": "30m"})
    for request in fake_openai.completions_requests():
        body = request.json()
        assert body["prompt_cache_options"] == {"mode": "implicit", "ttl": "30m"}
        assert 1 <= len(_marked(body)) <= 3


def test_the_latest_breakpoints_are_kept_up_to_the_modes_limit():
    messages = []
    for i in range(40):
        messages += [
            Message("user", f"question {i} " + "words " * 60),
            Message("assistant", f"answer {i} " + "more " * 60),
        ]
    request = ChatRequest(MODEL, (SYSTEM,), (*messages, Message("user", "last?")))
    prepared = SessionContext().prepare(request, reserve_tokens=1000)
    window = prepared.window
    turns = [i for i, b in enumerate(window.blocks) if b.kind == "messages"]
    extra = tuple(Breakpoint(i, "5m", "history", 0) for i in turns[5:40:10])
    window = replace(
        window, breakpoints=tuple(sorted(window.breakpoints + extra, key=lambda b: b.after))
    )
    prepared = replace(prepared, window=window)
    assert len(window.breakpoints) >= 6
    for mode, limit in (("explicit", 4), ("implicit", 3)):
        out, _ = adapter.render(
            prepared, {"model": MODEL, "messages": []}, cache_options={"mode": mode}
        )
        rows = [i for i, _ in _marked(out)]
        latest = [b.after for b in window.breakpoints][-limit:]
        expected = [
            sum(1 for b in window.blocks[:a] if b.kind in ("system", "messages")) for a in latest
        ]
        assert rows == expected, mode


def test_without_options_nothing_is_marked(fake_openai, openai_client, memory):
    wrapped = wrap(
        openai_client, memory=memory, session="s", user_id="ana", background_commit=False
    )
    _chat(wrapped, 2)
    sent = json.dumps([r.json() for r in fake_openai.completions_requests()])
    assert MARK not in sent and "prompt_cache_options" not in sent


def test_bad_options_are_refused_before_anything_is_sent(fake_openai, openai_client, memory):
    with pytest.raises(ValueError, match="mode"):
        wrap(openai_client, prompt_cache_options={"mode": "sometimes"})
    wrapped = wrap(openai_client, memory=memory, session="s", user_id="ana")
    with pytest.raises(ValueError, match="unknown keys"):
        _chat(wrapped, 1, prompt_cache_options={"mode": "explicit", "prewarm": True})
    assert fake_openai.completions_requests() == []


def test_a_calls_bad_options_are_refused_before_its_question_is_logged(
    fake_openai, openai_client, memory
):
    """Refused only when the window was rendered, they left "I am allergic to peanuts"
    in the session's log, never remembered, and sent before the next question: two user
    turns in a row."""
    wrapped = wrap(openai_client, memory=memory, session="s", user_id="ana")
    said = [{"role": "user", "content": "I am allergic to peanuts."}]
    with pytest.raises(ValueError, match="mode must be"):
        wrapped.chat.completions.create(
            model=MODEL, messages=said, prompt_cache_options={"mode": "sometimes"}
        )
    asked = [{"role": "user", "content": "What should I cook tonight?"}]
    wrapped.chat.completions.create(model=MODEL, messages=asked)
    wrapped.flush()
    [sent] = fake_openai.completions_requests()
    assert [m["role"] for m in sent.json()["messages"]] == ["user"]
    assert "peanuts" not in json.dumps(sent.json())


def test_the_fake_refuses_a_malformed_breakpoint(fake_openai, openai_client):
    part = {"type": "text", "text": SYSTEM, MARK: {"mode": "implicit"}}
    with pytest.raises(openai.BadRequestError, match="prompt_cache_breakpoint") as refused:
        openai_client.chat.completions.create(
            model=MODEL, messages=[{"role": "system", "content": [part]}]
        )
    # OpenAI's error body, naming the parameter at fault
    assert (refused.value.type, refused.value.param) == (
        "invalid_request_error",
        "prompt_cache_options",
    )
    with pytest.raises(ProviderHTTPError):
        wrap(openai_client).chat.completions.create(
            model=MODEL, messages=[{"role": "system", "content": [part]}]
        )


def test_cache_writes_and_their_ttl_split_are_read_from_the_sdk_types():
    from openai.types.completion_usage import CompletionUsage
    from openai.types.responses.response_usage import ResponseUsage

    responses = ResponseUsage.model_validate(
        {
            "input_tokens": 5000,
            "input_tokens_details": {
                "cached_tokens": 3000,
                "cache_write_tokens": 1500,
                "cache_write_tokens_details": {"ttl_30m_tokens": 1000, "ttl_12h_tokens": 500},
            },
            "output_tokens": 20,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 5020,
        }
    )
    usage = usage_from_openai(responses)
    assert (usage.input_tokens, usage.cache_read_input_tokens) == (500, 3000)
    assert usage.cache_creation_input_tokens == 1500
    assert openai_write_ttls(responses) == {"30m": 1000, "12h": 500}
    assert adapter.chat_adapter().extra({"usage": responses}) == {
        "cache_write_ttl": {"30m": 1000, "12h": 500}
    }
    chat = CompletionUsage.model_validate(
        {
            "prompt_tokens": 2000,
            "completion_tokens": 5,
            "total_tokens": 2005,
            "prompt_tokens_details": {"cached_tokens": 1024, "cache_write_tokens": 512},
        }
    )
    assert openai_write_ttls(chat) == {}
    assert usage_from_openai(chat).input_tokens == 2000 - 1024 - 512


# -- the Responses API: unmanaged, recorded ------------------------------------------


def _marked_input(question: str, rules: str = SYSTEM) -> list[dict[str, Any]]:
    part = {"type": "input_text", "text": rules, MARK: {"mode": "explicit"}}
    return [
        {"role": "developer", "content": [part]},
        {"role": "user", "content": question},
    ]


def test_responses_calls_pass_through_and_record_writes_by_ttl(fake_openai, openai_client):
    ask = dict(model=MODEL, prompt_cache_options={"mode": "explicit"})
    openai_client.responses.create(input=_marked_input("first?"), **ask)
    wrapped = wrap(openai_client)
    got = wrapped.responses.create(input=_marked_input("second?"), **ask)
    first, second = fake_openai.responses_requests()
    assert second.json() == {**first.json(), "input": _marked_input("second?")}  # as given
    assert isinstance(got, openai.types.responses.Response)
    (call,) = list(wrapped.calls)
    assert call.reply.content == got.output_text and call.request_id == got.id
    assert call.usage.cache_read_input_tokens == got.usage.input_tokens_details.cached_tokens
    assert call.usage.cache_read_input_tokens > 1024  # the prefix the first call wrote
    other = SYSTEM.replace("Rule", "Law")
    wrote = wrapped.responses.create(input=_marked_input("third?", other), **ask)
    written = wrote.usage.input_tokens_details.cache_write_tokens
    assert written > 1024
    assert wrapped.calls[-1].usage.cache_creation_input_tokens == written
    assert wrapped.calls[-1].extra["cache_write_ttl"] == {"30m": written, "12h": 0}


def test_responses_compaction_items_are_recorded_streamed_or_not(fake_openai, openai_client):
    wrapped = wrap(openai_client)
    config = [{"type": "compaction", "compact_threshold": 1000}]
    long_input = [{"role": "user", "content": "detail " * 800}]
    response = wrapped.responses.create(model=MODEL, input=long_input, context_management=config)
    assert fake_openai.responses_requests()[-1].json()["context_management"] == config
    (item,) = wrapped.calls[-1].extra["compaction_items"]
    assert item == {
        "type": "compaction",
        "id": response.output[0].id,
        "encrypted_content": response.output[0].encrypted_content,
    }
    before = wrapped.calls[-1].usage
    follow = [
        *long_input,
        *(o.to_dict() for o in response.output),
        {"role": "user", "content": "ok"},
    ]
    wrapped.responses.create(model=MODEL, input=follow, context_management=config)
    assert "compaction_items" not in wrapped.calls[-1].extra
    assert wrapped.calls[-1].usage.input_tokens < before.input_tokens  # read from the item on
    stream = wrapped.responses.create(
        model=MODEL, input=long_input, context_management=config, stream=True
    )
    text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
    call = wrapped.calls[-1]
    assert call.stream and call.complete and call.reply.content == text
    assert call.extra["compaction_items"][0]["type"] == "compaction"
    assert call.usage.output_tokens > 0


def _unmarked(messages: list[dict[str, Any]]) -> str:
    """The messages as sent, breakpoint marks left out (they are not content)."""
    plain = json.loads(json.dumps(messages))
    for m in plain:
        for part in m["content"] if isinstance(m["content"], list) else []:
            part.pop(MARK, None)
    return json.dumps(plain, sort_keys=True)


def test_the_history_before_a_breakpoint_is_sent_the_same_on_the_next_call(
    fake_openai, openai_client, memory
):
    """Only the marked turn was sent as a text part; on the next call, its breakpoint
    moved on, it went back to a string: the bytes before the previous breakpoint changed,
    and every call wrote the history's cache again while reads stayed at the system
    prompt (found by a review). Each call must send the history up to the previous
    call's last breakpoint byte for byte, and read more of it from the cache."""
    wrapped = _explicit(openai_client, memory)
    _chat(wrapped, 7)
    bodies = [r.json() for r in fake_openai.completions_requests()]
    for before, after in zip(bodies, bodies[1:], strict=False):
        history = [i for i, _ in _marked(before) if i < len(before["messages"]) - 1]
        end = max(history) + 1
        assert _unmarked(before["messages"][:end]) == _unmarked(after["messages"][:end])
    reads = [c.usage.cache_read_input_tokens for c in wrapped.calls]
    writes = [c.usage.cache_creation_input_tokens for c in wrapped.calls]
    assert all(a < b for a, b in zip(reads[1:], reads[2:], strict=False)), reads
    assert max(writes[2:]) <= writes[1] * 2, writes  # each call writes its new exchange only
