"""``POST /v1/sessions/{id}/window`` and MCP ``assemble_window`` with ``max_tokens``:
the budget is checked against the output asked for, as ``wrap()`` checks it.

The budget was checked against the model's default output reserve alone (8,000 for
gpt-4o), and the ready request was rendered with the ``max_tokens`` asked for: at the
largest budget allowed (120,000) and ``max_tokens`` 16,384 the body's input and output
passed gpt-4o's 128,000-token window, and the provider refused what the server built
(a review). Now such a budget is refused with the BudgetError ``wrap()`` gives: 400
over HTTP, a tool error over MCP.

The real app in process (``app_client``) on a SQLite file, and a real ``contextos mcp``
subprocess driven by the official MCP client.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from contextos.errors import BudgetError
from contextos.llm.models import get_model
from server_support import app_client, assert_error, auth, chat, issue_key

MODEL = "gpt-4o"  # 128,000 tokens; default output reserve 8,000
#: What ``wrap()`` says for the same budget and max_tokens.
WRAP_SAYS = (
    "budget of 120,000 input tokens is over what gpt-4o can take: its context window is "
    "128,000 tokens and 16,384 are reserved for the output, so the largest budget allowed "
    "is 111,616"
)


def test_wrap_refuses_the_same_budget(tmp_path: Path) -> None:
    """The message both routes must give: ``ModelInfo.check_budget``, as wrap() calls it."""
    with pytest.raises(BudgetError) as err:
        get_model(MODEL).check_budget(120_000, 16_384)
    assert str(err.value).startswith(WRAP_SAYS)


def test_http_window_refuses_a_budget_that_leaves_no_room_for_max_tokens(tmp_path: Path) -> None:
    with app_client(tmp_path / "s.db") as client:
        headers = auth(issue_key(client, "acme"))
        said = chat("the chain squeaks", "oil it", "which oil?", "a dry lube")
        logged = client.post(
            "/v1/sessions/s1/turns", json={"user_id": "ana", "messages": said}, headers=headers
        )
        assert logged.status_code == 201, logged.text
        ask = {"question": "and the brakes?", "user_id": "ana", "model": MODEL}

        def window(**body: Any) -> Any:
            return client.post("/v1/sessions/s1/window", json={**ask, **body}, headers=headers)

        over = window(token_budget=120_000, format="openai", max_tokens=16_384)
        error = assert_error(over, 400, "BudgetError")
        assert error["message"].startswith(WRAP_SAYS)
        over = window(token_budget=120_000, max_tokens=16_384)  # no body asked: still refused
        assert_error(over, 400, "BudgetError")
        fits = window(token_budget=111_616, format="openai", max_tokens=16_384)
        assert fits.status_code == 200, fits.text
        assert fits.json()["request"]["max_completion_tokens"] == 16_384
        # A max_tokens under the default reserve keeps that reserve (the session's window).
        small = window(token_budget=120_000, format="anthropic", max_tokens=300)
        assert small.status_code == 200, small.text
        assert small.json()["request"]["max_tokens"] == 300
        assert_error(window(token_budget=120_001, max_tokens=300), 400, "BudgetError")


def test_mcp_assemble_window_refuses_it_as_a_tool_error(tmp_path: Path) -> None:
    pytest.importorskip("mcp")
    from mcp_support import error_text, payload
    from test_mcp_edges import _key, _session

    db = str(tmp_path / "m.db")

    async def scenario(s: Any, init: Any) -> tuple[Any, Any]:
        args = {"question": "What?", "user_id": "ana", "model": MODEL, "format": "openai"}
        over = await s.call_tool(
            "assemble_window", {**args, "token_budget": 120_000, "max_tokens": 16_384}
        )
        ok = await s.call_tool(
            "assemble_window", {**args, "token_budget": 111_616, "max_tokens": 16_384}
        )
        return over, ok

    over, ok = _session(db, _key(db), tmp_path / "mcp-stderr.txt", scenario)
    text = error_text(over)
    assert "BudgetError" in text and WRAP_SAYS in text
    assert payload(ok)["request"]["max_completion_tokens"] == 16_384
