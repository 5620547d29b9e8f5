"""MCP ``search_memory`` takes what ``POST /v1/memories/search`` takes (``memory_types``,
``as_of``, ``event_after``/``event_before`` with ``metadata`` and ``min_score``) and gives
the same answers: the same hits for the same body, and the same refusals, in the same
words, for the same bad values. The HTTP app in process and a real ``contextos mcp`` over
stdio, driven by the official MCP client, on one SQLite file."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest

pytest.importorskip("mcp")

from mcp.client.session import ClientSession  # noqa: E402

from contextos.memory import Memory  # noqa: E402
from contextos.server.keys import KeyStore  # noqa: E402
from contextos.testing.embedders import HashEmbedder  # noqa: E402
from mcp_support import error_text, results, stdio_call  # noqa: E402
from server_support import app_client, auth  # noqa: E402

QUERY = {"query": "Ana cookies Lisbon oven", "user_id": "ana"}

#: Search bodies both protocols take, and the texts each must find (any order: the
#: test compares the two protocols' order separately).
ACCEPTED: list[tuple[dict[str, Any], set[str]]] = [
    ({}, {"lisbon", "cookies", "oven"}),
    ({"memory_types": ["semantic"]}, {"cookies"}),
    ({"memory_types": ["episodic", "procedural"]}, {"lisbon", "oven"}),
    ({"memory_types": []}, {"lisbon", "cookies", "oven"}),  # empty: no type filter
    ({"as_of": "2023-06-01T00:00:00Z"}, {"cookies"}),
    ({"as_of": "20230601"}, {"cookies"}),  # the library's reading of a compact date
    ({"event_after": "2024-01-01"}, {"lisbon", "oven"}),
    ({"event_before": "2024-01-01T00:00:00+02:00"}, {"cookies"}),
    ({"event_after": "2023-01-01", "event_before": "2024-01-01"}, {"cookies"}),
    ({"event_after": "2025-01-01", "event_before": "2024-01-01"}, set()),
    (
        {
            "memory_types": ["episodic", "semantic"],
            "event_after": "2022-01-01",
            "metadata": {"source": "chat"},
            "min_score": -1.0,
        },
        {"lisbon"},
    ),
]

#: Search bodies both protocols refuse, and a word the refusal must hold.
REFUSED: list[tuple[dict[str, Any], str]] = [
    ({"memory_types": ["evil"]}, "memory_types.0"),
    ({"memory_types": ["episodic", "semantic", "procedural", "episodic"]}, "at most 3"),
    ({"as_of": "last tuesday"}, "as_of"),
    ({"as_of": "null"}, "not an ISO-8601 date"),  # a text, never read as "not given"
    ({"as_of": 1_700_000_000}, "not a number"),
    ({"event_after": "0001-01-01T00:00:00+01:00"}, "event_after"),
    ({"event_before": "2024-01-01\x00"}, "not an ISO-8601 date"),
]


def _seed(db: Path) -> str:
    with KeyStore(str(db)) as keys:
        key = keys.create("acme").secret
    with Memory(str(db), embedder=HashEmbedder(), tenant="acme") as m:
        chat = {"source": "chat"}
        m.add("Ana moved to Lisbon", user_id="ana", event_time="2024-05-02", metadata=chat)
        m.add(
            "Ana likes peanut butter cookies",
            user_id="ana",
            memory_type="semantic",
            event_time="2023-01-10",
        )
        m.add("To bake cookies preheat the oven", user_id="ana", memory_type="procedural")
        # Every vector stored before either protocol searches: a memory found by keyword
        # only in the first search and by meaning too in the next would rank otherwise.
        assert m.flush(timeout=60)
    return key


def _short(hits: list[dict[str, Any]]) -> list[str]:
    words = {"Lisbon": "lisbon", "peanut": "cookies", "oven": "oven"}
    texts = [h["memory"]["text"] if "memory" in h else h["text"] for h in hits]  # HTTP, MCP
    return [next(w for k, w in words.items() if k in text) for text in texts]


def test_search_memory_takes_and_refuses_what_http_search_does(tmp_path: Path) -> None:
    db = tmp_path / "mcp.db"
    key = _seed(db)
    bodies = [{**QUERY, **extra} for extra, _ in ACCEPTED]
    bad = [{**QUERY, **extra} for extra, _ in REFUSED]
    with app_client(db) as client:
        http_ok = []
        for body in bodies:
            resp = client.post("/v1/memories/search", json=body, headers=auth(key))
            assert resp.status_code == 200, (body, resp.text)
            http_ok.append(resp.json()["results"])
        http_bad = []
        for body in bad:
            resp = client.post("/v1/memories/search", json=body, headers=auth(key))
            assert resp.status_code == 422, (body, resp.text)
            http_bad.append(resp.json()["error"]["message"])

    async def scenario(s: ClientSession) -> dict[str, Any]:
        tools = {t.name: t.input_schema for t in (await s.list_tools()).tools}
        ok = [results(await s.call_tool("search_memory", body)) for body in bodies]
        refused = [error_text(await s.call_tool("search_memory", body)) for body in bad]
        # A list sent as JSON text, as some clients send every list (the SDK's
        # allowance, as for a window's rules): taken over MCP only.
        texted = {**QUERY, "memory_types": '["semantic"]'}
        as_text = results(await s.call_tool("search_memory", texted))
        # One type alone, as a model writes it (MCP only: HTTP wants a list).
        one = results(await s.call_tool("search_memory", {**QUERY, "memory_types": "semantic"}))
        return {
            "schema": tools["search_memory"],
            "ok": ok,
            "refused": refused,
            "text": as_text,
            "one": one,
        }

    out = anyio.run(partial(stdio_call, timeout=120), db, key, scenario)
    for (extra, found), http, mcp in zip(ACCEPTED, http_ok, out["ok"], strict=True):
        assert set(_short(http)) == found, (extra, _short(http))
        # The same hits, scores and order (MCP's hit is the record's fields and its
        # ranks, HTTP's nests the record under "memory").
        mine = [(h["id"], h["score"], h["relevance"]) for h in mcp]
        assert mine == [(h["memory"]["id"], h["score"], h["relevance"]) for h in http], extra
    for (extra, word), http, mcp in zip(REFUSED, http_bad, out["refused"], strict=True):
        assert word in http, (extra, http)
        # The HTTP 422's text, its "body." prefix left out, as for every tool error.
        said = http.replace("body.", "")
        assert mcp == f"Error executing tool search_memory: ValueError: {said}", (extra, mcp)
    assert _short(out["text"]) == _short(out["one"]) == ["cookies"]
    properties = out["schema"]["properties"]
    for name in ("memory_types", "as_of", "event_after", "event_before"):
        assert name in properties, name  # advertised, described by SearchRequest
    assert properties["memory_types"]["anyOf"][0]["maxItems"] == 3
