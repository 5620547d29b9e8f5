"""The HTTP API: routes mirror the Python API, auth, limits, errors, keys, CLI."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cli_support import bench_report
from contextos.cli.main import cli
from contextos.memory import Memory
from contextos.server.batching import BatchingEmbedder
from contextos.server.keys import KeyStore, validate_tenant
from contextos.server.ratelimit import RateLimit, TokenBucketLimiter
from contextos.server.schemas import MAX_LEFT_OUT
from contextos.testing.embedders import HashEmbedder
from server_support import ADMIN_KEY, Tenant, app_client, assert_error, auth, chat, issue_key


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "server.db"


@pytest.fixture
def acme(db: Path) -> Iterator[Tenant]:
    """A fresh app on ``db`` and the headers of a key for tenant ``acme``."""
    with app_client(db) as c:
        yield c, auth(issue_key(c, "acme"))


def test_memory_routes_match_the_python_api(acme: Tenant, db: Path) -> None:
    c, h = acme
    added = c.post(
        "/v1/memories",
        headers=h,
        json={
            "messages": chat("I am allergic to peanuts", "Noted, no peanuts."),
            "user_id": "ana",
            "session_id": "s1",
            "metadata": {"source": "chat"},
        },
    )
    assert added.status_code == 201
    ids = [r["id"] for r in added.json()["results"]]
    assert len(ids) == 2
    c.post("/v1/memories", headers=h, json={"messages": "Bob rides a red bike", "user_id": "bob"})
    http_hits = c.post(
        "/v1/memories/search", headers=h, json={"query": "peanuts allergy", "user_id": "ana"}
    ).json()
    http_list = c.get("/v1/memories", headers=h, params={"user_id": "ana"}).json()

    with Memory(
        store=None,
        path_or_url=str(db),
        tenant="acme",
        embedder=HashEmbedder(),
        background_embedding=False,
    ) as mem:
        mem.flush()
        py_hits = mem.search("peanuts allergy", user_id="ana")
        py_list = mem.get_all(user_id="ana")
    assert [x["memory"]["id"] for x in http_hits["results"]] == [x.record.id for x in py_hits]
    assert [x["id"] for x in http_list["results"]] == [r.id for r in py_list]
    assert {x["user_id"] for x in http_list["results"]} == {"ana"}

    one = c.get(f"/v1/memories/{ids[0]}", headers=h).json()
    assert one["text"] == "I am allergic to peanuts"
    assert one["metadata"]["source"] == "chat"
    upd = c.patch(f"/v1/memories/{ids[0]}", headers=h, json={"text": "No peanuts, ever"})
    assert upd.status_code == 200 and upd.json()["text"] == "No peanuts, ever"
    hist = c.get(f"/v1/memories/{ids[0]}/history", headers=h).json()["results"]
    assert [e["event"] for e in hist] == ["ADD", "UPDATE"]
    assert hist[1]["old_text"] == "I am allergic to peanuts"
    deleted = {"deleted": ids[1], "purged": False}
    assert c.delete(f"/v1/memories/{ids[1]}", headers=h).json() == deleted
    assert_error(c.get(f"/v1/memories/{ids[1]}", headers=h), 404, "NotFound")
    gone = c.post("/v1/memories/forget", headers=h, json={"user_id": "ana"}).json()
    assert gone == {"user_id": "ana", "forgotten": 1, "sessions_forgotten": 0, "turns_forgotten": 0}
    left = c.get("/v1/memories", headers=h, params={"user_id": "bob"}).json()["results"]
    assert [r["text"] for r in left] == ["Bob rides a red bike"]


def test_session_routes_append_and_read_in_order(acme: Tenant) -> None:
    c, h = acme

    def append(session_id: str, *texts: str) -> None:
        body = {"messages": chat(*texts), "user_id": "ana"}
        assert c.post(f"/v1/sessions/{session_id}/turns", headers=h, json=body).status_code == 201

    append("s1", "hi", "hello")
    append("s1", "bye")
    turns = c.get("/v1/sessions/s1/turns", headers=h).json()["results"]
    assert [(t["seq"], t["content"]) for t in turns] == [(0, "hi"), (1, "hello"), (2, "bye")]
    assert all(t["tokens"] > 0 for t in turns)
    later = c.get("/v1/sessions/s1/turns", headers=h, params={"after_seq": 0, "limit": 1})
    assert [t["content"] for t in later.json()["results"]] == ["hello"]
    assert c.get("/v1/sessions", headers=h, params={"user_id": "ana"}).json() == {
        "results": ["s1"],
        "limit": 100,
        "offset": 0,
    }
    for sid in ("s2", "s3"):
        append(sid, sid)
    pages = [
        c.get("/v1/sessions", headers=h, params={"limit": 2, "offset": off}).json()["results"]
        for off in (0, 2)
    ]
    assert pages == [["s1", "s2"], ["s3"]]
    assert_error(c.get("/v1/sessions", headers=h, params={"limit": 5000}), 422)


def test_list_is_paginated_with_a_maximum(acme: Tenant) -> None:
    c, h = acme
    for i in range(7):
        c.post("/v1/memories", headers=h, json={"messages": f"note {i}", "user_id": "ana"})
    pages = [
        c.get(
            "/v1/memories", headers=h, params={"user_id": "ana", "limit": 3, "offset": off}
        ).json()
        for off in (0, 3, 6)
    ]
    ids = [r["id"] for p in pages for r in p["results"]]
    assert [len(p["results"]) for p in pages] == [3, 3, 1]
    assert len(set(ids)) == 7
    assert pages[1]["limit"] == 3 and pages[1]["offset"] == 3
    too_many = c.get("/v1/memories", headers=h, params={"user_id": "ana", "limit": 1001})
    assert_error(too_many, 422, "InvalidRequest")
    assert "limit" in too_many.json()["error"]["message"]


def test_auth_errors_are_json_401_and_403(db: Path) -> None:
    with app_client(db) as c:
        key = issue_key(c, "acme")
        assert_error(c.get("/v1/memories", params={"user_id": "a"}), 401, "Unauthenticated")
        bad = c.get("/v1/memories", params={"user_id": "a"}, headers=auth(key[:-2] + "xx"))
        assert_error(bad, 401, "Unauthenticated")
        assert bad.headers["www-authenticate"] == "Bearer"
        via_header = c.get("/v1/memories", params={"user_id": "a"}, headers={"X-API-Key": key})
        assert via_header.status_code == 200
        # The admin key manages keys but cannot read memories; tenant keys cannot manage keys.
        admin_read = c.get("/v1/memories", params={"user_id": "a"}, headers=auth(ADMIN_KEY))
        assert_error(admin_read, 403, "Forbidden")
        assert_error(c.get("/v1/keys", headers=auth(key)), 403, "Forbidden")
        assert_error(c.post("/v1/keys", json={"tenant": "x"}, headers=auth(key)), 403)


def test_revoked_key_is_refused_at_once(db: Path) -> None:
    with app_client(db) as c:
        key = issue_key(c, "acme")
        key_id = key.split("_")[1]
        assert c.get("/v1/memories", params={"user_id": "a"}, headers=auth(key)).status_code == 200
        listed = c.get("/v1/keys", headers=auth(ADMIN_KEY), params={"tenant": "acme"}).json()
        assert [k["id"] for k in listed["results"]] == [key_id]
        assert "key" not in listed["results"][0]
        revoked = c.delete(f"/v1/keys/{key_id}", headers=auth(ADMIN_KEY))
        assert revoked.status_code == 200 and revoked.json()["revoked_at"]
        assert_error(c.get("/v1/memories", params={"user_id": "a"}, headers=auth(key)), 401)
        assert_error(c.delete("/v1/keys/nosuchkey", headers=auth(ADMIN_KEY)), 404, "NotFound")


def test_a_short_admin_key_is_refused(db: Path) -> None:
    with pytest.raises(ValueError, match="at least 16"), app_client(db, admin_key="short"):
        pass


def test_key_management_over_http_is_off_without_an_admin_key(db: Path) -> None:
    with app_client(db, admin_key=None) as c:
        resp = c.post("/v1/keys", json={"tenant": "acme"}, headers=auth(ADMIN_KEY))
        assert "admin-key" in assert_error(resp, 403, "Forbidden")["message"]


def test_bodies_over_the_limit_get_413(db: Path) -> None:
    with app_client(db, max_body_bytes=2048) as c:
        h = auth(issue_key(c, "acme"))
        big = {"messages": "x" * 5000, "user_id": "ana"}
        assert_error(c.post("/v1/memories", headers=h, json=big), 413, "PayloadTooLarge")

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted while streaming
            for _ in range(10):
                yield b" " * 1000

        streamed = c.post(
            "/v1/memories", headers={**h, "content-type": "application/json"}, content=chunks()
        )
        assert_error(streamed, 413, "PayloadTooLarge")
        ok = c.post("/v1/memories", headers=h, json={"messages": "small", "user_id": "ana"})
        assert ok.status_code == 201


@pytest.mark.serial
def test_rate_limit_answers_429_with_retry_after(db: Path) -> None:
    with app_client(db, rate_limit=RateLimit(rate=0.5, burst=2)) as c:
        a, b = auth(issue_key(c, "acme")), auth(issue_key(c, "other"))
        params = {"user_id": "ana"}
        assert [c.get("/v1/memories", headers=a, params=params).status_code for _ in range(2)] == [
            200,
            200,
        ]
        limited = c.get("/v1/memories", headers=a, params=params)
        assert_error(limited, 429, "RateLimited")
        assert int(limited.headers["retry-after"]) >= 1
        # Buckets are per key: another key is unaffected.
        assert c.get("/v1/memories", headers=b, params=params).status_code == 200


def test_token_bucket_refills_at_its_rate() -> None:
    now = [100.0]
    limiter = TokenBucketLimiter(RateLimit(rate=2.0, burst=3), clock=lambda: now[0])
    assert [limiter.acquire("k") for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = limiter.acquire("k")
    assert wait == pytest.approx(0.5)
    now[0] += 0.5
    assert limiter.acquire("k") == 0.0
    assert limiter.acquire("k") > 0
    now[0] += 100
    assert [limiter.acquire("k") for _ in range(3)] == [0.0, 0.0, 0.0]  # capped at burst
    assert limiter.acquire("k") > 0
    assert TokenBucketLimiter(RateLimit(rate=0)).acquire("k") == 0.0
    assert TokenBucketLimiter.retry_after_header(0.01) == "1"
    assert TokenBucketLimiter.retry_after_header(2.2) == "3"


def test_keys_are_stored_hashed_and_verified(tmp_path: Path) -> None:
    db = tmp_path / "keys.db"
    store = KeyStore(str(db))
    issued = store.create("acme", "ci")
    assert issued.secret.startswith(f"ctx_{issued.key.id}_")
    assert store.verify(issued.secret) == issued.key
    for wrong in (
        "",
        "ctx_",
        issued.secret + "x",
        issued.secret.replace("ctx_", "ctx-"),
        f"ctx_{issued.key.id}_" + "A" * 43,
        "\ud800",
        "ctx_" + "0" * 12 + "_" + "a" * 30,
    ):
        assert store.verify(wrong) is None
    store.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert issued.secret.encode() not in raw
    assert issued.secret.split("_", 2)[2].encode() not in raw
    rows = sqlite3.connect(db).execute("SELECT id, tenant, hash FROM api_keys").fetchall()
    assert rows == [(issued.key.id, "acme", rows[0][2])] and len(rows[0][2]) == 64


@pytest.mark.parametrize("bad", ["", " acme", "a" * 129, "ten/ant", "ténant", "a\nb"])
def test_tenant_names_are_validated(bad: str) -> None:
    with pytest.raises(ValueError):
        validate_tenant(bad)


def test_keys_cli_create_list_revoke(tmp_path: Path) -> None:
    db = str(tmp_path / "cli.db")
    runner = CliRunner()
    created = runner.invoke(
        cli, ["keys", "create", "--db", db, "--tenant", "acme", "--name", "laptop"]
    )
    assert created.exit_code == 0, created.output
    secret = created.stdout.splitlines()[0]
    store = KeyStore(db)
    key = store.verify(secret)
    store.close()
    assert key is not None and key.tenant == "acme" and key.name == "laptop"
    listed = runner.invoke(cli, ["--db", db, "keys", "list", "--json"])
    assert listed.exit_code == 0 and secret not in listed.output
    assert f'"id": "{key.id}"' in listed.output
    revoked = runner.invoke(cli, ["keys", "revoke", "--db", db, key.id])
    assert revoked.exit_code == 0 and f"revoked {key.id}" in revoked.output
    store = KeyStore(db)
    assert store.verify(secret) is None
    store.close()


def test_openapi_lists_every_route_with_bearer_auth(db: Path) -> None:
    with app_client(db) as c:
        spec = c.get("/openapi.json").json()
    paths = spec["paths"]
    assert set(paths) >= {
        "/v1/memories",
        "/v1/memories/search",
        "/v1/memories/forget",
        "/v1/memories/{memory_id}",
        "/v1/memories/{memory_id}/history",
        "/v1/sessions",
        "/v1/sessions/{session_id}/turns",
        "/v1/keys",
        "/v1/keys/{key_id}",
        "/healthz",
    }
    assert paths["/v1/memories/search"]["post"]["security"] == [{"HTTPBearer": []}]
    summaries = {op["summary"] for p in paths.values() for op in p.values()}
    assert {"add", "search", "get", "get_all", "update", "delete", "history", "forget"} <= summaries


class _RecordingEmbedder(HashEmbedder):
    """HashEmbedder that remembers each batch and can be held on a gate."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[list[str]] = []
        self.gate = threading.Event()
        self.gate.set()

    def embed(self, texts):  # type: ignore[no-untyped-def]
        self.gate.wait(10)
        self.batches.append(list(texts))
        if "boom" in texts:
            raise RuntimeError("embedder failed")
        return super().embed(texts)


@pytest.mark.serial
def test_batching_embedder_merges_concurrent_calls_and_prefers_queries() -> None:
    inner = _RecordingEmbedder()
    emb = BatchingEmbedder(inner, max_batch=64)
    try:
        inner.gate.clear()  # hold the first call so the rest queue up behind it
        results: dict[str, np.ndarray] = {}
        warm = [f"warm {i}" for i in range(8)]
        first = threading.Thread(target=lambda: results.update(first=emb.embed(warm)))
        first.start()
        time.sleep(0.2)
        big = [f"document {i}" for i in range(20)]
        threads = [threading.Thread(target=lambda: results.update(big=emb.embed(big)))]
        threads += [
            threading.Thread(target=lambda q=q: results.update({q: emb.embed([q])}))
            for q in ("tea", "coffee", "bike")
        ]
        for t in threads:
            t.start()
            time.sleep(0.05)
        inner.gate.set()
        for t in [first, *threads]:
            t.join(10)
        # The queries waiting behind the held call were taken together, ahead of the big
        # call queued before them (then the two kinds alternate, so neither starves), and
        # embedded one by one: each gets the vector it gets alone.
        assert inner.batches[0] == warm
        assert sorted(inner.batches[1:4]) == [["bike"], ["coffee"], ["tea"]]
        assert inner.batches[4] == big
        plain = HashEmbedder()
        for q in ("tea", "coffee", "bike"):
            np.testing.assert_array_equal(results[q], plain.embed([q]))
        np.testing.assert_array_equal(results["big"], plain.embed(big))
        with pytest.raises(RuntimeError, match="embedder failed"):
            emb.embed(["boom"])
        assert emb.embed([]).shape == (0, inner.dimensions)
    finally:
        emb.close()


def test_window_route_assembles_turns_and_memories_within_budget(acme: Tenant) -> None:
    c, h = acme
    tea = c.post(
        "/v1/memories",
        headers=h,
        json={"messages": "Ana drinks green tea every morning", "user_id": "ana"},
    ).json()["results"][0]["id"]
    c.post(
        "/v1/sessions/s1/turns",
        headers=h,
        json={
            "messages": chat("I'm planning breakfast", "Sounds good, what do you like? " * 20),
            "user_id": "ana",
        },
    )
    resp = c.post(
        "/v1/sessions/s1/window",
        headers=h,
        json={"question": "What does Ana drink?", "user_id": "ana", "token_budget": 400},
    )
    assert resp.status_code == 200, resp.text
    win = resp.json()
    assert win["tokens"] <= 400 and win["budget"] == 400
    assert tea in win["memory_ids"]
    segments = [b["segment"] for b in win["blocks"]]
    assert segments[-1] == "question" and "turns" in segments and "memories" in segments
    assert win["blocks"][-1]["text"] == "What does Ana drink?"
    tiny = c.post(
        "/v1/sessions/s1/window",
        headers=h,
        json={"question": "What does Ana drink?", "user_id": "ana", "token_budget": 64},
    )
    assert tiny.status_code == 200 and tiny.json()["tokens"] <= 64
    assert tiny.json()["left_out"]  # what did not fit is reported, not dropped silently
    unknown = c.post("/v1/sessions/s1/window", headers=h, json={"question": "q", "model": "nope-9"})
    assert_error(unknown, 400, "ConfigError")


def test_sessions_newest_first_reaches_the_most_recent_of_many(acme: Tenant) -> None:
    """Why: the list was least recently active first only, so a client (the inspector)
    asking for the first 1,000 of 1,010 sessions never saw the 10 newest. order=newest
    pages from the most recent end; the default order stays as it was."""
    c, h = acme
    for i in range(1010):
        body = {"messages": chat(f"turn of chat {i}"), "user_id": "ana"}
        assert c.post(f"/v1/sessions/chat-{i:04d}/turns", headers=h, json=body).status_code == 201
    newest = c.get("/v1/sessions", headers=h, params={"order": "newest", "limit": 3}).json()
    assert newest == {"results": ["chat-1009", "chat-1008", "chat-1007"], "limit": 3, "offset": 0}
    later = c.get(
        "/v1/sessions",
        headers=h,
        params={"order": "newest", "limit": 1000, "offset": 1000, "user_id": "ana"},
    ).json()["results"]
    assert later == [f"chat-{i:04d}" for i in range(9, -1, -1)]
    oldest = c.get("/v1/sessions", headers=h, params={"limit": 1000}).json()["results"]
    assert oldest[:2] == ["chat-0000", "chat-0001"] and "chat-1009" not in oldest
    explicit = c.get("/v1/sessions", headers=h, params={"order": "oldest", "limit": 1000})
    assert explicit.json()["results"] == oldest
    assert_error(c.get("/v1/sessions", headers=h, params={"order": "latest"}), 422)


def test_window_lists_the_newest_left_out_turns_and_counts_the_rest(acme: Tenant) -> None:
    """Why: both window routes listed every turn left out (a key and a ~150-character
    reason each), so a small window of a 50,000-turn log was a 9.8 MB answer. Each
    segment lists its last MAX_LEFT_OUT items left out (the newest turns, just before
    the placed ones) and counts the rest with their tokens."""
    c, h = acme
    tokens: dict[int, int] = {}
    for start in (0, 1000):
        batch = [
            {"role": "user", "content": f"turn {start + i} " + "words " * 10} for i in range(1000)
        ]
        added = c.post("/v1/sessions/long/turns", headers=h, json={"messages": batch})
        tokens.update((t["seq"], t["tokens"]) for t in added.json()["results"])
    body = {"question": "what about turn 7?", "token_budget": 400, "user_id": "ana"}
    for path in ("/v1/sessions/long/window", "/ui/api/sessions/long/window"):
        resp = c.post(path, headers=h, json=body)
        assert resp.status_code == 200, resp.text
        win = resp.json()
        placed = [b for b in win["blocks"] if b["segment"] == "turns"]
        turns_out = [o for o in win["left_out"] if o["segment"] == "turns"]
        assert len(turns_out) == MAX_LEFT_OUT == 100
        missing = 2000 - len(placed)
        assert win["left_out_count"] == missing + len(win["left_out"]) - len(turns_out)
        newest_out = 2000 - len(placed) - 1
        assert [o["key"] for o in turns_out] == [
            f"turn:{seq}" for seq in range(newest_out - 99, newest_out + 1)
        ]
        (rest,) = win["left_out_not_listed"]
        assert rest["segment"] == "turns" and rest["count"] == missing - 100
        assert rest["tokens"] == sum(tokens[seq] for seq in range(rest["count"]))
        assert len(resp.content) < 60_000


def test_bench_serve_smoke_reports_acknowledged_equals_stored(tmp_path: Path) -> None:
    """The load benchmark end to end, tiny: a real server subprocess, two clients, one second."""
    out = tmp_path / "serve.json"
    command = "bench serve --clients 2 --seconds 1 --embedder hash"
    output, report = bench_report(*command.split(), "--json", str(out), report=out)
    assert report["errors"] == 0
    assert report["add"]["ok"] + report["search"]["ok"] > 0
    assert report["acknowledged_writes"] == report["stored_writes"] == report["stored_total"]
    assert report["missing_writes"] == 0
    assert "acknowledged writes" in output
    # CPU per request of server and load generator (Linux /proc), load-independent.
    assert report["server_cpu_ms_per_request"] > 0 and report["client_cpu_ms_per_request"] > 0
    # ... split by the server's threads; the groups add up to the whole.
    by_thread = report["server_cpu_ms_per_request_by_thread"]
    assert set(by_thread) == {
        "main",
        "request_threads",
        "query_embedding",
        "background_embedding",
        "ended_threads",
    }
    assert by_thread["main"] > 0 and by_thread["request_threads"] > 0
    # (/proc counts CPU in 10 ms ticks per thread: allow a few ticks over the whole run.)
    requests = report["add"]["ok"] + report["search"]["ok"]
    total_ms = report["server_cpu_ms_per_request"] * requests
    assert total_ms - 1e-6 <= sum(by_thread.values()) * requests <= total_ms + 50
    assert "by thread: main" in output


def test_add_with_infer_stores_extracted_facts(acme: Tenant) -> None:
    c, h = acme
    resp = c.post(
        "/v1/memories",
        headers=h,
        json={
            "messages": chat("I am allergic to peanuts."),
            "user_id": "ana",
            "infer": True,
        },
    )
    assert resp.status_code == 201, resp.text
    facts = resp.json()["results"]
    assert facts and all(f["user_id"] == "ana" for f in facts)
    assert any("peanut" in f["text"].lower() for f in facts)
    listed = c.get("/v1/memories", headers=h, params={"user_id": "ana"}).json()["results"]
    assert {f["id"] for f in facts} <= {r["id"] for r in listed}


def test_serve_with_two_workers_shares_one_database(tmp_path: Path) -> None:
    """`serve --workers 2`: two stateless processes, one store, one key table."""
    httpx = pytest.importorskip("httpx")
    from contextos.bench.serve import running_server

    db = str(tmp_path / "workers.db")
    with KeyStore(db) as store:
        key = store.create("acme").secret
    flags = ("--embedder", "hash", "--workers", "2", "--admin-key", ADMIN_KEY)
    with running_server(db, *flags) as (url, _proc):
        added = set()
        for i in range(8):  # fresh connections, spread over both processes by the kernel
            resp = httpx.post(
                f"{url}/v1/memories",
                json={"messages": f"note {i}", "user_id": "u"},
                headers=auth(key),
            )
            assert resp.status_code == 201, resp.text
            added.add(resp.json()["results"][0]["id"])
        listed = httpx.get(f"{url}/v1/memories", params={"user_id": "u"}, headers=auth(key))
        assert {r["id"] for r in listed.json()["results"]} == added
        keys = httpx.get(f"{url}/v1/keys", headers=auth(ADMIN_KEY))
        assert keys.status_code == 200 and len(keys.json()["results"]) == 1


def test_history_of_an_unknown_or_other_tenants_id_is_404_like_get(db: Path) -> None:
    """History answered 200 with no events for an id the tenant does not have (another
    tenant's included), where get, patch and delete answer 404: it must be a 404 with
    get's message, while a deleted memory's history stays readable."""
    import uuid

    with app_client(db) as c:
        a, b = auth(issue_key(c, "acme")), auth(issue_key(c, "beta"))
        body = {"messages": "x", "user_id": "u"}
        [mine] = c.post("/v1/memories", headers=a, json=body).json()["results"]
        [theirs] = c.post("/v1/memories", headers=b, json=body).json()["results"]
        assert c.delete(f"/v1/memories/{mine['id']}", headers=a).status_code == 200
        kept = c.get(f"/v1/memories/{mine['id']}/history", headers=a)
        assert kept.status_code == 200, kept.text
        assert [e["event"] for e in kept.json()["results"]] == ["ADD", "DELETE"]
        for mid in (theirs["id"], str(uuid.uuid4())):
            got = assert_error(c.get(f"/v1/memories/{mid}", headers=a), 404, "NotFound")
            history = c.get(f"/v1/memories/{mid}/history", headers=a)
            assert assert_error(history, 404, "NotFound") == got
        assert c.get(f"/v1/memories/{theirs['id']}/history", headers=b).status_code == 200


def test_healthz_answers_while_every_worker_thread_waits(tmp_path: Path) -> None:
    """Liveness runs on the event loop: with every thread of the pool waiting (here 50
    searches held in their query embedding; in a review, s55, a PostgreSQL outage) a
    sync /healthz waited for a thread, 12.7 s, and a liveness probe would have
    restarted every replica."""
    held = _RecordingEmbedder()
    with app_client(tmp_path / "h.db", embedder=held) as c:
        key = issue_key(c, "acme")
        assert c.post("/v1/memories", headers=auth(key), json={"messages": "tea", "user_id": "u"})
        held.gate.clear()
        searches = [
            threading.Thread(
                target=c.post,
                args=("/v1/memories/search",),
                kwargs={"headers": auth(key), "json": {"query": f"q{i}", "user_id": "u"}},
            )
            for i in range(50)
        ]
        for t in searches:
            t.start()
        time.sleep(1.0)  # every pool thread taken, the rest queued
        answers: list[int] = []
        probe = threading.Thread(target=lambda: answers.append(c.get("/healthz").status_code))
        probe.start()
        probe.join(3.0)
        answered_in_time = list(answers)
        held.gate.set()  # let everything go, whatever the probe did
        for t in [probe, *searches]:
            t.join(60)
    assert answered_in_time == [200], answers
