"""An update or a delete made from what was read earlier, over the CLI and MCP (and in
the store): with the text or the ``updated_at`` the caller read, it is written only while
the memory is still as read.

A review (notes/s31) found the preconditions on ``Memory.update`` and over HTTP only: an
agent on MCP or a script on the CLI that read a memory, then wrote its edit after another
process had changed it, replaced the newer text without knowing. Each test runs the real
CLI or MCP server in a subprocess, with another process's edit in between.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest

from cli_support import run_cli
from contextos.memory import Memory
from contextos.testing.embedders import HashEmbedder


def _edited_elsewhere(db: Path) -> tuple[str, dict[str, Any]]:
    """A memory as the caller read it, then edited by another writer: (id, as read)."""
    with Memory(db, embedder=HashEmbedder()) as m:
        mid = m.add("meeting on Monday", user_id="ana")[0].id
    read = json.loads(run_cli("get", mid, "--json", db=db).stdout)
    with Memory(db, embedder=HashEmbedder()) as m:
        m.update(mid, "meeting moved to Tuesday")
    return mid, read


def _text(db: Path, mid: str) -> str:
    with Memory(db, embedder=HashEmbedder()) as m:
        record = m.get(mid)
    assert record is not None
    return record.text


def test_cli_update_from_an_old_read_writes_nothing_and_exits_3(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    mid, read = _edited_elsewhere(db)
    for expected in (
        ["--expected-text", read["text"]],
        ["--expected-updated-at", read["updated_at"]],
    ):
        out = run_cli("update", mid, "--text", "meeting cancelled", *expected, db=db)
        assert out.returncode == 3, (expected, out.stderr)
        assert out.stderr.startswith("error: ") and "Traceback" not in out.stderr
        assert _text(db, mid) == "meeting moved to Tuesday"
    now = json.loads(run_cli("get", mid, "--json", db=db).stdout)
    done = run_cli(
        "update",
        mid,
        "--text",
        "meeting cancelled",
        "--expected-text",
        now["text"],
        "--expected-updated-at",
        now["updated_at"],
        db=db,
    )
    assert done.returncode == 0, done.stderr
    assert _text(db, mid) == "meeting cancelled"


def test_cli_refuses_an_expected_time_that_is_not_one(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    out = run_cli("update", "m1", "--text", "x", "--expected-updated-at", "monday", db=db)
    assert out.returncode == 2 and "--expected-updated-at" in out.stderr


def test_mcp_update_from_an_old_read_is_a_conflict(tmp_path: Path) -> None:
    pytest.importorskip("mcp")
    from mcp.client.session import ClientSession

    from contextos.server.keys import KeyStore
    from mcp_support import error_text, payload, stdio_call

    db = tmp_path / "m.db"
    with KeyStore(str(db)) as keys:
        key = keys.create("default").secret
    mid, read = _edited_elsewhere(db)

    async def scenario(s: ClientSession) -> tuple[str, str, dict[str, Any]]:
        async def update(**args: Any) -> Any:
            return await s.call_tool("update_memory", {"memory_id": mid, **args})

        by_text = error_text(await update(text="cancelled", expected_text=read["text"]))
        by_time = error_text(await update(text="cancelled", expected_updated_at=read["updated_at"]))
        got = payload(await s.call_tool("get_memory", {"memory_id": mid}))
        done = payload(await update(text="cancelled", expected_text=got["text"]))
        return by_text, by_time, done

    by_text, by_time, done = anyio.run(stdio_call, db, key, scenario)
    for said in (by_text, by_time):
        assert "changed" in said.lower() or "conflict" in said.lower(), said
    assert done["text"] == "cancelled"


def _exists(db: Path, mid: str) -> bool:
    from contextos.errors import NotFound

    with Memory(db, embedder=HashEmbedder()) as m:
        try:
            m.get(mid)
        except NotFound:
            return False
        return True


def test_cli_delete_from_an_old_read_deletes_nothing_and_exits_3(tmp_path: Path) -> None:
    """Was: ``delete`` took no precondition, so a script (or the inspector, over HTTP,
    read-then-delete) removed a version it never saw (a review, session 33)."""
    db = tmp_path / "m.db"
    mid, read = _edited_elsewhere(db)
    for expected in (
        ["--expected-text", read["text"]],
        ["--expected-updated-at", read["updated_at"]],
    ):
        out = run_cli("delete", mid, *expected, db=db)
        assert out.returncode == 3, (expected, out.stderr)
        assert _exists(db, mid)
    now = json.loads(run_cli("get", mid, "--json", db=db).stdout)
    done = run_cli("delete", mid, "--expected-updated-at", now["updated_at"], db=db)
    assert done.returncode == 0, done.stderr
    assert not _exists(db, mid)


def test_mcp_delete_from_an_old_read_is_a_conflict(tmp_path: Path) -> None:
    pytest.importorskip("mcp")
    from mcp.client.session import ClientSession

    from contextos.server.keys import KeyStore
    from mcp_support import error_text, payload, stdio_call

    db = tmp_path / "m.db"
    with KeyStore(str(db)) as keys:
        key = keys.create("default").secret
    mid, read = _edited_elsewhere(db)

    async def scenario(s: ClientSession) -> tuple[str, dict[str, Any]]:
        refused = error_text(
            await s.call_tool("delete_memory", {"memory_id": mid, "expected_text": read["text"]})
        )
        got = payload(await s.call_tool("get_memory", {"memory_id": mid}))
        done = payload(
            await s.call_tool(
                "delete_memory", {"memory_id": mid, "expected_updated_at": got["updated_at"]}
            )
        )
        return refused, done

    refused, done = anyio.run(stdio_call, db, key, scenario)
    assert "changed" in refused.lower() or "no longer" in refused.lower(), refused
    assert done == {"deleted": mid, "purged": False}
    assert not _exists(db, mid)


def test_the_store_checks_a_deletes_read_in_its_own_transaction(store: Any) -> None:
    """The check that closes the race: a record read, then changed by another writer,
    is not deleted by a ``delete_many`` based on the read, on either store; one gone
    meanwhile is NotFound. (The Memory's own look before it narrows the window, this
    shuts it: the inspector's first version read, compared, then deleted.)"""
    from contextos.errors import Conflict, NotFound

    with Memory(store=store, embedder=HashEmbedder(), background_embedding=False) as m:
        [kept] = m.add("meeting on Monday", user_id="ana")
        read = m.get(kept.id)
        assert read is not None
        m.update(kept.id, "meeting moved to Tuesday")
        with pytest.raises(Conflict):
            store.delete_many(m.tenant, [kept.id], based_on=[read])
        assert m.get(kept.id) is not None
        now = m.get(kept.id)
        assert now is not None
        assert store.delete_many(m.tenant, [kept.id], based_on=[now]) == [kept.id]
        with pytest.raises(NotFound):
            store.delete_many(m.tenant, [kept.id], based_on=[now])
