"""A model reply of whitespace alone, logged, must not break the session's later calls.

The Messages API refuses a text block of whitespace alone ("text content blocks must
contain non-whitespace text"); the loopback fake refuses it as the API does. A wrapped
client logged such a reply and sent it back on every later call, and each failed with
a 400 until compaction rotated the turn out. The real ``anthropic`` SDK client against
the fake, a real SQLite memory file.
"""

from __future__ import annotations

from pathlib import Path

import pytest

anthropic = pytest.importorskip("anthropic")

from contextos.cache import cached_prefix, final_parts, render_anthropic, wire_blocks  # noqa: E402
from contextos.cache.render import OPENING_TEXT  # noqa: E402
from contextos.engine.session import Session  # noqa: E402
from contextos.llm.models import get_model  # noqa: E402
from contextos.memory import Memory  # noqa: E402
from contextos.providers import wrap  # noqa: E402
from contextos.store import open_store  # noqa: E402
from contextos.testing.embedders import HashEmbedder  # noqa: E402
from contextos.testing.fake_anthropic import (  # noqa: E402
    FakeAnthropic,
    assistant_first,
    empty_content,
)
from contextos.types import Message  # noqa: E402

MODEL = "claude-sonnet-4-6"


def test_the_fake_refuses_a_blank_text_block_as_the_api_does() -> None:
    body = {"messages": [{"role": "user", "content": [{"type": "text", "text": " \n"}]}]}
    assert empty_content(body) == (
        "messages.0: text content blocks must contain non-whitespace text"
    )


def test_calls_after_a_whitespace_reply_still_succeed(tmp_path: Path) -> None:
    replies = iter(["Hello!", "\n\n", "fine", "still here"])
    fake = FakeAnthropic(reply=lambda body: next(replies)).start()
    memory = Memory(tmp_path / "m.db", embedder=HashEmbedder())
    raw = anthropic.Anthropic(base_url=fake.base_url, api_key="k", max_retries=0)
    try:
        client = wrap(raw, memory=memory, session="chat", user_id="ana")
        said = []
        for question in ["hi", "say nothing", "are you there?", "and now?"]:
            reply = client.messages.create(
                model=MODEL, max_tokens=64, messages=[{"role": "user", "content": question}]
            )
            said.append(reply.content[0].text)
        assert said == ["Hello!", "\n\n", "fine", "still here"]
        last = fake.messages_requests()[-1].json()["messages"]
        texts = [b["text"] for m in last for b in m["content"] if b.get("type") == "text"]
        assert "say nothing" in texts and all(t.strip() for t in texts)
    finally:
        raw.close()
        memory.close()
        fake.stop()


def test_a_breakpoint_after_a_blank_turn_goes_on_the_turn_before_it(tmp_path: Path) -> None:
    """The blank turn is not sent, so the prefix its breakpoint closed ends one turn
    earlier: the request keeps as many breakpoints as the window planned."""
    store = open_store(tmp_path / "s.db")
    try:
        session = Session(store, "chat", user_id="ana")
        for i in range(40):
            session.add(Message("user", f"question {i} " + "word " * 60))
            session.add(Message("assistant", "   " if i == 39 else f"answer {i} " + "word " * 60))
        model = get_model(MODEL)
        window = session.window(model, "and now?", system="Be brief. " * 400)
        body = render_anthropic(window, model)
        marks = [
            block
            for part in (body.get("system", []), *(m["content"] for m in body["messages"]))
            for block in part
            if "cache_control" in block
        ]
        assert window.breakpoints and len(marks) == len(window.breakpoints)
        assert all(m["content"] for m in body["messages"])  # the blank reply left out
        kept = render_anthropic(window, model, keep_empty=True)["messages"]
        blank = [i for i, m in enumerate(kept) if not m["content"]]
        assert blank, "kept in place as a turn with nothing to send"
        assert "cache_control" in kept[blank[0] - 1]["content"][-1]
    finally:
        store.close()


def test_the_fake_refuses_a_first_message_of_the_assistant_as_the_api_does() -> None:
    body = {"messages": [{"role": "assistant", "content": "Ahoy!"}]}
    assert assistant_first(body) == 'messages: first message must use the "user" role'
    assert assistant_first({"messages": [{"role": "user", "content": "hi"}]}) is None


def test_a_chat_that_opens_with_the_assistants_greeting_is_answered(tmp_path: Path) -> None:
    """An app that opens its chat with a greeting sends it first. The window kept it as
    the history's first turn and the request opened on the assistant, which the API
    refuses: every call of the session failed. The greeting stays, after a short user
    message."""
    fake = FakeAnthropic(reply=lambda body: "Arr.").start()
    memory = Memory(tmp_path / "m.db", embedder=HashEmbedder())
    raw = anthropic.Anthropic(base_url=fake.base_url, api_key="k", max_retries=0)
    try:
        client = wrap(
            raw,
            memory=memory,
            session="chat",
            user_id="ana",
        )
        chat: list[dict[str, str]] = [{"role": "assistant", "content": "Ahoy! I speak pirate."}]
        for question in ["hi", "who are you?"]:
            chat.append({"role": "user", "content": question})
            reply = client.messages.create(model=MODEL, max_tokens=64, messages=chat)
            chat.append({"role": "assistant", "content": reply.content[0].text})
        sent = [r.json()["messages"] for r in fake.messages_requests()]
        assert all(assistant_first({"messages": m}) is None for m in sent)
        texts = [b["text"] for m in sent[-1] for b in m["content"] if b.get("type") == "text"]
        assert texts[:2] == [OPENING_TEXT, "Ahoy! I speak pirate."]
    finally:
        raw.close()
        memory.close()
        fake.stop()


def test_a_blank_user_turn_opening_the_history_keeps_the_request_and_its_prefix(
    tmp_path: Path,
) -> None:
    """The cut falls on a blank user turn: it is left out, and the history opened on
    the reply. The request now opens on the user, and the prefix cached by one call is
    the start of the next call's bytes."""
    store = open_store(tmp_path / "s.db")
    try:
        session = Session(store, "chat", user_id="ana")
        session.add(Message("user", "\r"))
        session.add(Message("assistant", "You sent nothing; here is a long answer. " * 200))
        for i in range(6):
            session.add(Message("user", f"question {i} " + "word " * 300))
            session.add(Message("assistant", f"answer {i} " + "word " * 300))
        model = get_model(MODEL)
        system = "Be brief. " * 400
        before = session.window(model, "and now?", system=system)
        body = render_anthropic(before, model)
        assert body["messages"][0]["content"][0]["text"] == OPENING_TEXT
        assert body["messages"][1]["role"] == "assistant"
        assert assistant_first(body) is None and empty_content(body) is None
        prefix = cached_prefix(body, before, "anthropic")
        session.add(Message("user", "and now?"))
        session.add(Message("assistant", "now this"))
        after = session.window(model, "and then?", system=system)
        stream = b"".join(
            wire_blocks(render_anthropic(after, model), "anthropic", final_parts=final_parts(after))
        )
        # the prefix ends at the last marked turn (the opening counted before it)
        turns = body["messages"][:-1]
        marked = [i for i, m in enumerate(turns) if "cache_control" in m["content"][-1]]
        assert marked, "a breakpoint on a turn"
        blocks = wire_blocks(body, "anthropic", final_parts=final_parts(before))
        assert prefix == b"".join(blocks[: len(body["system"]) + marked[-1] + 1])
        assert stream.startswith(prefix)
    finally:
        store.close()


def test_the_exact_counter_counts_an_assistant_turn_without_the_opening(tmp_path: Path) -> None:
    """A turn is counted alone (``Session.add``): an assistant turn is a request the API
    counts only behind an opening user message, which is not the turn's. Counted with
    it, each assistant turn was stored larger by the opening, and windows left out
    turns they had room for (a review)."""
    from contextos.providers import AnthropicTokenCounter

    fake = FakeAnthropic(reply=lambda body: "ok").start()
    raw = anthropic.Anthropic(base_url=fake.base_url, api_key="k", max_retries=0)
    store = open_store(tmp_path / "s.db")
    try:
        counter = AnthropicTokenCounter(raw, model=MODEL)
        text = "The weather in Lisbon is sunny today, about twenty degrees."
        said = counter.count_messages([Message("user", text)])
        assert counter.count_messages([Message("assistant", text)]) == said
        session = Session(store, "chat", user_id="ana", tokenizer=counter)
        turns = session.add(Message("user", text), Message("assistant", text))
        assert turns[0].tokens == turns[1].tokens
    finally:
        store.close()
        raw.close()
        fake.stop()
