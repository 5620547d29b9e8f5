"""``Session.window`` and ``context_window`` refuse a ``system``, ``rules`` or ``tools``
argument of the wrong shape with ``TypeError``/``ValueError`` naming what to pass.

A review: ``rules="Be brief."`` went out as eight one-letter system blocks (the
instruction lost, no error), a system prompt given as content blocks or None failed
with ``AttributeError``, and a tool in Chat Completions' ``{"type": "function", ...}``
shape got through assembly and failed in the renderer with a bare ``KeyError``. The
right shapes are sent by the real SDK to the loopback fake, and the body it received
is checked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from contextos.cache import render_anthropic
from contextos.cache.render import default_max_tokens, render_openai
from contextos.engine.session import Session, context_window
from contextos.engine.window import tool_item
from contextos.llm.models import get_model
from contextos.llm.tokens import default_tokenizer
from contextos.store.sqlite import SQLiteStore
from contextos.types import Message
from sdk_support import sent_by_sdk

pytest.importorskip("anthropic")
pytest.importorskip("openai")

SONNET = get_model("claude-sonnet-4-6")
GPT = get_model("gpt-4.1")
TOK = default_tokenizer()
STOCK = {
    "name": "stock_lookup",
    "description": "How many of a part are in stock.",
    "parameters": {"type": "object", "properties": {"part": {"type": "string"}}},
}
OPENAI_STOCK = {"type": "function", "function": STOCK}


@pytest.fixture
def session(tmp_path: Path) -> Any:
    store = SQLiteStore(tmp_path / "s.db")
    s = Session(store, "chat-1", user_id="ana", tokenizer=TOK)
    s.add(Message("user", "Do you sell chains?"), Message("assistant", "We do."))
    yield s
    store.close()


def test_a_list_of_rules_goes_out_whole_and_one_string_is_refused(session: Session) -> None:
    window = session.window(
        SONNET, "Is the chain in stock?", system="Be kind.", rules=["Be brief."]
    )
    body = sent_by_sdk("anthropic", render_anthropic(window, SONNET, max_tokens=64))
    assert [b["text"] for b in body["system"]] == ["Be kind.", "Be brief."]
    with pytest.raises(TypeError, match=r"rules must be a sequence of strings.*rules=\[text\]"):
        session.window(SONNET, "Is the chain in stock?", rules="Be brief.")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="each rule must be a string, not dict"):
        session.window(SONNET, "q?", rules=[{"type": "text", "text": "x"}])  # type: ignore[list-item]
    with pytest.raises(TypeError, match=r"stored_rules must be a sequence of strings"):
        session.window(SONNET, "q?", stored_rules="Be brief.")  # type: ignore[arg-type]


def test_stored_rules_are_placed_after_the_callers_each_once(session: Session) -> None:
    """A stored rule the caller gives too, or given twice (a Session on a Memory pins
    its own beside ``session_recall``'s), is placed once (diff review s57)."""
    stored = ["Answer in French.", "Be brief.", "Answer in French."]
    window = session.window(SONNET, "q?", rules=["Be brief."], stored_rules=stored)
    rules = [b.text for b in window.blocks if b.segment == "rules"]
    assert rules == ["Be brief.", "Answer in French."]


@pytest.mark.parametrize("system", [None, [{"type": "text", "text": "Be kind."}]])
def test_a_system_prompt_that_is_not_one_string_is_refused(session: Session, system: Any) -> None:
    with pytest.raises(TypeError, match=r"system must be one string.*system=\"\""):
        session.window(SONNET, "Is the chain in stock?", system=system)
    with pytest.raises(TypeError, match="system must be one string"):
        context_window(2000, tokenizer=TOK, question="q?", system=system)


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_a_neutral_tool_goes_out_and_a_chat_completions_one_is_refused(
    session: Session, provider: str
) -> None:
    model = SONNET if provider == "anthropic" else GPT
    window = session.window(model, "Is the chain in stock?", tools=[STOCK])
    if provider == "anthropic":
        body = sent_by_sdk(
            provider, render_anthropic(window, model, max_tokens=default_max_tokens(model))
        )
        assert [t["name"] for t in body["tools"]] == ["stock_lookup"]
    else:
        body = sent_by_sdk(provider, render_openai(window, model))
        assert body["tools"] == [OPENAI_STOCK]
    neutral = r'neutral shape is \{"name", "description", "input_schema" \| "parameters"\}'
    with pytest.raises(ValueError, match=neutral + r'.*pass its "function" mapping'):
        session.window(model, "Is the chain in stock?", tools=[OPENAI_STOCK])
    with pytest.raises(ValueError, match=neutral):
        context_window(2000, tokenizer=TOK, question="q?", tools=[{"description": "no name"}])


def test_tools_that_are_not_a_sequence_of_schemas_are_refused(session: Session) -> None:
    with pytest.raises(TypeError, match="tools must be a sequence of tool schemas, not dict"):
        session.window(SONNET, "q?", tools=STOCK)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="a tool schema must be a mapping, not str"):
        tool_item("stock_lookup", TOK)  # type: ignore[arg-type]
