"""A text past one of PostgreSQL's limits is the caller's error, not a busy store.

PostgreSQL's ``tsvector`` holds at most 1 MB. A text under the 100,000-character cap
can pass that once NFC-normalised (the keyword index reads the NFC form): each of the
musical symbols below becomes three code points, 12 bytes. Storing one failed with
sqlstate 54000 (program_limit_exceeded), which the store turned into a StoreError: an
HTTP 503 "retry after a moment" for a request that fails the same way every time. It
is a ValueError now (400, with a message saying what to do).
"""

from __future__ import annotations

import random
import unicodedata
from pathlib import Path

import pytest

from server_support import app_client, assert_error, auth, chat, database, issue_key

pytestmark = pytest.mark.postgres
pytest.importorskip("psycopg")

#: Characters whose NFC form takes 12 bytes of UTF-8 (3 code points).
EXPANDING = [
    chr(c)
    for c in range(0x1D15E, 0x1D1C1)
    if len(unicodedata.normalize("NFC", chr(c)).encode()) >= 12
]


def _expanding_text(chars: int) -> str:
    """``chars`` characters of distinct 170-character words of ``EXPANDING`` (each word
    2,040 bytes in NFC: under the 2,047 bytes a tsvector word may take, so it counts)."""
    rnd = random.Random(0)
    words = ["".join(rnd.choice(EXPANDING) for _ in range(170)) for _ in range(chars // 171 + 1)]
    return " ".join(words)[:chars]


def test_a_text_past_the_keyword_index_limit_is_a_400_not_a_503(tmp_path: Path) -> None:
    text = _expanding_text(99_000)
    assert len(unicodedata.normalize("NFC", text).encode()) > 1_048_575  # the premise
    with database("postgres", tmp_path) as db, app_client(db) as c:
        h = auth(issue_key(c, "acme"))
        refused = c.post("/v1/memories", headers=h, json={"messages": text, "user_id": "u"})
        error = assert_error(refused, 400)
        assert "retry-after" not in refused.headers
        assert "too long for tsvector" in error["message"], error
        assert "keyword search" in error["message"] and "split it" in error["message"]
        assert c.get("/v1/memories", headers=h, params={"user_id": "u"}).json()["results"] == []
        # An update to such a text is refused alike, and the memory keeps its text.
        [kept] = c.post(
            "/v1/memories", headers=h, json={"messages": chat("a short note"), "user_id": "u"}
        ).json()["results"]
        patched = c.patch(f"/v1/memories/{kept['id']}", headers=h, json={"text": text})
        assert "too long for tsvector" in assert_error(patched, 400)["message"]
        got = c.get(f"/v1/memories/{kept['id']}", headers=h).json()
        assert got["text"] == "a short note"
