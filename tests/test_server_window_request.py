"""The HTTP window with instructions, cache breakpoints and a ready provider request.

``POST /v1/sessions/{id}/window`` took only a question, a budget, a limit and a model,
so a client in another language could not have its system prompt, rules or tools
placed (and cached) with the session, nor get the request the library would send. A
real server on loopback, a real SQLite file; the bodies compared with what the library
renders for the same window.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from contextos.cache.render import render_anthropic, render_openai
from contextos.engine.session import Session
from contextos.llm.models import get_model
from contextos.store import open_store
from ui_support import LiveServer, auth, live_server

MODEL = "claude-sonnet-4-6"
#: Long enough to be cached on its own (over the model's minimum cacheable prefix).
SYSTEM = "You are the support assistant of a bicycle shop. " * 200
RULES = ["Answer in two sentences at most.", "Never promise a delivery date.", "  "]
TOOLS = [
    {
        "name": "stock_lookup",
        "description": "How many of a part are in stock.",
        "input_schema": {
            "type": "object",
            "properties": {"part": {"type": "string"}},
            "required": ["part"],
        },
    }
]


@pytest.fixture
def server(tmp_path: Path) -> Any:
    with live_server(tmp_path / "w.db") as live:
        live.key = live.issue_key("acme")
        said = [
            {"role": ("user", "assistant")[i % 2], "content": f"turn {i} about a bike chain"}
            for i in range(40)
        ]
        live.turns(live.key, "chat", said)
        yield live


def _window(server: LiveServer, **body: Any) -> httpx.Response:
    body = {"question": "is the chain in stock?", "token_budget": 8000, **body}
    return server.http.post("/v1/sessions/chat/window", json=body, headers=auth(server.key))


def _library_window(db: Path, **kw: Any) -> Any:
    """The window the library builds for the same log and instructions (no memories)."""
    store = open_store(db)
    try:
        s = Session(store, "chat", tenant="acme")
        return s.window(get_model(MODEL), "is the chain in stock?", budget=8000, **kw)
    finally:
        store.close()


def test_anthropic_request_holds_the_instructions_with_cache_control_on_the_breakpoints(
    server: LiveServer, tmp_path: Path
) -> None:
    resp = _window(server, system=SYSTEM, rules=RULES, tools=TOOLS, format="anthropic")
    assert resp.status_code == 200, resp.text
    answer = resp.json()
    body = answer["request"]
    assert body["model"] == MODEL
    assert body["max_tokens"] == min(get_model(MODEL).default_output_reserve(), 16_384)
    texts = [b["text"] for b in body["system"]]
    assert texts[:3] == [SYSTEM, RULES[0], RULES[1]]  # the blank rule is left out
    assert body["tools"] == [TOOLS[0]]
    # Planned breakpoints: the instructions' (1h) among them, each a cache_control.
    points = answer["breakpoints"]
    assert points and points[0]["ttl"] == "1h" and points[0]["segment"] in ("system", "rules")
    assert all(p["prefix_tokens"] >= get_model(MODEL).min_cache_tokens for p in points)
    blocks = answer["blocks"]
    for p in points:
        assert blocks[p["after_block"]]["segment"] == p["segment"]
    marked = [b for b in body["system"] + body["tools"] if "cache_control" in b]
    marked += [c for m in body["messages"] for c in m["content"] if "cache_control" in c]
    assert len(marked) == len(points)
    assert {m["cache_control"]["ttl"] for m in marked} == {p["ttl"] for p in points}
    # What the library renders for this window, byte for byte.
    lib = _library_window(tmp_path / "w.db", system=SYSTEM, rules=RULES, tools=TOOLS)
    assert body == render_anthropic(lib, get_model(MODEL), max_tokens=body["max_tokens"])


def test_openai_request_has_its_messages_and_a_prompt_cache_key(
    server: LiveServer, tmp_path: Path
) -> None:
    resp = _window(server, system=SYSTEM, rules=RULES, tools=TOOLS, format="openai")
    assert resp.status_code == 200, resp.text
    body = resp.json()["request"]
    assert body["prompt_cache_key"].startswith("ctxos-")
    assert body["messages"][0] == {"role": "system", "content": SYSTEM}
    assert body["tools"][0]["function"]["name"] == "stock_lookup"
    assert body["messages"][-1]["role"] == "user"
    lib = _library_window(tmp_path / "w.db", system=SYSTEM, rules=RULES, tools=TOOLS)
    assert body == {**render_openai(lib, get_model(MODEL)), "max_completion_tokens": 16_384}


def test_without_format_there_is_no_request_and_the_window_is_as_before(
    server: LiveServer,
) -> None:
    plain = _window(server).json()
    assert plain["request"] is None
    assert not any(b["segment"] in ("system", "rules", "tools") for b in plain["blocks"])
    blank = _window(server, system="   ", rules=["", " \n"]).json()
    assert blank["blocks"] == plain["blocks"]  # blank instructions are left out
    instructed = _window(server, system=SYSTEM).json()
    assert instructed["blocks"][0] == {
        "segment": "system",
        "role": "system",
        "text": SYSTEM,
        "tokens": instructed["blocks"][0]["tokens"],
    }
    assert instructed["breakpoints"][0]["segment"] == "system"


def _deep(levels: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"x": schema}}
    return schema


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"rules": ["be brief"] * 65}, "body.rules"),
        ({"rules": ["x" * 100_001]}, "body.rules.0"),
        ({"rules": "be brief"}, "body.rules"),
        ({"system": "x" * 100_001}, "body.system"),
        ({"system": "nul\x00"}, "body.system"),
        ({"tools": [{"name": "t", "input_schema": _deep(20)}]}, "body.tools.0"),
        ({"tools": [{"description": "no name", "input_schema": {}}]}, "body.tools.0.name"),
        ({"tools": [{"name": "has space"}]}, "body.tools.0.name"),
        ({"tools": [{"name": 7}]}, "body.tools.0.name"),
        ({"tools": [{"name": "t", "input_schema": "object"}]}, "body.tools.0.input_schema"),
        ({"tools": [{"name": "t", "description": None}]}, "body.tools.0.description"),
        (
            {"tools": [{"name": "t", "input_schema": {"type": "object", "d": "y" * 70_000}}]},
            "body.tools.0",
        ),
        ({"tools": [{"name": f"t{i}"} for i in range(65)]}, "body.tools"),
        ({"tools": [{"name": "t"}, {"name": "t"}]}, "body.tools"),
        ({"format": "gemini"}, "body.format"),
        (
            {"tools": [{"name": "t", "input_schema": {"type": "array"}}]},
            "body.tools.0.input_schema",
        ),
        ({"tools": [{"name": "t", "parameters": {"properties": {}}}]}, "body.tools.0.parameters"),
        ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "body.tools.0"),
        ({"max_tokens": 0}, "body.max_tokens"),
    ],
)
def test_hostile_instructions_are_a_422_naming_the_field(
    server: LiveServer, body: dict[str, Any], field: str
) -> None:
    resp = _window(server, **body)
    assert resp.status_code == 422, resp.text
    message = resp.json()["error"]["message"]
    assert message.startswith(f"{field}:"), message


def test_a_tool_with_nan_is_a_422(server: LiveServer) -> None:
    raw = '{"question": "q?", "tools": [{"name": "t", "examples": [NaN]}]}'
    resp = server.http.post(
        "/v1/sessions/chat/window", content=raw.encode(), headers=auth(server.key)
    )
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["message"].startswith("body.tools.0:"), resp.text


def test_a_tool_nested_to_the_limit_is_taken(server: LiveServer) -> None:
    resp = _window(server, tools=[{"name": "t", "input_schema": _deep(7)}], format="openai")
    assert resp.status_code == 200, resp.text
    assert resp.json()["request"]["tools"][0]["function"]["parameters"] == _deep(7)


def test_the_ready_requests_go_through_the_official_sdks(server: LiveServer) -> None:
    """The request as answered, sent as it is: the default max_tokens of a 1M-context
    model (its output reserve, 62,500) made the anthropic SDK refuse it ("Streaming is
    required for operations that may take longer than 10 minutes"), and a tool given
    without a schema rendered as ``input_schema: {}``, which the API refuses."""
    anthropic = pytest.importorskip("anthropic")
    openai = pytest.importorskip("openai")
    from contextos.testing.fake_anthropic import FakeAnthropic
    from contextos.testing.fake_openai import FakeOpenAI

    tools = [*TOOLS, {"name": "ping", "description": "Takes nothing."}]
    first = _window(server, system=SYSTEM, tools=tools, format="anthropic").json()["request"]
    assert first["tools"][1]["input_schema"] == {"type": "object", "properties": {}}
    with (
        FakeAnthropic(reply=lambda body: "in stock") as fake,
        anthropic.Anthropic(base_url=fake.base_url, api_key="k", max_retries=0) as client,
    ):
        assert client.messages.create(**first).content[0].text == "in stock"
    chosen = _window(server, format="openai", max_tokens=300).json()["request"]
    assert chosen["max_completion_tokens"] == 300
    with (
        FakeOpenAI(reply=lambda body: "in stock") as fake_oa,
        openai.OpenAI(base_url=fake_oa.base_url, api_key="k", max_retries=0) as client_oa,
    ):
        reply = client_oa.chat.completions.create(**chosen)
        assert reply.choices[0].message.content == "in stock"
    asked = _window(server, format="anthropic", max_tokens=40_000).json()["request"]
    assert asked["max_tokens"] == 40_000  # as asked: the client streams it
