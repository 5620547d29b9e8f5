"""Retrieval quality on real LoCoMo conversations with the real embedder.

Two fixed dev conversations (conv-26 and conv-30: 788 turns, 304 questions with
evidence) are stored through ``Memory.add`` exactly as ``contextos bench locomo``
stores them, and every question is answered by the full pipeline and by the
pipeline with one step removed. Each floor below is the value measured on this
tree minus a small margin for embedder drift (``NOISE``), so a step that stops
contributing fails its test. The data is CC BY-NC and lives beside the
checkout; without it the module skips, saying where it looked.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from conftest import LOCOMO
from contextos.bench.locomo import Row, evaluate, ingest, recall_of
from contextos.bench.locomo_data import LocomoConversation, load_locomo
from contextos.bench.locomo_memory import ingest_beside, stored_records
from contextos.embed import DEFAULT_EMBEDDER, Embedder, Vectors, make_embedder
from contextos.memory import TURN_FACTS_RETRIEVAL, Memory, RetrievalConfig
from contextos.memory.render import embedding_text, vector_model
from contextos.memory.turn_vectors import embed_records
from contextos.testing.embedders import HashEmbedder
from contextos.types import MemoryRecord

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not LOCOMO.exists(), reason=f"LoCoMo data not found at {LOCOMO}"),
]

CONVERSATIONS = ("conv-26", "conv-30")
#: Margin under each measured value: room for a re-export of the same model
#: (cosine 0.9999 to the torch vectors), well under what any step contributes.
NOISE = 0.005
DEFAULT = RetrievalConfig()

#: recall@10 of the full pipeline on the two conversations, categories 1-4, as
#: measured on this tree (``pytest tests/test_retrieval_quality.py -s`` prints every
#: figure below: full 0.8295; without each step see ABLATIONS). Every floor here was
#: re-measured when BM25's statistics became the searched user's instead of the whole
#: file's (the two conversations are two users of one file): full 0.8237 -> 0.8252; and
#: again when the offline extractor changed (session 45: plans dated ahead, habits
#: undated, questions not stored, which changes the facts the turns' vectors carry):
#: full 0.8252 -> 0.8295, and the gains that rose were raised; the speaker step's fell,
#: 0.0238 -> 0.0173 (the recall without it rose 0.8014 -> 0.8122, more than the full
#: pipeline's), the one floor lowered. Session 46: a sentence ending in a word that only
#: ends like an abbreviation ("dreams.", "best.", "list.": "ms.", "st.") was joined to the
#: next; split there (54 of the 2,760 dev turns), the turns' facts carry their own dates
#: ("Yesterday I took the kids to the museum" is a sentence of its own), and full recall
#: went 0.8295 -> 0.8273 (within NOISE: this floor is unchanged); the temporal step's
#: gain fell 0.0476 -> 0.0159 (recall without it rose 0.9524 -> 0.9841: the dates it found
#: are now in the facts) and the lexical retriever's 0.1196 -> 0.1087; both floors were
#: lowered to the new measurement, and both still fail when their step is removed.
FULL_RECALL = 0.829

#: Each kept step, removed alone: (config without it, categories measured on, the
#: recall@10 the full pipeline gains over it as measured on this tree). The RRF
#: constant (10) is guarded from both sides: on these two conversations 20 scores
#: 0.003 more (over all five dev conversations 0.002 less, and no leave-one-out fold
#: chooses it), so the guards are the grid's next values down and up, 5 and 40.
ABLATIONS: dict[str, tuple[RetrievalConfig, tuple[int, ...], float]] = {
    "no dense retriever (BM25 only)": (replace(DEFAULT, mode="bm25"), (1, 2, 3, 4), 0.054),
    "no lexical retriever (dense only)": (replace(DEFAULT, mode="dense"), (1, 2, 3, 4), 0.108),
    "dense weight at 0.6": (replace(DEFAULT, dense_weight=0.6), (1, 2, 3, 4), 0.015),
    "dense weight at 1.5": (replace(DEFAULT, dense_weight=1.5), (1, 2, 3, 4), 0.003),
    "RRF constant at 5": (replace(DEFAULT, rrf_k=5.0), (1, 2, 3, 4), 0.004),
    "RRF constant at 40": (replace(DEFAULT, rrf_k=40.0), (1, 2, 3, 4), 0.041),
    "no context column": (replace(DEFAULT, context_weight=0.0), (1, 2, 3, 4), 0.035),
    "no neighbour boost": (replace(DEFAULT, neighbour_weight=0.0), (1, 2, 3, 4), 0.025),
    "no session boost": (replace(DEFAULT, session_weight=0.0), (1, 2, 3, 4), 0.019),
    "no conversational_rerank": (
        replace(DEFAULT, neighbour_weight=0.0, session_weight=0.0),
        (1, 2, 3, 4),
        0.034,
    ),
    "no temporal step": (replace(DEFAULT, temporal_weight=0.0), (2,), 0.015),
    "no speaker step": (replace(DEFAULT, speaker_weight=0.0), (1, 2, 3, 4), 0.017),
}


@dataclass
class Stored:
    memory: Memory
    convs: list[LocomoConversation]
    rows: list[Row]  # the full pipeline's scored questions
    beside: list[Row]  # a memory with the turns' facts beside them (turn_facts=True)
    no_fact_vectors: list[Row]  # the turns embedded with their facts' text, not their vectors
    unexpanded: list[Row]  # the same turns embedded without their facts


#: Records a claim of the background worker holds (``EmbeddingWorker``'s batch size).
CLAIM = 64

#: Writes the real embedder's vectors for the stored turns of ``convs`` into a memory.
ReEmbed = Callable[[Memory, list[LocomoConversation], Embedder], None]


def store_vectors(
    memory: Memory, records: list[MemoryRecord], vectors: Vectors, embedder: Embedder
) -> None:
    """``vectors`` as the vectors of ``records``, stored as the worker stores
    ``embedder``'s (``vector_model``): a memory opened on the file with ``embedder``
    finds none of them stale."""
    memory.store.set_vectors(
        memory.tenant, [r.id for r in records], vectors, vector_model(embedder.model_id)
    )


def embed_as_claimed(memory: Memory, convs: list[LocomoConversation], embedder: Embedder) -> None:
    """Embed every stored record as the worker embeds a bulk ingest: claims of
    ``CLAIM`` records, oldest first, each one ``embed_records`` call on the embedder's
    batch path.

    Why: the worker claims what is pending when it wakes, so which records share a
    claim depends on timing, and the int8 graph's vector of a text depends on the texts
    it is embedded with (docs/benchmarks.md, tenth session). Recall moved by up to
    0.007 between runs, more than ``NOISE``: CI failed "no neighbour boost" by 0.0005
    (gain 0.0195, the same tree's next run 0.0253). Fixed claims make every figure here
    the same on every run."""
    records = [r for c in convs for r in reversed(stored_records(memory, c))]
    embed = getattr(embedder, "embed_batch", embedder.embed)
    for start in range(0, len(records), CLAIM):
        claim = records[start : start + CLAIM]
        store_vectors(memory, claim, embed_records(embed, claim), embedder)


def embed_without_fact_vectors(
    memory: Memory, convs: list[LocomoConversation], embedder: Embedder
) -> None:
    """Re-embed every stored turn from its text and facts alone (``fact_weight=0``)."""
    records = [r for c in convs for r in stored_records(memory, c)]
    store_vectors(
        memory, records, embed_records(embedder.embed, records, fact_weight=0.0), embedder
    )


def embed_unexpanded(memory: Memory, convs: list[LocomoConversation], embedder: Embedder) -> None:
    """Re-embed every stored turn from its own text alone (no document expansion)."""
    records = [r for c in convs for r in stored_records(memory, c)]
    texts = [embedding_text(r, expand=False) for r in records]
    store_vectors(memory, records, embedder.embed(texts), embedder)


def stored_memory(
    path: Path,
    convs: list[LocomoConversation],
    add: Callable[[Memory, LocomoConversation, list[float]], None],
    re_embed: ReEmbed,
    embedder: Embedder,
) -> Memory:
    """``convs`` added to a new memory at ``path`` by ``add``, with ``re_embed``'s
    vectors, opened with ``embedder``.

    The turns are added with the hash embedder (same dimensions) and their vectors then
    written by ``re_embed``, before ``embedder`` opens the file: the background worker
    would embed them all once more only for ``re_embed`` to replace its vectors (about
    70 s of CPU of this module's 230). What is stored does not depend on the embedder.

    Without a worker (vectors written inline): a worker still running when ``re_embed``
    wrote the real vectors took them for another process's embedder and embedded them
    again with the hash embedder, when the machine was loaded (a suite beside other
    work: "beside" lost 0.06 of recall within 1,000 tokens, seen twice)."""
    hashed = HashEmbedder(dimensions=embedder.dimensions)
    with Memory(path, embedder=hashed, background_embedding=False) as cheap:
        for conv in convs:
            add(cheap, conv, [])
        re_embed(cheap, convs, embedder)
    return Memory(path, embedder=embedder)


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stored]:
    """The two conversations in a real SQLite memory, and the full pipeline's rows."""
    convs = [c for c in load_locomo(LOCOMO) if c.sample_id in CONVERSATIONS]
    assert [c.sample_id for c in convs] == list(CONVERSATIONS)
    embedder = make_embedder(DEFAULT_EMBEDDER)  # what users get: int8 MiniLM

    def path(name: str) -> Path:
        return tmp_path_factory.mktemp(name) / f"{name}.db"

    m = stored_memory(path("quality"), convs, ingest, embed_as_claimed, embedder)
    try:
        with stored_memory(path("beside"), convs, ingest_beside, embed_as_claimed, embedder) as b:
            beside_rows = evaluate(b, convs, TURN_FACTS_RETRIEVAL)
        with stored_memory(
            path("plain"), convs, ingest, embed_without_fact_vectors, embedder
        ) as plain:
            no_fact_vector_rows = evaluate(plain, convs, DEFAULT)
            embed_unexpanded(plain, convs, embedder)
            plain_rows = evaluate(plain, convs, DEFAULT)
        rows = evaluate(m, convs, DEFAULT)
        yield Stored(m, convs, rows, beside_rows, no_fact_vector_rows, plain_rows)
    finally:
        m.close()


def test_full_pipeline_recall_at_10(stored: Stored) -> None:
    recall = recall_of(stored.rows)
    print(f"full pipeline recall@10 {recall:.4f}")
    assert recall >= FULL_RECALL - NOISE


@pytest.mark.parametrize("step", sorted(ABLATIONS))
def test_each_step_contributes(stored: Stored, step: str) -> None:
    config, categories, gain = ABLATIONS[step]
    without = recall_of(evaluate(stored.memory, stored.convs, config), categories=categories)
    full = recall_of(stored.rows, categories=categories)
    print(f"{step}: recall@10 {without:.4f} against {full:.4f} (gain {full - without:+.4f})")
    assert full - without >= gain - NOISE
    assert full - without > 0  # never only "no worse": the step must help


#: Configurations measured against each other, each gain as measured on this tree:
#: (better, worse, metric) -> least gain of ``better`` over ``worse``.
#: - Facts stored beside the turns (``Memory(turn_facts=True)``, searched with
#:   ``TURN_FACTS_RETRIEVAL``) over the default turns: recall within 1,000 tokens
#:   0.8646 -> 0.9065 (the short facts fit more evidence in a budget). Since the turns
#:   are embedded with their facts they no longer add recall@10, so that is not asserted.
#: - The default turns' vectors carrying their facts' own vectors (``memory.turn_vectors``)
#:   over the same turns embedded from their text and facts alone: recall@10
#:   0.8165 -> 0.8252 (within 1,000 tokens it costs a little: the turns it raises are
#:   longer, so it is not asserted there).
#: - The default turns, embedded with their extracted facts (``memory.expansion``), over
#:   the same turns embedded alone: recall@10 0.7837 -> 0.8252, within 1,000 tokens
#:   0.8633 -> 0.8646 (a small gain since BM25's statistics became the user's: from
#:   0.009; still asserted to be a gain).
GAINS = {
    ("rows", "no_fact_vectors", "recall@10"): 0.008,
    ("beside", "rows", "recall@1000t"): 0.041,
    ("rows", "unexpanded", "recall@10"): 0.041,
    ("rows", "unexpanded", "recall@1000t"): 0.001,
}


@pytest.mark.parametrize(("better", "worse", "metric"), sorted(GAINS))
def test_stored_configuration_contributes(
    stored: Stored, better: str, worse: str, metric: str
) -> None:
    high = recall_of(getattr(stored, better), key=metric)
    low = recall_of(getattr(stored, worse), key=metric)
    print(f"{better} over {worse}: {metric} {high:.4f} against {low:.4f}")
    assert high - low >= GAINS[(better, worse, metric)] - NOISE
    assert high - low > 0
