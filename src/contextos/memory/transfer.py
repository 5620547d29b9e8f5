"""Export and import: a store's memories as JSON Lines, and back, losslessly.

Why: the only way out was ``contextos list --json``, and the only way back ``add``, which
refuses a session memory's ``seq`` and an assistant turn's ``role``, adds a ``role`` to an
inferred fact (so a re-import stored it twice), cannot close a superseded fact and draws
new ids and times (a review, s57). A backup, a restore and a move from SQLite to
PostgreSQL need every record back as it was.

The format (version :data:`FORMAT_VERSION`): a first line, the header
``{"format": "contextos-export", "version": 1, "tenant": ..., "scope": {...},
"exported_at": ...}``, then one memory a line: :meth:`MemoryRecord.to_dict`'s fields
and ``context`` (the indexed text beside it: a speaker, the turn a reply answers).
The last line, ``{"end": true, "count": N}`` (N: the memory lines), tells a whole file
from one cut short (an export to stdout killed midway looked complete: review s57).
Closed (superseded or ended) memories are included. Not exported: vectors (the
embedding worker makes them again on import, with whatever model the target uses), the
change history (an import logs one ADD per memory), the token count (a cache) and the
session logs (turns are not memories: ``Memory.sessions`` and ``Session`` read them).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from ..engine.message_text import check_unicode
from ..errors import DuplicateId
from ..store.pages import pages_after
from ..store.records import refuse_nul, refuse_nul_in_scope
from ..times import iso, utc
from ..types import MEMORY_TYPES, Filter, MemoryRecord, Scope, content_hash, scope_id
from .ingest import MAX_TEXT_CHARS, check_metadata

if TYPE_CHECKING:
    from ..store.base import Store

#: What the header's ``format`` says.
FORMAT = "contextos-export"
#: The version of the format this library writes and reads.
FORMAT_VERSION = 1
#: Records read from the store at once while exporting, and written in one
#: transaction while importing.
BATCH = 500
#: Bytes of text and metadata an export reads at once (a page of large memories).
PAGE_BYTES = 8 * 1024 * 1024
#: The most records an export reads a page, whatever its ``batch_size``. Why: a page's
#: rows are first read as keys and sizes, ``batch_size`` of them, before
#: :data:`PAGE_BYTES` cuts them: ``batch_size=10_000_000`` read every row's key at once
#: (a review).
MAX_PAGE_RECORDS = 10_000
#: The longest ``context`` an import takes (characters). What ``add`` writes there is
#: a speaker and an image caption (within the metadata's 64 KiB), the answered turn's
#: speaker (as much) and 300 characters of its text: 200,000 is past all of it. Why: an
#: import took a 5,000,000-character context, which PostgreSQL then refused with the
#: whole batch (a review).
MAX_CONTEXT_CHARS = 200_000
#: How far apart a stored time and a file's may be and still count as the same time
#: (``already``, not a conflict). Why: SQLite keeps a time as epoch seconds in a double,
#: exact to the microsecond from about 1685 to 2255 and off by up to 15 µs elsewhere in
#: years 1 to 9999; a second import of a file holding such times reported each as a
#: conflict (a review).
TIME_SLACK = timedelta(microseconds=100)
#: The fields of a record line, all of them written by :func:`record_line`: the
#: record's JSON shape (``MemoryRecord.to_dict``, one shape for every surface) and its
#: ``context``, which that shape leaves out.
RECORD_KEYS = frozenset({*MemoryRecord("", "").to_dict(), "context"})
_TIMES = ("created_at", "updated_at", "event_time", "valid_from", "valid_to")
#: The most conflicting ids an :class:`ImportReport` lists (it counts them all).
CONFLICTS_LISTED = 100
#: The metadata ``source`` values that make a record an agent's core memory block or
#: memory-tool file, each with the key that names it (``agent.core_memory.SOURCE`` and
#: ``agent.files.SOURCE``; the agent reads the oldest record of a label or path).
AGENT_KEYS = {"core_memory": "label", "memory_tool": "path"}


@dataclass
class ImportReport:
    """What :meth:`Memory.import_records` did: ``added`` records stored, ``already``
    found stored exactly as the file has them (a second import of one file: all of
    them), ``conflicts`` the records whose id is stored with other content (changed
    since the export, or another memory's id) or, on SQLite, in another tenant, and
    the agent's blocks and files whose label or path the scope already holds live
    (:func:`_beside_live`); those are left as stored, never overwritten, and
    those not stored. ``conflict_ids`` lists the first
    :data:`CONFLICTS_LISTED` of them."""

    added: int = 0
    already: int = 0
    conflicts: int = 0
    conflict_ids: list[str] = field(default_factory=list)

    @property
    def records(self) -> int:
        """The records read."""
        return self.added + self.already + self.conflicts

    def to_dict(self) -> dict[str, Any]:
        """The report as plain JSON data (the CLI's ``--json``)."""
        return {
            "added": self.added,
            "already": self.already,
            "conflicts": self.conflicts,
            "conflict_ids": list(self.conflict_ids),
        }


class ImportLineError(ValueError):
    """A line (or item) of an import that is no record of this format; ``line`` is its
    number (1: the first). The batches before its own are stored (``report`` counts
    them): fix the line and import the file again, which skips what is stored."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line
        self.report = ImportReport()


class ImportTruncatedError(ValueError):
    """The file began with a header but has no end line, or its end line counts other
    records than the file holds: it was cut short. What it held is stored (``report``
    counts it); importing the whole file again finishes the import."""

    def __init__(self, message: str, report: ImportReport) -> None:
        super().__init__(message)
        self.report = report


class ImportTenantError(ImportLineError):
    """The header says the file is an export of another tenant (``file_tenant``) than the
    one importing it (``tenant``): refused before anything is stored. Why: a tenant's
    backup restored without ``--tenant`` landed in tenant "default", readable by its keys
    (review s57). To copy an export into another tenant on purpose, leave out its header
    line."""

    def __init__(self, line: int, file_tenant: str, tenant: str) -> None:
        super().__init__(
            line,
            f"an export of tenant {file_tenant!r}, imported into tenant {tenant!r}: import "
            f"it with tenant {file_tenant!r} (to copy it into {tenant!r}, leave out the "
            "header line)",
        )
        self.file_tenant = file_tenant
        self.tenant = tenant


def header(tenant: str, scope: Scope, now: datetime) -> dict[str, Any]:
    """The first line of an export of ``scope`` (its ids None: the whole tenant)."""
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "tenant": tenant,
        "scope": {
            "user_id": scope.user_id,
            "agent_id": scope.agent_id,
            "session_id": scope.session_id,
        },
        "exported_at": iso(now),
    }


def record_line(record: MemoryRecord) -> dict[str, Any]:
    """A record as a line of an export: everything needed to store it again as it is."""
    return {**record.to_dict(), "context": record.context}


def export_records(
    store: Store, scope: Scope, now: datetime, batch_size: int | None = None
) -> Iterator[dict[str, Any]]:
    """The header, then every record of ``scope`` (any validity), oldest first, then the
    end line; the records read a page at a time, all in one snapshot
    (``Store.list_snapshot``): the store as it was at one moment, whatever is written,
    updated or deleted during the export (each page read on its own restored a fact
    superseded meanwhile as current: review s57). A store without ``list_snapshot`` (one
    written to the protocol of before) is read a page at a time by ``list_after``, each
    page on its own: not one snapshot. At most :data:`MAX_PAGE_RECORDS` records a page."""
    yield header(scope.tenant, scope, now)
    flt = Filter(scope=scope, include_invalid=True)
    count = 0
    pages = _pages(store, flt, min(batch_size or BATCH, MAX_PAGE_RECORDS))
    try:
        for rows in pages:
            for record, _key in rows:
                count += 1
                yield record_line(record)
    finally:
        close = getattr(pages, "close", None)
        if close is not None:
            close()  # the snapshot ends with the export, read whole or not
    yield end_line(count)


def _pages(store: Store, flt: Filter, limit: int) -> Iterator[list[tuple[MemoryRecord, str]]]:
    """The pages of an export: ``Store.list_snapshot``'s, or, from a store written before
    it existed (or a subclass of the protocol that left it out: None), ``list_after``'s
    (an export of such a store raised AttributeError: a review)."""
    snapshot = getattr(store, "list_snapshot", None)
    pages: Iterator[list[tuple[MemoryRecord, str]]] | None = (
        None if snapshot is None else snapshot(flt, limit=limit, max_bytes=PAGE_BYTES)
    )
    if pages is not None:
        return pages
    return pages_after(
        lambda after: store.list_after(
            flt, after=after, limit=limit, max_bytes=PAGE_BYTES, oldest_first=True
        )
    )


def end_line(count: int) -> dict[str, Any]:
    """The last line of an export of ``count`` memories."""
    return {"end": True, "count": count}


def import_records(
    store: Store,
    tenant: str,
    items: Iterable[Mapping[str, Any] | str | bytes],
    *,
    counted: Callable[[MemoryRecord], MemoryRecord],
    stored: Callable[[ImportReport], None],
    batch_size: int | None = None,
) -> ImportReport:
    """Store each record of ``items`` (parsed lines of an export, or the lines
    themselves) in ``tenant`` as it was, a batch of ``batch_size`` a transaction
    (``Store.restore``), each record ``counted`` first; ``stored`` is called after each
    batch commits. See :meth:`Memory.import_records`."""
    report = ImportReport()
    batch: dict[str, tuple[int, MemoryRecord]] = {}  # by id: its line, the record

    def flush() -> None:
        try:
            records = [r for _, r in batch.values()]
            with _agents_locked(store, records):  # the check and the restore as one step
                taken = _beside_live(store, records)
                for record_id in taken:
                    _conflict(report, record_id)
                kept = [(n, counted(r)) for n, r in batch.values() if r.id not in taken]
                if kept:
                    _restore(store, kept, report)
        finally:
            batch.clear()
        stored(report)

    file = _Framing(tenant)
    try:
        for number, item in enumerate(items, start=1):
            data = _parsed(number, item)
            record = None if data is None else file.record(number, data)
            if record is None:
                continue
            if record.id in batch:  # repeated in the file: the first one stands
                _tally(report, batch[record.id][1], record)
                continue
            batch[record.id] = (number, record)
            if len(batch) >= (batch_size or BATCH):
                flush()
        if batch:
            flush()
        file.finish()
    except (ImportLineError, ImportTruncatedError) as exc:
        exc.report = report
        if batch:  # what came before the bad line is stored: a rerun goes on from it
            flush()  # (a line of it the store refuses, before this one, is said first)
        raise
    return report


class _Framing:
    """The header and end lines of a file being imported, and the record lines between."""

    def __init__(self, tenant: str) -> None:
        self.tenant = tenant
        self.headed = False  # a header was read: the file must end with its end line
        self.ended: int | None = None  # the number of the end line read
        self.count = 0  # the record lines since the header

    def record(self, number: int, data: Mapping[str, Any]) -> MemoryRecord | None:
        """The record of line ``number`` (None: a header or an end line, checked)."""
        if "format" in data or "version" in data:
            # A section cut short, then another export (``cat cut.jsonl other.jsonl``):
            # the second header reset the count and the first's end line went unmissed.
            self.finish(number)
            _check_header(number, data, self.tenant)
            self.headed, self.ended, self.count = True, None, 0
            return None
        if "end" in data:
            _check_end(number, data, self.count)
            self.ended = number
            return None
        if self.ended is not None:
            raise ImportLineError(number, f"a record after the end line (line {self.ended})")
        record = parse_record(number, data, self.tenant)
        self.count += 1
        return record

    def finish(self, header: int | None = None) -> None:
        """:class:`ImportTruncatedError` unless the section read since a header ended with
        its end line: at the end of the file, or at the next header (line ``header``)."""
        if not self.headed or self.ended is not None:
            return
        where = f"line {header}: a header, but the export before it" if header else "the file"
        raise ImportTruncatedError(
            f"{where} has no end line: it was cut short after {self.count:,} record(s)",
            ImportReport(),
        )


def _check_end(number: int, data: Mapping[str, Any], count: int) -> None:
    """The end line: ``{"end": true, "count": N}``, N the record lines before it."""
    n = data.get("count")
    if set(data) != {"end", "count"} or data["end"] is not True or type(n) is not int:
        raise ImportLineError(number, 'an end line is {"end": true, "count": N}')
    if n != count:
        raise ImportTruncatedError(
            f"line {number}: the end line counts {n:,} record(s), the file holds {count:,}:"
            " lines are missing or added",
            ImportReport(),
        )


def _parsed(number: int, item: Mapping[str, Any] | str | bytes) -> Mapping[str, Any] | None:
    """``item`` as JSON data (None: a blank line)."""
    if isinstance(item, Mapping):
        return item
    if isinstance(item, bytes):
        try:
            item = item.decode("utf-8")
        except UnicodeDecodeError as exc:
            why = f"not UTF-8 text ({exc.reason} at byte {exc.start})"
            raise ImportLineError(number, why) from None
    if not isinstance(item, str):
        raise ImportLineError(number, f"expected a JSON object, got {type(item).__name__}")
    if not item.strip():
        return None
    try:
        data = json.loads(item)
    except json.JSONDecodeError as exc:
        raise ImportLineError(number, f"not JSON: {exc.msg} (column {exc.colno})") from None
    if not isinstance(data, dict):
        raise ImportLineError(number, f"expected a JSON object, got {type(data).__name__}")
    return data


def _check_header(number: int, data: Mapping[str, Any], tenant: str) -> None:
    if data.get("format") != FORMAT:
        raise ImportLineError(number, f"not a contextos export (format {data.get('format')!r})")
    version = data.get("version")
    if type(version) is not int or version != FORMAT_VERSION:  # not 1.0, not true
        raise ImportLineError(
            number,
            f"export format version {version!r}; this contextos reads version {FORMAT_VERSION}"
            " (a newer contextos wrote it: upgrade to import it)",
        )
    file_tenant = data.get("tenant")
    if file_tenant is not None and file_tenant != tenant:
        raise ImportTenantError(number, str(file_tenant), tenant)


def parse_record(number: int, data: Mapping[str, Any], tenant: str) -> MemoryRecord:
    """The record of one line of an export, in ``tenant``; :class:`ImportLineError` naming
    the line and the field when it is none."""
    unknown = sorted(set(data) - RECORD_KEYS)
    if unknown:
        raise ImportLineError(number, f"unknown field(s) {', '.join(map(repr, unknown))}")
    for key in ("id", "text", "created_at"):
        if data.get(key) is None:
            raise ImportLineError(number, f"{key!r} is missing")
    try:
        kind, metadata, provenance = _checked_fields(data)
        times = {key: _time(key, data.get(key)) for key in _TIMES}
        scope = Scope(
            tenant=tenant,
            user_id=data.get("user_id"),
            agent_id=data.get("agent_id"),
            session_id=data.get("session_id"),
        )
        record = MemoryRecord(
            id=data["id"],
            text=data["text"],
            scope=scope,
            memory_type=kind,
            metadata=metadata,
            provenance=tuple(provenance),
            context=data.get("context", ""),
            hash=content_hash(data["text"]),
            created_at=times["created_at"],
            updated_at=times["updated_at"] or times["created_at"],  # as a store writes it
            event_time=times["event_time"],
            valid_from=times["valid_from"],
            valid_to=times["valid_to"],
        )
        if not scope.is_scoped():
            raise ValueError("a memory needs a user_id, agent_id or session_id")
        refuse_nul_in_scope(scope)
        for what in ("id", "text", "context", "metadata", "provenance"):
            refuse_nul(what, getattr(record, what))
        _check_as_add(record)
    except (TypeError, ValueError) as exc:
        raise ImportLineError(number, str(exc)) from None
    return record


def _check_as_add(record: MemoryRecord) -> None:
    """Refuse what ``add`` refuses of a memory (ValueError or TypeError naming it): an
    id over the scope ids' 256 characters or with a lone surrogate (``scope_id``: the
    HTTP API could not get or delete it), a blank text or one over
    :data:`~contextos.memory.ingest.MAX_TEXT_CHARS` (``add`` stores a longer one in
    pieces), metadata over its size, depth or 64-bit integers (``check_metadata``),
    and provenance that is not valid Unicode (the texts are checked as they are read:
    ``_checked_fields``). Why: an import stored all of these as given,
    and the other surfaces could then not read them back (a review)."""
    scope_id(record.id, "id")
    if not record.text.strip():
        raise ValueError("'text' is blank")
    if len(record.text) > MAX_TEXT_CHARS:
        raise ValueError(f"'text' is {len(record.text):,} characters: at most {MAX_TEXT_CHARS:,}")
    if len(record.context) > MAX_CONTEXT_CHARS:
        raise ValueError(
            f"'context' is {len(record.context):,} characters: at most {MAX_CONTEXT_CHARS:,}"
        )
    check_metadata(record.metadata)  # as add and update count it (ingest.LIBRARY_KEYS)
    check_unicode(list(record.provenance), "'provenance'")


def _checked_fields(data: Mapping[str, Any]) -> tuple[Any, dict[str, Any], list[str]]:
    """The type, metadata and provenance of a record line, its strings checked
    (ValueError naming the field)."""
    for key in ("id", "text", "context"):
        if not isinstance(data.get(key, ""), str):
            raise ValueError(f"{key!r} must be a string")
        check_unicode(data.get(key, ""), repr(key))  # before its hash: no raw codec error
    if not data["id"].strip():
        raise ValueError("'id' is blank")
    kind = data.get("memory_type", "episodic")
    if kind not in MEMORY_TYPES:
        raise ValueError(f"'memory_type' must be one of {MEMORY_TYPES}, not {kind!r}")
    metadata = data.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise ValueError("'metadata' must be a JSON object")
    _check_finite(metadata)
    provenance = data.get("provenance") or []
    if not isinstance(provenance, list) or not all(isinstance(p, str) for p in provenance):
        raise ValueError("'provenance' must be a list of strings")
    return kind, metadata, provenance


def _time(key: str, value: object) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{key!r} must be an ISO-8601 string or null")
    return utc(value, key)


def _check_finite(value: object) -> None:
    """Refuse NaN and infinities (Python's json reads them; no store keeps them)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"metadata holds {value}, which no store keeps")
    if isinstance(value, dict):
        for v in value.values():
            _check_finite(v)
    elif isinstance(value, list):
        for v in value:
            _check_finite(v)


#: Tries of a batch that another writer inserted one of meanwhile (PostgreSQL).
_TRIES = 3


def _restore(store: Store, batch: list[tuple[int, MemoryRecord]], report: ImportReport) -> None:
    """Store ``batch`` (records with their line numbers) in one transaction
    (``Store.restore``) and count what it did. A batch the store refuses (a ValueError:
    a value PostgreSQL cannot keep) is stored a record at a time up to the one refused,
    whose line is named (:class:`ImportLineError`, ``.report`` counting what was
    stored). Why: the ValueError came without a line or a report, after three tries
    that could not mend it, the batch's good records rolled back (a review)."""
    records = [record for _, record in batch]
    try:
        found = _tried(store, records)
    except ValueError as exc:
        if len(batch) > 1:
            for one in batch:
                _restore(store, [one], report)
            return
        error = ImportLineError(batch[0][0], str(exc))
        error.report = report
        raise error from exc
    report.added += len(records) - len(found)
    for record in records:
        if record.id in found:
            _tally(report, found[record.id], record)


def _tried(store: Store, records: list[MemoryRecord]) -> dict[str, MemoryRecord | None]:
    """``store.restore(records)``, run again (:data:`_TRIES` in all) when another writer
    stored one of them meanwhile (:class:`~contextos.errors.DuplicateId`): it then
    finds that record stored. Only then: another ValueError would fail again."""
    for _ in range(_TRIES - 1):
        try:
            return store.restore(records)
        except DuplicateId:
            continue
    return store.restore(records)


def _tally(report: ImportReport, stored: MemoryRecord | None, record: MemoryRecord) -> None:
    """Count ``record``, whose id is stored already (``stored``; None: in another tenant)."""
    if stored is not None and _same(stored, record):
        report.already += 1
        return
    _conflict(report, record.id)


def _conflict(report: ImportReport, record_id: str) -> None:
    report.conflicts += 1
    if len(report.conflict_ids) < CONFLICTS_LISTED:
        report.conflict_ids.append(record_id)


def _beside_live(store: Store, records: list[MemoryRecord]) -> set[str]:
    """The ids of ``records`` that are a current core memory block or memory-tool file
    (:data:`AGENT_KEYS`) whose label or path another current record of exactly their
    scope already holds: in the store, or a record earlier in ``records`` that will be
    stored (its id not stored yet). Such a record is a conflict, not stored; one whose
    own id is stored goes on to the id check.

    Why: a backup restored into the live store brought back, under its old id and
    times, a block or file the agent had deleted and written again since; the agent
    reads the oldest record of a label or path, so it read the backup's, and its next
    edit of the file erased the live one (review s57). Reading the newest instead let
    anyone who may add a memory in the scope (``add`` over HTTP, MCP ``add_memory``)
    replace the agent's block or file by tagging it so (review s58).

    Why one listing per scope and source (:func:`_holders`), and a name held only by a
    record whose id is new: a query per record read every record of its user each time
    (the metadata filter has no index on SQLite: 29 s instead of about 6 for 50,000
    records and 1,000 files), and a record refused by its id held its name all the same,
    so a later one of that name was refused in one batch and stored in the next (the
    result depended on the batch size: review s58, round 2)."""
    now = datetime.now(UTC)
    tagged = [(r, tag) for r in records if (tag := _tag(r)) is not None and _current(r, now)]
    if not tagged:
        return set()
    stored = {r.id for r in store.get_many(tagged[0][0].scope.tenant, [r.id for r, _ in tagged])}
    listed: dict[tuple[tuple[str | None, ...], str], dict[str, set[str]]] = {}
    held: set[tuple[tuple[str | None, ...], str, str]] = set()
    out: set[str] = set()
    for record, (source, key, name) in tagged:
        exact = record.scope.within_tenant()
        if (exact, source) not in listed:
            listed[exact, source] = _holders(store, record.scope, source, key)
        holders = listed[exact, source].get(name, set())
        where = (exact, key, name)
        if record.id not in holders and (holders or where in held):
            out.add(record.id)
        elif record.id not in stored:
            held.add(where)
    return out


def _tag(record: MemoryRecord) -> tuple[str, str, str] | None:
    """A block's or file's ``(source, key, name)`` (``("core_memory", "label",
    "persona")``), or None for any other record."""
    source = record.metadata.get("source")
    key = AGENT_KEYS.get(source) if isinstance(source, str) else None
    name = record.metadata.get(key) if key else None
    if not isinstance(source, str) or key is None or not isinstance(name, str):
        return None
    return source, key, name


def _current(record: MemoryRecord, now: datetime) -> bool:
    """Whether ``record`` is valid at ``now`` (what a read without ``include_invalid``
    finds)."""
    return record.valid_to is None or record.valid_to > now


def _holders(store: Store, scope: Scope, source: str, key: str) -> dict[str, set[str]]:
    """The ids of the current records of exactly ``scope`` whose metadata ``source`` is
    ``source``, by their ``key`` (label or path): one walk, as ``agent.owner`` reads them."""
    flt = Filter(scope=scope, metadata={"source": source}, no_user=scope.user_id is None)
    exact = scope.within_tenant()
    by_name: dict[str, set[str]] = {}
    for rows in pages_after(
        lambda after: store.list_after(flt, after=after, limit=BATCH, max_bytes=PAGE_BYTES)
    ):
        for record, _key in rows:
            name = record.metadata.get(key)
            if record.scope.within_tenant() == exact and isinstance(name, str):
                by_name.setdefault(name, set()).add(record.id)
    return by_name


#: The owner lock (``agent.lock``) the agent takes to write each kind of record.
_LOCKS = {"core_memory": "core", "memory_tool": "files"}


@contextmanager
def _agents_locked(store: Store, records: list[MemoryRecord]) -> Iterator[None]:
    """Hold the agent's lock of each owner scope (a user and/or an agent, no session)
    and kind that a block or file of ``records`` is in, in one order (no two importers
    wait on each other).

    Why: the check for a live block or file ran outside the lock the agent writes
    under, so a file the agent created between the check and the restore stood beside
    the backup's older one, which the agent then read and edited, erasing its own
    (review s58, round 2). Ordinary records take no lock."""
    from ..agent.lock import owner_lock  # the agent package imports this one

    owners = sorted(
        {
            (r.scope.user_id or "", r.scope.agent_id or "", _LOCKS[tag[0]], r.scope)
            for r in records
            if r.scope.session_id is None and (tag := _tag(r)) is not None
        },
        key=lambda o: o[:3],
    )
    with ExitStack() as stack:
        for _user, _agent, kind, scope in owners:
            stack.enter_context(owner_lock(store, scope, kind))
        yield


def _same(stored: MemoryRecord, record: MemoryRecord) -> bool:
    """Whether ``stored`` is ``record`` as a store keeps it: every field equal, the times
    within :data:`TIME_SLACK` (SQLite's are doubles)."""
    if _untimed(stored) != _untimed(record):
        return False
    for key in _TIMES:
        x, y = getattr(stored, key), getattr(record, key)
        if (x is None) != (y is None) or (x is not None and abs(x - y) > TIME_SLACK):
            return False
    return True


def _untimed(record: MemoryRecord) -> dict[str, Any]:
    return {k: v for k, v in record_line(record).items() if k not in _TIMES}
