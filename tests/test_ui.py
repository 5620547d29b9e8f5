"""The inspector's server side, without a browser: the page's headers and markup,
its JSON routes under /ui/api (scoping, pages, filters, window, cache replay) and
the SVG chart. The browser tests are in test_ui_browser.py."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from contextos.engine.session import Session
from contextos.llm.models import get_model
from contextos.llm.tokens import default_tokenizer
from contextos.server.inspect_routes import replay_costs
from contextos.server.ui.chart import cost_chart_svg
from contextos.store.base import Patch
from contextos.store.sqlite import SQLiteStore
from contextos.types import Message
from server_support import app_client, assert_error, auth, database, issue_key


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def client(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """An app over a fresh SQLite file, or over a fresh schema of the test PostgreSQL."""
    with database(request.param, tmp_path) as db, app_client(db) as c:
        yield c


def test_page_is_served_with_a_strict_policy_and_no_inline_code(client: Any) -> None:
    resp = client.get("/ui")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/html")
    csp = resp.headers["content-security-policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["script-src"] == "'self'"
    assert directives["style-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert directives["default-src"] == "'none'"
    assert "unsafe" not in csp
    assert resp.headers["x-content-type-options"] == "nosniff"
    assert resp.headers["x-frame-options"] == "DENY"
    html = resp.text
    # Every script is a file from this origin; no inline style or event-handler attributes.
    assert re.findall(r"<script(?![^>]*\bsrc=\"/ui/static/)", html) == []
    assert not re.search(r"\sstyle=", html)
    assert not re.search(r"\son[a-z]+=", html, re.IGNORECASE)
    assert "http://" not in html and "https://" not in html  # no CDN
    for name, kind in (("app.js", "text/javascript"), ("app.css", "text/css")):
        asset = client.get(f"/ui/static/{name}")
        assert asset.status_code == 200 and asset.headers["content-type"].startswith(kind)
        assert asset.headers["x-content-type-options"] == "nosniff"
    assert client.get("/ui/static/..%2Fchart.py").status_code == 404
    assert client.get("/ui/static/index.html").status_code == 404


def test_script_never_writes_markup() -> None:
    """The page's script puts stored text into the DOM with textContent only."""
    js = (
        Path(__file__).parent.parent / "src" / "contextos" / "server" / "ui" / "static" / "app.js"
    ).read_text(encoding="utf-8")
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in js, sink


def test_api_responses_say_nosniff_and_docs_keep_working(client: Any) -> None:
    assert client.get("/healthz").headers["x-content-type-options"] == "nosniff"
    resp = client.get("/v1/memories", params={"user_id": "x"})
    assert resp.headers["x-content-type-options"] == "nosniff"
    too_big = client.post("/v1/memories", content=b"x" * 1_000_001)
    assert too_big.status_code == 413 and too_big.headers["x-content-type-options"] == "nosniff"
    # The CSP is the inspector's: FastAPI's /docs page (CDN Swagger UI) is left as it was.
    assert "content-security-policy" not in client.get("/docs").headers


def test_inspect_routes_need_a_tenant_key(client: Any) -> None:
    assert_error(client.get("/ui/api/whoami"), 401, "Unauthenticated")
    assert_error(client.get("/ui/api/memories", headers=auth("ctx_nope")), 401)
    assert_error(
        client.get(
            "/ui/api/memories", params={"user_id": "a"}, headers=auth("test-admin-key-0123456789")
        ),
        403,
        "Forbidden",
    )
    key = issue_key(client, "acme")
    assert client.get("/ui/api/whoami", headers=auth(key)).json() == {"tenant": "acme"}
    # Unscoped reads are refused exactly as /v1 refuses them.
    assert_error(client.get("/ui/api/memories", headers=auth(key)), 400, "ScopeError")


def _add(client: Any, key: str, text: str, **body: Any) -> dict[str, Any]:
    resp = client.post("/v1/memories", json={"messages": text, **body}, headers=auth(key))
    assert resp.status_code == 201, resp.text
    return dict(resp.json()["results"][0])


def test_memory_pages_have_totals_offsets_and_filters(client: Any) -> None:
    key = issue_key(client, "acme")
    ids = [_add(client, key, f"fact {i}", user_id="ana")["id"] for i in range(5)]
    sem = [
        _add(client, key, f"rule {i}", user_id="ana", memory_type="semantic")["id"]
        for i in range(2)
    ]
    _add(client, key, "not ana's", user_id="bob")

    def page(**params: Any) -> dict[str, Any]:
        resp = client.get(
            "/ui/api/memories", params={"user_id": "ana", **params}, headers=auth(key)
        )
        assert resp.status_code == 200, resp.text
        return dict(resp.json())

    first = page(limit=3)
    assert first["total"] == 7 and [r["id"] for r in first["results"]] == [sem[1], sem[0], ids[4]]
    last = page(limit=3, offset=6)
    assert [r["id"] for r in last["results"]] == [ids[0]] and last["total"] == 7
    typed = page(memory_type="semantic")
    assert typed["total"] == 2 and {r["id"] for r in typed["results"]} == set(sem)

    # A closed (superseded) fact is hidden by default and shown, with valid_to, by validity=all.
    store = client.app.state.tenants.store
    store.update("acme", ids[2], Patch(valid_to=datetime.now(UTC)))
    assert page()["total"] == 6 and ids[2] not in {r["id"] for r in page()["results"]}
    everything = page(validity="all")
    assert everything["total"] == 7
    closed = next(r for r in everything["results"] if r["id"] == ids[2])
    assert closed["valid_to"] is not None
    assert_error(
        client.get(
            "/ui/api/memories", params={"user_id": "ana", "validity": "x"}, headers=auth(key)
        ),
        422,
    )


def test_other_tenants_see_nothing_through_inspect_routes(client: Any) -> None:
    a, b = issue_key(client, "tenant-a"), issue_key(client, "tenant-b")
    _add(client, a, "A's secret", user_id="ana", session_id="s1")
    client.post(
        "/v1/sessions/s1/turns",
        json={"user_id": "ana", "messages": [{"role": "user", "content": "A's turn " * 400}]},
        headers=auth(a),
    )
    for params in ({"user_id": "ana"}, {"session_id": "s1"}):
        got = client.get("/ui/api/memories", params={**params, "validity": "all"}, headers=auth(b))
        assert got.json()["total"] == 0 and got.json()["results"] == []
    window = client.post(
        "/ui/api/sessions/s1/window",
        json={"question": "secret?", "user_id": "ana"},
        headers=auth(b),
    ).json()
    assert "A's" not in window["text"] and window["memory_ids"] == []
    cache = client.get("/ui/api/sessions/s1/cache", headers=auth(b)).json()
    assert cache["calls"] == []
    assert "A&#x27;s turn" not in client.get("/ui/api/sessions/s1/cache.svg", headers=auth(b)).text
    assert client.get("/ui/api/sessions/s1/cache", headers=auth(a)).json()["calls"] != []


def test_session_routes_by_query_reach_any_id_and_only_the_callers_tenant(client: Any) -> None:
    """Why: the page put session ids in URL paths, where "." and ".." are dropped (and
    "%2F" was read as "/" until the path routes took it), so sessions the library takes
    (".", "..", "team/chat-1") could not be opened. The page's routes take the id in
    the query."""
    a, b = issue_key(client, "tenant-a"), issue_key(client, "tenant-b")
    ids = (".", "..", "team/chat-1")
    for sid in ids:
        log = Session(client.app.state.tenants.store, sid, tenant="tenant-a", user_id="ana")
        log.add(Message(role="user", content=f"A's turn in {sid}"))
    for sid in ids:
        q = {"session_id": sid}
        turns = client.get("/ui/api/turns", params=q, headers=auth(a)).json()["results"]
        assert [(t["session_id"], t["content"]) for t in turns] == [(sid, f"A's turn in {sid}")]
        body = {"question": "what was said?"}
        window = client.post("/ui/api/window", params=q, json=body, headers=auth(a)).json()
        assert [x["text"] for x in window["blocks"] if x["segment"] == "turns"] == [
            f"A's turn in {sid}"
        ]
        cache = client.get("/ui/api/cache", params=q, headers=auth(a)).json()
        assert len(cache["calls"]) == 1 and cache["from_seq"] == 0
        # Another tenant's key reaches none of it.
        assert client.get("/ui/api/turns", params=q, headers=auth(b)).json()["results"] == []
        other = client.post("/ui/api/window", params=q, json=body, headers=auth(b)).json()
        assert "A's" not in other["text"]
        assert client.get("/ui/api/cache", params=q, headers=auth(b)).json()["calls"] == []
    for bad in ({}, {"session_id": ""}, {"session_id": "  "}, {"session_id": "a\x00b"}):
        assert_error(client.get("/ui/api/turns", params=bad, headers=auth(a)), 422)
        assert_error(client.get("/ui/api/cache", params=bad, headers=auth(a)), 422)
    # The path routes reach an id holding "/" too; "." and ".." only by query.
    assert client.get("/v1/sessions/team%2Fchat-1/turns", headers=auth(a)).json()["results"]


def test_window_shows_segments_breakpoints_and_what_was_left_out(client: Any) -> None:
    key = issue_key(client, "acme")
    for i in range(30):
        _add(client, key, f"memory number {i} about tea and biscuits " * 3, user_id="ana")
    turns = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i} " + "chat " * 200}
        for i in range(12)
    ]
    client.post(
        "/v1/sessions/s1/turns", json={"user_id": "ana", "messages": turns}, headers=auth(key)
    )
    w = client.post(
        "/ui/api/sessions/s1/window",
        json={"question": "tea?", "user_id": "ana", "token_budget": 3000, "limit": 30},
        headers=auth(key),
    ).json()
    assert w["tokens"] <= w["budget"] == 3000
    names = [u["name"] for u in w["segments"]]
    assert "turns" in names and "question" in names
    placed = {u["name"]: u["tokens"] for u in w["segments"]}
    for name, tokens in placed.items():
        assert tokens == sum(b["tokens"] for b in w["blocks"] if b["segment"] == name)
    assert w["left_out"], "a 3000-token budget cannot hold 12 long turns and 30 memories"
    assert all(o["reason"] for o in w["left_out"])
    assert w["breakpoints"], "the turns prefix is long enough to cache"
    for bp in w["breakpoints"]:
        assert bp["prefix_tokens"] == sum(b["tokens"] for b in w["blocks"][: bp["after"] + 1])


def test_cache_replay_reads_the_shared_prefix_and_prices_the_saving(client: Any) -> None:
    key = issue_key(client, "acme")
    turns = []
    for i in range(6):
        turns.append({"role": "user", "content": f"question {i} " + "context " * 700})
        turns.append({"role": "assistant", "content": f"answer {i}"})
    client.post(
        "/v1/sessions/s1/turns", json={"user_id": "ana", "messages": turns}, headers=auth(key)
    )
    data = client.get("/ui/api/sessions/s1/cache", headers=auth(key)).json()
    calls = data["calls"]
    assert [c["seq"] for c in calls] == [0, 2, 4, 6, 8, 10]
    # Sonnet caches prefixes from 1,024 tokens: the third call (two ~710-token turns
    # before it) writes the first entry and pays for it; every later call reads it.
    assert [c["cache_read_tokens"] for c in calls[:3]] == [0, 0, 0]
    assert calls[2]["cache_write_tokens"] > 0 and calls[2]["saved_usd"] < 0
    later = calls[3:]
    assert all(c["cache_read_tokens"] > 0 for c in later)
    assert all(c["saved_usd"] > 0 for c in later)
    assert later[-1]["read_share"] > later[0]["read_share"]
    for c in calls:
        assert c["read_share"] == pytest.approx(c["cache_read_tokens"] / c["input_tokens"])
        assert c["saved_usd"] == pytest.approx(c["cost_without_cache_usd"] - c["cost_usd"])
    assert data["saved_usd"] == pytest.approx(sum(c["saved_usd"] for c in calls))
    assert_error(
        client.get("/ui/api/sessions/s1/cache", params={"model": "nope"}, headers=auth(key)), 400
    )
    svg = client.get("/ui/api/sessions/s1/cache.svg", headers=auth(key))
    assert svg.headers["content-type"].startswith("image/svg+xml")
    assert svg.text.count('class="share"') == 6
    assert data["svg"] == svg.text  # the page takes the chart from the JSON (one replay)


def test_replay_of_the_newest_calls_prices_them_as_the_full_replay(tmp_path: Path) -> None:
    """Replaying only the newest calls (after one warm-up call) changes no number."""
    store = SQLiteStore(tmp_path / "replay.db")
    try:
        session = Session(store, "long", tokenizer=default_tokenizer())
        for i in range(12):
            session.add(
                Message("user", f"question {i} " + "context " * (300 + 40 * i)),
                Message("assistant", f"answer {i}"),
            )
        turns = session.turns()
    finally:
        store.close()
    model = get_model("claude-sonnet-4-6")
    full = replay_costs(turns, model, default_tokenizer(), max_calls=100)
    assert len(full) == 12 and sum(c.cache_read_tokens for c in full) > 0
    for n in (1, 3, 11):
        assert replay_costs(turns, model, default_tokenizer(), max_calls=n) == full[-n:]
    with pytest.raises(ValueError):
        replay_costs(turns, model, default_tokenizer(), max_calls=0)


def test_chart_escapes_text_and_draws_one_bar_per_call() -> None:
    class Call:
        def __init__(self, seq: int, share: float, saved: float) -> None:
            self.seq, self.read_share, self.saved_usd = seq, share, saved

    hostile = "</text><script>alert(1)</script><text a='\"'>"
    svg = cost_chart_svg([Call(0, 0.0, 0.0), Call(2, 0.9, 0.01)], title=hostile)
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    assert svg.count('class="share"') == 2
    heights = [float(h) for h in re.findall(r'class="share"[^>]*height="([\d.]+)"', svg)]
    assert heights[0] == 0.0 and heights[1] > 0
    # A call that paid for a cache write (negative saving) is drawn below the zero line.
    mixed = cost_chart_svg([Call(0, 0.0, -0.002), Call(2, 0.5, 0.004)], title="s")
    zero_line = re.search(r'class="zero" x1="[\d.]+" y1="([\d.]+)"', mixed)
    saved_line = re.search(r'class="saved" points="([^"]+)"', mixed)
    assert zero_line and saved_line
    zero = float(zero_line.group(1))
    pts = saved_line.group(1).split()
    ys = [float(p.split(",")[1]) for p in pts]
    assert ys[0] > zero > ys[1]  # SVG y grows downwards
    assert "-$0.0020" in mixed
    empty = cost_chart_svg([], title="s")
    assert "no calls to replay" in empty
