"""The ready request of a window names the model the caller asked for, and a window
body's numbers are JSON integers (review s43, area "tokens", findings 1, 4 and 5).

1. ``contextos window --format`` and the HTTP/MCP windows' ``request`` named the
   registry's key: ``gpt-4o-2024-11-20`` went out as ``gpt-4o`` (another snapshot), a
   Vertex id lost its date. Now the body carries the id as given (stripped); the
   registry's entry still gives the limits; contextos's own family shorthands
   (``sonnet``) still name the model they resolve to, which a provider takes.
4. Anthropic's aliases ``claude-opus-4-0``/``claude-sonnet-4-0`` were unknown, and an
   unknown model's 400 told an HTTP client to call ``register_model``, which it cannot:
   the message now says how to go on.
5. ``"max_tokens": true`` was a ready body with ``max_tokens`` 1, and ``"token_budget":
   true`` a refusal "greater than or equal to 64": both are refused as not integers.

The CLI as a subprocess, the real app in process on a SQLite file, and a real
``contextos mcp`` over stdio driven by the official MCP client.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from cli_support import run_cli
from contextos.llm.models import get_model, named_model
from server_support import app_client, assert_error, auth, chat, issue_key

#: (the id asked for, the registry entry it resolves to, the id the body must carry).
ASKED = [
    ("gpt-4o-2024-11-20", "gpt-4o", "gpt-4o-2024-11-20"),
    ("claude-haiku-4-5-20251001", "claude-haiku-4-5", "claude-haiku-4-5-20251001"),
    ("claude-sonnet-4-5@20250929", "claude-sonnet-4-5", "claude-sonnet-4-5@20250929"),
    (
        "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
        "claude-sonnet-4-5",
        "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
    ),
    ("claude-sonnet-4-0", "claude-sonnet-4", "claude-sonnet-4-0"),
    (" gpt-4o ", "gpt-4o", "gpt-4o"),
    ("sonnet", "claude-sonnet-4-6", "claude-sonnet-4-6"),
    ("HAIKU", "claude-haiku-4-5", "claude-haiku-4-5"),
    # found as normalised (any case): sent as the providers spell ids, lower-case
    ("GPT-4o", "gpt-4o", "gpt-4o"),
    ("GPT-4o-2024-11-20", "gpt-4o", "gpt-4o-2024-11-20"),
    ("Claude-Sonnet-4-6", "claude-sonnet-4-6", "claude-sonnet-4-6"),
]


@pytest.mark.parametrize(("asked", "entry", "sent"), ASKED)
def test_named_model_keeps_the_registry_limits_under_the_callers_id(
    asked: str, entry: str, sent: str
) -> None:
    info = named_model(asked)
    registered = get_model(entry)
    assert info.name == sent
    assert (info.context_window, info.max_output_tokens, info.prices, info.min_cache_tokens) == (
        registered.context_window,
        registered.max_output_tokens,
        registered.prices,
        registered.min_cache_tokens,
    )


@pytest.mark.parametrize(
    ("alias", "entry"),
    [
        ("claude-opus-4-0", "claude-opus-4"),
        ("claude-sonnet-4-0", "claude-sonnet-4"),
        ("claude-3-opus-latest", "claude-3-opus"),
    ],
)
def test_anthropics_own_aliases_are_known(alias: str, entry: str) -> None:
    assert get_model(alias) is get_model(entry)


def test_cli_window_body_names_the_snapshot_asked_for(tmp_path: Path) -> None:
    db = tmp_path / "cli.db"
    added = run_cli("session", "add", "c1", "My bike is red", "-u", "ana", db=db)
    assert added.returncode == 0, added.stderr
    for asked, fmt, sent in [
        ("gpt-4o-2024-11-20", "openai", "gpt-4o-2024-11-20"),
        ("claude-haiku-4-5-20251001", "anthropic", "claude-haiku-4-5-20251001"),
        ("sonnet", "anthropic", "claude-sonnet-4-6"),
    ]:
        done = run_cli(
            "window", "--session", "c1", "-u", "ana", "-m", asked, "-q", "What colour?",
            "--format", fmt, db=db,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        body = json.loads(done.stdout)
        assert body["model"] == sent
        if fmt == "anthropic":  # the limits are still the registry entry's
            assert body["max_tokens"] == min(get_model(asked).default_output_reserve(), 16_384)


@contextmanager
def _client_window(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """A window poster on a fresh app with one logged exchange."""
    with app_client(tmp_path / "s.db") as client:
        headers = auth(issue_key(client, "acme"))
        said = chat("my bike is red", "noted")
        logged = client.post(
            "/v1/sessions/s1/turns", json={"user_id": "ana", "messages": said}, headers=headers
        )
        assert logged.status_code == 201, logged.text

        def window(**body: Any) -> Any:
            ask = {"question": "what colour is my bike?", "user_id": "ana", **body}
            return client.post("/v1/sessions/s1/window", json=ask, headers=headers)

        yield window


def test_http_window_request_names_the_model_as_asked(tmp_path: Path) -> None:
    with _client_window(tmp_path) as window:
        for asked, _entry, sent in ASKED:
            for fmt in ("anthropic", "openai"):
                resp = window(model=asked, format=fmt)
                assert resp.status_code == 200, (asked, resp.text)
                assert resp.json()["request"]["model"] == sent, (asked, fmt)
        # The budget is still checked against the entry's window, named as asked.
        largest = get_model("claude-haiku-4-5").largest_budget()
        over = window(model="claude-haiku-4-5-20251001", token_budget=largest + 1)
        error = assert_error(over, 400, "BudgetError")
        assert "over what claude-haiku-4-5-20251001 can take" in error["message"]
        assert window(model="claude-haiku-4-5-20251001", token_budget=largest).status_code == 200


def test_http_unknown_model_says_how_a_client_goes_on(tmp_path: Path) -> None:
    with _client_window(tmp_path) as window:
        error = assert_error(window(model="gpt-5.5", format="openai"), 400, "ConfigError")
    said = error["message"]
    for words in (
        "unknown model 'gpt-5.5'",
        "Name a model it knows whose context window is no larger than yours",
        "send the request with your own model id",
        "register_model",
        "Known models: ",
        "claude-sonnet-4-6",
    ):
        assert words in said, (words, said)


@pytest.mark.parametrize("field", ["token_budget", "limit", "max_tokens"])
@pytest.mark.parametrize("value", [True, False, 2000.5])
def test_http_window_numbers_are_json_integers(tmp_path: Path, field: str, value: Any) -> None:
    with _client_window(tmp_path) as window:
        refused = window(format="anthropic", **{field: value})
        error = assert_error(refused, 422, "InvalidRequest")
        assert field in error["message"] and "valid integer" in error["message"], error
        given = {"token_budget": 2000, "limit": 5, "max_tokens": 2000}[field]
        fine = window(format="anthropic", **{field: given})
        assert fine.status_code == 200, fine.text
        if field == "max_tokens":
            assert fine.json()["request"]["max_tokens"] == 2000


def test_mcp_assemble_window_names_the_model_and_refuses_booleans(tmp_path: Path) -> None:
    pytest.importorskip("mcp")
    from mcp_support import error_text, payload
    from test_mcp_edges import _key, _session

    db = str(tmp_path / "m.db")

    async def scenario(s: Any, init: Any) -> dict[str, Any]:
        ask = {"question": "What?", "user_id": "ana", "format": "openai"}
        out: dict[str, Any] = {}
        out["dated"] = await s.call_tool("assemble_window", {**ask, "model": "gpt-4o-2024-11-20"})
        out["unknown"] = await s.call_tool("assemble_window", {**ask, "model": "gpt-5.5"})
        for field in ("max_tokens", "token_budget", "limit"):
            out[field] = await s.call_tool("assemble_window", {**ask, field: True})
        return out

    out = _session(db, _key(db), tmp_path / "mcp-stderr.txt", scenario)
    assert payload(out["dated"])["request"]["model"] == "gpt-4o-2024-11-20"
    unknown = error_text(out["unknown"])
    assert "ConfigError" in unknown and "send the request with your own model id" in unknown
    for field in ("max_tokens", "token_budget", "limit"):
        said = error_text(out[field])
        assert field in said and "valid integer" in said, (field, said)
