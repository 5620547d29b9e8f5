"""What every benchmark command shares: its report path checked before the run, SIGTERM
unwinding as Ctrl-C does, and the report written after the results are printed.

A module of its own, light to import: ``contextos serve`` and ``contextos session``
register benchmark commands beside everyday ones, and must not pay for the benchmarks'
imports on every call (:mod:`contextos.bench.sigterm` is imported when a benchmark runs).
"""

from __future__ import annotations

import functools
import json
import signal
import threading
from typing import Any, cast

import click

from .common import F, err_console
from .text import SafeText


def report_path_param(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Callback of ``--json OUT``: a path the report cannot be written to is a usage
    error (exit 2) before the run starts, not an error after it with the results lost
    (:func:`contextos.bench.report_file.check_report_path`). An empty value is one
    too: it was taken for no ``--json`` at all, and the run wrote no report, silently."""
    from ..bench.report_file import check_report_path

    if value is not None and not value.strip():
        raise click.BadParameter("name a file to write the report to, not nothing", ctx, param)
    if value:
        try:
            check_report_path(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc), ctx=ctx, param=param) from None
    return value


#: ``--json OUT`` of a benchmark: checked before the run (:func:`report_path_param`).
json_out_option = click.option(
    "--json",
    "json_out",
    metavar="OUT",
    callback=report_path_param,
    help="Also write the full report to this file (checked before the run).",
)


def write_json(path: str | None, report: dict[str, Any]) -> None:
    """Write ``report`` to ``path`` (if given), after the command printed its results: a
    write that fails even so (the disk filled up meanwhile) loses nothing shown, and
    leaves a previous report at ``path`` whole (replaced atomically:
    :func:`~contextos.bench.report_file.write_report`)."""
    from ..bench.report_file import write_report

    if path:
        try:
            out = write_report(path, json.dumps(report, indent=2, default=str) + "\n")
        except OSError as exc:
            raise click.ClickException(
                f"could not write the report to {path}: {exc.strerror or exc} "
                "(the results are printed above; a previous report there is unchanged)"
            ) from None
        err_console.print(SafeText(f"wrote {out}"))


def terminable(func: F) -> F:
    """Run a benchmark command so that SIGTERM cleans up as Ctrl-C does (its server
    subprocess stopped, its temporary store removed), then exits 143 saying
    "terminated" (:mod:`contextos.bench.sigterm`)."""

    @functools.wraps(func)
    def run(*args: Any, **kwargs: Any) -> Any:
        from ..bench.sigterm import EXIT_TERMINATED, sigterm_unwinds

        with sigterm_unwinds() as terminated:
            try:
                return func(*args, **kwargs)
            except BaseException:
                # Terminated, or what a cleanup it upset raised instead (see
                # sigterm_unwinds): either way the cleanup ran and SIGTERM is the cause.
                if not terminated():
                    raise
                err_console.print("terminated")
                raise SystemExit(EXIT_TERMINATED) from None

    return cast(F, run)


def hangup_terminates(func: F) -> F:
    """Run ``func`` (under :func:`terminable`) so that SIGHUP ends it as SIGTERM does: by
    the handler ``terminable`` set, unwinding through every ``finally``, exit 143.

    Why: closing the terminal of a ``chat`` sends SIGHUP, whose default action ends the
    process on the spot; the question of the turn in flight was left logged and never
    remembered (a review), and an ``export -o`` left its partial file (review s57).
    Only the main thread can set a handler: elsewhere, and where no SIGHUP exists, this
    does nothing; nor where SIGHUP is ignored (``nohup contextos export ...``: replaced,
    the backup ended with the session that started it, a review)."""

    @functools.wraps(func)
    def run(*args: Any, **kwargs: Any) -> Any:
        hup = getattr(signal, "SIGHUP", None)
        terminate = signal.getsignal(signal.SIGTERM)
        main = threading.current_thread() is threading.main_thread()
        if hup is None or not callable(terminate) or not main:
            return func(*args, **kwargs)
        if signal.getsignal(hup) is signal.SIG_IGN:  # nohup: the hangup is meant to pass
            return func(*args, **kwargs)

        def hang_up(signum: int, frame: Any) -> None:
            signal.signal(hup, signal.SIG_IGN)  # once, as SIGTERM: the cleanup runs whole
            terminate(signum, frame)

        previous = signal.signal(hup, hang_up)
        try:
            return func(*args, **kwargs)
        finally:
            signal.signal(hup, previous)

    return cast(F, run)
