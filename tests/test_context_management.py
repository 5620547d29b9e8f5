"""The Claude API's own context management through ``contextos.wrap``.

The real ``anthropic.Anthropic`` client talks to :class:`FakeAnthropic` on
loopback, which simulates server-side tool-result clearing, thinking clearing
and compaction on the request before its prompt-cache accounting (see its
module docstring). Field names are those of anthropic 2.14's ``types/beta/``.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

anthropic = pytest.importorskip("anthropic")

from contextos.memory import Memory  # noqa: E402
from contextos.providers import wrap  # noqa: E402
from contextos.providers.anthropic import COMPACTION_KEY, server_edits  # noqa: E402
from contextos.providers.base import edit_report_from_log  # noqa: E402
from contextos.testing.fake_anthropic import CLEARED_RESULT  # noqa: E402

MODEL = "claude-sonnet-4"  # minimum cacheable prompt 1,024 tokens
CM_BETA = "context-management-2025-06-27"
COMPACT_BETA = "compact-2026-01-12"
BIG = "row " * 400  # ~400 fake tokens per tool result


def clear_edit(**kw: Any) -> dict[str, Any]:
    return {"edits": [{"type": "clear_tool_uses_20250919", **kw}]}


def compact_edit(**kw: Any) -> dict[str, Any]:
    return {"edits": [{"type": "compact_20260112", **kw}]}


def tool_turns(n: int, start: int = 0) -> list[dict[str, Any]]:
    """``n`` question / tool call / tool result triples."""
    out: list[dict[str, Any]] = []
    for i in range(start, start + n):
        out += [
            {"role": "user", "content": f"look up item {i}"},
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": f"tu_{i}", "name": "lookup", "input": {"i": i}}
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": f"tu_{i}", "content": f"{i}: {BIG}"}
                ],
            },
        ]
    return out


def cached(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``messages`` with a cache breakpoint on the last block (the caller's own marker)."""
    out = json.loads(json.dumps(messages))
    last = out[-1]
    if isinstance(last["content"], str):
        last["content"] = [{"type": "text", "text": last["content"]}]
    last["content"][-1]["cache_control"] = {"type": "ephemeral"}
    return out


# -- pass-through: what goes out, what is recorded ---------------------------------------


def test_context_management_goes_out_unchanged_and_applied_edits_are_recorded(
    fake_anthropic, anthropic_client
):
    messages = [*tool_turns(6), {"role": "user", "content": "summarise"}]
    config = clear_edit(
        trigger={"type": "input_tokens", "value": 1000},
        keep={"type": "tool_uses", "value": 2},
        clear_at_least={"type": "input_tokens", "value": 500},
        exclude_tools=["never_cleared"],
        clear_tool_inputs=True,
    )
    wrapped = wrap(anthropic_client)
    response = wrapped.beta.messages.create(
        model=MODEL, max_tokens=64, messages=messages, betas=[CM_BETA], context_management=config
    )
    sent = fake_anthropic.messages_requests()[-1]
    assert sent.json()["context_management"] == config
    assert CM_BETA in sent.headers["anthropic-beta"]
    applied = response.context_management.applied_edits
    assert [e.cleared_tool_uses for e in applied] == [4]  # 6 uses, keep 2
    record = wrapped.calls[-1].extra["applied_edits"]
    assert record == [
        {
            "type": "clear_tool_uses_20250919",
            "cleared_input_tokens": applied[0].cleared_input_tokens,
            "cleared_tool_uses": 4,
        }
    ]
    report = wrapped.calls.edits()
    assert (report.calls_with_edits, report.cleared_tool_uses) == (1, 4)
    assert report.cleared_input_tokens == applied[0].cleared_input_tokens > 4 * 300


def test_server_clearing_costs_cache_reads_and_the_report_shows_it(
    fake_anthropic, anthropic_client
):
    """A breakpoint-cached conversation: the call on which the server starts clearing
    reads less from the cache than the calls without edits (the prefix changed)."""
    wrapped = wrap(anthropic_client)
    config = clear_edit(trigger={"type": "input_tokens", "value": 2500})
    history: list[dict[str, Any]] = []
    for i in range(8):
        history += tool_turns(1, start=i)
        send = dict(model=MODEL, max_tokens=32, betas=[CM_BETA], context_management=config)
        wrapped.beta.messages.create(messages=cached(history), **send)
    report = wrapped.calls.edits()
    assert 0 < report.calls_with_edits < report.calls
    assert report.read_share_without > 0.5
    assert report.read_share_with_edits < report.read_share_without - 0.2
    first_edit = next(i for i, c in enumerate(wrapped.calls) if c.extra.get("applied_edits"))
    before, at = wrapped.calls[first_edit - 1].usage, wrapped.calls[first_edit].usage
    assert at.cache_read_input_tokens < before.cache_read_input_tokens
    assert at.cache_creation_input_tokens > before.cache_creation_input_tokens


def test_thinking_clearing_is_passed_through_and_recorded(fake_anthropic, anthropic_client):
    def thinking(i: int) -> dict[str, Any]:
        return {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": f"reasoning {i} " * 50, "signature": f"s{i}"},
                {"type": "text", "text": f"answer {i}"},
            ],
        }

    messages: list[dict[str, Any]] = []
    for i in range(3):
        messages += [{"role": "user", "content": f"q{i}"}, thinking(i)]
    messages.append({"role": "user", "content": "q3"})
    wrapped = wrap(anthropic_client)
    wrapped.beta.messages.create(
        model=MODEL,
        max_tokens=32,
        messages=messages,
        betas=[CM_BETA],
        context_management={"edits": [{"type": "clear_thinking_20251015"}]},
    )
    (edit,) = wrapped.calls[-1].extra["applied_edits"]
    assert edit["type"] == "clear_thinking_20251015"
    assert edit["cleared_thinking_turns"] == 2  # keep defaults to the last turn
    assert wrapped.calls.edits().cleared_thinking_turns == 2


def test_an_edit_without_its_beta_is_refused_like_the_api(fake_anthropic, anthropic_client):
    from contextos.errors import ProviderHTTPError

    with pytest.raises(ProviderHTTPError, match="context-management-2025-06-27"):
        wrap(anthropic_client).beta.messages.create(
            model=MODEL,
            max_tokens=8,
            messages=[{"role": "user", "content": "hi"}],
            context_management=clear_edit(),
        )


def test_server_edits_reads_the_argument_and_extra_body():
    assert server_edits({"context_management": clear_edit()}) == ("clear_tool_uses_20250919",)
    assert server_edits({"extra_body": {"context_management": compact_edit()}}) == (
        "compact_20260112",
    )
    assert server_edits({"model": MODEL}) == ()
    with pytest.raises(ValueError, match="string 'type'"):
        server_edits({"context_management": {"edits": [{"trigger": {}}]}})
    with pytest.raises(ValueError, match="list of edits"):
        server_edits({"context_management": {"edits": {"type": "compact_20260112"}}})


# -- contextos and the server never both clear ----------------------------------------------


def _run_tool_session(anthropic_client: Any, memory: Memory, session: str, **create: Any) -> Any:
    wrapped = wrap(
        anthropic_client,
        memory=memory,
        session=session,
        user_id="ana",
        compaction="clear_tool_results",
        budget=4000,
        background_commit=False,
    )
    history: list[dict[str, Any]] = []
    for i in range(6):
        history += tool_turns(1, start=i)
        wrapped.beta.messages.create(
            model=MODEL,
            max_tokens=256,
            messages=[*history, {"role": "user", "content": f"and now, step {i}?"}],
            **create,
        )
        history.append({"role": "user", "content": f"and now, step {i}?"})
        history.append({"role": "assistant", "content": wrapped.calls[-1].reply.content})
    return wrapped


def test_client_side_clearing_is_off_when_the_server_clears(
    fake_anthropic, anthropic_client, memory
):
    own = _run_tool_session(anthropic_client, memory, "own")
    assert own.context.session.state().cleared, "the control run must clear client-side"
    own_sent = json.dumps([r.json() for r in fake_anthropic.messages_requests()])
    assert "tool result cleared to save context" in own_sent

    fake_anthropic.clear()
    server = _run_tool_session(
        anthropic_client,
        memory,
        "server",
        betas=[CM_BETA],
        context_management=clear_edit(trigger={"type": "input_tokens", "value": 2000}),
    )
    assert server.context.session.state().cleared == ()
    sent = json.dumps([r.json() for r in fake_anthropic.messages_requests()])
    assert "tool result cleared to save context" not in sent  # contextos cleared nothing
    assert server.calls.edits().cleared_tool_uses > 0  # the server did
    assert CLEARED_RESULT not in sent  # and the request carried every result in full
    logged = [t.message.metadata.get("server_context") for t in server.context.session.turns()]
    assert any(m and m.get("applied_edits") for m in logged)  # in the session log too
    from_log = edit_report_from_log([t.message for t in server.context.session.turns()])
    assert from_log == server.calls.edits()  # the session's accounting, rebuilt from the store


def test_streamed_calls_record_applied_edits(fake_anthropic, anthropic_client):
    wrapped = wrap(anthropic_client)
    stream = wrapped.beta.messages.create(
        model=MODEL,
        max_tokens=32,
        messages=[*tool_turns(6), {"role": "user", "content": "summarise"}],
        betas=[CM_BETA],
        context_management=clear_edit(trigger={"type": "input_tokens", "value": 1000}),
        stream=True,
    )
    events = [e.type for e in stream]
    assert events[-1] == "message_stop"
    (edit,) = wrapped.calls[-1].extra["applied_edits"]
    assert edit["cleared_tool_uses"] == 3 and wrapped.calls[-1].stream


# -- server-side compaction --------------------------------------------------------------------


def _compacting(anthropic_client: Any, memory: Memory, **kw: Any) -> Any:
    return wrap(
        anthropic_client,
        memory=memory,
        session="long",
        user_id="ana",
        background_commit=False,
        **kw,
    )


def test_compaction_block_is_logged_sent_back_verbatim_and_its_pass_is_paid(
    fake_anthropic, anthropic_client, memory
):
    wrapped = _compacting(anthropic_client, memory)
    config = compact_edit(trigger={"type": "input_tokens", "value": 1500}, instructions="names")
    ask = dict(model=MODEL, max_tokens=64, betas=[COMPACT_BETA], context_management=config)
    wrapped.beta.messages.create(
        messages=[*tool_turns(5), {"role": "user", "content": "go"}], **ask
    )
    first = wrapped.calls[-1]
    (block,) = first.reply.metadata[COMPACTION_KEY]
    assert block["type"] == "compaction" and "names" in block["content"]
    (summarising,) = first.extra["compaction_usage"]
    assert first.usage.input_tokens > summarising["input_tokens"]  # both passes counted
    logged = wrapped.context.session.turns()[-1].message
    assert logged.metadata[COMPACTION_KEY] == [block]  # durable in the session log

    wrapped.beta.messages.create(messages=[{"role": "user", "content": "and then?"}], **ask)
    body = fake_anthropic.messages_requests()[-1].json()
    carrying = [
        m for m in body["messages"] if any(b.get("type") == "compaction" for b in m["content"])
    ]
    assert len(carrying) == 1 and carrying[0]["role"] == "assistant"
    assert {k: v for k, v in carrying[0]["content"][0].items() if k != "cache_control"} == block
    second = wrapped.calls[-1]
    assert "compaction_usage" not in second.extra  # under the trigger once compacted
    assert second.usage.input_tokens < summarising["input_tokens"]  # read from the block on

    # a new process: the block comes back out of the store
    again = _compacting(anthropic_client, memory)
    again.beta.messages.create(messages=[{"role": "user", "content": "still there?"}], **ask)
    assert COMPACTION_KEY not in again.calls[-1].reply.metadata
    body = fake_anthropic.messages_requests()[-1].json()
    assert json.dumps(block["encrypted_content"]) in json.dumps(body)


def test_contextos_does_not_compact_when_the_server_does(fake_anthropic, anthropic_client, memory):
    wrapped = _compacting(anthropic_client, memory, budget=3000, compaction="summarize")
    config = compact_edit(trigger={"type": "input_tokens", "value": 100_000})
    for i in range(6):
        wrapped.beta.messages.create(
            model=MODEL,
            max_tokens=64,
            messages=[{"role": "user", "content": f"turn {i}: {BIG}"}],
            betas=[COMPACT_BETA],
            context_management=config,
        )
    assert wrapped.context.session.state().compactions == 0
    control = wrap(anthropic_client, memory=memory, session="ctl", user_id="ana", budget=3000)
    for i in range(6):
        control.messages.create(
            model=MODEL, max_tokens=64, messages=[{"role": "user", "content": f"turn {i}: {BIG}"}]
        )
    control.flush()
    assert control.context.session.state().compactions > 0


def test_paused_compaction_is_sent_back_alone(fake_anthropic, anthropic_client, memory):
    wrapped = _compacting(anthropic_client, memory)
    config = compact_edit(
        trigger={"type": "input_tokens", "value": 1500}, pause_after_compaction=True
    )
    ask = dict(model=MODEL, max_tokens=64, betas=[COMPACT_BETA], context_management=config)
    response = wrapped.beta.messages.create(
        messages=[*tool_turns(5), {"role": "user", "content": "go"}], **ask
    )
    assert response.stop_reason == "compaction"
    assert wrapped.calls[-1].extra["stop_reason"] == "compaction"
    wrapped.beta.messages.create(messages=[{"role": "user", "content": "continue"}], **ask)
    body = fake_anthropic.messages_requests()[-1].json()
    (turn,) = [m for m in body["messages"] if any(b["type"] == "compaction" for b in m["content"])]
    assert [b["type"] for b in turn["content"]] == ["compaction"]  # no empty text block


def test_streamed_compaction_is_kept_and_its_pass_counted(fake_anthropic, anthropic_client, memory):
    wrapped = _compacting(anthropic_client, memory)
    config = compact_edit(trigger={"type": "input_tokens", "value": 1500})
    with wrapped.beta.messages.stream(
        model=MODEL,
        max_tokens=64,
        messages=[*tool_turns(5), {"role": "user", "content": "go"}],
        betas=[COMPACT_BETA],
        context_management=config,
    ) as stream:
        final = stream.get_final_message()
    call = wrapped.calls[-1]
    assert call.reply.metadata[COMPACTION_KEY] == [final.content[0].to_dict()]
    (summarising,) = call.extra["compaction_usage"]
    assert call.usage.input_tokens == summarising["input_tokens"] + final.usage.input_tokens


def test_the_fake_refuses_a_compaction_block_changed_on_the_way_back(
    fake_anthropic, anthropic_client
):
    from contextos.errors import ProviderHTTPError

    config = compact_edit(trigger={"type": "input_tokens", "value": 1500})
    ask = dict(model=MODEL, max_tokens=64, betas=[COMPACT_BETA], context_management=config)
    messages = [*tool_turns(5), {"role": "user", "content": "go"}]
    reply = anthropic_client.beta.messages.create(messages=messages, **ask)
    block = reply.content[0].to_dict()
    turn = {"role": "assistant", "content": [{**block, "content": "forged"}]}
    with pytest.raises(ProviderHTTPError, match="verbatim"):
        wrap(anthropic_client).beta.messages.create(
            messages=[*messages, turn, {"role": "user", "content": "x"}], **ask
        )


def test_a_callers_own_compaction_block_survives_the_window(
    fake_anthropic, anthropic_client, memory
):
    """Without a session the caller's messages are the history; the block in them is
    rendered back, though the window rebuilds every message."""
    config = compact_edit(trigger={"type": "input_tokens", "value": 1500})
    ask = dict(model=MODEL, max_tokens=64, betas=[COMPACT_BETA], context_management=config)
    messages = [*tool_turns(5), {"role": "user", "content": "go"}]
    reply = anthropic_client.beta.messages.create(messages=messages, **ask)
    block = reply.content[0].to_dict()
    turn = {"role": "assistant", "content": [b.to_dict() for b in reply.content]}
    wrapped = wrap(anthropic_client, memory=memory, user_id="ana")
    wrapped.beta.messages.create(
        messages=[*messages, turn, {"role": "user", "content": "x"}], **ask
    )
    sent = fake_anthropic.messages_requests()[-1].json()["messages"]
    firsts = [m["content"][0] for m in sent if isinstance(m["content"], list)]
    assert [{k: v for k, v in b.items() if k != "cache_control"} for b in firsts].count(block) == 1


def test_the_non_beta_method_works_through_extra_body(fake_anthropic, anthropic_client, memory):
    """``messages.create`` has no ``context_management`` argument; ``extra_body`` and the
    beta header carry it, and contextos reads it there too."""
    wrapped = _compacting(anthropic_client, memory, compaction="clear_tool_results", budget=4000)
    edits = clear_edit(trigger={"type": "input_tokens", "value": 1000})["edits"]
    edits.append({"type": "compact_20260112", "trigger": {"type": "input_tokens", "value": 1200}})
    reply = wrapped.messages.create(
        model=MODEL,
        max_tokens=64,
        messages=[*tool_turns(6), {"role": "user", "content": "go"}],
        extra_headers={"anthropic-beta": f"{CM_BETA},{COMPACT_BETA}"},
        extra_body={"context_management": {"edits": edits}},
    )
    assert [b.type for b in reply.content] == ["compaction", "text"]
    call = wrapped.calls[-1]
    assert call.extra["applied_edits"][0]["type"] == "clear_tool_uses_20250919"
    assert call.reply.metadata[COMPACTION_KEY][0]["encrypted_content"]
    assert wrapped.context.session.state().cleared == ()  # the server cleared, not contextos
