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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..embed import Embedder
from ..memory import Memory, RetrievalConfig
from ..memory.render import render
from ..memory.retrieval import FACT_RETRIEVAL, TURN_FACTS_RETRIEVAL, HybridRetriever
from ..text.query import term_set
from ..types import Filter, Hit, MemoryRecord, Scope
from .locomo_data import LocomoConversation, LocomoQA, load_locomo
from .locomo_memory import MEMORY_MODES, ingest_default, size_report
from .locomo_memory import ingest as ingest_mode
from .stats import mean, peak_rss_mb, percentile

KS = (5, 10, 25)
BUDGETS = (500, 1000, 2000)
MAIN_CATEGORIES = (1, 2, 3, 4)

Progress = Callable[[str, int], None]


def evidence_of(hits: Sequence[Hit]) -> list[tuple[set[str], int]]:
    """For each hit, the dia ids it stands for and its token count."""
    return [(set(h.record.provenance), h.tokens) for h in hits]


def sent_words(record: MemoryRecord) -> set[str]:
    """The words a model reads in ``record``'s rendering, its date also as day, month
    name and year ("[2023-05-07]" says "7 May 2023", as LoCoMo's answers write it)."""
    words = term_set(render(record))
    when = record.event_time
    if when is not None:
        words |= {str(when.day), when.strftime("%B").lower(), str(when.year)}
    return words


def score_question(qa: LocomoQA, hits: Sequence[Hit]) -> dict[str, float]:
    """recall@k, recall within token budgets, answer words within token budgets and
    tokens@10 for one question.

    ``answer_words@{budget}t``: the share of the answer's words (less function words,
    ``term_set``) found in the rendered hits packed within the budget (the text a
    window would send; :func:`sent_words`). Recall counts evidence ids; this checks
    that what the ids stand for still carries the answer, so a change that packs more
    ids by sending less of each (shorter renderings, excerpts) shows here as well. An
    answer of function words only scores 1."""
    gold = set(qa.evidence)
    items = evidence_of(hits)
    answer = term_set(qa.answer)
    out: dict[str, float] = {}
    for k in KS:
        found = set().union(*(ids for ids, _ in items[:k])) if items else set()
        out[f"recall@{k}"] = len(gold & found) / len(gold)
    said: dict[int, set[str]] = {}  # a hit's words, read once for every budget
    for budget in BUDGETS:
        used, found, sent = 0, set(), set()
        for i, (ids, tokens) in enumerate(items):
            if used + tokens > budget:
                continue
            used += tokens
            found |= ids
            if answer:
                if i not in said:
                    said[i] = sent_words(hits[i].record)
                sent.update(said[i])
        out[f"recall@{budget}t"] = len(gold & found) / len(gold)
        out[f"answer_words@{budget}t"] = len(answer & sent) / len(answer) if answer else 1.0
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
    """Add every turn of a conversation, one plain ``add`` call per turn (as an app would)."""
    ingest_default(memory, conv, add_times)


Row = tuple[str, int, dict[str, float]]  # (conversation id, category, metrics)


def evaluate(
    memory: Memory, convs: Sequence[LocomoConversation], config: RetrievalConfig
) -> list[Row]:
    """Every question with evidence, answered by a retriever with ``config``, scored."""
    retriever = HybridRetriever(
        memory.store, memory.embedder, config=config, tokenizer=memory.tokenizer
    )
    rows: list[Row] = []
    for conv in convs:
        flt = Filter(scope=Scope(tenant=memory.tenant, user_id=conv.sample_id))
        for qa in conv.qa:
            if qa.evidence:
                hits = retriever.search(qa.question, flt, limit=100)
                rows.append((conv.sample_id, qa.category, score_question(qa, hits)))
    return rows


#: Values tried for each data-chosen constant by ``--cv``, one constant at a time
#: around the configuration under test (the full product would cost hours).
CV_GRID: dict[str, tuple[float, ...]] = {
    "dense_weight": (0.3, 0.6, 0.8, 1.0, 1.5),
    "neighbour_weight": (0.0, 0.5),
    "session_weight": (0.0, 0.1, 0.3),
    "temporal_weight": (0.0, 0.5, 2.0),
    "speaker_weight": (0.0, 1.0, 5.0),
    "context_weight": (0.25, 1.0),
    "rrf_k": (5.0, 10.0, 20.0, 40.0),
}


def cv_candidates(config: RetrievalConfig) -> dict[str, RetrievalConfig]:
    """``config`` and its one-constant variations from ``CV_GRID``, by label."""
    out = {"default": config}
    for name, values in CV_GRID.items():
        for value in values:
            if value != getattr(config, name):
                changes: dict[str, Any] = {name: value}
                out[f"{name}={value:g}"] = replace(config, **changes)
    return out


def recall_of(
    rows: Sequence[Row], key: str = "recall@10", categories: Sequence[int] = MAIN_CATEGORIES
) -> float:
    """Mean of metric ``key`` over the questions of ``categories`` (0 when none)."""
    chosen = [m[key] for _, c, m in rows if c in categories]
    return mean(chosen) if chosen else 0.0


def cross_validate(
    memory: Memory,
    convs: Sequence[LocomoConversation],
    config: RetrievalConfig,
    progress: Progress | None = None,
    candidates: Mapping[str, RetrievalConfig] | None = None,
) -> dict[str, Any]:
    """Leave-one-conversation-out: for each conversation, pick among ``candidates``
    (default: ``cv_candidates(config)``, whose ``"default"`` wins ties) the
    configuration with the best recall@10 (categories 1-4) on the *other*
    conversations, and score it on this one. The held-out rows of every fold,
    pooled, give the cross-validated figures; each fold's choice is reported."""
    candidates = candidates or cv_candidates(config)
    by_label: dict[str, list[Row]] = {}
    for label, cfg in candidates.items():
        by_label[label] = evaluate(memory, convs, cfg)
        if progress:
            progress("cv", 1)
    held_out: list[Row] = []
    folds: dict[str, str] = {}
    for conv in convs:
        train = {
            label: [r for r in rows if r[0] != conv.sample_id] for label, rows in by_label.items()
        }
        # Ties go to the configuration under test, then to the label (stable).
        best = max(train, key=lambda lb: (round(recall_of(train[lb]), 6), lb == "default"))
        folds[conv.sample_id] = best
        held_out.extend(r for r in by_label[best] if r[0] == conv.sample_id)
    pairs = [(c, m) for _, c, m in held_out]
    return {
        "overall": aggregate(pairs, MAIN_CATEGORIES),
        "by_category": {str(c): aggregate(pairs, (c,)) for c in range(1, 6)},
        "chosen": folds,
        "candidates": {
            label: round(recall_of(rows), 4) for label, rows in sorted(by_label.items())
        },
    }


def relevance_report(
    memory: Memory, convs: Sequence[LocomoConversation], config: RetrievalConfig
) -> dict[str, Any]:
    """Where ``Hit.relevance`` (the scale of ``search(min_score=...)``) falls on LoCoMo.

    ``evidence``: the relevance of every evidence turn found in the top 10 of its own
    question; ``top_hit_other_user``: the best hit's relevance when the question is
    asked of another conversation's memory, where nothing should be relevant (the
    conversations are all personal chit-chat, so this is a hard case for a floor).
    Percentiles 10/50/90 of each, and what share each floor would keep.
    """
    if len(convs) < 2 or config.mode == "bm25":
        return {}
    retriever = HybridRetriever(memory.store, memory.embedder, config=config)
    own: list[float] = []
    other: list[float] = []
    for i, conv in enumerate(convs):
        stranger = convs[(i + 1) % len(convs)].sample_id
        for qa in conv.qa:
            if not qa.evidence or qa.category not in MAIN_CATEGORIES:
                continue
            mine = Filter(scope=Scope(tenant=memory.tenant, user_id=conv.sample_id))
            gold = set(qa.evidence)
            for h in retriever.search(qa.question, mine, limit=10):
                if gold & set(h.record.provenance) and h.relevance is not None:
                    own.append(h.relevance)
            theirs = Filter(scope=Scope(tenant=memory.tenant, user_id=stranger))
            top = retriever.search(qa.question, theirs, limit=1)
            other.append(top[0].relevance if top and top[0].relevance is not None else -1.0)

    def summary(values: list[float]) -> dict[str, float]:
        return {f"p{p}": round(percentile(values, p), 3) for p in (10, 50, 90)}

    floors = (0.2, 0.3, 0.4, 0.5)
    return {
        "evidence": summary(own),
        "top_hit_other_user": summary(other),
        "evidence_kept": {
            str(f): round(sum(v >= f for v in own) / max(len(own), 1), 3) for f in floors
        },
        "other_user_empty": {
            str(f): round(sum(v < f for v in other) / max(len(other), 1), 3) for f in floors
        },
    }


def run_locomo(
    data: str | Path,
    *,
    embedder: Embedder | None = None,
    config: RetrievalConfig | None = None,
    conversations: int | None = None,
    workdir: str | Path | None = None,
    progress: Progress | None = None,
    memory_mode: str = "default",
    cv: bool = False,
) -> dict[str, Any]:
    """Run the benchmark and return the report (see the module docstring).

    ``memory_mode`` picks what is stored per conversation: what a plain
    ``Memory.add`` stores (the turns), the turns with their facts beside them,
    extracted facts only or LoCoMo's observations (:mod:`contextos.bench.locomo_memory`).
    ``cv`` adds the leave-one-conversation-out figures (see ``cross_validate``).
    """
    if memory_mode not in MEMORY_MODES:
        raise ValueError(f"memory_mode must be one of {MEMORY_MODES}, not {memory_mode!r}")
    convs = load_locomo(data)[:conversations]
    if cv and len(convs) < 2:
        raise ValueError("cross-validation needs at least two conversations")
    config = config or {"default": RetrievalConfig(), "beside": TURN_FACTS_RETRIEVAL}.get(
        memory_mode, FACT_RETRIEVAL
    )
    tmp = tempfile.TemporaryDirectory() if workdir is None else None
    db = Path(workdir or tmp.name) / "locomo-bench.db"  # type: ignore[union-attr]
    memory = Memory(db, embedder=embedder, retrieval=config)
    # Named in the report: recall depends on it, and a report must say which one ran.
    model_id = memory.embedder.model_id
    add_times: list[float] = []
    try:
        for conv in convs:
            ingest_mode(memory_mode, memory, conv, add_times)
            if progress:
                progress("ingest", len(conv.turns))
        memory.flush()
        embed_rate = memory.embedding_rate
        sizes = size_report(memory, convs, memory_mode)
        # Timed first: a question is then embedded for the first time, as in use (the
        # retriever keeps the vectors of queries it embedded, ``_query_vector``).
        latencies: list[float] = []
        for conv in convs:
            for qa in conv.qa:
                if not qa.evidence:
                    continue
                start = time.perf_counter()
                memory.search(qa.question, user_id=conv.sample_id, limit=10)
                latencies.append(time.perf_counter() - start)
                if progress:
                    progress("search", 1)
        rows = {
            "hybrid": evaluate(memory, convs, config),
            "bm25": evaluate(memory, convs, replace(config, mode="bm25")),
            "dense": evaluate(memory, convs, replace(config, mode="dense")),
        }
        relevance = relevance_report(memory, convs, config)
        cv_report = cross_validate(memory, convs, config, progress) if cv else None
    finally:
        memory.close()
        if tmp is not None:
            tmp.cleanup()
    turns = sum(len(c.turns) for c in convs)
    pairs = {mode: [(c, m) for _, c, m in r] for mode, r in rows.items()}
    report: dict[str, Any] = {
        "data": str(data),
        "conversations": [c.sample_id for c in convs],
        "turns": turns,
        **sizes,
        "questions": {
            str(c): sum(1 for cat, _ in pairs["hybrid"] if cat == c) for c in range(1, 6)
        },
        "embedder": model_id,
        "config": {k: getattr(config, k) for k in config.__dataclass_fields__},
        "overall": aggregate(pairs["hybrid"], MAIN_CATEGORIES),
        "by_category": {str(c): aggregate(pairs["hybrid"], (c,)) for c in range(1, 6)},
        "baselines": {m: aggregate(pairs[m], MAIN_CATEGORIES) for m in ("bm25", "dense")},
        "baselines_by_category": {
            m: {str(c): aggregate(pairs[m], (c,)) for c in range(1, 6)} for m in ("bm25", "dense")
        },
        "latency_ms": {
            "search_p50": round(percentile(latencies, 50) * 1000, 3),
            "search_p95": round(percentile(latencies, 95) * 1000, 3),
            "ingest_per_turn": round(sum(add_times) / max(turns, 1) * 1000, 3),
            "add_p95": round(percentile(add_times, 95) * 1000, 3),
        },
        "embed_per_s": round(embed_rate, 1) if embed_rate else None,
        "relevance": relevance,
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    if cv_report is not None:
        report["cv"] = cv_report
    return report
