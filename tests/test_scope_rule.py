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
from contextos.engine.session import Session, search_scope
from contextos.memory import Memory
from contextos.store.base import Store
from contextos.testing.embedders import HashEmbedder
from store_support import foreign_sql

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


def test_search_scope_refuses_a_blank_session_id_it_would_drop() -> None:
    """With a user or agent the session id is dropped (memory spans sessions), but a
    blank one is still refused, not ignored."""
    for bad in BLANKS:
        with pytest.raises(ScopeError, match="session_id is empty or blank"):
            search_scope("ana", None, bad)
        with pytest.raises(ScopeError, match="session_id is empty or blank"):
            search_scope(None, "bot", bad)
    assert search_scope("ana", None, "s1") == contextos.types.scope_ids("ana")
    assert search_scope(None, None, "s1") == contextos.types.scope_ids(None, None, "s1")


def test_a_stored_row_with_a_blank_id_is_read_not_refused(store: Store) -> None:
    """The rule is for ids coming in. A row an older version wrote with a blank agent id
    (``Store.put`` had no rule) must not fail every search, get and list of its user."""
    with Memory(store=store, embedder=HashEmbedder(), background_embedding=False) as m:
        (legacy,) = m.add("tea with the agent", user_id="u1", agent_id="bot")
        (plain,) = m.add("tea for u1", user_id="u1")
        foreign_sql(store, "UPDATE memories SET agent_id = ? WHERE id = ?", (" ", legacy.id))
        got = store.get(m.tenant, legacy.id)
        assert got is not None and got.scope.agent_id == " "
        assert {h.record.id for h in m.search("tea", user_id="u1")} == {legacy.id, plain.id}
        assert {r.id for r in m.get_all(user_id="u1")} == {legacy.id, plain.id}
        assert m.get(legacy.id).text == "tea with the agent"
        with pytest.raises(ScopeError, match="agent_id is empty or blank"):
            m.search("tea", user_id="u1", agent_id=" ")  # still refused coming in


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


@pytest.mark.parametrize("field", ["user_id", "agent_id", "session_id"])
def test_an_id_over_256_characters_is_refused_everywhere(field: str, tmp_path: Path) -> None:
    """The HTTP API, MCP and the inspector refuse ids over 256 characters (a 422); the
    library and the CLI stored them, and what they stored could then not be read or
    forgotten there (a review). 256 characters are fine."""
    with Memory(tmp_path / "long.db", embedder=HashEmbedder(), background_embedding=False) as m:
        m.add("fits", **_with(field, "x" * 256))
        with pytest.raises(ScopeError, match="257 characters long: at most 256"):
            m.add("too long", **_with(field, "x" * 257))
        with pytest.raises(ScopeError, match="at most 256"):
            m.get_all(**_with(field, "y" * 300))
        assert [r.text for r in m.get_all(**_with(field, "x" * 256))] == ["fits"]
    flag = {"user_id": "-u", "agent_id": "-a", "session_id": "-s"}[field]
    out = run_cli("add", "too long", flag, "z" * 257, db=tmp_path / "long.db")
    assert out.returncode == 2 and "at most 256" in out.stderr, out.stderr
