"""``contextos bench locomo`` and ``contextos bench scale``: the memory benchmarks.

Each writes a JSON report with ``--json OUT`` and prints a summary table.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from ..bench.locomo_data import LocomoConversation
from ..embed import DEFAULT_EMBEDDER
from .bench_frame import json_out_option, terminable, write_json
from .common import (
    CliState,
    FiniteFloatRange,
    console,
    err_console,
    int_range,
    locomo_option,
    number_option,
    pass_state,
    print_table,
    progress_bar,
    served_embedder_option,
)
from .text import SafeText

KEYS = (
    "recall@5",
    "recall@10",
    "recall@25",
    "recall@500t",
    "recall@1000t",
    "recall@2000t",
    "answer_words@1000t",
    "tokens@10",
)


def say_store(db: str | None) -> None:
    """Say on stderr which store the server under test uses (a password hidden)."""
    from ..bench.serve import _redact

    where = (
        "a temporary SQLite file, removed at the end"
        if db is None
        else (_redact(db) if "://" in db else db)
    )
    err_console.print(SafeText(f"store: {where}"), highlight=False)


def bench_embedder(given: str | None, command: str) -> str:
    """The embedder a benchmark runs: ``--embedder`` (``given``), else
    :data:`~contextos.embed.DEFAULT_EMBEDDER`, as its help says; never the configured
    one, so the bare command reproduces the published figures. Why: ``bench locomo``
    ran ``CONTEXTOS_EMBEDDER`` (the hash embedder's recall, 0.2 against 0.7) and said
    nothing. When that variable names another embedder, a note on stderr says it is not
    used."""
    if given:
        return given
    configured = os.environ.get("CONTEXTOS_EMBEDDER", "").strip()
    if configured and configured != DEFAULT_EMBEDDER:
        err_console.print(
            SafeText(
                f"note: CONTEXTOS_EMBEDDER ({configured}) is not used by bench {command}: "
                f"it runs {DEFAULT_EMBEDDER} (pass --embedder to choose)"
            ),
            highlight=False,
        )
    return DEFAULT_EMBEDDER


def _load_locomo(data: str, conversations: int | None) -> list[LocomoConversation]:
    """The first ``conversations`` LoCoMo conversations in ``data`` (all when None),
    or one line saying where the file was looked for or what is wrong with it
    (a :class:`~contextos.errors.ConfigError`: exit 1)."""
    from ..bench.locomo_data import load_locomo

    if not Path(data).exists():
        raise click.ClickException(f"LoCoMo data not found at {data} (pass --data PATH)")
    return load_locomo(data)[:conversations]


def _locomo_table(report: dict[str, Any], kind: str = "in-sample") -> Table:
    table = Table(
        title=f"LoCoMo turn-level evidence recall ({kind}) · {report['turns']} turns",
        caption="r@k: recall in the top k · r@Nt: within N tokens · ans@Nt: share of the "
        "answer's words in the hits sent within N tokens · tok@10: tokens of the top 10 · "
        "cat 1-4 overall, 5 (adversarial) apart",
    )
    table.add_column("retriever", no_wrap=True)
    for k in KEYS:
        table.add_column(
            k.replace("recall", "r").replace("answer_words", "ans").replace("tokens", "tok"),
            justify="right",
            no_wrap=True,
        )
    table.add_column("n", justify="right")

    def row(label: str, m: dict[str, float]) -> None:
        table.add_row(
            label,
            *(f"{m.get(k, 0):.3f}" if k != "tokens@10" else f"{m.get(k, 0):.0f}" for k in KEYS),
            str(m.get("n", 0)),
        )

    row("contextos", report["overall"])
    for c, m in report["by_category"].items():
        row(f" cat {c}", m)
    for name, m in report["baselines"].items():
        row(f"{name} only", m)
    return table


def register(cli: click.Group, bench: click.Group) -> None:
    @bench.command("locomo")
    @locomo_option
    @json_out_option
    @click.option("--conversations", type=int_range(1), help="Only the first N conversations.")
    @click.option("--embedder", default=None, help=f"Embedder name (default: {DEFAULT_EMBEDDER}).")
    @click.option(
        "--memory",
        "memory_mode",
        default="default",
        type=click.Choice(["default", "beside", "extracted", "observations"]),
        show_default=True,
        help="What is stored: what a plain Memory.add stores (the turns), the turns with "
        "their facts beside them, extracted facts only, or LoCoMo's observations.",
    )
    @click.option(
        "--cv",
        is_flag=True,
        help="Also report leave-one-conversation-out recall (constants tuned on the others).",
    )
    @click.option(
        "--cache-embeddings",
        is_flag=True,
        help="Keep vectors in ./bench-out/ (in the working folder) so a rerun embeds "
        "nothing (embedding rate then measures the cache, and recall is that of the run "
        "that filled it).",
    )
    @pass_state
    @terminable
    def locomo(
        state: CliState,
        data: str,
        json_out: str | None,
        conversations: int | None,
        embedder: str | None,
        memory_mode: str,
        cv: bool,
        cache_embeddings: bool,
    ) -> None:
        """Evidence recall on LoCoMo, with BM25-only and dense-only baselines."""
        from ..bench.embed_cache import CachedEmbedder
        from ..bench.locomo import cv_candidates, run_locomo
        from ..embed import make_embedder
        from ..memory import RetrievalConfig

        convs = _load_locomo(data, conversations)
        turns = sum(len(c.turns) for c in convs)
        questions = sum(1 for c in convs for q in c.qa if q.evidence)
        with progress_bar() as bar:
            tasks = {
                "ingest": bar.add_task("ingest turns", total=turns),
                "search": bar.add_task("questions", total=questions),
            }
            if cv:
                tasks["cv"] = bar.add_task(
                    "cv configurations", total=len(cv_candidates(RetrievalConfig()))
                )
            model = make_embedder(bench_embedder(embedder, "locomo"))
            report = run_locomo(
                data,
                conversations=conversations,
                embedder=CachedEmbedder(model) if cache_embeddings else model,
                progress=lambda kind, n: bar.advance(tasks[kind], n),
                memory_mode=memory_mode,
                cv=cv,
            )
        if state.as_json:
            click.echo(json.dumps(report, indent=2, default=str))
        else:
            _print_locomo(report)
        write_json(json_out, report)

    @bench.command("scale")
    @click.option("--n", "n", default=100_000, show_default=True, type=int_range(100))
    @click.option("--queries", default=200, show_default=True, type=int_range(1))
    @json_out_option
    @click.option(
        "--embedder",
        default=None,
        help=f"Embedder name, e.g. minilm (float32) (default: {DEFAULT_EMBEDDER}).",
    )
    @locomo_option
    @pass_state
    @terminable
    def scale(
        state: CliState,
        n: int,
        queries: int,
        json_out: str | None,
        embedder: str | None,
        data: str,
    ) -> None:
        """Add/search latency, embedding rate and DB size at 10k and 100k memories.

        The embedding rate is measured on synthetic LoCoMo-like turns and, when the
        LoCoMo file (--data) is there, on its real turns too."""
        from ..bench.scale import ADD, run_scale
        from ..embed import make_embedder

        model = make_embedder(bench_embedder(embedder, "scale"))
        with progress_bar() as bar:

            def stage(name: str) -> None:
                """A line per phase, the one before gone, shown at once (a short phase
                could end between two of the bar's refreshes)."""
                for done in bar.task_ids:
                    bar.update(done, visible=False)
                bar.add_task(name, total=n if name == ADD else None)
                bar.refresh()

            report = run_scale(
                n,
                queries=queries,
                progress=lambda k: bar.advance(bar.task_ids[-1], k),
                embedder=model,
                locomo=data,
                stage=stage,
            )
        if state.as_json:
            click.echo(json.dumps(report, indent=2))
        else:
            _print_scale(report)
        write_json(json_out, report)

    bench.add_command(online_bench)


def _print_locomo(report: dict[str, Any]) -> None:
    """The recall tables and the cost lines of ``bench locomo``."""
    print_table(_locomo_table(report))
    if "cv" in report:
        cvr = report["cv"]
        print_table(_locomo_table({**report, **cvr, "baselines": {}}, "leave-one-out"))
        console.print(
            "cv choices: " + ", ".join(f"{conv}: {label}" for conv, label in cvr["chosen"].items())
        )
    lat = report["latency_ms"]
    console.print(
        f"embedder {report['embedder']} · search p50 {lat['search_p50']} ms · "
        f"p95 {lat['search_p95']} ms · "
        f"add mean {lat['ingest_per_turn']} ms · add p95 {lat['add_p95']} ms · "
        f"embedding {report['embed_per_s']} records/s · peak RSS "
        f"{report['peak_rss_mb']} MB"
    )
    console.print(
        f"memory {report['memory_mode']}: {report['memory_tokens']:,} tokens stored "
        f"vs {report['raw_tokens']:,} in the raw conversation "
        f"({report['memory_to_raw']}x) · {report['records']:,} records"
    )


def _print_scale(report: dict[str, Any]) -> None:
    """The table of ``bench scale``."""
    locomo_rate = (
        f" · LoCoMo turns {report['locomo_embed_per_s']}/s"
        if "locomo_embed_per_s" in report
        else f" · LoCoMo turns not measured ({report.get('locomo_embed_skipped')})"
    )
    table = Table(
        title=f"scale · {report['embedder']} · embedding {report['embed_per_s']} "
        f"turns/s{locomo_rate}"
    )
    cols = (
        "n",
        "add_p50_ms",
        "add_p95_ms",
        "ingest_per_s",
        "search_p50_ms",
        "search_p95_ms",
        "first_search_max_ms",
        "search_cpu_p95_ms",
        "db_mb",
        "real_vectors",
        "stand_in_vectors",
    )
    for c in cols:
        table.add_column(c, justify="right")
    for r in report["results"]:
        table.add_row(*(str(r[c]) for c in cols))
    print_table(table)


@click.command("online")
@locomo_option
@click.option(
    "--store",
    default=None,
    metavar="PATH_OR_URL",
    help="Store of the server under test: a SQLite path or postgresql:// URL "
    "(default: a temporary SQLite file). The run's users are forgotten at the end and "
    "its API key revoked; a run stopped early leaves the rows it streamed.",
)
@click.option("--conversations", type=int_range(1), help="Only the first N conversations.")
@click.option("--limit", type=int_range(1), help="Only the first N turns of each conversation.")
@served_embedder_option
@number_option(
    "--rate",
    10.0,
    FiniteFloatRange(0),
    "Turns per second over all conversations together (0: as fast as acknowledged).",
)
@number_option(
    "--lag-every",
    10,
    click.IntRange(1),
    "Probe the vector lag of at most one add in this many (one probe at a time).",
)
@number_option(
    "--lag-timeout",
    10.0,
    FiniteFloatRange(0.1),
    "Seconds after which a probed add still not searchable by meaning counts as unseen.",
)
@json_out_option
@pass_state
@terminable
def online_bench(state: CliState, /, json_out: str | None, **options: Any) -> None:
    """LoCoMo streamed through `contextos serve` while its questions are asked:
    online vs batch recall, vector lag, add/search latency."""
    from ..bench.online import OnlineBenchConfig, plan, run_online_bench

    cfg = OnlineBenchConfig(**options)  # its fields are this command's options
    planned = plan(_load_locomo(cfg.data, cfg.conversations), cfg.limit)
    say_store(cfg.store)
    questions = sum(len(qs) for _, qs in planned)
    with progress_bar() as bar:
        tasks = {
            "stream": bar.add_task(
                "stream turns", total=sum(len(c.turns[: cfg.limit]) for c, _ in planned)
            ),
            "online": bar.add_task("online questions", total=questions),
            "batch": bar.add_task("batch questions", total=questions),
        }
        try:
            report = run_online_bench(cfg, progress=lambda kind, n: bar.advance(tasks[kind], n))
        except RuntimeError as exc:  # OnlineBenchError, or the server would not start
            raise click.ClickException(str(exc)) from exc
    if state.as_json:
        click.echo(json.dumps(report, indent=2, default=str))
    else:
        _print_online(report)
    write_json(json_out, report)


def _print_online(report: dict[str, Any]) -> None:
    """The online-vs-batch table and the lag/latency line of ``bench online``."""
    table = Table(
        title=f"LoCoMo online · {report['turns']} turns · {report['questions']} questions "
        f"(categories 1-4)",
        caption="online: asked right after the session of its latest evidence, while later "
        "turns stream · batch: everything added and embedded first · batch same turns: "
        "embedded first, searched over the turns the online ask had",
    )
    for col in ("", "r@10", "r@1000t", "r@25", "n"):
        table.add_column(col, justify="right" if col else "left")
    for label in ("online", "batch", "batch_same_turns"):
        m = report[label]
        table.add_row(
            label.replace("_", " "),
            *(f"{m.get(k, 0):.3f}" for k in ("recall@10", "recall@1000t", "recall@25")),
            str(m.get("n", 0)),
        )
    print_table(table)
    lag, lat = report["vector_lag_ms"], report["latency_ms"]
    console.print(
        f"vector lag p50 {lag['p50']} ms · p95 {lag['p95']} ms · {lag['unseen']} of "
        f"{lag['probed']} probes unseen after {lag['timeout_ms']} ms · add p50 "
        f"{lat['add_p50']} / p95 {lat['add_p95']} ms · search p50 {lat['search_p50']} / "
        f"p95 {lat['search_p95']} ms · {report['turns_per_s']} turns/s"
    )
