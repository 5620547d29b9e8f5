"""A list page holds at most ``MAX_PAGE_BYTES`` of memories, and the pages still cover
every memory once.

A page was read whole before it was sent: 1,000 memories of 100,000 four-byte
characters are 400 MB, and four such ``GET /v1/memories?limit=1000`` at once took a
server from 350 MB to 1.9 GB (a review). A real server on loopback, real SQLite file;
the store rule on both stores.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from contextos.engine.session import Session
from contextos.memory import Memory
from contextos.server.schemas import MAX_PAGE_BYTES
from contextos.store import open_store
from contextos.store.base import Store
from contextos.testing.embedders import HashEmbedder
from contextos.types import Filter, Message, Scope
from ui_support import live_server

#: The largest memory text there is: 100,000 characters of four UTF-8 bytes each.
FAT = 400_000


def _fat(i: int) -> str:
    return f"{i:06d}" + chr(0x1F600 + i % 50) * 99_994


def _walk(get: Any, path: str, params: dict[str, Any]) -> list[list[dict[str, Any]]]:
    """Every page from offset 0, following ``next_offset`` until it is null."""
    pages, offset = [], 0
    while offset is not None:
        page = get(path, {**params, "offset": offset})
        pages.append(page["results"])
        offset = page["next_offset"]
        assert len(pages) < 100
    return pages


def test_pages_of_large_memories_are_cut_by_bytes_and_cover_every_memory(tmp_path: Path) -> None:
    with live_server(tmp_path / "s.db") as server:
        key = server.issue_key("acme")
        for i in range(24):  # 9.6 MB of text in all
            server.add(key, messages=_fat(i), user_id="fat")
        server.add(key, messages="a small one", user_id="fat")

        def get(path: str, params: dict[str, Any]) -> Any:
            resp = server.http.get(path, params=params, headers={"Authorization": f"Bearer {key}"})
            assert resp.status_code == 200, resp.text
            return resp.json()

        for path in ("/v1/memories", "/ui/api/memories"):
            pages = _walk(get, path, {"user_id": "fat", "limit": 1000})
            texts = [r["text"] for page in pages for r in page]
            assert len(texts) == 25 and len(set(texts)) == 25, path  # each once
            assert texts[0] == "a small one"  # newest first, across pages
            assert len(pages) >= 3, path  # 9.6 MB in pages of at most 4 MiB
            for page in pages:
                size = sum(len(r["text"].encode()) for r in page)
                assert size <= MAX_PAGE_BYTES, (path, size)
        small = get("/v1/memories", {"user_id": "fat", "limit": 1})
        assert len(small["results"]) == 1 and small["next_offset"] == 1
        last = get("/v1/memories", {"user_id": "fat", "limit": 1000, "offset": 24})
        assert len(last["results"]) == 1 and last["next_offset"] is None


def test_a_byte_limited_list_is_a_prefix_of_the_whole_list(store: Store) -> None:
    with Memory(store=store, embedder=HashEmbedder(), background_embedding=False) as m:
        for i in range(6):
            m.add(_fat(i) if i % 2 else f"small {i}", user_id="ana", metadata={"i": i})
        flt = Filter(scope=Scope(tenant="default", user_id="ana"))
        whole = store.list(flt, limit=10, offset=1)
        for max_bytes in (1, FAT, FAT + 100, 2 * FAT + 200, 10**9):
            cut = store.list(flt, limit=10, offset=1, max_bytes=max_bytes)
            assert [r.id for r in cut] == [r.id for r in whole[: len(cut)]]
            assert len(cut) >= 1
            held = sum(len(r.text.encode()) for r in cut)
            assert held <= max_bytes or len(cut) == 1
        assert len(store.list(flt, limit=10, offset=1, max_bytes=10**9)) == 5
        newest = store.list(flt, limit=1)
        assert [r.id for r in m.get_all(user_id="ana", limit=10, max_bytes=1)] == [newest[0].id]


def test_pages_of_large_turns_are_cut_by_bytes_and_cover_the_log(tmp_path: Path) -> None:
    """The same for a session's turns (``GET /v1/sessions/{id}/turns``, the inspector's
    ``/ui/api/turns``), following ``next_after_seq``; a turn larger than a page, logged
    by the library, comes alone and the log goes on after it."""
    db = tmp_path / "s.db"
    with live_server(db) as server:
        key = server.issue_key("acme")
        for i in range(12):  # 4.8 MB
            server.turns(key, "s1", [{"role": "user", "content": _fat(i)}])
        store = open_store(db)
        try:
            huge = "x" * (MAX_PAGE_BYTES + 10)
            Session(store, "s1", tenant="acme").add(Message("assistant", huge))
        finally:
            store.close()
        server.turns(key, "s1", [{"role": "user", "content": "a small one"}])

        def get(path: str, params: dict[str, Any]) -> Any:
            resp = server.http.get(path, params=params, headers={"Authorization": f"Bearer {key}"})
            assert resp.status_code == 200, resp.text
            return resp.json()

        for path, params in (
            ("/v1/sessions/s1/turns", {}),
            ("/ui/api/turns", {"session_id": "s1"}),
        ):
            pages, after = [], -1
            while after is not None:
                page = get(path, {**params, "after_seq": after, "limit": 1000})
                pages.append([t["seq"] for t in page["results"]])
                after = page["next_after_seq"]
                assert len(pages) < 50
            assert [seq for page in pages for seq in page] == list(range(14)), path
            assert [12] in pages  # the huge turn alone
            assert len(pages) >= 3


def test_a_byte_limited_read_of_turns_is_a_prefix_or_a_suffix(store: Store) -> None:
    scope = Scope(tenant="t", session_id="s")
    said = [Message("user", _fat(i) if i % 2 else f"small {i}") for i in range(6)]
    store.append_turns(scope, said, [5] * 6)
    whole = store.turns(scope, after_seq=0)
    for max_bytes in (1, FAT, FAT + 100, 2 * FAT + 200, 10**9):
        first = store.turns(scope, after_seq=0, max_bytes=max_bytes)
        assert [t.seq for t in first] == [t.seq for t in whole[: len(first)]] and first
        last = store.turns(scope, after_seq=0, limit=4, newest=True, max_bytes=max_bytes)
        assert [t.seq for t in last] == [t.seq for t in whole[len(whole) - len(last) :]] and last
        for cut in (first, last):
            held = sum(len(t.message.content.encode()) for t in cut)
            assert held <= max_bytes or len(cut) == 1
    assert len(store.turns(scope, after_seq=0, max_bytes=10**9)) == 5


def test_a_walk_of_list_pages_reaches_every_memory_on_both_stores(store: Store) -> None:
    """On PostgreSQL the page's cut was judged by its own bytes as compact JSON, while
    the store had counted metadata as jsonb's text (spaces after ',' and ':'): a cut
    page looked uncut and the walk stopped at 54 of 80 memories (a review)."""
    from contextos.memory.ingest import MAX_METADATA_BYTES, metadata_bytes
    from contextos.server import ops
    from contextos.server import schemas as s

    metadata = {f"k{i:05d}": 0 for i in range(7000)}  # jsonb's text: ~20% longer
    while metadata_bytes(metadata) > MAX_METADATA_BYTES - 300:
        metadata.popitem()
    with Memory(store=store, embedder=HashEmbedder(), background_embedding=False) as m:
        for i in range(80):  # 5.2 MB of metadata: more than one page
            m.add(f"note {i}", user_id="ana", metadata=metadata)
        for by_key in (False, True):
            seen: list[str] = []
            offset: int | None = 0
            after: str | None = None
            while offset is not None:
                page, offset, after = ops.list_page(
                    m,
                    s.ListRequest(
                        user_id="ana",
                        limit=1000,
                        offset=0 if by_key else offset,
                        after=after if by_key else None,
                    ),
                )
                seen += [r.id for r in page]
                assert len(seen) <= 80
            assert len(seen) == 80 and len(set(seen)) == 80


def test_a_search_answer_of_large_memories_is_cut_by_bytes_and_says_so(tmp_path: Path) -> None:
    # A list page stopped at 4 MiB and a search did not: 60 hits of long memories made
    # a 24.6 MB answer, and eight such searches at once doubled a server's memory.
    with live_server(tmp_path / "s.db") as server:
        key = server.issue_key("acme")
        for i in range(24):  # 9.6 MB of text, each memory holding the word searched
            server.add(key, messages=f"zebra {_fat(i)[:99_990]}", user_id="fat")
        server.add(key, messages="a small zebra", user_id="fat")

        def search(limit: int) -> Any:
            body = {"query": "zebra", "user_id": "fat", "limit": limit}
            headers = {"Authorization": f"Bearer {key}"}
            resp = server.http.post("/v1/memories/search", json=body, headers=headers)
            assert resp.status_code == 200, resp.text[:300]
            assert len(resp.content) < MAX_PAGE_BYTES + 200_000
            return resp.json()

        whole = search(100)
        assert whole["cut"] is True
        assert 1 <= len(whole["results"]) < 25
        assert sum(len(h["memory"]["text"].encode()) for h in whole["results"]) <= MAX_PAGE_BYTES
        one = search(1)  # at least one hit, however large
        assert len(one["results"]) == 1 and one["cut"] is False
        assert one["results"][0]["memory"]["id"] == whole["results"][0]["memory"]["id"]
