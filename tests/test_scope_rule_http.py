"""The one id rule over HTTP (``types.scope_id``): a blank user, agent or session id
is a 422 naming the field. Apart from ``test_scope_rule`` so that a checkout without
the server extra skips only these tests, not the library's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")

from server_support import app_client, assert_error, auth, issue_key  # noqa: E402

BLANKS = ["", "   ", "\t\n"]

B = "{blank}"
#: (method, path, JSON body or query) with B where the blank id goes.
REQUESTS: list[tuple[str, str, dict[str, Any]]] = [
    ("POST", "/v1/memories", {"messages": "x", "user_id": B}),
    ("POST", "/v1/memories", {"messages": "x", "user_id": "u", "session_id": B}),
    ("POST", "/v1/memories/search", {"query": "x", "user_id": "u", "agent_id": B}),
    ("POST", "/v1/memories/search", {"query": "x", "user_id": B, "session_id": "s1"}),
    ("POST", "/v1/memories/forget", {"user_id": B}),
    ("GET", "/v1/memories", {"user_id": "u", "session_id": B}),
    ("GET", "/v1/sessions", {"user_id": B}),
    ("POST", "/v1/sessions/s1/turns", {"messages": [{"content": "hi"}], "agent_id": B}),
    ("POST", "/v1/sessions/s1/window", {"question": "q", "user_id": B}),
    ("POST", "/v1/agent/tools/core_memory_append", {"user_id": B, "agent_id": "bot"}),
    ("GET", "/v1/agent/core", {"user_id": B, "agent_id": "bot"}),
    ("GET", "/ui/api/memories", {"user_id": "u", "agent_id": B}),
]
#: Paths with a session id in them (an empty path segment is another route: blank only).
PATHS: list[tuple[str, str, dict[str, Any]]] = [
    ("POST", "/v1/sessions/{blank}/turns", {"messages": [{"content": "hi"}], "user_id": "u"}),
    ("GET", "/v1/sessions/{blank}/turns", {}),
    ("POST", "/v1/sessions/{blank}/window", {"question": "q", "user_id": "u"}),
    ("GET", "/ui/api/sessions/{blank}/cache", {}),
]


def _fill(value: Any, blank: str) -> Any:
    if isinstance(value, dict):
        return {k: _fill(v, blank) for k, v in value.items()}
    return blank if value == B else value


def test_the_http_api_answers_a_blank_id_with_a_422_naming_the_field(tmp_path: Path) -> None:
    with app_client(tmp_path / "server.db") as client:
        headers = auth(issue_key(client, "acme"))
        for method, path, data in REQUESTS:
            field = next(k for k, v in data.items() if v == B)
            for blank in BLANKS:
                filled = _fill(data, blank)
                kwargs = {"params": filled} if method == "GET" else {"json": filled}
                resp = client.request(method, path, headers=headers, **kwargs)
                error = assert_error(resp, 422, "InvalidRequest")
                assert field in error["message"], (method, path, error)
                if blank.strip() == "" and blank:
                    assert "empty or blank" in error["message"], (method, path, error)
        for method, path, data in PATHS:
            url = path.replace(B, "%20%20%20")
            kwargs = {"params": data} if method == "GET" else {"json": data}
            error = assert_error(client.request(method, url, headers=headers, **kwargs), 422)
            assert "session_id" in error["message"] and "empty or blank" in error["message"]
        # Nothing was written under a blank id, nor under the good id beside it.
        listed = client.get("/v1/memories", params={"user_id": "u"}, headers=headers)
        assert listed.json()["results"] == []
