"""``contextos demo``: the whole pipeline on a sample conversation (see contextos.demo)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import click
from rich.table import Table

from ..memory.render import render
from .common import CliState, console, err_console, pass_state


def register(cli: click.Group, bench: click.Group) -> None:
    @cli.command()
    @click.option(
        "--keep",
        "keep_db",
        metavar="PATH",
        help="Keep the demo database at PATH (default: a temporary file).",
    )
    @click.option("--model", default="claude-sonnet-4-6", show_default=True)
    @pass_state
    def demo(state: CliState, keep_db: str | None, model: str) -> None:
        """Ingest a sample conversation, retrieve, compact, assemble and price a window."""
        from ..demo import run_demo

        with tempfile.TemporaryDirectory() as tmp:
            db = Path(keep_db) if keep_db else Path(tmp) / "demo.db"
            result = run_demo(
                db, model_name=model, progress=lambda msg: err_console.print(f"[dim]{msg}…[/dim]")
            )
        console.rule("1 · memory")
        console.print(
            f"{result.turns} turns logged; {len(result.raw_records)} raw memories "
            f"and {len(result.facts)} extracted facts stored"
        )
        for fact in result.facts[:6]:
            console.print(
                f"  [green]fact[/green] {render(fact)}  [dim]← {', '.join(fact.provenance)}[/dim]"
            )
        console.rule("2 · retrieval (≤ 200 tokens per question)")
        for question, hits in result.answers:
            console.print(
                f"[bold]{question}[/bold]  [dim]{sum(h.tokens for h in hits)} tokens[/dim]"
            )
            for h in hits:
                console.print(f"  {h.tokens:>3} tok · {render(h.record)}")
        console.rule("3 · compaction")
        console.print(
            f"history {result.history_tokens_before} → "
            f"{result.history_tokens_after} tokens "
            f"({result.compactions} compaction: recent turns verbatim + summary)"
        )
        console.rule("4 · the window and its cost")
        assert result.window is not None and result.cache is not None
        table = Table()
        for col in ("segment", "tokens", "items", "dropped"):
            table.add_column(col, justify="right" if col != "segment" else "left")
        for u in result.window.usage:
            table.add_row(u.name, str(u.tokens), str(u.items), str(u.dropped))
        console.print(table)
        bps = (
            ", ".join(
                f"after block {b.after} ({b.segment}, {b.ttl}, {b.prefix_tokens} tok)"
                for b in result.window.breakpoints
            )
            or "none (prefix below the minimum)"
        )
        console.print(f"cache breakpoints: {bps}")
        c = result.cache
        console.print(
            f"{c.requests} calls on {result.model.name if result.model else model}: "
            f"{c.input_tokens} input tokens, {c.hit_ratio:.0%} read from cache; "
            f"${c.cost_usd:.5f} vs ${c.cost_without_cache_usd:.5f} uncached"
        )
