"""A memory deleted between a list page's two reads must not end a client's walk.

``GET /v1/memories`` reads sizes first, then rows (pages are cut at 4 MiB). A memory
another process deleted between the two reads made a page shorter than its ``limit``
without a byte cut, and the page answered ``next_offset: null`` although more memories
followed: a client walking ``next_offset`` stopped early (a review: 263 of 20,854 first
pages). A real server on loopback over a real SQLite file; a second process deletes a
memory of the first page and adds one, in a loop, as another app on the same store.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from ui_support import live_server

#: How long the walks race the writer. Before the fix about 1.3% of first pages ended
#: the walk, so a few hundred walks were enough to see it.
SECONDS = 3.0

WRITER = """
import sys, time
from contextos.embed import make_embedder
from contextos.memory import Memory
m = Memory(sys.argv[1], tenant="acme", embedder=make_embedder("hash"), background_embedding=False)
end = time.time() + float(sys.argv[2])
i = 0
while time.time() < end:
    top = m.get_all(user_id="u", limit=5)
    m.delete(top[-1].id, purge=True)
    m.add(f"again {i}", user_id="u", dedupe=False)
    i += 1
m.close()
"""


def test_a_delete_between_the_reads_does_not_end_the_walk(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    with live_server(db) as server:
        key = server.issue_key("acme")
        for i in range(80):
            server.add(key, messages=[{"role": "user", "content": f"memory {i}"}], user_id="u")
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(db), str(SECONDS)])
        walks = ended = 0
        try:
            deadline = time.monotonic() + SECONDS
            while time.monotonic() < deadline:
                page = server.call("GET", "/v1/memories?user_id=u&limit=50", key)
                walks += 1
                ended += page["next_offset"] is None
        finally:
            assert writer.wait(timeout=60) == 0
        assert walks >= 50, f"only {walks} pages read: the race was not run"
        assert ended == 0, f"{ended} of {walks} first pages of ~80 memories ended the walk"
