"""Store commands: ``status`` (embedding queue and quarantined records) and ``vacuum``.

Each opens the configured database, calls one ``Memory`` method and prints the result.
"""

from __future__ import annotations

import click
from rich.table import Column, Table

from ..errors import NotFound
from ..times import iso
from .common import (
    CliState,
    absent_db,
    console,
    err_console,
    group_options,
    json_option,
    open_memory,
    pass_state,
    print_json,
    print_table,
)
from .text import SafeText, shown_id


def register(cli: click.Group, bench: click.Group) -> None:
    """Add ``status`` and ``vacuum`` to the ``contextos`` group."""

    @cli.command()
    @group_options()
    @json_option
    @pass_state
    def status(state: CliState) -> None:
        """Memories still waiting for a vector, and those whose embedding failed."""
        with open_memory(state, embed=False) as memory:
            report = memory.embedding_status()
            # One worker embeds every tenant's memories: a server's backlog is the whole
            # store's, and a tenant's "0" alone read as "the queue is empty" (a review).
            store = memory.embedding_status(all_tenants=True)
            tenant = memory.tenant
        if state.as_json:
            print_json(
                {
                    "tenant": tenant,
                    "pending": report.pending,
                    "quarantined_total": report.quarantined_total,
                    "quarantined": [
                        {"id": q.id, "error": q.error, "at": iso(q.at)} for q in report.quarantined
                    ],
                    "all_tenants": {
                        "pending": store.pending,
                        "quarantined_total": store.quarantined_total,
                    },
                }
            )
            return
        console.print(SafeText(f"tenant {tenant!r}: waiting for a vector: {report.pending}"))
        listed = len(report.quarantined)
        more = f" (the oldest {listed} listed)" if listed < report.quarantined_total else ""
        console.print(f"quarantined (embedding failed): {report.quarantined_total}{more}")
        if (store.pending, store.quarantined_total) != (report.pending, report.quarantined_total):
            console.print(
                f"every tenant of this database: {store.pending} waiting for a vector, "
                f"{store.quarantined_total} quarantined (--tenant NAME for one)"
            )
        if report.quarantined:
            # Ids whole, never cut with an ellipsis: `contextos update ID` retries one.
            # Every cell whole under a pipe too: the error is what a cron log is grepped for.
            ids = [shown_id(q.id) for q in report.quarantined]
            widest = max(map(len, ids))
            table = Table(Column("id", no_wrap=True, min_width=widest), "error", "since")
            for q, shown in zip(report.quarantined, ids, strict=True):
                since = q.at.isoformat(timespec="seconds")
                table.add_row(SafeText(shown), SafeText(q.error), since)
            print_table(table)

    @cli.command()
    @group_options(tenant=False)
    @json_option
    @pass_state
    def vacuum(state: CliState) -> None:
        """Rewrite the database so erased rows leave no bytes (PostgreSQL: VACUUM FULL)."""
        db = str(state.settings.db)
        if absent_db(db):
            # Not "vacuumed", exit 0, after a note: a script vacuuming a mistyped --db
            # after its purges was told the erased bytes were gone (a review).
            raise NotFound(f"nothing vacuumed: no database at {db} (check --db or CONTEXTOS_DB)")
        with open_memory(state, embed=False) as memory:
            notes = memory.vacuum()
        # A step the role may not take (PostgreSQL's CHECKPOINT): the tables are
        # rewritten, and what still holds erased bytes until when is said on stderr.
        for note in notes:
            err_console.print(f"note: {note}", highlight=False)
        if state.as_json:
            print_json({"vacuumed": True, "notes": list(notes)})
        else:
            console.print("vacuumed")
