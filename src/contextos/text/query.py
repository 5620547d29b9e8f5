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

Emoji separate words, as other symbols do, and the invisible characters that only
style the character before them are dropped first (:data:`IGNORED_RANGES`: variation
selectors, the keycap mark): "I ❤\ufe0fParis" asks for "Paris", not for "\ufe0fParis" (the
selector U+FE0F is a mark, so it continued the word). The stores cut the stored texts
by the same rule (:func:`keyword_text`), which also names every separator as a code
point range (:data:`SEPARATOR_RANGES`) for the tokenizers that do not know them:
FTS5's unicode61 knows Unicode 6.1, where every newer emoji ("🙂", "🥰") is a letter,
and PostgreSQL's parser in a ``C`` locale takes every non-ASCII character for one.

:func:`keyword_text` also folds what neither store's case folding does
(:data:`FOLDS`): "ß" and "ẞ" are "ss" ("Straße" is "Strasse", as in Swiss German or
in capitals), the final sigma "ς" is "σ" (PostgreSQL lower-cases "ΟΔΥΣΣΈΑΣ" to
"οδυσσέασ"), and the full-width forms of ASCII an input method types ("１２３４５",
"Ｔｏｋｙｏ") are ASCII. Like case, that is the stores' business: each folds a query
word as it folded the stored words (PostgreSQL only in a UTF-8 database).

Dense (vector) search is what finds a word inside an unspaced run of Chinese or
Japanese: the keyword index holds the whole run as one word (docs/api.md).
"""

from __future__ import annotations

import re
import unicodedata

#: Code point ranges (inclusive) that separate words in a stored text, on both stores:
#: every ASCII character but letters and digits (``_`` included), Latin-1's
#: punctuation and symbols, general punctuation (’ “ ” — …, the Unicode spaces, the
#: zero-width joiner), currency signs, arrows, mathematical and technical symbols,
#: box drawing, shapes, dingbats (not the circled digits), CJK and full-width
#: punctuation, and emoji and pictographs wherever Unicode put them (™ Ⓜ ⤴ ⬅ ⭐ ㊗,
#: mahjong and playing cards, the regional indicators of flags, the tags of
#: subdivision flags, the planes' room for emoji still to come). The query side
#: separates each of them already (none is a letter, digit or mark; tested): these
#: ranges are for the tokenizers that read a stored text. PostgreSQL's parser in a
#: ``C`` locale takes every non-ASCII character for a letter, and FTS5's unicode61
#: knows Unicode 6.1 only, where every newer character (most emoji: "🙂", "🥰",
#: "🤖") is a letter: "pizza🙂" was one word there. PostgreSQL's migration V10 is
#: written from them (and V8 from the ranges before V10): changing them needs a new
#: migration (``tests/test_migrations_frozen.py`` pins both).
SEPARATOR_RANGES: tuple[tuple[int, int], ...] = (
    (0x0001, 0x002F),
    (0x003A, 0x0040),
    (0x005B, 0x0060),
    (0x007B, 0x00A9),
    (0x00AB, 0x00B1),
    (0x00B4, 0x00B4),
    (0x00B6, 0x00B8),
    (0x00BB, 0x00BB),
    (0x00BF, 0x00BF),
    (0x00D7, 0x00D7),
    (0x00F7, 0x00F7),
    (0x2000, 0x206F),
    (0x20A0, 0x20CF),
    (0x2122, 0x2122),
    (0x2190, 0x23FF),
    (0x24C2, 0x24C2),
    (0x2500, 0x2775),
    (0x2794, 0x27BF),
    (0x2934, 0x2935),
    (0x2B00, 0x2BFF),
    (0x2E00, 0x2E2E),
    (0x2E30, 0x2E7F),
    (0x3000, 0x3004),
    (0x3008, 0x3020),
    (0x3030, 0x3030),
    (0x3036, 0x3037),
    (0x303D, 0x303F),
    (0x3297, 0x3297),
    (0x3299, 0x3299),
    (0xFF01, 0xFF0F),
    (0xFF1A, 0xFF20),
    (0xFF3B, 0xFF40),
    (0xFF5B, 0xFF65),
    (0xFFE0, 0xFFEE),
    (0x1F000, 0x1F0FF),
    (0x1F10D, 0x1FAFF),
    (0x1FC00, 0x1FFFD),
    (0xE0000, 0xE007F),
)

#: Code point ranges (inclusive) dropped before a text is cut into words: the
#: variation selectors (U+FE0F after "❤", "☕", "✌" asks for the emoji's picture;
#: U+E0100 on asks for a glyph of a CJK ideograph) and the keycap mark (U+20E3: "1\ufe0f\u20e3"
#: is "1"). Each only styles the character before it and is a mark (category M), so
#: it continued a word: "☕\ufe0ftomorrow" was the word "\ufe0ftomorrow". Dropped rather
#: than made separators: after an emoji, the emoji separates; after a letter, it is
#: that letter's glyph, and the word stays whole ("葛\U000e0100飾" is "葛飾").
IGNORED_RANGES: tuple[tuple[int, int], ...] = (
    (0x20E3, 0x20E3),
    (0xFE00, 0xFE0F),
    (0xE0100, 0xE01EF),
)

#: The full-width forms of ASCII's printable characters (U+FF01 "！" to U+FF5E "～"),
#: which :data:`FOLDS` makes ASCII: U+FF01 + i is U+0021 + i.
FULLWIDTH_ASCII: tuple[int, int] = (0xFF01, 0xFF5E)

#: What a store folds besides case, in the stored words and in the query's alike: the
#: two letters whose lower case is not their case folding ("ß" and "ẞ" are "ss"; the
#: final sigma "ς", which PostgreSQL's lower() keeps apart from the "σ" it makes of a
#: capital "Σ", is "σ"), and :data:`FULLWIDTH_ASCII`.
FOLDS: dict[str, str] = {
    "\u00df": "ss",
    "\u1e9e": "ss",
    "\u03c2": "\u03c3",
    **{chr(cp): chr(cp - 0xFEE0) for cp in range(FULLWIDTH_ASCII[0], FULLWIDTH_ASCII[1] + 1)},
}


def _escape(cp: int) -> str:
    # PostgreSQL's ARE and Python's re both read \uXXXX and \UXXXXXXXX.
    return f"\\u{cp:04x}" if cp <= 0xFFFF else f"\\U{cp:08x}"


def char_class(ranges: tuple[tuple[int, int], ...]) -> str:
    """The code point ``ranges`` as one regular-expression class, for both PostgreSQL
    and Python."""
    body = "".join(_escape(a) if a == b else f"{_escape(a)}-{_escape(b)}" for a, b in ranges)
    return f"[{body}]"


#: :data:`SEPARATOR_RANGES` as one class (PostgreSQL and Python).
SEPARATOR_CLASS = char_class(SEPARATOR_RANGES)

#: :data:`IGNORED_RANGES` as one class (PostgreSQL and Python).
IGNORED_CLASS = char_class(IGNORED_RANGES)

_SEPARATORS = re.compile(SEPARATOR_CLASS + "+")
_IGNORED = re.compile(IGNORED_CLASS + "+")
_FOLDED = re.compile("[" + "".join(FOLDS) + "]")
_FOLD_TABLE = str.maketrans(FOLDS)

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
    """The words of ``text`` (see the module docstring), as written, in NFC form (the
    :data:`IGNORED_RANGES` dropped)."""
    if text.isascii():
        return _LETTERS.findall(text)
    text = unicodedata.normalize("NFC", _IGNORED.sub("", text))
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


def keyword_text(text: str, *, fold: bool = True) -> str:
    """``text`` as the stores cut it into words: the :data:`IGNORED_RANGES` dropped, in
    NFC form, folded (:data:`FOLDS`; unless ``fold`` is false: a PostgreSQL database
    that is not UTF-8 cannot fold its stored words), every run of separators
    (:data:`SEPARATOR_RANGES`) one space. Applied to a stored text before a tokenizer
    reads it (SQLite's keyword index; PostgreSQL's generated ``tsv``, in SQL: schema
    V10, tested to agree) and to each query word (of :func:`search_words`), it makes
    the words a query asks for the words the stores hold."""
    if not text.isascii():
        text = unicodedata.normalize("NFC", _IGNORED.sub("", text))
        if fold and _FOLDED.search(text):
            text = text.translate(_FOLD_TABLE)
    return _SEPARATORS.sub(" ", text)
