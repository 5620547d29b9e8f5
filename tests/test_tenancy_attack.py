"""Cross-tenant attack suite: tenant B's key against tenant A's data, every route and tool.

A success for the attacker is any response that carries one of A's ids or
texts, or any change to A's records, history or session log. The suite counts
successes and requires zero.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from contextos.errors import NotFound
from contextos.llm.tokens import default_tokenizer
from contextos.server.mcp_server import MemoryTools
from pg_support import fresh_schema
from server_support import ADMIN_KEY, app_client, auth, issue_key

SECRET_WORDS = ["zanzibarite", "quokkaflux", "vermillionwhale"]


@dataclass
class Victim:
    ids: list[str]
    texts: list[str]
    snapshot: str


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def database(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The same attacks against each backend: a SQLite file, a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield str(tmp_path_factory.mktemp("tenancy") / "t.db")
        return
    with fresh_schema("tenancy") as (url, _schema):
        yield url


@pytest.fixture(scope="module")
def world(database: str) -> Iterator[tuple[Any, str, str, Victim]]:
    with app_client(database) as c:
        a, b = issue_key(c, "tenant-a"), issue_key(c, "tenant-b")
        texts = [f"ana secret {w} number {i}" for i, w in enumerate(SECRET_WORDS)]
        ids = []
        for text in texts[:2]:
            r = c.post(
                "/v1/memories",
                headers=auth(a),
                json={
                    "messages": text,
                    "user_id": "ana",
                    "session_id": "s-a",
                    "metadata": {"project": "apollo"},
                },
            )
            ids += [x["id"] for x in r.json()["results"]]
        r = c.post(
            "/v1/memories",
            headers=auth(a),
            json={
                "messages": texts[2],
                "user_id": "bob",
                "agent_id": "helper",
                "memory_type": "semantic",
            },
        )
        ids += [x["id"] for x in r.json()["results"]]
        c.patch(f"/v1/memories/{ids[0]}", headers=auth(a), json={"metadata": {"v": 2}})
        c.post(
            "/v1/sessions/s-a/turns",
            headers=auth(a),
            json={"messages": [{"role": "user", "content": texts[0]}], "user_id": "ana"},
        )
        # B has its own user called ana, to prove user ids do not cross tenants either.
        c.post(
            "/v1/memories",
            headers=auth(b),
            json={"messages": "b's ana likes tea", "user_id": "ana"},
        )
        yield c, a, b, Victim(ids, texts, _snapshot(c, a, ids))


def _snapshot(c: Any, key: str, ids: list[str]) -> str:
    """Everything tenant A can see, as one string, to compare before and after."""
    h = auth(key)
    parts = [c.get("/v1/memories", headers=h, params={"user_id": u}).json() for u in ("ana", "bob")]
    parts += [c.get(f"/v1/memories/{i}/history", headers=h).json() for i in ids]
    parts += [
        c.get("/v1/sessions/s-a/turns", headers=h).json(),
        c.get("/v1/sessions", headers=h).json(),
    ]
    return json.dumps(parts, sort_keys=True)


def _leaks(victim: Victim, payload: str, request: str = "") -> bool:
    """A's text, or an A id the attacker did not send (a 404 may echo the id asked for)."""
    for echoed in victim.ids:
        if echoed in request:
            payload = payload.replace(repr(echoed), "")
    return any(x in payload for x in victim.ids + victim.texts + SECRET_WORDS)


def _attacks(victim: Victim) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(method, path, request kwargs) for every route, aimed at A's records."""
    guesses = [str(uuid.uuid4()), "' OR '1'='1", "%", "*", "..%2F..%2Fetc", "1", "0"]
    for mid in victim.ids + guesses:
        yield "GET", f"/v1/memories/{mid}", {}
        yield "PATCH", f"/v1/memories/{mid}", {"json": {"text": "pwned"}}
        yield "PATCH", f"/v1/memories/{mid}", {"json": {"metadata": {"pwned": True}}}
        yield "GET", f"/v1/memories/{mid}/history", {}
    for scope in (
        {"user_id": "ana"},
        {"user_id": "bob"},
        {"session_id": "s-a"},
        {"agent_id": "helper"},
        {"user_id": "%"},
        {"user_id": "' OR 1=1 --"},
    ):
        yield "GET", "/v1/memories", {"params": {**scope, "limit": 1000}}
        yield "GET", "/v1/memories", {"params": {**scope, "tenant": "tenant-a"}}
        for word in SECRET_WORDS + ["ana secret number"]:
            yield "POST", "/v1/memories/search", {"json": {"query": word, **scope, "limit": 100}}
        yield (
            "POST",
            "/v1/memories/search",
            {"json": {"query": "secret", **scope, "metadata": {"project": "apollo"}}},
        )
    smuggled = [
        {"messages": "x", "user_id": "ana", "tenant": "tenant-a"},
        {"query": "secret", "user_id": "ana", "tenant": "tenant-a"},
        {"query": "secret", "user_id": "ana", "scope": {"tenant": "tenant-a"}},
    ]
    yield "POST", "/v1/memories", {"json": smuggled[0]}
    yield "POST", "/v1/memories/search", {"json": smuggled[1]}
    yield "POST", "/v1/memories/search", {"json": smuggled[2]}
    yield "GET", "/v1/memories", {"params": {"user_id": "ana"}, "headers": {"X-Tenant": "tenant-a"}}
    yield "GET", "/v1/sessions", {}
    yield "GET", "/v1/sessions", {"params": {"user_id": "ana"}}
    yield "GET", "/v1/sessions/s-a/turns", {}
    yield "GET", "/v1/sessions/s-a/turns", {"params": {"after_seq": -1, "limit": 1000}}
    yield "GET", "/v1/keys", {}
    for scope in ({"user_id": "ana"}, {"user_id": "bob"}, {"agent_id": "helper"}, {}):
        yield "POST", "/v1/sessions/s-a/window", {"json": {"question": "the secret?", **scope}}
    for mid in victim.ids + guesses:  # destructive ones last
        yield "DELETE", f"/v1/memories/{mid}", {}
    yield "POST", "/v1/memories/forget", {"json": {"user_id": "ana"}}
    yield "POST", "/v1/memories/forget", {"json": {"user_id": "bob"}}
    yield (
        "POST",
        "/v1/sessions/s-a/turns",
        {"json": {"messages": [{"role": "user", "content": "injected"}], "user_id": "ana"}},
    )


def test_tenant_b_cannot_reach_tenant_a_over_http(world: tuple[Any, str, str, Victim]) -> None:
    c, _a, b, victim = world
    successes: list[str] = []
    attempts = 0
    for method, path, kwargs in _attacks(victim):
        kwargs = dict(kwargs)
        headers = {**auth(b), **kwargs.pop("headers", {})}
        resp = c.request(method, path, headers=headers, **kwargs)
        attempts += 1
        assert resp.status_code < 500, (method, path, resp.text)
        if _leaks(victim, resp.text, path):
            successes.append(f"{method} {path} -> {resp.status_code} {resp.text[:200]}")
    assert attempts > 100
    assert successes == []
    # Nothing of A changed: records, histories, session log.
    assert _snapshot(c, _a, victim.ids) == victim.snapshot


def test_tenant_b_gets_not_found_not_forbidden_for_a_ids(
    world: tuple[Any, str, str, Victim],
) -> None:
    """404, the same as a random id, so B cannot even learn that an id exists."""
    c, _a, b, victim = world
    for mid in victim.ids + [str(uuid.uuid4())]:
        resp = c.get(f"/v1/memories/{mid}", headers=auth(b))
        assert resp.status_code == 404
        assert resp.json()["error"]["message"] == f"no memory {mid!r}"


def test_admin_key_cannot_read_any_tenant(world: tuple[Any, str, str, Victim]) -> None:
    c, _a, _b, victim = world
    for method, path, kwargs in _attacks(victim):
        if path.startswith("/v1/keys"):
            continue
        kwargs = dict(kwargs)
        headers = {**auth(ADMIN_KEY), **kwargs.pop("headers", {})}
        resp = c.request(method, path, headers=headers, **kwargs)
        assert resp.status_code in (403, 404, 422), (method, path, resp.status_code)
        assert not _leaks(victim, resp.text, path)


def test_tenant_b_mcp_tools_cannot_reach_tenant_a(world: tuple[Any, str, str, Victim]) -> None:
    c, a, _b, victim = world
    tools = MemoryTools(c.app.state.tenants, lambda: "tenant-b", default_tokenizer())
    outputs: list[Any] = []
    for scope in (
        {"user_id": "ana"},
        {"user_id": "bob"},
        {"session_id": "s-a"},
        {"agent_id": "helper"},
    ):
        outputs.append(tools.list_memories(**scope, limit=1000))
        for word in SECRET_WORDS:
            outputs.append(tools.search_memory(word, **scope, limit=100))
            window = tools.assemble_window("what does the secret say?", **scope, token_budget=4000)
            outputs.append(window)
    for mid in victim.ids:
        with pytest.raises(NotFound):
            tools.delete_memory(mid)
    outputs.append(tools.add_memory("b writes", user_id="ana"))
    assert not _leaks(victim, json.dumps(outputs))
    assert _snapshot(c, a, victim.ids) == victim.snapshot
