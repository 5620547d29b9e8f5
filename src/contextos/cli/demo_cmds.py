"""``contextos demo``: the whole pipeline on a sample conversation (see contextos.demo)."""

from __future__ import annotations

import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from ..demo import DemoResult
from ..memory.render import render
from .common import (
    CliState,
    console,
    err_console,
    json_option,
    model_param,
    pass_state,
    plural,
    print_json,
)
from .text import SafeText

#: Said wherever the demo prints money: the figures are simulated, not billed.
COST_SOURCE = "prompt-cache simulator at list prices; no API was called"


def demo_json(result: DemoResult, model: str) -> dict[str, Any]:
    """The demo's result as plain JSON (what ``contextos demo --json`` prints)."""
    assert result.window is not None and result.cache is not None
    c = result.cache
    return {
        "model": model,
        "turns": result.turns,
        "raw_memories": len(result.raw_records),
        "facts": [
            {"id": f.id, "text": render(f), "provenance": list(f.provenance)} for f in result.facts
        ],
        "answers": [
            {
                "question": q,
                "tokens": sum(h.tokens for h in hits),
                "memories": [{"text": render(h.record), "tokens": h.tokens} for h in hits],
            }
            for q, hits in result.answers
        ],
        "history_tokens_before": result.history_tokens_before,
        "history_tokens_after": result.history_tokens_after,
        "compactions": result.compactions,
        "window": {
            "total_tokens": result.window.total_tokens,
            "segments": [asdict(u) for u in result.window.usage],
            "breakpoints": [asdict(b) for b in result.window.breakpoints],
        },
        "cost": {
            "source": COST_SOURCE,
            "calls": c.requests,
            "input_tokens": c.input_tokens,
            "cache_hit_ratio": c.hit_ratio,
            "cost_usd": c.cost_usd,
            "cost_without_cache_usd": c.cost_without_cache_usd,
        },
    }


def _print_demo(result: DemoResult, model: str) -> None:
    console.rule("1 · memory")
    raw = plural(len(result.raw_records), "raw memory", "raw memories")
    console.print(
        f"{result.turns} turns logged; {raw} and "
        f"{plural(len(result.facts), 'extracted fact')} stored"
    )
    for fact in result.facts[:6]:
        line = SafeText("  ")
        line.append("fact", style="green")
        line.append(f" {render(fact)}  ")
        line.append(f"← {', '.join(fact.provenance)}", style="dim")
        console.print(line)
    console.rule("2 · retrieval (≤ 200 tokens per question)")
    for question, hits in result.answers:
        line = SafeText(question, style="bold")
        line.append(f"  {plural(sum(h.tokens for h in hits), 'token')}", style="dim")
        console.print(line)
        for h in hits:
            console.print(SafeText(f"  {h.tokens:>3} tok · {render(h.record)}"))
    console.rule("3 · compaction")
    console.print(
        f"history {result.history_tokens_before} → "
        f"{result.history_tokens_after} tokens "
        f"({plural(result.compactions, 'compaction')}: recent turns verbatim + summary)"
    )
    console.rule("4 · the window and its cost")
    assert result.window is not None and result.cache is not None
    table = Table()
    for col in ("segment", "tokens", "items", "dropped"):
        table.add_column(col, justify="right" if col != "segment" else "left")
    for u in result.window.usage:
        table.add_row(SafeText(u.name), str(u.tokens), str(u.items), str(u.dropped))
    console.print(table)
    bps = (
        ", ".join(
            f"after block {b.after} ({b.segment}, {b.ttl}, {b.prefix_tokens} tok)"
            for b in result.window.breakpoints
        )
        or "none (prefix below the minimum)"
    )
    console.print(SafeText(f"cache breakpoints: {bps}"))
    c = result.cache
    console.print(
        SafeText(
            f"{plural(c.requests, 'call')} on {model}: {c.input_tokens} input tokens, "
            f"{c.hit_ratio:.0%} read from cache; ${c.cost_usd:.5f} vs "
            f"${c.cost_without_cache_usd:.5f} uncached ({COST_SOURCE})"
        )
    )


def register(cli: click.Group, bench: click.Group) -> None:
    @cli.command()
    @click.option(
        "--keep",
        "keep_db",
        metavar="PATH",
        help="Keep the demo database at PATH (default: a temporary file); "
        "a database that holds the demo already is refused.",
    )
    @click.option("--model", default="claude-sonnet-4-6", show_default=True, callback=model_param)
    @json_option
    @pass_state
    def demo(state: CliState, keep_db: str | None, model: str) -> None:
        """Ingest a sample conversation, retrieve, compact, assemble and price a window."""
        from ..config import check_db
        from ..demo import run_demo

        if keep_db is not None:
            check_db(keep_db)
        with tempfile.TemporaryDirectory() as tmp:
            db = Path(keep_db) if keep_db else Path(tmp) / "demo.db"
            result = run_demo(
                db,
                model_name=model,
                progress=lambda msg: err_console.print(SafeText(f"{msg}…", style="dim")),
            )
        name = result.model.name if result.model else model
        if state.as_json:
            print_json(demo_json(result, name))
        else:
            _print_demo(result, name)
