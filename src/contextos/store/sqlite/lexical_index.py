"""An in-process keyword index that ranks exactly as FTS5's ``bm25()`` does.

Why: FTS5 finds a user's matching rows quickly, but ``bm25()`` then costs about two
microseconds for every matching row (it decodes the row's positions and looks up its
length), and it ranks every match to keep the best 50. On ``bench serve``'s store
(10,000 memories over 10 users, a query matching 849 of the user's 1,000 rows) the
keyword search took 2.5 ms of a search's ~4: half the search route's CPU. Here each
(tenant, user) keeps its rows' term frequencies in numpy arrays, and a search scores
the user's matching rows in a few vector operations (~0.1 ms there).

Nothing about the ranking formula is ours: the rows are tokenized by FTS5 itself (a
private in-memory FTS5 table with the store's tokenizer, :data:`TOKENIZE`, which also
keeps combining marks in a word; each text and query word first cut and folded by the
rule both stores share, :func:`fts_text`), and the score
is FTS5's Okapi BM25 term for term (``fts5_aux.c``: k1 1.2, b 0.75; IDF from the row
count and the rows that hold the word; document length over every column; column
weights text 1, context ``context_weight``, scope terms 0).

What is ours is which rows the statistics (row count, mean length, rows per word) are
counted over: the searched scope's, one user's memories (a tenant's, for a search
without a user), as the PostgreSQL store does, and not the whole file's, as FTS5's
``bm25()`` does. Over the file, one user's (or another tenant's) memories moved the
scores, and so perhaps the order, of another's results, and a user watching their own
scores could learn how common a word is among the others'. So a score equals the one
``bm25()`` gives the same row in a file that holds only that scope
(tests/test_lexical_index.py compares them), and the statistics cost no read of the
file: each block keeps its live row count, its total length and, per term, its live
rows.

The index holds only what the store loaded: a (tenant, user) is read on its first
keyword search, and the store applies every later change it learns of from the
``index_log`` (see ``SQLiteStore._fresh_lexical``). Rows are keyed by record id (a
rowid can be reused by another user's record after a delete). A removed row's terms
leave the postings at once (an erased memory leaves no word here), and a block whose
rows are mostly dead is rebuilt.

It holds at most ``max_blocks`` users (:data:`MAX_BLOCKS` by default), the least
recently searched one dropped first (:meth:`LexicalIndex.trim`). Why: a block was kept
until a forget emptied it, so a server that met a million mostly idle users (one memory
and one search each) held ~4 KB of index for each, for good. A dropped user is simply
not held: the changes logged for it are skipped, as for a user never searched, and its
next search reads it whole again, in the same snapshot as the changes it catches up
with, so its hits and statistics are those it had (a one-memory user: ~0.4 ms, against
~0.07 ms held; one of 20,000 memories: ~0.7 s). A tenant held whole for a search without
a user stops being held whole when one of its users is dropped.
"""

from __future__ import annotations

import gc
import itertools
import math
import os
import sqlite3
import threading
from array import array
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from operator import attrgetter
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from contextos.store.sqlite.vector_index import TIME_FIELDS, IndexRow, ScopeCodes, time_mask
from contextos.text.query import keyword_text
from contextos.types import Filter

#: The tokenizer of the store's ``memories_fts`` table (schema V5), but for one
#: option: combining marks (Unicode categories M*) are part of a word, as they are in
#: a query's words (``text.query``) and in PostgreSQL's. Left out, unicode61 cut a
#: word at every vowel sign or virama: "मूंगफली" ("peanut") was indexed as "म" and
#: "गफल", and "म" matched nearly every Hindi memory. Latin accents are still removed
#: (``remove_diacritics``): "école" is "ecole", composed or not. It reads a text as
#: :func:`fts_text` prepared it (the emoji cut out, the variation selectors dropped).
TOKENIZE = "porter unicode61 remove_diacritics 2 categories 'L* N* Co M*'"

#: The longest query word whose terms the tokenizer keeps.
MAX_CACHED_WORD = 64

#: Okapi BM25 parameters, FTS5's (``fts5_aux.c``).
K1 = 1.2
B = 0.75

#: Users ((tenant, user) blocks) the index holds by default; past that the least
#: recently searched is dropped and read again at its next search. A one-memory user's
#: block is ~3 KB of heap (10,000 of them: ~50 MB of RSS, measured); a busy server's
#: users searched within the last while fit many times over (``bench serve``: 10
#: users). A search without a user reads every user of its tenant and drops none of
#: them: a tenant with more users than this is read again whenever other users'
#: searches came between (raise it with ``SQLiteStore(lexical_users=...)``).
MAX_BLOCKS = 10_000


@dataclass(slots=True)
class LexRow(IndexRow):
    """What the index reads of one record: what the vector index keeps of it (identity,
    scope, times), its rowid and the three columns FTS5 indexes."""

    rowid: int
    text: str
    context: str
    scope_terms: str


@dataclass(frozen=True)
class Bm25Stats:
    """BM25's statistics for one query, over the searched scope's rows: their number,
    their mean length (tokens over every column) and, per query term, how many of them
    hold the term in the text or the context."""

    rows: int
    avgdl: float
    hits: dict[str, int]

    def idf(self, term: str) -> float:
        """FTS5's IDF: ln((N - n + 0.5) / (n + 0.5)), and 1e-6 where that is <= 0 (a
        term in half the rows or more then barely counts)."""
        n = self.hits.get(term, 0)
        idf = math.log((self.rows - n + 0.5) / (n + 0.5))
        return idf if idf > 0.0 else 1e-6


_T = TypeVar("_T", bound=np.generic)

_ID_OF = attrgetter("id")
_ROWID_OF = attrgetter("rowid")
_USER_OF = attrgetter("tenant", "user_id")  # a row's block

_NO_INTS = np.zeros(0, dtype=np.int32)
_NO_CODES = np.zeros(0, dtype=np.int64)

#: Each term's token instances in the tokenizer's table, in term order (``fts5vocab``
#: gives them so: no sort), as one string of codes: the row x 4 plus the column (0
#: text, 1 context, 2 scope terms). The CASE answers the common columns first (~20%
#: faster than the comparisons alone, which it falls back on: the same values).
_PER_TERM = (
    "SELECT CAST(term AS BLOB), group_concat(doc * 4 + CASE col WHEN 'text' THEN 0 "
    "WHEN 'context' THEN 1 WHEN 'scope_terms' THEN 2 "
    "ELSE (col = 'context') + 2 * (col = 'scope_terms') END) FROM v GROUP BY term"
)


@dataclass(frozen=True)
class Tokens:
    """Rows as FTS5 tokenizes them: one entry per (term, row) pair of a term in the
    row's text or context, sorted by term then row: the term (an index into
    ``vocab``), the row (its index in the tokenized batch) and the term's count in the
    text and in the context; and each row's length in tokens over all three columns
    (FTS5's document length)."""

    vocab: list[str]
    term: npt.NDArray[np.int32]
    row: npt.NDArray[np.int32]
    text: npt.NDArray[np.int32]
    context: npt.NDArray[np.int32]
    lengths: npt.NDArray[np.int64]

    def of_rows(self, rows: npt.NDArray[np.intp]) -> Tokens:
        """The pairs of the batch's rows ``rows`` (ascending; numbered from 0)."""
        number = np.full(len(self.lengths), -1, dtype=np.int32)
        number[rows] = np.arange(len(rows), dtype=np.int32)
        keep = number[self.row] >= 0
        return Tokens(
            self.vocab,
            self.term[keep],
            number[self.row[keep]],
            self.text[keep],
            self.context[keep],
            self.lengths[rows],
        )


def _counted(
    vocab: list[str], term: npt.NDArray[np.int64], code: npt.NDArray[np.int64], n_rows: int
) -> Tokens:
    """:class:`Tokens` of token instances: each one's term (index into ``vocab``) and
    code (row x 4 + column: 0 text, 1 context, 2 scope terms)."""
    row, column = code >> 2, code & 3
    lengths = np.bincount(row, minlength=n_rows).astype(np.int64)
    key = term * n_rows + row
    if len(key) > 1 and not bool(np.all(key[1:] >= key[:-1])):
        order = np.argsort(key, kind="stable")
        key, term, row, column = key[order], term[order], row[order], column[order]
    if not len(key):
        return Tokens(vocab, _NO_INTS, _NO_INTS, _NO_INTS, _NO_INTS, lengths)
    # One (term, row) pair a run of equal keys; each instance's pair, and per pair its
    # instances in the text and in the context (bincount: ~1/3 less than reduceat).
    new = np.concatenate(([True], key[1:] != key[:-1]))
    starts = np.flatnonzero(new)
    pair = np.cumsum(new) - 1
    text = np.bincount(pair[column == 0], minlength=len(starts))
    context = np.bincount(pair[column == 1], minlength=len(starts))
    keep = (text + context) > 0  # a term only in the scope column is not indexed
    first = starts[keep]  # (key = term x n_rows + row, row < n_rows: its term and row)
    return Tokens(
        vocab,
        term[first].astype(np.int32),
        row[first].astype(np.int32),
        text[keep].astype(np.int32),
        context[keep].astype(np.int32),
        lengths,
    )


#: Rows from which :meth:`Tokenizer.rows` reads two halves at once. Why: reading a
#: table's token instances (``_PER_TERM``: SQLite walks every instance and joins the
#: codes) is a large part of a big user's first load (0.28 s of 0.93 s for a user of
#: 60,000 memories, the CLI's cold search; the rest is the SQL read, the inserts and the
#: postings), it runs in C without the GIL, and two tables are read in parallel at full
#: speed when a second core is idle (on a busy machine it gains nothing). The inserts
#: are not split: FTS5's tokenizing contends on SQLite's global allocator mutex and ran
#: no faster on two threads (each half took about 4x its time alone). The cost: a
#: thread, and ~20 MiB of peak memory for such a load (a review, s55). Below this, a
#: batch (an add's rows) is too small to pay for a second table and a thread (~0.5 ms).
SPLIT_ROWS = 4096


def _usable_cpus() -> int:
    """The CPUs this process may run on (its affinity where the OS tells it, as in a
    container pinned to one; else every CPU)."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity is not None else os.cpu_count() or 1


def _tokenizing_connection() -> sqlite3.Connection:
    """A private in-memory connection holding the FTS5 table ``t`` that tokenizes and
    its ``fts5vocab`` table ``v``."""
    db = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
    # Only its terms are read (``fts5vocab``), never its rows, and every batch is
    # rolled back: no copy of the texts (content ''), no column sizes, no merging of
    # the segments a batch writes (automerge 0): the same terms, ~45% less time to
    # insert a batch.
    db.execute(
        "CREATE VIRTUAL TABLE t USING fts5(text, context, scope_terms, "
        f"tokenize=\"{TOKENIZE}\", content='', columnsize=0)"
    )
    db.execute("INSERT INTO t (t, rank) VALUES ('automerge', 0)")
    db.execute("CREATE VIRTUAL TABLE v USING fts5vocab(t, instance)")
    return db


#: One table's token instances: per term (its raw bytes; None for the empty term), the
#: codes of its instances joined by commas (``_PER_TERM``).
_PerTerm = list[tuple[bytes | None, str]]


def _insert(db: sqlite3.Connection, rows: Sequence[LexRow], first: int) -> None:
    """Open a transaction on ``db``'s table and insert ``rows``, numbered from
    ``first`` (so the codes of two tables' halves are the batch's row numbers)."""
    db.execute("BEGIN")
    try:
        db.executemany(
            "INSERT INTO t (rowid, text, context, scope_terms) VALUES (?, ?, ?, ?)",
            (
                (first + i, fts_text(r.text), fts_text(r.context), r.scope_terms)
                for i, r in enumerate(rows)
            ),
        )
    except BaseException:
        db.execute("ROLLBACK")
        raise


def _read_and_empty(db: sqlite3.Connection) -> _PerTerm:
    """The instances of what :func:`_insert` put into ``db``'s table, which is then
    emptied (the table is only a tokenizer)."""
    try:
        return db.execute(_PER_TERM).fetchall()
    finally:
        db.execute("ROLLBACK")


def _instances_of(db: sqlite3.Connection, rows: Sequence[LexRow], first: int) -> _PerTerm:
    """``rows`` tokenized in ``db``'s table: their instances (:func:`_read_and_empty`)."""
    _insert(db, rows, first)
    return _read_and_empty(db)


def _read_in_parallel(db: sqlite3.Connection, rows: Sequence[LexRow]) -> list[_PerTerm]:
    """``rows`` tokenized in two halves: the first in ``db``'s table, the second in a
    connection of its own; both inserted here, then read at once, the second on a helper
    thread (see :data:`SPLIT_ROWS`), or here after the first when no thread can be had
    (the interpreter shutting down, a limit on threads). ``db`` ends with no transaction
    open whatever fails: every later batch and query word would fail on one."""
    half = len(rows) // 2
    other = _tokenizing_connection()
    pool: ThreadPoolExecutor | None = None
    later: Future[_PerTerm] | None = None
    try:
        _insert(db, rows[:half], 0)
        try:
            _insert(other, rows[half:], half)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        try:
            pool = ThreadPoolExecutor(1, thread_name_prefix="contextos-tokenize")
            later = pool.submit(_read_and_empty, other)
        except RuntimeError:  # "can't start new thread", "after interpreter shutdown"
            later = None
        first_half = _read_and_empty(db)  # ends db's transaction, read or not
        return [first_half, later.result() if later is not None else _read_and_empty(other)]
    finally:
        if pool is not None:
            pool.shutdown(wait=True)  # the helper is done with ``other`` before it closes
        other.close()  # and with it any transaction of its own


def _joined(
    parts: Sequence[_PerTerm],
) -> tuple[list[str], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """The vocabulary of ``parts`` (each term once, in the raw bytes' order) and every
    instance's term (an index into it) and code, part after part."""
    raw = sorted(
        {term for part in parts for term, _ in part}, key=lambda t: (t is not None, t or b"")
    )
    index = {term: i for i, term in enumerate(raw)}
    terms, joined = [], []
    for part in parts:
        sizes = [codes.count(",") + 1 for _, codes in part]
        ids = np.array([index[term] for term, _ in part], dtype=np.int64)
        terms.append(np.repeat(ids, sizes))
        joined.append(",".join([codes for _, codes in part]))
    term = np.concatenate(terms) if terms else _NO_CODES
    text = ",".join(j for j in joined if j)
    # Parsed in C (a list of a million strings, then numpy's conversion: ~8x longer).
    code = np.fromstring(text, dtype=np.int64, sep=",") if text else _NO_CODES
    if len(code) != len(term):  # not one integer per code: numpy stopped early
        raise ValueError("unexpected fts5vocab codes")
    return [_term(term) for term in raw], term, code


class Tokenizer:
    """FTS5's tokenizer, run on a private in-memory FTS5 table (Python's sqlite3 has no
    other way to call it). ~15 us a LoCoMo turn.

    Texts and query words are tokenized as :func:`fts_text` prepares them: in their
    NFC form, as a query's words are split (``text.query``), so a decomposed "서울"
    (conjoining jamo) is the same term as a composed one; cut where both stores cut
    a text (an emoji separates, "pizza🙂" holds "pizza") and folded alike ("Straße"
    is "strass", as "STRASSE" is). A term is read as bytes and decoded here, a broken
    character replaced (U+FFFD): FTS5 cuts a token at 32,768 bytes, which can fall
    inside a character ("a" and 8,200 4-byte letters), and SQLite's own decoding of
    such a term raised, failing every search that read it (of every tenant of a
    server). The same word in a query is cut and decoded alike, so it still matches."""

    def __init__(self) -> None:
        self._db = _tokenizing_connection()
        self._lock = threading.Lock()
        self._words: dict[str, tuple[str, ...]] = {}

    def rows(self, rows: Sequence[LexRow]) -> Tokens:
        """``rows`` tokenized (see :class:`Tokens`).

        Why this shape: read one token instance at a time, Python spent ~3 us a token
        (a user of 20,000 sixty-word memories: 3.5 s before the first search answered).
        The instances come out of ``fts5vocab`` in term order, so SQLite joins each
        term's (row, column) codes into one string without sorting, and numpy counts
        them.

        A batch of :data:`SPLIT_ROWS` or more (a big user's first load, or as many
        logged changes) is cut in two halves, each inserted into a table of its own,
        and the two tables' instances are read at once, one on a helper thread
        (:func:`_read_in_parallel`)."""
        with self._lock:
            if len(rows) < SPLIT_ROWS or _usable_cpus() < 2:
                parts = [_instances_of(self._db, rows, 0)]
            else:
                parts = _read_in_parallel(self._db, rows)
        return _counted(*_joined(parts), len(rows))

    def word(self, word: str) -> tuple[str, ...]:
        """The terms FTS5 makes of one query word (its stem; cached); none for a word of
        marks alone, which FTS5 makes an empty term of (:func:`_term`)."""
        terms = self._words.get(word)
        if terms is None:
            with self._lock:
                self._db.execute("BEGIN")
                try:
                    self._db.execute("INSERT INTO t (rowid, text) VALUES (1, ?)", (fts_text(word),))
                    read = self._db.execute("SELECT CAST(term AS BLOB) FROM v")
                    terms = tuple(t for r in read if (t := _term(r[0])))
                finally:
                    self._db.execute("ROLLBACK")
            if len(word) <= MAX_CACHED_WORD:  # a long word costs its length in the cache
                if len(self._words) > 100_000:
                    self._words.clear()
                self._words[word] = terms
        return terms

    def forget_words(self) -> None:
        """Drop the cached query words (after an erasure: a query may have quoted it)."""
        with self._lock:
            self._words = {}

    def close(self) -> None:
        """Close the private connection."""
        with self._lock:
            self._db.close()


def fts_text(text: str) -> str:
    """``text`` as FTS5 reads it: cut and folded by the rule both stores share
    (``text.query.keyword_text``: the variation selectors dropped, NFC, "ß" "ss", "ς"
    "σ", full-width ASCII ASCII, emoji and other separators spaces); ASCII text as it
    is, the same object (unicode61 cuts it where that rule does, at every character but
    a letter or digit).

    Why: FTS5's unicode61 knows Unicode 6.1, where an emoji added since ("🙂",
    "🥰", "🤖") is a letter, and it keeps a mark (the variation selector U+FE0F after
    "❤" or "☕") in a word: "pizza🙂" and "I ❤\ufe0fParis" held neither "pizza" nor
    "paris", which PostgreSQL's index holds. A file keeps no token of this index (it is
    built in memory from each record's text when a process first searches its user),
    so a file written before needs no migration: its records are read by this rule.
    (The file's ``memories_fts`` table, kept by triggers, is searched by nothing.)"""
    return text if text.isascii() else keyword_text(text)


class _GcPause:
    """Python's automatic garbage collection paused while a batch of rows is indexed
    (``with _GC_PAUSE:``), and resumed after, if it was on.

    Why: a collection of the whole heap runs each time the objects kept since the last
    one grew by a quarter, and a block keeps three such objects a row (a tuple of two
    arrays) and one a term: a user of 60,000 memories set off four, ~0.19 s of a ~0.8 s
    load in a CLI process (more in a process with a larger heap). They find nothing to
    free here: the index makes no reference cycles.

    The switch is the process's (Python has no other): a load in one thread pauses the
    collection of every thread's cycles until it ends (they are collected then).
    Overlapping loads pause it once; it is resumed when the last ends. An application
    that turns the collector off while a load runs (on another thread) finds it on again
    when the load ends: Python cannot tell a pause from another ``gc.disable()``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0
        self._resume = False

    def __enter__(self) -> None:
        with self._lock:
            if self._depth == 0:
                self._resume = gc.isenabled()
                gc.disable()
            self._depth += 1

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._depth -= 1
            if self._depth == 0 and self._resume:
                gc.enable()


_GC_PAUSE = _GcPause()


def _term(raw: bytes | None) -> str:
    """A term FTS5 wrote, decoded (a character its 32 KiB cut broke: U+FFFD); the empty
    term for none.

    Why none: a combining mark standing alone (U+0301 after a space) is a token of its
    own (``categories 'L* N* Co M*'``), which ``remove_diacritics`` empties, and
    ``fts5vocab`` gives that term as NULL. Decoded as bytes, it failed every search of
    the user who stored such a text (of the whole tenant, for a search by agent or
    session), and a query holding one failed that user's searches for a minute
    (``LEXICAL_FAILING_S``). In a row it stays a token (the row's length counts it, as
    FTS5's own BM25 does); no query asks for it (:meth:`Tokenizer.word` drops it)."""
    return "" if raw is None else raw.decode("utf-8", "replace")


class _Postings:
    """One term's rows in a block: per entry its position, count in the text and count
    in the context, side by side in one compact int32 array (read by numpy without a
    copy, as a table of three columns). A removed row's entry is zeroed (position -1)
    until the block is rebuilt.

    Why ``array`` and not numpy arrays: a block holds thousands of terms, most in a few
    rows, and three numpy arrays cost ~450 bytes a term before any entry. Why one array
    and not one per column: each costs ~80 bytes empty, and a one-memory user's block
    is mostly such terms (three arrays: ~400 bytes a term, one: ~250)."""

    __slots__ = ("entries", "id", "live", "term")

    def __init__(self, term: str, term_id: int) -> None:
        self.term = term
        self.id = term_id  # its place in the block's ``by_id``
        self.live = 0
        self.entries = array("i")  # position, text count, context count; per entry

    def counts(self, i: int) -> tuple[int, int]:
        """Entry ``i``'s counts in the text and in the context."""
        return self.entries[3 * i + 1], self.entries[3 * i + 2]

    def clear(self, i: int) -> int:
        """Zero entry ``i``; how many live entries are left."""
        at = 3 * i
        self.entries[at], self.entries[at + 1], self.entries[at + 2] = -1, 0, 0
        self.live -= 1
        return self.live


class _Block:
    """The indexed rows of one (tenant, user), in the order they were added."""

    __slots__ = (
        "agent",
        "by_id",
        "codes",
        "dead",
        "entries",
        "ids",
        "length",
        "postings",
        "rowid",
        "session",
        "size",
        "times",
        "total_length",
        "type",
        "where",
    )

    def __init__(self) -> None:
        self.size = 0
        self.dead = 0
        self.total_length = 0  # tokens of the live rows (BM25's mean document length)
        self.ids: list[str | None] = []
        self.where: dict[str, int] = {}  # id -> position
        # Room for one row, doubled as rows come: most users have a few memories.
        self.rowid = np.zeros(1, dtype=np.int64)
        self.length = np.zeros(1, dtype=np.float64)
        self.codes = ScopeCodes()
        self.agent = np.zeros(1, dtype=np.int32)  # codes (of ``self.codes``)
        self.session = np.zeros(1, dtype=np.int32)
        self.type = np.zeros(1, dtype=np.int32)
        self.times = {f: np.full(1, np.nan, dtype=np.float64) for f in TIME_FIELDS}
        self.postings: dict[str, _Postings] = {}
        #: every term's postings by its id (None once its last row left)
        self.by_id: list[_Postings | None] = []
        #: per row: its terms' ids and its entry in each (empty once removed)
        self.entries: list[tuple[array[int], array[int]]] = []

    def extend(
        self,
        ids: Sequence[str],
        rowids: Sequence[int],
        codes: npt.NDArray[np.int32],
        times: dict[str, npt.NDArray[np.float64]],
        tokens: Tokens,
    ) -> None:
        """Append rows: their records' ids and rowids, scope codes (one row per record:
        agent, session, type), times (:data:`TIME_FIELDS`, NaN for none) and tokens
        (``Tokenizer.rows`` of these rows, in this order)."""
        n = len(ids)
        base = self.size
        self._reserve(base + n)
        at = slice(base, base + n)
        self.rowid[at], self.length[at] = rowids, tokens.lengths
        self.agent[at], self.session[at], self.type[at] = codes[:, 0], codes[:, 1], codes[:, 2]
        for f in TIME_FIELDS:
            self.times[f][at] = times[f]
        self.where.update(zip(ids, range(base, base + n), strict=True))
        self.ids.extend(ids)
        self.size += n
        self.total_length += int(tokens.lengths.sum())
        term_ids, entry = self._post(tokens, base)
        # Each row's (term id, entry) pairs: the pairs are sorted by term, so grouped by row.
        # One array of each, sorted by row, cut into the rows' arrays (a bytes slice
        # each: ~25% less than two numpy slices and their ``tobytes`` a row).
        order = np.argsort(tokens.row, kind="stable")
        ends = np.cumsum(np.bincount(tokens.row, minlength=n)) * term_ids.itemsize
        ids_of, at_of = term_ids[order].tobytes(), entry[order].tobytes()
        cuts = itertools.pairwise([0, *ends.tolist()])
        self.entries.extend([(array("i", ids_of[a:b]), array("i", at_of[a:b])) for a, b in cuts])

    def _post(
        self, tokens: Tokens, base: int
    ) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int32]]:
        """Append the pairs to their terms' postings (one run of pairs a term); each
        pair's term id and entry in those postings.

        Why one table: the (position, text, context) entries of every pair are laid
        out once, and each term's postings take their run's bytes (a term's own
        ``np.stack`` cost ~5 us, and a user of 60,000 memories has ~30,000 terms)."""
        m = len(tokens.term)
        if not m:
            return _NO_INTS, _NO_INTS
        table = np.empty((m, 3), dtype=np.int32)
        table[:, 0] = tokens.row + np.int32(base)
        table[:, 1] = tokens.text
        table[:, 2] = tokens.context
        entries = memoryview(table.tobytes())
        width = 3 * table.itemsize
        starts = np.flatnonzero(tokens.term[1:] != tokens.term[:-1]) + 1
        bounds = [0, *starts.tolist(), m]
        vocab, postings_of = tokens.vocab, self.postings
        run_ids: list[int] = []
        firsts: list[int] = []
        for term_at, start, end in zip(
            tokens.term[bounds[:-1]].tolist(), bounds[:-1], bounds[1:], strict=True
        ):
            term = vocab[term_at]
            postings = postings_of.get(term)
            if postings is None:
                postings = postings_of[term] = _Postings(term, len(self.by_id))
                self.by_id.append(postings)
            held = postings.entries
            firsts.append(len(held) // 3)
            held.frombytes(entries[width * start : width * end])
            postings.live += end - start
            run_ids.append(postings.id)
        sizes = np.diff(bounds)
        term_ids = np.repeat(np.array(run_ids, dtype=np.int32), sizes)
        # A run's pairs are entries first, first + 1, ... of its term's postings.
        shift = np.array(bounds[:-1], dtype=np.int32) - np.array(firsts, dtype=np.int32)
        entry = np.arange(m, dtype=np.int32) - np.repeat(shift, sizes)
        return term_ids, entry

    def _reserve(self, size: int) -> None:
        if size <= len(self.rowid):
            return
        grown = max(size, 2 * len(self.rowid))
        for name in ("rowid", "length", "agent", "session", "type"):
            setattr(self, name, _resized(getattr(self, name), grown))
        self.times = {f: _resized(t, grown) for f, t in self.times.items()}

    def kill(self, memory_id: str) -> bool:
        """Remove a record's row (its terms leave the postings now); whether it was here."""
        pos = self.where.pop(memory_id, None)
        if pos is None:
            return False
        term_ids, at = self.entries[pos]
        for term_id, i in zip(term_ids, at, strict=True):
            postings = self.by_id[term_id]
            assert postings is not None
            if not postings.clear(i):
                del self.postings[postings.term]  # no word of an erased record stays
                self.by_id[term_id] = None
        self.entries[pos] = (array("i"), array("i"))
        self.ids[pos] = None
        self.dead += 1
        self.total_length -= int(self.length[pos])
        return True

    def live(self) -> tuple[list[int], Tokens]:
        """The live rows' positions, and their tokens as :meth:`extend` takes them (for
        a rebuild: the counts kept, nothing tokenized again)."""
        rows = [pos for pos, memory_id in enumerate(self.ids) if memory_id is not None]
        pairs: list[tuple[str, int, int, int]] = []
        for n, pos in enumerate(rows):
            term_ids, at = self.entries[pos]
            for term_id, i in zip(term_ids, at, strict=True):
                postings = self.by_id[term_id]
                assert postings is not None
                pairs.append((postings.term, n, *postings.counts(i)))
        pairs.sort()
        lengths = self.length[rows].astype(np.int64)
        vocab = sorted({term for term, *_ in pairs})
        index = {term: i for i, term in enumerate(vocab)}
        table = np.array([(index[t], n, x, c) for t, n, x, c in pairs], dtype=np.int32)
        table = table.reshape(-1, 4)
        term, row, text, context = (table[:, k].copy() for k in range(4))
        return rows, Tokens(vocab, term, row, text, context, lengths)

    def scores(
        self, words: Sequence[tuple[str, float]], stats: Bm25Stats, context_weight: float
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
        """Every row's BM25 score for the (term, IDF) pairs, and which rows match any."""
        score = np.zeros(self.size, dtype=np.float64)
        matched = np.zeros(self.size, dtype=bool)
        norm = K1 * (1 - B + B * self.length[: self.size] / stats.avgdl)
        for term, idf in words:
            postings = self.postings.get(term)
            if postings is None:
                continue
            table = np.frombuffer(postings.entries, dtype=np.int32).reshape(-1, 3)
            if 3 * postings.live != len(postings.entries):  # removed rows' entries: -1
                table = table[table[:, 0] >= 0]
            pos, context = table[:, 0], table[:, 2]
            freq = table[:, 1].astype(np.float64)
            # FTS5 adds the weight once per occurrence, after the text's: a repeated sum,
            # which is not always count x weight in floating point (0.1 x 10 != 1.0).
            for k in range(int(context.max(initial=0))):
                freq[context > k] += context_weight
            # Rows are unique within a term's postings, so += is a plain gather-add.
            score[pos] += idf * ((freq * (K1 + 1.0)) / (freq + norm[pos]))
            matched[pos] = True
            del table, pos, context  # the views end here: an array read by numpy cannot grow
        return score, matched


class LexicalIndex:
    """BM25 over the loaded (tenant, user) blocks; see the module docstring."""

    def __init__(self, max_blocks: int = MAX_BLOCKS) -> None:
        if max_blocks < 1:
            raise ValueError("max_blocks must be at least 1")
        self.tokenizer = Tokenizer()
        #: At most this many blocks stay held after :meth:`trim`.
        self.max_blocks = max_blocks
        #: The held blocks, the least recently searched first (see :meth:`trim`).
        self._blocks: OrderedDict[tuple[str, str | None], _Block] = OrderedDict()
        self._home: dict[str, tuple[str, str | None]] = {}  # id -> its block's key
        self._tenants: set[str] = set()  # tenants held whole (every user, new ones too)
        #: Blocks dropped by :meth:`trim` so far (for tests and monitoring).
        self.dropped = 0

    def loaded(self, tenant: str, user_id: str | None) -> bool:
        """Whether this (tenant, user) is held (its later changes must be applied)."""
        return (tenant, user_id) in self._blocks

    def holds(self, flt: Filter) -> bool:
        """Whether every user a search with ``flt`` reads is held."""
        tenant, user_id = flt.scope.tenant, flt.scope.user_id
        if tenant in self._tenants:
            return True
        return flt.one_user() and (tenant, user_id) in self._blocks

    def hold_tenant(self, tenant: str) -> None:
        """Take every later record of the tenant, of a user not held before too (the
        caller has loaded each of its users)."""
        self._tenants.add(tenant)

    def load(self, tenant: str, user_id: str | None, rows: Sequence[LexRow]) -> None:
        """Hold a (tenant, user) with exactly ``rows`` (every record it has now). A user
        with none is not held: searches for ids never stored (a typo, a new user) would
        each leave an empty block; reading none again costs one index lookup."""
        old = self._blocks.pop((tenant, user_id), None)
        if old is not None:
            for memory_id in old.where:
                self._home.pop(memory_id, None)
        if rows:
            self._add(rows)

    def _add(self, rows: Sequence[LexRow]) -> None:
        """Tokenize ``rows`` (in one batch) and hold them, replacing what is held of the
        same records, creating their users' blocks as needed."""
        self.remove(map(_ID_OF, rows))
        if not rows:
            return
        with _GC_PAUSE:
            self._hold(rows)

    def _hold(self, rows: Sequence[LexRow]) -> None:
        tokens = self.tokenizer.rows(rows)
        keys = list(map(_USER_OF, rows))
        groups: Mapping[tuple[str, str | None], Sequence[int]]
        if keys.count(keys[0]) == len(keys):  # one user's rows (a load): no grouping
            groups = {keys[0]: range(len(rows))}
        else:
            lists: dict[tuple[str, str | None], list[int]] = {}
            for i, key in enumerate(keys):
                lists.setdefault(key, []).append(i)
            groups = lists
        for key, members in groups.items():
            block = self._blocks.get(key)
            if block is None:  # a new user, of a tenant held whole or loaded now
                block = self._blocks[key] = _Block()
            whole = len(members) == len(rows)
            mine = rows if whole else [rows[i] for i in members]
            ids = list(map(_ID_OF, mine))
            codes, times = _columns(block.codes, mine)
            block.extend(
                ids,
                list(map(_ROWID_OF, mine)),
                codes,
                times,
                tokens if whole else tokens.of_rows(np.array(members, dtype=np.intp)),
            )
            self._home.update(zip(ids, itertools.repeat(key)))

    def apply(self, ids: Sequence[str], rows: Sequence[LexRow]) -> bool:
        """Apply logged changes: ``ids`` changed (inserted, updated or deleted) and
        ``rows`` are those of them that exist now (held if their user is). Returns
        whether any record was deleted."""
        present = {r.id for r in rows}
        held = [r for r in rows if self._holds_row(r)]  # before a removal empties a block
        self.remove(ids)
        self._add(held)
        return any(memory_id not in present for memory_id in ids)

    def _holds_row(self, row: LexRow) -> bool:
        return row.tenant in self._tenants or (row.tenant, row.user_id) in self._blocks

    def remove(self, ids: Iterable[str]) -> None:
        """Forget records; a block left mostly dead is rebuilt without them."""
        touched: set[tuple[str, str | None]] = set()
        for memory_id in ids:
            key = self._home.pop(memory_id, None)
            if key is not None and self._blocks[key].kill(memory_id):
                touched.add(key)
        for key in touched:
            block = self._blocks[key]
            if 2 * block.dead > block.size:
                self._rebuild(key, block)

    def _rebuild(self, key: tuple[str, str | None], block: _Block) -> None:
        """A new block of the live rows only, in their order (counts kept, no re-read)."""
        rows, tokens = block.live()
        if not rows:  # a forgotten user: nothing of it stays
            del self._blocks[key]
            return
        new = _Block()
        new.codes, scope = block.codes.kept(
            [block.agent[rows], block.session[rows], block.type[rows]]
        )
        new.extend(
            [str(block.ids[pos]) for pos in rows],
            block.rowid[rows].tolist(),
            np.stack(scope, axis=1),
            {f: block.times[f][rows] for f in TIME_FIELDS},
            tokens,
        )
        self._blocks[key] = new

    def trim(self, flt: Filter | None) -> int:
        """Drop the least recently searched blocks while more than ``max_blocks`` are
        held, but none a search with ``flt`` reads (its user's, or its tenant's without
        one): the caller is about to search them. Returns how many were dropped.

        A dropped user is not held (:meth:`holds`, :meth:`loaded`): the changes logged
        for it are skipped from then on, and the store reads it whole at its next search
        (``SQLiteStore._read_lexical``). A tenant held whole no longer is once one of its
        users is dropped: its next search without a user reads the users missing."""
        blocks = self._blocks
        if len(blocks) <= self.max_blocks:
            return 0
        tenant, user_id = (None, None) if flt is None else (flt.scope.tenant, flt.scope.user_id)
        every_user = flt is None or not flt.one_user()
        kept: list[tuple[tuple[str, str | None], _Block]] = []
        dropped = 0
        while blocks and len(blocks) + len(kept) > self.max_blocks:
            key, block = blocks.popitem(last=False)
            if key[0] == tenant and (every_user or key[1] == user_id):
                kept.append((key, block))  # searched now: back at the recent end below
                continue
            for memory_id in block.where:
                self._home.pop(memory_id, None)
            self._tenants.discard(key[0])
            dropped += 1
        blocks.update(kept)
        self.dropped += dropped
        return dropped

    def blocks_held(self) -> int:
        """Users ((tenant, user) blocks) held now."""
        return len(self._blocks)

    def scope_values_held(self) -> int:
        """Scope values (agent, session, type ids) given codes, over every block: for
        tests of growth in a process that stays up."""
        return sum(len(b.codes) for b in self._blocks.values())

    def rows_held(self) -> int:
        """Rows in memory, dead ones included (for tests of growth)."""
        return sum(b.size for b in self._blocks.values())

    def search(
        self,
        flt: Filter,
        words: Sequence[str],
        *,
        context_weight: float,
        limit: int,
        now: float,
    ) -> list[tuple[str, float]]:
        """The best ``limit`` (id, score) among the rows that match any word and pass
        the filter's scope (its user, or every held user of the tenant without one),
        types, times and validity at ``now``, as ``filter_sql`` would; ties in the order
        the rows were written (rowid). The statistics are the scope's (see the module
        docstring). A metadata filter is the caller's to check."""
        blocks = [b for b in self._blocks_for(flt) if b.size > b.dead]
        if limit <= 0 or not blocks:
            return []
        # A word is one term but where FTS5 still splits what a query keeps whole (a
        # private-use character, a letter newer than its Unicode tables): then each.
        terms = [t for w in words for t in dict.fromkeys(self.tokenizer.word(w))]
        stats = scope_stats(blocks, terms)
        weighted = [(t, stats.idf(t)) for t in terms]
        found: list[tuple[float, int, str]] = []
        for block in blocks:
            score, matched = block.scores(weighted, stats, context_weight)
            matched &= self._mask(block, flt, now)
            idx = np.flatnonzero(matched)
            # Best first, ties by rowid (FTS5 reads matches in rowid order).
            idx = idx[np.lexsort((block.rowid[idx], -score[idx]))[:limit]]
            found.extend((float(score[i]), int(block.rowid[i]), str(block.ids[i])) for i in idx)
        found.sort(key=lambda hit: (-hit[0], hit[1]))
        return [(memory_id, score) for score, _, memory_id in found[:limit]]

    def _mask(self, block: _Block, flt: Filter, now: float) -> npt.NDArray[np.bool_]:
        n = block.size
        mask = time_mask(block.times, n, flt, now)
        for codes, value in (
            (block.agent, flt.scope.agent_id),
            (block.session, flt.scope.session_id),
        ):
            if value is not None:
                mask &= codes[:n] == block.codes.find(value)
        if flt.exclude_session is not None:
            mask &= block.session[:n] != block.codes.find(flt.exclude_session)
        if flt.memory_types:
            mask &= np.isin(block.type[:n], [block.codes.find(t) for t in flt.memory_types])
        return mask

    def _blocks_for(self, flt: Filter) -> list[_Block]:
        """The blocks a search with ``flt`` reads, each marked as searched now (moved
        to the recent end of the order :meth:`trim` drops by)."""
        tenant, user_id = flt.scope.tenant, flt.scope.user_id
        if flt.one_user():  # with ``no_user``: the block of no user
            block = self._blocks.get((tenant, user_id))
            if block is None:
                return []
            self._blocks.move_to_end((tenant, user_id))
            return [block]
        keys = [k for k in self._blocks if k[0] == tenant]
        for k in keys:
            self._blocks.move_to_end(k)
        return [self._blocks[k] for k in keys]

    def close(self) -> None:
        """Drop everything held and the tokenizer's connection."""
        self._blocks.clear()
        self._home.clear()
        self._tenants.clear()
        self.tokenizer.close()


def scope_stats(blocks: Sequence[_Block], terms: Sequence[str]) -> Bm25Stats:
    """BM25's statistics over the live rows of ``blocks`` (one user's, or a tenant's
    users'): kept up to date by every change, so nothing is read or counted here but
    one number per block and term."""
    rows = sum(b.size - b.dead for b in blocks)
    tokens = sum(b.total_length for b in blocks)
    hits = {t: sum(p.live for b in blocks if (p := b.postings.get(t)) is not None) for t in terms}
    return Bm25Stats(rows, tokens / rows if rows else 1.0, hits)


def _columns(
    codes: ScopeCodes, rows: Sequence[LexRow]
) -> tuple[npt.NDArray[np.int32], dict[str, npt.NDArray[np.float64]]]:
    """The rows' scope codes in ``codes`` (agent, session, type; a row each) and times
    (NaN: none)."""
    code = codes.code
    scope = [(code(r.agent_id), code(r.session_id), code(r.memory_type)) for r in rows]
    # None is NaN in a float64 array.
    times = {f: np.array(list(map(attrgetter(f), rows)), dtype=np.float64) for f in TIME_FIELDS}
    return np.array(scope, dtype=np.int32).reshape(-1, 3), times


def _resized(values: npt.NDArray[_T], size: int) -> npt.NDArray[_T]:
    """``np.resize(values, size)`` of a 1-D array of one value or more (``values``
    repeated): np.resize builds a tuple of ``size / len(values)`` references to join,
    ~4 ms an array for a block growing from one row to 60,000."""
    return values[np.arange(size) % len(values)]
