"""The words a search query is made of, the same for every store.

Both stores turn a query into an OR of its distinct non-stopword words (SQLite's FTS5
and PostgreSQL's ``to_tsquery``); they share this one list and this one tokenisation,
so the same query asks both for the same words. Words are runs of letters and digits
(``_`` separates words, as in FTS5's unicode61 tokenizer).
"""

from __future__ import annotations

import re

_WORD = re.compile(r"[^\W_]+", re.UNICODE)

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


def query_terms(text: str) -> list[str]:
    """The distinct non-stopword words of ``text``, lower-cased, in order, at most 64."""
    words: list[str] = []
    for w in _WORD.findall(text.lower()):
        if w not in QUERY_STOPWORDS and w not in words:
            words.append(w)
            if len(words) == MAX_QUERY_TERMS:
                break
    return words


def term_set(text: str) -> set[str]:
    """Every distinct non-stopword word of ``text``, lower-cased (no cap): the words
    :func:`query_terms` draws from, for comparing texts rather than querying."""
    return {w for w in _WORD.findall(text.lower()) if w not in QUERY_STOPWORDS}
