"""Session ids holding "/" reach every ``/sessions/{id}/...`` route, over real HTTP.

The id rule (``types.scope_id``) takes any non-blank string, so the CLI, ``POST
/v1/memories`` and ``GET /v1/sessions`` all take and list "team/chat"; but the routes
named the id one path segment, and Starlette matches the percent-decoded path, so
``/v1/sessions/team%2Fchat/turns`` (or the raw form) was a bare 404 (a review). The
id is now the path up to the route's fixed suffix, which still routes, and no other
route is taken by it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest

from ui_support import LiveServer, auth, live_server

SID = "a/b"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(tmp_path_factory.mktemp("session-path") / "s.db") as s:
        yield s


@pytest.fixture(scope="module")
def key(server: LiveServer) -> str:
    return server.issue_key("slashes")


def spellings(session_id: str) -> list[str]:
    """The id in a path: percent-encoded (as a client should send it) and raw."""
    return [quote(session_id, safe=""), session_id]


def request(server: LiveServer, key: str, method: str, path: str, body: Any = None) -> Any:
    resp = server.http.request(method, path, json=body, headers=auth(key))
    assert resp.status_code == 200 or resp.status_code == 201, (path, resp.text)
    return resp.json()


def contents(turns: Any) -> list[str]:
    return [t["content"] for t in turns["results"]]


def test_a_slashed_session_id_reaches_turns_window_and_compact(
    server: LiveServer, key: str
) -> None:
    for n, path_id in enumerate(spellings(SID)):
        base = f"/v1/sessions/{path_id}"
        added = request(
            server,
            key,
            "POST",
            base + "/turns",
            {"messages": [{"content": f"hello {n}"}, {"role": "assistant", "content": "hi"}]},
        )
        assert [t["session_id"] for t in added["results"]] == [SID, SID]
        assert contents(request(server, key, "GET", base + "/turns"))[-2:] == [f"hello {n}", "hi"]
        after = request(server, key, "GET", base + "/turns?after_seq=0&limit=1")
        assert [t["seq"] for t in after["results"]] == [1]
        window = request(server, key, "POST", base + "/window", {"question": "who said hello?"})
        assert f"hello {n}" in window["text"]
        compacted = request(
            server,
            key,
            "POST",
            base + "/compact",
            {"budget": 100, "strategy": "truncate", "force": True},
        )
        # 200, not the 404 of a session without turns: the compaction read a/b's log.
        assert compacted["raced"] is False and "state" in compacted
    assert SID in request(server, key, "GET", "/v1/sessions")["results"]
    # One log, whichever spelling wrote it.
    assert contents(request(server, key, "GET", f"/v1/sessions/{quote(SID, safe='')}/turns")) == [
        "hello 0",
        "hi",
        "hello 1",
        "hi",
    ]


def test_the_inspectors_path_routes_take_a_slashed_id(server: LiveServer, key: str) -> None:
    sid = "team/chat"
    server.turns(key, sid, [{"role": "user", "content": "what is the plan?"}])
    server.turns(key, sid, [{"role": "assistant", "content": "ship it"}])
    for path_id in spellings(sid):
        window = request(
            server, key, "POST", f"/ui/api/sessions/{path_id}/window", {"question": "plan?"}
        )
        assert "ship it" in window["text"] and window["breakpoints"] is not None
        cache = request(server, key, "GET", f"/ui/api/sessions/{path_id}/cache")
        assert len(cache["calls"]) == 1 and sid in cache["svg"]
        svg = server.http.get(f"/ui/api/sessions/{path_id}/cache.svg", headers=auth(key))
        assert svg.status_code == 200 and svg.headers["content-type"].startswith("image/svg")


def test_an_id_ending_like_a_route_is_still_one_id_and_shadows_nothing(
    server: LiveServer, key: str
) -> None:
    """The route's suffix is matched at the end of the path: an id that ends with
    "/turns" or "/cache" is still that id under every route, and a session named like
    a prefix of another ("x" of "x/turns") keeps its own log."""
    server.turns(key, "x", [{"role": "user", "content": "in x"}])
    server.turns(key, "x/turns", [{"role": "user", "content": "in x/turns"}])
    server.turns(key, "x/cache", [{"role": "user", "content": "in x/cache"}])
    assert contents(request(server, key, "GET", "/v1/sessions/x/turns")) == ["in x"]
    assert contents(request(server, key, "GET", "/v1/sessions/x/turns/turns")) == ["in x/turns"]
    window = request(server, key, "POST", "/v1/sessions/x/turns/window", {"question": "where?"})
    assert "in x/turns" in window["text"] and "in x\n" not in window["text"]
    svg = server.http.get("/ui/api/sessions/x/cache/cache.svg", headers=auth(key))
    assert svg.status_code == 200 and "x/cache" in svg.text
    cache = request(server, key, "GET", "/ui/api/sessions/x/cache/cache")
    assert "x/cache" in cache["svg"]
    # The routes beside them still answer as before.
    listed = request(server, key, "GET", "/v1/sessions?order=newest")["results"]
    assert {"x", "x/turns", "x/cache"} <= set(listed)
    assert request(server, key, "GET", "/ui/api/turns?session_id=x/turns")["results"]
    # A blank id, or no id, is refused or not found, not routed somewhere else.
    empty = server.http.get("/v1/sessions//turns", headers=auth(key))
    assert empty.status_code == 422, empty.text
    wrong = server.http.get("/v1/sessions/a/b/window", headers=auth(key))
    assert wrong.status_code == 405, wrong.text


def test_memories_of_the_slashed_session_are_listed_by_its_id(server: LiveServer, key: str) -> None:
    """The memory routes took the id in a query or body all along; they still do."""
    server.add(key, session_id="m/n", messages="kept under m/n")
    found = request(server, key, "GET", "/v1/memories?session_id=m%2Fn")["results"]
    assert [r["text"] for r in found] == ["kept under m/n"]
