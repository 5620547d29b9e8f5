"""``contextos bench locomo``: turn-level evidence recall on LoCoMo.

Per conversation every turn is added through ``Memory.add`` (speaker, dia_id,
session date, image caption), embeddings are flushed, and every question is
answered by retrieval. Recall per question is |evidence ∩ retrieved| / |evidence|
over dia ids, as the LoCoMo authors score it; evidence ids that name no turn are
dropped and questions without evidence are skipped. BM25-only and dense-only
baselines run on the same store in the same process, so gains are ratios
measured on the same machine.
"""

from __future__ import annotations

import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..embed import Embedder
from ..memory import Memory, RetrievalConfig
from ..memory.retrieval import FACT_RETRIEVAL, HybridRetriever
from ..types import Filter, Hit, Scope
from .locomo_data import LocomoConversation, LocomoQA, load_locomo
from .locomo_memory import MEMORY_MODES, ingest_raw, size_report
from .locomo_memory import ingest as ingest_mode
from .stats import mean, peak_rss_mb, percentile

KS = (5, 10, 25)
BUDGETS = (500, 1000, 2000)
MAIN_CATEGORIES = (1, 2, 3, 4)

Progress = Callable[[str, int], None]


def evidence_of(hits: Sequence[Hit]) -> list[tuple[set[str], int]]:
    """For each hit, the dia ids it stands for and its token count."""
    return [(set(h.record.provenance), h.tokens) for h in hits]


def score_question(qa: LocomoQA, hits: Sequence[Hit]) -> dict[str, float]:
    """recall@k, recall within token budgets and tokens@10 for one question."""
    gold = set(qa.evidence)
    items = evidence_of(hits)
    out: dict[str, float] = {}
    for k in KS:
        found = set().union(*(ids for ids, _ in items[:k])) if items else set()
        out[f"recall@{k}"] = len(gold & found) / len(gold)
    for budget in BUDGETS:
        used, found = 0, set()
        for ids, tokens in items:
            if used + tokens > budget:
                continue
            used += tokens
            found |= ids
        out[f"recall@{budget}t"] = len(gold & found) / len(gold)
    out["tokens@10"] = float(sum(t for _, t in items[:10]))
    return out


def aggregate(
    rows: Sequence[tuple[int, dict[str, float]]], categories: Sequence[int]
) -> dict[str, float]:
    chosen = [m for c, m in rows if c in categories]
    if not chosen:
        return {"n": 0}
    keys = chosen[0].keys()
    return {**{k: round(mean([m[k] for m in chosen]), 4) for k in keys}, "n": len(chosen)}


def ingest(memory: Memory, conv: LocomoConversation, add_times: list[float]) -> None:
    """Add every turn of a conversation, one ``add`` call per turn (as an app would)."""
    ingest_raw(memory, conv, add_times)


def run_locomo(
    data: str | Path,
    *,
    embedder: Embedder | None = None,
    config: RetrievalConfig | None = None,
    conversations: int | None = None,
    workdir: str | Path | None = None,
    progress: Progress | None = None,
    memory_mode: str = "raw",
) -> dict[str, Any]:
    """Run the benchmark and return the report (see the module docstring).

    ``memory_mode`` picks what is stored per conversation: raw turns, extracted
    facts or LoCoMo's observations (:mod:`contextos.bench.locomo_memory`).
    """
    if memory_mode not in MEMORY_MODES:
        raise ValueError(f"memory_mode must be one of {MEMORY_MODES}, not {memory_mode!r}")
    convs = load_locomo(data)[:conversations]
    config = config or (RetrievalConfig() if memory_mode == "raw" else FACT_RETRIEVAL)
    tmp = tempfile.TemporaryDirectory() if workdir is None else None
    db = Path(workdir or tmp.name) / "locomo-bench.db"  # type: ignore[union-attr]
    memory = Memory(db, embedder=embedder, retrieval=config)
    add_times: list[float] = []
    try:
        for conv in convs:
            ingest_mode(memory_mode, memory, conv, add_times)
            if progress:
                progress("ingest", len(conv.turns))
        memory.flush()
        embed_rate = memory.embedding_rate
        sizes = size_report(memory, convs, memory_mode)
        modes = {
            "hybrid": config,
            "bm25": replace(config, mode="bm25"),
            "dense": replace(config, mode="dense"),
        }
        rows: dict[str, list[tuple[int, dict[str, float]]]] = defaultdict(list)
        latencies: list[float] = []
        for conv in convs:
            for qa in conv.qa:
                if not qa.evidence:
                    continue
                for mode, cfg in modes.items():
                    retriever = HybridRetriever(
                        memory.store,
                        memory.embedder,
                        config=cfg,
                        count_tokens=memory.tokenizer.count,
                    )
                    hits = retriever.search(
                        qa.question,
                        Filter(scope=Scope(tenant=memory.tenant, user_id=conv.sample_id)),
                        limit=100,
                    )
                    rows[mode].append((qa.category, score_question(qa, hits)))
                start = time.perf_counter()
                memory.search(qa.question, user_id=conv.sample_id, limit=10)
                latencies.append(time.perf_counter() - start)
                if progress:
                    progress("search", 1)
    finally:
        memory.close()
        if tmp is not None:
            tmp.cleanup()
    turns = sum(len(c.turns) for c in convs)
    return {
        "data": str(data),
        "conversations": [c.sample_id for c in convs],
        "turns": turns,
        **sizes,
        "questions": {str(c): sum(1 for cat, _ in rows["hybrid"] if cat == c) for c in range(1, 6)},
        "config": {k: getattr(config, k) for k in config.__dataclass_fields__},
        "overall": aggregate(rows["hybrid"], MAIN_CATEGORIES),
        "by_category": {str(c): aggregate(rows["hybrid"], (c,)) for c in range(1, 6)},
        "baselines": {m: aggregate(rows[m], MAIN_CATEGORIES) for m in ("bm25", "dense")},
        "baselines_by_category": {
            m: {str(c): aggregate(rows[m], (c,)) for c in range(1, 6)} for m in ("bm25", "dense")
        },
        "latency_ms": {
            "search_p50": round(percentile(latencies, 50) * 1000, 3),
            "search_p95": round(percentile(latencies, 95) * 1000, 3),
            "ingest_per_turn": round(sum(add_times) / max(turns, 1) * 1000, 3),
            "add_p95": round(percentile(add_times, 95) * 1000, 3),
        },
        "embed_per_s": round(embed_rate, 1) if embed_rate else None,
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
