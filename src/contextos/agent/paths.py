"""Memory-tool paths: one normal form under ``/memories``, everything else refused.

The model chooses these paths, so they are hostile input. Files live in the
store (there is no filesystem to escape into), but a path is also a name other
code may one day map onto disks or URLs, so the rules are strict rather than
clever: no ``.`` or ``..`` segments at all (not even ones that would resolve
inside ``/memories``), no backslashes, control characters or NUL, no
percent-encoding, no invisible characters (zero-width, bidi
overrides) or lone surrogates, no Unicode that NFKC would turn into something else
(fullwidth dots and slashes), and bounded lengths. Repeated and trailing
slashes are harmless and collapsed.
"""

from __future__ import annotations

import unicodedata
from urllib.parse import unquote

ROOT = "/memories"
#: Longest accepted path, in characters (as given, before normalising).
MAX_PATH_CHARS = 512
#: Longest accepted segment (a file or directory name), in characters.
MAX_SEGMENT_CHARS = 255
#: Deepest accepted nesting below /memories.
MAX_DEPTH = 16


class MemoryFileError(ValueError):
    """A memory-tool command that cannot be done; the message is shown to the model."""


class PathRefused(MemoryFileError):
    """A path the memory tool will not touch."""


def _describe(path: object) -> str:
    text = ascii(path)
    return text if len(text) <= 120 else text[:117] + "..."


def _check_text(path: str, shown: str) -> None:
    if len(path) > MAX_PATH_CHARS:
        raise PathRefused(f"Path is longer than {MAX_PATH_CHARS} characters: {shown}")
    if not path.isprintable():  # NUL, control, format (bidi, zero-width), lone surrogates
        raise PathRefused(f"Path contains control, invisible or invalid characters: {shown}")
    if "\\" in path:
        raise PathRefused(f"Path contains a backslash: {shown}")
    if unquote(path) != path:
        raise PathRefused(f"Path must not be percent-encoded: {shown}")
    if unicodedata.normalize("NFKC", path) != path:
        raise PathRefused(f"Path contains non-canonical Unicode (use NFKC form): {shown}")
    if path != ROOT and not path.startswith(ROOT + "/"):
        raise PathRefused(f"Path must start with /memories, got: {shown}")


def _check_segments(segments: list[str], shown: str) -> None:
    for seg in segments:
        if seg in (".", ".."):
            raise PathRefused(f"Path {shown} would escape /memories directory")
        if len(seg) > MAX_SEGMENT_CHARS:
            raise PathRefused(f"Path segment longer than {MAX_SEGMENT_CHARS} characters: {shown}")
        if seg.strip() != seg:
            raise PathRefused(f"Path segment with leading or trailing spaces: {shown}")
    if len(segments) > MAX_DEPTH:
        raise PathRefused(f"Path is nested deeper than {MAX_DEPTH} levels: {shown}")


def normalize(path: object) -> str:
    """The normal form of ``path`` (``/memories`` or ``/memories/a/b``), or PathRefused."""
    if not isinstance(path, str):
        raise PathRefused(f"Path must be a string, got: {type(path).__name__}")
    shown = _describe(path)
    _check_text(path, shown)
    segments = [s for s in path[len(ROOT) :].split("/") if s]
    _check_segments(segments, shown)
    return "/".join([ROOT, *segments])


def parent(path: str) -> str:
    """The directory holding a normalised path (``/memories`` for top-level files)."""
    return path.rsplit("/", 1)[0] if path != ROOT else ROOT


def is_under(path: str, directory: str) -> bool:
    """True when normalised ``path`` lies strictly inside normalised ``directory``."""
    return path.startswith(directory.rstrip("/") + "/")


def hidden(relative: str) -> bool:
    """Listings skip hidden items (a segment starting with a dot) and node_modules."""
    return any(s.startswith(".") or s == "node_modules" for s in relative.split("/"))


__all__ = [
    "MAX_DEPTH",
    "MAX_PATH_CHARS",
    "MAX_SEGMENT_CHARS",
    "ROOT",
    "MemoryFileError",
    "PathRefused",
    "hidden",
    "is_under",
    "normalize",
    "parent",
]
