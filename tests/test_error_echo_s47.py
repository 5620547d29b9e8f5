"""A refused value or argument name is quoted in part, not echoed whole.

A time that is not ISO-8601 and an unknown argument name were put whole in the error:
a 900,000-character value gave a 900 KB error in the library, in the HTTP API's 422
and in an MCP tool error (a review, s47 F5). The error quotes the first 100 characters
and says the length; a short value reads exactly as before."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from contextos.memory import Memory
from contextos.server.errors import describe
from contextos.testing.embedders import HashEmbedder
from contextos.times import utc

HUGE = 900_000


def test_the_library_quotes_a_huge_time_in_part() -> None:
    with pytest.raises(ValueError) as refused:
        utc("9" * HUGE, "as_of")
    assert str(refused.value) == (
        f"as_of {'9' * 100 + '…'!r} (900,000 characters) is not an ISO-8601 date"
    )
    with pytest.raises(ValueError) as refused:  # short values: as before
        utc("yesterday", "as_of")
    assert str(refused.value) == "as_of 'yesterday' is not an ISO-8601 date"
    with pytest.raises(ValueError) as refused:  # 100 characters: still whole
        utc("x" * 100, "as_of")
    assert str(refused.value) == f"as_of {'x' * 100!r} is not an ISO-8601 date"


def test_a_search_with_a_huge_time_is_refused_in_a_short_message(tmp_path: Path) -> None:
    with (
        Memory(str(tmp_path / "m.db"), embedder=HashEmbedder()) as m,
        pytest.raises(ValueError) as refused,
    ):
        m.search("tea", user_id="ana", as_of="9" * HUGE)
    assert len(str(refused.value)) < 300 and "(900,000 characters)" in str(refused.value)


def test_describe_cuts_a_huge_key_and_message_keeps_short_ones() -> None:
    errors = [
        {"loc": ("body", "k" * HUGE), "msg": "Extra inputs are not permitted"},
        {"loc": ("body", "limit"), "msg": "Input should be less than or equal to 100"},
        {"loc": ("body", "as_of"), "msg": "m" * 5000},
    ]
    said = describe(errors)
    assert said == (
        f"body.{'k' * 100}… (900,000 characters): Extra inputs are not permitted; "
        "body.limit: Input should be less than or equal to 100; "
        f"body.as_of: {'m' * 500}… (5,000 characters)"
    )


def test_http_422_quotes_a_huge_time_and_key_in_part(tmp_path: Path) -> None:
    pytest.importorskip("fastapi")
    from server_support import app_client, auth, issue_key

    with app_client(tmp_path / "api.db") as client:
        key = issue_key(client, "acme")
        time = client.post(
            "/v1/memories/search",
            json={"query": "tea", "user_id": "ana", "as_of": "9" * HUGE},
            headers=auth(key),
        )
        name = client.post(
            "/v1/memories/search",
            json={"query": "tea", "user_id": "ana", "k" * HUGE: 1},
            headers=auth(key),
        )
        short = client.post(
            "/v1/memories/search",
            json={"query": "tea", "user_id": "ana", "as_of": "last tuesday"},
            headers=auth(key),
        )
    assert time.status_code == name.status_code == short.status_code == 422
    assert len(time.content) < 500 and len(name.content) < 500, (time.text[:300], name.text[:300])
    assert "'" + "9" * 100 + "…' (900,000 characters)" in time.json()["error"]["message"]
    assert "k" * 100 + "… (900,000 characters)" in name.json()["error"]["message"]
    assert short.json()["error"]["message"] == (
        "body.as_of: time 'last tuesday' is not an ISO-8601 date"
    )


def test_mcp_tool_errors_quote_a_huge_time_and_argument_name_in_part(tmp_path: Path) -> None:
    pytest.importorskip("mcp")
    from contextos.server.keys import KeyStore
    from mcp_support import error_text, stdio_call

    db = tmp_path / "mcp.db"
    with KeyStore(str(db)) as store:
        key = store.create("acme").secret

    async def scenario(s: Any) -> dict[str, str]:
        huge_time = {"query": "tea", "user_id": "ana", "as_of": "9" * HUGE}
        huge_name = {"user_id": "ana", "k" * HUGE: 1}
        return {
            "time": error_text(await s.call_tool("search_memory", huge_time)),
            "name": error_text(await s.call_tool("list_memories", huge_name)),
        }

    out = anyio.run(lambda: stdio_call(db, key, scenario, timeout=120))
    assert len(out["time"]) < 500 and len(out["name"]) < 500, out
    assert "'" + "9" * 100 + "…' (900,000 characters) is not an ISO-8601 date" in out["time"]
    assert "k" * 100 + "… (900,000 characters)" in out["name"]
