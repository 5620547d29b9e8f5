"""``export`` and ``import``: a store's memories as JSON Lines, and back, losslessly.

Each calls one ``Memory`` verb (``Memory.export``, ``Memory.import_records``); the format
is described in :mod:`contextos.memory.transfer` and docs/cli.md. Why: ``list --json``
then ``add`` lost ids, times and validity and refused session memories (a review, s57).
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import click
from rich.progress import Progress

from ..memory.transfer import (
    ImportLineError,
    ImportReport,
    ImportTenantError,
    ImportTruncatedError,
)
from ..types import Filter, Scope
from .bench_frame import hangup_terminates, terminable
from .common import (
    CliState,
    console,
    err_console,
    group_options,
    held_interrupt,
    json_option,
    open_memory,
    pass_state,
    plural,
    print_json,
    progress_bar,
    settle,
    write_out,
)
from .memory_cmds import scope_options
from .text import SafeText, json_escaped

#: Characters of lines gathered before one write to stdout.
_CHUNK_CHARS = 1 << 16


def _line(data: dict[str, Any], *, ascii_only: bool) -> str:
    """One line of an export: compact JSON, control and format characters escaped (a
    right-to-left mark shows as ``\\u200f``, never reorders a terminal), all ASCII where
    the output cannot hold UTF-8."""
    if ascii_only:
        return json.dumps(data, ensure_ascii=True, separators=(",", ":")) + "\n"
    return json_escaped(json.dumps(data, ensure_ascii=False, separators=(",", ":"))) + "\n"


def register(cli: click.Group, bench: click.Group) -> None:
    """Add ``export`` and ``import`` to the ``contextos`` group."""

    @cli.command("export")
    @scope_options[0]
    @scope_options[1]
    @scope_options[2]
    @click.option(
        "--output",
        "-o",
        type=click.Path(dir_okay=False, writable=True),
        help="Write to FILE (whole or not at all: a file beside it, renamed when done) "
        "instead of stdout.",
    )
    @group_options()
    @pass_state
    def export_(
        state: CliState,
        user_id: str | None,
        agent_id: str | None,
        session_id: str | None,
        output: str | None,
    ) -> None:
        """Write memories as JSON Lines, superseded ones included: a scope's, or with no
        -u/-a/-s the whole tenant's. `contextos import` stores them again as they were."""
        # SIGTERM (timeout, systemd, docker stop) or SIGHUP (a closed terminal) unwinds
        # as Ctrl-C does: the file beside FILE is removed (it was left: review s57).
        terminable(hangup_terminates(_export))(state, (user_id, agent_id, session_id), output)

    @cli.command("import")
    @click.argument("file", metavar="FILE")
    @group_options()
    @json_option
    @pass_state
    def import_(state: CliState, file: str) -> None:
        """Store the memories of an export (FILE, or - for stdin) as they were: same ids,
        times and validity. Run it again after an interruption: what is stored already is
        counted, never stored twice; a memory whose id is stored with other content is
        left as stored and listed (exit 1)."""
        source = sys.stdin.buffer if file == "-" else open(file, "rb")  # noqa: SIM115
        try:
            report = _import(state, source)
        finally:
            if source is not sys.stdin.buffer:
                source.close()
        if report.conflicts:
            raise SystemExit(1)


def _tally(report: ImportReport) -> str:
    """What an import did so far, as its summary and its errors say it. Why the parts:
    "N records before it stored" counted the conflicts and those stored already (the
    export review, s57)."""
    return (
        f"{report.added:,} added, {report.already:,} already stored, "
        f"{plural(report.conflicts, 'conflict')}"
    )


def _say_conflicts(report: ImportReport) -> None:
    """Name on stderr the memories left as stored (on an error too: a conflict before a
    bad line was never named)."""
    if not report.conflicts:
        return
    ids = ", ".join(report.conflict_ids)
    more = report.conflicts - len(report.conflict_ids)
    err_console.print(
        SafeText(
            f"{plural(report.conflicts, 'memory was', 'memories were')} not imported: "
            "the id is stored with other content (changed since the export, or of "
            f"another tenant), left as stored: {ids}" + (f" and {more:,} more" if more else "")
        ),
        highlight=False,
    )


def _bar() -> Progress:
    """The progress bar on stderr, on a terminal only (off one, rich's bar still wrote
    an empty line)."""
    bar = progress_bar()
    bar.disable = not err_console.is_terminal
    return bar


def _export(
    state: CliState, ids: tuple[str | None, str | None, str | None], output: str | None
) -> None:
    with open_memory(state, embed=False) as memory:
        scope = Scope(memory.tenant, *ids)
        total = memory.store.count(Filter(scope=scope, include_invalid=True))
        with _output(output) as out, _bar() as bar:
            ascii_only = out is None and not _holds_utf8(sys.stdout)
            task = bar.add_task("exporting", total=total)
            written = 0
            chunk: list[str] = []
            size = 0
            for n, data in enumerate(memory.export(**scope.ids())):
                text = _line(data, ascii_only=ascii_only)
                chunk.append(text)
                size += len(text)
                if n and "end" not in data:  # the first line is the header, the last the end
                    written += 1
                    bar.advance(task)
                if size >= _CHUNK_CHARS:
                    _write("".join(chunk), out)
                    chunk, size = [], 0
            _write("".join(chunk), out)
        logs = memory.store.sessions(Scope(memory.tenant, ids[0], ids[1]))
        logs = [s for s in logs if ids[2] is None or s == ids[2]]
    where = "stdout" if output is None else output
    err_console.print(
        SafeText(f"exported {plural(written, 'memory', 'memories')} to {where}"),
        highlight=False,
    )
    if logs:
        # The format holds memories only; a move said nothing of the logs it left (s57).
        err_console.print(
            f"note: the session logs (turns) of {plural(len(logs), 'session')} were not "
            "exported (the format holds memories only; `session show` reads them)",
            highlight=False,
        )


def _import(state: CliState, source: IO[bytes]) -> ImportReport:
    total = _size(source)
    with open_memory(state, create=True) as memory:
        with _bar() as bar:
            task = bar.add_task("importing", total=total)
            read = _Counted(source)
            seen = [ImportReport()]

            def progress(report: ImportReport) -> None:
                seen[0] = report
                bar.update(task, completed=read.bytes)

            try:
                report = memory.import_records(read, progress=progress)
            except KeyboardInterrupt:
                bar.stop()
                _say_conflicts(seen[0])
                err_console.print(
                    f"interrupted: {plural(seen[0].records, 'record')} read ({_tally(seen[0])}; "
                    "each batch whole or not at all); run the same import again to finish it",
                    highlight=False,
                )
                raise SystemExit(130) from None
            except ImportTenantError as exc:
                raise ValueError(
                    f"this file is an export of tenant {exc.file_tenant!r}, not of "
                    f"{exc.tenant!r} (the import's tenant): pass --tenant "
                    f"{exc.file_tenant} to restore it there"
                ) from None
            except ImportTruncatedError as exc:
                _say_conflicts(exc.report)
                raise ValueError(
                    f"{exc}; of what it held: {_tally(exc.report)}; import the whole file "
                    "again to finish (what is stored is skipped)"
                ) from None
            except ImportLineError as exc:
                _say_conflicts(exc.report)
                raise ValueError(
                    f"{exc} (before it: {_tally(exc.report)}; fix the line and import "
                    "again: what is stored is skipped)"
                ) from None
        with held_interrupt() as held:
            if state.as_json:
                print_json(report.to_dict())
            else:
                console.print(
                    f"imported {plural(report.records, 'memory', 'memories')}: {_tally(report)}",
                    highlight=False,
                )
        _say_conflicts(report)
        settle(memory, held)
    return report


def _holds_utf8(stream: Any) -> bool:
    try:
        "\u00e9\U0001f600".encode(getattr(stream, "encoding", None) or "utf-8")
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def _write(text: str, out: IO[str] | None) -> None:
    if not text:
        return
    if out is None:
        write_out(text)
    else:
        out.write(text)


@contextmanager
def _output(output: str | None) -> Iterator[IO[str] | None]:
    """Where an export writes: None for stdout, else a file beside ``output`` renamed to
    it when the block ends well and removed otherwise, so an interrupted export leaves
    no half file where a whole one is expected.

    Why its name is drawn before the file is made, inside the ``try``, and the block is
    a plain ``with``: made by ``mkstemp`` before the removal was set up, a SIGHUP that
    came just after the file appeared left it behind (1 run in a few under load)."""
    if output is None:
        yield None
        return
    path = Path(output)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.part"
    out: IO[str] | None = None
    try:
        out = open(tmp, "x", encoding="utf-8", newline="\n")  # noqa: SIM115
        yield out
        out.close()
        os.replace(tmp, path)
    except BaseException:
        if out is not None:
            out.close()
        tmp.unlink(missing_ok=True)
        raise


def _size(source: IO[bytes]) -> int | None:
    """Bytes of a regular file (the progress bar's total); None for a pipe."""
    try:
        st = os.fstat(source.fileno())
    except (OSError, ValueError):
        return None
    import stat

    return st.st_size if stat.S_ISREG(st.st_mode) else None


class _Counted:
    """The lines of a binary stream, counting the bytes read (for the progress bar)."""

    def __init__(self, source: IO[bytes]) -> None:
        self._source = source
        self.bytes = 0

    def __iter__(self) -> Iterator[bytes]:
        for line in self._source:
            self.bytes += len(line)
            yield line
