"""Keyword search with words the index once choked on or cut apart.

- A word of letters whose 32,768th byte falls inside a character ("a" and 8,200
  four-byte letters, a memory well under the 100,000 characters allowed): FTS5 cuts
  the token there, and SQLite's decoding of the broken term raised in the SQLite
  store's keyword index: every later search failed, over HTTP a 500 for every tenant
  of the server, and after a restart every search of the user who stored it. Now the
  term is read as bytes and decoded with U+FFFD, and the word still finds itself.
- An error inside that index (anything it cannot take) fails only the searches of the
  user whose row caused it, as a ``StoreFault`` (HTTP 500 of that type, a fixed text).
- Words written with combining marks (Hindi, Bengali, Tamil, pointed Hebrew, vocalised
  Arabic, decomposed Vietnamese or Korean) and "İstanbul": the query side cut them at
  every mark or lower-cased "İ" into "i" and a combining dot, so PostgreSQL found none
  of them and SQLite matched fragments ("म" of "मूंगफली" in every Hindi memory).
  Checked on both stores in the window before a memory's vector is stored, when
  keyword search is all that can find it (``add``: searchable when it returns).
- A combining mark standing alone (U+0301 after a space): FTS5 makes an empty term of
  it, which its vocabulary table gives as NULL, and the SQLite index failed every
  search of the user who stored one (by agent, of the whole tenant); in a query it is
  no word now on either store (PostgreSQL matched it as one).
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from cli_support import reaped
from contextos.errors import StoreFault
from contextos.memory import Memory
from contextos.store.base import Store
from contextos.store.sqlite import SQLiteStore
from contextos.store.sqlite.lexical_index import Tokenizer
from contextos.testing.embedders import HashEmbedder
from contextos.text.query import query_terms, search_words

CLI = [sys.executable, "-c", "from contextos.cli.main import main; main()"]

#: 8,201 characters, 32,801 bytes: FTS5's 32,768-byte cut falls inside a character.
POISON = "a" + "\U00020000" * 8200


def nfd(text: str) -> str:
    return unicodedata.normalize("NFD", text)


class IdleWorker:
    """The background embedding worker, not run yet: no memory has a vector."""

    def notify(self) -> None:
        pass

    def flush(self, timeout: float | None = None) -> bool:
        return False

    def close(self) -> None:
        pass


def _memory(store: Store, tenant: str = "t1") -> Memory:
    """A Memory on ``store`` whose memories get no vector: found by keyword or not at all."""
    return Memory(store=store, tenant=tenant, embedder=HashEmbedder(), worker=IdleWorker())  # type: ignore[arg-type]


# -- a long word ----------------------------------------------------------------------
def _texts(store: Store, tenant: str, user: str, query: str) -> list[str]:
    return [h.record.text for h in _memory(store, tenant).search(query, user_id=user)]


def test_a_memory_with_a_word_cut_inside_a_character_breaks_no_search(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    store = SQLiteStore(path)
    try:
        writer = _memory(store, "acme")
        writer.add("I am allergic to peanuts", user_id="u")
        writer.add("hello there", user_id="mallory")
        other = _memory(store, "globex")
        other.add("peanuts at the fair", user_id="g")
        # Every user searched once: the one index of the process holds them all.
        for tenant, user, query in (("acme", "u", "peanuts"), ("acme", "mallory", "hello")):
            assert _texts(store, tenant, user, query)
        assert _texts(store, "globex", "g", "peanuts") == ["peanuts at the fair"]
        writer.add(POISON, user_id="mallory")
        assert _texts(store, "acme", "u", "peanuts") == ["I am allergic to peanuts"]
        assert _texts(store, "globex", "g", "peanuts") == ["peanuts at the fair"]
        assert _texts(store, "acme", "mallory", "hello") == ["hello there"]
        assert _texts(store, "acme", "mallory", POISON) == [POISON]  # it finds itself
        assert _texts(store, "acme", "u", "x" + "\U00020000" * 9000) == []  # a query like it
    finally:
        store.close()
    store = SQLiteStore(path)  # a restart: the user's rows are read whole again
    try:
        assert _texts(store, "acme", "mallory", "hello") == ["hello there"]
        assert _texts(store, "acme", "mallory", POISON) == [POISON]
        assert _texts(store, "acme", "u", "peanuts") == ["I am allergic to peanuts"]
    finally:
        store.close()


def test_a_long_query_word_is_no_error_on_either_store(store: Store) -> None:
    m = _memory(store)
    m.add("I am allergic to peanuts", user_id="u")
    for query in (POISON, "ab" + "\U00020000" * 8200, "abc" + "\U0002a6d6" * 8200):
        assert [h.record.text for h in m.search(query + " peanuts", user_id="u")] == [
            "I am allergic to peanuts"
        ]


@contextmanager
def _served(db: Path, log: Path) -> Iterator[str]:
    """``contextos serve`` on a loopback port of its choosing; its URL. Stopped (SIGTERM)
    on the way out; its log (stderr) goes to ``log``."""
    with (
        log.open("a", encoding="utf-8") as err,
        reaped(
            subprocess.Popen(
                [*CLI, "serve", "--db", str(db), "--embedder", "hash", "--port", "0"]
                + ["--rate", "0"],
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
            )
        ) as proc,
    ):
        assert proc.stdout is not None
        try:
            line = proc.stdout.readline()
            assert "serving on http://127.0.0.1:" in line, line + log.read_text(encoding="utf-8")
            yield line.split("serving on ")[1].split()[0]
            proc.terminate()
            proc.communicate(timeout=60)
        finally:
            proc.stdout.close()


def test_over_http_one_tenants_long_word_fails_no_tenants_search(tmp_path: Path) -> None:
    """The reviewer's report, as it happened: a server shared by two tenants, every
    user searched once, then one tenant stores the word; then a restart."""
    httpx = pytest.importorskip("httpx")
    from contextos.server.keys import KeyStore

    db, log = tmp_path / "http.db", tmp_path / "serve.log"
    with KeyStore(str(db)) as keys:
        acme, globex = (
            {"Authorization": f"Bearer {keys.create(t).secret}"} for t in ("acme", "globex")
        )

    def search(url: str, key: dict[str, str], user: str, query: str) -> list[str]:
        resp = httpx.post(
            f"{url}/v1/memories/search",
            json={"query": query, "user_id": user},
            headers=key,
            timeout=60,
        )
        assert resp.status_code == 200, resp.text
        return [h["memory"]["text"] for h in resp.json()["results"]]

    def add(url: str, key: dict[str, str], user: str, text: str) -> None:
        resp = httpx.post(
            f"{url}/v1/memories", json={"messages": text, "user_id": user}, headers=key, timeout=60
        )
        assert resp.status_code == 201, resp.text

    with _served(db, log) as url:
        add(url, acme, "ana", "I am allergic to peanuts")
        add(url, acme, "mallory", "hello there")
        add(url, globex, "gus", "peanuts at the fair")
        assert "I am allergic to peanuts" in search(url, acme, "ana", "peanuts")
        assert "hello there" in search(url, acme, "mallory", "hello")
        assert "peanuts at the fair" in search(url, globex, "gus", "peanuts")
        add(url, acme, "mallory", POISON)
        assert "peanuts at the fair" in search(url, globex, "gus", "peanuts")
        assert "I am allergic to peanuts" in search(url, acme, "ana", "peanuts")
        assert search(url, acme, "mallory", POISON)[0] == POISON
        search(url, globex, "gus", "ab" + "\U00020000" * 8200)  # a query of such a word
    with _served(db, log) as url:  # a restart: mallory's rows are read again
        assert "hello there" in search(url, acme, "mallory", "hello")
        assert search(url, acme, "mallory", POISON)[0] == POISON
        assert "peanuts at the fair" in search(url, globex, "gus", "peanuts")
    assert "Traceback" not in log.read_text(encoding="utf-8")


# -- an error inside the index ----------------------------------------------------------
@pytest.fixture
def breaks_on_kaboom(monkeypatch: pytest.MonkeyPatch) -> None:
    """The index's tokenizer fails (as SQLite's decoding of a cut term did) on any batch
    of rows holding the word "kaboom"."""
    rows = Tokenizer.rows

    def failing(self: Tokenizer, batch: Any) -> Any:
        if any("kaboom" in r.text for r in batch):
            raise sqlite3.OperationalError("Could not decode to UTF-8 column 'term'")
        return rows(self, batch)

    monkeypatch.setattr(Tokenizer, "rows", failing)


@pytest.mark.usefixtures("breaks_on_kaboom")
def test_a_row_the_index_cannot_take_fails_only_its_own_users_searches(tmp_path: Path) -> None:
    pytest.importorskip("fastapi")
    from contextos.server.errors import STORE_FAULT
    from server_support import app_client, assert_error, auth, issue_key

    with app_client(tmp_path / "s.db") as c:
        acme, globex = auth(issue_key(c, "acme")), auth(issue_key(c, "globex"))

        def search(key: dict[str, str], user: str, query: str) -> Any:
            body = {"query": query, "user_id": user}
            return c.post("/v1/memories/search", json=body, headers=key)

        for key, user, text in ((acme, "mallory", "hello"), (globex, "gus", "peanuts")):
            assert c.post("/v1/memories", json={"messages": text, "user_id": user}, headers=key)
            assert search(key, user, text).status_code == 200  # held by the index now
        resp = c.post(
            "/v1/memories", json={"messages": "kaboom", "user_id": "mallory"}, headers=acme
        )
        assert resp.status_code == 201
        for _ in range(2):
            resp = search(globex, "gus", "peanuts")
            assert resp.status_code == 200, resp.text
            assert [h["memory"]["text"] for h in resp.json()["results"]] == ["peanuts"]
            failed = search(acme, "mallory", "hello")
            error = assert_error(failed, 500, "StoreFault")
            assert error["message"] == STORE_FAULT
            assert "retry-after" not in failed.headers
            assert "s.db" not in failed.text and "term" not in failed.text


def test_a_store_fault_is_its_own_error_in_the_library(
    tmp_path: Path, breaks_on_kaboom: None
) -> None:
    from contextos.types import Filter, Scope

    store = SQLiteStore(tmp_path / "s.db")
    try:
        m = _memory(store)
        m.add("kaboom", user_id="mallory")
        with pytest.raises(StoreFault, match="keyword search failed"):
            store.keyword_search(Filter(scope=Scope("t1", "mallory")), "kaboom", limit=5)
    finally:
        store.close()


# -- words with marks, and case -----------------------------------------------------------
#: (a memory, a word of it as a user would type it): found by keyword alone.
WRITTEN_WITH_MARKS = [
    ("मुझे मूंगफली से एलर्जी है", "मूंगफली"),  # Hindi: peanut
    ("मैं दिल्ली में रहती हूँ", "दिल्ली"),  # Hindi: Delhi
    ("আমি কলকাতায় থাকি", "কলকাতায়"),  # Bengali
    ("நான் சென்னையில் வசிக்கிறேன்", "சென்னையில்"),  # Tamil
    ("أنا أُحِبُّ القَهْوَة", "القَهْوَة"),  # Arabic with harakat
    ("אֲנִי אוֹהֵב קָפֶה", "קָפֶה"),  # Hebrew with niqqud
    (nfd("Tôi sống ở Hà Nội"), nfd("Nội")),  # decomposed, asked decomposed
    (nfd("Chúng tôi ở Đà Lạt"), "Lạt"),  # decomposed, asked composed
    ("Ông ấy ở Huế", nfd("Huế")),  # composed, asked decomposed
    (nfd("저는 서울에 살아요"), "서울에"),  # Korean as conjoining jamo, asked composed
    ("I live in İstanbul", "İstanbul"),  # Turkish dotted capital I
    ("a note about ΣΟΦΟΣ here", "ΣΟΦΟΣ"),
    ("we sailed to Ærø", "Ærø"),
]


def test_words_keep_their_marks_and_case_in_nfc() -> None:
    assert query_terms("मुझे मूंगफली से एलर्जी है") == ["मुझे", "मूंगफली", "से", "एलर्जी", "है"]
    assert query_terms("I live in İstanbul") == ["live", "İstanbul"]
    assert query_terms(nfd("Hà Nội")) == ["Hà", "Nội"]  # composed
    assert query_terms("The Apple apple x_y") == ["Apple", "x", "y"]  # case-blind repeats
    assert search_words("a\u0301b, \u0301c.d") == ["áb", "\u0301c", "d"]  # a lone mark too


def test_the_index_cuts_a_text_where_the_query_side_does() -> None:
    """Each word of a text (``search_words``) is one term of the SQLite index, and the
    text's terms are its words' terms: a query of any of its words asks for exactly
    what the index holds."""
    tokenizer = Tokenizer()
    try:
        for text, _ in WRITTEN_WITH_MARKS:
            per_word = [tokenizer.word(w) for w in search_words(text)]
            assert all(len(terms) == 1 for terms in per_word), (text, per_word)
            row = _row(text)
            assert set(tokenizer.rows([row]).vocab) == {t for (t,) in per_word}, text
    finally:
        tokenizer.close()


def _row(text: str) -> Any:
    from contextos.store.sqlite.lexical_index import LexRow

    return LexRow(
        id="r", tenant="t", user_id="u", agent_id=None, session_id=None,
        memory_type="episodic", created_at=0.0, event_time=None, valid_from=None,
        valid_to=None, rowid=1, text=text, context="", scope_terms="",
    )  # fmt: skip


@pytest.mark.parametrize(("text", "word"), WRITTEN_WITH_MARKS)
def test_a_word_written_with_marks_is_found_before_its_vector_is_stored(
    store: Store, text: str, word: str
) -> None:
    m = _memory(store)
    wanted = m.add(text, user_id="u")[0]
    others = [m.add(t, user_id="u")[0].id for t, _ in WRITTEN_WITH_MARKS if t != text][:4]
    hits = [h.record.id for h in m.search(word, user_id="u")]
    assert wanted.id in hits
    assert not set(others) & set(hits)  # no fragment of the word matched another memory


# -- a combining mark standing alone --------------------------------------------------
#: Combining marks that FTS5 makes a token of when they stand alone (after a space), and
#: ``remove_diacritics`` then empties: acute, grave, diaeresis, cedilla.
LONE_MARKS = ("\u0301", "\u0300", "\u0308", "\u0327")


def test_a_lone_combining_mark_in_a_memory_breaks_no_search(store: Store) -> None:
    """A text, or a speaker name, holding a mark on its own: every later search of its
    user failed on SQLite (by agent, of the whole tenant), in this process and the next."""
    m = _memory(store)
    m.add("I live in Lisbon", user_id="ana", agent_id="bot")
    m.add("I live in Oslo", user_id="bob", agent_id="bot")
    for mark in LONE_MARKS:
        m.add(f"cafe {mark} with friends", user_id="mallory", agent_id="bot")
    m.add({"role": "user", "content": "hello", "name": "\u0301"}, user_id="ana")
    assert [h.record.text for h in m.search("Lisbon", user_id="ana")] == ["I live in Lisbon"]
    assert [h.record.text for h in m.search("Oslo", agent_id="bot")] == ["I live in Oslo"]
    assert {h.record.text for h in m.search("cafe friends", user_id="mallory")} == {
        f"cafe {mark} with friends" for mark in LONE_MARKS
    }


def test_a_query_holding_a_lone_mark_fails_no_later_search(store: Store) -> None:
    """The mark is no word: the query finds what its other words find (not the texts
    holding a lone mark too), and the user's next searches are not remembered as failing."""
    m = _memory(store)
    m.add("I live in Lisbon", user_id="ana")
    m.add("cafe \u0301 \u0300 \u0308 \u0327", user_id="ana")
    for mark in LONE_MARKS:
        assert [h.record.text for h in m.search(f"where {mark} Lisbon", user_id="ana")] == [
            "I live in Lisbon"
        ]
        assert m.search(mark, user_id="ana") == []
    assert [h.record.text for h in m.search("Lisbon", user_id="ana")] == ["I live in Lisbon"]


def test_a_lone_mark_is_no_query_word_and_no_query_term() -> None:
    assert search_words("where \u0301 Lisbon \u0300\u0308") == ["where", "Lisbon"]
    assert search_words("\u0301cafe") == ["\u0301cafe"]  # a mark opening a word stays in it
    tokenizer = Tokenizer()
    try:
        assert tokenizer.word("\u0301") == ()
        assert tokenizer.word("cafe\u0301") == ("cafe",)
    finally:
        tokenizer.close()
