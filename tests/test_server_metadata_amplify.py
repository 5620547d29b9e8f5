"""One ``POST /v1/memories`` under the body limit cannot write or answer many times it.

The add's ``metadata`` is copied into every message's memory, and the 201 lists each
copy: 0.9 MB of it with 500 one-word messages (a 0.92 MB body) wrote 467 MB, answered
450 MB and took the server from 111 to 613 MB of memory. ``contextos serve`` now
answers such a body 422, in ``Memory.add``'s words (docs/api.md), and writes nothing;
an add within the limits is stored and answered as before, its answer a small multiple
of the body limit at most. The test runs the real command on a SQLite file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from contextos.memory.ingest import MAX_METADATA_BYTES, MAX_METADATA_COPIES_BYTES, metadata_bytes
from contextos.server.keys import KeyStore

httpx = pytest.importorskip("httpx")

from contextos.bench.serve import running_server  # noqa: E402

BODY_LIMIT = 1_000_000  # serve's default --max-body-bytes


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[httpx.Client, Path]]:
    db = tmp_path / "amp.db"
    with KeyStore(str(db)) as store:
        key = store.create("acme").secret
    with (
        running_server(str(db), "--embedder", "hash") as (url, _proc),
        httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=120) as http,
    ):
        yield http, db


def db_bytes(db: Path) -> int:
    return sum(os.path.getsize(f"{db}{s}") for s in ("", "-wal") if os.path.exists(f"{db}{s}"))


def add(http: httpx.Client, body: dict[str, object]) -> httpx.Response:
    raw = json.dumps(body).encode()
    assert len(raw) < BODY_LIMIT  # the body limit is not what refuses it
    return http.post("/v1/memories", content=raw, headers={"Content-Type": "application/json"})


def words(n: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"m{i}"} for i in range(n)]


def refused(resp: httpx.Response, *said: str) -> None:
    assert resp.status_code == 422, resp.text[:300]
    assert len(resp.content) < 1000
    message = resp.json()["error"]["message"]
    assert all(part in message for part in said), message


def test_metadata_copied_into_each_message_cannot_amplify_one_request(
    served: tuple[httpx.Client, Path],
) -> None:
    http, db = served
    assert add(http, {"messages": "warm", "user_id": "u"}).status_code == 201
    before = db_bytes(db)
    # The review's request: 0.9 MB of metadata, 500 messages.
    resp = add(http, {"messages": words(500), "user_id": "u", "metadata": {"b": "x" * 900_000}})
    refused(resp, "body.metadata", f"at most {MAX_METADATA_BYTES:,} bytes")
    # Within one memory's limit, but copied 500 times: 30 MB.
    resp = add(http, {"messages": words(500), "user_id": "u", "metadata": {"b": "x" * 60_000}})
    refused(resp, "500 memories", f"at most {MAX_METADATA_COPIES_BYTES:,} bytes")
    # A message's own metadata, and the memory holding it and the add's together.
    one = {"role": "user", "content": "a", "metadata": {"b": "x" * 70_000}}
    refused(add(http, {"messages": [one], "user_id": "u"}), "body.messages.0.metadata")
    half = {"role": "user", "content": "a", "metadata": {"b": "x" * 40_000}}
    resp = add(http, {"messages": [half], "user_id": "u", "metadata": {"c": "y" * 40_000}})
    refused(resp, "a memory's metadata", f"{MAX_METADATA_BYTES:,}")
    # Nothing was written.
    listed = http.get("/v1/memories", params={"user_id": "u", "limit": 1000})
    assert [r["text"] for r in listed.json()["results"]] == ["warm"]
    assert db_bytes(db) - before < 200_000
    # An update may not grow a memory's metadata past the limit either.
    (warm,) = listed.json()["results"]
    resp = http.patch(f"/v1/memories/{warm['id']}", json={"metadata": {"b": "x" * 70_000}})
    refused(resp, "body.metadata", f"{MAX_METADATA_BYTES:,}")


def test_an_add_within_the_limits_is_stored_and_answered_in_proportion(
    served: tuple[httpx.Client, Path],
) -> None:
    http, db = served
    # 1,000 messages sharing 990 bytes: the most the copy limit allows them.
    shared = {"source": "import", "tags": ["x" * 960]}
    resp = add(http, {"messages": words(1000), "user_id": "u", "metadata": shared})
    assert resp.status_code == 201, resp.text[:300]
    assert len(resp.json()["results"]) == 1000
    assert len(resp.content) < 3 * BODY_LIMIT
    # Each message with 60 KB of its own (not copied): 15 of them fill a body.
    own = [
        {"role": "user", "content": f"n{i}", "metadata": {"b": "x" * 60_000, "i": i}}
        for i in range(15)
    ]
    resp = add(http, {"messages": own, "user_id": "v"})
    assert resp.status_code == 201, resp.text[:300]
    assert len(resp.content) < 3 * BODY_LIMIT
    assert db_bytes(db) < 20 * BODY_LIMIT


def exactly(limit: int) -> dict[str, str]:
    """Metadata of exactly ``limit`` bytes as JSON (``{"a": "aaa..."}``)."""
    meta = {"a": "a" * (limit - len('{"a":""}'))}
    assert metadata_bytes(meta) == limit
    return meta


def test_metadata_of_exactly_the_limit_is_stored_and_one_byte_more_is_a_422(
    served: tuple[httpx.Client, Path],
) -> None:
    # The library adds "role" (and "seq" in a session) to each memory's metadata: it
    # counted them, so metadata of exactly the documented 65,536 bytes was refused with
    # a size the caller never sent, and over HTTP as a 400 the body's check had let by.
    http, _ = served
    for session in ({}, {"session_id": "s1"}):
        body = {"user_id": "ana", **session, "metadata": exactly(MAX_METADATA_BYTES)}
        resp = add(http, {**body, "messages": [{"role": "assistant", "content": "noted"}]})
        assert resp.status_code == 201, resp.text[:300]
        (stored,) = resp.json()["results"]
        assert stored["metadata"]["a"] == body["metadata"]["a"]
        over = {**body, "metadata": exactly(MAX_METADATA_BYTES + 1), "messages": words(1)}
        refused(add(http, over), "65,536", "65,537")
