"""PNG plots for the context-engine benchmarks, written next to their JSON reports.

matplotlib is an optional extra (``contextos[bench]``), not part of ``make demo``:
with its dependencies it was about 100 MB of a 594 MB install, for a few PNGs. A
benchmark therefore never fails for want of it: :func:`write_plots` writes the
plots when matplotlib imports and otherwise returns :data:`PLOTS_HINT`, one line
that says how to get them. It runs on the Agg backend, so plotting needs no display.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from ..errors import MissingExtraError

#: What a benchmark prints instead of its plots when matplotlib is not installed.
PLOTS_HINT = (
    "plots skipped: matplotlib is not installed; "
    "for PNG plots run `pip install 'contextos[bench]'` (or pass --no-plots)"
)

#: The benchmarks that draw plots, and the function that draws each one's.
PlotKind = Literal["replay", "litm"]


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as exc:
        raise MissingExtraError("bench", "matplotlib") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _folder(out_dir: str | Path) -> Path:
    """The output folder, created if missing."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return out


def _saved(plt: Any, fig: Any, path: Path) -> Path:
    """Lay ``fig`` out, write it to ``path`` and free it (pyplot keeps every open figure)."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def rolling_mean(values: Sequence[float], n: int = 10) -> list[float]:
    """Mean of the last ``n`` values at each point (smooths per-call noise)."""
    out: list[float] = []
    total = 0.0
    for i, v in enumerate(values):
        total += v
        if i >= n:
            total -= values[i - n]
        out.append(total / min(i + 1, n))
    return out


def plot_replay(report: Mapping[str, Any], out_dir: str | Path) -> list[Path]:
    """Per budget: window tokens and cache-read share per call, one line per strategy."""
    plt, out = _pyplot(), _folder(out_dir)
    paths: list[Path] = []
    first = report["conversations"][0] if report.get("conversations") else ""
    for budget, by_strategy in report["budgets"].items():
        fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
        for name, res in by_strategy.items():
            series = res.get("series", {})
            top.plot(series.get("window_tokens", []), label=name, linewidth=0.9)
            bottom.plot(rolling_mean(series.get("cache_read_share", [])), label=name, linewidth=0.9)
        top.axhline(int(budget), color="black", linestyle="--", linewidth=0.8, label="budget")
        top.set_ylabel("window tokens")
        top.set_title(f"replay of {first} at a {int(budget):,}-token budget")
        bottom.set_ylabel("cache-read share (10-call mean)")
        bottom.set_xlabel("request")
        bottom.set_ylim(0, 1)
        top.legend(fontsize=7, ncol=3)
        paths.append(_saved(plt, fig, out / f"replay-{budget}.png"))
    return paths


def plot_litm(report: Mapping[str, Any], out_dir: str | Path) -> list[Path]:
    """Per data set: where the gold item landed in its segment (slot histogram)."""
    plt, out = _pyplot(), _folder(out_dir)
    paths: list[Path] = []
    for name, res in report["datasets"].items():
        hist = res["slot_histogram"]
        fig, ax = plt.subplots(figsize=(8, 3.5))
        ax.bar(range(1, len(hist) + 1), hist)
        ax.set_xlabel("slot of the gold item in its segment (1 = first)")
        ax.set_ylabel("examples")
        ax.set_title(f"{name}: edge share {res['edge_share']:.2f}")
        paths.append(_saved(plt, fig, out / f"litm-{name}.png"))
    return paths


def write_plots(report: Mapping[str, Any], out_dir: str | Path, kind: PlotKind) -> str:
    """Write ``kind``'s plots for ``report`` into ``out_dir``; the line to print.

    Why a line rather than an error: the JSON report is the benchmark's result and
    is already written; the plots are a view of it, so a missing matplotlib costs
    the view and says how to get it, never the run (``make demo`` installs no
    matplotlib)."""
    draw = {"replay": plot_replay, "litm": plot_litm}.get(kind)
    if draw is None:
        raise ValueError(f"no plots for {kind!r}; known: replay, litm")
    try:
        paths = draw(report, out_dir)
    except MissingExtraError:
        return PLOTS_HINT
    return "wrote " + ", ".join(str(p) for p in paths) if paths else "no plots to write"


__all__ = ["PLOTS_HINT", "plot_litm", "plot_replay", "rolling_mean", "write_plots"]
