"""Token counting and the model registry, as a review found them (s39, ``registry``):

1. ``contextos count`` reads a message file as the wrappers read it (the providers'
   parsers): tool calls and results, images, a request body's ``system`` and ``tools``
   are counted, and an OpenAI assistant tool call with ``"content": null`` is taken.
2. ``register_model`` of a name that is a built-in alias (a dated snapshot, ``haiku``)
   wins, in ``get_model`` and in ``wrap()``.
3. ``render_anthropic`` and ``contextos window --format anthropic`` give a 1M-window
   Claude model a ``max_tokens`` the official SDK sends without streaming.
4. The "no room" ``BudgetError`` of an unknown model says its window is assumed, and
   names the fixes that work.

In the shapes they are used: the real CLI in a subprocess, the real ``anthropic`` and
``openai`` SDK clients against the loopback fakes.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from cli_support import run_cli
from contextos.cache import render_anthropic
from contextos.engine.session import Session
from contextos.engine.window import canonical_json
from contextos.errors import BudgetError
from contextos.llm import models
from contextos.llm.media_tokens import anthropic_image_tokens, openai_image_tokens
from contextos.llm.models import ModelInfo, Prices, get_model, register_model
from contextos.llm.tokens import TOKENS_PER_MESSAGE, default_tokenizer
from contextos.memory import Memory
from contextos.providers import wrap
from contextos.store import open_store
from contextos.testing.embedders import HashEmbedder
from contextos.types import Message
from test_media_tokens import png

anthropic_sdk = pytest.importorskip("anthropic")
openai_sdk = pytest.importorskip("openai")

from contextos.testing.fake_anthropic import FakeAnthropic  # noqa: E402
from contextos.testing.fake_openai import FakeOpenAI  # noqa: E402

LOG = " ".join(f"{i:04d} disk /dev/sda1 at 71% ok" for i in range(400))
IMAGE = base64.b64encode(png(1092, 1092)).decode()
SYSTEM = "You are the on-call assistant. Answer from the logs, cite the line. " * 80
ARGUMENTS = {"path": "/var/log/app.log", "since": "2026-01-01T00:00:00Z"}
SCHEMA = {"type": "object", "properties": {"path": {"type": "string"}}}


@pytest.fixture
def registry() -> Iterator[None]:
    """The model registry as it was, after the test (a registration lasts the process)."""
    saved = dict(models.MODELS), dict(models.ALIASES)
    try:
        yield
    finally:
        models.MODELS.clear()
        models.MODELS.update(saved[0])
        models.ALIASES.clear()
        models.ALIASES.update(saved[1])


@pytest.fixture
def mem(tmp_path: Path) -> Iterator[Memory]:
    with Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as m:
        yield m


def _count(tmp_path: Path, content: Any, model: str) -> dict[str, Any]:
    """``contextos count FILE -m MODEL --json`` of ``content`` written as a JSON file."""
    file = tmp_path / f"{uuid.uuid4().hex[:8]}.json"
    file.write_text(json.dumps(content), encoding="utf-8")
    done = run_cli("--json", "count", str(file), "-m", model, db=tmp_path / "c.db")
    assert done.returncode == 0, done.stderr
    counted: dict[str, Any] = json.loads(done.stdout)
    assert counted["kind"] == "messages"
    return counted


# -- 1: contextos count reads what the wrappers read ---------------------------------------


def _anthropic_messages(*, image: bool = True) -> list[dict[str, Any]]:
    """A tool loop as an app sends it to the Messages API: a question with a screenshot,
    the model's tool call, its result, the answer and the next question."""
    shot = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": IMAGE}}
    return [
        {
            "role": "user",
            "content": [{"type": "text", "text": "What broke? See the graph."}]
            + ([shot] if image else []),
        },
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Reading the log."},
                {"type": "tool_use", "id": "toolu_1", "name": "read_logs", "input": ARGUMENTS},
            ],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": LOG}],
        },
        {"role": "assistant", "content": "The disk is fine."},
        {"role": "user", "content": "So what broke?"},
    ]


def test_count_reads_an_anthropic_request_body_whole(tmp_path: Path) -> None:
    """Was: 27 tokens for a request of about 5,800 -- the tool call, its 2,000-word
    result, the screenshot, the system prompt and the tools each counted as 0."""
    tok = default_tokenizer()
    tool = {"name": "read_logs", "description": "Read a log file.", "input_schema": SCHEMA}
    body = {
        "model": "claude-sonnet-4-6",
        "max_tokens": 1024,
        "system": [{"type": "text", "text": SYSTEM, "cache_control": {"type": "ephemeral"}}],
        "tools": [tool],
        "messages": _anthropic_messages(),
    }
    model = "claude-sonnet-4-6"
    whole = _count(tmp_path, body, model)
    listed = _count(tmp_path, body["messages"], model)["tokens"]
    no_image = _count(tmp_path, _anthropic_messages(image=False), model)["tokens"]
    # The screenshot is priced by Anthropic's published rule (a 1092x1092 image: 1,590).
    assert listed - no_image == anthropic_image_tokens(1092, 1092) == 1590
    # The tool call and its result are in the count, not only the text parts.
    assert no_image > tok.count(LOG) + tok.count(json.dumps(ARGUMENTS))
    # The body's system prompt and tools, as the wrapper's window places them: a block
    # each, framed as a message, the tool schema as canonical JSON.
    placed = tok.count(SYSTEM) + tok.count(canonical_json(tool)) + 2 * TOKENS_PER_MESSAGE
    assert whole["tokens"] == listed + placed
    assert whole["estimate"] is True and whole["tokenizer"] == "cl100k_base"
    assert whole["window_share"] == whole["tokens"] / get_model(model).context_window


def _openai_conversation(*, content: Any = None, image: bool = True) -> list[dict[str, Any]]:
    """An OpenAI tool conversation as an app keeps it: the assistant's tool-call message
    as the SDK returns it (``message.model_dump()``: ``"content": None``)."""
    from openai.types.chat import ChatCompletionMessage

    call = ChatCompletionMessage.model_validate(
        {
            "role": "assistant",
            "content": content,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "read_logs", "arguments": json.dumps(ARGUMENTS)},
                }
            ],
        }
    ).model_dump()
    graph = {
        "type": "image_url",
        "image_url": {"url": f"data:image/png;base64,{IMAGE}", "detail": "high"},
    }
    return [
        {"role": "user", "content": "What broke?"},
        call,
        {"role": "tool", "tool_call_id": "call_1", "content": LOG},
        {"role": "assistant", "content": "The disk is fine."},
        {
            "role": "user",
            "content": [{"type": "text", "text": "And this graph?"}] + ([graph] if image else []),
        },
    ]


def test_count_takes_an_openai_tool_call_with_null_content(tmp_path: Path) -> None:
    """Was: exit 2, "message 2 has null content", for the message the OpenAI SDK returns
    for a tool call; with ``content: ""`` the call, the image and the tools counted 0."""
    tok = default_tokenizer()
    listed = _count(tmp_path, _openai_conversation(), "gpt-4")
    assert listed["tokens"] == _count(tmp_path, _openai_conversation(content=""), "gpt-4")["tokens"]
    text_only = _count(tmp_path, _openai_conversation(image=False), "gpt-4")
    # The image by OpenAI's published rule (1092x1092 at high detail: 765), an estimate.
    assert listed["tokens"] - text_only["tokens"] == openai_image_tokens(1092, 1092, "high") == 765
    assert listed["estimate"] is True
    # Text and tool calls alone are gpt-4's own count (cl100k), as before.
    assert text_only["estimate"] is False
    assert text_only["tokens"] > tok.count(LOG) + tok.count(json.dumps(ARGUMENTS))


@pytest.mark.parametrize("strict", [False, True])
def test_count_adds_an_openai_bodys_system_and_tools(tmp_path: Path, strict: bool) -> None:
    """The leading system message is the window's system block; a tool the window holds
    is a block of its canonical schema, a ``strict`` one (sent as given, outside the
    window) is its JSON, as the wrapper reserves room for it."""
    tok = default_tokenizer()
    function: dict[str, Any] = {"name": "read_logs", "parameters": SCHEMA}
    tools = [{"type": "function", "function": {**function, **({"strict": True} if strict else {})}}]
    messages = _openai_conversation(image=False)
    bare = _count(tmp_path, messages, "gpt-4o")["tokens"]
    whole = _count(
        tmp_path,
        {
            "model": "gpt-4o",
            "tools": tools,
            "messages": [{"role": "system", "content": SYSTEM}, *messages],
        },
        "gpt-4o",
    )
    tools_tokens = (
        tok.count(json.dumps(tools))
        if strict
        else tok.count(canonical_json(function)) + TOKENS_PER_MESSAGE
    )
    assert whole["tokens"] == bare + tok.count(SYSTEM) + TOKENS_PER_MESSAGE + tools_tokens


def test_count_refuses_the_legacy_functions_api_in_one_line(tmp_path: Path) -> None:
    """A ``function_call`` message is no tool call the wrappers read: refused, not 0."""
    file = tmp_path / "legacy.json"
    call = {"name": "read_logs", "arguments": "{}"}
    file.write_text(
        json.dumps(
            [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": None, "function_call": call, "tool_calls": None},
            ]
        ),
        encoding="utf-8",
    )
    done = run_cli("count", str(file), "-m", "gpt-4o", db=tmp_path / "c.db")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("error: Invalid value for FILE: cannot read it as OpenAI")
    assert "legacy functions API" in done.stderr and done.stderr.count("\n") == 1


# -- 2: a registration wins over a built-in alias -------------------------------------------


@pytest.mark.usefixtures("registry")
def test_registering_an_alias_name_makes_it_the_registered_model() -> None:
    """Was: ``get_model`` read the alias first, and the registration was never read."""
    dated = replace(
        get_model("claude-sonnet-4-5"), name="claude-sonnet-4-5-20250929", context_window=32_000
    )
    assert register_model(dated) is dated
    assert get_model("claude-sonnet-4-5-20250929") is dated
    assert get_model(" CLAUDE-SONNET-4-5-20250929 ") is dated
    assert get_model("us.anthropic.claude-sonnet-4-5-20250929-v1:0") is dated  # Bedrock's id
    assert get_model("claude-sonnet-4-5").context_window == 200_000  # the family stays
    small = ModelInfo("haiku", "open", 8_192, 1_024, 0, Prices(0, 0, 0, 0, 0))
    register_model(small)
    assert get_model("Haiku") is small
    assert get_model("claude-haiku-4-5").context_window == 200_000
    # An alias given with a registration still names it, a built-in alias included.
    mine = ModelInfo("my-gpt", "openai", 16_000, 4_096, 0, Prices(0, 0, 0, 0, 0))
    register_model(mine, "gpt-3.5-turbo-1106")
    assert get_model("gpt-3.5-turbo-1106") is mine


@pytest.mark.usefixtures("registry")
def test_wrap_budgets_a_registered_dated_id_by_its_registered_window(mem: Memory) -> None:
    """Was: a dated id registered with 32,000 tokens was sent ~184,000 (its family's
    200,000-token window)."""
    from contextos.providers import anthropic as adapter

    register_model(
        replace(
            get_model("claude-sonnet-4-5"), name="claude-sonnet-4-5-20250929", context_window=32_000
        )
    )
    turn = "lorem ipsum dolor sit amet " * 60  # about 360 tokens a turn
    Session(mem, "long", user_id="ana").add(
        *[Message("user" if i % 2 == 0 else "assistant", f"t{i} {turn}") for i in range(300)]
    )
    with (
        FakeAnthropic() as fake,
        anthropic_sdk.Anthropic(base_url=fake.base_url, api_key="t", max_retries=0) as sdk,
    ):
        client = wrap(sdk, mem, "long", user_id="ana", compaction=None)
        client.messages.create(
            model="claude-sonnet-4-5-20250929",
            max_tokens=1000,
            messages=[{"role": "user", "content": "q?"}],
        )
        body = fake.messages_requests()[-1].json()
    sent = default_tokenizer().count_messages(list(adapter.parse(body).messages))
    assert 20_000 < sent <= 32_000 - 1000


# -- 3: a rendered body the SDK sends -------------------------------------------------------


def _send(body: dict[str, Any]) -> None:
    """Send ``body`` with the real Anthropic SDK, not streaming (it refuses a request it
    expects to outlast 10 minutes: a ``max_tokens`` above about 21,333)."""
    with (
        FakeAnthropic() as fake,
        anthropic_sdk.Anthropic(base_url=fake.base_url, api_key="t", max_retries=0) as sdk,
    ):
        sdk.messages.create(**body)
        assert len(fake.messages_requests()) == 1


def test_render_anthropic_gives_a_1m_model_a_max_tokens_the_sdk_sends(tmp_path: Path) -> None:
    """Was: ``max_tokens`` 62,500 (the output reserve) for claude-sonnet-4-6, and the
    SDK raised "Streaming is required" on docs/context-engine.md's ten lines."""
    model = get_model("claude-sonnet-4-6")
    assert model.default_output_reserve() > 21_333
    store = open_store(str(tmp_path / "r.db"))
    try:
        s = Session(store, "chat-42", user_id="ana")
        s.add(Message("user", "I moved to Lisbon in May."), Message("assistant", "Nice!"))
        window = s.window(model, "Where do I live?", system="Be brief.")
    finally:
        store.close()
    body = render_anthropic(window, model)
    assert body["max_tokens"] == 16_384  # what the server's window route gives too
    _send(body)
    assert render_anthropic(window, model, max_tokens=40_000)["max_tokens"] == 40_000  # as asked
    assert render_anthropic(window, get_model("claude-3-haiku"))["max_tokens"] == 4_096


def test_cli_window_format_anthropic_is_a_body_the_sdk_sends(tmp_path: Path) -> None:
    db = tmp_path / "cli.db"
    added = run_cli("session", "add", "s1", "I live in Lisbon", "-u", "ana", db=db)
    assert added.returncode == 0, added.stderr
    done = run_cli(
        "window",
        "--session",
        "s1",
        "-u",
        "ana",
        "-q",
        "where do I live",
        "--format",
        "anthropic",
        db=db,
    )
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)
    assert body["model"] == "claude-sonnet-4-6" and body["max_tokens"] == 16_384
    _send(body)


# -- 4: an unknown model's window is said to be assumed -------------------------------------


@pytest.mark.usefixtures("registry")
def test_no_room_for_an_unknown_model_says_the_window_is_assumed_and_the_fixes(
    mem: Memory,
) -> None:
    """Was: "gpt-5.5's context window is 128,000 tokens ... ask for fewer output tokens",
    for a model the registry does not know and a request the model takes."""
    name = f"gpt-next-{uuid.uuid4().hex[:6]}"
    ask = {"messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 128_000}
    with (
        FakeOpenAI() as fake,
        openai_sdk.OpenAI(base_url=fake.base_url, api_key="t", max_retries=0) as sdk,
    ):
        client = wrap(sdk, mem, "s", user_id="ana")
        with pytest.raises(BudgetError) as err:
            client.chat.completions.create(model=name, **ask)
        said = str(err.value)
        for words in (
            f"{name} is not in contextos's model registry",
            "assumed to be 128,000 tokens",
            "128,000 are reserved for the output (max_tokens), which leaves no room",
            "register_model(",
            "budget=",
        ):
            assert words in said, (words, said)
        assert fake.completions_requests() == []
        # The fixes it names work: an explicit budget, or the model registered.
        wrap(sdk, mem, "s2", user_id="ana", budget=100_000).chat.completions.create(
            model=name, **ask
        )
        register_model(ModelInfo(name, "openai", 400_000, 128_000, 1024, Prices(0, 0, 0, 0, 0)))
        client.chat.completions.create(model=name, **ask)
        assert len(fake.completions_requests()) == 2
        # A registered model's window is a fact: said as before.
        with pytest.raises(BudgetError) as known:
            client.chat.completions.create(model="gpt-4o", **ask)
    assert str(known.value).startswith("gpt-4o's context window is 128,000 tokens and 128,000")
    assert "ask for fewer output tokens" in str(known.value)
    assert "assumed" not in str(known.value)
