"""The memory routes serialise their responses themselves (``routes.json_response``):
what goes on the wire must still be exactly the documented response model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from contextos.server import schemas as s
from server_support import app_client, auth, issue_key


def fields(model: type[Any]) -> set[str]:
    return set(model.model_fields)


def test_add_search_and_list_answer_exactly_their_documented_shape(tmp_path: Path) -> None:
    with app_client(tmp_path / "r.db") as c:
        h = auth(issue_key(c, "acme"))
        added = c.post(
            "/v1/memories", headers=h, json={"messages": "Ana likes tea", "user_id": "ana"}
        )
        assert added.status_code == 201
        assert added.headers["content-type"] == "application/json"
        body = added.json()
        assert set(body) == fields(s.RecordList)
        (record,) = body["results"]
        # Every declared field is sent, None included (clients read agent_id: null).
        assert set(record) == fields(s.RecordOut) and record["agent_id"] is None
        assert s.RecordList.model_validate(body).results[0].text == "Ana likes tea"

        found = c.post("/v1/memories/search", headers=h, json={"query": "tea", "user_id": "ana"})
        assert found.status_code == 200
        (hit,) = found.json()["results"]
        assert set(hit) == fields(s.HitOut) and set(hit["memory"]) == fields(s.RecordOut)
        assert hit["memory"]["id"] == record["id"] and hit["tokens"] > 0

        page = c.get("/v1/memories", headers=h, params={"user_id": "ana", "limit": 5})
        assert page.status_code == 200
        assert page.json()["limit"] == 5 and page.json()["offset"] == 0
        assert [r["id"] for r in page.json()["results"]] == [record["id"]]

        # The OpenAPI schema still names the response models.
        paths = c.get("/openapi.json").json()["paths"]
        search_schema = paths["/v1/memories/search"]["post"]["responses"]["200"]
        assert search_schema["content"]["application/json"]["schema"]["$ref"].endswith("/HitList")
