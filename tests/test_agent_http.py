"""The self-editing memory tools over HTTP (``/v1/agent``), tenant-scoped by the key."""

from __future__ import annotations

from pathlib import Path

from contextos.agent.tools import search_answer
from server_support import app_client, assert_error, auth, issue_key


def test_agent_routes_edit_core_memory_and_answer_from_it(tmp_path: Path) -> None:
    with app_client(tmp_path / "s.db") as client:
        key_a, key_b = issue_key(client, "acme"), issue_key(client, "other")
        names = [
            t["name"] for t in client.get("/v1/agent/tools", headers=auth(key_a)).json()["tools"]
        ]
        assert "core_memory_append" in names and "conversation_search" in names

        def call(key: str, name: str, **body: object) -> dict[str, object]:
            resp = client.post(f"/v1/agent/tools/{name}", json=body, headers=auth(key))
            assert resp.status_code == 200, resp.text
            return dict(resp.json())

        out = call(
            key_a,
            "core_memory_append",
            user_id="ana",
            arguments={"label": "human", "content": "Lives in Porto."},
        )
        assert out == {
            "name": "core_memory_append",
            "text": "Core memory block 'human' is now:\nLives in Porto.",
            "is_error": False,
        }
        bad = call(
            key_a,
            "core_memory_replace",
            user_id="ana",
            arguments={"label": "human", "old_content": "Lisbon", "new_content": "x"},
        )
        assert bad["is_error"] and "does not appear" in str(bad["text"])
        core = client.get("/v1/agent/core", params={"user_id": "ana"}, headers=auth(key_a)).json()
        human = [b for b in core["blocks"] if b["label"] == "human"][0]
        assert human["value"] == "Lives in Porto." and human["limit"] == 2000
        assert "Lives in Porto." in core["prefix"]
        other = client.get("/v1/agent/core", params={"user_id": "ana"}, headers=auth(key_b)).json()
        assert "Porto" not in other["prefix"]
        client.post(
            "/v1/sessions/c1/turns",
            json={
                "user_id": "ana",
                "messages": [{"role": "user", "content": "I adopted a cat named Miso."}],
            },
            headers=auth(key_a),
        )
        conv = call(
            key_a, "conversation_search", user_id="ana", session_id="c1", arguments={"query": "cat"}
        )
        assert conv["text"] == search_answer(["[turn 0] user: I adopted a cat named Miso."])
        assert_error(
            client.post("/v1/agent/tools/rm_rf", json={"user_id": "ana"}, headers=auth(key_a)), 404
        )
        assert_error(
            client.post(
                "/v1/agent/tools/core_memory_append", json={"arguments": {}}, headers=auth(key_a)
            ),
            400,
        )
        assert client.post("/v1/agent/tools/core_memory_append", json={}).status_code == 401


def test_a_block_corrected_through_patch_memories_keeps_the_correction(tmp_path: Path) -> None:
    """The documented operator edit: ``GET /v1/agent/core`` shows a block's value and
    memory_id, the app saves the corrected value with ``PATCH /v1/memories/{id}``. The
    value was read after the record's first (header) line, so the block read as empty
    and the agent's next append wrote over the correction (a review, s57)."""
    with app_client(tmp_path / "s.db") as client:
        h = auth(issue_key(client, "acme"))

        def human() -> dict[str, object]:
            core = client.get("/v1/agent/core", params={"user_id": "ana"}, headers=h).json()
            return next(dict(b) for b in core["blocks"] if b["label"] == "human")

        def append(content: str) -> str:
            body = {"user_id": "ana", "arguments": {"label": "human", "content": content}}
            resp = client.post("/v1/agent/tools/core_memory_append", json=body, headers=h)
            assert resp.status_code == 200 and not resp.json()["is_error"], resp.text
            return str(resp.json()["text"])

        append("Lives in Lisbon. Passport X1234567.")
        block = human()
        corrected = str(block["value"]).replace(" Passport X1234567.", "")
        patched = client.patch(
            f"/v1/memories/{block['memory_id']}", json={"text": corrected}, headers=h
        )
        assert patched.status_code == 200, patched.text
        assert human()["value"] == "Lives in Lisbon."
        core = client.get("/v1/agent/core", params={"user_id": "ana"}, headers=h).json()
        assert "Lives in Lisbon." in core["prefix"]
        assert (
            append("Likes tea.")
            == "Core memory block 'human' is now:\nLives in Lisbon.\nLikes tea."
        )
        record = client.get(f"/v1/memories/{block['memory_id']}", headers=h).json()
        assert record["text"] == "[core memory block: human]\nLives in Lisbon.\nLikes tea."
        assert "X1234567" not in str(human())


def test_a_block_saved_back_whole_with_crlf_line_ends_keeps_its_header(tmp_path: Path) -> None:
    """A client that sends a block's whole record text back with CRLF line ends (a
    Windows tool, a form post): the header line ended in ``\\r`` and was no longer
    known, so the header read as part of the value and the agent's next edit wrote it
    twice (diff review s57)."""
    with app_client(tmp_path / "s.db") as client:
        h = auth(issue_key(client, "acme"))
        body = {"user_id": "ana", "arguments": {"label": "human", "content": "Name: Ana."}}
        assert client.post("/v1/agent/tools/core_memory_append", json=body, headers=h).is_success
        core = client.get("/v1/agent/core", params={"user_id": "ana"}, headers=h).json()
        block = next(b for b in core["blocks"] if b["label"] == "human")
        record = client.get(f"/v1/memories/{block['memory_id']}", headers=h).json()
        whole = record["text"].replace("\n", "\r\n") + " Likes tea."
        saved = client.patch(f"/v1/memories/{block['memory_id']}", json={"text": whole}, headers=h)
        assert saved.status_code == 200, saved.text
        core = client.get("/v1/agent/core", params={"user_id": "ana"}, headers=h).json()
        block = next(b for b in core["blocks"] if b["label"] == "human")
    assert block["value"] == "Name: Ana. Likes tea."
