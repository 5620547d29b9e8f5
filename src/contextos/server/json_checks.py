"""A client's metadata checked as strict JSON at C speed, before anything walks it.

Why: the request body is parsed and validated on the server's one event loop, and the
checks of metadata were walks in Python (~2 us a value, four of them: strict JSON, then
the library's depth, integers and Unicode). A body under the 1 MB limit holding a list
of 300,000 zeros took 0.64 s to refuse, and 40 such requests from one valid key held
every tenant's requests, ``/healthz`` included, for 10-25 s (a review, s55). Here one
``json.dumps`` (C) gives the size, checked first, and finds a non-finite number and a
nesting past Python's stack; regular expressions (C) over its text find a NUL, a 64-bit
overflow and the nesting depth; encoding it finds a lone surrogate. No Python loop runs
per value, so the worst body costs milliseconds.

The rules are those of :func:`contextos.server.schemas._check_json` (strict JSON) and
:func:`contextos.memory.ingest.check_metadata` (the library's), in their words; the value
is what a JSON parser made (str keys; str, int, float, bool, None, list, dict), as the
HTTP body and MCP's arguments are. Anything else is left to the walk.
"""

from __future__ import annotations

import re
from typing import Any

from ..memory.ingest import MAX_METADATA_DEPTH, check_metadata_size
from ..memory.metadata_json import bare, nesting, strict_dump, wide_ints

#: A NUL in ``json.dumps`` output: escaped as ``\u0000``, after an even run of
#: backslashes (a user's own backslash is written ``\\``).
_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def check_json_metadata(value: dict[str, Any], what: str = "metadata") -> None:
    """Refuse ``value`` (parsed JSON) as the library and the strict-JSON rule would, in
    their words: over the size limit, a non-finite number, an integer past 64 bits,
    deeper than :data:`MAX_METADATA_DEPTH`, a NUL, a lone surrogate (ValueError)."""
    try:
        text = strict_dump(value)
    except RecursionError:
        raise ValueError(f"{what} may nest at most {MAX_METADATA_DEPTH} levels deep") from None
    except TypeError as exc:  # no parser makes one: a set, bytes (the walk's words)
        raise ValueError(f"unsupported {what} value ({exc})") from None
    except ValueError as exc:  # NaN or an infinity (a parser's value holds no cycle)
        if "integer string conversion" in str(exc):  # an int of over 4,300 digits
            raise ValueError(f"{what} integers must fit in 64 bits") from None
        raise ValueError(f"{what} numbers must be finite") from None
    check_metadata_size(len(text.encode("utf-8", "surrogatepass")), what, value)
    if "\\u0000" in text and _NUL.search(text):  # the substring first: C's search
        raise ValueError("text may not contain NUL characters")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text must be valid Unicode (no lone surrogates)") from None
    stripped = bare(text)
    if next(wide_ints(stripped), None) is not None:
        raise ValueError(f"{what} integers must fit in 64 bits")
    if nesting(stripped) > MAX_METADATA_DEPTH:
        raise ValueError(f"{what} may nest at most {MAX_METADATA_DEPTH} levels deep")
