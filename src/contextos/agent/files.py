"""The files of Anthropic's memory tool, kept as memories in the contextos store.

Each file is one memory (``memory_type="semantic"``) in the scope given at
construction (the tenant is the Memory's). Its text is the path on the first
line and the content after it, so ``Memory.search`` finds a note by what it
says *and* by its name, and every change is an ADD/UPDATE/DELETE event in
``Memory.history``. Directories are implied by the paths of the files in
them, as in an object store: creating ``/memories/a/b.md`` makes ``/memories/a``.

The command texts (results and errors) follow the anthropic SDK's reference
backend (``BetaLocalFilesystemMemoryTool``) word for word, so a model sees the
same answers whichever backend runs. Where a store differs from a disk: a
directory's size is the total size of its files, ``..`` is refused even when
it would resolve inside ``/memories``, and a file holds at most
:data:`MAX_FILE_CHARS` characters.

A command that writes runs under the owner's lock (:mod:`contextos.agent.lock`):
two creates of one path make one file, two edits of one file both land. Of
duplicates an older version's race left, the oldest is the file; a write to it
or a delete removes the others.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from ..errors import Conflict, quoted
from ..memory.ingest import MAX_METADATA_BYTES, MAX_TEXT_CHARS, metadata_bytes
from ..store.records import refuse_nul
from ..types import MemoryRecord
from .core_memory import ECHOED_CHARS
from .lock import LeaseLost, owner_lock, renew_lease
from .owner import oldest_first, owned_records, owner_scope
from .paths import (
    MAX_PATH_CHARS,
    ROOT,
    MemoryFileError,
    hidden,
    is_under,
    normalize,
    parent,
)

if TYPE_CHECKING:
    from ..memory import Memory

#: Largest file content, in characters (the path line shares the memory's limit).
MAX_FILE_CHARS = MAX_TEXT_CHARS - MAX_PATH_CHARS - 1
MAX_LINES = 999_999
LINE_NUMBER_WIDTH = len(str(MAX_LINES))
#: Lines a ``str_replace`` refusal of several matches names (:func:`_match_lines`).
LISTED_LINES = 20
#: Metadata marking a memory as a memory-tool file, with its path and trailing whitespace.
SOURCE = "memory_tool"
#: Metadata of a file a rename moved: where from, and which rename (see :class:`Moved`).
MOVED = "moved"


@dataclass(frozen=True)
class Moved:
    """What a rename records on each file it moves: the path the file was at, the
    rename's id, how many files that rename moves in all, and which (a digest of their
    memory ids, :func:`_members`: a file keeps its memory id when it moves).

    Why: each file moves in its own write, so a rename stopped partway (a killed
    process, a store error) leaves a directory split in two. The destination then
    holds only files of one rename, fewer than it moves, and the source holds the
    rest: the same rename asked again finishes the move. A rename that finished,
    or a destination holding anything else, is refused as on a disk. Which files: a
    count alone took a finished rename, one of its files since deleted and a new file
    made under the old path, for a rename stopped partway; the new file was moved onto
    the path of an old one, and hidden behind it (a review)."""

    source: str
    move: str
    files: int
    members: str = ""

    def as_metadata(self) -> dict[str, object]:
        return {"from": self.source, "move": self.move, "files": self.files, "of": self.members}

    @classmethod
    def of(cls, record: MemoryRecord) -> Moved | None:
        """The mark on ``record``, or None (none, or one that is not well formed)."""
        mark = record.metadata.get(MOVED)
        if not isinstance(mark, dict):
            return None
        source, move, files = mark.get("from"), mark.get("move"), mark.get("files")
        members = mark.get("of", "")
        if (
            isinstance(source, str)
            and isinstance(move, str)
            and type(files) is int
            and isinstance(members, str)
        ):
            return cls(source, move, files, members)
        return None


def _renewed() -> None:
    """Renew the files lock's lease before a write (:func:`~.lock.renew_lease`); lost,
    the command stops with a tool error that says so, not "busy or unavailable"."""
    try:
        renew_lease()
    except LeaseLost as exc:
        raise MemoryFileError(str(exc).capitalize()) from None


def _echoed(text: str) -> str:
    """``text`` as a refusal quotes it to the model: whole, as the SDK's reference tool
    words it, up to :data:`~.core_memory.ECHOED_CHARS` characters, then cut and its
    length said. Why: a 100,000-character ``old_str`` came back whole, a tool result
    logged and sent on every later call (a review)."""
    return quoted(text, ECHOED_CHARS, as_repr=False)


def _match_lines(content: str, old_str: str) -> str:
    """The lines of ``content`` where an occurrence of ``old_str`` starts, as a refusal of
    several matches names them: each line once, the first :data:`LISTED_LINES`, then how
    many more ("1, 4, 9 and 312 more lines").

    Why: the reference backend names a line per occurrence, each counted from the file's
    start: a one-letter ``old_str`` on a 99,000-character line gave a 297,102-character
    refusal after 1.6 s under the owner's lock (a review, s57), a tool result sent on
    every later call. Here each line is found once (the search skips to the next line)
    and counted from the last, so a refusal is one pass over the file."""
    listed: list[str] = []
    more, line, start = 0, 1, 0  # ``start`` begins line number ``line``
    while (pos := content.find(old_str, start)) != -1:
        line += content.count("\n", start, pos)
        if len(listed) < LISTED_LINES:
            listed.append(str(line))
        else:
            more += 1
        start = content.find("\n", pos) + 1  # the next line; 0: this is the last
        if not start:
            break
        line += 1
    return ", ".join(listed) + (f" and {more:,} more lines" if more else "")


def _members(files: Sequence[MemoryFile]) -> str:
    """A digest of the memory ids of ``files``, in any order: which files a rename moves."""
    return hashlib.sha256("\n".join(sorted(f.memory_id for f in files)).encode()).hexdigest()


@dataclass(frozen=True)
class MemoryFile:
    """One file: its normalised path, its exact content, and the memory holding it.

    ``shadowed``: other memories holding the same path (duplicates an older version
    created in a race); the oldest is the file, a write or delete removes the rest.
    """

    path: str
    content: str
    memory_id: str
    shadowed: tuple[str, ...] = ()
    #: The stored record's whole text, as read: what a write expects to replace.
    record_text: str | None = field(default=None, compare=False, repr=False)
    #: The rename that moved this file here (until its next write; see :class:`Moved`).
    moved: Moved | None = field(default=None, compare=False, repr=False)


def format_size(size: int) -> str:
    """Human-readable size as the SDK writes it (``0B``, ``512B``, ``1.5K``, ``2M``)."""
    if size == 0:
        return "0B"
    units = ["B", "K", "M", "G"]
    i = min((size.bit_length() - 1) // 10, len(units) - 1)
    value = size / (1024**i)
    return f"{int(value)}{units[i]}" if value == int(value) else f"{value:.1f}{units[i]}"


def _numbered(lines: Sequence[str], first: int) -> str:
    return "\n".join(
        f"{str(i + first).rjust(LINE_NUMBER_WIDTH)}\t{line}" for i, line in enumerate(lines)
    )


def _lines_keeping_cr(content: str) -> list[str]:
    """Split on LF only, without the empty tail a trailing newline leaves (as the SDK)."""
    lines = content.split("\n")
    if lines[-1] == "":
        lines.pop()
    return lines


class MemoryFiles:
    """The memory tool's file commands over a :class:`~contextos.memory.Memory`.

    Each command returns the text the model sees, or raises
    :class:`~contextos.agent.paths.MemoryFileError` with the error text.
    """

    def __init__(
        self, memory: Memory, *, user_id: str | None = None, agent_id: str | None = None
    ) -> None:
        self.scope = owner_scope(memory, user_id, agent_id)
        self.memory = memory

    # -- reading -------------------------------------------------------------------
    def files(self) -> list[MemoryFile]:
        """Every file in this scope, one per path, sorted by path."""
        by_path: dict[str, MemoryFile] = {}
        ids: set[str] = set()
        for r in oldest_first(list(owned_records(self.memory, self.scope, SOURCE))):
            path = _stored_path(r)
            # A record read twice (a store paging unevenly) is not a duplicate of itself:
            # its id among the shadowed ones purged the file at its next write.
            if path is None or r.id in ids:
                continue
            ids.add(r.id)
            if path in by_path:
                first = by_path[path]
                by_path[path] = replace(first, shadowed=(*first.shadowed, r.id))
                continue
            head, _, body = r.text.partition("\n")
            if head.removesuffix("\r") != path:  # CRLF sent back still ends the path line
                # Written without its path line (the memory's text set by PATCH
                # /v1/memories or MCP update_memory): all of it is the content, as for
                # a core block (core_memory._value_of); read after its first line, a
                # file updated to "buy oat milk" read as empty (a review, s57).
                body = r.text
            content = body + str(r.metadata.get("tail", ""))
            by_path[path] = MemoryFile(path, content, r.id, record_text=r.text, moved=Moved.of(r))
        return sorted(by_path.values(), key=lambda f: f.path)

    def _index(self) -> dict[str, MemoryFile]:
        return {f.path: f for f in self.files()}

    def read(self, path: str) -> str:
        """A file's exact content."""
        found = self._index().get(normalize(path))
        if found is None:
            raise MemoryFileError(f"The path {path} does not exist. Please provide a valid path.")
        return found.content

    def memory_id(self, path: str) -> str:
        """The id of the memory holding a file (for ``Memory.history``)."""
        found = self._index().get(normalize(path))
        if found is None:
            raise MemoryFileError(f"The path {path} does not exist. Please provide a valid path.")
        return found.memory_id

    # -- writing (one place builds a file's memory) --------------------------------
    @staticmethod
    def _record(
        path: str, content: str, moved: Moved | None = None
    ) -> tuple[str, dict[str, object]]:
        if normalize(path) != path:  # PathRefused (a MemoryFileError) when not a path at all
            raise MemoryFileError(f"Path {path} is not in normal form")
        if len(content) > MAX_FILE_CHARS:
            raise MemoryFileError(
                f"File {path} would be {len(content):,} characters; "
                f"a memory file holds at most {MAX_FILE_CHARS:,}"
            )
        if any(0xD800 <= ord(c) <= 0xDFFF for c in content):
            raise MemoryFileError(f"File {path} content is not valid UTF-8 (lone surrogates)")
        try:  # the store's own refusal, as the documented error (a ToolError for the SDK)
            refuse_nul(f"File {path} content", content)
        except ValueError as exc:
            raise MemoryFileError(str(exc)) from None
        body = content.rstrip()
        tail = content[len(body) :]
        meta: dict[str, object] = {"source": SOURCE, "path": path, "tail": tail}
        if moved is not None:
            meta[MOVED] = moved.as_metadata()
        if (stored := metadata_bytes(meta)) > MAX_METADATA_BYTES:
            # The trailing whitespace is kept in metadata (the text is stored stripped),
            # whose limit is in bytes of JSON ("\n" is two): a file within the size
            # above failed with the store's ValueError, not a tool error (a review).
            raise MemoryFileError(
                f"File {path} ends in {len(tail):,} characters of whitespace, kept in its "
                f"metadata: {stored:,} bytes of JSON there, where at most "
                f"{MAX_METADATA_BYTES:,} fit (a line break takes 2 bytes, U+3000 takes 3)"
            )
        return f"{path}\n{body}", meta

    def _put(self, path: str, content: str) -> None:
        text, meta = self._record(path, content)
        _renewed()
        # dedupe=False: an equal plain memory must not stand in for the file.
        self.memory.add(
            text, **self.scope.ids(), metadata=meta, memory_type="semantic", dedupe=False
        )

    def _write(
        self, found: MemoryFile, content: str, path: str | None = None, moved: Moved | None = None
    ) -> None:
        """Write ``content`` over ``found`` (at ``path`` for a move, marked ``moved``),
        only while it is still as read: the files lock keeps other commands out, not
        ``Memory.update`` (the inspector's Save, ``PATCH /v1/memories``, MCP
        ``update_memory``), whose acknowledged edit was written over (a review: 42 of
        100)."""
        text, meta = self._record(path or found.path, content, moved)
        _renewed()
        try:
            self.memory.update(
                found.memory_id, text, metadata=meta, expected_text=found.record_text
            )
        except Conflict:
            raise MemoryFileError(
                f"File {found.path} was changed by another writer while this command ran; "
                "nothing was written to it. View it again, then retry."
            ) from None
        self._remove(found.shadowed)

    def _remove(self, ids: Sequence[str]) -> None:
        """Delete and purge: a file the model deleted (or an old copy of one) leaves no
        text behind in its own records (their history, the search index, the database
        file). Why: the tool gives the model no other way to erase what it wrote
        ("Successfully deleted" must mean the file is gone); the history keeps that the
        file existed and was deleted. Not reached: copies outside these records, the
        model's calls that carried the text as a session logged them (a loop on a
        wrapped client: ``turns.tool_calls``), which stay until ``Memory.forget`` of
        that session or user (docs/agent.md, section 1)."""
        for memory_id in ids:
            _renewed()
            self.memory.delete(memory_id, purge=True)

    def _locked(self) -> AbstractContextManager[None]:
        """The owner's files lock: a command reads the files, decides and writes, and
        two commands (threads, processes) must not both act on the same old state
        (two creates of one path, two edits of one file)."""
        return owner_lock(self.memory.store, self.scope, "files")

    # -- commands --------------------------------------------------------------------
    def view(self, path: str, view_range: Sequence[int] | None = None) -> str:
        """A directory listing (2 levels, sizes) or a file with line numbers."""
        norm = normalize(path)
        index = self._index()
        if norm in index:
            return self._view_file(path, index[norm].content, view_range)
        inside = [f for f in index.values() if is_under(f.path, norm)]
        if norm != ROOT and not inside:
            raise MemoryFileError(f"The path {path} does not exist. Please provide a valid path.")
        return self._listing(path, norm, inside)

    @staticmethod
    def _listing(shown: str, norm: str, inside: Sequence[MemoryFile]) -> str:
        sizes: dict[str, int] = {}  # relative path ("a", "a/b.md") -> bytes
        for f in inside:
            rel = f.path[len(norm) + 1 :]
            if hidden(rel):
                continue
            size = len(f.content.encode("utf-8"))
            parts = rel.split("/")
            for depth in range(1, min(len(parts), 2) + 1):
                key = "/".join(parts[:depth]) + ("/" if depth < len(parts) else "")
                sizes[key] = sizes.get(key, 0) + size
        base = shown.rstrip("/") or ROOT
        total = sum(
            len(f.content.encode("utf-8")) for f in inside if not hidden(f.path[len(norm) + 1 :])
        )
        lines = [f"{format_size(total)}\t{base}"]
        lines += [
            f"{format_size(sizes[k])}\t{base}/{k}"
            for k in sorted(sizes, key=lambda k: k.rstrip("/").split("/"))
        ]
        header = (
            f"Here're the files and directories up to 2 levels deep in {base}, "
            "excluding hidden items:"
        )
        return header + "\n" + "\n".join(lines)

    @staticmethod
    def _view_file(path: str, content: str, view_range: Sequence[int] | None) -> str:
        lines = content.split("\n")
        if len(lines) > MAX_LINES:
            raise MemoryFileError(f"File {path} exceeds maximum line limit of 999,999 lines.")
        first = 1
        if view_range is not None:
            start, end = _check_range(view_range, len(lines))
            lines, first = lines[start - 1 : len(lines) if end == -1 else end], start
        return f"Here's the content of {path} with line numbers:\n" + _numbered(lines, first)

    def create(self, path: str, file_text: str) -> str:
        """A new file; refused when the path (or a parent of it) exists."""
        norm = normalize(path)
        _need_str("file_text", file_text)
        if norm == ROOT:
            raise MemoryFileError("Cannot create a file at the /memories directory itself")
        with self._locked():
            return self._create(path, norm, file_text)

    def _create(self, path: str, norm: str, file_text: str) -> str:
        index = self._index()
        if norm in index or any(is_under(p, norm) for p in index):
            raise MemoryFileError(f"File {path} already exists")
        self._check_parents(norm, index, path)
        self._put(norm, file_text)
        return f"File created successfully at: {path}"

    @staticmethod
    def _check_parents(norm: str, index: dict[str, MemoryFile], shown: str) -> None:
        up = parent(norm)
        while up != ROOT:
            if up in index:
                raise MemoryFileError(f"Cannot create {shown}: {up} is a file, not a directory")
            up = parent(up)

    def _file(self, path: str) -> MemoryFile:
        """The file at ``path``, with the SDK's errors for a missing path or a directory."""
        norm = normalize(path)
        index = self._index()
        if norm in index:
            return index[norm]
        if norm == ROOT or any(is_under(p, norm) for p in index):
            raise MemoryFileError(f"The path {path} is not a file.")
        raise MemoryFileError(f"The path {path} does not exist. Please provide a valid path.")

    def str_replace(self, path: str, old_str: str, new_str: str) -> str:
        """Replace the one occurrence of ``old_str``; refuse zero or several."""
        _need_str("old_str", old_str)
        _need_str("new_str", new_str)
        with self._locked():
            return self._str_replace(self._file(path), path, old_str, new_str)

    def _str_replace(self, found: MemoryFile, path: str, old_str: str, new_str: str) -> str:
        content = found.content
        count = content.count(old_str) if old_str else 0
        if count == 0:
            raise MemoryFileError(
                f"No replacement was performed, old_str `{_echoed(old_str)}` "
                f"did not appear verbatim in {path}."
            )
        if count > 1:
            raise MemoryFileError(
                f"No replacement was performed. Multiple occurrences of old_str "
                f"`{_echoed(old_str)}` "
                f"in lines: {_match_lines(content, old_str)}. Please ensure it is unique"
            )
        changed = content[: content.find(old_str)].count("\n")
        new_content = content.replace(old_str, new_str)
        self._write(found, new_content)
        new_lines = new_content.split("\n")
        lo, hi = max(0, changed - 2), min(len(new_lines), changed + 3)
        return (
            "The memory file has been edited. Here is the snippet showing the change "
            "(with line numbers):\n" + _numbered(new_lines[lo:hi], lo + 1)
        )

    def insert(self, path: str, insert_line: int, insert_text: str) -> str:
        """Insert ``insert_text`` after line ``insert_line`` (0: at the top)."""
        _need_str("insert_text", insert_text)
        with self._locked():
            return self._insert(self._file(path), path, insert_line, insert_text)

    def _insert(self, found: MemoryFile, path: str, insert_line: int, insert_text: str) -> str:
        lines = _lines_keeping_cr(found.content)
        if (
            not isinstance(insert_line, int)
            or isinstance(insert_line, bool)
            or not 0 <= insert_line <= len(lines)
        ):
            raise MemoryFileError(
                f"Invalid `insert_line` parameter: {insert_line}. "
                f"It should be within the range [0, {len(lines)}]."
            )
        lines.insert(insert_line, insert_text.rstrip("\n"))
        new_content = "\n".join(lines)
        self._write(found, new_content if new_content.endswith("\n") else new_content + "\n")
        return f"The file {path} has been edited."

    def delete(self, path: str) -> str:
        """Delete a file, or a directory with everything in it."""
        norm = normalize(path)
        if norm == ROOT:
            raise MemoryFileError("Cannot delete the /memories directory itself")
        with self._locked():
            doomed = [f for p, f in self._index().items() if p == norm or is_under(p, norm)]
            if not doomed:
                raise MemoryFileError(f"The path {path} does not exist")
            self._remove([i for f in doomed for i in (f.memory_id, *f.shadowed)])
        return f"Successfully deleted {path}"

    def rename(self, old_path: str, new_path: str) -> str:
        """Move a file or a directory (with everything in it) to a path that does not exist.

        Each file moves in its own write: a rename stopped partway (a killed process, a
        store error) leaves the directory split, and the same rename asked again
        finishes it (the destination then holds only files it moved there)."""
        old, new = normalize(old_path), normalize(new_path)
        if old == ROOT:
            raise MemoryFileError("Cannot rename the /memories directory itself")
        with self._locked():
            return self._rename(old_path, new_path, old, new)

    def _rename(self, old_path: str, new_path: str, old: str, new: str) -> str:
        index = self._index()
        moving = [f for p, f in index.items() if p == old or is_under(p, old)]
        there = [f for p, f in index.items() if p == new or is_under(p, new)]
        move = _unfinished_move(there, moving, old, new)
        if new == ROOT or (there and move is None):
            raise MemoryFileError(f"The destination {new_path} already exists")
        if not moving:
            raise MemoryFileError(f"The path {old_path} does not exist")
        if is_under(new, old):
            raise MemoryFileError(f"Cannot move {old_path} into itself ({new_path})")
        self._check_parents(new, index, new_path)
        # Every moved file's new path is checked before anything is written: one that
        # broke the path rules (too deep, too long) was stored, then no longer read as
        # a file (not viewable, renamable or deletable), its text left in the store.
        # Each file is marked with where it was and which rename moved it: the same
        # rename asked again finishes a move stopped partway (see Moved).
        move = move or uuid.uuid4().hex
        members = _members([*there, *moving])
        moves = []
        for f in moving:
            mark = Moved(f.path, move, len(there) + len(moving), members)
            try:
                target = normalize(new + f.path[len(old) :])
                self._record(target, f.content, mark)  # its limits, before any write
            except MemoryFileError as exc:
                raise MemoryFileError(f"Cannot rename {old_path} to {new_path}: {exc}") from None
            moves.append((f, target, mark))
        for f, target, mark in moves:  # one file a write (see Moved)
            self._write(f, f.content, target, mark)
        return f"Successfully renamed {old_path} to {new_path}"

    def clear(self) -> str:
        """Delete every file of this scope."""
        with self._locked():
            self._remove([i for f in self.files() for i in (f.memory_id, *f.shadowed)])
        return "All memory cleared"


def _unfinished_move(
    there: Sequence[MemoryFile], moving: Sequence[MemoryFile], old: str, new: str
) -> str | None:
    """The id of the rename of ``old`` to ``new`` that stopped partway, leaving
    ``there`` at the destination and ``moving`` at the source; None when ``there``
    is not such a remainder. Every file there must carry one rename's mark, name
    its place under ``old``, and not have been written since; with the files left
    at the source they must be exactly the files that rename moves (a file made
    under ``old`` after it, one deleted from either side, or one the rename never
    moved, and the destination exists)."""
    marks = [f.moved for f in there]
    first = marks[0] if marks else None
    if first is None or any(
        m is None or (m.move, m.files, m.members) != (first.move, first.files, first.members)
        for m in marks
    ):
        return None
    if any(f.moved and f.moved.source != old + f.path[len(new) :] for f in there):
        return None
    whole = len(there) + len(moving) == first.files
    return first.move if whole and first.members == _members([*there, *moving]) else None


def _stored_path(record: MemoryRecord) -> str | None:
    """The normalised path a file's memory names, or None when it names none.

    Why: the tag is plain metadata that anyone who may add memories can forge; a
    record without a valid path is not a file, and must not break every command.
    """
    path = record.metadata.get("path")
    try:
        return path if isinstance(path, str) and normalize(path) == path else None
    except MemoryFileError:
        return None


def _need_str(name: str, value: object) -> None:
    if not isinstance(value, str):
        raise MemoryFileError(f"`{name}` must be a string, got: {type(value).__name__}")


def _check_range(view_range: Sequence[int], n_lines: int) -> tuple[int, int]:
    """(start, end) of a valid ``view_range``; the text editor tool's errors otherwise."""
    if (
        isinstance(view_range, str)
        or not isinstance(view_range, Sequence)
        or len(view_range) != 2
        or not all(isinstance(x, int) and not isinstance(x, bool) for x in view_range)
    ):
        raise MemoryFileError("Invalid `view_range`. It should be a list of two integers.")
    start, end = view_range
    if not 1 <= start <= n_lines:
        raise MemoryFileError(
            f"Invalid `view_range`: {list(view_range)}. Its first element `{start}` should be "
            f"within the range of lines of the file: [1, {n_lines}]"
        )
    if end != -1 and not start <= end <= n_lines:
        raise MemoryFileError(
            f"Invalid `view_range`: {list(view_range)}. Its second element `{end}` should be "
            f"-1 or within [{start}, {n_lines}]"
        )
    return start, end


__all__ = ["MAX_FILE_CHARS", "MemoryFile", "MemoryFiles", "format_size"]
