"""One rule for user/agent/session ids everywhere one is passed (``types.scope_id``).

None means "not given". An empty or blank id is a ScopeError (a ValueError) from the
library, a 422 naming the field from the HTTP API, a tool error from MCP and a usage
error (exit 2) from the CLI; it is never read as "not given". Each case below passes
a blank id beside a good one, so a path that took "" for "not given" would succeed
with the good id alone and the test would fail.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import contextos
from cli_support import run_cli
from contextos import Filter, Scope, ScopeError
from contextos.agent.core_memory import CoreMemory
from contextos.agent.tools import scoped_tools
from contextos.engine.context import SessionContext
from contextos.engine.session import Session
from contextos.memory import Memory

BLANKS = ["", "   ", "\t\n"]
OTHER = {"user_id": "ana", "agent_id": "bot", "session_id": "s1"}


def _with(field: str, value: object) -> dict[str, Any]:
    """``field`` set to ``value`` beside another, good id (so the call is scoped anyway)."""
    other = "agent_id" if field == "user_id" else "user_id"
    return {other: OTHER[other], field: value}


#: Every library entry point that takes ids, and the ids it takes.
ENTRIES: dict[str, tuple[tuple[str, ...], Callable[[Memory, dict[str, Any]], object]]] = {
    "Memory.add": (tuple(OTHER), lambda m, ids: m.add("I drink tea", **ids)),
    "Memory.search": (tuple(OTHER), lambda m, ids: m.search("tea", **ids)),
    "Memory.get_all": (tuple(OTHER), lambda m, ids: m.get_all(**ids)),
    "Filter": (
        tuple(OTHER),
        lambda m, ids: m.search("tea", filters=Filter(scope=Scope(tenant=m.tenant, **ids))),
    ),
    "Session": (
        tuple(OTHER),
        lambda m, ids: Session(
            m.store,
            ids.pop("session_id", "s1"),
            tenant=m.tenant,
            user_id=ids.get("user_id"),
            agent_id=ids.get("agent_id"),
        ),
    ),
    "SessionContext": (
        ("user_id", "agent_id"),
        lambda m, ids: SessionContext(memory=m, **ids),
    ),
    "SessionContext(session=...)": (
        tuple(OTHER),
        lambda m, ids: SessionContext(
            memory=m,
            session=ids.pop("session_id", "s1"),
            user_id=ids.get("user_id"),
            agent_id=ids.get("agent_id"),
        ),
    ),
    "CoreMemory (owner_scope)": (
        ("user_id", "agent_id"),
        lambda m, ids: CoreMemory(m, **ids),
    ),
    "scoped_tools": (tuple(OTHER), lambda m, ids: scoped_tools(m, **ids)),
}
CASES = [
    pytest.param(entry, field, bad, id=f"{entry}-{field}-{bad!r}")
    for entry, (fields, _) in ENTRIES.items()
    for field in fields
    for bad in BLANKS
]


@pytest.mark.parametrize(("entry", "field", "bad"), CASES)
def test_a_blank_id_is_a_scope_error_at_every_entry_point(
    memory: Memory, entry: str, field: str, bad: str
) -> None:
    call = ENTRIES[entry][1]
    with pytest.raises(ScopeError, match=f"{field} is empty or blank"):
        call(memory, _with(field, bad))
    assert isinstance(ScopeError("x"), ValueError)  # callers catching ValueError keep working


@pytest.mark.parametrize("entry", sorted(ENTRIES))
def test_a_non_string_id_is_a_type_error(memory: Memory, entry: str) -> None:
    fields, call = ENTRIES[entry]
    with pytest.raises(TypeError, match=f"{fields[0]} must be a string or None, not int"):
        call(memory, _with(fields[0], 5))


def test_forget_takes_the_same_rule(memory: Memory) -> None:
    memory.add("I drink tea", user_id="ana")
    for bad in BLANKS:
        with pytest.raises(ScopeError, match="user_id is empty or blank"):
            memory.forget(bad)
    with pytest.raises(ScopeError, match="needs the user_id"):
        memory.forget(None)  # type: ignore[arg-type]
    assert memory.forget("ana") == 1


def test_none_is_not_given_and_an_id_is_kept_as_given(memory: Memory) -> None:
    (record,) = memory.add("I drink tea", user_id=" ana ", agent_id=None, session_id=None)
    assert record.scope.within_tenant() == (" ana ", None, None)
    assert [r.id for r in memory.get_all(user_id=" ana ", session_id=None)] == [record.id]
    assert memory.get_all(user_id="ana") == []  # not stripped: another user


def test_scope_ids_are_made_one_way() -> None:
    """``ScopeIds`` is built only by ``types.scope_ids`` (Scope.ids, the HTTP bodies, the
    session context, the CLI's flags and the search scope all call it), so the id rule
    cannot be left out of one copy."""
    src = Path(contextos.__file__).parent
    built = []
    for path in sorted(src.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for fn in ast.walk(tree):
            if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(fn):
                callee = node.func if isinstance(node, ast.Call) else None
                name = getattr(callee, "id", getattr(callee, "attr", None))
                if name == "ScopeIds":
                    built.append(f"{path.relative_to(src)}:{fn.name}")
    assert built == ["types.py:scope_ids"]
    with pytest.raises(ScopeError, match="agent_id is empty or blank"):
        contextos.types.scope_ids("ana", " ")
    assert Scope(user_id="ana", session_id="s1").ids() == contextos.types.scope_ids(
        "ana", None, "s1"
    )


# -- HTTP -------------------------------------------------------------------------------

pytest.importorskip("fastapi")

from server_support import app_client, assert_error, auth, issue_key  # noqa: E402

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


# -- CLI --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (("add", "x", "-u", "ana", "-s", " "), "--session-id"),
        (("search", "x", "-u", " ", "-a", "bot"), "--user-id"),
        (("list", "-u", "ana", "-a", ""), "--agent-id"),
        (("forget", "-u", "  ", "--yes"), "--user-id"),
        (("session", "add", " ", "hi"), "SESSION_ID"),
        (("window", "--session", "s1", "-q", "q", "--user-id", " "), "--user-id"),
    ],
)
def test_the_cli_refuses_a_blank_id_as_a_usage_error(
    tmp_path: Path, args: tuple[str, ...], option: str
) -> None:
    out = run_cli(*args, db=tmp_path / "cli.db")
    assert out.returncode == 2, out.stderr
    assert option in out.stderr and "empty or blank" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
