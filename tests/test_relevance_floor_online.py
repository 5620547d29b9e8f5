"""``search(min_score=...)`` online: memories still waiting for their vectors, and one rule
for the floor's value on every surface (review s40, relevance).

- A search with a floor judged only the best 16 keyword hits among memories waiting for
  their vectors: one bulk add of 21 memories over HTTP, and the relevant one was dropped
  though its cosine passed. It now makes the vectors of up to ``UNEMBEDDED_TEXTS`` texts,
  keeps them, and the worker stores those same vectors (the int8 graph's vector moves with
  its batch, so the relevance judged while pending and the one stored differed).
- HTTP and MCP took ``true`` (a floor of 1.0: nothing), ``false`` and ``"0.3"``, while
  Python refused a NumPy number as "not a number": one rule now, real numbers only.
- The CLI's table showed only the fused score, never the relevance ``--min-score`` compares.

A real uvicorn server on loopback (in a thread, so the test can hold its embedder's
background batches), ``contextos mcp`` over stdio, the CLI in a subprocess, real SQLite
files, the shipped HashEmbedder.
"""

from __future__ import annotations

import cProfile
import json
import pstats
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import httpx
import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("mcp")
uvicorn = pytest.importorskip("uvicorn")

from mcp.client.session import ClientSession  # noqa: E402

from contextos.embed import Embedder, Vectors, normalize  # noqa: E402
from contextos.memory import Memory  # noqa: E402
from contextos.memory.expansion import MAX_TURN_FACTS  # noqa: E402
from contextos.memory.retrieval import UNEMBEDDED_ROWS, UNEMBEDDED_TEXTS  # noqa: E402
from contextos.memory.turn_vectors import embedding_inputs  # noqa: E402
from contextos.server.app import ServerConfig, close_app, create_app  # noqa: E402
from contextos.server.keys import KeyStore  # noqa: E402
from contextos.server.ratelimit import RateLimit  # noqa: E402
from contextos.testing.embedders import HashEmbedder  # noqa: E402
from mcp_support import error_text, results, stdio_call  # noqa: E402
from server_support import ADMIN_KEY, assert_error, auth  # noqa: E402
from test_cli_memory import run  # noqa: E402
from test_read_your_writes import HeldBatches  # noqa: E402

#: What the worker's batches add to each vector (norm 0.05) before normalising.
DRIFT = np.full(64, 0.05 / 8, dtype=np.float32)


class HeldDrifting(HashEmbedder):
    """The worker's batches (``embed_batch``) wait while held, and give each text a
    vector a little off the one ``embed`` (the search's path) gives it: as the int8
    MiniLM graph's vector moves with the batch a text is embedded in. ``entered`` is set
    once a batch has begun."""

    model_id = "hash-bow-drifting"

    def __init__(self) -> None:
        super().__init__()
        self._open = threading.Event()
        self._open.set()
        self.entered = threading.Event()

    def hold(self) -> None:
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    def embed_batch(self, texts: Sequence[str]) -> Vectors:
        self.entered.set()
        self._open.wait(timeout=60)
        return normalize(self.embed(texts) + DRIFT)


@contextmanager
def live_server(db: Path, embedder: Embedder) -> Iterator[tuple[httpx.Client, Any]]:
    """The app ``contextos serve`` runs, on ``embedder``, served by uvicorn on a free
    loopback port in a thread: an httpx client holding a key of tenant ``acme``, and the
    app (its worker is ``app.state.tenants.worker``)."""
    app = create_app(
        ServerConfig(
            db=str(db),
            embedder="hash",
            admin_key=ADMIN_KEY,
            rate_limit=RateLimit(rate=0),
            auth_failures=RateLimit(rate=0),
        ),
        embedder=embedder,
    )
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        port = server.servers[0].sockets[0].getsockname()[1]
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
            made = http.post("/v1/keys", json={"tenant": "acme"}, headers=auth(ADMIN_KEY))
            assert made.status_code == 201, made.text
            http.headers.update(auth(made.json()["key"]))
            yield http, app
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        close_app(app)


def _said(*texts: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text} for text in texts]


def _relevance(http: httpx.Client, body: dict[str, Any]) -> dict[str, float]:
    resp = http.post("/v1/memories/search", json=body)
    assert resp.status_code == 200, resp.text
    return {h["memory"]["id"]: h["relevance"] for h in resp.json()["results"]}


def test_over_http_a_floor_judges_a_bulk_add_by_the_vectors_it_is_stored_with(
    tmp_path: Path,
) -> None:
    """One POST of 30 memories, each passing the floor once embedded, searched with a
    floor while the worker is busy: all 30 come back (16 did), each with the relevance
    it keeps once the worker has stored its vector, though the
    worker's own batches would have given another (``HeldDrifting``)."""
    embedder = HeldDrifting()
    texts = [f"zebra99x note {n}" for n in range(30)]
    query = embedder.embed(["zebra99x"])[0]
    assert all(float(v @ query) >= 0.3 for v in embedder.embed(texts))  # all pass, embedded
    moved = normalize(embedder.embed(texts[:1]) + DRIFT)[0]
    assert abs(float(moved @ query) - float(embedder.embed(texts[:1])[0] @ query)) > 1e-3
    body = {"query": "zebra99x", "user_id": "ana", "min_score": 0.3, "limit": 50}
    with live_server(tmp_path / "s.db", embedder) as (http, app):
        embedder.hold()
        try:
            # The worker takes this one as its batch and waits in it, so the 30 wait for
            # their vectors while the search runs, and its next batch comes after.
            blocker = http.post("/v1/memories", json={"messages": "mild weather", "user_id": "bob"})
            assert blocker.status_code == 201, blocker.text
            assert embedder.entered.wait(timeout=30)
            added = http.post("/v1/memories", json={"messages": _said(*texts), "user_id": "ana"})
            assert added.status_code == 201, added.text
            assert app.state.tenants.store.embedding_status().pending == 31
            pending = _relevance(http, body)
        finally:
            embedder.release()
        assert app.state.tenants.worker.flush(timeout=60)
        assert app.state.tenants.store.embedding_status().pending == 0
        stored = _relevance(http, body)
    assert len(pending) == 30 and set(pending) == set(stored)
    # The same vector (to float32 rounding: the store's index computes the stored one's
    # cosine); the worker's own batch would have moved it by more than 1e-3.
    assert pending == pytest.approx(stored, abs=1e-6)


def test_one_search_embeds_at_most_its_bound_and_the_next_one_goes_on(tmp_path: Path) -> None:
    """Beyond ``UNEMBEDDED_TEXTS`` texts a search leaves the worse pending hits out under
    a floor (docs/api.md); the vectors it made are kept, so the next search judges those
    at no cost and embeds the next ones: two searches judge 80 pending memories.

    The oldest pending memory matches no search, so no search keeps its vector and the
    worker's first batch must call the held embedder. Without it, once the second
    search had kept all 80 vectors the worker stored them without calling the embedder
    (``kept_or_embedded``): a third search that ran after its linger (a loaded machine)
    ranked them by the dense list too, in another order (1 run in 15)."""
    embedder = HeldBatches()
    texts = [f"zebra99x note {n}" for n in range(80)]
    with Memory(tmp_path / "m.db", embedder=embedder) as m:
        embedder.hold()
        try:
            m.add("a plain note the searches never match", user_id="ana")
            m.add(texts, user_id="ana")
            assert m.embedding_status().pending == 81
            order = [h.record.id for h in m.search("zebra99x", user_id="ana", limit=100)]
            calls = embedder.calls
            first = m.search("zebra99x", user_id="ana", min_score=-1.0, limit=100)
            second = m.search("zebra99x", user_id="ana", min_score=-1.0, limit=100)
            time.sleep(0.5)  # past the worker's linger: it has taken its batch
            third = m.search("zebra99x", user_id="ana", min_score=-1.0, limit=100)
            embedded = embedder.calls - calls
            assert m.embedding_status().pending == 81  # held: all judged while pending
        finally:
            embedder.release()
    assert len(order) == 80
    assert {h.record.id for h in first} == set(order[:UNEMBEDDED_TEXTS])  # the best first
    assert len(second) == 80 and [h.record.id for h in third] == [h.record.id for h in second]
    # Each search's query, the first two searches' one batch each (64, then 16 texts);
    # the third embeds no memory again.
    assert embedded == 2 + 2 + 1


PLACES = ("Paris", "the park", "a support group", "the beach", "Rome", "the museum")


def _long_turn(n: int) -> dict[str, str]:
    """A turn of 30 sentences, each a fact the offline extractor takes (12 are embedded
    with it), all holding the query's word."""
    said = " ".join(
        f"Ana went to {PLACES[k % len(PLACES)]} yesterday and saw zebra99x painting {n}-{k}."
        for k in range(30)
    )
    return {"role": "user", "name": "Ana", "content": said}


def _calls(profile: cProfile.Profile, function: str) -> int:
    """How many times ``function`` (a name) ran in the thread ``profile`` watched."""
    stats: dict[tuple[str, int, str], tuple[Any, ...]]
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]  # undocumented, stable
    return sum(int(row[1]) for (_, _, name), row in stats.items() if name == function)


def test_a_floor_judges_16_pending_turns_and_extracts_only_their_facts(tmp_path: Path) -> None:
    """A floor search over a backlog of long turns ran the fact extractor over every
    pending keyword hit to look up the vectors it had kept (seconds per search), then
    judged only the 4-7 turns whose texts fit ``UNEMBEDDED_TEXTS``, where 16 were judged
    before: 10 hits became 5-7 (review s41). It now extracts the facts of the turns it
    embeds alone, at least ``UNEMBEDDED_ROWS`` of them, and the next search finds those
    kept and embeds the next ones."""
    embedder = HeldBatches()
    with Memory(tmp_path / "m.db", embedder=embedder) as m:
        embedder.hold()
        try:
            turns = m.add([_long_turn(n) for n in range(40)], user_id="ana", session_id="s1")
            assert m.embedding_status().pending == 40
            assert min(len(embedding_inputs(t)) for t in turns) == 1 + MAX_TURN_FACTS
            order = [h.record.id for h in m.search("zebra99x", user_id="ana", limit=100)]
            search = partial(m.search, "zebra99x", user_id="ana", min_score=-1.0, limit=100)
            first_profile, second_profile = cProfile.Profile(), cProfile.Profile()
            first = first_profile.runcall(search)
            second = second_profile.runcall(search)
        finally:
            embedder.release()
    assert len(order) == 40
    assert [h.record.id for h in first] == order[:UNEMBEDDED_ROWS]  # the best first
    assert len(second) == 2 * UNEMBEDDED_ROWS
    assert _calls(first_profile, "facts_to_embed") == UNEMBEDDED_ROWS  # was 40
    assert _calls(second_profile, "facts_to_embed") == UNEMBEDDED_ROWS  # the next 16


def test_http_and_mcp_take_only_numbers_as_a_floor(tmp_path: Path) -> None:
    """``true`` was a floor of 1.0 over HTTP and MCP (no hit: "nothing relevant"),
    ``false`` one of 0.0 and ``"0.3"`` one of 0.3; each is now refused, in the same
    words on both, and a number (integer or not) is taken on both."""
    db = tmp_path / "s.db"
    base = {"query": "peanuts", "user_id": "ana"}
    refused = [True, False, "0.3", "1"]
    taken = [1, 0, 0.3, -1]
    with live_server(db, HashEmbedder()) as (http, app):
        for text in ("I am allergic to peanuts", "peanuts and cashews are banned at home"):
            assert http.post("/v1/memories", json={"messages": text, "user_id": "ana"}).is_success
        assert app.state.tenants.worker.flush(timeout=60)
        said = []
        for value in refused:
            resp = http.post("/v1/memories/search", json={**base, "min_score": value})
            said.append(assert_error(resp, 422)["message"])
        over_http = [_relevance(http, {**base, "min_score": value}) for value in taken]
    assert said == ["body.min_score: Input should be a valid number"] * len(refused)
    assert [len(hits) for hits in over_http] == [0, 2, 2, 2]
    with KeyStore(str(db)) as keys:
        key = keys.create("acme").secret

    async def scenario(s: ClientSession) -> tuple[list[str], list[Any]]:
        errors = [
            error_text(await s.call_tool("search_memory", {**base, "min_score": value}))
            for value in refused
        ]
        hits = [
            results(await s.call_tool("search_memory", {**base, "min_score": value}))
            for value in taken
        ]
        return errors, hits

    errors, over_mcp = anyio.run(partial(stdio_call, timeout=120), db, key, scenario)
    tool_error = "Error executing tool search_memory: ValueError: min_score: "
    assert errors == [tool_error + "Input should be a valid number"] * len(refused)
    assert [{h["id"]: h["relevance"] for h in hits} for hits in over_mcp] == over_http


def test_python_takes_numpy_numbers_as_a_floor_and_refuses_bools_and_text(
    tmp_path: Path,
) -> None:
    """A cosine computed with NumPy is a ``float32``: refused as "not a number" before."""
    with Memory(tmp_path / "m.db", embedder=HashEmbedder(), background_embedding=False) as m:
        m.add("I am allergic to peanuts", user_id="ana")
        m.add("peanuts and cashews are banned at home", user_id="ana")

        def found(floor: Any) -> list[tuple[str, float | None]]:
            return [
                (h.record.id, h.relevance)
                for h in m.search("peanuts", user_id="ana", min_score=floor)
            ]

        assert found(np.float32(0.3)) == found(float(np.float32(0.3)))
        assert found(np.float64(0.3)) == found(0.3)
        assert found(np.int64(0)) == found(0) == found(0.0)
        assert found(np.int64(1)) == found(1.0)
        for bad in (True, np.bool_(False), "0.3", [0.3]):
            with pytest.raises(TypeError, match="min_score must be a number"):
                m.search("peanuts", user_id="ana", min_score=bad)
        with pytest.raises(ValueError, match="between -1 and 1"):
            m.search("peanuts", user_id="ana", min_score=np.float32(np.nan))


def test_the_cli_table_shows_the_relevance_the_floor_compares(tmp_path: Path) -> None:
    db = tmp_path / "cli.db"
    run(db, "add", "I am allergic to peanuts", "-u", "ana")
    run(db, "add", "peanuts and cashews are banned at home", "-u", "ana")
    args = ("search", "peanuts", "-u", "ana", "--min-score", "0.3")
    hits = json.loads(run(db, "--json", *args).stdout)
    table = run(db, *args).stdout
    header = next(line for line in table.splitlines() if "score" in line)
    assert header.split("┃")[1:4] == [" # ", " score  ", " relevance "]
    for hit in hits:
        row = next(line for line in table.splitlines() if hit["id"][:8] in line)
        assert f"{hit['relevance']:.3f}" in row.split("│")[3]
        assert hit["relevance"] >= 0.3


#: One session between Ana and Ben, stored as a chat app stores a group chat (review s40).
CHAT = [
    ("Ana", "Hi Ben! How was your weekend?"),
    ("Ben", "Pretty good. I spent Saturday repairing my old road bike."),
    ("Ana", "Nice, I went hiking in Sintra with my sister."),
    ("Ben", "Sintra is lovely. Did you see the palace?"),
    ("Ana", "Yes, and we had pastries in the old town."),
    ("Ben", "Thanks for the tip about the bike shop, Ana! The new brakes work perfectly."),
    ("Ana", "Great! I'm planning a trip to Porto next month."),
    ("Ben", "Porto is great for food. Try the francesinha."),
    ("Ana", "I will, and I'll visit the wine cellars too."),
    ("Ana", "By the way, my cat has been sick this week."),
    ("Ben", "Oh no, I hope she gets better soon."),
    ("Ana", "Thanks, the vet says it is just a cold."),
]


def test_a_name_that_addresses_someone_does_not_raise_what_they_said(tmp_path: Path) -> None:
    """A message that addresses someone by name, searched as the query (a wrapper's or a
    window's search), raised everything that person said fourfold (the speaker step), and
    the turn of the query's exact words fell behind their unrelated turns. A question
    about a speaker still favours what they said."""
    messages = [{"role": "user", "name": who, "content": text} for who, text in CHAT]
    with live_server(tmp_path / "s.db", HashEmbedder()) as (http, app):
        body = {"messages": messages, "user_id": "ana", "session_id": "chat-1"}
        assert http.post("/v1/memories", json=body).status_code == 201
        assert app.state.tenants.worker.flush(timeout=60)

        def first(query: str) -> dict[str, Any]:
            resp = http.post("/v1/memories/search", json={"query": query, "user_id": "ana"})
            assert resp.status_code == 200, resp.text
            return dict(resp.json()["results"][0]["memory"])

        for who, text in CHAT:
            if who == "Ben" and "Ana" in text or who == "Ana" and "Ben" in text:
                assert first(text)["text"] == text
        asked = first("What did Ana say about the wine cellars in Porto?")
        assert asked["metadata"]["speaker"] == "Ana"
