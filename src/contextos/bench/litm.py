"""``contextos bench litm``: where does the gold item land in the assembled window?

Liu et al., "Lost in the Middle" (TACL 2024), showed that models use what sits
at the start or the end of their context far better than what sits in the
middle: a U-shaped curve over the position of the relevant document. Window
assembly therefore places retrieved items by strength at the edges of their
segment (rank 1 first, rank 2 last, rank 3 second, ...). This benchmark checks
that placement on the paper's data:

- key-value retrieval (``kv-retrieval-*_keys.jsonl.gz``): every key-value pair
  is an item, the query is the key;
- a 20-passage haystack built from ``nq-open-oracle.jsonl.gz``: the question's
  gold passage among 19 gold passages of other questions (random distractors,
  so easier than the paper's retrieved ones; see the data README).

Items are ranked by BM25 (computed per example over its own items), assembled
as a retrieved segment under the model's budget, and the gold item's slot is
recorded. Reported: the share at the first or last slot, the slot histogram,
the retrieval rank histogram, and a check that ranks 1 and 2 always land at an
edge.
"""

from __future__ import annotations

import gzip
import json
import math
import random
import re
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from contextos.engine.session import window_budget
from contextos.engine.window import Item, Segment, assemble, text_item
from contextos.errors import ConfigError
from contextos.llm.models import get_model
from contextos.llm.tokens import TOKENS_PER_MESSAGE, Tokenizer, default_tokenizer

DEFAULT_LITM = "../shared/data/lost-in-the-middle/"
KV_FILES = ("kv-retrieval-75_keys.jsonl.gz", "kv-retrieval-140_keys.jsonl.gz")
NQ_FILE = "nq-open-oracle.jsonl.gz"
HAYSTACK = 20
#: Positions the paper moved the gold document/key to (20 documents; 140 keys).
PAPER_POSITIONS = {"20 documents": (1, 5, 10, 15, 20), "140 keys": (1, 35, 70, 105, 140)}
U_CURVE_NOTE = (
    "Lost in the Middle (Liu et al., TACL 2024) moved the gold document to positions "
    "1, 5, 10, 15, 20 of 20 (and the gold key to 1, 35, 70, 105, 140 of 140): accuracy "
    "is highest at the first position, high again at the last, and lowest in the middle "
    "(for GPT-3.5-Turbo on 20 documents the middle fell below its closed-book score). "
    "So the strongest retrieved items go to the edges of their segment."
)

_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class Example:
    """One retrieval task: a query, its items, and which item is gold."""

    query: str
    items: tuple[str, ...]
    gold: int


def _lines(path: Path, limit: int | None) -> Iterator[dict[str, Any]]:
    """The JSON records of a ``.jsonl.gz`` file; one that is cut short or not gzip, or a
    line that is not JSON, is a :class:`~contextos.errors.ConfigError` naming the file.

    Why: a download cut short ends in ``EOFError``, which click takes for Ctrl-D: the
    command said "aborted" and exited 130, as if the user had pressed Ctrl-C."""
    n = 0
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for n, line in enumerate(f):  # noqa: B007 (n names the bad line below)
                if limit is not None and n >= limit:
                    return
                yield json.loads(line)
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise ConfigError(f"{path} is truncated or not gzip: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text once unzipped: {exc}") from None
    except ValueError as exc:  # JSONDecodeError
        raise ConfigError(f"{path} line {n + 1} is not a JSON record: {exc}") from None


#: What a record of the wrong shape raises when read as one (a missing key, a list too
#: short, a value of another type, a gold key not among the pairs).
_SHAPE_ERRORS = (KeyError, IndexError, TypeError, ValueError, StopIteration)


def _not_a_record(path: Path, line: int, expected: str, exc: Exception) -> ConfigError:
    """The one-line error of a record of the wrong shape: the file, the line, what a
    record holds. Why: a ``KeyError`` traceback was all a file of another data set (or
    a record edited by hand) gave, where a file cut short gave one line."""
    what = f"no {exc}" if isinstance(exc, KeyError) else type(exc).__name__
    return ConfigError(f"{path} line {line}: not a Lost-in-the-Middle record ({expected}; {what})")


def kv_examples(path: Path, limit: int | None = None) -> list[Example]:
    """Key-value examples: one item per ``"key": "value"`` record."""
    out = []
    for n, row in enumerate(_lines(path, limit), 1):
        try:
            pairs = row["ordered_kv_records"]
            items = tuple(json.dumps({k: v}) for k, v in pairs)
            gold = next(i for i, (k, _) in enumerate(pairs) if k == row["key"])
            query = f'The value of key "{row["key"]}"?'
        except _SHAPE_ERRORS as exc:
            expected = 'expected "key", and "ordered_kv_records": [key, value] pairs with it'
            raise _not_a_record(path, n, expected, exc) from None
        out.append(Example(query, items, gold))
    return out


def nq_examples(
    path: Path, limit: int | None = None, *, size: int = HAYSTACK, seed: int = 0
) -> list[Example]:
    """20-passage haystacks: the gold passage among other questions' gold passages."""
    rows = list(_lines(path, None))
    passages = []
    for n, r in enumerate(rows, 1):
        try:
            passages.append(f"(Title: {r['ctxs'][0]['title']}) {r['ctxs'][0]['text']}")
            if not isinstance(r["question"], str):
                raise TypeError
        except _SHAPE_ERRORS as exc:
            expected = 'expected "question" and "ctxs" with a "title" and "text"'
            raise _not_a_record(path, n, expected, exc) from None
    rng = random.Random(seed)
    out = []
    for i, row in enumerate(rows[:limit]):
        others = rng.sample([j for j in range(len(rows)) if j != i], size - 1)
        pos = i % size  # the gold's position before retrieval reorders
        order = others[:pos] + [i] + others[pos:]
        out.append(Example(row["question"], tuple(passages[j] for j in order), pos))
    return out


def bm25_ranks(query: str, docs: Sequence[str], k1: float = 1.2, b: float = 0.75) -> list[int]:
    """Document indices, best first, by BM25 over ``docs`` themselves."""
    toks = [[w.lower() for w in _WORD.findall(d)] for d in docs]
    avg = sum(len(t) for t in toks) / max(1, len(toks))
    df: Counter[str] = Counter(w for t in toks for w in set(t))
    q = [w.lower() for w in _WORD.findall(query)]
    scores = []
    for t in toks:
        tf = Counter(t)
        s = 0.0
        for w in q:
            if w in tf:
                idf = math.log(1 + (len(docs) - df[w] + 0.5) / (df[w] + 0.5))
                s += idf * tf[w] * (k1 + 1) / (tf[w] + k1 * (1 - b + b * len(t) / avg))
        scores.append(s)
    return sorted(range(len(docs)), key=lambda i: (-scores[i], i))


def place(example: Example, tokenizer: Tokenizer, budget: int) -> tuple[int, int, int]:
    """(retrieval rank of gold, its slot in the segment, items placed), 1-based."""
    ranking = bm25_ranks(example.query, example.items)
    items: list[Item] = [
        Item(
            f"item:{idx}",
            example.items[idx],
            tokenizer.count(example.items[idx]) + TOKENS_PER_MESSAGE,
            rank=r,
        )
        for r, idx in enumerate(ranking, start=1)
    ]
    segments = [
        Segment(
            "retrieved", "context", tuple(items), keep="strongest", placement="edges", priority=50
        ),
        Segment(
            "question",
            "question",
            (text_item("question", example.query, tokenizer),),
            priority=100,
            required=True,
        ),
    ]
    window = assemble(segments, budget)
    placed = [b.key for b in window.blocks if b.segment == "retrieved"]
    gold_key = f"item:{example.gold}"
    rank = ranking.index(example.gold) + 1
    slot = placed.index(gold_key) + 1 if gold_key in placed else 0
    return rank, slot, len(placed)


def score(examples: Sequence[Example], tokenizer: Tokenizer, budget: int) -> dict[str, Any]:
    """Edge share, slot and rank histograms, and the ranks-1-and-2-at-an-edge check."""
    n_items = max(len(e.items) for e in examples)
    slots = [0] * n_items
    ranks = [0] * n_items
    edge = top2 = top2_edge = dropped = 0
    for ex in examples:
        rank, slot, placed = place(ex, tokenizer, budget)
        ranks[rank - 1] += 1
        if slot == 0:
            dropped += 1
            continue
        slots[slot - 1] += 1
        at_edge = slot in (1, placed)
        edge += at_edge
        if rank <= 2:
            top2 += 1
            top2_edge += at_edge
    return {
        "examples": len(examples),
        "items": n_items,
        "edge_share": edge / len(examples),
        "rank_le2": top2,
        "rank_le2_at_edge": top2_edge,
        "rank_le2_always_at_edge": top2 == top2_edge,
        "gold_dropped": dropped,
        "slot_histogram": slots,
        "rank_histogram": ranks,
    }


def run_litm(
    data: str | Path = DEFAULT_LITM,
    *,
    limit: int | None = None,
    model_name: str = "claude-sonnet-4-6",
    on_example: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the benchmark on every data set present under ``data``; ``on_example(name)``
    is called after each example scored (for a progress bar)."""
    root = Path(data)
    # ConfigError (exit 1), as for every other benchmark's data: a missing path was a
    # FileNotFoundError (exit 2 from the command), and a file was called "not found".
    if not root.exists():
        raise ConfigError(f"Lost-in-the-Middle data not found at {root} (pass --data PATH)")
    if not root.is_dir():
        raise ConfigError(
            f"{root} is not a folder: pass the folder holding the Lost-in-the-Middle files "
            f"({', '.join((*KV_FILES, NQ_FILE))})"
        )
    tok = default_tokenizer()
    budget = window_budget(get_model(model_name))
    out: dict[str, Any] = {
        "model": model_name,
        "budget": budget,
        "retriever": "bm25",
        "paper_positions": PAPER_POSITIONS,
        "why": U_CURVE_NOTE,
        "datasets": {},
    }
    for name in KV_FILES:
        if (root / name).exists():
            key = name.removesuffix(".jsonl.gz")
            examples = _Counted(kv_examples(root / name, limit), key, on_example)
            out["datasets"][key] = score(examples, tok, budget)
    if (root / NQ_FILE).exists():
        nq = "nq-oracle-haystack-20"
        examples = _Counted(nq_examples(root / NQ_FILE, limit), nq, on_example)
        out["datasets"][nq] = score(examples, tok, budget)
    if not out["datasets"]:
        raise ConfigError(
            f"no Lost-in-the-Middle files under {root} "
            f"(expected one of {', '.join((*KV_FILES, NQ_FILE))})"
        )
    return out


T = TypeVar("T")


class _Counted(Sequence[T]):
    """``items`` that call ``tick(name)`` as each one is iterated over (progress)."""

    def __init__(self, items: Sequence[T], name: str, tick: Callable[[str], None] | None):
        self._items, self._name, self._tick = items, name, tick

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, index: Any) -> Any:
        return self._items[index]

    def __iter__(self) -> Iterator[T]:
        for item in self._items:
            yield item
            if self._tick is not None:
                self._tick(self._name)


__all__ = [
    "DEFAULT_LITM",
    "U_CURVE_NOTE",
    "bm25_ranks",
    "kv_examples",
    "nq_examples",
    "place",
    "run_litm",
    "score",
]
