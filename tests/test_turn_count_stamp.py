"""A turn's stored token count is reused only by a reader that counts the same way.

Each logged turn's count was trusted by every Session that read it, whatever counted
it: a log written with one tokenizer (another counter, an older contextos) and
windowed with another reported a window under its budget that the reader's own
tokenizer put at three times over. Now the count is stored with a stamp of what made
it (tokenizer and counting rule, in the turn's metadata JSON: no schema change), and
a reader with another stamp, or none, counts the turn again. Both stores, real files.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from contextos.engine.session import COUNTED_KEY, Session
from contextos.llm.models import get_model
from contextos.llm.tokens import (
    TOKENS_PER_REPLY,
    CharEstimateTokenizer,
    counted_with,
    default_tokenizer,
)
from contextos.store.base import Store
from contextos.types import Message, Scope, ToolCall

TEXT = "日本語のテキストです。" * 20  # chars/4 and cl100k disagree about it threefold


def _own(message: Message) -> int:
    return default_tokenizer().count_messages([message]) - TOKENS_PER_REPLY


def test_a_log_counted_by_another_tokenizer_is_counted_again(store: Store) -> None:
    writer = Session(store, "s", user_id="ana", tokenizer=CharEstimateTokenizer())
    roles: list[Any] = ["user", "assistant"]
    writer.add(*[Message(roles[i % 2], TEXT) for i in range(100)])
    tok = default_tokenizer()
    reader = Session(store, "s", user_id="ana", tokenizer=tok)
    turns = reader.turns()
    assert [t.tokens for t in turns] == [_own(t.message) for t in turns]
    assert turns[0].tokens > 2 * writer.turns()[0].tokens  # the writer's count, kept for it
    window = reader.window(get_model("gpt-4o"), "要約してください", budget=4000)
    recount = TOKENS_PER_REPLY + sum(
        _own(b.message) if b.message is not None else tok.count(b.text) + 3 for b in window.blocks
    )
    assert window.total_tokens == recount <= window.budget


def test_a_count_stamped_by_the_readers_own_tokenizer_is_reused(store: Store) -> None:
    scope = Scope(tenant="default", user_id="ana", session_id="s")
    mine = {COUNTED_KEY: {"with": counted_with(default_tokenizer())}}
    other = {COUNTED_KEY: {"with": counted_with(CharEstimateTokenizer())}}
    store.append_turns(
        scope,
        [Message("user", "hello", metadata=mine), Message("user", "hello", metadata=other)],
        [777, 777],
    )
    store.append_turns(scope, [Message("user", "hello")], [777])  # an older contextos: no stamp
    turns = Session(store, "s", user_id="ana").turns()
    assert [t.tokens for t in turns] == [777, _own(turns[1].message), _own(turns[2].message)]
    assert all(t.message.metadata == {} for t in turns)  # the stamp is the log's, not the turn's


def test_the_stamp_is_stored_and_the_caller_gets_its_own_message_back(store: Store) -> None:
    session = Session(store, "s", user_id="ana")
    said = Message("user", "hi there", metadata={"tag": 1})
    (logged,) = session.add(said)
    assert logged.message == said
    (raw,) = store.turns(session.scope)
    assert raw.message.metadata == {"tag": 1, COUNTED_KEY: {"with": session._counter}}
    assert session.turns()[0].message == said
    # another tokenizer reading the same file counts it its own way, and says so
    other = Session(store, "s", user_id="ana", tokenizer=CharEstimateTokenizer())
    assert other.turns()[0].tokens == CharEstimateTokenizer().count_messages([said]) - 3


def test_a_turn_read_back_keeps_every_field_but_the_stamp(store: Store) -> None:
    """The stamp is taken off the metadata; every other field of the turn stays."""
    session = Session(store, "s", user_id="ana", agent_id="bot")
    call = ToolCall("c1", "lookup", '{"q": "x"}')
    said = [
        Message("assistant", "", tool_calls=(call,), metadata={"tag": [1, 2]}),
        Message("tool", "found", name="lookup", tool_call_id="c1"),
    ]
    session.add(*said)
    raw = store.turns(session.scope)
    read = Session(store, "s", user_id="ana", agent_id="bot").turns()
    assert [t.message for t in read] == said
    for got, stored in zip(read, raw, strict=True):
        assert got == replace(
            stored, message=replace(stored.message, metadata=got.message.metadata)
        )
        assert COUNTED_KEY in stored.message.metadata and COUNTED_KEY not in got.message.metadata
        assert (
            got.user_id == "ana" and got.agent_id == "bot" and got.created_at == stored.created_at
        )
