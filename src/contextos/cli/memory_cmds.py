"""Memory commands: add, search, get, list, update, delete, history, forget.

Each one parses its flags, calls one ``Memory`` method and prints the result
(``--json`` for machines). Tables show whole ids, so any id printed can be
pasted into ``get``/``update``/``delete``/``history``; memory text is printed
as plain text, never as markup.
"""

from __future__ import annotations

import functools
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

import click
from rich.table import Table

from ..errors import ScopeError, StoreError
from ..memory.ingest import check_inferred_type
from ..memory.render import local_time, render
from ..store.base import ErasedThenInterrupted, Erasure, ErasurePending
from ..store.pages import keyed_page
from ..types import (
    Filter,
    HistoryEvent,
    MemoryRecord,
    MemoryType,
    Scope,
    ScopeIds,
    check_metadata_filter_value,
    check_metadata_key,
    scope_ids,
)
from .common import (
    CliState,
    F,
    FiniteFloatRange,
    absent_db,
    console,
    err_console,
    group_options,
    held_interrupt,
    int_range,
    invalid_text,
    json_option,
    memory_id_param,
    open_memory,
    pass_state,
    plural,
    print_json,
    print_table,
    read_text_arg,
    scope_id_param,
    settle,
    tell_interrupted,
    wait_for_vectors,
)
from .text import SafeText

if TYPE_CHECKING:
    from ..memory import Memory

#: How much of each memory ``list``, ``search`` and ``history`` print (``get ID`` and
#: ``--json`` show it whole): a page of 100 memories of 100,000 characters printed
#: 193,705 lines (a review).
LISTED_CHARS = 500


def cut_text(text: str, whole: str) -> str:
    """``text`` up to :data:`LISTED_CHARS`, the rest counted, with what shows it whole
    (``whole``). One rule for every table of memories: ``list`` cut, but ``search`` and
    ``history`` printed a 100,000-character memory whole, 12,687 terminal lines for
    one history (a review)."""
    if len(text) <= LISTED_CHARS:
        return text
    return f"{text[:LISTED_CHARS]}… ({len(text) - LISTED_CHARS:,} more characters: {whole})"


def _list_page(
    memory: Memory, flt: Filter, *, after: str | None, offset: int, limit: int
) -> tuple[list[MemoryRecord], str | None]:
    """One page of ``flt``'s memories, newest first (after the key ``after``, from
    ``offset``), and the key of its last one when more follow (None: the end).

    Why keys: paged by ``--offset`` while an app kept adding for the user, an export
    saw 35 memories twice (a review); ``--after`` pages as the HTTP API's ``after``
    does (:func:`~contextos.store.pages.keyed_page`), so nothing is skipped or
    repeated."""
    try:
        return keyed_page(memory.store, flt, after=after, offset=offset, limit=limit)
    except ValueError as exc:
        if after is None:
            raise
        raise click.BadParameter(str(exc), param_hint="--after") from None


def _more_follow(key: str, next_offset: int, after: str | None) -> str:
    """The stderr line of a page that more follow, ``--json`` too (whose stdout stays
    a bare array): the option that shows the next page, and the key that pages
    without gaps or repeats while others write."""
    if after is not None:
        return f"more follow: --after {key} shows the next page"
    return (
        f"more follow: --offset {next_offset} shows the next page; --after {key} "
        "shows it with nothing skipped or repeated while others write"
    )


def _records_table(records: Sequence[MemoryRecord], title: str, *, cut: bool = False) -> Table:
    """The records as a table, each memory's text whole or, with ``cut``, as
    :func:`cut_text` cuts it."""
    table = Table(title=SafeText(title))
    table.add_column("id", no_wrap=True)  # whole: what `get ID` takes
    for col in ("type", "when", "memory"):
        table.add_column(col, overflow="fold")
    for r in records:
        # The memory's own date, as rendered beside it: in the zone its time was given in,
        # or its add was made in (it showed UTC's day beside the rendered local one: a review).
        said = r.event_time or r.created_at
        when = local_time(said, r.metadata) if said is not None else None
        text = render(r)
        if cut:
            text = cut_text(text, "get ID")
        table.add_row(
            SafeText(r.id),
            r.memory_type,
            when.date().isoformat() if when else "",
            SafeText(text),
        )
    return table


def _time_param(_ctx: click.Context, param: click.Parameter, value: str | None) -> datetime | None:
    """Callback of ``--expected-updated-at`` (and :func:`_local_time_param`): the value
    as a datetime, checked before anything is opened; a bad one is a usage error naming
    the option. Without a zone it is UTC, as ``get --json`` writes ``updated_at``."""
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not an ISO-8601 date or time", param=param
        ) from None


def _local_time_param(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> datetime | None:
    """Callback of ``--event-time``, ``--as-of``, ``--after`` and ``--before``: as
    :func:`_time_param`, but a time without a zone (a bare date) is this process's
    local time (``TZ``), as the tables show each memory's day.

    Why: the library reads it as UTC, so at +14 a memory the table dated 2026-12-08 was
    not found by ``search --after 2026-12-08 --before 2026-12-09`` (a review). Why
    ``--event-time`` too: read as UTC there and local here, a memory added on a bare
    date would fall outside a search of that same day west of UTC.

    A time the zone skips (a bare date whose midnight a clock change jumps over, as in
    Santiago or Havana) is the first instant after the jump: read with the offset
    before it, the date became 23:00 of the day before, stored and shown a day early
    (a review). A time the zone has twice is the first of them."""
    when = _time_param(ctx, param, value)
    if when is None or when.tzinfo is not None:
        return when
    try:
        local = when.astimezone()  # the offset the zone has at that time
        if local.replace(tzinfo=None) != when:  # skipped: the instant after the jump
            local = when.replace(fold=1).astimezone()
    except (OverflowError, ValueError, OSError):  # at years 1 or 9999: the library's check
        return when
    return local


def _parse_metadata(value: str | None) -> dict[str, Any] | None:
    if value is None:
        return None
    try:
        data = json.loads(value, parse_constant=_no_constant)
    except _NotJson as exc:
        raise click.BadParameter(str(exc), param_hint="--metadata") from None
    except ValueError as exc:
        raise click.BadParameter(f"not valid JSON: {exc}", param_hint="--metadata") from None
    except RecursionError:
        raise click.BadParameter("the JSON is nested too deeply", param_hint="--metadata") from None
    if not isinstance(data, dict):
        raise click.BadParameter("must be a JSON object", param_hint="--metadata")
    why = invalid_text(data)  # a "\\ud800" escape decodes to a lone surrogate
    if why is not None:
        raise click.BadParameter(why, param_hint="--metadata")
    return data


class _NotJson(ValueError):
    """A value Python's json accepts but JSON does not (NaN, Infinity)."""


def _no_constant(name: str) -> Any:
    # Stored metadata must round-trip: `get --json` would print invalid JSON.
    raise _NotJson(f"{name} is not valid JSON (metadata must round-trip)")


scope_options = [
    click.option("--user-id", "-u", callback=scope_id_param, help="Whose memory (user scope)."),
    click.option("--agent-id", "-a", callback=scope_id_param, help="Agent scope."),
    click.option("--session-id", "-s", callback=scope_id_param, help="Session scope."),
]


#: The flags that give a command its scope, as a usage error names them.
SCOPE_FLAGS = "--user-id/-u, --agent-id/-a or --session-id/-s"


def needs_scope(why: str) -> click.UsageError:
    """The usage error (exit 2, with the ``--help`` hint) of a command run without a
    scope: it names the flags, where the library's ScopeError names its keywords."""
    ctx = click.get_current_context()
    return click.UsageError(f"{ctx.info_name} needs a scope: {SCOPE_FLAGS} ({why})", ctx)


def _where_param(
    _ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> dict[str, Any]:
    """Callback of ``--where KEY=VALUE`` (repeatable): the metadata filter ``Filter``
    takes. VALUE is read as JSON when it is a JSON number, ``true`` or ``false``, or
    a quoted string, else as the text given (``--where mood=tired``). ``NaN``,
    ``Infinity`` and ``-Infinity`` are no JSON numbers, so they are text too (Python's
    ``json.loads`` reads them as floats, which no filter takes: exit 2, a review)."""
    out: dict[str, Any] = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param=param)
        if key in out:  # all must hold: a key cannot equal two values
            raise click.BadParameter(f"{key!r} is given twice", param=param)
        try:
            value = json.loads(raw, parse_constant=_no_json_constant)
        except ValueError:
            value = raw
        if not isinstance(value, (str, int, float, bool)):
            value = raw  # null, a list or an object: matched as the text given
        try:
            check_metadata_key(key)
            check_metadata_filter_value(key, value)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param=param) from None
        out[key] = value
    return out


def _no_json_constant(name: str) -> Any:
    """``json.loads``'s ``parse_constant``: refuse ``NaN``, ``Infinity`` and
    ``-Infinity``, which JSON does not have (a ValueError, so ``--where`` reads the
    value as text)."""
    raise ValueError(f"{name} is not JSON")


#: ``--where``, on ``search`` and ``list``.
where_option = click.option(
    "--where",
    multiple=True,
    callback=_where_param,
    metavar="KEY=VALUE",
    help="Only memories whose metadata KEY (dotted: a.b) equals VALUE (JSON number, "
    "true/false or text; a text that looks like a number or true/false is quoted as JSON: "
    "'zip=\"12345\"'). Repeatable: all must hold.",
)
#: ``--type``, on ``search`` and ``list``.
type_option = click.option(
    "--type",
    "memory_types",
    multiple=True,
    type=click.Choice(["episodic", "semantic", "procedural"]),
    help="Only memories of this type. Repeatable: any of them.",
)


def with_scope(func: F) -> F:
    """The scope flags (``-u``/``-a``/``-s``), handed to the command as one ``scope``
    argument, so each command passes the scope on as a whole and none can drop a part.

    The library's ScopeError for a missing scope becomes :func:`needs_scope`'s usage
    error: ``add`` and ``search`` without one exited 1 naming ``user_id`` (Python's
    names), where ``list`` exited 2 naming the flags."""

    @functools.wraps(func)
    def command(
        *args: Any,
        user_id: str | None,
        agent_id: str | None,
        session_id: str | None,
        **kwargs: Any,
    ) -> Any:
        scope = scope_ids(user_id, agent_id, session_id)
        try:
            return func(*args, scope=scope, **kwargs)
        except ScopeError:
            if any(scope.values()):
                raise
            raise needs_scope("every memory belongs to a user, an agent or a session") from None

    for option in reversed(scope_options):
        command = option(command)
    return cast(F, command)


def one_memory(*options: Callable[[Any], Any]) -> Callable[[F], F]:
    """The flags of a command on one memory: ``MEMORY_ID`` (any id a table printed),
    then ``options``, then ``--db``, ``--tenant`` and ``--json``; the command gets the
    CLI state first."""

    def apply(func: F) -> F:
        command: Any = pass_state(func)
        memory_id = click.argument("memory_id", callback=memory_id_param)
        for decorate in reversed((memory_id, *options, group_options(), json_option)):
            command = decorate(command)
        return cast(F, command)

    return apply


def _print_added(
    records: Sequence[MemoryRecord], started: datetime, *, infer: bool, as_json: bool
) -> None:
    """What ``add`` stored: each id, "already stored" for one it gave back (a dedupe)."""
    if as_json:
        print_json([r.to_dict() for r in records])
        return
    if not records:
        console.print("nothing new to remember (no facts found, or all already stored)")
    for r in records:
        # A guess from times: Memory.add does not say which records it wrote and which
        # it gave back, so a memory another process stored after this one started
        # reads as "added" (parallel identical adds all say so). A true verdict needs
        # the library to report which records this add wrote.
        old = r.created_at is not None and r.created_at < started
        verb = "already stored" if old else "added"
        console.print(SafeText(f"{verb} {r.id}"), highlight=False)
        if infer:
            console.print(SafeText(f"  {render(r)}"), highlight=False)


def _check_add(
    state: CliState,
    message: dict[str, str],
    scope: ScopeIds,
    metadata: dict[str, Any] | None,
    event_time: datetime | None,
    memory_type: str | None,
    *,
    infer: bool,
) -> None:
    """``add``'s checks of its scope, text and metadata before the database is opened:
    ``Memory.add``'s own (:func:`~contextos.memory.ingest.check_add`, which ``add``
    runs again), a verbatim add's records built once too. Why: a usage error (no scope,
    an empty text, bad metadata) still created the database file, though a mistyped
    ``--db`` must leave nothing behind (a review)."""
    from ..memory.ingest import check_add

    check_add(
        Scope(tenant=state.settings.tenant, **scope),
        message,
        metadata=metadata,
        event_time=event_time,
        memory_type=memory_type,
        infer=infer,
        build=True,
    )


def register(cli: click.Group, bench: click.Group) -> None:  # noqa: C901 - one small function per command
    @cli.command()
    @click.argument("text")
    @with_scope
    @click.option("--metadata", help="JSON object kept with the memory.")
    @click.option(
        "--event-time",
        callback=_local_time_param,
        help="When it was said or happened (ISO-8601; without a zone, local time).",
    )
    @click.option(
        "--type",
        "memory_type",
        default=None,
        type=click.Choice(["episodic", "semantic", "procedural"]),
        help="The memory's type (default: episodic); not with --infer, whose extractor "
        "types each fact.",
    )
    @click.option("--speaker", help="Who said it.")
    @click.option(
        "--infer",
        is_flag=True,
        help="Store the facts extracted from TEXT (reconciled with stored ones), "
        "not TEXT verbatim.",
    )
    @click.option(
        "--no-dedupe",
        "no_dedupe",
        is_flag=True,
        help="Store TEXT again even if the same text is already stored in this scope.",
    )
    @group_options()
    @json_option
    @pass_state
    def add(
        state: CliState,
        text: str,
        scope: ScopeIds,
        metadata: str | None,
        event_time: datetime | None,
        memory_type: str | None,
        speaker: str | None,
        infer: bool,
        no_dedupe: bool,
    ) -> None:
        """Store TEXT as a memory (- reads it from stdin).

        The same text added again in the same scope (outside a session) gives
        back the stored memory instead of a copy; --no-dedupe stores a copy.
        """
        try:
            check_inferred_type(memory_type, infer)
        except ValueError:
            raise click.BadParameter(
                "is chosen for each fact by the extractor with --infer: leave it out",
                param_hint="--type",
            ) from None
        if text == "-":
            text = read_text_arg("-", param="TEXT")
        message: dict[str, str] = {"role": "user", "content": text}
        if speaker:
            message["name"] = speaker
        meta = _parse_metadata(metadata)
        _check_add(state, message, scope, meta, event_time, memory_type, infer=infer)
        started = datetime.now(UTC)
        with open_memory(state, create=True) as memory:
            records = memory.add(
                message,
                **scope,
                metadata=meta,
                event_time=event_time,
                memory_type=cast(MemoryType | None, memory_type),
                infer=infer,
                dedupe=not no_dedupe,
            )
            with held_interrupt() as held:  # from the write's return to its report
                _print_added(records, started, infer=infer, as_json=state.as_json)
            settle(memory, held)

    @cli.command()
    @click.argument("query")
    @with_scope
    @click.option("--limit", "-k", default=10, show_default=True, type=int_range(1, 1000))
    @click.option("--token-budget", type=int_range(1), help="Cut results to this many tokens.")
    @type_option
    @where_option
    @click.option(
        "--as-of",
        callback=_local_time_param,
        help="Only memories valid at this time (ISO-8601; without a zone, local time).",
    )
    @click.option(
        "--after",
        callback=_local_time_param,
        help="Only memories that happened at or after this time (event time; ISO-8601; "
        "without a zone, local time).",
    )
    @click.option(
        "--before",
        callback=_local_time_param,
        help="Only memories that happened before this time (event time; ISO-8601; "
        "without a zone, local time).",
    )
    @click.option(
        "--min-score",
        type=FiniteFloatRange(-1.0, 1.0),
        help="Leave out hits whose query-memory cosine is below this (e.g. 0.3).",
    )
    @group_options()
    @json_option
    @pass_state
    def search(
        state: CliState,
        query: str,
        scope: ScopeIds,
        limit: int,
        token_budget: int | None,
        memory_types: tuple[str, ...],
        where: dict[str, Any],
        as_of: datetime | None,
        after: datetime | None,
        before: datetime | None,
        min_score: float | None,
    ) -> None:
        """Search memories in a scope (hybrid BM25 + vectors)."""
        with open_memory(state) as memory:
            wait_for_vectors(memory)
            hits = memory.search(
                query,
                **scope,
                filters=Filter(metadata=where) if where else None,
                limit=limit,
                token_budget=token_budget,
                memory_types=cast(tuple[MemoryType, ...], memory_types) or None,
                as_of=as_of,
                time_range=(after, before) if after or before else None,
                min_score=min_score,
            )
        if state.as_json:
            print_json([h.to_dict() for h in hits])
            return
        table = Table(
            title=f"{plural(len(hits), 'result')} · {plural(sum(h.tokens for h in hits), 'token')}"
        )
        # The relevance (the query-memory cosine) is what --min-score compares, where the
        # fused score is a rank sum no floor applies to: a table of scores 0.18 and 0.08
        # under --min-score 0.3 read as hits below the floor (a review). "-": a keyword
        # hit whose cosine the search did not read (none without a floor, or no vector).
        relevance = any(h.relevance is not None for h in hits)
        columns = ("#", "score", "relevance", "tokens", "id", "memory")
        for col in columns if relevance else tuple(c for c in columns if c != "relevance"):
            table.add_column(col, overflow="fold", no_wrap=col == "id")
        for i, h in enumerate(hits, 1):
            cosine = ["-" if h.relevance is None else f"{h.relevance:.3f}"] if relevance else []
            table.add_row(
                str(i),
                f"{h.score:.4f}",
                *cosine,
                str(h.tokens),
                SafeText(h.record.id),
                SafeText(cut_text(render(h.record), "get ID")),
            )
        print_table(table)

    @cli.command()
    @one_memory()
    def get(state: CliState, memory_id: str) -> None:
        """Show one memory by id."""
        with open_memory(state, embed=False) as memory:
            r = memory.get(memory_id)
        if state.as_json:
            print_json(r.to_dict())
        else:
            print_table(_records_table([r], r.id))

    @cli.command("list")
    @with_scope
    @click.option("--limit", default=100, show_default=True, type=int_range(1, 1000))
    @click.option("--offset", default=0, show_default=True, type=int_range(0))
    @click.option(
        "--after",
        metavar="KEY",
        help="The page after the memory whose key this is (the KEY that 'more follow' "
        "names on stderr; --offset then counts from it): nothing skipped or repeated "
        "while others write.",
    )
    @click.option(
        "--validity",
        type=click.Choice(["current", "all"]),
        default="current",
        show_default=True,
        help="all: superseded facts too (their valid_to is set), as the inspector's validity=all.",
    )
    @type_option
    @where_option
    @group_options()
    @json_option
    @pass_state
    def list_(
        state: CliState,
        scope: ScopeIds,
        limit: int,
        offset: int,
        after: str | None,
        validity: str,
        memory_types: tuple[str, ...],
        where: dict[str, Any],
    ) -> None:
        """List memories in a scope, newest first."""
        if not any(scope.values()):
            raise needs_scope("one user's memories are never listed with another's")
        types = cast(tuple[MemoryType, ...], memory_types)
        with open_memory(state, embed=False) as memory:
            flt = Filter(
                scope=Scope(tenant=memory.tenant, **scope).for_reading(),
                memory_types=types,
                metadata=where,
                include_invalid=validity == "all",
            )
            records, next_key = _list_page(memory, flt, after=after, offset=offset, limit=limit)
        if state.as_json:
            print_json([r.to_dict() for r in records])
        else:
            title = plural(len(records), "memory", "memories")
            if after is not None:
                title += f" after {after}"
            if offset:
                title += f" from #{offset + 1}"
            print_table(_records_table(records, title, cut=True))
        if next_key is not None:  # on stderr: stdout stays the table or JSON a script reads
            err_console.print(_more_follow(next_key, offset + limit, after), highlight=False)

    def expected_options(verb: str, outcome: str) -> tuple[Callable[[Any], Any], ...]:
        """The preconditions of ``update`` and ``delete``: the memory as it was read,
        in the command's own words (``delete``'s help said "Write ... nothing written")
        and pointing at ``get --json``, the one place ``updated_at`` is shown (the ``get``
        table's ``when`` is another date, and a user who passed it got exit 3)."""
        return (
            click.option(
                "--expected-text",
                help=f"{verb} only while the memory's text is still this one (else exit 3, "
                f"{outcome}).",
            ),
            click.option(
                "--expected-updated-at",
                callback=_time_param,
                help=f"{verb} only while the memory's updated_at is still this one "
                f"(ISO-8601, as `get --json` shows it; else exit 3, {outcome}).",
            ),
        )

    @cli.command()
    @one_memory(
        click.option("--text", help="New text (- reads it from stdin, as add - does)."),
        click.option("--metadata", help="New metadata (JSON object)."),
        *expected_options("Write", "nothing written"),
    )
    def update(
        state: CliState,
        memory_id: str,
        text: str | None,
        metadata: str | None,
        expected_text: str | None,
        expected_updated_at: datetime | None,
    ) -> None:
        """Change a memory's text or metadata (the old text stays in its history).

        With --expected-text or --expected-updated-at the write happens only if the
        memory is still as it was read: an edit made from an old copy never replaces a
        newer one (another process, the server, an agent)."""
        if text == "-":  # as `add -`: `--text -` stored the one character "-"
            # Stripped as add stores it: `echo "$new" |` ends the text in a newline.
            text = read_text_arg("-", param="--text").strip()
            if not text:
                raise click.BadParameter("stdin is empty", param_hint="--text")
        with open_memory(state) as memory:
            r = memory.update(
                memory_id,
                text,
                metadata=_parse_metadata(metadata),
                expected_text=expected_text,
                expected_updated_at=expected_updated_at,
            )
            with held_interrupt() as held:  # from the write's return to its report
                if state.as_json:
                    print_json(r.to_dict())
                else:
                    console.print(SafeText(f"updated {r.id}"), highlight=False)
            settle(memory, held)

    @cli.command()
    @one_memory(
        click.option(
            "--purge",
            is_flag=True,
            help="Also remove the text from history and every copy (default: history keeps it).",
        ),
        *expected_options("Delete", "nothing deleted"),
    )
    def delete(
        state: CliState,
        memory_id: str,
        purge: bool,
        expected_text: str | None,
        expected_updated_at: datetime | None,
    ) -> None:
        """Delete one memory (its history keeps the text unless --purge).

        With --expected-text or --expected-updated-at only the version that was read is
        deleted: one changed since (another process, the server, an agent) is kept."""
        pending: ErasurePending | None = None
        with open_memory(state, embed=False) as memory:
            try:
                memory.delete(
                    memory_id,
                    purge=purge,
                    expected_text=expected_text,
                    expected_updated_at=expected_updated_at,
                )
            except ErasurePending as exc:  # committed: reported, then what is left
                pending = exc
        if state.as_json:
            print_json({"deleted": memory_id, "purged": purge})
        else:
            console.print(SafeText(f"deleted {memory_id}"), highlight=False)
        if pending is not None:
            raise StoreError(f"the purge stands; {pending.reason}")

    @cli.command()
    @one_memory()
    def history(state: CliState, memory_id: str) -> None:
        """Every change to a memory, oldest first."""
        with open_memory(state, embed=False) as memory:
            events = memory.history(memory_id)  # NotFound for an unknown id, as `get`
        if state.as_json:
            print_json(events)
            return
        _print_history(events)

    @cli.command()
    @click.option("--user-id", "-u", callback=scope_id_param, help="The user to erase.")
    @click.option("--session-id", "-s", callback=scope_id_param, help="The session to erase.")
    @click.option(
        "--whole-tenant",
        is_flag=True,
        help="Erase every memory, session and API key of the tenant named by the "
        "group's --tenant (required).",
    )
    @click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
    @click.option(
        "--no-wait",
        is_flag=True,
        help="With --whole-tenant: erase once and return, without waiting for writes that "
        "running servers admitted before the keys were revoked (only when no server of "
        "this store runs).",
    )
    @group_options()
    @json_option
    @pass_state
    def forget(
        state: CliState,
        user_id: str | None,
        session_id: str | None,
        whole_tenant: bool,
        yes: bool,
        no_wait: bool,
    ) -> None:
        """Erase everything of one user (-u: memories, history, sessions, vectors), of
        one session (-s: its log and every memory of it), or of a whole tenant
        (--whole-tenant, with the group's --tenant: also its API keys).

        Asks first on a terminal, also with --json; elsewhere (a script, a pipe)
        refuses without --yes."""
        # Why --json asks too: it used to skip the question, and `forget -u zed --json`
        # erased a user unasked. (Kept here: click prints the docstring as the help.)
        target = _forget_target(state, user_id, session_id, whole_tenant)
        if not yes:
            _confirm_forget(target)
        if no_wait and not whole_tenant:
            raise click.UsageError("--no-wait goes with --whole-tenant only")
        if whole_tenant:
            _forget_tenant(state, wait=not no_wait)
            return
        with open_memory(state, embed=False) as memory:
            _forget_scope(state, memory, user_id, session_id, target)


def _forget_scope(
    state: CliState, memory: Memory, user_id: str | None, session_id: str | None, target: str
) -> None:
    """``forget -u/-s``: ``memory.forget`` of the user or session, and its report: the
    memories, session logs and turns the store erased, counted in the erasure's own
    transaction (:class:`~contextos.store.base.Erasure`). Why: counted here from the log
    before and after, turns another process logged meanwhile hid those erased, and a
    count of the tenant's memories decided whether a Ctrl-C came after the commit, so
    another process's writes turned "erased" into "aborted" and back (a review).

    A Ctrl-C during the erasure stops it while it has not committed (a write still
    waiting on a lock included): ``KeyboardInterrupt`` goes on, "aborted", nothing
    erased. Once it has committed, the file's rebuild may still be running (in C, where
    the signal waits): the store says so (``ErasedThenInterrupted``, with what it
    erased), and that is reported, with that it stands; the store finishes the rebuild
    as it closes (or the next process to open the file does). A Ctrl-C after the
    erasure returned is held until its report is out. An erasure that committed while an
    open reader kept its old pages in the -wal (``ErasurePending``) is reported, then
    the error says what is left (exit 1)."""
    erased: int | None = None
    reported = False
    try:
        erased = memory.forget(user_id, session_id=session_id)
        with held_interrupt(after=FORGET_STANDS) as held:
            _print_forgotten(state, _counted(erased), user_id, session_id, target)
            reported = True
            if held.received:
                tell_interrupted(FORGET_STANDS)
        return
    except ErasedThenInterrupted as exc:
        erased = exc.erased
    except ErasurePending as exc:  # committed: its report, then what is left (exit 1)
        _print_forgotten(state, _counted(exc.erased), user_id, session_id, target)
        raise StoreError(f"the erasure stands; {exc.reason}") from None
    except KeyboardInterrupt:
        # Not returned yet (nothing erased), or reported already (main says it stands);
        # else it came between the return and the report's hold, after the erasure.
        if erased is None or reported:
            raise
    with held_interrupt(after=FORGET_STANDS):
        _print_forgotten(state, _counted(erased), user_id, session_id, target)
        tell_interrupted(FORGET_STANDS)


def _counted(erased: int) -> Erasure:
    """What ``Memory.forget`` returned, as the store's :class:`Erasure` (a store of
    one's own may return the memories alone: no session log counted)."""
    return erased if isinstance(erased, Erasure) else Erasure(erased)


#: What ``forget -u/-s`` says of a Ctrl-C that came once its erasure had committed.
FORGET_STANDS = "interrupted after the erasure had committed: what is reported is erased"


def _print_forgotten(
    state: CliState,
    erased: Erasure,
    user_id: str | None,
    session_id: str | None,
    target: str,
) -> None:
    """The report of ``forget -u/-s``: memories, then session logs and turns when it
    erased any (``--json``: ``sessions_forgotten`` and ``turns_forgotten`` beside
    ``forgotten``)."""
    if state.as_json:
        key = "user_id" if user_id is not None else "session_id"
        print_json(
            {
                key: user_id if user_id is not None else session_id,
                "forgotten": erased.memories,
                "sessions_forgotten": erased.sessions,
                "turns_forgotten": erased.turns,
            }
        )
    else:
        what = plural(erased.memories, "memory", "memories")
        turns = plural(erased.turns, "turn")
        if erased.sessions:
            what += f" and {plural(erased.sessions, 'session')} ({turns})"
        elif erased.turns:
            what += f" and {turns}"
        console.print(SafeText(f"forgot {what} of {user_id or target}"), highlight=False)


def _forget_target(
    state: CliState, user_id: str | None, session_id: str | None, whole_tenant: bool
) -> str:
    """What ``forget`` erases, in words (a usage error unless exactly one target is
    named). Why --whole-tenant wants the group's --tenant on the command line: the
    default tenant, or a CONTEXTOS_TENANT left in the environment, would erase a
    tenant the operator never typed."""
    if sum((user_id is not None, session_id is not None, whole_tenant)) != 1:
        raise click.UsageError(
            "forget needs exactly one of -u/--user-id, -s/--session-id and --whole-tenant"
        )
    if whole_tenant:
        if not state.tenant_typed:
            raise click.UsageError(
                "--whole-tenant erases a tenant for good: name it with the group's --tenant "
                "(contextos --tenant NAME forget --whole-tenant)"
            )
        return f"tenant {state.tenant!r}"
    if user_id is not None:
        return repr(user_id)
    return f"session {session_id!r}"


#: Seconds after its keys are revoked that a running server may still write for a
#: tenant: each server keeps a verified key ``KEY_CACHE_TTL`` (1 s), and a write it
#: admitted then may wait ``WRITE_THREAD_WAIT_S`` (10 s) for a write thread and then the
#: store's lock wait (10 s: SQLite's busy timeout, PostgreSQL's ``lock_timeout``).
LATE_WRITES_S = 21.5


def _forget_tenant(state: CliState, *, wait: bool) -> None:
    """``forget --whole-tenant``: the tenant's API key rows first (a key that outlived
    its tenant would still name it), then every row of the store; the store's erasure
    then clears the file's old pages, the keys' included.

    With ``wait``, erased again once the servers' key caches have expired and once more
    when the writes they admitted before must have landed (:data:`LATE_WRITES_S`). Why:
    offboarding is done while the tenant's integration still runs; servers kept
    admitting its requests for up to a second after the keys went, and those writes
    (3 to 46 memories and their session turns in a review's runs, some answered 201
    after the command printed "forgot") stayed in the store for good, readable by the
    next key created for that tenant name."""
    from ..server.keys import KEY_CACHE_TTL, KeyStore

    tenant = cast(str, state.tenant)
    keys = 0
    revoked = time.monotonic()
    if not absent_db(state.settings.db):
        with KeyStore(state.settings.db) as key_store:
            keys = key_store.delete_tenant(tenant)
    cut = _LatePasses(0, interrupted=False)
    n = 0
    pending: ErasurePending | None = None
    with open_memory(state, embed=False) as memory:
        try:
            n = memory.forget_tenant()
            if wait:
                cut = _erase_late_writes(memory, revoked, KEY_CACHE_TTL)
                n += cut.erased
        except ErasurePending as exc:  # committed: reported, then what is left
            n += int(exc.erased)
            pending = exc
    if state.as_json:
        report: dict[str, Any] = {"tenant": tenant, "forgotten": n, "keys_deleted": keys}
        print_json(report | ({"late_writes_erased": False} if cut.interrupted else {}))
    else:
        console.print(
            SafeText(
                f"forgot {plural(n, 'memory', 'memories')} and "
                f"{plural(keys, 'API key', 'API keys')} of tenant {tenant!r}"
                + (LATE_NOT_ERASED if cut.interrupted else "")
            ),
            highlight=False,
        )
    if pending is not None:
        raise StoreError(f"the erasure stands; {pending.reason}")
    if cut.interrupted:
        sys.exit(130)  # as a Ctrl-C ends any command (cli.main)


#: The end of ``forget --whole-tenant``'s report when a Ctrl-C cut its wait.
LATE_NOT_ERASED = (
    "; interrupted before the writes running servers admitted late were erased: run it again"
)


@dataclass(frozen=True)
class _LatePasses:
    erased: int
    interrupted: bool


def _erase_late_writes(memory: Memory, revoked: float, key_cache_ttl: float) -> _LatePasses:
    """The later passes of ``forget --whole-tenant`` (see :func:`_forget_tenant`). A
    Ctrl-C (or SIGTERM) during the wait ends them and is reported as such: it printed only
    "aborted", though the keys and the tenant's rows were gone and only the late writes
    were not re-erased (a review)."""
    erased = 0
    try:  # the note too: a Ctrl-C sent once it is read (a script's) lands in here
        click.echo(
            f"erased; erasing again in {LATE_WRITES_S:g} s, when the writes running "
            "servers admitted before the keys were revoked have landed (--no-wait: "
            "no server of this store runs)",
            err=True,
        )
        for after in (key_cache_ttl + 0.5, LATE_WRITES_S):
            time.sleep(max(0.0, revoked + after - time.monotonic()))
            erased += memory.forget_tenant()
    except KeyboardInterrupt:
        return _LatePasses(erased, interrupted=True)
    return _LatePasses(erased, interrupted=False)


def _confirm_forget(target: str) -> None:
    """Ask on the terminal (on stderr, so JSON output stays clean); a usage error when
    there is no terminal to ask on, and exit 1 ("nothing erased") when declined."""
    if not sys.stdin.isatty():
        raise click.UsageError(
            f"forget erases every memory of {target} for good: "
            "pass --yes to confirm (stdin is not a terminal to ask on)"
        )
    if not click.confirm(f"Erase every memory of {target}?", err=True):
        raise click.ClickException(f"nothing erased: {target} is as it was")


def _print_history(events: Sequence[HistoryEvent]) -> None:
    """``history``'s table; each text cut as ``list`` cuts (only ``--json`` shows an
    old version whole: ``get`` shows the current one)."""
    table = Table(title="history")
    for col in ("at", "event", "old", "new", "actor"):
        table.add_column(col, overflow="fold")
    for e in events:
        table.add_row(
            e.at.isoformat(timespec="seconds"),
            e.event,
            SafeText(cut_text(e.old_text or "", "--json")),
            SafeText(cut_text(e.new_text or "", "--json")),
            SafeText(e.actor),
        )
    print_table(table)
