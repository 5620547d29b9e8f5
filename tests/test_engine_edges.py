"""Edges of the engine's public API: blank text, invalid Unicode, odd usage numbers,
the OpenAI routing key across compactions, and the overflow reason of a huge turn."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from contextos.cache import prompt_cache_key, render_anthropic, report, usage_from_anthropic
from contextos.engine.message_text import mended
from contextos.engine.session import Session, context_window
from contextos.llm.models import get_model
from contextos.llm.tokens import default_tokenizer
from contextos.memory import Memory
from contextos.store.sqlite import SQLiteStore
from contextos.testing.embedders import HashEmbedder
from contextos.testing.fake_anthropic import empty_content
from contextos.types import Message, ToolCall

SONNET = get_model("claude-sonnet-4-6")
GPT = get_model("gpt-4.1")


@pytest.fixture()
def session(tmp_path) -> Session:
    return Session(SQLiteStore(str(tmp_path / "s.db")), "chat-1", user_id="ana")


# -- blank text: the API refuses empty text blocks ------------------------------------


@pytest.mark.parametrize("question", ["", "   ", "\n\t"])
def test_an_empty_question_is_refused(question):
    with pytest.raises(ValueError, match="question is empty"):
        context_window(1000, tokenizer=default_tokenizer(), question=question, system="sys")


def test_a_session_window_refuses_a_blank_question_and_places_no_empty_block(session):
    session.add(Message("user", "hi"), Message("assistant", "hello"))
    for blank in ("   ", ""):  # after the assistant's turn: no call to answer
        with pytest.raises(ValueError, match="question is empty"):
            session.window(SONNET, blank, system="sys")
    # An agent's call after a tool result has no new question: nothing is placed.
    call = ToolCall("c1", "lookup", "{}")
    session.add(
        Message("assistant", "", tool_calls=(call,)),
        Message("tool", "found it", tool_call_id=call.id),
    )
    with pytest.raises(ValueError, match="question is empty"):
        session.window(SONNET, "", system="sys")  # blank is refused here too: None says it
    w = session.window(SONNET, None, system="sys")
    assert "question" not in {b.segment for b in w.blocks}
    body = render_anthropic(w, SONNET)
    assert empty_content(body) is None
    assert body["messages"][-1]["content"][0]["type"] == "tool_result"


def test_blank_rules_and_system_prompt_are_left_out(session):
    session.add(Message("user", "hi"), Message("assistant", "hello"))
    w = session.window(SONNET, "ok?", system="sys", rules=["", "  ", "Be brief."])
    body = render_anthropic(w, SONNET)
    assert empty_content(body) is None  # what the API checks: no empty text block
    assert [b["text"] for b in body["system"]] == ["sys", "Be brief."]
    blank = render_anthropic(session.window(SONNET, "ok?", system="  \n"), SONNET)
    assert "system" not in blank and empty_content(blank) is None


# -- invalid Unicode: a clear error before anything is written --------------------------


@pytest.mark.parametrize(
    ("message", "where"),
    [
        (Message("user", "x\ud800y"), "content"),
        (
            Message("assistant", "ok", tool_calls=(ToolCall("c1", "f", '{"q": "\udfff"}'),)),
            "tool_calls[0].arguments",
        ),
        (Message("user", "fine", metadata={"note": ["a", "b\ud83d"]}), "metadata"),
    ],
)
def test_a_lone_surrogate_is_refused_with_a_clear_error(session, message, where):
    session.add(Message("user", "before"))
    with pytest.raises(ValueError) as err:
        session.add(Message("user", "same call, valid"), message)
    assert not isinstance(err.value, UnicodeError)
    text = str(err.value)
    assert "not valid Unicode" in text and "lone surrogate" in text and where in text
    assert "message 1" in text  # which of the messages given
    # Nothing of that call was written; the log goes on.
    assert [t.message.content for t in session.turns()] == ["before"]
    session.add(Message("user", "after"))
    assert [t.message.content for t in session.turns()] == ["before", "after"]


def test_the_index_of_the_lone_surrogate_is_named(session):
    with pytest.raises(ValueError, match=r"at index 3\)"):
        session.add(Message("user", "abc\udc80"))


@pytest.mark.parametrize(
    ("text", "at"),
    [("a\ud800b", 1), ("ok \udfff", 3), ("\ud83d\ude00", 0), ("\U0001f600 fine", None)],
)
def test_session_add_and_the_http_api_refuse_the_same_text(session, text, at):
    # One rule (lone_surrogate_at), two reports: Session.add names the field and the
    # index, the HTTP API's validator answers 422. A surrogate pair written as two
    # code points is two lone surrogates to Python (JSON's escapes decode to one).
    pytest.importorskip("pydantic")
    from contextos.server.schemas import check_text as http_check_text

    if at is None:
        session.add(Message("user", text))
        assert http_check_text(text) == text
        return
    with pytest.raises(ValueError, match=rf"at index {at}\)"):
        session.add(Message("user", text))
    with pytest.raises(ValueError, match="no lone surrogates"):
        http_check_text(text)


@pytest.mark.parametrize(
    ("text", "valid"),
    [
        ("smile \ud83d", "smile \ufffd"),
        ("a\ud83d\ude00b", "a\U0001f600b"),  # a pair split across two deltas, joined
        ("\ude00\ud83d", "\ufffd\ufffd"),  # the wrong way round: two lone halves
        ("fine \U0001f600", "fine \U0001f600"),
    ],
)
def test_a_reply_is_mended_where_a_message_is_refused(session, text, valid):
    # What the app sends is refused (Session.add); what the model said is logged as it
    # came, its lone surrogates as U+FFFD (the wrapper's commit).
    reply = Message("assistant", text, metadata={"blocks": [{"text": text}]})
    fixed = mended(reply)
    assert fixed.content == valid and fixed.metadata == {"blocks": [{"text": valid}]}
    assert session.add(fixed)[0].message.content == valid
    assert (fixed is reply) == (text == valid)


# -- usage numbers ------------------------------------------------------------------------


def test_whole_number_floats_in_usage_count():
    u = usage_from_anthropic(
        {
            "input_tokens": 10.0,
            "output_tokens": 5.0,
            "cache_read_input_tokens": 200.0,
            "cache_creation_input_tokens": 40.0,
            "cache_creation": {
                "ephemeral_5m_input_tokens": 30.0,
                "ephemeral_1h_input_tokens": 10.0,
            },
        }
    )
    assert (u.input_tokens, u.output_tokens, u.cache_read_input_tokens) == (10, 5, 200)
    assert (u.cache_creation_input_tokens, u.cache_creation_5m, u.cache_creation_1h) == (40, 30, 10)
    odd = usage_from_anthropic({"input_tokens": 10.5, "output_tokens": True})
    assert (odd.input_tokens, odd.output_tokens) == (0, 0)  # not token counts


def test_an_empty_ttl_split_counts_every_write_as_five_minutes():
    u = usage_from_anthropic(
        {"input_tokens": 1, "cache_creation_input_tokens": 100, "cache_creation": {}}
    )
    assert (u.cache_creation_5m, u.cache_creation_1h) == (100, 0)
    rep = report([u], SONNET)
    assert rep.cache_write_5m_tokens == 100 and rep.cache_write_1h_tokens == 0


# -- the OpenAI routing key ---------------------------------------------------------------


def test_prompt_cache_key_survives_compactions(session):
    system = "You are helpful. " * 300
    keys, summaries = set(), set()
    for k in range(60):
        session.add(
            Message("user", f"On day {k} I went to Lisbon with Maria and saw museum {k}."),
            Message("assistant", f"Nice, museum {k}!"),
        )
        session.compact(800, "summarize")
        w = session.window(GPT, "q?", system=system, budget=20_000)
        keys.add(prompt_cache_key(w))
        summaries |= {b.text for b in w.blocks if b.segment == "summary"}
    assert len(summaries) > 1  # the summary (a system block) changed...
    assert len(keys) == 1  # ...the key of the unchanged instructions did not
    other = session.window(GPT, "q?", system=system + " Be brief.", budget=20_000)
    assert prompt_cache_key(other) not in keys
    with_rules = session.window(GPT, "q?", system=system, rules=["Cite."], budget=20_000)
    assert prompt_cache_key(with_rules) not in keys


# -- the overflow reason of a turn too big for the room -----------------------------------


def test_a_newest_turn_larger_than_the_room_is_named_in_the_overflow(session):
    session.add(
        Message("user", "hi " * 50),
        Message("assistant", "A" * 4000),
        Message("user", "ok"),
        Message("assistant", "B " * 3000),
    )
    w = session.window(SONNET, "short?", budget=1000, system="sys")
    # The newest reply goes only with the question it answers ("ok"): the unit named
    # is the two, counted together.
    opener, newest = (t.tokens for t in session.turns()[-2:])
    assert not [b for b in w.blocks if b.segment == "turns"]
    reasons = {o.reason for o in w.overflow if o.segment == "turns"}
    assert len(reasons) == 1
    (reason,) = reasons
    assert (
        "newest unit of segment 'turns' with the user turn that opened its exchange "
        f"({opener + newest} tokens)"
    ) in reason
    left = 1000 - w.total_tokens
    assert f"larger than the room left ({left} tokens)" in reason
    assert "no budget left" not in reason


@pytest.mark.parametrize(
    ("call", "where"),
    [
        (lambda m: m.search("where \ud800 sister", user_id="u"), "query"),
        (lambda m: m.add("caf\udce9 latte", user_id="u"), "message content"),
        (lambda m: m.add(["ok", "b\ud800"], user_id="u"), "message 1 content"),
        (lambda m: m.add("x", user_id="u", metadata={"k": ["v\udce9"]}), "metadata['k'][0]"),
        (lambda m: m.add("x", user_id="u\udce9"), "user_id"),
        (lambda m: m.search("x", user_id="u", agent_id="\ud800"), "agent_id"),
    ],
    ids=["query", "text", "second-message", "metadata", "user-id", "agent-id"],
)
def test_the_memory_api_refuses_a_lone_surrogate_in_its_own_words(
    tmp_path: Path, call: Any, where: str
) -> None:
    """HTTP (422) and the CLI refuse such input clearly; through the Python API a search
    raised a ``TypeError`` from inside the tokenizer library and an add a raw
    ``UnicodeEncodeError`` (a review). Nothing is written."""
    with Memory(tmp_path / "m.db", embedder=HashEmbedder()) as m:
        with pytest.raises(ValueError) as err:
            call(m)
        assert not isinstance(err.value, UnicodeError)
        assert "not valid Unicode" in str(err.value) and where in str(err.value)
        assert m.get_all(user_id="u") == []
