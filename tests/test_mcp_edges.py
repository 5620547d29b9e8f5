"""`contextos mcp` over stdio against both stores: the same validation as HTTP (hostile
arguments are tool errors, never tracebacks, and never name the database), the tools
agents need to edit memory (get, update, history, delete with purge), `messages` like
HTTP, the package version, and a busy store answered as a tool error."""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import pytest

pytest.importorskip("mcp")

from mcp.client.session import ClientSession  # noqa: E402
from mcp.client.stdio import StdioServerParameters, stdio_client  # noqa: E402

import contextos  # noqa: E402
from contextos.server.errors import package_version  # noqa: E402
from contextos.server.keys import KeyStore  # noqa: E402
from mcp_support import error_text, payload, results  # noqa: E402
from server_support import STORES, database, store_locked  # noqa: E402

CLI = [sys.executable, "-c", "from contextos.cli.main import main; main()"]
SRC = str(Path(contextos.__file__).resolve().parents[1])


@pytest.fixture(params=STORES)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with database(request.param, tmp_path) as target:
        yield target


def _key(db: str) -> str:
    with KeyStore(db) as store:
        return store.create("acme").secret


def _session(
    db: str, key: str, errlog: Path, fn: Callable[[ClientSession, Any], Awaitable[Any]]
) -> Any:
    """Run ``fn(session, init_result)`` against a fresh `contextos mcp` on ``db``."""
    params = StdioServerParameters(
        command=CLI[0],
        args=[*CLI[1:], "mcp", "--db", db, "--embedder", "hash"],
        env={"CONTEXTOS_API_KEY": key, "PYTHONPATH": SRC},
    )

    async def run() -> Any:
        with errlog.open("w") as err, anyio.fail_after(120):
            async with (
                stdio_client(params, errlog=err) as (read, write),
                ClientSession(read, write) as s,
            ):
                init = await s.initialize()
                return await fn(s, init)

    return anyio.run(run)


def _secrets_of(target: str) -> list[str]:
    if "://" not in target:
        return [target, Path(target).name]
    parts = urlsplit(target)
    return [str(parts.hostname), str(parts.port), parts.path.strip("/"), str(parts.password)]


HOSTILE: list[tuple[str, dict[str, Any], str]] = [
    ("add_memory", {"messages": "a\x00b", "user_id": "u"}, "NUL"),
    ("add_memory", {"messages": "x", "user_id": "\x00"}, "NUL"),
    ("add_memory", {"messages": "x", "user_id": "u", "metadata": {"n": 2**64}}, "64 bits"),
    (
        "add_memory",
        {"messages": "x", "user_id": "u", "event_time": "0001-01-01T00:00:00+01:00"},
        "1-9999",
    ),
    ("add_memory", {"messages": "x", "text": "y", "user_id": "u"}, "not both"),
    ("add_memory", {"messages": [], "user_id": "u"}, "messages"),
    ("add_memory", {"messages": [{"role": "root", "content": "x"}], "user_id": "u"}, "role"),
    # One union branch's problem, in the library's words (as over HTTP).
    (
        "add_memory",
        {"messages": "x" * 120_000, "user_id": "u"},
        "ValueError: messages: a memory may hold at most 100,000 characters (got 120,000); "
        "split it first",
    ),
    (
        "search_memory",
        {"query": "q", "user_id": "u", "metadata": {"k": [1]}},
        "ValueError: metadata.k: Input should be a string, a number or a boolean",
    ),
    ("search_memory", {"query": "q", "user_id": "u\x00"}, "NUL"),
    ("search_memory", {"query": "q", "user_id": "u", "limit": 2**70}, "limit"),
    (
        "search_memory",
        {"query": "q", "user_id": "u", "metadata": {"a..b": 1}},
        "dotted identifiers",
    ),
    ("search_memory", {"query": "q", "user_id": "u", "metadata": {".a": 1}}, "dotted identifiers"),
    ("list_memories", {"user_id": "u", "offset": 2**63}, "offset"),
    ("list_memories", {"user_id": "u", "limit": 2**64}, "limit"),
    ("list_memories", {"session_id": "%00\x00"}, "NUL"),
    ("get_memory", {"memory_id": "a\x00b"}, "NUL"),
    ("update_memory", {"memory_id": "a\x00b", "text": "x"}, "NUL"),
    ("update_memory", {"memory_id": "nosuch", "text": "x\x00"}, "NUL"),
    ("memory_history", {"memory_id": "\x00"}, "NUL"),
    ("delete_memory", {"memory_id": "\x00"}, "NUL"),
    ("assemble_window", {"question": "q", "user_id": "u", "session_id": "s\x00"}, "NUL"),
    ("assemble_window", {"question": "q", "user_id": "u", "token_budget": 2**64}, "token_budget"),
    # A blank id is refused by the one scope rule (never read as "not given").
    ("add_memory", {"messages": "x", "user_id": "u", "session_id": " "}, "empty or blank"),
    ("search_memory", {"query": "q", "user_id": "\t", "agent_id": "a"}, "empty or blank"),
    ("list_memories", {"user_id": "u", "agent_id": "  "}, "empty or blank"),
    ("assemble_window", {"question": "q", "user_id": " ", "session_id": "s"}, "empty or blank"),
    ("core_memory_view", {"user_id": " ", "agent_id": "a"}, "empty or blank"),
    ("conversation_search", {"query": "q", "session_id": " ", "user_id": "u"}, "empty or blank"),
]


def test_mcp_validates_like_http_and_edits_memories(db: str, tmp_path: Path) -> None:
    key = _key(db)
    errlog = tmp_path / "mcp-stderr.txt"

    async def scenario(s: ClientSession, init: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"version": init.server_info.version}
        out["hostile"] = [
            (tool, await s.call_tool(tool, args), want) for tool, args, want in HOSTILE
        ]
        turns = [
            {"role": "user", "content": "I moved to Lisbon in May"},
            {"role": "assistant", "content": "Lisbon is lovely."},
        ]
        out["added"] = results(
            await s.call_tool(
                "add_memory", {"messages": turns, "user_id": "ana", "session_id": "s1"}
            )
        )
        out["alias"] = results(
            await s.call_tool("add_memory", {"text": "My dog is called Pimenta", "user_id": "ana"})
        )
        first = out["added"][0]["id"]
        out["got"] = payload(await s.call_tool("get_memory", {"memory_id": first}))
        out["updated"] = payload(
            await s.call_tool(
                "update_memory",
                {"memory_id": first, "text": "I moved to Porto in June", "metadata": {"v": 2}},
            )
        )
        out["history"] = payload(await s.call_tool("memory_history", {"memory_id": first}))[
            "results"
        ]
        out["missing"] = await s.call_tool("get_memory", {"memory_id": "no-such-id"})
        dog = out["alias"][0]["id"]
        out["purged"] = payload(
            await s.call_tool("delete_memory", {"memory_id": dog, "purge": True})
        )
        out["purged_history"] = payload(await s.call_tool("memory_history", {"memory_id": dog}))[
            "results"
        ]
        return out

    out = _session(db, key, errlog, scenario)
    assert out["version"] == package_version() and out["version"]
    secrets = [x for x in _secrets_of(db) if x]
    for tool, result, want in out["hostile"]:
        text = error_text(result)
        assert want in text, (tool, text)
        assert not [x for x in secrets if x in text], (tool, text)
        # No union's inner labels, no pydantic prefix: the check's own words.
        assert not [x for x in ("function-after", "branch:", "Value error") if x in text], text
    assert [r["text"] for r in out["added"]] == ["I moved to Lisbon in May", "Lisbon is lovely."]
    assert out["added"][0]["session_id"] == "s1" and out["added"][0]["metadata"]["role"] == "user"
    assert out["alias"][0]["text"] == "My dog is called Pimenta"
    assert out["got"]["text"] == "I moved to Lisbon in May"
    assert (
        out["updated"]["text"] == "I moved to Porto in June"
        and out["updated"]["metadata"]["v"] == 2
    )
    assert [e["event"] for e in out["history"]] == ["ADD", "UPDATE"]
    assert out["history"][1]["old_text"] == "I moved to Lisbon in May"
    assert "NotFound" in error_text(out["missing"])
    assert out["purged"] == {"deleted": out["alias"][0]["id"], "purged": True}
    assert "Pimenta" not in json.dumps(out["purged_history"])
    assert "Traceback" not in errlog.read_text()


@pytest.mark.parametrize("kind", STORES)
def test_mcp_store_busy_is_a_tool_error_without_infrastructure(kind: str, tmp_path: Path) -> None:
    errlog = tmp_path / "mcp-stderr.txt"
    with database(kind, tmp_path, pg_options="-c lock_timeout=500") as db:
        key = _key(db)

        async def scenario(s: ClientSession, _: Any) -> tuple[Any, Any]:
            payload(await s.call_tool("add_memory", {"messages": "before", "user_id": "u"}))
            with store_locked(db):
                busy = await s.call_tool("add_memory", {"messages": "during", "user_id": "u"})
            after = await s.call_tool("add_memory", {"messages": "after", "user_id": "u"})
            return busy, after

        busy, after = _session(db, key, errlog, scenario)
        text = error_text(busy)
        assert "StoreError" in text and "busy or unavailable" in text
        assert not [x for x in _secrets_of(db) if x and x in text], text
        assert results(after)[0]["text"] == "after"


def test_mcp_history_of_an_unknown_or_other_tenants_id_is_not_found(
    db: str, tmp_path: Path
) -> None:
    """memory_history answered an empty list for an id the tenant does not have (another
    tenant's included), where get_memory says NotFound; it must say NotFound too, and a
    deleted memory's history stays readable."""
    from contextos.memory import Memory
    from contextos.testing.embedders import HashEmbedder

    key = _key(db)
    with Memory(db, embedder=HashEmbedder(), tenant="beta") as other:
        [theirs] = other.add("beta's secret", user_id="u")

    async def scenario(s: ClientSession, _: Any) -> dict[str, Any]:
        [mine] = results(await s.call_tool("add_memory", {"messages": "x", "user_id": "u"}))
        payload(await s.call_tool("delete_memory", {"memory_id": mine["id"]}))
        out: dict[str, Any] = {
            "kept": payload(await s.call_tool("memory_history", {"memory_id": mine["id"]}))[
                "results"
            ]
        }
        for name, mid in (("theirs", theirs.id), ("unknown", "no-such-id")):
            out[name] = [
                await s.call_tool(tool, {"memory_id": mid})
                for tool in ("get_memory", "memory_history")
            ]
        return out

    out = _session(db, key, tmp_path / "mcp-stderr.txt", scenario)
    assert [e["event"] for e in out["kept"]] == ["ADD", "DELETE"]
    for name in ("theirs", "unknown"):
        got, history = (error_text(r) for r in out[name])
        assert "NotFound" in history
        assert history.replace("memory_history", "get_memory") == got


def _deep(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = {"a": value}
    return value


@pytest.mark.parametrize(
    ("case", "arguments", "said"),
    [
        (
            "nested past the parser",
            {"messages": "x", "user_id": "u", "metadata": _deep(200)},
            "nests too deeply",
        ),
        (
            "a line over the limit",
            {"messages": [{"role": "user", "content": "w" * 55_000}] * 20, "user_id": "u"},
            "too long",
        ),
    ],
)
def test_a_request_the_stdio_server_cannot_read_fails_the_call_at_once(
    tmp_path: Path, case: str, arguments: dict[str, Any], said: str
) -> None:
    """A line nested deeper than the JSON parser goes, or longer than the line limit
    (20 turns of 55,000 characters, each under a memory's limit), was answered with
    ``"id": null``: the official client drops that answer and its call, with no timeout
    by default, waited for ever (a review). Answered with the request's id, the call
    fails at once, and the server goes on serving."""
    target = str(tmp_path / "m.db")
    key = _key(target)

    async def calls(s: ClientSession, _: Any) -> str:
        with anyio.fail_after(20):
            try:
                await s.call_tool("add_memory", arguments)
            except Exception as exc:  # noqa: BLE001 - the client's error is the point
                failed = str(exc)
            else:
                failed = ""
            after = await s.call_tool("list_memories", {"user_id": "u"})
        assert not after.is_error
        return failed

    failed = _session(target, key, tmp_path / "err.log", calls)
    assert said in failed, (case, failed)
