"""What a model reads from ``contextos mcp``, through the official MCP client over stdio
and streamable HTTP (a review of session 58):

* every tool answers one object in one block of compact JSON (an empty search was no
  block at all, a list one block per item, pretty-printed);
* search hits and list entries are bounded for a model (a default search answered
  1.6 MB): long texts are cut and marked ``truncated``, ``get_memory`` reads them whole,
  a search keeps about 40,000 characters, a list pages by them;
* an unknown tool's name comes back cut and escaped, with the tools there are;
* behind a reverse proxy on the same host (any ``Host``, an ``Origin``) the server
  answers, and a body that is not JSON gets a JSON-RPC error;
* descriptions carry no docstring indentation and name no HTTP route; the type filter
  is ``memory_types`` in both filters (one type alone taken), a misspelt argument is
  told the right name.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest

pytest.importorskip("mcp")

from mcp.client.session import ClientSession  # noqa: E402

from contextos.memory import Memory  # noqa: E402
from contextos.server.keys import KeyStore  # noqa: E402
from contextos.server.mcp_results import RESULT_CHARS, TEXT_CHARS  # noqa: E402
from contextos.testing.embedders import HashEmbedder  # noqa: E402
from mcp_support import MCP_HEADERS, error_text, mcp_over_http, payload, stdio_call  # noqa: E402

#: A memory of nearly the most characters one may hold, and nearly the most metadata.
LONG = 99_000
BLOB = {"blob": "m" * 60_000}
#: A tool name that would move the cursor, print in red and fake a log line, raw.
HOSTILE = "evil\x1b[31mRED\x1b[0m\nFAKE LOG LINE"


def _seeded(db: Path) -> str:
    """A key of tenant acme, whose user ``big`` has 12 long memories with long metadata
    and user ``many`` 40 memories of 1,900 characters (not cut, 76,000 in all)."""
    with KeyStore(str(db)) as keys:
        key = keys.create("acme").secret
    with Memory(str(db), embedder=HashEmbedder(), tenant="acme") as m:
        for i in range(12):
            m.add(f"report {i} about the harbour " + "h" * LONG, user_id="big", metadata=BLOB)
        for i in range(40):
            m.add(f"harbour note {i} " + "n" * 1_880, user_id="many")
        assert m.flush(timeout=60)
    return key


def _text(result: Any) -> str:
    return "".join(getattr(block, "text", "") for block in result.content)


async def _reads(s: ClientSession) -> dict[str, Any]:
    out: dict[str, Any] = {"tools": (await s.list_tools()).tools}
    search = await s.call_tool("search_memory", {"query": "harbour report", "user_id": "big"})
    out["search"], out["search_chars"] = payload(search), len(_text(search))
    many = {"query": "harbour note", "user_id": "many", "limit": 40}
    out["many"] = payload(await s.call_tool("search_memory", many))
    out["none"] = await s.call_tool("search_memory", {"query": "nothing", "user_id": "nobody"})
    first = out["search"]["results"][0]["id"]
    out["whole"] = payload(await s.call_tool("get_memory", {"memory_id": first}))
    pages: list[dict[str, Any]] = []
    after = None
    while len(pages) < 20:
        args = {"user_id": "big", **({"after": after} if after else {})}
        listed = await s.call_tool("list_memories", args)
        pages.append({**payload(listed), "chars": len(_text(listed))})
        after = pages[-1]["next_after"]
        if after is None:
            break
    out["pages"] = pages
    out["added"] = await s.call_tool("add_memory", {"messages": "short one", "user_id": "u"})
    return out


def _check_reads(out: dict[str, Any]) -> None:
    search = out["search"]
    assert out["search_chars"] < RESULT_CHARS + 5_000, out["search_chars"]  # was 1.6 MB
    assert len(search["results"]) == 10 and search["cut"] is False
    for hit in search["results"]:
        assert hit["truncated"] == ["text", "metadata"] and "metadata" not in hit
        assert len(hit["text"]) == TEXT_CHARS and hit["text_chars"] > LONG
    assert "get_memory" in search["note"]
    assert len(out["whole"]["text"]) > LONG and out["whole"]["metadata"]["blob"] == BLOB["blob"]
    # 40 hits of 1,900 characters: as many as fit, and it says how many were left out
    many = out["many"]
    assert many["cut"] is True and 10 < len(many["results"]) < 40
    assert f"{40 - len(many['results'])} more hits" in many["note"]
    assert not any("truncated" in hit for hit in many["results"])
    # no hit: one block all the same, not an empty result
    assert payload(out["none"]) == {"results": [], "cut": False}
    # a list pages within the bound, every memory once, by next_after
    ids = [r["id"] for page in out["pages"] for r in page["results"]]
    assert len(ids) == len(set(ids)) == 12 and len(out["pages"]) > 1
    for page in out["pages"]:
        assert page["chars"] < RESULT_CHARS, page["chars"]
        assert all(r["truncated"] == ["text", "metadata"] for r in page["results"])
    [added] = payload(out["added"])["results"]
    assert set(payload(out["added"])) == {"results"} and added["text"] == "short one"


def _check_descriptions(tools: list[Any]) -> None:
    for tool in tools:
        description = tool.description or ""
        assert "\n " not in description, (tool.name, description)
        assert "/v1/" not in description.replace("/v1/sessions/", ""), (tool.name, description)
    schema = {t.name: t.input_schema for t in tools}
    assert "memory_types" in schema["list_memories"]["properties"]
    assert schema["list_memories"]["properties"]["memory_type"]["deprecated"] is True


def test_results_are_one_bounded_object_over_stdio(tmp_path: Path) -> None:
    db = tmp_path / "mcp.db"
    key = _seeded(db)
    out = anyio.run(stdio_call, db, key, _reads)
    _check_reads(out)
    _check_descriptions(out["tools"])


async def _names(s: ClientSession) -> dict[str, Any]:
    calls = {
        "hostile": ("x" * 900_000, {}),
        "escaped": (HOSTILE, {}),
        "forget": ("forget", {"user_id": "u"}),
        "misspelt": ("search_memory", {"query": "q", "user_id": "u", "memory_type": ["semantic"]}),
    }
    out: dict[str, Any] = {n: await s.call_tool(t, a) for n, (t, a) in calls.items()}
    one = {"user_id": "big", "memory_types": "episodic", "limit": 1}
    out["one_type"] = payload(await s.call_tool("list_memories", one))
    old = {"user_id": "big", "memory_type": ["semantic"]}
    out["old_name"] = payload(await s.call_tool("list_memories", old))
    return out


def _check_names(out: dict[str, Any], log: str) -> None:
    hostile = error_text(out["hostile"])
    assert len(hostile) < 1_000 and "(900,000 characters)" in hostile, hostile[:300]
    escaped = error_text(out["escaped"])
    assert "\x1b" not in escaped and "\n" not in escaped, escaped
    assert repr(HOSTILE) in escaped and "the tools are add_memory, search_memory" in escaped
    forget = error_text(out["forget"])
    assert "Unknown tool: 'forget' (erasing a whole user" in forget and "delete_memory" in forget
    misspelt = error_text(out["misspelt"])
    assert "memory_type: Extra inputs are not permitted (did you mean memory_types?)" in misspelt
    assert len(out["one_type"]["results"]) == 1 and out["old_name"]["results"] == []
    for raw in ("\x1b", "FAKE LOG LINE", "x" * 1000):
        assert raw not in log


def test_unknown_tools_and_misspelt_arguments_over_stdio(tmp_path: Path) -> None:
    db = tmp_path / "mcp.db"
    key = _seeded(db)
    errlog = tmp_path / "stderr.txt"
    out = anyio.run(partial(stdio_call, errlog=errlog), db, key, _names)
    _check_names(out, errlog.read_text(errors="replace"))


def test_behind_a_proxy_over_streamable_http(tmp_path: Path) -> None:
    """A proxy on the same host that keeps the public name in ``Host`` (Caddy, Traefik,
    nginx ``proxy_set_header Host $host``) and a browser's ``Origin``: the SDK answered
    421 "Invalid Host header" in plain text to every request (the official client said
    only "Server returned an error response")."""
    httpx = pytest.importorskip("httpx")
    httpx2 = pytest.importorskip("httpx2")
    from mcp.client.streamable_http import streamable_http_client

    db = tmp_path / "mcp.db"
    key = _seeded(db)
    proxied = {
        "Authorization": f"Bearer {key}",
        "Host": "memory.example.com",
        "Origin": "https://app.example.com",
    }
    log = tmp_path / "stderr.txt"

    async def session(url: str) -> dict[str, Any]:
        with anyio.fail_after(120):
            async with (
                httpx2.AsyncClient(headers=proxied, timeout=60) as http,
                streamable_http_client(f"{url}/mcp", http_client=http) as (read, write, *_),
                ClientSession(read, write) as s,
            ):
                await s.initialize()
                return {**await _reads(s), **await _names(s)}

    with mcp_over_http(db, stderr=log) as url:
        out = anyio.run(session, url)
        with httpx.Client(base_url=url, timeout=30) as http:
            call = {"jsonrpc": "2.0", "id": 7, "method": "tools/list"}
            headers = {**MCP_HEADERS, **proxied, "Content-Type": "text/plain"}
            plain = http.post("/mcp", content=json.dumps(call), headers=headers)
    _check_reads(out)
    _check_descriptions(out["tools"])
    _check_names(out, log.read_text(errors="replace"))
    assert plain.status_code == 400 and plain.json()["id"] == 7, plain.text
    assert "Content-Type: application/json" in plain.json()["error"]["message"]
    assert "Invalid Host header" not in log.read_text(errors="replace")
