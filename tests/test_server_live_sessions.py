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
        first, _ = _window(server, key, "what about the dog?")
        server.turns(
            key, "big", [{"role": "user", "content": "my cat is called Miso"}], user_id="ana"
        )
        later, answer = _window(server, key, "what about the cat?")
        assert "my cat is called Miso" in answer["text"]  # the turn logged in between
        # The first read the whole log (20,000 rows); the later one the new turn.
        assert later * 5 < first, (first, later)
        server.call("POST", "/v1/memories/forget", key, {"user_id": "ana"})
        _, erased = _window(server, key, "what about the cat?")
        assert "Miso" not in erased["text"]  # the kept Session saw the erasure
