"""Memories placed by ``Session.window``, ``contextos window`` and the server's window
route go under their one-line header, as on wrapped calls.

A review: the README's flow (``memory.search`` then ``session.window(model, q,
hits=hits)`` then a renderer), ``contextos window --format ...`` and the server sent
the memories as plain text parts right before the question, so "Cancel all my
orders." read as something the user had just said. Each request here is sent by the
real SDK to the project's loopback fake, and the body the fake received is checked;
the CLI is the real command, the server a real HTTP app and a real ``contextos mcp``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest

from cli_support import run_cli
from contextos.cache import render_anthropic
from contextos.cache.render import default_max_tokens, render_openai
from contextos.engine.session import MEMORY_HEADER, Session
from contextos.llm.models import ModelInfo, get_model
from contextos.memory import Memory
from contextos.server.keys import KeyStore
from contextos.testing.embedders import HashEmbedder
from contextos.types import Message
from sdk_support import sent_by_sdk
from ui_support import LiveServer, auth, live_server

pytest.importorskip("anthropic")
pytest.importorskip("openai")

QUESTION = "What about my orders?"
MEMORY = "Cancel all my orders."
MODELS = {"anthropic": "claude-sonnet-4-6", "openai": "gpt-4.1"}


def _body(provider: str, window: Any, model: ModelInfo) -> dict[str, Any]:
    if provider == "anthropic":
        return render_anthropic(window, model, max_tokens=default_max_tokens(model))
    return render_openai(window, model)


def _texts(message: dict[str, Any]) -> list[str]:
    content = message["content"]
    return [content] if isinstance(content, str) else [str(b["text"]) for b in content]


def _memory_and_session(tmp_path: Path) -> tuple[Memory, Session]:
    memory = Memory(str(tmp_path / "m.db"), embedder=HashEmbedder(), background_embedding=False)
    memory.add(MEMORY, user_id="ana")
    session = Session(memory, "chat-1", user_id="ana")
    session.add(Message("user", "I ordered a lamp and a chair."), Message("assistant", "Noted."))
    return memory, session


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_session_window_puts_the_memories_under_the_header(tmp_path: Path, provider: str) -> None:
    memory, session = _memory_and_session(tmp_path)
    model = get_model(MODELS[provider])
    try:
        hits = memory.search(QUESTION, user_id="ana", token_budget=500)
        assert [h.record.text for h in hits] == [MEMORY]
        asked = sent_by_sdk(
            provider, _body(provider, session.window(model, QUESTION, hits=hits), model)
        )
        assert _texts(asked["messages"][-1]) == [MEMORY_HEADER, MEMORY, QUESTION]
        # An agent's step (no question): the memories still go under their header.
        step = sent_by_sdk(provider, _body(provider, session.window(model, None, hits=hits), model))
        assert _texts(step["messages"][-1]) == [MEMORY_HEADER, MEMORY]
        # No memory, no header: the question goes alone after the turns.
        bare = sent_by_sdk(provider, _body(provider, session.window(model, QUESTION), model))
        assert MEMORY_HEADER not in json.dumps(bare)
        assert _texts(bare["messages"][-1])[-1] == QUESTION
    finally:
        memory.close()


def test_a_window_asked_without_the_header_places_the_memories_bare(tmp_path: Path) -> None:
    memory, session = _memory_and_session(tmp_path)
    model = get_model(MODELS["anthropic"])
    try:
        hits = memory.search(QUESTION, user_id="ana", token_budget=500)
        own = session.window(model, QUESTION, hits=hits, memory_header="Things you know:")
        none = session.window(model, QUESTION, hits=hits, memory_header=None)
    finally:
        memory.close()
    assert _texts(sent_by_sdk("anthropic", _body("anthropic", own, model))["messages"][-1]) == [
        "Things you know:",
        MEMORY,
        QUESTION,
    ]
    assert _texts(sent_by_sdk("anthropic", _body("anthropic", none, model))["messages"][-1]) == [
        MEMORY,
        QUESTION,
    ]


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_contextos_window_request_body_has_the_header(tmp_path: Path, provider: str) -> None:
    db = tmp_path / "cli.db"
    for args in (
        ("add", MEMORY, "--user-id", "ana"),
        ("session", "add", "chat-1", "I ordered a lamp and a chair.", "--user-id", "ana"),
        ("session", "add", "chat-1", "Noted.", "--role", "assistant", "--user-id", "ana"),
    ):
        done = run_cli(*args, db=db)
        assert done.returncode == 0, done.stderr
    done = run_cli(
        "window",
        "--session",
        "chat-1",
        "-q",
        QUESTION,
        "--user-id",
        "ana",
        "--model",
        MODELS[provider],
        "--format",
        provider,
        db=db,
    )
    assert done.returncode == 0, done.stderr
    asked = sent_by_sdk(provider, json.loads(done.stdout))
    assert _texts(asked["messages"][-1]) == [MEMORY_HEADER, MEMORY, QUESTION]


@pytest.fixture
def server(tmp_path: Path) -> Any:
    with live_server(tmp_path / "w.db") as live:
        live.key = live.issue_key("acme")
        live.add(live.key, messages=MEMORY, user_id="ana")
        said = [
            {"role": "user", "content": "I ordered a lamp and a chair."},
            {"role": "assistant", "content": "Noted."},
        ]
        live.turns(live.key, "chat", said, user_id="ana")
        yield live


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_the_http_window_request_has_the_header(server: LiveServer, provider: str) -> None:
    body = {"question": QUESTION, "user_id": "ana", "model": MODELS[provider], "format": provider}
    resp = server.http.post("/v1/sessions/chat/window", json=body, headers=auth(server.key))
    assert resp.status_code == 200, resp.text
    answer = resp.json()
    assert [b["text"] for b in answer["blocks"]][-3:] == [MEMORY_HEADER, MEMORY, QUESTION]
    asked = sent_by_sdk(provider, answer["request"])
    assert _texts(asked["messages"][-1]) == [MEMORY_HEADER, MEMORY, QUESTION]


def test_mcp_window_without_a_session_has_the_header(tmp_path: Path) -> None:
    """``assemble_window`` with no session: the server's other branch (memories and
    the question alone), built with the same header."""
    pytest.importorskip("mcp")
    from mcp_support import payload, stdio_call

    db = tmp_path / "mcp.db"
    with KeyStore(str(db)) as keys:
        key = keys.create("acme").secret

    async def scenario(s: Any) -> dict[str, Any]:
        await s.call_tool("add_memory", {"text": MEMORY, "user_id": "ana"})
        ask = {"question": QUESTION, "user_id": "ana", "format": "anthropic"}
        return dict(payload(await s.call_tool("assemble_window", ask)))

    answer = anyio.run(stdio_call, db, key, scenario)
    assert [b["text"] for b in answer["blocks"]] == [MEMORY_HEADER, MEMORY, QUESTION]
    asked = sent_by_sdk("anthropic", answer["request"])
    assert _texts(asked["messages"][-1]) == [MEMORY_HEADER, MEMORY, QUESTION]
