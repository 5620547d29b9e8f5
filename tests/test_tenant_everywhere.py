"""One tenant rule and one default tenant for Memory, Session, the CLI and the server.

Found by a first-hour review: ``Memory(tenant=...)`` took any name (``""``, ``"a b"``,
``5``) while the CLI and the key table refused them, so such rows could never be read
from the CLI or a server; and ``Session`` logged in tenant "default" whatever
``CONTEXTOS_TENANT`` said, so the README's ten lines with the variable set kept the
memories in one tenant and the conversation in another, where ``contextos session show``
did not find it. Real SQLite files and the real CLI.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from cli_support import run_cli
from contextos import Memory
from contextos.engine.session import Session
from contextos.store.sqlite import SQLiteStore
from contextos.testing.embedders import HashEmbedder
from contextos.types import Message


@pytest.mark.parametrize("bad", ["", "  ", "a b", "bad/tenant!", "-x", "t" * 129, "acme\n"])
def test_memory_refuses_a_tenant_the_cli_and_server_cannot_name(tmp_path: Path, bad: str) -> None:
    db = tmp_path / "m.db"
    with pytest.raises(ValueError, match="tenant must be"):
        Memory(db, tenant=bad, embedder=HashEmbedder())
    store = SQLiteStore(tmp_path / "s.db")
    try:
        with pytest.raises(ValueError, match="tenant must be"):
            Session(store, "chat", tenant=bad)
    finally:
        store.close()
    result = run_cli("--tenant", bad, "list", "-u", "ana", db=db)
    assert result.returncode == 2 and "tenant must be" in result.stderr


def test_a_tenant_that_is_not_a_string_is_a_type_error(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="tenant must be a string"):
        Memory(tmp_path / "m.db", tenant=5, embedder=HashEmbedder())  # type: ignore[arg-type]


def test_a_session_logs_in_the_tenant_of_the_memory_beside_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "m.db"
    monkeypatch.setenv("CONTEXTOS_TENANT", "acme")
    with Memory(db, embedder=HashEmbedder()) as memory:  # the README's ten lines
        memory.add("I prefer window seats.", user_id="ana")
        chat = Session(memory.store, "chat-1", user_id="ana")
        chat.add(Message("user", "Book me a flight to Lisbon."))
        assert chat.scope.tenant == memory.tenant == "acme"
    with sqlite3.connect(db) as con:
        assert {t for (t,) in con.execute("SELECT DISTINCT tenant FROM turns")} == {"acme"}
    shown = run_cli(
        "session", "show", "chat-1", "-u", "ana", db=db, env={"CONTEXTOS_TENANT": "acme"}
    )
    assert shown.returncode == 0 and "Lisbon" in shown.stdout, shown.stderr
    monkeypatch.delenv("CONTEXTOS_TENANT")
    with Memory(db, embedder=HashEmbedder()) as memory:
        assert Session(memory.store, "c").scope.tenant == memory.tenant == "default"


def test_a_session_made_from_a_memory_logs_in_its_tenant(tmp_path: Path) -> None:
    """``Session(Memory(tenant="acme").store, ...)`` logged in "default"; ``Session(memory,
    ...)``, the natural mistake, failed at the first add with an AttributeError."""
    with Memory(tmp_path / "m.db", tenant="acme", embedder=HashEmbedder()) as memory:
        chat = Session(memory, "chat-1", user_id="ana")
        chat.add(Message("user", "hello"))
        assert chat.scope.tenant == "acme" and chat.store is memory.store
        assert Session(memory, "chat-2", tenant="other").scope.tenant == "other"
        with pytest.raises(TypeError, match="a Session logs into a Store or a Memory"):
            Session(object(), "chat-3")  # type: ignore[arg-type]
    shown = run_cli(
        "--tenant", "acme", "session", "show", "chat-1", "-u", "ana", db=tmp_path / "m.db"
    )
    assert shown.returncode == 0 and "hello" in shown.stdout, shown.stderr
