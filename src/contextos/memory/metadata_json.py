"""Metadata read as JSON text at C speed: its size, its nesting, its long integers.

Why: metadata was checked by walks in Python, value by value (~2 us a value, four
walks: depth, 64-bit integers, Unicode, then the size by ``json.dumps``). On the
server those walks ran for every add on the write threads, holding the GIL: 40 adds of
15 messages with 60 KB of metadata each slowed every tenant's requests for 14 s (a
review, s55). One ``json.dumps`` (C) of a value that is plain JSON gives its size, and
scans of that text (regular expressions and numpy, C) find what the walks look for, so
the walks run only for a value they may refuse (:func:`plain_size`) or that is not
plain JSON (a ``datetime``, a ``set``, a NaN), where they say precisely what is wrong.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from ..types import fits_int64

#: A JSON string in ``json.dumps`` output (its quotes and escapes).
STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
#: 19 digits in a row (strings removed): only such a number may not fit in 64 bits.
_LONG_RUN = re.compile(r"\d{19}")
#: A number of 19 digits or more, with what touches it: part of a float when a "." or
#: an exponent does.
_LONG_NUMBER = re.compile(r"[-\d.eE+]*\d{19,}[-\d.eE+]*")

_OPEN, _CLOSE = np.frombuffer(b"[{", dtype=np.uint8), np.frombuffer(b"]}", dtype=np.uint8)


def strict_dump(value: Any) -> str:
    """``value`` as compact JSON, as it is stored (``ingest.metadata_bytes``), with no
    fallback for what JSON cannot hold: TypeError (a set, bytes, a datetime), ValueError
    (NaN, an infinity, an int past Python's digit limit), RecursionError (nested past
    Python's stack)."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def bare(text: str) -> str:
    """JSON text with every string emptied: numbers and brackets are then the text's."""
    return STRING.sub('""', text)


def wide_ints(bare_text: str) -> Iterator[str]:
    """The integers of :func:`bare` text that do not fit in 64 bits, as written."""
    if _LONG_RUN.search(bare_text) is None:
        return
    for number in _LONG_NUMBER.findall(bare_text):
        if number.lstrip("-").isdigit() and not fits_int64(int(number)):
            yield number


def nesting(bare_text: str) -> int:
    """How many objects and lists nest in :func:`bare` text."""
    if bare_text.count("[") + bare_text.count("{") <= 1:
        return int("[" in bare_text or "{" in bare_text)
    chars = np.frombuffer(bare_text.encode("ascii", "replace"), dtype=np.uint8)
    step = np.isin(chars, _OPEN).astype(np.int32) - np.isin(chars, _CLOSE).astype(np.int32)
    return int(np.cumsum(step).max())


def plain_size(metadata: Mapping[str, Any], max_depth: int) -> int | None:
    """The size in bytes of ``metadata`` as stored, when it is plain JSON that nests at
    most ``max_depth`` levels, holds only 64-bit integers and valid Unicode: what the
    library's walks (``ingest.check_metadata``) would take but for its size. None
    otherwise: the walks then say what is wrong."""
    try:
        text = strict_dump(metadata)
        encoded = text.encode("utf-8")  # a lone surrogate: UnicodeEncodeError
    except (TypeError, ValueError, RecursionError):  # UnicodeEncodeError is a ValueError
        return None
    stripped = bare(text)
    if next(wide_ints(stripped), None) is not None or nesting(stripped) > max_depth:
        return None
    return len(encoded)
