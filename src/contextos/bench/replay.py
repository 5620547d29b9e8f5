"""``contextos bench replay``: replay LoCoMo conversations as chats under a window budget.

Each conversation is replayed in time order, speaker A as the user and B as
the assistant, sessions on their LoCoMo dates and ``turn_gap_s`` seconds
between turns. Every user turn is a request: the window is assembled with the
strategy's history (plus retrieved memories for ``offload`` after the history,
and for ``topic`` a cached topic block before it and a small delta after it:
:mod:`contextos.engine.topic`), rendered in
Anthropic's wire format and run through the :class:`~contextos.cache.CacheSimulator`
with Claude Sonnet's rules and prices; the following assistant turn is its
output. After each turn the strategy may compact.

After the replay, the window is assembled for every LoCoMo question and the
evidence it holds is scored at turn level: a turn counts when it is in the
window verbatim, or when a summary line or retrieved memory whose provenance
is that turn's ``dia_id`` is.

The cache-read limit of a layout: only what changes per call (retrieved
memories, the question, turns new since the previous call) can miss the cache,
so limit = 1 - those tokens / input tokens; it is printed beside the measured
share. Baselines: ``sliding`` keeps everything until the window overflows and
then drops the oldest turns; ``resummarize`` rebuilds the summary of all older
turns on every turn (cache-hostile).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from contextos.engine.compaction import (
    HistoryState,
    Thresholds,
    apply_compaction,
    plan_compaction,
    rotated_turns,
)
from contextos.engine.offload import archive
from contextos.engine.recall import shown_turns
from contextos.engine.session import Layout, context_window, turn_items
from contextos.engine.summarize import ExtractiveSummarizer
from contextos.engine.topic import (
    DELTA_TOP,
    TOPIC_MARGIN,
    TOPIC_SEARCH_OVER,
    TopicBlock,
    topic_layout,
    topic_memories,
)
from contextos.engine.window import Window
from contextos.llm.models import ModelInfo, get_model
from contextos.llm.tokens import TOKENS_PER_REPLY, Tokenizer, default_tokenizer

from ..cache import TTL_SECONDS, CacheSimulator, cache_request, report
from ..memory import Memory
from ..types import Hit, Message, Role, Scope, Turn, Usage
from .locomo_data import DEFAULT_LOCOMO, LocomoConversation, load_locomo

STRATEGIES = (
    "truncate",
    "clear_tool_results",
    "summarize",
    "offload",
    "topic",
    "sliding",
    "resummarize",
)
#: Strategies that archive rotated turns into memory and retrieve them.
MEMORY_STRATEGIES = ("offload", "topic")
MAIN_CATEGORIES = (1, 2, 3, 4)
SYSTEM = (
    "You are {b}, talking with your friend {a}. Reply as {b} would: warm, brief, "
    "consistent with everything said before. Facts, names and dates from earlier in "
    "the conversation are in the summary, the retrieved memories and the recent turns."
)
RULES = (
    "If a memory or summary line contradicts a recent turn, trust the recent turn.",
    "Never invent events that were not mentioned.",
)

#: ``topic``: how rotated turns leave the history (always archived into memory too).
TOPIC_COMPACTION = "summarize"
#: ``summarize`` and ``topic``: the summary's share of the history budget (None: the
#: thresholds'). 0.4 kept 0.466 of the evidence at 4k on conv-26 against 0.328 at 0.2.
SUMMARY_SHARE: float | None = 0.4
#: ``topic``: the history's target share when compacting at a cache expiry.
EXPIRY_TARGET = 0.3

Progress = Callable[[str], None]
Step = Callable[[int, int, str], None]


@dataclass
class Run:
    """One strategy replaying one conversation: its state and what it measured."""

    strategy: str
    history: HistoryState = field(default_factory=HistoryState)
    usages: list[Usage] = field(default_factory=list)
    window_tokens: list[int] = field(default_factory=list)
    volatile: int = 0
    volatile_ttl: int = 0
    last_at: float = float("-inf")
    peak: int = 0
    compactions: int = 0
    prev_keys: frozenset[str] = frozenset()
    recall: list[tuple[int, float]] = field(default_factory=list)
    topic_refreshes: int = 0
    score_refreshes: int = 0


def chat_turns(conv: LocomoConversation, tokenizer: Tokenizer, gap_s: float) -> list[Turn]:
    """The conversation as a logged chat (A = user, B = assistant), dia ids in metadata."""
    out: list[Turn] = []
    index: dict[int, int] = {}
    for seq, t in enumerate(conv.turns):
        k = index[t.session] = index.get(t.session, -1) + 1
        start = t.time - timedelta(minutes=k)  # the loader spaced turns a minute apart
        when = start + timedelta(seconds=gap_s * k)
        text = f"{t.text} [shares a photo: {t.caption}]" if t.caption else t.text
        role: Role = "user" if t.speaker == conv.speaker_a else "assistant"
        msg = Message(
            role=role,
            content=text,
            name=t.speaker,
            metadata={"dia_id": t.dia_id, "event_time": when.isoformat()},
        )
        tokens = tokenizer.count_messages([msg]) - TOKENS_PER_REPLY
        out.append(Turn(conv.sample_id, seq, msg, tokens, when))
    return out


class MemoEmbedder:
    """Wraps an embedder with a text -> vector memo, so budgets and strategies share work.

    Benchmark-only: the replay embeds the same turns and questions many times.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.model_id = inner.model_id
        self.dimensions = inner.dimensions
        self._memo: dict[str, Any] = {}

    def warm(self, texts: Sequence[str], batch: int = 64) -> None:
        """Embed ``texts`` in large batches up front (much cheaper than one by one)."""
        todo = list(dict.fromkeys(t for t in texts if t not in self._memo))
        for i in range(0, len(todo), batch):
            chunk = todo[i : i + batch]
            self._memo.update(zip(chunk, self.inner.embed(chunk), strict=True))

    def embed(self, texts: Sequence[str]) -> Any:
        import numpy as np

        self.warm(texts)
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        return np.stack([self._memo[t] for t in texts])


class Replayer:
    """Replays one conversation with one strategy under one budget."""

    def __init__(
        self,
        conv: LocomoConversation,
        turns: Sequence[Turn],
        strategy: str,
        budget: int,
        model: ModelInfo,
        tokenizer: Tokenizer,
        workdir: Path,
        embedder: Any,
        thresholds: Thresholds,
    ) -> None:
        self.conv, self.turns, self.budget, self.model = conv, list(turns), budget, model
        self.tok, self.th = tokenizer, thresholds
        self.run = Run(strategy)
        if strategy in ("summarize", "topic") and SUMMARY_SHARE is not None:
            self.th = replace(thresholds, summary_share=SUMMARY_SHARE)
        self.system = SYSTEM.format(a=conv.speaker_a, b=conv.speaker_b)
        fixed = tokenizer.count(self.system) + sum(tokenizer.count(r) for r in RULES) + 3 * 3
        self.offload = strategy in MEMORY_STRATEGIES
        room = budget - fixed - 400  # room for the question (and its restatement)
        if strategy == "topic":
            self.history_budget, self.layout = topic_layout(budget, room, self.th.summary_share)
        else:
            self.layout = Layout(
                memories_ceiling=0.45 if self.offload else 0.0,
                memories_floor=0.25 if self.offload else 0.0,
                summary_ceiling=max(0.25, self.th.summary_share + 0.05),
            )
            # offload: the history keeps enough (60%) that its compacted prefix stays
            # above the model's minimum cacheable length; memories get the rest.
            self.history_budget = int(room * (0.6 if self.offload else 1.0))
        self.summarizer = ExtractiveSummarizer(tokenizer)
        self.embedder = embedder
        self.memory: Memory | None = None
        self.topic: TopicBlock | None = None
        if self.offload:
            self.memory = Memory(
                str(workdir / f"{conv.sample_id}-{budget}-{strategy}.db"),
                embedder=embedder,
                background_embedding=False,
            )
        if strategy == "topic":
            self.topic = TopicBlock(embedder, margin=TOPIC_MARGIN, delta_top=DELTA_TOP)
        self.scope = Scope(user_id=conv.sample_id, session_id=conv.sample_id)
        self.sim = CacheSimulator("anthropic", min_tokens=model.min_cache_tokens)

    def close(self) -> None:
        if self.memory is not None:
            self.memory.close()

    def window(self, upto: int, question: str, *, commit: bool = True) -> Window:
        """The window for ``question`` with the history of turns before ``upto``.

        ``commit``: a topic-block refresh this window makes is kept for the
        next calls (replay), or only used for this window (scoring).
        """
        past = self.turns[:upto]
        items = turn_items(past, self.run.history, self.tok)
        topic: list[Hit] = []
        hits: list[Hit] = []
        if self.memory is not None and self.run.history.archived_to >= 0:
            if self.topic is None:
                hits = self.memory.search(
                    question,
                    session_id=self.conv.sample_id,
                    limit=60,
                    token_budget=int(self.layout.memories_ceiling * self.budget),
                )
            else:
                ceiling = int(self.layout.topic_ceiling * self.budget)
                fresh = self.memory.search(
                    question,
                    session_id=self.conv.sample_id,
                    limit=60,
                    token_budget=ceiling * TOPIC_SEARCH_OVER,
                )
                shown = shown_turns(past, self.run.history, self.conv.sample_id)
                topic, hits, refreshed = topic_memories(
                    self.topic, question, fresh, shown.shows, ceiling, commit=commit
                )
                if refreshed and commit:
                    self.run.topic_refreshes += 1
                elif refreshed:
                    self.run.score_refreshes += 1
        return context_window(
            self.budget,
            tokenizer=self.tok,
            question=question,
            min_cache_tokens=self.model.min_cache_tokens,
            system=self.system,
            rules=RULES,
            summary=self.run.history.summary,
            turns=items,
            memories=hits,
            topic=topic,
            layout=self.layout,
        )

    def _compact_on_expiry(self, i: int) -> None:
        """``topic``: when the cache has expired anyway, compact and refresh the block now.

        Rewriting the prefix costs nothing extra when nothing of it is cached,
        so the history goes down to ``EXPIRY_TARGET`` here and mid-session
        compactions (which do cost a cache miss) become rare.
        """
        at = self.turns[i].created_at.timestamp()
        if self.topic is None or at - self.run.last_at <= TTL_SECONDS["5m"]:
            return
        self.topic.due = True
        # Down to EXPIRY_TARGET, but always above the summary's own share.
        target = max(min(EXPIRY_TARGET, self.th.target), self.th.summary_share + 0.05)
        th = replace(self.th, target=min(target, self.th.target))
        self._compact(self.turns[:i], th, force=True)

    def request(self, i: int) -> None:
        turn = self.turns[i]
        self._compact_on_expiry(i)
        w = self.window(i, turn.message.content)
        nxt = self.turns[i + 1] if i + 1 < len(self.turns) else None
        out = nxt.tokens if nxt is not None and nxt.message.role == "assistant" else 0
        usage = self.sim.send(
            cache_request(
                w, self.model, "anthropic", at=turn.created_at.timestamp(), output_tokens=out
            )
        )
        keys = frozenset(b.key for b in w.blocks if b.kind == "messages" or b.segment == "topic")
        topic_changed = {b.key for b in w.blocks if b.segment == "topic"} - self.run.prev_keys
        volatile = sum(
            b.tokens
            for b in w.blocks
            if b.kind in ("context", "question")
            or (b.kind == "messages" and (topic_changed or b.key not in self.run.prev_keys))
            or (b.segment == "topic" and topic_changed)
        )
        self.run.volatile += volatile
        self.run.prev_keys = keys
        at = turn.created_at.timestamp()
        expired = at - self.run.last_at > TTL_SECONDS["5m"]
        self.run.volatile_ttl += w.total_tokens if expired else volatile
        self.run.last_at = at
        self.run.usages.append(usage)
        self.run.window_tokens.append(w.total_tokens)
        self.run.peak = max(self.run.peak, w.total_tokens)

    def after(self, i: int) -> None:
        """Compaction after turn ``i`` joined the history."""
        strategy = self.run.strategy
        if strategy == "sliding":
            return
        past = self.turns[: i + 1]
        if strategy == "resummarize":
            self._resummarize(past)
            return
        self._compact(past, self.th)

    def _compact(self, past: Sequence[Turn], th: Thresholds, *, force: bool = False) -> None:
        """Compact ``past`` with the strategy's rule; archive rotated turns when it has memory."""
        strategy = self.run.strategy
        compaction = (
            TOPIC_COMPACTION
            if strategy == "topic"
            else "offload"
            if strategy in MEMORY_STRATEGIES
            else strategy
        )
        plan = plan_compaction(
            past,
            self.run.history,
            self.history_budget,
            compaction,  # type: ignore[arg-type]
            th,
            force=force,
            tokenizer=self.tok,
        )
        if plan is None:
            return
        if self.memory is not None:
            archive(self.memory, rotated_turns(plan, past), self.scope)
        history = apply_compaction(
            plan,
            past,
            self.run.history,
            self.history_budget,
            summarizer=self.summarizer,
            thresholds=th,
        )
        if self.memory is not None and plan.rotate:  # retrievable now, whatever the strategy
            top = max(history.archived_to, max(plan.rotate))
            history = replace(history, archived_to=top, unarchived=())  # archived above
        self.run.history = history
        self.run.compactions += 1
        if self.topic is not None:
            self.topic.due = True  # the prefix changes here anyway: refresh with it

    def _resummarize(self, past: Sequence[Turn]) -> None:
        """Baseline: recent turns verbatim, everything older summarized from scratch."""
        keep = int((self.th.target - self.th.summary_share) * self.history_budget)
        used, start = 0, len(past)
        while start > 0 and used + past[start - 1].tokens <= keep:
            start -= 1
            used += past[start].tokens
        older = past[:start]
        summary = (
            self.summarizer.summarize(
                older, previous=None, max_tokens=int(self.th.summary_share * self.history_budget)
            )
            if older
            else None
        )
        changed = start != self.run.history.start_seq
        self.run.history = replace(self.run.history, start_seq=start, summary=summary)
        self.run.compactions += int(changed)

    def replay(self) -> None:
        for i, turn in enumerate(self.turns):
            if turn.message.role == "user":
                self.request(i)
            self.after(i)

    def score(self) -> None:
        """Evidence recall of the final window for every question with evidence."""
        for qa in self.conv.qa:
            if not qa.evidence:
                continue
            w = self.window(len(self.turns), qa.question, commit=False)
            self.run.peak = max(self.run.peak, w.total_tokens)
            held = w.provenance()
            self.run.recall.append(
                (qa.category, sum(e in held for e in qa.evidence) / len(qa.evidence))
            )


def summarize_runs(runs: Sequence[Run], model: ModelInfo, budget: int) -> dict[str, Any]:
    """One strategy's metrics over all conversations."""
    usages = [u for r in runs for u in r.usages]
    rep = report(usages, model)
    main = [v for r in runs for c, v in r.recall if c in MAIN_CATEGORIES]
    per_cat = {str(c): _mean([v for r in runs for k, v in r.recall if k == c]) for c in range(1, 6)}
    volatile = sum(r.volatile for r in runs)
    volatile_ttl = sum(r.volatile_ttl for r in runs)
    return {
        "evidence_recall": round(_mean(main), 4),
        "questions": len(main),
        "recall_by_category": {k: round(v, 4) for k, v in per_cat.items()},
        "peak_window_tokens": max(r.peak for r in runs),
        "budget": budget,
        "within_budget": max(r.peak for r in runs) <= budget,
        "requests": rep.requests,
        "input_tokens": rep.input_tokens,
        "cache_read_tokens": rep.cache_read_tokens,
        "cache_write_tokens": rep.cache_write_5m_tokens + rep.cache_write_1h_tokens,
        "cache_read_share": round(rep.hit_ratio, 4),
        "cache_read_limit": round(1 - volatile / rep.input_tokens, 4) if rep.input_tokens else 0,
        "cache_read_limit_with_expiry": round(1 - volatile_ttl / rep.input_tokens, 4)
        if rep.input_tokens
        else 0,
        "cost_usd": round(rep.cost_usd, 4),
        "cost_without_cache_usd": round(rep.cost_without_cache_usd, 4),
        "compactions": sum(r.compactions for r in runs),
        "topic_refreshes": sum(r.topic_refreshes for r in runs),
        "topic_refreshes_at_questions": sum(r.score_refreshes for r in runs),
    }


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def run_replay(
    data: str | Path = DEFAULT_LOCOMO,
    *,
    budgets: Sequence[int] = (4000,),
    strategies: Sequence[str] = STRATEGIES,
    model_name: str = "claude-sonnet-4-6",
    limit: int | None = None,
    turn_gap_s: float = 120.0,
    embedder: Any = None,
    thresholds: Thresholds | None = None,
    progress: Progress | None = None,
    on_step: Step | None = None,
) -> dict[str, Any]:
    """Run the replay benchmark; returns the JSON report (with per-call series for plots).

    ``progress`` gets one line per strategy; ``on_step(done, total, label)`` is
    called after every conversation replayed (for a progress bar).
    """
    unknown = set(strategies) - set(STRATEGIES)
    if unknown:
        raise ValueError(f"unknown strategies {sorted(unknown)}; choose from {STRATEGIES}")
    convs = load_locomo(data)[:limit]
    model, tok, th = get_model(model_name), default_tokenizer(), thresholds or Thresholds()
    chats = {c.sample_id: chat_turns(c, tok, turn_gap_s) for c in convs}
    if set(strategies) & set(MEMORY_STRATEGIES):
        if embedder is None:
            from ..embed import MiniLMEmbedder

            # One thread: on a busy 2-core machine torch's thread pool only contends.
            embedder = MiniLMEmbedder(threads=1)
        embedder = MemoEmbedder(embedder)
        embedder.warm(
            [t.message.content for ts in chats.values() for t in ts if t.message.role == "user"]
            + [q.question for c in convs for q in c.qa]
        )
    out: dict[str, Any] = {
        "model": model.name,
        # The memory strategies' embedder (None: no strategy embeds), named as in the
        # reports of bench locomo and bench scale.
        "embedder": None if embedder is None else embedder.model_id,
        "conversations": [c.sample_id for c in convs],
        "thresholds": {
            "trigger": th.trigger,
            "target": th.target,
            "summary_share": th.summary_share,
            "summary_share_summarize_topic": SUMMARY_SHARE,
        },
        "turns": sum(len(t) for t in chats.values()),
        "budgets": {},
    }
    total, done = len(budgets) * len(strategies) * len(convs), 0
    with tempfile.TemporaryDirectory(prefix="ctxos-replay-") as tmp:
        for budget in budgets:
            result: dict[str, Any] = {}
            for strategy in strategies:
                started = time.perf_counter()
                runs = []
                for conv in convs:
                    rp = Replayer(
                        conv,
                        chats[conv.sample_id],
                        strategy,
                        budget,
                        model,
                        tok,
                        Path(tmp),
                        embedder,
                        th,
                    )
                    try:
                        rp.replay()
                        rp.score()
                    finally:
                        rp.close()
                    runs.append(rp.run)
                    done += 1
                    if on_step:
                        on_step(done, total, f"{strategy} at {budget:,} tokens, {conv.sample_id}")
                result[strategy] = summarize_runs(runs, model, budget)
                result[strategy]["seconds"] = round(time.perf_counter() - started, 1)
                result[strategy]["series"] = _series(runs[0])
                if progress:
                    progress(f"budget {budget} {strategy}: {result[strategy]['evidence_recall']}")
            out["budgets"][str(budget)] = result
    return out


def _series(run: Run) -> dict[str, list[float]]:
    """Per-call window tokens and cache-read share of the first conversation (for plots)."""
    share = [
        u.cache_read_input_tokens
        / max(1, u.input_tokens + u.cache_read_input_tokens + u.cache_creation_input_tokens)
        for u in run.usages
    ]
    return {
        "window_tokens": [float(x) for x in run.window_tokens],
        "cache_read_share": [round(x, 4) for x in share],
    }


def time_assembly(
    *,
    turns: int = 100,
    budget: int = 200_000,
    repeat: int = 200,
    model_name: str = "claude-sonnet-4-6",
) -> dict[str, Any]:
    """Milliseconds to assemble (and to assemble and render) an N-turn session's window.

    The turns are logged values with their token counts (as a session holds
    them); retrieval is excluded, as the issue's target says.
    """
    import statistics
    from datetime import UTC, datetime

    tok, model = default_tokenizer(), get_model(model_name)
    log = [
        Turn(
            "bench",
            i,
            Message(
                role="user" if i % 2 == 0 else "assistant",
                content=f"Turn {i}: on 3 May 2023 Ana met Bo at the lake "
                f"and they talked about {i} different plans.",
            ),
            0,
            datetime(2023, 5, 3, tzinfo=UTC),
        )
        for i in range(turns)
    ]
    log = [replace(t, tokens=tok.count_messages([t.message]) - TOKENS_PER_REPLY) for t in log]
    system = "You are a helpful assistant. " * 60

    def once() -> Window:
        return context_window(
            budget,
            tokenizer=tok,
            question="Where did Ana go?",
            min_cache_tokens=model.min_cache_tokens,
            system=system,
            turns=turn_items(log, HistoryState(), tok),
            layout=Layout(restate_question_over=None),
        )

    def timed(fn: Callable[[], object]) -> list[float]:
        out = []
        for _ in range(repeat):
            start = time.perf_counter()
            fn()
            out.append((time.perf_counter() - start) * 1000)
        return sorted(out)

    from ..cache import render_anthropic

    once()
    plain = timed(once)
    rendered = timed(lambda: render_anthropic(once(), model))
    return {
        "turns": turns,
        "budget": budget,
        "repeat": repeat,
        "assemble_ms_median": statistics.median(plain),
        "assemble_ms_p95": plain[int(0.95 * (len(plain) - 1))],
        "render_ms_median": statistics.median(rendered),
        "window_tokens": once().total_tokens,
    }


__all__ = ["STRATEGIES", "Replayer", "chat_turns", "run_replay", "summarize_runs", "time_assembly"]
