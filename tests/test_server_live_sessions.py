"""Windows over HTTP on a long log: the Session is kept between requests, and stays exact.

A window over HTTP built a new Session for each request, which read the session's log
whole: about a second at 40,000 turns on every call, compacted or not (a review). The
server now keeps its Sessions (``server.live_sessions``): a later window reads only
the turns logged since. A real server on loopback, a real SQLite file; the turns
appended and the user forgotten through the same HTTP API between windows.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from contextos.engine.session import Session
from contextos.store import open_store
from contextos.types import Scope
from ui_support import LiveServer, live_server

TURNS = 20_000


def _window(server: LiveServer, key: str, question: str) -> tuple[float, dict[str, Any]]:
    start = time.perf_counter()
    answer = server.call(
        "POST", "/v1/sessions/big/window", key, {"question": question, "user_id": "ana"}
    )
    return time.perf_counter() - start, answer


def test_a_window_after_the_first_reads_only_the_new_turns_and_sees_every_change(
    tmp_path: Path,
) -> None:
    with live_server(tmp_path / "s.db") as server:
        key = server.issue_key("acme")
        for batch in range(TURNS // 1000):
            said = [
                {"role": "user" if i % 2 == 0 else "assistant", "content": f"t{batch}-{i} dog"}
                for i in range(1000)
            ]
            server.turns(key, "big", said)
        # Compacted (as `contextos compact` would, from another process's handle): a
        # kept Session's window then costs its new turns, a fresh one's the whole log.
        store = open_store(tmp_path / "s.db")
        try:
            Session(store, "big", tenant="acme").compact(budget=1200)
        finally:
            store.close()
        first, _ = _window(server, key, "what about the dog?")
        server.turns(
            key, "big", [{"role": "user", "content": "my cat is called Miso"}], user_id="ana"
        )
        later, answer = _window(server, key, "what about the cat?")
        assert "my cat is called Miso" in answer["text"]  # the turn logged in between
        # The first read the whole log (20,000 rows); the later one the new turn.
        assert later * 10 < first, (first, later)
        server.call("POST", "/v1/memories/forget", key, {"user_id": "ana"})
        _, erased = _window(server, key, "what about the cat?")
        assert "Miso" not in erased["text"]  # the kept Session saw the erasure


def test_the_kept_sessions_hold_a_bounded_number_of_bytes(tmp_path: Path) -> None:
    """An uncompacted log is held whole by its kept Session: 64 of them, kept by count
    alone, held 146 MiB of turn text in a server (a review). They are kept within a
    byte bound, and a Session holding more than its own bound is not kept at all."""
    from contextos.llm.models import get_model
    from contextos.llm.tokens import default_tokenizer
    from contextos.server.live_sessions import LiveSessions
    from contextos.store import open_store
    from contextos.types import Message

    store = open_store(tmp_path / "l.db")
    try:
        for sid, turns in (("a", 1000), ("b", 1000), ("c", 1000), ("big", 5000)):
            said = [Message("user", f"{sid} {i} " + "word " * 40) for i in range(turns)]
            store.append_turns(Scope(tenant="t", session_id=sid), said, [50] * turns)
        live = LiveSessions(store, max_bytes=3_000_000, max_session_bytes=2_500_000)
        tokenizer, model = default_tokenizer(), get_model("claude-sonnet-4-6")
        kept = {}
        for sid in ("a", "b", "c", "big"):
            with live.use("t", sid, user_id=None, agent_id=None, tokenizer=tokenizer) as s:
                s.window(model, "hi?", budget=2000)
                kept[sid] = s
                assert s.held_size() > 800_000  # held whole: no compaction
            assert live.held <= 3_000_000
        assert live.held > 0
        again = {}
        for sid in ("c", "big", "a"):
            with live.use("t", sid, user_id=None, agent_id=None, tokenizer=tokenizer) as s:
                again[sid] = s
        assert again["c"] is kept["c"]  # the most recent within the bound
        assert again["big"] is not kept["big"]  # over its own bound: never kept
        assert again["a"] is not kept["a"]  # evicted for the bytes of b and c
    finally:
        store.close()


def test_a_long_uncompacted_log_is_kept_with_the_default_bounds(tmp_path: Path) -> None:
    """docs/server.md promises later windows of a 40,000-turn uncompacted log that read
    only the new turns; with 8 MiB for one Session no log past ~16,700 short turns was
    kept, and every window read it whole (a review)."""
    from contextos.llm.models import get_model
    from contextos.llm.tokens import default_tokenizer
    from contextos.server.live_sessions import LiveSessions
    from contextos.store import open_store
    from contextos.types import Message

    store = open_store(tmp_path / "long.db")
    try:
        turns = 40_000
        said = [Message("user", f"turn {i}: " + "a few short words " * 2) for i in range(turns)]
        store.append_turns(Scope(tenant="t", session_id="long"), said, [12] * turns)
        live = LiveSessions(store)
        tokenizer, model = default_tokenizer(), get_model("claude-sonnet-4-6")
        with live.use("t", "long", user_id=None, agent_id=None, tokenizer=tokenizer) as first:
            first.window(model, "hi?", budget=2000)
        with live.use("t", "long", user_id=None, agent_id=None, tokenizer=tokenizer) as again:
            assert again is first
    finally:
        store.close()
