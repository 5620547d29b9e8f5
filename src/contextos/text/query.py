"""The words a search query is made of, the same for every store.

Both stores turn a query into an OR of its distinct non-stopword words (SQLite's FTS5
and PostgreSQL's ``to_tsquery``); they share this one list and this one tokenisation,
so the same query asks both for the same words.

A word is a run of letters, digits and combining marks (Unicode categories L*, N*, M*)
of the query in its composed form (NFC), with at least one letter or digit; ``_`` and
everything else separate words, as in FTS5's unicode61 tokenizer. Marks belong to the
word: Hindi, Bengali, Tamil and Thai write vowels with them, Hebrew and Arabic their
pointing, and a decomposed "Nội" carries its accents as marks; cut there, "मूंगफली"
("peanut") asked for "म" and "गफल", which PostgreSQL (whose words keep their marks) never matched.

A word keeps its case: each store folds it exactly as it folded the memories' words
when it indexed them (FTS5's unicode61; PostgreSQL's parser, by the database's
locale). Lower-cased here, "İstanbul" became "i" and a combining dot ("stanbul" once
cut), and under PostgreSQL's C locale, which folds ASCII only, "Ærø" asked for "ærø",
a word no memory holding "Ærø" was indexed with. Case is ignored only where words are
compared here: stopwords, and a word that repeats another.

Dense (vector) search is what finds a word inside an unspaced run of Chinese or
Japanese: the keyword index holds the whole run as one word (docs/api.md).
"""

from __future__ import annotations

import re
import unicodedata

#: A run of letters and digits (ASCII text needs nothing more).
_LETTERS = re.compile(r"[^\W_]+", re.UNICODE)

#: A run of letters and digits, or one other character that is not a space (perhaps a
#: combining mark: ``re`` has no class for them).
_PIECE = re.compile(r"[^\W_]+|[^\w\s]", re.UNICODE)

#: Words too common to help BM25; dropping them keeps OR-queries fast.
QUERY_STOPWORDS = frozenset(
    (  # noqa: SIM905 (a word list reads better as text)
        "a an and are as at be been but by did do does for from had has have he her his how i "
        "if in into is it its me my of on or our she so than that the their them then there "
        "they this to was we were what when where which who whom why will with would you your"
    ).split()
)

#: The most words one query asks for.
MAX_QUERY_TERMS = 64


def search_words(text: str) -> list[str]:
    """The words of ``text`` (see the module docstring), as written, in NFC form."""
    if text.isascii():
        return _LETTERS.findall(text)
    text = unicodedata.normalize("NFC", text)
    found: list[str] = []
    start = end = -1  # the word being read: text[start:end]
    for piece in _PIECE.finditer(text):
        at, stop = piece.span()
        first = text[at]
        if not first.isalnum() and not unicodedata.category(first).startswith("M"):
            continue  # a separator: the next piece does not continue the word
        if at != end:  # not adjacent: the word before ends
            _add_word(found, text[start:end])
            start = at
        end = stop
    _add_word(found, text[start:end])
    return found


def _add_word(found: list[str], word: str) -> None:
    """Append ``word`` unless it has no letter or digit: combining marks alone (U+0301
    after a space) are no word. FTS5 indexes them as an empty term, PostgreSQL as a
    word, so the same query matched different memories on the two stores."""
    if any(ch.isalnum() for ch in word):
        found.append(word)


def query_terms(text: str) -> list[str]:
    """The distinct non-stopword words of ``text``, in order, at most 64; as written
    (NFC), the first of those that differ only by case."""
    found: list[str] = []
    seen: set[str] = set()
    for w in search_words(text):
        key = w.lower()
        if key not in QUERY_STOPWORDS and key not in seen:
            seen.add(key)
            found.append(w)
            if len(found) == MAX_QUERY_TERMS:
                break
    return found


def term_set(text: str) -> set[str]:
    """Every distinct non-stopword word of ``text``, lower-cased (no cap): the words
    :func:`query_terms` draws from, for comparing texts rather than querying."""
    return {k for w in search_words(text) if (k := w.lower()) not in QUERY_STOPWORDS}
