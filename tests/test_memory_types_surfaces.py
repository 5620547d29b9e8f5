"""A memory's type through each surface: listing by type and validity over HTTP as in
the CLI and Python, and a type given with ``infer`` refused everywhere instead of
silently dropped (a review: the extractor types each fact)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp.client.session import ClientSession

from cli_support import run_cli
from contextos.memory import Memory
from contextos.server.keys import KeyStore
from contextos.testing.embedders import HashEmbedder
from contextos.types import Filter, Scope
from mcp_support import error_text, payload, stdio_call
from server_support import app_client, assert_error, auth, issue_key


def _fill(db: Path) -> dict[str, str]:
    """Memories of each type for ana, one of them a fact closed by a later one; their
    ids by text."""
    with Memory(db, embedder=HashEmbedder(), background_embedding=False) as memory:
        memory.add("Ana went hiking on Sunday", user_id="ana")
        memory.add("Ana likes green tea", user_id="ana", memory_type="semantic")
        memory.add("Always answer Ana in Spanish", user_id="ana", memory_type="procedural")
        memory.add("I live in Paris.", user_id="ana", infer=True)
        memory.add("I moved to Berlin.", user_id="ana", infer=True)
        everything = memory.get_all(
            filters=Filter(scope=Scope(tenant="default", user_id="ana"), include_invalid=True)
        )
        return {r.text: r.id for r in everything}


def test_http_lists_by_type_and_validity_as_the_cli_does(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    ids = _fill(db)
    paris = next(i for text, i in ids.items() if "Paris" in text)
    asks = [
        ([("memory_type", "semantic")], ["--type", "semantic"]),
        (
            [("memory_type", "semantic"), ("memory_type", "procedural")],
            ["--type", "semantic", "--type", "procedural"],
        ),
        ([("validity", "all")], ["--validity", "all"]),
        (
            [("memory_type", "semantic"), ("validity", "all")],
            ["--type", "semantic", "--validity", "all"],
        ),
    ]
    with app_client(db) as client:
        headers = auth(issue_key(client, "default"))
        for query, flags in asks:
            resp = client.get("/v1/memories", headers=headers, params=[("user_id", "ana"), *query])
            assert resp.status_code == 200, resp.text
            over_http = [r["id"] for r in resp.json()["results"]]
            cli = run_cli("list", "-u", "ana", *flags, "--json", db=db)
            assert cli.returncode == 0, cli.stderr
            assert over_http == [r["id"] for r in json.loads(cli.stdout)], (query, flags)
            listed = {r["memory_type"] for r in resp.json()["results"]}
            wanted = {v for k, v in query if k == "memory_type"}
            assert not wanted or listed <= wanted
            assert (paris in over_http) == (("validity", "all") in query)
        bad = client.get("/v1/memories", headers=headers, params={"memory_type": "working"})
        assert_error(bad, 422)


def test_a_type_given_with_infer_is_refused_by_every_surface(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    with Memory(db, embedder=HashEmbedder(), background_embedding=False) as memory:
        with pytest.raises(ValueError, match="memory_type is chosen for each fact"):
            memory.add("I live in Paris.", user_id="ana", infer=True, memory_type="procedural")
        assert memory.get_all(user_id="ana") == []  # nothing written
        # "episodic", the default of before, which generated clients send, is let through
        [fact] = memory.add("I live in Paris.", user_id="ana", infer=True, memory_type="episodic")
        assert fact.memory_type == "semantic"
        memory.delete(fact.id, purge=True)
        [verbatim] = memory.add("I live in Paris.", user_id="ana")
        assert verbatim.memory_type == "episodic"  # the default when none is given

    cli = run_cli("add", "I live in Rome.", "-u", "bo", "--infer", "--type", "semantic", db=db)
    assert cli.returncode == 2 and "--type" in cli.stderr and "--infer" in cli.stderr
    inferred = run_cli("add", "I live in Rome.", "-u", "bo", "--infer", "--json", db=db)
    assert inferred.returncode == 0, inferred.stderr
    assert [r["memory_type"] for r in json.loads(inferred.stdout)] == ["semantic"]

    with app_client(db) as client:
        headers = auth(issue_key(client, "default"))
        body = {"messages": "I live in Oslo.", "user_id": "cy", "infer": True}
        refused = client.post(
            "/v1/memories", headers=headers, json={**body, "memory_type": "semantic"}
        )
        assert "memory_type is chosen for each fact" in assert_error(refused, 422)["message"]
        old_client = client.post(
            "/v1/memories", headers=headers, json={**body, "memory_type": "episodic"}
        )
        assert old_client.status_code == 201, old_client.text
        assert client.post("/v1/memories", headers=headers, json=body).status_code == 201
        plain = client.post(
            "/v1/memories", headers=headers, json={"messages": "hi", "user_id": "cy"}
        )
        assert plain.json()["results"][0]["memory_type"] == "episodic"


def test_mcp_lists_by_type_and_refuses_a_type_with_infer(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    ids = _fill(db)
    with KeyStore(str(db)) as keys:
        key = keys.create("default").secret

    async def scenario(s: ClientSession) -> dict[str, Any]:
        args = {"user_id": "ana", "memory_type": ["procedural"], "validity": "all"}
        return {
            "listed": payload(await s.call_tool("list_memories", args))["results"],
            "refused": error_text(
                await s.call_tool(
                    "add_memory",
                    {
                        "messages": "I live in Oslo.",
                        "user_id": "ana",
                        "infer": True,
                        "memory_type": "semantic",
                    },
                )
            ),
        }

    out = anyio.run(stdio_call, db, key, scenario)
    assert [r["id"] for r in out["listed"]] == [ids["Always answer Ana in Spanish"]]
    assert "memory_type is chosen for each fact" in out["refused"]
