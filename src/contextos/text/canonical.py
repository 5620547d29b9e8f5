"""One text as the library compares it: what a reader cannot see taken away, composed.

Used wherever two texts are compared for meaning (the words of the extractor and the
claim matcher, the reconciler's duplicate test), so that they all agree on when two
texts are the same. Not by the content hash of exact repeats
(:func:`contextos.types.content_hash`), which stays as stored records were hashed.
"""

from __future__ import annotations

import re
import unicodedata

#: Invisible format characters (Unicode category Cf) that change neither what a text
#: says nor how it is written: the soft hyphen U+00AD, the Arabic letter mark U+061C,
#: the Mongolian vowel separator U+180E, the zero-width space U+200B, the left-to-right
#: and right-to-left marks U+200E-200F, the bidirectional embeddings and overrides
#: U+202A-202E, the word joiner and invisible operators U+2060-2064, the bidirectional
#: isolates U+2066-2069, and the zero-width no-break space (byte order mark) U+FEFF.
#:
#: Not every Cf character: the zero-width non-joiner and joiner (U+200C, U+200D) choose
#: how Persian and Indic words and emoji sequences are written ("👨‍👩‍👧" is one family,
#: three people without them), the tag characters tell one subdivision flag from another,
#: and the Arabic number signs (U+0600-0605) are seen. Nor NFKC: it makes "m²" "m2" and
#: "①" "1", texts a reader tells apart.
INVISIBLE = re.compile(
    "[\u00ad\u061c\u180e\u200b\u200e\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]+"
)


def canonical(text: str) -> str:
    """``text`` without :data:`INVISIBLE` characters, in Unicode's composed form (NFC).

    Why: "I live in Zu\\u200brich." (a zero-width space, common in text pasted from the
    web and chat apps) read as no claim and as another text than "I live in Zurich.", so
    it was stored beside it, and a later move closed only the plain one (a review, s58).
    NFC: "café" typed decomposed (macOS) is the same text composed."""
    if text.isascii():
        return text
    return unicodedata.normalize("NFC", INVISIBLE.sub("", text))
