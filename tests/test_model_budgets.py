"""Budgets against the model's real context window, in the shapes they are used: the
real ``anthropic``/``openai`` SDK clients wrapped against the loopback fakes, the CLI in
a subprocess, ``contextos serve`` and ``contextos mcp`` as real processes.

- A model id resolves whatever its case, date suffix or Bedrock/Vertex AI form; a model
  the registry does not know gets 128,000 tokens and one logged warning per id.
- A budget over the model's window less the output reserve is refused, naming the model,
  its window, the reserve and the largest budget allowed (an unknown model: as given).
- ``wrap(budget=N)`` is the input budget: ``max_tokens`` is not taken from it.
- The output reserve does not shrink when tools travel verbatim.
- Open models' counts are estimates (their tokenizers are not shipped).
- The memory header goes only with a memory.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cli_support import reaped, run_cli
from contextos.engine.context import MEMORY_HEADER, SessionContext
from contextos.engine.session import Session, context_window
from contextos.errors import BudgetError
from contextos.llm import models
from contextos.llm.models import ModelInfo, Prices, get_model, model_key, register_model
from contextos.llm.tokens import default_tokenizer
from contextos.memory import Memory
from contextos.providers import wrap
from contextos.providers.base import ChatRequest, Prepared
from contextos.store import open_store
from contextos.testing.embedders import HashEmbedder
from contextos.types import Hit, MemoryRecord, Message

CLI = [sys.executable, "-c", "from contextos.cli.main import main; main()"]
PARA = "The quarterly report discusses revenue, costs and the hiring plan in detail. " * 5


class Recording(SessionContext):
    """The session context, recording each call's window and the reserve it was given."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.seen: list[tuple[int, int, int]] = []  # (reserve, window.budget, window.total)

    def prepare(self, request: ChatRequest, *, reserve_tokens: int) -> Prepared:
        prepared = super().prepare(request, reserve_tokens=reserve_tokens)
        w = prepared.window
        self.seen.append((reserve_tokens, w.budget, w.total_tokens))
        return prepared


@pytest.fixture
def mem(tmp_path: Path) -> Iterator[Memory]:
    with Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as m:
        yield m


def _context(mem: Memory, budget: int | None = None) -> Recording:
    return Recording(
        memory=mem,
        session=f"s-{uuid.uuid4().hex[:8]}",
        user_id="ana",
        budget=budget,
        background_commit=False,
        compaction=None,
    )


# -- A: model ids ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "family"),
    [
        ("CLAUDE-SONNET-4-6", "claude-sonnet-4-6"),
        (" claude-sonnet-4-6 ", "claude-sonnet-4-6"),
        ("claude-opus-4-6-20260205", "claude-opus-4-6"),
        ("claude-3-haiku-20240307", "claude-3-haiku"),
        ("claude-sonnet-4-5@20250929", "claude-sonnet-4-5"),
        ("anthropic.claude-sonnet-4-5-20250929-v1:0", "claude-sonnet-4-5"),
        ("us.anthropic.claude-sonnet-4-5-20250929-v1:0", "claude-sonnet-4-5"),
        ("global.anthropic.claude-opus-4-6-v1", "claude-opus-4-6"),
        ("claude-3-5-sonnet-v2@20241022", "claude-3-5-sonnet"),
        ("gpt-4o-2024-11-20", "gpt-4o"),
        ("GPT-4O-MINI-2024-07-18", "gpt-4o-mini"),
        ("gpt-4-0613", "gpt-4"),
        ("gpt-4-turbo-2024-04-09", "gpt-4-turbo"),
        ("o3-mini-2025-01-31", "o3-mini"),
    ],
)
def test_a_model_id_resolves_to_its_family(name: str, family: str) -> None:
    assert model_key(name) == family
    assert get_model(name).name == family


def test_models_that_were_missing_have_their_public_limits() -> None:
    limits = {
        "gpt-4": (8_192, 8_192),
        "gpt-4-turbo": (128_000, 4_096),
        "gpt-3.5-turbo": (16_385, 4_096),
        "gpt-4o-2024-05-13": (128_000, 4_096),  # its own entry: not gpt-4o's 16,384
        "claude-3-haiku": (200_000, 4_096),
        "o1": (200_000, 100_000),
    }
    for name, (window, out) in limits.items():
        info = get_model(name)
        assert (info.context_window, info.max_output_tokens) == (window, out), name
    assert get_model("gpt-4").exact_with("cl100k_base")  # its own encoding: counts exact


def test_a_wrapped_gpt4_window_fits_its_8k_context(mem: Memory) -> None:
    """Was: gpt-4 (unknown then) got a 128,000-token window and a 14,428-token request."""
    openai = pytest.importorskip("openai")
    from contextos.testing.fake_openai import FakeOpenAI

    ctx = _context(mem)
    with (
        FakeOpenAI(reply=lambda body: "ok " * 50) as fake,
        openai.OpenAI(base_url=fake.base_url, api_key="t", max_retries=0) as client,
    ):
        wrapped = wrap(client, context=ctx)
        history: list[dict[str, str]] = []
        for i in range(40):
            history.append({"role": "user", "content": f"q{i} " + PARA * 4})
            r = wrapped.chat.completions.create(model="gpt-4", messages=history, max_tokens=256)
            history.append({"role": "assistant", "content": r.choices[0].message.content})
        sent = fake.completions_requests()[-1].json()["messages"]
    reserve, budget, total = ctx.seen[-1]
    assert (reserve, budget) == (256, 8_192 - 256)
    assert total <= budget
    assert len(sent) < len(history)  # the oldest turns were left out to fit
    tok = default_tokenizer()
    texts = [
        m["content"] if isinstance(m["content"], str) else "".join(p["text"] for p in m["content"])
        for m in sent
    ]
    assert tok.count_messages([Message("user", t) for t in texts]) <= budget


def test_an_unknown_model_logs_one_warning_per_id(
    mem: Memory, caplog: pytest.LogCaptureFixture
) -> None:
    anthropic = pytest.importorskip("anthropic")
    from contextos.testing.fake_anthropic import FakeAnthropic

    first, second = (f"my-finetune-{uuid.uuid4().hex[:6]}" for _ in range(2))
    ctx = _context(mem)
    caplog.set_level(logging.WARNING, logger="contextos.engine.context")
    with (
        FakeAnthropic(reply=lambda body: "ok") as fake,
        anthropic.Anthropic(base_url=fake.base_url, api_key="t", max_retries=0) as client,
    ):
        wrapped = wrap(client, context=ctx)
        for model in (first, first, second, first):
            wrapped.messages.create(
                model=model, max_tokens=100, messages=[{"role": "user", "content": "hi"}]
            )
    warned = [r.getMessage() for r in caplog.records if r.name == "contextos.engine.context"]
    assert len(warned) == 2, warned
    assert repr(first) in warned[0] and repr(second) in warned[1]
    assert "128,000-token context window" in warned[0]
    assert "register_model" in warned[0] and "budget=" in warned[0]
    assert ctx.seen[0][1] == 128_000 - 100  # the assumed window, less max_tokens


def test_a_registered_model_is_budgeted_by_its_own_window(tmp_path: Path) -> None:
    saved = (dict(models.MODELS), dict(models.ALIASES))
    name = f"My-Llama-{uuid.uuid4().hex[:6]}"
    store = open_store(str(tmp_path / "m.db"))
    try:
        register_model(
            ModelInfo(name, "open", 32_768, 4_096, 0, Prices(0, 0, 0, 0, 0)), "my-alias-x"
        )
        assert get_model(name.upper()).context_window == 32_768
        assert get_model("MY-ALIAS-X").context_window == 32_768
        session = Session(store, "r", user_id="ana")
        with pytest.raises(BudgetError, match="32,768"):
            session.window(get_model(name), "q?", budget=40_000)
    finally:
        store.close()
        models.MODELS.clear()
        models.MODELS.update(saved[0])
        models.ALIASES.clear()
        models.ALIASES.update(saved[1])


# -- B: a budget over the window --------------------------------------------------------


def test_wrap_refuses_a_budget_over_the_models_window_before_sending(mem: Memory) -> None:
    """Was: wrap(budget=1_000_000) on gpt-4o built a 999,744-token window."""
    openai = pytest.importorskip("openai")
    from contextos.testing.fake_openai import FakeOpenAI

    ctx = _context(mem, budget=1_000_000)
    with (
        FakeOpenAI(reply=lambda body: "ok") as fake,
        openai.OpenAI(base_url=fake.base_url, api_key="t", max_retries=0) as client,
    ):
        wrapped = wrap(client, context=ctx)
        with pytest.raises(BudgetError) as err:
            wrapped.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "hi"}], max_tokens=256
            )
        for said in ("gpt-4o", "128,000", "256", "127,744"):
            assert said in str(err.value), said
        assert fake.completions_requests() == []
        assert ctx.session is not None and ctx.session.turns() == []
        # An unknown model's window is assumed: its budget is used as given.
        wrapped.chat.completions.create(
            model=f"local-{uuid.uuid4().hex[:6]}",
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=256,
        )
    assert ctx.seen[-1][1] == 1_000_000


def test_session_window_refuses_a_budget_over_the_models_window(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "m.db"))
    try:
        s = Session(store, "s", user_id="ana")
        s.add(Message("user", "hello"))
        gpt = get_model("gpt-4o")
        with pytest.raises(BudgetError, match="largest budget allowed is 120,000"):
            s.window(gpt, "q?", budget=120_001)
        assert s.window(gpt, "q?", budget=120_000).budget == 120_000
    finally:
        store.close()


def test_cli_window_refuses_a_budget_over_the_model_with_exit_2(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    added = run_cli("session", "add", "big", PARA, "-u", "ana", db=db)
    assert added.returncode == 0, added.stderr
    over = run_cli(
        "window", "--session", "big", "-u", "ana", "-m", "gpt-4o", "-q", "What?",
        "--budget", "500000", db=db,
    )  # fmt: skip
    assert over.returncode == 2, (over.stdout, over.stderr)
    for said in ("--budget", "gpt-4o", "128,000", "8,000", "120,000"):
        assert said in over.stderr, said
    ok = run_cli(
        "--json", "window", "--session", "big", "-u", "ana", "-m", "gpt-4o", "-q", "What?",
        "--budget", "120000", db=db,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["budget"] == 120_000


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """``contextos serve`` on loopback: (base URL, a key of tenant acme)."""
    pytest.importorskip("fastapi")
    import httpx

    from contextos.bench.serve import free_port
    from contextos.server.keys import KeyStore

    db = tmp_path / "s.db"
    with KeyStore(str(db)) as keys:
        key = keys.create("acme").secret
    port = free_port()
    cmd = [*CLI, "serve", "--db", str(db), "--port", str(port), "--embedder", "hash"]
    with reaped(subprocess.Popen([*cmd, "--rate", "0"], stdout=subprocess.DEVNULL)) as proc:
        base = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                httpx.get(f"{base}/healthz", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        yield base, key
        proc.terminate()
        proc.wait(timeout=30)


def test_http_window_refuses_a_budget_over_the_model_with_400(served: tuple[str, str]) -> None:
    """Was: token_budget=500000 for gpt-4o answered a 141,412-token window."""
    import httpx

    base, key = served
    headers = {"Authorization": f"Bearer {key}"}
    turns = [{"role": ("user", "assistant")[i % 2], "content": PARA} for i in range(4)]
    r = httpx.post(
        f"{base}/v1/sessions/big/turns",
        json={"user_id": "ana", "messages": turns},
        headers=headers,
        timeout=60,
    )
    assert r.status_code == 201, r.text
    body = {"question": "What?", "user_id": "ana", "model": "gpt-4o"}
    url = f"{base}/v1/sessions/big/window"
    r = httpx.post(url, json={**body, "token_budget": 500_000}, headers=headers, timeout=60)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "BudgetError"
    for said in ("gpt-4o", "128,000", "8,000", "120,000"):
        assert said in error["message"], said
    r = httpx.post(url, json={**body, "token_budget": 120_000}, headers=headers, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["budget"] == 120_000


def test_mcp_window_refuses_a_budget_over_the_model_as_a_tool_error(tmp_path: Path) -> None:
    pytest.importorskip("mcp")
    from mcp_support import error_text, payload
    from test_mcp_edges import _key, _session

    db = str(tmp_path / "m.db")

    async def scenario(s: Any, init: Any) -> tuple[Any, Any]:
        args = {"question": "What?", "user_id": "ana"}
        over = await s.call_tool("assemble_window", {**args, "token_budget": 1_500_000})
        ok = await s.call_tool("assemble_window", {**args, "token_budget": 937_500})
        return over, ok

    over, ok = _session(db, _key(db), tmp_path / "mcp-stderr.txt", scenario)
    text = error_text(over)  # the default model, claude-sonnet-4-6: 1M window
    for said in ("BudgetError", "claude-sonnet-4-6", "1,000,000", "62,500", "937,500"):
        assert said in text, said
    assert payload(ok)["budget"] == 937_500


# -- C: the explicit budget is the input budget -------------------------------------------


@pytest.mark.parametrize(("budget", "max_tokens"), [(8000, 1000), (4000, 4096)])
def test_wrap_budget_is_the_input_budget(mem: Memory, budget: int, max_tokens: int) -> None:
    """Was: budget minus max_tokens (7,000; and -96, every call refused)."""
    anthropic = pytest.importorskip("anthropic")
    from contextos.testing.fake_anthropic import FakeAnthropic

    ctx = _context(mem, budget=budget)
    with (
        FakeAnthropic(reply=lambda body: "ok") as fake,
        anthropic.Anthropic(base_url=fake.base_url, api_key="t", max_retries=0) as client,
    ):
        wrapped = wrap(client, context=ctx)
        wrapped.messages.create(
            model="claude-sonnet-4-6",
            max_tokens=max_tokens,
            messages=[{"role": "user", "content": "hello there"}],
        )
        assert len(fake.messages_requests()) == 1
    assert ctx.seen[-1][:2] == (max_tokens, budget)


# -- D: the output reserve with verbatim tools --------------------------------------------


def test_verbatim_tools_add_to_the_output_reserve(mem: Memory) -> None:
    """Was: with a strict tool and no max_tokens the reserve was the tool's 41 tokens."""
    openai = pytest.importorskip("openai")
    from contextos.testing.fake_openai import FakeOpenAI

    strict = [
        {
            "type": "function",
            "function": {
                "name": "f",
                "strict": True,
                "parameters": {"type": "object", "properties": {}, "additionalProperties": False},
            },
        }
    ]
    tool_tokens = default_tokenizer().count(json.dumps(strict))
    default = get_model("gpt-4o").default_output_reserve()  # 8,000
    ctx = _context(mem)
    with (
        FakeOpenAI(reply=lambda body: "ok") as fake,
        openai.OpenAI(base_url=fake.base_url, api_key="t", max_retries=0) as client,
    ):
        wrapped = wrap(client, context=ctx)
        for tools in (strict, None):
            kw: dict[str, Any] = {"tools": tools} if tools else {}
            wrapped.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "hi"}], **kw
            )
    (with_tools, budget_tools, _), (bare, budget_bare, _) = ctx.seen
    assert (with_tools, bare) == (default + tool_tokens, default)
    assert budget_tools == 128_000 - default - tool_tokens
    assert budget_bare == 128_000 - default


# -- E: open models count as estimates ----------------------------------------------------


def test_cli_count_reports_open_models_as_estimates(tmp_path: Path) -> None:
    text = tmp_path / "t.txt"
    text.write_text("Bonjour, comment ça va?", encoding="utf-8")
    estimate = {}
    for model in ("llama-3.3-70b-instruct", "qwen2.5-7b-instruct", "gpt-4", "gpt-4o"):
        done = run_cli("--json", "count", str(text), "-m", model, db=tmp_path / "m.db")
        assert done.returncode == 0, done.stderr
        estimate[model] = json.loads(done.stdout)["estimate"]
    # cl100k is only gpt-4's own encoding; the open models' tokenizers are not shipped.
    assert estimate == {
        "llama-3.3-70b-instruct": True,
        "qwen2.5-7b-instruct": True,
        "gpt-4": False,
        "gpt-4o": True,
    }


# -- F: the memory header goes only with a memory ----------------------------------------


def _hit(i: int, text: str) -> Hit:
    return Hit(MemoryRecord(id=f"m{i}", text=text), score=1.0, tokens=len(text.split()))


def test_no_memory_header_when_no_memory_fits() -> None:
    tok = default_tokenizer()
    w = context_window(
        200,
        tokenizer=tok,
        question="What is the capital of France?",
        memories=[_hit(1, "x " * 1000)],
        memory_header=MEMORY_HEADER,
    )
    assert [b.segment for b in w.blocks] == ["question"]
    assert w.segment_tokens()["memory_header"] == 0
    left_out = {(o.segment, o.key) for o in w.overflow}
    assert {("memory_header", "memories:header"), ("memories", "memory:m1")} <= left_out
    usage = {u.name: u for u in w.usage}
    assert (usage["memory_header"].items, usage["memory_header"].dropped) == (0, 1)
    assert (usage["memories"].items, usage["memories"].dropped) == (0, 1)
    # A memory that fits brings its header, just before it.
    fits = context_window(
        200,
        tokenizer=tok,
        question="What is the capital of France?",
        memories=[_hit(1, "x " * 1000), _hit(2, "Paris is the capital.")],
        memory_header=MEMORY_HEADER,
    )
    assert [b.key for b in fits.blocks] == ["memories:header", "memory:m2", "question"]
