"""A memory's history and list pages over HTTP and MCP, as the s40 history review found
them.

- ``GET /v1/memories/{id}/history`` and MCP ``memory_history`` answered every event whole:
  a 100,000-character memory updated 60 times made a 36 MB answer, and eight at once took
  the server from 227 to 468 MB. Both now answer a page at a time, by the number of the
  event (``after_seq`` / ``next_after_seq``, as a session's turns), within the 4 MiB a
  list page holds (``MAX_PAGE_BYTES``).
- MCP ``list_memories`` paged by offset only, so a page read after another client's adds
  repeated rows, and its documented walk "until a page comes back empty" never ended
  under a steady writer. It takes the HTTP list's key (``after``) and answers the next
  one (``next_after``), in the HTTP list's shape.
- A ``DELETE`` with ``expected_text`` (a purge's precondition) wrote the text it erased
  into the access log at ``--log-level info``: the log holds its length only.
- Times were written ``Z`` by HTTP and ``+00:00`` by the CLI's ``--json`` and MCP's
  records: one shape (``Z``) everywhere.

A real ``contextos serve`` on loopback, ``contextos mcp`` over stdio and the CLI on one
SQLite file, the hash embedder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp.client.session import ClientSession

from cli_support import keyed_server, logged_server, run_cli
from contextos.errors import NotFound
from contextos.memory import Memory
from contextos.server.keys import KeyStore
from contextos.server.ops import HISTORY_BATCH, event_bytes, history_page
from contextos.server.schemas import MAX_PAGE_BYTES, HistoryPageIn
from contextos.store.sqlite import SQLiteStore
from contextos.testing.embedders import HashEmbedder
from contextos.types import HistoryEvent
from mcp_support import error_text, payload, results, stdio_call

pytestmark = pytest.mark.timeout(300)

#: A memory of the most characters one may hold, 300 KB of UTF-8 ("€" is three bytes):
#: an UPDATE event carries two of them.
BIG = 100_000
UPDATES = 12  # 13 events, 7.5 MB of texts: more than one page
#: What a page's JSON may hold beyond its texts (field names, ids, times).
SLACK = 16 * 1024


def big_text(version: int) -> str:
    return "€" * (BIG - 8) + f" v{version:06d}"


def served(db: Path) -> Any:
    """``contextos serve`` on ``db`` (the hash embedder) with a key of tenant ``acme``: a
    client sending it, and the key (for ``contextos mcp`` on the same file)."""
    return keyed_server(str(db), "--embedder", "hash", timeout=120)


def http_history(c: httpx.Client, memory_id: str, **params: Any) -> list[httpx.Response]:
    """Every page of a memory's history over HTTP, following ``next_after_seq``."""
    pages: list[httpx.Response] = []
    after = -1
    while True:
        resp = c.get(f"/v1/memories/{memory_id}/history", params={**params, "after_seq": after})
        assert resp.status_code == 200, resp.text[:300]
        pages.append(resp)
        after = resp.json()["next_after_seq"]
        if after is None:
            return pages
        assert len(pages) < 50, "the walk does not end"


def test_history_comes_in_pages_within_the_page_bytes_over_http_and_mcp(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    with served(db) as (c, key):
        added = c.post("/v1/memories", json={"messages": big_text(0), "user_id": "big"})
        mid = added.json()["results"][0]["id"]
        for version in range(1, UPDATES + 1):
            resp = c.patch(f"/v1/memories/{mid}", json={"text": big_text(version)})
            assert resp.status_code == 200, resp.text[:300]

        pages = http_history(c, mid)
        counted = http_history(c, mid, limit=5)
        bodies = [p.json() for p in pages]
        # Past the end, and malformed numbers, as a session's turns answer them.
        past = c.get(f"/v1/memories/{mid}/history", params={"after_seq": UPDATES})
        refused = [
            c.get(f"/v1/memories/{mid}/history", params=params).status_code
            for params in ({"after_seq": -2}, {"limit": 0}, {"limit": 1001}, {"after_seq": "x"})
        ]
        unknown = c.get("/v1/memories/no-such-id/history").status_code

        async def scenario(s: ClientSession) -> dict[str, Any]:
            walked: list[dict[str, Any]] = []
            after = -1
            while after is not None and len(walked) < 50:
                args = {"memory_id": mid, "after_seq": after}
                walked.append(payload(await s.call_tool("memory_history", args)))
                after = walked[-1]["next_after_seq"]
            tools = {t.name: t.input_schema for t in (await s.list_tools()).tools}
            bad = await s.call_tool("memory_history", {"memory_id": mid, "after_seq": -2})
            return {"pages": walked, "schema": tools["memory_history"], "bad": error_text(bad)}

        mcp = anyio.run(stdio_call, db, key, scenario)

    assert len(pages) > 1
    for page in pages:  # each answer within the bound a list page keeps
        assert len(page.content) <= MAX_PAGE_BYTES + SLACK, len(page.content)
    events = [e for body in bodies for e in body["results"]]
    assert [e["event"] for e in events] == ["ADD"] + ["UPDATE"] * UPDATES
    assert [e["new_text"] for e in events] == [big_text(v) for v in range(UPDATES + 1)]
    assert [e["old_text"] for e in events[1:]] == [big_text(v) for v in range(UPDATES)]
    # Each page's key is the number of its last event (the first is 0).
    seen = 0
    for body in bodies:
        seen += len(body["results"])
        assert body["next_after_seq"] == (seen - 1 if seen < UPDATES + 1 else None)
    assert [len(p.json()["results"]) for p in counted] == [5, 5, 3]
    assert [e for p in counted for e in p.json()["results"]] == events
    assert past.status_code == 200 and past.json() == {"results": [], "next_after_seq": None}
    assert refused == [422] * 4
    assert unknown == 404
    # MCP answers the same events in the same shape, in pages bounded for a model (an
    # event of two 100,000-character texts is past the bound: one a page, whole).
    assert [e for p in mcp["pages"] for e in p["results"]] == events
    assert [len(p["results"]) for p in mcp["pages"]] == [1] * (UPDATES + 1)
    assert {"after_seq", "limit"} <= set(mcp["schema"]["properties"])
    assert mcp["schema"]["properties"]["after_seq"]["minimum"] == -1
    assert "after_seq" in mcp["bad"]


def test_mcp_list_memories_pages_by_the_http_key_under_concurrent_adds(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    with served(db) as (c, key):
        for i in range(20):
            c.post("/v1/memories", json={"messages": f"memory {i}", "user_id": "ana"})

        async def scenario(s: ClientSession) -> dict[str, Any]:
            async def page(**args: Any) -> dict[str, Any]:
                return dict(payload(await s.call_tool("list_memories", {"user_id": "ana", **args})))

            first = await page(limit=10)
            added = [{"role": "user", "content": f"new {i}"} for i in range(5)]
            await s.call_tool("add_memory", {"messages": added, "user_id": "ana"})
            second = await page(limit=10, after=first["next_after"])
            # A steady writer: an add before every page; the walk by key still ends.
            walk = [await page(limit=3)]
            while walk[-1]["next_after"] is not None and len(walk) < 50:
                args = {"messages": f"writer {len(walk)}", "user_id": "ana"}
                await s.call_tool("add_memory", args)
                walk.append(await page(limit=3, after=walk[-1]["next_after"]))
            tools = {t.name: t.input_schema for t in (await s.list_tools()).tools}
            forged = await s.call_tool("list_memories", {"user_id": "ana", "after": "x"})
            return {
                "first": first,
                "second": second,
                "walk": walk,
                "schema": tools["list_memories"],
                "forged": error_text(forged),
            }

        out = anyio.run(stdio_call, db, key, scenario)
        # The same key read over HTTP: the same page, in the same shape.
        http_second = c.get(
            "/v1/memories",
            params={"user_id": "ana", "limit": 10, "after": out["first"]["next_after"]},
        ).json()

    first, second = out["first"], out["second"]
    texts = lambda page: [r["text"] for r in page["results"]]  # noqa: E731
    assert texts(first) == [f"memory {i}" for i in range(19, 9, -1)]
    assert texts(second) == [f"memory {i}" for i in range(9, -1, -1)]  # nothing repeated
    assert second["next_after"] is None and second["next_offset"] is None
    assert second == http_second
    walked = [t for page in out["walk"] for t in texts(page)]
    assert len(out["walk"]) <= 10 and out["walk"][-1]["next_after"] is None
    assert len(walked) == len(set(walked))  # no row twice
    assert {f"memory {i}" for i in range(20)} <= set(walked)
    assert "after" in out["schema"]["properties"]
    assert "next_after" in out["schema"]["properties"]["after"]["description"]
    # named as the tool's argument: over MCP there is no query string
    assert "InvalidRequest: after: not a key of this list" in out["forged"], out["forged"]


def test_every_surface_writes_a_memorys_times_in_one_shape(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    with served(db) as (c, key):
        added = c.post("/v1/memories", json={"messages": "Ana likes tea", "user_id": "ana"})
        mid = added.json()["results"][0]["id"]
        patched = c.patch(f"/v1/memories/{mid}", json={"text": "Ana likes green tea"}).json()
        http_get = c.get(f"/v1/memories/{mid}").json()
        http_events = c.get(f"/v1/memories/{mid}/history").json()["results"]

        async def scenario(s: ClientSession) -> dict[str, Any]:
            listed = payload(await s.call_tool("list_memories", {"user_id": "ana"}))
            history = payload(await s.call_tool("memory_history", {"memory_id": mid}))
            return {
                "get": payload(await s.call_tool("get_memory", {"memory_id": mid})),
                "list": listed["results"][0],
                "search": results(
                    await s.call_tool("search_memory", {"query": "tea", "user_id": "ana"})
                )[0],
                "history": history["results"],
            }

        mcp = anyio.run(stdio_call, db, key, scenario)
    env = {"CONTEXTOS_TENANT": "acme"}
    cli_get = json.loads(run_cli("get", mid, "--json", db=db, env=env).stdout)
    cli_events = json.loads(run_cli("history", mid, "--json", db=db, env=env).stdout)
    cli_list = json.loads(run_cli("list", "--user-id", "ana", "--json", db=db, env=env).stdout)

    times = ("created_at", "updated_at", "valid_from")
    for record in (patched, mcp["get"], mcp["list"], mcp["search"], cli_get, cli_list[0]):
        assert {t: record[t] for t in times} == {t: http_get[t] for t in times}, record
    assert http_get["updated_at"].endswith("Z")
    http_at = [e["at"] for e in http_events]
    assert all(at.endswith("Z") for at in http_at)
    assert [e["at"] for e in mcp["history"]] == [e["at"] for e in cli_events] == http_at


def _purged_line(lines: list[str], memory_id: str) -> list[str]:
    return [ln for ln in lines if f'"DELETE /v1/memories/{memory_id}?' in ln]


def test_a_deletes_expected_text_reaches_the_access_log_as_its_length(tmp_path: Path) -> None:
    db, log = str(tmp_path / "m.db"), tmp_path / "serve.log"
    secret = "My HIV test came back positive"
    with KeyStore(db) as keys:
        key = keys.create("acme").secret
    with logged_server(db, log, "--log-level", "info") as (url, proc):
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}) as c:
            added = c.post("/v1/memories", json={"messages": secret, "user_id": "zed"})
            mid = added.json()["results"][0]["id"]
            path = f"/v1/memories/{mid}"
            # A stale precondition (409), the same key escaped (as the app reads it), and
            # the purge itself.
            stale = c.delete(path, params={"expected_text": "My HIV test was negative"})
            escaped = c.delete(f"{path}?expected%5Ftext=HIV%20status%3A%20unknown&purge=true")
            purged = c.delete(path, params={"purge": "true", "expected_text": secret})
        proc.terminate()
        proc.wait(timeout=60)
    assert (stale.status_code, escaped.status_code, purged.status_code) == (409, 409, 200)
    text = log.read_text("utf-8")
    assert "HIV" not in text and "negative" not in text and "unknown" not in text
    lines = _purged_line(text.splitlines(), mid)
    assert len(lines) == 3, text
    assert f"{mid}?expected_text=<24 chars> " in lines[0]
    assert f"{mid}?expected%5Ftext=<19 chars>&purge=true " in lines[1]
    assert f"{mid}?purge=true&expected_text=<{len(secret)} chars> " in lines[2]


class _CountingHistory:
    """A real SQLite store that counts the bytes of the history events it reads (at the
    Store seam): what a history page holds in memory while it is cut."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.read_bytes = 0

    def history(self, tenant: str, memory_id: str, **page: Any) -> list[HistoryEvent]:
        events: list[HistoryEvent] = self._store.history(tenant, memory_id, **page)
        self.read_bytes += sum(event_bytes(e) for e in events)
        return events

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def _walk(mem: Memory, memory_id: str, limit: int) -> list[list[HistoryEvent]]:
    pages: list[list[HistoryEvent]] = []
    after = -1
    while True:
        page, nxt = history_page(mem, memory_id, HistoryPageIn(after_seq=after, limit=limit))
        pages.append(page)
        if nxt is None:
            return pages
        assert nxt == after + len(page) and len(pages) < 100
        after = nxt


def test_a_history_page_reads_about_a_page_not_the_whole_history(tmp_path: Path) -> None:
    # The page was cut from every event read whole: 60 updates of a 100,000-character
    # memory are 36 MB read (and held) to answer 4 MiB. It reads in small batches now.
    store = _CountingHistory(SQLiteStore(tmp_path / "m.db"))
    with Memory(store=store, embedder=HashEmbedder(), background_embedding=False) as mem:
        mid = mem.add(big_text(0), user_id="big")[0].id
        for version in range(1, 40):
            mem.update(mid, text=big_text(version))
        whole = sum(event_bytes(e) for e in mem.history(mid))
        store.read_bytes = 0
        page, nxt = history_page(mem, mid, HistoryPageIn(after_seq=-1, limit=100))
        assert nxt == len(page) - 1 and 0 < len(page) < 40
        largest = max(event_bytes(e) for e in page)
        assert store.read_bytes <= MAX_PAGE_BYTES + HISTORY_BATCH * largest < whole / 2


@pytest.mark.parametrize("limit", [1, 3, HISTORY_BATCH - 1, HISTORY_BATCH, HISTORY_BATCH + 1, 41])
def test_history_pages_of_any_size_walk_every_event_once(tmp_path: Path, limit: int) -> None:
    # Pages read in batches of HISTORY_BATCH: a page that ends on a batch's edge, or the
    # history's, says whether more follow without an empty page at the end.
    with Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as mem:
        mid = mem.add("version 0", user_id="u")[0].id
        for version in range(1, 40):  # 40 events: a multiple of neither 3 nor 41
            mem.update(mid, text=f"version {version}")
        pages = _walk(mem, mid, limit)
        assert [e.new_text for p in pages for e in p] == [f"version {v}" for v in range(40)]
        assert all(pages) and [len(p) for p in pages[:-1]] == [limit] * (len(pages) - 1)
        assert mem.history(mid, offset=38) == mem.history(mid)[38:]
        assert mem.history(mid, offset=5, limit=2) == mem.history(mid)[5:7]
        assert mem.history(mid, offset=40) == []
        with pytest.raises(NotFound):
            mem.history("no-such-id", offset=3)
        for bad in ({"offset": -1}, {"limit": 0}, {"offset": True}):
            with pytest.raises(ValueError):
                mem.history(mid, **bad)
