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

from contextos.cache import render_anthropic  # noqa: E402
from contextos.engine.session import Session  # noqa: E402
from contextos.llm.models import get_model  # noqa: E402
from contextos.memory import Memory  # noqa: E402
from contextos.providers import wrap  # noqa: E402
from contextos.store import open_store  # noqa: E402
from contextos.testing.embedders import HashEmbedder  # noqa: E402
from contextos.testing.fake_anthropic import FakeAnthropic, empty_content  # noqa: E402
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
    try:
        client = wrap(
            anthropic.Anthropic(base_url=fake.base_url, api_key="k", max_retries=0),
            memory=memory,
            session="chat",
            user_id="ana",
        )
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
