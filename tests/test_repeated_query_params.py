"""A query key sent twice is a 422 naming it, unless the route declares it a list.

It was read as its last value: ``GET /v1/memories?user_id=ana&user_id=bob`` passed a
front end that checked the first one (as Flask's ``request.args.get`` reads it) and
listed bob's memories, on ``/ui/api/memories`` too; ``?purge=false&purge=true``
purged; ``limit=5&limit=1000`` gave 1000 (a review, session 39). ``memory_type`` is
declared a list and still repeats. The real app through ``app_client``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from server_support import ADMIN_KEY, app_client, assert_error, auth, issue_key


@pytest.fixture
def client(tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, str]]]:
    with app_client(tmp_path / "m.db") as c:
        key = auth(issue_key(c, "acme"))
        for text, user in [("ana likes tea", "ana"), ("bob's diagnosis is private", "bob")]:
            added = c.post("/v1/memories", json={"messages": text, "user_id": user}, headers=key)
            assert added.status_code == 201, added.text
        yield c, key


def repeated(key: str, times: int = 2) -> str:
    return f"query.{key}: sent {times} times, but it takes one value: send it once"


@pytest.mark.parametrize("path", ["/v1/memories", "/ui/api/memories"])
def test_a_user_id_sent_twice_lists_nobody(
    client: tuple[TestClient, dict[str, str]], path: str
) -> None:
    c, key = client
    for query in ["user_id=ana&user_id=bob", "user_id=bob&user_id=ana", "user_id=ana&user_id=ana"]:
        resp = c.get(f"{path}?{query}", headers=key)
        assert assert_error(resp, 422)["message"] == repeated("user_id")
        assert "diagnosis" not in resp.text
    three = c.get(f"{path}?user_id=ana&limit=5&limit=1000&limit=1", headers=key)
    assert assert_error(three, 422)["message"] == repeated("limit", 3)
    one = c.get(path, params={"user_id": "ana"}, headers=key)
    assert [m["text"] for m in one.json()["results"]] == ["ana likes tea"]


def test_a_purge_sent_twice_deletes_nothing(client: tuple[TestClient, dict[str, str]]) -> None:
    c, key = client
    mid = c.get("/v1/memories?user_id=ana", headers=key).json()["results"][0]["id"]
    resp = c.delete(f"/v1/memories/{mid}?purge=false&purge=true", headers=key)
    assert assert_error(resp, 422)["message"] == repeated("purge")
    assert c.get(f"/v1/memories/{mid}", headers=key).status_code == 200


@pytest.mark.parametrize("path", ["/v1/memories", "/ui/api/memories"])
def test_memory_type_is_a_list_and_repeats(
    client: tuple[TestClient, dict[str, str]], path: str
) -> None:
    c, key = client
    query = "user_id=ana&memory_type=episodic&memory_type=semantic"
    resp = c.get(f"{path}?{query}", headers=key)
    assert resp.status_code == 200, resp.text
    assert [m["text"] for m in resp.json()["results"]] == ["ana likes tea"]
    only_semantic = c.get(f"{path}?user_id=ana&memory_type=semantic", headers=key)
    assert only_semantic.json()["results"] == []


def test_an_unknown_key_sent_twice_is_named_once_as_unknown(
    client: tuple[TestClient, dict[str, str]],
) -> None:
    c, key = client
    for path in ["/v1/memories", "/ui/api/memories"]:
        resp = c.get(f"{path}?user_id=ana&userid=bob&userid=bob&limit=1&limit=2", headers=key)
        message = assert_error(resp, 422)["message"]
        assert message == f"query.userid: Extra inputs are not permitted; {repeated('limit')}"


def test_the_inspectors_other_routes_refuse_a_repeat_and_keep_their_answers(
    client: tuple[TestClient, dict[str, str]],
) -> None:
    c, key = client
    turns = {"messages": [{"role": "user", "content": "hi"}], "user_id": "ana"}
    assert c.post("/v1/sessions/s1/turns", json=turns, headers=key).status_code == 201
    for method, path, body in [
        ("GET", "/ui/api/turns?session_id=s1&session_id=s2", None),
        ("GET", "/ui/api/cache?session_id=s1&model=a&model=b", None),
        ("POST", "/ui/api/window?session_id=s1&session_id=s1", {}),
    ]:
        resp = c.request(method, path, json=body, headers=key)
        name = "model" if "model=a" in path else "session_id"
        assert assert_error(resp, 422)["message"] == repeated(name), path
    unknown = c.get("/ui/api/turns?session_id=s1&sessionid=s1", headers=key)
    assert (
        assert_error(unknown, 422)["message"] == "query.sessionid: Extra inputs are not permitted"
    )
    # What the page sends still answers, and a key the store did not make is a 422, as
    # /v1/memories answers it.
    assert c.get("/ui/api/turns?session_id=s1", headers=key).status_code == 200
    assert_error(c.get("/ui/api/memories?user_id=ana&after=x,1", headers=key), 422)


def _is_list(schema: dict[str, Any]) -> bool:
    return schema.get("type") == "array" or any(_is_list(s) for s in schema.get("anyOf", []))


def test_every_v1_query_parameter_repeats_only_when_declared_a_list(
    client: tuple[TestClient, dict[str, str]],
) -> None:
    """Each query parameter of each /v1 route, as the OpenAPI document declares it: sent
    twice, a scalar is refused by name before anything else is done, a list is not."""
    c, key = client
    scalars = lists = 0
    for route, item in c.app.openapi()["paths"].items():  # type: ignore[attr-defined]
        if not route.startswith("/v1"):
            continue
        path = re.sub(r"\{[^}]+\}", "x", route)
        headers = auth(ADMIN_KEY) if route.startswith("/v1/keys") else key
        for method, operation in item.items():
            for param in operation.get("parameters", []):
                if param["in"] != "query":
                    continue
                name = param["name"]
                resp = c.request(
                    method.upper(), f"{path}?{name}=1&{name}=1", json={}, headers=headers
                )
                if _is_list(param["schema"]):
                    lists += 1
                    assert repeated(name) not in resp.text, (method, route)
                else:
                    scalars += 1
                    assert assert_error(resp, 422)["message"] == repeated(name), (method, route)
    assert scalars >= 20 and lists >= 1
