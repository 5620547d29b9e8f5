"""Every ``/v1`` route refuses a query key it does not declare (422, naming it), as the
body models refuse unknown fields. FastAPI dropped such keys and ran the request as if
they had not been sent: a misspelt delete precondition deleted a memory someone else
had changed, ``purged=true`` deleted without purging, a misspelt user filter listed
every user's sessions (a review, session 34)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from server_support import ADMIN_KEY, app_client, assert_error, auth, issue_key


@pytest.fixture
def client(tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, str]]]:
    with app_client(tmp_path / "m.db") as c:
        yield c, auth(issue_key(c, "acme"))


def _add(c: TestClient, key: dict[str, str], text: str) -> str:
    resp = c.post("/v1/memories", json={"messages": text, "user_id": "ana"}, headers=key)
    assert resp.status_code == 201, resp.text
    return str(resp.json()["results"][0]["id"])


def test_a_misspelt_delete_precondition_deletes_nothing(
    client: tuple[TestClient, dict[str, str]],
) -> None:
    c, key = client
    mid = _add(c, key, "my secret diagnosis")
    for query in ({"expected-text": "an older text"}, {"purged": "true"}, {"Purge": "true"}):
        error = assert_error(c.delete(f"/v1/memories/{mid}", params=query, headers=key), 422)
        assert error["message"] == f"query.{next(iter(query))}: Extra inputs are not permitted"
    assert c.get(f"/v1/memories/{mid}", headers=key).status_code == 200
    # The declared names still work: the precondition is checked, then purge deletes.
    stale = c.delete(f"/v1/memories/{mid}", params={"expected_text": "older"}, headers=key)
    assert_error(stale, 409)
    done = c.delete(f"/v1/memories/{mid}", params={"purge": "true"}, headers=key)
    assert done.status_code == 200 and done.json()["purged"] is True


def test_a_misspelt_filter_is_refused_not_ignored(
    client: tuple[TestClient, dict[str, str]],
) -> None:
    c, key = client
    _add(c, key, "tea")
    turns = {"messages": [{"role": "user", "content": "hi"}], "user_id": "ana"}
    assert c.post("/v1/sessions/s1/turns", json=turns, headers=key).status_code == 201
    for path, query in [
        ("/v1/memories", {"user_id": "ana", "sessionid": "s1"}),
        ("/v1/memories", {"user_id": "ana", "memory_types": "semantic"}),
        ("/v1/sessions", {"userid": "ana"}),
        ("/v1/sessions/s1/turns", {"afterseq": "3"}),
    ]:
        assert_error(c.get(path, params=query, headers=key), 422)
    assert c.get("/v1/memories", params={"user_id": "ana"}, headers=key).status_code == 200
    assert c.get("/v1/sessions", params={"user_id": "ana"}, headers=key).json()["results"] == ["s1"]


def test_every_v1_route_refuses_an_unknown_query_key(
    client: tuple[TestClient, dict[str, str]],
) -> None:
    """Each route and method the app serves under /v1, with any body: the unknown key is
    named before anything else is done."""
    c, key = client
    operations = [
        (method.upper(), path)
        for path, item in c.app.openapi()["paths"].items()  # type: ignore[attr-defined]
        if path.startswith("/v1")
        for method in item
    ]
    assert len(operations) >= 15
    for method, route in operations:
        path = re.sub(r"\{[^}]+\}", "x", route)
        headers = auth(ADMIN_KEY) if route.startswith("/v1/keys") else key
        resp = c.request(method, path, params={"zzz": "1"}, json={}, headers=headers)
        error = assert_error(resp, 422)
        assert error["message"] == "query.zzz: Extra inputs are not permitted", (method, path)


def test_memories_paged_by_key_skip_and_repeat_nothing_while_others_write(
    client: tuple[TestClient, dict[str, str]],
) -> None:
    """``GET /v1/memories`` paged only by offset: a walk while another client added and
    deleted saw memories twice and missed some never deleted (a review). A page after
    ``next_after`` holds only the memories after the last one shown."""
    c, key = client
    for i in range(60):
        _add(c, key, f"memory {i}")
    seen: list[str] = []
    page = c.get("/v1/memories", params={"user_id": "ana", "limit": 20}, headers=key).json()
    for _ in range(10):  # 3 pages and an empty one at most
        seen.extend(r["text"] for r in page["results"])
        # Meanwhile: newer memories, and one of those already shown deleted.
        _add(c, key, f"newer {len(seen)}")
        if page["results"]:
            c.delete(f"/v1/memories/{page['results'][0]['id']}", headers=key)
        if page["next_after"] is None:
            break
        assert page["next_offset"] == page["offset"] + len(page["results"])
        params = {"user_id": "ana", "limit": 20, "after": page["next_after"]}
        page = c.get("/v1/memories", params=params, headers=key).json()
    assert sorted(seen) == sorted(f"memory {i}" for i in range(60))
    bad = c.get("/v1/memories", params={"user_id": "ana", "after": "nonsense"}, headers=key)
    assert bad.status_code in (400, 422), bad.text


def test_a_route_made_where_a_dead_one_was_reads_its_own_query() -> None:
    """The declared query was cached by ``id(route)``: once an app was gone, a route of a
    later app could be made at the same address and read the dead route's names, so
    ``GET /v1/memories?user_id=t`` was refused as an undeclared key (a 422 seen once in a
    full test run, where hundreds of apps come and go). CPython makes the second route
    where the first was at once: keyed by ``id``, this fails on its first round. (With a
    ``gc.collect()`` between rounds it failed on the 27th, and 200 such rounds took 91 s
    in a full run's large heap.)"""
    from contextos.server.strict_query import declared_query

    def lists_by_user(user_id: str | None = None) -> None: ...

    def lists_by_agent(agent_id: str | None = None) -> None: ...

    for _ in range(20):
        first = APIRoute("/a", lists_by_user)
        assert declared_query(first).names == ("user_id",)
        del first  # freed at once (no cycle): the next route is made where it was
        second = APIRoute("/b", lists_by_agent)
        assert declared_query(second).names == ("agent_id",)
